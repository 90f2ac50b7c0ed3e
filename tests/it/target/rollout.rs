//! Real rollouts (issue 20 point 10, issue 21 points 2 and 3): the real
//! binary against a cluster whose pods schedule and run (kube-scheduler and
//! kwok, a simulated kubelet; see `support::kube`), with none of converge's
//! node-pool labels on its Nodes, as a new user's cluster has none.
//!
//! - The README's default presets on such a cluster: `required` placement,
//!   the pods stay Pending and the environment ends Stalled, naming them;
//!   the README's relaxed presets (`node_pools: []`, `preferred`) and
//!   `none` run and the environment turns Ready.
//! - A release under a scale (what an autoscaler does): the rollout
//!   completes with the 3 replicas kept, and the environment is Ready again.
//! - A rollout that does not finish (the new pods cannot be placed) ends
//!   Stalled after the health timeout, naming the Deployment and why.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::kube::json;
use crate::support::daemon::Daemon;
use crate::support::kube::KubeApi;
use crate::support::{Project, claim, stderr, stdout};

/// How long a test waits for a state before it fails (a bound, never a
/// measurement: kwok rolls a Deployment out in about a second).
const WAIT: Duration = Duration::from_secs(90);

/// The scheduling cluster the rollout tests share (two fake Nodes).
fn cluster() -> &'static KubeApi {
    static SHARED: std::sync::OnceLock<KubeApi> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| KubeApi::start_scheduling(2))
}

/// A project on `api` with its own inventory namespace, `extra` config
/// appended (presets, reconcile).
fn project(api: &KubeApi, inventory: &str, extra: &str) -> Project {
    let p = Project::new("");
    p.write(
        "converge.yaml",
        format!(
            "sources:\n  - name: local\n    kind: dir\n    path: claims\n\
             target:\n  kind: kubernetes\n  kubeconfig: {}\n  inventory_namespace: {inventory}\n{extra}",
            api.kubeconfig().display()
        ),
    );
    p
}

/// A dev or stage claim of one service, `user-service` at `version`.
fn release(name: &str, env_type: &str, version: &str) -> String {
    claim(name, env_type).replace("v1.2.3", version)
}

fn detail(d: &Daemon, name: &str) -> Value {
    match d.get(&format!("/api/v1/environments/{name}")) {
        (200, body) => serde_json::from_str(&body).expect("JSON"),
        _ => Value::Null, // not there before the first pass
    }
}

