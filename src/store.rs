//! Durable state in `state_dir/converge.redb`: what a restart resumes from.
//!
//! An embedded, transactional store (redb): the last good snapshot of every
//! source (file bytes by path), per-environment status (record, conditions,
//! history), the last passes and events. The loop writes once per pass in one
//! transaction, so a `kill -9` at any moment leaves either the previous or the
//! next pass recorded, never half of one. A file that is not a converge state
//! store (corrupt, or another program's) is a clear error at start, never a
//! silent reset; a store of an older format is upgraded in one transaction
//! when it is opened. The target's own inventory stays the truth about what
//! is applied; the copy here serves status after a restart.
//!
//! The store holds claim bytes, so the state dir is created 0700 and the
//! store 0600 ([`create_dir`]); an existing state dir or store open to
//! other users is reported with a warning at start, and left as it is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::source::{Content, Revision, Snapshot, SourceFile, SourceKind};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const SOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("sources");
/// Key: `<source>\0<path>`.
const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");
/// Per file (same key as `files`): its digest and provenance (`FileMeta`).
const FILE_META: TableDefinition<&str, &[u8]> = TableDefinition::new("file_meta");
const ENVIRONMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("environments");
const PASSES: TableDefinition<u64, &[u8]> = TableDefinition::new("passes");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// The tag source's last good list per service (`release/<service>`,
/// `dev/<service>`), so a restart during a registry outage resolves as before.
const TAGS: TableDefinition<&str, &[u8]> = TableDefinition::new("tags");
/// What converge keeps of its forges: review provenance per commit
/// (`review/<commit>`, so a restart does not ask again) and apply statuses
/// not yet posted (`status/<source>/<commit>`, so a restart loses none).
const FORGE: TableDefinition<&str, &[u8]> = TableDefinition::new("forge");
/// Drift found and not corrected, by environment ([`DriftRecord`]), so a
/// restart neither forgets a `Drifted` condition nor waits to correct it.
/// A table added in format 2: a store without it restores no drift.
const DRIFT: TableDefinition<&str, &[u8]> = TableDefinition::new("drift");

const APP: &str = "converge";
/// redb's page cache (its default is 1 GiB). The store is written once per
/// pass and read in full only at start, so a small cache loses nothing.
const CACHE_BYTES: usize = 16 << 20;
/// The layout this build reads and writes. A store of format 1 is upgraded
/// when opened ([`Store::upgrade`]).
const FORMAT: &str = "2";
/// Passes kept in history.
pub const PASS_HISTORY: u64 = 100;
/// Events kept.
pub const EVENT_HISTORY: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("state {path}: cannot open: {message}")]
    Open { path: PathBuf, message: String },
    /// Another process holds the writer lock.
    #[error(
        "state dir {} is in use by another converge writer ({}): one writer per state dir; stop it first (plan, validate, render and status can run beside it)",
        dir.display(),
        holder.map_or_else(|| "pid unknown".to_owned(), |pid| format!("pid {pid}"))
    )]
    Locked { dir: PathBuf, holder: Option<u32> },
    /// Another process writes the same manifests directory (with another
    /// state dir).
    #[error(
        "manifests directory {} is in use by another converge writer ({}): one writer per target; stop it first (plan, validate, render and status can run beside it)",
        dir.display(),
        holder.map_or_else(|| "pid unknown".to_owned(), |pid| format!("pid {pid}"))
    )]
    TargetLocked { dir: PathBuf, holder: Option<u32> },
    #[error(
        "state {path} is not a converge state store ({message}); move it away or point state_dir elsewhere"
    )]
    Foreign { path: PathBuf, message: String },
    #[error("state {path}: {message}")]
    Storage { path: PathBuf, message: String },
}

/// A source's last good snapshot, as stored: its files' bytes are rows of
/// `files`, their digests and provenance rows of `file_meta`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SourceRecord {
    kind: SourceKind,
    is_static: bool,
    revision: Revision,
}

/// A source record of format 1, which could list every file's path, digest
/// (hex) and provenance itself instead of in `file_meta`. Read only by
/// [`Store::upgrade`].
#[derive(Deserialize)]
struct SourceRecordV1 {
    kind: SourceKind,
    is_static: bool,
    revision: Revision,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    digests: BTreeMap<String, String>,
    #[serde(default)]
    provenance: BTreeMap<String, crate::source::Provenance>,
}

/// One file's digest (hex, as the source computed it: blob id, `ETag`
/// digest) and provenance (commit, object), for policies after a restart.
#[derive(Serialize, Deserialize)]
struct FileMeta {
    digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provenance: Option<crate::source::Provenance>,
    /// The bytes were not stored (see [`Commit::withheld`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    withheld: bool,
}

/// One pass, as history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassRecord {
    pub id: u64,
    pub started_at: String,
    pub duration_ms: u64,
    pub revisions: BTreeMap<String, String>,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    pub held: bool,
    pub failed: usize,
    pub parsed: usize,
    /// Why the pass could not evaluate anything (the target's inventory
    /// could not be read); `None` for a pass that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Something that happened, for `/api/v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub time: String,
    pub pass: u64,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub kind: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub message: String,
}

