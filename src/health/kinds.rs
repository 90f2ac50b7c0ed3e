//! The rules of each built-in kind (kstatus's `core.go`): which kinds have
//! rules, and what current means for each of them.

use serde_json::Value;

use super::generic::generation_observed;
use super::util::{StatusCondition, condition, conditions, int, int_or, text};
use super::{ObjectHealth, Reason, Status};

type Rule = fn(&Value) -> ObjectHealth;

/// The rules of a built-in kind, if `object` is one.
pub(super) fn rules(kind: &str, object: &Value) -> Option<Rule> {
    let (groups, rule): (&[&str], Rule) = match kind {
        "Deployment" => (&["apps", "extensions"], deployment),
        "StatefulSet" => (&["apps"], stateful_set),
        "DaemonSet" => (&["apps", "extensions"], daemon_set),
        "ReplicaSet" => (&["apps", "extensions"], replica_set),
        "Pod" => (&[""], pod),
        "Job" => (&["batch"], job),
        "PodDisruptionBudget" => (&["policy"], pod_disruption_budget),
        "Service" => (&[""], service),
        "PersistentVolumeClaim" => (&[""], persistent_volume_claim),
        "Namespace" => (&[""], namespace),
        "CustomResourceDefinition" => (&["apiextensions.k8s.io"], custom_resource_definition),
        // Kinds whose status (if any) says nothing about readiness. An
        // Ingress's load-balancer status depends on the ingress controller
        // publishing it, which many do not: kstatus calls it current too.
        "ConfigMap" | "Secret" | "ResourceQuota" | "LimitRange" | "ServiceAccount"
        | "Endpoints" => (&[""], always_current),
        "NetworkPolicy" | "Ingress" | "IngressClass" => (&["networking.k8s.io"], always_current),
        "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding" => {
            (&["rbac.authorization.k8s.io"], always_current)
        }
        "HorizontalPodAutoscaler" => (&["autoscaling"], always_current),
        "CronJob" => (&["batch"], always_current),
        "PriorityClass" => (&["scheduling.k8s.io"], always_current),
        "StorageClass" => (&["storage.k8s.io"], always_current),
        _ => return None,
    };
    let group = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(|v| v.rsplit_once('/').map_or("", |(group, _)| group));
    group.is_none_or(|g| groups.contains(&g)).then_some(rule)
}

fn always_current(_: &Value) -> ObjectHealth {
    ObjectHealth::current("always current once it exists")
}

fn deployment(object: &Value) -> ObjectHealth {
    if let Some(health) = generation_observed("Deployment", object) {
        return health;
    }
    // Without a progress deadline the controller never sets Progressing, so
    // the rollout counts as progressing (kstatus treats MaxInt32 as unset).
    let mut progressing =
        int(object, "/spec/progressDeadlineSeconds").is_none_or(|d| d == i64::from(i32::MAX));
    let mut available = false;
    for c in conditions(object) {
        match c.type_ {
            "Progressing" => {
                if c.status == "False" && c.reason == "ProgressDeadlineExceeded" {
                    return ObjectHealth::failed(
                        Reason::ProgressDeadlineExceeded,
                        if c.message.is_empty() {
                            "progress deadline exceeded".to_owned()
                        } else {
                            format!("progress deadline exceeded: {}", c.message)
                        },
                    );
                }
                if c.is_true() && c.reason == "NewReplicaSetAvailable" {
                    progressing = true;
                }
            }
            "Available" => available |= c.is_true(),
            _ => {}
        }
    }
    let spec = int_or(object, "/spec/replicas", 1);
    let replicas = int_or(object, "/status/replicas", 0);
    let updated = int_or(object, "/status/updatedReplicas", 0);
    let ready = int_or(object, "/status/readyReplicas", 0);
    let available_replicas = int_or(object, "/status/availableReplicas", 0);
    if let Some(health) = replica_counts(spec, replicas, updated) {
        return health;
    }
    if updated > available_replicas {
        return ObjectHealth::in_progress(
            Reason::LessAvailable,
            format!("available replicas: {available_replicas}/{updated}"),
        );
    }
    if spec > ready {
        return ObjectHealth::in_progress(
            Reason::LessReady,
            format!("ready replicas: {ready}/{spec}"),
        );
    }
    if !progressing {
        return ObjectHealth::in_progress(
            Reason::ReplicaSetNotAvailable,
            "the new replica set is not available yet (Progressing is not True with reason \
             NewReplicaSetAvailable)",
        );
    }
    if !available {
        return ObjectHealth::in_progress(
            Reason::DeploymentNotAvailable,
            "the Available condition is not True",
        );
    }
    ObjectHealth::current(format!("available: {replicas}/{spec} replicas"))
}

