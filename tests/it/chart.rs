//! The Helm chart (`charts/converge`): `helm lint` and `helm template` with
//! the helm v4 that `scripts/tools` builds, the rendered chart applied to
//! a real API server, and its RBAC proven both sufficient and minimal: the
//! real `converge run --once` with a token of the chart's `ServiceAccount`
//! applies the quick start, and without any one rule a pass needs it is
//! `forbidden`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::daemon::Daemon;
use crate::support::kube::{KubeApi, tool};
use crate::support::{Project, claim, repo, stderr, stdout};

fn chart() -> PathBuf {
    repo().join("charts/converge")
}

/// One source: the least the chart renders with.
fn minimal_values() -> PathBuf {
    chart().join("ci/minimal-values.yaml")
}

fn everything_values() -> PathBuf {
    chart().join("ci/everything-values.yaml")
}

/// Runs the built helm with its caches and config in a directory of its own.
fn helm(args: &[&str]) -> Output {
    let home = std::env::temp_dir().join("converge-test-helm");
    Command::new(tool("helm"))
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .expect("helm runs")
}

fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// `helm template RELEASE charts/converge -n NAMESPACE --values
/// ci/minimal-values.yaml EXTRA...`: the YAML.
fn template(release: &str, namespace: &str, extra: &[&str]) -> String {
    let chart = chart();
    let minimal = minimal_values();
    let mut args = vec![
        "template",
        release,
        chart.to_str().expect("a UTF-8 path"),
        "--namespace",
        namespace,
        "--values",
        minimal.to_str().expect("a UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    helm_ok(&args)
}

/// The rendered objects.
fn objects(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("helm renders YAML");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .filter_map(|o| o["kind"].as_str().map(str::to_owned))
        .collect();
    kinds.sort();
    kinds
}

/// The one `kind` whose name ends with `suffix`.
fn named<'a>(objects: &'a [Value], kind: &str, suffix: &str) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            o["kind"] == kind
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    assert_eq!(found.len(), 1, "one {kind} *{suffix}: {found:?}");
    found[0]
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}: {found:?}");
    found[0]
}

/// The converge.yaml the chart's `ConfigMap` holds.
fn rendered_config(objects: &[Value]) -> String {
    objects
        .iter()
        .find(|o| {
            o["kind"] == "ConfigMap"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-config"))
        })
        .and_then(|o| o["data"]["converge.yaml"].as_str())
        .expect("the config ConfigMap")
        .to_owned()
}

/// The RBAC rules the README's "Service manifests" section lists (what
/// `rbac.serviceManifests` adds).
fn readme_service_manifests_rules() -> Value {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let from = readme
        .find("The RBAC the chart grants follows from that list")
        .expect("the README lists the service manifests' rules");
    let block = &readme[from..];
    let start = block.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = start + block[start..].find("```").expect("its end");
    let doc: Value = serde_saphyr::from_str(&block[start..end]).expect("rules are YAML");
    doc["rules"].clone()
}

