//! Health: whether a live object has become what was applied, with the
//! semantics of kstatus (`sigs.k8s.io/cli-utils/pkg/kstatus/status`).
//!
//! Pure: [`object`] reads one object as the API server returned it (JSON,
//! status included) and says whether it is [`Status::Current`], still
//! [`Status::InProgress`], [`Status::Failed`] or [`Status::Terminating`], with
//! a stable `CamelCase` reason and a message; [`environment`] folds the
//! objects of one environment into `Ready` / `Reconciling` / `Stalled`, turning
//! progress that has taken longer than a timeout since the last apply into
//! `Stalled`. No IO and no clock: the caller fetches the objects and measures
//! the time since its apply.
//!
//! The generic rules run first for every kind: a deletion timestamp means
//! terminating; a `status.observedGeneration` behind `metadata.generation`
//! means the controller has not seen the latest spec yet (the check
//! `kube::runtime::wait::conditions::is_deployment_completed` lacks); a
//! `Reconciling` or `Stalled` condition that is `True` decides. Then the rules
//! of the kind decide; a kind without rules is decided by its `Ready`
//! condition if it has one, and is current otherwise. Where converge is
//! stricter than kstatus, the rule says so.

use std::fmt::{self, Write as _};
use std::time::Duration;

use serde_json::Value;

/// How far a live object is from what was applied (kstatus's statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// The controller has acted on the latest spec and the object is ready.
    Current,
    /// The object is on its way (rollout, scheduling, provisioning, ...).
    InProgress,
    /// The object will not get there without a change (deadline exceeded,
    /// crash loop, failed job, a `Stalled` condition).
    Failed,
    /// The object is being deleted.
    Terminating,
    /// The object does not exist.
    NotFound,
    /// The object could not be read (not a JSON object, an unknown phase).
    Unknown,
}

impl Status {
    /// The stable name (kstatus's spelling).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Current => "Current",
            Status::InProgress => "InProgress",
            Status::Failed => "Failed",
            Status::Terminating => "Terminating",
            Status::NotFound => "NotFound",
            Status::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The health of one object: a status, a stable reason from [`reason`] and a
/// message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHealth {
    pub status: Status,
    /// Stable `CamelCase` (one of [`reason::ALL`]): fit for conditions and
    /// metric labels.
    pub reason: &'static str,
    pub message: String,
}

impl ObjectHealth {
    /// The health of an object the API server does not have.
    #[must_use]
    pub fn not_found() -> ObjectHealth {
        ObjectHealth::new(Status::NotFound, reason::NOT_FOUND, "not found".to_owned())
    }

    /// The health of an object the target has not observed yet.
    #[must_use]
    pub fn not_observed() -> ObjectHealth {
        ObjectHealth::new(
            Status::InProgress,
            reason::NOT_OBSERVED,
            "not observed yet".to_owned(),
        )
    }

    fn new(status: Status, reason: &'static str, message: String) -> ObjectHealth {
        ObjectHealth {
            status,
            reason,
            message,
        }
    }

    fn current(message: impl Into<String>) -> ObjectHealth {
        ObjectHealth::new(Status::Current, reason::CURRENT, message.into())
    }

    fn in_progress(reason: &'static str, message: impl Into<String>) -> ObjectHealth {
        ObjectHealth::new(Status::InProgress, reason, message.into())
    }

    fn failed(reason: &'static str, message: impl Into<String>) -> ObjectHealth {
        ObjectHealth::new(Status::Failed, reason, message.into())
    }
}

/// The stable reasons of [`ObjectHealth`] and [`EnvironmentHealth`].
pub mod reason {
    /// The object is current (every kind); the environment is ready.
    pub const CURRENT: &str = "Current";
    pub const NOT_FOUND: &str = "NotFound";
    /// The target has not observed the object yet (its watch has not synced).
    pub const NOT_OBSERVED: &str = "NotObserved";
    /// `metadata.deletionTimestamp` is set, or a Namespace is in phase
    /// `Terminating`.
    pub const TERMINATING: &str = "Terminating";
    /// The body is not a JSON object.
    pub const NOT_AN_OBJECT: &str = "NotAnObject";

    // Generic rules.
    pub const LATEST_GENERATION_NOT_OBSERVED: &str = "LatestGenerationNotObserved";
    pub const NO_GENERATION: &str = "NoGeneration";
    pub const NO_OBSERVED_GENERATION: &str = "NoObservedGeneration";
    /// A `Reconciling` condition is `True`.
    pub const RECONCILING: &str = "Reconciling";
    /// A `Stalled` condition is `True`.
    pub const STALLED: &str = "Stalled";
    /// A kind without rules has a `Ready` condition that is not `True`.
    pub const NOT_READY: &str = "NotReady";

    // Workloads.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    pub const LESS_REPLICAS: &str = "LessReplicas";
    pub const LESS_UPDATED: &str = "LessUpdated";
    pub const LESS_AVAILABLE: &str = "LessAvailable";
    pub const LESS_READY: &str = "LessReady";
    pub const LESS_CURRENT: &str = "LessCurrent";
    pub const LESS_LABELLED: &str = "LessLabelled";
    pub const EXTRA_PODS: &str = "ExtraPods";
    pub const REPLICA_SET_NOT_AVAILABLE: &str = "ReplicaSetNotAvailable";
    pub const DEPLOYMENT_NOT_AVAILABLE: &str = "DeploymentNotAvailable";
    pub const REPLICA_FAILURE: &str = "ReplicaFailure";
    pub const PARTITION_ROLLOUT: &str = "PartitionRollout";
    pub const REVISION_MISMATCH: &str = "RevisionMismatch";
    pub const NO_DESIRED_NUMBER: &str = "NoDesiredNumber";

    // Pods and jobs.
    pub const POD_NOT_OBSERVED: &str = "PodNotObserved";
    pub const POD_PENDING: &str = "PodPending";
    pub const POD_UNSCHEDULABLE: &str = "PodUnschedulable";
    pub const POD_RUNNING_NOT_READY: &str = "PodRunningNotReady";
    pub const CONTAINER_CRASH_LOOPING: &str = "ContainerCrashLooping";
    pub const UNKNOWN_PHASE: &str = "UnknownPhase";
    pub const JOB_NOT_STARTED: &str = "JobNotStarted";
    pub const JOB_FAILED: &str = "JobFailed";

    // Services, claims, definitions.
    pub const NO_IP_ASSIGNED: &str = "NoIPAssigned";
    pub const NO_INGRESS: &str = "NoIngress";
    pub const NOT_BOUND: &str = "NotBound";
    pub const NAMES_NOT_ACCEPTED: &str = "NamesNotAccepted";
    pub const NOT_ESTABLISHED: &str = "NotEstablished";
    pub const INSTALLING: &str = "Installing";

    // Environments (besides CURRENT, and a failed object's own reason).
    /// Some object is not current yet, within the timeout.
    pub const PROGRESSING: &str = "Progressing";

    /// Every reason, for tests and for listing metric labels.
    pub const ALL: &[&str] = &[
        CURRENT,
        NOT_FOUND,
        NOT_OBSERVED,
        TERMINATING,
        NOT_AN_OBJECT,
        LATEST_GENERATION_NOT_OBSERVED,
        NO_GENERATION,
        NO_OBSERVED_GENERATION,
        RECONCILING,
        STALLED,
        NOT_READY,
        PROGRESS_DEADLINE_EXCEEDED,
        LESS_REPLICAS,
        LESS_UPDATED,
        LESS_AVAILABLE,
        LESS_READY,
        LESS_CURRENT,
        LESS_LABELLED,
        EXTRA_PODS,
        REPLICA_SET_NOT_AVAILABLE,
        DEPLOYMENT_NOT_AVAILABLE,
        REPLICA_FAILURE,
        PARTITION_ROLLOUT,
        REVISION_MISMATCH,
        NO_DESIRED_NUMBER,
        POD_NOT_OBSERVED,
        POD_PENDING,
        POD_UNSCHEDULABLE,
        POD_RUNNING_NOT_READY,
        CONTAINER_CRASH_LOOPING,
        UNKNOWN_PHASE,
        JOB_NOT_STARTED,
        JOB_FAILED,
        NO_IP_ASSIGNED,
        NO_INGRESS,
        NOT_BOUND,
        NAMES_NOT_ACCEPTED,
        NOT_ESTABLISHED,
        INSTALLING,
        PROGRESSING,
    ];
}

