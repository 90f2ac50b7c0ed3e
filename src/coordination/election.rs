//! Leader election with a Kubernetes Lease, so replicas never write at once.
//!
//! The algorithm of client-go's `leaderelection`, on a `coordination.k8s.io/v1`
//! Lease: every `retry_period` each replica reads the Lease; one that holds it,
//! or finds it expired (`renewTime + leaseDurationSeconds` in the past),
//! writes itself as holder with the Lease's `resourceVersion` as a
//! precondition, so of two replicas trying at once exactly one succeeds.
//!
//! **Never two writers.** A replica leads only while its last successful
//! renewal is younger than `renew_deadline`, which is shorter than
//! `lease_duration`: a leader cut off from the API server stops applying
//! before any other replica may take the Lease. The time is measured on the
//! leader's own monotonic clock from before its renewal request was sent.
//! The election runs on a thread and runtime of its own, so renewals go on
//! while a pass runs.
//!
//! **Released on a clean stop.** Dropping the [`Election`] (the daemon does
//! after its last pass, on SIGTERM) stops renewing and, when this replica
//! holds the Lease, writes it free (no holder, `leaseDurationSeconds: 1`, as
//! client-go's `ReleaseOnCancel`), so a standby or the next pod of a
//! `Recreate` rollout takes it within a retry period instead of a lease
//! duration. The drop waits for that write (bounded by `renew_deadline`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

use super::{Keeper, LeaseSpace, Leases};
use crate::config::LeaderElection;

/// A running election. Dropping it stops the election and waits for the
/// Lease's release.
pub struct Election {
    shared: Arc<Shared>,
    _keeper: Keeper,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("identity", &self.shared.options.identity)
            .field("leading", &self.leading())
            .finish_non_exhaustive()
    }
}

struct Shared {
    options: LeaderElection,
    /// When the last successful renewal was sent.
    renewed: Mutex<Option<Instant>>,
    /// Bumped when leadership changes (the daemon looks at once).
    notify: tokio::sync::watch::Sender<u64>,
}

impl Election {
    /// Starts electing in `namespace` with a client of its own.
    /// `field_manager` writes the Namespace when it is missing.
    pub(crate) fn start(
        space: LeaseSpace,
        options: LeaderElection,
        notify: tokio::sync::watch::Sender<u64>,
    ) -> Election {
        let shared = Arc::new(Shared {
            options,
            renewed: Mutex::new(None),
            notify,
        });
        let (keep, stop) = (shared.clone(), shared.clone());
        let keeper = Keeper::start(
            "converge-lease",
            "the leader election",
            space,
            |leases| async move { elect(&leases, &keep).await },
            |leases| async move { release(&leases.api, &stop).await },
        );
        Election {
            shared,
            _keeper: keeper,
        }
    }

    /// Whether this replica leads now (its last renewal is younger than the
    /// renew deadline).
    #[must_use]
    pub fn leading(&self) -> bool {
        self.shared
            .renewed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < self.shared.options.renew_deadline)
    }
}

async fn elect(leases: &Leases, shared: &Shared) {
    let o = &shared.options;
    let mut was_leading = false;
    loop {
        let sent = Instant::now();
        let outcome = leases
            .in_namespace(|| try_acquire_or_renew(&leases.api, o))
            .await;
        // A standby looks again when the Lease expires if that comes before
        // the next retry, so it takes over as soon as it may.
        let mut wait = o.retry_period;
        let leading = match outcome {
            Ok(Held::Other(Some(until))) => {
                wait = wait.min(until + std::time::Duration::from_millis(20));
                *shared
                    .renewed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                false
            }
            Ok(Held::Ours) => {
                *shared
                    .renewed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(sent);
                true
            }
            Ok(Held::Other(None)) => {
                *shared
                    .renewed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                false
            }
            Err(e) => {
                tracing::warn!(error = %crate::diagnostic::chain(&e), lease = %o.lease, "cannot renew the lease");
                false
            }
        };
        if leading != was_leading {
            tracing::info!(identity = %o.identity, lease = %o.lease, leading, "leadership changed");
            was_leading = leading;
            shared.notify.send_modify(|n| *n += 1);
        }
        tokio::time::sleep(wait).await;
    }
}

/// On a clean stop: when this replica holds the Lease, writes it free (no
/// holder, 1 s duration) with the read `resourceVersion` as precondition, so
/// the next replica takes it at its next retry. Nothing is written when
/// another holds it; a failure only costs the next leader a lease duration.
async fn release(api: &Api<Lease>, shared: &Shared) {
    let o = &shared.options;
    let was_leading = shared
        .renewed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .is_some();
    if !was_leading {
        return;
    }
    let write = async {
        let Some(mut lease) = api.get_opt(&o.lease).await? else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(o.identity.as_str()) {
            return Ok(false);
        }
        let now = k8s_openapi::jiff::Timestamp::now();
        spec.holder_identity = Some(String::new());
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(now));
        api.replace(&o.lease, &PostParams::default(), &lease)
            .await
            .map(|_| true)
    };
    match tokio::time::timeout(o.renew_deadline, write).await {
        Ok(Ok(true)) => {
            tracing::info!(identity = %o.identity, lease = %o.lease, "released the lease (clean stop)");
        }
        Ok(Ok(false)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::diagnostic::chain(&e), lease = %o.lease, "cannot release the lease: the next leader waits for it to expire");
        }
        Err(_) => {
            tracing::warn!(lease = %o.lease, "cannot release the lease in time: the next leader waits for it to expire");
        }
    }
}

/// Who holds the Lease after a round.
enum Held {
    Ours,
    /// Another replica, until its Lease expires (if known) unless renewed.
    Other(Option<std::time::Duration>),
}

/// One round: whether this replica holds the Lease afterwards.
async fn try_acquire_or_renew(api: &Api<Lease>, o: &LeaderElection) -> Result<Held, kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let duration = i32::try_from(o.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&o.lease).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(o.lease.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(o.identity.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Held::Ours),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Held::Other(None)),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let ours = spec.holder_identity.as_deref() == Some(o.identity.as_str());
    let held = k8s_openapi::jiff::SignedDuration::from_secs(i64::from(
        spec.lease_duration_seconds.unwrap_or(0),
    ));
    let until = spec
        .renew_time
        .as_ref()
        .and_then(|t| t.0.checked_add(held).ok());
    let expired = until.is_none_or(|until| until < now);
    if !ours
        && !expired
        && spec
            .holder_identity
            .as_deref()
            .is_some_and(|h| !h.is_empty())
    {
        let left = until.and_then(|u| std::time::Duration::try_from(u.duration_since(now)).ok());
        return Ok(Held::Other(left));
    }
    if !ours {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(o.identity.clone());
    spec.lease_duration_seconds = Some(duration);
    spec.renew_time = Some(MicroTime(now));
    // The resourceVersion read is the precondition: one writer wins.
    match api.replace(&o.lease, &PostParams::default(), &lease).await {
        Ok(_) => Ok(Held::Ours),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Held::Other(None)),
        Err(e) => Err(e),
    }
}