#[test]
#[ignore = "needs helm (scripts/tools builds it)"]
fn service_manifests_rbac_adds_exactly_the_readmes_rules_for_the_default_allow_list() {
    let objects = objects(&template(
        "converge",
        "converge",
        &["--set", "rbac.serviceManifests=true"],
    ));
    let mut want = readme_rules().as_array().expect("rules").clone();
    want.extend(
        readme_service_manifests_rules()
            .as_array()
            .expect("rules")
            .iter()
            .cloned(),
    );
    assert_eq!(one(&objects, "ClusterRole")["rules"], Value::Array(want));
    // Every kind the default policies permit is writable.
    let policies =
        std::fs::read_to_string(repo().join("policies/default.cedar")).expect("policies");
    let rules = one(&objects, "ClusterRole")["rules"].clone();
    let allowed = policies
        .split("services-emit-the-allowed-kinds")
        .nth(1)
        .expect("the allow-list");
    for (group, resource) in [
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("apps", "replicasets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("", "services"),
        ("", "configmaps"),
        ("", "serviceaccounts"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("policy", "poddisruptionbudgets"),
        ("networking.k8s.io", "networkpolicies"),
        ("networking.k8s.io", "ingresses"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
    ] {
        let writable = rules.as_array().expect("rules").iter().any(|r| {
            r["apiGroups"]
                .as_array()
                .is_some_and(|g| g.iter().any(|g| g == group))
                && r["resources"]
                    .as_array()
                    .is_some_and(|x| x.iter().any(|x| x == resource))
                && r["verbs"].as_array().is_some_and(|v| {
                    ["create", "patch", "delete"]
                        .iter()
                        .all(|w| v.iter().any(|v| v == w))
                })
        });
        assert!(writable, "{group}/{resource} writable");
        let kind_group = if group.is_empty() {
            String::new()
        } else {
            format!(".{group}")
        };
        assert!(allowed.contains(&kind_group), "{group} in the allow-list");
    }
    // Off by default: exactly the built-in kinds' rules.
    let off = self::objects(&template("converge", "converge", &[]));
    assert_eq!(one(&off, "ClusterRole")["rules"], readme_rules());
}

/// The RBAC rules the README's "Kubernetes" section lists.
fn readme_rules() -> Value {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let from = readme
        .find("The RBAC rules converge needs")
        .expect("the README lists the RBAC rules");
    let block = &readme[from..];
    let start = block.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = start + block[start..].find("```").expect("its end");
    let doc: Value = serde_saphyr::from_str(&block[start..end]).expect("rules are YAML");
    doc["rules"].clone()
}

#[test]
#[ignore = "needs helm (scripts/tools builds it)"]
fn helm_lints_the_chart_clean_with_one_source_and_with_everything_on() {
    let chart = chart();
    let chart = chart.to_str().expect("a UTF-8 path");
    let values = everything_values();
    let minimal = minimal_values();
    for extra in [
        &["--values", minimal.to_str().expect("a UTF-8 path")][..],
        &["--values", values.to_str().expect("a UTF-8 path")],
    ] {
        let mut args = vec!["lint", "--strict", chart];
        args.extend_from_slice(extra);
        let out = helm_ok(&args);
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{out}"
        );
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "{out}"
        );
    }
}

#[test]
#[ignore = "needs helm (scripts/tools builds it)"]
#[allow(
    clippy::too_many_lines,
    reason = "one rendered chart, object by object"
)]
fn the_chart_renders_a_locked_down_deployment_and_exactly_the_readmes_rules() {
    let objects = objects(&template("converge", "converge", &[]));
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Secret",
            "Service",
            "ServiceAccount",
        ]
    );

    // The pod: converge run on the mounted config, locked down, probed.
    let deployment = one(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "converge");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["image"], "ghcr.io/converge-dev/converge:0.1.0");
    assert_eq!(
        c["args"],
        serde_json::json!([
            "run",
            "--config",
            "/etc/converge/converge.yaml",
            "--log-format",
            "json"
        ])
    );
    let security = &c["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    // The installation's name, stable across pods: the default forge
    // status context.
    let installation = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "CONVERGE_INSTALLATION")
        .map(|e| e["value"].clone());
    assert_eq!(installation, Some(serde_json::json!("converge/converge")));
    let custom = self::objects(&template(
        "converge",
        "converge",
        &["--set", "installation=eu-prod"],
    ));
    let env = &one(&custom, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == "CONVERGE_INSTALLATION" && e["value"] == "eu-prod"),
        "{env}"
    );
    assert_eq!(c["ports"][0]["containerPort"], 8090);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready");
    // The probes on their own listener, which the API's connections do not reach.
    assert_eq!(c["ports"][1]["name"], "probes");
    assert_eq!(c["ports"][1]["containerPort"], 8091);
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "probes");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "probes");
    assert_eq!(c["resources"]["requests"]["memory"], "384Mi");
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert_eq!(
        mounts,
        [
            "/etc/converge/converge.yaml",
            "/etc/converge/identities.yaml",
            "/var/lib/converge",
            "/tmp",
            "/etc/converge/secrets/api"
        ]
    );
    let state = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "state")
        .expect("the state volume");
    assert!(state["emptyDir"].is_object(), "{state}");

    // The config: in-cluster (no kubeconfig), the API on all addresses.
    let config: Value = serde_saphyr::from_str(&rendered_config(&objects)).expect("YAML");
    assert_eq!(
        config["target"],
        serde_json::json!({
            "kind": "kubernetes", "field_manager": "converge", "drift": "correct",
            "concurrency": 8, "inventory_namespace": "converge", "recreate": false,
            "timeout": "30s",
            "environments": {"publish": true, "install_crd": false},
            "leader_election": {
                "lease": "converge", "lease_duration": "15s", "renew_deadline": "10s",
                "retry_period": "2s",
            },
        })
    );
    assert_eq!(
        config["api"],
        serde_json::json!({
            "listen": "0.0.0.0:8090", "probe_listen": "0.0.0.0:8091",
            "token_file": "/etc/converge/secrets/api/token",
        })
    );
    assert_eq!(config["state_dir"], "/var/lib/converge/state");

    assert_eq!(
        one(&objects, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );

    // RBAC: the README's rules, and the Lease in the release namespace (the
    // inventory's by default).
    assert_eq!(one(&objects, "ClusterRole")["rules"], readme_rules());
    let binding = one(&objects, "ClusterRoleBinding");
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "converge", "namespace": "converge"}])
    );
    let role = named(&objects, "Role", "-leader-election");
    assert_eq!(role["metadata"]["namespace"], "converge");
    assert_eq!(
        role["rules"],
        serde_json::json!([{
            "apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }])
    );

    // The Service: the API port only; the NetworkPolicy: no ingress until
    // the values name who may reach the API.
    let service = one(&objects, "Service");
    assert_eq!(service["spec"]["ports"][0]["port"], 8090);
    assert_eq!(service["spec"]["ports"].as_array().map(Vec::len), Some(1));
    let policy = one(&objects, "NetworkPolicy");
    assert_eq!(policy["spec"]["ingress"], serde_json::json!([]));
    let named = self::objects(&template(
        "converge",
        "converge",
        &[
            "--set-json",
            r#"networkPolicy.ingressFrom=[{"podSelector":{"matchLabels":{"app":"prometheus"}}}]"#,
        ],
    ));
    assert_eq!(
        one(&named, "NetworkPolicy")["spec"]["ingress"],
        serde_json::json!([{
            "ports": [{"port": "api", "protocol": "TCP"}],
            "from": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}],
        }])
    );

    // The API's token: a generated Secret, mounted and named in the config.
    let secret = one(&objects, "Secret");
    assert_eq!(secret["metadata"]["name"], "converge-api-token");
    let token = secret["data"]["token"].as_str().expect("a token");
    assert!(token.len() >= 64, "48 random characters, base64: {token}");
    let api: Value = serde_saphyr::from_str(&rendered_config(&objects)).expect("YAML");
    assert_eq!(api["api"]["token_file"], "/etc/converge/secrets/api/token");
    let volumes = pod["volumes"].as_array().expect("volumes");
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "converge-api-token"),
        "{volumes:?}"
    );
    // Opting out renders no Secret and no token_file, and the notes say so.
    let open = template(
        "converge",
        "converge",
        &["--set", "api.generateToken=false"],
    );
    assert!(!kinds(&self::objects(&open)).contains(&"Secret".to_owned()));
    assert!(!rendered_config(&self::objects(&open)).contains("token_file"));
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
}

#[test]
#[ignore = "needs helm (scripts/tools builds it)"]
#[allow(clippy::too_many_lines, reason = "every optional part, one by one")]
fn every_optional_part_renders_mounted_read_only_and_named_in_the_config() {
    let values = everything_values();
    let objects = objects(&template(
        "converge",
        "platform",
        &["--values", values.to_str().expect("a UTF-8 path")],
    ));
    let config: Value = serde_saphyr::from_str(&rendered_config(&objects)).expect("YAML");
    assert_eq!(
        config["target"]["kubeconfig"],
        "/etc/converge/kubeconfig/kubeconfig"
    );
    assert_eq!(config["target"]["context"], "prod-eu");
    assert_eq!(
        config["target"]["inventory_namespace"],
        "converge-inventory"
    );
    assert_eq!(
        config["api"],
        serde_json::json!({
            "listen": "0.0.0.0:8090",
            "probe_listen": "0.0.0.0:8091",
            "token_file": "/etc/converge/secrets/api/token",
            "tls": {"cert_file": "/etc/converge/tls/tls.crt", "key_file": "/etc/converge/tls/tls.key"},
        })
    );
    assert_eq!(config["policies"], "/etc/converge/policies");
    assert_eq!(config["schema"], "/etc/converge/schema/claim.json");
    assert_eq!(config["templates"], "/etc/converge/templates");
    assert_eq!(config["sources"].as_array().map(Vec::len), Some(2));
    assert_eq!(config["safety"]["max_delete_fraction"], 0.3);
    assert_eq!(
        config["images"]["registry"],
        "registry.example.com/releases"
    );
    assert_eq!(
        config["target"]["leader_election"]["lease"],
        "converge-platform"
    );
    assert_eq!(
        named(&objects, "Role", "-leader-election")["metadata"]["namespace"],
        "converge-inventory",
        "the Lease's Role is where the Lease is"
    );
    assert_eq!(
        named(&objects, "Role", "-environments")["metadata"]["namespace"],
        "converge-inventory",
        "the Environments' Role is where they are published"
    );
    assert_eq!(
        one(&objects, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        2,
        "only the leader is ready: the leader stays evictable"
    );
    assert_eq!(one(&objects, "Deployment")["spec"]["replicas"], 2);

    let deployment = one(&objects, "Deployment");
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mounts = c["volumeMounts"].as_array().expect("mounts");
    for path in [
        "/etc/converge/kubeconfig",
        "/etc/converge/secrets/api",
        "/etc/converge/tls",
        "/etc/converge/policies",
        "/etc/converge/schema",
        "/etc/converge/templates",
        "/etc/converge/secrets/git",
        "/etc/converge/secrets/s3",
        "/etc/converge/secrets/registry",
        "/etc/converge/secrets/age",
    ] {
        let mount = mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("{path} mounted: {mounts:?}"));
        assert_eq!(mount["readOnly"], true, "{mount}");
    }
    // The API serves HTTPS; the probe listener stays plain HTTP.
    assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTP");
    let rules = one(&objects, "ClusterRole")["rules"]
        .as_array()
        .expect("rules")
        .clone();
    assert_eq!(
        rules.last(),
        Some(&serde_json::json!({
            "apiGroups": ["platform.example.com"], "resources": ["clusterclaims"],
            "verbs": ["get", "create", "patch", "delete"],
        }))
    );
    let names: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "converge-config",
            "converge-policies",
            "converge-schema",
            "converge-templates"
        ]
    );
    let policy = one(&objects, "NetworkPolicy");
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
}

