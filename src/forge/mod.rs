//! Forges (Gitea/Forgejo, GitHub, GitLab): what converge asks of the forge a
//! git source lives on, behind one trait ([`Forge`]).
//!
//! - open pull requests for a base branch, with a conditional request (an
//!   `ETag`), so an idle poll costs one `304`;
//! - an issue comment found by a hidden marker, created or edited;
//! - commit statuses, read and set;
//! - review provenance: the pull request that merged a commit, its reviews
//!   (with the head each was given at), its author and who merged it.
//!
//! `http.rs` is the one HTTP client (blocking, on `ureq`, like the registry
//! tag source): the token file is read on every request (rotation without
//! restart), every request is counted in
//! `converge_forge_requests_total{forge,op,status}`, and errors are typed and
//! in words ([`Error`]): a missing permission names the call and the
//! permission, a `404` the repository, a rate limit (`429`, or `403` with
//! `X-RateLimit-Remaining: 0`) waits out `Retry-After` / `X-RateLimit-Reset`
//! before asking again. `gitea.rs`, `github.rs`, `gitlab.rs` map the calls to
//! each forge's API; only Gitea/Forgejo is tested end to end (against a real
//! Gitea), GitHub's and GitLab's shapes by unit tests built from their
//! documented examples.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ForgeConfig, ForgeKind};
use crate::review::Review;

mod gitea;
mod github;
mod gitlab;
mod http;
mod provenance;
mod statuses;

pub use http::{Http, retry_wait};
pub use provenance::{Reviewer, forges};
pub use statuses::{Queued, Statuses, judge};

/// A pull (merge) request, as far as converge needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    /// The head commit (at merge time for a merged one).
    pub head_sha: String,
    pub head_ref: String,
    pub base_ref: String,
    pub author: String,
    pub merged: bool,
    pub merged_by: Option<String>,
    pub merge_commit: Option<String>,
    /// Its page on the forge.
    pub url: String,
}

/// An issue (or merge request) comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub author: String,
    pub body: String,
}

/// A commit status state (GitLab's `running`/`canceled` map onto these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Success,
    Failure,
    Error,
}

impl State {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Error => "error",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "success" => Self::Success,
            "failure" | "failed" => Self::Failure,
            "pending" | "running" | "created" => Self::Pending,
            _ => Self::Error,
        }
    }
}

/// A commit status: `context` names who posts it (and what for).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CommitStatus {
    pub context: String,
    pub state: State,
    pub description: String,
    #[serde(default)]
    pub target_url: Option<String>,
}

/// What a conditional listing answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing<T> {
    /// The `ETag` still matches: nothing changed since (a `304`).
    NotModified,
    Changed {
        items: T,
        etag: Option<String>,
    },
}

/// A change proposed for review (`converge claim propose`): one file
/// written on a new branch from `base`, and a pull request into `base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal<'a> {
    pub base: &'a str,
    /// The new branch (it must not exist yet).
    pub branch: &'a str,
    /// The file's path in the repository.
    pub path: &'a str,
    pub content: &'a [u8],
    /// The commit message.
    pub message: &'a str,
    pub title: &'a str,
    pub body: &'a str,
}

/// The longest description a status carries (GitHub's limit is 140).
pub const MAX_DESCRIPTION: usize = 140;

/// What converge asks of a forge. Each call is one or a few HTTP requests,
/// blocking, bounded by the configured timeout.
pub trait Forge: Send + Sync {
    /// Which forge (the metrics' `forge` label, messages).
    fn kind(&self) -> ForgeKind;

    /// `owner/name` (GitLab: the project path).
    fn repository(&self) -> &str;

    /// The open pull requests into `base`; [`Listing::NotModified`] when
    /// `etag` (from the previous answer) still matches.
    fn open_pulls(
        &self,
        base: &str,
        etag: Option<&str>,
    ) -> Result<Listing<Vec<PullRequest>>, Error>;

    /// The comments of pull request `pr`, oldest first.
    fn comments(&self, pr: u64) -> Result<Vec<Comment>, Error>;

    fn create_comment(&self, pr: u64, body: &str) -> Result<Comment, Error>;

    /// Replaces the body of comment `id` (on pull request `pr`).
    fn edit_comment(&self, pr: u64, id: u64, body: &str) -> Result<Comment, Error>;

    /// The statuses on `sha`, newest first (several per context possible).
    fn statuses(&self, sha: &str) -> Result<Vec<CommitStatus>, Error>;

    fn set_status(&self, sha: &str, status: &CommitStatus) -> Result<(), Error>;

    /// The pull request that merged `sha` (its merge commit, or the commit
    /// a squash or rebase wrote); `None` when none did.
    fn merged_pull(&self, sha: &str) -> Result<Option<PullRequest>, Error>;

    /// The reviews of `pr`, as approvals at a head.
    fn reviews(&self, pr: &PullRequest) -> Result<Vec<crate::review::ReviewEvent>, Error>;

