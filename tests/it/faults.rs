//! Fault injection: a TCP fault proxy (`support::fault_proxy::FaultProxy`)
//! between the daemon and its real servers (git over HTTP, S3 on Garage,
//! the Kubernetes API server) refuses, resets, stalls, trickles and
//! truncates. Each fault must be an error with a stable reason, in words
//! (no Rust debug output), must delete nothing, and must clear by itself
//! once the fault does: the next change upstream is applied.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::support::daemon::Daemon;
use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::garage::{Garage, source_yaml};
use crate::support::git::{Repo, http_server};
use crate::support::kube::KubeApi;
use crate::support::{Project, claim};

const FAULTS: [Fault; 5] = [
    Fault::Refuse,
    Fault::Reset,
    Fault::Stall,
    Fault::Trickle,
    Fault::Truncate,
];

/// Polling knobs for every project here: the source is polled each second
/// and gives up after 3 s; retries back off to at most 2 s.
const RECONCILE: &str = "reconcile:\n  max_backoff: 2s\n";

/// A message in words: no Rust `Debug` output of a library's error.
fn in_words(message: &str) {
    for debug in ["{ kind:", "Error {", "Some(", "source: ", "Kind(", "\\\""] {
        assert!(
            !message.contains(debug),
            "debug output ({debug}) in {message:?}"
        );
    }
}

fn source(d: &Daemon) -> Value {
    d.json("/api/v1/sources")["items"][0].clone()
}

/// Runs every fault against the source of `d`: each must surface as a
/// source error, leave `out/` and the API's environments as they were, and
/// clear once the fault does (`add` puts a new claim upstream; it must be
/// applied). Returns each fault's reason.
fn each_fault_of_a_source(
    d: &Daemon,
    p: &Project,
    proxy: &FaultProxy,
    mut add: impl FnMut(&str),
) -> BTreeMap<String, String> {
    let mut reasons = BTreeMap::new();
    for (i, fault) in FAULTS.into_iter().enumerate() {
        let before = p.environments();
        let listed = d.names();
        let errors = source(d)["errors"].as_u64().expect("errors");
        proxy.set(fault);
        d.wait_for(&format!("{fault:?} to fail the source"), |d| {
            let s = source(d);
            s["errors"].as_u64() > Some(errors) && s["last_error"].is_object()
        });
        let error = source(d)["last_error"].clone();
        let reason = error["reason"].as_str().expect("reason").to_owned();
        let message = error["message"].as_str().expect("message");
        in_words(message);
        assert!(
            [
                "Unreachable",
                "Timeout",
                "ListingInterrupted",
                "ServerError"
            ]
            .contains(&reason.as_str()),
            "{fault:?}: {reason}: {message}"
        );
        assert_eq!(p.environments(), before, "{fault:?} deleted nothing");
        assert_eq!(
            d.names(),
            listed,
            "{fault:?}: every environment still listed"
        );
        eprintln!("{fault:?}: {reason}: {message}");
        reasons.insert(format!("{fault:?}"), reason);

        proxy.set(Fault::None);
        let name = format!("dev-team1-after-{i}");
        add(&name);
        d.wait_for(&format!("recovery from {fault:?}"), |d| {
            source(d)["last_error"].is_null() && d.names().contains(&name)
        });
    }
    reasons
}

/// What each fault is, for a source: a cut connection is `Unreachable`,
/// a server that does not answer in time (silent or trickling) a `Timeout`.
fn expected_source_reasons() -> BTreeMap<String, String> {
    [
        ("Refuse", "Unreachable"),
        ("Reset", "Unreachable"),
        ("Stall", "Timeout"),
        ("Trickle", "Timeout"),
        ("Truncate", "Unreachable"),
    ]
    .into_iter()
    .map(|(f, r)| (f.to_owned(), r.to_owned()))
    .collect()
}

