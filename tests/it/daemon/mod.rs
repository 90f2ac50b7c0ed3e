//! The daemon end to end: the real binary on a free loopback port against a
//! copy of the quick start (a dir source); `git.rs` and `s3.rs` run it against
//! a git server and a bucket.

mod git;
mod hostile;
mod list;
mod page;
mod s3;
mod tags;
mod visible;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::daemon::Daemon;
use crate::support::{Project, claim, converge, repo, stderr, stdout, test_ca, which};

/// A copy of the quick start: its claims and tags, state in `.converge`, and
/// a mass-deletion gate at half the environments.
fn quickstart() -> Project {
    let p = Project::new("state_dir: .converge\nsafety:\n  max_delete_fraction: 0.5\n");
    for entry in std::fs::read_dir(repo().join("examples/quickstart/claims")).expect("claims") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), p.path("claims").join(entry.file_name())).expect("copy");
    }
    let config =
        std::fs::read_to_string(repo().join("examples/quickstart/converge.yaml")).expect("config");
    let tags = config.split("tags:").nth(1).expect("quick start has tags");
    let mut own = std::fs::read_to_string(p.path("converge.yaml")).expect("config");
    own.push_str("tags:");
    own.push_str(tags);
    std::fs::write(p.path("converge.yaml"), own).expect("write");
    p
}

#[test]
fn the_daemon_follows_claim_files_as_they_are_added_changed_and_removed() {
    let p = quickstart();
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    assert_eq!(d.names().len(), 4);
    assert_eq!(p.environments().len(), 4);

    p.write("claims/new.yaml", claim("dev-new", "dev"));
    d.wait_for("dev-new in the API", |d| {
        d.names().contains(&"dev-new".to_owned())
    });
    assert!(p.path("out/dev-new/namespace-dev-new.yaml").exists());
    let detail = d.json("/api/v1/environments/dev-new");
    assert_eq!(detail["status"], "Ready");
    assert_eq!(detail["versions"]["user-service"]["tag"], "v1.2.3");
    assert_eq!(detail["source"], "local:claims/new.yaml");

    p.write(
        "claims/new.yaml",
        claim("dev-new", "dev").replace("v1.2.3", "v1.2.4"),
    );
    d.wait_for("the new version", |d| {
        d.json("/api/v1/environments/dev-new")["versions"]["user-service"]["tag"] == "v1.2.4"
    });
    let deployment = std::fs::read_to_string(p.path("out/dev-new/deployment-user-service.yaml"))
        .expect("deployment");
    assert!(deployment.contains("user-service:v1.2.4"), "{deployment}");

    p.remove("claims/new.yaml");
    d.wait_for("dev-new gone", |d| {
        !d.names().contains(&"dev-new".to_owned())
    });
    assert!(!p.path("out/dev-new").exists());
    let events = d.json("/api/v1/events");
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for want in ["Created", "Updated", "Deleted"] {
        assert!(reasons.contains(&want), "{want} in {reasons:?}");
    }
    assert_eq!(d.get("/api/v1/environments/nope").0, 404);
    assert_eq!(d.terminate(), Some(0), "SIGTERM exits 0");
}

