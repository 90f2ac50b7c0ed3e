//! The dir source: a local directory tree of `*.json`, `*.yaml`, `*.yml` claims.
//!
//! For development and the quick start. Hidden entries (`.git`, editor swap
//! files) are skipped and symbolic links to directories are not followed, so a
//! link loop cannot hang a pass. A symbolic link to a file is followed only
//! when it resolves inside the root: one that leads out of it is refused with
//! a `symlink` diagnostic and never opened (the daemon often runs as root, and
//! whoever can write the claims directory must not read other files through
//! it). Files are opened relative to the open root with `openat2`
//! (`RESOLVE_BENEATH`), so a path swapped for a link between the walk and the
//! open cannot escape either; only regular files are read. Each file's size is
//! checked before it is read. The revision is a digest of every file's path
//! and content.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Content, Error, Revision, Snapshot, SourceFile, SourceKind, is_claim_file};
use crate::config::SourceConfig;

/// A directory as a [`Source`](super::Source). Between reads it remembers each
/// file's stamp (size, inode, mtime, ctime) and content, so a read stats every
/// file but opens only those whose stamp changed: a saved file in a tree of
/// 10k claims costs one read, not 10k.
#[derive(Debug, Clone)]
pub struct DirSource {
    pub options: Options,
    pub interval: std::time::Duration,
    /// The files of the last read, by path relative to the root.
    pub seen: HashMap<PathBuf, (Stamp, SourceFile)>,
}

/// What identifies a file's version without reading it. Like git's index,
/// a stamp taken within [`RACY`] of the read is not trusted: the file could
/// change again within the same timestamp tick, so it is read next time too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    ino: u64,
    dev: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// How recent a change must be for its stamp to be distrusted.
const RACY: std::time::Duration = std::time::Duration::from_secs(2);

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            ino: meta.ino(),
            dev: meta.dev(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Changed at least [`RACY`] before `now` (seconds since the epoch).
    fn settled(&self, now: i64) -> bool {
        let latest = self.mtime.0.max(self.ctime.0);
        latest + i64::try_from(RACY.as_secs()).unwrap_or(i64::MAX) < now
    }
}

impl DirSource {
    /// The source a `dir` config describes, read again every `interval`
    /// even without file events.
    pub fn from_config(
        config: &SourceConfig,
        interval: std::time::Duration,
        max_file_bytes: u64,
    ) -> Result<DirSource, Error> {
        let SourceConfig::Dir { name, path, shown } = config else {
            return Err(Error::NotKind {
                source_name: config.name().to_owned(),
                kind: SourceKind::Dir,
            });
        };
        Ok(DirSource {
            options: Options {
                name: name.clone(),
                root: path.clone(),
                display_root: if shown.is_empty() {
                    path.display().to_string()
                } else {
                    shown.clone()
                },
                max_file_bytes,
            },
            interval,
            seen: HashMap::new(),
        })
    }
}

impl super::Source for DirSource {
    fn name(&self) -> &str {
        &self.options.name
    }

    fn interval(&self) -> std::time::Duration {
        self.interval
    }

    fn read(&mut self) -> Result<Snapshot, Error> {
        let now = chrono::Utc::now().timestamp();
        let mut paths = Vec::new();
        let root = &self.options.root;
        let unreadable = |(path, error): (PathBuf, std::io::Error)| Error::Unreadable {
            source_name: self.options.name.clone(),
            path: path.display().to_string(),
            error,
        };
        let opened = Root::open(root, &self.options.display_root).map_err(unreadable)?;
        walk(root, root, &mut paths).map_err(unreadable)?;
        paths.sort();
        let mut seen = HashMap::with_capacity(paths.len());
        let mut files = Vec::with_capacity(paths.len());
        for rel in paths {
            let full = root.join(&rel);
            let stamp = std::fs::metadata(&full).ok().map(|m| Stamp::of(&m));
            let file = match (stamp, self.seen.remove(&rel)) {
                (Some(now_stamp), Some((before, file)))
                    if now_stamp == before && before.settled(now) =>
                {
                    file
                }
                _ => {
                    let shown = display(&self.options.display_root, &rel);
                    SourceFile::new(shown, opened.read(&rel, self.options.max_file_bytes))
                }
            };
            if let Some(stamp) = stamp {
                seen.insert(rel, (stamp, file.clone()));
            }
            files.push(file);
        }
        self.seen = seen;
        Ok(Snapshot {
            source: self.options.name.clone(),
            kind: SourceKind::Dir,
            is_static: false,
            revision: revision(&files),
            files,
        })
    }
}

