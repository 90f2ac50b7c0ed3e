//! The registry client's errors, and how a transport failure is classified
//! (timed out or unreachable; a black-holed registry is remembered for the
//! rest of the scan through [`Error::again`]).

use std::path::PathBuf;

use super::{MAX_RATE_LIMITED, Registry};

/// Why a repository's tags could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registry {registry}: cannot connect: {message}")]
    Unreachable { registry: String, message: String },
    #[error("registry {registry}: timed out: {message}")]
    Timeout { registry: String, message: String },
    #[error("registry {registry}: {repository}: authentication failed (HTTP {status})")]
    AuthFailed {
        registry: String,
        repository: String,
        status: u16,
    },
    #[error("registry {registry}: repository {repository} does not exist (HTTP 404)")]
    RepositoryMissing {
        registry: String,
        repository: String,
    },
    #[error("registry {registry}: {repository}: server error (HTTP {status}{code})")]
    ServerError {
        registry: String,
        repository: String,
        status: u16,
        code: String,
    },
    #[error(
        "registry {registry}: {repository}: still rate limited after {MAX_RATE_LIMITED} waits (HTTP 429)"
    )]
    RateLimited {
        registry: String,
        repository: String,
    },
    #[error(
        "registry {registry}: the request budget of this scan is spent; {repository} keeps its last list"
    )]
    BudgetSpent {
        registry: String,
        repository: String,
    },
    #[error("registry {registry}: {repository}: page {page} of the listing failed: {error}")]
    ListingInterrupted {
        registry: String,
        repository: String,
        page: usize,
        #[source]
        error: Box<Error>,
    },
    #[error("registry {registry}: {repository}: unexpected answer: {message}")]
    BadResponse {
        registry: String,
        repository: String,
        message: String,
    },
    #[error("registry {registry}: {repository}: refused: {message}")]
    Refused {
        registry: String,
        repository: String,
        message: String,
    },
    #[error("registry {registry}: cannot read the credentials file {path}: {error}")]
    Credentials {
        registry: String,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("registry {registry}: cannot read the CA file {path}: {error}")]
    CaFile {
        registry: String,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

impl Error {
    /// The same transport failure for another repository of this scan.
    pub(crate) fn again(&self) -> Error {
        match self {
            Self::Timeout { registry, message } => Self::Timeout {
                registry: registry.clone(),
                message: message.clone(),
            },
            Self::Unreachable { registry, message } => Self::Unreachable {
                registry: registry.clone(),
                message: message.clone(),
            },
            Self::Credentials {
                registry,
                path,
                error,
            } => Self::Credentials {
                registry: registry.clone(),
                path: path.clone(),
                error: std::io::Error::new(error.kind(), error.to_string()),
            },
            other => Self::Unreachable {
                registry: String::new(),
                message: other.to_string(),
            },
        }
    }

    /// A stable reason for conditions and metric labels.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "Unreachable",
            Self::Timeout { .. } => "Timeout",
            Self::AuthFailed { .. } | Self::Credentials { .. } => "AuthFailed",
            Self::RepositoryMissing { .. } => "RepositoryMissing",
            Self::ServerError { .. } => "ServerError",
            Self::RateLimited { .. } => "RateLimited",
            Self::BudgetSpent { .. } => "BudgetSpent",
            Self::ListingInterrupted { .. } => "ListingInterrupted",
            Self::BadResponse { .. } => "BadResponse",
            Self::Refused { .. } => "Refused",
            Self::CaFile { .. } => "CaFileUnreadable",
        }
    }
}

impl Registry {
    pub(super) fn transport(&self, e: &ureq::Error) -> Error {
        let registry = self.options.host.clone();
        let timed_out = match e {
            ureq::Error::Timeout(_) => true,
            ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::TimedOut,
            _ => false,
        };
        if timed_out {
            Error::Timeout {
                registry,
                message: e.to_string(),
            }
        } else {
            Error::Unreachable {
                registry,
                message: e.to_string(),
            }
        }
    }

    pub(super) fn refused(&self, repository: &str, message: String) -> Error {
        Error::Refused {
            registry: self.options.host.clone(),
            repository: repository.to_owned(),
            message,
        }
    }
}
