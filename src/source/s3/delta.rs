//! The listing delta (pure): what one poll does with each listed claim
//! object given the last good listing (keep, fetch, refuse unread, refuse a
//! write-once change), and the next listing and snapshot built from it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::Options;
use super::fetch::Fetched;
use crate::source::{Content, Notice, Provenance, Revision, Snapshot, SourceFile, SourceKind};

/// One object as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    pub(super) key: String,
    /// Without quotes; `None` when the server gave none (fetched every poll).
    pub(super) etag: Option<String>,
    pub(super) size: u64,
    pub(super) last_modified: Option<String>,
}

/// The version of one key the source serves.
#[derive(Debug, Clone)]
pub(super) struct Served {
    pub(super) etag: Option<String>,
    /// Its last-modified time (RFC 3339): a PUT of the same bytes with other
    /// metadata keeps the `ETag` but changes this.
    pub(super) modified: Option<String>,
    /// Without a notice (a refusal's notice is added per snapshot).
    pub(super) file: SourceFile,
}

/// What one poll does with one listed claim object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// Unchanged: serve the bytes read before.
    Keep,
    /// New or changed: `GET` it.
    Fetch,
    /// Larger than the cap: refuse it unread.
    TooLarge,
    /// Changed in a write-once bucket: serve the first version, with a notice.
    Refuse,
}

/// Decides, per listed object, what this poll does (pure).
pub(super) fn plan(
    known: &BTreeMap<String, Served>,
    listed: &Listed,
    is_static: bool,
    max_file_bytes: u64,
) -> Step {
    match known.get(&listed.key) {
        Some(served)
            if listed.etag.is_some()
                && served.etag == listed.etag
                && same_time(served.modified.as_deref(), listed.last_modified.as_deref()) =>
        {
            Step::Keep
        }
        // The same bytes uploaded again (other metadata): read again, so the
        // policies judge the metadata as it is now, in either direction.
        Some(served) if listed.etag.is_some() && served.etag == listed.etag => Step::Fetch,
        // Without an ETag a write-once bucket cannot tell a change: keep.
        Some(_) if is_static && listed.etag.is_none() => Step::Keep,
        Some(_) if is_static => Step::Refuse,
        _ if listed.size > max_file_bytes => Step::TooLarge,
        _ => Step::Fetch,
    }
}

/// Whether two last-modified times are the same second (a listing and a
/// `GET` give them at different precisions); unknown on either side is the
/// same.
pub(super) fn same_time(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.get(..19) == b.get(..19),
        _ => true,
    }
}

/// Builds the new listing and the snapshot from this poll's steps (pure).
pub(super) fn assemble(
    o: &Options,
    known: &BTreeMap<String, Served>,
    steps: Vec<(Listed, Step)>,
    mut fetched: HashMap<String, Fetched>,
) -> (BTreeMap<String, Served>, Snapshot) {
    let mut next = BTreeMap::new();
    let mut files = Vec::with_capacity(steps.len());
    let mut revision = Sha256::new();
    for (listed, step) in steps {
        let served = match step {
            Step::Keep | Step::Refuse => known.get(&listed.key).cloned(),
            Step::TooLarge => Some(Served {
                etag: listed.etag.clone(),
                modified: listed.last_modified.clone(),
                file: object_file(
                    o,
                    &listed.key,
                    Content::TooLarge {
                        size: listed.size,
                        limit: o.max_file_bytes,
                    },
                    listed.etag.as_deref(),
                    listed.last_modified.clone(),
                    BTreeMap::new(),
                ),
            }),
            Step::Fetch => fetched.remove(&listed.key).map(|f| Served {
                file: object_file(
                    o,
                    &listed.key,
                    f.content,
                    f.etag.as_deref(),
                    f.last_modified.or_else(|| listed.last_modified.clone()),
                    f.metadata,
                ),
                etag: f.etag,
                modified: listed.last_modified.clone(),
            }),
        };
        let Some(served) = served else { continue };
        let mut file = served.file.clone();
        revision.update(listed.key.as_bytes());
        revision.update([0]);
        revision.update(served.etag.as_deref().unwrap_or_default().as_bytes());
        revision.update([0]);
        revision.update(
            served
                .modified
                .as_deref()
                .and_then(|m| m.get(..19))
                .unwrap_or_default()
                .as_bytes(),
        );
        if step == Step::Refuse {
            let seen = listed.etag.as_deref().unwrap_or("unknown");
            let first = served.etag.as_deref().unwrap_or("unknown");
            revision.update([0]);
            revision.update(seen.as_bytes());
            file.notice = Some(Notice {
                rule: "write-once".to_owned(),
                message: format!(
                    "s3://{}/{} is in a write-once (static) bucket: its new version (ETag {seen}) is refused; the first version (ETag {first}) stays in force",
                    o.bucket, listed.key
                ),
            });
        }
        revision.update([b'\n']);
        files.push(file);
        next.insert(listed.key, served);
    }
    let snapshot = Snapshot {
        source: o.name.clone(),
        kind: SourceKind::S3,
        is_static: o.is_static,
        revision: Revision(format!(
            "sha256:{}",
            crate::hex::encode(&revision.finalize())
        )),
        files,
    };
    (next, snapshot)
}

/// A file read from (or refused in) the bucket, named `s3://bucket/key`.
///
/// Its digest covers the bytes and the object's identity (`ETag`,
/// last-modified, metadata): equal digests still mean equal bytes, and a
/// re-upload of the same bytes with other metadata is authorized again.
pub(super) fn object_file(
    o: &Options,
    key: &str,
    content: Content,
    etag: Option<&str>,
    last_modified: Option<String>,
    metadata: BTreeMap<String, String>,
) -> SourceFile {
    let mut file = SourceFile::new(format!("s3://{}/{key}", o.bucket), content);
    let mut digest = Sha256::new();
    digest.update(b"converge-s3-object\0");
    digest.update(file.digest);
    digest.update(etag.unwrap_or_default().as_bytes());
    digest.update([0]);
    digest.update(last_modified.as_deref().unwrap_or_default().as_bytes());
    for (k, v) in &metadata {
        digest.update([0]);
        digest.update(k.as_bytes());
        digest.update([b'=']);
        digest.update(v.as_bytes());
    }
    file.digest = digest.finalize().into();
    file.provenance = Some(Arc::new(Provenance::S3 {
        bucket: o.bucket.clone(),
        key: key.to_owned(),
        etag: etag.unwrap_or_default().to_owned(),
        last_modified,
        metadata,
    }));
    file
}