/// Options for reading a directory.
#[derive(Debug, Clone)]
pub struct Options {
    /// The source's name, for diagnostics and policy.
    pub name: String,
    /// The directory to read.
    pub root: PathBuf,
    /// How file paths are shown (usually the path as configured).
    pub display_root: String,
    /// Files above this size are refused without reading.
    pub max_file_bytes: u64,
}

/// Reads the directory tree into a snapshot. A missing or unreadable root is
/// an error (never an empty snapshot); an unreadable file is that file's
/// problem only.
pub fn read(options: &Options) -> Result<Snapshot, Error> {
    let mut paths = Vec::new();
    let unreadable = |(path, error): (PathBuf, std::io::Error)| Error::Unreadable {
        source_name: options.name.clone(),
        path: path.display().to_string(),
        error,
    };
    let root = Root::open(&options.root, &options.display_root).map_err(unreadable)?;
    walk(&options.root, &options.root, &mut paths).map_err(unreadable)?;
    paths.sort();
    let files: Vec<SourceFile> = paths
        .into_iter()
        .map(|rel| {
            let shown = display(&options.display_root, &rel);
            SourceFile::new(shown, root.read(&rel, options.max_file_bytes))
        })
        .collect();
    Ok(Snapshot {
        source: options.name.clone(),
        kind: SourceKind::Dir,
        is_static: false,
        revision: revision(&files),
        files,
    })
}

/// Reads the given files (or directories, recursively) as one snapshot, for
/// `converge validate PATH...`. A file named here is read wherever a link
/// leads (the user named it); in a directory named here, the root rule holds.
pub fn read_paths(name: &str, paths: &[PathBuf], max_file_bytes: u64) -> Result<Snapshot, Error> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|error| Error::Unreadable {
            source_name: name.to_owned(),
            path: path.display().to_string(),
            error,
        })?;
        if meta.is_dir() {
            let snapshot = read(&Options {
                name: name.to_owned(),
                root: path.clone(),
                display_root: path.display().to_string(),
                max_file_bytes,
            })?;
            files.extend(snapshot.files);
        } else {
            let content = std::fs::File::open(path)
                .and_then(|file| read_open(file, max_file_bytes))
                .unwrap_or_else(|e| Content::Unreadable(e.to_string()));
            files.push(SourceFile::new(path.display().to_string(), content));
        }
    }
    Ok(Snapshot {
        source: name.to_owned(),
        kind: SourceKind::Dir,
        is_static: false,
        revision: revision(&files),
        files,
    })
}

