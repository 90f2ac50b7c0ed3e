//! Targets: the live infrastructure converge applies to.
//!
//! A [`Target`] reports its [`Inventory`] (what converge applied before, as
//! recorded by the target itself) and applies one environment's changes at a
//! time. Only objects carrying converge's ownership labels and listed in the
//! inventory are ever changed or deleted. The manifests directory is the
//! embedded default; Kubernetes comes as a separate target.

pub mod manifests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

/// One object converge applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveObject {
    pub kind: String,
    pub name: String,
    /// Digest of the applied content; pending while a write is in flight.
    pub digest: Digest,
}

/// One environment as the target holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEnvironment {
    pub record: EnvironmentRecord,
    /// By file name (`<kind>-<name>.yaml`).
    pub objects: BTreeMap<String, LiveObject>,
}

/// Everything converge applied to a target, by environment name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub environments: BTreeMap<String, LiveEnvironment>,
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
    /// What converge applied before, read from the target.
    fn inventory(&self) -> Result<Inventory, Error>;
    /// Applies one environment's changes, idempotently.
    fn apply(&self, change: &EnvironmentChange<'_>) -> Result<(), Error>;

    /// Applies many environments' changes; one result per change, in order.
    /// Environments are independent: one failing does not stop the others.
    fn apply_all(&self, changes: &[EnvironmentChange<'_>]) -> Vec<Result<(), Error>> {
        changes.iter().map(|c| self.apply(c)).collect()
    }
}