/// One environment's drifted objects as the store keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftRecord {
    /// The record's own version, for a later change of its shape.
    pub version: u32,
    /// `Kind/name` and how it drifted, in the target's words.
    pub objects: Vec<(String, String)>,
}

impl DriftRecord {
    pub const VERSION: u32 = 1;

    /// The stored bytes of `objects`.
    #[must_use]
    pub fn encode(objects: &[(String, String)]) -> Vec<u8> {
        serde_json::to_vec(&DriftRecord {
            version: Self::VERSION,
            objects: objects.to_vec(),
        })
        .expect("a drift record serializes")
    }
}

/// What a restart restores.
#[derive(Debug, Default)]
pub struct Restored {
    pub snapshots: BTreeMap<String, Snapshot>,
    /// Per-environment status documents, by name.
    pub environments: BTreeMap<String, Vec<u8>>,
    pub passes: Vec<PassRecord>,
    pub events: Vec<Event>,
    /// The tag source's last good lists, by key.
    pub tags: BTreeMap<String, Vec<u8>>,
    /// The forge rows (review provenance, queued statuses), by key.
    pub forge: BTreeMap<String, Vec<u8>>,
    /// Drift found and not corrected when the last pass was recorded, by
    /// environment (a record of a newer version than this build reads is
    /// left out, with a warning).
    pub drift: BTreeMap<String, Vec<(String, String)>>,
}

/// What the store holds of one source: each file's digest, by path. The loop
/// keeps one per source so that a commit writes only the files that changed
/// (and removes those that are gone) instead of every file of the source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    digests: HashMap<String, [u8; 32]>,
}

impl Stored {
    /// The index of a snapshot as committed (or restored).
    #[must_use]
    pub fn of(snapshot: &Snapshot) -> Stored {
        Stored {
            digests: snapshot
                .files
                .iter()
                .map(|f| (f.path.clone(), f.digest))
                .collect(),
        }
    }

    /// Brings the index up to `snapshot` after it was committed; allocates
    /// only for new paths.
    pub fn update(&mut self, snapshot: &Snapshot) {
        let before = self.digests.len();
        let mut kept = 0;
        for f in &snapshot.files {
            if let Some(d) = self.digests.get_mut(&f.path) {
                *d = f.digest;
                kept += 1;
            } else {
                self.digests.insert(f.path.clone(), f.digest);
            }
        }
        if kept < before {
            let now: HashSet<&str> = snapshot.files.iter().map(|f| f.path.as_str()).collect();
            self.digests.retain(|p, _| now.contains(p.as_str()));
        }
    }

    /// Files of the source the store holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

/// A file as the store lists it: path, digest, provenance, withheld.
type Listed = (
    String,
    Option<[u8; 32]>,
    Option<crate::source::Provenance>,
    bool,
);

/// Changes of one pass, written in one transaction.
#[derive(Debug, Default)]
pub struct Commit<'a> {
    /// Sources whose snapshot changed since the last commit, each with what
    /// the store holds of it (`None`: nothing, or unknown; every file is written).
    pub snapshots: Vec<(&'a Snapshot, Option<&'a Stored>)>,
    /// Environments' stored status (JSON); `None` removes one.
    pub environments: &'a [(String, Option<Vec<u8>>)],
    pub pass: Option<PassRecord>,
    pub events: &'a [Event],
    /// Tag lists that changed (JSON), by key.
    pub tags: &'a [(String, Vec<u8>)],
    /// Forge rows that changed; `None` removes one.
    pub forge: &'a [(String, Option<Vec<u8>>)],
    /// Environments whose drift changed ([`DriftRecord::encode`]); `None`
    /// removes one (no drift left).
    pub drift: &'a [(String, Option<Vec<u8>>)],
    /// Files whose bytes are not stored: refused before they became a
    /// typed claim, they may hold a secret by mistake (an unencrypted value
    /// under `secrets`, a syntax error on a secret's line). They are
    /// restored as refused and read again from their source.
    pub withheld: Option<&'a std::collections::BTreeSet<crate::source::Origin>>,
}

impl Commit<'_> {
    /// Whether a file's bytes are withheld from the store.
    fn withholds(&self, source: &str, path: &str) -> bool {
        self.withheld.is_some_and(|w| {
            w.contains(&crate::source::Origin {
                source: source.to_owned(),
                path: path.to_owned(),
            })
        })
    }

    /// Nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
            && self.environments.is_empty()
            && self.pass.is_none()
            && self.events.is_empty()
            && self.tags.is_empty()
            && self.forge.is_empty()
            && self.drift.is_empty()
    }
}

/// The open state store.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn key(source: &str, path: &str) -> String {
    format!("{source}\0{path}")
}

/// The lock file every writer holds in the state dir.
pub const LOCK_FILE: &str = "converge.lock";

