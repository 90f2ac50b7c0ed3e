//! Stage 9, record: conditions and per-environment status.
//!
//! Every environment converge knows of (claimed, live, or both) gets a status
//! with Kubernetes-style conditions: `Ready` plus one condition per problem,
//! each with a stable `reason` used in the API and metric labels.

use serde::Serialize;

/// A condition type/status/reason/message, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl Condition {
    /// A problem condition: `<kind>` is `True` with this reason.
    #[must_use]
    pub fn problem(kind: &str, reason: &str, message: impl Into<String>) -> Condition {
        Condition {
            kind: kind.to_owned(),
            status: "True".to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// The `Ready` condition.
    #[must_use]
    pub fn ready(ready: bool, reason: &str, message: impl Into<String>) -> Condition {
        Condition {
            kind: "Ready".to_owned(),
            status: if ready { "True" } else { "False" }.to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// Stable condition reasons.
pub mod reason {
    pub const APPLIED: &str = "Applied";
    pub const UNCHANGED: &str = "Unchanged";
    pub const PLANNED: &str = "Planned";
    pub const INVALID: &str = "ClaimInvalid";
    pub const DENIED: &str = "PolicyDenied";
    pub const CONFLICT: &str = "DuplicateEnvironment";
    pub const VERSION_UNRESOLVED: &str = "VersionUnresolved";
    pub const SECRETS_UNAVAILABLE: &str = "SecretsUnavailable";
    pub const RENDER_FAILED: &str = "RenderFailed";
    pub const EXPIRED: &str = "Expired";
    pub const UNCLAIMED: &str = "Unclaimed";
    pub const HELD: &str = "MassDeletionHeld";
    pub const APPLY_FAILED: &str = "ApplyFailed";
}