/// The replica counts a Deployment shares with other workloads: too few
/// replicas, too few updated, old replicas still terminating.
fn replica_counts(spec: i64, replicas: i64, updated: i64) -> Option<ObjectHealth> {
    if spec > replicas {
        return Some(ObjectHealth::in_progress(
            Reason::LessReplicas,
            format!("replicas: {replicas}/{spec}"),
        ));
    }
    if spec > updated {
        return Some(ObjectHealth::in_progress(
            Reason::LessUpdated,
            format!("updated replicas: {updated}/{spec}"),
        ));
    }
    if replicas > spec {
        return Some(ObjectHealth::in_progress(
            Reason::ExtraPods,
            format!("pending termination: {} old replicas", replicas - spec),
        ));
    }
    None
}

/// `StatefulSets` set no conditions: only the counts and revisions tell.
fn stateful_set(object: &Value) -> ObjectHealth {
    if let Some(health) = generation_observed("StatefulSet", object) {
        return health;
    }
    // With OnDelete the user replaces pods; the controller's counts do not tell.
    if text(object, "/spec/updateStrategy/type") == Some("OnDelete") {
        return ObjectHealth::current("uses the OnDelete update strategy");
    }
    let spec = int_or(object, "/spec/replicas", 1);
    let replicas = int_or(object, "/status/replicas", 0);
    let ready = int_or(object, "/status/readyReplicas", 0);
    let current = int_or(object, "/status/currentReplicas", 0);
    let updated = int_or(object, "/status/updatedReplicas", 0);
    if spec > replicas {
        return ObjectHealth::in_progress(
            Reason::LessReplicas,
            format!("replicas: {replicas}/{spec}"),
        );
    }
    if spec > ready {
        return ObjectHealth::in_progress(
            Reason::LessReady,
            format!("ready replicas: {ready}/{spec}"),
        );
    }
    if replicas > spec {
        return ObjectHealth::in_progress(
            Reason::ExtraPods,
            format!("pending termination: {} replicas", replicas - spec),
        );
    }
    if let Some(partition) = int(object, "/spec/updateStrategy/rollingUpdate/partition") {
        let wanted = spec - partition;
        if updated < wanted {
            return ObjectHealth::in_progress(
                Reason::PartitionRollout,
                format!("updated replicas: {updated}/{wanted} (partition {partition})"),
            );
        }
        return ObjectHealth::current(format!(
            "partitioned rollout complete: {updated} replicas updated"
        ));
    }
    if spec > current {
        return ObjectHealth::in_progress(
            Reason::LessCurrent,
            format!("current replicas: {current}/{spec}"),
        );
    }
    let current_revision = text(object, "/status/currentRevision").unwrap_or_default();
    let update_revision = text(object, "/status/updateRevision").unwrap_or_default();
    if current_revision != update_revision {
        return ObjectHealth::in_progress(
            Reason::RevisionMismatch,
            format!(
                "rolling out revision {update_revision}: pods still at revision \
                 {current_revision}"
            ),
        );
    }
    ObjectHealth::current(format!("ready: {ready}/{spec} replicas"))
}

fn daemon_set(object: &Value) -> ObjectHealth {
    if let Some(health) = generation_observed("DaemonSet", object) {
        return health;
    }
    let Some(desired) = int(object, "/status/desiredNumberScheduled") else {
        return ObjectHealth::in_progress(
            Reason::NoDesiredNumber,
            "no status.desiredNumberScheduled yet",
        );
    };
    let counts = [
        (
            "/status/currentNumberScheduled",
            Reason::LessCurrent,
            "scheduled",
        ),
        (
            "/status/updatedNumberScheduled",
            Reason::LessUpdated,
            "updated",
        ),
        (
            "/status/numberAvailable",
            Reason::LessAvailable,
            "available",
        ),
        ("/status/numberReady", Reason::LessReady, "ready"),
    ];
    if let Some(short) = short_of(object, desired, &counts, "pods") {
        return short;
    }
    ObjectHealth::current(format!("ready on all {desired} nodes"))
}