/// The Environment rules the README's "Kubernetes" section lists.
fn readme_environment_rules() -> Value {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let from = readme
        .find("The Environment resources need")
        .expect("the README lists the Environment rules");
    let block = &readme[from..];
    let start = block.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = start + block[start..].find("```").expect("its end");
    let doc: Value = serde_saphyr::from_str(&block[start..end]).expect("rules are YAML");
    doc["rules"].clone()
}

#[test]
#[ignore = "needs helm (scripts/tools builds it)"]
fn the_chart_ships_the_environment_crd_and_exactly_the_rules_it_needs() {
    // The CRD under crds/ (rendered only with --include-crds, as Helm
    // installs it), the very file converge embeds.
    let with_crds = objects(&template("converge", "converge", &["--include-crds"]));
    let crd = one(&with_crds, "CustomResourceDefinition");
    assert_eq!(crd["metadata"]["name"], "environments.converge.dev");
    let shipped: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart().join("crds/environments.yaml")).expect("the CRD"),
    )
    .expect("YAML");
    assert_eq!(crd, &shipped);
    let columns: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter(|c| c["priority"].is_null())
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        ["Type", "Pool", "Versions", "Ready", "Reason", "Age"]
    );
    assert_eq!(
        crd["spec"]["names"]["shortNames"],
        serde_json::json!(["cenv"])
    );

    // The Role: exactly the README's rules, in the inventory namespace,
    // bound to the chart's ServiceAccount; nothing on CRDs anywhere.
    let objects = objects(&template("converge", "converge", &[]));
    let role = named(&objects, "Role", "-environments");
    assert_eq!(role["metadata"]["namespace"], "converge");
    assert_eq!(role["rules"], readme_environment_rules());
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": ["converge.dev"], "resources": ["environments"],
             "verbs": ["list", "watch", "create", "patch", "delete"]},
            {"apiGroups": ["converge.dev"], "resources": ["environments/status"],
             "verbs": ["patch"]},
        ])
    );
    let binding = named(&objects, "RoleBinding", "-environments");
    assert_eq!(binding["roleRef"]["name"], "converge-environments");
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "converge", "namespace": "converge"}])
    );
    let rendered = template("converge", "converge", &[]);
    assert!(
        !rendered.contains("customresourcedefinitions"),
        "converge gets no right on CRDs: {rendered}"
    );
    let config: Value = serde_saphyr::from_str(&rendered_config(&objects)).expect("YAML");
    assert_eq!(
        config["target"]["environments"],
        serde_json::json!({"publish": true, "install_crd": false})
    );

    // Off: no Role, and converge publishes nothing.
    let off = self::objects(&template(
        "converge",
        "converge",
        &["--set", "environments.publish=false"],
    ));
    assert!(
        !off.iter().any(|o| o["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("-environments"))),
        "{off:?}"
    );
    let config: Value = serde_saphyr::from_str(&rendered_config(&off)).expect("YAML");
    assert_eq!(config["target"]["environments"]["publish"], false);
}

#[test]
#[ignore = "needs helm (scripts/tools builds it)"]
fn the_service_monitor_is_rendered_only_where_its_api_is_served() {
    let without = objects(&template("converge", "converge", &[]));
    assert!(!kinds(&without).contains(&"ServiceMonitor".to_owned()));
    let values = everything_values();
    let with = objects(&template(
        "converge",
        "converge",
        &[
            "--api-versions",
            "monitoring.coreos.com/v1",
            "--values",
            values.to_str().expect("a UTF-8 path"),
        ],
    ));
    let monitor = one(&with, "ServiceMonitor");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "api");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(
        endpoint["authorization"]["credentials"],
        serde_json::json!({"name": "converge-api-token", "key": "token"})
    );
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
}

