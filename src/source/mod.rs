//! Stage 1, fetch: sources return bytes, not claims.
//!
//! A source reads its files into a [`Snapshot`]: the raw bytes of each claim
//! file, the file's display name and a [`Revision`]. Only `load` parses. A
//! source that cannot be read returns an [`Error`]; callers keep the last good
//! snapshot (unreadable is not empty).

pub mod dir;
pub mod git;
pub mod s3;
pub mod verify;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// What identifies the content of a snapshot: equal revisions, equal bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Revision(pub String);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind of a source, as the policy context sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Dir,
    Git,
    S3,
}

impl SourceKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dir => "dir",
            Self::Git => "git",
            Self::S3 => "s3",
        }
    }
}

/// Where a claim came from: enough to find the file again and to decide policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
pub struct Origin {
    /// The source's configured name.
    pub source: String,
    /// The file as the user knows it (e.g. `claims/dev-x.yaml`).
    pub path: String,
}

/// The content of one file, or why it was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The file's bytes (shared: a snapshot and a source's memory of it).
    Bytes(bytes::Bytes),
    /// Refused before reading: larger than the configured cap.
    TooLarge { size: u64, limit: u64 },
    /// The file could not be read (permissions, vanished, ...).
    Unreadable(String),
    /// The source refused to read the file (a symbolic link out of a
    /// directory source's root): `rule` and `message` as the diagnostic says.
    Refused { rule: &'static str, message: String },
}

/// One claim file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub content: Content,
    /// Identifies the content: equal digests, equal bytes (SHA-256 of the
    /// bytes; a source with its own content ids may use those instead).
    pub digest: [u8; 32],
    /// Where this version of the file came from (commit or object), for
    /// policies and status; `None` for a local directory.
    pub provenance: Option<Arc<Provenance>>,
    /// Something the source refused about this file while still serving an
    /// earlier, acceptable version of it (a rewritten object in a write-once
    /// bucket, an unsigned commit where signatures are required). Reported as
    /// a diagnostic and a condition on the environment.
    pub notice: Option<Notice>,
}

/// A source's objection to a newer version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The rule, as in diagnostics (`write-once`, `signature-required`).
    pub rule: String,
    pub message: String,
}

/// A person as git records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Person {
    pub name: String,
    pub email: String,
}

/// How a commit's signature checked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Signature {
    /// `none`, `ssh` or `gpg`.
    pub kind: String,
    /// Signed by a trusted key, and the signature is valid.
    pub verified: bool,
    /// The trusted key's principal or user id, when verified.
    pub signer: Option<String>,
    /// Why it is not verified, when it is not.
    pub problem: Option<String>,
}

/// Where one version of a claim file came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Provenance {
    /// The commit that last changed the file on the tracked branch.
    Git {
        /// The repository URL, credentials removed.
        repository: String,
        branch: String,
        commit: String,
        author: Person,
        committer: Person,
        /// Commit time, unix seconds.
        time: i64,
        /// Trailers (`Reviewed-by: ...`), key to values, in order.
        trailers: BTreeMap<String, Vec<String>>,
        signature: Signature,
    },
    /// The object in a bucket.
    S3 {
        bucket: String,
        key: String,
        etag: String,
        /// RFC 3339.
        last_modified: Option<String>,
        /// User metadata (`x-amz-meta-*`), key to value.
        metadata: BTreeMap<String, String>,
    },
}

impl SourceFile {
    /// A file whose digest is the SHA-256 of its content.
    #[must_use]
    pub fn new(path: String, content: Content) -> SourceFile {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        match &content {
            Content::Bytes(b) => hasher.update(b),
            Content::TooLarge { size, .. } => hasher.update(format!("\0too-large:{size}")),
            Content::Unreadable(e) => hasher.update(format!("\0unreadable:{e}")),
            Content::Refused { rule, message } => {
                hasher.update(format!("\0refused:{rule}:{message}"));
            }
        }
        SourceFile {
            path,
            content,
            digest: hasher.finalize().into(),
            provenance: None,
            notice: None,
        }
    }
}

