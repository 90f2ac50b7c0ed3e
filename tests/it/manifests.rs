//! Service-owned manifests (issue 23) through the binary, against the real
//! CNCF distribution registry: artifacts pushed in the layout `flux push
//! artifact` writes (the `flux` CLI is not in the tools cache yet; the test
//! pushes the same manifest, config and layer media types by HTTP), their
//! layers made by the system's GNU `tar`. Rendered to the manifests target.

use std::path::Path;
use std::process::Command;

use crate::support::registry::{Auth, Registry};
use crate::support::{Project, claim, repo, stderr, stdout};
use crate::tags::claim_with;

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: billing\n  labels:\n    team: payments\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: billing\n  template:\n    metadata:\n      labels:\n        app: billing\n    spec:\n      containers:\n      - name: billing\n        image: placeholder\n        ports:\n        - containerPort: 8080\n        env:\n        - name: ENVIRONMENT\n          value: ${environment}\n        - name: LOG_LEVEL\n          value: ${log_level:=info}\n        - name: REPOSITORY\n          value: ${git_repository:=none}\n";
const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: billing\nspec:\n  selector:\n    app: billing\n  ports:\n  - port: 80\n    targetPort: 8080\n";

/// A `.tar.gz` of `files` made by GNU tar; `prepare` may add entries to
/// the directory first; `args` are extra tar arguments (paths to add).
fn targz(files: &[(&str, &str)], prepare: impl FnOnce(&Path), args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    for (path, text) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    std::fs::create_dir_all(&root).expect("root");
    prepare(&root);
    let out = dir.path().join("a.tar.gz");
    let mut cmd = Command::new("tar");
    cmd.arg("-czPf").arg(&out).arg("-C").arg(&root);
    if args.is_empty() {
        cmd.arg(".");
    } else {
        cmd.args(args);
    }
    let status = cmd.status().expect("tar");
    assert!(status.success());
    std::fs::read(out).expect("read archive")
}

fn good(extra: &str) -> Vec<u8> {
    let deployment = DEPLOYMENT.replace("  replicas: 2\n", &format!("  replicas: 2{extra}\n"));
    targz(
        &[
            ("deploy/deployment.yaml", &deployment),
            ("deploy/service.yaml", SERVICE),
        ],
        |_| {},
        &[],
    )
}

fn project(r: &Registry, extra: &str) -> Project {
    Project::new(&format!(
        "state_dir: .converge\nversions:\n  plain_http: true\n  timeout: 3s\nservices:\n  billing:\n    manifests:\n      oci: {}/oci-releases/{{service}}-manifests\n{extra}",
        r.host()
    ))
}

/// `converge run --once` with the info log, which names each fetch.
fn run(p: &Project) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["run", "--once"])
        .current_dir(p.dir.path())
        .env("CONVERGE_LOG", "converge=info")
        .env("NO_COLOR", "1")
        .output()
        .expect("converge runs")
}

fn fetched(out: &std::process::Output) -> usize {
    stderr(out).matches("service manifests fetched").count()
}

fn read(p: &Project, rel: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(p.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_saphyr::from_str(&text).expect("YAML")
}

/// Every file under `out/`, with its bytes.
fn snapshot(p: &Project) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for env in p.environments() {
        let dir = p.path(&format!("out/{env}"));
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            out.push((
                format!("{env}/{}", e.file_name().to_string_lossy()),
                std::fs::read(e.path()).expect("read"),
            ));
        }
    }
    out.sort();
    out
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn an_oci_artifact_is_fetched_once_for_many_environments_and_not_again_after_a_restart() {
    let mut r = Registry::start(Auth::None);
    let layer = r.push_flux_artifact("oci-releases/billing-manifests", "1.0.0", &good(""));
    let p = project(&r, "");
    for env in ["dev-a", "dev-b", "dev-c"] {
        p.write(
            &format!("claims/{env}.yaml"),
            claim_with(
                env,
                "dev",
                &[("billing", "1.0.0"), ("user-service", "1.2.3")],
            ),
        );
    }
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fetched(&out),
        1,
        "one fetch for three environments: {}{}",
        stdout(&out),
        stderr(&out)
    );
    for env in ["dev-a", "dev-b", "dev-c"] {
        let d = read(&p, &format!("out/{env}/deployment-billing.yaml"));
        assert_eq!(d["metadata"]["namespace"], env);
        assert_eq!(
            d["metadata"]["labels"]["team"], "payments",
            "the service's own"
        );
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "converge"
        );
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["image"], "artifactory/docker-releases/billing:1.0.0",
            "the resolved image"
        );
        assert_eq!(
            c["ports"][0]["containerPort"], 8080,
            "the service's own port"
        );
        assert_eq!(c["env"][0]["value"], env);
        assert_eq!(c["env"][1]["value"], "info");
        assert!(p.path(&format!("out/{env}/service-billing.yaml")).exists());
        assert!(
            !p.path(&format!("out/{env}/horizontalpodautoscaler-billing.yaml"))
                .exists(),
            "no built-in objects for a service with its own manifests"
        );
        assert!(
            p.path(&format!("out/{env}/deployment-user-service.yaml"))
                .exists(),
            "a service without manifests keeps the built-in ones"
        );
    }
    let blob = p.path(&format!(
        ".converge/artifacts/blobs/sha256/{}",
        layer.trim_start_matches("sha256:")
    ));
    assert!(blob.exists(), "cached by digest");
    // A restart, the registry gone: the cache holds the artifact.
    r.stop();
    let before = snapshot(&p);
    p.write(
        "claims/dev-d.yaml",
        claim_with("dev-d", "dev", &[("billing", "1.0.0")]),
    );
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fetched(&out), 0, "{}", stderr(&out));
    assert!(p.path("out/dev-d/deployment-billing.yaml").exists());
    let after: Vec<_> = snapshot(&p)
        .into_iter()
        .filter(|(f, _)| !f.starts_with("dev-d/"))
        .collect();
    assert_eq!(before, after);
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn a_new_version_is_fetched_once_and_only_its_environments_change() {
    let r = Registry::start(Auth::None);
    r.push_flux_artifact("oci-releases/billing-manifests", "1.0.0", &good(""));
    r.push_flux_artifact(
        "oci-releases/billing-manifests",
        "1.1.0",
        &good("\n  minReadySeconds: 5"),
    );
    let p = project(&r, "");
    for env in ["dev-a", "dev-b", "dev-c"] {
        p.write(
            &format!("claims/{env}.yaml"),
            claim_with(env, "dev", &[("billing", "1.0.0")]),
        );
    }
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = snapshot(&p);
    for env in ["dev-b", "dev-c"] {
        p.write(
            &format!("claims/{env}.yaml"),
            claim_with(env, "dev", &[("billing", "1.1.0")]),
        );
    }
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fetched(&out), 1, "{}", stderr(&out));
    for env in ["dev-b", "dev-c"] {
        let d = read(&p, &format!("out/{env}/deployment-billing.yaml"));
        assert_eq!(d["spec"]["minReadySeconds"], 5);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "artifactory/docker-releases/billing:1.1.0"
        );
    }
    let a = |s: &[(String, Vec<u8>)]| -> Vec<(String, Vec<u8>)> {
        s.iter()
            .filter(|(f, _)| f.starts_with("dev-a/"))
            .cloned()
            .collect()
    };
    assert_eq!(a(&before), a(&snapshot(&p)), "dev-a is as it was");
}

