//! Unit tests of the Kubernetes target.

use std::collections::BTreeSet;

use super::apply::by_rank;
use super::drift::{Observed, SCALER, edit_detail, edited, field_paths, fingerprint, hashed};
use super::error::{
    Failure, RequestError, classify, is_immutable, missing_namespace, request_error,
};
use super::inventory::{
    INSTALLATION_ANNOTATION, INVENTORY_KEY, InventoryDoc, inventory_name, is_inventory_of,
    legacy_inventory_name, parse_inventory,
};
use super::pods::{forget_pod, unschedulable};
use super::*;
use crate::object::{kind, shared};
use crate::render::{ENVIRONMENT_LABEL, MANAGED_BY};
use crate::target::EnvironmentRecord;

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
    let immutable = RequestError {
        source: Some(invalid(
            "FieldValueInvalid",
            "spec.clusterIP",
            "Invalid value: \"10.0.0.2\": field is immutable",
        )),
        ..e(
            Some(422),
            "spec.clusterIP: Invalid value: field is immutable",
        )
    };
    assert_eq!(classify(immutable).reason(), Reason::ImmutableField);
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
        kube::core::Status::failure("namespaces \"dev-a\" is invalid", "Invalid").with_code(422),
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
            manifests: BTreeMap::new(),
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
    let meta =
        |name: &str, labels: &[(&str, &str)], installation: Option<&str>| kube::api::ObjectMeta {
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

/// A 422 `Invalid` status as the API server writes one, with one cause.
fn invalid(cause: &str, field: &str, message: &str) -> kube::Error {
    kube::Error::Api(Box::new(
        kube::core::Status::failure(
            &format!("the object is invalid: {field}: {message}"),
            "Invalid",
        )
        .with_code(422)
        .with_details(kube::core::response::StatusDetails {
            causes: vec![kube::core::response::StatusCause {
                reason: cause.into(),
                message: message.into(),
                field: field.into(),
            }],
            name: "web".into(),
            group: "apps".into(),
            kind: "Deployment".into(),
            uid: String::new(),
            retry_after_seconds: 0,
        }),
    ))
}

#[test]
fn an_immutable_field_is_known_by_the_status_cause_not_the_message() {
    // What kube-apiserver answers to a Deployment whose selector changed
    // (apimachinery's ValidateImmutableField), and to an `immutable`
    // ConfigMap whose data changed.
    let selector = invalid(
        "FieldValueInvalid",
        "spec.selector",
        "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web-2\"}}: field is immutable",
    );
    assert!(is_immutable(&selector));
    let frozen = invalid(
        "FieldValueForbidden",
        "data",
        "Forbidden: field is immutable when `immutable` is set",
    );
    assert!(is_immutable(&frozen));
    // A required field that is missing is invalid, whatever else it says.
    let required = invalid("FieldValueRequired", "spec.immutable", "Required value");
    assert!(!is_immutable(&required));
    // An admission webhook's wording is not the API server's cause.
    let webhook = kube::Error::Api(Box::new(
        kube::core::Status::failure(
            "admission webhook denied: labels are immutable here",
            "Invalid",
        )
        .with_code(422),
    ));
    assert!(!is_immutable(&webhook));
    let request = |source| request_error("patch", "deployments.apps", " e/web", source);
    assert_eq!(
        classify(request(selector)).reason(),
        crate::condition::Reason::ImmutableField
    );
    assert_eq!(
        classify(request(webhook)).reason(),
        crate::condition::Reason::Invalid
    );
}

#[test]
fn failures_keep_their_typed_causes() {
    use std::error::Error as _;
    let bad: Result<serde_json::Value, _> = serde_saphyr::from_str("a: [");
    let source = bad.expect_err("not YAML");
    let e = crate::target::Error::Invalid(Box::new(Failure::NotYaml {
        object: "ConfigMap e/c".into(),
        source,
    }));
    let cause = e.source().expect("a cause");
    let failure = cause.downcast_ref::<Failure>().expect("a typed Failure");
    assert!(
        failure
            .source()
            .is_some_and(<dyn std::error::Error>::is::<serde_saphyr::Error>)
    );
    let shared = crate::target::Error::Transient(Box::new(Failure::Shared(std::sync::Arc::new(
        classify(request_error(
            "patch",
            "namespaces",
            " converge-system",
            kube::Error::Api(Box::new(
                kube::core::Status::failure("no", "Forbidden").with_code(403),
            )),
        )),
    ))));
    assert!(
        shared
            .to_string()
            .starts_with("forbidden: patch namespaces converge-system")
    );
    let inner = shared.source().and_then(|c| c.downcast_ref::<Failure>());
    assert!(
        matches!(inner, Some(Failure::Shared(e)) if e.reason() == crate::condition::Reason::Forbidden)
    );
}