/// Everything one source holds at one revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub source: String,
    pub kind: SourceKind,
    /// True for a write-once static source (the static bucket).
    pub is_static: bool,
    pub revision: Revision,
    pub files: Vec<SourceFile>,
}

/// A source that cannot be built or read: it keeps its last good snapshot.
/// Each kind's failures are its own error type, kept as the source; messages
/// never contain credentials (URLs are sanitized when an error is built).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("source {source_name}: cannot read {path}: {error}")]
    Unreadable {
        source_name: String,
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("source {source_name}: kind {kind} is not supported by this build yet")]
    Unsupported {
        source_name: String,
        kind: &'static str,
    },
    /// A source was built from the config of another kind.
    #[error("source {source_name}: not a {} source", kind.as_str())]
    NotKind {
        source_name: String,
        kind: SourceKind,
    },
    #[error("source {source_name}: {error}")]
    Git {
        source_name: String,
        #[source]
        error: Box<git::Error>,
    },
    #[error("source {source_name}: {error}")]
    S3 {
        source_name: String,
        #[source]
        error: Box<s3::Error>,
    },
}

impl Error {
    /// A stable reason for conditions and metric labels (`AuthFailed`,
    /// `Unreachable`, `BranchMissing`, `BucketMissing`, `Timeout`, ...).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreadable { .. } => "SourceUnreadable",
            Self::Unsupported { .. } => "SourceUnsupported",
            Self::NotKind { .. } => "SourceMisconfigured",
            Self::Git { error, .. } => error.reason(),
            Self::S3 { error, .. } => error.reason(),
        }
    }
}

/// A place claims come from. `read` returns the whole snapshot at the
/// source's current revision; implementations keep whatever state makes an
/// unchanged source cheap to read again (a ref check, an `ETag` listing).
pub trait Source: Send {
    fn name(&self) -> &str;
    /// How often the daemon polls it.
    fn interval(&self) -> Duration;
    fn read(&mut self) -> Result<Snapshot, Error>;
    /// Like `read`, but `None` when the source is still at `have`: the
    /// revision of the snapshot the caller holds and uses (sources that know
    /// cheaply skip building a snapshot). `None` is only ever an answer about
    /// `have`, never about what the source itself saw last: a read the caller
    /// abandoned (a timeout) may have seen a newer revision, and the caller
    /// must still get that revision's snapshot.
    fn read_changed(&mut self, _have: Option<&Revision>) -> Result<Option<Snapshot>, Error> {
        self.read().map(Some)
    }
    /// Seeds the source with a snapshot it returned before (restored from the
    /// state store after a restart), so an unchanged source is cheap to read.
    /// A cache only: it never makes the source answer "unchanged" to a
    /// caller that does not hold that snapshot.
    fn restore(&mut self, _snapshot: &Snapshot) {}
    /// A git source's work counters (for metrics); `None` for other kinds.
    fn git_stats(&self) -> Option<Arc<git::Stats>> {
        None
    }
}

/// True for file names converge reads as claims.
#[must_use]
pub fn is_claim_file(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".json", ".yaml", ".yml"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// A URL without user info (credentials) and query.
#[must_use]
pub fn sanitize_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    match scheme {
        Some(s) => format!("{s}://{authority}{path}"),
        None => format!("{authority}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            sanitize_url("https://user:s3cret@git.example.com/a/b.git?x=1"),
            "https://git.example.com/a/b.git"
        );
        assert_eq!(
            sanitize_url("ssh://git@host:22/r.git"),
            "ssh://host:22/r.git"
        );
        assert_eq!(
            sanitize_url("git://127.0.0.1:9418/r"),
            "git://127.0.0.1:9418/r"
        );
        assert_eq!(sanitize_url("/srv/repos/envs.git"), "/srv/repos/envs.git");
    }
}