#[test]
fn an_unreadable_source_deletes_nothing_and_recovers() {
    let p = quickstart();
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    std::fs::rename(p.path("claims"), p.path("claims.away")).expect("move claims away");
    d.wait_for("the source error", |d| {
        let s = d.json("/api/v1/sources");
        s["items"][0]["last_error"]["reason"] == "SourceUnreadable"
    });
    assert_eq!(d.names().len(), 4, "nothing deleted");
    assert_eq!(p.environments().len(), 4, "nothing deleted on disk");
    let stale = |d: &Daemon| {
        d.json("/api/v1/environments")["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|e| e["conditions"].to_string().contains("SourceStale"))
            .count()
    };
    d.wait_for("every environment marked stale", |d| stale(d) == 4);
    let metrics = d.get("/metrics").1;
    assert!(
        metrics
            .contains("converge_source_errors_total{source=\"local\",reason=\"SourceUnreadable\"}"),
        "{metrics}"
    );
    std::fs::rename(p.path("claims.away"), p.path("claims")).expect("move back");
    d.wait_for("recovery", |d| {
        d.json("/api/v1/sources")["items"][0]["last_error"].is_null()
    });
    assert_eq!(d.names().len(), 4);
    d.wait_for("no longer stale", |d| stale(d) == 0);
}

#[test]
fn the_api_is_read_only_and_can_require_a_token() {
    let p = quickstart();
    p.write("token", "s3cret-token\n");
    let mut config = std::fs::read_to_string(p.path("converge.yaml")).expect("config");
    config.push_str("api:\n  token_file: token\n");
    std::fs::write(p.path("converge.yaml"), config).expect("write");
    let d = Daemon::start(p.dir.path());
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let (status, head, _) = d.request(method, "/api/v1/environments", &[]);
        assert_eq!(status, 405, "{method}");
        assert!(
            head.to_ascii_lowercase().contains("allow: get, head"),
            "{method}: {head}"
        );
    }
    assert_eq!(d.get("/health").0, 200, "health stays open");
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    let (status, head, _) = d.request("GET", "/api/v1/environments", &[]);
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert_eq!(
        d.request("GET", "/metrics", &[("Authorization", "Bearer wrong")])
            .0,
        401
    );
    let (status, _, body) = d.request(
        "GET",
        "/api/v1/environments",
        &[("Authorization", "Bearer s3cret-token")],
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = d.request(
        "HEAD",
        "/api/v1/plan",
        &[("Authorization", "Bearer s3cret-token")],
    );
    assert_eq!((status, body.as_str()), (200, ""));
    // The scheme is case-insensitive.
    let (status, _, body) = d.request(
        "GET",
        "/api/v1/environments",
        &[("Authorization", "bearer s3cret-token")],
    );
    assert_eq!(status, 200, "{body}");
    let auth = [("Authorization", "Bearer s3cret-token")];
    // An empty filter is no filter; a malformed query is a JSON 400.
    let (_, _, all) = d.request("GET", "/api/v1/environments", &auth);
    let (status, _, empty) = d.request("GET", "/api/v1/environments?type=", &auth);
    assert_eq!((status, &empty), (200, &all));
    let (status, _, bad) = d.request("GET", "/api/v1/environments?type=a&type=b", &auth);
    assert_eq!(status, 400, "{bad}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&bad).is_ok(),
        "JSON: {bad}"
    );
    let status_cli = converge(
        p.dir.path(),
        &[
            "status",
            "--url",
            &format!("http://{}", d.addr),
            "--token-file",
            "token",
        ],
    );
    assert_eq!(status_cli.status.code(), Some(0), "{}", stderr(&status_cli));
    let table = stdout(&status_cli);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("prod-team1-payments"), "{table}");
    let one = converge(
        p.dir.path(),
        &[
            "status",
            "--url",
            &format!("http://{}", d.addr),
            "--token-file",
            "token",
            "sue-team2-eval",
        ],
    );
    assert!(stdout(&one).contains("History:"), "{}", stdout(&one));
    let denied = converge(
        p.dir.path(),
        &["status", "--url", &format!("http://{}", d.addr)],
    );
    assert_eq!(denied.status.code(), Some(2));
    assert!(
        !d.log().contains("s3cret-token"),
        "the token never reaches the logs"
    );
}

