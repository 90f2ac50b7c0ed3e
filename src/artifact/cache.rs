//! The content-addressed cache of artifacts in the state dir:
//! `blobs/sha256/<hex>` holds a layer by its digest (checked again when it
//! is read, so a corrupted file is fetched anew), `refs/<hex>` the digest a
//! reference (registry, repository, tag) was last found at, so a restart
//! fetches nothing the cache holds. Bounded: past `max_bytes` the least
//! recently written blobs go. Best effort: a cache that cannot be written
//! only costs fetches.

use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

/// The default bound on the blobs kept.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Where an artifact was asked for.
#[derive(Debug, Clone)]
pub struct Reference(String);

impl Reference {
    #[must_use]
    pub fn oci(host: &str, repository: &str, tag: &str) -> Reference {
        Reference(format!("oci\0{host}\0{repository}\0{tag}"))
    }

    /// The built output of a kustomization at `root` of the artifact `digest`.
    #[must_use]
    pub fn built(digest: &str, root: &str) -> Reference {
        Reference(format!("kustomize\0{digest}\0{root}"))
    }

    fn file(&self) -> String {
        crate::hex::encode(&Sha256::digest(self.0.as_bytes()))
    }
}

/// What the cache notes beside a reference's digest: the artifact's
/// revision and source annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Noted {
    pub revision: String,
    pub origin: String,
}

#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
}

impl Cache {
    #[must_use]
    pub fn new(dir: PathBuf, max_bytes: u64) -> Cache {
        Cache { dir, max_bytes }
    }

    /// The cache's directory (git mirrors live under it too).
    #[must_use]
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        hex.chars()
            .all(|c| c.is_ascii_hexdigit())
            .then(|| self.dir.join("blobs").join("sha256").join(hex))
    }

    /// The digest and bytes `reference` was last found at, when the cache
    /// still holds them intact, and the facts noted with them.
    #[must_use]
    pub fn get(&self, reference: &Reference) -> Option<(String, Vec<u8>, Noted)> {
        let text = std::fs::read_to_string(self.dir.join("refs").join(reference.file())).ok()?;
        let mut lines = text.lines();
        let digest = lines.next()?.trim().to_owned();
        let mut next = || lines.next().unwrap_or_default().to_owned();
        let noted = Noted {
            revision: next(),
            origin: next(),
        };
        let path = self.blob_path(&digest)?;
        let bytes = std::fs::read(&path).ok()?;
        super::oci::check(&digest, &bytes).ok()?;
        // Used now: the bound removes the least recently used first.
        let _ = std::fs::File::options()
            .append(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Some((digest, bytes, noted))
    }

    /// Keeps `bytes` (already checked against `digest`) for `reference`,
    /// with `noted` (one line each, so newlines are dropped).
    pub fn put(&self, reference: &Reference, digest: &str, bytes: &[u8], noted: &Noted) {
        // Read-only commands create no state dir.
        if !self.dir.parent().is_some_and(std::path::Path::exists) {
            return;
        }
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        let text = format!(
            "{digest}\n{}\n{}\n",
            one_line(&noted.revision),
            one_line(&noted.origin)
        );
        if let Err(e) = self.write(reference, digest, bytes, &text) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the artifact cache");
        }
        self.trim();
    }

    fn write(
        &self,
        reference: &Reference,
        digest: &str,
        bytes: &[u8],
        text: &str,
    ) -> std::io::Result<()> {
        let Some(blob) = self.blob_path(digest) else {
            return Ok(());
        };
        let refs = self.dir.join("refs");
        for d in [blob.parent().unwrap_or(&self.dir), refs.as_path()] {
            std::fs::create_dir_all(d)?;
        }
        let put = |path: &std::path::Path, bytes: &[u8]| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, path)
        };
        put(&blob, bytes)?;
        put(&refs.join(reference.file()), text.as_bytes())
    }

    /// Removes the least recently used blobs past `max_bytes`, then the
    /// references whose blob is gone.
    fn trim(&self) {
        self.trim_blobs();
        let Ok(refs) = std::fs::read_dir(self.dir.join("refs")) else {
            return;
        };
        for e in refs.filter_map(Result::ok) {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let blob = text.lines().next().and_then(|d| self.blob_path(d.trim()));
            if blob.is_none_or(|b| !b.exists()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn trim_blobs(&self) {
        let Ok(dir) = std::fs::read_dir(self.dir.join("blobs").join("sha256")) else {
            return;
        };
        let mut blobs: Vec<_> = dir
            .filter_map(Result::ok)
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = blobs.iter().map(|b| b.1).sum();
        blobs.sort();
        for (_, len, path) in blobs {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_found_by_its_reference_and_a_corrupted_one_is_not() {
        let dir = std::env::temp_dir().join(format!("converge-cache-{}", std::process::id()));
        let cache = Cache::new(dir.clone(), DEFAULT_MAX_BYTES);
        let r = Reference::oci("h", "r", "1.0.0");
        let digest = format!("sha256:{}", crate::hex::encode(&Sha256::digest(b"layer")));
        assert!(cache.get(&r).is_none());
        let noted = Noted {
            revision: "main@sha1:abc".into(),
            origin: "https://x\ny".into(),
        };
        cache.put(&r, &digest, b"layer", &noted);
        let (d, bytes, back) = cache.get(&r).expect("cached");
        assert_eq!((d, bytes), (digest.clone(), b"layer".to_vec()));
        assert_eq!(back.revision, "main@sha1:abc");
        assert_eq!(back.origin, "https://x y", "one line each");
        // A reference written before facts were noted: the digest alone.
        std::fs::write(dir.join("refs").join(r.file()), format!("{digest}\n")).unwrap();
        assert_eq!(cache.get(&r).expect("cached").2, Noted::default());
        std::fs::write(cache.blob_path(&digest).unwrap(), b"other").unwrap();
        assert!(cache.get(&r).is_none(), "checked again when read");
        let small = Cache::new(dir.clone(), 3);
        small.put(&r, &digest, b"layer", &Noted::default());
        assert!(small.get(&r).is_none(), "over the bound");
        assert!(
            !dir.join("refs").join(r.file()).exists(),
            "a reference to a removed blob goes with it"
        );
        // The least recently used goes first, not the first written.
        let cache = Cache::new(dir.clone(), 10);
        let blob = |b: &[u8]| format!("sha256:{}", crate::hex::encode(&Sha256::digest(b)));
        let (a, b) = (Reference::oci("h", "r", "a"), Reference::oci("h", "r", "b"));
        cache.put(&a, &blob(b"aaaa"), b"aaaa", &Noted::default());
        let old = std::time::SystemTime::now() - std::time::Duration::from_mins(1);
        std::fs::File::options()
            .append(true)
            .open(cache.blob_path(&blob(b"aaaa")).unwrap())
            .unwrap()
            .set_modified(old)
            .unwrap();
        cache.put(&b, &blob(b"bbbb"), b"bbbb", &Noted::default());
        std::fs::File::options()
            .append(true)
            .open(cache.blob_path(&blob(b"bbbb")).unwrap())
            .unwrap()
            .set_modified(old + std::time::Duration::from_secs(30))
            .unwrap();
        assert!(cache.get(&a).is_some(), "read: used now");
        cache.put(&r, &digest, b"layer", &Noted::default());
        assert!(cache.get(&a).is_some(), "recently used, kept");
        assert!(cache.get(&b).is_none(), "least recently used, removed");
        let _ = std::fs::remove_dir_all(dir);
    }
}
