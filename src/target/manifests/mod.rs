//! The manifests target: YAML per object under `<root>/<environment>/`.
//!
//! The embedded default. Each environment directory holds one file per object,
//! named `<kind>-<name>.yaml` (this target's mapping of an object's identity;
//! a kind and a name are unique within an environment), and
//! `.converge-inventory`, the list of files converge wrote there with
//! each object's identity and digest (JSON, under a name without a manifest
//! extension, so that kubectl and kustomize do not read it; a directory
//! with the earlier `.converge-inventory.json` is migrated when read). Only files in that list are ever
//! replaced or deleted;
//! anything else in the directory is left alone, and a file converge did not
//! write is never overwritten.
//!
//! The inventory is converge's bookkeeping and is written 0600; object files
//! are the product (for kubectl and other tools) and get the usual mode.
//!
//! Writes are atomic and batched: [`Manifests::apply_all`] syncs the
//! filesystem four times per batch (`syncfs`), not once per file. In an
//! existing environment directory every file is written as a temp file and
//! renamed into place; the inventory is widened (new files listed with a
//! pending digest) *before* new files appear and narrowed *after* old ones are
//! gone, so a crash at any point leaves every file converge wrote listed, and
//! the next pass converges. A brand-new environment is written whole into
//! `<root>/.converge-tmp-<environment>/` (objects and final inventory, no
//! per-file rename), synced, and that directory is renamed into place: the
//! environment appears at once or not at all. Temp directories left by a
//! crash are removed by the next apply.
//!
//! The inventory is kept in memory after the first read (converge is its only
//! writer) and updated by every apply, so [`Target::inventory`] costs a pointer
//! copy; [`Target::reload`] forgets it, and an environment whose apply failed
//! is read again from disk, so memory never disagrees with the directory.

mod files;
mod inventory;
mod work;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rayon::prelude::*;

use super::{EnvironmentChange, Inventory, Target};
use crate::claim::EnvironmentName;
use crate::object::ObjectRef;

use work::{Outcome, Work};

/// The inventory file in each environment directory. Its name has no
/// manifest extension, so `kubectl apply -R -f`, kustomize and other tools
/// that read `*.json`/`*.yaml`/`*.yml` never take it for an object.
pub const INVENTORY_FILE: &str = ".converge-inventory";
/// The inventory's earlier name, which `kubectl` read as an object without
/// `apiVersion`: renamed to [`INVENTORY_FILE`] when read.
pub const LEGACY_INVENTORY_FILE: &str = ".converge-inventory.json";
const TMP_SUFFIX: &str = ".converge-tmp";
/// Prefix of the directory a new environment is written into before it appears.
const TMP_DIR_PREFIX: &str = ".converge-tmp-";

/// What can go wrong with the directory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("target {path}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("target inventory {path} is corrupt: {message}")]
    CorruptInventory { path: String, message: String },
    #[error("{path} exists and was not written by converge")]
    ForeignFile {
        environment: String,
        object: String,
        path: String,
    },
}

impl From<Error> for super::Error {
    fn from(e: Error) -> super::Error {
        match e {
            Error::Io { .. } => super::Error::Transient(Box::new(e)),
            Error::CorruptInventory { .. } => super::Error::CorruptInventory(Box::new(e)),
            Error::ForeignFile {
                environment,
                object,
                path,
            } => super::Error::Foreign {
                environment,
                object,
                detail: format!("{path} is not in its inventory"),
            },
        }
    }
}

/// The file an object is kept in: `<kind>-<name>.yaml`, lower-case kind.
#[must_use]
pub fn file_name(id: &ObjectRef) -> String {
    format!("{}-{}.yaml", id.kind.to_ascii_lowercase(), id.name)
}

/// A manifests directory.
#[derive(Debug)]
pub struct Manifests {
    root: PathBuf,
    /// The inventory as last read or written; `None` until the first read and
    /// after [`Target::reload`] or an apply whose outcome is unknown.
    cache: Mutex<Option<Arc<Inventory>>>,
    /// Whether temp directories left by an earlier process were removed.
    swept: AtomicBool,
}

