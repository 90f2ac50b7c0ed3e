//! The rules of every kind and the environment fold, case by case. The
//! live objects the cases start from are files under
//! `tests/fixtures/health/`, as the API server returns them; each case
//! patches one of them.

use std::time::Duration;

use serde_json::json;

use super::environment::human;
use super::*;

/// A live object from `tests/fixtures/health/<name>.json`.
macro_rules! fixture {
    ($name:literal) => {
        serde_json::from_str::<Value>(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/health/",
            $name,
            ".json"
        )))
        .expect("a fixture is JSON")
    };
}

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
fn check(kind: &str, cases: &[(&str, Value, Status, Reason)]) {
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
    fixture!("deployment-rolled-out")
}

/// Generation 4 (a new image) half rolled out: one new pod up, old pods
/// still serving.
fn deployment_mid_rollout() -> Value {
    fixture!("deployment-mid-rollout")
}

/// A rollout whose new pods never became ready within 600 s.
fn deployment_progress_deadline_exceeded() -> Value {
    fixture!("deployment-progress-deadline-exceeded")
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
    assert_eq!(health.reason, Reason::Current);
    assert_eq!(health.message, "available: 3/3 replicas");
}

#[test]
fn a_deployment_mid_rollout_is_in_progress_until_every_replica_is_updated() {
    let health = object("Deployment", &deployment_mid_rollout());
    assert_eq!(
        (health.status, health.reason, health.message.as_str()),
        (
            Status::InProgress,
            Reason::LessUpdated,
            "updated replicas: 1/3"
        )
    );
}

#[test]
fn a_deployment_past_its_progress_deadline_has_failed_and_says_why() {
    let health = object("Deployment", &deployment_progress_deadline_exceeded());
    assert_eq!(health.status, Status::Failed);
    assert_eq!(health.reason, Reason::ProgressDeadlineExceeded);
    assert_eq!(
        health.message,
        "progress deadline exceeded: ReplicaSet \"user-service-6d4f8b7c9\" has timed out \
         progressing."
    );
    assert!(
        health.message.contains("user-service-6d4f8b7c9") && health.message.contains("timed out"),
        "{}",
        health.message
    );
}

#[test]
fn a_deployment_whose_generation_is_not_observed_is_in_progress_whatever_its_counts_say() {
    let health = object("Deployment", &deployment_generation_lagging());
    assert_eq!(health.status, Status::InProgress);
    assert_eq!(health.reason, Reason::LatestGenerationNotObserved);
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
                Reason::NoObservedGeneration,
            ),
            (
                "created, seen by the controller, no pods yet",
                patched(&done, &[("/status", json!({"observedGeneration": 3}))]),
                Status::InProgress,
                Reason::LessReplicas,
            ),
            (
                "no metadata.generation",
                patched(&done, &[("/metadata/generation", Value::Null)]),
                Status::InProgress,
                Reason::NoGeneration,
            ),
            (
                "scaled up, new pods not created",
                patched(&done, &[("/spec/replicas", json!(5))]),
                Status::InProgress,
                Reason::LessReplicas,
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
                Reason::Current,
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
                Reason::LessReplicas,
            ),
            (
                "scaled down, old pods terminating",
                patched(&done, &[("/spec/replicas", json!(2))]),
                Status::InProgress,
                Reason::ExtraPods,
            ),
            (
                "updated but not yet available",
                patched(&done, &[("/status/availableReplicas", json!(2))]),
                Status::InProgress,
                Reason::LessAvailable,
            ),
            (
                "available but not ready",
                patched(&done, &[("/status/readyReplicas", json!(2))]),
                Status::InProgress,
                Reason::LessReady,
            ),
            (
                "counts match but the new replica set is not reported available",
                patched(
                    &done,
                    &[("/status/conditions", json!([available_true.clone()]))],
                ),
                Status::InProgress,
                Reason::ReplicaSetNotAvailable,
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
                Reason::Current,
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
                Reason::Current,
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
                Reason::DeploymentNotAvailable,
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
                Reason::Current,
            ),
            (
                "scaled to zero but never seen by the controller",
                patched(
                    &done,
                    &[("/spec/replicas", json!(0)), ("/status", json!({}))],
                ),
                Status::InProgress,
                Reason::NoObservedGeneration,
            ),
            (
                "the deadline is checked before the counts",
                patched(
                    &deployment_progress_deadline_exceeded(),
                    &[("/status/replicas", json!(1))],
                ),
                Status::Failed,
                Reason::ProgressDeadlineExceeded,
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
                Reason::NotReady,
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
                Reason::LessReady,
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
                Reason::Terminating,
            ),
            (
                "an empty deletion timestamp means nothing",
                patched(&done, &[("/metadata/deletionTimestamp", json!(""))]),
                Status::Current,
                Reason::Current,
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
                Reason::Reconciling,
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
                Reason::Stalled,
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
                Reason::Current,
            ),
        ],
    );
    let stalled = object("Widget", &fixture!("widget-stalled"));
    assert_eq!(stalled.status, Status::Failed);
    assert_eq!(
        stalled.message,
        "stalled: InvalidSpec: size must be positive"
    );
}