/// The first count (a status field, its reason, what it counts) short of
/// `want`, as in progress: `"{what} {unit}: {n}/{want}"`.
fn short_of(
    object: &Value,
    want: i64,
    counts: &[(&str, Reason, &str)],
    unit: &str,
) -> Option<ObjectHealth> {
    counts.iter().find_map(|&(pointer, reason, what)| {
        let n = int_or(object, pointer, 0);
        (want > n).then(|| ObjectHealth::in_progress(reason, format!("{what} {unit}: {n}/{want}")))
    })
}

fn replica_set(object: &Value) -> ObjectHealth {
    if let Some(health) = generation_observed("ReplicaSet", object) {
        return health;
    }
    if let Some(c) = condition(object, "ReplicaFailure").filter(StatusCondition::is_true) {
        return ObjectHealth::in_progress(
            Reason::ReplicaFailure,
            format!("replica failure: {}", c.describe()),
        );
    }
    let spec = int_or(object, "/spec/replicas", 1);
    let replicas = int_or(object, "/status/replicas", 0);
    let counts = [
        (
            "/status/fullyLabeledReplicas",
            Reason::LessLabelled,
            "labelled",
        ),
        (
            "/status/availableReplicas",
            Reason::LessAvailable,
            "available",
        ),
        ("/status/readyReplicas", Reason::LessReady, "ready"),
    ];
    if let Some(short) = short_of(object, spec, &counts, "replicas") {
        return short;
    }
    if replicas > spec {
        return ObjectHealth::in_progress(
            Reason::ExtraPods,
            format!("pending termination: {} replicas", replicas - spec),
        );
    }
    ObjectHealth::current(format!("available: {replicas}/{spec} replicas"))
}

/// kstatus judges an unschedulable pod by its age against the wall clock
/// (15 s); this module has no clock, so an unschedulable pod stays in
/// progress and the environment's timeout turns it into `Stalled`. A pod that
/// ran to completion, successfully or not, is current (kstatus's rule).
fn pod(object: &Value) -> ObjectHealth {
    match text(object, "/status/phase").unwrap_or_default() {
        "Succeeded" => ObjectHealth::current("completed successfully"),
        "Failed" => ObjectHealth::current("completed, not successfully"),
        "Running" => {
            if condition(object, "Ready").is_some_and(|c| c.is_true()) {
                return ObjectHealth::current("running and ready");
            }
            let crash_looping = waiting_containers(object, |reason| reason == "CrashLoopBackOff");
            if !crash_looping.is_empty() {
                return ObjectHealth::failed(
                    Reason::ContainerCrashLooping,
                    format!(
                        "containers in CrashLoopBackOff: {}",
                        crash_looping.join(", ")
                    ),
                );
            }
            ObjectHealth::in_progress(
                Reason::PodRunningNotReady,
                with_waiting("running, not ready", object),
            )
        }
        "Pending" => {
            if let Some(c) = condition(object, "PodScheduled")
                .filter(|c| c.status == "False" && c.reason == "Unschedulable")
            {
                return ObjectHealth::in_progress(
                    Reason::PodUnschedulable,
                    format!("not scheduled: {}", c.describe()),
                );
            }
            ObjectHealth::in_progress(Reason::PodPending, with_waiting("pending", object))
        }
        "" => ObjectHealth::in_progress(Reason::PodNotObserved, "no status.phase yet"),
        phase => ObjectHealth::new(
            Status::Unknown,
            Reason::UnknownPhase,
            format!("unknown phase {phase}"),
        ),
    }
}

/// `what`, followed by the waiting reasons of the pod's containers, if any
/// (`ImagePullBackOff` and the like are what people look for).
fn with_waiting(what: &str, object: &Value) -> String {
    let waiting = waiting_containers(object, |_| true);
    if waiting.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: waiting: {}", waiting.join(", "))
    }
}