#[test]
#[ignore = "needs helm (scripts/tools builds it)"]
fn the_chart_refuses_to_render_without_sources() {
    let chart = chart();
    let out = helm(&[
        "template",
        "converge",
        chart.to_str().expect("a UTF-8 path"),
    ]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out)
            .contains("sources: none are given, so converge would run and reconcile nothing"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[ignore = "needs helm (scripts/tools builds it)"]
fn converge_loads_the_config_the_chart_writes() {
    // The chart ships no identities: converge says so and denies every claim.
    // With the users and pools the values declare, the examples are valid.
    for (extra, valid) in [(&[][..], false), (&EXAMPLE_IDENTITIES[..], true)] {
        let out = validate_examples(&objects(&template("converge", "converge", extra)));
        let said = format!("{}{}", stdout(&out), stderr(&out));
        if valid {
            assert_eq!(out.status.code(), Some(0), "{said}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{said}");
            assert!(said.contains("no users or pools are declared"), "{said}");
            assert!(said.contains("is the user a member of pool"), "{said}");
        }
    }
}

/// The quick start's users and pools, as chart values.
const EXAMPLE_IDENTITIES: [&str; 2] = [
    "--set-json",
    r#"identities={"team1":["john.doe@company.com","ops@company.com"],"team2":["jane.roe@company.com"],"ai":["jane.roe@company.com"],"platform":["ops@company.com"]}"#,
];

/// `converge validate` of the quick start's claims with the config and the
/// identities the chart rendered (written beside each other).
fn validate_examples(objects: &[Value]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("converge.yaml");
    let data = &objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["data"]["identities.yaml"].is_string())
        .expect("the identities in the config ConfigMap")["data"]["identities.yaml"];
    std::fs::write(
        dir.path().join("identities.yaml"),
        data.as_str().expect("text"),
    )
    .expect("write");
    let rendered = rendered_config(objects);
    assert!(
        rendered.contains("identities: /etc/converge/identities.yaml"),
        "{rendered}"
    );
    std::fs::write(
        &config,
        rendered.replace("/etc/converge/identities.yaml", "identities.yaml"),
    )
    .expect("write");
    let claims = repo().join("examples/quickstart/claims");
    crate::support::converge(
        dir.path(),
        &[
            "validate",
            "--config",
            config.to_str().expect("a UTF-8 path"),
            claims.to_str().expect("a UTF-8 path"),
        ],
    )
}

#[test]
#[ignore = "needs helm (scripts/tools builds it)"]
fn with_shards_on_the_config_names_shards_not_leader_election_and_leases_are_listed() {
    let objects = objects(&template(
        "converge",
        "converge",
        &[
            "--set",
            "shards.enabled=true",
            "--set",
            "replicaCount=3",
            EXAMPLE_IDENTITIES[0],
            EXAMPLE_IDENTITIES[1],
        ],
    ));
    let config = rendered_config(&objects);
    let doc: Value = serde_saphyr::from_str(&config).expect("YAML");
    assert_eq!(
        doc["target"]["shards"]["lease_prefix"], "converge-shard-",
        "{config}"
    );
    assert!(doc["target"]["leader_election"].is_null(), "{config}");
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        one(&objects, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );
    let role = objects
        .iter()
        .find(|o| {
            o["kind"] == "Role"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-leader-election"))
        })
        .expect("the Lease Role");
    assert_eq!(
        role["rules"][0]["verbs"],
        serde_json::json!(["get", "list", "create", "update", "delete"])
    );
    let out = validate_examples(&objects);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Writes a `ConfigMap`'s data under `dir` as the kubelet mounts it: the
/// files in a timestamped directory, `..data` a symlink to it, and each key
/// a symlink through `..data`.
fn mount_like_kubelet(config_map: &Value, dir: &Path) {
    let stamp = "..2026_01_01_00_00_00.000000001";
    std::fs::create_dir_all(dir.join(stamp)).expect("mkdir");
    std::os::unix::fs::symlink(stamp, dir.join("..data")).expect("..data");
    for (key, value) in config_map["data"].as_object().expect("data") {
        std::fs::write(dir.join(stamp).join(key), value.as_str().expect("text")).expect("write");
        std::os::unix::fs::symlink(format!("..data/{key}"), dir.join(key)).expect("symlink");
    }
}

#[test]
#[ignore = "needs helm (scripts/tools builds it)"]
fn converge_reads_policies_schema_and_templates_from_the_charts_config_map_mounts() {
    let root = repo();
    let dir = tempfile::tempdir().expect("tempdir");
    let template_file = dir.path().join("owner.yaml.j2");
    std::fs::write(
        &template_file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owner\ndata:\n  owner: \"{{ environment.owner }}\"\n",
    )
    .expect("write template");
    let file = |rel: &str| root.join(rel).display().to_string();
    let set_files = [
        format!(
            "policies.files.default\\.cedar={}",
            file("policies/default.cedar")
        ),
        format!(
            "policies.files.converge\\.cedarschema={}",
            file("policies/converge.cedarschema")
        ),
        format!(
            "policies.files.entities\\.json={}",
            file("policies/entities.json")
        ),
        format!("schema.content={}", file("schemas/claim.v1.json")),
        format!(
            "templates.files.owner\\.yaml\\.j2={}",
            template_file.display()
        ),
    ];
    let mut args = Vec::new();
    for f in &set_files {
        args.extend(["--set-file", f.as_str()]);
    }
    let objects = objects(&template("converge", "converge", &args));

    // The ConfigMaps laid out as the pod sees them, the config pointed there.
    let etc = dir.path().join("etc/converge");
    for name in ["policies", "schema", "templates"] {
        let config_map = objects
            .iter()
            .find(|o| {
                o["kind"] == "ConfigMap" && o["metadata"]["name"] == format!("converge-{name}")
            })
            .unwrap_or_else(|| panic!("the {name} ConfigMap"));
        mount_like_kubelet(config_map, &etc.join(name));
    }
    let config = rendered_config(&objects)
        .replace("/etc/converge/", &format!("{}/", etc.display()))
        .replace(
            "/var/lib/converge",
            &dir.path().join("state").display().to_string(),
        );
    let config_file = dir.path().join("converge.yaml");
    std::fs::write(&config_file, &config).expect("write config");
    let config_file = config_file.to_str().expect("a UTF-8 path");

    let claims = file("examples/quickstart/claims");
    let out = crate::support::converge(dir.path(), &["validate", "--config", config_file, &claims]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("4 of 4 files valid"),
        "{}",
        stdout(&out)
    );

    let claim_file = dir.path().join("dev-mounted.yaml");
    std::fs::write(&claim_file, claim("dev-mounted", "dev")).expect("write claim");
    let claim_file = claim_file.to_str().expect("a UTF-8 path");
    let out =
        crate::support::converge(dir.path(), &["render", "--config", config_file, claim_file]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("owner: john.doe@company.com"),
        "the mounted template rendered: {}",
        stdout(&out)
    );
}

#[test]
#[ignore = "needs helm, kube-apiserver, etcd (scripts/tools builds them)"]
fn the_rendered_chart_applies_to_a_real_api_server() {
    let api = KubeApi::shared();
    let values = everything_values();
    // Releases of their own: the ClusterRole and its binding are named
    // after the release.
    for (release, namespace, extra) in [
        ("converge-chart", "converge-chart", &[][..]),
        (
            "converge-everything",
            "converge-chart-everything",
            &["--values", values.to_str().expect("a UTF-8 path")][..],
        ),
    ] {
        let rendered = template(release, namespace, extra);
        let _ = api.kubectl_ok(&["create", "namespace", namespace]);
        // The everything values' inventory namespace, where its Lease Role goes.
        let _ = api.kubectl(&["create", "namespace", "converge-inventory"]);
        let applied = api.kubectl_with_input_ok(
            &[
                "apply",
                "--server-side",
                "--field-manager=helm-test",
                "-f",
                "-",
            ],
            &rendered,
        );
        let mut expected = vec![
            format!("serviceaccount/{release} serverside-applied"),
            format!("configmap/{release}-config serverside-applied"),
            format!("clusterrole.rbac.authorization.k8s.io/{release} serverside-applied"),
            format!("clusterrolebinding.rbac.authorization.k8s.io/{release} serverside-applied"),
            format!("role.rbac.authorization.k8s.io/{release}-leader-election serverside-applied"),
            format!(
                "rolebinding.rbac.authorization.k8s.io/{release}-leader-election serverside-applied"
            ),
            format!("role.rbac.authorization.k8s.io/{release}-environments serverside-applied"),
            format!(
                "rolebinding.rbac.authorization.k8s.io/{release}-environments serverside-applied"
            ),
            format!("deployment.apps/{release} serverside-applied"),
            format!("service/{release} serverside-applied"),
            format!("poddisruptionbudget.policy/{release} serverside-applied"),
            format!("networkpolicy.networking.k8s.io/{release} serverside-applied"),
        ];
        if extra.is_empty() {
            // No api.tokenSecret: the generated token.
            expected.push(format!("secret/{release}-api-token serverside-applied"));
        } else {
            for cm in ["policies", "schema", "templates"] {
                expected.push(format!("configmap/{release}-{cm} serverside-applied"));
            }
        }
        let mut lines: Vec<&str> = applied.lines().collect();
        lines.sort_unstable();
        expected.sort();
        assert_eq!(lines, expected, "every object applied, nothing else");
        let deployment: Value = serde_json::from_str(&api.kubectl_ok(&[
            "get",
            "deployment",
            release,
            "-n",
            namespace,
            "-o",
            "json",
        ]))
        .expect("JSON");
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
            true
        );
    }
}

/// The Prometheus operator's `ServiceMonitor` kind, schema left open.
const SERVICE_MONITOR_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names:
    kind: ServiceMonitor
    listKind: ServiceMonitorList
    plural: servicemonitors
    singular: servicemonitor
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
";

/// The generated API token survives an upgrade (the chart looks it up).
fn token_survives_an_upgrade(
    api: &KubeApi,
    chart: &str,
    namespace: &str,
    common: &[&str],
    minimal: &Path,
) {
    let token = || {
        api.kubectl_ok(&[
            "get",
            "secret",
            "converge-helm-api-token",
            "-n",
            namespace,
            "-o",
            "jsonpath={.data.token}",
        ])
    };
    let first = token();
    assert!(first.len() >= 64, "{first}");
    let _ = helm_ok(
        &[
            &[
                "upgrade",
                "converge-helm",
                chart,
                "--values",
                minimal.to_str().expect("a UTF-8 path"),
            ][..],
            common,
        ]
        .concat(),
    );
    assert_eq!(token(), first, "the same token after an upgrade");
}

#[test]
#[ignore = "needs helm, kube-apiserver, etcd (scripts/tools builds them)"]
fn helm_installs_the_chart_and_renders_a_service_monitor_once_its_crd_is_served() {
    let api = KubeApi::shared();
    let kubeconfig = api.kubeconfig();
    let kubeconfig = kubeconfig.to_str().expect("a UTF-8 path");
    let chart = chart();
    let chart = chart.to_str().expect("a UTF-8 path");
    let namespace = "converge-helm";
    let common = ["--kubeconfig", kubeconfig, "--namespace", namespace];
    let minimal = minimal_values();
    let install = helm_ok(
        &[
            &[
                "install",
                "converge-helm",
                chart,
                "--create-namespace",
                "--values",
                minimal.to_str().expect("a UTF-8 path"),
            ][..],
            &common,
        ]
        .concat(),
    );
    assert!(install.contains("STATUS: deployed"), "{install}");
    // The cluster does not serve monitoring.coreos.com/v1: no ServiceMonitor.
    let manifest = helm_ok(&[&["get", "manifest", "converge-helm"][..], &common].concat());
    assert!(!manifest.contains("kind: ServiceMonitor"), "{manifest}");
    let _ = api.kubectl_ok(&["get", "deployment", "converge-helm", "-n", namespace]);
    let _ = api.kubectl_ok(&["get", "clusterrole", "converge-helm"]);
    token_survives_an_upgrade(api, chart, namespace, &common, &minimal);

    // Once the Prometheus operator's CRD is served, an upgrade (every
    // optional part on) renders the ServiceMonitor, and rolls the pod
    // template for the changed config.
    let _ = api.kubectl_with_input_ok(&["apply", "-f", "-"], SERVICE_MONITOR_CRD);
    let _ = api.kubectl(&["create", "namespace", "converge-inventory"]);
    let _ = api.kubectl_ok(&[
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
    ]);
    let before: Value = serde_json::from_str(&api.kubectl_ok(&[
        "get",
        "deployment",
        "converge-helm",
        "-n",
        namespace,
        "-o",
        "json",
    ]))
    .expect("JSON");
    let values = everything_values();
    let upgrade = helm_ok(
        &[
            &[
                "upgrade",
                "converge-helm",
                chart,
                "--values",
                values.to_str().expect("a UTF-8 path"),
            ][..],
            &common,
        ]
        .concat(),
    );
    assert!(upgrade.contains("STATUS: deployed"), "{upgrade}");
    let after: Value = serde_json::from_str(&api.kubectl_ok(&[
        "get",
        "deployment",
        "converge-helm",
        "-n",
        namespace,
        "-o",
        "json",
    ]))
    .expect("JSON");
    let monitor: Value = serde_json::from_str(&api.kubectl_ok(&[
        "get",
        "servicemonitors.monitoring.coreos.com",
        "converge-helm",
        "-n",
        namespace,
        "-o",
        "json",
    ]))
    .expect("JSON");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let checksum =
        |d: &Value| d["spec"]["template"]["metadata"]["annotations"]["checksum/config"].clone();
    assert_ne!(
        checksum(&before),
        checksum(&after),
        "a changed config rolls the pod"
    );

    let _ = helm_ok(&[&["uninstall", "converge-helm"][..], &common].concat());
    assert!(
        !api.kubectl(&["get", "clusterrole", "converge-helm"])
            .status
            .success(),
        "uninstalled"
    );
}

/// One rule taken away: `verb` on `resource` (of `group`).
struct Without {
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
}

impl Without {
    fn new(group: &'static str, resource: &'static str, verb: &'static str) -> Without {
        Without {
            group,
            resource,
            verb,
        }
    }

    /// `resource[.group]`, as kubectl and converge name it.
    fn resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// `rules` less this verb on this resource: the resource moves to a
    /// rule of its own with the other verbs.
    fn from(&self, rules: &Value) -> Value {
        let mut out = Vec::new();
        let mut found = false;
        for rule in rules.as_array().expect("rules") {
            let strings = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .expect("a list")
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            };
            let resources = strings("resources");
            if strings("apiGroups") != [self.group] || !resources.iter().any(|r| r == self.resource)
            {
                out.push(rule.clone());
                continue;
            }
            found = true;
            let rest: Vec<&String> = resources.iter().filter(|r| *r != self.resource).collect();
            if !rest.is_empty() {
                let mut others = rule.clone();
                others["resources"] = serde_json::json!(rest);
                out.push(others);
            }
            let verbs = strings("verbs");
            assert!(
                verbs.iter().any(|v| v == self.verb),
                "{rule} has no {}",
                self.verb
            );
            let verbs: Vec<&String> = verbs.iter().filter(|v| *v != self.verb).collect();
            out.push(serde_json::json!({
                "apiGroups": [self.group], "resources": [self.resource], "verbs": verbs,
            }));
        }
        assert!(found, "no rule for {}", self.resource());
        Value::Array(out)
    }
}

