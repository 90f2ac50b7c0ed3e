//! `converge claim rm` and `converge claim extend`: the object holding an
//! environment's claim is found by name, read, and then removed or
//! rewritten on the condition that it is still the version read.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::bucket::{Bucket, Candidate, content_type, is_json};
use super::wait::{Awaited, Follow};
use super::{Common, Error, note};
use crate::claim::{Claim, DeploymentMethod};
use crate::source::Content;
use crate::source::s3::{ObjectVersion, Precondition, WriteError};

/// The object of environment `name`: key, bytes, version and document.
struct Found {
    key: String,
    bytes: Vec<u8>,
    version: ObjectVersion,
    doc: Value,
}

fn find(bucket: &mut Bucket, name: &str) -> Result<Found, Error> {
    let key = bucket.locate(name)?;
    let object = bucket.s3.object_url(&key);
    let Some((content, version)) = bucket.s3.fetch(&key).map_err(WriteError::from)? else {
        return Err(Error::Refused(format!(
            "{object} was removed while it was being read"
        )));
    };
    let Content::Bytes(bytes) = &content else {
        return Err(Error::Refused(format!(
            "{object} cannot be read as a claim (larger than limits.max_file_bytes)"
        )));
    };
    let file = crate::source::SourceFile::new(object.clone(), content.clone());
    let doc = crate::load::parse(&file).map_err(|d| Error::Refused(d.to_string()))?;
    let named = doc.get("environment_name").and_then(Value::as_str);
    if named != Some(name) {
        return Err(Error::Refused(format!(
            "{object} claims environment {}, not {name}",
            named.unwrap_or("(none)")
        )));
    }
    Ok(Found {
        key,
        bytes: bytes.to_vec(),
        version,
        doc,
    })
}

pub(super) fn rm(name: &str, source: &str, yes: bool, common: &Common) -> Result<u8, Error> {
    let mut bucket = Bucket::open(&common.config, source)?;
    let found = find(&mut bucket, name)?;
    let object = bucket.s3.object_url(&found.key);
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::Refused(format!(
                "not removing {object} without --yes: there is no terminal to ask on"
            )));
        }
        let owner = found.doc["user"].as_str().unwrap_or("unknown");
        let _ = write!(
            std::io::stderr().lock(),
            "remove {object} (environment {name}, owner {owner})? [y/N] "
        );
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            note("not removed");
            return Ok(1);
        }
    }
    let follow = if common.wait {
        Some(Follow::start(&bucket, common)?)
    } else {
        None
    };
    bucket.s3.delete(&found.key, &found.version.etag)?;
    let _ = writeln!(std::io::stdout().lock(), "removed {object}");
    match follow {
        Some(f) => f.until_done(&[Awaited::Gone {
            name: name.to_owned(),
        }]),
        None => Ok(0),
    }
}

