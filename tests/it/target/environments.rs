//! `kubectl` sees environments (issue 21, point 7), on the real API server
//! through the daemon: the CRD installed at start, `kubectl get
//! environments` with its printer columns and the values `converge status`
//! shows, a drift and a not-ready environment published, a user's edit of
//! an Environment's status overwritten and one deleted by hand published
//! again, and the Environment gone with its claim.

use serde_json::Value;

use super::kube::{json, project};
use crate::support::claim;
use crate::support::daemon::Daemon;
use crate::support::kube::KubeApi;

fn detail(d: &Daemon, name: &str) -> Value {
    match d.get(&format!("/api/v1/environments/{name}")) {
        (200, body) => serde_json::from_str(&body).expect("JSON"),
        _ => Value::Null,
    }
}

/// The Environment `name` in `ns` as JSON, `Null` when there is none.
fn environment(api: &KubeApi, ns: &str, name: &str) -> Value {
    let out = api.kubectl(&["get", "environment", name, "-n", ns, "-o", "json"]);
    if out.status.success() {
        serde_json::from_slice(&out.stdout).expect("JSON")
    } else {
        Value::Null
    }
}

/// `kubectl get environments -n ns`: the header and the rows, split on
/// runs of spaces.
fn table(api: &KubeApi, ns: &str) -> Vec<Vec<String>> {
    api.kubectl_ok(&["get", "environments", "-n", ns])
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The row of `name`, by column header.
fn row(api: &KubeApi, ns: &str, name: &str) -> Option<std::collections::BTreeMap<String, String>> {
    let t = table(api, ns);
    let header = t.first()?.clone();
    let cells = t
        .iter()
        .skip(1)
        .find(|r| r.first().map(String::as_str) == Some(name))?;
    Some(header.into_iter().zip(cells.iter().cloned()).collect())
}

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/tools builds them)"]
#[allow(
    clippy::too_many_lines,
    reason = "one environment's life, as kubectl shows it"
)]
fn kubectl_get_environments_shows_each_environment_as_converge_status_does() {
    let api = KubeApi::shared();
    let ns = "converge-cenv";
    let p = project(api, ns);
    let config = std::fs::read_to_string(p.path("converge.yaml")).expect("config");
    p.write(
        "converge.yaml",
        config
            .replace(
                "  kind: kubernetes\n",
                "  kind: kubernetes\n  drift: report\n",
            )
            .replace("max_delete_fraction: 0.5", "max_delete_fraction: 1.0"),
    );
    p.write("claims/dev-cenv.yaml", claim("dev-cenv", "dev"));
    p.write("claims/dev-cenv-b.yaml", claim("dev-cenv-b", "dev"));
    let d = Daemon::start(p.dir.path());

    // The CRD is installed at start, with its printer columns.
    d.wait_for("the Environment published", |_| {
        environment(api, ns, "dev-cenv")["status"]["state"].is_string()
    });
    let crd = json(api, &["get", "crd", "environments.converge.dev"]);
    assert_eq!(
        crd["spec"]["names"]["shortNames"],
        serde_json::json!(["cenv"])
    );
    let header = &table(api, ns)[0];
    assert_eq!(
        header,
        &["NAME", "TYPE", "POOL", "VERSIONS", "READY", "REASON", "AGE"]
    );

    // Its columns say what converge's API says of it.
    d.wait_for("the same Ready as converge status", |d| {
        let e = environment(api, ns, "dev-cenv");
        let api_detail = detail(d, "dev-cenv");
        let ready = if api_detail["ready"] == true {
            "True"
        } else {
            "False"
        };
        e["status"]["ready"] == ready
            && e["status"]["reason"] == api_detail["conditions"][0]["reason"]
            && e["status"]["state"] == api_detail["status"]
    });
    let r = row(api, ns, "dev-cenv").expect("a row for dev-cenv");
    assert_eq!(r["TYPE"], "dev");
    assert_eq!(r["POOL"], "team1");
    assert_eq!(r["VERSIONS"], "user-service=v1.2.3");
    let e = environment(api, ns, "dev-cenv");
    assert_eq!(e["spec"]["owner"], "john.doe@company.com");
    assert_eq!(e["spec"]["source"], "local:claims/dev-cenv.yaml");
    assert_eq!(
        r["READY"],
        e["status"]["ready"].as_str().unwrap_or_default()
    );
    assert_eq!(
        r["REASON"],
        e["status"]["reason"].as_str().unwrap_or_default()
    );
    // No kubelet here: the Deployment never becomes available, so the
    // environment is not ready, and kubectl says so.
    assert_eq!(r["READY"], "False", "{e}");
    assert_eq!(
        e["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "converge"
    );
    let e = json(
        api,
        &[
            "get",
            "environment",
            "dev-cenv",
            "-n",
            ns,
            "--show-managed-fields",
        ],
    );
    let managers: Vec<&str> = e["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .filter_map(|f| f["manager"].as_str())
        .collect();
    assert!(managers.iter().all(|m| *m == "converge"), "{managers:?}");

    // Drift: published at the next pass.
    std::thread::sleep(std::time::Duration::from_secs(1)); // the watches have listed
    let _ = api.kubectl_ok(&["delete", "configmap", "converge-claim", "-n", "dev-cenv"]);
    d.wait_for("the drift published", |_| {
        let e = environment(api, ns, "dev-cenv");
        e["status"]["drifted"] == true
            && e["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Drifted" && c["status"] == "True")
    });

    // A version change: the Versions column follows.
    p.write(
        "claims/dev-cenv.yaml",
        claim("dev-cenv", "dev").replace("user-service: v1.2.3", "user-service: v1.2.4"),
    );
    d.wait_for("the new version published", |_| {
        row(api, ns, "dev-cenv").is_some_and(|r| r["VERSIONS"] == "user-service=v1.2.4")
    });

    // A user's edit of the status is overwritten; nothing converge decides
    // reads it.
    let _ = api.kubectl_ok(&[
        "patch",
        "environment",
        "dev-cenv",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"ready":"True","reason":"AllGood","versions":"user-service=v9.9.9"}}"#,
    ]);
    // The status may still move on by itself (a condition's reason after the
    // version change), so the edit is judged field by field against what
    // converge's API says now, not against a copy taken before it.
    d.wait_for("the edit overwritten", |d| {
        let status = &environment(api, ns, "dev-cenv")["status"];
        let api_detail = detail(d, "dev-cenv");
        status["versions"] == "user-service=v1.2.4"
            && status["reason"] != "AllGood"
            && status["reason"] == api_detail["conditions"][0]["reason"]
            && (status["ready"] == "True") == (api_detail["ready"] == true)
    });
    assert_eq!(
        detail(&d, "dev-cenv")["ready"],
        false,
        "converge is not fooled"
    );

    // Deleted by hand: published again.
    let uid = environment(api, ns, "dev-cenv")["metadata"]["uid"].clone();
    let _ = api.kubectl_ok(&["delete", "environment", "dev-cenv", "-n", ns]);
    d.wait_for("published again", |_| {
        let e = environment(api, ns, "dev-cenv");
        e["metadata"]["uid"].is_string()
            && e["metadata"]["uid"] != uid
            && e["status"]["state"].is_string()
    });

    // The claim removed: the environment and its Environment are deleted;
    // the other stays.
    p.remove("claims/dev-cenv.yaml");
    d.wait_for("the Environment deleted", |_| {
        environment(api, ns, "dev-cenv").is_null()
    });
    assert!(row(api, ns, "dev-cenv-b").is_some(), "{:?}", table(api, ns));
    assert!(
        d.log().contains("installed the Environment CRD"),
        "{}",
        d.log()
    );
    let writes = d.get("/metrics").1;
    assert!(
        writes.contains(r#"converge_environment_resource_writes_total{op="apply",result="ok"}"#),
        "{writes}"
    );
}

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/tools builds them)"]
fn an_environment_published_by_an_earlier_run_and_no_longer_claimed_is_deleted_at_start() {
    let api = KubeApi::shared();
    let ns = "converge-cenv-sweep";
    let p = project(api, ns);
    p.write("claims/dev-sweep.yaml", claim("dev-sweep", "dev"));
    p.write("claims/dev-sweep-b.yaml", claim("dev-sweep-b", "dev"));
    let d = Daemon::start(p.dir.path());
    d.wait_for("both published", |_| {
        environment(api, ns, "dev-sweep")["status"]["state"].is_string()
            && environment(api, ns, "dev-sweep-b")["status"]["state"].is_string()
    });
    drop(d);
    // While converge is down, someone else's Environment appears (another
    // installation's annotation): never touched. And converge's record of
    // an environment it no longer knows (its state dir lost, the
    // environment gone): removed at start.
    let foreign = r#"{"apiVersion":"converge.dev/v1alpha1","kind":"Environment",
        "metadata":{"name":"dev-other","namespace":"converge-cenv-sweep",
          "labels":{"app.kubernetes.io/managed-by":"converge"},
          "annotations":{"converge.dev/installation":"someone-else"}},
        "spec":{"type":"dev","pool":"x","owner":"y"}}"#;
    let _ = api.kubectl_with_input_ok(&["create", "-f", "-"], foreign);
    let orphan = foreign
        .replace("dev-other", "dev-orphan")
        .replace("someone-else", "converge");
    let _ = api.kubectl_with_input_ok(&["create", "-f", "-"], &orphan);
    let d = Daemon::start(p.dir.path());
    d.wait_for("the orphan deleted", |_| {
        environment(api, ns, "dev-orphan").is_null()
    });
    assert!(
        environment(api, ns, "dev-other").is_object(),
        "not ours: kept"
    );
    assert!(environment(api, ns, "dev-sweep").is_object());
    assert!(environment(api, ns, "dev-sweep-b").is_object());
}