/// The environment at 1.0.0, then asked for `version`: kept exactly as it
/// is, with `expect` in what `run --once` says.
fn refused_version(r: &Registry, p: &Project, version: &str, expect: &[&str]) {
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", "1.0.0")]),
    );
    let out = run(p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = snapshot(p);
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", version)]),
    );
    let out = run(p);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    for e in expect {
        assert!(text.contains(e), "{version}: {e:?} in {text}");
    }
    assert_eq!(
        before,
        snapshot(p),
        "{version}: the environment is left as it is"
    );
    let _ = r;
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn hostile_artifacts_are_refused_and_the_environment_left_as_it_is() {
    let r = Registry::start(Auth::None);
    let repo_name = "oci-releases/billing-manifests";
    r.push_flux_artifact(repo_name, "1.0.0", &good(""));
    let outside = tempfile::tempdir().expect("tempdir");
    let abs = outside.path().join("evil.yaml");
    std::fs::write(&abs, SERVICE).expect("write");
    let dotdot = targz(
        &[("deploy/service.yaml", SERVICE)],
        |root| {
            std::fs::write(root.parent().expect("parent").join("evil.yaml"), SERVICE).expect("w");
        },
        &["deploy/service.yaml", "../evil.yaml"],
    );
    let absolute = targz(
        &[("deploy/service.yaml", SERVICE)],
        |_| {},
        &["deploy/service.yaml", abs.to_str().expect("utf-8")],
    );
    let symlink = targz(
        &[("deploy/service.yaml", SERVICE)],
        |root| {
            std::os::unix::fs::symlink("/etc/passwd", root.join("deploy/passwd.yaml")).expect("ln");
        },
        &[],
    );
    let hardlink = targz(
        &[("deploy/service.yaml", SERVICE)],
        |root| {
            std::fs::hard_link(
                root.join("deploy/service.yaml"),
                root.join("deploy/again.yaml"),
            )
            .expect("ln");
        },
        &[],
    );
    let bomb = targz(
        &[],
        |root| {
            let f = std::fs::File::create(root.join("big.yaml")).expect("create");
            f.set_len(64 * 1024 * 1024).expect("sparse zeros");
        },
        &[],
    );
    assert!(bomb.len() < 1024 * 1024, "a bomb: {} bytes", bomb.len());
    let yaml_bomb = targz(
        &[(
            "deploy/bomb.yaml",
            "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n",
        )],
        |_| {},
        &[],
    );
    let cases: [(&str, Vec<u8>, &[&str]); 6] = [
        (
            "2.0.0-dotdot",
            dotdot,
            &["../evil.yaml", "paths with .. are refused"],
        ),
        ("2.0.0-absolute", absolute, &["absolute paths are refused"]),
        ("2.0.0-symlink", symlink, &["symbolic links are refused"]),
        ("2.0.0-hardlink", hardlink, &["hard links are refused"]),
        ("2.0.0-bomb", bomb, &["decompresses to more than"]),
        (
            "2.0.0-yamlbomb",
            yaml_bomb,
            &["deploy/bomb.yaml", "not YAML"],
        ),
    ];
    let p = project(&r, "");
    for (version, layer, expect) in cases {
        r.push_flux_artifact(repo_name, version, &layer);
        let mut expect = expect.to_vec();
        expect.extend(["billing", version]);
        refused_version(&r, &p, version, &expect);
    }
    assert!(!outside.path().join("root").exists());
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn fenced_objects_refuse_the_environment_naming_service_version_file_object_and_rule() {
    let r = Registry::start(Auth::None);
    let repo_name = "oci-releases/billing-manifests";
    r.push_flux_artifact(repo_name, "1.0.0", &good(""));
    // (version, extra object, its name, the rule: `fence` outside policy,
    // `policy` for what no Cedar policy permits the service to emit)
    let fenced = [
        (
            "3.0.0-namespace",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: billing\n",
            "Namespace/billing",
            "rule fence",
        ),
        (
            "3.0.0-crb",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: pwn\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects: []\n",
            "ClusterRoleBinding/pwn",
            "rule fence",
        ),
        (
            "3.0.0-rb",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: pwn\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects: []\n",
            "RoleBinding/pwn",
            "rule fence",
        ),
        (
            "3.0.0-ns",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  namespace: kube-system\n",
            "ConfigMap/cm",
            "rule fence",
        ),
        (
            "3.0.0-secret",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n",
            "Secret/s",
            "rule policy",
        ),
        (
            "3.0.0-custom",
            "apiVersion: evil.example/v1\nkind: Deployment\nmetadata:\n  name: d\n",
            "Deployment/d",
            "rule policy",
        ),
    ];
    let p = project(&r, "");
    for (version, extra, object, rule) in fenced {
        let layer = targz(
            &[
                ("deploy/deployment.yaml", DEPLOYMENT),
                ("deploy/extra.yaml", extra),
            ],
            |_| {},
            &[],
        );
        r.push_flux_artifact(repo_name, version, &layer);
        refused_version(
            &r,
            &p,
            version,
            &["billing", version, "deploy/extra.yaml", object, rule],
        );
    }
}

/// The policy fence is Cedar's: a platform's own policies narrow what a
/// service may emit per environment type (no Ingress in prod) and widen it
/// (a Secret in dev); what the artifact's annotations say reaches the
/// context. A refused environment is left exactly as it is, the others go on.
#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn what_a_service_may_emit_is_a_cedar_action_per_kind_and_environment_type() {
    let r = Registry::start(Auth::None);
    let repo_name = "oci-releases/billing-manifests";
    r.push_flux_artifact(repo_name, "1.0.0", &good(""));
    let ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: billing\nspec:\n  rules:\n  - host: ${environment}.example.com\n";
    let secret =
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: billing-extra\nstringData:\n  k: v\n";
    let layer = targz(
        &[
            ("deploy/deployment.yaml", DEPLOYMENT),
            ("deploy/ingress.yaml", ingress),
            ("deploy/secret.yaml", secret),
        ],
        |_| {},
        &[],
    );
    r.push_flux_artifact(repo_name, "2.0.0", &layer);
    let p = project(&r, "policies: policies\n");
    for f in ["default.cedar", "converge.cedarschema", "entities.json"] {
        std::fs::create_dir_all(p.path("policies")).expect("mkdir");
        std::fs::copy(repo().join("policies").join(f), p.path("policies").join(f))
            .expect("copy policies");
    }
    p.write(
        "policies/services.cedar",
        "@id(\"no-ingress-in-prod\")\n\
         forbid (principal, action == Converge::Action::\"emit\", resource)\n\
         when { resource.type == \"prod\" && context.group_kind == \"Ingress.networking.k8s.io\" };\n\
         @id(\"billing-may-keep-a-secret-in-dev\")\n\
         permit (principal == Converge::Service::\"billing\", action == Converge::Action::\"emit\", resource)\n\
         when { resource.type == \"dev\" && context.group_kind == \"Secret\" && context.artifact.source like \"*/oci-releases/billing-manifests\" };\n",
    );
    let pinned = |env: &str, t: &str, v: &str| {
        p.write(
            &format!("claims/{env}.yaml"),
            claim_with(env, t, &[("billing", v)]),
        );
    };
    // The default policies already refuse a dev Secret: widened here.
    pinned("dev-a", "dev", "1.0.0");
    p.write(
        "claims/prod-a.yaml",
        claim("prod-a", "prod").replace("  user-service: v1.2.3\n", "  billing: 1.0.0\n"),
    );
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let prod_before: Vec<_> = snapshot(&p)
        .into_iter()
        .filter(|(f, _)| f.starts_with("prod-a/"))
        .collect();
    assert!(!prod_before.is_empty());
    pinned("dev-a", "dev", "2.0.0");
    p.write(
        "claims/prod-a.yaml",
        claim("prod-a", "prod").replace("  user-service: v1.2.3\n", "  billing: 2.0.0\n"),
    );
    let out = run(&p);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let ing = read(&p, "out/dev-a/ingress-billing.yaml");
    assert_eq!(ing["spec"]["rules"][0]["host"], "dev-a.example.com");
    assert!(
        p.path("out/dev-a/secret-billing-extra.yaml").exists(),
        "{text}"
    );
    for part in [
        "billing 2.0.0",
        "deploy/ingress.yaml",
        "Ingress/billing",
        "rule policy",
        "denied by policy no-ingress-in-prod",
    ] {
        assert!(text.contains(part), "{part:?} in {text}");
    }
    let prod_after: Vec<_> = snapshot(&p)
        .into_iter()
        .filter(|(f, _)| f.starts_with("prod-a/"))
        .collect();
    assert_eq!(prod_before, prod_after, "prod-a is left exactly as it is");
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn an_undefined_variable_refuses_the_environment_naming_it() {
    let r = Registry::start(Auth::None);
    let repo_name = "oci-releases/billing-manifests";
    r.push_flux_artifact(repo_name, "1.0.0", &good(""));
    let layer = targz(
        &[(
            "deploy/deployment.yaml",
            &DEPLOYMENT.replace("${log_level:=info}", "${log_level}"),
        )],
        |_| {},
        &[],
    );
    r.push_flux_artifact(repo_name, "4.0.0", &layer);
    let p = project(&r, "");
    refused_version(
        &r,
        &p,
        "4.0.0",
        &[
            "billing",
            "4.0.0",
            "deploy/deployment.yaml",
            "Deployment/billing",
            "\"log_level\"",
            "undefined-variable",
        ],
    );
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn a_claim_value_carrying_a_document_stays_one_scalar() {
    const REPOSITORY: &str = "https://git.example.com/platform/envs.git\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: pwn\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\n";
    let r = Registry::start(Auth::None);
    r.push_flux_artifact("oci-releases/billing-manifests", "1.0.0", &good(""));
    let p = project(&r, "schema: permissive.json\n");
    // The built-in schema refuses the value; without its pattern the
    // substitution must hold on its own.
    let text = std::fs::read_to_string(repo().join("schemas/claim.v1.json")).expect("schema");
    let mut schema: serde_json::Value = serde_json::from_str(&text).expect("schema JSON");
    schema["properties"]["git_repository"]
        .as_object_mut()
        .expect("git_repository")
        .remove("pattern");
    p.write("permissive.json", schema.to_string());
    p.write(
        "claims/prod-a.yaml",
        format!(
            "{}git_repository: {}\n",
            claim("prod-a", "prod").replace("  user-service: v1.2.3\n", "  billing: 1.0.0\n"),
            serde_json::to_string(REPOSITORY).expect("json")
        ),
    );
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(p.path("out/prod-a").exists(), "{}", stderr(&out));
    let d = read(&p, "out/prod-a/deployment-billing.yaml");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["env"][2]["value"], REPOSITORY,
        "one value"
    );
    for (file, _) in snapshot(&p) {
        assert!(!file.contains("clusterrolebinding"), "{file}");
    }
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn a_registry_outage_keeps_every_environment_as_it_is() {
    let mut r = Registry::start(Auth::None);
    let repo_name = "oci-releases/billing-manifests";
    r.push_flux_artifact(repo_name, "1.0.0", &good(""));
    r.push_flux_artifact(repo_name, "1.1.0", &good("\n  minReadySeconds: 5"));
    let p = project(&r, "");
    for env in ["dev-a", "dev-b"] {
        p.write(
            &format!("claims/{env}.yaml"),
            claim_with(env, "dev", &[("billing", "1.0.0")]),
        );
    }
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = snapshot(&p);
    r.stop();
    for env in ["dev-a", "dev-b"] {
        p.write(
            &format!("claims/{env}.yaml"),
            claim_with(env, "dev", &[("billing", "1.1.0")]),
        );
    }
    let out = run(&p);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("manifests unavailable"), "{text}");
    assert_eq!(before, snapshot(&p), "nothing changes, nothing is pruned");
    let status = p.run(&["plan", "--format", "json"]);
    assert!(
        stdout(&status).contains("ManifestsUnavailable"),
        "{}",
        stdout(&status)
    );
    // Back: it recovers by itself.
    r.resume();
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let d = read(&p, "out/dev-a/deployment-billing.yaml");
    assert_eq!(d["spec"]["minReadySeconds"], 5);
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it) and git daemon"]
fn one_service_from_oci_and_one_from_git_at_its_tag_render_into_one_environment() {
    use crate::support::git::{Repo, git, git_daemon};
    let r = Registry::start(Auth::None);
    r.push_flux_artifact("oci-releases/billing-manifests", "1.0.0", &good(""));
    let repo = Repo::new();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: user-service-config\ndata:\n  version: ${version}\n  environment: ${environment}\n";
    repo.commit(
        &[
            ("deploy/config.yaml", Some(cm)),
            ("README.md", Some("not a manifest\n")),
        ],
        "user-service 1.2.3",
        &[],
    );
    git(&repo.work(), &["tag", "1.2.3"]);
    git(&repo.work(), &["push", "-q", "origin", "refs/tags/1.2.3"]);
    repo.commit(
        &[("deploy/config.yaml", Some("kind: broken\n"))],
        "later",
        &[],
    );
    let server = git_daemon(&repo);
    let p = project(
        &r,
        &format!(
            "  user-service:\n    manifests:\n      git: {{ url: \"{}\", path: deploy, ref: \"refs/tags/{{version}}\" }}\n",
            server.url
        ),
    );
    p.write(
        "claims/dev-a.yaml",
        claim_with(
            "dev-a",
            "dev",
            &[("billing", "1.0.0"), ("user-service", "1.2.3")],
        ),
    );
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fetched(&out), 2, "{}", stderr(&out));
    let c = read(&p, "out/dev-a/configmap-user-service-config.yaml");
    assert_eq!(c["data"]["version"], "1.2.3", "the tag, not the branch tip");
    assert_eq!(c["data"]["environment"], "dev-a");
    assert!(p.path("out/dev-a/deployment-billing.yaml").exists());
    assert!(!p.path("out/dev-a/deployment-user-service.yaml").exists());
    drop(server);
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fetched(&out),
        0,
        "the mirror and the cache hold both: {}",
        stderr(&out)
    );
}

