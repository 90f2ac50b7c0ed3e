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

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use rayon::prelude::*;

use super::{EnvironmentChange, EnvironmentRecord, Inventory, LiveEnvironment, Target};
use crate::claim::EnvironmentName;
use crate::object::{ObjectRef, kind, shared};
use crate::render::Digest;

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
/// Format 2 lists each object's `apiVersion` and namespace; format 1 did
/// not, and is upgraded when read (from the object files themselves).
const FORMAT_VERSION: u32 = 2;

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

/// The inventory file as read: `format`, `environment`, `record`, and
/// `objects` by file name.
#[derive(Deserialize)]
struct InventoryFile {
    format: u32,
    environment: String,
    record: EnvironmentRecord,
    objects: BTreeMap<String, FileEntry>,
}

/// One object of the inventory file. Format 1 had no `apiVersion` and no
/// `namespace`.
#[derive(Deserialize)]
struct FileEntry {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: String,
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    digest: Digest,
}

/// The inventory file as written, borrowing the live environment.
#[derive(Serialize)]
struct InventoryFileRef<'a> {
    format: u32,
    environment: &'a str,
    record: &'a EnvironmentRecord,
    objects: ObjectsRef<'a>,
}

/// `objects` as written: file name -> identity and digest.
struct ObjectsRef<'a>(&'a BTreeMap<ObjectRef, Digest>);

impl Serialize for ObjectsRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            #[serde(flatten)]
            id: &'a ObjectRef,
            digest: Digest,
        }
        s.collect_map(self.0.iter().map(|(id, digest)| {
            (
                file_name(id),
                Entry {
                    id,
                    digest: *digest,
                },
            )
        }))
    }
}