/// The writer lock on a state dir: an exclusive `flock` on
/// `state_dir/converge.lock`, held while this value lives (the kernel
/// releases it when the process ends, however it ends). The file holds the
/// holder's pid, so a second writer can name it.
#[derive(Debug)]
pub struct WriterLock {
    _file: std::fs::File,
}

impl WriterLock {
    /// Takes the lock or fails at once, naming the holder: every writer
    /// (`converge run`, `run --once`) holds it for as long as it runs;
    /// read-only commands never take it.
    pub fn acquire(dir: &Path) -> Result<WriterLock, Error> {
        create_dir(dir)?;
        Self::lock(&dir.join(LOCK_FILE)).map_err(|e| match e {
            Lock::Held(holder) => Error::Locked {
                dir: dir.to_owned(),
                holder,
            },
            Lock::Io(path, e) => Error::Open {
                path,
                message: e.to_string(),
            },
        })
    }

    /// The same lock on a manifests target's directory
    /// (`<path>/.converge-lock`, a name `kubectl apply -R` and kustomize do
    /// not read), so two writers with different state dirs cannot write one
    /// directory at once.
    pub fn acquire_target(dir: &Path) -> Result<WriterLock, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Open {
            path: dir.to_owned(),
            message: format!("cannot create the manifests directory: {e}"),
        })?;
        Self::lock(&dir.join(TARGET_LOCK_FILE)).map_err(|e| match e {
            Lock::Held(holder) => Error::TargetLocked {
                dir: dir.to_owned(),
                holder,
            },
            Lock::Io(path, e) => Error::Open {
                path,
                message: e.to_string(),
            },
        })
    }

    fn lock(path: &Path) -> Result<WriterLock, Lock> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e: std::io::Error| Lock::Io(path.to_owned(), e);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(path)
            .map_err(io)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(Lock::Held(text.trim().parse().ok()));
            }
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io)?;
        Ok(WriterLock { _file: file })
    }
}

/// Why a lock file could not be locked.
enum Lock {
    /// Another process holds it (its pid, when the file says).
    Held(Option<u32>),
    Io(PathBuf, std::io::Error),
}

/// The writer lock's file in a manifests target's directory.
pub const TARGET_LOCK_FILE: &str = ".converge-lock";

/// Mode of the state dir (and of any parent it creates).
const DIR_MODE: u32 = 0o700;
/// Mode of the files converge keeps there.
const FILE_MODE: u32 = 0o600;

/// Creates the state dir (and missing parents) 0700; warns when an existing
/// one is open to other users (`chmod 700` fixes it).
pub fn create_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| Error::Open {
            path: dir.to_owned(),
            message: format!("cannot create the state dir: {e}"),
        })?;
    warn_if_open(dir, DIR_MODE);
    Ok(())
}

/// Creates `path` 0600 if it does not exist (the mode of an existing file is
/// only checked).
fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            warn_if_open(path, FILE_MODE);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Logs a warning when `path` grants more than `private` (group or other bits).
fn warn_if_open(path: &Path, private: u32) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & !private != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            expected = format!("{private:o}"),
            "converge's state holds claim bytes and is open to other users: chmod {private:o} {}",
            path.display()
        );
    }
}