#[test]
#[ignore = "needs the distribution registry and a Kubernetes API server (scripts/tools builds them)"]
fn a_service_s_own_manifests_are_applied_to_the_real_api_server() {
    let api = crate::support::kube::KubeApi::shared();
    let r = Registry::start(Auth::None);
    r.push_flux_artifact("oci-releases/billing-manifests", "1.0.0", &good(""));
    let p = Project::new("");
    p.write(
        "converge.yaml",
        format!(
            "sources:\n  - name: local\n    kind: dir\n    path: claims\n\
             target:\n  kind: kubernetes\n  kubeconfig: {}\n  inventory_namespace: converge-manifests\n\
             state_dir: .converge\nversions:\n  plain_http: true\n  timeout: 3s\n\
             services:\n  billing:\n    manifests:\n      oci: {}/oci-releases/{{service}}-manifests\n",
            api.kubeconfig().display(),
            r.host()
        ),
    );
    p.write(
        "claims/dev-svc.yaml",
        claim_with(
            "dev-svc",
            "dev",
            &[("billing", "1.0.0"), ("user-service", "1.2.3")],
        ),
    );
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = api.kubectl_ok(&[
        "get",
        "deployment",
        "billing",
        "-n",
        "dev-svc",
        "-o",
        "json",
    ]);
    let d: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "artifactory/docker-releases/billing:1.0.0");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["env"][0]["value"], "dev-svc");
    assert_eq!(
        d["metadata"]["labels"]["converge.dev/environment"],
        "dev-svc"
    );
    let _ = api.kubectl_ok(&["get", "service", "billing", "-n", "dev-svc"]);
    let _ = api.kubectl_ok(&["get", "deployment", "user-service", "-n", "dev-svc"]);
    let hpa = api.kubectl(&["get", "hpa", "billing", "-n", "dev-svc"]);
    assert!(!hpa.status.success(), "no built-in autoscaler for billing");
    // A second pass changes nothing.
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("applied=0"), "{}", stderr(&out));
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn the_daemon_keeps_an_environment_while_the_registry_is_down_and_recovers_by_itself() {
    use crate::support::daemon::Daemon;
    let mut r = Registry::start(Auth::None);
    r.push_flux_artifact("oci-releases/billing-manifests", "1.0.0", &good(""));
    r.stop();
    let p = project(&r, "");
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", "1.0.0")]),
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("ManifestsUnavailable", |d| {
        d.get("/api/v1/environments/dev-a")
            .1
            .contains("ManifestsUnavailable")
    });
    assert!(!p.path("out/dev-a").exists(), "nothing applied");
    // No claim changes: the daemon tries again by itself.
    r.resume();
    d.wait_for("billing applied", |_| {
        p.path("out/dev-a/deployment-billing.yaml").exists()
    });
    let _ = d.terminate();
}