fn display(root: &str, rel: &Path) -> String {
    let rel = rel.to_string_lossy();
    if root.is_empty() || root == "." {
        rel.into_owned()
    } else {
        format!("{}/{rel}", root.trim_end_matches('/'))
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), (PathBuf, std::io::Error)> {
    let entries = std::fs::read_dir(dir).map_err(|e| (dir.to_owned(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| (dir.to_owned(), e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let file_type = entry.file_type().map_err(|e| (entry.path(), e))?;
        let path = entry.path();
        if file_type.is_dir() {
            walk(root, &path, out)?;
        } else if (file_type.is_file() || file_type.is_symlink()) && is_claim_file(&name) {
            if file_type.is_symlink() && std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            out.push(path.strip_prefix(root).unwrap_or(&path).to_owned());
        }
    }
    Ok(())
}

/// A source's root directory, open: claim files are opened relative to it
/// and only when they resolve inside it.
struct Root {
    fd: rustix::fd::OwnedFd,
    /// The root with every link resolved (for the check without `openat2`).
    canonical: PathBuf,
    /// The root as diagnostics show it.
    shown: String,
}

/// Whether `openat2` works here (Linux 5.6+, and not refused by a seccomp
/// filter); set false on the first `ENOSYS` or `EPERM`.
static OPENAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Why a file was not opened.
enum Refusal {
    /// It resolves outside the root (or cannot be resolved at all, which is
    /// reported the same way, so a link cannot probe what exists outside).
    Outside,
    Io(std::io::Error),
}

impl From<std::io::Error> for Refusal {
    fn from(e: std::io::Error) -> Refusal {
        Refusal::Io(e)
    }
}

impl Root {
    fn open(root: &Path, shown: &str) -> Result<Root, (PathBuf, std::io::Error)> {
        use rustix::fs::{Mode, OFlags};
        let failed = |e: std::io::Error| (root.to_owned(), e);
        let fd = rustix::fs::open(
            root,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| failed(e.into()))?;
        Ok(Root {
            fd,
            canonical: std::fs::canonicalize(root).map_err(failed)?,
            shown: shown.to_owned(),
        })
    }

    /// Reads `rel` (a path the walk found under the root), refusing it
    /// unread when it resolves outside the root.
    fn read(&self, rel: &Path, limit: u64) -> Content {
        let openat2 = OPENAT2.load(std::sync::atomic::Ordering::Relaxed);
        self.read_with(rel, limit, openat2)
    }

    /// [`Root::read`], with `openat2` or (where the kernel lacks it) without.
    fn read_with(&self, rel: &Path, limit: u64, openat2: bool) -> Content {
        match self
            .open_beneath(rel, openat2)
            .and_then(|file| Ok(read_open(file, limit)?))
        {
            Ok(content) => content,
            Err(Refusal::Outside) => Content::Refused {
                rule: "symlink",
                message: format!(
                    "symbolic link to a file outside the source's root {}: refused, not read",
                    self.shown
                ),
            },
            Err(Refusal::Io(e)) => Content::Unreadable(e.to_string()),
        }
    }

    /// Opens `rel` for reading when it resolves inside the root. Links are
    /// resolved by the kernel under `RESOLVE_BENEATH` (a relative link
    /// inside the root is followed); one it refuses (an absolute link, or one
    /// leading out) is resolved in full and opened only when it ends inside
    /// the root, through its link-free path. Without `openat2`, every file
    /// is resolved in full first and opened with `O_NOFOLLOW`.
    fn open_beneath(&self, rel: &Path, mut openat2: bool) -> Result<std::fs::File, Refusal> {
        use rustix::fs::ResolveFlags;
        use std::os::unix::fs::OpenOptionsExt;
        if openat2 {
            match self.openat2(rel, ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS) {
                Err(rustix::io::Errno::XDEV) => {}
                Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                    OPENAT2.store(false, std::sync::atomic::Ordering::Relaxed);
                    openat2 = false;
                }
                other => {
                    return Ok(other
                        .map(std::fs::File::from)
                        .map_err(std::io::Error::from)?);
                }
            }
        }
        let inside = std::fs::canonicalize(self.canonical.join(rel))
            .ok()
            .and_then(|real| real.strip_prefix(&self.canonical).ok().map(Path::to_owned))
            .ok_or(Refusal::Outside)?;
        if openat2 {
            // The resolved path has no link left: refuse any that appears.
            let fd = self
                .openat2(&inside, ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS)
                .map_err(|e| match e {
                    rustix::io::Errno::XDEV | rustix::io::Errno::LOOP => Refusal::Outside,
                    e => Refusal::Io(e.into()),
                })?;
            return Ok(std::fs::File::from(fd));
        }
        Ok(std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags())
            .open(self.canonical.join(inside))?)
    }

    fn openat2(
        &self,
        rel: &Path,
        resolve: rustix::fs::ResolveFlags,
    ) -> rustix::io::Result<rustix::fd::OwnedFd> {
        use rustix::fs::{Mode, OFlags};
        rustix::fs::openat2(
            &self.fd,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
            resolve,
        )
    }
}

/// `O_NOFOLLOW | O_NONBLOCK | O_NOCTTY` for the open without `openat2`.
fn libc_flags() -> i32 {
    use rustix::fs::OFlags;
    #[allow(
        clippy::cast_possible_wrap,
        reason = "open(2) flags are small positive bit sets"
    )]
    let flags = (OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32;
    flags
}

/// Reads an open file up to `limit` bytes; only a regular file is read (a
/// FIFO or device a link points at would block or never end).
fn read_open(file: std::fs::File, limit: u64) -> std::io::Result<Content> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Content::Unreadable("not a regular file".to_owned()));
    }
    let size = meta.len();
    if size > limit {
        return Ok(Content::TooLarge { size, limit });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // The file may grow between stat and read: never read past the cap.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Ok(Content::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(Content::Bytes(bytes.into()))
}