/// The identity of a format-1 entry: `apiVersion` and `metadata.namespace`
/// from the object file converge wrote; when the file is gone (an
/// interrupted write), the built-in renderer's version of the kind, in the
/// environment's namespace.
fn legacy_ref(dir: &Path, file: &str, entry: &FileEntry, namespace: &Arc<str>) -> ObjectRef {
    let doc: Option<serde_json::Value> =
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| {
                serde_saphyr::from_str_with_options(&text, crate::yaml_limits::options()).ok()
            });
    let field = |ptr: &str| {
        doc.as_ref()
            .and_then(|d| d.pointer(ptr))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let builtin = match entry.kind.as_str() {
        "Deployment" => "apps/v1",
        "HorizontalPodAutoscaler" => "autoscaling/v2",
        "NetworkPolicy" | "Ingress" => "networking.k8s.io/v1",
        "PodDisruptionBudget" => "policy/v1",
        _ => "v1",
    };
    let object_namespace = match (doc.is_some(), field("/metadata/namespace")) {
        (true, ns) => ns.map(|ns| Arc::from(ns.as_str())),
        (false, _) => (entry.kind != "Namespace").then(|| namespace.clone()),
    };
    ObjectRef {
        api_version: shared(field("/apiVersion").as_deref().unwrap_or(builtin)),
        kind: kind(&entry.kind),
        namespace: object_namespace,
        name: entry.name.as_str().into(),
    }
    .interned(namespace)
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

    /// Reads one environment's inventory; `None` when it has none (not
    /// ours). An inventory in format 1 is upgraded on disk as it is read,
    /// and one under its legacy name is renamed first.
    fn read_inventory(dir: &Path, name: &str) -> Result<Option<LiveEnvironment>, Error> {
        let path = dir.join(INVENTORY_FILE);
        let corrupt = |message: String| Error::CorruptInventory {
            path: path.display().to_string(),
            message,
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => {
                Self::remove_legacy_inventory(dir)?;
                b
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !Self::migrate_inventory(dir)? {
                    return Ok(None);
                }
                std::fs::read(&path).map_err(Self::io(&path, "read inventory"))?
            }
            Err(e) => return Err(Self::io(&path, "read inventory")(e)),
        };
        let file: InventoryFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if !(1..=FORMAT_VERSION).contains(&file.format) {
            return Err(corrupt(format!("unknown format {}", file.format)));
        }
        if file.environment != name {
            return Err(corrupt(format!(
                "it names environment {:?}, not {name:?}",
                file.environment
            )));
        }
        let namespace: Arc<str> = Arc::from(name);
        let mut objects = Vec::with_capacity(file.objects.len());
        for (file_name_listed, entry) in &file.objects {
            if !is_plain_file_name(file_name_listed) {
                return Err(corrupt(format!(
                    "it lists {file_name_listed:?}, which is not a file name"
                )));
            }
            let id = match &entry.api_version {
                Some(api_version) => ObjectRef {
                    api_version: shared(api_version),
                    kind: kind(&entry.kind),
                    namespace: entry.namespace.as_deref().map(Arc::from),
                    name: entry.name.as_str().into(),
                }
                .interned(&namespace),
                None => legacy_ref(dir, file_name_listed, entry, &namespace),
            };
            if file_name(&id) != *file_name_listed {
                return Err(corrupt(format!(
                    "it lists {file_name_listed:?} for {} {:?}",
                    entry.kind, entry.name
                )));
            }
            objects.push((id, entry.digest));
        }
        let live = LiveEnvironment {
            record: file.record,
            objects: objects.into_iter().collect(),
        };
        if file.format < FORMAT_VERSION {
            write_atomic(&path, &inventory_bytes(name, &live))?;
        }
        Ok(Some(live))
    }

    /// Renames an inventory under its legacy name to [`INVENTORY_FILE`]
    /// (one atomic rename: a crash leaves one name or the other, and both
    /// are read); false when there is none. Another process that renamed it
    /// first is as good.
    fn migrate_inventory(dir: &Path) -> Result<bool, Error> {
        let (legacy, path) = (dir.join(LEGACY_INVENTORY_FILE), dir.join(INVENTORY_FILE));
        match std::fs::rename(&legacy, &path) {
            Ok(()) => {
                tracing::info!(
                    from = %legacy.display(),
                    to = %path.display(),
                    "manifests inventory renamed, so kubectl does not read it"
                );
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(path.exists()),
            Err(e) => Err(Self::io(&legacy, "rename inventory")(e)),
        }
    }

    /// Removes an inventory under its legacy name beside the current one
    /// (left by an older converge after this one wrote the current one):
    /// the current one is the truth, and kubectl would read the legacy one.
    fn remove_legacy_inventory(dir: &Path) -> Result<(), Error> {
        let legacy = dir.join(LEGACY_INVENTORY_FILE);
        match std::fs::remove_file(&legacy) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(&legacy, "delete legacy inventory")(e)),
        }
    }

    /// Reads every environment's inventory from disk (in parallel).
    fn read_all(&self) -> Result<Inventory, Error> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Inventory::default()),
            Err(e) => return Err(Self::io(&self.root, "list")(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Self::io(&self.root, "list"))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if EnvironmentName::is_valid(&name) && entry.file_type().is_ok_and(|t| t.is_dir()) {
                names.push(name);
            }
        }
        names.sort_unstable();
        let read: Vec<Option<(String, Arc<LiveEnvironment>)>> = names
            .into_par_iter()
            .map(|name| {
                let live = Self::read_inventory(&self.root.join(&name), &name)?;
                Ok(live.map(|l| (name, Arc::new(l))))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Inventory {
            environments: read.into_iter().flatten().collect(),
        })
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

/// What an environment's apply left, for the in-memory inventory.
enum Outcome {
    /// Nothing of ours was there and nothing was written.
    Unchanged,
    Live(Box<LiveEnvironment>),
    Removed,
}

/// One environment's apply, phase by phase.
struct Work<'c, 'a> {
    change: &'c EnvironmentChange<'a>,
    dir: PathBuf,
    /// The environment as the in-memory inventory has it; `None` when it has
    /// none or there is no in-memory inventory (then the disk tells).
    known: Option<Arc<LiveEnvironment>>,
    live: Option<LiveEnvironment>,
    /// A new environment, written whole into this directory and renamed into
    /// place (no per-file temp files).
    aside: Option<PathBuf>,
    widened: bool,
    /// Changed the directory since the last barrier.
    dirty: bool,
    /// Remove the inventory and the directory at the end (environment gone).
    remove: bool,
    outcome: Outcome,
    result: Result<(), Error>,
}

impl<'c, 'a> Work<'c, 'a> {
    fn new(
        root: &Path,
        change: &'c EnvironmentChange<'a>,
        known: Option<Arc<LiveEnvironment>>,
    ) -> Self {
        Work {
            change,
            dir: root.join(change.name),
            known,
            live: None,
            aside: None,
            widened: false,
            dirty: false,
            remove: false,
            outcome: Outcome::Unchanged,
            result: Ok(()),
        }
    }

    fn run(&mut self, phase: fn(&mut Self) -> Result<(), Error>) {
        if self.result.is_ok() {
            self.result = phase(self);
        }
    }

    fn after(&mut self, synced: &Result<(), Error>, phase: fn(&mut Self) -> Result<(), Error>) {
        if let Err(e) = synced {
            if self.result.is_ok() {
                self.result = Err(Error::Io {
                    path: self.dir.display().to_string(),
                    op: "sync",
                    source: std::io::Error::other(e.to_string()),
                });
            }
            return;
        }
        self.run(phase);
    }

    fn stage(&mut self) -> Result<(), Error> {
        let change = self.change;
        let known = match self.known.take() {
            Some(live) => Some(Arc::unwrap_or_clone(live)),
            // Not in memory: a directory there is someone else's (or from
            // before a reload); read what it says.
            None => match self.dir.symlink_metadata() {
                Ok(_) => Manifests::read_inventory(&self.dir, change.name)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => match change.record {
                    Some(record) => return self.stage_aside(record),
                    None => return Ok(()), // nothing of ours is there
                },
                Err(e) => return Err(Manifests::io(&self.dir, "stat")(e)),
            },
        };
        let mut live = match known {
            Some(live) => live,
            None => match change.record {
                Some(record) => LiveEnvironment {
                    record: record.clone(),
                    objects: BTreeMap::new(),
                },
                None => return Ok(()), // nothing of ours is there
            },
        };
        if !change.upserts.is_empty() {
            std::fs::create_dir_all(&self.dir)
                .map_err(Manifests::io(&self.dir, "create directory"))?;
        }
        remove_stale_temp_files(&self.dir);
        // Never overwrite a file converge did not write.
        for rendered in &change.upserts {
            let id = &rendered.object.id;
            if live.objects.contains_key(id) {
                continue;
            }
            let path = self.dir.join(file_name(id));
            if path.symlink_metadata().is_ok() {
                return Err(Error::ForeignFile {
                    environment: change.name.to_owned(),
                    object: id.to_string(),
                    path: path.display().to_string(),
                });
            }
            live.objects.insert(id.clone(), Digest::PENDING);
            self.widened = true;
        }
        if self.widened {
            stage(
                &self.dir.join(INVENTORY_FILE),
                &inventory_bytes(change.name, &live),
                Access::Private,
            )?;
        }
        self.dirty |= self.widened || !change.upserts.is_empty();
        for rendered in &change.upserts {
            stage(
                &self.dir.join(file_name(&rendered.object.id)),
                rendered.yaml.as_bytes(),
                Access::of(rendered),
            )?;
        }
        self.live = Some(live);
        Ok(())
    }

    /// A new environment: every file, the final inventory included, goes
    /// straight into a directory aside, which appears in one rename (`widen`).
    fn stage_aside(&mut self, record: &EnvironmentRecord) -> Result<(), Error> {
        let change = self.change;
        let root = self
            .dir
            .parent()
            .expect("an environment directory has a parent");
        let aside = root.join(format!("{TMP_DIR_PREFIX}{}", change.name));
        match std::fs::remove_dir_all(&aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Manifests::io(&aside, "delete")(e)),
        }
        std::fs::create_dir_all(root).map_err(Manifests::io(root, "create directory"))?;
        std::fs::create_dir(&aside).map_err(Manifests::io(&aside, "create directory"))?;
        self.aside = Some(aside.clone());
        self.dirty = true;
        let mut objects = Vec::with_capacity(change.upserts.len());
        for rendered in &change.upserts {
            let object = &rendered.object;
            let file = file_name(&object.id);
            let path = aside.join(&file);
            create(&path, Access::of(rendered))
                .and_then(|mut f| f.write_all(rendered.yaml.as_bytes()))
                .map_err(Manifests::io(&self.dir.join(&file), "write"))?;
            objects.push((object.id.clone(), object.digest));
        }
        let live = LiveEnvironment {
            record: record.clone(),
            objects: objects.into_iter().collect(),
        };
        let inventory = aside.join(INVENTORY_FILE);
        create(&inventory, Access::Private)
            .and_then(|mut f| f.write_all(&inventory_bytes(change.name, &live)))
            .map_err(Manifests::io(&self.dir.join(INVENTORY_FILE), "write"))?;
        self.live = Some(live);
        Ok(())
    }

    fn widen(&mut self) -> Result<(), Error> {
        if let Some(aside) = &self.aside {
            self.dirty = true;
            std::fs::rename(aside, &self.dir).map_err(Manifests::io(&self.dir, "rename"))?;
            self.aside = None;
            self.outcome = Outcome::Live(Box::new(self.live.take().expect("staged aside")));
            return Ok(());
        }
        if self.widened {
            self.dirty = true;
            commit(&self.dir.join(INVENTORY_FILE))?;
        }
        Ok(())
    }

    fn replace(&mut self) -> Result<(), Error> {
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        self.dirty = true;
        let change = self.change;
        for rendered in &change.upserts {
            let object = &rendered.object;
            commit(&self.dir.join(file_name(&object.id)))?;
            // Replaces the key too: the object may be written under a new version.
            live.objects.remove(&object.id);
            live.objects.insert(object.id.clone(), object.digest);
        }
        for id in &change.deletes {
            if change
                .upserts
                .iter()
                .any(|r| file_name(&r.object.id) == file_name(id))
            {
                continue; // the same file, written above under another version
            }
            if live.objects.remove(id).is_none() {
                continue; // only files converge wrote
            }
            let path = self.dir.join(file_name(id));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Manifests::io(&path, "delete")(e)),
            }
        }
        match change.record {
            Some(record) => live.record = record.clone(),
            None if live.objects.is_empty() => {
                self.remove = true;
                return Ok(());
            }
            None => {}
        }
        stage(
            &self.dir.join(INVENTORY_FILE),
            &inventory_bytes(change.name, live),
            Access::Private,
        )
    }

    fn narrow(&mut self) -> Result<(), Error> {
        let Some(live) = self.live.take() else {
            return Ok(());
        };
        self.dirty = true;
        let inventory = self.dir.join(INVENTORY_FILE);
        if self.remove {
            std::fs::remove_file(&inventory).map_err(Manifests::io(&inventory, "delete"))?;
            // Only removes the directory when nothing foreign is left in it.
            let _ = std::fs::remove_dir(&self.dir);
            self.outcome = Outcome::Removed;
            return Ok(());
        }
        commit(&inventory)?;
        self.outcome = Outcome::Live(Box::new(live));
        Ok(())
    }

    /// Removes a new environment's directory aside if it never appeared.
    fn clean_up(&mut self) {
        if let Some(aside) = self.aside.take() {
            let _ = std::fs::remove_dir_all(aside);
        }
    }
}

