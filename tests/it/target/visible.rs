//! Problems you can see (issue 21, point 5), on the real API server: drift
//! in `converge status`'s table and as a metric; an environment turning
//! Stalled is logged and evented (converge's events and a Kubernetes Event),
//! once; health messages name the apply's time, never a duration since it,
//! and Ready does not repeat the Reconciling/Stalled message.

use serde_json::Value;

use super::kube::{json, project};
use crate::support::daemon::Daemon;
use crate::support::kube::KubeApi;
use crate::support::{claim, stdout};

fn detail(d: &Daemon, name: &str) -> Value {
    match d.get(&format!("/api/v1/environments/{name}")) {
        (200, body) => serde_json::from_str(&body).expect("JSON"),
        _ => Value::Null,
    }
}

fn status_table(p: &crate::support::Project, d: &Daemon) -> String {
    let out = p.run(&["status", "--url", &d.addr]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::support::stderr(&out)
    );
    stdout(&out)
}

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/tools builds them)"]
fn drift_shows_in_the_status_table_and_as_a_metric() {
    let api = KubeApi::shared();
    let p = project(api, "converge-visible-drift");
    let config = std::fs::read_to_string(p.path("converge.yaml")).expect("config");
    p.write(
        "converge.yaml",
        config.replace(
            "  kind: kubernetes\n",
            "  kind: kubernetes\n  drift: report\n",
        ),
    );
    p.write("claims/dev-seen.yaml", claim("dev-seen", "dev"));
    let d = Daemon::start(p.dir.path());
    d.wait_for("applied", |d| {
        detail(d, "dev-seen")["last_plan"]["change"] == "create"
    });
    let drifted = r#"converge_environments_drifted{type="dev"}"#;
    assert_eq!(d.sample(drifted), 0, "no drift yet");
    let table = status_table(&p, &d);
    assert!(
        table.lines().next().is_some_and(|h| h.contains("DRIFT")),
        "{table}"
    );
    std::thread::sleep(std::time::Duration::from_secs(1)); // the watches have listed
    let _ = api.kubectl_ok(&["delete", "configmap", "converge-claim", "-n", "dev-seen"]);
    let _ = api.kubectl_ok(&[
        "patch",
        "deployment",
        "user-service",
        "-n",
        "dev-seen",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"user-service","image":"evil:1"}]}}}}"#,
    ]);
    d.wait_for("both objects drifted", |d| {
        detail(d, "dev-seen")["conditions"]
            .to_string()
            .matches("; ")
            .count()
            >= 1
    });
    d.wait_for("the metric counts it", |d| d.sample(drifted) == 1);
    let table = status_table(&p, &d);
    let row = table
        .lines()
        .find(|l| l.starts_with("dev-seen "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("2 objects"), "{table}");
}

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/tools builds them)"]
fn a_stall_is_logged_and_evented_once_and_messages_name_times_not_durations() {
    let api = KubeApi::shared();
    let p = project(api, "converge-visible-stall");
    p.write(
        "converge.yaml",
        std::fs::read_to_string(p.path("converge.yaml")).expect("config")
            + "reconcile:\n  health_timeout: 4s\n",
    );
    p.write("claims/dev-stall.yaml", claim("dev-stall", "dev"));
    let d = Daemon::start(p.dir.path());
    d.wait_for("applied and reconciling", |d| {
        detail(d, "dev-stall")["status"] == "Reconciling"
    });
    let rolling = detail(&d, "dev-stall");
    let ready = rolling["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let reconciling = rolling["conditions"][1]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(rolling["conditions"][1]["type"], "Reconciling", "{rolling}");
    assert!(
        reconciling.contains("since the apply at 20")
            && !reconciling.contains("after the last apply"),
        "a time, not a duration: {reconciling}"
    );
    assert_ne!(ready, reconciling, "Ready does not repeat the long message");
    assert!(ready.len() < reconciling.len(), "{ready} / {reconciling}");

    d.wait_for("stalled", |d| detail(d, "dev-stall")["status"] == "Stalled");
    let stuck = detail(&d, "dev-stall");
    let message = stuck["conditions"][1]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("of the apply at 20"), "{message}");
    let stalls = |d: &Daemon| -> Vec<Value> {
        d.json("/api/v1/events")["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["reason"] == "Stalled" && e["environment"] == "dev-stall")
            .cloned()
            .collect()
    };
    d.wait_for("a Stalled event", |d| stalls(d).len() == 1);
    let event = &stalls(&d)[0];
    assert_eq!(event["type"], "Warning");
    assert!(
        event["message"].as_str().is_some_and(
            |m| m.contains("was Reconciling") && m.contains("ProgressDeadlineExceeded")
        ),
        "{event}"
    );
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("stalled") && l.contains("dev-stall")),
        "{}",
        d.log()
    );
    // The same as a Kubernetes Event on the environment's Namespace.
    d.wait_for("a Kubernetes Event", |_| {
        json(api, &["get", "events.events.k8s.io", "-n", "dev-stall"])["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reportingController"] == "converge" && e["reason"] == "Stalled")
    });
    // Once: later passes (a resync, another claim) do not repeat it.
    p.write("claims/dev-other.yaml", claim("dev-other", "dev"));
    d.wait_for("another pass", |d| {
        detail(d, "dev-other")["status"] != Value::Null
    });
    assert_eq!(stalls(&d).len(), 1, "evented once");
    // The message is the same on a later pass: nothing in it moves.
    assert_eq!(
        detail(&d, "dev-stall")["conditions"][1]["message"]
            .as_str()
            .unwrap_or_default(),
        message
    );
}
