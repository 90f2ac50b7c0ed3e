//! A service's manifests from a git repository at a tag: the one ref
//! fetched with gix into a bare mirror in the state dir (no worktree), the
//! directory `path` of the tagged commit's tree read from the object
//! database. The mirror is the cache: a tag it already holds is not
//! fetched again, across restarts too. Only regular files are read; a
//! symbolic link or a submodule under `path` refuses the artifact, and so
//! do more than [`super::untar::Limits`] allows.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::render::service::File;

/// What a git read gives: `Err` unreachable (in words), `Ok(Err)` refused.
pub type Read = Result<Result<(String, Vec<File>), String>, String>;

/// The mirror directory of `url` under `dir`.
#[must_use]
pub fn mirror(dir: &Path, url: &str) -> PathBuf {
    dir.join("git")
        .join(crate::hex::encode(&Sha256::digest(url.as_bytes())))
}

/// The files under `path` at `reference` (`refs/tags/1.2.3`) of `url`,
/// and their digest (`sha256:` of the tree's paths and contents). `fetched`
/// is set when the mirror did not hold the ref and it was fetched.
pub fn read(
    fetched: &std::sync::atomic::AtomicU64,
    dir: &Path,
    url: &str,
    reference: &str,
    path: &str,
    limits: super::untar::Limits,
    timeout: Duration,
) -> Read {
    let shown = crate::source::sanitize_url(url);
    let at = mirror(dir, url);
    let repo = if at.join("HEAD").exists() {
        gix::open_opts(&at, gix::open::Options::isolated()).map_err(|e| e.to_string())?
    } else {
        std::fs::create_dir_all(&at).map_err(|e| e.to_string())?;
        gix::init_bare(&at).map_err(|e| e.to_string())?
    };
    let repo = if repo.find_reference(reference).is_err() {
        fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        fetch_within(&at, url, reference, timeout).map_err(|e| format!("git {shown}: {e}"))?;
        tracing::info!(url = %shown, reference, "service manifests fetched");
        // Opened again: the fetch ran on its own handle.
        gix::open_opts(&at, gix::open::Options::isolated()).map_err(|e| e.to_string())?
    } else {
        repo
    };
    let commit = repo
        .find_reference(reference)
        .map_err(|e| format!("git {shown}: {reference}: {e}"))?
        .peel_to_commit()
        .map_err(|e| format!("git {shown}: {reference}: {e}"))?;
    let tree = commit.tree().map_err(|e| e.to_string())?;
    let mut recorder = gix::traverse::tree::Recorder::default();
    tree.traverse()
        .breadthfirst(&mut recorder)
        .map_err(|e| e.to_string())?;
    let prefix = path.trim_matches('/');
    let mut files = Vec::new();
    let mut bytes: u64 = 0;
    let mut digest = Sha256::new();
    for entry in recorder.records {
        let full = entry.filepath.to_string();
        let rel = if prefix.is_empty() {
            full.as_str()
        } else if let Some(r) = full.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) {
            r
        } else {
            continue;
        };
        if entry.mode.is_tree() {
            continue;
        }
        if !entry.mode.is_blob() {
            return Ok(Err(format!(
                "{full}: only regular files are read (a link or a submodule)"
            )));
        }
        if files.len() >= limits.files {
            return Ok(Err(format!(
                "more than {} files under {prefix:?}",
                limits.files
            )));
        }
        let blob = repo.find_object(entry.oid).map_err(|e| e.to_string())?;
        bytes += blob.data.len() as u64;
        if bytes > limits.bytes {
            return Ok(Err(format!(
                "more than {} bytes under {prefix:?}",
                limits.bytes
            )));
        }
        let Ok(text) = String::from_utf8(blob.data.clone()) else {
            return Ok(Err(format!("{full} is not UTF-8 text")));
        };
        digest.update(rel.as_bytes());
        digest.update([0]);
        digest.update(text.as_bytes());
        digest.update([0]);
        files.push(File {
            path: rel.to_owned(),
            text,
        });
    }
    let digest = format!("sha256:{}", crate::hex::encode(&digest.finalize()));
    Ok(Ok((digest, files)))
}

/// [`fetch`] on a thread of its own, abandoned after `timeout`: a server
/// that accepts and never answers (or trickles) must not hold the pass. An
/// abandoned fetch that finishes later only adds the ref to the mirror; the
/// environment meanwhile is `ManifestsUnavailable`, kept as it is.
fn fetch_within(at: &Path, url: &str, reference: &str, timeout: Duration) -> Result<(), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (at, url, reference) = (at.to_owned(), url.to_owned(), reference.to_owned());
    std::thread::Builder::new()
        .name("git-manifests".to_owned())
        .spawn(move || {
            let result = gix::open_opts(&at, gix::open::Options::isolated())
                .map_err(|e| e.to_string())
                .and_then(|repo| fetch(&repo, &url, &reference));
            let _ = tx.send(result);
        })
        .map_err(|e| format!("cannot start the fetch thread: {e}"))?;
    rx.recv_timeout(timeout)
        .unwrap_or_else(|_| Err(format!("no answer within {}s", timeout.as_secs())))
}

/// Fetches only `reference` into the mirror.
fn fetch(repo: &gix::Repository, url: &str, reference: &str) -> Result<(), String> {
    let spec = format!("+{reference}:{reference}");
    let remote = repo
        .remote_at(url)
        .map_err(|e| e.to_string())?
        .with_refspecs(Some(spec.as_str()), gix::remote::Direction::Fetch)
        .map_err(|e| e.to_string())?;
    let connection = remote
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| crate::diagnostic::chain(&e))?;
    let prepare = connection
        .prepare_fetch(
            gix::progress::Discard,
            gix::remote::ref_map::Options::default(),
        )
        .map_err(|e| crate::diagnostic::chain(&e))?;
    let interrupt = AtomicBool::new(false);
    prepare
        .receive(gix::progress::Discard, &interrupt)
        .map_err(|e| crate::diagnostic::chain(&e))?;
    Ok(())
}