    /// Writes `p.content` at `p.path` in one commit on the new branch
    /// `p.branch` (from `p.base`) and opens a pull request into `p.base`.
    /// Implemented for Gitea/Forgejo; the others answer [`Error::Config`].
    fn propose(&self, p: &Proposal<'_>) -> Result<PullRequest, Error> {
        let _ = p;
        Err(Error::Config {
            forge: self.kind().as_str().to_owned(),
            message: "proposing a change (a branch, a commit and a pull request) is implemented for gitea/forgejo only so far".to_owned(),
        })
    }

    /// The account the token acts as (the author of converge's own
    /// comments); `None` when this client cannot tell.
    fn login(&self) -> Result<Option<String>, Error> {
        Ok(None)
    }

    /// The first comment of `pr` whose body holds `marker` (a hidden HTML
    /// comment converge writes into its own comments).
    fn find_comment(&self, pr: u64, marker: &str) -> Result<Option<Comment>, Error> {
        Ok(self
            .comments(pr)?
            .into_iter()
            .find(|c| c.body.contains(marker)))
    }

    /// The status of `context` on `sha` now (the newest one).
    fn status(&self, sha: &str, context: &str) -> Result<Option<CommitStatus>, Error> {
        Ok(self
            .statuses(sha)?
            .into_iter()
            .find(|s| s.context == context))
    }

    /// Sets `status` unless it is already the current one for its context
    /// (read before write); true when it wrote.
    fn ensure_status(&self, sha: &str, status: &CommitStatus) -> Result<bool, Error> {
        if self.status(sha, &status.context)?.as_ref() == Some(status) {
            return Ok(false);
        }
        self.set_status(sha, status)?;
        Ok(true)
    }

    /// Who reviewed and merged `sha`.
    fn review_of(&self, sha: &str) -> Result<Review, Error> {
        let Some(pr) = self.merged_pull(sha)? else {
            return Ok(Review::direct(sha));
        };
        let events = self.reviews(&pr)?;
        let (approvers, stale) = crate::review::count(&pr.author, &pr.head_sha, &events);
        Ok(Review {
            commit: sha.to_owned(),
            pr: Some(pr.number),
            author: Some(pr.author.clone()),
            merged_by: pr.merged_by.clone(),
            head: Some(pr.head_sha.clone()),
            approvers,
            stale,
        })
    }
}

/// A forge call that failed, in words.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("forge {forge}: cannot read the token file {}: {error}", path.display())]
    Token {
        forge: String,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error(
        "forge {forge}: {call} was refused (HTTP {status}): the token lacks the permission {permission} on {repository}: {message}"
    )]
    Permission {
        forge: String,
        call: &'static str,
        permission: &'static str,
        repository: String,
        status: u16,
        message: String,
    },
    #[error("forge {forge}: {call}: the token was not accepted (HTTP 401): {message}")]
    Unauthorized {
        forge: String,
        call: &'static str,
        message: String,
    },
    #[error(
        "forge {forge}: {call}: repository {repository} not found (HTTP 404; or the token cannot see it)"
    )]
    NotFound {
        forge: String,
        call: &'static str,
        repository: String,
    },
    #[error("forge {forge}: {call}: rate limited (HTTP {status}); asking again in {}s", wait.as_secs())]
    RateLimited {
        forge: String,
        call: &'static str,
        status: u16,
        wait: Duration,
    },
    #[error("forge {forge}: {call}: unreachable: {message}")]
    Unreachable {
        forge: String,
        call: &'static str,
        message: String,
    },
    #[error("forge {forge}: {call}: HTTP {status}: {message}")]
    Status {
        forge: String,
        call: &'static str,
        status: u16,
        message: String,
    },
    #[error("forge {forge}: {call}: an answer converge cannot read: {message}")]
    Malformed {
        forge: String,
        call: &'static str,
        message: String,
    },
    #[error("forge {forge}: {message}")]
    Config { forge: String, message: String },
}

impl Error {
    /// A stable word for metrics, events and the API.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Token { .. } => "TokenUnreadable",
            Self::Permission { .. } => "PermissionMissing",
            Self::Unauthorized { .. } => "Unauthorized",
            Self::NotFound { .. } => "RepositoryNotFound",
            Self::RateLimited { .. } => "RateLimited",
            Self::Unreachable { .. } => "Unreachable",
            Self::Status { .. } => "HttpError",
            Self::Malformed { .. } => "Malformed",
            Self::Config { .. } => "Config",
        }
    }

    /// Whether asking again later may succeed without anyone changing
    /// anything (down, rate limiting, a server error).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// How long the forge asked us to wait, if it did.
    #[must_use]
    pub fn wait(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { wait, .. } => Some(*wait),
            _ => None,
        }
    }
}

