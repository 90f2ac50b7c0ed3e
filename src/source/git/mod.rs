//! The git source: claims from one branch of a repository, read with gix.
//!
//! converge keeps a bare mirror per source in `state_dir/git/` (never a
//! worktree). A poll is a ref check first: one connection lists the branch's
//! ref, and only when it moved are objects fetched. The new tree is diffed
//! against the last one and only changed blobs are read from the object
//! database; unchanged files keep their content and blob id (the pipeline
//! caches by it). A force-push is a diff against whatever the old tree was; a
//! missing branch or an unreachable server is an error that keeps the last good
//! snapshot. Each file carries the commit that last changed it (author,
//! committer, trailers, signature status) for policies. Credentials come from
//! files and never appear in errors, logs or status: URLs are sanitized.
//!
//! One job per file: `fetch.rs` the mirror, the ref check, the fetch and
//! the credentials it presents; `snapshot.rs` the tree read and diffed into
//! a snapshot (and `converge plan --repo`'s local read); `provenance.rs`
//! what commit last changed a file, its trailers and signature; `error.rs`
//! the errors, classified by type, with the URL's credentials removed.

mod error;
mod fetch;
mod provenance;
mod refs;
mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use gix::ObjectId;

use super::{Revision, Snapshot, SourceKind, is_claim_file, sanitize_url};
use crate::config::SourceConfig;
use crate::source::verify::Trust;

pub use error::{Cause, Error, Failure, sanitized_chain};
pub use fetch::{account, answer};
pub use provenance::trailers;
pub use refs::{fetch_refs, merge_base};
pub use snapshot::read_revision;

/// How to authenticate to the remote (the config's validated `auth` block).
pub use crate::config::GitAuth as Auth;

/// Options of one git source.
#[derive(Debug, Clone)]
pub struct Options {
    pub name: String,
    pub url: String,
    pub branch: String,
    /// Globs of claim files; empty means every `*.json`, `*.yaml`, `*.yml`.
    pub paths: Vec<String>,
    pub interval: Duration,
    /// The bare mirror.
    pub mirror: PathBuf,
    pub auth: Auth,
    pub trust: Trust,
    pub max_file_bytes: u64,
    /// The longest a read may take before it is abandoned.
    pub timeout: Duration,
}

/// Work counters, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub ref_checks: AtomicU64,
    pub fetches: AtomicU64,
    pub blob_reads: AtomicU64,
}

/// What the reader last read completely: a cache for the next read (the
/// ref check and the tree diff start from it). It may be ahead of what the
/// caller holds (a read that finished after the caller gave up on it), so
/// it never decides "unchanged": the caller's revision does.
struct Last {
    commit: ObjectId,
    snapshot: Snapshot,
}

/// What a read returns.
type ReadResult = Result<Option<Snapshot>, Error>;

/// One read request: the revision the caller holds (`None`: nothing yet),
/// and where to send the result.
type Request = (Option<ObjectId>, std::sync::mpsc::Sender<ReadResult>);

/// A source error of the git source `name`.
fn source_error(name: &str, error: Error) -> super::Error {
    super::Error::Git {
        source_name: name.to_owned(),
        error: Box::new(error),
    }
}

/// A git repository as a [`Source`](super::Source). Reads run on the
/// source's own reader thread (started on the first read, kept for the next
/// ones) and are abandoned after `timeout` (a server that accepts but never
/// answers must not stall the daemon); while an abandoned read is still
/// running, further reads fail fast.
pub struct GitSource {
    name: String,
    interval: Duration,
    timeout: Duration,
    reader: Arc<std::sync::Mutex<Reader>>,
    /// Read requests to the reader thread: the revision the caller holds, and
    /// where to send the result.
    worker: Option<std::sync::mpsc::Sender<Request>>,
    pub stats: Arc<Stats>,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The state and work of a git source.
struct Reader {
    options: Options,
    globs: globset::GlobSet,
    shown_url: String,
    last: Option<Last>,
    stats: Arc<Stats>,
    /// The mirror, opened by the first read and kept while reads succeed
    /// (opening it reads its config and refs: most of an idle poll's CPU).
    repo: Option<gix::Repository>,
}

/// Builds the glob set of `paths` (every claim file when empty).
pub fn glob_set(paths: &[String]) -> Result<globset::GlobSet, Error> {
    let mut builder = globset::GlobSetBuilder::new();
    for p in paths {
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|error| Error::Glob {
                glob: p.clone(),
                error,
            })?;
        builder.add(glob);
    }
    builder.build().map_err(|error| Error::Glob {
        glob: paths.join(", "),
        error,
    })
}

impl GitSource {
    /// The source a `git` config describes, its mirror under `state_dir/git/`.
    pub fn from_config(
        config: &SourceConfig,
        state_dir: &Path,
        max_file_bytes: u64,
    ) -> Result<GitSource, super::Error> {
        let SourceConfig::Git {
            name,
            url,
            branch,
            paths,
            interval,
            auth,
            signatures,
            timeout,
            forge: _,
        } = config
        else {
            return Err(super::Error::NotKind {
                source_name: config.name().to_owned(),
                kind: SourceKind::Git,
            });
        };
        let fail = |error| source_error(name, error);
        let trust = Trust::from_config(signatures.as_ref()).map_err(|e| fail(Error::Trust(e)))?;
        let auth = match auth {
            Some(auth) => auth
                .method()
                .map_err(|message| fail(Error::Auth(message)))?,
            None => Auth::None,
        };
        GitSource::new(Options {
            name: name.clone(),
            url: url.clone(),
            branch: branch.clone(),
            paths: paths.clone(),
            interval: *interval,
            mirror: state_dir.join("git").join(format!("{name}.git")),
            auth,
            trust,
            max_file_bytes,
            timeout: *timeout,
        })
    }