/// `name (reason)` of each container waiting for a reason that `pick` accepts.
fn waiting_containers(object: &Value, pick: impl Fn(&str) -> bool) -> Vec<String> {
    ["/status/initContainerStatuses", "/status/containerStatuses"]
        .into_iter()
        .filter_map(|p| object.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter_map(|s| {
            let name = s.get("name").and_then(Value::as_str)?;
            let reason = s.pointer("/state/waiting/reason").and_then(Value::as_str)?;
            pick(reason).then(|| format!("{name} ({reason})"))
        })
        .collect()
}

/// A job is current once it has started (or is suspended on purpose, or has
/// completed); failed when its `Failed` condition is true.
fn job(object: &Value) -> ObjectHealth {
    let parallelism = int_or(object, "/spec/parallelism", 1);
    let completions = int_or(object, "/spec/completions", parallelism);
    let succeeded = int_or(object, "/status/succeeded", 0);
    let active = int_or(object, "/status/active", 0);
    let failed = int_or(object, "/status/failed", 0);
    let suspended = object
        .pointer("/spec/suspend")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for c in conditions(object).filter(StatusCondition::is_true) {
        match c.type_ {
            "Complete" => {
                return ObjectHealth::current(format!(
                    "completed: {succeeded}/{completions} succeeded"
                ));
            }
            "Failed" => {
                return ObjectHealth::failed(
                    Reason::JobFailed,
                    format!("failed: {failed} failed pods: {}", c.describe()),
                );
            }
            "Suspended" if suspended => return ObjectHealth::current("suspended"),
            _ => {}
        }
    }
    if text(object, "/status/startTime").is_none_or(str::is_empty) {
        return ObjectHealth::in_progress(Reason::JobNotStarted, "not started yet");
    }
    ObjectHealth::current(format!(
        "running: {succeeded} succeeded, {active} active, {failed} failed"
    ))
}

/// Current once the disruption controller has observed the budget (the
/// generic generation check).
fn pod_disruption_budget(_: &Value) -> ObjectHealth {
    ObjectHealth::current("allowed disruptions computed")
}

/// A `LoadBalancer` service waits for its cluster IP and for an ingress
/// point (stricter than kstatus, which waits for the cluster IP only: a load
/// balancer without an address does not serve).
fn service(object: &Value) -> ObjectHealth {
    if text(object, "/spec/type") != Some("LoadBalancer") {
        return ObjectHealth::current("service is ready");
    }
    if text(object, "/spec/clusterIP").is_none_or(str::is_empty) {
        return ObjectHealth::in_progress(
            Reason::NoIPAssigned,
            "no cluster IP assigned yet (type LoadBalancer)",
        );
    }
    let ingress = object
        .pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let addresses: Vec<&str> = ingress
        .iter()
        .filter_map(|i| {
            i.get("ip")
                .or_else(|| i.get("hostname"))
                .and_then(Value::as_str)
        })
        .collect();
    if addresses.is_empty() {
        return ObjectHealth::in_progress(
            Reason::NoIngress,
            "waiting for the load balancer's address (status.loadBalancer.ingress)",
        );
    }
    ObjectHealth::current(format!("load balancer at {}", addresses.join(", ")))
}

fn persistent_volume_claim(object: &Value) -> ObjectHealth {
    match text(object, "/status/phase") {
        Some("Bound") => ObjectHealth::current("bound"),
        phase => ObjectHealth::in_progress(
            Reason::NotBound,
            format!("not bound: phase {}", phase.unwrap_or("unknown")),
        ),
    }
}

/// A Namespace being deleted may show only its phase.
fn namespace(object: &Value) -> ObjectHealth {
    match text(object, "/status/phase") {
        Some("Terminating") => ObjectHealth::new(
            Status::Terminating,
            Reason::Terminating,
            "Namespace is terminating".to_owned(),
        ),
        _ => ObjectHealth::current("active"),
    }
}

fn custom_resource_definition(object: &Value) -> ObjectHealth {
    for c in conditions(object) {
        match (c.type_, c.status) {
            ("NamesAccepted", "False") => {
                return ObjectHealth::failed(
                    Reason::NamesNotAccepted,
                    format!("names not accepted: {}", c.describe()),
                );
            }
            ("Established", "False") if c.reason != "Installing" => {
                return ObjectHealth::failed(
                    Reason::NotEstablished,
                    format!("not established: {}", c.describe()),
                );
            }
            ("Established", "True") => return ObjectHealth::current("established"),
            _ => {}
        }
    }
    ObjectHealth::in_progress(Reason::Installing, "not established yet")
}
