//! Targets: the live infrastructure converge applies to.
//!
//! A [`Target`] reports its [`Inventory`] (what converge applied before, as
//! recorded by the target itself) and applies one environment's changes at a
//! time. Objects are named by identity ([`ObjectRef`]); how a target stores
//! them (a file per object, an API object) is its own mapping. Only objects
//! listed in the inventory are ever changed or deleted. The manifests
//! directory is the embedded default.

pub mod kube;
pub mod manifests;

use std::sync::Arc;

use crate::condition::Reason;
use crate::diff::FieldChange;
use crate::health::ObjectHealth;
pub use crate::inventory::{EnvironmentRecord, Inventory, LiveEnvironment};
use crate::object::ObjectRef;
use crate::render::Rendered;

/// One environment's changes, as `apply` hands them to a target.
#[derive(Debug, Clone)]
pub struct EnvironmentChange<'a> {
    pub name: &'a str,
    /// The record to keep after the change; `None` when the environment is removed.
    pub record: Option<&'a EnvironmentRecord>,
    /// Objects to create or update, in apply order.
    pub upserts: Vec<&'a Rendered>,
    /// Objects to delete, in deletion order.
    pub deletes: Vec<ObjectRef>,
}

/// Something that happened to an environment, for the target's own record
/// of events (Kubernetes Events on the environment's Namespace).
#[derive(Debug, Clone, Copy)]
pub struct TargetEvent<'a> {
    pub environment: &'a str,
    pub warning: bool,
    /// A stable `CamelCase` reason (`Created`, `Drifted`, `TargetIo`).
    pub reason: &'a str,
    pub message: &'a str,
}

/// A cause from a target's own error type.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// What any target can say went wrong; each variant has a stable reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// May succeed later without the input changing (IO, network, timeouts,
    /// overload): retried with backoff, and nothing is deleted meanwhile.
    #[error("{0}")]
    Transient(#[source] Cause),
    /// The object exists and converge does not own it (no ownership labels, or
    /// another environment's): never overwritten, adopted or deleted.
    #[error(
        "environment {environment}: {object} exists and was not written by converge; refusing to overwrite it ({detail})"
    )]
    Foreign {
        environment: String,
        object: String,
        detail: String,
    },
    /// The target refuses converge's credentials for an operation.
    #[error("forbidden: {0}")]
    Forbidden(#[source] Cause),
    /// The target refuses the object's content.
    #[error("invalid: {0}")]
    Invalid(#[source] Cause),
    /// The target refuses a change to a field that cannot change once set.
    #[error("immutable field: {0}")]
    Immutable(#[source] Cause),
    /// The target's own record of what converge applied cannot be read.
    #[error("{0}")]
    CorruptInventory(#[source] Cause),
    /// This replica may not write the environment now (it does not lead, or
    /// another shard owns it): retried, like a transient failure.
    #[error(transparent)]
    Fenced(crate::coordination::Fenced),
}

impl Error {
    /// A stable reason for conditions and metric labels.
    #[must_use]
    pub fn reason(&self) -> Reason {
        match self {
            Self::Transient(_) => Reason::TargetIo,
            Self::Foreign { .. } => Reason::ForeignObject,
            Self::Forbidden(_) => Reason::Forbidden,
            Self::Invalid(_) => Reason::Invalid,
            Self::Immutable(_) => Reason::ImmutableField,
            Self::CorruptInventory(_) => Reason::InventoryCorrupt,
            Self::Fenced(crate::coordination::Fenced::NotLeader) => Reason::NotLeader,
            Self::Fenced(crate::coordination::Fenced::NotOwner(_)) => Reason::NotOwner,
        }
    }

    /// Whether retrying later may succeed without the input changing.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::Fenced(_))
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

    /// The health of one environment's applied objects as the target last
    /// observed them (`Kind/name` and health, in apply order); `None` when
    /// this target observes no health (a manifests directory). Objects of
    /// kinds without a status to wait for may be left out.
    fn health(
        &self,
        environment: &str,
        live: &LiveEnvironment,
    ) -> Option<Vec<(String, ObjectHealth)>> {
        let _ = (environment, live);
        None
    }

    /// Objects of one environment that drifted from what converge applied
    /// (`Kind/name` and how: deleted, or which of its fields someone else
    /// changed), as the target observes them; empty when it does not.
    fn drift(&self, environment: &str, live: &LiveEnvironment) -> Vec<(String, String)> {
        let _ = (environment, live);
        Vec::new()
    }

    /// Drift found before a restart (as [`Target::drift`] reported it, kept
    /// in the state store): each object counts as drifted until converge
    /// applies it again, so neither a `Drifted` condition nor a correction
    /// waits for the target to look again. A target that finds no drift
    /// ignores it.
    fn restore_drift(&self, drift: &std::collections::BTreeMap<String, Vec<(String, String)>>) {
        let _ = drift;
    }

    /// A signal bumped whenever what [`Target::health`] or [`Target::drift`]
    /// would say changes (the daemon wakes on it); `None` for a target that
    /// observes nothing.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// What applying `change` would change field by field, for each object
    /// it updates, as the target itself would apply it (a server-side dry
    /// run): writes nothing. Empty for a target that cannot tell (a
    /// manifests directory: the plan's object steps say it all).
    fn preview(
        &self,
        change: &EnvironmentChange<'_>,
    ) -> Result<Vec<(ObjectRef, Vec<FieldChange>)>, Error> {
        let _ = change;
        Ok(Vec::new())
    }

    /// Whether this process may write to the target now: false while
    /// another replica leads (leader election); always true for a target
    /// with one writer.
    fn leading(&self) -> bool {
        true
    }

    /// The live members when replicas split the environments between them
    /// (`shards`): a pass plans and applies only the environments this
    /// replica owns. `None`: this process owns every environment.
    fn members(&self) -> Option<Arc<crate::shard::Members>> {
        None
    }

    /// Records events in the target's own event stream, best effort (a
    /// target without one ignores them).
    fn record(&self, events: &[TargetEvent<'_>]) {
        let _ = events;
    }

    /// Publishes the environments' statuses where the target's own users
    /// read them (the Kubernetes target's `Environment` resources), best
    /// effort and without waiting for the writes: `changed` names the
    /// environments whose status was rebuilt or that are gone since the last
    /// call, `all` is every status this process serves. An output only:
    /// nothing published is ever read back to decide anything.
    fn publish(
        &self,
        all: &std::collections::BTreeMap<String, Arc<crate::status::EnvStatus>>,
        changed: &[String],
    ) {
        let _ = (all, changed);
    }

    /// Applies many environments' changes; one result per change, in order.
    /// Environments are independent: one failing does not stop the others.
    fn apply_all(&self, changes: &[EnvironmentChange<'_>]) -> Vec<Result<(), Error>> {
        changes.iter().map(|c| self.apply(c)).collect()
    }
}