/// What a pass has to do for a rule to be used.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Nothing changes (a pass still reads every inventory).
    Nothing,
    /// `dev-rbac`'s user-service moves to another version: its `ConfigMap`,
    /// `Service` and `Deployment` are updated.
    Version,
    /// A new environment (prod when HA: a `PodDisruptionBudget` too): every
    /// object is created.
    New { prod: bool },
    /// An environment's inventory `ConfigMap` is lost: every object is
    /// looked up before it is written again.
    LostInventory { prod: bool },
    /// An environment's claim is removed: everything is pruned, the
    /// Namespace last.
    Removed { prod: bool },
    /// `dev-rbac`'s auth-service is dropped from its claim: its objects are
    /// pruned.
    DroppedService,
}

/// The quick-start project whose target is `api` as the chart's
/// `ServiceAccount`, and the changes the cases make to it.
struct RbacProject<'a> {
    api: &'a KubeApi,
    p: Project,
    namespace: &'a str,
    version: u32,
    fresh: u32,
    /// The environment `prepare` made for `make` to remove.
    doomed: Option<String>,
}

impl RbacProject<'_> {
    fn dev_rbac(&self, with_auth_service: bool) {
        let mut claim =
            claim("dev-rbac", "dev").replace("v1.2.3", &format!("v1.2.{}", 3 + self.version % 2));
        if with_auth_service {
            claim += "  auth-service: v2.1.0\n";
        }
        self.p.write("claims/dev-rbac.yaml", claim);
    }

    /// A claim of a new environment; its name.
    fn new_environment(&mut self, prod: bool) -> String {
        self.fresh += 1;
        let kind = if prod { "prod" } else { "dev" };
        let name = format!("{kind}-rbac-{}", self.fresh);
        self.p
            .write(&format!("claims/{name}.yaml"), claim(&name, kind));
        name
    }

    fn run(&self) -> Output {
        self.p.run(&["run", "--once"])
    }

    /// A run succeeds, once the Namespace a refused new environment was
    /// given and had taken back (the dry run of what goes in it was
    /// refused) has finished terminating.
    fn converged(&self, what: &str) {
        let mut out = self.run();
        for _ in 0..120 {
            if !stderr(&out).contains("is still being deleted") {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
            out = self.run();
        }
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
    }

    /// With every rule: what the change needs to exist first.
    fn prepare(&mut self, change: Change) {
        match change {
            Change::DroppedService => {
                self.dev_rbac(true);
                self.converged("auth-service back");
            }
            Change::Removed { prod } => {
                self.doomed = Some(self.new_environment(prod));
                self.converged("an environment to remove");
            }
            _ => {}
        }
    }

    fn make(&mut self, change: Change) {
        match change {
            Change::Nothing => {}
            Change::Version => {
                self.version += 1;
                self.dev_rbac(true);
            }
            Change::New { prod } => {
                let _ = self.new_environment(prod);
            }
            Change::LostInventory { prod } => {
                let inventory = if prod {
                    "converge.inventory.prod-team1-payments"
                } else {
                    "converge.inventory.dev-rbac"
                };
                let _ =
                    self.api
                        .kubectl_ok(&["delete", "configmap", inventory, "-n", self.namespace]);
            }
            Change::Removed { .. } => {
                let name = self.doomed.take().expect("prepared");
                self.p.remove(&format!("claims/{name}.yaml"));
            }
            Change::DroppedService => self.dev_rbac(false),
        }
    }
}

