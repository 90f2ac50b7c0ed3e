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
//! `Forbidden` naming the verb and resource; a 422 naming an immutable field
//! is `ImmutableField` (or, with `recreate`, a delete and a create); other
//! refusals are `Invalid`.
//!
//! Every API call runs on a runtime this target owns ([`crate::blocking`]):
//! the pass stays synchronous.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;
use serde::{Deserialize, Serialize};

use super::{EnvironmentChange, EnvironmentRecord, Inventory, LiveEnvironment, Target};
use crate::config::KubernetesConfig;
use crate::coordination::Coordination;
use crate::health::ObjectHealth;
use crate::object::{ObjectRef, kind, kind_rank, shared};
use crate::render::{Digest, ENVIRONMENT_LABEL, MANAGED_BY, Rendered};

/// The label marking an inventory `ConfigMap`.
pub const INVENTORY_LABEL: &str = "converge.dev/inventory";
/// The key of an inventory `ConfigMap` holding the inventory.
const INVENTORY_KEY: &str = "inventory.json";
const FORMAT_VERSION: u32 = 1;

/// One failed request, as the API server or the connection said.
#[derive(Debug, thiserror::Error)]
#[error("{verb} {resource}{object}: {message}")]
pub struct RequestError {
    /// `get`, `list`, `patch`, `delete`, `discover`.
    pub verb: &'static str,
    /// `deployments.apps`, `configmaps`.
    pub resource: String,
    /// ` <namespace>/<name>`, or empty.
    pub object: String,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    pub message: String,
    #[source]
    pub source: Option<kube::Error>,
}

/// Why the target cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot read kubeconfig {path}: {source}")]
    KubeconfigUnreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use the kubeconfig context: {0}")]
    Context(#[source] kube::config::KubeconfigError),
    #[error(
        "no Kubernetes configuration: no kubeconfig given, none in $KUBECONFIG or ~/.kube/config, and not running in a cluster ({0})"
    )]
    Infer(#[source] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("cannot start the Kubernetes client's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Group, version, kind.
type Gvk = (String, String, String);

/// Kinds whose status says whether they rolled out: watched whole, for
/// health. Every other watched kind is watched by metadata only, for drift.
const WORKLOADS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet", "Job"];

/// An object as the watches know it: kind, namespace (empty for cluster
/// scope), name.
type Key = (&'static str, String, String);

/// What the watches have seen, shared with the target.
#[derive(Debug, Default)]
struct Observed {
    /// Workloads' health.
    health: HashMap<Key, ObjectHealth>,
    /// Watched objects that exist.
    present: HashSet<Key>,
    /// Kinds whose first listing is complete.
    synced: HashSet<&'static str>,
    /// The fields converge owned right after its last apply (or when first
    /// seen by this process), as sorted hashes of their paths (a few hundred
    /// bytes per object, not kilobytes of paths): drift is losing one of
    /// them, or the object.
    baseline: HashMap<Key, Box<[u64]>>,
    /// Objects that drifted since converge last applied them, and how.
    drifted: HashMap<Key, String>,
    /// The uid of each object as the watch last saw it exist.
    uids: HashMap<Key, String>,
    /// Objects converge applied that the watch has not seen since (the uid
    /// the apply returned): until it does, what it says of an object by
    /// that name is older than the apply (a listing taken before it, an
    /// event about an earlier object) and is no drift.
    unseen: HashMap<Key, String>,
    /// The pods of converge's workloads that the scheduler could not
    /// place, by namespace and pod name, with why (`PodScheduled` False,
    /// `Unschedulable`) and the node labels they require: a workload that
    /// does not roll out names them (a cluster without the node-pool labels).
    unschedulable: HashMap<String, BTreeMap<String, ObjectHealth>>,
}

/// The hash of one field path (the same in every call of a process).
fn hash_path(path: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(path)
}

/// Sorted hashes of field paths.
fn hashed(fields: &BTreeSet<String>) -> Box<[u64]> {
    let mut out: Vec<u64> = fields.iter().map(|f| hash_path(f)).collect();
    out.sort_unstable();
    out.dedup();
    out.into_boxed_slice()
}

impl Observed {
    /// How an object converge applied drifted: as a watch saw it, or gone
    /// from its kind's complete listing without converge having applied it
    /// since (deleted while converge was not watching).
    fn drift_of(&self, key: &Key) -> Option<&str> {
        if let Some(how) = self.drifted.get(key) {
            return Some(how);
        }
        (self.synced.contains(key.0)
            && !self.present.contains(key)
            && !self.unseen.contains_key(key))
        .then_some("deleted")
    }

    /// Records what a watch saw of `key` (`None`: deleted; else converge's
    /// fields and every other manager's) and whether that is drift from the
    /// baseline.
    /// A watch saw `key` exist (`meta`, converge's fields and every other
    /// manager's). First seen by this process, it is compared with the
    /// fields converge owned after its last apply, as the inventory keeps
    /// them (`fingerprints`).
    fn sighted(
        &mut self,
        key: &Key,
        meta: &kube::api::ObjectMeta,
        ours: BTreeSet<String>,
        others: &[(String, BTreeSet<String>)],
        fingerprints: &Mutex<HashMap<Key, String>>,
    ) {
        let edited_before = if self.baseline.contains_key(key) {
            None
        } else {
            fingerprints
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(key)
                .and_then(|f| edit_detail(f, &ours, others))
        };
        self.saw(
            key.clone(),
            meta.uid.as_deref(),
            meta.deletion_timestamp.is_some(),
            Some(ours),
            others,
        );
        if let Some(detail) = edited_before {
            self.drifted.insert(
                key.clone(),
                format!("{detail}, while converge was not watching"),
            );
        }
    }

    /// `uid` is the object's (`None`: gone from a listing, never seen);
    /// `terminating`: it has a deletion timestamp.
    fn saw(
        &mut self,
        key: Key,
        uid: Option<&str>,
        terminating: bool,
        fields: Option<BTreeSet<String>>,
        others: &[(String, BTreeSet<String>)],
    ) {
        if let Some(applied) = self.unseen.get(&key) {
            if uid != Some(applied.as_str()) {
                return; // older than converge's apply: not drift
            }
            if fields.is_some() {
                self.unseen.remove(&key);
            }
        }
        let Some(baseline) = self.baseline.get(&key) else {
            if let Some(fields) = fields {
                // An object already being deleted is no baseline (converge
                // deleted it, or applied it in vain while it terminated):
                // its going is no drift.
                if !terminating {
                    self.baseline.insert(key.clone(), hashed(&fields));
                }
                self.present.insert(key.clone());
                if let Some(uid) = uid {
                    self.uids.insert(key, uid.to_owned());
                }
            } else {
                self.present.remove(&key);
                self.uids.remove(&key);
            }
            return;
        };
        let Some(fields) = fields else {
            // A deletion counts only for an object the watch saw exist.
            let seen = uid.is_some() && self.uids.get(&key).map(String::as_str) == uid;
            if seen {
                self.drifted.insert(key.clone(), "deleted".to_owned());
            }
            self.present.remove(&key);
            self.uids.remove(&key);
            return;
        };
        if let Some(uid) = uid {
            self.uids.insert(key.clone(), uid.to_owned());
        }
        let current = hashed(&fields);
        let lost: HashSet<u64> = baseline
            .iter()
            .filter(|h| current.binary_search(h).is_err())
            .copied()
            .collect();
        self.present.insert(key.clone());
        if lost.is_empty() {
            return;
        }
        // Name the lost fields by whoever owns them now; fields an
        // autoscaler took through the scale subresource are its to set.
        let mut names = BTreeSet::new();
        let mut by = Vec::new();
        let mut scaled = 0;
        for (manager, owned) in others {
            let taken: Vec<&String> = owned
                .iter()
                .filter(|f| lost.contains(&hash_path(f)))
                .collect();
            if taken.is_empty() {
                continue;
            }
            if manager.ends_with(SCALER) {
                scaled += taken.len();
            } else {
                names.extend(taken.into_iter().cloned());
                by.push(manager.as_str());
            }
        }
        if scaled == lost.len() {
            return;
        }
        let mut detail = if names.is_empty() {
            format!("edited: {} field(s) converge set", lost.len() - scaled)
        } else {
            format!(
                "edited: {}",
                names.into_iter().collect::<Vec<_>>().join(", ")
            )
        };
        if !by.is_empty() {
            detail = format!("{detail} (by {})", by.join(", "));
        }
        self.drifted.insert(key, detail);
    }
}

/// Label-selected watches of the kinds converge applies, on a thread of
/// their own (a current-thread runtime runs only while blocked on): one LIST
/// and one WATCH per kind, whatever the number of environments; workloads
/// whole (for health), the rest by metadata only (for drift). Stopped when
/// the target is dropped.
struct Watches {
    observed: Arc<Mutex<Observed>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// What one watch needs.
struct Watch<'a> {
    kind: &'static str,
    manager: &'a str,
    observed: &'a Mutex<Observed>,
    /// The fingerprints of converge's fields the inventory keeps.
    fingerprints: &'a Mutex<HashMap<Key, String>>,
    changes: &'a tokio::sync::watch::Sender<u64>,
}

impl Watches {
    /// Starts the watches with a client of their own: a client's request
    /// queue runs on the runtime it was made on.
    /// `notify` is bumped when health or drift changes (the daemon wakes on it).
    fn start(
        config: kube::Config,
        manager: String,
        fingerprints: Arc<Mutex<HashMap<Key, String>>>,
        notify: tokio::sync::watch::Sender<u64>,
    ) -> Watches {
        use futures::FutureExt;
        use k8s_openapi::api::{
            apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch,
        };
        use k8s_openapi::api::{
            core::v1 as core, networking::v1 as networking, policy::v1 as policy,
        };
        use kube::core::PartialObjectMeta as Meta;
        let observed = Arc::new(Mutex::new(Observed::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = observed.clone();
        let spawned = std::thread::Builder::new()
            .name("converge-kube-watch".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    tracing::error!("cannot start the watches' runtime");
                    return;
                };
                runtime.block_on(async move {
                    let client = match kube::Client::try_from(config) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start the watches' client");
                            return;
                        }
                    };
                    let w = |kind| Watch {
                        kind,
                        manager: &manager,
                        observed: &shared,
                        fingerprints: &fingerprints,
                        changes: &notify,
                    };
                    let c = &client;
                    let watches = futures::future::join_all([
                        watch::<apps::Deployment>(c, w("Deployment"), true).boxed_local(),
                        watch::<apps::StatefulSet>(c, w("StatefulSet"), true).boxed_local(),
                        watch::<apps::DaemonSet>(c, w("DaemonSet"), true).boxed_local(),
                        watch::<batch::Job>(c, w("Job"), true).boxed_local(),
                        watch::<Meta<core::Namespace>>(c, w("Namespace"), false).boxed_local(),
                        watch::<Meta<core::ResourceQuota>>(c, w("ResourceQuota"), false)
                            .boxed_local(),
                        watch::<Meta<core::LimitRange>>(c, w("LimitRange"), false).boxed_local(),
                        watch::<Meta<core::ConfigMap>>(c, w("ConfigMap"), false).boxed_local(),
                        watch::<Meta<core::Secret>>(c, w("Secret"), false).boxed_local(),
                        watch::<Meta<core::Service>>(c, w("Service"), false).boxed_local(),
                        watch::<Meta<networking::NetworkPolicy>>(c, w("NetworkPolicy"), false)
                            .boxed_local(),
                        watch::<Meta<autoscaling::HorizontalPodAutoscaler>>(
                            c,
                            w("HorizontalPodAutoscaler"),
                            false,
                        )
                        .boxed_local(),
                        watch::<Meta<policy::PodDisruptionBudget>>(
                            c,
                            w("PodDisruptionBudget"),
                            false,
                        )
                        .boxed_local(),
                        watch_pods(c, &shared, &notify).boxed_local(),
                    ]);
                    tokio::select! {
                        _ = watches => {}
                        _ = stopped => {}
                    }
                });
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the watches");
        }
        Watches {
            observed,
            _stop: stop,
        }
    }
}

/// The field paths (`spec.replicas`, `metadata.labels.app`) a `fieldsV1`
/// trie names.
fn field_paths(trie: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    let Some(map) = trie.as_object() else {
        return;
    };
    if map.is_empty() && !prefix.is_empty() {
        out.insert(prefix.to_owned());
        return;
    }
    for (key, sub) in map {
        if key == "." {
            out.insert(prefix.to_owned());
            continue;
        }
        let part = key
            .strip_prefix("f:")
            .map(str::to_owned)
            .or_else(|| key.strip_prefix("k:").map(|k| format!("[{k}]")))
            .or_else(|| key.strip_prefix("v:").map(|v| format!("[{v}]")))
            .unwrap_or_else(|| key.clone());
        let path = if prefix.is_empty() {
            part
        } else if part.starts_with('[') {
            format!("{prefix}{part}")
        } else {
            format!("{prefix}.{part}")
        };
        field_paths(sub, &path, out);
    }
}

/// converge's owned field paths, and every other manager's.
type Owners = (BTreeSet<String>, Vec<(String, BTreeSet<String>)>);

/// A manager that changed fields through the scale subresource (an
/// autoscaler): taking `spec.replicas` that way is not drift.
const SCALER: &str = " (scale)";

/// Converge's owned fields and every other updater's, from managed fields
/// (the status subresource left out: controllers report there; the scale
/// subresource marked with [`SCALER`]).
fn owners(meta: &kube::api::ObjectMeta, manager: &str) -> Owners {
    let mut ours = BTreeSet::new();
    let mut others = Vec::new();
    for entry in meta.managed_fields.iter().flatten() {
        let scale = match entry.subresource.as_deref() {
            None | Some("") => false,
            Some("scale") => true,
            Some(_) => continue,
        };
        let mut fields = BTreeSet::new();
        if let Some(f) = &entry.fields_v1 {
            field_paths(&f.0, "", &mut fields);
        }
        match entry.manager.as_deref() {
            Some(m) if m == manager && !scale => ours.extend(fields),
            Some(m) if scale => others.push((format!("{m}{SCALER}"), fields)),
            Some(m) => others.push((m.to_owned(), fields)),
            None => {}
        }
    }
    (ours, others)
}

/// Follows one kind's objects carrying converge's label.
async fn watch<K>(client: &kube::Client, w: Watch<'_>, health: bool)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + Serialize
        + std::fmt::Debug
        + Send
        + 'static,
{
    use kube::runtime::{WatchStreamExt, watcher};
    let kind = w.kind;
    let key = |o: &K| -> Key {
        let meta = o.meta();
        (
            kind,
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    };
    let health_of = |o: &K| {
        serde_json::to_value(o).map_or_else(
            |_| ObjectHealth::not_observed(),
            |doc| crate::health::object(kind, &doc),
        )
    };
    let config = watcher::Config::default().labels(&format!("{MANAGED_BY}=converge"));
    let mut events = watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .boxed();
    let mut listing: Vec<K> = Vec::new();
    while let Some(event) = events.next().await {
        let lock = || w.observed.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = |observed: &mut Observed, o: &K| -> bool {
            let k = key(o);
            let (ours, others) = owners(o.meta(), w.manager);
            let drifted_before = observed.drifted.contains_key(&k);
            // First seen by this process: compared with the fields converge
            // owned after its last apply, as the inventory keeps them.
            observed.sighted(&k, o.meta(), ours, &others, w.fingerprints);
            let mut changed = observed.drifted.contains_key(&k) != drifted_before;
            if health {
                let h = health_of(o);
                changed |= observed.health.get(&k) != Some(&h);
                observed.health.insert(k, h);
            }
            changed
        };
        let changed = match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                false
            }
            Ok(watcher::Event::InitApply(o)) => {
                listing.push(o);
                false
            }
            Ok(watcher::Event::InitDone) => {
                let mut observed = lock();
                let listed: HashSet<Key> = listing.iter().map(&key).collect();
                let gone: Vec<Key> = observed
                    .present
                    .iter()
                    .chain(observed.baseline.keys())
                    .filter(|k| k.0 == kind && !listed.contains(*k))
                    .cloned()
                    .collect::<HashSet<Key>>()
                    .into_iter()
                    .collect();
                let mut changed = false;
                for k in gone {
                    observed.health.remove(&k);
                    let uid = observed.uids.get(&k).cloned();
                    observed.saw(k, uid.as_deref(), false, None, &[]);
                    changed = true;
                }
                for o in listing.drain(..) {
                    changed |= seen(&mut observed, &o);
                }
                // The first listing: objects the inventory lists that it
                // did not find are gone (the pass asks).
                changed |= observed.synced.insert(kind);
                changed
            }
            Ok(watcher::Event::Apply(o)) => seen(&mut lock(), &o),
            Ok(watcher::Event::Delete(o)) => {
                let mut observed = lock();
                observed.health.remove(&key(&o));
                observed.saw(key(&o), o.meta().uid.as_deref(), false, None, &[]);
                true
            }
            Err(e) => {
                tracing::debug!(kind, error = %crate::diagnostic::chain(&e), "watch failed; retrying");
                false
            }
        };
        if changed {
            w.changes.send_modify(|n| *n += 1);
        }
    }
}

/// Follows the Pending pods carrying converge's label (its workloads' pods)
/// and keeps only those the scheduler could not place
/// ([`Observed::unschedulable`]): no pod is kept otherwise, and a pod's
/// other changes wake nobody.
async fn watch_pods(
    client: &kube::Client,
    observed: &Mutex<Observed>,
    notify: &tokio::sync::watch::Sender<u64>,
) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::{WatchStreamExt, watcher};
    // Only Pending pods are streamed (a pod that leaves Pending arrives as
    // a deletion): running pods' status updates cost nothing.
    let config = watcher::Config::default()
        .labels(&format!("{MANAGED_BY}=converge"))
        .fields("status.phase=Pending");
    let mut events = watcher(Api::<Pod>::all(client.clone()), config)
        .default_backoff()
        .boxed();
    let mut listing: HashMap<String, BTreeMap<String, ObjectHealth>> = HashMap::new();
    while let Some(event) = events.next().await {
        let lock = || observed.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                false
            }
            Ok(watcher::Event::InitApply(pod)) => {
                if let (Some(health), (namespace, name)) = (unschedulable(&pod), pod_key(&pod)) {
                    listing.entry(namespace).or_default().insert(name, health);
                }
                false
            }
            Ok(watcher::Event::InitDone) => {
                let mut observed = lock();
                let changed = observed.unschedulable != listing;
                observed.unschedulable = std::mem::take(&mut listing);
                changed
            }
            Ok(watcher::Event::Apply(pod)) => {
                let (namespace, name) = pod_key(&pod);
                let mut observed = lock();
                match unschedulable(&pod) {
                    Some(health) => {
                        let pods = observed.unschedulable.entry(namespace).or_default();
                        pods.insert(name, health.clone()) != Some(health)
                    }
                    None => forget_pod(&mut observed, &namespace, &name),
                }
            }
            Ok(watcher::Event::Delete(pod)) => {
                let (namespace, name) = pod_key(&pod);
                forget_pod(&mut lock(), &namespace, &name)
            }
            Err(e) => {
                tracing::debug!(kind = "Pod", error = %crate::diagnostic::chain(&e), "watch failed; retrying");
                false
            }
        };
        if changed {
            notify.send_modify(|n| *n += 1);
        }
    }
}

