//! Fault injection: a TCP fault proxy (`support::fault_proxy::FaultProxy`)
//! between the daemon and its real servers (git over HTTP, S3 on Garage,
//! the Kubernetes API server) refuses, resets, stalls, trickles and
//! truncates. Each fault must be an error with a stable reason, in words
//! (no Rust debug output), must delete nothing, and must clear by itself
//! once the fault does: the next change upstream is applied. A TLS-terminating
//! proxy (`support::tls_fault_proxy`) resets connections to the API server in
//! the middle of HTTPS responses, during applies and during watches: converge
//! retries and converges, nothing lost.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::support::daemon::Daemon;
use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::garage::{Garage, source_yaml};
use crate::support::git::{Repo, http_server};
use crate::support::kube::KubeApi;
use crate::support::tls_fault_proxy::TlsFaultProxy;
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

/// The objects a dev claim of one service becomes, by `kubectl get` name.
const DEV_OBJECTS: [&str; 7] = [
    "resourcequota/quota",
    "limitrange/defaults",
    "networkpolicy/default-deny-from-other-namespaces",
    "configmap/converge-claim",
    "service/user-service",
    "deployment/user-service",
    "horizontalpodautoscaler/user-service",
];

#[test]
#[ignore = "needs kube-apiserver and etcd (scripts/tools builds them)"]
#[allow(
    clippy::too_many_lines,
    reason = "one daemon's life: applies cut, a release cut, watches cut"
)]
fn resets_in_the_middle_of_https_responses_lose_nothing_in_applies_or_watches() {
    let api = KubeApi::shared();
    let proxy = TlsFaultProxy::start(api);
    let p = Project::new("");
    proxy.write_kubeconfig(api, &p.path("kubeconfig"));
    p.write(
        "converge.yaml",
        format!(
            "sources:\n  - name: local\n    kind: dir\n    path: claims\n\
             target:\n  kind: kubernetes\n  kubeconfig: kubeconfig\n  inventory_namespace: converge-tls-faults\n  timeout: 5s\n  drift: correct\n\
             state_dir: .converge\n{RECONCILE}"
        ),
    );
    let names = ["dev-tls-a", "dev-tls-b", "dev-tls-c"];
    let exists = |ns: &str, object: &str| api.kubectl(&["get", object, "-n", ns]).status.success();
    let wait = |what: &str, check: &dyn Fn() -> bool, d: &Daemon| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        while !check() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}; cuts: {:?}\n--- log ---\n{}",
                proxy.cuts(),
                d.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };

    // Applies: the API server applies each of the first 6 server-side
    // applies (the Namespaces and inventories come first; the dry runs
    // before them, `?&dryRun=All&force…`, are not cut), and converge hears
    // only the first 600 bytes of the answer.
    proxy.cut("?&force=true", 600, 6);
    for name in names {
        p.write(&format!("claims/{name}.yaml"), claim(name, "dev"));
    }
    let d = Daemon::start(p.dir.path());
    wait(
        "every object of every environment applied, every cut made",
        &|| {
            proxy.cuts().len() == 6
                && names.iter().all(|ns| {
                    DEV_OBJECTS.iter().all(|o| exists(ns, o))
                        && d.json(&format!("/api/v1/environments/{ns}"))["status"] == "Reconciling"
                })
        },
        &d,
    );
    let cuts = proxy.cuts();
    assert!(cuts.iter().all(|c| c.starts_with("PATCH ")), "{cuts:?}");
    assert!(
        cuts.iter()
            .any(|c| c.contains("/namespaces/converge-tls-faults/configmaps/")),
        "an inventory write was cut: {cuts:?}"
    );
    // A release: the Deployments' applies are cut, 3 times.
    proxy.cut("/deployments/user-service?", 600, 3);
    for name in names {
        p.write(
            &format!("claims/{name}.yaml"),
            claim(name, "dev").replace("v1.2.3", "v1.2.4"),
        );
    }
    let image = |ns: &str| {
        let out = api.kubectl(&[
            "get",
            "deployment/user-service",
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait(
        "the release applied everywhere, every cut made",
        &|| proxy.cuts().len() == 9 && names.iter().all(|ns| image(ns).ends_with(":v1.2.4")),
        &d,
    );
    let cuts = proxy.cuts();
    assert!(
        cuts[6..]
            .iter()
            .all(|c| c.starts_with("PATCH /apis/apps/v1/namespaces/dev-tls-")),
        "{cuts:?}"
    );
    eprintln!("cut mid-response: {cuts:#?}");
    // Nothing lost: once the daemon's retry has gone through, what it
    // recorded is what is there, and a plan through the proxy (no cut
    // left) has nothing to do (exit 0).
    let converged = || {
        let plan = p.run(&["plan"]);
        plan.status.code() == Some(0)
            && crate::support::stdout(&plan)
                .contains("0 to create, 0 to update, 0 to delete, 3 unchanged")
    };
    wait("a plan with nothing to do", &converged, &d);

    // Watches: the next 4 watch responses are cut at their next bytes
    // (the deletion's event first of all) while a Deployment is deleted by
    // hand (straight to the API server); the deletion reaches converge
    // anyway, through the watch started again, and converge applies it again.
    let uid = |ns: &str| {
        api.kubectl(&[
            "get",
            "deployment/user-service",
            "-n",
            ns,
            "-o",
            "jsonpath={.metadata.uid}",
        ])
    };
    let before = String::from_utf8_lossy(&uid("dev-tls-b").stdout).into_owned();
    proxy.cut("watch=", 1, 4);
    let _ = api.kubectl_ok(&["delete", "deployment/user-service", "-n", "dev-tls-b"]);
    wait(
        "a watch of Deployments cut mid-stream, the Deployment applied again",
        &|| {
            let now = uid("dev-tls-b");
            proxy
                .cuts()
                .iter()
                .any(|c| c.contains("/deployments?") && c.contains("watch="))
                && now.status.success()
                && String::from_utf8_lossy(&now.stdout) != before
        },
        &d,
    );
    proxy.cut("watch=", 1, 0);
    for ns in names {
        for object in DEV_OBJECTS {
            assert!(exists(ns, object), "{ns}: {object}");
        }
    }
    wait("a plan with nothing to do", &converged, &d);
    let watches: Vec<String> = proxy
        .cuts()
        .into_iter()
        .filter(|c| c.contains("watch="))
        .collect();
    eprintln!("watch responses cut: {watches:#?}");
}
