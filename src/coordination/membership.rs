//! Membership of sharded replicas: one Lease per replica.
//!
//! Every `retry_period` a member lists the Leases named `<lease_prefix>…` in
//! the inventory Namespace and renews its own (`<lease_prefix><identity>`,
//! the listed `resourceVersion` as precondition). Another member is live
//! while its `renewTime` was seen to change less than its
//! `leaseDurationSeconds` ago, timed on this replica's monotonic clock (a
//! Lease seen for the first time counts from its `renewTime`, so a dead
//! member's Lease is not live for a new replica); which environments a
//! live member owns is [`crate::shard`]'s rendezvous hash.
//!
//! **One writer per environment.** A member is active (writes, and is
//! ready) while its last successful round is younger than `renew_deadline`
//! (< `lease_duration`): cut off from the API server it stops before the
//! others drop it and take its environments. A member that joins (or comes
//! back after a lapse) waits one `lease_duration` before it counts itself:
//! by then every other member has either listed its Lease, and stops
//! writing the environments it takes, or passed its own renew deadline.
//! Every write of a change is fenced by the current membership, so at most
//! the write in flight when the membership changes completes.
//!
//! A member stopping cleanly deletes its Lease (its share moves at once);
//! a Lease expired for four lease durations is deleted by whoever sees it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};

use super::{Keeper, LeaseSpace, Leases};
use crate::config::Shards;
use crate::shard::Members;

/// This replica's membership, kept on a thread of its own. Dropping it
/// leaves: the Lease is deleted, so the share moves at once.
pub struct Membership {
    shared: Arc<Shared>,
    _keeper: Keeper,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("identity", &self.shared.options.identity)
            .field("active", &self.active())
            .finish_non_exhaustive()
    }
}

struct Shared {
    options: Shards,
    state: Mutex<State>,
    /// Bumped when the live members change (the daemon passes again).
    notify: tokio::sync::watch::Sender<u64>,
}

struct State {
    /// When the last successful round (renewal and listing) was sent.
    renewed: Option<Instant>,
    /// When this replica's current membership began (its first renewal
    /// after none, or after a lapse past the renew deadline).
    joined: Option<Instant>,
    /// The others' Leases: identity -> (`renewTime` as read, when seen).
    observed: HashMap<String, (String, Instant)>,
    members: Arc<Members>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Active: renewed within the renew deadline, and counted among the
    /// members (which a round does once the joining wait is over), so the
    /// daemon never passes with a snapshot that leaves this replica out.
    fn active(&self) -> bool {
        let o = &self.options;
        let s = self.state();
        s.renewed.is_some_and(|t| t.elapsed() < o.renew_deadline)
            && s.members.live().iter().any(|m| m == s.members.me())
    }
}

impl Membership {
    /// Starts keeping this replica's Lease in `namespace` with a client of
    /// its own (`field_manager` writes the Namespace when it is missing).
    pub(crate) fn start(
        space: LeaseSpace,
        options: Shards,
        notify: tokio::sync::watch::Sender<u64>,
    ) -> Membership {
        let me = options.identity.clone();
        let shared = Arc::new(Shared {
            options,
            state: Mutex::new(State {
                renewed: None,
                joined: None,
                observed: HashMap::new(),
                members: Arc::new(Members::new(&me, Vec::new(), 0)),
            }),
            notify,
        });
        let (keeping, leaving) = (shared.clone(), shared.clone());
        let keeper = Keeper::start(
            "converge-shards",
            "the shard membership",
            space,
            |leases| async move { keep(&leases, &keeping).await },
            |leases| async move { leave(&leases.api, &leaving).await },
        );
        Membership {
            shared,
            _keeper: keeper,
        }
    }

    /// Whether this replica is an active member now (may write, is ready).
    #[must_use]
    pub fn active(&self) -> bool {
        self.shared.active()
    }

    /// The members as of the last round; this replica is among them only
    /// while active.
    #[must_use]
    pub fn members(&self) -> Arc<Members> {
        let snapshot = Arc::clone(&self.shared.state().members);
        if self.active() || !snapshot.live().iter().any(|m| m == snapshot.me()) {
            return snapshot;
        }
        let others = snapshot
            .live()
            .iter()
            .filter(|m| *m != snapshot.me())
            .cloned()
            .collect();
        Arc::new(Members::new(snapshot.me(), others, snapshot.generation()))
    }

    /// Whether this replica may write `environment` now.
    #[must_use]
    pub fn owns_now(&self, environment: &str) -> bool {
        self.active() && self.shared.state().members.owns(environment)
    }

