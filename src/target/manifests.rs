//! The manifests target: YAML per object under `<root>/<environment>/`.
//!
//! The embedded default. Each environment directory holds one file per object
//! and `.converge-inventory.json`, the list of files converge wrote there with
//! their digests. Only files in that list are ever replaced or deleted;
//! anything else in the directory is left alone, and a file converge did not
//! write is never overwritten. Writes are atomic (temp file, fsync, rename,
//! directory fsync). The inventory is widened *before* new files appear and
//! narrowed *after* old ones are gone, so a crash at any point leaves every
//! file converge wrote listed, and the next pass converges.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use rayon::prelude::*;

use super::{EnvironmentChange, Error, Inventory, LiveEnvironment, LiveObject, Target};
use crate::claim::EnvironmentName;
use crate::render::Digest;

/// The inventory file in each environment directory.
pub const INVENTORY_FILE: &str = ".converge-inventory.json";
const TMP_SUFFIX: &str = ".converge-tmp";
const FORMAT_VERSION: u32 = 1;

/// A manifests directory.
#[derive(Debug, Clone)]
pub struct Manifests {
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct InventoryFile {
    format: u32,
    environment: String,
    #[serde(flatten)]
    live: LiveEnvironment,
}

impl Manifests {
    #[must_use]
    pub fn new(root: PathBuf) -> Manifests {
        Manifests { root }
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.display().to_string();
        move |source| Error::Io { path, op, source }
    }

