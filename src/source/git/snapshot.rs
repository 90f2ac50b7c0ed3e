//! The tree at a commit as a [`Snapshot`]: read whole on the first read,
//! then diffed against the last tree so only changed blobs are read (each
//! under the size cap); `converge plan --repo` reads a local revision the
//! same way, with no fetch and no mirror.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gix::ObjectId;
use gix::bstr::ByteSlice;

use super::{Auth, Error, Options, Reader, source_error};
use crate::source::verify::Trust;
use crate::source::{Content, Provenance, Revision, Snapshot, SourceFile, SourceKind};

impl Reader {
    /// Reads the snapshot at `tip`, incrementally from `last` when possible.
    pub(super) fn snapshot_at(
        &self,
        repo: &gix::Repository,
        tip: ObjectId,
    ) -> Result<Snapshot, Error> {
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
    pub(super) fn diff_into(
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

    pub(super) fn read_blob(&self, repo: &gix::Repository, id: ObjectId) -> Content {
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
    pub(super) fn attribute(
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
) -> Result<Snapshot, crate::source::Error> {
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
