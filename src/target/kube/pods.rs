//! The pod watch: pods of converge's workloads the scheduler cannot place,
//! and the node labels they require.

use super::drift::Observed;
use crate::health::ObjectHealth;
use crate::render::MANAGED_BY;
use futures::StreamExt;
use kube::api::Api;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

/// Follows the Pending pods carrying converge's label (its workloads' pods)
/// and keeps only those the scheduler could not place
/// ([`Observed::unschedulable`]): no pod is kept otherwise, and a pod's
/// other changes wake nobody.
pub(super) async fn watch_pods(
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

pub(super) fn pod_key(pod: &k8s_openapi::api::core::v1::Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Drops a pod from [`Observed::unschedulable`]; whether it was there.
pub(super) fn forget_pod(observed: &mut Observed, namespace: &str, name: &str) -> bool {
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
pub(super) fn unschedulable(pod: &k8s_openapi::api::core::v1::Pod) -> Option<ObjectHealth> {
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