#[test]
#[allow(clippy::too_many_lines, reason = "one table of cases")]
fn custom_resources_are_decided_by_generation_then_ready_then_current() {
    let claim = fixture!("kubernetes-cluster-ready");
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
                Reason::Current,
            ),
            (
                "Ready=False",
                patched(&claim, &[("/status/conditions", ready_false)]),
                Status::InProgress,
                Reason::NotReady,
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
                Reason::NotReady,
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
                Reason::Current,
            ),
            (
                "no status at all",
                patched(&claim, &[("/status", Value::Null)]),
                Status::Current,
                Reason::Current,
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
                Reason::Current,
            ),
            (
                "conditions that are not a list are ignored",
                patched(&claim, &[("/status/conditions", json!({"Ready": "False"}))]),
                Status::Current,
                Reason::Current,
            ),
            (
                "a lagging generation beats Ready=True",
                patched(&claim, &[("/metadata/generation", json!(3))]),
                Status::InProgress,
                Reason::LatestGenerationNotObserved,
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
    fixture!("stateful-set-ready")
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
                Reason::Current,
            ),
            (
                "without a partition too",
                unpartitioned.clone(),
                Status::Current,
                Reason::Current,
            ),
            (
                "created, never observed (kstatus would say current for zero replicas)",
                patched(
                    &ready,
                    &[("/spec/replicas", json!(0)), ("/status", json!({}))],
                ),
                Status::InProgress,
                Reason::NoObservedGeneration,
            ),
            (
                "pods still being created",
                patched(&ready, &[("/status/replicas", json!(2))]),
                Status::InProgress,
                Reason::LessReplicas,
            ),
            (
                "a pod not ready",
                patched(&ready, &[("/status/readyReplicas", json!(2))]),
                Status::InProgress,
                Reason::LessReady,
            ),
            (
                "scaled down, a pod terminating",
                patched(&ready, &[("/spec/replicas", json!(2))]),
                Status::InProgress,
                Reason::ExtraPods,
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
                Reason::PartitionRollout,
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
                Reason::Current,
            ),
            (
                "rolling update: pods not yet at the current revision",
                patched(&unpartitioned, &[("/status/currentReplicas", json!(1))]),
                Status::InProgress,
                Reason::LessCurrent,
            ),
            (
                "rolling update: revisions differ",
                patched(
                    &unpartitioned,
                    &[("/status/updateRevision", json!("postgres-7d8e9a6c5"))],
                ),
                Status::InProgress,
                Reason::RevisionMismatch,
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
                Reason::Current,
            ),
            (
                "generation lagging",
                patched(&ready, &[("/metadata/generation", json!(3))]),
                Status::InProgress,
                Reason::LatestGenerationNotObserved,
            ),
        ],
    );
}

#[test]
fn a_daemon_set_is_current_when_every_scheduled_pod_is_updated_available_and_ready() {
    let ready = fixture!("daemon-set-ready");
    check(
        "DaemonSet",
        &[
            (
                "ready on every node",
                ready.clone(),
                Status::Current,
                Reason::Current,
            ),
            (
                "not yet observed",
                patched(&ready, &[("/status", json!({}))]),
                Status::InProgress,
                Reason::NoObservedGeneration,
            ),
            (
                "observed but nothing scheduled yet",
                patched(&ready, &[("/status", json!({"observedGeneration": 1}))]),
                Status::InProgress,
                Reason::NoDesiredNumber,
            ),
            (
                "not on every node yet",
                patched(&ready, &[("/status/currentNumberScheduled", json!(3))]),
                Status::InProgress,
                Reason::LessCurrent,
            ),
            (
                "a node runs the old version",
                patched(&ready, &[("/status/updatedNumberScheduled", json!(3))]),
                Status::InProgress,
                Reason::LessUpdated,
            ),
            (
                "a pod not available",
                patched(&ready, &[("/status/numberAvailable", json!(3))]),
                Status::InProgress,
                Reason::LessAvailable,
            ),
            (
                "a pod not ready",
                patched(&ready, &[("/status/numberReady", json!(3))]),
                Status::InProgress,
                Reason::LessReady,
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
                Reason::Current,
            ),
        ],
    );
}

