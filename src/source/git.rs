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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gix::ObjectId;
use gix::bstr::ByteSlice;

use super::{
    Content, Person, Provenance, Revision, Signature, Snapshot, SourceFile, SourceKind,
    is_claim_file, sanitize_url,
};
use crate::config::SourceConfig;
use crate::source::verify::{self, Trust};

/// How to authenticate to the remote (the config's validated `auth` block).
pub use crate::config::GitAuth as Auth;

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
    fn new(error: gix::Error, url: &str) -> Cause {
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

/// `text` without the configured URL's credentials: the URL itself becomes
/// `shown` (its sanitized form), and its user info and query are removed
/// wherever else they appear.
fn sanitize_text(text: &str, url: &str, shown: &str) -> String {
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

    fn open_mirror(&self) -> Result<gix::Repository, Error> {
        let path = &self.options.mirror;
        let mirror = |action, error| Error::Mirror {
            url: self.shown_url.clone(),
            action,
            path: path.clone(),
            error,
        };
        let mut repo = if path.join("HEAD").exists() {
            gix::open_opts(path, gix::open::Options::isolated())
                .map_err(|error| mirror("open", error))?
        } else {
            // Under the state dir, private like it (the mirror holds claims).
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(path)
            .map_err(|error| Error::CreateMirror {
                url: self.shown_url.clone(),
                path: path.clone(),
                error,
            })?;
            gix::init_bare(path).map_err(|error| mirror("create", error))?
        };
        repo.object_cache_size_if_unset(64 * 1024 * 1024);
        if let Auth::SshKey { key_file } = &self.options.auth {
            // The system ssh does the connecting, with this key only and
            // never a prompt; known hosts are learned on first contact.
            let command = format!(
                "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
                key_file.display().to_string().replace('\'', "")
            );
            let ssh_command = |error| Error::SshCommand {
                url: self.shown_url.clone(),
                error,
            };
            let mut config = repo.config_snapshot_mut();
            config
                .set_value(&gix::config::tree::Core::SSH_COMMAND, command.as_str())
                .map_err(ssh_command)?;
            config.commit().map_err(ssh_command)?;
        }
        Ok(repo)
    }

    fn credentials(&self) -> Result<Option<gix::sec::identity::Account>, Error> {
        account(&self.options.auth, |p| {
            crate::secret_file::read(p).map_err(|error| Error::Credentials {
                path: p.to_owned(),
                error,
            })
        })
    }

    /// Lists the branch on the remote and fetches it when it moved; returns
    /// the remote tip (or `None` when it did not move since `known`).
    fn fetch(
        &self,
        repo: &gix::Repository,
        known: Option<ObjectId>,
    ) -> Result<Option<ObjectId>, Error> {
        let branch_ref = format!("refs/heads/{}", self.options.branch);
        let spec = format!("+{branch_ref}:{branch_ref}");
        let url = || self.shown_url.clone();
        let misconfigured = |error| Error::Remote {
            url: url(),
            cause: self.cause(error),
        };
        let remote = repo
            .remote_at(self.options.url.as_str())
            .map_err(misconfigured)?
            .with_refspecs(Some(spec.as_str()), gix::remote::Direction::Fetch)
            .map_err(misconfigured)?;
        let connection = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|error| Error::Connect {
                url: url(),
                failure: Failure::of(&error),
                cause: self.cause(error),
            })?;
        let account = self.credentials()?;
        let connection = connection.with_credentials(answer(account));
        self.stats.ref_checks.fetch_add(1, Ordering::Relaxed);
        let prepare = connection
            .prepare_fetch(
                gix::progress::Discard,
                gix::remote::ref_map::Options::default(),
            )
            .map_err(|error| Error::ListRefs {
                url: url(),
                failure: Failure::of(&error),
                cause: self.cause(error),
            })?;
        let tip = prepare
            .ref_map()
            .remote_refs
            .iter()
            .find_map(|r| {
                let (name, target, peeled) = r.unpack();
                (name == branch_ref.as_bytes().as_bstr())
                    .then(|| peeled.or(target).map(ToOwned::to_owned))
                    .flatten()
            })
            .ok_or_else(|| Error::BranchMissing {
                url: url(),
                branch: self.options.branch.clone(),
            })?;
        if known == Some(tip) && repo.find_object(tip).is_ok() {
            return Ok(None); // unchanged: no fetch, no blob reads
        }
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let interrupt = AtomicBool::new(false);
        prepare
            .receive(gix::progress::Discard, &interrupt)
            .map_err(|error| Error::Receive {
                url: url(),
                failure: Failure::of(&error),
                cause: self.cause(error),
            })?;
        Ok(Some(tip))
    }

    /// Reads the snapshot at `tip`, incrementally from `last` when possible.
    fn snapshot_at(&self, repo: &gix::Repository, tip: ObjectId) -> Result<Snapshot, Error> {
        let err = |e| self.unreadable(e);
        let commit = repo.find_commit(tip).map_err(err)?;
        let tree = commit.tree().map_err(err)?;
        let previous = self.last.as_ref().and_then(|l| {
            let old = repo.find_commit(l.commit).ok()?.tree().ok()?;
            Some((l, old))
        });
        let mut files: BTreeMap<String, SourceFile> = BTreeMap::new();
        let mut changed: Vec<(String, ObjectId)> = Vec::new();
        #[allow(
            clippy::single_match_else,
            reason = "two ways to read a tree, side by side"
        )]
        match &previous {
            Some((last, old_tree)) => {
                for f in &last.snapshot.files {
                    files.insert(f.path.clone(), f.clone());
                }
                self.diff_into(repo, old_tree, &tree, &mut files, &mut changed)?;
            }
            None => {
                let mut recorder = gix::traverse::tree::Recorder::default();
                tree.traverse().breadthfirst(&mut recorder).map_err(err)?;
                for entry in recorder.records {
                    let path = entry.filepath.to_str_lossy().into_owned();
                    if entry.mode.is_blob() && self.wanted(&path) {
                        changed.push((path, entry.oid));
                    }
                }
            }
        }
        let since = previous.as_ref().map(|(l, _)| l.commit);
        let authors = self.attribute(repo, tip, since, &changed)?;
        let mut provenances: HashMap<ObjectId, Arc<Provenance>> = HashMap::new();
        for (path, id) in changed {
            let content = self.read_blob(repo, id);
            let commit_id = authors.get(&path).copied().unwrap_or(tip);
            let provenance = if let Some(p) = provenances.get(&commit_id) {
                p.clone()
            } else {
                let p = self.provenance(repo, commit_id)?;
                provenances.insert(commit_id, p.clone());
                p
            };
            let mut digest = [0u8; 32];
            digest[..20].copy_from_slice(id.as_bytes());
            let file = SourceFile {
                path: path.clone(),
                content,
                digest,
                provenance: Some(provenance),
                notice: None,
            };
            files.insert(path, file);
        }
        Ok(Snapshot {
            source: self.options.name.clone(),
            kind: SourceKind::Git,
            is_static: false,
            revision: Revision(tip.to_string()),
            files: files.into_values().collect(),
        })
    }

    /// The tree diff from `old` to `new`: files gone or changed leave `files`,
    /// and changed blobs converge reads are added to `changed`.
    fn diff_into(
        &self,
        repo: &gix::Repository,
        old: &gix::Tree<'_>,
        new: &gix::Tree<'_>,
        files: &mut BTreeMap<String, SourceFile>,
        changed: &mut Vec<(String, ObjectId)>,
    ) -> Result<(), Error> {
        let mut opts = gix::diff::Options::default();
        opts.track_path().track_rewrites(None);
        let diff = repo
            .diff_tree_to_tree(Some(old), Some(new), opts)
            .map_err(|e| self.unreadable(e))?;
        for change in diff {
            use gix::object::tree::diff::ChangeDetached as C;
            match change {
                C::Addition {
                    location,
                    id,
                    entry_mode,
                    ..
                }
                | C::Modification {
                    location,
                    id,
                    entry_mode,
                    ..
                } => {
                    let path = location.to_str_lossy().into_owned();
                    files.remove(&path);
                    if entry_mode.is_blob() && self.wanted(&path) {
                        changed.push((path, id));
                    }
                }
                C::Deletion { location, .. } => {
                    files.remove(location.to_str_lossy().as_ref());
                }
                C::Rewrite {
                    source_location,
                    location,
                    id,
                    entry_mode,
                    ..
                } => {
                    files.remove(source_location.to_str_lossy().as_ref());
                    let path = location.to_str_lossy().into_owned();
                    files.remove(&path);
                    if entry_mode.is_blob() && self.wanted(&path) {
                        changed.push((path, id));
                    }
                }
            }
        }
        Ok(())
    }

    fn read_blob(&self, repo: &gix::Repository, id: ObjectId) -> Content {
        let limit = self.options.max_file_bytes;
        match repo.find_header(id) {
            Ok(h) if h.size() > limit => {
                return Content::TooLarge {
                    size: h.size(),
                    limit,
                };
            }
            Ok(_) => {}
            Err(e) => return Content::Unreadable(e.to_string()),
        }
        self.stats.blob_reads.fetch_add(1, Ordering::Relaxed);
        match repo.find_blob(id) {
            Ok(mut blob) => Content::Bytes(blob.take_data().into()),
            Err(e) => Content::Unreadable(e.to_string()),
        }
    }

    /// The newest commit in `since..tip` (first parents) that changed each
    /// of `paths`. Without `since` (first read) every file is attributed to
    /// `tip`: history before converge started watching is not examined.
    fn attribute(
        &self,
        repo: &gix::Repository,
        tip: ObjectId,
        since: Option<ObjectId>,
        paths: &[(String, ObjectId)],
    ) -> Result<HashMap<String, ObjectId>, Error> {
        let mut out = HashMap::new();
        let Some(since) = since else { return Ok(out) };
        let mut pending: HashMap<&str, ObjectId> =
            paths.iter().map(|(p, id)| (p.as_str(), *id)).collect();
        let err = |e| self.unreadable(e);
        let mut current = tip;
        for _ in 0..1000 {
            if pending.is_empty() || current == since {
                break;
            }
            let commit = repo.find_commit(current).map_err(err)?;
            let parent = commit.parent_ids().next().map(gix::Id::detach);
            let tree = commit.tree().map_err(err)?;
            let parent_tree = match parent {
                Some(p) => Some(repo.find_commit(p).map_err(err)?.tree().map_err(err)?),
                None => None,
            };
            // A path whose blob at `current` differs from its parent's was changed here.
            pending.retain(|path, blob| {
                let at_parent = parent_tree
                    .as_ref()
                    .and_then(|t| t.lookup_entry_by_path(path).ok().flatten())
                    .map(|e| e.object_id());
                let at_current = tree
                    .lookup_entry_by_path(path)
                    .ok()
                    .flatten()
                    .map(|e| e.object_id());
                if at_current == Some(*blob) && at_parent != at_current {
                    out.insert((*path).to_owned(), current);
                    false
                } else {
                    true
                }
            });
            match parent {
                Some(p) => current = p,
                None => break,
            }
        }
        Ok(out)
    }

    fn provenance(&self, repo: &gix::Repository, id: ObjectId) -> Result<Arc<Provenance>, Error> {
        let err = |e| self.unreadable(e);
        let commit = repo.find_commit(id).map_err(err)?;
        let person = |s: gix::actor::SignatureRef<'_>| Person {
            name: s.name.to_str_lossy().into_owned(),
            email: s.email.to_str_lossy().into_owned(),
        };
        let author = commit.author().map_err(err)?;
        let committer = commit.committer().map_err(err)?;
        let time = committer.time().map(|t| t.seconds).unwrap_or_default();
        let message = commit.message_raw_sloppy().to_str_lossy().into_owned();
        let signature = match commit.signature().map_err(err)? {
            None => Signature {
                kind: "none".into(),
                verified: false,
                signer: None,
                problem: Some("the commit is not signed".into()),
            },
            Some((sig, signed)) => self
                .options
                .trust
                .verify(sig.as_ref(), signed.to_bstring().as_ref()),
        };
        Ok(Arc::new(Provenance::Git {
            repository: self.shown_url.clone(),
            branch: self.options.branch.clone(),
            commit: id.to_string(),
            author: person(author),
            committer: person(committer),
            time,
            trailers: trailers(&message),
            signature,
        }))
    }
}

