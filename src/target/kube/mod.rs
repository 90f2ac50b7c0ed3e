//! The Kubernetes target: server-side apply to a cluster.
//!
//! Objects are applied with server-side apply under converge's field manager
//! (`force`, so converge's fields win), in dependency order (Namespace first,
//! workloads after their configuration); deletions run in the reverse order
//! with the Namespace last. Kinds are resolved through discovery, so objects
//! of custom templates may be of any kind, custom resources included; an
//! unknown kind is that environment's error.
//!
//! **Inventory and ownership live in the cluster.** Each environment has one
//! `ConfigMap`, `converge.inventory.<environment>`, in the inventory
//! Namespace (`converge-system` by default), labelled
//! `converge.dev/inventory` and annotated with the installation, written or
//! deleted only when it is this installation's (else `ForeignObject`),
//! listing the record converge keeps and
//! every object it applied (identity and digest). A restart with an empty
//! state dir, a restored backup or a second replica therefore agrees with what
//! is applied. Like the manifests target, an apply widens the inventory
//! (new objects listed with a pending digest) before anything is written and
//! narrows it after old objects are gone, so a crash at any moment leaves
//! every object converge wrote listed, and the next pass converges.
//!
//! **All or nothing, as far as the API server can tell.** Before the first
//! write of an environment's change, every object it creates or updates is
//! server-side applied as a dry run (`dryRun=All`, the same field manager
//! and force): one the API server refuses (invalid, forbidden by RBAC or an
//! admission policy, an unknown kind) fails the environment with that
//! refusal, and nothing of it is written. Objects in a Namespace that does
//! not exist yet cannot be dry-run before it does: their kinds are resolved
//! first, and they are dry-run right after their Namespace is created (the
//! inventory widened first), before anything else is written; a refusal
//! then deletes that Namespace again and puts the inventory back as it
//! was. Unchanged objects are not dry-run.
//!
//! **Never someone else's object.** An object not in the inventory is looked
//! up before it is first applied (unless its Namespace is created by the same
//! change, so nothing can be in it yet): one that exists without converge's
//! ownership labels, or with another environment's, is never overwritten,
//! adopted or deleted (`ForeignObject`). Prune deletes only objects that still
//! carry the labels, with the uid they were read with as a precondition; a
//! failed delete stays in the inventory and is retried.
//!
//! **Errors are classified** by HTTP status: unreachable, timeouts, 429 and
//! 5xx are transient (retried with backoff, nothing deleted); 401/403 are
//! `Forbidden` naming the verb and resource; a 422 `Invalid` whose status
//! causes refuse a field as immutable is `ImmutableField` (or, with
//! `recreate`, a delete and a create); other refusals are `Invalid`.
//!
//! The files, after fluxcd/pkg `ssa/`: `client.rs` (setup, discovery),
//! `inventory.rs` (the inventory `ConfigMap`s), `apply.rs` (dry run,
//! ownership, apply by rank), `delete.rs`, `watch.rs` and `drift.rs` (the
//! watches and what they saw), `pods.rs`, `events.rs`, `error.rs`,
//! `environment.rs` (the `Environment` publisher).
//!
//! Every API call runs on a runtime this target owns ([`crate::io_runtime`]):
//! the pass stays synchronous.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kube::core::ApiResource;
use kube::discovery::Scope;

use super::{EnvironmentChange, Inventory, LiveEnvironment, Target};
use crate::config::KubernetesConfig;
use crate::coordination::Coordination;
use crate::health::ObjectHealth;
use crate::object::ObjectRef;
use crate::render::Digest;

mod apply;
mod client;
mod delete;
mod drift;
pub mod environment;
mod error;
mod events;
mod inventory;
mod pods;
mod watch;

pub use self::error::{Failure, RequestError, SetupError};
use self::inventory::Held;
pub use self::inventory::INSTALLATION_ANNOTATION;
use self::watch::{WATCHED, WORKLOADS, Watches};

/// The label marking an inventory `ConfigMap`.
pub const INVENTORY_LABEL: &str = "converge.dev/inventory";
/// Group, version, kind.
type Gvk = (String, String, String);