/// A git server that accepts and never answers holds neither the pass nor
/// the environment: the fetch is abandoned after `versions.timeout` and the
/// environment is `ManifestsUnavailable`, kept as it is.
#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn a_git_server_that_never_answers_is_abandoned_after_the_timeout() {
    let r = Registry::start(Auth::None);
    r.push_flux_artifact("oci-releases/billing-manifests", "1.0.0", &good(""));
    // Bound, never accepted: the kernel completes the handshakes, nobody answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("git://{}/svc.git", silent.local_addr().expect("addr"));
    let p = project(
        &r,
        &format!(
            "  user-service:\n    manifests:\n      git: {{ url: \"{url}\", path: deploy }}\n"
        ),
    );
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", "1.0.0")]),
    );
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before = snapshot(&p);
    p.write(
        "claims/dev-a.yaml",
        claim_with(
            "dev-a",
            "dev",
            &[("billing", "1.0.0"), ("user-service", "1.2.3")],
        ),
    );
    let started = std::time::Instant::now();
    let out = run(&p);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("no answer within 3s"), "{text}");
    assert!(text.contains("manifests unavailable"), "{text}");
    assert_eq!(before, snapshot(&p), "nothing changes, nothing is pruned");
    // Not a timing assertion: a hung fetch would never return at all.
    eprintln!("the pass returned after {:?}", started.elapsed());
    drop(silent);
}

