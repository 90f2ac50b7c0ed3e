//! Who may write: leader election and shard membership, on Kubernetes Leases.
//!
//! Neither is a target: they decide whether this replica writes at all
//! ([`election`]) and which environments it writes ([`membership`], with the
//! rendezvous hash of [`crate::shard`]). Each keeps its Lease on a thread and
//! runtime of its own ([`Keeper`]), so renewals go on however busy a pass
//! keeps the daemon's runtime. [`Coordination`] starts them on first use and
//! fences every write of a change: a write this replica may not make is
//! refused with [`Fenced`], which the target reports as `NotLeader` or
//! `NotOwner` and retries, never as an IO failure.

pub mod election;
pub mod membership;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;

use crate::config::{LeaderElection, Shards};
use crate::render::MANAGED_BY;
use crate::shard::Members;

use election::Election;
use membership::Membership;

/// Why this replica may not write an environment now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    /// Leader election is configured and this replica does not lead.
    #[error("this replica does not lead (leader election): not applying")]
    NotLeader,
    /// Shards are configured and another replica owns the environment.
    #[error("environment {0}: this replica does not own it (shards): not applying")]
    NotOwner(String),
}

/// The leader election and the shard membership a target is configured
/// with, each started on first use.
pub struct Coordination {
    config: kube::Config,
    /// The Namespace the Leases live in (the inventory's).
    namespace: String,
    field_manager: String,
    leader_election: Option<LeaderElection>,
    shards: Option<Shards>,
    /// Bumped when leadership or the members change.
    notify: tokio::sync::watch::Sender<u64>,
    election: OnceLock<Election>,
    membership: OnceLock<Membership>,
}

impl std::fmt::Debug for Coordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordination")
            .field("namespace", &self.namespace)
            .field("election", &self.election.get())
            .field("membership", &self.membership.get())
            .finish_non_exhaustive()
    }
}

impl Coordination {
    #[must_use]
    pub fn new(
        config: kube::Config,
        namespace: String,
        field_manager: String,
        leader_election: Option<LeaderElection>,
        shards: Option<Shards>,
        notify: tokio::sync::watch::Sender<u64>,
    ) -> Coordination {
        Coordination {
            config,
            namespace,
            field_manager,
            leader_election,
            shards,
            notify,
            election: OnceLock::new(),
            membership: OnceLock::new(),
        }
    }

    /// The leader election, when configured (started on first use).
    fn election(&self) -> Option<&Election> {
        let options = self.leader_election.as_ref()?;
        Some(self.election.get_or_init(|| {
            let mut options = options.clone();
            if options.identity.is_empty() {
                options.identity = default_identity();
            }
            Election::start(self.lease_space(), options, self.notify.clone())
        }))
    }

    /// The shard membership, when configured (started on first use).
    fn membership(&self) -> Option<&Membership> {
        let options = self.shards.as_ref()?;
        Some(self.membership.get_or_init(|| {
            let mut options = options.clone();
            if options.identity.is_empty() {
                options.identity = lease_safe(&default_identity());
            }
            Membership::start(self.lease_space(), options, self.notify.clone())
        }))
    }

    fn lease_space(&self) -> LeaseSpace {
        LeaseSpace {
            config: self.config.clone(),
            namespace: self.namespace.clone(),
            field_manager: self.field_manager.clone(),
        }
    }

    /// Whether this replica may write at all now: it leads (leader
    /// election) and is an active member (shards).
    #[must_use]
    pub fn leading(&self) -> bool {
        self.election().is_none_or(Election::leading)
            && self.membership().is_none_or(Membership::active)
    }

    /// The shard members, when shards are configured. A one-shot run waits
    /// (at most two lease durations) to become an active member.
    #[must_use]
    pub fn members(&self) -> Option<Arc<Members>> {
        let m = self.membership()?;
        if let Some(o) = &self.shards {
            m.wait_active(o.lease_duration * 2 + o.retry_period);
        }
        Some(m.members())
    }

    /// The shard members as of the last round, without waiting; `None`
    /// without shards.
    #[must_use]
    pub fn current_members(&self) -> Option<Arc<Members>> {
        self.membership().map(Membership::members)
    }

    /// The generation of the shard members as of the last round (bumped
    /// whenever they change), without waiting; `None` without shards.
    #[must_use]
    pub fn generation(&self) -> Option<u64> {
        self.current_members().map(|m| m.generation())
    }

