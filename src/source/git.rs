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

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gix::ObjectId;
use gix::bstr::ByteSlice;

use super::{
    Content, Error, Person, Provenance, Revision, Signature, Snapshot, SourceFile, SourceKind,
    is_claim_file, sanitize_url,
};
use crate::source::verify::Trust;

/// How to authenticate to the remote.
#[derive(Debug, Clone, Default)]
pub enum Auth {
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

/// What the last good read saw.
struct Last {
    commit: ObjectId,
    snapshot: Snapshot,
}

/// What a read returns.
type ReadResult = Result<Option<Snapshot>, Error>;

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
    /// Read requests to the reader thread, each with where to send its result.
    worker: Option<std::sync::mpsc::Sender<std::sync::mpsc::Sender<ReadResult>>>,
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
pub fn glob_set(paths: &[String]) -> Result<globset::GlobSet, String> {
    let mut builder = globset::GlobSetBuilder::new();
    for p in paths {
        let glob = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("path glob {p:?}: {e}"))?;
        builder.add(glob);
    }
    builder.build().map_err(|e| e.to_string())
}

impl GitSource {
    pub fn new(options: Options) -> Result<GitSource, Error> {
        let reader = Reader::new(options)?;
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
    fn start_worker(
        &self,
    ) -> std::io::Result<std::sync::mpsc::Sender<std::sync::mpsc::Sender<ReadResult>>> {
        let (tx, rx) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<ReadResult>>();
        let reader = self.reader.clone();
        std::thread::Builder::new()
            .name(format!("git-{}", self.name))
            .spawn(move || {
                for reply in rx {
                    let result = match reader.lock() {
                        Ok(mut r) => r.read(),
                        Err(poisoned) => poisoned.into_inner().read(),
                    };
                    let _ = reply.send(result);
                }
            })?;
        Ok(tx)
    }
}

impl Reader {
    fn new(options: Options) -> Result<Reader, Error> {
        let globs = glob_set(&options.paths).map_err(|message| Error::Config {
            source_name: options.name.clone(),
            message,
        })?;
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

    fn remote_error(&self, reason: &'static str, message: impl std::fmt::Display) -> Error {
        let mut message = message.to_string();
        // Never let a credential through, whatever the library put in its message.
        if self.options.url != self.shown_url {
            message = message.replace(&self.options.url, &self.shown_url);
        }
        Error::Remote {
            source_name: self.options.name.clone(),
            reason,
            message: format!("{}: {message}", self.shown_url),
        }
    }

    fn wanted(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        is_claim_file(name) && (self.options.paths.is_empty() || self.globs.is_match(path))
    }

    fn open_mirror(&self) -> Result<gix::Repository, Error> {
        let path = &self.options.mirror;
        let opened = if path.join("HEAD").exists() {
            gix::open_opts(path, gix::open::Options::isolated()).map_err(|e| {
                self.remote_error(
                    "MirrorCorrupt",
                    format!("cannot open the mirror {}: {e}", path.display()),
                )
            })
        } else {
            std::fs::create_dir_all(path).map_err(|e| {
                self.remote_error(
                    "MirrorCorrupt",
                    format!("cannot create {}: {e}", path.display()),
                )
            })?;
            gix::init_bare(path).map_err(|e| {
                self.remote_error(
                    "MirrorCorrupt",
                    format!("cannot create the mirror {}: {e}", path.display()),
                )
            })
        }?;
        let mut repo = opened;
        repo.object_cache_size_if_unset(64 * 1024 * 1024);
        if let Auth::SshKey { key_file } = &self.options.auth {
            // The system ssh does the connecting, with this key only and
            // never a prompt; known hosts are learned on first contact.
            let command = format!(
                "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
                key_file.display().to_string().replace('\'', "")
            );
            let mut config = repo.config_snapshot_mut();
            config
                .set_value(&gix::config::tree::Core::SSH_COMMAND, command.as_str())
                .map_err(|e| self.remote_error("SourceMisconfigured", e))?;
            config
                .commit()
                .map_err(|e| self.remote_error("SourceMisconfigured", e))?;
        }
        Ok(repo)
    }

    fn credentials(&self) -> Result<Option<gix::sec::identity::Account>, Error> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .map_err(|e| Error::Config {
                    source_name: self.options.name.clone(),
                    message: format!("cannot read {}: {e}", p.display()),
                })
        };
        Ok(match &self.options.auth {
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

    /// Lists the branch on the remote and fetches it when it moved; returns
    /// the remote tip (or `None` when it did not move since `known`).
    fn fetch(
        &self,
        repo: &gix::Repository,
        known: Option<ObjectId>,
    ) -> Result<Option<ObjectId>, Error> {
        let branch_ref = format!("refs/heads/{}", self.options.branch);
        let spec = format!("+{branch_ref}:{branch_ref}");
        let remote = repo
            .remote_at(self.options.url.as_str())
            .map_err(|e| self.remote_error("SourceMisconfigured", e))?
            .with_refspecs(Some(spec.as_str()), gix::remote::Direction::Fetch)
            .map_err(|e| self.remote_error("SourceMisconfigured", e))?;
        let connection = remote.connect(gix::remote::Direction::Fetch).map_err(|e| {
            let text = chain(&e);
            self.remote_error(classify(&text), text)
        })?;
        let account = self.credentials()?;
        let connection = match account {
            Some(account) => connection.with_credentials(move |action| match action {
                gix::credentials::helper::Action::Get(ctx) => {
                    Ok(Some(gix::credentials::protocol::Outcome {
                        identity: account.clone(),
                        next: ctx.into(),
                    }))
                }
                _ => Ok(None),
            }),
            None => connection.with_credentials(|_| Ok(None)),
        };
        self.stats.ref_checks.fetch_add(1, Ordering::Relaxed);
        let prepare = connection
            .prepare_fetch(
                gix::progress::Discard,
                gix::remote::ref_map::Options::default(),
            )
            .map_err(|e| {
                let text = chain(&e);
                self.remote_error(classify(&text), text)
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
            .ok_or_else(|| {
                self.remote_error(
                    "BranchMissing",
                    format!("branch {} does not exist", self.options.branch),
                )
            })?;
        if known == Some(tip) && repo.find_object(tip).is_ok() {
            return Ok(None); // unchanged: no fetch, no blob reads
        }
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let interrupt = AtomicBool::new(false);
        prepare
            .receive(gix::progress::Discard, &interrupt)
            .map_err(|e| {
                let text = chain(&e);
                self.remote_error(classify(&text), text)
            })?;
        Ok(Some(tip))
    }

    /// Reads the snapshot at `tip`, incrementally from `last` when possible.
    fn snapshot_at(&self, repo: &gix::Repository, tip: ObjectId) -> Result<Snapshot, Error> {
        let err = |e: &dyn std::fmt::Display| self.remote_error("RepositoryUnreadable", e);
        let commit = repo.find_commit(tip).map_err(|e| err(&e))?;
        let tree = commit.tree().map_err(|e| err(&e))?;
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
                let mut opts = gix::diff::Options::default();
                opts.track_path().track_rewrites(None);
                let diff = repo
                    .diff_tree_to_tree(Some(old_tree), Some(&tree), opts)
                    .map_err(|e| err(&e))?;
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
            }
            None => {
                let mut recorder = gix::traverse::tree::Recorder::default();
                tree.traverse()
                    .breadthfirst(&mut recorder)
                    .map_err(|e| err(&e))?;
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
        let err = |e: &dyn std::fmt::Display| self.remote_error("RepositoryUnreadable", e);
        let mut current = tip;
        for _ in 0..1000 {
            if pending.is_empty() || current == since {
                break;
            }
            let commit = repo.find_commit(current).map_err(|e| err(&e))?;
            let parent = commit.parent_ids().next().map(gix::Id::detach);
            let tree = commit.tree().map_err(|e| err(&e))?;
            let parent_tree = match parent {
                Some(p) => Some(
                    repo.find_commit(p)
                        .map_err(|e| err(&e))?
                        .tree()
                        .map_err(|e| err(&e))?,
                ),
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
        let err = |e: &dyn std::fmt::Display| self.remote_error("RepositoryUnreadable", e);
        let commit = repo.find_commit(id).map_err(|e| err(&e))?;
        let person = |s: gix::actor::SignatureRef<'_>| Person {
            name: s.name.to_str_lossy().into_owned(),
            email: s.email.to_str_lossy().into_owned(),
        };
        let author = commit.author().map_err(|e| err(&e))?;
        let committer = commit.committer().map_err(|e| err(&e))?;
        let time = committer.time().map(|t| t.seconds).unwrap_or_default();
        let message = commit.message_raw_sloppy().to_str_lossy().into_owned();
        let signature = match commit.signature().map_err(|e| err(&e))? {
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

/// An error and its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// Maps a transport error to a stable reason.
fn classify(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("401")
        || m.contains("403")
        || m.contains("auth")
        || m.contains("credential")
        || m.contains("permission denied")
    {
        "AuthFailed"
    } else if m.contains("timed out") || m.contains("timeout") {
        "Timeout"
    } else if m.contains("not found")
        || m.contains("404")
        || m.contains("does not appear to be a git repository")
    {
        "RepositoryMissing"
    } else {
        "Unreachable"
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
    /// `None` when the branch did not move since the last read.
    fn read(&mut self) -> Result<Option<Snapshot>, Error> {
        // A failed read drops the handle: the next one opens the mirror afresh.
        let repo = match self.repo.take() {
            Some(repo) => repo,
            None => self.open_mirror()?,
        };
        let known = self.last.as_ref().map(|l| l.commit);
        let Some(tip) = self.fetch(&repo, known)? else {
            self.repo = Some(repo);
            return Ok(None);
        };
        let snapshot = self.snapshot_at(&repo, tip)?;
        self.last = Some(Last {
            commit: tip,
            snapshot: snapshot.clone(),
        });
        self.repo = Some(repo);
        Ok(Some(snapshot))
    }
}

impl super::Source for GitSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn read(&mut self) -> Result<Snapshot, Error> {
        if let Some(snapshot) = self.read_changed()? {
            return Ok(snapshot);
        }
        let reader = self.reader.lock().map_err(|_| Error::Remote {
            source_name: self.name.clone(),
            reason: "Unreachable",
            message: "an earlier read failed badly".to_owned(),
        })?;
        Ok(reader
            .last
            .as_ref()
            .expect("unchanged means read before")
            .snapshot
            .clone())
    }

    fn read_changed(&mut self) -> Result<Option<Snapshot>, Error> {
        let busy = || Error::Remote {
            source_name: self.name.clone(),
            reason: "Timeout",
            message: format!(
                "no answer within {}s; the abandoned read is still running",
                self.timeout.as_secs()
            ),
        };
        if self.reader.try_lock().is_err() {
            return Err(busy());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        // The reader thread is gone only if a read panicked: start another.
        let tx = match &self.worker {
            Some(worker) => worker.send(tx).err().map(|e| e.0),
            None => Some(tx),
        };
        if let Some(tx) = tx {
            let worker = self.start_worker().map_err(|e| Error::Remote {
                source_name: self.name.clone(),
                reason: "Unreachable",
                message: e.to_string(),
            })?;
            let _ = worker.send(tx);
            self.worker = Some(worker);
        }
        rx.recv_timeout(self.timeout)
            .unwrap_or_else(|_| Err(busy()))
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
) -> Result<Snapshot, Error> {
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
    let source = Reader::new(options)?;
    let repo = gix::open(repo_path).map_err(|e| source.remote_error("RepositoryMissing", e))?;
    let id = repo
        .rev_parse_single(rev)
        .map_err(|e| source.remote_error("RevisionMissing", format!("{rev}: {e}")))?
        .object()
        .map_err(|e| source.remote_error("RevisionMissing", e))?
        .peel_to_commit()
        .map_err(|e| source.remote_error("RevisionMissing", e))?
        .id;
    source.snapshot_at(&repo, id)
}

#[cfg(test)]
mod tests {
    use super::*;

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