/// `kustomize:` naming the real kustomize v5 of the tools cache.
fn kustomize_config() -> String {
    format!(
        "kustomize:\n  path: {}\n  timeout: 20s\n",
        crate::support::kube::tool("kustomize").display()
    )
}

fn kustomize_builds(out: &std::process::Output) -> usize {
    stderr(out).matches("kustomize built").count()
}

/// An overlay: a base of the service's own files, the overlay's labels and
/// patch on top. Built by the real kustomize once for every environment,
/// substituted per environment after the build, not built again after a
/// restart (the cache holds the output).
#[test]
#[ignore = "needs the distribution registry and kustomize (scripts/tools builds them)"]
fn a_kustomize_overlay_is_built_once_by_the_real_kustomize_and_substituted_per_environment() {
    let r = Registry::start(Auth::None);
    let layer = targz(
        &[
            ("base/deployment.yaml", DEPLOYMENT),
            ("base/service.yaml", SERVICE),
            (
                "base/kustomization.yaml",
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- deployment.yaml\n- service.yaml\n",
            ),
            (
                "kustomization.yaml",
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- base\nlabels:\n- pairs:\n    tier: backend\npatches:\n- path: replicas.yaml\nconfigMapGenerator:\n- name: billing-settings\n  literals:\n  - REGION=${region:=eu-west-1}\n",
            ),
            (
                "replicas.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: billing\nspec:\n  replicas: 3\n",
            ),
            ("README.md", "not a manifest\n"),
        ],
        |_| {},
        &[],
    );
    r.push_flux_artifact("oci-releases/billing-manifests", "1.0.0", &layer);
    let p = project(&r, &kustomize_config());
    for env in ["dev-a", "dev-b"] {
        p.write(
            &format!("claims/{env}.yaml"),
            claim_with(env, "dev", &[("billing", "1.0.0")]),
        );
    }
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(kustomize_builds(&out), 1, "{}", stderr(&out));
    for env in ["dev-a", "dev-b"] {
        let d = read(&p, &format!("out/{env}/deployment-billing.yaml"));
        assert_eq!(d["spec"]["replicas"], 3, "the overlay's patch");
        assert_eq!(d["metadata"]["labels"]["tier"], "backend");
        assert_eq!(d["metadata"]["labels"]["team"], "payments", "the base's");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["env"][0]["value"], env, "substituted after the build");
        assert_eq!(c["image"], "artifactory/docker-releases/billing:1.0.0");
        assert!(p.path(&format!("out/{env}/service-billing.yaml")).exists());
        // The generator's hashed name, its value substituted.
        let cm: Vec<_> = std::fs::read_dir(p.path(&format!("out/{env}")))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.starts_with("configmap-billing-settings-"))
            .collect();
        assert_eq!(cm.len(), 1, "{cm:?}");
        let cm = read(&p, &format!("out/{env}/{}", cm[0]));
        assert_eq!(cm["data"]["REGION"], "eu-west-1");
    }
    p.write(
        "claims/dev-c.yaml",
        claim_with("dev-c", "dev", &[("billing", "1.0.0")]),
    );
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(kustomize_builds(&out), 0, "cached: {}", stderr(&out));
    assert!(p.path("out/dev-c/deployment-billing.yaml").exists());
}