/// A gix error and its causes on one line, the URL's credentials removed.
#[must_use]
pub fn sanitized_chain(error: &gix::Error, url: &str, shown: &str) -> String {
    sanitize_text(&crate::diagnostic::chain(error), url, shown)
}

/// The account that token or basic auth presents over https (none for ssh
/// keys, which go through the ssh command, or no auth); each secret is read
/// from its file by `read`, again on every call, so rotated files are used.
pub fn account<E>(
    auth: &Auth,
    read: impl Fn(&std::path::Path) -> Result<String, E>,
) -> Result<Option<gix::sec::identity::Account>, E> {
    Ok(match auth {
        Auth::None | Auth::SshKey { .. } => None,
        Auth::Token {
            username,
            token_file,
        } => Some(gix::sec::identity::Account {
            username: username
                .clone()
                .unwrap_or_else(|| "x-access-token".to_owned()),
            password: read(token_file)?,
            oauth_refresh_token: None,
        }),
        Auth::Basic {
            username,
            password_file,
        } => Some(gix::sec::identity::Account {
            username: username.clone(),
            password: read(password_file)?,
            oauth_refresh_token: None,
        }),
    })
}

/// gix's credential helper for `account`: it answers a request for
/// credentials with the account (none without one), and takes no part in
/// storing or erasing them.
pub fn answer(
    account: Option<gix::sec::identity::Account>,
) -> impl FnMut(
    gix::credentials::helper::Action,
) -> gix::Result<Option<gix::credentials::protocol::Outcome>> {
    move |action| match (action, &account) {
        (gix::credentials::helper::Action::Get(ctx), Some(account)) => {
            Ok(Some(gix::credentials::protocol::Outcome {
                identity: account.clone(),
                next: ctx.into(),
            }))
        }
        _ => Ok(None),
    }
}