/// The health of `object`, a live object of kind `kind` as the API server
/// returned it. The rules of a built-in kind apply only when the object's
/// `apiVersion` names that kind's group (a custom `Deployment` of another
/// group is a custom resource); without an `apiVersion` the kind decides.
#[must_use]
pub fn object(kind: &str, object: &Value) -> ObjectHealth {
    if !object.is_object() {
        return ObjectHealth::new(
            Status::Unknown,
            reason::NOT_AN_OBJECT,
            format!("{kind} is not a JSON object"),
        );
    }
    if let Some(health) = generic(kind, object) {
        return health;
    }
    match rules(kind, object) {
        Some(rule) => rule(object),
        None => ready_condition(object)
            .unwrap_or_else(|| ObjectHealth::current(format!("{kind} is current"))),
    }
}

type Rule = fn(&Value) -> ObjectHealth;

/// The rules of a built-in kind, if `object` is one.
fn rules(kind: &str, object: &Value) -> Option<Rule> {
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

/// One entry of `status.conditions`.
#[derive(Debug, Clone, Copy)]
struct Condition<'a> {
    type_: &'a str,
    status: &'a str,
    reason: &'a str,
    message: &'a str,
}

impl Condition<'_> {
    fn is_true(&self) -> bool {
        self.status == "True"
    }

    /// `reason: message`, or whichever of them is there.
    fn describe(&self) -> String {
        match (self.reason.is_empty(), self.message.is_empty()) {
            (false, false) => format!("{}: {}", self.reason, self.message),
            (false, true) => self.reason.to_owned(),
            (true, false) => self.message.to_owned(),
            (true, true) => format!("{} is {}", self.type_, self.status),
        }
    }
}

/// The well-formed entries of `status.conditions` (entries without a type are
/// skipped).
fn conditions(object: &Value) -> impl Iterator<Item = Condition<'_>> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let text = |key: &str| c.get(key).and_then(Value::as_str).unwrap_or_default();
            let type_ = text("type");
            (!type_.is_empty()).then(|| Condition {
                type_,
                status: text("status"),
                reason: text("reason"),
                message: text("message"),
            })
        })
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<Condition<'a>> {
    conditions(object).find(|c| c.type_ == type_)
}

fn int(object: &Value, pointer: &str) -> Option<i64> {
    object.pointer(pointer).and_then(Value::as_i64)
}

fn int_or(object: &Value, pointer: &str, default: i64) -> i64 {
    int(object, pointer).unwrap_or(default)
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// The rules every kind goes through first; `None` when they do not decide.
fn generic(kind: &str, object: &Value) -> Option<ObjectHealth> {
    if text(object, "/metadata/deletionTimestamp").is_some_and(|t| !t.is_empty()) {
        return Some(ObjectHealth::new(
            Status::Terminating,
            reason::TERMINATING,
            format!("{kind} is being deleted"),
        ));
    }
    if let (Some(generation), Some(observed)) = (
        int(object, "/metadata/generation"),
        int(object, "/status/observedGeneration"),
    ) && observed != generation
    {
        return Some(ObjectHealth::in_progress(
            reason::LATEST_GENERATION_NOT_OBSERVED,
            format!(
                "generation {generation} not observed yet: the controller last observed \
                 generation {observed}"
            ),
        ));
    }
    for c in conditions(object) {
        match c.type_ {
            "Reconciling" if c.is_true() => {
                return Some(ObjectHealth::in_progress(
                    reason::RECONCILING,
                    format!("reconciling: {}", c.describe()),
                ));
            }
            "Stalled" if c.is_true() => {
                return Some(ObjectHealth::failed(
                    reason::STALLED,
                    format!("stalled: {}", c.describe()),
                ));
            }
            _ => {}
        }
    }
    None
}

/// A controller-managed workload is current only once its controller has
/// observed it: both generations must be there. kstatus asks this of
/// `DaemonSets` only; converge asks it of every workload kind, because a
/// `StatefulSet` (or a Deployment scaled to zero) with an empty status would
/// otherwise read as current before any controller has seen it.
fn generation_observed(kind: &str, object: &Value) -> Option<ObjectHealth> {
    if int(object, "/metadata/generation").is_none() {
        return Some(ObjectHealth::in_progress(
            reason::NO_GENERATION,
            format!("{kind} has no metadata.generation"),
        ));
    }
    if int(object, "/status/observedGeneration").is_none() {
        return Some(ObjectHealth::in_progress(
            reason::NO_OBSERVED_GENERATION,
            format!("the {kind} controller has not observed it yet (no status.observedGeneration)"),
        ));
    }
    None
}

fn always_current(_: &Value) -> ObjectHealth {
    ObjectHealth::current("always current once it exists")
}

/// The `Ready` condition of a kind without rules (custom resources).
fn ready_condition(object: &Value) -> Option<ObjectHealth> {
    let ready = condition(object, "Ready")?;
    match ready.status {
        "True" => Some(ObjectHealth::current("Ready is True")),
        "False" | "Unknown" => Some(ObjectHealth::in_progress(
            reason::NOT_READY,
            format!("Ready is {}: {}", ready.status, ready.describe()),
        )),
        _ => None,
    }
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
                        reason::PROGRESS_DEADLINE_EXCEEDED,
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
            reason::LESS_AVAILABLE,
            format!("available replicas: {available_replicas}/{updated}"),
        );
    }
    if spec > ready {
        return ObjectHealth::in_progress(
            reason::LESS_READY,
            format!("ready replicas: {ready}/{spec}"),
        );
    }
    if !progressing {
        return ObjectHealth::in_progress(
            reason::REPLICA_SET_NOT_AVAILABLE,
            "the new replica set is not available yet (Progressing is not True with reason \
             NewReplicaSetAvailable)",
        );
    }
    if !available {
        return ObjectHealth::in_progress(
            reason::DEPLOYMENT_NOT_AVAILABLE,
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
            reason::LESS_REPLICAS,
            format!("replicas: {replicas}/{spec}"),
        ));
    }
    if spec > updated {
        return Some(ObjectHealth::in_progress(
            reason::LESS_UPDATED,
            format!("updated replicas: {updated}/{spec}"),
        ));
    }
    if replicas > spec {
        return Some(ObjectHealth::in_progress(
            reason::EXTRA_PODS,
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
            reason::LESS_REPLICAS,
            format!("replicas: {replicas}/{spec}"),
        );
    }
    if spec > ready {
        return ObjectHealth::in_progress(
            reason::LESS_READY,
            format!("ready replicas: {ready}/{spec}"),
        );
    }
    if replicas > spec {
        return ObjectHealth::in_progress(
            reason::EXTRA_PODS,
            format!("pending termination: {} replicas", replicas - spec),
        );
    }
    if let Some(partition) = int(object, "/spec/updateStrategy/rollingUpdate/partition") {
        let wanted = spec - partition;
        if updated < wanted {
            return ObjectHealth::in_progress(
                reason::PARTITION_ROLLOUT,
                format!("updated replicas: {updated}/{wanted} (partition {partition})"),
            );
        }
        return ObjectHealth::current(format!(
            "partitioned rollout complete: {updated} replicas updated"
        ));
    }
    if spec > current {
        return ObjectHealth::in_progress(
            reason::LESS_CURRENT,
            format!("current replicas: {current}/{spec}"),
        );
    }
    let current_revision = text(object, "/status/currentRevision").unwrap_or_default();
    let update_revision = text(object, "/status/updateRevision").unwrap_or_default();
    if current_revision != update_revision {
        return ObjectHealth::in_progress(
            reason::REVISION_MISMATCH,
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
            reason::NO_DESIRED_NUMBER,
            "no status.desiredNumberScheduled yet",
        );
    };
    let counts = [
        (
            "/status/currentNumberScheduled",
            reason::LESS_CURRENT,
            "scheduled",
        ),
        (
            "/status/updatedNumberScheduled",
            reason::LESS_UPDATED,
            "updated",
        ),
        (
            "/status/numberAvailable",
            reason::LESS_AVAILABLE,
            "available",
        ),
        ("/status/numberReady", reason::LESS_READY, "ready"),
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
    counts: &[(&str, &'static str, &str)],
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
    if let Some(c) = condition(object, "ReplicaFailure").filter(Condition::is_true) {
        return ObjectHealth::in_progress(
            reason::REPLICA_FAILURE,
            format!("replica failure: {}", c.describe()),
        );
    }
    let spec = int_or(object, "/spec/replicas", 1);
    let replicas = int_or(object, "/status/replicas", 0);
    let counts = [
        (
            "/status/fullyLabeledReplicas",
            reason::LESS_LABELLED,
            "labelled",
        ),
        (
            "/status/availableReplicas",
            reason::LESS_AVAILABLE,
            "available",
        ),
        ("/status/readyReplicas", reason::LESS_READY, "ready"),
    ];
    if let Some(short) = short_of(object, spec, &counts, "replicas") {
        return short;
    }
    if replicas > spec {
        return ObjectHealth::in_progress(
            reason::EXTRA_PODS,
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
                    reason::CONTAINER_CRASH_LOOPING,
                    format!(
                        "containers in CrashLoopBackOff: {}",
                        crash_looping.join(", ")
                    ),
                );
            }
            ObjectHealth::in_progress(
                reason::POD_RUNNING_NOT_READY,
                with_waiting("running, not ready", object),
            )
        }
        "Pending" => {
            if let Some(c) = condition(object, "PodScheduled")
                .filter(|c| c.status == "False" && c.reason == "Unschedulable")
            {
                return ObjectHealth::in_progress(
                    reason::POD_UNSCHEDULABLE,
                    format!("not scheduled: {}", c.describe()),
                );
            }
            ObjectHealth::in_progress(reason::POD_PENDING, with_waiting("pending", object))
        }
        "" => ObjectHealth::in_progress(reason::POD_NOT_OBSERVED, "no status.phase yet"),
        phase => ObjectHealth::new(
            Status::Unknown,
            reason::UNKNOWN_PHASE,
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
    for c in conditions(object).filter(Condition::is_true) {
        match c.type_ {
            "Complete" => {
                return ObjectHealth::current(format!(
                    "completed: {succeeded}/{completions} succeeded"
                ));
            }
            "Failed" => {
                return ObjectHealth::failed(
                    reason::JOB_FAILED,
                    format!("failed: {failed} failed pods: {}", c.describe()),
                );
            }
            "Suspended" if suspended => return ObjectHealth::current("suspended"),
            _ => {}
        }
    }
    if text(object, "/status/startTime").is_none_or(str::is_empty) {
        return ObjectHealth::in_progress(reason::JOB_NOT_STARTED, "not started yet");
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
            reason::NO_IP_ASSIGNED,
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
            reason::NO_INGRESS,
            "waiting for the load balancer's address (status.loadBalancer.ingress)",
        );
    }
    ObjectHealth::current(format!("load balancer at {}", addresses.join(", ")))
}

fn persistent_volume_claim(object: &Value) -> ObjectHealth {
    match text(object, "/status/phase") {
        Some("Bound") => ObjectHealth::current("bound"),
        phase => ObjectHealth::in_progress(
            reason::NOT_BOUND,
            format!("not bound: phase {}", phase.unwrap_or("unknown")),
        ),
    }
}

/// A Namespace being deleted may show only its phase.
fn namespace(object: &Value) -> ObjectHealth {
    match text(object, "/status/phase") {
        Some("Terminating") => ObjectHealth::new(
            Status::Terminating,
            reason::TERMINATING,
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
                    reason::NAMES_NOT_ACCEPTED,
                    format!("names not accepted: {}", c.describe()),
                );
            }
            ("Established", "False") if c.reason != "Installing" => {
                return ObjectHealth::failed(
                    reason::NOT_ESTABLISHED,
                    format!("not established: {}", c.describe()),
                );
            }
            ("Established", "True") => return ObjectHealth::current("established"),
            _ => {}
        }
    }
    ObjectHealth::in_progress(reason::INSTALLING, "not established yet")
}