    pub fn new(options: Options) -> Result<GitSource, super::Error> {
        let name = options.name.clone();
        let reader = Reader::new(options).map_err(|e| source_error(&name, e))?;
        Ok(GitSource {
            name: reader.options.name.clone(),
            interval: reader.options.interval,
            timeout: reader.options.timeout,
            stats: reader.stats.clone(),
            reader: Arc::new(std::sync::Mutex::new(reader)),
            worker: None,
        })
    }

    /// Starts the reader thread: it serves read requests until the source
    /// (the sending side) is dropped.
    fn start_worker(&self) -> std::io::Result<std::sync::mpsc::Sender<Request>> {
        let (tx, rx) = std::sync::mpsc::channel::<Request>();
        let reader = self.reader.clone();
        std::thread::Builder::new()
            .name(format!("git-{}", self.name))
            .spawn(move || {
                for (have, reply) in rx {
                    let result = match reader.lock() {
                        Ok(mut r) => r.read(have),
                        Err(poisoned) => poisoned.into_inner().read(have),
                    };
                    let _ = reply.send(result);
                }
            })?;
        Ok(tx)
    }
}

impl Reader {
    fn new(options: Options) -> Result<Reader, Error> {
        let globs = glob_set(&options.paths)?;
        let shown_url = sanitize_url(&options.url);
        Ok(Reader {
            options,
            globs,
            shown_url,
            last: None,
            stats: Arc::new(Stats::default()),
            repo: None,
        })
    }

    /// A gix error about the remote, sanitized.
    fn cause(&self, error: gix::Error) -> Cause {
        Cause::new(error, &self.options.url)
    }

    /// An object of the mirror cannot be read.
    fn unreadable(&self, error: gix::Error) -> Error {
        Error::Read {
            url: self.shown_url.clone(),
            error,
        }
    }

    fn wanted(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        is_claim_file(name) && (self.options.paths.is_empty() || self.globs.is_match(path))
    }

    /// The snapshot at the branch's tip, or `None` when the tip is `have`
    /// (the commit whose snapshot the caller holds). What this reader read
    /// last is only a cache: a tip it already read (a read whose caller gave
    /// up waiting) is served from it, without fetching or reading again.
    fn read(&mut self, have: Option<ObjectId>) -> Result<Option<Snapshot>, Error> {
        // A failed read drops the handle: the next one opens the mirror afresh.
        let repo = match self.repo.take() {
            Some(repo) => repo,
            None => self.open_mirror()?,
        };
        let known = self.last.as_ref().map(|l| l.commit);
        let tip = match self.fetch(&repo, known)? {
            Some(tip) => {
                let snapshot = self.snapshot_at(&repo, tip)?;
                self.last = Some(Last {
                    commit: tip,
                    snapshot,
                });
                tip
            }
            None => known.expect("unchanged means read before"),
        };
        self.repo = Some(repo);
        if have == Some(tip) {
            return Ok(None);
        }
        let last = self.last.as_ref().expect("the tip was read, now or before");
        Ok(Some(last.snapshot.clone()))
    }
}

impl super::Source for GitSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn read(&mut self) -> Result<Snapshot, super::Error> {
        Ok(self
            .read_changed(None)?
            .expect("a caller holding nothing always gets a snapshot"))
    }

    fn read_changed(&mut self, have: Option<&Revision>) -> Result<Option<Snapshot>, super::Error> {
        let busy = || Error::Busy {
            timeout: self.timeout,
        };
        if self.reader.try_lock().is_err() {
            return Err(source_error(&self.name, busy()));
        }
        // A revision that is no commit id is nothing this source returned.
        let have = have.and_then(|r| ObjectId::from_hex(r.0.as_bytes()).ok());
        let (tx, rx) = std::sync::mpsc::channel();
        // The reader thread is gone only if a read panicked: start another.
        let request = match &self.worker {
            Some(worker) => worker.send((have, tx)).err().map(|e| e.0),
            None => Some((have, tx)),
        };
        if let Some(request) = request {
            let worker = self
                .start_worker()
                .map_err(|error| source_error(&self.name, Error::Worker { error }))?;
            let _ = worker.send(request);
            self.worker = Some(worker);
        }
        rx.recv_timeout(self.timeout)
            .unwrap_or_else(|_| Err(busy()))
            .map_err(|e| source_error(&self.name, e))
    }

    fn git_stats(&self) -> Option<Arc<Stats>> {
        Some(self.stats.clone())
    }

    fn restore(&mut self, snapshot: &Snapshot) {
        let Ok(commit) = ObjectId::from_hex(snapshot.revision.0.as_bytes()) else {
            return;
        };
        if let Ok(mut reader) = self.reader.lock() {
            reader.last = Some(Last {
                commit,
                snapshot: snapshot.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests;
