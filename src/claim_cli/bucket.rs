//! The bucket source a `claim` command writes to, from the config: its
//! [`S3Source`] (client, credentials, errors: the daemon's), where a claim's
//! object goes, where an environment's object is, and validation of bytes
//! exactly as the daemon would judge them as an object of that source.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;

use super::Error;
use crate::config::{Config, SourceConfig};
use crate::diagnostic::Diagnostic;
use crate::pipeline::Pipeline;
use crate::source::s3::S3Source;
use crate::source::{Content, Provenance, Revision, Snapshot, SourceFile, SourceKind};

/// A writable `s3` source of the config, with the pipeline that judges its claims.
pub(super) struct Bucket {
    pub(super) config: Config,
    pub(super) pipeline: Pipeline,
    pub(super) s3: S3Source,
    pub(super) name: String,
    pool_from_prefix: bool,
}

/// One claim to judge: its name in messages, its bytes, its object key.
pub(super) struct Candidate {
    pub(super) shown: String,
    pub(super) bytes: Vec<u8>,
    pub(super) key: String,
}

/// What validation found: every problem, and lines about what could not
/// be checked (as `converge validate` prints them).
pub(super) struct Judged {
    pub(super) diagnostics: Vec<Diagnostic>,
    pub(super) notes: Vec<String>,
}

impl Bucket {
    /// The `s3` source `source` of the config at `config_path`; any other
    /// kind, or a `static` bucket, is refused with the reason.
    pub(super) fn open(config_path: &Path, source: &str) -> Result<Bucket, Error> {
        let config = Config::load(config_path)?;
        let Some(found) = config.sources.iter().find(|s| s.name() == source) else {
            let names: Vec<&str> = config.sources.iter().map(SourceConfig::name).collect();
            return Err(Error::Refused(format!(
                "{}: no source named {source:?} (its sources: {})",
                config_path.display(),
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            )));
        };
        let pool_from_prefix = match found {
            SourceConfig::S3 {
                is_static: true,
                bucket,
                ..
            } => {
                return Err(Error::Refused(format!(
                    "source {source:?} is the static (write-once) bucket {bucket}: it is written only by CI from git, \
                     and the daemon refuses a changed object there; a static environment changes through a \
                     reviewed pull request on the git source"
                )));
            }
            SourceConfig::S3 {
                pool_from_prefix, ..
            } => *pool_from_prefix,
            SourceConfig::Git { .. } => {
                return Err(Error::Refused(format!(
                    "source {source:?} is a git source: claims reach it through a reviewed pull request, not an upload \
                     (converge claim put writes to an s3 source)"
                )));
            }
            SourceConfig::Dir { .. } => {
                return Err(Error::Refused(format!(
                    "source {source:?} is a directory: write the claim file into it \
                     (converge claim put writes to an s3 source)"
                )));
            }
        };
        let s3 = S3Source::from_config(found, config.limits.max_file_bytes)?;
        let pipeline = crate::pipeline_for(&config)?;
        Ok(Bucket {
            config,
            pipeline,
            s3,
            name: source.to_owned(),
            pool_from_prefix,
        })
    }

    /// The prefix keys start with (`prefix/` when the prefix has no
    /// trailing `/`).
    fn prefix(&self) -> String {
        let p = &self.s3.options().prefix;
        if p.is_empty() || p.ends_with('/') {
            p.clone()
        } else {
            format!("{p}/")
        }
    }

    /// Where the claim for `name` in `pool` goes: `<prefix>[<pool>/]<name><ext>`.
    pub(super) fn key_for(&self, name: &str, pool: &str, ext: &str) -> String {
        if self.pool_from_prefix {
            format!("{}{pool}/{name}{ext}", self.prefix())
        } else {
            format!("{}{name}{ext}", self.prefix())
        }
    }