/// Polls `check` until it holds; fails after [`WAIT`] with `context()`.
fn wait(what: &str, mut check: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The message of an environment's condition of `kind` (`Stalled`, ...).
fn condition_message(env: &Value, kind: &str) -> String {
    env["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn wait_status(d: &Daemon, name: &str, status: &str) {
    wait(
        &format!("{name} {status}"),
        || detail(d, name)["status"] == status,
        || format!("{}\n--- log ---\n{}", detail(d, name), d.log()),
    );
}

/// The pods of `ns`, as kubectl lists them.
fn pods(api: &KubeApi, ns: &str) -> Vec<Value> {
    json(api, &["get", "pods", "-n", ns])["items"]
        .as_array()
        .expect("items")
        .clone()
}

fn deployment(api: &KubeApi, ns: &str) -> Value {
    json(api, &["get", "deployment", "user-service", "-n", ns])
}

/// Whether a Deployment's controller has rolled out its current spec:
/// every replica updated and available, `want` of them.
fn rolled_out(d: &Value, want: i64) -> bool {
    let s = &d["status"];
    d["spec"]["replicas"] == want
        && s["observedGeneration"] == d["metadata"]["generation"]
        && s["updatedReplicas"] == want
        && s["availableReplicas"] == want
        && s["readyReplicas"] == want
        && s["replicas"] == want
}

fn image(d: &Value) -> String {
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `converge status` for one environment, as text.
fn status_of(p: &Project, d: &Daemon, name: &str) -> String {
    let out = p.run(&["status", "--url", &d.addr, name]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

#[test]
#[ignore = "needs kube-apiserver, kwok, kube-scheduler (scripts/tools builds them)"]
fn the_default_presets_on_a_plain_cluster_leave_pods_pending_and_the_environment_stalled() {
    let api = cluster();
    let p = project(
        api,
        "converge-plain-default",
        "reconcile:\n  health_timeout: 10s\n",
    );
    p.write(
        "claims/dev-plain.yaml",
        release("dev-plain", "dev", "v0.1.0"),
    );
    let d = Daemon::start(p.dir.path());
    wait_status(&d, "dev-plain", "Stalled");

    // What the README says: placement is `required` by default, no Node
    // has the label, so the scheduler places nothing.
    let pods = pods(api, "dev-plain");
    assert_eq!(pods.len(), 1, "{pods:?}");
    let pod = &pods[0];
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    let scheduled = pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(scheduled["status"], "False", "{pod}");
    assert_eq!(scheduled["reason"], "Unschedulable", "{pod}");
    assert!(
        scheduled["message"]
            .as_str()
            .is_some_and(|m| m.contains("node affinity")),
        "{scheduled}"
    );
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchExpressions"][0];
    assert_eq!(terms["key"], "converge.dev/node-pool", "{pod}");

    let env = detail(&d, "dev-plain");
    assert_eq!(env["ready"], false, "{env}");
    let stalled = condition_message(&env, "Stalled");
    assert!(
        stalled.contains("Deployment/user-service: available replicas: 0/1"),
        "{env}"
    );
    // Why, in the scheduler's words and the label the cluster lacks.
    let pod_name = pod["metadata"]["name"].as_str().expect("name");
    let why = format!(
        "Pod/{pod_name}: not scheduled: Unschedulable: 0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector"
    );
    assert!(stalled.contains(&why), "{env}");
    assert!(
        stalled.contains(
            "(it requires nodes labelled converge.dev/node-pool In [general-restricted, general-public, spot])"
        ),
        "{env}"
    );
    let text = status_of(&p, &d, "dev-plain");
    assert!(text.contains("Stalled"), "{text}");
    assert!(text.contains("Deployment/user-service"), "{text}");
}

/// The presets the README's "Node pools" gives to relax placement on a
/// plain cluster, as written there.
fn readme_relaxed_presets() -> String {
    let readme = std::fs::read_to_string(crate::support::repo().join("README.md")).expect("README");
    let after = readme
        .split("relax the presets:\n\n```yaml\n")
        .nth(1)
        .expect("README, Node pools: the presets that relax placement");
    let block = after
        .split("```")
        .next()
        .expect("a closed block")
        .to_owned();
    assert!(
        block.contains("dev: { node_pools: [] }")
            && block.contains("stage: { placement: preferred }"),
        "{block}"
    );
    block
}

#[test]
#[ignore = "needs kube-apiserver, kwok, kube-scheduler (scripts/tools builds them)"]
fn the_readmes_relaxed_presets_and_no_placement_run_on_a_plain_cluster_and_turn_ready() {
    let api = cluster();
    // The README's block, and `placement: none` for prod.
    let presets = readme_relaxed_presets() + "  prod: { placement: none }\n";
    let p = project(api, "converge-plain-relaxed", &presets);
    let envs = [
        ("dev-anywhere", "dev"),
        ("stage-preferred", "stage"),
        ("prod-none", "prod"),
    ];
    for (name, env_type) in envs {
        p.write(
            &format!("claims/{name}.yaml"),
            release(name, env_type, "v0.1.0"),
        );
    }
    let d = Daemon::start(p.dir.path());
    for (name, _) in envs {
        wait_status(&d, name, "Ready");
        let env = detail(&d, name);
        assert_eq!(env["ready"], true, "{env}");
        let pods = pods(api, name);
        assert_eq!(pods.len(), 1, "{pods:?}");
        let pod = &pods[0];
        assert_eq!(pod["status"]["phase"], "Running", "{pod}");
        assert!(
            pod["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| n.starts_with("kwok-node-")),
            "{pod}"
        );
        assert!(rolled_out(&deployment(api, name), 1), "{name}");
    }
    let spec = |name: &str| deployment(api, name)["spec"]["template"]["spec"].clone();
    let dev = spec("dev-anywhere");
    assert!(
        dev["affinity"].is_null() && dev["tolerations"].is_null(),
        "no pools: no affinity, no tolerations: {dev}"
    );
    assert!(
        spec("stage-preferred")["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            .is_array(),
        "preferred: the pools first"
    );
    assert!(spec("prod-none")["affinity"].is_null(), "none: no affinity");
    for (name, _) in envs {
        let text = status_of(&p, &d, name);
        assert!(text.contains("Ready"), "{text}");
    }
}

#[test]
#[ignore = "needs kube-apiserver, kwok, kube-scheduler (scripts/tools builds them)"]
fn a_release_after_a_scale_to_three_rolls_out_keeping_three_replicas() {
    let api = cluster();
    let p = project(
        api,
        "converge-rollout-scale",
        "presets:\n  dev: { placement: none }\n",
    );
    p.write(
        "claims/dev-scale.yaml",
        release("dev-scale", "dev", "v0.1.0"),
    );
    let d = Daemon::start(p.dir.path());
    wait_status(&d, "dev-scale", "Ready");
    assert!(rolled_out(&deployment(api, "dev-scale"), 1));

    // What an autoscaler does: the scale subresource.
    let _ = api.kubectl_ok(&[
        "scale",
        "deployment/user-service",
        "--replicas=3",
        "-n",
        "dev-scale",
    ]);
    wait(
        "3 replicas running",
        || rolled_out(&deployment(api, "dev-scale"), 3),
        || deployment(api, "dev-scale").to_string(),
    );
    let running = pods(api, "dev-scale")
        .iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .count();
    assert_eq!(running, 3);
    wait_status(&d, "dev-scale", "Ready");

    // The release.
    p.write(
        "claims/dev-scale.yaml",
        release("dev-scale", "dev", "v0.1.1"),
    );
    wait(
        "the release rolled out",
        || {
            let dep = deployment(api, "dev-scale");
            image(&dep).ends_with(":v0.1.1") && rolled_out(&dep, 3)
        },
        || format!("{}\n--- log ---\n{}", deployment(api, "dev-scale"), d.log()),
    );
    wait(
        "dev-scale Ready at v0.1.1",
        || {
            let env = detail(&d, "dev-scale");
            env["status"] == "Ready" && env.to_string().contains("v0.1.1")
        },
        || format!("{}\n--- log ---\n{}", detail(&d, "dev-scale"), d.log()),
    );
    let dep = deployment(api, "dev-scale");
    assert_eq!(dep["spec"]["replicas"], 3, "the release kept the scale");
    assert_eq!(dep["status"]["availableReplicas"], 3, "{dep}");
    let pods = pods(api, "dev-scale");
    let new = pods
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running"
                && p["metadata"]["deletionTimestamp"].is_null()
                && p["spec"]["containers"][0]["image"]
                    .as_str()
                    .is_some_and(|i| i.ends_with(":v0.1.1"))
        })
        .count();
    assert_eq!(new, 3, "{pods:?}");
    let text = status_of(&p, &d, "dev-scale");
    assert!(text.contains("Ready"), "{text}");
}

#[test]
#[ignore = "needs kube-apiserver, kwok, kube-scheduler (scripts/tools builds them)"]
fn a_rollout_whose_new_pods_cannot_be_placed_ends_stalled_after_the_timeout() {
    let api = cluster();
    let p = project(
        api,
        "converge-rollout-stuck",
        "presets:\n  dev: { placement: none }\n",
    );
    p.write(
        "claims/dev-stuck.yaml",
        release("dev-stuck", "dev", "v0.1.0"),
    );
    let d = Daemon::start(p.dir.path());
    wait_status(&d, "dev-stuck", "Ready");
    drop(d);

    // The platform team makes the pools binding and a release follows:
    // the new pods need a label no Node has; the old pod keeps serving.
    let config = std::fs::read_to_string(p.path("converge.yaml")).expect("config");
    p.write(
        "converge.yaml",
        config.replace(
            "  dev: { placement: none }\n",
            "  dev: { placement: required }\nreconcile:\n  health_timeout: 10s\n",
        ),
    );
    p.write(
        "claims/dev-stuck.yaml",
        release("dev-stuck", "dev", "v0.1.1"),
    );
    let d = Daemon::start(p.dir.path());
    wait(
        "the release applied",
        || image(&deployment(api, "dev-stuck")).ends_with(":v0.1.1"),
        || d.log(),
    );
    wait_status(&d, "dev-stuck", "Stalled");
    let env = detail(&d, "dev-stuck");
    assert_eq!(env["ready"], false, "{env}");
    let stalled = condition_message(&env, "Stalled");
    assert!(
        stalled.contains("Deployment/user-service: pending termination: 1 old replicas"),
        "{env}"
    );

    let dep = deployment(api, "dev-stuck");
    assert_eq!(
        dep["status"]["availableReplicas"], 1,
        "the old pod serves: {dep}"
    );
    assert_eq!(dep["status"]["updatedReplicas"], 1, "{dep}");
    let pods = pods(api, "dev-stuck");
    let pending: Vec<&Value> = pods
        .iter()
        .filter(|p| p["status"]["phase"] == "Pending")
        .collect();
    assert_eq!(pending.len(), 1, "{pods:?}");
    assert!(
        pending[0]["spec"]["containers"][0]["image"]
            .as_str()
            .is_some_and(|i| i.ends_with(":v0.1.1")),
        "the new pod waits: {pods:?}"
    );
    let pending_name = pending[0]["metadata"]["name"].as_str().expect("name");
    assert!(
        stalled.contains(&format!("Pod/{pending_name}: not scheduled: Unschedulable"))
            && stalled.contains("converge.dev/node-pool In [general-restricted"),
        "the Stalled message names the pod that cannot be placed and why: {stalled}"
    );
    assert!(
        pods.iter()
            .filter(|p| p["metadata"]["name"] != pending_name)
            .all(|p| !stalled.contains(p["metadata"]["name"].as_str().unwrap_or("?"))),
        "only pods that cannot be placed are named: {stalled}"
    );
    let text = status_of(&p, &d, "dev-stuck");
    assert!(text.contains("Stalled"), "{text}");
}