impl Store {
    /// Opens (or creates) `dir/converge.redb`; the dir is created 0700 and
    /// the file 0600.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        let path = dir.join("converge.redb");
        create_dir(dir)?;
        let existed = path.exists() && std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
        create_private_file(&path).map_err(|e| Error::Open {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::Open {
                    path: path.clone(),
                    message: "it is in use by another converge process".to_owned(),
                },
                other => Error::Foreign {
                    path: path.clone(),
                    message: other.to_string(),
                },
            })?;
        let store = Store { db, path };
        store.check_meta(existed)?;
        Ok(store)
    }

    fn storage(&self) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
        |e| Error::Storage {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn check_meta(&self, existed: bool) -> Result<(), Error> {
        let err = self.storage();
        let foreign = |message: String| Error::Foreign {
            path: self.path.clone(),
            message,
        };
        let read = self.db.begin_read().map_err(|e| err(&e))?;
        let app = match read.open_table(META) {
            Ok(t) => t
                .get("app")
                .map_err(|e| err(&e))?
                .map(|v| v.value().to_owned()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(foreign(e.to_string())),
        };
        let format = match read.open_table(META) {
            Ok(t) => t
                .get("format")
                .map_err(|e| err(&e))?
                .map(|v| v.value().to_owned()),
            Err(_) => None,
        };
        drop(read);
        match (app.as_deref(), format.as_deref()) {
            (Some(APP), Some(FORMAT)) => Ok(()),
            (Some(APP), Some("1")) => self.upgrade(),
            (Some(APP), Some(other)) => Err(foreign(format!(
                "state format {other}, this converge reads {FORMAT}"
            ))),
            (None, _) if !existed || self.is_empty()? => {
                let w = self.db.begin_write().map_err(|e| err(&e))?;
                {
                    let mut t = w.open_table(META).map_err(|e| err(&e))?;
                    t.insert("app", APP).map_err(|e| err(&e))?;
                    t.insert("format", FORMAT).map_err(|e| err(&e))?;
                }
                w.commit().map_err(|e| err(&e))
            }
            _ => Err(foreign("it has no converge metadata".to_owned())),
        }
    }

    /// Upgrades a store of format 1 in one transaction: every file a source
    /// record lists itself becomes a `file_meta` row, the record keeps only
    /// kind and revision, and the format becomes [`FORMAT`].
    fn upgrade(&self) -> Result<(), Error> {
        let err = self.storage();
        let w = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut sources = w.open_table(SOURCES).map_err(|e| err(&e))?;
            let mut metas = w.open_table(FILE_META).map_err(|e| err(&e))?;
            let mut records = Vec::new();
            for entry in sources.iter().map_err(|e| err(&e))? {
                let (name, value) = entry.map_err(|e| err(&e))?;
                let record: SourceRecordV1 =
                    serde_json::from_slice(value.value()).map_err(|e| err(&e))?;
                records.push((name.value().to_owned(), record));
            }
            for (name, mut record) in records {
                for path in &record.paths {
                    let meta = FileMeta {
                        digest: record.digests.remove(path).unwrap_or_default(),
                        provenance: record.provenance.remove(path),
                        withheld: false,
                    };
                    let meta = serde_json::to_vec(&meta).expect("file metadata serializes");
                    metas
                        .insert(key(&name, path).as_str(), meta.as_slice())
                        .map_err(|e| err(&e))?;
                }
                let record = SourceRecord {
                    kind: record.kind,
                    is_static: record.is_static,
                    revision: record.revision,
                };
                let bytes = serde_json::to_vec(&record).expect("a source record serializes");
                sources
                    .insert(name.as_str(), bytes.as_slice())
                    .map_err(|e| err(&e))?;
            }
            let mut meta = w.open_table(META).map_err(|e| err(&e))?;
            meta.insert("format", FORMAT).map_err(|e| err(&e))?;
        }
        w.commit().map_err(|e| err(&e))
    }

    fn is_empty(&self) -> Result<bool, Error> {
        let err = self.storage();
        let read = self.db.begin_read().map_err(|e| err(&e))?;
        Ok(read.list_tables().map_err(|e| err(&e))?.next().is_none())
    }

    /// Everything a restart resumes from.
    pub fn restore(&self) -> Result<Restored, Error> {
        let err = self.storage();
        let read = self.db.begin_read().map_err(|e| err(&e))?;
        let mut out = Restored::default();
        if let Ok(tags) = read.open_table(TAGS) {
            for entry in tags.iter().map_err(|e| err(&e))? {
                let (k, v) = entry.map_err(|e| err(&e))?;
                out.tags.insert(k.value().to_owned(), v.value().to_vec());
            }
        }
        out.forge = read_forge(&read).map_err(|e| err(&e))?;
        out.drift = read_drift(&read).map_err(|e| err(&e))?;
        let (Ok(sources), Ok(files)) = (read.open_table(SOURCES), read.open_table(FILES)) else {
            return Ok(out);
        };
        let meta = read.open_table(FILE_META).ok();
        for entry in sources.iter().map_err(|e| err(&e))? {
            let (name, value) = entry.map_err(|e| err(&e))?;
            let name = name.value().to_owned();
            let record: SourceRecord =
                serde_json::from_slice(value.value()).map_err(|e| err(&e))?;
            // (path, digest, provenance, withheld) of every file of the source.
            let mut listed: Vec<Listed> = Vec::new();
            if let Some(meta) = &meta {
                let (start, end) = (format!("{name}\0"), format!("{name}\u{1}"));
                for row in meta
                    .range(start.as_str()..end.as_str())
                    .map_err(|e| err(&e))?
                {
                    let (k, v) = row.map_err(|e| err(&e))?;
                    let path = k.value()[start.len()..].to_owned();
                    let m: FileMeta = serde_json::from_slice(v.value()).map_err(|e| err(&e))?;
                    listed.push((
                        path,
                        crate::hex::decode32(&m.digest),
                        m.provenance,
                        m.withheld,
                    ));
                }
            }
            let mut snapshot_files = Vec::with_capacity(listed.len());
            for (path, digest, provenance, withheld) in listed {
                if withheld {
                    // A digest of its own: never mistaken for the real bytes.
                    let mut file = SourceFile::new(
                        path,
                        Content::Refused {
                            rule: "withheld",
                            message: "the file was refused before it became a claim, so its bytes are not kept in the state store; it is read again from its source".into(),
                        },
                    );
                    file.provenance = provenance.map(std::sync::Arc::new);
                    snapshot_files.push(file);
                    continue;
                }
                let bytes = files.get(key(&name, &path).as_str()).map_err(|e| err(&e))?;
                let content = bytes.map_or_else(
                    || Content::Unreadable("missing from state".into()),
                    |b| Content::Bytes(b.value().to_vec().into()),
                );
                let mut file = SourceFile::new(path, content);
                if let Some(digest) = digest {
                    file.digest = digest;
                }
                file.provenance = provenance.map(std::sync::Arc::new);
                snapshot_files.push(file);
            }
            out.snapshots.insert(
                name.clone(),
                Snapshot {
                    source: name,
                    kind: record.kind,
                    is_static: record.is_static,
                    revision: record.revision,
                    files: snapshot_files,
                },
            );
        }
        if let Ok(envs) = read.open_table(ENVIRONMENTS) {
            for entry in envs.iter().map_err(|e| err(&e))? {
                let (name, value) = entry.map_err(|e| err(&e))?;
                out.environments
                    .insert(name.value().to_owned(), value.value().to_vec());
            }
        }
        if let Ok(passes) = read.open_table(PASSES) {
            for entry in passes.iter().map_err(|e| err(&e))? {
                out.passes.push(
                    serde_json::from_slice(entry.map_err(|e| err(&e))?.1.value())
                        .map_err(|e| err(&e))?,
                );
            }
        }
        if let Ok(events) = read.open_table(EVENTS) {
            for entry in events.iter().map_err(|e| err(&e))? {
                out.events.push(
                    serde_json::from_slice(entry.map_err(|e| err(&e))?.1.value())
                        .map_err(|e| err(&e))?,
                );
            }
        }
        Ok(out)
    }

    /// Writes one pass's changes atomically; nothing (not even an empty
    /// transaction) when there is nothing to write.
    pub fn commit(&self, commit: &Commit<'_>) -> Result<(), Error> {
        if commit.is_empty() {
            return Ok(());
        }
        let err = self.storage();
        let w = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut sources = w.open_table(SOURCES).map_err(|e| err(&e))?;
            let mut files = w.open_table(FILES).map_err(|e| err(&e))?;
            let mut metas = w.open_table(FILE_META).map_err(|e| err(&e))?;
            for (snapshot, previous) in &commit.snapshots {
                // Only what changed since `previous` is written.
                let mut kept = 0;
                for file in &snapshot.files {
                    let old = previous.and_then(|p| p.digests.get(&file.path));
                    kept += usize::from(old.is_some());
                    if old == Some(&file.digest) {
                        continue;
                    }
                    let withheld = commit.withholds(&snapshot.source, &file.path);
                    let bytes: &[u8] = match &file.content {
                        Content::Bytes(b) if !withheld => b,
                        _ => &[],
                    };
                    let k = key(&snapshot.source, &file.path);
                    files.insert(k.as_str(), bytes).map_err(|e| err(&e))?;
                    let meta = FileMeta {
                        digest: crate::hex::encode(&file.digest),
                        provenance: file.provenance.as_deref().cloned(),
                        withheld,
                    };
                    let meta = serde_json::to_vec(&meta).expect("file metadata serializes");
                    metas
                        .insert(k.as_str(), meta.as_slice())
                        .map_err(|e| err(&e))?;
                }
                if let Some(previous) = previous
                    && kept < previous.digests.len()
                {
                    let now: HashSet<&str> =
                        snapshot.files.iter().map(|f| f.path.as_str()).collect();
                    for path in previous
                        .digests
                        .keys()
                        .filter(|p| !now.contains(p.as_str()))
                    {
                        let k = key(&snapshot.source, path);
                        files.remove(k.as_str()).map_err(|e| err(&e))?;
                        metas.remove(k.as_str()).map_err(|e| err(&e))?;
                    }
                }
                let record = SourceRecord {
                    kind: snapshot.kind,
                    is_static: snapshot.is_static,
                    revision: snapshot.revision.clone(),
                };
                let bytes = serde_json::to_vec(&record).expect("a source record serializes");
                sources
                    .insert(snapshot.source.as_str(), bytes.as_slice())
                    .map_err(|e| err(&e))?;
            }
            let mut envs = w.open_table(ENVIRONMENTS).map_err(|e| err(&e))?;
            for (name, doc) in commit.environments {
                match doc {
                    Some(doc) => {
                        envs.insert(name.as_str(), doc.as_slice())
                            .map_err(|e| err(&e))?;
                    }
                    None => {
                        envs.remove(name.as_str()).map_err(|e| err(&e))?;
                    }
                }
            }
            let mut passes = w.open_table(PASSES).map_err(|e| err(&e))?;
            if let Some(pass) = &commit.pass {
                let bytes = serde_json::to_vec(pass).expect("a pass serializes");
                passes
                    .insert(pass.id, bytes.as_slice())
                    .map_err(|e| err(&e))?;
                if pass.id > PASS_HISTORY {
                    passes
                        .retain(|id, _| id + PASS_HISTORY > pass.id)
                        .map_err(|e| err(&e))?;
                }
            }
            let mut events = w.open_table(EVENTS).map_err(|e| err(&e))?;
            for event in commit.events {
                let bytes = serde_json::to_vec(event).expect("an event serializes");
                events
                    .insert(event.id, bytes.as_slice())
                    .map_err(|e| err(&e))?;
            }
            if let Some(last) = commit.events.last()
                && last.id > EVENT_HISTORY
            {
                let floor = last.id - EVENT_HISTORY;
                events.retain(|id, _| id > floor).map_err(|e| err(&e))?;
            }
            write_tags_and_forge(&w, commit).map_err(|e| err(&e))?;
            write_drift(&w, commit.drift).map_err(|e| err(&e))?;
        }
        w.commit().map_err(|e| err(&e))
    }
}

