//! The claim model: one environment as an application team asks for it.
//!
//! A [`Claim`] is built from a JSON document that already passed the schema
//! (see `validate::schema`); [`Claim::from_document`] adds the checks a schema
//! cannot express (version constraints parse, `expiration_date` after
//! `creation_date`) and returns every problem as a [`Diagnostic`] with its
//! JSON pointer. Claims are typed structs, never `serde_json::Value`, so 10k of
//! them stay small in memory.

pub mod version;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::diagnostic::{Diagnostic, pointer_join};
pub use version::{Constraint, Version, VersionError};

/// A DNS-1123 label: lower-case letters, digits and `-`, at most 63 characters,
/// starting and ending with an alphanumeric.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EnvironmentName(String);

impl EnvironmentName {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `s` is a DNS-1123 label.
    #[must_use]
    pub fn is_valid(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    }
}

impl FromStr for EnvironmentName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if Self::is_valid(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)"
            ))
        }
    }
}

impl<'de> Deserialize<'de> for EnvironmentName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for EnvironmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The four environment types; `staging` is accepted as an alias of `stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentType {
    Dev,
    #[serde(alias = "staging")]
    Stage,
    Prod,
    Sue,
}

impl EnvironmentType {
    pub const ALL: [EnvironmentType; 4] = [Self::Dev, Self::Stage, Self::Prod, Self::Sue];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Stage => "stage",
            Self::Prod => "prod",
            Self::Sue => "sue",
        }
    }
}

impl fmt::Display for EnvironmentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the environment is managed: bucket uploads or reviewed git commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentMethod {
    Dynamic,
    Git,
}

impl DeploymentMethod {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dynamic => "dynamic",
            Self::Git => "git",
        }
    }
}

/// One service of an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The version as written in the claim (`v1.2.3`, `^2.1.0`, ...).
    pub version: Constraint,
    pub docker_image: Option<String>,
    pub ansible_artifact: Option<String>,
}

/// A validated environment claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub user: String,
    pub environment_pool: String,
    pub creation_date: DateTime<Utc>,
    pub environment_name: EnvironmentName,
    pub environment_type: EnvironmentType,
    pub expiration_date: Option<DateTime<Utc>>,
    pub deployment_method: DeploymentMethod,
    pub git_repository: Option<String>,
    pub branch: Option<String>,
    pub services: BTreeMap<String, Service>,
    /// Names of the SOPS-encrypted secret values; the ciphertext is not kept.
    pub secret_names: Vec<String>,
}

/// The claim document as the schema describes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaim {
    user: String,
    environment_pool: String,
    creation_date: DateTime<Utc>,
    environment_name: EnvironmentName,
    environment_type: EnvironmentType,
    #[serde(default)]
    expiration_date: Option<DateTime<Utc>>,
    deployment_method: DeploymentMethod,
    #[serde(default)]
    git_repository: Option<String>,
    #[serde(default)]
    branch: Option<String>,
    services: BTreeMap<String, RawService>,
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "sops metadata is accepted beside secrets and used by decryption"
    )]
    sops: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawService {
    Version(String),
    Full {
        version: String,
        #[serde(default)]
        docker_image: Option<String>,
        #[serde(default)]
        ansible_artifact: Option<String>,
    },
}

impl Claim {
    /// Builds a claim from a schema-valid document. `file` names the document
    /// in diagnostics.
    /// `secrets` is taken out before the document is typed: only its keys
    /// are kept, and no error message can quote one of its values.
    pub fn from_document(file: &str, mut doc: serde_json::Value) -> Result<Claim, Vec<Diagnostic>> {
        let secret_names: Vec<String> = match doc.as_object_mut().and_then(|o| o.remove("secrets"))
        {
            Some(serde_json::Value::Object(map)) => {
                let mut names: Vec<String> = map.into_iter().map(|(k, _)| k).collect();
                names.sort();
                names
            }
            Some(serde_json::Value::Null) | None => Vec::new(),
            Some(_) => {
                return Err(vec![Diagnostic::new(
                    file,
                    "/secrets",
                    "type",
                    "secrets must be a mapping (values are not shown)",
                )]);
            }
        };
        let raw: RawClaim = serde_json::from_value(doc)
            .map_err(|e| vec![Diagnostic::new(file, "", "type", e.to_string())])?;
        let name = raw.environment_name.as_str().to_owned();
        let mut diagnostics = Vec::new();
        let mut services = BTreeMap::new();
        for (service, spec) in raw.services {
            let (text, pointer, docker_image, ansible_artifact) = match spec {
                RawService::Version(v) => (v, pointer_join("/services", &service), None, None),
                RawService::Full {
                    version,
                    docker_image,
                    ansible_artifact,
                } => (
                    version,
                    pointer_join(&pointer_join("/services", &service), "version"),
                    docker_image,
                    ansible_artifact,
                ),
            };
            match Constraint::parse(&text) {
                Ok(version) => {
                    services.insert(
                        service,
                        Service {
                            version,
                            docker_image,
                            ansible_artifact,
                        },
                    );
                }
                Err(e) => {
                    diagnostics.push(Diagnostic::new(file, pointer, "version", e.to_string()));
                }
            }
        }
        if let Some(expiry) = raw.expiration_date
            && expiry <= raw.creation_date
        {
            diagnostics.push(Diagnostic::new(
                file,
                "/expiration_date",
                "expiration-after-creation",
                format!(
                    "expiration_date {} is not after creation_date {}",
                    expiry.to_rfc3339(),
                    raw.creation_date.to_rfc3339()
                ),
            ));
        }
        if raw.deployment_method == DeploymentMethod::Dynamic {
            for (field, value) in [
                ("git_repository", &raw.git_repository),
                ("branch", &raw.branch),
            ] {
                if value.is_some() {
                    diagnostics.push(Diagnostic::new(
                        file,
                        format!("/{field}"),
                        "static-only",
                        format!("{field} is only meaningful for deployment_method git"),
                    ));
                }
            }
        }
        if !diagnostics.is_empty() {
            return Err(diagnostics
                .into_iter()
                .map(|d| d.for_environment(Some(&name)))
                .collect());
        }
        Ok(Claim {
            user: raw.user,
            environment_pool: raw.environment_pool,
            creation_date: raw.creation_date,
            environment_name: raw.environment_name,
            environment_type: raw.environment_type,
            expiration_date: raw.expiration_date,
            deployment_method: raw.deployment_method,
            git_repository: raw.git_repository,
            branch: raw.branch,
            services,
            secret_names,
        })
    }

    /// When the environment expires: `expiration_date` if given, else
    /// `creation_date + ttl` when the type's preset has a lifetime.
    #[must_use]
    pub fn expires_at(&self, ttl: Option<std::time::Duration>) -> Option<DateTime<Utc>> {
        self.expiration_date.or_else(|| {
            let ttl = chrono::Duration::from_std(ttl?).ok()?;
            self.creation_date.checked_add_signed(ttl)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> serde_json::Value {
        json!({
            "user": "john.doe@company.com",
            "environment_pool": "team1",
            "creation_date": "2024-01-15T10:30:00Z",
            "environment_name": "dev-team1-x",
            "environment_type": "staging",
            "expiration_date": null,
            "deployment_method": "dynamic",
            "services": {"a": "v1.2.3", "b": {"version": "^2.1.0", "docker_image": "r/b:2"}}
        })
    }

    #[test]
    fn staging_is_an_alias_of_stage() {
        let claim = Claim::from_document("f", doc()).expect("valid");
        assert_eq!(claim.environment_type, EnvironmentType::Stage);
        assert_eq!(claim.services["b"].docker_image.as_deref(), Some("r/b:2"));
    }

    #[test]
    fn bad_version_is_reported_at_its_pointer() {
        let mut d = doc();
        d["services"]["b"]["version"] = json!(">=a");
        let errs = Claim::from_document("f", d).expect_err("invalid");
        assert_eq!(errs[0].pointer, "/services/b/version");
        assert_eq!(errs[0].rule, "version");
    }

    #[test]
    fn expiry_before_creation_is_refused() {
        let mut d = doc();
        d["expiration_date"] = json!("2024-01-14T00:00:00Z");
        let errs = Claim::from_document("f", d).expect_err("invalid");
        assert_eq!(errs[0].pointer, "/expiration_date");
    }

    #[test]
    fn sue_lifetime_starts_at_creation() {
        let claim = Claim::from_document("f", doc()).expect("valid");
        let at = claim
            .expires_at(Some(std::time::Duration::from_hours(24)))
            .expect("expires");
        assert_eq!(at.to_rfc3339(), "2024-01-16T10:30:00+00:00");
        assert_eq!(claim.expires_at(None), None);
    }

    #[test]
    fn environment_names_follow_dns_1123() {
        for ok in ["a", "dev-x", "a1", &"a".repeat(63)] {
            assert!(EnvironmentName::is_valid(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(64), "a.b"] {
            assert!(!EnvironmentName::is_valid(bad), "{bad}");
        }
    }
}
