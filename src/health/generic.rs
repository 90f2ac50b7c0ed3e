//! The rules every kind goes through before its own (kstatus's
//! `generic.go`): deletion, the observed generation, and the `Reconciling`,
//! `Stalled` and `Ready` conditions.

use serde_json::Value;

use super::util::{condition, conditions, int, text};
use super::{ObjectHealth, Reason, Status};

/// The rules every kind goes through first; `None` when they do not decide.
pub(super) fn generic(kind: &str, object: &Value) -> Option<ObjectHealth> {
    if text(object, "/metadata/deletionTimestamp").is_some_and(|t| !t.is_empty()) {
        return Some(ObjectHealth::new(
            Status::Terminating,
            Reason::Terminating,
            format!("{kind} is being deleted"),
        ));
    }
    if let (Some(generation), Some(observed)) = (
        int(object, "/metadata/generation"),
        int(object, "/status/observedGeneration"),
    ) && observed != generation
    {
        return Some(ObjectHealth::in_progress(
            Reason::LatestGenerationNotObserved,
            format!(
                "generation {generation} not observed yet: the controller last observed \
                 generation {observed}"
            ),
        ));
    }
    for c in conditions(object) {
        match c.type_ {
            "Reconciling" if c.is_true() => {
                return Some(ObjectHealth::in_progress(
                    Reason::Reconciling,
                    format!("reconciling: {}", c.describe()),
                ));
            }
            "Stalled" if c.is_true() => {
                return Some(ObjectHealth::failed(
                    Reason::Stalled,
                    format!("stalled: {}", c.describe()),
                ));
            }
            _ => {}
        }
    }
    None
}

/// A controller-managed workload is current only once its controller has
/// observed it: both generations must be there. kstatus asks this of
/// `DaemonSets` only; converge asks it of every workload kind, because a
/// `StatefulSet` (or a Deployment scaled to zero) with an empty status would
/// otherwise read as current before any controller has seen it.
pub(super) fn generation_observed(kind: &str, object: &Value) -> Option<ObjectHealth> {
    if int(object, "/metadata/generation").is_none() {
        return Some(ObjectHealth::in_progress(
            Reason::NoGeneration,
            format!("{kind} has no metadata.generation"),
        ));
    }
    if int(object, "/status/observedGeneration").is_none() {
        return Some(ObjectHealth::in_progress(
            Reason::NoObservedGeneration,
            format!("the {kind} controller has not observed it yet (no status.observedGeneration)"),
        ));
    }
    None
}

/// The `Ready` condition of a kind without rules (custom resources).
pub(super) fn ready_condition(object: &Value) -> Option<ObjectHealth> {
    let ready = condition(object, "Ready")?;
    match ready.status {
        "True" => Some(ObjectHealth::current("Ready is True")),
        "False" | "Unknown" => Some(ObjectHealth::in_progress(
            Reason::NotReady,
            format!("Ready is {}: {}", ready.status, ready.describe()),
        )),
        _ => None,
    }
}