/// The tag lists that changed, in the pass's transaction.
/// Each environment's drift record; a record this build cannot read is
/// left out with a warning (drift is found again from the target: not
/// worth refusing to start over).
fn read_drift(
    read: &redb::ReadTransaction,
) -> Result<BTreeMap<String, Vec<(String, String)>>, redb::Error> {
    let mut out = BTreeMap::new();
    let drift = match read.open_table(DRIFT) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in drift.iter()? {
        let (k, v) = entry?;
        match serde_json::from_slice::<DriftRecord>(v.value()) {
            Ok(record) if record.version <= DriftRecord::VERSION => {
                out.insert(k.value().to_owned(), record.objects);
            }
            _ => tracing::warn!(
                environment = k.value(),
                "a drift record this version of converge cannot read is left out; drift is found again from the target"
            ),
        }
    }
    Ok(out)
}

/// Writes (or removes, `None`) environments' drift records.
fn write_drift(
    w: &redb::WriteTransaction,
    records: &[(String, Option<Vec<u8>>)],
) -> Result<(), redb::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let mut drift = w.open_table(DRIFT)?;
    for (name, record) in records {
        match record {
            Some(bytes) => {
                drift.insert(name.as_str(), bytes.as_slice())?;
            }
            None => {
                drift.remove(name.as_str())?;
            }
        }
    }
    Ok(())
}

