//! `converge claim new`: a claim from flags, checked against the schema
//! and the claim checks of the config it names, written as YAML or JSON.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{Error, note};
use crate::claim::{Claim, EnvironmentType};
use crate::config::Config;

/// How `claim new` writes the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

/// `claim new`'s flags.
#[derive(Debug, Clone)]
pub struct Options {
    pub name: String,
    pub env_type: String,
    pub pool: String,
    pub user: Option<String>,
    pub services: Vec<String>,
    pub expires: Option<Duration>,
    pub format: Format,
    pub output: PathBuf,
    pub show_closure: bool,
    pub config: Option<PathBuf>,
}

/// Loads the config: the one named, else `./converge.yaml` when present,
/// else the built-in defaults (said on stderr).
pub(super) fn optional_config(path: Option<&Path>) -> Result<Config, Error> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None if Path::new("converge.yaml").exists() => {
            Ok(Config::load(Path::new("converge.yaml"))?)
        }
        None => {
            note(
                "note: no --config and no ./converge.yaml: the built-in schema, presets and no service catalog (give --config FILE)",
            );
            Ok(Config::default())
        }
    }
}

pub(super) fn run(o: &Options) -> Result<u8, Error> {
    let config = optional_config(o.config.as_deref())?;
    let pipeline = crate::pipeline_for(&config)?;
    let now = Utc::now();
    let doc = document(o, &config, now)?;
    let shown = if o.output == Path::new("-") {
        "the claim".to_owned()
    } else {
        o.output.display().to_string()
    };
    let mut problems = pipeline.schema.check(&shown, &doc);
    let claim = if problems.is_empty() {
        match Claim::from_document(&shown, doc.clone()) {
            Ok(claim) => Some(claim),
            Err(d) => {
                problems.extend(d);
                None
            }
        }
    } else {
        None
    };
    if let Some(claim) = &claim
        && let Some(d) =
            crate::pipeline::lifetime_problem(&shown, claim, pipeline.renderer.presets())
    {
        problems.push(d);
    }
    let Some(claim) = claim.filter(|_| problems.is_empty()) else {
        for d in &problems {
            note(&d.to_string());
        }
        return Err(Error::Refused(format!(
            "{} problem(s) with the flags: nothing written",
            problems.len()
        )));
    };
    let text = match o.format {
        Format::Yaml => yaml(&doc),
        Format::Json => serde_json::to_string_pretty(&doc).expect("a JSON value serializes") + "\n",
    };
    let to_stdout = o.output == Path::new("-");
    if to_stdout {
        std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .map_err(|error| Error::WriteFile {
                path: "stdout".to_owned(),
                error,
            })?;
    } else {
        std::fs::write(&o.output, &text).map_err(|error| Error::WriteFile {
            path: o.output.display().to_string(),
            error,
        })?;
    }
    if o.show_closure {
        let closure = closure(&claim, &pipeline.catalog);
        if to_stdout {
            note(closure.trim_end());
        } else {
            let _ = std::io::stdout().lock().write_all(closure.as_bytes());
        }
    }
    Ok(0)
}

/// The claim document the flags describe, fields in the schema's order.
fn document(o: &Options, config: &Config, now: DateTime<Utc>) -> Result<Value, Error> {
    let env_type: EnvironmentType = serde_json::from_value(Value::String(o.env_type.clone()))
        .map_err(|_| {
            Error::Refused(format!(
                "--type {:?}: not an environment type (dev, stage, prod, sue)",
                o.env_type
            ))
        })?;
    let user = match (&o.user, &config.claims.default_user) {
        (Some(u), _) | (None, Some(u)) => u.clone(),
        (None, None) => {
            return Err(Error::Refused(
                "no user: give --user you@company.com, or set claims.default_user in the config \
                 (converge does not guess $USER@host: the policies know users by the address \
                 in the identities)"
                    .to_owned(),
            ));
        }
    };
    let mut services = Map::new();
    for s in &o.services {
        let Some((name, version)) = s.split_once('=') else {
            return Err(Error::Refused(format!(
                "--services {s:?}: expected service=version (user-service=^1.2.0)"
            )));
        };
        let (name, version) = (name.trim(), version.trim());
        if services
            .insert(name.to_owned(), Value::String(version.to_owned()))
            .is_some()
        {
            return Err(Error::Refused(format!(
                "--services: {name:?} is given twice"
            )));
        }
    }
    // Static types come through review (git); the others from a bucket.
    let method = match env_type {
        EnvironmentType::Stage | EnvironmentType::Prod => "git",
        EnvironmentType::Dev | EnvironmentType::Sue => "dynamic",
    };
    let creation = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let expiration = match o.expires {
        None => Value::Null,
        Some(d) => {
            let d = chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| Error::Refused("--expires: too far in the future".to_owned()))?;
            Value::String(d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        }
    };
    Ok(json!({
        "user": user,
        "environment_pool": o.pool,
        "creation_date": creation,
        "environment_name": o.name,
        "environment_type": env_type.as_str(),
        "expiration_date": expiration,
        "deployment_method": method,
        "services": services,
    }))
}

