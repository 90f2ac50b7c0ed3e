//! The watches: one label-selected LIST and WATCH per kind converge applies
//! (workloads whole, for health; the rest by metadata, for drift), on a
//! thread and runtime of their own.

use super::drift::{Observed, owners};
use super::pods::watch_pods;
use super::{Key, Kubernetes};
use crate::health::ObjectHealth;
use crate::render::MANAGED_BY;
use futures::StreamExt;
use kube::api::Api;
use kube::core::ApiResource;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

/// Kinds whose status says whether they rolled out: watched whole, for
/// health. Every other watched kind is watched by metadata only, for drift.
pub(super) const WORKLOADS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet", "Job"];

/// Label-selected watches of the kinds converge applies, on a thread of
/// their own (a current-thread runtime runs only while blocked on): one LIST
/// and one WATCH per kind, whatever the number of environments; workloads
/// whole (for health), the rest by metadata only (for drift). Stopped when
/// the target is dropped.
pub(super) struct Watches {
    pub(super) observed: Arc<Mutex<Observed>>,
    pub(super) _stop: tokio::sync::oneshot::Sender<()>,
}

/// What one watch needs.
pub(super) struct Watch<'a> {
    pub(super) kind: &'static str,
    pub(super) manager: &'a str,
    pub(super) observed: &'a Mutex<Observed>,
    /// The fingerprints of converge's fields the inventory keeps.
    pub(super) fingerprints: &'a Mutex<HashMap<Key, String>>,
    pub(super) changes: &'a tokio::sync::watch::Sender<u64>,
}

impl Watches {
    /// Starts the watches with a client of their own: a client's request
    /// queue runs on the runtime it was made on.
    /// `notify` is bumped when health or drift changes (the daemon wakes on it).
    pub(super) fn start(
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

/// Follows one kind's objects carrying converge's label.
pub(super) async fn watch<K>(client: &kube::Client, w: Watch<'_>, health: bool)
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

/// Every kind the watches follow.
pub(super) const WATCHED: &[&str] = &[
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
pub(super) fn watched_resources() -> Vec<(&'static str, ApiResource)> {
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

impl Kubernetes {
    /// The watches (started on first use).
    pub(super) fn watches(&self) -> &Watches {
        self.watches.get_or_init(|| {
            Watches::start(
                self.config.clone(),
                self.options.field_manager.clone(),
                self.fingerprints.clone(),
                self.notify.clone(),
            )
        })
    }
}
