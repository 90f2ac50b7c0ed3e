//! All or nothing as far as the API server can tell: the Kubernetes target
//! dry-runs every object of an environment before writing any, so an object
//! the API server refuses leaves nothing of a new environment and nothing
//! changed of an existing one. The refusals come from a
//! `ValidatingAdmissionPolicy` (CEL, evaluated by the API server itself):
//! values converge's own checks pass, as a cluster's admission rules refuse.

use serde_json::Value;

use super::kube::{applied, json, project};
use crate::support::daemon::Daemon;
use crate::support::kube::KubeApi;
use crate::support::{claim, stderr};

/// Kinds an environment's built-in objects are of (the Namespace aside).
const KINDS: &str = "resourcequota,limitrange,networkpolicy,configmap,service,deployment,hpa";

/// Makes the API server refuse Deployments of `environment` whose image is
/// at `version` (a `ValidatingAdmissionPolicy` named `name` and its
/// binding), and waits until it does.
fn refuse(api: &KubeApi, name: &str, environment: &str, version: &str) {
    let policy = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: {name}\n\
         spec:\n  failurePolicy: Fail\n  matchConstraints:\n    resourceRules:\n    - apiGroups: [apps]\n      apiVersions: [v1]\n\
         \x20     operations: [CREATE, UPDATE]\n      resources: [deployments]\n  validations:\n\
         \x20 - expression: \"!(has(object.metadata.labels) && 'converge.dev/environment' in object.metadata.labels \
         && object.metadata.labels['converge.dev/environment'] == '{environment}' \
         && object.spec.template.spec.containers.exists(c, c.image.endsWith(':{version}')))\"\n\
         \x20   message: \"{version} is not admitted in {environment}\"\n---\n\
         apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: {name}\n\
         spec:\n  policyName: {name}\n  validationActions: [Deny]\n"
    );
    let _ = api.kubectl_with_input_ok(&["apply", "-f", "-"], &policy);
    let probe = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: probe-{name}\n  namespace: default\n\
         \x20 labels:\n    converge.dev/environment: {environment}\n\
         spec:\n  selector:\n    matchLabels: {{app: probe}}\n  template:\n    metadata:\n      labels: {{app: probe}}\n\
         \x20   spec:\n      containers:\n      - name: probe\n        image: example.com/probe:{version}\n"
    );
    for _ in 0..120 {
        // The API server takes the policy in once its informer saw it.
        let out = api.kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], &probe);
        if String::from_utf8_lossy(&out.stderr).contains("is not admitted") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("the policy {name} never took effect");
}