/// A kustomization that reaches outside the artifact (`../` past its root,
/// a remote base) is refused before kustomize runs, naming the file and
/// the rule; without kustomize at all, such a service is a clear error; a
/// kustomize that hangs is killed at the timeout. Each time the environment
/// is left exactly as it is.
#[test]
#[ignore = "needs the distribution registry and kustomize (scripts/tools builds them)"]
fn a_kustomization_reaching_outside_a_missing_or_hanging_kustomize_leave_the_environment_as_it_is()
{
    let r = Registry::start(Auth::None);
    let repo_name = "oci-releases/billing-manifests";
    r.push_flux_artifact(repo_name, "1.0.0", &good(""));
    let kustomization = |k: &str| {
        targz(
            &[
                ("deploy/deployment.yaml", DEPLOYMENT),
                ("deploy/kustomization.yaml", k),
            ],
            |_| {},
            &[],
        )
    };
    let cases = [
        (
            "5.0.0-outside",
            "resources:\n- deployment.yaml\n- ../../../etc/kubernetes\n",
            "reaches outside the artifact",
        ),
        (
            "5.0.0-remote",
            "resources:\n- deployment.yaml\n- https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.0.0\n",
            "remote base",
        ),
    ];
    let p = project(&r, &kustomize_config());
    for (version, k, why) in cases {
        r.push_flux_artifact(repo_name, version, &kustomization(k));
        refused_version(
            &r,
            &p,
            version,
            &[
                "billing",
                version,
                "deploy/kustomization.yaml",
                "rule kustomize",
                why,
            ],
        );
    }
    // No kustomize where the config says: a clear error, never a skip.
    r.push_flux_artifact(
        repo_name,
        "5.0.0-ok",
        &kustomization("resources:\n- deployment.yaml\n"),
    );
    let missing = project(&r, "kustomize:\n  path: ./no-such-kustomize\n");
    refused_version(
        &r,
        &missing,
        "5.0.0-ok",
        &[
            "billing",
            "5.0.0-ok",
            "rule kustomize",
            "cannot run kustomize",
            "no-such-kustomize",
        ],
    );
    // A kustomize that never finishes: killed at the timeout.
    let hanging = project(
        &r,
        "kustomize:\n  path: ./hanging-kustomize\n  timeout: 2s\n",
    );
    hanging.write("hanging-kustomize", "#!/bin/sh\nsleep 600\n");
    let script = hanging.path("hanging-kustomize");
    let mut perms = std::fs::metadata(&script).expect("script").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).expect("chmod");
    refused_version(
        &r,
        &hanging,
        "5.0.0-ok",
        &[
            "billing",
            "5.0.0-ok",
            "rule kustomize",
            "did not finish within 2s (killed)",
        ],
    );
    // The real one builds it.
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", "5.0.0-ok")]),
    );
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(kustomize_builds(&out), 1, "{}", stderr(&out));
    assert!(p.path("out/dev-a/deployment-billing.yaml").exists());
}