fn pod_key(pod: &k8s_openapi::api::core::v1::Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Drops a pod from [`Observed::unschedulable`]; whether it was there.
fn forget_pod(observed: &mut Observed, namespace: &str, name: &str) -> bool {
    let Some(pods) = observed.unschedulable.get_mut(namespace) else {
        return false;
    };
    let removed = pods.remove(name).is_some();
    if pods.is_empty() {
        observed.unschedulable.remove(namespace);
    }
    removed
}

/// A pod's health when the scheduler could not place it (kstatus's pod
/// rule), its message followed by the node labels the pod requires (its
/// `nodeSelector` and required node affinity): what a cluster lacks.
fn unschedulable(pod: &k8s_openapi::api::core::v1::Pod) -> Option<ObjectHealth> {
    let doc = serde_json::to_value(pod).ok()?;
    let mut health = crate::health::object("Pod", &doc);
    if health.reason != crate::health::Reason::PodUnschedulable {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    let mut required: Vec<String> = spec
        .node_selector
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    for term in terms {
        for e in term.match_expressions.iter().flatten() {
            let values = e.values.as_deref().unwrap_or_default().join(", ");
            required.push(format!("{} {} [{values}]", e.key, e.operator));
        }
    }
    if !required.is_empty() {
        health.message = format!(
            "{} (it requires nodes labelled {})",
            health.message,
            required.join(" and ")
        );
    }
    Some(health)
}

/// A cluster, through its API server.
pub struct Kubernetes {
    runtime: crate::blocking::Runtime,
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
    environments: std::sync::OnceLock<super::kube_environment::Publisher>,
    /// Each watched object's [`fingerprint`] of the fields converge owned
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

/// How the dry run of one object went, short of an error that stops it.
enum DryRun {
    /// The API server would accept it.
    Passed,
    /// Its Namespace does not exist (yet); `error` if that stays so.
    NoNamespace {
        namespace: String,
        error: super::Error,
    },
    /// The API server refuses it.
    Refused(super::Error),
}

/// What [`Kubernetes::claim_inventory`] found.
enum Claimed {
    /// Created now, with the content.
    Created,
    /// This installation's, at this resourceVersion (if known).
    Ours(Option<String>),
}

/// An environment's inventory `ConfigMap`s known to be this installation's.
#[derive(Debug, Default, Clone)]
struct Held {
    /// The uid of the current one.
    current: Option<String>,
    /// Its resourceVersion as converge last read or wrote it: a write
    /// carries it, so one that finds it changed (or gone) looks again.
    version: Option<String>,
    /// A legacy-named one still to retire.
    legacy: Option<LegacyInventory>,
}

#[derive(Debug, Clone)]
struct LegacyInventory {
    uid: String,
    /// As read: changed since by anyone, it is left alone.
    resource_version: String,
    /// Only converge's field manager ever wrote it: it may be deleted.
    sole: bool,
}

impl std::fmt::Debug for Kubernetes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubernetes")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The inventory `ConfigMap`'s content.
#[derive(Serialize, Deserialize)]
struct InventoryDoc {
    format: u32,
    environment: String,
    record: EnvironmentRecord,
    objects: Vec<Entry>,
}

impl InventoryDoc {
    fn of(
        environment: &str,
        live: &LiveEnvironment,
        fingerprints: &HashMap<Key, String>,
    ) -> InventoryDoc {
        InventoryDoc {
            format: FORMAT_VERSION,
            environment: environment.to_owned(),
            record: live.record.clone(),
            objects: live
                .objects
                .iter()
                .map(|(id, digest)| Entry {
                    id: id.clone(),
                    digest: *digest,
                    fields: watched_key(id, environment)
                        .and_then(|k| fingerprints.get(&k).cloned()),
                })
                .collect(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    id: ObjectRef,
    digest: Digest,
    /// The fingerprint of the fields converge owned right after it last
    /// applied the object ([`fingerprint`]): a one-shot run compares it
    /// with what a metadata LIST says to find edits. Absent in inventories
    /// written before it was kept (no edits found until the next apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fields: Option<String>,
}

impl Kubernetes {
    /// A client for the configured cluster. Nothing is requested yet: a
    /// cluster that is down fails the first pass (transiently), not the start.
    pub fn from_config(options: &KubernetesConfig) -> Result<Kubernetes, SetupError> {
        let runtime = crate::blocking::Runtime::new().map_err(SetupError::Runtime)?;
        let kube_options = kube::config::KubeConfigOptions {
            context: options.context.clone(),
            ..Default::default()
        };
        let config = runtime.block_on(async {
            match &options.kubeconfig {
                Some(path) => {
                    let file = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                        let path = path.display().to_string();
                        match e {
                            // kube's own text repeats the path, quoted twice.
                            kube::config::KubeconfigError::ReadConfig(source, _) => {
                                SetupError::KubeconfigUnreadable { path, source }
                            }
                            source => SetupError::Kubeconfig { path, source },
                        }
                    })?;
                    kube::Config::from_custom_kubeconfig(file, &kube_options)
                        .await
                        .map_err(SetupError::Context)
                }
                None if options.context.is_some() => kube::Config::from_kubeconfig(&kube_options)
                    .await
                    .map_err(SetupError::Context),
                None => kube::Config::infer().await.map_err(SetupError::Infer),
            }
        })?;
        let mut config = config;
        config.read_timeout = Some(options.timeout);
        config.write_timeout = Some(options.timeout);
        config.connect_timeout = Some(options.timeout.min(Duration::from_secs(5)));
        let client = runtime
            .block_on(async { kube::Client::try_from(config.clone()) })
            .map_err(SetupError::Client)?;
        let recorder = kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: options.field_manager.clone(),
                instance: std::env::var("HOSTNAME").ok(),
            },
        );
        let notify = tokio::sync::watch::channel(0).0;
        let coordination = Coordination::new(
            config.clone(),
            options.inventory_namespace.clone(),
            options.field_manager.clone(),
            options.leader_election.as_deref().cloned(),
            options.shards.as_deref().cloned(),
            notify.clone(),
        );
        Ok(Kubernetes {
            runtime,
            client,
            config,
            options: options.clone(),
            resources: Mutex::new(HashMap::new()),
            cache: Mutex::new(None),
            watches: std::sync::OnceLock::new(),
            recorder,
            coordination,
            cache_generation: std::sync::atomic::AtomicU64::new(0),
            notify,
            namespace_ensured: std::sync::atomic::AtomicBool::new(false),
            held: Mutex::new(HashMap::new()),
            fingerprints: Arc::new(Mutex::new(HashMap::new())),
            scanned: Mutex::new(None),
            restored: Mutex::new(HashMap::new()),
            environments: std::sync::OnceLock::new(),
        })
    }

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

    /// The watches (started on first use).
    fn watches(&self) -> &Watches {
        self.watches.get_or_init(|| {
            Watches::start(
                self.config.clone(),
                self.options.field_manager.clone(),
                self.fingerprints.clone(),
                self.notify.clone(),
            )
        })
    }

    /// After converge applied `id` (with `fields` now its own) or deleted it
    /// (`None`): the new baseline of drift, and no drift.
    fn rebase(
        &self,
        id: &ObjectRef,
        environment: &str,
        applied: Option<(BTreeSet<String>, Option<String>)>,
    ) {
        let (fields, uid) = match applied {
            Some((fields, uid)) => (Some(fields), uid),
            None => (None, None),
        };
        if let Some(env) = self
            .restored
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(environment)
        {
            env.remove(&format!("{}/{}", id.kind, id.name));
        }
        let Some(key) = watched_key(id, environment) else {
            return;
        };
        match &fields {
            Some(fields) => self.fingerprints().insert(key.clone(), fingerprint(fields)),
            None => self.fingerprints().remove(&key),
        };
        if let Some(scanned) = self
            .scanned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            scanned.remove(&key);
        }
        let Some(watches) = self.watches.get() else {
            return;
        };
        let mut observed = watches
            .observed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        observed.drifted.remove(&key);
        match uid {
            // Seen already (the watch was quicker than this): nothing unseen.
            Some(uid) if observed.uids.get(&key) != Some(&uid) => {
                observed.unseen.insert(key.clone(), uid);
            }
            _ => {
                observed.unseen.remove(&key);
            }
        }
        match fields {
            Some(fields) => observed.baseline.insert(key, hashed(&fields)),
            None => observed.baseline.remove(&key),
        };
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<Arc<Inventory>>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn inventories(&self) -> Api<k8s_openapi::api::core::v1::ConfigMap> {
        Api::namespaced(self.client.clone(), &self.options.inventory_namespace)
    }

    /// This installation's identity on its inventories (the field manager).
    fn installation(&self) -> &str {
        &self.options.field_manager
    }

    fn fingerprints(&self) -> std::sync::MutexGuard<'_, HashMap<Key, String>> {
        self.fingerprints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads every environment's inventory `ConfigMap` (one paginated LIST):
    /// only those of this installation (labels, annotation, name); an
    /// inventory under its legacy name is adopted when no current one exists.
    async fn read_all(&self) -> Result<Inventory, super::Error> {
        let api = self.inventories();
        let mut current = BTreeMap::new();
        let mut legacy = BTreeMap::new();
        let mut held: HashMap<String, Held> = HashMap::new();
        let mut known: HashMap<Key, String> = HashMap::new();
        let mut params = ListParams::default()
            .labels(&format!("{INVENTORY_LABEL}=true"))
            .limit(500);
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(|e| classify(request_error("list", "configmaps", "", e)))?;
            for cm in page.items {
                let meta = &cm.metadata;
                let name = meta.name.as_deref().unwrap_or_default();
                let Some(env) = meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(ENVIRONMENT_LABEL))
                    .cloned()
                else {
                    continue;
                };
                let is_current = name == inventory_name(&env)
                    && is_inventory_of(meta, &env, self.installation(), false);
                let is_legacy = !is_current
                    && name == legacy_inventory_name(&env)
                    && is_inventory_of(meta, &env, self.installation(), true);
                if !is_current && !is_legacy {
                    tracing::debug!(
                        configmap = name,
                        "not an inventory of this installation; ignored"
                    );
                    continue;
                }
                let Some((doc_env, live, fingerprints)) = parse_inventory(&cm)? else {
                    continue;
                };
                if doc_env != env {
                    return Err(super::Error::CorruptInventory(Box::new(
                        std::io::Error::other(format!(
                            "inventory ConfigMap {name} is corrupt: it lists environment {doc_env}, its label says {env}"
                        )),
                    )));
                }
                if is_current || !current.contains_key(&env) {
                    known.extend(fingerprints);
                }
                let entry = held.entry(env.clone()).or_default();
                if is_current {
                    entry.current.clone_from(&meta.uid);
                    entry.version.clone_from(&meta.resource_version);
                    current.insert(env, Arc::new(live));
                } else {
                    entry.legacy = Some(LegacyInventory {
                        uid: meta.uid.clone().unwrap_or_default(),
                        resource_version: meta.resource_version.clone().unwrap_or_default(),
                        sole: meta.managed_fields.iter().flatten().all(|f| {
                            f.manager.as_deref() == Some(self.options.field_manager.as_str())
                        }),
                    });
                    legacy.insert(env, Arc::new(live));
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        // A current inventory wins over a legacy one left by a migration
        // that stopped half-way.
        for (env, live) in legacy {
            current.entry(env).or_insert(live);
        }
        *self.held() = held;
        *self.fingerprints() = known;
        Ok(Inventory {
            environments: current,
        })
    }

    /// What a run without watches (`run --once`, `plan`) finds of the
    /// objects `inventory` lists, with one label-selected metadata LIST per
    /// watched kind (as the daemon's watches start): those gone, and those
    /// whose fields converge set someone else took. A kind whose LIST fails
    /// is left out (its objects are as the inventory says).
    async fn scan(&self, inventory: &Inventory) -> HashMap<Key, String> {
        let lists: Vec<_> = watched_resources()
            .into_iter()
            .map(|(kind, resource)| async move {
                let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
                let mut params = ListParams::default()
                    .labels(&format!("{MANAGED_BY}=converge"))
                    .limit(500);
                let mut found: HashMap<Key, Owners> =
                    HashMap::new();
                loop {
                    let page = match api.list_metadata(&params).await {
                        Ok(page) => page,
                        Err(e) => {
                            let e = request_error("list", &plural(&resource), "", e);
                            tracing::warn!(kind, error = %e, "cannot look for deleted or edited objects of this kind");
                            return None;
                        }
                    };
                    for o in page.items {
                        let key = (
                            kind,
                            o.metadata.namespace.clone().unwrap_or_default(),
                            o.metadata.name.clone().unwrap_or_default(),
                        );
                        found.insert(key, owners(&o.metadata, &self.options.field_manager));
                    }
                    match page.metadata.continue_.filter(|c| !c.is_empty()) {
                        Some(token) => params = params.continue_token(&token),
                        None => break,
                    }
                }
                Some((kind, found))
            })
            .collect();
        let listed: Vec<_> = stream::iter(lists)
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        let listed: HashMap<&'static str, _> = listed.into_iter().flatten().collect();
        let fingerprints = self.fingerprints();
        let mut out = HashMap::new();
        for (name, env) in &inventory.environments {
            for (id, digest) in &env.objects {
                let Some(key) = watched_key(id, name) else {
                    continue;
                };
                let Some(found) = listed.get(key.0) else {
                    continue;
                };
                if digest.is_pending() {
                    continue;
                }
                match found.get(&key) {
                    None => {
                        out.insert(key, "deleted".to_owned());
                    }
                    Some((ours, others)) => {
                        if let Some(detail) = fingerprints
                            .get(&key)
                            .and_then(|f| edit_detail(f, ours, others))
                        {
                            out.insert(key, detail);
                        }
                    }
                }
            }
        }
        out
    }

    /// The API resource and scope of an object's group, version and kind.
    async fn resource(&self, id: &ObjectRef) -> Result<(ApiResource, Scope), super::Error> {
        let key = (
            id.group().to_owned(),
            id.version().to_owned(),
            id.kind.to_string(),
        );
        if let Some(found) = self
            .resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(found.clone());
        }
        let gvk = GroupVersionKind::gvk(&key.0, &key.1, &key.2);
        let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| {
                let e = request_error("discover", &id.api_version, "", e);
                match e.status {
                    // The group/version is not served, or has no such kind.
                    Some(404) | None if e.source.as_ref().is_some_and(is_not_found) => {
                        super::Error::Invalid(Box::new(RequestError {
                            message: format!(
                                "the cluster has no kind {} in {} (is its CustomResourceDefinition installed?)",
                                id.kind, id.api_version
                            ),
                            ..e
                        }))
                    }
                    _ => classify(e),
                }
            })?;
        let found = (resource, caps.scope);
        self.resources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, found.clone());
        Ok(found)
    }

    /// The dynamic API for an object, and the namespace it lives in.
    async fn api(
        &self,
        id: &ObjectRef,
        environment: &str,
    ) -> Result<(Api<DynamicObject>, ApiResource, Option<String>), super::Error> {
        let (resource, scope) = self.resource(id).await?;
        Ok(match scope {
            // Render places every object of a template not listed in
            // `templates.cluster_scoped` in the environment's namespace; a
            // kind the cluster serves cluster-wide is refused, never
            // applied outside it.
            Scope::Cluster if id.namespace.is_some() => {
                return Err(super::Error::Invalid(Box::new(RequestError {
                    verb: "discover",
                    resource: resource.plural.clone(),
                    object: format!(" {}", id.name),
                    status: None,
                    message: format!(
                        "{} is cluster-scoped but was rendered into namespace {}: only a template listed in templates.cluster_scoped may create cluster-scoped objects",
                        id.kind,
                        id.namespace.as_deref().unwrap_or_default()
                    ),
                    source: None,
                })));
            }
            Scope::Cluster => (
                Api::all_with(self.client.clone(), &resource),
                resource,
                None,
            ),
            Scope::Namespaced => {
                let ns = id.namespace.as_deref().unwrap_or(environment).to_owned();
                (
                    Api::namespaced_with(self.client.clone(), &ns, &resource),
                    resource,
                    Some(ns),
                )
            }
        })
    }

    /// ` <namespace>/<name>` of an inventory `ConfigMap`, for messages.
    fn shown_inventory(&self, name: &str) -> String {
        format!(" {}/{name}", self.options.inventory_namespace)
    }

    /// Whether the inventory `ConfigMap` of `environment` may be written:
    /// it is known to be this installation's (`Ours`, with the
    /// resourceVersion a write must find), or it does not exist (then it is
    /// created: `Created`, never written over), or it is this
    /// installation's when looked up. Anything else there is refused
    /// (`ForeignObject`).
    async fn claim_inventory(
        &self,
        environment: &str,
        cm: &k8s_openapi::api::core::v1::ConfigMap,
    ) -> Result<Claimed, super::Error> {
        if let Some(h) = self.held().get(environment)
            && h.current.is_some()
        {
            return Ok(Claimed::Ours(h.version.clone()));
        }
        let name = inventory_name(environment);
        let object = self.shown_inventory(&name);
        let found = self
            .inventories()
            .get_metadata_opt(&name)
            .await
            .map_err(|e| classify(request_error("get", "configmaps", &object, e)))?;
        if let Some(found) = found {
            if is_inventory_of(&found.metadata, environment, self.installation(), false) {
                self.hold(environment, &found.metadata);
                return Ok(Claimed::Ours(found.metadata.resource_version));
            }
            return Err(self.foreign_inventory(environment, &name));
        }
        let params = kube::api::PostParams {
            field_manager: Some(self.options.field_manager.clone()),
            ..Default::default()
        };
        match self.inventories().create(&params, cm).await {
            Ok(created) => {
                self.hold(environment, &created.metadata);
                Ok(Claimed::Created)
            }
            // Someone made it between the look and the create.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Err(self.foreign_inventory(environment, &name))
            }
            Err(e) => Err(classify(request_error("create", "configmaps", &object, e))),
        }
    }

    /// Records the inventory of `environment` as this installation's, as
    /// `meta` says it is now.
    fn hold(&self, environment: &str, meta: &kube::api::ObjectMeta) {
        let mut held = self.held();
        let h = held.entry(environment.to_owned()).or_default();
        h.current.clone_from(&meta.uid);
        h.version.clone_from(&meta.resource_version);
    }

    fn foreign_inventory(&self, environment: &str, name: &str) -> super::Error {
        super::Error::Foreign {
            environment: environment.to_owned(),
            object: format!("ConfigMap{} (its inventory)", self.shown_inventory(name)),
            detail: format!(
                "it is not an inventory of this installation: it lacks the labels {MANAGED_BY}=converge, {INVENTORY_LABEL}=true, {ENVIRONMENT_LABEL}={environment} or the annotation {INSTALLATION_ANNOTATION}={}",
                self.installation()
            ),
        }
    }

    /// Writes an environment's inventory `ConfigMap` (only over one of this
    /// installation's), then retires its legacy-named one.
    async fn write_inventory(
        &self,
        name: &str,
        live: &LiveEnvironment,
    ) -> Result<(), super::Error> {
        let body = {
            let fingerprints = self.fingerprints();
            serde_json::to_string(&InventoryDoc::of(name, live, &fingerprints))
                .expect("an inventory serializes")
        };
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": inventory_name(name),
                "namespace": self.options.inventory_namespace,
                "labels": {
                    MANAGED_BY: "converge",
                    ENVIRONMENT_LABEL: name,
                    INVENTORY_LABEL: "true",
                },
                "annotations": { INSTALLATION_ANNOTATION: self.installation() },
            },
            "data": { INVENTORY_KEY: body },
        });
        let cm: k8s_openapi::api::core::v1::ConfigMap =
            serde_json::from_value(doc.clone()).expect("a ConfigMap");
        let mut claimed = self.claim_inventory(name, &cm).await?;
        let mut looked_again = false;
        while let Claimed::Ours(version) = claimed {
            let mut doc = doc.clone();
            if let Some(v) = &version {
                doc["metadata"]["resourceVersion"] = serde_json::Value::String(v.clone());
            }
            let params = PatchParams::apply(&self.options.field_manager).force();
            match self
                .inventories()
                .patch(&inventory_name(name), &params, &Patch::Apply(&doc))
                .await
            {
                Ok(written) => {
                    self.hold(name, &written.metadata);
                    break;
                }
                // Changed or gone since converge last read or wrote it
                // (by hand, or replaced): look again, once.
                Err(kube::Error::Api(s))
                    if !looked_again && version.is_some() && matches!(s.code, 404 | 409 | 422) =>
                {
                    looked_again = true;
                    if let Some(h) = self.held().get_mut(name) {
                        h.current = None;
                        h.version = None;
                    }
                    claimed = self.claim_inventory(name, &cm).await?;
                }
                Err(e) => {
                    return Err(classify(request_error(
                        "patch",
                        "configmaps",
                        &self.shown_inventory(&inventory_name(name)),
                        e,
                    )));
                }
            }
        }
        self.retire_legacy(name).await
    }

    /// Deletes an environment's inventory: only one known to be this
    /// installation's (with its uid as a precondition), and its legacy one.
    async fn delete_inventory(&self, name: &str) -> Result<(), super::Error> {
        let uid = self.held().get(name).and_then(|h| h.current.clone());
        if let Some(uid) = uid {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match self
                .inventories()
                .delete(&inventory_name(name), &params)
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                // Replaced by someone else's since it was read: not ours.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::warn!(
                        environment = name,
                        "the inventory ConfigMap was replaced by someone else's; left as it is"
                    );
                }
                Err(e) => {
                    return Err(classify(request_error(
                        "delete",
                        "configmaps",
                        &self.shown_inventory(&inventory_name(name)),
                        e,
                    )));
                }
            }
        }
        self.retire_legacy(name).await?;
        self.held().remove(name);
        Ok(())
    }

    /// Retires an environment's legacy-named inventory once its current one
    /// is written (or the environment is gone): deleted when converge alone
    /// ever wrote it, else (it was someone else's `ConfigMap`, taken over by
    /// an earlier version: the chart's `converge-config` for an environment
    /// named `config`) only converge's labels and key are removed from it.
    /// Both with a precondition: the object as read, unchanged.
    async fn retire_legacy(&self, name: &str) -> Result<(), super::Error> {
        let Some(legacy) = self.held().get(name).and_then(|h| h.legacy.clone()) else {
            return Ok(());
        };
        let old = legacy_inventory_name(name);
        let object = self.shown_inventory(&old);
        let result = if legacy.sole {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(legacy.uid.clone()),
                    resource_version: Some(legacy.resource_version.clone()),
                }),
                ..DeleteParams::background()
            };
            self.inventories()
                .delete(&old, &params)
                .await
                .map(drop)
                .map_err(|e| ("delete", e))
        } else {
            let patch = serde_json::json!({
                "metadata": {
                    "resourceVersion": legacy.resource_version,
                    "labels": { MANAGED_BY: null, ENVIRONMENT_LABEL: null, INVENTORY_LABEL: null },
                },
                "data": { INVENTORY_KEY: null },
            });
            self.inventories()
                .patch(&old, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop)
                .map_err(|e| ("patch", e))
        };
        match result {
            Ok(()) => {}
            Err((_, e)) if is_not_found(&e) => {}
            Err((_, kube::Error::Api(s))) if s.code == 409 => {
                tracing::warn!(
                    environment = name,
                    configmap = old,
                    "the legacy inventory changed hands; left as it is"
                );
            }
            Err((verb, e)) => {
                return Err(classify(request_error(verb, "configmaps", &object, e)));
            }
        }
        if let Some(h) = self.held().get_mut(name) {
            h.legacy = None;
        }
        Ok(())
    }

    /// Makes sure the inventory Namespace exists (once per process).
    async fn ensure_inventory_namespace(&self) -> Result<(), super::Error> {
        crate::coordination::ensure_namespace_as(
            &self.client,
            &self.options.inventory_namespace,
            &self.options.field_manager,
        )
        .await
        .map_err(|(verb, e)| {
            classify(request_error(
                verb,
                "namespaces",
                &format!(" {}", self.options.inventory_namespace),
                e,
            ))
        })
    }

    /// What server-side applying `rendered` would change on the live object
    /// (a dry run, writing nothing); `None` when the object does not exist.
    async fn preview_object(
        &self,
        rendered: &Rendered,
        environment: &str,
    ) -> Result<Option<Vec<crate::diff::FieldChange>>, super::Error> {
        let id = &rendered.object.id;
        let (api, resource, ns) = self.api(id, environment).await?;
        let object = shown(ns.as_deref(), &id.name);
        let live = match api.get_opt(&id.name).await {
            Ok(Some(live)) => live,
            Ok(None) => return Ok(None),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => {
                return Err(classify(request_error(
                    "get",
                    &plural(&resource),
                    &object,
                    e,
                )));
            }
        };
        let doc = manifest(rendered, ns.as_deref())?;
        let params = PatchParams::apply(&self.options.field_manager)
            .force()
            .dry_run();
        let after = api
            .patch(&id.name, &params, &Patch::Apply(&doc))
            .await
            .map_err(|e| classify(request_error("patch", &plural(&resource), &object, e)))?;
        let to_json = |o: &DynamicObject| serde_json::to_value(o).unwrap_or_default();
        let secret = &*id.kind == "Secret";
        Ok(Some(crate::diff::fields(
            &to_json(&live),
            &to_json(&after),
            secret,
        )))
    }

    /// Whether converge may write `id` for `environment`: it is absent, or it
    /// carries converge's labels for this environment. True when it exists.
    async fn check_owner(&self, id: &ObjectRef, environment: &str) -> Result<bool, super::Error> {
        let (api, resource, ns) = self.api(id, environment).await?;
        let found = api.get_metadata_opt(&id.name).await.map_err(|e| {
            classify(request_error(
                "get",
                &plural(&resource),
                &shown(ns.as_deref(), &id.name),
                e,
            ))
        })?;
        let Some(found) = found else {
            return Ok(false);
        };
        let labels = found.metadata.labels.unwrap_or_default();
        let ours = labels.get(MANAGED_BY).map(String::as_str) == Some("converge");
        let env = labels.get(ENVIRONMENT_LABEL).map(String::as_str);
        if ours && env == Some(environment) {
            return Ok(true);
        }
        let detail = match (ours, env) {
            (true, Some(other)) => format!("it belongs to environment {other}"),
            _ => "it has no converge ownership labels".to_owned(),
        };
        Err(super::Error::Foreign {
            environment: environment.to_owned(),
            object: format!("{} {}", id.kind, shown(ns.as_deref(), &id.name).trim()),
            detail,
        })
    }

    /// Server-side applies one object.
    async fn apply_object(
        &self,
        rendered: &Rendered,
        environment: &str,
    ) -> Result<(), super::Error> {
        let id = &rendered.object.id;
        let (api, resource, ns) = self.api(id, environment).await?;
        let doc = manifest(rendered, ns.as_deref())?;
        let params = PatchParams::apply(&self.options.field_manager).force();
        let result = api.patch(&id.name, &params, &Patch::Apply(&doc)).await;
        match result {
            // An object still being deleted (a Namespace terminating right
            // after its environment was deleted): applied again once gone,
            // and its going is no drift.
            Ok(applied) if applied.metadata.deletion_timestamp.is_some() => {
                self.rebase(id, environment, None);
                Err(still_being_deleted(id, ns.as_deref()))
            }
            Ok(applied) => {
                let (ours, _) = owners(&applied.metadata, &self.options.field_manager);
                self.rebase(id, environment, Some((ours, applied.metadata.uid)));
                Ok(())
            }
            Err(e) if self.options.recreate && is_immutable(&e) => {
                self.delete_object(id, environment).await?;
                self.wait_gone(&api, &id.name).await;
                api.patch(&id.name, &params, &Patch::Apply(&doc))
                    .await
                    .map(|applied| {
                        let (ours, _) = owners(&applied.metadata, &self.options.field_manager);
                        self.rebase(id, environment, Some((ours, applied.metadata.uid)));
                    })
                    .map_err(|e| {
                        classify(request_error(
                            "patch",
                            &plural(&resource),
                            &shown(ns.as_deref(), &id.name),
                            e,
                        ))
                    })
            }
            Err(e) => Err(classify(request_error(
                "patch",
                &plural(&resource),
                &shown(ns.as_deref(), &id.name),
                e,
            ))),
        }
    }

    /// Waits (at most 30 s) until a deleted object is gone.
    async fn wait_gone(&self, api: &Api<DynamicObject>, name: &str) {
        for _ in 0..60 {
            match api.get_metadata_opt(name).await {
                Ok(None) => return,
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// Deletes one object if it still carries converge's labels for this
    /// environment (with its uid as a precondition). Gone already is done.
    async fn delete_object(&self, id: &ObjectRef, environment: &str) -> Result<(), super::Error> {
        // A cluster-scoped kind recorded with a namespace was never written
        // (`api` refuses that), and must not name the cluster-wide object
        // of the same name a listed template may have applied since.
        if id.namespace.is_some() && matches!(self.resource(id).await?.1, Scope::Cluster) {
            return Ok(());
        }
        let (api, resource, ns) = self.api(id, environment).await?;
        let object = shown(ns.as_deref(), &id.name);
        let found = api
            .get_metadata_opt(&id.name)
            .await
            .map_err(|e| classify(request_error("get", &plural(&resource), &object, e)))?;
        let Some(found) = found else {
            return Ok(());
        };
        let labels = found.metadata.labels.unwrap_or_default();
        if labels.get(MANAGED_BY).map(String::as_str) != Some("converge")
            || labels.get(ENVIRONMENT_LABEL).map(String::as_str) != Some(environment)
        {
            // No longer ours (relabelled by hand, or replaced): never deleted.
            return Ok(());
        }
        self.rebase(id, environment, None);
        let params = DeleteParams {
            preconditions: found.metadata.uid.map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match api.delete(&id.name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(classify(request_error(
                "delete",
                &plural(&resource),
                &object,
                e,
            ))),
        }
    }

    /// Objects not in the inventory: nobody else may own them. Objects in a
    /// Namespace this change creates need no look: it holds nothing yet.
    /// The Namespaces this change creates (absent now).
    async fn check_new(
        &self,
        new: &[&Rendered],
        name: &str,
    ) -> Result<BTreeSet<String>, super::Error> {
        let mut fresh = BTreeSet::new();
        for r in new.iter().filter(|r| &*r.object.id.kind == "Namespace") {
            if !self.check_owner(&r.object.id, name).await? {
                fresh.insert(r.object.id.name.to_string());
            }
        }
        // Cluster-scoped objects (no namespace) are looked up whatever
        // Namespace is fresh.
        let to_check: Vec<&ObjectRef> = new
            .iter()
            .map(|r| &r.object.id)
            .filter(|id| &*id.kind != "Namespace")
            .filter(|id| !id.namespace.as_deref().is_some_and(|ns| fresh.contains(ns)))
            .collect();
        let checks: Vec<_> = to_check
            .into_iter()
            .map(|id| self.check_owner(id, name))
            .collect();
        stream::iter(checks)
            .buffer_unordered(self.per_environment())
            .try_collect::<Vec<bool>>()
            .await?;
        Ok(fresh)
    }

    /// Server-side applies one object as a dry run (`dryRun=All`: the API
    /// server authorizes, admits, defaults and validates it, and stores
    /// nothing), with the field manager and force of
    /// [`Kubernetes::apply_object`].
    async fn dry_run_object(
        &self,
        rendered: &Rendered,
        environment: &str,
    ) -> Result<DryRun, super::Error> {
        let id = &rendered.object.id;
        let (api, resource, ns) = self.api(id, environment).await?;
        let doc = manifest(rendered, ns.as_deref())?;
        let params = PatchParams::apply(&self.options.field_manager)
            .force()
            .dry_run();
        match api.patch(&id.name, &params, &Patch::Apply(&doc)).await {
            // As the real apply would find it: still being deleted.
            Ok(would) if would.metadata.deletion_timestamp.is_some() => {
                self.rebase(id, environment, None);
                Err(still_being_deleted(id, ns.as_deref()))
            }
            Ok(_) => Ok(DryRun::Passed),
            // The real apply deletes and creates it again.
            Err(e) if self.options.recreate && is_immutable(&e) => Ok(DryRun::Passed),
            Err(e) => {
                let missing = missing_namespace(&e)
                    .filter(|missing| ns.as_deref() == Some(*missing))
                    .map(str::to_owned);
                let error = classify(request_error(
                    "dry-run patch",
                    &plural(&resource),
                    &shown(ns.as_deref(), &id.name),
                    e,
                ));
                Ok(match missing {
                    Some(namespace) => DryRun::NoNamespace { namespace, error },
                    None => DryRun::Refused(error),
                })
            }
        }
    }

    /// Dry-runs `objects`, `per_environment` at once. Objects whose
    /// Namespace is missing but one of `creates` (Namespaces the change
    /// applies) are returned, to be dry-run once it exists. Any other
    /// refusal is the error: the first permanent one in apply order, else
    /// the first.
    async fn dry_run_all<'r>(
        &self,
        objects: &[&'r Rendered],
        environment: &str,
        creates: &BTreeSet<&str>,
    ) -> Result<Vec<&'r Rendered>, super::Error> {
        let runs: Vec<_> = objects
            .iter()
            .enumerate()
            .map(|(i, r)| async move { (i, self.dry_run_object(r, environment).await) })
            .collect();
        let mut done: Vec<(usize, Result<DryRun, super::Error>)> = stream::iter(runs)
            .buffer_unordered(self.per_environment())
            .collect()
            .await;
        done.sort_by_key(|(i, _)| *i);
        let mut later = Vec::new();
        let mut refused: Option<super::Error> = None;
        for (i, outcome) in done {
            let error = match outcome {
                Ok(DryRun::Passed) => continue,
                Ok(DryRun::NoNamespace { namespace, .. })
                    if creates.contains(namespace.as_str()) =>
                {
                    later.push(objects[i]);
                    continue;
                }
                Ok(DryRun::NoNamespace { error, .. } | DryRun::Refused(error)) | Err(error) => {
                    error
                }
            };
            match &refused {
                Some(first) if !first.is_transient() || error.is_transient() => {}
                _ => refused = Some(error),
            }
        }
        refused.map_or(Ok(later), Err)
    }

    /// Takes back what [`Kubernetes::apply_one`] wrote before a dry run in
    /// the Namespaces it had just created was refused: those Namespaces
    /// (empty but for what the cluster put there) are deleted and the
    /// inventory is as it was (`before`; deleted when there was none). A
    /// Namespace that could not be deleted stays listed, so nothing is
    /// orphaned. The refusal is the result.
    async fn roll_back(
        &self,
        name: &str,
        namespaces: &[&Rendered],
        mut before: LiveEnvironment,
        recorded: bool,
        refusal: super::Error,
    ) -> Result<Option<LiveEnvironment>, super::Error> {
        self.fence(name)?;
        for r in namespaces {
            if let Err(e) = self.delete_object(&r.object.id, name).await {
                tracing::warn!(
                    environment = name,
                    namespace = %r.object.id.name,
                    error = %e,
                    "a Namespace created for a refused environment could not be deleted; it stays listed"
                );
                before.objects.insert(r.object.id.clone(), r.object.digest);
            }
        }
        self.fence(name)?;
        if !recorded && before.objects.is_empty() {
            self.delete_inventory(name).await?;
        } else {
            self.write_inventory(name, &before).await?;
        }
        Err(refusal)
    }

    /// Applies one rank of objects in parallel; each applied object's
    /// digest goes into `live`. The first failure is the result.
    async fn apply_rank(
        &self,
        group: Vec<&Rendered>,
        name: &str,
        live: &mut LiveEnvironment,
    ) -> Result<(), super::Error> {
        let applies: Vec<_> = group
            .into_iter()
            .map(|r| async move { (r, self.apply_object(r, name).await) })
            .collect();
        let done: Vec<(&Rendered, Result<(), super::Error>)> = stream::iter(applies)
            .buffer_unordered(self.per_environment())
            .collect()
            .await;
        let mut result = Ok(());
        for (r, outcome) in done {
            match outcome {
                Ok(()) => {
                    live.objects.remove(&r.object.id);
                    live.objects.insert(r.object.id.clone(), r.object.digest);
                }
                Err(e) if result.is_ok() => result = Err(e),
                Err(_) => {}
            }
        }
        result
    }

    /// Deletes objects in reverse apply order; stops after a rank with a
    /// failure. Deleted objects leave `live`; failed ones stay listed.
    async fn delete_all(
        &self,
        deletes: &[ObjectRef],
        name: &str,
        live: &mut LiveEnvironment,
    ) -> Result<(), super::Error> {
        let mut result = Ok(());
        let mut groups = by_rank(deletes, |id| id);
        groups.reverse();
        for group in groups {
            self.fence(name)?;
            let deletes: Vec<_> = group
                .into_iter()
                .map(|id| async move { (id, self.delete_object(id, name).await) })
                .collect();
            let done: Vec<(&ObjectRef, Result<(), super::Error>)> = stream::iter(deletes)
                .buffer_unordered(self.per_environment())
                .collect()
                .await;
            for (id, outcome) in done {
                match outcome {
                    Ok(()) => {
                        live.objects.remove(id);
                    }
                    Err(e) if result.is_ok() => result = Err(e),
                    Err(_) => {}
                }
            }
            if result.is_err() {
                break;
            }
        }
        result
    }

    /// The first dry run of `change`: every object outside `fresh` (the
    /// Namespaces it creates), and the kinds of those inside (a kind the
    /// cluster does not serve, or serves cluster-wide, is refused before
    /// any Namespace is created for it). The objects to dry-run once their
    /// Namespace exists, and the Namespaces to create first.
    async fn dry_run_outside<'r>(
        &self,
        change: &EnvironmentChange<'r>,
        fresh: &BTreeSet<String>,
    ) -> Result<(Vec<&'r Rendered>, Vec<&'r Rendered>), super::Error> {
        let name = change.name;
        let creates: BTreeSet<&str> = change
            .upserts
            .iter()
            .filter(|r| &*r.object.id.kind == "Namespace")
            .map(|r| &*r.object.id.name)
            .collect();
        let in_fresh = |r: &&Rendered| {
            r.object
                .id
                .namespace
                .as_deref()
                .is_some_and(|ns| fresh.contains(ns))
        };
        let (inside, outside): (Vec<&Rendered>, Vec<&Rendered>) =
            change.upserts.iter().copied().partition(in_fresh);
        let mut later = self.dry_run_all(&outside, name, &creates).await?;
        for r in inside {
            self.api(&r.object.id, name).await?;
            later.push(r);
        }
        let missing: BTreeSet<&str> = later
            .iter()
            .filter_map(|r| r.object.id.namespace.as_deref())
            .collect();
        let namespaces = change
            .upserts
            .iter()
            .copied()
            .filter(|r| &*r.object.id.kind == "Namespace" && missing.contains(&*r.object.id.name))
            .collect();
        Ok((later, namespaces))
    }

    /// One environment's change: check, dry-run, widen, apply in order,
    /// delete in reverse order, narrow.
    ///
    /// All or nothing as far as the API server can tell: every object to
    /// be written is dry-run before any is, so a refused one leaves the
    /// environment as it was. Objects in a Namespace that does not exist
    /// yet cannot be dry-run (the API server answers that the Namespace is
    /// not found): they are dry-run right after that Namespace is created,
    /// before anything else is written, and a refusal then deletes the
    /// Namespace again.
    async fn apply_one(
        &self,
        change: &EnvironmentChange<'_>,
        known: Option<Arc<LiveEnvironment>>,
    ) -> Result<Option<LiveEnvironment>, super::Error> {
        let name = change.name;
        let recorded = known.is_some();
        let mut live = match known {
            Some(live) => Arc::unwrap_or_clone(live),
            None => match change.record {
                Some(record) => LiveEnvironment {
                    record: record.clone(),
                    objects: BTreeMap::new(),
                },
                None => return Ok(None), // nothing of ours is there
            },
        };
        // Objects not in the inventory: make sure nobody else owns them.
        let new: Vec<&Rendered> = change
            .upserts
            .iter()
            .copied()
            .filter(|r| !live.objects.contains_key(&r.object.id))
            .collect();
        let fresh = self.check_new(&new, name).await?;
        let (later, namespaces) = self.dry_run_outside(change, &fresh).await?;
        let before = live.clone();
        // Widen: every object about to be written is listed before it exists.
        self.fence(name)?;
        if !new.is_empty() {
            for r in &new {
                live.objects.insert(r.object.id.clone(), Digest::PENDING);
            }
            if let Some(record) = change.record {
                live.record = record.clone();
            }
            self.write_inventory(name, &live).await?;
        }
        let mut result = Ok(());
        // The Namespaces the rest waits for, then the rest's dry run.
        if !namespaces.is_empty() {
            self.fence(name)?;
            result = self.apply_rank(namespaces.clone(), name, &mut live).await;
            if result.is_ok()
                && let Err(refusal) = self.dry_run_all(&later, name, &BTreeSet::new()).await
            {
                return self
                    .roll_back(name, &namespaces, before, recorded, refusal)
                    .await;
            }
        }
        // Apply in kind order; objects of one rank in parallel.
        if result.is_ok() {
            let rest: Vec<&Rendered> = change
                .upserts
                .iter()
                .copied()
                .filter(|r| !namespaces.iter().any(|n| n.object.id == r.object.id))
                .collect();
            for group in by_rank(&rest, |r| &r.object.id) {
                self.fence(name)?;
                result = self
                    .apply_rank(group.into_iter().copied().collect(), name, &mut live)
                    .await;
                if result.is_err() {
                    break; // later ranks depend on this one
                }
            }
        }
        // Delete in reverse order; a failed delete stays listed.
        if result.is_ok() {
            result = self.delete_all(&change.deletes, name, &mut live).await;
        }
        // Narrow: the inventory says what is there now.
        if let Some(record) = change.record {
            live.record = record.clone();
        }
        self.fence(name)?;
        let gone = change.record.is_none() && live.objects.is_empty();
        let narrowed = if gone {
            self.delete_inventory(name).await
        } else {
            live.compact();
            self.write_inventory(name, &live).await
        };
        result?;
        narrowed?;
        Ok((!gone).then_some(live))
    }
}

impl Kubernetes {
    /// Without watches: looks once per read of the inventory for objects it
    /// lists that are gone or were edited ([`Kubernetes::scan`]).
    fn scan_once(&self, inventory: &Inventory) {
        let mut scanned = self.scanned.lock().unwrap_or_else(PoisonError::into_inner);
        if scanned.is_none() {
            let found = self.runtime.block_on(self.scan(inventory));
            for (key, how) in &found {
                tracing::info!(
                    kind = key.0,
                    namespace = key.1,
                    name = key.2,
                    how = how.as_str(),
                    "drifted while converge was not watching"
                );
            }
            *scanned = Some(found);
        }
    }

    /// The objects of one environment that drifted from what converge
    /// applied, and how: what the watches saw (or their first listing
    /// compared with the fingerprints), what a one-shot listing found
    /// ([`Kubernetes::scan`]), and what the state store remembered from
    /// before the restart ([`Target::restore_drift`]); each until converge
    /// applies the object again. `base` is the environment as the inventory
    /// records it (an object pending there was never applied: its absence
    /// is not drift).
    fn drifted_objects<'a>(
        &self,
        environment: &str,
        live: &'a LiveEnvironment,
        base: Option<&LiveEnvironment>,
    ) -> Vec<(&'a ObjectRef, String)> {
        let restored = self.restored.lock().unwrap_or_else(PoisonError::into_inner);
        let restored = restored.get(environment);
        let scanned = self.scanned.lock().unwrap_or_else(PoisonError::into_inner);
        let scanned = scanned.as_ref().filter(|s| !s.is_empty());
        let observed = self
            .watches
            .get()
            .map(|w| w.observed.lock().unwrap_or_else(PoisonError::into_inner));
        let observed = observed
            .as_deref()
            .filter(|o| !o.drifted.is_empty() || !o.synced.is_empty());
        if restored.is_none() && scanned.is_none() && observed.is_none() {
            return Vec::new();
        }
        let fingerprints = restored.map(|_| self.fingerprints());
        live.objects
            .keys()
            .filter_map(|id| {
                let key = watched_key(id, environment)?;
                let pending = base
                    .and_then(|b| b.objects.get(id))
                    .is_none_or(Digest::is_pending);
                let seen = observed.and_then(|o| match o.drifted.get(&key) {
                    Some(how) => Some(how.clone()),
                    None if pending => None,
                    None => o.drift_of(&key).map(str::to_owned),
                });
                let how = seen
                    .or_else(|| scanned.and_then(|s| s.get(&key)).cloned())
                    .or_else(|| {
                        let how = restored?.get(&format!("{}/{}", id.kind, id.name))?;
                        // The watches listed it as converge's fingerprint
                        // says it left it: applied again before a crash
                        // lost the store's update.
                        let as_left =
                            observed.is_some_and(|o| {
                                o.synced.contains(key.0)
                                    && o.present.contains(&key)
                                    && !o.drifted.contains_key(&key)
                            }) && fingerprints.as_ref().is_some_and(|f| f.contains_key(&key));
                        (!as_left).then(|| how.clone())
                    })?;
                Some((id, how))
            })
            .collect()
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
    /// most [`EVENTS_PER_CALL`] per call; a Namespace being deleted takes
    /// none (best effort: failures are logged, never an error of the pass).
    fn record(&self, events: &[super::TargetEvent<'_>]) {
        use kube::runtime::events::{Event, EventType};
        let publish: Vec<_> = events
            .iter()
            .take(EVENTS_PER_CALL)
            .map(|e| async move {
                let reference = k8s_openapi::api::core::v1::ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Namespace".into()),
                    name: Some(e.environment.to_owned()),
                    namespace: Some(e.environment.to_owned()),
                    ..Default::default()
                };
                let event = Event {
                    type_: if e.warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: e.reason.to_owned(),
                    note: Some(e.message.chars().take(1000).collect()),
                    action: e.reason.to_owned(),
                    secondary: None,
                };
                if let Err(err) = self.recorder.publish(&event, &reference).await {
                    tracing::debug!(environment = e.environment, error = %err, "cannot record a Kubernetes Event");
                }
            })
            .collect();
        self.runtime.block_on(async {
            stream::iter(publish)
                .buffer_unordered(self.options.concurrency.max(1))
                .collect::<Vec<()>>()
                .await;
        });
    }

    /// `Environment` resources in the inventory Namespace
    /// ([`super::kube_environment`]), when `environments.publish` is on.
    fn publish(&self, all: &BTreeMap<String, Arc<crate::status::EnvStatus>>, changed: &[String]) {
        if !self.options.environments.publish {
            return;
        }
        let publisher = self.environments.get_or_init(|| {
            super::kube_environment::Publisher::start(super::kube_environment::Options {
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
                    let message = e.to_string();
                    return changes
                        .iter()
                        .map(|_| {
                            Err(super::Error::Transient(Box::new(std::io::Error::other(
                                message.clone(),
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

/// Kubernetes Events published per call at most (a cold start of thousands
/// of environments records the rest only in converge's own event list).
const EVENTS_PER_CALL: usize = 500;

/// Every kind the watches follow.
const WATCHED: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "Namespace",
    "ResourceQuota",
    "LimitRange",
    "ConfigMap",
    "Secret",
    "Service",
    "NetworkPolicy",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
];

/// The API resources of the watched kinds.
fn watched_resources() -> Vec<(&'static str, ApiResource)> {
    use k8s_openapi::api::{apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch};
    use k8s_openapi::api::{core::v1 as core, networking::v1 as networking, policy::v1 as policy};
    vec![
        ("Deployment", ApiResource::erase::<apps::Deployment>(&())),
        ("StatefulSet", ApiResource::erase::<apps::StatefulSet>(&())),
        ("DaemonSet", ApiResource::erase::<apps::DaemonSet>(&())),
        ("Job", ApiResource::erase::<batch::Job>(&())),
        ("Namespace", ApiResource::erase::<core::Namespace>(&())),
        (
            "ResourceQuota",
            ApiResource::erase::<core::ResourceQuota>(&()),
        ),
        ("LimitRange", ApiResource::erase::<core::LimitRange>(&())),
        ("ConfigMap", ApiResource::erase::<core::ConfigMap>(&())),
        ("Secret", ApiResource::erase::<core::Secret>(&())),
        ("Service", ApiResource::erase::<core::Service>(&())),
        (
            "NetworkPolicy",
            ApiResource::erase::<networking::NetworkPolicy>(&()),
        ),
        (
            "HorizontalPodAutoscaler",
            ApiResource::erase::<autoscaling::HorizontalPodAutoscaler>(&()),
        ),
        (
            "PodDisruptionBudget",
            ApiResource::erase::<policy::PodDisruptionBudget>(&()),
        ),
    ]
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

/// The inventory `ConfigMap` of an environment: a dotted name, which no
/// environment's (a DNS label) and nothing the Helm chart makes
/// (`<release>-config`, `-policies`, ...) can be.
fn inventory_name(environment: &str) -> String {
    format!("converge.inventory.{environment}")
}

/// The inventory's name before 0.x: `converge-<environment>`, which an
/// environment named `config` shared with the chart's own `ConfigMap`.
/// Read (adopted) when it carries the inventory labels, and retired on the
/// environment's next write.
fn legacy_inventory_name(environment: &str) -> String {
    format!("converge-{environment}")
}

/// The annotation saying which installation an inventory belongs to (its
/// field manager): an inventory without it, or another's, is never written
/// over or deleted.
pub const INSTALLATION_ANNOTATION: &str = "converge.dev/installation";

/// Whether `meta` is an inventory of environment `environment` written by
/// converge: its labels (and, unless `legacy`, the installation annotation).
fn is_inventory_of(
    meta: &kube::api::ObjectMeta,
    environment: &str,
    installation: &str,
    legacy: bool,
) -> bool {
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
    };
    let annotation = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(INSTALLATION_ANNOTATION))
        .map(String::as_str);
    label(MANAGED_BY) == Some("converge")
        && label(INVENTORY_LABEL) == Some("true")
        && label(ENVIRONMENT_LABEL) == Some(environment)
        && (legacy || annotation == Some(installation))
}

/// The environment an inventory `ConfigMap` holds, and the fingerprints
/// of its objects' fields.
type Parsed = (String, LiveEnvironment, Vec<(Key, String)>);

/// An inventory `ConfigMap` as an environment; `None` when it is not one.
fn parse_inventory(
    cm: &k8s_openapi::api::core::v1::ConfigMap,
) -> Result<Option<Parsed>, super::Error> {
    let name = cm.metadata.name.clone().unwrap_or_default();
    let corrupt = |message: String| {
        super::Error::CorruptInventory(Box::new(std::io::Error::other(format!(
            "inventory ConfigMap {name} is corrupt: {message}"
        ))))
    };
    let Some(body) = cm.data.as_ref().and_then(|d| d.get(INVENTORY_KEY)) else {
        return Err(corrupt(format!("it has no {INVENTORY_KEY}")));
    };
    let doc: InventoryDoc = serde_json::from_str(body).map_err(|e| corrupt(e.to_string()))?;
    if doc.format != FORMAT_VERSION {
        return Err(corrupt(format!("unknown format {}", doc.format)));
    }
    let namespace: Arc<str> = Arc::from(doc.environment.as_str());
    let mut fingerprints = Vec::new();
    let objects = doc
        .objects
        .into_iter()
        .map(|e| {
            if let (Some(f), Some(k)) = (&e.fields, watched_key(&e.id, &doc.environment)) {
                fingerprints.push((k, f.clone()));
            }
            let id = ObjectRef {
                api_version: shared(&e.id.api_version),
                kind: kind(&e.id.kind),
                ..e.id
            }
            .interned(&namespace);
            (id, e.digest)
        })
        .collect();
    Ok(Some((
        doc.environment,
        LiveEnvironment {
            record: doc.record,
            objects,
        },
        fingerprints,
    )))
}

/// A fingerprint of a set of field paths that stays the same across
/// processes and versions (the first 8 bytes of SHA-256, in hex).
fn fingerprint<'a>(fields: impl IntoIterator<Item = &'a String>) -> String {
    let mut sorted: Vec<&String> = fields.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut text = String::new();
    for f in sorted {
        text.push_str(f);
        text.push('\n');
    }
    crate::hex::encode(&Digest::of(text.as_bytes()).0[..8])
}

/// Whether an object converge applied with fields fingerprinted `baseline`
/// lost a field to someone else: its fields now (`ours`) differ, and not
/// only by what an autoscaler took through the scale subresource.
fn edited(baseline: &str, ours: &BTreeSet<String>, others: &[(String, BTreeSet<String>)]) -> bool {
    if fingerprint(ours) == baseline {
        return false;
    }
    let scaled: BTreeSet<&String> = others
        .iter()
        .filter(|(m, _)| m.ends_with(SCALER))
        .flat_map(|(_, f)| f)
        .collect();
    scaled.is_empty() || fingerprint(ours.iter().chain(scaled)) != baseline
}

/// Candidate fields at most this many: beyond, which ones were lost is not
/// searched for (2^n fingerprints).
const MAX_GUESSED_FIELDS: usize = 12;

/// How an object converge applied with fields fingerprinted `baseline` was
/// edited (`None`: it was not, see [`edited`]): the fields converge lost and
/// who owns them now, `edited: <paths> (by <managers>)`. The fingerprint
/// keeps no paths, so the lost ones are found among the fields other
/// managers own and converge does not: the smallest set that, given back to
/// converge, matches the fingerprint again. Without one (a field removed,
/// too many candidates) the managers are named alone.
fn edit_detail(
    baseline: &str,
    ours: &BTreeSet<String>,
    others: &[(String, BTreeSet<String>)],
) -> Option<String> {
    if !edited(baseline, ours, others) {
        return None;
    }
    let scaled: Vec<&String> = others
        .iter()
        .filter(|(m, _)| m.ends_with(SCALER))
        .flat_map(|(_, f)| f)
        .collect();
    let mut candidates: Vec<(&String, &str)> = others
        .iter()
        .filter(|(m, _)| !m.ends_with(SCALER))
        .flat_map(|(m, f)| {
            f.iter()
                .filter(|p| !ours.contains(*p))
                .map(move |p| (p, m.as_str()))
        })
        .collect();
    candidates.sort_unstable();
    candidates.dedup_by(|a, b| a.0 == b.0);
    let mut best: Option<u32> = None;
    if candidates.len() <= MAX_GUESSED_FIELDS {
        for mask in 1u32..(1 << candidates.len()) {
            if best.is_some_and(|b| b.count_ones() <= mask.count_ones()) {
                continue;
            }
            let chosen = || {
                candidates
                    .iter()
                    .enumerate()
                    .filter(move |(i, _)| mask & (1 << i) != 0)
                    .map(|(_, (p, _))| *p)
            };
            if fingerprint(ours.iter().chain(chosen())) == baseline
                || fingerprint(ours.iter().chain(chosen()).chain(scaled.iter().copied()))
                    == baseline
            {
                best = Some(mask);
            }
        }
    }
    let picked: Vec<&(&String, &str)> = match best {
        Some(mask) => candidates
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, c)| c)
            .collect(),
        None => candidates.iter().collect(),
    };
    let mut by: Vec<&str> = picked.iter().map(|(_, m)| *m).collect();
    by.sort_unstable();
    by.dedup();
    let by = if by.is_empty() {
        String::new()
    } else {
        format!(" (by {})", by.join(", "))
    };
    Some(match best {
        Some(_) => {
            let names: Vec<&str> = picked.iter().map(|(p, _)| p.as_str()).collect();
            format!("edited: {}{by}", names.join(", "))
        }
        None => format!("edited{by}"),
    })
}

/// A rendered object as the body of a server-side apply, in `namespace`
/// when the template left it out.
fn manifest(
    rendered: &Rendered,
    namespace: Option<&str>,
) -> Result<serde_json::Value, super::Error> {
    let mut doc: serde_json::Value =
        serde_saphyr::from_str_with_options(&rendered.yaml, crate::yaml::template_options())
            .map_err(|e| {
                super::Error::Invalid(Box::new(std::io::Error::other(format!(
                    "the rendered {} is not YAML: {e}",
                    rendered.object.id
                ))))
            })?;
    if let (Some(ns), Some(meta)) = (
        namespace,
        doc.get_mut("metadata").and_then(|m| m.as_object_mut()),
    ) {
        meta.entry("namespace")
            .or_insert_with(|| serde_json::Value::String(ns.to_owned()));
    }
    Ok(doc)
}

/// Items grouped by the apply rank of their kind, in apply order.
fn by_rank<T>(items: &[T], id: impl Fn(&T) -> &ObjectRef) -> Vec<Vec<&T>> {
    let mut groups: BTreeMap<u8, Vec<&T>> = BTreeMap::new();
    for item in items {
        groups
            .entry(kind_rank(&id(item).kind))
            .or_default()
            .push(item);
    }
    groups.into_values().collect()
}

fn plural(resource: &ApiResource) -> String {
    if resource.group.is_empty() {
        resource.plural.clone()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}

fn shown(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!(" {ns}/{name}"),
        None => format!(" {name}"),
    }
}

fn request_error(verb: &'static str, resource: &str, object: &str, e: kube::Error) -> RequestError {
    let (status, message) = match &e {
        kube::Error::Api(s) => (Some(s.code), s.message.clone()),
        // The connection's failure (refused, reset, TLS, timed out), in
        // words: kube's own wrapper ("ServiceError") says nothing more.
        kube::Error::Service(inner) => {
            let message = crate::diagnostic::chain(inner.as_ref());
            return RequestError {
                verb,
                resource: resource.to_owned(),
                object: object.to_owned(),
                status: None,
                message,
                source: None,
            };
        }
        other => (None, crate::diagnostic::chain(other)),
    };
    RequestError {
        verb,
        resource: resource.to_owned(),
        object: object.to_owned(),
        status,
        message,
        source: Some(e),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn is_immutable(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 422 && s.message.contains("immutable"))
}

/// A refusal to create in a Namespace that is being deleted (the cause
/// `NamespaceTerminating` the API server gives with its 403): transient, it
/// is gone in a moment and the next try creates it anew.
fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.details.as_ref().is_some_and(|d| {
        d.causes.iter().any(|c| c.reason == "NamespaceTerminating")
    }))
}

/// The Namespace a request was refused for not existing: the 404 of the
/// API server's `NamespaceLifecycle` admission (details `namespaces`,
/// core group, the Namespace's name), not the 404 of the object itself.
fn missing_namespace(e: &kube::Error) -> Option<&str> {
    match e {
        kube::Error::Api(s) if s.code == 404 => s
            .details
            .as_ref()
            .filter(|d| d.kind == "namespaces" && d.group.is_empty() && !d.name.is_empty())
            .map(|d| d.name.as_str()),
        _ => None,
    }
}

/// An object the API server answers for with a `deletionTimestamp`: a
/// transient failure, applied again once it is gone.
fn still_being_deleted(id: &ObjectRef, namespace: Option<&str>) -> super::Error {
    super::Error::Transient(Box::new(std::io::Error::other(format!(
        "{} {} is still being deleted; it is applied again once it is gone",
        id.kind,
        shown(namespace, &id.name).trim()
    ))))
}

/// A failed request as a target error, by its HTTP status.
fn classify(e: RequestError) -> super::Error {
    match e.status {
        Some(403) if e.source.as_ref().is_some_and(is_namespace_terminating) => {
            super::Error::Transient(Box::new(e))
        }
        Some(401 | 403) => super::Error::Forbidden(Box::new(e)),
        Some(422) if e.message.contains("immutable") => super::Error::Immutable(Box::new(e)),
        Some(400 | 404 | 405 | 406 | 409 | 410 | 413 | 415 | 422) => {
            super::Error::Invalid(Box::new(e))
        }
        _ => super::Error::Transient(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, scheduled: &serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "dev-a"},
            "spec": {
                "containers": [{"name": "web", "image": "web:1"}],
                "nodeSelector": {"disk": "ssd"},
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "converge.dev/node-pool", "operator": "In", "values": ["a", "b"]}
                    ]}]
                }}}
            },
            "status": {"phase": phase, "conditions": [scheduled]}
        }))
        .expect("a Pod")
    }

    #[test]
    fn an_unschedulable_pod_says_why_and_which_node_labels_it_requires() {
        let unplaced = pod(
            "Pending",
            &serde_json::json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."}),
        );
        let health = unschedulable(&unplaced).expect("unschedulable");
        assert_eq!(health.reason, crate::health::Reason::PodUnschedulable);
        assert_eq!(
            health.message,
            "not scheduled: Unschedulable: 0/2 nodes are available: 2 node(s) didn't match \
             Pod's node affinity/selector. (it requires nodes labelled disk=ssd and \
             converge.dev/node-pool In [a, b])"
        );
        let pending = pod(
            "Pending",
            &serde_json::json!({"type": "PodScheduled", "status": "True"}),
        );
        assert!(
            unschedulable(&pending).is_none(),
            "placed, waiting for its node"
        );
        let running = pod(
            "Running",
            &serde_json::json!({"type": "PodScheduled", "status": "True"}),
        );
        assert!(unschedulable(&running).is_none());
    }

    #[test]
    fn a_pod_placed_at_last_is_forgotten_and_its_namespace_with_it() {
        let mut observed = Observed::default();
        let health = ObjectHealth::not_found();
        observed
            .unschedulable
            .entry("dev-a".to_owned())
            .or_default()
            .insert("web-1".to_owned(), health);
        assert!(!forget_pod(&mut observed, "dev-a", "web-2"));
        assert!(forget_pod(&mut observed, "dev-a", "web-1"));
        assert!(observed.unschedulable.is_empty());
        assert!(!forget_pod(&mut observed, "dev-b", "web-1"));
    }

    fn id(kind_name: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: shared("v1"),
            kind: kind(kind_name),
            namespace: None,
            name: name.into(),
        }
    }

    #[test]
    fn objects_apply_by_rank_namespace_first() {
        let ids = [
            id("Deployment", "d"),
            id("Namespace", "e"),
            id("ConfigMap", "c"),
            id("Service", "s"),
            id("ConfigMap", "c2"),
        ];
        let groups: Vec<Vec<&str>> = by_rank(&ids, |i| i)
            .into_iter()
            .map(|g| g.into_iter().map(|i| &*i.name).collect())
            .collect();
        assert_eq!(groups, [vec!["e"], vec!["c", "c2"], vec!["s"], vec!["d"]]);
    }

    #[test]
    fn statuses_classify_as_transient_forbidden_immutable_or_invalid() {
        use crate::condition::Reason;
        let e = |status: Option<u16>, message: &str| RequestError {
            verb: "patch",
            resource: "services".into(),
            object: " e/s".into(),
            status,
            message: message.into(),
            source: None,
        };
        assert_eq!(
            classify(e(None, "connection refused")).reason(),
            Reason::TargetIo
        );
        assert_eq!(
            classify(e(Some(429), "slow down")).reason(),
            Reason::TargetIo
        );
        assert_eq!(
            classify(e(Some(503), "unavailable")).reason(),
            Reason::TargetIo
        );
        assert_eq!(
            classify(e(Some(403), "forbidden")).reason(),
            Reason::Forbidden
        );
        assert_eq!(
            classify(e(
                Some(422),
                "spec.clusterIP: Invalid value: field is immutable"
            ))
            .reason(),
            Reason::ImmutableField
        );
        assert_eq!(
            classify(e(Some(422), "spec.x: Required value")).reason(),
            Reason::Invalid
        );
        let terminating = kube::Error::Api(Box::new(
            kube::core::Status::failure(
                "unable to create new content in namespace e because it is being terminated",
                "Forbidden",
            )
            .with_code(403)
            .with_details(kube::core::response::StatusDetails {
                causes: vec![kube::core::response::StatusCause {
                    reason: "NamespaceTerminating".into(),
                    message: String::new(),
                    field: "metadata.namespace".into(),
                }],
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                retry_after_seconds: 0,
            }),
        ));
        assert_eq!(
            classify(request_error("patch", "services", " e/s", terminating)).reason(),
            Reason::TargetIo,
            "a Namespace being deleted is transient"
        );
        let forbidden = classify(e(Some(403), "user cannot patch"));
        assert!(
            forbidden.to_string().contains("patch services e/s"),
            "{forbidden}"
        );
    }

    #[test]
    fn only_a_namespace_not_found_is_a_missing_namespace() {
        let not_found = |kind: &str, group: &str, name: &str| {
            kube::Error::Api(Box::new(
                kube::core::Status::failure(&format!("{kind} \"{name}\" not found"), "NotFound")
                    .with_code(404)
                    .with_details(kube::core::response::StatusDetails {
                        causes: Vec::new(),
                        name: name.into(),
                        group: group.into(),
                        kind: kind.into(),
                        uid: String::new(),
                        retry_after_seconds: 0,
                    }),
            ))
        };
        assert_eq!(
            missing_namespace(&not_found("namespaces", "", "dev-a")),
            Some("dev-a"),
            "NamespaceLifecycle's answer"
        );
        assert_eq!(
            missing_namespace(&not_found("deployments", "apps", "user-service")),
            None,
            "the object itself"
        );
        assert_eq!(
            missing_namespace(&not_found("namespaces", "example.com", "dev-a")),
            None,
            "another group's kind"
        );
        let refused = kube::Error::Api(Box::new(
            kube::core::Status::failure("namespaces \"dev-a\" is invalid", "Invalid")
                .with_code(422),
        ));
        assert_eq!(missing_namespace(&refused), None);
    }

    #[test]
    fn the_inventory_round_trips_through_its_config_map() {
        let live = LiveEnvironment {
            record: EnvironmentRecord {
                origin: None,
                env_type: "dev".into(),
                pool: "p".into(),
                owner: "o".into(),
                versions: BTreeMap::new(),
                expires_at: None,
                secrets: BTreeMap::new(),
            },
            objects: BTreeMap::from([
                (id("Namespace", "e"), Digest::of(b"a")),
                (
                    ObjectRef {
                        api_version: shared("apps/v1"),
                        kind: kind("Deployment"),
                        namespace: Some(Arc::from("e")),
                        name: "d".into(),
                    },
                    Digest::PENDING,
                ),
            ]),
        };
        let doc = InventoryDoc::of("e", &live, &HashMap::new());
        let cm = k8s_openapi::api::core::v1::ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some("converge-e".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                INVENTORY_KEY.to_owned(),
                serde_json::to_string(&doc).unwrap(),
            )])),
            ..Default::default()
        };
        let (name, read, _) = parse_inventory(&cm).unwrap().unwrap();
        assert_eq!(name, "e");
        assert_eq!(read, live);
        let broken = k8s_openapi::api::core::v1::ConfigMap {
            data: Some(BTreeMap::from([(INVENTORY_KEY.to_owned(), "{".to_owned())])),
            ..cm
        };
        assert_eq!(
            parse_inventory(&broken).unwrap_err().reason(),
            crate::condition::Reason::InventoryCorrupt
        );
    }

    #[test]
    fn only_an_inventory_of_this_installation_and_environment_is_one() {
        let meta = |name: &str, labels: &[(&str, &str)], installation: Option<&str>| {
            kube::api::ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                annotations: installation
                    .map(|i| BTreeMap::from([(INSTALLATION_ANNOTATION.to_owned(), i.to_owned())])),
                ..Default::default()
            }
        };
        let ours = [
            (MANAGED_BY, "converge"),
            (INVENTORY_LABEL, "true"),
            (ENVIRONMENT_LABEL, "config"),
        ];
        let m = meta(&inventory_name("config"), &ours, Some("converge"));
        assert!(is_inventory_of(&m, "config", "converge", false));
        assert!(!is_inventory_of(&m, "other", "converge", false));
        assert!(!is_inventory_of(
            &m,
            "config",
            "another-installation",
            false
        ));
        // The chart's ConfigMap: Helm's labels only.
        let chart = meta(
            "converge-config",
            &[(MANAGED_BY, "Helm"), ("app.kubernetes.io/name", "converge")],
            None,
        );
        assert!(!is_inventory_of(&chart, "config", "converge", true));
        // Labelled but not annotated: only as a legacy inventory.
        let legacy = meta(&legacy_inventory_name("config"), &ours, None);
        assert!(is_inventory_of(&legacy, "config", "converge", true));
        assert!(!is_inventory_of(&legacy, "config", "converge", false));
        // No environment name (a DNS label) makes a dotted inventory name
        // equal a chart's (`<release>-config`) or another inventory's.
        assert_ne!(inventory_name("config"), "converge-config");
        assert!(inventory_name("a").contains('.'));
    }

    #[test]
    fn an_edit_is_a_field_converge_lost_to_anyone_but_an_autoscaler() {
        let applied = set(&["spec.replicas", "spec.template.x", "metadata.labels.a"]);
        let baseline = fingerprint(&applied);
        assert_eq!(baseline.len(), 16);
        assert!(!edited(&baseline, &applied, &[]));
        // Someone else also sets a field of its own: not an edit.
        let other = vec![(
            "kubectl-annotate".to_owned(),
            set(&["metadata.annotations.b"]),
        )];
        assert!(!edited(&baseline, &applied, &other));
        // An autoscaler takes replicas through the scale subresource.
        let scaled = vec![(format!("hpa{SCALER}"), set(&["spec.replicas"]))];
        assert!(!edited(
            &baseline,
            &set(&["spec.template.x", "metadata.labels.a"]),
            &scaled
        ));
        // kubectl patch takes a field converge set.
        let patched = vec![("kubectl-patch".to_owned(), set(&["spec.template.x"]))];
        assert!(edited(
            &baseline,
            &set(&["spec.replicas", "metadata.labels.a"]),
            &patched
        ));
    }

    fn set(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn an_edit_found_by_fingerprint_names_the_fields_converge_lost_and_who_has_them() {
        let image = "spec.template.spec.containers[{\"name\":\"search\"}].image";
        let applied = set(&["spec.replicas", image, "metadata.labels.a"]);
        let baseline = fingerprint(&applied);
        assert_eq!(edit_detail(&baseline, &applied, &[]), None);
        // `kubectl set image` takes the image; the controller manager
        // keeps an annotation converge never set.
        let others = vec![
            ("kubectl-set".to_owned(), set(&[image])),
            (
                "kube-controller-manager".to_owned(),
                set(&["metadata.annotations.deployment.kubernetes.io/revision"]),
            ),
        ];
        assert_eq!(
            edit_detail(
                &baseline,
                &set(&["spec.replicas", "metadata.labels.a"]),
                &others
            )
            .as_deref(),
            Some(format!("edited: {image} (by kubectl-set)").as_str())
        );
        // A field removed outright matches no candidate: the managers only.
        assert_eq!(
            edit_detail(&baseline, &set(&["spec.replicas"]), &others[..1]).as_deref(),
            Some("edited (by kubectl-set)")
        );
        // What an autoscaler took through the scale subresource is no edit.
        let scaled = vec![(format!("hpa{SCALER}"), set(&["spec.replicas"]))];
        assert_eq!(
            edit_detail(&baseline, &set(&[image, "metadata.labels.a"]), &scaled),
            None
        );
    }

    #[test]
    fn losing_a_field_to_another_manager_or_the_object_is_drift_naming_them() {
        let key: Key = ("Deployment", "e".into(), "d".into());
        let mut seen = Observed::default();
        seen.saw(
            key.clone(),
            Some("u1"),
            false,
            Some(set(&["spec.replicas", "spec.template.x"])),
            &[],
        );
        assert!(seen.drifted.is_empty(), "the first sight is the baseline");
        seen.saw(
            key.clone(),
            Some("u1"),
            false,
            Some(set(&["spec.replicas", "spec.template.x"])),
            &[],
        );
        assert!(seen.drifted.is_empty());
        // An autoscaler takes replicas through the scale subresource: not drift.
        let scaler = vec![(format!("hpa{SCALER}"), set(&["spec.replicas"]))];
        seen.saw(
            key.clone(),
            Some("u1"),
            false,
            Some(set(&["spec.template.x"])),
            &scaler,
        );
        assert!(seen.drifted.is_empty(), "{:?}", seen.drifted);
        // Someone edits a field converge set.
        let editor = vec![("kubectl-edit".to_owned(), set(&["spec.template.x"]))];
        seen.saw(
            key.clone(),
            Some("u1"),
            false,
            Some(set(&["spec.replicas"])),
            &editor,
        );
        assert_eq!(
            seen.drifted[&key],
            "edited: spec.template.x (by kubectl-edit)"
        );
        seen.saw(key.clone(), Some("u1"), false, None, &[]);
        assert_eq!(seen.drifted[&key], "deleted");
    }

    #[test]
    fn a_deletion_counts_only_for_an_object_seen_since_converge_applied_it() {
        let key: Key = ("ConfigMap", "e".into(), "c".into());
        let mut seen = Observed::default();
        // converge applies (uid u2) after the watch's listing was taken,
        // which is processed later: the object is missing from it.
        seen.baseline.insert(key.clone(), hashed(&set(&["data.a"])));
        seen.unseen.insert(key.clone(), "u2".into());
        seen.saw(key.clone(), None, false, None, &[]);
        assert!(seen.drifted.is_empty(), "a listing older than the apply");
        // A late event about the object it replaced (u1): not drift either.
        seen.saw(key.clone(), Some("u1"), false, Some(set(&[])), &[]);
        seen.saw(key.clone(), Some("u1"), false, None, &[]);
        assert!(seen.drifted.is_empty(), "{:?}", seen.drifted);
        seen.synced.insert("ConfigMap");
        assert_eq!(seen.drift_of(&key), None, "applied, not seen yet: not gone");
        // The watch sees it, then someone deletes it: drift.
        seen.saw(key.clone(), Some("u2"), false, Some(set(&["data.a"])), &[]);
        assert_eq!(seen.drift_of(&key), None);
        seen.saw(key.clone(), Some("u2"), false, None, &[]);
        assert_eq!(seen.drifted[&key], "deleted");
        // An object the first listing did not find, not applied since.
        let other: Key = ("ConfigMap", "e".into(), "gone".into());
        assert_eq!(seen.drift_of(&other), Some("deleted"));
    }

    #[test]
    fn managed_fields_read_as_paths() {
        let trie = serde_json::json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"a\"}": {".": {}, "f:image": {}}}}
        });
        let mut paths = BTreeSet::new();
        field_paths(&trie, "", &mut paths);
        assert_eq!(
            paths,
            set(&[
                "metadata.labels.app",
                "spec.containers[{\"name\":\"a\"}]",
                "spec.containers[{\"name\":\"a\"}].image"
            ])
        );
    }
}
