//! A repository's git tags as versions: one ref listing (`ls-refs` of
//! `refs/tags/`), no fetch, no clone. gix needs a repository to talk from:
//! an empty bare one under the state dir, which never receives objects.

use std::path::PathBuf;
use std::sync::Arc;

use gix::bstr::ByteSlice;

use crate::config::GitAuth;
use crate::metrics::{REGISTRY_REQUESTS, RegistryRequestLabels};

/// Why a repository's tags could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("git tags {url}: cannot prepare {path}: {message}")]
    Local {
        url: String,
        path: PathBuf,
        message: String,
    },
    #[error("git tags {url}: {message}")]
    Remote {
        url: String,
        reason: &'static str,
        message: String,
    },
    #[error("git tags {url}: cannot read the credentials file {path}: {error}")]
    Credentials {
        url: String,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

impl Error {
    /// A stable reason for conditions and metric labels.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Local { .. } => "Unreadable",
            Self::Remote { reason, .. } => reason,
            Self::Credentials { .. } => "AuthFailed",
        }
    }
}

/// Lists the tags of one remote.
#[derive(Debug)]
pub struct GitTags {
    url: String,
    shown: String,
    auth: GitAuth,
    dir: PathBuf,
}

impl GitTags {
    #[must_use]
    pub fn new(url: &str, auth: GitAuth, state_dir: &std::path::Path) -> GitTags {
        let digest = <sha2::Sha256 as sha2::Digest>::digest(url.as_bytes());
        let digest = crate::hex::encode(&digest[..8]);
        GitTags {
            shown: crate::source::sanitize_url(url),
            url: url.to_owned(),
            auth,
            dir: state_dir.join("tags").join(format!("git-{digest}")),
        }
    }

    /// The remote as messages and metric labels name it.
    #[must_use]
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn repo(&self) -> Result<gix::Repository, Error> {
        let local = |message: String| Error::Local {
            url: self.shown.clone(),
            path: self.dir.clone(),
            message,
        };
        if self.dir.join("HEAD").exists() {
            return gix::open_opts(&self.dir, gix::open::Options::isolated())
                .map_err(|e| local(e.to_string()));
        }
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&self.dir)
            .map_err(|e| local(e.to_string()))?;
        gix::init_bare(&self.dir).map_err(|e| local(e.to_string()))
    }

    fn account(&self) -> Result<Option<gix::sec::identity::Account>, Error> {
        crate::source::git::account(&self.auth, |p| {
            crate::secret_file::read(p).map_err(|error| Error::Credentials {
                url: self.shown.clone(),
                path: p.to_owned(),
                error,
            })
        })
    }

    fn count(&self, status: &str) {
        REGISTRY_REQUESTS
            .get_or_create(&RegistryRequestLabels {
                registry: self.shown.clone(),
                op: "ls-refs".to_owned(),
                status: status.to_owned(),
            })
            .inc();
    }

    /// [`list`](Self::list) on a thread of its own, abandoned after
    /// `timeout`: a server that accepts and never answers (or trickles)
    /// must not hold the scan, and with it the daemon's loop. A listing has
    /// no effect but its answer, so an abandoned one changes nothing; while
    /// it still runs, `running` holds its URL and another listing of that
    /// URL fails fast instead of starting a second thread.
    ///
    /// # Errors
    ///
    /// As `list`, or `Timeout`.
    pub fn list_within(
        self,
        timeout: std::time::Duration,
        running: &Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    ) -> Result<Vec<String>, Error> {
        fn lock(
            r: &std::sync::Mutex<std::collections::BTreeSet<String>>,
        ) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
            r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        }
        let (url, shown) = (self.url.clone(), self.shown.clone());
        let failed = |reason, message| Error::Remote {
            url: shown.clone(),
            reason,
            message,
        };
        let waited = format!("no answer within {}s", timeout.as_secs());
        if !lock(running).insert(url.clone()) {
            return Err(failed(
                "Timeout",
                format!("{waited}; the abandoned listing is still running"),
            ));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let done = Arc::clone(running);
        let key = url.clone();
        let spawned = std::thread::Builder::new()
            .name("git-tags".to_owned())
            .spawn(move || {
                let result = self.list();
                lock(&done).remove(&key);
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            lock(running).remove(&url);
            return Err(failed(
                "Unreachable",
                format!("cannot start the listing thread: {e}"),
            ));
        }
        rx.recv_timeout(timeout)
            .unwrap_or_else(|_| Err(failed("Timeout", waited)))
    }

    /// Every tag name of the remote (without `refs/tags/`), sorted.
    ///
    /// # Errors
    ///
    /// The remote cannot be reached or listed.
    pub fn list(&self) -> Result<Vec<String>, Error> {
        let repo = self.repo()?;
        let remote_error = |e: &gix::Error| {
            let failure = crate::source::git::Failure::of(e);
            Error::Remote {
                url: self.shown.clone(),
                reason: failure.reason(),
                message: crate::source::git::sanitized_chain(e, &self.url, &self.shown),
            }
        };
        let remote = repo
            .remote_at(self.url.as_str())
            .map_err(|e| remote_error(&e))?
            .with_refspecs(
                Some("+refs/tags/*:refs/tags/*"),
                gix::remote::Direction::Fetch,
            )
            .map_err(|e| remote_error(&e))?;
        let connection = remote.connect(gix::remote::Direction::Fetch).map_err(|e| {
            self.count("error");
            remote_error(&e)
        })?;
        let account = self.account()?;
        let connection = connection.with_credentials(crate::source::git::answer(account));
        let prepare = connection
            .prepare_fetch(
                gix::progress::Discard,
                gix::remote::ref_map::Options::default(),
            )
            .map_err(|e| {
                self.count("error");
                remote_error(&e)
            })?;
        self.count("ok");
        let mut tags: Vec<String> = prepare
            .ref_map()
            .remote_refs
            .iter()
            .filter_map(|r| {
                let (name, _, _) = r.unpack();
                let tag = name.strip_prefix(b"refs/tags/")?.to_str().ok()?;
                Some(tag.trim_end_matches("^{}").to_owned())
            })
            .collect();
        tags.sort();
        tags.dedup();
        Ok(tags)
    }
}

/// The tags of one service from a repository's tags: those under `prefix`
/// (`{service}` replaced by the service's name), without it.
#[must_use]
pub fn for_service(tags: &[String], prefix: &str, service: &str) -> Arc<crate::resolve::TagList> {
    let prefix = prefix.replace("{service}", service);
    let list = tags
        .iter()
        .filter_map(|t| t.strip_prefix(prefix.as_str()))
        .map(str::to_owned)
        .collect();
    Arc::new(crate::resolve::TagList::new(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_prefix_selects_and_strips_its_tags() {
        let tags: Vec<String> = [
            "billing/v1.2.3",
            "billing/v1.10.0",
            "ledger/v2.0.0",
            "v9.9.9",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            for_service(&tags, "{service}/", "billing").tags,
            ["v1.2.3", "v1.10.0"]
        );
        assert_eq!(for_service(&tags, "", "x").tags.len(), 4);
    }
}
