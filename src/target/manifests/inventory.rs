//! The inventory file of an environment directory: its format (each object
//! by file name, with its identity and digest), reading it (a format-1 file
//! upgraded, a legacy name renamed), reading every environment's, and the
//! bytes written.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::files::write_atomic;
use super::{Error, INVENTORY_FILE, LEGACY_INVENTORY_FILE, Manifests, file_name};
use crate::claim::EnvironmentName;
use crate::object::{ObjectRef, kind, shared};
use crate::render::Digest;
use crate::target::{EnvironmentRecord, Inventory, LiveEnvironment};

/// Format 2 lists each object's `apiVersion` and namespace; format 1 did
/// not, and is upgraded when read (from the object files themselves).
const FORMAT_VERSION: u32 = 2;

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
    /// Reads one environment's inventory; `None` when it has none (not
    /// ours). An inventory in format 1 is upgraded on disk as it is read,
    /// and one under its legacy name is renamed first.
    pub(super) fn read_inventory(dir: &Path, name: &str) -> Result<Option<LiveEnvironment>, Error> {
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
    pub(super) fn migrate_inventory(dir: &Path) -> Result<bool, Error> {
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
    pub(super) fn remove_legacy_inventory(dir: &Path) -> Result<(), Error> {
        let legacy = dir.join(LEGACY_INVENTORY_FILE);
        match std::fs::remove_file(&legacy) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(&legacy, "delete legacy inventory")(e)),
        }
    }

    /// Reads every environment's inventory from disk (in parallel).
    pub(super) fn read_all(&self) -> Result<Inventory, Error> {
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
}

pub(super) fn inventory_bytes(name: &str, live: &LiveEnvironment) -> Vec<u8> {
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

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\']) && name != ".."
}