/// The `ClusterRole` (or `Role`) with `rules`, applied by the admin.
fn apply_cluster_role(api: &KubeApi, role: &Value, rules: &Value) {
    let mut role = role.clone();
    role["rules"] = rules.clone();
    let _ = api.kubectl_with_input_ok(
        &[
            "apply",
            "--server-side",
            "--field-manager=helm-test",
            "-f",
            "-",
        ],
        &role.to_string(),
    );
}

/// Waits until RBAC answers `can` for `verb` on `resource` as `user` (the
/// authorizer follows role changes through its cache).
fn wait_can(api: &KubeApi, user: &str, verb: &str, resource: &str, can: bool) {
    wait_can_in(api, user, verb, resource, "-A", can);
}

/// [`wait_can`] in `namespace` (`-A`: all namespaces).
fn wait_can_in(api: &KubeApi, user: &str, verb: &str, resource: &str, namespace: &str, can: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let scope: &[&str] = if namespace == "-A" {
        &["-A"]
    } else {
        &["-n", namespace]
    };
    loop {
        let out =
            api.kubectl(&[&["auth", "can-i", verb, resource, "--as", user][..], scope].concat());
        if stdout(&out).trim() == if can { "yes" } else { "no" } {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "can-i {verb} {resource} as {user}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The resources a pass writes for the quick start's environments: group,
/// resource, and whether only HA (prod) environments have one.
const APPLIED: [(&str, &str, bool); 9] = [
    ("", "namespaces", false),
    ("", "resourcequotas", false),
    ("", "limitranges", false),
    ("networking.k8s.io", "networkpolicies", false),
    ("", "configmaps", false),
    ("", "services", false),
    ("apps", "deployments", false),
    ("autoscaling", "horizontalpodautoscalers", false),
    ("policy", "poddisruptionbudgets", true),
];

/// Each case: one verb taken from the `ClusterRole`, a change whose pass
/// needs it, and what converge says. Every verb a pass uses on every kind it
/// writes: `create` and `patch` (server-side apply of a new object is both;
/// the API server's own words say `create`), `get` (ownership, before an
/// object not in the inventory is written), `delete` (prune); `list` of the
/// inventory `ConfigMap`s on every pass; and updates through `patch`.
fn cases() -> Vec<(Without, Change, String)> {
    let mut cases = vec![(
        Without::new("", "configmaps", "list"),
        Change::Nothing,
        "list configmaps".to_owned(),
    )];
    // (A version changes no Namespace, and the inventory's Namespace is
    // only created when missing, never patched: `patch namespaces` is
    // proven needed by a new environment, below.)
    for (group, resource) in [
        ("", "configmaps"),
        ("", "services"),
        ("apps", "deployments"),
    ] {
        let w = Without::new(group, resource, "patch");
        let expected = format!("patch {}", w.resource());
        cases.push((w, Change::Version, expected));
    }
    for (group, resource, prod) in APPLIED {
        for verb in ["create", "patch", "get", "delete"] {
            let w = Without::new(group, resource, verb);
            let (change, expected) = match verb {
                "create" => (
                    Change::New { prod },
                    format!("cannot create resource \"{resource}\""),
                ),
                "patch" => (Change::New { prod }, format!("patch {}", w.resource())),
                "get" => (
                    Change::LostInventory { prod },
                    format!("get {}", w.resource()),
                ),
                _ => (Change::Removed { prod }, format!("delete {}", w.resource())),
            };
            cases.push((w, change, expected));
        }
    }
    for (group, resource) in [
        ("", "services"),
        ("apps", "deployments"),
        ("autoscaling", "horizontalpodautoscalers"),
    ] {
        let w = Without::new(group, resource, "delete");
        let expected = format!("delete {}", w.resource());
        cases.push((w, Change::DroppedService, expected));
    }
    cases
}

#[test]
#[ignore = "needs helm, kube-apiserver, etcd (scripts/tools builds them)"]
#[allow(
    clippy::too_many_lines,
    reason = "one proof: the chart applied, the quick start, then case by case"
)]
fn the_charts_service_account_applies_the_quick_start_and_each_rule_a_pass_uses_is_needed() {
    // A cluster of its own: this test rewrites a ClusterRole and applies the
    // quick start's environments.
    let api = KubeApi::start();
    let namespace = "converge-rbac";
    let rendered = template("converge", namespace, &[]);
    let _ = api.kubectl_ok(&["create", "namespace", namespace]);
    let _ = api.kubectl_with_input_ok(
        &[
            "apply",
            "--server-side",
            "--field-manager=helm-test",
            "-f",
            "-",
        ],
        &rendered,
    );
    let objects = objects(&rendered);
    let role = one(&objects, "ClusterRole").clone();
    let rules = role["rules"].clone();
    let sa = one(&objects, "ServiceAccount")["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let user = format!("system:serviceaccount:{namespace}:{sa}");
    let token = api.service_account_token(namespace, &sa);

    // The quick start (and dev-rbac, the cases' own), as the chart's
    // ServiceAccount, out of cluster: every environment applied.
    let p = Project::new("");
    let kubeconfig = p.path("kubeconfig");
    api.write_kubeconfig(&kubeconfig, Some("chart"), &token);
    let quickstart = repo().join("examples/quickstart");
    let config = std::fs::read_to_string(quickstart.join("converge.yaml"))
        .expect("quick start config")
        .replace(
            "target:\n  kind: manifests\n  path: out\n",
            &format!(
                "target:\n  kind: kubernetes\n  kubeconfig: {}\n  inventory_namespace: {namespace}\n",
                kubeconfig.display()
            ),
        );
    assert!(config.contains("kind: kubernetes"), "{config}");
    p.write("converge.yaml", config);
    let mut names = vec!["dev-rbac".to_owned()];
    for entry in std::fs::read_dir(quickstart.join("claims")).expect("claims") {
        let entry = entry.expect("entry");
        p.write(
            &format!("claims/{}", entry.file_name().to_string_lossy()),
            std::fs::read(entry.path()).expect("read"),
        );
        names.push(file_stem(&entry.path()));
    }
    let mut project = RbacProject {
        api: &api,
        p,
        namespace,
        version: 0,
        fresh: 0,
        doomed: None,
    };
    project.dev_rbac(true);
    let started = Instant::now();
    project.converged("the quick start as the chart's ServiceAccount");
    eprintln!(
        "rbac: the quick start applied as {user} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for name in &names {
        let ns: Value =
            serde_json::from_str(&api.kubectl_ok(&["get", "namespace", name, "-o", "json"]))
                .expect("JSON");
        assert_eq!(
            ns["metadata"]["labels"]["converge.dev/environment"],
            name.as_str()
        );
        let _ = api.kubectl_ok(&[
            "get",
            "configmap",
            &format!("converge.inventory.{name}"),
            "-n",
            namespace,
        ]);
    }

    let cases = cases();
    let started = Instant::now();
    let mut proven = Vec::new();
    for (without, change, expected) in cases {
        let what = format!("{} {}", without.verb, without.resource());
        project.prepare(change);
        apply_cluster_role(&api, &role, &without.from(&rules));
        wait_can(&api, &user, without.verb, &without.resource(), false);
        project.make(change);
        let out = project.run();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "without {what}: {err}");
        assert!(
            err.contains("forbidden") && err.contains(&expected),
            "without {what}: expected {expected:?} in: {err}"
        );
        apply_cluster_role(&api, &role, &rules);
        wait_can(&api, &user, without.verb, &without.resource(), true);
        project.converged(&format!("{what} given back"));
        proven.push(what);
    }
    eprintln!(
        "rbac: each needed ({} cases in {:.1} s): {}",
        proven.len(),
        started.elapsed().as_secs_f64(),
        proven.join(", ")
    );

    daemon_as_the_charts_service_account(&project, &api);
    let environments_role = named(&objects, "Role", "-environments").clone();
    environments_as_the_charts_service_account(&project, &environments_role, &user);
    let lease_role = named(&objects, "Role", "-leader-election").clone();
    leader_election_as_the_charts_service_account(&mut project, &lease_role, &user);
}

/// With `leader_election`, a pass as the chart's `ServiceAccount` takes the
/// Lease in the inventory namespace (the Role); without `get`, `create` or
/// `update` on leases it cannot lead: the refusal is logged and nothing is
/// applied (exit 2).
fn leader_election_as_the_charts_service_account(
    project: &mut RbacProject<'_>,
    role: &Value,
    user: &str,
) {
    let api = project.api;
    let namespace = project.namespace;
    let inventory = format!("  inventory_namespace: {namespace}\n");
    let config = std::fs::read_to_string(project.p.path("converge.yaml")).expect("config");
    assert!(config.contains(&inventory), "{config}");
    project.p.write(
        "converge.yaml",
        config.replace(
            &inventory,
            &format!(
                "{inventory}  leader_election:\n    lease_duration: 3s\n    renew_deadline: 2s\n    retry_period: 1s\n"
            ),
        ),
    );
    project.make(Change::Version);
    project.converged("with leader election");
    let lease: Value = serde_json::from_str(
        &api.kubectl_ok(&["get", "lease", "converge", "-n", namespace, "-o", "json"]),
    )
    .expect("JSON");
    // It led, then released the Lease on its clean exit (no holder, 1 s):
    // only a holder releases.
    assert_eq!(lease["spec"]["holderIdentity"], "", "{lease}");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 1, "{lease}");
    assert!(lease["spec"]["renewTime"].is_string(), "{lease}");
    let rules = role["rules"].clone();
    let mut proven = Vec::new();
    for verb in ["get", "create", "update"] {
        let without = Without::new("coordination.k8s.io", "leases", verb);
        if verb == "create" {
            let _ = api.kubectl_ok(&["delete", "lease", "converge", "-n", namespace]);
        }
        apply_cluster_role(api, role, &without.from(&rules));
        wait_can_in(api, user, verb, &without.resource(), namespace, false);
        project.make(Change::Version);
        let out = project.run();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "without {verb} leases: {err}");
        assert!(
            err.contains("cannot renew the lease")
                && err.contains(&format!("cannot {verb} resource \"leases\"")),
            "without {verb} leases: {err}"
        );
        apply_cluster_role(api, role, &rules);
        wait_can_in(api, user, verb, &without.resource(), namespace, true);
        project.converged(&format!("{verb} leases given back"));
        proven.push(format!("{verb} leases"));
    }
    eprintln!("rbac: leader election: each needed: {}", proven.join(", "));
}