/// An object as the watches know it: kind, namespace (empty for cluster
/// scope), name.
type Key = (&'static str, String, String);

/// A cluster, through its API server.
pub struct Kubernetes {
    runtime: crate::io_runtime::Runtime,
    client: kube::Client,
    /// For clients on other runtimes (the health watches).
    config: kube::Config,
    options: KubernetesConfig,
    /// Discovery results by group, version and kind.
    resources: Mutex<HashMap<Gvk, (ApiResource, Scope)>>,
    /// The inventory as last read or written (like the manifests target's).
    cache: Mutex<Option<Arc<Inventory>>>,
    /// Started by the first [`Target::health`].
    watches: std::sync::OnceLock<Watches>,
    /// Publishes Kubernetes Events (repeats folded into series).
    recorder: kube::runtime::events::Recorder,
    /// Leader election and shard membership, when configured: every write
    /// of a change is fenced by them.
    coordination: Coordination,
    /// The members' generation the cached inventory was read under: a
    /// replica that gains environments reads them again (others wrote them).
    cache_generation: std::sync::atomic::AtomicU64,
    /// Bumped when health, drift or the shard members change.
    notify: tokio::sync::watch::Sender<u64>,
    /// The inventory Namespace is known to exist (written once per process).
    namespace_ensured: std::sync::atomic::AtomicBool,
    /// The inventory `ConfigMap`s known to be this installation's, by
    /// environment (read with the inventory, or created by this process).
    held: Mutex<HashMap<String, Held>>,
    /// Publishes `Environment` resources (started by the first publish).
    environments: std::sync::OnceLock<environment::Publisher>,
    /// Each watched object's [`drift::fingerprint`] of the fields converge owned
    /// after its last apply (kept in the inventory).
    fingerprints: Arc<Mutex<HashMap<Key, String>>>,
    /// A one-shot run's (no watches) objects the inventory lists that are
    /// gone or were edited, found by one metadata LIST per kind; `None`
    /// until looked for since the inventory was last read.
    scanned: Mutex<Option<HashMap<Key, String>>>,
    /// Drift the state store remembered from before a restart, by
    /// environment and `Kind/name`: each entry stands until converge
    /// applies (or deletes) the object again.
    restored: Mutex<HashMap<String, BTreeMap<String, String>>>,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Kubernetes {
    /// Environments applied at once: a quarter of `concurrency`.
    fn environments_at_once(&self) -> usize {
        (self.options.concurrency / 4).max(1)
    }

    /// Requests in flight within one environment, so that in all at most
    /// `concurrency` are.
    fn per_environment(&self) -> usize {
        (self.options.concurrency / self.environments_at_once()).max(1)
    }

    /// A write of `environment` is refused unless this replica leads (leader
    /// election) and owns it (shards): checked before every write of a change.
    fn fence(&self, environment: &str) -> Result<(), super::Error> {
        self.coordination
            .fence(environment)
            .map_err(super::Error::Fenced)
    }
}

impl Target for Kubernetes {
    /// With `drift: correct`, objects that drifted are listed with a
    /// pending digest, so the pass applies them again.
    fn inventory(&self) -> Result<Arc<Inventory>, super::Error> {
        if let Some(generation) = self.coordination.generation() {
            let read_under = self
                .cache_generation
                .swap(generation, std::sync::atomic::Ordering::Relaxed);
            if read_under != generation {
                *self.cached() = None;
            }
        }
        let inventory = {
            let mut cache = self.cached();
            if let Some(inventory) = cache.as_ref() {
                Arc::clone(inventory)
            } else {
                let inventory = Arc::new(self.runtime.block_on(self.read_all())?);
                *self.scanned.lock().unwrap_or_else(PoisonError::into_inner) = None;
                *cache = Some(Arc::clone(&inventory));
                inventory
            }
        };
        if self.watches.get().is_none() {
            self.scan_once(&inventory);
        }
        if self.options.drift != crate::config::Drift::Correct {
            return Ok(inventory);
        }
        let mut corrected: Option<Inventory> = None;
        for (name, env) in &inventory.environments {
            let drifted: Vec<ObjectRef> = self
                .drifted_objects(name, env, Some(env))
                .into_iter()
                .filter(|(id, _)| env.objects.get(*id).is_some_and(|d| !d.is_pending()))
                .map(|(id, _)| id.clone())
                .collect();
            if drifted.is_empty() {
                continue;
            }
            let all = corrected.get_or_insert_with(|| (*inventory).clone());
            if let Some(env) = all.environments.get_mut(name) {
                let env = Arc::make_mut(env);
                for id in drifted {
                    env.objects.insert(id, Digest::PENDING);
                }
            }
        }
        Ok(corrected.map_or(inventory, Arc::new))
    }

    fn reload(&self) {
        if let Some(publisher) = self.environments.get() {
            publisher.resync();
        }
        *self.cached() = None;
        *self.scanned.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.namespace_ensured
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Workloads' health from the watches: an object not listed yet is not
    /// observed (in progress); one gone after the first listing is not found.
    fn health(
        &self,
        environment: &str,
        live: &LiveEnvironment,
    ) -> Option<Vec<(String, ObjectHealth)>> {
        let observed = self
            .watches()
            .observed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut objects = live
            .objects
            .keys()
            .filter_map(|id| {
                let kind = WORKLOADS.iter().copied().find(|k| *k == &*id.kind)?;
                let key = (kind, namespace_of(id, environment), id.name.to_string());
                let health = match observed.health.get(&key) {
                    Some(h) => h.clone(),
                    None if observed.synced.contains(kind) => ObjectHealth::not_found(),
                    None => ObjectHealth::not_observed(),
                };
                Some((format!("{}/{}", id.kind, id.name), health))
            })
            .collect::<Vec<_>>();
        // The workloads' pods the scheduler could not place: why a
        // workload does not roll out, named with it.
        objects.extend(
            observed
                .unschedulable
                .get(environment)
                .into_iter()
                .flatten()
                .map(|(pod, health)| (format!("Pod/{pod}"), health.clone())),
        );
        Some(objects)
    }

    /// Never starts the watches: a one-shot run answers from its listing.
    fn drift(&self, environment: &str, live: &LiveEnvironment) -> Vec<(String, String)> {
        let base = self.cached().clone();
        let base = base.as_ref().and_then(|b| b.environments.get(environment));
        self.drifted_objects(environment, live, base.map(AsRef::as_ref))
            .into_iter()
            .map(|(id, how)| (format!("{}/{}", id.kind, id.name), how))
            .collect()
    }

    fn restore_drift(&self, drift: &BTreeMap<String, Vec<(String, String)>>) {
        *self.restored.lock().unwrap_or_else(PoisonError::into_inner) = drift
            .iter()
            .map(|(env, objects)| (env.clone(), objects.iter().cloned().collect()))
            .collect();
    }

    /// Does not start the watches: they start with the first pass's
    /// [`Target::health`], after the inventory (and with it the field
    /// fingerprints their first listing is compared with) was read. Started
    /// before, a listing could take an edited object as the baseline and
    /// never report the edit.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.notify.subscribe())
    }

    /// Events go to the environment's Namespace, about the Namespace, at
    /// most [`events::EVENTS_PER_CALL`] per call; a Namespace being deleted takes
    /// none (best effort: failures are logged, never an error of the pass).
    fn record(&self, events: &[super::TargetEvent<'_>]) {
        self.record_events(events);
    }

    /// `Environment` resources in the inventory Namespace
    /// ([`environment`]), when `environments.publish` is on.
    fn publish(&self, all: &BTreeMap<String, Arc<crate::status::EnvStatus>>, changed: &[String]) {
        if !self.options.environments.publish {
            return;
        }
        let publisher = self.environments.get_or_init(|| {
            environment::Publisher::start(environment::Options {
                config: self.config.clone(),
                namespace: self.options.inventory_namespace.clone(),
                manager: self.options.field_manager.clone(),
                install_crd: self.options.environments.install_crd,
                concurrency: self.options.concurrency,
            })
        });
        publisher.publish(all, changed, self.coordination.current_members());
    }

    /// A server-side dry run of every object `change` writes that exists:
    /// its field-level changes (Secret values never shown).
    fn preview(
        &self,
        change: &EnvironmentChange<'_>,
    ) -> Result<Vec<(ObjectRef, Vec<crate::diff::FieldChange>)>, super::Error> {
        self.runtime.block_on(async {
            let previews: Vec<_> = change
                .upserts
                .iter()
                .map(|r| async move {
                    let fields = self.preview_object(r, change.name).await?;
                    Ok::<_, super::Error>(fields.map(|f| (r.object.id.clone(), f)))
                })
                .collect();
            let found: Vec<Option<(ObjectRef, Vec<crate::diff::FieldChange>)>> =
                stream::iter(previews)
                    .buffered(self.options.concurrency.max(1))
                    .try_collect()
                    .await?;
            Ok(found.into_iter().flatten().collect())
        })
    }

    fn leading(&self) -> bool {
        self.coordination.leading()
    }

    /// A one-shot run waits (at most two lease durations) to become an
    /// active member; the daemon passes only while it is one.
    fn members(&self) -> Option<Arc<crate::shard::Members>> {
        self.coordination.members()
    }

    fn apply(&self, change: &EnvironmentChange<'_>) -> Result<(), super::Error> {
        self.apply_all(std::slice::from_ref(change))
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Environments are applied concurrently (each in its own order); the
    /// in-memory inventory follows every outcome, and an environment whose
    /// apply failed is read again from the cluster.
    fn apply_all(&self, changes: &[EnvironmentChange<'_>]) -> Vec<Result<(), super::Error>> {
        // A one-shot run with an election waits (at most a lease duration
        // and a retry) to lead; the daemon applies only while it leads.
        if let Some(le) = &self.options.leader_election {
            let deadline = Instant::now() + le.lease_duration + le.retry_period;
            while !self.leading() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let known = self.cached().clone();
        let results: Vec<Result<Option<LiveEnvironment>, super::Error>> =
            self.runtime.block_on(async {
                let ensure = if self
                    .namespace_ensured
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    Ok(())
                } else {
                    self.ensure_inventory_namespace().await
                };
                if ensure.is_ok() {
                    self.namespace_ensured
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if let Err(e) = ensure {
                    let shared = Arc::new(e);
                    return changes
                        .iter()
                        .map(|_| {
                            Err(super::Error::Transient(Box::new(Failure::Shared(
                                shared.clone(),
                            ))))
                        })
                        .collect();
                }
                let per_env = self.environments_at_once();
                let applies: Vec<_> = changes
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let known = known
                            .as_ref()
                            .and_then(|inv| inv.environments.get(c.name).cloned());
                        async move { (i, self.apply_one(c, known).await) }
                    })
                    .collect();
                // Unordered: an environment that finishes frees its slot at
                // once; the results are put back in order.
                let mut done: Vec<(usize, Result<Option<LiveEnvironment>, super::Error>)> =
                    stream::iter(applies)
                        .buffer_unordered(per_env)
                        .collect()
                        .await;
                done.sort_by_key(|(i, _)| *i);
                done.into_iter().map(|(_, r)| r).collect()
            });
        let mut cache = self.cached();
        let mut out = Vec::with_capacity(results.len());
        let mut reread = false;
        if let Some(inventory) = cache.as_mut() {
            let environments = &mut Arc::make_mut(inventory).environments;
            for (change, result) in changes.iter().zip(results) {
                match result {
                    Ok(Some(live)) => {
                        environments.insert(change.name.to_owned(), Arc::new(live));
                        out.push(Ok(()));
                    }
                    Ok(None) => {
                        environments.remove(change.name);
                        out.push(Ok(()));
                    }
                    Err(e) => {
                        reread = true;
                        out.push(Err(e));
                    }
                }
            }
        } else {
            out = results.into_iter().map(|r| r.map(drop)).collect();
        }
        if reread {
            *cache = None; // what the cluster says is the truth
        }
        out
    }
}

/// The namespace an object of `environment` lives in, as the watches key
/// it (empty for a Namespace, the only cluster-scoped kind watched).
fn namespace_of(id: &ObjectRef, environment: &str) -> String {
    if &*id.kind == "Namespace" {
        String::new()
    } else {
        id.namespace.as_deref().unwrap_or(environment).to_owned()
    }
}

/// The watches' key of an object of a watched kind.
fn watched_key(id: &ObjectRef, environment: &str) -> Option<Key> {
    let kind = WATCHED.iter().copied().find(|k| *k == &*id.kind)?;
    Some((kind, namespace_of(id, environment), id.name.to_string()))
}

fn shown(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!(" {ns}/{name}"),
        None => format!(" {name}"),
    }
}

#[cfg(test)]
mod tests;