#[test]
fn a_replica_set_is_current_when_its_replicas_are_labelled_available_and_ready() {
    let ready = fixture!("replica-set-ready");
    check(
        "ReplicaSet",
        &[
            (
                "all available",
                ready.clone(),
                Status::Current,
                Reason::Current,
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
                Reason::ReplicaFailure,
            ),
            (
                "a pod not labelled",
                patched(&ready, &[("/status/fullyLabeledReplicas", json!(1))]),
                Status::InProgress,
                Reason::LessLabelled,
            ),
            (
                "a pod not available",
                patched(&ready, &[("/status/availableReplicas", json!(1))]),
                Status::InProgress,
                Reason::LessAvailable,
            ),
            (
                "a pod not ready",
                patched(&ready, &[("/status/readyReplicas", json!(1))]),
                Status::InProgress,
                Reason::LessReady,
            ),
            (
                "a pod too many",
                patched(&ready, &[("/status/replicas", json!(3))]),
                Status::InProgress,
                Reason::ExtraPods,
            ),
            (
                "never observed",
                patched(&ready, &[("/status", json!({}))]),
                Status::InProgress,
                Reason::NoObservedGeneration,
            ),
        ],
    );
}

fn pod_running() -> Value {
    fixture!("pod-running")
}

#[test]
#[allow(clippy::too_many_lines, reason = "one table of cases")]
fn a_pod_is_current_when_ready_or_finished_and_failed_when_crash_looping() {
    let running = pod_running();
    let not_ready = json!([{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}]);
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
                Reason::Current,
            ),
            (
                "succeeded",
                patched(&running, &[("/status/phase", json!("Succeeded"))]),
                Status::Current,
                Reason::Current,
            ),
            (
                "failed is done, as in kstatus",
                patched(&running, &[("/status/phase", json!("Failed"))]),
                Status::Current,
                Reason::Current,
            ),
            (
                "running, not ready",
                patched(&running, &[("/status/conditions", not_ready)]),
                Status::InProgress,
                Reason::PodRunningNotReady,
            ),
            (
                "crash looping",
                crash_looping.clone(),
                Status::Failed,
                Reason::ContainerCrashLooping,
            ),
            (
                "pending on an image pull",
                image_pull.clone(),
                Status::InProgress,
                Reason::PodPending,
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
                Reason::PodUnschedulable,
            ),
            (
                "not observed yet",
                patched(&running, &[("/status", json!({}))]),
                Status::InProgress,
                Reason::PodNotObserved,
            ),
            (
                "an unknown phase",
                patched(&running, &[("/status/phase", json!("Hibernating"))]),
                Status::Unknown,
                Reason::UnknownPhase,
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
    let running = fixture!("job-running");
    check(
        "Job",
        &[
            ("running", running.clone(), Status::Current, Reason::Current),
            (
                "not started",
                patched(&running, &[("/status", json!({}))]),
                Status::InProgress,
                Reason::JobNotStarted,
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
                Reason::Current,
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
                Reason::JobFailed,
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
                Reason::Current,
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
                Reason::JobNotStarted,
            ),
        ],
    );
}

#[test]
fn a_load_balancer_service_waits_for_its_address() {
    let cluster_ip = fixture!("service-load-balancer-with-cluster-ip");
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
                Reason::Current,
            ),
            (
                "headless",
                patched(&cluster_ip, &[("/spec/clusterIP", json!("None"))]),
                Status::Current,
                Reason::Current,
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
                Reason::Current,
            ),
            (
                "LoadBalancer without an address",
                lb.clone(),
                Status::InProgress,
                Reason::NoIngress,
            ),
            (
                "LoadBalancer with an empty ingress list",
                patched(&lb, &[("/status/loadBalancer", json!({"ingress": []}))]),
                Status::InProgress,
                Reason::NoIngress,
            ),
            (
                "LoadBalancer without a cluster IP",
                patched(&lb, &[("/spec/clusterIP", Value::Null)]),
                Status::InProgress,
                Reason::NoIPAssigned,
            ),
            (
                "LoadBalancer with an IP",
                with_ip.clone(),
                Status::Current,
                Reason::Current,
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
                Reason::Current,
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
    let pvc = fixture!("persistent-volume-claim-bound");
    check(
        "PersistentVolumeClaim",
        &[
            ("bound", pvc.clone(), Status::Current, Reason::Current),
            (
                "pending",
                patched(&pvc, &[("/status", json!({"phase": "Pending"}))]),
                Status::InProgress,
                Reason::NotBound,
            ),
            (
                "no status",
                patched(&pvc, &[("/status", Value::Null)]),
                Status::InProgress,
                Reason::NotBound,
            ),
        ],
    );
}