fn read_forge(read: &redb::ReadTransaction) -> Result<BTreeMap<String, Vec<u8>>, redb::Error> {
    let mut out = BTreeMap::new();
    let Ok(table) = read.open_table(FORGE) else {
        return Ok(out);
    };
    for entry in table.iter()? {
        let (k, v) = entry?;
        out.insert(k.value().to_owned(), v.value().to_vec());
    }
    Ok(out)
}

fn write_tags_and_forge(
    w: &redb::WriteTransaction,
    commit: &Commit<'_>,
) -> Result<(), redb::Error> {
    write_tags(w, commit.tags)?;
    write_forge(w, commit.forge)
}

fn write_forge(
    w: &redb::WriteTransaction,
    rows: &[(String, Option<Vec<u8>>)],
) -> Result<(), redb::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut table = w.open_table(FORGE)?;
    for (k, v) in rows {
        match v {
            Some(v) => {
                table.insert(k.as_str(), v.as_slice())?;
            }
            None => {
                table.remove(k.as_str())?;
            }
        }
    }
    Ok(())
}

fn write_tags(w: &redb::WriteTransaction, lists: &[(String, Vec<u8>)]) -> Result<(), redb::Error> {
    if lists.is_empty() {
        return Ok(());
    }
    let mut tags = w.open_table(TAGS)?;
    for (k, v) in lists {
        tags.insert(k.as_str(), v.as_slice())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(files: &[(&str, &str, u8)]) -> Snapshot {
        Snapshot {
            source: "local".into(),
            kind: SourceKind::Dir,
            is_static: false,
            revision: Revision(format!("r{}", files.len())),
            files: files
                .iter()
                .map(|(path, text, digest)| SourceFile {
                    path: (*path).to_owned(),
                    content: Content::Bytes(text.as_bytes().to_vec().into()),
                    digest: [*digest; 32],
                    provenance: None,
                    notice: None,
                })
                .collect(),
        }
    }

    fn restored_files(store: &Store) -> Vec<(String, String)> {
        let restored = store.restore().expect("restore");
        restored.snapshots["local"]
            .files
            .iter()
            .map(|f| match &f.content {
                Content::Bytes(b) => (f.path.clone(), String::from_utf8_lossy(b).into_owned()),
                other => (f.path.clone(), format!("{other:?}")),
            })
            .collect()
    }

    #[test]
    fn a_withheld_file_is_stored_without_its_bytes_and_restored_as_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let a = snapshot(&[
            ("good.yaml", "fine", 1),
            ("bad.yaml", "secrets: {db: hunter2-plain}", 2),
        ]);
        let withheld = std::collections::BTreeSet::from([crate::source::Origin {
            source: "local".into(),
            path: "bad.yaml".into(),
        }]);
        store
            .commit(&Commit {
                snapshots: vec![(&a, None)],
                withheld: Some(&withheld),
                ..Commit::default()
            })
            .expect("commit");
        let files = restored_files(&store);
        assert_eq!(files[1], ("good.yaml".to_owned(), "fine".to_owned()));
        assert_eq!(files[0].0, "bad.yaml");
        assert!(files[0].1.contains("withheld"), "{:?}", files[0]);
        let restored = store.restore().expect("restore");
        let bad = &restored.snapshots["local"].files[0];
        assert_ne!(bad.digest, [2; 32], "never mistaken for the real bytes");
        drop(store);
        let bytes = std::fs::read(dir.path().join("converge.redb")).expect("read the store");
        assert!(!bytes.windows(13).any(|w| w == b"hunter2-plain"));
    }

    #[test]
    fn a_commit_writes_only_what_changed_since_the_stored_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let a = snapshot(&[
            ("a.yaml", "a1", 1),
            ("b.yaml", "b1", 2),
            ("c.yaml", "c1", 3),
        ]);
        store
            .commit(&Commit {
                snapshots: vec![(&a, None)],
                ..Commit::default()
            })
            .expect("first commit");
        let mut stored = Stored::of(&a);
        // `a.yaml` keeps its digest but (artificially) not its bytes: a write
        // would show. `b.yaml` changes, `c.yaml` goes, `d.yaml` comes.
        let b = snapshot(&[
            ("a.yaml", "SKIPPED", 1),
            ("b.yaml", "b2", 9),
            ("d.yaml", "d1", 4),
        ]);
        store
            .commit(&Commit {
                snapshots: vec![(&b, Some(&stored))],
                ..Commit::default()
            })
            .expect("second commit");
        stored.update(&b);
        assert_eq!(stored, Stored::of(&b));
        assert_eq!(
            restored_files(&store),
            [
                ("a.yaml".to_owned(), "a1".to_owned()),
                ("b.yaml".to_owned(), "b2".to_owned()),
                ("d.yaml".to_owned(), "d1".to_owned()),
            ]
        );
        let read = store.db.begin_read().expect("read");
        let files = read.open_table(FILES).expect("files");
        assert!(
            files
                .get(key("local", "c.yaml").as_str())
                .expect("get")
                .is_none(),
            "a removed file leaves the store"
        );
    }

    #[test]
    fn a_store_of_format_1_is_upgraded_when_opened() {
        use redb::ReadableTableMetadata as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let a = snapshot(&[("a.yaml", "a1", 1), ("b.yaml", "b1", 2)]);
        // A store of format 1 whose source record lists every path, digest
        // and provenance itself, with no `file_meta` rows.
        {
            let db = Database::create(dir.path().join("converge.redb")).expect("create");
            let w = db.begin_write().expect("write");
            {
                let mut meta = w.open_table(META).expect("meta");
                meta.insert("app", APP).expect("insert");
                meta.insert("format", "1").expect("insert");
                let mut files = w.open_table(FILES).expect("files");
                for f in &a.files {
                    let Content::Bytes(b) = &f.content else {
                        unreachable!()
                    };
                    files
                        .insert(key("local", &f.path).as_str(), &b[..])
                        .expect("insert");
                }
                let record = serde_json::json!({
                    "kind": "dir",
                    "is_static": false,
                    "revision": a.revision,
                    "paths": ["a.yaml", "b.yaml"],
                    "digests": {
                        "a.yaml": crate::hex::encode(&[1; 32]),
                        "b.yaml": crate::hex::encode(&[2; 32]),
                    },
                });
                let bytes = serde_json::to_vec(&record).expect("json");
                let mut sources = w.open_table(SOURCES).expect("sources");
                sources.insert("local", bytes.as_slice()).expect("insert");
            }
            w.commit().expect("commit");
        }
        let store = Store::open(dir.path()).expect("open upgrades");
        {
            let read = store.db.begin_read().expect("read");
            let meta = read.open_table(META).expect("meta");
            let format = meta.get("format").expect("get").expect("row");
            assert_eq!(format.value(), FORMAT);
            let sources = read.open_table(SOURCES).expect("sources");
            let record: serde_json::Value =
                serde_json::from_slice(sources.get("local").expect("get").expect("row").value())
                    .expect("json");
            assert!(
                record.get("paths").is_none() && record.get("digests").is_none(),
                "the record no longer lists files: {record}"
            );
            let metas = read.open_table(FILE_META).expect("file_meta");
            assert_eq!(metas.len().expect("len"), 2, "one row per file");
        }
        let restored = store.restore().expect("restore");
        assert_eq!(restored.snapshots["local"].files[1].digest, [2; 32]);
        assert_eq!(restored.snapshots["local"].revision, a.revision);
        let mut stored = Stored::of(&restored.snapshots["local"]);
        assert_eq!(stored, Stored::of(&a));
        // The upgraded store takes incremental commits: one file changes.
        let b = snapshot(&[("a.yaml", "a1", 1), ("b.yaml", "b2", 9)]);
        store
            .commit(&Commit {
                snapshots: vec![(&b, Some(&stored))],
                ..Commit::default()
            })
            .expect("commit");
        stored.update(&b);
        assert_eq!(
            restored_files(&store),
            [
                ("a.yaml".to_owned(), "a1".to_owned()),
                ("b.yaml".to_owned(), "b2".to_owned()),
            ]
        );
        drop(store);
        let again = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            again.restore().expect("restore").snapshots["local"].files[1].digest,
            [9; 32]
        );
    }

    #[test]
    fn a_store_of_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = Database::create(dir.path().join("converge.redb")).expect("create");
            let w = db.begin_write().expect("write");
            {
                let mut meta = w.open_table(META).expect("meta");
                meta.insert("app", APP).expect("insert");
                meta.insert("format", "99").expect("insert");
            }
            w.commit().expect("commit");
        }
        let err = Store::open(dir.path()).expect_err("refused");
        assert!(matches!(err, Error::Foreign { .. }), "{err}");
        assert!(err.to_string().contains("state format 99"), "{err}");
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn the_state_dir_is_created_0700_and_the_store_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("var").join("state");
        let store = Store::open(&state).expect("open");
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&dir.path().join("var")), 0o700);
        assert_eq!(mode(&state.join("converge.redb")), 0o600);
        drop(store);
        Store::open(&state).expect("opens again");
        assert_eq!(mode(&state.join("converge.redb")), 0o600);
    }

    #[test]
    fn one_writer_lock_per_state_dir_and_the_second_names_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = WriterLock::acquire(dir.path()).expect("first");
        assert_eq!(mode(&dir.path().join(LOCK_FILE)), 0o600);
        let err = WriterLock::acquire(dir.path()).expect_err("second");
        assert!(
            matches!(err, Error::Locked { holder: Some(pid), .. } if pid == std::process::id()),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let _again = WriterLock::acquire(dir.path()).expect("free again");
    }

    #[test]
    fn drift_is_kept_across_a_restart_until_a_commit_removes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let edited = vec![(
            "Deployment/search".to_owned(),
            "edited: spec.template.spec.containers[{\"name\":\"search\"}].image (by kubectl-set)"
                .to_owned(),
        )];
        let deleted = vec![("ConfigMap/claim".to_owned(), "deleted".to_owned())];
        {
            let store = Store::open(dir.path()).expect("open");
            store
                .commit(&Commit {
                    drift: &[
                        ("dev-a".to_owned(), Some(DriftRecord::encode(&edited))),
                        ("dev-b".to_owned(), Some(DriftRecord::encode(&deleted))),
                    ],
                    ..Commit::default()
                })
                .expect("commit");
        }
        let store = Store::open(dir.path()).expect("open again");
        let restored = store.restore().expect("restore");
        assert_eq!(restored.drift["dev-a"], edited);
        assert_eq!(restored.drift["dev-b"], deleted);
        store
            .commit(&Commit {
                drift: &[("dev-a".to_owned(), None)],
                ..Commit::default()
            })
            .expect("corrected");
        let restored = store.restore().expect("restore");
        assert_eq!(
            restored.drift.keys().collect::<Vec<_>>(),
            ["dev-b"],
            "a corrected environment is forgotten, the other kept"
        );
    }

    #[test]
    fn a_store_without_drift_loads_and_an_unreadable_drift_record_is_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            // A format-2 store as written before drift was kept: no table.
            let store = Store::open(dir.path()).expect("open");
            let a = snapshot(&[("a.yaml", "a1", 1)]);
            store
                .commit(&Commit {
                    snapshots: vec![(&a, None)],
                    ..Commit::default()
                })
                .expect("commit");
        }
        let store = Store::open(dir.path()).expect("an old store opens");
        let restored = store.restore().expect("and restores");
        assert!(restored.drift.is_empty());
        assert_eq!(restored.snapshots["local"].files.len(), 1);
        // A record of a later version (or shape) is left out, not fatal.
        let newer = br#"{"version":2,"objects":{"changed":"shape"}}"#.to_vec();
        let later = serde_json::to_vec(&serde_json::json!({
            "version": 9,
            "objects": [["Deployment/x", "deleted"]],
        }))
        .expect("json");
        store
            .commit(&Commit {
                drift: &[
                    ("dev-a".to_owned(), Some(newer)),
                    ("dev-b".to_owned(), Some(later)),
                    (
                        "dev-c".to_owned(),
                        Some(DriftRecord::encode(&[(
                            "Service/s".to_owned(),
                            "deleted".to_owned(),
                        )])),
                    ),
                ],
                ..Commit::default()
            })
            .expect("commit");
        let restored = store.restore().expect("restore");
        assert_eq!(restored.drift.keys().collect::<Vec<_>>(), ["dev-c"]);
    }

    #[test]
    fn an_empty_commit_writes_no_transaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let before = std::fs::metadata(dir.path().join("converge.redb"))
            .expect("file")
            .modified()
            .expect("mtime");
        std::thread::sleep(std::time::Duration::from_millis(20));
        store.commit(&Commit::default()).expect("empty commit");
        let after = std::fs::metadata(dir.path().join("converge.redb"))
            .expect("file")
            .modified()
            .expect("mtime");
        assert_eq!(before, after);
    }
}
