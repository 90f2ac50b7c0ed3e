//! IO boundary: the age identity files of `secrets.age_key_files`.
//!
//! [`KeyFiles::refresh`] stats every file before a pass and reads them all
//! again when one changed (size, inode, modification or change time), so a
//! rotated key needs no restart. What it reads goes into the shared
//! [`AgeKeys`]; messages name files and lines, never their content.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::secret::age::{AgeKeys, parse_identities};

/// A file's identity as a stat sees it.
type Stamp = Option<(u64, u64, i64, i64, i64, i64)>;

/// The configured key files and the keys they hold.
#[derive(Debug)]
pub struct KeyFiles {
    paths: Vec<PathBuf>,
    stamps: Mutex<Option<Vec<Stamp>>>,
    keys: Arc<AgeKeys>,
}

fn stamp(path: &std::path::Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.len(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

impl KeyFiles {
    #[must_use]
    pub fn new(paths: Vec<PathBuf>) -> KeyFiles {
        let files = KeyFiles {
            paths,
            stamps: Mutex::new(None),
            keys: Arc::new(AgeKeys::default()),
        };
        files.refresh();
        files
    }

    /// The keys, for the pipeline.
    #[must_use]
    pub fn keys(&self) -> Arc<AgeKeys> {
        self.keys.clone()
    }

    /// Reads the files again if any changed since the last read. Returns
    /// whether the keys were replaced.
    pub fn refresh(&self) -> bool {
        let now: Vec<Stamp> = self.paths.iter().map(|p| stamp(p)).collect();
        let Ok(mut last) = self.stamps.lock() else {
            return false;
        };
        if last.as_ref() == Some(&now) {
            return false;
        }
        let mut identities = Vec::new();
        let mut problems = Vec::new();
        for path in &self.paths {
            let shown = path.display().to_string();
            if let Some(mode) = open_mode(path) {
                tracing::warn!(
                    file = %shown,
                    mode = %format!("{mode:04o}"),
                    "age key file is readable by group or others; chmod 600 it"
                );
            }
            match std::fs::read(path) {
                Ok(bytes) => {
                    let bytes = zeroize::Zeroizing::new(bytes);
                    match std::str::from_utf8(&bytes) {
                        Ok(text) => match parse_identities(&shown, text) {
                            Ok(ids) => identities.extend(ids),
                            Err(e) => problems.push(e.to_string()),
                        },
                        Err(_) => problems.push(format!("{shown}: not UTF-8 text")),
                    }
                }
                Err(e) => problems.push(format!("{shown}: cannot be read ({})", e.kind())),
            }
        }
        for p in &problems {
            tracing::warn!(problem = %p, "age key file");
        }
        let problem = (!problems.is_empty()).then(|| problems.join("; "));
        self.keys
            .replace(!self.paths.is_empty(), identities, problem);
        *last = Some(now);
        true
    }
}

/// The permission bits of a key file that group or others may read or
/// write (`None` when only its owner may, or it cannot be stat'ed).
fn open_mode(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

/// The file in the state dir holding the installation's fingerprint key.
pub const FINGERPRINT_KEY_FILE: &str = "fingerprint.key";

/// The installation's fingerprint key (32 random bytes in
/// `<state_dir>/fingerprint.key`, 0600). With `create`, the state dir (0700)
/// and the key are made when missing; without, a missing key is replaced
/// by one for this process only.
pub fn fingerprint_key(
    state_dir: &std::path::Path,
    create: bool,
) -> std::io::Result<crate::secret::FingerprintKey> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let path = state_dir.join(FINGERPRINT_KEY_FILE);
    let read = |path: &std::path::Path| -> std::io::Result<crate::secret::FingerprintKey> {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        let mut file = std::fs::File::open(path)?;
        file.read_exact(&mut *bytes)?;
        Ok(crate::secret::FingerprintKey::new(*bytes))
    };
    match read(&path) {
        Ok(key) => return Ok(key),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if !create {
        return Ok(crate::secret::FingerprintKey::ephemeral());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)?;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut *bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = state_dir.join(format!("{FINGERPRINT_KEY_FILE}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&*bytes)?;
    file.sync_all()?;
    // Another writer may have made one meanwhile: the first one stays.
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    if let Err(e) = linked
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        return Err(e);
    }
    read(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_open_to_group_or_others_is_noticed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("age.key");
        std::fs::write(&path, "# no key\n").expect("write");
        for (mode, open) in [
            (0o600, None),
            (0o400, None),
            (0o640, Some(0o640)),
            (0o604, Some(0o604)),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            assert_eq!(open_mode(&path), open, "{mode:o}");
        }
    }
}
