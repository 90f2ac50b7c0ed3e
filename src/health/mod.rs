//! Health: whether a live object has become what was applied, with the
//! semantics of kstatus (`sigs.k8s.io/cli-utils/pkg/kstatus/status`).
//!
//! Pure: [`object`] reads one object as the API server returned it (JSON,
//! status included) and says whether it is [`Status::Current`], still
//! [`Status::InProgress`], [`Status::Failed`] or [`Status::Terminating`], with
//! a stable `CamelCase` reason and a message; [`environment()`] folds the
//! objects of one environment into `Ready` / `Reconciling` / `Stalled`, turning
//! progress that has taken longer than a timeout since the last apply into
//! `Stalled`. No IO and no clock: the caller fetches the objects and measures
//! the time since its apply.
//!
//! The generic rules run first for every kind: a deletion timestamp means
//! terminating; a `status.observedGeneration` behind `metadata.generation`
//! means the controller has not seen the latest spec yet (the check
//! `kube::runtime::wait::conditions::is_deployment_completed` lacks); a
//! `Reconciling` or `Stalled` condition that is `True` decides. Then the rules
//! of the kind decide; a kind without rules is decided by its `Ready`
//! condition if it has one, and is current otherwise. Where converge is
//! stricter than kstatus, the rule says so.
//!
//! The files follow kstatus's layout: `generic.rs` holds the rules every
//! kind goes through first (deletion, observed generation, `Reconciling` /
//! `Stalled` / `Ready` conditions), `kinds.rs` the rules of each built-in
//! kind (kstatus's `core.go`), `util.rs` the readers of fields and
//! conditions, `environment.rs` the fold of an environment, `reason.rs` the
//! closed [`Reason`] enum.

mod environment;
mod generic;
mod kinds;
mod reason;
mod util;

use std::fmt;

use serde_json::Value;

pub use environment::{EnvironmentHealth, Readiness, environment};
pub use reason::Reason;

/// How far a live object is from what was applied (kstatus's statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// The controller has acted on the latest spec and the object is ready.
    Current,
    /// The object is on its way (rollout, scheduling, provisioning, ...).
    InProgress,
    /// The object will not get there without a change (deadline exceeded,
    /// crash loop, failed job, a `Stalled` condition).
    Failed,
    /// The object is being deleted.
    Terminating,
    /// The object does not exist.
    NotFound,
    /// The object could not be read (not a JSON object, an unknown phase).
    Unknown,
}

impl Status {
    /// The stable name (kstatus's spelling).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Current => "Current",
            Status::InProgress => "InProgress",
            Status::Failed => "Failed",
            Status::Terminating => "Terminating",
            Status::NotFound => "NotFound",
            Status::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The health of one object: a status, a stable reason from [`Reason`] and a
/// message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHealth {
    pub status: Status,
    /// Stable `CamelCase` (one of [`Reason::ALL`]): fit for conditions and
    /// metric labels.
    pub reason: Reason,
    pub message: String,
}

impl ObjectHealth {
    /// The health of an object the API server does not have.
    #[must_use]
    pub fn not_found() -> ObjectHealth {
        ObjectHealth::new(Status::NotFound, Reason::NotFound, "not found".to_owned())
    }

    /// The health of an object the target has not observed yet.
    #[must_use]
    pub fn not_observed() -> ObjectHealth {
        ObjectHealth::new(
            Status::InProgress,
            Reason::NotObserved,
            "not observed yet".to_owned(),
        )
    }

    fn new(status: Status, reason: Reason, message: String) -> ObjectHealth {
        ObjectHealth {
            status,
            reason,
            message,
        }
    }

    fn current(message: impl Into<String>) -> ObjectHealth {
        ObjectHealth::new(Status::Current, Reason::Current, message.into())
    }

    fn in_progress(reason: Reason, message: impl Into<String>) -> ObjectHealth {
        ObjectHealth::new(Status::InProgress, reason, message.into())
    }

    fn failed(reason: Reason, message: impl Into<String>) -> ObjectHealth {
        ObjectHealth::new(Status::Failed, reason, message.into())
    }
}

/// The health of `object`, a live object of kind `kind` as the API server
/// returned it. The rules of a built-in kind apply only when the object's
/// `apiVersion` names that kind's group (a custom `Deployment` of another
/// group is a custom resource); without an `apiVersion` the kind decides.
#[must_use]
pub fn object(kind: &str, object: &Value) -> ObjectHealth {
    if !object.is_object() {
        return ObjectHealth::new(
            Status::Unknown,
            Reason::NotAnObject,
            format!("{kind} is not a JSON object"),
        );
    }
    if let Some(health) = generic::generic(kind, object) {
        return health;
    }
    match kinds::rules(kind, object) {
        Some(rule) => rule(object),
        None => generic::ready_condition(object)
            .unwrap_or_else(|| ObjectHealth::current(format!("{kind} is current"))),
    }
}

#[cfg(test)]
mod tests;
