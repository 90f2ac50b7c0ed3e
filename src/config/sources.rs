//! `sources:` entries (dir, git, s3), git authentication and commit
//! signature requirements.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::de_duration;
use crate::claim::EnvironmentType;

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    Dir {
        name: String,
        path: PathBuf,
        /// The path as written in the config (relative to the config file):
        /// how claim files are named in diagnostics and recorded as origins,
        /// whatever the working directory.
        #[serde(skip)]
        shown: String,
    },
    Git {
        name: String,
        url: String,
        #[serde(default = "default_branch")]
        branch: String,
        #[serde(default)]
        paths: Vec<String>,
        #[serde(default = "default_interval", deserialize_with = "de_duration")]
        interval: Duration,
        #[serde(default)]
        auth: Option<GitAuthConfig>,
        #[serde(default)]
        signatures: Option<SignaturesConfig>,
        /// The longest one poll (ref check and fetch) may take.
        #[serde(default = "default_git_timeout", deserialize_with = "de_duration")]
        timeout: Duration,
        /// The forge the repository lives on: plans on pull requests, apply
        /// statuses, review provenance.
        #[serde(default)]
        forge: Option<ForgeConfig>,
    },
    S3 {
        name: String,
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default)]
        region: Option<String>,
        bucket: String,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        path_style: bool,
        #[serde(default, rename = "static")]
        is_static: bool,
        /// Where the access key id and secret come from; the
        /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and
        /// `AWS_SESSION_TOKEN`) environment variables when absent.
        #[serde(default)]
        credentials: Option<S3Credentials>,
        /// PEM CA certificates trusted for an `https://` endpoint (instead of
        /// the system roots).
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// The bound on each request (connecting: at most 5 s of it).
        #[serde(default = "default_s3_timeout", deserialize_with = "de_duration")]
        timeout: Duration,
        #[serde(default = "default_interval", deserialize_with = "de_duration")]
        interval: Duration,
        /// A claim's `environment_pool` must be the first segment of its key
        /// (after `prefix`): with a per-pool write permission on the bucket,
        /// the pool is bound to who may write there.
        #[serde(default)]
        pool_from_prefix: bool,
    },
}

/// `forge:` on a git source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgeConfig {
    pub kind: ForgeKind,
    /// The API's base URL; derived from the source's URL when absent
    /// (Gitea `/api/v1`, GitHub `api.github.com` or `/api/v3`, GitLab `/api/v4`).
    #[serde(default)]
    pub api_url: Option<String>,
    /// The API token, read on every use (rotation without restart).
    pub token_file: PathBuf,
    /// Plan comments and plan statuses on open pull requests.
    #[serde(default = "yes")]
    pub pull_requests: bool,
    /// Apply statuses on the commits converge applies.
    #[serde(default = "yes")]
    pub commit_statuses: bool,
    /// The status context prefix (`<context>/apply`, `<context>/plan`);
    /// `converge/<host name>` when absent, so two installations never
    /// overwrite each other's statuses.
    #[serde(default)]
    pub context: Option<String>,
    /// The bound on each request.
    #[serde(default = "default_forge_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

/// Which forge API a git source's repository speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    /// Gitea and Forgejo (one API).
    #[serde(alias = "forgejo")]
    Gitea,
    Github,
    Gitlab,
}

impl ForgeKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gitea => "gitea",
            Self::Github => "github",
            Self::Gitlab => "gitlab",
        }
    }
}

fn yes() -> bool {
    true
}

fn default_forge_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Where an s3 source's key id and secret are read from, on every poll (so
/// rotated secrets are picked up): a file (trimmed) or an environment
/// variable, one of each.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Credentials {
    #[serde(default)]
    pub access_key_id_file: Option<PathBuf>,
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
}

pub(super) fn default_s3_timeout() -> Duration {
    Duration::from_secs(30)
}

impl SourceConfig {
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Dir { name, .. } | Self::Git { name, .. } | Self::S3 { name, .. } => name,
        }
    }
}

/// Credentials of a git source, read from files (never inline).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitAuthConfig {
    /// HTTPS: a token file (sent as the password).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// HTTPS basic auth user name (with `password_file` or `token_file`).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// SSH: a private key for the system `ssh`.
    #[serde(default)]
    pub ssh_key_file: Option<PathBuf>,
}

impl GitAuthConfig {
    /// The one way of authenticating the block names. Naming more than one,
    /// or a password without a user name, is an error.
    pub fn method(&self) -> Result<GitAuth, String> {
        match (&self.token_file, &self.password_file, &self.ssh_key_file) {
            (Some(token_file), None, None) => Ok(GitAuth::Token {
                username: self.username.clone(),
                token_file: token_file.clone(),
            }),
            (None, Some(password_file), None) => Ok(GitAuth::Basic {
                username: self
                    .username
                    .clone()
                    .ok_or("auth.password_file needs auth.username")?,
                password_file: password_file.clone(),
            }),
            (None, None, Some(key_file)) => Ok(GitAuth::SshKey {
                key_file: key_file.clone(),
            }),
            (None, None, None) => Ok(GitAuth::None),
            _ => Err("auth: give one of token_file, password_file or ssh_key_file".to_owned()),
        }
    }
}

/// How a git source authenticates to its remote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GitAuth {
    #[default]
    None,
    /// HTTPS: a token used as the password (user `x-access-token` unless given).
    Token {
        username: Option<String>,
        token_file: PathBuf,
    },
    /// HTTPS basic credentials, the password read from a file.
    Basic {
        username: String,
        password_file: PathBuf,
    },
    /// SSH with this private key (the system `ssh` does the connecting).
    SshKey { key_file: PathBuf },
}

/// Commit signature verification for a git source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturesConfig {
    /// Environment types whose claims must come from verified commits.
    #[serde(default)]
    pub required_for: Vec<EnvironmentType>,
    /// SSH allowed signers (`principal [namespaces="git"] keytype key`).
    #[serde(default)]
    pub allowed_signers: Option<PathBuf>,
    /// Armored `OpenPGP` public keys.
    #[serde(default)]
    pub openpgp_keys: Vec<PathBuf>,
}

pub(super) fn default_git_timeout() -> Duration {
    Duration::from_mins(1)
}

pub(super) fn default_branch() -> String {
    "main".to_owned()
}

pub(super) fn default_interval() -> Duration {
    Duration::from_secs(30)
}