/// The health of one environment, folded from its objects'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentHealth {
    /// Every object is current.
    pub ready: bool,
    /// Some object is not current yet, within the timeout.
    pub reconciling: bool,
    /// Some object failed, or was not current within the timeout.
    pub stalled: bool,
    /// [`reason::CURRENT`], [`reason::PROGRESSING`],
    /// [`reason::PROGRESS_DEADLINE_EXCEEDED`], or a failed object's reason.
    pub reason: &'static str,
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
/// [`reason::PROGRESS_DEADLINE_EXCEEDED`].
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
            ready: false,
            reconciling: false,
            stalled: true,
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
            ready: true,
            reconciling: false,
            stalled: false,
            reason: reason::CURRENT,
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
            ready: false,
            reconciling: false,
            stalled: true,
            reason: reason::PROGRESS_DEADLINE_EXCEEDED,
            message: format!(
                "{of} objects not current within {} of the apply at {applied_at}: {}",
                human(timeout),
                name(&waiting)
            ),
        }
    } else {
        EnvironmentHealth {
            ready: false,
            reconciling: true,
            stalled: false,
            reason: reason::PROGRESSING,
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
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let mut out = String::new();
    for (n, unit) in [(s / 3600, 'h'), (s / 60 % 60, 'm'), (s % 60, 's')] {
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    if out.is_empty() { "0s".to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The last apply's time the tests' messages name.
    const AT: &str = "2026-01-01T00:00:00Z";

    /// `base` with each `(JSON pointer, value)` set; `Value::Null` removes
    /// the field.
    fn patched(base: &Value, patches: &[(&str, Value)]) -> Value {
        let mut out = base.clone();
        for (pointer, value) in patches {
            let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
            let parent = out
                .pointer_mut(parent)
                .and_then(Value::as_object_mut)
                .unwrap_or_else(|| panic!("{parent} is an object"));
            if value.is_null() {
                parent.remove(key);
            } else {
                parent.insert(key.to_owned(), value.clone());
            }
        }
        out
    }

    /// Checks every case of a table: `(what, object, status, reason)`.
    fn check(kind: &str, cases: &[(&str, Value, Status, &str)]) {
        for (what, obj, status, reason) in cases {
            let health = object(kind, obj);
            assert_eq!(
                (health.status, health.reason),
                (*status, *reason),
                "{kind}: {what}: {}",
                health.message
            );
            assert!(!health.message.is_empty(), "{kind}: {what}: a message");
        }
    }

    /// A Deployment whose rollout of generation 3 has finished, as the API
    /// server returns it.
    fn deployment_rolled_out() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "user-service",
                "namespace": "pr-1234",
                "uid": "6f1b7a52-1f0e-4a55-9a3c-2b8f0c6d9e11",
                "resourceVersion": "48213",
                "generation": 3,
                "creationTimestamp": "2026-11-30T09:12:44Z",
                "labels": {"app.kubernetes.io/name": "user-service", "converge.dev/environment": "pr-1234"},
                "annotations": {"deployment.kubernetes.io/revision": "3"}
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app.kubernetes.io/name": "user-service"}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "user-service"}},
                    "spec": {"containers": [{
                        "name": "user-service",
                        "image": "registry.example.com/user-service:1.4.2",
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}]
                    }]}
                },
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600
            },
            "status": {
                "observedGeneration": 3,
                "replicas": 3,
                "updatedReplicas": 3,
                "readyReplicas": 3,
                "availableReplicas": 3,
                "conditions": [
                    {
                        "type": "Available", "status": "True",
                        "lastUpdateTime": "2026-11-30T09:13:02Z", "lastTransitionTime": "2026-11-30T09:13:02Z",
                        "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."
                    },
                    {
                        "type": "Progressing", "status": "True",
                        "lastUpdateTime": "2026-11-30T10:41:17Z", "lastTransitionTime": "2026-11-30T09:12:44Z",
                        "reason": "NewReplicaSetAvailable",
                        "message": "ReplicaSet \"user-service-7c9d8f6b5d\" has successfully progressed."
                    }
                ]
            }
        })
    }

    /// Generation 4 (a new image) half rolled out: one new pod up, old pods
    /// still serving.
    fn deployment_mid_rollout() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "user-service", "namespace": "pr-1234", "generation": 4,
                "annotations": {"deployment.kubernetes.io/revision": "4"}
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app.kubernetes.io/name": "user-service"}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "user-service"}},
                    "spec": {"containers": [{"name": "user-service", "image": "registry.example.com/user-service:1.5.0"}]}
                },
                "progressDeadlineSeconds": 600
            },
            "status": {
                "observedGeneration": 4,
                "replicas": 4,
                "updatedReplicas": 1,
                "readyReplicas": 3,
                "availableReplicas": 3,
                "unavailableReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                     "message": "Deployment has minimum availability."},
                    {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                     "message": "ReplicaSet \"user-service-5f7b9c4d8\" is progressing."}
                ]
            }
        })
    }

    /// A rollout whose new pods never became ready within 600 s.
    fn deployment_progress_deadline_exceeded() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "user-service", "namespace": "pr-1234", "generation": 5},
            "spec": {"replicas": 3, "progressDeadlineSeconds": 600},
            "status": {
                "observedGeneration": 5,
                "replicas": 4,
                "updatedReplicas": 1,
                "readyReplicas": 3,
                "availableReplicas": 3,
                "unavailableReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                     "message": "Deployment has minimum availability."},
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                     "lastUpdateTime": "2026-11-30T10:52:09Z", "lastTransitionTime": "2026-11-30T10:52:09Z",
                     "message": "ReplicaSet \"user-service-6d4f8b7c9\" has timed out progressing."}
                ]
            }
        })
    }

    /// Right after an apply of generation 6: the status still describes the
    /// finished rollout of generation 5 (kube's `is_deployment_completed`
    /// says done here).
    fn deployment_generation_lagging() -> Value {
        patched(
            &deployment_rolled_out(),
            &[
                ("/metadata/generation", json!(6)),
                ("/status/observedGeneration", json!(5)),
            ],
        )
    }

    #[test]
    fn a_rolled_out_deployment_is_current() {
        let health = object("Deployment", &deployment_rolled_out());
        assert_eq!(health.status, Status::Current);
        assert_eq!(health.reason, reason::CURRENT);
        assert_eq!(health.message, "available: 3/3 replicas");
    }

    #[test]
    fn a_deployment_mid_rollout_is_in_progress_until_every_replica_is_updated() {
        let health = object("Deployment", &deployment_mid_rollout());
        assert_eq!(
            (health.status, health.reason, health.message.as_str()),
            (
                Status::InProgress,
                reason::LESS_UPDATED,
                "updated replicas: 1/3"
            )
        );
    }

    #[test]
    fn a_deployment_past_its_progress_deadline_has_failed_and_says_why() {
        let health = object("Deployment", &deployment_progress_deadline_exceeded());
        assert_eq!(health.status, Status::Failed);
        assert_eq!(health.reason, reason::PROGRESS_DEADLINE_EXCEEDED);
        assert_eq!(
            health.message,
            "progress deadline exceeded: ReplicaSet \"user-service-6d4f8b7c9\" has timed out \
             progressing."
        );
        assert!(
            health.message.contains("user-service-6d4f8b7c9")
                && health.message.contains("timed out"),
            "{}",
            health.message
        );
    }

    #[test]
    fn a_deployment_whose_generation_is_not_observed_is_in_progress_whatever_its_counts_say() {
        let health = object("Deployment", &deployment_generation_lagging());
        assert_eq!(health.status, Status::InProgress);
        assert_eq!(health.reason, reason::LATEST_GENERATION_NOT_OBSERVED);
        assert_eq!(
            health.message,
            "generation 6 not observed yet: the controller last observed generation 5"
        );
        // A new spec after a failed rollout: the old deadline no longer counts.
        let retried = patched(
            &deployment_progress_deadline_exceeded(),
            &[("/metadata/generation", json!(6))],
        );
        assert_eq!(object("Deployment", &retried).status, Status::InProgress);
    }

    #[test]
    #[allow(clippy::too_many_lines, reason = "one table of cases")]
    fn deployment_rules_apply_in_kstatus_order() {
        let done = deployment_rolled_out();
        let progressing_true =
            json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"});
        let available_true =
            json!({"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"});
        check(
            "Deployment",
            &[
                (
                    "never rolled out (no controller): status is empty",
                    patched(&done, &[("/status", json!({}))]),
                    Status::InProgress,
                    reason::NO_OBSERVED_GENERATION,
                ),
                (
                    "created, seen by the controller, no pods yet",
                    patched(&done, &[("/status", json!({"observedGeneration": 3}))]),
                    Status::InProgress,
                    reason::LESS_REPLICAS,
                ),
                (
                    "no metadata.generation",
                    patched(&done, &[("/metadata/generation", Value::Null)]),
                    Status::InProgress,
                    reason::NO_GENERATION,
                ),
                (
                    "scaled up, new pods not created",
                    patched(&done, &[("/spec/replicas", json!(5))]),
                    Status::InProgress,
                    reason::LESS_REPLICAS,
                ),
                (
                    "spec.replicas defaults to 1",
                    patched(
                        &done,
                        &[
                            ("/spec/replicas", Value::Null),
                            ("/status/replicas", json!(1)),
                            ("/status/updatedReplicas", json!(1)),
                            ("/status/readyReplicas", json!(1)),
                            ("/status/availableReplicas", json!(1)),
                        ],
                    ),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "spec.replicas defaults to 1, and no replica exists",
                    patched(
                        &done,
                        &[
                            ("/spec/replicas", Value::Null),
                            ("/status/replicas", json!(0)),
                        ],
                    ),
                    Status::InProgress,
                    reason::LESS_REPLICAS,
                ),
                (
                    "scaled down, old pods terminating",
                    patched(&done, &[("/spec/replicas", json!(2))]),
                    Status::InProgress,
                    reason::EXTRA_PODS,
                ),
                (
                    "updated but not yet available",
                    patched(&done, &[("/status/availableReplicas", json!(2))]),
                    Status::InProgress,
                    reason::LESS_AVAILABLE,
                ),
                (
                    "available but not ready",
                    patched(&done, &[("/status/readyReplicas", json!(2))]),
                    Status::InProgress,
                    reason::LESS_READY,
                ),
                (
                    "counts match but the new replica set is not reported available",
                    patched(
                        &done,
                        &[("/status/conditions", json!([available_true.clone()]))],
                    ),
                    Status::InProgress,
                    reason::REPLICA_SET_NOT_AVAILABLE,
                ),
                (
                    "without a progress deadline no Progressing condition is needed",
                    patched(
                        &done,
                        &[
                            ("/spec/progressDeadlineSeconds", Value::Null),
                            ("/status/conditions", json!([available_true.clone()])),
                        ],
                    ),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "a progress deadline of MaxInt32 means none",
                    patched(
                        &done,
                        &[
                            ("/spec/progressDeadlineSeconds", json!(2_147_483_647)),
                            ("/status/conditions", json!([available_true])),
                        ],
                    ),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "counts match but Available is False",
                    patched(
                        &done,
                        &[(
                            "/status/conditions",
                            json!([
                                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
                                progressing_true
                            ]),
                        )],
                    ),
                    Status::InProgress,
                    reason::DEPLOYMENT_NOT_AVAILABLE,
                ),
                (
                    "scaled to zero",
                    patched(
                        &done,
                        &[
                            ("/spec/replicas", json!(0)),
                            ("/status/replicas", Value::Null),
                            ("/status/updatedReplicas", Value::Null),
                            ("/status/readyReplicas", Value::Null),
                            ("/status/availableReplicas", Value::Null),
                        ],
                    ),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "scaled to zero but never seen by the controller",
                    patched(
                        &done,
                        &[("/spec/replicas", json!(0)), ("/status", json!({}))],
                    ),
                    Status::InProgress,
                    reason::NO_OBSERVED_GENERATION,
                ),
                (
                    "the deadline is checked before the counts",
                    patched(
                        &deployment_progress_deadline_exceeded(),
                        &[("/status/replicas", json!(1))],
                    ),
                    Status::Failed,
                    reason::PROGRESS_DEADLINE_EXCEEDED,
                ),
                (
                    "a Deployment of another group is a custom resource",
                    patched(
                        &done,
                        &[
                            ("/apiVersion", json!("example.com/v1")),
                            (
                                "/status",
                                json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Waiting"}]}),
                            ),
                        ],
                    ),
                    Status::InProgress,
                    reason::NOT_READY,
                ),
                (
                    "an extensions/v1beta1 Deployment gets the Deployment rules",
                    patched(
                        &done,
                        &[
                            ("/apiVersion", json!("extensions/v1beta1")),
                            ("/status/readyReplicas", json!(0)),
                        ],
                    ),
                    Status::InProgress,
                    reason::LESS_READY,
                ),
            ],
        );
    }

    #[test]
    fn generic_rules_come_before_the_rules_of_the_kind() {
        let done = deployment_rolled_out();
        let terminating = patched(
            &done,
            &[("/metadata/deletionTimestamp", json!("2026-11-30T11:00:00Z"))],
        );
        check(
            "Deployment",
            &[
                (
                    "a deletion timestamp means terminating",
                    terminating,
                    Status::Terminating,
                    reason::TERMINATING,
                ),
                (
                    "an empty deletion timestamp means nothing",
                    patched(&done, &[("/metadata/deletionTimestamp", json!(""))]),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "Reconciling=True is in progress",
                    patched(
                        &done,
                        &[(
                            "/status/conditions",
                            json!([{"type": "Reconciling", "status": "True", "reason": "Resizing", "message": "resizing volumes"}]),
                        )],
                    ),
                    Status::InProgress,
                    reason::RECONCILING,
                ),
                (
                    "Stalled=True has failed",
                    patched(
                        &done,
                        &[(
                            "/status/conditions",
                            json!([{"type": "Stalled", "status": "True", "reason": "QuotaExceeded"}]),
                        )],
                    ),
                    Status::Failed,
                    reason::STALLED,
                ),
                (
                    "Stalled=False says nothing",
                    patched(
                        &done,
                        &[(
                            "/status/conditions",
                            json!([
                                {"type": "Stalled", "status": "False"},
                                {"type": "Available", "status": "True"},
                                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
                            ]),
                        )],
                    ),
                    Status::Current,
                    reason::CURRENT,
                ),
            ],
        );
        let stalled = object(
            "Widget",
            &json!({
                "apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "w", "generation": 2},
                "status": {"observedGeneration": 2, "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "Stalled", "status": "True", "reason": "InvalidSpec", "message": "size must be positive"}
                ]}
            }),
        );
        assert_eq!(stalled.status, Status::Failed);
        assert_eq!(
            stalled.message,
            "stalled: InvalidSpec: size must be positive"
        );
    }

    #[test]
    #[allow(clippy::too_many_lines, reason = "one table of cases")]
    fn custom_resources_are_decided_by_generation_then_ready_then_current() {
        let claim = json!({
            "apiVersion": "platform.example.com/v1alpha1",
            "kind": "KubernetesCluster",
            "metadata": {"name": "pr-1234", "namespace": "pr-1234", "generation": 2},
            "spec": {"parameters": {"nodes": 3, "region": "eu-west-1"}},
            "status": {
                "observedGeneration": 2,
                "conditions": [
                    {"type": "Synced", "status": "True", "reason": "ReconcileSuccess"},
                    {"type": "Ready", "status": "True", "reason": "Available"}
                ]
            }
        });
        let ready_false = json!([
            {"type": "Synced", "status": "True", "reason": "ReconcileSuccess"},
            {"type": "Ready", "status": "False", "reason": "Creating", "message": "cluster is being provisioned"}
        ]);
        check(
            "KubernetesCluster",
            &[
                (
                    "Ready=True",
                    claim.clone(),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "Ready=False",
                    patched(&claim, &[("/status/conditions", ready_false)]),
                    Status::InProgress,
                    reason::NOT_READY,
                ),
                (
                    "Ready=Unknown",
                    patched(
                        &claim,
                        &[(
                            "/status/conditions",
                            json!([{"type": "Ready", "status": "Unknown"}]),
                        )],
                    ),
                    Status::InProgress,
                    reason::NOT_READY,
                ),
                (
                    "a Ready condition with a nonsense status is ignored",
                    patched(
                        &claim,
                        &[(
                            "/status/conditions",
                            json!([{"type": "Ready", "status": "Maybe"}]),
                        )],
                    ),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "no status at all",
                    patched(&claim, &[("/status", Value::Null)]),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "malformed conditions are skipped",
                    patched(
                        &claim,
                        &[(
                            "/status/conditions",
                            json!(["Ready", {"status": "False"}, 3]),
                        )],
                    ),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "conditions that are not a list are ignored",
                    patched(&claim, &[("/status/conditions", json!({"Ready": "False"}))]),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "a lagging generation beats Ready=True",
                    patched(&claim, &[("/metadata/generation", json!(3))]),
                    Status::InProgress,
                    reason::LATEST_GENERATION_NOT_OBSERVED,
                ),
            ],
        );
        let not_ready = object(
            "KubernetesCluster",
            &patched(
                &claim,
                &[(
                    "/status/conditions",
                    json!([{"type": "Ready", "status": "False", "reason": "Creating", "message": "cluster is being provisioned"}]),
                )],
            ),
        );
        assert_eq!(
            not_ready.message,
            "Ready is False: Creating: cluster is being provisioned"
        );
    }

    fn stateful_set_ready() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "postgres", "namespace": "pr-1234", "generation": 2},
            "spec": {
                "replicas": 3,
                "serviceName": "postgres",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "selector": {"matchLabels": {"app": "postgres"}}
            },
            "status": {
                "observedGeneration": 2,
                "replicas": 3,
                "readyReplicas": 3,
                "currentReplicas": 3,
                "updatedReplicas": 3,
                "availableReplicas": 3,
                "currentRevision": "postgres-6c5d9f7b8",
                "updateRevision": "postgres-6c5d9f7b8",
                "collisionCount": 0
            }
        })
    }

    #[test]
    #[allow(clippy::too_many_lines, reason = "one table of cases")]
    fn a_stateful_set_is_current_when_its_replicas_are_ready_and_on_the_update_revision() {
        let ready = stateful_set_ready();
        let unpartitioned = patched(
            &ready,
            &[("/spec/updateStrategy", json!({"type": "RollingUpdate"}))],
        );
        check(
            "StatefulSet",
            &[
                (
                    "all replicas ready and updated",
                    ready.clone(),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "without a partition too",
                    unpartitioned.clone(),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "created, never observed (kstatus would say current for zero replicas)",
                    patched(
                        &ready,
                        &[("/spec/replicas", json!(0)), ("/status", json!({}))],
                    ),
                    Status::InProgress,
                    reason::NO_OBSERVED_GENERATION,
                ),
                (
                    "pods still being created",
                    patched(&ready, &[("/status/replicas", json!(2))]),
                    Status::InProgress,
                    reason::LESS_REPLICAS,
                ),
                (
                    "a pod not ready",
                    patched(&ready, &[("/status/readyReplicas", json!(2))]),
                    Status::InProgress,
                    reason::LESS_READY,
                ),
                (
                    "scaled down, a pod terminating",
                    patched(&ready, &[("/spec/replicas", json!(2))]),
                    Status::InProgress,
                    reason::EXTRA_PODS,
                ),
                (
                    "partitioned rollout: too few updated above the partition",
                    patched(
                        &ready,
                        &[
                            ("/spec/updateStrategy/rollingUpdate/partition", json!(1)),
                            ("/status/updatedReplicas", json!(1)),
                        ],
                    ),
                    Status::InProgress,
                    reason::PARTITION_ROLLOUT,
                ),
                (
                    "partitioned rollout done even though revisions differ",
                    patched(
                        &ready,
                        &[
                            ("/spec/updateStrategy/rollingUpdate/partition", json!(1)),
                            ("/status/updatedReplicas", json!(2)),
                            ("/status/updateRevision", json!("postgres-7d8e9a6c5")),
                        ],
                    ),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "rolling update: pods not yet at the current revision",
                    patched(&unpartitioned, &[("/status/currentReplicas", json!(1))]),
                    Status::InProgress,
                    reason::LESS_CURRENT,
                ),
                (
                    "rolling update: revisions differ",
                    patched(
                        &unpartitioned,
                        &[("/status/updateRevision", json!("postgres-7d8e9a6c5"))],
                    ),
                    Status::InProgress,
                    reason::REVISION_MISMATCH,
                ),
                (
                    "OnDelete: the user replaces pods",
                    patched(
                        &ready,
                        &[
                            ("/spec/updateStrategy", json!({"type": "OnDelete"})),
                            ("/status/readyReplicas", json!(0)),
                        ],
                    ),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "generation lagging",
                    patched(&ready, &[("/metadata/generation", json!(3))]),
                    Status::InProgress,
                    reason::LATEST_GENERATION_NOT_OBSERVED,
                ),
            ],
        );
    }

    #[test]
    fn a_daemon_set_is_current_when_every_scheduled_pod_is_updated_available_and_ready() {
        let ready = json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "node-exporter", "namespace": "monitoring", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "node-exporter"}}},
            "status": {
                "observedGeneration": 1,
                "desiredNumberScheduled": 4,
                "currentNumberScheduled": 4,
                "updatedNumberScheduled": 4,
                "numberAvailable": 4,
                "numberReady": 4,
                "numberMisscheduled": 0
            }
        });
        check(
            "DaemonSet",
            &[
                (
                    "ready on every node",
                    ready.clone(),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "not yet observed",
                    patched(&ready, &[("/status", json!({}))]),
                    Status::InProgress,
                    reason::NO_OBSERVED_GENERATION,
                ),
                (
                    "observed but nothing scheduled yet",
                    patched(&ready, &[("/status", json!({"observedGeneration": 1}))]),
                    Status::InProgress,
                    reason::NO_DESIRED_NUMBER,
                ),
                (
                    "not on every node yet",
                    patched(&ready, &[("/status/currentNumberScheduled", json!(3))]),
                    Status::InProgress,
                    reason::LESS_CURRENT,
                ),
                (
                    "a node runs the old version",
                    patched(&ready, &[("/status/updatedNumberScheduled", json!(3))]),
                    Status::InProgress,
                    reason::LESS_UPDATED,
                ),
                (
                    "a pod not available",
                    patched(&ready, &[("/status/numberAvailable", json!(3))]),
                    Status::InProgress,
                    reason::LESS_AVAILABLE,
                ),
                (
                    "a pod not ready",
                    patched(&ready, &[("/status/numberReady", json!(3))]),
                    Status::InProgress,
                    reason::LESS_READY,
                ),
                (
                    "no nodes match",
                    patched(
                        &ready,
                        &[(
                            "/status",
                            json!({"observedGeneration": 1, "desiredNumberScheduled": 0, "currentNumberScheduled": 0,
                                   "numberMisscheduled": 0, "numberReady": 0}),
                        )],
                    ),
                    Status::Current,
                    reason::CURRENT,
                ),
            ],
        );
    }

    #[test]
    fn a_replica_set_is_current_when_its_replicas_are_labelled_available_and_ready() {
        let ready = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "user-service-7c9d8f6b5d", "namespace": "pr-1234", "generation": 1},
            "spec": {"replicas": 2},
            "status": {
                "observedGeneration": 1,
                "replicas": 2,
                "fullyLabeledReplicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 2
            }
        });
        check(
            "ReplicaSet",
            &[
                (
                    "all available",
                    ready.clone(),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "quota refused a pod",
                    patched(
                        &ready,
                        &[(
                            "/status/conditions",
                            json!([{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                    "message": "pods \"user-service-7c9d8f6b5d-x\" is forbidden: exceeded quota"}]),
                        )],
                    ),
                    Status::InProgress,
                    reason::REPLICA_FAILURE,
                ),
                (
                    "a pod not labelled",
                    patched(&ready, &[("/status/fullyLabeledReplicas", json!(1))]),
                    Status::InProgress,
                    reason::LESS_LABELLED,
                ),
                (
                    "a pod not available",
                    patched(&ready, &[("/status/availableReplicas", json!(1))]),
                    Status::InProgress,
                    reason::LESS_AVAILABLE,
                ),
                (
                    "a pod not ready",
                    patched(&ready, &[("/status/readyReplicas", json!(1))]),
                    Status::InProgress,
                    reason::LESS_READY,
                ),
                (
                    "a pod too many",
                    patched(&ready, &[("/status/replicas", json!(3))]),
                    Status::InProgress,
                    reason::EXTRA_PODS,
                ),
                (
                    "never observed",
                    patched(&ready, &[("/status", json!({}))]),
                    Status::InProgress,
                    reason::NO_OBSERVED_GENERATION,
                ),
            ],
        );
    }

    fn pod_running() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "migrate-db", "namespace": "pr-1234", "creationTimestamp": "2026-11-30T09:12:44Z"},
            "spec": {"containers": [{"name": "migrate", "image": "registry.example.com/migrate:2.0.1"}]},
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "True"},
                    {"type": "ContainersReady", "status": "True"},
                    {"type": "PodScheduled", "status": "True"}
                ],
                "containerStatuses": [{
                    "name": "migrate", "ready": true, "restartCount": 0,
                    "image": "registry.example.com/migrate:2.0.1",
                    "state": {"running": {"startedAt": "2026-11-30T09:12:50Z"}}
                }]
            }
        })
    }

    #[test]
    #[allow(clippy::too_many_lines, reason = "one table of cases")]
    fn a_pod_is_current_when_ready_or_finished_and_failed_when_crash_looping() {
        let running = pod_running();
        let not_ready =
            json!([{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]);
        let crash_looping = patched(
            &running,
            &[
                ("/status/conditions", not_ready.clone()),
                (
                    "/status/containerStatuses",
                    json!([{"name": "migrate", "ready": false, "restartCount": 5,
                            "state": {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": "back-off 2m40s restarting failed container"}}}]),
                ),
            ],
        );
        let image_pull = patched(
            &running,
            &[
                ("/status/phase", json!("Pending")),
                ("/status/conditions", not_ready.clone()),
                (
                    "/status/containerStatuses",
                    json!([{"name": "migrate", "ready": false, "restartCount": 0,
                            "state": {"waiting": {"reason": "ImagePullBackOff"}}}]),
                ),
            ],
        );
        check(
            "Pod",
            &[
                (
                    "running and ready",
                    running.clone(),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "succeeded",
                    patched(&running, &[("/status/phase", json!("Succeeded"))]),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "failed is done, as in kstatus",
                    patched(&running, &[("/status/phase", json!("Failed"))]),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "running, not ready",
                    patched(&running, &[("/status/conditions", not_ready)]),
                    Status::InProgress,
                    reason::POD_RUNNING_NOT_READY,
                ),
                (
                    "crash looping",
                    crash_looping.clone(),
                    Status::Failed,
                    reason::CONTAINER_CRASH_LOOPING,
                ),
                (
                    "pending on an image pull",
                    image_pull.clone(),
                    Status::InProgress,
                    reason::POD_PENDING,
                ),
                (
                    "unschedulable",
                    patched(
                        &running,
                        &[
                            ("/status/phase", json!("Pending")),
                            (
                                "/status/conditions",
                                json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                        "message": "0/3 nodes are available: 3 Insufficient cpu."}]),
                            ),
                            ("/status/containerStatuses", Value::Null),
                        ],
                    ),
                    Status::InProgress,
                    reason::POD_UNSCHEDULABLE,
                ),
                (
                    "not observed yet",
                    patched(&running, &[("/status", json!({}))]),
                    Status::InProgress,
                    reason::POD_NOT_OBSERVED,
                ),
                (
                    "an unknown phase",
                    patched(&running, &[("/status/phase", json!("Hibernating"))]),
                    Status::Unknown,
                    reason::UNKNOWN_PHASE,
                ),
            ],
        );
        assert_eq!(
            object("Pod", &crash_looping).message,
            "containers in CrashLoopBackOff: migrate (CrashLoopBackOff)"
        );
        assert_eq!(
            object("Pod", &image_pull).message,
            "pending: waiting: migrate (ImagePullBackOff)"
        );
    }

    #[test]
    fn a_job_is_current_once_started_and_failed_when_its_failed_condition_is_true() {
        let running = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "seed-data", "namespace": "pr-1234", "generation": 1},
            "spec": {"completions": 1, "parallelism": 1, "backoffLimit": 6, "suspend": false},
            "status": {"startTime": "2026-11-30T09:12:45Z", "active": 1, "ready": 1, "terminating": 0}
        });
        check(
            "Job",
            &[
                ("running", running.clone(), Status::Current, reason::CURRENT),
                (
                    "not started",
                    patched(&running, &[("/status", json!({}))]),
                    Status::InProgress,
                    reason::JOB_NOT_STARTED,
                ),
                (
                    "complete",
                    patched(
                        &running,
                        &[(
                            "/status",
                            json!({"startTime": "2026-11-30T09:12:45Z", "completionTime": "2026-11-30T09:13:30Z",
                                   "succeeded": 1, "conditions": [
                                       {"type": "SuccessCriteriaMet", "status": "True"},
                                       {"type": "Complete", "status": "True"}]}),
                        )],
                    ),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "failed after its backoff limit",
                    patched(
                        &running,
                        &[(
                            "/status",
                            json!({"startTime": "2026-11-30T09:12:45Z", "failed": 7, "conditions": [
                                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
                                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                 "message": "Job has reached the specified backoff limit"}]}),
                        )],
                    ),
                    Status::Failed,
                    reason::JOB_FAILED,
                ),
                (
                    "suspended on purpose",
                    patched(
                        &running,
                        &[
                            ("/spec/suspend", json!(true)),
                            (
                                "/status",
                                json!({"conditions": [{"type": "Suspended", "status": "True", "reason": "JobSuspended"}]}),
                            ),
                        ],
                    ),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "a Suspended condition left over after resuming",
                    patched(
                        &running,
                        &[(
                            "/status",
                            json!({"conditions": [{"type": "Suspended", "status": "True"}]}),
                        )],
                    ),
                    Status::InProgress,
                    reason::JOB_NOT_STARTED,
                ),
            ],
        );
    }

    #[test]
    fn a_load_balancer_service_waits_for_its_address() {
        let cluster_ip = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "user-service", "namespace": "pr-1234"},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": "10.96.14.201",
                "clusterIPs": ["10.96.14.201"],
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
                "selector": {"app.kubernetes.io/name": "user-service"}
            },
            "status": {"loadBalancer": {}}
        });
        let lb = patched(&cluster_ip, &[("/spec/type", json!("LoadBalancer"))]);
        let with_ip = patched(
            &lb,
            &[(
                "/status/loadBalancer",
                json!({"ingress": [{"ip": "203.0.113.7", "ipMode": "VIP"}]}),
            )],
        );
        check(
            "Service",
            &[
                (
                    "ClusterIP",
                    cluster_ip.clone(),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "headless",
                    patched(&cluster_ip, &[("/spec/clusterIP", json!("None"))]),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "ExternalName",
                    patched(
                        &cluster_ip,
                        &[
                            ("/spec/type", json!("ExternalName")),
                            ("/spec/clusterIP", Value::Null),
                        ],
                    ),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "LoadBalancer without an address",
                    lb.clone(),
                    Status::InProgress,
                    reason::NO_INGRESS,
                ),
                (
                    "LoadBalancer with an empty ingress list",
                    patched(&lb, &[("/status/loadBalancer", json!({"ingress": []}))]),
                    Status::InProgress,
                    reason::NO_INGRESS,
                ),
                (
                    "LoadBalancer without a cluster IP",
                    patched(&lb, &[("/spec/clusterIP", Value::Null)]),
                    Status::InProgress,
                    reason::NO_IP_ASSIGNED,
                ),
                (
                    "LoadBalancer with an IP",
                    with_ip.clone(),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "LoadBalancer with a hostname",
                    patched(
                        &lb,
                        &[(
                            "/status/loadBalancer",
                            json!({"ingress": [{"hostname": "a1b2.elb.example.com"}]}),
                        )],
                    ),
                    Status::Current,
                    reason::CURRENT,
                ),
            ],
        );
        assert_eq!(
            object("Service", &with_ip).message,
            "load balancer at 203.0.113.7"
        );
    }

    #[test]
    fn a_claim_is_current_once_bound() {
        let pvc = json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data-postgres-0", "namespace": "pr-1234"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}}
        });
        check(
            "PersistentVolumeClaim",
            &[
                ("bound", pvc.clone(), Status::Current, reason::CURRENT),
                (
                    "pending",
                    patched(&pvc, &[("/status", json!({"phase": "Pending"}))]),
                    Status::InProgress,
                    reason::NOT_BOUND,
                ),
                (
                    "no status",
                    patched(&pvc, &[("/status", Value::Null)]),
                    Status::InProgress,
                    reason::NOT_BOUND,
                ),
            ],
        );
    }

    #[test]
    fn a_namespace_is_terminating_by_phase_or_deletion_timestamp() {
        let ns = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "pr-1234", "labels": {"kubernetes.io/metadata.name": "pr-1234"}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}
        });
        check(
            "Namespace",
            &[
                ("active", ns.clone(), Status::Current, reason::CURRENT),
                (
                    "no status yet",
                    patched(&ns, &[("/status", Value::Null)]),
                    Status::Current,
                    reason::CURRENT,
                ),
                (
                    "phase Terminating",
                    patched(&ns, &[("/status/phase", json!("Terminating"))]),
                    Status::Terminating,
                    reason::TERMINATING,
                ),
                (
                    "a deletion timestamp",
                    patched(
                        &ns,
                        &[("/metadata/deletionTimestamp", json!("2026-11-30T11:00:00Z"))],
                    ),
                    Status::Terminating,
                    reason::TERMINATING,
                ),
            ],
        );
    }

    #[test]
    fn a_definition_is_current_once_established_and_failed_when_its_names_clash() {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "kubernetesclusters.platform.example.com", "generation": 1},
            "spec": {"group": "platform.example.com", "names": {"kind": "KubernetesCluster", "plural": "kubernetesclusters"}},
            "status": {"conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}
            ]}
        });
        check(
            "CustomResourceDefinition",
            &[
                ("established", crd.clone(), Status::Current, reason::CURRENT),
                (
                    "installing",
                    patched(
                        &crd,
                        &[(
                            "/status/conditions",
                            json!([{"type": "Established", "status": "False", "reason": "Installing"}]),
                        )],
                    ),
                    Status::InProgress,
                    reason::INSTALLING,
                ),
                (
                    "no conditions yet",
                    patched(&crd, &[("/status", json!({}))]),
                    Status::InProgress,
                    reason::INSTALLING,
                ),
                (
                    "names clash with another definition",
                    patched(
                        &crd,
                        &[(
                            "/status/conditions",
                            json!([{"type": "NamesAccepted", "status": "False", "reason": "ListKindConflict",
                                    "message": "\"KubernetesClusterList\" is already in use"}]),
                        )],
                    ),
                    Status::Failed,
                    reason::NAMES_NOT_ACCEPTED,
                ),
                (
                    "not established for another reason",
                    patched(
                        &crd,
                        &[(
                            "/status/conditions",
                            json!([{"type": "Established", "status": "False", "reason": "NotAccepted"}]),
                        )],
                    ),
                    Status::Failed,
                    reason::NOT_ESTABLISHED,
                ),
            ],
        );
    }

    #[test]
    fn a_disruption_budget_is_current_once_observed() {
        let pdb = json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "user-service", "namespace": "pr-1234", "generation": 1},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "user-service"}}},
            "status": {"observedGeneration": 1, "disruptionsAllowed": 2, "currentHealthy": 3,
                       "desiredHealthy": 1, "expectedPods": 3}
        });
        check(
            "PodDisruptionBudget",
            &[
                ("observed", pdb.clone(), Status::Current, reason::CURRENT),
                (
                    "a new spec not observed",
                    patched(&pdb, &[("/metadata/generation", json!(2))]),
                    Status::InProgress,
                    reason::LATEST_GENERATION_NOT_OBSERVED,
                ),
            ],
        );
    }

    #[test]
    fn kinds_without_a_readiness_status_are_current_once_they_exist() {
        let cases = [
            ("ConfigMap", "v1"),
            ("Secret", "v1"),
            ("ResourceQuota", "v1"),
            ("LimitRange", "v1"),
            ("ServiceAccount", "v1"),
            ("NetworkPolicy", "networking.k8s.io/v1"),
            ("Ingress", "networking.k8s.io/v1"),
            ("Role", "rbac.authorization.k8s.io/v1"),
            ("RoleBinding", "rbac.authorization.k8s.io/v1"),
            ("ClusterRole", "rbac.authorization.k8s.io/v1"),
            ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
            ("HorizontalPodAutoscaler", "autoscaling/v2"),
            ("CronJob", "batch/v1"),
        ];
        for (kind, api_version) in cases {
            // An HPA's conditions and a quota's usage say nothing about readiness.
            let obj = json!({
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"name": "x", "namespace": "pr-1234", "generation": 1},
                "status": {"conditions": [
                    {"type": "AbleToScale", "status": "False", "reason": "FailedGetScale"},
                    {"type": "Ready", "status": "False"}
                ]}
            });
            assert_eq!(object(kind, &obj).status, Status::Current, "{kind}");
            let deleting = patched(
                &obj,
                &[("/metadata/deletionTimestamp", json!("2026-11-30T11:00:00Z"))],
            );
            assert_eq!(
                object(kind, &deleting).status,
                Status::Terminating,
                "{kind}"
            );
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_unknown() {
        for body in [json!(null), json!("Deployment"), json!([1, 2])] {
            let health = object("Deployment", &body);
            assert_eq!(
                (health.status, health.reason),
                (Status::Unknown, reason::NOT_AN_OBJECT)
            );
        }
        assert_eq!(ObjectHealth::not_found().status, Status::NotFound);
    }

    #[test]
    fn reasons_are_unique_camel_case_names() {
        let mut seen = std::collections::BTreeSet::new();
        for r in reason::ALL {
            assert!(seen.insert(*r), "{r} twice");
            assert!(r.starts_with(|c: char| c.is_ascii_uppercase()), "{r}");
            assert!(r.chars().all(|c| c.is_ascii_alphanumeric()), "{r}");
        }
    }

    fn named(
        name: &str,
        status: Status,
        reason: &'static str,
        message: &str,
    ) -> (String, ObjectHealth) {
        (
            name.to_owned(),
            ObjectHealth {
                status,
                reason,
                message: message.to_owned(),
            },
        )
    }

    const MINUTE: Duration = Duration::from_mins(1);

    #[test]
    fn an_environment_is_ready_only_when_every_object_is_current() {
        let objects = vec![
            (
                "Namespace/pr-1234".to_owned(),
                object(
                    "Namespace",
                    &json!({"apiVersion": "v1", "status": {"phase": "Active"}}),
                ),
            ),
            (
                "Deployment/user-service".to_owned(),
                object("Deployment", &deployment_rolled_out()),
            ),
        ];
        let health = environment(&objects, 2 * MINUTE, 10 * MINUTE, AT);
        assert_eq!(
            health,
            EnvironmentHealth {
                ready: true,
                reconciling: false,
                stalled: false,
                reason: reason::CURRENT,
                message: "all 2 objects current".to_owned(),
            }
        );
        assert!(environment(&[], MINUTE, MINUTE, AT).ready);
    }

    #[test]
    fn an_environment_in_progress_is_reconciling_until_the_timeout_then_stalled() {
        let objects = vec![
            (
                "Namespace/pr-1234".to_owned(),
                ObjectHealth::current("active"),
            ),
            (
                "Deployment/user-service".to_owned(),
                object("Deployment", &deployment_mid_rollout()),
            ),
        ];
        let before = environment(&objects, 3 * MINUTE, 10 * MINUTE, AT);
        assert_eq!(
            (
                before.ready,
                before.reconciling,
                before.stalled,
                before.reason
            ),
            (false, true, false, reason::PROGRESSING)
        );
        assert_eq!(
            before.message,
            "waiting for 1 of 2 objects since the apply at 2026-01-01T00:00:00Z (stalled if not current within 10m): \
             Deployment/user-service: updated replicas: 1/3"
        );
        let after = environment(&objects, 10 * MINUTE, 10 * MINUTE, AT);
        assert_eq!(
            (after.ready, after.reconciling, after.stalled, after.reason),
            (false, false, true, reason::PROGRESS_DEADLINE_EXCEEDED)
        );
        assert_eq!(
            after.message,
            "1 of 2 objects not current within 10m of the apply at 2026-01-01T00:00:00Z: \
             Deployment/user-service: updated replicas: 1/3"
        );
    }

    #[test]
    fn a_never_rolled_out_deployment_stalls_the_environment_after_the_timeout() {
        let never = patched(&deployment_rolled_out(), &[("/status", json!({}))]);
        let objects = vec![(
            "Deployment/user-service".to_owned(),
            object("Deployment", &never),
        )];
        let health = environment(&objects, Duration::from_secs(3_723), 5 * MINUTE, AT);
        assert!(health.stalled && !health.ready);
        assert_eq!(health.reason, reason::PROGRESS_DEADLINE_EXCEEDED);
        assert!(
            health
                .message
                .contains("not current within 5m of the apply at 2026-01-01T00:00:00Z")
                && health.message.contains(
                    "Deployment/user-service: the Deployment controller has not observed it"
                ),
            "{}",
            health.message
        );
    }

    #[test]
    fn a_failed_object_stalls_the_environment_at_once_with_its_reason() {
        let objects = vec![
            (
                "Deployment/user-service".to_owned(),
                object("Deployment", &deployment_progress_deadline_exceeded()),
            ),
            (
                "Deployment/orders".to_owned(),
                object("Deployment", &deployment_mid_rollout()),
            ),
            named(
                "Job/seed-data",
                Status::Failed,
                reason::JOB_FAILED,
                "failed: 7 failed pods",
            ),
        ];
        let health = environment(&objects, Duration::ZERO, 10 * MINUTE, AT);
        assert_eq!(
            (
                health.ready,
                health.reconciling,
                health.stalled,
                health.reason
            ),
            (false, false, true, reason::PROGRESS_DEADLINE_EXCEEDED)
        );
        assert!(
            health.message.starts_with(
                "2 objects failed: Deployment/user-service: progress deadline exceeded"
            ) && health
                .message
                .ends_with("; Job/seed-data: failed: 7 failed pods")
                && !health.message.contains("orders"),
            "{}",
            health.message
        );
    }

    #[test]
    fn terminating_missing_and_unknown_objects_keep_an_environment_from_ready() {
        for status in [Status::Terminating, Status::NotFound, Status::Unknown] {
            let objects = vec![named(
                "Service/user-service",
                status,
                reason::NOT_FOUND,
                "gone",
            )];
            let health = environment(&objects, MINUTE, 10 * MINUTE, AT);
            assert!(!health.ready && health.reconciling, "{status}");
            assert_eq!(
                health.message,
                format!(
                    "waiting for 1 of 1 objects since the apply at 2026-01-01T00:00:00Z (stalled if not current within 10m): \
                     Service/user-service: {status}: gone"
                )
            );
            assert!(
                environment(&objects, 11 * MINUTE, 10 * MINUTE, AT).stalled,
                "{status}"
            );
        }
    }

    #[test]
    fn environment_messages_name_a_handful_of_objects_then_count_the_rest() {
        let objects: Vec<_> = (1..=8)
            .map(|i| {
                named(
                    &format!("ConfigMap/c{i}"),
                    Status::InProgress,
                    reason::RECONCILING,
                    "x",
                )
            })
            .collect();
        let health = environment(&objects, Duration::from_secs(90), 10 * MINUTE, AT);
        assert_eq!(
            health.message,
            "waiting for 8 of 8 objects since the apply at 2026-01-01T00:00:00Z (stalled if not current within 10m): \
             ConfigMap/c1: x; ConfigMap/c2: x; ConfigMap/c3: x; ConfigMap/c4: x; ConfigMap/c5: x; and 3 more"
        );
        let failed: Vec<_> = (1..=6)
            .map(|i| {
                named(
                    &format!("Pod/p{i}"),
                    Status::Failed,
                    reason::CONTAINER_CRASH_LOOPING,
                    "y",
                )
            })
            .collect();
        assert!(
            environment(&failed, Duration::ZERO, MINUTE, AT)
                .message
                .ends_with("Pod/p5: y; and 1 more")
        );
    }

    #[test]
    fn durations_read_as_hours_minutes_and_seconds() {
        for (secs, text) in [
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (3_600, "1h"),
            (3_661, "1h1m1s"),
            (7_320, "2h2m"),
        ] {
            assert_eq!(human(Duration::from_secs(secs)), text);
        }
        assert_eq!(human(Duration::from_millis(1_500)), "1s");
    }
}