fn inventory_bytes(name: &str, live: &LiveEnvironment) -> Vec<u8> {
    let file = InventoryFileRef {
        format: FORMAT_VERSION,
        environment: name,
        record: &live.record,
        objects: ObjectsRef(&live.objects),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).expect("inventory serializes");
    bytes.push(b'\n');
    bytes
}

fn temp_path(path: &Path) -> PathBuf {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{file_name}{TMP_SUFFIX}"))
}

/// Who may read a file the target writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// An object file: the product, for kubectl and other tools (0666 less
    /// the umask, like any file the process creates).
    Shared,
    /// converge's own bookkeeping (the inventory) and `Secret` objects
    /// (they hold decrypted values): 0600.
    Private,
}

impl Access {
    fn of(rendered: &crate::render::Rendered) -> Access {
        if rendered.is_secret() {
            Access::Private
        } else {
            Access::Shared
        }
    }
}

/// Creates (or truncates) `path` for writing with `access`'s mode; a
/// private file left by a crash gets its mode back too.
fn create(path: &Path, access: Access) -> std::io::Result<std::fs::File> {
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
fn stage(path: &Path, bytes: &[u8], access: Access) -> Result<(), Error> {
    let tmp = temp_path(path);
    create(&tmp, access)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Manifests::io(path, "write")(e)
        })
}