    /// The key of the object holding environment `name`: the one claim
    /// object under the prefix named `<name>.yaml`, `.yml` or `.json`.
    pub(super) fn locate(&mut self, name: &str) -> Result<String, Error> {
        let keys = self.s3.claim_keys()?;
        let found: Vec<String> = keys
            .into_iter()
            .filter(|k| {
                let file = k.rsplit('/').next().unwrap_or(k);
                [".yaml", ".yml", ".json"]
                    .iter()
                    .any(|ext| file.strip_suffix(ext) == Some(name))
            })
            .collect();
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::Refused(format!(
                "no claim object for {name} in {} (looked for {name}.yaml, {name}.yml and {name}.json under the prefix)",
                self.s3.object_url(&self.prefix())
            ))),
            many => Err(Error::Refused(format!(
                "{} claim objects are named after {name}: {}",
                many.len(),
                many.iter()
                    .map(|k| self.s3.object_url(k))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Judges the candidates as the daemon would judge them as objects of
    /// this source (schema, claim checks, Cedar with the object's
    /// provenance, secrets' MAC when keys are configured, version
    /// constraints against the tag source). A create is asked, as
    /// `converge validate` asks.
    pub(super) fn judge(&self, candidates: &[Candidate]) -> Result<Judged, Error> {
        let o = self.s3.options();
        let files = candidates
            .iter()
            .map(|c| {
                let content = if c.bytes.len() as u64 > o.max_file_bytes {
                    Content::TooLarge {
                        size: c.bytes.len() as u64,
                        limit: o.max_file_bytes,
                    }
                } else {
                    Content::Bytes(c.bytes.clone().into())
                };
                let mut file = SourceFile::new(c.shown.clone(), content);
                file.provenance = Some(Arc::new(Provenance::S3 {
                    bucket: o.bucket.clone(),
                    key: c.key.clone(),
                    etag: String::new(),
                    last_modified: None,
                    metadata: BTreeMap::new(),
                }));
                file
            })
            .collect();
        let snapshot = Snapshot {
            source: self.name.clone(),
            kind: SourceKind::S3,
            is_static: false,
            revision: Revision("local".to_owned()),
            files,
        };
        judge(&self.config, &self.pipeline, snapshot)
    }
}

/// Judges a snapshot's files as the daemon would (stages 2–3 and the
/// version check, as `converge validate` does).
pub(super) fn judge(
    config: &Config,
    pipeline: &Pipeline,
    snapshot: Snapshot,
) -> Result<Judged, Error> {
    let snapshots = [snapshot];
    let now = Utc::now();
    let validated = pipeline.validate(&snapshots, now);
    let mut diagnostics = validated.diagnostics;
    let versions = crate::check_versions(config, pipeline, &snapshots, now)?;
    diagnostics.extend(versions.diagnostics);
    diagnostics.sort_by(|a, b| a.file.cmp(&b.file).then_with(|| a.pointer.cmp(&b.pointer)));
    let mut notes = Vec::new();
    if !versions.no_source {
        notes.extend(
            versions
                .unchecked
                .iter()
                .map(|u| format!("not checked: {u}")),
        );
    }
    if validated.secrets_unchecked > 0 {
        notes.push(format!(
            "{} file(s) carry SOPS secrets that were not decrypted or MAC-checked: no age key is configured (secrets.age_key_files)",
            validated.secrets_unchecked
        ));
    }
    Ok(Judged { diagnostics, notes })
}

/// The extension an object gets for bytes read from `shown`: `.json` for
/// JSON (by name, or by content for stdin), `.yaml` otherwise.
pub(super) fn extension(shown: &str, bytes: &[u8]) -> &'static str {
    let json = if shown == "-" {
        bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{')
    } else {
        is_json(shown)
    };
    if json { ".json" } else { ".yaml" }
}

/// Whether an object key or file name is JSON's (by its extension).
pub(super) fn is_json(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".json")
}

/// The content type an object at `key` is written with.
pub(super) fn content_type(key: &str) -> &'static str {
    if is_json(key) {
        "application/json"
    } else {
        "application/yaml"
    }
}