#[test]
#[ignore = "needs lighttpd (scripts/test installs it)"]
fn git_faults_are_source_errors_that_delete_nothing_and_clear() {
    let repo = Repo::new();
    repo.commit(
        &[(
            "environments/dev-team1-one.yaml",
            Some(&claim("dev-team1-one", "dev")),
        )],
        "one",
        &[],
    );
    let server = http_server(&repo, false);
    let upstream = server
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host:port")
        .parse()
        .expect("an address");
    let proxy = FaultProxy::start(upstream);
    let url = server
        .url
        .replace(&upstream.to_string(), &proxy.addr.to_string());
    let p = crate::support::git::project(&url, RECONCILE);
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-team1-one applied", |d| d.names() == ["dev-team1-one"]);
    let reasons = each_fault_of_a_source(&d, &p, &proxy, |name| {
        repo.commit(
            &[(
                &format!("environments/{name}.yaml"),
                Some(&claim(name, "dev")),
            )],
            name,
            &[],
        );
    });
    assert_eq!(reasons, expected_source_reasons());
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn s3_faults_are_source_errors_that_delete_nothing_and_clear() {
    let garage = Garage::shared();
    let b = garage.bucket();
    b.put("dev-team1-one.yaml", claim("dev-team1-one", "dev"), &[]);
    let upstream = garage
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("an address");
    let proxy = FaultProxy::start(upstream);
    let p = Project::new("");
    let (id, secret) = garage.key_files();
    let yaml = source_yaml(&proxy.endpoint(), &b.name, &id, &secret, "")
        .replace("timeout: 5s", "timeout: 3s");
    p.write(
        "converge.yaml",
        format!(
            "sources:\n{yaml}target:\n  kind: manifests\n  path: out\nstate_dir: .converge\n{RECONCILE}"
        ),
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-team1-one applied", |d| d.names() == ["dev-team1-one"]);
    let reasons = each_fault_of_a_source(&d, &p, &proxy, |name| {
        b.put(&format!("{name}.yaml"), claim(name, "dev"), &[]);
    });
    assert_eq!(reasons, expected_source_reasons());
    drop(d);
    assert!(Path::new(&p.path("out/dev-team1-one")).is_dir());
}

#[test]
#[ignore = "needs kube-apiserver and etcd (scripts/tools builds them)"]
fn kubernetes_api_faults_are_apply_errors_that_delete_nothing_and_clear() {
    let api = KubeApi::shared();
    let upstream = api
        .url()
        .trim_start_matches("https://")
        .parse()
        .expect("an address");
    let proxy = FaultProxy::start(upstream);
    let p = Project::new("");
    let kubeconfig = p.path("kubeconfig");
    api.write_kubeconfig(&kubeconfig, None, api.admin_token());
    let text = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    std::fs::write(
        &kubeconfig,
        text.replace(&api.url(), &format!("https://{}", proxy.addr)),
    )
    .expect("write");
    p.write(
        "converge.yaml",
        format!(
            "sources:\n  - name: local\n    kind: dir\n    path: claims\n\
             target:\n  kind: kubernetes\n  kubeconfig: kubeconfig\n  inventory_namespace: converge-faults\n  timeout: 3s\n\
             state_dir: .converge\n{RECONCILE}"
        ),
    );
    p.write("claims/keep.yaml", claim("dev-kf-keep", "dev"));
    p.write("claims/change.yaml", claim("dev-kf-change", "dev"));
    let image = |ns: &str| {
        api.kubectl(&[
            "get",
            "deployment",
            "user-service",
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
    };
    let d = Daemon::start(p.dir.path());
    d.wait_for("both applied", |_| {
        ["dev-kf-keep", "dev-kf-change"]
            .iter()
            .all(|ns| image(ns).status.success())
    });
    let mut reasons = BTreeMap::new();
    for (i, fault) in FAULTS.into_iter().enumerate() {
        let tag = format!("v1.2.{}", 10 + i);
        proxy.set(fault);
        p.write(
            "claims/change.yaml",
            claim("dev-kf-change", "dev").replace("v1.2.3", &tag),
        );
        d.wait_for(&format!("{fault:?} to fail the apply"), |d| {
            let detail = d.json("/api/v1/environments/dev-kf-change");
            detail["status"] == "Failed"
        });
        let detail = d.json("/api/v1/environments/dev-kf-change");
        let failed = detail["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == "Ready")
            .expect("a Ready condition")
            .clone();
        let reason = failed["reason"].as_str().expect("reason").to_owned();
        let message = failed["message"].as_str().expect("message");
        eprintln!("{fault:?}: {reason}: {message}");
        in_words(message);
        reasons.insert(format!("{fault:?}"), reason);
        for ns in ["dev-kf-keep", "dev-kf-change"] {
            let out = image(ns);
            assert!(out.status.success(), "{fault:?} deleted nothing in {ns}");
        }

        proxy.set(Fault::None);
        d.wait_for(&format!("recovery from {fault:?}"), |d| {
            String::from_utf8_lossy(&image("dev-kf-change").stdout).ends_with(&tag)
                && d.json("/api/v1/environments/dev-kf-change")["status"] != "Failed"
        });
    }
    let expected: BTreeMap<String, String> = FAULTS
        .iter()
        .map(|f| (format!("{f:?}"), "TargetIo".to_owned()))
        .collect();
    assert_eq!(reasons, expected);
}