#[test]
fn a_held_plan_is_visible_and_an_operator_file_lets_it_through_once() {
    let p = quickstart();
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    for f in [
        "dev-team1-feature-x.json",
        "prod-team1-payments.yaml",
        "stage-team2-checkout.yaml",
    ] {
        p.remove(&format!("claims/{f}"));
    }
    d.wait_for("the held plan", |d| {
        !d.json("/api/v1/plan")["hold"].is_null()
    });
    assert!(d.get("/metrics").1.contains("converge_plan_held 1"));
    assert_eq!(p.environments().len(), 4, "nothing deleted while held");
    let held = d.json("/api/v1/environments/prod-team1-payments");
    assert_eq!(held["status"], "Held");
    std::fs::write(p.path(".converge/allow-mass-delete"), "").expect("allow file");
    d.wait_for("the deletions", |d| d.names() == ["sue-team2-eval"]);
    assert!(
        !p.path(".converge/allow-mass-delete").exists(),
        "the allowance is used up"
    );
    assert_eq!(p.environments(), ["sue-team2-eval"]);
}

#[test]
fn a_restart_after_kill_9_resumes_and_converges() {
    let p = quickstart();
    for i in 0..300 {
        p.write(
            &format!("claims/bulk-{i}.yaml"),
            claim(&format!("dev-bulk-{i}"), "dev"),
        );
    }
    let d = Daemon::start(p.dir.path());
    // Kill it as soon as the first environment directory appears: mid-pass.
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.environments().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    d.kill9();
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    assert_eq!(d.names().len(), 304);
    d.terminate();
    // What is on disk equals what a clean single pass writes.
    let clean = quickstart();
    for i in 0..300 {
        clean.write(
            &format!("claims/bulk-{i}.yaml"),
            claim(&format!("dev-bulk-{i}"), "dev"),
        );
    }
    assert_eq!(clean.run(&["run", "--once"]).status.code(), Some(0));
    assert_eq!(tree(&p.path("out")), tree(&clean.path("out")));
    // And the history from before the restart is still there.
    let d = Daemon::start(p.dir.path());
    let events = d.json("/api/v1/events");
    assert!(
        !events["items"].as_array().expect("items").is_empty(),
        "events survive restarts"
    );
}

