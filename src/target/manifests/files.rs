//! How the target writes a file: as a temp file beside it and renamed into
//! place (atomic), with the mode its [`Access`] asks for; the temp files a
//! crash left behind removed.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Error, Manifests, TMP_SUFFIX};

pub(super) fn temp_path(path: &Path) -> PathBuf {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{file_name}{TMP_SUFFIX}"))
}

/// Who may read a file the target writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// An object file: the product, for kubectl and other tools (0666 less
    /// the umask, like any file the process creates).
    Shared,
    /// converge's own bookkeeping (the inventory) and `Secret` objects
    /// (they hold decrypted values): 0600.
    Private,
}

impl Access {
    pub(super) fn of(rendered: &crate::render::Rendered) -> Access {
        if rendered.is_secret() {
            Access::Private
        } else {
            Access::Shared
        }
    }
}

/// Creates (or truncates) `path` for writing with `access`'s mode; a
/// private file left by a crash gets its mode back too.
pub(super) fn create(path: &Path, access: Access) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mode = match access {
        Access::Shared => 0o666,
        Access::Private => 0o600,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    if access == Access::Private {
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok(file)
}

/// Writes `bytes` beside `path` as a temp file, unsynced.
pub(super) fn stage(path: &Path, bytes: &[u8], access: Access) -> Result<(), Error> {
    let tmp = temp_path(path);
    create(&tmp, access)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Manifests::io(path, "write")(e)
        })
}

/// Renames a staged temp file over `path` (atomic).
pub(super) fn commit(path: &Path) -> Result<(), Error> {
    std::fs::rename(temp_path(path), path).map_err(Manifests::io(path, "rename"))
}

pub(super) fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(TMP_SUFFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes an inventory to `path` atomically (0600): a temp file beside it,
/// fsync, rename.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = create(&tmp, Access::Private)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Manifests::io(path, "write")(e)
    })
}