/// A claim's `ansible_artifact` names the manifests artifact itself (a
/// digest of the service's own repository): allowed by the default
/// policies in dev, refused in prod, where the environment is left exactly
/// as it is with a diagnostic at the claim's field naming the policy.
#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn a_claim_pinning_a_digest_is_allowed_for_dev_and_refused_for_prod() {
    let r = Registry::start(Auth::None);
    let repo_name = "oci-releases/billing-manifests";
    r.push_flux_artifact(repo_name, "1.0.0", &good(""));
    let (_, hotfix) =
        r.push_flux_artifact_digests(repo_name, "1.0.1-hotfix", &good("\n  minReadySeconds: 9"));
    let p = project(&r, "");
    let pinned = |env: &str, t: &str, artifact: Option<&str>| {
        let method = if t == "prod" { "git" } else { "dynamic" };
        let mut text = format!(
            "user: john.doe@company.com\nenvironment_pool: team1\ncreation_date: \"2024-01-15T10:30:00Z\"\n\
             environment_name: {env}\nenvironment_type: {t}\ndeployment_method: {method}\nservices:\n  billing:\n    version: \"1.0.0\"\n"
        );
        if let Some(a) = artifact {
            text = text + "    ansible_artifact: \"" + a + "\"\n";
        }
        p.write(&format!("claims/{env}.yaml"), text);
    };
    pinned("dev-a", "dev", None);
    pinned("prod-a", "prod", None);
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let prod = |p: &Project| -> Vec<(String, Vec<u8>)> {
        snapshot(p)
            .into_iter()
            .filter(|(f, _)| f.starts_with("prod-a/"))
            .collect()
    };
    let prod_before = prod(&p);
    let reference = format!("{}/{repo_name}@{hotfix}", r.host());
    pinned("dev-a", "dev", Some(&reference));
    pinned("prod-a", "prod", Some(&reference));
    let out = run(&p);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let d = read(&p, "out/dev-a/deployment-billing.yaml");
    assert_eq!(
        d["spec"]["minReadySeconds"], 9,
        "dev runs the pinned artifact: {text}"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "artifactory/docker-releases/billing:1.0.0",
        "the image stays the resolved version's"
    );
    for part in [
        "claims/prod-a.yaml",
        "/services/billing/ansible_artifact",
        "rule policy",
        "may not name the manifests artifact of service \"billing\"",
        "no policy permits it",
    ] {
        assert!(text.contains(part), "{part:?} in {text}");
    }
    assert_eq!(prod_before, prod(&p), "prod-a is left exactly as it is");
    // Another repository than the service's: refused, naming the field.
    pinned(
        "dev-a",
        "dev",
        Some("registry.example.com/evil/manifests:1.0.0"),
    );
    let out = run(&p);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("names another artifact than the service's manifests"),
        "{text}"
    );
    assert!(text.contains("rule ansible-artifact"), "{text}");
}