/// The daemon as the chart's `ServiceAccount`: its watches (`list`, `watch`)
/// follow a rollout to `Ready` and notice a deleted object, which it applies
/// again, and it records Kubernetes Events. (A watch refused by RBAC is
/// retried and logged at debug level, not shown as a condition, so the
/// cases above cannot prove `list`/`watch` rules needed one by one.)
fn daemon_as_the_charts_service_account(project: &RbacProject<'_>, api: &KubeApi) {
    let d = Daemon::start(project.p.dir.path());
    let status = |d: &Daemon| match d.get("/api/v1/environments/dev-rbac") {
        (200, body) => serde_json::from_str::<Value>(&body).expect("JSON")["status"].clone(),
        _ => Value::Null,
    };
    d.wait_for("dev-rbac rolling out", |d| status(d) == "Reconciling");
    // The last cases dropped auth-service: user-service is dev-rbac's one.
    api.roll_out("dev-rbac", "user-service");
    d.wait_for("dev-rbac ready", |d| status(d) == "Ready");
    let _ = api.kubectl_ok(&["delete", "configmap", "converge-claim", "-n", "dev-rbac"]);
    d.wait_for("the deleted ConfigMap applied again", |_| {
        api.kubectl(&["get", "configmap", "converge-claim", "-n", "dev-rbac"])
            .status
            .success()
    });
    d.wait_for("Kubernetes Events recorded", |_| {
        let events: Value = serde_json::from_str(&api.kubectl_ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            "dev-rbac",
            "-o",
            "json",
        ]))
        .expect("JSON");
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reportingController"] == "converge" && e["reason"] == "DriftCorrected")
    });
    assert_eq!(d.terminate(), Some(0), "{}", "the daemon stops cleanly");
}