/// Every object of the built-in kinds labelled for `environment`, in any
/// namespace: `kind/namespace/name`.
fn labelled(api: &KubeApi, environment: &str) -> Vec<String> {
    let selector = format!("converge.dev/environment={environment}");
    json(api, &["get", KINDS, "-A", "-l", &selector])["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| {
            format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn namespace_gone_or_terminating(api: &KubeApi, ns: &str) -> bool {
    let out = api.kubectl(&["get", "namespace", ns, "-o", "json"]);
    !out.status.success()
        || serde_json::from_slice::<Value>(&out.stdout)
            .is_ok_and(|doc| doc["status"]["phase"] == "Terminating")
}

fn exists(api: &KubeApi, args: &[&str]) -> bool {
    api.kubectl(args).status.success()
}

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/kube-tools builds them)"]
fn a_new_environment_with_a_refused_object_writes_nothing_and_others_still_apply() {
    let api = KubeApi::shared();
    refuse(api, "converge-refuse-new", "dev-refused-new", "v1.2.4");
    let p = project(api, "converge-refuse-new");
    let config = std::fs::read_to_string(p.path("converge.yaml")).expect("config");
    p.write("converge.yaml", config + "reconcile:\n  max_backoff: 2s\n");
    let at_124 = |name: &str| claim(name, "dev").replace("v1.2.3", "v1.2.4");
    p.write("claims/dev-refused-new.yaml", at_124("dev-refused-new"));
    p.write("claims/dev-admitted.yaml", at_124("dev-admitted"));

    let out = p.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Nothing of the refused environment: its Namespace (created for the
    // dry run of what goes in it) deleted again, no object, no inventory.
    assert_eq!(labelled(api, "dev-refused-new"), Vec::<String>::new());
    assert!(namespace_gone_or_terminating(api, "dev-refused-new"));
    assert!(!exists(
        api,
        &[
            "get",
            "configmap",
            "converge.inventory.dev-refused-new",
            "-n",
            "converge-refuse-new"
        ]
    ));
    let err = stderr(&out);
    assert!(
        err.contains("environment dev-refused-new: invalid: dry-run patch deployments.apps dev-refused-new/user-service")
            && err.contains("v1.2.4 is not admitted in dev-refused-new"),
        "the refusal names the object and the API server's message: {err}"
    );
    assert!(!err.contains("dev-admitted"), "{err}");
    // The other environment of the same pass is applied.
    assert!(exists(
        api,
        &["get", "deployment", "user-service", "-n", "dev-admitted"]
    ));
    let objects = labelled(api, "dev-admitted");
    assert_eq!(objects.len(), 8, "7 objects and the inventory: {objects:?}");

    // The daemon reports the refusal on the environment, with its reason.
    let d = Daemon::start(p.dir.path());
    let detail = |d: &Daemon| match d.get("/api/v1/environments/dev-refused-new") {
        (200, body) => body,
        _ => String::new(),
    };
    d.wait_for("the refusal reported", |d| {
        let body = detail(d);
        body.contains("\"reason\":\"Invalid\"")
            && body.contains("is not admitted in dev-refused-new")
    });
    assert!(namespace_gone_or_terminating(api, "dev-refused-new"));
    assert_eq!(labelled(api, "dev-refused-new"), Vec::<String>::new());
}

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/kube-tools builds them)"]
fn an_update_with_a_refused_object_leaves_every_live_object_unchanged() {
    let api = KubeApi::shared();
    let p = project(api, "converge-refuse-update");
    p.write(
        "claims/dev-refused-upd.yaml",
        claim("dev-refused-upd", "dev"),
    );
    let out = p.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let inventory = || {
        json(
            api,
            &[
                "get",
                "configmap",
                "converge.inventory.dev-refused-upd",
                "-n",
                "converge-refuse-update",
            ],
        )["metadata"]["resourceVersion"]
            .clone()
    };
    let before = applied(api, "dev-refused-upd");
    let inventory_before = inventory();

    // A release changes the ConfigMap (rank 7), the Service and the
    // Deployment (rank 10); the Deployment is refused.
    refuse(api, "converge-refuse-update", "dev-refused-upd", "v1.2.4");
    p.write(
        "claims/dev-refused-upd.yaml",
        claim("dev-refused-upd", "dev").replace("v1.2.3", "v1.2.4"),
    );
    let plan = p.run(&["plan"]);
    let planned = crate::support::stdout(&plan);
    assert!(
        planned.contains("ConfigMap/converge-claim") && planned.contains("Deployment/user-service"),
        "the release updates objects written before the Deployment: {planned}"
    );
    let out = p.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        applied(api, "dev-refused-upd"),
        before,
        "no live object written"
    );
    assert_eq!(inventory(), inventory_before, "nor the inventory");
    let err = stderr(&out);
    assert!(
        err.contains("environment dev-refused-upd: invalid: dry-run patch deployments.apps dev-refused-upd/user-service")
            && err.contains("v1.2.4 is not admitted in dev-refused-upd"),
        "{err}"
    );

    // Admitted again, the release applies.
    let _ = api.kubectl_ok(&[
        "delete",
        "validatingadmissionpolicybinding",
        "converge-refuse-update",
    ]);
    let mut released = false;
    for _ in 0..120 {
        // Until the API server saw the binding go.
        if p.run(&["run", "--once"]).status.success() {
            released = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(released, "applied once admitted");
    let d = json(
        api,
        &["get", "deployment", "user-service", "-n", "dev-refused-upd"],
    );
    let image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default();
    assert!(image.ends_with(":v1.2.4"), "released: {image}");
}

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/kube-tools builds them)"]
fn an_environment_whose_namespace_was_deleted_is_created_again_after_its_dry_run() {
    let api = KubeApi::shared();
    let p = project(api, "converge-renamespace");
    p.write(
        "claims/dev-renamespace.yaml",
        claim("dev-renamespace", "dev"),
    );
    let out = p.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Gone by hand, with everything in it: the inventory still lists it,
    // so the dry run of what goes in it finds no Namespace.
    let _ = api.kubectl_ok(&["delete", "namespace", "dev-renamespace", "--wait=true"]);
    let out = p.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(exists(
        api,
        &["get", "deployment", "user-service", "-n", "dev-renamespace"]
    ));
    let objects = labelled(api, "dev-renamespace");
    assert_eq!(objects.len(), 8, "7 objects and the inventory: {objects:?}");
    let out = p.run(&["plan"]);
    assert_eq!(out.status.code(), Some(0), "converged: {}", stderr(&out));
}
