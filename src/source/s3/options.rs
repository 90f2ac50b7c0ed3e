//! The options of an s3 source, from its config (`ca_file` read at start),
//! and its credentials, read from files or environment variables on every
//! poll so a rotated secret needs no restart.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_s3::config::Credentials;

use super::error::{Error, source_error};
use crate::config::{S3Credentials, SourceConfig};
use crate::source::SourceKind;

/// Everything an s3 source needs, from the config.
#[derive(Debug, Clone)]
pub struct Options {
    /// The source's configured name.
    pub name: String,
    /// `http(s)://host:port`; AWS's own endpoint for the region when `None`.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    /// `http://host/bucket/key` rather than `http://bucket.host/key`.
    pub path_style: bool,
    /// Write-once: a changed object is refused, the first version stays.
    pub is_static: bool,
    pub credentials: CredentialSources,
    /// PEM CA certificates trusted instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The bound on each request and on reading each object's body.
    pub timeout: Duration,
    pub interval: Duration,
    /// Objects above this size are refused from the listing, unread.
    pub max_file_bytes: u64,
}

/// Where one credential is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A file, trimmed.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// Where the key id and secret (and, from the environment only, a session
/// token) are read from. Read on every poll, so a rotated secret is used
/// without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSources {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl CredentialSources {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`:
    /// what a source without a `credentials` block uses.
    #[must_use]
    pub fn environment() -> CredentialSources {
        CredentialSources {
            access_key_id: Secret::Env("AWS_ACCESS_KEY_ID".to_owned()),
            secret_access_key: Secret::Env("AWS_SECRET_ACCESS_KEY".to_owned()),
            session_token: Some(Secret::Env("AWS_SESSION_TOKEN".to_owned())),
        }
    }

    /// From the config's `credentials` block: one source for each value.
    pub fn from_config(c: &S3Credentials) -> Result<CredentialSources, String> {
        let one = |file: &Option<PathBuf>, env: &Option<String>, what: &str| match (file, env) {
            (Some(f), None) => Ok(Secret::File(f.clone())),
            (None, Some(e)) => Ok(Secret::Env(e.clone())),
            _ => Err(format!(
                "credentials: give exactly one of {what}_file and {what}_env"
            )),
        };
        Ok(CredentialSources {
            access_key_id: one(&c.access_key_id_file, &c.access_key_id_env, "access_key_id")?,
            secret_access_key: one(
                &c.secret_access_key_file,
                &c.secret_access_key_env,
                "secret_access_key",
            )?,
            session_token: None,
        })
    }

    /// Where the key id and secret come from, for messages (never a value).
    #[must_use]
    pub fn shown(&self) -> String {
        let one = |s: &Secret| match s {
            Secret::File(p) => format!("the file {}", p.display()),
            Secret::Env(v) => format!("${v}"),
        };
        format!(
            "key id from {}, secret from {}",
            one(&self.access_key_id),
            one(&self.secret_access_key)
        )
    }

    /// Reads the credentials now. Errors name the file or variable, never a value.
    pub(super) fn load(&self) -> Result<Credentials, String> {
        let id = read_secret(&self.access_key_id, "access key id")?;
        let secret = read_secret(&self.secret_access_key, "secret access key")?;
        let token = match &self.session_token {
            Some(Secret::Env(var)) => std::env::var(var).ok().filter(|t| !t.trim().is_empty()),
            Some(s @ Secret::File(_)) => Some(read_secret(s, "session token")?),
            None => None,
        };
        Ok(Credentials::new(id, secret, token, None, "converge"))
    }
}

pub(super) fn read_secret(from: &Secret, what: &str) -> Result<String, String> {
    let value = match from {
        Secret::Env(var) => {
            std::env::var(var).map_err(|_| format!("the {what} variable {var} is not set"))?
        }
        Secret::File(path) => crate::secret_file::read(path)
            .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))?,
    };
    let value = value.trim();
    if value.is_empty() {
        let place = match from {
            Secret::Env(var) => format!("variable {var}"),
            Secret::File(path) => format!("file {}", path.display()),
        };
        return Err(format!("the {what} {place} is empty"));
    }
    Ok(value.to_owned())
}

impl Options {
    /// The options an `s3` source config describes. Reads `ca_file` now; the
    /// credentials are read on each poll.
    pub fn from_config(
        config: &SourceConfig,
        max_file_bytes: u64,
    ) -> Result<Options, crate::source::Error> {
        let SourceConfig::S3 {
            name,
            endpoint,
            region,
            bucket,
            prefix,
            path_style,
            is_static,
            credentials,
            ca_file,
            timeout,
            interval,
            ..
        } = config
        else {
            return Err(crate::source::Error::NotKind {
                source_name: config.name().to_owned(),
                kind: SourceKind::S3,
            });
        };
        let fail = |error| source_error(name, error);
        let bad = |message: String| fail(Error::Invalid(message));
        if let Some(endpoint) = endpoint {
            let rest = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"))
                .ok_or_else(|| bad("endpoint: must start with http:// or https://".to_owned()))?;
            if rest.split('/').next().unwrap_or_default().contains('@') {
                return Err(bad(
                    "endpoint: credentials do not belong in the URL; use credentials:".to_owned(),
                ));
            }
        }
        if bucket.is_empty() {
            return Err(bad("bucket: must not be empty".to_owned()));
        }
        if timeout.is_zero() {
            return Err(bad("timeout: must be more than 0s".to_owned()));
        }
        let credentials = match credentials {
            Some(c) => CredentialSources::from_config(c).map_err(bad)?,
            None => CredentialSources::environment(),
        };
        let ca_pem = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|error| {
                    fail(Error::CaFile {
                        path: path.clone(),
                        error,
                    })
                })?;
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    return Err(fail(Error::CaFileEmpty { path: path.clone() }));
                }
                Some(pem)
            }
            None => None,
        };
        let region = region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_owned());
        Ok(Options {
            name: name.clone(),
            endpoint: endpoint.clone(),
            region,
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            path_style: *path_style,
            is_static: *is_static,
            credentials,
            ca_pem,
            timeout: *timeout,
            interval: *interval,
            max_file_bytes,
        })
    }

    /// `s3://bucket/prefix`, for messages.
    pub(super) fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// The endpoint as messages show it.
    pub(super) fn endpoint_shown(&self) -> &str {
        self.endpoint.as_deref().unwrap_or("the AWS S3 endpoint")
    }
}
