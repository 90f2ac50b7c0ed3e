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

use super::{EnvironmentChange, Error, Inventory, LiveEnvironment, LiveObject, Target};
use crate::claim::EnvironmentName;

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

    fn write_inventory(dir: &Path, name: &str, live: &LiveEnvironment) -> Result<(), Error> {
        let file = InventoryFile {
            format: FORMAT_VERSION,
            environment: name.to_owned(),
            live: live.clone(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("inventory serializes");
        bytes.push(b'\n');
        write_atomic(&dir.join(INVENTORY_FILE), &bytes)
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
        let dir = self.root.join(change.name);
        let inventory_path = dir.join(INVENTORY_FILE);
        let mut live = if inventory_path.exists() {
            Self::read_inventory(&inventory_path, change.name)?
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
            std::fs::create_dir_all(&dir).map_err(Self::io(&dir, "create directory"))?;
        }
        remove_stale_temp_files(&dir);
        // Never overwrite a file converge did not write.
        let mut widened = false;
        for rendered in &change.upserts {
            let object = &rendered.object;
            let file = object.file_name();
            if live.objects.contains_key(&file) {
                continue;
            }
            let path = dir.join(&file);
            if path.symlink_metadata().is_ok() {
                return Err(Error::ForeignFile {
                    environment: change.name.to_owned(),
                    path: path.display().to_string(),
                });
            }
            live.objects.insert(
                file,
                LiveObject {
                    kind: object.kind.clone(),
                    name: object.name.clone(),
                    digest: String::new(),
                },
            );
            widened = true;
        }
        if widened {
            Self::write_inventory(&dir, change.name, &live)?;
        }
        for rendered in &change.upserts {
            let object = &rendered.object;
            write_atomic(&dir.join(object.file_name()), rendered.yaml.as_bytes())?;
            live.objects.insert(
                object.file_name(),
                LiveObject {
                    kind: object.kind.clone(),
                    name: object.name.clone(),
                    digest: object.digest.clone(),
                },
            );
        }
        for file in &change.deletes {
            if live.objects.remove(file).is_none() {
                continue; // only files converge wrote
            }
            let path = dir.join(file);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Self::io(&path, "delete")(e)),
            }
        }
        match change.record {
            Some(record) => {
                live.record = record.clone();
                Self::write_inventory(&dir, change.name, &live)?;
            }
            None if live.objects.is_empty() => {
                sync_dir(&dir)?;
                std::fs::remove_file(&inventory_path)
                    .map_err(Self::io(&inventory_path, "delete"))?;
                // Only removes the directory when nothing foreign is left in it.
                let _ = std::fs::remove_dir(&dir);
                return sync_dir(&self.root);
            }
            None => Self::write_inventory(&dir, change.name, &live)?,
        }
        sync_dir(&dir)
    }
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

fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Manifests::io(dir, "sync directory"))
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