/// Git trailers of a commit message: the last paragraph's `Key: value` lines.
#[must_use]
pub fn trailers(message: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let last = message.trim_end().rsplit("\n\n").next().unwrap_or_default();
    let lines: Vec<&str> = last.lines().collect();
    let is_trailer = |l: &str| {
        l.split_once(": ").is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
    };
    if lines.is_empty()
        || !lines.iter().all(|l| is_trailer(l) || l.starts_with(' '))
        || message.trim_end() == last
    {
        return out;
    }
    for l in lines {
        if let Some((k, v)) = l.split_once(": ") {
            out.entry(k.to_owned())
                .or_default()
                .push(v.trim().to_owned());
        }
    }
    out
}

impl Reader {
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

/// Reads every claim file of `rev` in a local repository (for `converge plan
/// --repo`): no fetch, no mirror.
pub fn read_revision(
    name: &str,
    repo_path: &std::path::Path,
    rev: &str,
    paths: &[String],
    trust: &Trust,
    max_file_bytes: u64,
) -> Result<Snapshot, super::Error> {
    let options = Options {
        name: name.to_owned(),
        url: repo_path.display().to_string(),
        branch: rev.to_owned(),
        paths: paths.to_vec(),
        interval: Duration::from_secs(0),
        mirror: repo_path.to_owned(),
        auth: Auth::None,
        trust: trust.clone(),
        max_file_bytes,
        timeout: Duration::from_mins(10),
    };
    let fail = |error| source_error(name, error);
    let source = Reader::new(options).map_err(fail)?;
    let url = || source.shown_url.clone();
    let repo =
        gix::open(repo_path).map_err(|error| fail(Error::OpenRepository { url: url(), error }))?;
    let missing = |error| {
        fail(Error::RevisionMissing {
            url: url(),
            revision: rev.to_owned(),
            error,
        })
    };
    let id = repo
        .rev_parse_single(rev)
        .map_err(missing)?
        .object()
        .map_err(missing)?
        .peel_to_commit()
        .map_err(missing)?
        .id;
    source.snapshot_at(&repo, id).map_err(fail)
}

/// Fetches `refspecs` (`+src:dst`) from the repository of the git source
/// `config` into the bare repository `mirror` (created when missing, 0700),
/// with the source's credentials, and returns where each remote ref named
/// by a refspec's source now points (the pull-request poller's heads, which
/// the branch mirror does not hold). Blocking and unbounded in time: the
/// caller runs it on a thread of its own.
pub fn fetch_refs(
    config: &SourceConfig,
    mirror: &std::path::Path,
    refspecs: &[String],
) -> Result<BTreeMap<String, ObjectId>, super::Error> {
    let source = GitSource::from_config(config, std::path::Path::new("/"), 0)?;
    let mut reader = source
        .reader
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    mirror.clone_into(&mut reader.options.mirror);
    let name = reader.options.name.clone();
    let fail = |error| source_error(&name, error);
    let repo = reader.open_mirror().map_err(fail)?;
    reader.fetch_specs(&repo, refspecs).map_err(fail)
}

/// The best common ancestor of two commits of the repository at `repo`
/// (what a pull request's head is compared with); `None` when they share
/// no history.
pub fn merge_base(
    name: &str,
    repo: &std::path::Path,
    one: ObjectId,
    two: ObjectId,
) -> Result<Option<ObjectId>, super::Error> {
    let url = repo.display().to_string();
    let fail = |error| source_error(name, error);
    let opened = gix::open_opts(repo, gix::open::Options::isolated()).map_err(|error| {
        fail(Error::OpenRepository {
            url: url.clone(),
            error,
        })
    })?;
    opened
        .merge_base(one, two)
        .map(|id| id.map(gix::Id::detach))
        .map_err(|error| {
            fail(Error::RevisionMissing {
                url,
                revision: format!("merge base of {one} and {two}"),
                error,
            })
        })
}

impl Reader {
    /// Fetches `refspecs` into `repo`; where each remote ref a refspec names
    /// points.
    fn fetch_specs(
        &self,
        repo: &gix::Repository,
        refspecs: &[String],
    ) -> Result<BTreeMap<String, ObjectId>, Error> {
        let url = || self.shown_url.clone();
        let misconfigured = |error| Error::Remote {
            url: url(),
            cause: self.cause(error),
        };
        let remote = repo
            .remote_at(self.options.url.as_str())
            .map_err(misconfigured)?
            .with_refspecs(
                refspecs.iter().map(String::as_str),
                gix::remote::Direction::Fetch,
            )
            .map_err(misconfigured)?;
        let connection = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|error| Error::Connect {
                url: url(),
                failure: Failure::of(&error),
                cause: self.cause(error),
            })?;
        let account = self.credentials()?;
        let connection = connection.with_credentials(answer(account));
        let prepare = connection
            .prepare_fetch(
                gix::progress::Discard,
                gix::remote::ref_map::Options::default(),
            )
            .map_err(|error| Error::ListRefs {
                url: url(),
                failure: Failure::of(&error),
                cause: self.cause(error),
            })?;
        let wanted: BTreeSet<&str> = refspecs
            .iter()
            .map(|s| {
                s.trim_start_matches('+')
                    .split(':')
                    .next()
                    .unwrap_or_default()
            })
            .collect();
        let found: BTreeMap<String, ObjectId> = prepare
            .ref_map()
            .remote_refs
            .iter()
            .filter_map(|r| {
                let (name, target, peeled) = r.unpack();
                let name = name.to_str().ok()?;
                wanted
                    .contains(name)
                    .then(|| Some((name.to_owned(), peeled.or(target)?.to_owned())))
                    .flatten()
            })
            .collect();
        let interrupt = AtomicBool::new(false);
        prepare
            .receive(gix::progress::Discard, &interrupt)
            .map_err(|error| Error::Receive {
                url: url(),
                failure: Failure::of(&error),
                cause: self.cause(error),
            })?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gix_error(kind: std::io::ErrorKind, text: &str) -> gix::Error {
        gix::Error::from_error(std::io::Error::new(kind, text.to_owned()))
    }