/// Every file under `root` with its content (inventories included; temp files would show).
fn tree(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("dir") {
            let entry = entry.expect("entry");
            if entry.file_type().expect("type").is_dir() {
                stack.push(entry.path());
            } else if entry.file_name() != converge::store::TARGET_LOCK_FILE {
                let rel = entry
                    .path()
                    .strip_prefix(root)
                    .expect("under root")
                    .display()
                    .to_string();
                out.push((rel, std::fs::read_to_string(entry.path()).expect("utf-8")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_corrupt_or_foreign_state_file_is_a_clear_startup_error() {
    let p = quickstart();
    p.write(
        ".converge/converge.redb",
        "this is not a database, and it is not empty either",
    );
    let err = Daemon::try_start(p.dir.path())
        .err()
        .expect("refuses to start");
    assert!(err.contains("not a converge state store"), "{err}");
    assert_eq!(
        std::fs::read_to_string(p.path(".converge/converge.redb")).expect("kept"),
        "this is not a database, and it is not empty either",
        "never silently reset"
    );
}

#[test]
fn metrics_are_served_as_openmetrics_text() {
    let p = quickstart();
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    let (status, head, _) = d.request("GET", "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
}

#[test]
#[ignore = "needs python3 with prometheus-client (scripts/test installs it)"]
fn metrics_parse_with_the_prometheus_reference_parser() {
    let p = quickstart();
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    let (status, _, body) = d.request("GET", "/metrics", &[]);
    assert_eq!(status, 200);
    let script = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
                  names = sorted({f.name for f in parse(sys.stdin.read())})\nprint('\\n'.join(names))\n";
    let out = python(script, &body);
    for want in [
        "converge_pass_duration_seconds",
        "converge_environments",
        "converge_source_last_success_timestamp_seconds",
        "converge_plan_changes",
        "converge_plan_held",
        "converge_apply_latency_seconds",
        "converge_claims_parsed",
        "converge_claims_rendered",
        "converge_source_polls",
        "converge_pass_ready_seconds",
    ] {
        assert!(out.lines().any(|l| l == want), "{want} in\n{out}");
    }
}

/// Runs a Python script that reads `stdin` (the `prometheus-client` package
/// installed) and returns what it prints.
fn python(script: &str, stdin: &str) -> String {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("needs python3 (scripts/test installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !err.contains("No module named 'prometheus_client'"),
        "needs the prometheus-client Python package (scripts/test installs it)"
    );
    assert!(
        out.status.success(),
        "the parser refused the metrics: {err}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_status_page_is_html_listing_the_environments() {
    let p = quickstart();
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    let (_, head, html) = d.request("GET", "/", &[]);
    assert!(head.contains("text/html"), "{head}");
    assert!(
        html.contains("sue-team2-eval") && html.contains("in "),
        "{html}"
    );
}

#[test]
#[ignore = "needs chromium (scripts/test installs it)"]
fn the_status_page_shows_the_environments_in_a_real_browser() {
    let p = quickstart();
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| which(b))
        .expect("needs chromium (scripts/test installs it)");
    let profile = tempfile::tempdir().expect("profile dir");
    let shot = p.path("status.png");
    let url = format!("http://{}/", d.addr);
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=390,844",
    ];
    let run = |extra: &[&str]| {
        Command::new(browser)
            .args(common)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs")
    };
    let dom = run(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for name in [
        "dev-team1-feature-x",
        "stage-team2-checkout",
        "prod-team1-payments",
        "sue-team2-eval",
    ] {
        assert!(
            dom.contains(name),
            "{name} on the page as Chromium sees it:\n{dom}"
        );
    }
    let _ = run(&[&format!("--screenshot={}", shot.display())]);
    if let Ok(keep) = std::env::var("CONVERGE_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep);
    }
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
        "a screenshot was taken"
    );
}

#[test]
#[ignore = "needs openssl (scripts/test installs it)"]
fn the_api_serves_tls_and_the_status_command_trusts_a_given_ca() {
    let p = quickstart();
    test_ca(p.dir.path());
    let mut config = std::fs::read_to_string(p.path("converge.yaml")).expect("config");
    config.push_str("api:\n  tls:\n    cert_file: cert.pem\n    key_file: key.pem\n");
    std::fs::write(p.path("converge.yaml"), config).expect("write");
    let d = Daemon::start(p.dir.path());
    assert!(d.log().contains("api listening on https://"), "{}", d.log());
    let url = format!("https://{}", d.addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = converge(
            p.dir.path(),
            &[
                "status",
                "--url",
                &url,
                "--ca-file",
                "ca.pem",
                "--format",
                "json",
            ],
        );
        if out.status.code() == Some(0) && stdout(&out).contains("sue-team2-eval") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status over TLS: {}{}",
            stdout(&out),
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let untrusted = converge(p.dir.path(), &["status", "--url", &url]);
    assert_eq!(untrusted.status.code(), Some(2), "an unknown CA is refused");
}

#[test]
fn an_environment_is_removed_when_its_time_is_up_not_at_the_next_poll() {
    let p = quickstart();
    let mut config = std::fs::read_to_string(p.path("converge.yaml")).expect("config");
    config.push_str("reconcile:\n  dir_interval: 1h\n");
    std::fs::write(p.path("converge.yaml"), config).expect("write");
    let expiry = chrono::Utc::now() + chrono::Duration::seconds(4);
    let sue = claim("sue-short", "sue").replace(
        "expiration_date: null",
        &format!(
            "expiration_date: \"{}\"",
            expiry.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    );
    p.write("claims/short.yaml", sue);
    let d = Daemon::start(p.dir.path());
    d.wait_for("sue-short", |d| d.names().contains(&"sue-short".to_owned()));
    d.wait_for("the expiry", |d| {
        d.json("/api/v1/environments/sue-short")["status"] == "Expired"
    });
    assert!(
        !p.path("out/sue-short").exists(),
        "its resources are pruned"
    );
    assert!(p.path("claims/short.yaml").exists(), "the claim file stays");
}

#[test]
fn a_claim_linked_from_outside_the_claims_directory_is_refused_and_never_read_or_stored() {
    let p = Project::new("state_dir: .converge\n");
    p.write("claims/good.yaml", claim("dev-good", "dev"));
    // A file the daemon can read and the claim author cannot, as it looks
    // when converge runs as root.
    p.write(
        "private/secret.yaml",
        "root-password: hunter2-very-secret\n",
    );
    std::os::unix::fs::symlink("../private/secret.yaml", p.path("claims/leak.yaml"))
        .expect("symlink");
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    assert_eq!(d.names(), ["dev-good"]);
    let (_, events) = d.get("/api/v1/events");
    let refused = serde_json::from_str::<serde_json::Value>(&events).expect("json")["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("claims/leak.yaml"))
        })
        .cloned()
        .unwrap_or_else(|| panic!("an event names the link: {events}"));
    let message = refused["message"].as_str().expect("message");
    assert!(message.contains("(symlink)"), "{message}");
    assert!(message.contains("outside"), "{message}");
    assert!(!events.contains("hunter2"), "{events}");
    assert_eq!(d.terminate(), Some(0));
    let state = std::fs::read(p.path(".converge/converge.redb")).expect("state");
    assert!(
        !state.windows(7).any(|w| w == b"hunter2"),
        "the linked file's bytes are not in the state store"
    );
}

/// Permission bits of `path`.
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn state_and_bookkeeping_are_private_and_a_state_dir_open_to_others_is_warned_about() {
    let p = Project::new("state_dir: var/converge\n");
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    assert_eq!(mode(&p.path("var")), 0o700);
    assert_eq!(mode(&p.path("var/converge")), 0o700);
    assert_eq!(mode(&p.path("var/converge/converge.redb")), 0o600);
    let env = p.path("out/dev-a");
    let inventory = std::fs::read_dir(&env)
        .expect("environment")
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".converge-inventory")
        })
        .expect("an inventory file")
        .path();
    assert_eq!(mode(&inventory), 0o600, "converge's bookkeeping");
    // The objects are the product, for kubectl and other tools: the same
    // mode as any file this process (same umask) creates.
    std::fs::write(p.path("umask-probe"), "").expect("write");
    assert_eq!(
        mode(&env.join("namespace-dev-a.yaml")),
        mode(&p.path("umask-probe"))
    );
    assert!(!d.log().contains("WARN"), "{}", d.log());
    assert_eq!(d.terminate(), Some(0));

    std::fs::set_permissions(
        p.path("var/converge"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    let log = d.log();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("var/converge"))
        .unwrap_or_else(|| panic!("a warning names the state dir:\n{log}"));
    assert!(warning.contains("755"), "{warning}");
}

#[test]
fn two_writers_with_their_own_state_dirs_cannot_write_one_manifests_directory() {
    let p = Project::new("state_dir: .converge\n");
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    // Another config: its own state dir, the same out/.
    let config = std::fs::read_to_string(p.path("converge.yaml")).expect("config");
    p.write(
        "other.yaml",
        config.replace("state_dir: .converge", "state_dir: .other-state"),
    );
    let once = p.run(&["run", "--once", "--config", "other.yaml"]);
    let err = stderr(&once);
    assert_eq!(once.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("pid {}", d.pid())), "{err}");
    assert!(err.contains("manifests directory"), "{err}");
    assert_eq!(
        p.environments(),
        ["dev-a"],
        "nothing written beside the daemon"
    );
    assert_eq!(d.terminate(), Some(0));
    let once = p.run(&["run", "--once", "--config", "other.yaml"]);
    assert_eq!(once.status.code(), Some(0), "{}", stderr(&once));
}

#[test]
fn a_second_writer_fails_at_once_naming_the_first_while_read_only_commands_keep_working() {
    let p = Project::new("state_dir: .converge\n");
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    let holder = format!("pid {}", d.pid());

    let once = p.run(&["run", "--once"]);
    assert_eq!(once.status.code(), Some(2), "{}", stderr(&once));
    assert!(stderr(&once).contains(&holder), "{}", stderr(&once));
    assert!(stderr(&once).contains(".converge"), "{}", stderr(&once));
    let second = Daemon::try_start(p.dir.path()).err().expect("refused");
    assert!(second.contains("exit status: 2"), "{second}");
    assert!(second.contains(&holder), "{second}");

    let url = format!("http://{}", d.addr);
    for args in [
        &["plan"][..],
        &["validate", "claims"],
        &["render", "claims/a.yaml"],
        &["status", "--url", &url],
    ] {
        let out = p.run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(d.terminate(), Some(0));
    let once = p.run(&["run", "--once"]);
    assert_eq!(once.status.code(), Some(0), "{}", stderr(&once));
}

#[test]
fn a_rejected_new_claim_is_logged_once_and_listed_as_invalid() {
    let p = crate::support::Project::new("");
    p.write(
        "claims/dev-good.yaml",
        crate::support::claim("dev-good", "dev"),
    );
    p.write(
        "claims/dev-bad.yaml",
        crate::support::claim("dev-bad", "dev")
            .replace("environment_type: dev", "environment_type: nope"),
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    let (status, body) = d.get("/api/v1/environments/dev-bad");
    assert_eq!(status, 200, "{body}");
    let detail: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(detail["status"], "Invalid", "{detail}");
    assert!(
        detail["conditions"]
            .to_string()
            .contains("environment_type"),
        "{detail}"
    );
    d.wait_for("a warning naming file, pointer and rule", |d| {
        d.log().lines().any(|l| {
            l.contains("WARN")
                && l.contains("claims/dev-bad.yaml")
                && l.contains("/environment_type")
        })
    });
    p.write(
        "claims/dev-bad.yaml",
        crate::support::claim("dev-bad", "dev"),
    );
    d.wait_for("its recovery logged", |d| {
        d.log().contains("claim file no longer rejected")
    });
    let warnings = d
        .log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("claims/dev-bad.yaml"))
        .count();
    assert_eq!(warnings, 1, "logged once\n{}", d.log());
}

#[test]
fn status_over_https_to_a_plain_server_says_to_use_http() {
    let p = quickstart();
    let d = Daemon::start(p.dir.path());
    let out = converge(
        p.dir.path(),
        &["status", "--url", &format!("https://{}", d.addr)],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("does not speak TLS") && err.contains(&format!("http://{}", d.addr)),
        "{err}"
    );
}

#[test]
fn cors_is_off_unless_origins_are_configured_and_then_only_for_reads() {
    let plain = quickstart();
    let d = Daemon::start(plain.dir.path());
    let (_, head, _) = d.request(
        "GET",
        "/api/v1/environments",
        &[("Origin", "https://dash.example")],
    );
    assert!(
        !head.to_ascii_lowercase().contains("access-control"),
        "{head}"
    );
    drop(d);

    let p = quickstart();
    let mut config = std::fs::read_to_string(p.path("converge.yaml")).expect("config");
    config.push_str("api:\n  cors:\n    allowed_origins: [\"https://dash.example\"]\n");
    std::fs::write(p.path("converge.yaml"), config).expect("write");
    let d = Daemon::start(p.dir.path());
    let (status, head, _) = d.request(
        "GET",
        "/api/v1/environments",
        &[("Origin", "https://dash.example")],
    );
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://dash.example"),
        "{head}"
    );
    let (status, head, _) = d.request(
        "OPTIONS",
        "/api/v1/environments",
        &[
            ("Origin", "https://dash.example"),
            ("Access-Control-Request-Method", "GET"),
        ],
    );
    assert_eq!(status, 200, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("access-control-allow-methods: get,head"),
        "{head}"
    );
    let (_, other, _) = d.request(
        "GET",
        "/api/v1/environments",
        &[("Origin", "https://evil.example")],
    );
    assert!(
        !other
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{other}"
    );
    let (status, _, _) = d.request(
        "POST",
        "/api/v1/environments",
        &[("Origin", "https://dash.example")],
    );
    assert_eq!(status, 405, "still read-only");
}
