//! What converge applied, as a target records it: the inventory.
//!
//! Vocabulary shared by the middle stages (which diff against it) and the
//! targets (which keep it): per environment, the record converge wrote and
//! the identity and digest of every object it applied. No IO.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::object::ObjectRef;
use crate::render::{Digest, Object};
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
    /// Each secret key's keyed fingerprint (`hmac:<16 hex>`, never a value
    /// or a plain hash of one): what a plan compares to name changed keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Per service with manifests of its own: the artifact it runs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub manifests: BTreeMap<String, ManifestsRecord>,
}

/// The manifests artifact a service of an environment runs (issue 23).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestsRecord {
    /// What was asked for: the resolved version, or the claim's
    /// `ansible_artifact` (a tag or `@sha256:<hex>`).
    pub reference: String,
    /// `sha256:…` of the OCI layer or the git tree.
    pub digest: String,
    /// The OCI repository or git URL (credentials removed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// The artifact's revision annotation, or the git ref.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
}

/// One environment as the target holds it. Compact, since a daemon holds one
/// entry per applied object (~41 per environment): the identity's strings are
/// shared ([`crate::object`]) and the digest is 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEnvironment {
    pub record: EnvironmentRecord,
    /// Each applied object and the digest of its applied content
    /// ([`Digest::PENDING`] while a write is in flight).
    pub objects: BTreeMap<ObjectRef, Digest>,
}

impl LiveEnvironment {
    /// Rebuilds the object map with full B-tree nodes (after inserts and removes).
    pub fn compact(&mut self) {
        self.objects = std::mem::take(&mut self.objects).into_iter().collect();
    }
}

/// An environment's desired objects: as rendered, or, once the target holds
/// exactly these (same identities and digests), the target's own record of
/// them, shared: an environment in sync keeps one list of its ~41 objects,
/// not two (the pipeline's and the target's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredObjects {
    Rendered(Vec<Object>),
    Applied(Arc<LiveEnvironment>),
}

impl DesiredObjects {
    /// Each object's identity and digest (rendered order, or identity order).
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectRef, Digest)> {
        let (rendered, applied) = match self {
            DesiredObjects::Rendered(v) => (Some(v.iter().map(|o| (&o.id, o.digest))), None),
            DesiredObjects::Applied(l) => (None, Some(l.objects.iter().map(|(id, d)| (id, *d)))),
        };
        rendered
            .into_iter()
            .flatten()
            .chain(applied.into_iter().flatten())
    }

    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            DesiredObjects::Rendered(v) => v.len(),
            DesiredObjects::Applied(l) => l.objects.len(),
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `live` holds exactly these objects (identities and digests).
    #[must_use]
    pub fn held_by(&self, live: &LiveEnvironment) -> bool {
        match self {
            DesiredObjects::Applied(l) => l.objects == live.objects,
            DesiredObjects::Rendered(v) => {
                v.len() == live.objects.len()
                    && v.iter().all(|o| live.objects.get(&o.id) == Some(&o.digest))
            }
        }
    }
}

/// Everything converge applied to a target, by environment name. Targets hand
/// it out as an `Arc<Inventory>` and share unchanged environments between
/// versions, so reading it costs a pointer copy, not a deep clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub environments: BTreeMap<String, Arc<LiveEnvironment>>,
}