/// Waits until RBAC answers `can` for `patch` on Environments' status.
fn wait_can_patch_status(api: &KubeApi, user: &str, namespace: &str, can: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = api.kubectl(&[
            "auth",
            "can-i",
            "patch",
            "environments.converge.dev",
            "--subresource=status",
            "--as",
            user,
            "-n",
            namespace,
        ]);
        if stdout(&out).trim() == if can { "yes" } else { "no" } {
            return;
        }
        assert!(Instant::now() < deadline, "can-i patch environments/status");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The daemon as the chart's `ServiceAccount`, with the CRD the chart ships
/// (applied by the admin, as `helm install` does): it cannot install the CRD
/// itself (the chart grants nothing on `CustomResourceDefinitions`), says so,
/// and publishes every environment's `Environment` with the chart's Role;
/// without any one of its write rules, the write is `forbidden` (logged,
/// the environment applied all the same) until the rule is back. (`list` and
/// `watch` serve the watch that puts back edits, which RBAC refuses
/// silently: retried at debug level, so they are not proven one by one.)
#[allow(
    clippy::too_many_lines,
    reason = "one daemon, published, then rule by rule"
)]
fn environments_as_the_charts_service_account(project: &RbacProject<'_>, role: &Value, user: &str) {
    let api = project.api;
    let namespace = project.namespace;
    let crd = chart().join("crds/environments.yaml");
    let _ = api.kubectl_ok(&[
        "apply",
        "--server-side",
        "--field-manager=helm-test",
        "-f",
        crd.to_str().expect("a UTF-8 path"),
    ]);
    let _ = api.kubectl_ok(&[
        "wait",
        "--for=condition=established",
        "--timeout=60s",
        "crd/environments.converge.dev",
    ]);
    let published = |name: &str| {
        let out = api.kubectl(&[
            "get",
            "environment",
            name,
            "-n",
            namespace,
            "-o",
            "jsonpath={.status.state}",
        ]);
        out.status.success() && !stdout(&out).trim().is_empty()
    };
    let d = Daemon::start(project.p.dir.path());
    d.wait_for("dev-rbac published as the chart's ServiceAccount", |_| {
        published("dev-rbac")
    });
    assert!(
        d.log()
            .contains("cannot install the Environment CRD (forbidden)"),
        "{}",
        d.log()
    );

    let rules = role["rules"].clone();
    let refused = |d: &Daemon, name: &str, expected: &str| {
        d.log()
            .lines()
            .any(|l| l.contains(name) && l.contains("forbidden") && l.contains(expected))
    };
    let mut proven = Vec::new();
    for (i, (verb, resource, expected)) in [
        (
            "create",
            "environments",
            "cannot create resource \"environments\"",
        ),
        (
            "patch",
            "environments",
            "cannot patch resource \"environments\"",
        ),
        (
            "patch",
            "environments/status",
            "cannot patch resource \"environments/status\"",
        ),
        (
            "delete",
            "environments",
            "cannot delete resource \"environments\"",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let without = Without::new("converge.dev", resource, verb);
        let name = format!("dev-cenv-rbac-{i}");
        if verb == "delete" {
            project
                .p
                .write(&format!("claims/{name}.yaml"), claim(&name, "dev"));
            d.wait_for("published before its removal", |_| published(&name));
        }
        // A rule left with no verb goes.
        let reduced: Vec<Value> = without
            .from(&rules)
            .as_array()
            .expect("rules")
            .iter()
            .filter(|r| r["verbs"].as_array().is_some_and(|v| !v.is_empty()))
            .cloned()
            .collect();
        apply_cluster_role(api, role, &Value::Array(reduced));
        if resource == "environments/status" {
            wait_can_patch_status(api, user, namespace, false);
        } else {
            wait_can_in(api, user, verb, &without.resource(), namespace, false);
        }
        if verb == "delete" {
            project.p.remove(&format!("claims/{name}.yaml"));
        } else {
            project
                .p
                .write(&format!("claims/{name}.yaml"), claim(&name, "dev"));
        }
        d.wait_for(&format!("without {verb} {resource}: refused"), |d| {
            refused(d, &name, expected)
        });
        apply_cluster_role(api, role, &rules);
        if resource == "environments/status" {
            wait_can_patch_status(api, user, namespace, true);
        } else {
            wait_can_in(api, user, verb, &without.resource(), namespace, true);
        }
        d.wait_for(&format!("{verb} {resource} given back: written"), |_| {
            published(&name) != (verb == "delete")
        });
        proven.push(format!("{verb} {resource}"));
    }
    eprintln!("rbac: Environments: each needed: {}", proven.join(", "));
    assert_eq!(d.terminate(), Some(0), "the daemon stops cleanly");
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .expect("stem")
        .to_string_lossy()
        .into_owned()
}