/// Each environment's manifests artifact is visible everywhere: the plan
/// line `billing manifests 1.0.0 -> 1.1.0 (sha256:… -> sha256:…)`, the
/// API's environment detail (reference, digest, source, revision), `converge
/// status ENV`, the status page, and `converge_manifests_fetches_total`.
#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn the_manifests_digest_shows_in_the_plan_the_api_status_the_page_and_metrics() {
    use crate::support::daemon::Daemon;
    let r = Registry::start(Auth::None);
    let repo_name = "oci-releases/billing-manifests";
    let old = r.push_flux_artifact(repo_name, "1.0.0", &good(""));
    let new = r.push_flux_artifact(repo_name, "1.1.0", &good("\n  minReadySeconds: 5"));
    let p = project(&r, "");
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", "1.0.0")]),
    );
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", "1.1.0")]),
    );
    let plan = p.run(&["plan"]);
    let text = stdout(&plan);
    let short = |d: &str| d.trim_start_matches("sha256:")[..12].to_owned();
    let line = format!(
        "billing manifests 1.0.0 -> 1.1.0 (sha256:{} -> sha256:{})",
        short(&old),
        short(&new)
    );
    assert!(text.contains(&line), "{line:?} in {text}");
    let json = p.run(&["plan", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("plan JSON");
    let m = &doc["environments"][0]["manifests"][0];
    assert_eq!(m["from"]["digest"], old.as_str(), "{doc}");
    assert_eq!(m["to"]["digest"], new.as_str());
    let d = Daemon::start(p.dir.path());
    d.wait_for("1.1.0 applied", |d| {
        d.get("/api/v1/environments/dev-a").1.contains(&new)
    });
    let detail = d.json("/api/v1/environments/dev-a");
    let m = &detail["manifests"]["billing"];
    assert_eq!(m["reference"], "1.1.0", "{detail}");
    assert_eq!(m["digest"], new.as_str());
    assert_eq!(m["source"], format!("{}/{repo_name}", r.host()));
    assert_eq!(
        m["revision"], "1.1.0@sha1:0000000000000000000000000000000000000000",
        "the artifact's revision annotation"
    );
    let url = format!("http://{}", d.addr);
    let status = p.run(&["status", "--url", &url, "dev-a"]);
    assert!(
        stdout(&status).contains(&format!("manifests 1.1.0 {new}")),
        "{}",
        stdout(&status)
    );
    let (code, page) = d.get("/environments/dev-a");
    assert_eq!(code, 200);
    assert!(page.contains(&new), "{page}");
    // `plan` fetched 1.1.0 into the state dir's cache: the daemon read it there.
    let (_, metrics) = d.get("/metrics");
    assert!(
        metrics
            .contains("converge_manifests_fetches_total{service=\"billing\",outcome=\"cached\"} 1"),
        "{metrics}"
    );
    let _ = d.terminate();
}

/// `converge validate` fetches (into the cache) and checks every service's
/// manifests for the claims given, as a pass would: a fenced object, an
/// undefined variable and a pin where the policies refuse it each name
/// their file and rule; a good claim passes.
#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn validate_checks_every_service_s_manifests_for_the_claims_given() {
    let r = Registry::start(Auth::None);
    let repo_name = "oci-releases/billing-manifests";
    r.push_flux_artifact(repo_name, "1.0.0", &good(""));
    let fenced = targz(
        &[
            ("deploy/deployment.yaml", DEPLOYMENT),
            (
                "deploy/extra.yaml",
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n",
            ),
        ],
        |_| {},
        &[],
    );
    r.push_flux_artifact(repo_name, "2.0.0", &fenced);
    let undefined = targz(
        &[(
            "deploy/deployment.yaml",
            &DEPLOYMENT.replace("${log_level:=info}", "${log_level}"),
        )],
        |_| {},
        &[],
    );
    r.push_flux_artifact(repo_name, "3.0.0", &undefined);
    let p = project(&r, "");
    p.write(
        "claims/dev-ok.yaml",
        claim_with("dev-ok", "dev", &[("billing", "1.0.0")]),
    );
    p.write(
        "claims/dev-fenced.yaml",
        claim_with("dev-fenced", "dev", &[("billing", "2.0.0")]),
    );
    p.write(
        "claims/dev-undefined.yaml",
        claim_with("dev-undefined", "dev", &[("billing", "3.0.0")]),
    );
    p.write(
        "claims/prod-pinned.yaml",
        "user: john.doe@company.com\nenvironment_pool: team1\ncreation_date: \"2024-01-15T10:30:00Z\"\n\
         environment_name: prod-pinned\nenvironment_type: prod\ndeployment_method: git\nservices:\n  billing:\n    version: \"1.0.0\"\n    ansible_artifact: \"1.0.0\"\n",
    );
    let out = p.run(&["validate", "claims"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    for part in [
        "claims/dev-fenced.yaml",
        "deploy/extra.yaml",
        "Secret/s",
        "rule policy",
        "claims/dev-undefined.yaml",
        "\"log_level\"",
        "undefined-variable",
        "claims/prod-pinned.yaml",
        "/services/billing/ansible_artifact",
        "1 of 4 files valid",
        "manifests: services' own manifests checked for 4 claims",
    ] {
        assert!(text.contains(part), "{part:?} in {text}");
    }
    assert!(!text.contains("claims/dev-ok.yaml"), "{text}");
    assert!(
        p.path(".converge/artifacts/refs").exists() || !p.path(".converge").exists(),
        "fetched into the cache when the state dir exists"
    );
}

/// Environments that use dev tags (`sue` by default) take their artifact
/// from `manifests.oci_dev` at their dev tag, as their images come from
/// `images.dev_registry`; the others from `oci`.
#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn a_sue_environment_takes_its_dev_tag_from_the_dev_repository() {
    let r = Registry::start(Auth::None);
    r.push_flux_artifact("oci-releases/billing-manifests", "1.0.0", &good(""));
    r.push_flux_artifact(
        "oci-snapshots/billing-manifests",
        "1.1.0-dev.1",
        &good("\n  minReadySeconds: 7"),
    );
    let p = Project::new(&format!(
        "state_dir: .converge\nversions:\n  plain_http: true\n  timeout: 3s\n\
         images:\n  registry: artifactory/docker-releases\n  dev_registry: artifactory/docker-snapshots\n\
         services:\n  billing:\n    manifests:\n      oci: {host}/oci-releases/{{service}}-manifests\n      oci_dev: {host}/oci-snapshots/{{service}}-manifests\n",
        host = r.host()
    ));
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", "1.0.0")]),
    );
    p.write(
        "claims/sue-a.yaml",
        claim_with("sue-a", "sue", &[("billing", "1.1.0-dev.1")]),
    );
    let out = run(&p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sue = read(&p, "out/sue-a/deployment-billing.yaml");
    assert_eq!(sue["spec"]["minReadySeconds"], 7, "the dev repository's");
    assert_eq!(
        sue["spec"]["template"]["spec"]["containers"][0]["image"],
        "artifactory/docker-snapshots/billing:1.1.0-dev.1"
    );
    let dev = read(&p, "out/dev-a/deployment-billing.yaml");
    assert!(dev["spec"].get("minReadySeconds").is_none(), "{dev}");
}
