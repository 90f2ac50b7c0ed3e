//! Targets: the live infrastructure converge applies to.
//!
//! A [`Target`] reports its [`Inventory`] (what converge applied before, as
//! recorded by the target itself) and applies one environment's changes at a
//! time. Only objects carrying converge's ownership labels and listed in the
//! inventory are ever changed or deleted. The manifests directory is the
//! embedded default; Kubernetes comes as a separate target.

pub mod manifests;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::render::{Digest, Rendered};
use crate::resolve::Resolved;
use crate::source::Origin;

/// What converge records about an applied environment, next to its objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    pub origin: Option<Origin>,
    #[serde(rename = "type")]
    pub env_type: String,
    pub pool: String,
    pub owner: String,
    pub versions: BTreeMap<String, Resolved>,
    pub expires_at: Option<String>,
}

/// One object converge applied. Compact, since a daemon holds one per
/// applied object (~41 per environment): 64 bytes inline, the kind shared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveObject {
    #[serde(
        serialize_with = "serialize_kind",
        deserialize_with = "deserialize_kind"
    )]
    pub kind: Kind,
    pub name: Box<str>,
    /// Digest of the applied content; pending while a write is in flight.
    pub digest: Digest,
}

pub use crate::render::{Kind, kind};

impl LiveObject {
    /// The live record of `object` with `digest`.
    #[must_use]
    pub fn of(object: &crate::render::Object, digest: Digest) -> LiveObject {
        LiveObject {
            kind: object.kind.clone(),
            name: object.name.clone(),
            digest,
        }
    }
}

fn serialize_kind<S: Serializer>(kind: &Kind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind)
}

fn deserialize_kind<'de, D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
    struct KindVisitor;
    impl serde::de::Visitor<'_> for KindVisitor {
        type Value = Kind;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object kind")
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Kind, E> {
            Ok(kind(s))
        }
    }
    d.deserialize_str(KindVisitor)
}

/// Builds the map from a sorted sequence at once (full B-tree nodes) rather
/// than entry by entry as serde's `BTreeMap` does (half-full nodes).
pub(crate) fn deserialize_objects<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, LiveObject>, D::Error> {
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = Vec<(String, LiveObject)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map of file names to objects")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
            while let Some(entry) = map.next_entry()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    Ok(d.deserialize_map(Entries)?.into_iter().collect())
}

/// One environment as the target holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEnvironment {
    pub record: EnvironmentRecord,
    /// By file name (`<kind>-<name>.yaml`).
    #[serde(deserialize_with = "deserialize_objects")]
    pub objects: BTreeMap<String, LiveObject>,
}

impl LiveEnvironment {
    /// Rebuilds the object map with full B-tree nodes (after inserts and removes).
    pub fn compact(&mut self) {
        self.objects = std::mem::take(&mut self.objects).into_iter().collect();
    }
}

/// Everything converge applied to a target, by environment name. Targets hand
/// it out as an `Arc<Inventory>` and share unchanged environments between
/// versions, so reading it costs a pointer copy, not a deep clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub environments: BTreeMap<String, Arc<LiveEnvironment>>,
}

/// One environment's changes, as `apply` hands them to a target.
#[derive(Debug, Clone)]
pub struct EnvironmentChange<'a> {
    pub name: &'a str,
    /// The record to keep after the change; `None` when the environment is removed.
    pub record: Option<&'a EnvironmentRecord>,
    /// Objects to create or update, in apply order.
    pub upserts: Vec<&'a Rendered>,
    /// File names of objects to delete, in deletion order.
    pub deletes: Vec<String>,
}

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
    #[error(
        "environment {environment}: {path} exists and was not written by converge; refusing to overwrite it"
    )]
    ForeignFile { environment: String, path: String },
}

impl Error {
    /// A stable reason for conditions and metric labels.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io { .. } => "TargetIo",
            Self::CorruptInventory { .. } => "InventoryCorrupt",
            Self::ForeignFile { .. } => "ForeignObject",
        }
    }

    /// Whether retrying later may succeed without the input changing.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}

/// The live infrastructure.
pub trait Target: Sync {
    /// What converge applied before, as the target records it. A target may
    /// answer from memory (it is the only writer of its inventory) until
    /// [`Target::reload`].
    fn inventory(&self) -> Result<Arc<Inventory>, Error>;
    /// Forgets what the target keeps in memory: the next [`Target::inventory`]
    /// reads the target again (the daemon's periodic full resync).
    fn reload(&self) {}
    /// Applies one environment's changes, idempotently.
    fn apply(&self, change: &EnvironmentChange<'_>) -> Result<(), Error>;

    /// Applies many environments' changes; one result per change, in order.
    /// Environments are independent: one failing does not stop the others.
    fn apply_all(&self, changes: &[EnvironmentChange<'_>]) -> Vec<Result<(), Error>> {
        changes.iter().map(|c| self.apply(c)).collect()
    }
}