impl Manifests {
    #[must_use]
    pub fn new(root: PathBuf) -> Manifests {
        Manifests {
            root,
            cache: Mutex::new(None),
            swept: AtomicBool::new(false),
        }
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.display().to_string();
        move |source| Error::Io { path, op, source }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<Arc<Inventory>>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes the temp directories of new environments whose apply an
    /// earlier process did not finish (once per process: this one's own are
    /// removed as they fail).
    fn sweep(&self) {
        if self.swept.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(env) = name.to_str().and_then(|n| n.strip_prefix(TMP_DIR_PREFIX)) else {
                continue;
            };
            if EnvironmentName::is_valid(env) && entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Brings the in-memory inventory up to date with what `work` did.
    fn remember(&self, work: &mut [Work<'_, '_>], synced: bool) {
        let mut cache = self.cached();
        let Some(inventory) = cache.as_mut() else {
            return; // not read yet: the next inventory() reads the disk
        };
        if !synced {
            *cache = None; // nothing is known to be durable: read it all again
            return;
        }
        let environments = &mut Arc::make_mut(inventory).environments;
        for w in work {
            let name = w.change.name;
            let outcome = match w.result {
                Ok(()) => Ok(std::mem::replace(&mut w.outcome, Outcome::Unchanged)),
                // The outcome is unknown: what the disk says is the truth.
                Err(_) => Self::read_inventory(&w.dir, name).map(|l| match l {
                    Some(l) => Outcome::Live(Box::new(l)),
                    None => Outcome::Removed,
                }),
            };
            match outcome {
                Ok(Outcome::Unchanged) => {}
                Ok(Outcome::Removed) => {
                    environments.remove(name);
                }
                Ok(Outcome::Live(mut live)) => {
                    live.compact();
                    environments.insert(name.to_owned(), Arc::new(*live));
                }
                Err(_) => {
                    *cache = None; // unreadable now: inventory() reports it
                    return;
                }
            }
        }
    }
}

impl Target for Manifests {
    fn inventory(&self) -> Result<Arc<Inventory>, super::Error> {
        let mut cache = self.cached();
        if let Some(inventory) = cache.as_ref() {
            return Ok(Arc::clone(inventory));
        }
        let inventory = Arc::new(self.read_all()?);
        *cache = Some(Arc::clone(&inventory));
        Ok(inventory)
    }

    fn reload(&self) {
        *self.cached() = None;
    }

    fn apply(&self, change: &EnvironmentChange<'_>) -> Result<(), super::Error> {
        self.apply_all(std::slice::from_ref(change))
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Applies many environments with four filesystem syncs in all, not one
    /// fsync per file: temp files are written, synced together (`syncfs`),
    /// then renamed. The inventory is widened and synced before any new file
    /// appears and narrowed after old files are gone, so a crash anywhere
    /// leaves every file converge wrote listed. A new environment's directory
    /// is written aside and renamed into place after the first sync.
    fn apply_all(&self, changes: &[EnvironmentChange<'_>]) -> Vec<Result<(), super::Error>> {
        self.sweep();
        let known = self.cached().clone();
        let mut work: Vec<Work<'_, '_>> = changes
            .iter()
            .map(|c| {
                let known = known
                    .as_ref()
                    .and_then(|inv| inv.environments.get(c.name).cloned());
                Work::new(&self.root, c, known)
            })
            .collect();
        drop(known);
        // 1. Widen inventories and stage every object, unsynced.
        work.par_iter_mut().for_each(|w| w.run(Work::stage));
        let synced = self.barrier(&mut work);
        // 2. The widened inventories take effect; new environments appear.
        work.par_iter_mut()
            .for_each(|w| w.after(&synced, Work::widen));
        let synced = self.barrier(&mut work);
        // 3. New files take effect, old ones go, final inventories are staged.
        work.par_iter_mut()
            .for_each(|w| w.after(&synced, Work::replace));
        let synced = self.barrier(&mut work);
        // 4. The final inventories take effect.
        work.par_iter_mut()
            .for_each(|w| w.after(&synced, Work::narrow));
        let synced = self.barrier(&mut work);
        work.par_iter_mut().for_each(Work::clean_up);
        self.remember(&mut work, synced.is_ok());
        work.into_iter()
            .map(|w| {
                w.result?;
                synced.as_ref().copied().map_err(|e| {
                    Error::Io {
                        path: self.root.display().to_string(),
                        op: "sync",
                        source: std::io::Error::other(e.to_string()),
                    }
                    .into()
                })
            })
            .collect()
    }
}

impl Manifests {
    /// Makes what the last phase did durable, if it did anything: a batch of
    /// new environments costs two syncs (objects, then their directories'
    /// renames), a batch with nothing to do none.
    fn barrier(&self, work: &mut [Work<'_, '_>]) -> Result<(), Error> {
        let mut dirty = false;
        for w in work.iter_mut() {
            dirty |= std::mem::take(&mut w.dirty);
        }
        if dirty { self.sync() } else { Ok(()) }
    }

    /// Flushes the whole filesystem of the root (one call, however many files).
    fn sync(&self) -> Result<(), Error> {
        let root = std::fs::File::open(&self.root).map_err(Self::io(&self.root, "open"))?;
        rustix::fs::syncfs(&root).map_err(|e| Self::io(&self.root, "sync")(e.into()))
    }
}

#[cfg(test)]
mod tests;