/// The revision of a set of files: a digest over paths and content digests.
#[must_use]
pub fn revision(files: &[SourceFile]) -> Revision {
    let mut hasher = Sha256::new();
    for f in files {
        hasher.update(f.path.as_bytes());
        hasher.update([0]);
        hasher.update(f.digest);
    }
    let digest = hasher.finalize();
    Revision(format!("sha256:{}", crate::hex::encode(&digest)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Source as _;

    fn bytes(snap: &Snapshot, path: &str) -> bytes::Bytes {
        match &snap
            .files
            .iter()
            .find(|f| f.path.ends_with(path))
            .expect("file")
            .content
        {
            Content::Bytes(b) => b.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_settled_unchanged_file_is_not_read_again_and_every_change_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("a.yaml"), "a: 1").expect("write");
        std::fs::write(root.join("b.yaml"), "b: 1").expect("write");
        let mut source = DirSource {
            options: Options {
                name: "local".into(),
                root: root.to_owned(),
                display_root: "claims".into(),
                max_file_bytes: 1024,
            },
            interval: std::time::Duration::from_secs(1),
            seen: HashMap::new(),
        };
        // Just written: racily clean, so read again until it settles.
        let first = source.read().expect("read");
        let again = source.read().expect("read");
        assert_ne!(
            bytes(&first, "a.yaml").as_ptr(),
            bytes(&again, "a.yaml").as_ptr()
        );
        std::thread::sleep(RACY + std::time::Duration::from_millis(1100));
        let settled = source.read().expect("read");
        let reused = source.read().expect("read");
        assert_eq!(
            bytes(&settled, "a.yaml").as_ptr(),
            bytes(&reused, "a.yaml").as_ptr(),
            "a settled, unchanged file is served from memory"
        );
        // Same size, new content: the stamp changes, the file is read.
        std::fs::write(root.join("a.yaml"), "a: 2").expect("write");
        std::fs::remove_file(root.join("b.yaml")).expect("rm");
        let changed = source.read().expect("read");
        assert_eq!(&bytes(&changed, "a.yaml")[..], b"a: 2");
        assert_eq!(changed.files.len(), 1);
        assert_ne!(changed.revision, reused.revision);
    }

    #[test]
    fn reads_claim_files_recursively_and_skips_hidden_and_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("team/.git")).expect("mkdir");
        std::fs::write(root.join("a.json"), "{}").expect("write");
        std::fs::write(root.join("team/b.YML"), "x: 1").expect("write");
        std::fs::write(root.join("team/.git/c.yaml"), "x").expect("write");
        std::fs::write(root.join("README.md"), "x").expect("write");
        let snap = read(&Options {
            name: "local".into(),
            root: root.to_owned(),
            display_root: "claims".into(),
            max_file_bytes: 10,
        })
        .expect("reads");
        let paths: Vec<_> = snap.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["claims/a.json", "claims/team/b.YML"]);
    }

    #[test]
    fn a_symlink_out_of_the_root_is_refused_unread_and_links_inside_are_followed() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("claims");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("secret.yaml"), "password: hunter2\n").expect("write");
        std::fs::write(root.join("real.yaml"), "a: 1\n").expect("write");
        let secret = dir.path().join("secret.yaml");
        for (link, target) in [
            ("up.yaml", Path::new("../secret.yaml")),
            ("abs.yaml", secret.as_path()),
            ("gone.yaml", Path::new("../missing.yaml")),
            ("sub/hop.yaml", Path::new("../../secret.yaml")),
            ("chain.yaml", Path::new("sub/hop.yaml")),
            ("alias.yaml", Path::new("real.yaml")),
            ("sub/back.yaml", Path::new("../real.yaml")),
        ] {
            symlink(target, root.join(link)).expect("symlink");
        }
        symlink(root.join("real.yaml"), root.join("abs-alias.yaml")).expect("symlink");
        let options = Options {
            name: "local".into(),
            root: root.clone(),
            display_root: "claims".into(),
            max_file_bytes: 1024,
        };
        let mut source = DirSource {
            options: options.clone(),
            interval: std::time::Duration::from_secs(1),
            seen: HashMap::new(),
        };
        // Where the kernel has no `openat2`: the same answers.
        let root_open = Root::open(&root, "claims").expect("open root");
        let without_openat2 = Snapshot {
            files: ["real.yaml", "alias.yaml", "abs-alias.yaml", "sub/back.yaml"]
                .into_iter()
                .chain([
                    "up.yaml",
                    "abs.yaml",
                    "gone.yaml",
                    "sub/hop.yaml",
                    "chain.yaml",
                ])
                .map(|p| {
                    let content = root_open.read_with(Path::new(p), 1024, false);
                    SourceFile::new(format!("claims/{p}"), content)
                })
                .collect(),
            ..read(&options).expect("reads")
        };
        for snap in [
            read(&options).expect("reads"),
            source.read().expect("reads"),
            without_openat2,
        ] {
            let file = |p: &str| {
                snap.files
                    .iter()
                    .find(|f| f.path == format!("claims/{p}"))
                    .unwrap_or_else(|| panic!("{p} listed"))
            };
            for inside in ["alias.yaml", "abs-alias.yaml", "sub/back.yaml", "real.yaml"] {
                assert_eq!(
                    file(inside).content,
                    Content::Bytes(b"a: 1\n".to_vec().into()),
                    "{inside}"
                );
            }
            for outside in [
                "up.yaml",
                "abs.yaml",
                "gone.yaml",
                "sub/hop.yaml",
                "chain.yaml",
            ] {
                let file = file(outside);
                assert!(
                    !matches!(file.content, Content::Bytes(_)),
                    "{outside} is never read: {:?}",
                    file.content
                );
                let diagnostic = crate::load::parse(file).expect_err("refused");
                assert_eq!(
                    (diagnostic.file.as_str(), diagnostic.rule.as_str()),
                    (file.path.as_str(), "symlink"),
                    "{outside}: {diagnostic}"
                );
                assert!(diagnostic.message.contains("outside"), "{diagnostic}");
                assert!(!diagnostic.message.contains("hunter2"), "{diagnostic}");
            }
        }
    }

    #[test]
    fn oversized_files_are_refused_unread_and_missing_root_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("big.json"), "x".repeat(100)).expect("write");
        let opts = Options {
            name: "l".into(),
            root: dir.path().to_owned(),
            display_root: ".".into(),
            max_file_bytes: 10,
        };
        let snap = read(&opts).expect("reads");
        assert_eq!(
            snap.files[0].content,
            Content::TooLarge {
                size: 100,
                limit: 10
            }
        );
        let missing = Options {
            root: dir.path().join("nope"),
            ..opts
        };
        assert!(read(&missing).is_err());
    }
}