    /// A write of `environment` is refused unless this replica leads
    /// (leader election) and owns it (shards): checked before every write
    /// of a change.
    pub fn fence(&self, environment: &str) -> Result<(), Fenced> {
        if !self.election().is_none_or(Election::leading) {
            return Err(Fenced::NotLeader);
        }
        if !self.membership().is_none_or(|m| m.owns_now(environment)) {
            return Err(Fenced::NotOwner(environment.to_owned()));
        }
        Ok(())
    }
}

/// An identity for this replica: the pod name, else host name and pid.
#[must_use]
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "converge".to_owned());
    format!("{host}-{}", std::process::id())
}

/// `identity` made fit for a Lease's name (lower case, `[a-z0-9.-]`).
#[must_use]
pub fn lease_safe(identity: &str) -> String {
    identity
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Where a keeper keeps its Lease: the cluster, the Namespace, and the
/// field manager that creates that Namespace when it is missing.
pub(crate) struct LeaseSpace {
    config: kube::Config,
    namespace: String,
    field_manager: String,
}

/// The Leases of a [`LeaseSpace`], through a keeper's own client.
pub(crate) struct Leases {
    pub api: Api<Lease>,
    client: kube::Client,
    namespace: String,
    field_manager: String,
}

impl Leases {
    /// Runs `round`, and once more after creating the Namespace when the
    /// first try found it missing (404).
    pub async fn in_namespace<T, F, Fut>(&self, round: F) -> Result<T, kube::Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        match round().await {
            Err(kube::Error::Api(s)) if s.code == 404 => {
                ensure_namespace(&self.client, &self.namespace, &self.field_manager).await?;
                round().await
            }
            outcome => outcome,
        }
    }
}

/// A Lease kept on a thread of its own, with a current-thread runtime and a
/// kube client of its own. Dropping it stops the keeping loop and waits for
/// what it does on a clean stop (release or delete its Lease).
pub(crate) struct Keeper {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    /// Runs `keep` until the keeper is dropped, then `stop`. `what` names it
    /// in the errors that stop it from starting.
    pub fn start<K, KF, S, SF>(
        thread: &str,
        what: &'static str,
        space: LeaseSpace,
        keep: K,
        stop: S,
    ) -> Keeper
    where
        K: FnOnce(Arc<Leases>) -> KF + Send + 'static,
        KF: Future<Output = ()>,
        S: FnOnce(Arc<Leases>) -> SF + Send + 'static,
        SF: Future<Output = ()>,
    {
        let (stop_tx, stopped) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    tracing::error!("cannot start {what}'s runtime");
                    return;
                };
                runtime.block_on(async move {
                    let client = match kube::Client::try_from(space.config) {
                        Ok(client) => client,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start {what}'s client");
                            return;
                        }
                    };
                    let leases = Arc::new(Leases {
                        api: Api::namespaced(client.clone(), &space.namespace),
                        client,
                        namespace: space.namespace,
                        field_manager: space.field_manager,
                    });
                    tokio::select! {
                        () = keep(leases.clone()) => {}
                        _ = stopped => stop(leases).await,
                    }
                });
            });
        let thread = match spawned {
            Ok(thread) => Some(thread),
            Err(e) => {
                tracing::error!(error = %e, "cannot start {what}");
                None
            }
        };
        Keeper {
            stop: Some(stop_tx),
            thread,
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Makes sure a Namespace converge keeps its own objects in (the Leases'
/// and the inventories') exists: one that exists is used as it is, its
/// labels untouched (someone else may have made it: the Helm release's
/// namespace); one that does not is created, carrying converge's label.
pub(crate) async fn ensure_namespace(
    client: &kube::Client,
    name: &str,
    field_manager: &str,
) -> Result<(), kube::Error> {
    ensure_namespace_as(client, name, field_manager)
        .await
        .map_err(|(_, e)| e)
}

/// [`ensure_namespace`], saying which request failed (`get`, `create`).
pub(crate) async fn ensure_namespace_as(
    client: &kube::Client,
    name: &str,
    field_manager: &str,
) -> Result<(), (&'static str, kube::Error)> {
    use k8s_openapi::api::core::v1::Namespace;
    let api: Api<Namespace> = Api::all(client.clone());
    if api
        .get_metadata_opt(name)
        .await
        .map_err(|e| ("get", e))?
        .is_some()
    {
        return Ok(());
    }
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.to_owned(),
                "converge".to_owned(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    let params = kube::api::PostParams {
        field_manager: Some(field_manager.to_owned()),
        ..Default::default()
    };
    match api.create(&params, &ns).await {
        Ok(_) => Ok(()),
        // Made meanwhile by someone else: used as it is.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(("create", e)),
    }
}