#[test]
fn a_namespace_is_terminating_by_phase_or_deletion_timestamp() {
    let ns = fixture!("namespace-active");
    check(
        "Namespace",
        &[
            ("active", ns.clone(), Status::Current, Reason::Current),
            (
                "no status yet",
                patched(&ns, &[("/status", Value::Null)]),
                Status::Current,
                Reason::Current,
            ),
            (
                "phase Terminating",
                patched(&ns, &[("/status/phase", json!("Terminating"))]),
                Status::Terminating,
                Reason::Terminating,
            ),
            (
                "a deletion timestamp",
                patched(
                    &ns,
                    &[("/metadata/deletionTimestamp", json!("2026-11-30T11:00:00Z"))],
                ),
                Status::Terminating,
                Reason::Terminating,
            ),
        ],
    );
}

#[test]
fn a_definition_is_current_once_established_and_failed_when_its_names_clash() {
    let crd = fixture!("custom-resource-definition-established");
    check(
        "CustomResourceDefinition",
        &[
            ("established", crd.clone(), Status::Current, Reason::Current),
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
                Reason::Installing,
            ),
            (
                "no conditions yet",
                patched(&crd, &[("/status", json!({}))]),
                Status::InProgress,
                Reason::Installing,
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
                Reason::NamesNotAccepted,
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
                Reason::NotEstablished,
            ),
        ],
    );
}

#[test]
fn a_disruption_budget_is_current_once_observed() {
    let pdb = fixture!("pod-disruption-budget-observed");
    check(
        "PodDisruptionBudget",
        &[
            ("observed", pdb.clone(), Status::Current, Reason::Current),
            (
                "a new spec not observed",
                patched(&pdb, &[("/metadata/generation", json!(2))]),
                Status::InProgress,
                Reason::LatestGenerationNotObserved,
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
            (Status::Unknown, Reason::NotAnObject)
        );
    }
    assert_eq!(ObjectHealth::not_found().status, Status::NotFound);
}

#[test]
fn reasons_are_unique_camel_case_names() {
    let mut seen = std::collections::BTreeSet::new();
    for r in Reason::ALL.iter().map(|r| r.as_str()) {
        assert!(seen.insert(r), "{r} twice");
        assert!(r.starts_with(|c: char| c.is_ascii_uppercase()), "{r}");
        assert!(r.chars().all(|c| c.is_ascii_alphanumeric()), "{r}");
    }
}

fn named(name: &str, status: Status, reason: Reason, message: &str) -> (String, ObjectHealth) {
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
            readiness: Readiness::Ready,
            reason: Reason::Current,
            message: "all 2 objects current".to_owned(),
        }
    );
    assert_eq!(
        environment(&[], MINUTE, MINUTE, AT).readiness,
        Readiness::Ready
    );
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
        (before.readiness, before.reason),
        (Readiness::Reconciling, Reason::Progressing)
    );
    assert_eq!(
        before.message,
        "waiting for 1 of 2 objects since the apply at 2026-01-01T00:00:00Z (stalled if not current within 10m): \
         Deployment/user-service: updated replicas: 1/3"
    );
    let after = environment(&objects, 10 * MINUTE, 10 * MINUTE, AT);
    assert_eq!(
        (after.readiness, after.reason),
        (Readiness::Stalled, Reason::ProgressDeadlineExceeded)
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
    assert_eq!(health.readiness, Readiness::Stalled);
    assert_eq!(health.reason, Reason::ProgressDeadlineExceeded);
    assert!(
        health
            .message
            .contains("not current within 5m of the apply at 2026-01-01T00:00:00Z")
            && health
                .message
                .contains("Deployment/user-service: the Deployment controller has not observed it"),
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
            Reason::JobFailed,
            "failed: 7 failed pods",
        ),
    ];
    let health = environment(&objects, Duration::ZERO, 10 * MINUTE, AT);
    assert_eq!(
        (health.readiness, health.reason),
        (Readiness::Stalled, Reason::ProgressDeadlineExceeded)
    );
    assert!(
        health
            .message
            .starts_with("2 objects failed: Deployment/user-service: progress deadline exceeded")
            && health
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
            Reason::NotFound,
            "gone",
        )];
        let health = environment(&objects, MINUTE, 10 * MINUTE, AT);
        assert_eq!(health.readiness, Readiness::Reconciling, "{status}");
        assert_eq!(
            health.message,
            format!(
                "waiting for 1 of 1 objects since the apply at 2026-01-01T00:00:00Z (stalled if not current within 10m): \
                 Service/user-service: {status}: gone"
            )
        );
        assert_eq!(
            environment(&objects, 11 * MINUTE, 10 * MINUTE, AT).readiness,
            Readiness::Stalled,
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
                Reason::Reconciling,
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
                Reason::ContainerCrashLooping,
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
