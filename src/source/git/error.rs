//! The git source's errors. Every message that names the remote names it by
//! its sanitized URL; a failure to talk to the remote is classified by the
//! types of gix's causes ([`Failure::of`]), never by their text.

use std::path::PathBuf;
use std::time::Duration;

use crate::source::sanitize_url;
use crate::source::verify;

/// Why a git source could not be built or read. Every message that names
/// the remote names it by its sanitized URL (no user info, no query).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("path glob {glob:?}: {error}")]
    Glob {
        glob: String,
        #[source]
        error: globset::Error,
    },
    /// The `auth` block names no single way of authenticating.
    #[error("{0}")]
    Auth(String),
    #[error(transparent)]
    Trust(#[from] verify::Error),
    #[error("cannot read {}: {error}", path.display())]
    Credentials {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{url}: cannot create {}: {error}", path.display())]
    CreateMirror {
        url: String,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{url}: cannot {action} the mirror {}: {error}", path.display())]
    Mirror {
        url: String,
        /// `open` or `create`.
        action: &'static str,
        path: PathBuf,
        #[source]
        error: gix::Error,
    },
    /// Setting the mirror's `core.sshCommand` failed.
    #[error("{url}: {error}")]
    SshCommand {
        url: String,
        #[source]
        error: gix::Error,
    },
    /// The URL or the refspec does not make a remote.
    #[error("{url}: {cause}")]
    Remote {
        url: String,
        #[source]
        cause: Cause,
    },
    #[error("{url}: {cause}")]
    Connect {
        url: String,
        failure: Failure,
        #[source]
        cause: Cause,
    },
    /// Listing the remote's refs failed.
    #[error("{url}: {cause}")]
    ListRefs {
        url: String,
        failure: Failure,
        #[source]
        cause: Cause,
    },
    #[error("{url}: branch {branch} does not exist")]
    BranchMissing { url: String, branch: String },
    /// Receiving the pack failed.
    #[error("{url}: {cause}")]
    Receive {
        url: String,
        failure: Failure,
        #[source]
        cause: Cause,
    },
    /// An object of the mirror (commit, tree, blob) cannot be read.
    #[error("{url}: {error}")]
    Read {
        url: String,
        #[source]
        error: gix::Error,
    },
    /// The local repository of `converge plan --repo` cannot be opened.
    #[error("{url}: {error}")]
    OpenRepository {
        url: String,
        #[source]
        error: gix::Error,
    },
    #[error("{url}: {revision}: {error}")]
    RevisionMissing {
        url: String,
        revision: String,
        #[source]
        error: gix::Error,
    },
    #[error("no answer within {}s; the abandoned read is still running", timeout.as_secs())]
    Busy { timeout: Duration },
    #[error("cannot start the reader thread: {error}")]
    Worker {
        #[source]
        error: std::io::Error,
    },
    #[error("an earlier read failed badly")]
    Poisoned,
}

impl Error {
    /// A stable reason for conditions and metric labels.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Glob { .. }
            | Self::Auth(_)
            | Self::Trust(_)
            | Self::Credentials { .. }
            | Self::SshCommand { .. }
            | Self::Remote { .. } => "SourceMisconfigured",
            Self::CreateMirror { .. } | Self::Mirror { .. } => "MirrorCorrupt",
            Self::Connect { failure, .. }
            | Self::ListRefs { failure, .. }
            | Self::Receive { failure, .. } => failure.reason(),
            Self::BranchMissing { .. } => "BranchMissing",
            Self::Read { .. } => "RepositoryUnreadable",
            Self::OpenRepository { .. } => "RepositoryMissing",
            Self::RevisionMissing { .. } => "RevisionMissing",
            Self::Busy { .. } => "Timeout",
            Self::Worker { .. } | Self::Poisoned => "Unreachable",
        }
    }
}

/// What a failure to talk to the remote says about it, from gix's error
/// classes and the I/O errors and HTTP statuses among its causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Credentials missing or refused (401, 403, ssh `Permission denied`).
    AuthFailed,
    /// The connection timed out.
    Timeout,
    /// The server has no such repository (HTTP 404).
    RepositoryMissing,
    /// Anything else: refused connections, unknown hosts, broken streams.
    Unreachable,
}

impl Failure {
    /// Classifies a gix error by its causes' types, never by their text.
    #[must_use]
    pub fn of(error: &gix::Error) -> Failure {
        if error.is_unauthenticated() || error.is_permission_denied() {
            return Failure::AuthFailed;
        }
        let causes = || error.iter_errors();
        if causes()
            .filter_map(|e| e.downcast_ref::<std::io::Error>())
            .any(|e| e.kind() == std::io::ErrorKind::TimedOut)
        {
            Failure::Timeout
        } else if causes()
            .filter_map(|e| e.downcast_ref::<reqwest::Error>())
            .any(|e| e.status() == Some(reqwest::StatusCode::NOT_FOUND))
        {
            Failure::RepositoryMissing
        } else {
            Failure::Unreachable
        }
    }

    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::AuthFailed => "AuthFailed",
            Self::Timeout => "Timeout",
            Self::RepositoryMissing => "RepositoryMissing",
            Self::Unreachable => "Unreachable",
        }
    }
}

/// A gix error about the remote. Its text (the error and its causes on one
/// line) has the configured URL sanitized; the error itself is kept as the
/// source only when the configured URL has nothing to hide, so no printer
/// of the chain can show a credential.
#[derive(Debug)]
pub struct Cause {
    text: String,
    error: Option<gix::Error>,
}

impl Cause {
    pub(super) fn new(error: gix::Error, url: &str) -> Cause {
        let shown = sanitize_url(url);
        let text = crate::diagnostic::chain(&error);
        if url == shown {
            Cause {
                text,
                error: Some(error),
            }
        } else {
            Cause {
                text: sanitize_text(&text, url, &shown),
                error: None,
            }
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.as_ref().map(|e| e as _)
    }
}

/// `text` without the configured URL's credentials: the URL itself becomes
/// `shown` (its sanitized form), and its user info and query are removed
/// wherever else they appear.
pub(super) fn sanitize_text(text: &str, url: &str, shown: &str) -> String {
    let mut out = text.replace(url, shown);
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        out = out.replace(&format!("{userinfo}@"), "");
        if let Some((_, password)) = userinfo.split_once(':')
            && password.len() >= 4
        {
            out = out.replace(password, "***");
        }
    }
    if let Some((_, query)) = url.split_once('?')
        && !query.is_empty()
    {
        out = out.replace(query, "***");
    }
    out
}

/// A gix error and its causes on one line, the URL's credentials removed.
#[must_use]
pub fn sanitized_chain(error: &gix::Error, url: &str, shown: &str) -> String {
    sanitize_text(&crate::diagnostic::chain(error), url, shown)
}
