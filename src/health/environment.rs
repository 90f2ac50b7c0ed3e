//! An environment's health, folded from its objects': `Ready`,
//! `Reconciling` or `Stalled`, with a reason and a message naming the objects
//! that are not current.

use std::fmt::Write as _;
use std::time::Duration;

use super::{ObjectHealth, Reason, Status};

/// Where an environment's objects stand: exactly one of kstatus's three
/// conditions holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Readiness {
    /// Every object is current.
    Ready,
    /// Some object is not current yet, within the timeout.
    Reconciling,
    /// Some object failed, or was not current within the timeout.
    Stalled,
}

/// The health of one environment, folded from its objects'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentHealth {
    pub readiness: Readiness,
    /// [`Reason::Current`], [`Reason::Progressing`],
    /// [`Reason::ProgressDeadlineExceeded`], or a failed object's reason.
    pub reason: Reason,
    /// Names the objects that are not current (a handful, then a count).
    pub message: String,
}

/// How many objects a message names before it counts the rest.
const NAMED: usize = 5;

/// Folds one environment's objects (`("Kind/name", health)`, in apply
/// order): ready when every object is current; a failed object stalls the
/// environment at once (its reason becomes the environment's); any other
/// object that is not current keeps it reconciling until `timeout` has
/// passed since the last apply, then stalls it with
/// [`Reason::ProgressDeadlineExceeded`].
#[must_use]
///
/// Messages name the last apply by its time (`applied_at`, RFC 3339), never
/// by a duration since it: a message is kept until the next change, and a
/// relative time in it would be stale the moment it is read.
pub fn environment(
    objects: &[(String, ObjectHealth)],
    since_apply: Duration,
    timeout: Duration,
    applied_at: &str,
) -> EnvironmentHealth {
    let failed: Vec<&(String, ObjectHealth)> = objects
        .iter()
        .filter(|(_, h)| h.status == Status::Failed)
        .collect();
    if let Some((_, first)) = failed.first() {
        return EnvironmentHealth {
            readiness: Readiness::Stalled,
            reason: first.reason,
            message: format!("{} failed: {}", plural(failed.len()), name(&failed)),
        };
    }
    let waiting: Vec<&(String, ObjectHealth)> = objects
        .iter()
        .filter(|(_, h)| h.status != Status::Current)
        .collect();
    if waiting.is_empty() {
        return EnvironmentHealth {
            readiness: Readiness::Ready,
            reason: Reason::Current,
            message: if objects.is_empty() {
                "no objects".to_owned()
            } else {
                format!("all {} current", plural(objects.len()))
            },
        };
    }
    let of = format!("{} of {}", waiting.len(), objects.len());
    if since_apply >= timeout {
        EnvironmentHealth {
            readiness: Readiness::Stalled,
            reason: Reason::ProgressDeadlineExceeded,
            message: format!(
                "{of} objects not current within {} of the apply at {applied_at}: {}",
                human(timeout),
                name(&waiting)
            ),
        }
    } else {
        EnvironmentHealth {
            readiness: Readiness::Reconciling,
            reason: Reason::Progressing,
            message: format!(
                "waiting for {of} objects since the apply at {applied_at} (stalled if not current within {}): {}",
                human(timeout),
                name(&waiting)
            ),
        }
    }
}

/// "1 object", "3 objects".
fn plural(n: usize) -> String {
    if n == 1 {
        "1 object".to_owned()
    } else {
        format!("{n} objects")
    }
}

/// `Kind/name: message` of the first few objects, then how many more.
fn name(objects: &[&(String, ObjectHealth)]) -> String {
    let mut named: Vec<String> = objects
        .iter()
        .take(NAMED)
        .map(|(name, h)| match h.status {
            Status::InProgress | Status::Failed => format!("{name}: {}", h.message),
            status => format!("{name}: {status}: {}", h.message),
        })
        .collect();
    if objects.len() > NAMED {
        named.push(format!("and {} more", objects.len() - NAMED));
    }
    named.join("; ")
}

/// `1h2m3s`, `10m`, `45s`, `0s` (whole seconds).
pub(super) fn human(d: Duration) -> String {
    let s = d.as_secs();
    let mut out = String::new();
    for (n, unit) in [(s / 3600, 'h'), (s / 60 % 60, 'm'), (s % 60, 's')] {
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    if out.is_empty() { "0s".to_owned() } else { out }
}
