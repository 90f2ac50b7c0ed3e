//! `converge claim` through the real binary: `new` writes claims that
//! `validate` accepts; `put`, `rm` and `extend` against a bucket on Garage
//! (objects checked with the AWS SDK), `--wait` through a running daemon.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::daemon::Daemon;
use crate::support::garage::{Bucket, Garage, source_yaml};
use crate::support::gitea::{ADMIN, AUTHOR, Gitea};
use crate::support::{Project, stderr, stdout};

/// A project whose config has a service catalog and a default user.
fn catalog_project() -> Project {
    Project::new(
        "services:\n  checkout:\n    depends_on: [billing]\n  billing:\n    version: ^1.0.0\n\
         claims:\n  default_user: jane.roe@company.com\n",
    )
}

#[test]
fn claim_new_writes_a_claim_that_validate_accepts() {
    let p = catalog_project();
    let out = p.run(&[
        "claim",
        "new",
        "dev-team1-new",
        "--type",
        "dev",
        "--pool",
        "team1",
        "--user",
        "john.doe@company.com",
        "--services",
        "user-service=^1.2.0,billing=1.x.x",
        "--expires",
        "24h",
        "-o",
        "claims/dev-team1-new.yaml",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(p.path("claims/dev-team1-new.yaml")).expect("written");
    assert!(text.contains("user: \"john.doe@company.com\""), "{text}");
    assert!(text.contains("user-service: \"^1.2.0\""), "{text}");
    let valid = p.run(&["validate", "claims/dev-team1-new.yaml"]);
    assert_eq!(valid.status.code(), Some(0), "{}", stdout(&valid));

    // JSON to stdout, the user from claims.default_user.
    let out = p.run(&[
        "claim",
        "new",
        "dev-team1-json",
        "--type",
        "dev",
        "--pool",
        "team1",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["user"], "jane.roe@company.com");
    assert_eq!(doc["deployment_method"], "dynamic");
    assert!(doc["expiration_date"].is_null());
}

#[test]
fn claim_new_without_a_user_is_refused_with_a_hint_and_writes_nothing() {
    let p = Project::new("");
    let out = p.run(&[
        "claim",
        "new",
        "dev-team1-x",
        "--type",
        "dev",
        "--pool",
        "team1",
        "-o",
        "claims/x.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--user"), "{}", stderr(&out));
    assert!(!p.path("claims/x.yaml").exists());

    let out = p.run(&[
        "claim", "new", "Bad_Name", "--type", "dev", "--pool", "team1", "--user", "a@b.c",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/environment_name:") && stderr(&out).contains("(pattern)"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn claim_new_shows_the_services_the_catalog_brings() {
    let p = catalog_project();
    let out = p.run(&[
        "claim",
        "new",
        "dev-team1-c",
        "--type",
        "dev",
        "--pool",
        "team1",
        "--services",
        "checkout=v2.0.0",
        "--show-closure",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The claim on stdout, the closure on stderr.
    assert!(!stdout(&out).contains("dependency"), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("dev-team1-c runs 2 service(s)"), "{err}");
    assert!(err.contains("checkout v2.0.0"), "{err}");
    assert!(
        err.contains("billing ^1.0.0 (a dependency of checkout"),
        "{err}"
    );
}

/// A project whose sources are a bucket on Garage (`bucket`, its name) and
/// a static bucket (`static`), with the test key's files; `extra` config
/// appended.
fn bucket_project(garage: &Garage, b: &Bucket, extra: &str) -> Project {
    let p = Project::new("");
    let (id, secret) = garage.key_files();
    std::fs::copy(id, p.path("s3-key-id")).expect("copy");
    std::fs::copy(secret, p.path("s3-secret")).expect("copy");
    let dynamic = source_yaml(
        &garage.endpoint(),
        &b.name,
        Path::new("s3-key-id"),
        Path::new("s3-secret"),
        "",
    );
    let fixed = source_yaml(
        &garage.endpoint(),
        &b.name,
        Path::new("s3-key-id"),
        Path::new("s3-secret"),
        "    prefix: static/\n    static: true\n",
    )
    .replace("name: bucket", "name: static");
    p.write(
        "converge.yaml",
        format!(
            "sources:\n{dynamic}{fixed}target:\n  kind: manifests\n  path: out\nstate_dir: .converge\n{extra}"
        ),
    );
    p
}

/// Runs `converge ARGS` in the project with `input` on stdin.
fn run_with_input(p: &Project, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(args)
        .current_dir(p.dir.path())
        .env("CONVERGE_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("converge runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("converge ends")
}

/// `claim new NAME --type dev --pool team1` for john, with `extra` flags.
fn new_claim(p: &Project, name: &str, extra: &[&str]) -> Vec<u8> {
    let mut args = vec![
        "claim",
        "new",
        name,
        "--type",
        "dev",
        "--pool",
        "team1",
        "--user",
        "john.doe@company.com",
        "--services",
        "user-service=v1.2.3",
    ];
    args.extend_from_slice(extra);
    let out = p.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    out.stdout
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn claim_new_piped_into_claim_put_uploads_once_and_never_overwrites_unasked() {
    let garage = Garage::shared();
    let b = garage.bucket();
    let p = bucket_project(garage, &b, "");
    let claim = new_claim(&p, "dev-team1-put", &[]);
    let out = run_with_input(&p, &["claim", "put", "-", "--source", "bucket"], &claim);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (body, etag) = b.get("dev-team1-put.yaml").expect("uploaded");
    assert_eq!(body.as_bytes(), claim.as_slice());
    assert_eq!(
        stdout(&out).trim(),
        format!("s3://{}/dev-team1-put.yaml {etag}", b.name)
    );

    // Someone else's version is there now: a create is refused, nothing written.
    let theirs = String::from_utf8(claim.clone())
        .expect("utf-8")
        .replace("v1.2.3", "v1.2.4");
    let their_etag = b.put("dev-team1-put.yaml", theirs.clone(), &[]);
    let out = run_with_input(&p, &["claim", "put", "-", "--source", "bucket"], &claim);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exists") && stderr(&out).contains("--replace"),
        "{}",
        stderr(&out)
    );
    assert_eq!(b.get("dev-team1-put.yaml").expect("kept").0, theirs);

    // A replace on a version that is no longer there is refused too.
    let out = run_with_input(
        &p,
        &[
            "claim",
            "put",
            "-",
            "--source",
            "bucket",
            "--if-match",
            &etag,
        ],
        &claim,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("changed since it was read"),
        "{}",
        stderr(&out)
    );
    assert_eq!(b.get("dev-team1-put.yaml").expect("kept").1, their_etag);

    // --replace replaces the version found.
    let out = run_with_input(
        &p,
        &["claim", "put", "-", "--source", "bucket", "--replace"],
        &claim,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        b.get("dev-team1-put.yaml").expect("replaced").0.as_bytes(),
        claim.as_slice()
    );
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn claim_put_judges_as_the_daemon_would_and_uploads_nothing_when_one_file_is_invalid() {
    let garage = Garage::shared();
    let b = garage.bucket();
    let p = bucket_project(garage, &b, "");
    p.write(
        "claims/dev-team1-ok.yaml",
        crate::support::claim("dev-team1-ok", "dev"),
    );
    // Valid for `validate` (a local directory may hold prod claims), but
    // the default policies refuse prod from a dynamic bucket.
    p.write(
        "claims/prod-a.yaml",
        crate::support::claim("prod-a", "prod"),
    );
    p.write(
        "claims/typo.yaml",
        crate::support::claim("dev-team1-typo", "dev").replace("services:", "servces:"),
    );
    let valid = p.run(&["validate", "claims/prod-a.yaml"]);
    assert_eq!(valid.status.code(), Some(0), "{}", stdout(&valid));
    let out = p.run(&[
        "claim",
        "put",
        "claims/dev-team1-ok.yaml",
        "claims/prod-a.yaml",
        "claims/typo.yaml",
        "--source",
        "bucket",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("claims/prod-a.yaml: /: ")
            && err.contains("prod-and-stage-not-from-dynamic-bucket"),
        "{err}"
    );
    assert!(err.contains("claims/typo.yaml: /"), "{err}");
    assert!(
        err.contains("2 of 3 file(s) invalid: nothing uploaded"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    assert!(b.keys().is_empty(), "{:?}", b.keys());
    // The same text as `converge validate` for the typo.
    let validate = p.run(&["validate", "claims/typo.yaml"]);
    let line = stdout(&validate)
        .lines()
        .next()
        .expect("a diagnostic")
        .to_owned();
    assert!(err.contains(&line), "{line} in {err}");
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn claim_put_to_the_static_bucket_is_refused_with_the_reason() {
    let garage = Garage::shared();
    let b = garage.bucket();
    let p = bucket_project(garage, &b, "");
    p.write(
        "claims/prod-a.yaml",
        crate::support::claim("prod-a", "prod"),
    );
    let out = p.run(&["claim", "put", "claims/prod-a.yaml", "--source", "static"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("static (write-once) bucket")
            && stderr(&out).contains("reviewed pull request"),
        "{}",
        stderr(&out)
    );
    assert!(b.keys().is_empty());
    let out = p.run(&["claim", "rm", "prod-a", "--source", "static", "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("write-once"), "{}", stderr(&out));
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn claim_put_names_the_endpoint_it_cannot_reach_and_the_credentials_it_was_refused() {
    let garage = Garage::shared();
    let b = garage.bucket();
    let p = bucket_project(garage, &b, "");
    p.write(
        "claims/dev-team1-ok.yaml",
        crate::support::claim("dev-team1-ok", "dev"),
    );
    std::fs::write(p.path("s3-secret"), "0".repeat(64)).expect("write");
    let out = p.run(&[
        "claim",
        "put",
        "claims/dev-team1-ok.yaml",
        "--source",
        "bucket",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("access denied")
            && err.contains(&garage.endpoint())
            && err.contains("check the credentials (key id from the file ")
            && err.contains("s3-secret)"),
        "{err}"
    );

    let port = crate::support::free_port();
    let config = std::fs::read_to_string(p.path("converge.yaml"))
        .expect("config")
        .replace(&garage.endpoint(), &format!("http://127.0.0.1:{port}"));
    p.write("converge.yaml", config);
    let out = p.run(&[
        "claim",
        "put",
        "claims/dev-team1-ok.yaml",
        "--source",
        "bucket",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot reach http://127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn claim_rm_asks_or_needs_yes_and_removes_the_object() {
    let garage = Garage::shared();
    let b = garage.bucket();
    let p = bucket_project(garage, &b, "");
    let claim = new_claim(&p, "dev-team1-rm", &[]);
    let out = run_with_input(&p, &["claim", "put", "-", "--source", "bucket"], &claim);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // No terminal, no --yes: refused, the object stays.
    let out = p.run(&["claim", "rm", "dev-team1-rm", "--source", "bucket"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert!(b.get("dev-team1-rm.yaml").is_some());
    let out = p.run(&[
        "claim",
        "rm",
        "dev-team1-nope",
        "--source",
        "bucket",
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no claim object for dev-team1-nope"),
        "{}",
        stderr(&out)
    );
    let out = p.run(&["claim", "rm", "dev-team1-rm", "--source", "bucket", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("removed s3://{}/dev-team1-rm.yaml", b.name)
    );
    assert!(b.get("dev-team1-rm.yaml").is_none());
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn claim_extend_moves_the_expiry_up_to_the_maximum_lifetime_and_refuses_a_concurrent_edit() {
    let garage = Garage::shared();
    let b = garage.bucket();
    let p = bucket_project(garage, &b, "presets:\n  dev:\n    max_lifetime: 3d\n");
    let claim = new_claim(&p, "dev-team1-ext", &["--expires", "24h"]);
    let out = run_with_input(&p, &["claim", "put", "-", "--source", "bucket"], &claim);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let before: serde_json::Value =
        serde_saphyr::from_str(&String::from_utf8_lossy(&claim)).expect("yaml");
    let expiry = |text: &str| {
        serde_saphyr::from_str::<serde_json::Value>(text).expect("yaml")["expiration_date"]
            .as_str()
            .expect("a date")
            .to_owned()
    };
    let created = chrono::DateTime::parse_from_rfc3339(
        before["creation_date"].as_str().expect("creation_date"),
    )
    .expect("a date");
    let out = p.run(&[
        "claim",
        "extend",
        "dev-team1-ext",
        "--by",
        "24h",
        "--source",
        "bucket",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (text, etag) = b.get("dev-team1-ext.yaml").expect("there");
    let moved = (created + chrono::Duration::hours(48))
        .to_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(expiry(&text), moved, "{text}");
    assert!(stdout(&out).contains(&etag), "{}", stdout(&out));

    // Past the type's maximum lifetime: capped at creation + 3d.
    let out = p.run(&[
        "claim",
        "extend",
        "dev-team1-ext",
        "--by",
        "10d",
        "--source",
        "bucket",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("presets.dev.max_lifetime"),
        "{}",
        stderr(&out)
    );
    let (text, etag) = b.get("dev-team1-ext.yaml").expect("there");
    let cap = (created + chrono::Duration::hours(72))
        .to_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(expiry(&text), cap, "{text}");
    let out = p.run(&[
        "claim",
        "extend",
        "dev-team1-ext",
        "--by",
        "1h",
        "--source",
        "bucket",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("maximum lifetime"),
        "{}",
        stderr(&out)
    );
    // Someone edits the claim after it was read: extend on that version fails.
    let edited = text.replace("v1.2.3", "v1.2.4");
    let their_etag = b.put("dev-team1-ext.yaml", edited.clone(), &[]);
    let out = p.run(&[
        "claim",
        "extend",
        "dev-team1-ext",
        "--by",
        "1h",
        "--source",
        "bucket",
        "--if-match",
        &etag,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("changed since it was read") && stderr(&out).contains(&their_etag),
        "{}",
        stderr(&out)
    );
    assert_eq!(b.get("dev-team1-ext.yaml").expect("there").0, edited);
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn claim_put_and_rm_wait_for_the_daemon_to_apply_and_remove_the_environment() {
    let garage = Garage::shared();
    let b = garage.bucket();
    let p = bucket_project(garage, &b, "safety:\n  max_delete_fraction: 0.5\n");
    // Two environments besides ours, so removing one is no mass deletion.
    for name in ["dev-team1-w1", "dev-team1-w2"] {
        b.put(
            &format!("{name}.yaml"),
            crate::support::claim(name, "dev"),
            &[],
        );
    }
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    let url = format!("http://{}", d.addr);
    let claim = new_claim(&p, "dev-team1-wait", &[]);
    let out = run_with_input(
        &p,
        &[
            "claim", "put", "-", "--source", "bucket", "--wait", "--url", &url,
        ],
        &claim,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dev-team1-wait: applied and Ready"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        d.json("/api/v1/environments/dev-team1-wait")["status"],
        "Ready"
    );
    assert!(p.path("out/dev-team1-wait").exists());

    let out = p.run(&[
        "claim",
        "rm",
        "dev-team1-wait",
        "--source",
        "bucket",
        "--yes",
        "--wait",
        "--url",
        &url,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dev-team1-wait: gone"),
        "{}",
        stderr(&out)
    );
    assert!(!p.path("out/dev-team1-wait").exists());
    assert_eq!(d.get("/api/v1/environments/dev-team1-wait").0, 404);
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn claim_new_and_put_refuse_an_expiry_past_the_types_maximum_lifetime() {
    let garage = Garage::shared();
    let b = garage.bucket();
    let p = bucket_project(garage, &b, "presets:\n  dev:\n    max_lifetime: 3d\n");
    let out = p.run(&[
        "claim",
        "new",
        "dev-team1-far",
        "--type",
        "dev",
        "--pool",
        "team1",
        "--user",
        "john.doe@company.com",
        "--expires",
        "10d",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("(max-lifetime)"), "{}", stderr(&out));
    let far: String = String::from_utf8(new_claim(&p, "dev-team1-far", &[]))
        .expect("utf-8")
        .lines()
        .map(|l| {
            if l.starts_with("expiration_date:") {
                "expiration_date: \"2999-01-01T00:00:00Z\"\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let out = run_with_input(
        &p,
        &["claim", "put", "-", "--source", "bucket"],
        far.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1), "{far}\n{}", stderr(&out));
    assert!(stderr(&out).contains("(max-lifetime)"), "{}", stderr(&out));
    assert!(b.keys().is_empty());
}

#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn claim_propose_opens_a_pull_request_whose_plan_creates_the_environment() {
    use base64::Engine as _;
    let gitea = Gitea::shared();
    let repo = gitea.repo("claim-propose");
    let p = Project::new("");
    p.write("forge-token", gitea.user_token(AUTHOR));
    p.write(
        "converge.yaml",
        format!(
            "sources:\n  - name: envs\n    kind: git\n    url: {}\n    branch: main\n    \
             paths: [\"environments/*.yaml\"]\n    forge:\n      kind: gitea\n      token_file: forge-token\n\
             target:\n  kind: manifests\n  path: out\nstate_dir: .converge\n",
            repo.clone_url()
        ),
    );
    let pulls = || {
        gitea.ok(
            ADMIN,
            "GET",
            &format!("{}/pulls?state=open", repo.path()),
            None,
        )
    };
    // An invalid claim: nothing is opened.
    p.write(
        "typo.yaml",
        crate::support::claim("prod-b", "prod").replace("services:", "servces:"),
    );
    let out = p.run(&["claim", "propose", "typo.yaml", "--source", "envs"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("typo.yaml: /"), "{}", stderr(&out));
    assert_eq!(pulls().as_array().map(Vec::len), Some(0));

    p.write("prod-a.yaml", crate::support::claim("prod-a", "prod"));
    let out = p.run(&["claim", "propose", "prod-a.yaml", "--source", "envs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let url = stdout(&out).trim().to_owned();
    let open = pulls();
    let pr = &open.as_array().expect("pulls")[0];
    assert_eq!(pr["html_url"].as_str(), Some(url.as_str()), "{pr}");
    assert_eq!(pr["base"]["ref"], "main");
    assert_eq!(pr["title"], "claim: prod-a");
    let head = pr["head"]["ref"]
        .as_str()
        .expect("a head branch")
        .to_owned();
    assert!(head.starts_with("converge/claim-prod-a-"), "{head}");
    let file = gitea.ok(
        ADMIN,
        "GET",
        &format!(
            "{}/contents/environments/prod-a.yaml?ref={head}",
            repo.path()
        ),
        None,
    );
    let content = base64::engine::general_purpose::STANDARD
        .decode(file["content"].as_str().expect("content").replace('\n', ""))
        .expect("base64");
    assert_eq!(
        content,
        crate::support::claim("prod-a", "prod").into_bytes()
    );

    // What converge plans on the pull request: the environment created.
    repo.git(&["fetch", "-q", "origin"]);
    let work = repo.work().display().to_string();
    let plan = p.run(&[
        "plan",
        "--repo",
        &work,
        "--base",
        "origin/main",
        "--head",
        &format!("origin/{head}"),
    ]);
    assert_eq!(plan.status.code(), Some(1), "{}", stderr(&plan));
    assert!(stdout(&plan).contains("prod-a"), "{}", stdout(&plan));

    // A source that is not configured.
    let out = p.run(&["claim", "propose", "prod-a.yaml", "--source", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn claim_propose_wait_prints_the_plan_the_daemon_posts_on_the_pull_request() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("claim-propose-wait");
    let p = Project::new("");
    p.write("forge-token", gitea.user_token(AUTHOR));
    p.write(
        "converge.yaml",
        format!(
            "sources:\n  - name: envs\n    kind: git\n    url: {}\n    branch: main\n    \
             paths: [\"environments/*.yaml\"]\n    interval: 1s\n    forge:\n      kind: gitea\n      \
             token_file: forge-token\n      commit_statuses: false\n      context: converge/test\n\
             target:\n  kind: manifests\n  path: out\nstate_dir: .converge\n",
            repo.clone_url()
        ),
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("the first pass", |d| d.names().is_empty());

    p.write("prod-a.yaml", crate::support::claim("prod-a", "prod"));
    let out = p.run(&[
        "claim",
        "propose",
        "prod-a.yaml",
        "--source",
        "envs",
        "--wait",
        "--wait-timeout",
        "60s",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan = stdout(&out);
    assert!(
        plan.contains("<!-- converge:plan source=envs context=converge/test part=1 -->"),
        "the daemon's comment: {plan}"
    );
    assert!(plan.contains("`prod-a`"), "{plan}");
    assert!(
        stderr(&out).contains("converge/test/plan: success"),
        "{}",
        stderr(&out)
    );
    // Not merged: nothing applied.
    assert!(d.names().is_empty());

    // Without a daemon nothing plans it: --wait gives up (exit 2) saying
    // what it waited for.
    drop(d);
    p.write("prod-b.yaml", crate::support::claim("prod-b", "prod"));
    let out = p.run(&[
        "claim",
        "propose",
        "prod-b.yaml",
        "--source",
        "envs",
        "--wait",
        "--wait-timeout",
        "2s",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no plan status from converge on pull request"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn claim_put_wait_says_when_the_daemon_refuses_what_the_cli_accepted() {
    let garage = Garage::shared();
    let b = garage.bucket();
    // The pool limit is the daemon's to count (live environments): the
    // CLI accepts the claim, the daemon refuses it.
    let p = bucket_project(garage, &b, "limits:\n  environments_per_pool: 1\n");
    b.put(
        "dev-team1-first.yaml",
        crate::support::claim("dev-team1-first", "dev"),
        &[],
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-team1-first ready", |d| {
        d.names().contains(&"dev-team1-first".to_owned())
            && d.json("/api/v1/environments/dev-team1-first")["status"] == "Ready"
    });
    let url = format!("http://{}", d.addr);
    let claim = new_claim(&p, "dev-team1-second", &[]);
    let out = run_with_input(
        &p,
        &[
            "claim", "put", "-", "--source", "bucket", "--wait", "--url", &url,
        ],
        &claim,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("dev-team1-second: refused") && err.contains("environments_per_pool"),
        "{err}"
    );
    assert!(!p.path("out/dev-team1-second").exists());
}