    #[test]
    fn transport_failures_are_classified_by_type_not_text() {
        use std::io::ErrorKind as K;
        let refused = gix::Error::from_error(std::io::Error::new(
            K::PermissionDenied,
            gix::protocol::transport::client::AuthenticationRequired::default(),
        ));
        assert_eq!(Failure::of(&refused), Failure::AuthFailed, "401");
        let ssh = gix_error(
            K::PermissionDenied,
            "git@host: Permission denied (publickey).",
        );
        assert_eq!(Failure::of(&ssh), Failure::AuthFailed, "ssh");
        let nested = gix::Error::from_error(gix::protocol::transport::client::Error::Io(
            std::io::Error::from(K::TimedOut),
        ));
        assert_eq!(
            Failure::of(&nested),
            Failure::Timeout,
            "a nested I/O timeout"
        );
        let refused = gix_error(K::ConnectionRefused, "connection refused");
        assert_eq!(Failure::of(&refused), Failure::Unreachable);
        // Text that only looks like an auth failure or a missing repository is neither.
        let author = gix_error(
            K::Other,
            "the author of 401 commits was not found: credential timeout",
        );
        assert_eq!(Failure::of(&author), Failure::Unreachable);
    }

    #[test]
    fn errors_about_a_url_with_credentials_never_show_them() {
        let url = "https://ci:s3cret-token@git.example.com/envs.git?key=abcd1234";
        let error = gix_error(
            std::io::ErrorKind::Other,
            &format!("cannot fetch {url}: ci:s3cret-token@ and s3cret-token and key=abcd1234"),
        );
        let cause = Cause::new(error, url);
        let text = cause.to_string();
        assert!(
            !text.contains("s3cret-token") && !text.contains("abcd1234"),
            "{text}"
        );
        assert!(text.contains("https://git.example.com/envs.git"), "{text}");
        assert!(
            std::error::Error::source(&cause).is_none(),
            "the unsanitized error is not kept"
        );
        let clean = Cause::new(
            gix_error(std::io::ErrorKind::Other, "refused"),
            "https://git.example.com/envs.git",
        );
        assert!(
            std::error::Error::source(&clean).is_some(),
            "with nothing to hide, the error is kept as the source"
        );
    }

    #[test]
    fn trailers_come_from_the_last_paragraph() {
        let t = trailers(
            "Add prod env\n\nLong text: here\n\nReviewed-by: A <a@x>\nApproved-by: B <b@x>\nApproved-by: C <c@x>\n",
        );
        assert_eq!(t["Approved-by"], ["B <b@x>", "C <c@x>"]);
        assert_eq!(t["Reviewed-by"], ["A <a@x>"]);
        assert!(trailers("Subject only: not a trailer\n").is_empty());
        assert!(trailers("Subject\n\nplain body\n").is_empty());
    }

    #[test]
    fn globs_select_claim_files() {
        let set = glob_set(&["environments/**/*.yaml".to_owned()]).expect("globs");
        assert!(set.is_match("environments/team1/dev.yaml"));
        assert!(!set.is_match("other/dev.yaml"));
    }
}