/// Renames a staged temp file over `path` (atomic).
fn commit(path: &Path) -> Result<(), Error> {
    std::fs::rename(temp_path(path), path).map_err(Manifests::io(path, "rename"))
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\']) && name != ".."
}

fn remove_stale_temp_files(dir: &Path) {
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
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::Reason;
    use crate::render::{Object, Rendered, digest};

    /// `kind`/`name` of environment `e` (the Namespace is cluster-scoped).
    fn id(kind: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: shared(if kind == "Deployment" {
                "apps/v1"
            } else {
                "v1"
            }),
            kind: super::kind(kind),
            namespace: (kind != "Namespace").then(|| Arc::from("e")),
            name: name.into(),
        }
    }

    fn object(kind: &str, name: &str, body: &str) -> Rendered {
        let object = Object {
            id: id(kind, name),
            digest: digest(body.as_bytes()),
        };
        Rendered {
            object,
            yaml: crate::render::Yaml::new(body.into(), kind == "Secret"),
        }
    }

    fn record() -> EnvironmentRecord {
        EnvironmentRecord {
            origin: None,
            env_type: "dev".into(),
            pool: "p".into(),
            owner: "o".into(),
            versions: BTreeMap::new(),
            expires_at: None,
            secrets: BTreeMap::new(),
            manifests: BTreeMap::new(),
        }
    }

    #[test]
    fn apply_writes_lists_and_prunes_only_its_own_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = Manifests::new(dir.path().to_owned());
        let (ns, cm) = (
            object("Namespace", "e", "a: 1\n"),
            object("ConfigMap", "c", "b: 2\n"),
        );
        let rec = record();
        target
            .apply(&EnvironmentChange {
                name: "e",
                record: Some(&rec),
                upserts: vec![&ns, &cm],
                deletes: vec![],
            })
            .expect("applies");
        std::fs::write(dir.path().join("e/notes.txt"), "mine").expect("write");
        let inv = target.inventory().expect("inventory");
        assert_eq!(inv.environments["e"].objects.len(), 2);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("e/namespace-e.yaml")).expect("read"),
            "a: 1\n"
        );

        target
            .apply(&EnvironmentChange {
                name: "e",
                record: None,
                upserts: vec![],
                deletes: vec![
                    id("ConfigMap", "c"),
                    id("Namespace", "e"),
                    id("ConfigMap", "notes"),
                ],
            })
            .expect("removes");
        assert!(
            target
                .inventory()
                .expect("inventory")
                .environments
                .is_empty()
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("e/notes.txt")).expect("kept"),
            "mine"
        );
        assert!(!dir.path().join("e/namespace-e.yaml").exists());
    }

    #[test]
    fn a_foreign_file_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("e")).expect("mkdir");
        std::fs::write(dir.path().join("e/namespace-e.yaml"), "hand written").expect("write");
        let target = Manifests::new(dir.path().to_owned());
        let ns = object("Namespace", "e", "a: 1\n");
        let rec = record();
        let err = target
            .apply(&EnvironmentChange {
                name: "e",
                record: Some(&rec),
                upserts: vec![&ns],
                deletes: vec![],
            })
            .expect_err("refused");
        assert_eq!(err.reason(), Reason::ForeignObject);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("e/namespace-e.yaml")).expect("read"),
            "hand written"
        );
    }

    #[test]
    fn a_corrupt_inventory_is_an_error_not_an_empty_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("e")).expect("mkdir");
        std::fs::write(dir.path().join("e").join(INVENTORY_FILE), "{not json").expect("write");
        let err = Manifests::new(dir.path().to_owned())
            .inventory()
            .expect_err("corrupt");
        assert_eq!(err.reason(), Reason::InventoryCorrupt);
    }
    fn change<'a>(
        name: &'a str,
        record: Option<&'a EnvironmentRecord>,
        upserts: Vec<&'a Rendered>,
        deletes: &[&str],
    ) -> EnvironmentChange<'a> {
        let by_file = |file: &str| {
            let (kind, name) = match file.trim_end_matches(".yaml").split_once('-') {
                Some(("namespace", n)) => ("Namespace", n),
                Some(("configmap", n)) => ("ConfigMap", n),
                Some(("service", n)) => ("Service", n),
                _ => panic!("no kind for {file}"),
            };
            id(kind, name)
        };
        EnvironmentChange {
            name,
            record,
            upserts,
            deletes: deletes.iter().map(|d| by_file(d)).collect(),
        }
    }

    /// What a fresh process would read from `root`.
    fn on_disk(root: &Path) -> Arc<Inventory> {
        Manifests::new(root.to_owned())
            .inventory()
            .expect("inventory")
    }

    fn entries(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_inventory_in_memory_follows_every_apply_and_matches_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = Manifests::new(dir.path().to_owned());
        assert!(target.inventory().expect("empty").environments.is_empty());
        let rec = record();
        let (ns, cm, cm2, svc) = (
            object("Namespace", "e", "a: 1\n"),
            object("ConfigMap", "c", "b: 2\n"),
            object("ConfigMap", "c", "b: 3\n"),
            object("Service", "s", "c: 4\n"),
        );
        let before = target.inventory().expect("inventory");
        let results = target.apply_all(&[
            change("e", Some(&rec), vec![&ns, &cm], &[]),
            change("f", Some(&rec), vec![&ns], &[]),
        ]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert!(
            before.environments.is_empty(),
            "a pass's inventory does not change under it"
        );
        assert_eq!(target.inventory().expect("memory"), on_disk(dir.path()));
        assert_eq!(entries(dir.path()), ["e", "f"], "no directory left aside");
        assert_eq!(
            entries(&dir.path().join("e")),
            [INVENTORY_FILE, "configmap-c.yaml", "namespace-e.yaml"]
        );

        target
            .apply(&change(
                "e",
                Some(&rec),
                vec![&cm2, &svc],
                &["namespace-e.yaml"],
            ))
            .expect("updates");
        let memory = target.inventory().expect("memory");
        assert_eq!(memory, on_disk(dir.path()));
        assert_eq!(
            memory.environments["e"].objects[&id("ConfigMap", "c")],
            cm2.object.digest
        );
        assert_eq!(
            entries(&dir.path().join("e")),
            [INVENTORY_FILE, "configmap-c.yaml", "service-s.yaml"]
        );

        target
            .apply(&change("f", None, vec![], &["namespace-e.yaml"]))
            .expect("removes");
        assert_eq!(target.inventory().expect("memory"), on_disk(dir.path()));
        assert_eq!(entries(dir.path()), ["e"]);
    }

    #[test]
    fn reload_reads_the_disk_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = Manifests::new(dir.path().to_owned());
        let rec = record();
        let ns = object("Namespace", "e", "a: 1\n");
        target
            .apply(&change("e", Some(&rec), vec![&ns], &[]))
            .expect("applies");
        assert_eq!(target.inventory().expect("read").environments.len(), 1);
        std::fs::remove_dir_all(dir.path().join("e")).expect("rm");
        assert_eq!(target.inventory().expect("memory").environments.len(), 1);
        target.reload();
        assert!(target.inventory().expect("disk").environments.is_empty());
    }

    #[test]
    fn a_failed_apply_leaves_the_inventory_in_memory_as_the_disk_has_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = Manifests::new(dir.path().to_owned());
        let rec = record();
        let (ns, cm) = (
            object("Namespace", "e", "a: 1\n"),
            object("ConfigMap", "c", "b: 2\n"),
        );
        target
            .apply(&change("e", Some(&rec), vec![&ns], &[]))
            .expect("applies");
        let _ = target.inventory().expect("loaded");
        // A foreign file in an existing environment; a file where a new
        // environment's directory would be staged.
        std::fs::write(dir.path().join("e/configmap-c.yaml"), "mine").expect("write");
        std::fs::write(dir.path().join(".converge-tmp-g"), "in the way").expect("write");
        let results = target.apply_all(&[
            change("e", Some(&rec), vec![&ns, &cm], &[]),
            change("f", Some(&rec), vec![&ns], &[]),
            change("g", Some(&rec), vec![&ns], &[]),
        ]);
        assert_eq!(
            results[0].as_ref().expect_err("foreign").reason(),
            Reason::ForeignObject
        );
        assert!(results[1].is_ok());
        assert_eq!(
            results[2].as_ref().expect_err("in the way").reason(),
            Reason::TargetIo
        );
        let memory = target.inventory().expect("memory");
        assert_eq!(memory, on_disk(dir.path()));
        assert_eq!(memory.environments.keys().collect::<Vec<_>>(), ["e", "f"]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("e/configmap-c.yaml")).expect("kept"),
            "mine"
        );
    }

    #[test]
    fn directories_left_aside_by_a_crash_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let aside = dir.path().join(".converge-tmp-e");
        std::fs::create_dir_all(&aside).expect("mkdir");
        std::fs::write(aside.join("namespace-e.yaml"), "half").expect("write");
        std::fs::create_dir_all(dir.path().join(".git")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join(".converge-tmp-Not_Ours")).expect("mkdir");
        let target = Manifests::new(dir.path().to_owned());
        assert!(target.inventory().expect("read").environments.is_empty());
        let rec = record();
        let ns = object("Namespace", "f", "a: 1\n");
        target
            .apply(&change("f", Some(&rec), vec![&ns], &[]))
            .expect("applies");
        assert_eq!(entries(dir.path()), [".converge-tmp-Not_Ours", ".git", "f"]);
    }

    #[test]
    fn the_inventory_file_lists_each_object_by_file_with_its_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = Manifests::new(dir.path().to_owned());
        let rec = record();
        let (ns, deploy) = (
            object("Namespace", "e", "a: 1\n"),
            object("Deployment", "d", "b: 1\n"),
        );
        target
            .apply(&change("e", Some(&rec), vec![&ns, &deploy], &[]))
            .expect("applies");
        let written: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("e").join(INVENTORY_FILE)).expect("read"),
        )
        .expect("json");
        let expected = serde_json::json!({
            "format": 2,
            "environment": "e",
            "record": {
                "origin": null, "type": "dev", "pool": "p", "owner": "o",
                "versions": {}, "expires_at": null
            },
            "objects": {
                "namespace-e.yaml": {
                    "apiVersion": "v1", "kind": "Namespace", "name": "e",
                    "digest": ns.object.digest.to_string()
                },
                "deployment-d.yaml": {
                    "apiVersion": "apps/v1", "kind": "Deployment", "namespace": "e", "name": "d",
                    "digest": deploy.object.digest.to_string()
                }
            }
        });
        assert_eq!(written, expected);
        // A pending digest (an interrupted write) reads back as pending.
        let mut pending = expected.clone();
        pending["objects"]["namespace-e.yaml"]["digest"] = "".into();
        std::fs::write(
            dir.path().join("e").join(INVENTORY_FILE),
            serde_json::to_vec(&pending).expect("json"),
        )
        .expect("write");
        let live = on_disk(dir.path());
        assert!(live.environments["e"].objects[&id("Namespace", "e")].is_pending());
    }

    #[test]
    fn a_format_1_inventory_is_read_from_its_object_files_and_upgraded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = dir.path().join("e");
        std::fs::create_dir_all(&env).expect("mkdir");
        std::fs::write(
            env.join("namespace-e.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: e\n",
        )
        .expect("write");
        std::fs::write(
            env.join("database-x.yaml"),
            "apiVersion: example.org/v1\nkind: Database\nmetadata:\n  name: x\n  namespace: e\n",
        )
        .expect("write");
        let v1 = serde_json::json!({
            "format": 1,
            "environment": "e",
            "record": {
                "origin": null, "type": "dev", "pool": "p", "owner": "o",
                "versions": {}, "expires_at": null
            },
            "objects": {
                "namespace-e.yaml": {"kind": "Namespace", "name": "e", "digest": ""},
                "database-x.yaml": {"kind": "Database", "name": "x", "digest": ""},
                "deployment-gone.yaml": {"kind": "Deployment", "name": "gone", "digest": ""}
            }
        });
        std::fs::write(
            env.join(INVENTORY_FILE),
            serde_json::to_vec(&v1).expect("json"),
        )
        .expect("write");
        let live = on_disk(dir.path());
        let ids: Vec<(String, Option<String>)> = live.environments["e"]
            .objects
            .keys()
            .map(|id| {
                (
                    id.api_version.to_string(),
                    id.namespace.as_deref().map(str::to_owned),
                )
            })
            .collect();
        assert_eq!(
            ids,
            [
                ("v1".to_owned(), None),
                ("apps/v1".to_owned(), Some("e".to_owned())),
                ("example.org/v1".to_owned(), Some("e".to_owned())),
            ],
            "from the files, and the built-in version of a kind whose file is gone"
        );
        let upgraded: serde_json::Value =
            serde_json::from_slice(&std::fs::read(env.join(INVENTORY_FILE)).expect("read"))
                .expect("json");
        assert_eq!(upgraded["format"], 2);
        assert_eq!(
            upgraded["objects"]["database-x.yaml"]["apiVersion"],
            "example.org/v1"
        );
        assert_eq!(
            on_disk(dir.path()),
            live,
            "the upgraded file reads the same"
        );
    }

    #[test]
    fn an_inventory_under_its_legacy_name_is_renamed_and_applies_go_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = record();
        let (ns, cm) = (
            object("Namespace", "e", "a: 1\n"),
            object("ConfigMap", "c", "b: 2\n"),
        );
        Manifests::new(dir.path().to_owned())
            .apply(&change("e", Some(&rec), vec![&ns], &[]))
            .expect("applies");
        // As an earlier converge left it, with an interrupted write's temp file.
        let env = dir.path().join("e");
        std::fs::rename(env.join(INVENTORY_FILE), env.join(LEGACY_INVENTORY_FILE)).expect("rename");
        std::fs::write(env.join("..converge-inventory.json.converge-tmp"), "{").expect("write");
        let target = Manifests::new(dir.path().to_owned());
        let live = target.inventory().expect("read");
        assert_eq!(live.environments["e"].objects.len(), 1);
        assert_eq!(
            entries(&env),
            [
                "..converge-inventory.json.converge-tmp",
                INVENTORY_FILE,
                "namespace-e.yaml"
            ]
        );
        target
            .apply(&change("e", Some(&rec), vec![&ns, &cm], &[]))
            .expect("applies");
        assert_eq!(
            entries(&env),
            [INVENTORY_FILE, "configmap-c.yaml", "namespace-e.yaml"],
            "the stale temp file is gone, no file has a manifest extension but objects"
        );
        assert_eq!(target.inventory().expect("memory"), on_disk(dir.path()));
        // Both names (an older converge ran after this one): the current one
        // is the truth and the legacy one goes.
        std::fs::write(env.join(LEGACY_INVENTORY_FILE), "{\"stale\": true}").expect("write");
        let live = on_disk(dir.path());
        assert_eq!(live.environments["e"].objects.len(), 2);
        assert!(!env.join(LEGACY_INVENTORY_FILE).exists());
    }

    #[test]
    fn an_inventory_entry_is_compact_and_well_known_strings_are_shared() {
        assert_eq!(
            std::mem::size_of::<(ObjectRef, Digest)>(),
            96,
            "four shared strings and a 32-byte digest"
        );
        let (a, b) = (super::kind("Deployment"), super::kind("Deployment"));
        assert!(Arc::ptr_eq(&a, &b));
    }
}