/// The forge of a git source at `url`, as its `forge:` block configures it.
pub fn from_config(url: &str, config: &ForgeConfig) -> Result<Arc<dyn Forge>, Error> {
    let kind = config.kind;
    let fail = |message: String| Error::Config {
        forge: kind.as_str().to_owned(),
        message,
    };
    let (origin, path) = split_url(url).ok_or_else(|| {
        fail(format!(
            "cannot tell the repository from the source's URL {:?}",
            crate::source::sanitize_url(url)
        ))
    })?;
    let api_url = match &config.api_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => default_api_url(kind, &origin),
    };
    let http = Http::new(kind, &api_url, &config.token_file, config.timeout, &path)?;
    Ok(match kind {
        ForgeKind::Gitea => Arc::new(gitea::Gitea::new(http, &path)),
        ForgeKind::Github => Arc::new(github::GitHub::new(http, &path)),
        ForgeKind::Gitlab => Arc::new(gitlab::GitLab::new(http, &path)),
    })
}

/// The API's base URL on the forge at `origin` (`scheme://host[:port]`).
#[must_use]
pub fn default_api_url(kind: ForgeKind, origin: &str) -> String {
    match kind {
        ForgeKind::Gitea => format!("{origin}/api/v1"),
        ForgeKind::Github if origin == "https://github.com" => "https://api.github.com".to_owned(),
        ForgeKind::Github => format!("{origin}/api/v3"),
        ForgeKind::Gitlab => format!("{origin}/api/v4"),
    }
}

/// A git URL's origin and repository path: `https://u:p@host:3000/o/r.git`
/// is (`https://host:3000`, `o/r`). SSH URLs (`git@host:o/r.git`,
/// `ssh://git@host/o/r`) give `https://host`.
#[must_use]
pub fn split_url(url: &str) -> Option<(String, String)> {
    let Some((scheme, rest)) = url.split_once("://") else {
        // scp-like: git@host:owner/repo.git
        let (host, path) = url.split_once(':')?;
        let host = host.rsplit('@').next()?;
        return Some((format!("https://{host}"), clean_path(path)?));
    };
    let (authority, path) = rest.split_once('/')?;
    let host = authority.rsplit('@').next()?;
    let origin = match scheme {
        "http" | "https" => format!("{scheme}://{host}"),
        _ => format!("https://{}", host.split(':').next()?),
    };
    Some((origin, clean_path(path)?))
}

fn clean_path(path: &str) -> Option<String> {
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    (path.contains('/') && !path.split('/').any(str::is_empty)).then(|| path.to_owned())
}

/// The default status context: the installation, so two clusters posting
/// on one repository never overwrite each other's statuses:
/// `converge/$CONVERGE_INSTALLATION` (the chart sets it to the release's
/// namespace and name, or its `installation` value: stable across pods,
/// restarts and leader changes), else `converge/HOST`.
#[must_use]
pub fn default_context() -> String {
    context_of(
        std::env::var("CONVERGE_INSTALLATION").ok(),
        std::env::var("HOSTNAME").ok().or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        }),
    )
}

fn context_of(installation: Option<String>, host: Option<String>) -> String {
    let name = [installation, host]
        .into_iter()
        .flatten()
        .map(|n| n.trim().to_owned())
        .find(|n| !n.is_empty())
        .unwrap_or_else(|| "converge".to_owned());
    format!("converge/{name}")
}

/// `text` cut to `max` characters on a character boundary, with `…` when cut.
#[must_use]
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_and_api_come_from_the_source_url() {
        assert_eq!(
            split_url("https://u:secret@git.example.com:3000/platform/claims.git"),
            Some((
                "https://git.example.com:3000".to_owned(),
                "platform/claims".to_owned()
            ))
        );
        assert_eq!(
            split_url("git@github.com:org/repo.git"),
            Some(("https://github.com".to_owned(), "org/repo".to_owned()))
        );
        assert_eq!(
            split_url("ssh://git@gitlab.com:22/group/sub/repo"),
            Some(("https://gitlab.com".to_owned(), "group/sub/repo".to_owned()))
        );
        assert_eq!(split_url("https://host/only"), None);
        assert_eq!(
            default_api_url(ForgeKind::Gitea, "https://git.example.com"),
            "https://git.example.com/api/v1"
        );
        assert_eq!(
            default_api_url(ForgeKind::Github, "https://github.com"),
            "https://api.github.com"
        );
        assert_eq!(
            default_api_url(ForgeKind::Github, "https://ghe.corp"),
            "https://ghe.corp/api/v3"
        );
        assert_eq!(
            default_api_url(ForgeKind::Gitlab, "https://gitlab.com"),
            "https://gitlab.com/api/v4"
        );
    }

    #[test]
    fn the_default_context_names_the_installation_before_the_host() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            context_of(some("platform/converge"), some("converge-7d9f-abcde")),
            "converge/platform/converge"
        );
        assert_eq!(context_of(some(" "), some("host-1")), "converge/host-1");
        assert_eq!(context_of(None, None), "converge/converge");
    }

    #[test]
    fn descriptions_are_cut_on_character_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert!(default_context().starts_with("converge/"));
    }
}