pub(super) fn extend(
    name: &str,
    by: Duration,
    source: &str,
    if_match: Option<&str>,
    common: &Common,
) -> Result<u8, Error> {
    let mut bucket = Bucket::open(&common.config, source)?;
    let found = find(&mut bucket, name)?;
    let object = bucket.s3.object_url(&found.key);
    if let Some(want) = if_match
        && want != found.version.etag
    {
        return Err(WriteError::Changed {
            object,
            expected: want.to_owned(),
            found: Some(found.version.etag),
        }
        .into());
    }
    if found.doc.get("sops").is_some() {
        return Err(Error::Refused(format!(
            "{object} carries SOPS secrets, whose MAC covers expiration_date: edit it with sops, then `converge claim put --replace`"
        )));
    }
    let claim = Claim::from_document(&object, found.doc.clone()).map_err(|d| {
        Error::Refused(
            d.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    if claim.deployment_method != DeploymentMethod::Dynamic {
        return Err(Error::Refused(format!(
            "{name} is a static (deployment_method: git) environment: its expiry changes through review"
        )));
    }
    let Moved {
        current,
        until,
        capped,
    } = expiry(&bucket, &claim, by)?;
    let stamp = until.to_rfc3339_opts(SecondsFormat::Secs, true);
    let bytes = with_expiration(&found, &object, &stamp);
    let candidate = Candidate {
        shown: object.clone(),
        bytes,
        key: found.key.clone(),
    };
    let judged = bucket.judge(std::slice::from_ref(&candidate))?;
    for line in &judged.notes {
        note(line);
    }
    if !judged.diagnostics.is_empty() {
        for d in &judged.diagnostics {
            note(&d.to_string());
        }
        note(&format!(
            "the extended claim is invalid: {object} is unchanged"
        ));
        return Ok(1);
    }
    let follow = if common.wait {
        Some(Follow::start(&bucket, common)?)
    } else {
        None
    };
    let written = bucket.s3.write(
        &found.key,
        candidate.bytes,
        content_type(&found.key),
        &Precondition::Matches(found.version.etag.clone()),
    )?;
    if let Some(cap) = capped {
        note(&format!(
            "capped at {stamp}: type {} lives at most {} after its creation_date (presets.{}.max_lifetime)",
            claim.environment_type,
            crate::config::format_duration(cap),
            claim.environment_type
        ));
    }
    let _ = writeln!(
        std::io::stdout().lock(),
        "{name} expires at {stamp} (was {}): {object} {}",
        current.to_rfc3339_opts(SecondsFormat::Secs, true),
        written.etag
    );
    match follow {
        Some(f) => f.until_done(&[Awaited::Applied {
            name: name.to_owned(),
            etag: written.etag,
            object,
        }]),
        None => Ok(0),
    }
}

/// The claim's expiry now, the new one `by` later, and the cap when it applied.
fn expiry(bucket: &Bucket, claim: &Claim, by: Duration) -> Result<Moved, Error> {
    let preset = bucket
        .pipeline
        .renderer
        .presets()
        .get(claim.environment_type);
    let Some(current) = claim.expires_at(preset.ttl) else {
        return Err(Error::Refused(format!(
            "{} never expires (no expiration_date, and type {} has no ttl): there is nothing to extend",
            claim.environment_name, claim.environment_type
        )));
    };
    let (until, capped) = moved(
        current,
        by,
        claim.creation_date,
        preset.max_lifetime,
        claim.environment_type.as_str(),
    )?;
    Ok(Moved {
        current,
        until,
        capped,
    })
}

/// An expiry moved: from, to, and the cap when it applied.
struct Moved {
    current: DateTime<Utc>,
    until: DateTime<Utc>,
    capped: Option<Duration>,
}

/// The new expiry, `by` after `current`, and the cap when it applied.
fn moved(
    current: DateTime<Utc>,
    by: Duration,
    created: DateTime<Utc>,
    max_lifetime: Option<Duration>,
    env_type: &str,
) -> Result<(DateTime<Utc>, Option<Duration>), Error> {
    let far = || Error::Refused("--by: too far in the future".to_owned());
    let until = chrono::Duration::from_std(by)
        .ok()
        .and_then(|d| current.checked_add_signed(d))
        .ok_or_else(far)?;
    let Some(max) = max_lifetime else {
        return Ok((until, None));
    };
    let limit = chrono::Duration::from_std(max)
        .ok()
        .and_then(|d| created.checked_add_signed(d))
        .ok_or_else(far)?;
    if until <= limit {
        return Ok((until, None));
    }
    if current >= limit {
        return Err(Error::Refused(format!(
            "already at its type's maximum lifetime: type {env_type} lives at most {} after its creation_date (presets.{env_type}.max_lifetime)",
            crate::config::format_duration(max)
        )));
    }
    Ok((limit, Some(max)))
}

/// The object's bytes with `expiration_date` set to `stamp`: in YAML, the
/// one top-level `expiration_date:` line is replaced (or a line added), so
/// comments and layout stay; when that does not give the same document
/// with the new date (flow style, a JSON object), the document is written
/// again as JSON (pretty; in a `.yaml` object too, JSON being YAML).
fn with_expiration(found: &Found, object: &str, stamp: &str) -> Vec<u8> {
    let mut want = found.doc.clone();
    want["expiration_date"] = Value::String(stamp.to_owned());
    if !is_json(object)
        && let Ok(text) = std::str::from_utf8(&found.bytes)
    {
        let line = format!("expiration_date: \"{stamp}\"");
        let hits = text
            .lines()
            .filter(|l| l.starts_with("expiration_date:"))
            .count();
        let edited = match hits {
            0 => {
                let sep = if text.ends_with('\n') || text.is_empty() {
                    ""
                } else {
                    "\n"
                };
                Some(format!("{text}{sep}{line}\n"))
            }
            1 => Some(
                text.split_inclusive('\n')
                    .map(|l| {
                        if l.starts_with("expiration_date:") {
                            let end = if l.ends_with('\n') { "\n" } else { "" };
                            format!("{line}{end}")
                        } else {
                            l.to_owned()
                        }
                    })
                    .collect(),
            ),
            _ => None,
        };
        if let Some(edited) = edited {
            let file = crate::source::SourceFile::new(
                object.to_owned(),
                Content::Bytes(edited.clone().into_bytes().into()),
            );
            if crate::load::parse(&file).is_ok_and(|doc| doc == want) {
                return edited.into_bytes();
            }
        }
    }
    let mut text = serde_json::to_string_pretty(&want).expect("a JSON value serializes");
    text.push('\n');
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("a time")
            .with_timezone(&Utc)
    }

    #[test]
    fn an_expiry_moves_by_the_duration_up_to_the_types_maximum_lifetime() {
        let created = at("2026-01-01T00:00:00Z");
        let current = at("2026-01-02T00:00:00Z");
        let day = Duration::from_hours(24);
        let (until, capped) = moved(current, day, created, None, "sue").expect("moved");
        assert_eq!((until, capped), (at("2026-01-03T00:00:00Z"), None));
        let week = Some(Duration::from_hours(24 * 7));
        let (until, capped) = moved(current, day * 30, created, week, "sue").expect("capped");
        assert_eq!(until, at("2026-01-08T00:00:00Z"));
        assert_eq!(capped, week);
        let e =
            moved(at("2026-01-08T00:00:00Z"), day, created, week, "sue").expect_err("at the cap");
        assert!(e.to_string().contains("presets.sue.max_lifetime"), "{e}");
    }

    fn found(text: &str) -> Found {
        let file = crate::source::SourceFile::new(
            "s3://b/x.yaml".to_owned(),
            Content::Bytes(text.as_bytes().to_vec().into()),
        );
        Found {
            key: "x.yaml".to_owned(),
            bytes: text.as_bytes().to_vec(),
            version: ObjectVersion {
                etag: "e".to_owned(),
                last_modified: None,
            },
            doc: crate::load::parse(&file).expect("parses"),
        }
    }

    #[test]
    fn the_expiration_line_is_replaced_and_comments_stay() {
        let f = found("# mine\nuser: a@b.c\nexpiration_date: null # none yet\nservices: {}\n");
        let out = with_expiration(&f, "s3://b/x.yaml", "2026-01-02T00:00:00Z");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "# mine\nuser: a@b.c\nexpiration_date: \"2026-01-02T00:00:00Z\"\nservices: {}\n"
        );
        let f = found("user: a@b.c");
        let out = with_expiration(&f, "s3://b/x.yaml", "2026-01-02T00:00:00Z");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "user: a@b.c\nexpiration_date: \"2026-01-02T00:00:00Z\"\n"
        );
        // Flow style: written again as JSON.
        let f = found("{user: a@b.c, expiration_date: null}");
        let out = with_expiration(&f, "s3://b/x.yaml", "2026-01-02T00:00:00Z");
        let doc: Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(doc["expiration_date"], "2026-01-02T00:00:00Z");
        assert_eq!(doc["user"], "a@b.c");
    }
}