    /// Waits (at most `limit`) until this replica is an active member.
    pub fn wait_active(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.active() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn lease_name(o: &Shards) -> String {
    format!("{}{}", o.lease_prefix, o.identity)
}

async fn keep(leases: &Leases, shared: &Shared) {
    let o = &shared.options;
    let mut was_active = false;
    loop {
        let sent = Instant::now();
        let outcome = leases.in_namespace(|| round(&leases.api, shared)).await;
        // Look again when a live member's Lease expires if that comes
        // before the next round: its share moves as soon as it may.
        let mut wait = o.retry_period;
        match outcome {
            Ok(others) => {
                if let Some(next) = settle(shared, sent, others) {
                    wait = wait.min(next + Duration::from_millis(20));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, lease = %lease_name(o), "cannot renew the shard membership");
            }
        }
        let active = shared.active();
        if active != was_active {
            tracing::info!(identity = %o.identity, active, "shard membership changed");
            was_active = active;
            let now_members = shared.state().members.clone();
            publish(shared, &now_members, true);
        }
        tokio::time::sleep(wait).await;
    }
}

/// One round: the Leases listed and this replica's renewed. Returns the
/// other members' Leases as (identity, `renewTime`, duration).
async fn round(
    api: &Api<Lease>,
    shared: &Shared,
) -> Result<Vec<(String, Option<MicroTime>, Duration)>, kube::Error> {
    let o = &shared.options;
    let now = k8s_openapi::jiff::Timestamp::now();
    let mine = lease_name(o);
    let list = api.list(&ListParams::default()).await?;
    let mut own: Option<Lease> = None;
    let mut others = Vec::new();
    for lease in list.items {
        let name = lease.metadata.name.clone().unwrap_or_default();
        if !name.starts_with(&o.lease_prefix) {
            continue;
        }
        if name == mine {
            own = Some(lease);
            continue;
        }
        let spec = lease.spec.clone().unwrap_or_default();
        let Some(holder) = spec.holder_identity.filter(|h| !h.is_empty()) else {
            continue;
        };
        let duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        );
        if long_expired(spec.renew_time.as_ref(), duration, now) {
            collect(api, &lease).await;
            continue;
        }
        others.push((holder, spec.renew_time, duration));
    }
    let duration = i32::try_from(o.lease_duration.as_secs()).unwrap_or(i32::MAX);
    match own {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(mine),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(o.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await?;
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = Some(o.identity.clone());
            spec.lease_duration_seconds = Some(duration);
            spec.renew_time = Some(MicroTime(now));
            api.replace(&lease_name(o), &PostParams::default(), &lease)
                .await?;
        }
    }
    Ok(others)
}

/// Whether a Lease was last renewed more than four durations ago.
fn long_expired(
    renewed: Option<&MicroTime>,
    duration: Duration,
    now: k8s_openapi::jiff::Timestamp,
) -> bool {
    let Some(renewed) = renewed else {
        return false;
    };
    let held = k8s_openapi::jiff::SignedDuration::from_secs(
        i64::try_from(duration.as_secs().saturating_mul(4)).unwrap_or(i64::MAX),
    );
    renewed.0.checked_add(held).is_ok_and(|until| until < now)
}

/// Deletes a long-expired member's Lease (unless it changed meanwhile).
async fn collect(api: &Api<Lease>, lease: &Lease) {
    let name = lease.metadata.name.clone().unwrap_or_default();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: lease.metadata.uid.clone(),
            resource_version: lease.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => tracing::info!(lease = %name, "deleted the Lease of a member gone for good"),
        Err(e) => tracing::debug!(lease = %name, error = %e, "cannot delete an expired Lease"),
    }
}

/// After a successful round sent at `sent`: the live members. Returns how
/// long until the first live member's Lease expires unless renewed.
fn settle(
    shared: &Shared,
    sent: Instant,
    others: Vec<(String, Option<MicroTime>, Duration)>,
) -> Option<Duration> {
    let o = &shared.options;
    let now_wall = k8s_openapi::jiff::Timestamp::now();
    let members = {
        let mut s = shared.state();
        let lapsed = s.renewed.is_none_or(|t| t.elapsed() >= o.renew_deadline);
        if lapsed {
            s.joined = Some(sent);
        }
        s.renewed = Some(sent);
        let mut live = Vec::new();
        let mut next: Option<Duration> = None;
        let mut seen = std::collections::HashSet::new();
        for (identity, renewed, duration) in others {
            let text = renewed
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            seen.insert(identity.clone());
            let fresh = match s.observed.get(&identity) {
                Some((before, _)) if *before == text => None,
                Some(_) => Some(Instant::now()),
                None => {
                    // First seen: as old as its renewTime says (at most expired).
                    let age = renewed
                        .as_ref()
                        .map_or(duration, |t| {
                            Duration::try_from(now_wall.duration_since(t.0))
                                .unwrap_or(Duration::ZERO)
                        })
                        .min(duration);
                    Some(Instant::now().checked_sub(age).unwrap_or_else(Instant::now))
                }
            };
            if let Some(at) = fresh {
                s.observed.insert(identity.clone(), (text, at));
            }
            if let Some(left) = s
                .observed
                .get(&identity)
                .and_then(|(_, at)| duration.checked_sub(at.elapsed()))
                .filter(|left| !left.is_zero())
            {
                next = Some(next.map_or(left, |n| n.min(left)));
                live.push(identity);
            }
        }
        s.observed.retain(|identity, _| seen.contains(identity));
        if s.joined.is_some_and(|t| t.elapsed() >= o.lease_duration) {
            live.push(o.identity.clone());
        }
        let mut candidate = Members::new(&o.identity, live, s.members.generation());
        if candidate.live() == s.members.live() {
            return next;
        }
        candidate = Members::new(
            &o.identity,
            candidate.live().to_vec(),
            s.members.generation() + 1,
        );
        s.members = Arc::new(candidate);
        (Arc::clone(&s.members), next)
    };
    publish(shared, &members.0, false);
    members.1
}

fn publish(shared: &Shared, members: &Members, quiet: bool) {
    if !quiet {
        tracing::info!(
            identity = %shared.options.identity,
            members = %members.live().join(","),
            generation = members.generation(),
            "shard members changed"
        );
    }
    shared.notify.send_modify(|n| *n += 1);
}

/// Deletes this replica's Lease (a clean stop): its share moves at once.
async fn leave(api: &Api<Lease>, shared: &Shared) {
    let name = lease_name(&shared.options);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => tracing::info!(lease = %name, "left the shards"),
        Err(e) => tracing::debug!(lease = %name, error = %e, "cannot delete the membership Lease"),
    }
}