/// A flat claim document as YAML: every string double-quoted (JSON's
/// escapes are YAML's), one service per line.
fn yaml(doc: &Value) -> String {
    let mut out = String::new();
    let Value::Object(fields) = doc else {
        return out;
    };
    for (key, value) in fields {
        match value {
            Value::Object(map) if map.is_empty() => {
                let _ = writeln!(out, "{key}: {{}}");
            }
            Value::Object(map) => {
                let _ = writeln!(out, "{key}:");
                for (k, v) in map {
                    if crate::claim::EnvironmentName::is_valid(k) {
                        let _ = writeln!(out, "  {k}: {v}");
                    } else {
                        let _ = writeln!(out, "  {}: {v}", Value::String(k.clone()));
                    }
                }
            }
            other => {
                let _ = writeln!(out, "{key}: {other}");
            }
        }
    }
    out
}

/// Every service the environment will run: the named ones at their
/// constraints, and the catalog's dependencies with what brings them.
fn closure(claim: &Claim, catalog: &crate::resolve::Catalog) -> String {
    let requests = crate::resolve::requests(claim, catalog);
    let mut out = format!(
        "{} runs {} service(s):\n",
        claim.environment_name,
        requests.len()
    );
    for (service, r) in &requests {
        if r.dependency_of.is_empty() {
            let _ = writeln!(out, "  {service} {}", r.constraint);
        } else {
            let _ = writeln!(
                out,
                "  {service} {} (a dependency of {}, at the catalog's constraint)",
                r.constraint,
                r.dependency_of.join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            name: "dev-team1-x".to_owned(),
            env_type: "dev".to_owned(),
            pool: "team1".to_owned(),
            user: Some("john.doe@company.com".to_owned()),
            services: vec![
                "user-service=^1.2.0".to_owned(),
                "billing=1.x.x.x".to_owned(),
            ],
            expires: Some(Duration::from_hours(24)),
            format: Format::Yaml,
            output: PathBuf::from("-"),
            show_closure: false,
            config: None,
        }
    }

    #[test]
    fn a_new_claim_passes_the_schema_and_its_yaml_reads_back_as_the_same_document() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z")
            .expect("a time")
            .with_timezone(&Utc);
        let doc = document(&options(), &Config::default(), now).expect("a document");
        assert_eq!(doc["creation_date"], "2026-01-02T03:04:05Z");
        assert_eq!(doc["expiration_date"], "2026-01-03T03:04:05Z");
        assert_eq!(doc["deployment_method"], "dynamic");
        let schema = crate::validate::schema::Schema::builtin();
        assert!(schema.check("f", &doc).is_empty());
        let text = yaml(&doc);
        let file = crate::source::SourceFile::new(
            "f.yaml".to_owned(),
            crate::source::Content::Bytes(text.clone().into_bytes().into()),
        );
        assert_eq!(crate::load::parse(&file).expect("parses"), doc, "{text}");
    }

    #[test]
    fn without_a_user_the_claim_is_refused_with_a_hint() {
        let mut o = options();
        o.user = None;
        let e = document(&o, &Config::default(), Utc::now()).expect_err("no user");
        assert!(e.to_string().contains("--user"), "{e}");
        let config = Config::parse("claims:\n  default_user: ops@company.com\n").expect("config");
        let doc = document(&o, &config, Utc::now()).expect("the default user");
        assert_eq!(doc["user"], "ops@company.com");
    }

    #[test]
    fn static_types_are_claimed_through_git() {
        let mut o = options();
        o.env_type = "staging".to_owned();
        let doc = document(&o, &Config::default(), Utc::now()).expect("a document");
        assert_eq!(doc["environment_type"], "stage");
        assert_eq!(doc["deployment_method"], "git");
    }
}
