//! The command line end to end: exit codes, idempotent apply, pruning, the
//! mass-deletion gate, expiry, unresolved versions, custom templates.

use crate::support::{Project, claim, converge, stderr, stdout};

fn code(o: &std::process::Output) -> Option<i32> {
    o.status.code()
}

fn mtimes(p: &Project, env: &str) -> Vec<(String, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(p.path(&format!("out/{env}")))
        .expect("env dir")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().expect("meta").modified().expect("mtime"),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn run_once_applies_and_a_second_pass_writes_nothing() {
    let p = Project::new("");
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    p.write("claims/b.yaml", claim("prod-b", "prod"));
    let plan = p.run(&["plan"]);
    assert_eq!(code(&plan), Some(1), "changes pending: {}", stdout(&plan));
    assert!(stdout(&plan).contains("2 to create"), "{}", stdout(&plan));
    let run = p.run(&["run", "--once"]);
    assert_eq!(code(&run), Some(0), "{}", stderr(&run));
    assert_eq!(p.environments(), ["dev-a", "prod-b"]);
    let before = mtimes(&p, "prod-b");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = p.run(&["run", "--once"]);
    assert_eq!(code(&again), Some(0), "{}", stderr(&again));
    assert_eq!(
        mtimes(&p, "prod-b"),
        before,
        "a second pass rewrites nothing"
    );
    assert_eq!(code(&p.run(&["plan"])), Some(0));
}

#[test]
fn plan_formats_are_text_json_and_markdown() {
    let p = Project::new("");
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    let json = p.run(&["plan", "--format", "json"]);
    assert_eq!(code(&json), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("plan JSON");
    assert_eq!(doc["environments"][0]["name"], "dev-a");
    assert_eq!(doc["environments"][0]["change"], "create");
    let steps = doc["steps"].as_array().expect("steps");
    assert_eq!(steps[0]["kind"], "Namespace", "Namespaces first");
    let md = stdout(&p.run(&["plan", "--format", "markdown"]));
    assert!(md.starts_with("### converge plan"), "{md}");
    assert!(md.contains("| + | `dev-a` |"), "{md}");
}

#[test]
fn removing_a_claim_prunes_only_what_converge_wrote() {
    let p = Project::new("safety:\n  max_delete_fraction: 0.5\n");
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    p.write("claims/b.yaml", claim("dev-b", "dev"));
    assert_eq!(code(&p.run(&["run", "--once"])), Some(0));
    p.write("out/dev-b/README.md", "hand-written, not converge's");
    p.write("out/unrelated/file.yaml", "x: 1");
    p.remove("claims/b.yaml");
    let plan = stdout(&p.run(&["plan"]));
    assert!(plan.contains("- dev-b (Unclaimed)"), "{plan}");
    let run = p.run(&["run", "--once"]);
    assert_eq!(code(&run), Some(0), "{}", stderr(&run));
    assert!(!p.path("out/dev-b/namespace-dev-b.yaml").exists());
    assert!(!p.path("out/dev-b/.converge-inventory").exists());
    assert!(p.path("out/dev-b/README.md").exists(), "foreign files stay");
    assert!(
        p.path("out/unrelated/file.yaml").exists(),
        "foreign directories stay"
    );
    assert!(p.path("out/dev-a/namespace-dev-a.yaml").exists());
}

#[test]
fn a_mass_deletion_is_held_until_a_run_allows_it() {
    let p = Project::new("");
    for i in 0..5 {
        p.write(
            &format!("claims/{i}.yaml"),
            claim(&format!("dev-{i}"), "dev"),
        );
    }
    assert_eq!(code(&p.run(&["run", "--once"])), Some(0));
    for i in 0..2 {
        p.remove(&format!("claims/{i}.yaml"));
    }
    let plan = p.run(&["plan"]);
    assert!(
        stdout(&plan).contains("HELD"),
        "2 of 5 is over 20%: {}",
        stdout(&plan)
    );
    let held = p.run(&["run", "--once"]);
    assert_eq!(code(&held), Some(2), "a held plan is an error of the run");
    assert!(
        stderr(&held).contains("--allow-mass-delete"),
        "{}",
        stderr(&held)
    );
    assert_eq!(p.environments().len(), 5, "nothing deleted");
    let allowed = p.run(&["run", "--once", "--allow-mass-delete"]);
    assert_eq!(code(&allowed), Some(0), "{}", stderr(&allowed));
    assert_eq!(p.environments(), ["dev-2", "dev-3", "dev-4"]);
}

#[test]
fn deleting_every_environment_is_always_held() {
    let p = Project::new("safety:\n  max_delete_fraction: 1.0\n");
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    assert_eq!(code(&p.run(&["run", "--once"])), Some(0));
    p.remove("claims/a.yaml");
    assert_eq!(code(&p.run(&["run", "--once"])), Some(2));
    assert_eq!(p.environments(), ["dev-a"]);
}

#[test]
fn an_expired_environment_is_deleted_with_reason_expired() {
    let p = Project::new("safety:\n  max_delete_fraction: 0.5\n");
    p.write("claims/keep.yaml", claim("dev-keep", "dev"));
    let sue = |expiry: &str| {
        claim("sue-x", "sue").replace(
            "expiration_date: null",
            &format!("expiration_date: \"{expiry}\""),
        )
    };
    p.write("claims/sue.yaml", sue("2099-01-01T00:00:00Z"));
    assert_eq!(code(&p.run(&["run", "--once"])), Some(0));
    assert_eq!(p.environments(), ["dev-keep", "sue-x"]);
    p.write("claims/sue.yaml", sue("2024-01-16T00:00:00Z"));
    let plan = stdout(&p.run(&["plan"]));
    assert!(plan.contains("- sue-x (Expired)"), "{plan}");
    assert_eq!(code(&p.run(&["run", "--once"])), Some(0));
    assert_eq!(p.environments(), ["dev-keep"]);
    assert!(
        p.path("claims/sue.yaml").exists(),
        "the claim file itself is left where it is"
    );
}

#[test]
fn a_sue_environment_lives_24_hours_after_creation_by_default() {
    let p = Project::new("");
    let created = chrono::Utc::now() - chrono::Duration::hours(1);
    let fresh = claim("sue-fresh", "sue").replace("2024-01-15T10:30:00Z", &created.to_rfc3339());
    p.write("claims/fresh.yaml", fresh);
    p.write("claims/old.yaml", claim("sue-old", "sue"));
    assert_eq!(code(&p.run(&["run", "--once"])), Some(0));
    assert_eq!(
        p.environments(),
        ["sue-fresh"],
        "created 2024-01-15: long expired"
    );
    let ns = std::fs::read_to_string(p.path("out/sue-fresh/namespace-sue-fresh.yaml"))
        .expect("namespace");
    let expires =
        (created + chrono::Duration::hours(24)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(
        ns.contains(&format!("converge.dev/expires-at: \"{expires}\"")),
        "{ns}"
    );
    let render = p.run(&["render", "claims/old.yaml"]);
    assert_eq!(code(&render), Some(1));
    assert!(stderr(&render).contains("expired"), "{}", stderr(&render));
}

#[test]
fn an_unresolvable_constraint_leaves_the_environment_untouched() {
    let p = Project::new("tags:\n  user-service: [v1.2.3, v1.3.0]\n");
    let with = |v: &str| {
        claim("dev-a", "dev").replace("user-service: v1.2.3", &format!("user-service: \"{v}\""))
    };
    p.write("claims/a.yaml", with("^1.0.0"));
    assert_eq!(code(&p.run(&["run", "--once"])), Some(0));
    let deployment = p.path("out/dev-a/deployment-user-service.yaml");
    assert!(
        std::fs::read_to_string(&deployment)
            .expect("deployment")
            .contains("user-service:v1.3.0")
    );
    p.write("claims/a.yaml", with("^7.0.0"));
    let plan = p.run(&["plan"]);
    assert_eq!(code(&plan), Some(0), "no change: {}", stdout(&plan));
    assert!(
        stdout(&plan).contains("= dev-a left as it is (VersionUnresolved)"),
        "{}",
        stdout(&plan)
    );
    assert!(
        stdout(&plan).contains("(version-unresolved)"),
        "{}",
        stdout(&plan)
    );
    assert_eq!(code(&p.run(&["run", "--once"])), Some(0));
    assert!(
        std::fs::read_to_string(&deployment)
            .expect("kept")
            .contains("user-service:v1.3.0")
    );
    p.write(
        "claims/b.yaml",
        claim("dev-b", "dev").replace(
            "user-service: v1.2.3",
            "user-service: \"^1.0.0\"\n  other: \"*\"",
        ),
    );
    assert_eq!(code(&p.run(&["run", "--once"])), Some(0));
    assert!(!p.path("out/dev-b").exists(), "never half-applied");
}

#[test]
fn a_version_bump_shows_in_the_plan() {
    let p = Project::new("tags:\n  user-service: [1.2.3, 1.2.4]\n");
    let with = |v: &str| {
        claim("dev-a", "dev").replace("user-service: v1.2.3", &format!("user-service: \"{v}\""))
    };
    p.write("claims/a.yaml", with("1.2.3"));
    assert_eq!(code(&p.run(&["run", "--once"])), Some(0));
    p.write("claims/a.yaml", with("^1.0.0"));
    let plan = stdout(&p.run(&["plan"]));
    assert!(
        plan.contains("user-service 1.2.3 -> 1.2.4 (^1.0.0)"),
        "{plan}"
    );
    assert!(plan.contains("~ Deployment/user-service"), "{plan}");
}

#[test]
fn custom_templates_render_with_the_environment_values_and_labels() {
    let p = Project::new("templates: templates\n");
    p.write(
        "templates/cluster.yaml.j2",
        "{% if environment.type in ['stage', 'prod'] %}apiVersion: platform.example.com/v1\nkind: ClusterClaim\n\
         metadata:\n  name: {{ environment.name }}-cluster\nspec:\n  pool: {{ environment.pool }}\n  services:\n\
         {% for s in services %}  - {{ s.name }}@{{ s.version }}\n{% endfor %}{% endif %}\n",
    );
    p.write("claims/a.yaml", claim("prod-a", "prod"));
    p.write("claims/b.yaml", claim("dev-b", "dev"));
    let run = p.run(&["run", "--once"]);
    assert_eq!(code(&run), Some(0), "{}", stderr(&run));
    let custom = std::fs::read_to_string(p.path("out/prod-a/clusterclaim-prod-a-cluster.yaml"))
        .expect("custom object");
    assert!(custom.contains("- user-service@v1.2.3"), "{custom}");
    assert!(
        custom.contains("app.kubernetes.io/managed-by: converge"),
        "{custom}"
    );
    assert!(!p.path("out/dev-b/clusterclaim-dev-b-cluster.yaml").exists());
}

#[test]
fn a_broken_template_is_a_startup_error_and_a_failing_one_keeps_the_environment() {
    let p = Project::new("templates: templates\n");
    p.write("templates/bad.j2", "{% if %}");
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    let run = p.run(&["run", "--once"]);
    assert_eq!(code(&run), Some(2));
    assert!(stderr(&run).contains("bad.j2"), "{}", stderr(&run));
    p.write("templates/bad.j2", "{{ environment.nope }}");
    let run = p.run(&["run", "--once"]);
    assert_eq!(code(&run), Some(0), "{}", stderr(&run));
    assert!(p.environments().is_empty());
    let plan = stdout(&p.run(&["plan"]));
    assert!(plan.contains("(render)"), "{plan}");
}

#[test]
fn relative_paths_resolve_against_the_config_file() {
    let p = Project::new("");
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let config = p.path("converge.yaml");
    let run = converge(
        elsewhere.path(),
        &["run", "--once", "--config", config.to_str().expect("utf-8")],
    );
    assert_eq!(code(&run), Some(0), "{}", stderr(&run));
    assert!(p.path("out/dev-a/namespace-dev-a.yaml").exists());
}

#[test]
fn config_and_source_errors_exit_2() {
    let p = Project::new("colour: blue\n");
    let run = p.run(&["run", "--once"]);
    assert_eq!(code(&run), Some(2));
    assert!(stderr(&run).contains("colour"), "{}", stderr(&run));
    let missing = Project::new("");
    std::fs::remove_dir(missing.path("claims")).expect("rmdir");
    let run = missing.run(&["run", "--once"]);
    assert_eq!(
        code(&run),
        Some(2),
        "an unreadable source is not an empty one"
    );
    assert_eq!(
        code(&missing.run(&["plan", "--config", "nope.yaml"])),
        Some(2)
    );
}

#[test]
fn an_unreadable_source_deletes_nothing() {
    let p = Project::new("");
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    assert_eq!(code(&p.run(&["run", "--once"])), Some(0));
    std::fs::rename(p.path("claims"), p.path("claims-moved")).expect("move");
    assert_eq!(
        code(&p.run(&["run", "--once", "--allow-mass-delete"])),
        Some(2)
    );
    assert_eq!(p.environments(), ["dev-a"]);
}

#[test]
fn validate_reports_json() {
    let p = Project::new("");
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    p.write("claims/b.json", "{\"environment_name\": \"Bad\"}");
    let out = p.run(&["validate", "--format", "json", "claims"]);
    assert_eq!(code(&out), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["files"], 2);
    assert_eq!(doc["invalid"], 1);
    assert!(
        doc["diagnostics"]
            .as_array()
            .expect("list")
            .iter()
            .all(|d| d["file"] == "claims/b.json")
    );
    let ok = p.run(&["validate", "claims/a.yaml"]);
    assert_eq!(code(&ok), Some(0), "{}", stdout(&ok));
}

#[test]
fn error_messages_say_what_to_do_and_logs_to_pipes_are_plain() {
    let p = Project::new("");
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    let missing = p.run(&["plan", "--config", "nope.yaml"]);
    assert!(
        stderr(&missing).contains("(give the config file with --config)"),
        "{}",
        stderr(&missing)
    );
    // Colours only on a terminal: stderr here is a pipe, and NO_COLOR is unset.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(["run", "--once"])
        .current_dir(p.dir.path())
        .env("CONVERGE_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .expect("runs");
    assert!(run.status.success());
    assert!(!stderr(&run).contains('\u{1b}'), "{}", stderr(&run));
    // A URL without a scheme is http.
    let status = p.run(&["status", "--url", "127.0.0.1:1"]);
    assert!(
        stderr(&status).contains("http://127.0.0.1:1/"),
        "{}",
        stderr(&status)
    );
    assert!(
        !stderr(&status).contains("invalid format"),
        "{}",
        stderr(&status)
    );
    assert!(
        stderr(&status).contains("cannot reach the API"),
        "{}",
        stderr(&status)
    );
}

#[test]
fn an_address_in_use_names_it_and_how_to_choose_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let p = Project::new("");
    let out = p.run(&["run", "--listen", &addr]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&addr) && err.contains("--listen") && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn output_into_a_closed_pipe_stops_quietly() {
    let p = Project::new("");
    p.write("claims/a.yaml", claim("prod-a", "prod"));
    for args in [
        &["render", "claims/a.yaml"][..],
        &["plan"],
        &["validate", "claims"],
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
            .args(args)
            .current_dir(p.dir.path())
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runs");
        // The reader goes away before a byte is read (`converge … | head -0`).
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("waits");
        let err = stderr(&out);
        assert!(
            !err.contains("Broken pipe") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        assert_ne!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {err}");
    }
}

#[test]
fn a_missing_kubeconfig_is_named_once_in_words() {
    let p = Project::new("");
    p.write(
        "converge.yaml",
        "sources: []\ntarget:\n  kind: kubernetes\n  kubeconfig: nope.kubeconfig\n",
    );
    let out = p.run(&["plan"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("nope.kubeconfig").count(), 1, "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
}

#[test]
fn an_age_key_file_readable_by_others_is_warned_about_at_load() {
    use std::os::unix::fs::PermissionsExt as _;
    let p = Project::new("secrets:\n  age_key_files: [age.key]\n");
    p.write("claims/dev-a.yaml", claim("dev-a", "dev"));
    p.write("age.key", "# created: 2024-01-15T10:30:00Z\n");
    std::fs::set_permissions(p.path("age.key"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let out = p.run(&["validate", "claims"]);
    assert!(
        stderr(&out).contains("age key file is readable by group or others")
            && stderr(&out).contains("0644"),
        "{}",
        stderr(&out)
    );
    std::fs::set_permissions(p.path("age.key"), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let out = p.run(&["validate", "claims"]);
    assert!(
        !stderr(&out).contains("readable by group or others"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn validate_names_its_source_after_the_paths_it_was_given() {
    let p = Project::new("");
    let out = p.run(&["validate", "no-such-dir"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("source no-such-dir: cannot read no-such-dir"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn node_placement_is_configured_per_type_and_an_invalid_preset_is_refused_at_load() {
    let p = Project::new(
        "presets:\n  dev: {node_pools: []}\n  stage: {placement: preferred}\n  prod: {placement: none}\n",
    );
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    p.write("claims/b.yaml", claim("stage-b", "stage"));
    p.write("claims/c.yaml", claim("prod-c", "prod"));
    let run = p.run(&["run", "--once"]);
    assert_eq!(code(&run), Some(0), "{}", stderr(&run));
    let spec = |env: &str| {
        let text =
            std::fs::read_to_string(p.path(&format!("out/{env}/deployment-user-service.yaml")))
                .expect("deployment");
        let d: serde_json::Value = serde_saphyr::from_str(&text).expect("YAML");
        d["spec"]["template"]["spec"].clone()
    };
    let dev = spec("dev-a");
    assert!(
        dev.get("affinity").is_none() && dev.get("tolerations").is_none(),
        "{dev}"
    );
    let stage = spec("stage-b");
    assert!(
        stage["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
            ["preference"]["matchExpressions"][0]["values"]
            .is_array(),
        "{stage}"
    );
    assert!(spec("prod-c").get("affinity").is_none());

    let bad = Project::new("presets:\n  dev: {node_pools: [\"general pool\"]}\n");
    bad.write("claims/a.yaml", claim("dev-a", "dev"));
    for args in [
        &["run", "--once"][..],
        &["plan"],
        &["validate", "--config", "converge.yaml", "claims"],
    ] {
        let out = bad.run(args);
        assert_eq!(code(&out), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("converge.yaml")
                && err.contains("presets.dev.node_pools[0]")
                && err.contains("is not a Kubernetes label value"),
            "{args:?}: {err}"
        );
    }
    assert!(bad.environments().is_empty());
}

/// `run` (daemon and `--once`) refuses a config without sources: it would
/// start, report ready and reconcile nothing.
#[test]
fn run_refuses_a_config_without_sources() {
    let p = Project::new("");
    p.write(
        "converge.yaml",
        "sources: []\ntarget:\n  kind: manifests\n  path: out\n",
    );
    for args in [&["run", "--once"][..], &["run", "--listen", "127.0.0.1:0"]] {
        let out = p.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(
                "converge.yaml: sources: none are configured, so there is nothing to reconcile"
            ),
            "{args:?}: {err}"
        );
    }
    assert!(!p.path("out").exists(), "nothing written");
}
