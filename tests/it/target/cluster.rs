//! The Kubernetes test harness against itself: the real API server starts,
//! kubectl and kube-rs reach it over verified TLS, server-side apply works,
//! the controller manager finishes Namespace deletions, and a restarted API
//! server keeps its data.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;

use crate::support::kube::KubeApi;

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/kube-tools builds them)"]
fn the_api_server_is_ready_and_kubectl_reaches_it() {
    let api = KubeApi::shared();
    assert_eq!(api.kubectl_ok(&["get", "--raw", "/readyz"]), "ok");
    assert!(api.url().starts_with("https://127.0.0.1:"), "{}", api.url());
    let namespaces = api.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    assert!(
        namespaces.contains("namespace/default"),
        "namespaces: {namespaces}"
    );
}

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/kube-tools builds them)"]
fn kubectl_applies_a_namespace_and_a_config_map_server_side() {
    let api = KubeApi::shared();
    let manifests = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: harness-ssa\n---\n\
                     apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: harness-ssa\n\
                     data:\n  greeting: hello\n";
    let apply = [
        "apply",
        "--server-side",
        "--field-manager=converge-test",
        "-f",
        "-",
    ];
    let out = api.kubectl_with_input_ok(&apply, manifests);
    assert!(out.contains("namespace/harness-ssa"), "{out}");
    let get = |jsonpath: &str| {
        api.kubectl_ok(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "harness-ssa",
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])
    };
    assert_eq!(get("{.data.greeting}"), "hello");
    assert_eq!(get("{.metadata.managedFields[0].manager}"), "converge-test");
    assert_eq!(get("{.metadata.managedFields[0].operation}"), "Apply");
    // Applying the same content again writes nothing.
    let version = get("{.metadata.resourceVersion}");
    let _ = api.kubectl_with_input_ok(&apply, manifests);
    assert_eq!(get("{.metadata.resourceVersion}"), version);
}

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/kube-tools builds them)"]
fn the_controller_manager_finishes_a_namespace_deletion() {
    let api = KubeApi::shared();
    let _ = api.kubectl_ok(&["create", "namespace", "harness-gone"]);
    let _ = api.kubectl_ok(&[
        "create",
        "configmap",
        "content",
        "-n",
        "harness-gone",
        "--from-literal=a=b",
    ]);
    let started = Instant::now();
    let _ = api.kubectl_ok(&["delete", "namespace", "harness-gone", "--wait=false"]);
    loop {
        let out = api.kubectl(&["get", "namespace", "harness-gone", "-o", "name"]);
        if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the Namespace is still there after 30 s:\n{}",
            api.log("controller-manager")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "kube: Namespace deleted in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/kube-tools builds them)"]
fn a_service_account_token_has_what_rbac_grants_it() {
    let api = KubeApi::shared();
    let token = api.service_account_token("harness-rbac", "reader");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("reader.kubeconfig");
    api.write_kubeconfig(&kubeconfig, Some("reader"), &token);
    let as_reader = |args: &[&str]| {
        let kubeconfig = kubeconfig.to_str().expect("utf-8 path");
        api.kubectl(&[&["--kubeconfig", kubeconfig][..], args].concat())
    };
    let whoami = as_reader(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        "system:serviceaccount:harness-rbac:reader",
        "{}",
        String::from_utf8_lossy(&whoami.stderr)
    );
    let denied = as_reader(&["get", "configmaps", "-n", "harness-rbac"]);
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Forbidden"),
        "{denied:?}"
    );
    // A Role of its own: the aggregated ClusterRoles (view, edit, admin) stay
    // empty here, as no clusterrole-aggregation controller runs.
    let _ = api.kubectl_ok(&[
        "create",
        "role",
        "read-config",
        "-n",
        "harness-rbac",
        "--verb=get,list",
        "--resource=configmaps",
    ]);
    let _ = api.kubectl_ok(&[
        "create",
        "rolebinding",
        "reader-read-config",
        "-n",
        "harness-rbac",
        "--role=read-config",
        "--serviceaccount=harness-rbac:reader",
    ]);
    let allowed = as_reader(&["get", "configmaps", "-n", "harness-rbac", "-o", "name"]);
    assert!(allowed.status.success(), "{allowed:?}");
}

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/kube-tools builds them)"]
fn a_restarted_api_server_keeps_its_data_and_address() {
    let api = KubeApi::start();
    let _ = api.kubectl_ok(&["create", "namespace", "harness-restart"]);
    let _ = api.kubectl_ok(&[
        "create",
        "configmap",
        "kept",
        "-n",
        "harness-restart",
        "--from-literal=k=v",
    ]);
    let url = api.url();

    api.stop_apiserver();
    let out = api.kubectl(&["get", "--raw", "/readyz", "--request-timeout=2s"]);
    assert!(!out.status.success(), "the API server still answers");

    let started = Instant::now();
    api.start_apiserver();
    eprintln!(
        "kube: API server restarted in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(api.url(), url);
    let value = api.kubectl_ok(&[
        "get",
        "configmap",
        "kept",
        "-n",
        "harness-restart",
        "-o",
        "jsonpath={.data.k}",
    ]);
    assert_eq!(value, "v");

    // The controller manager reconnected: deletions still finish.
    let _ = api.kubectl_ok(&["delete", "namespace", "harness-restart", "--timeout=60s"]);
    api.restart_apiserver();
    assert_eq!(api.kubectl_ok(&["get", "--raw", "/readyz"]), "ok");
}

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/kube-tools builds them)"]
fn a_kube_client_lists_namespaces_over_verified_tls() {
    let api = KubeApi::shared();
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = dir.path().join("admin.kubeconfig");
    api.write_kubeconfig(&admin, Some("harness"), api.admin_token());
    let stranger = dir.path().join("stranger.kubeconfig");
    api.write_kubeconfig(&stranger, None, "not-a-known-token");

    // As in converge's main: rustls has no process-wide provider by itself.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let namespaces: ::kube::Api<Namespace> =
            ::kube::Api::all(client(&admin, Some("harness")).await);
        let list = namespaces
            .list(&::kube::api::ListParams::default())
            .await
            .expect("list namespaces");
        let names: Vec<String> = list
            .items
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        assert!(
            names.iter().any(|n| n == "default") && names.iter().any(|n| n == "kube-system"),
            "{names:?}"
        );

        let namespaces: ::kube::Api<Namespace> = ::kube::Api::all(client(&stranger, None).await);
        let err = namespaces
            .list(&::kube::api::ListParams::default())
            .await
            .expect_err("an unknown token is refused");
        assert!(
            matches!(&err, ::kube::Error::Api(status) if status.code == 401),
            "{err:?}"
        );
    });
}

/// A kube client from the kubeconfig at `path`, as converge will build one.
async fn client(path: &std::path::Path, context: Option<&str>) -> ::kube::Client {
    let kubeconfig = ::kube::config::Kubeconfig::read_from(path).expect("kubeconfig");
    let options = ::kube::config::KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = ::kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("config");
    assert!(!config.accept_invalid_certs, "TLS is verified");
    ::kube::Client::try_from(config).expect("client")
}