    fn read_inventory(path: &Path, name: &str) -> Result<LiveEnvironment, Error> {
        let corrupt = |message: String| Error::CorruptInventory {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(Self::io(path, "read inventory"))?;
        let file: InventoryFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.format != FORMAT_VERSION {
            return Err(corrupt(format!("unknown format {}", file.format)));
        }
        if file.environment != name {
            return Err(corrupt(format!(
                "it names environment {:?}, not {name:?}",
                file.environment
            )));
        }
        for file_name in file.live.objects.keys() {
            if !is_plain_file_name(file_name) {
                return Err(corrupt(format!(
                    "it lists {file_name:?}, which is not a file name"
                )));
            }
        }
        Ok(file.live)
    }
}

impl Target for Manifests {
    fn inventory(&self) -> Result<Inventory, Error> {
        let mut environments = BTreeMap::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Inventory::default()),
            Err(e) => return Err(Self::io(&self.root, "list")(e)),
        };
        for entry in entries {
            let entry = entry.map_err(Self::io(&self.root, "list"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !EnvironmentName::is_valid(&name) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = entry.path().join(INVENTORY_FILE);
            if !path.exists() {
                continue; // not ours
            }
            environments.insert(name.clone(), Self::read_inventory(&path, &name)?);
        }
        Ok(Inventory { environments })
    }

    fn apply(&self, change: &EnvironmentChange<'_>) -> Result<(), Error> {
        self.apply_all(std::slice::from_ref(change))
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Applies many environments with four filesystem syncs in all, not one
    /// fsync per file: temp files are written, synced together (`syncfs`),
    /// then renamed. The inventory is widened and synced before any new file
    /// appears and narrowed after old files are gone, so a crash anywhere
    /// leaves every file converge wrote listed.
    fn apply_all(&self, changes: &[EnvironmentChange<'_>]) -> Vec<Result<(), Error>> {
        let mut work: Vec<Work<'_, '_>> =
            changes.iter().map(|c| Work::new(&self.root, c)).collect();
        // 1. Widen inventories and stage every object, unsynced.
        work.par_iter_mut().for_each(|w| w.run(Work::stage));
        let synced = self.sync();
        // 2. The widened inventories take effect.
        work.par_iter_mut()
            .for_each(|w| w.after(&synced, Work::widen));
        let synced = self.sync();
        // 3. New files take effect, old ones go, final inventories are staged.
        work.par_iter_mut()
            .for_each(|w| w.after(&synced, Work::replace));
        let synced = self.sync();
        // 4. The final inventories take effect.
        work.par_iter_mut()
            .for_each(|w| w.after(&synced, Work::narrow));
        let synced = self.sync();
        work.into_iter()
            .map(|w| {
                w.result?;
                synced.as_ref().copied().map_err(|e| Error::Io {
                    path: self.root.display().to_string(),
                    op: "sync",
                    source: std::io::Error::other(e.to_string()),
                })
            })
            .collect()
    }
}

impl Manifests {
    /// Flushes the whole filesystem of the root (one call, however many files).
    fn sync(&self) -> Result<(), Error> {
        let root = std::fs::File::open(&self.root).map_err(Self::io(&self.root, "open"))?;
        rustix::fs::syncfs(&root).map_err(|e| Self::io(&self.root, "sync")(e.into()))
    }
}

/// One environment's apply, phase by phase.
struct Work<'c, 'a> {
    change: &'c EnvironmentChange<'a>,
    dir: PathBuf,
    live: Option<LiveEnvironment>,
    widened: bool,
    /// Remove the inventory and the directory at the end (environment gone).
    remove: bool,
    result: Result<(), Error>,
}

impl<'c, 'a> Work<'c, 'a> {
    fn new(root: &Path, change: &'c EnvironmentChange<'a>) -> Self {
        Work {
            change,
            dir: root.join(change.name),
            live: None,
            widened: false,
            remove: false,
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
        let inventory_path = self.dir.join(INVENTORY_FILE);
        let mut live = if inventory_path.exists() {
            Manifests::read_inventory(&inventory_path, change.name)?
        } else {
            match change.record {
                Some(record) => LiveEnvironment {
                    record: record.clone(),
                    objects: BTreeMap::new(),
                },
                None => return Ok(()), // nothing of ours is there
            }
        };
        if !change.upserts.is_empty() {
            std::fs::create_dir_all(&self.dir)
                .map_err(Manifests::io(&self.dir, "create directory"))?;
        }
        remove_stale_temp_files(&self.dir);
        // Never overwrite a file converge did not write.
        for rendered in &change.upserts {
            let object = &rendered.object;
            let file = object.file_name();
            if live.objects.contains_key(&file) {
                continue;
            }
            let path = self.dir.join(&file);
            if path.symlink_metadata().is_ok() {
                return Err(Error::ForeignFile {
                    environment: change.name.to_owned(),
                    path: path.display().to_string(),
                });
            }
            let pending = LiveObject {
                kind: object.kind.clone(),
                name: object.name.clone(),
                digest: Digest::PENDING,
            };
            live.objects.insert(file, pending);
            self.widened = true;
        }
        if self.widened {
            stage(
                &self.dir.join(INVENTORY_FILE),
                &inventory_bytes(change.name, &live),
            )?;
        }
        for rendered in &change.upserts {
            stage(
                &self.dir.join(rendered.object.file_name()),
                rendered.yaml.as_bytes(),
            )?;
        }
        self.live = Some(live);
        Ok(())
    }

    fn widen(&mut self) -> Result<(), Error> {
        if self.widened {
            commit(&self.dir.join(INVENTORY_FILE))?;
        }
        Ok(())
    }

    fn replace(&mut self) -> Result<(), Error> {
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let change = self.change;
        for rendered in &change.upserts {
            let object = &rendered.object;
            commit(&self.dir.join(object.file_name()))?;
            let applied = LiveObject {
                kind: object.kind.clone(),
                name: object.name.clone(),
                digest: object.digest,
            };
            live.objects.insert(object.file_name(), applied);
        }
        for file in &change.deletes {
            if live.objects.remove(file).is_none() {
                continue; // only files converge wrote
            }
            let path = self.dir.join(file);
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
        )
    }

    fn narrow(&mut self) -> Result<(), Error> {
        if self.live.is_none() {
            return Ok(());
        }
        let inventory = self.dir.join(INVENTORY_FILE);
        if self.remove {
            std::fs::remove_file(&inventory).map_err(Manifests::io(&inventory, "delete"))?;
            // Only removes the directory when nothing foreign is left in it.
            let _ = std::fs::remove_dir(&self.dir);
            return Ok(());
        }
        commit(&inventory)
    }
}

fn inventory_bytes(name: &str, live: &LiveEnvironment) -> Vec<u8> {
    let file = InventoryFile {
        format: FORMAT_VERSION,
        environment: name.to_owned(),
        live: live.clone(),
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

/// Writes `bytes` beside `path` as a temp file, unsynced.
fn stage(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes).map_err(|e| {
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

/// Writes `bytes` to `path` atomically: a temp file beside it, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}{TMP_SUFFIX}"));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
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
    use crate::render::{Object, Rendered, digest};
    use crate::target::EnvironmentRecord;

    fn object(kind: &str, name: &str, body: &str) -> Rendered {
        let object = Object {
            api_version: "v1".into(),
            kind: kind.into(),
            name: name.into(),
            digest: digest(body.as_bytes()),
        };
        Rendered {
            object,
            yaml: body.into(),
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
                    "configmap-c.yaml".into(),
                    "namespace-e.yaml".into(),
                    "notes.txt".into(),
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
        assert_eq!(err.reason(), "ForeignObject");
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
        assert_eq!(err.reason(), "InventoryCorrupt");
    }
}
