//! The git source against real repositories served on loopback by `git
//! daemon`, by `git http-backend` behind lighttpd and by sshd
//! (`support::git`). Repositories are built with the real `git` (signed
//! commits with `ssh-keygen` and `GnuPG`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use converge::source::git::{Auth, GitSource, Options};
use converge::source::verify::Trust;
use converge::source::{Provenance, Source};

use crate::support::fault_proxy::Silent;
use crate::support::git::{Repo, git, git_daemon, http_server, project, ssh_server};
use crate::support::{Project, claim, stderr, stdout};

fn source(url: &str, state: &Path, auth: Auth, trust: Trust) -> GitSource {
    source_with_timeout(url, state, auth, trust, Duration::from_secs(30))
}

fn source_with_timeout(
    url: &str,
    state: &Path,
    auth: Auth,
    trust: Trust,
    timeout: Duration,
) -> GitSource {
    GitSource::new(Options {
        name: "envs".into(),
        url: url.into(),
        branch: "main".into(),
        paths: vec![
            "environments/**/*.yaml".into(),
            "environments/**/*.json".into(),
        ],
        interval: Duration::from_secs(30),
        mirror: state.join("envs.git"),
        auth,
        trust,
        max_file_bytes: 1024 * 1024,
        timeout,
    })
    .expect("source")
}

fn counts(s: &GitSource) -> (u64, u64, u64) {
    (
        s.stats.ref_checks.load(Ordering::Relaxed),
        s.stats.fetches.load(Ordering::Relaxed),
        s.stats.blob_reads.load(Ordering::Relaxed),
    )
}

fn paths(snapshot: &converge::source::Snapshot) -> Vec<&str> {
    snapshot.files.iter().map(|f| f.path.as_str()).collect()
}

#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
fn a_repository_over_git_daemon_is_read_then_polled_incrementally() {
    let repo = Repo::new();
    repo.commit(
        &[
            (
                "environments/team1/dev-a.yaml",
                Some(&claim("dev-a", "dev")),
            ),
            (
                "environments/team1/dev-b.yaml",
                Some(&claim("dev-b", "dev")),
            ),
            ("environments/README.md", Some("not a claim")),
            ("other/dev-x.yaml", Some(&claim("dev-x", "dev"))),
        ],
        "first",
        &[],
    );
    let server = git_daemon(&repo);
    let state = tempfile::tempdir().expect("state");
    let mut s = source(&server.url, state.path(), Auth::None, Trust::default());

    let first = s.read().expect("first clone");
    assert_eq!(
        paths(&first),
        [
            "environments/team1/dev-a.yaml",
            "environments/team1/dev-b.yaml"
        ]
    );
    assert_eq!(counts(&s), (1, 1, 2));
    assert!(
        state.path().join("envs.git/HEAD").exists(),
        "a bare mirror, no worktree"
    );
    assert!(!state.path().join("envs.git/environments").exists());

    let again = s.read().expect("no-op poll");
    assert_eq!(again.revision, first.revision);
    assert_eq!(
        counts(&s),
        (2, 1, 2),
        "a ref check only: no fetch, no blob reads"
    );

    let c2 = repo.commit(
        &[(
            "environments/team1/dev-a.yaml",
            Some(&claim("dev-a", "dev").replace("v1.2.3", "v1.2.4")),
        )],
        "bump a",
        &[],
    );
    let third = s.read().expect("one-claim commit");
    assert_eq!(third.revision.0, c2);
    assert_eq!(counts(&s), (3, 2, 3), "exactly one blob read");
    let a = &third.files[0];
    assert!(
        String::from_utf8_lossy(match &a.content {
            converge::source::Content::Bytes(b) => b,
            other => panic!("{other:?}"),
        })
        .contains("v1.2.4")
    );
    match a.provenance.as_deref() {
        Some(Provenance::Git { commit, author, .. }) => {
            assert_eq!(commit, &c2);
            assert_eq!(author.email, "jane.roe@company.com");
        }
        other => panic!("{other:?}"),
    }

    // Many claims, a delete and a rename in one commit.
    let mut files: Vec<(String, Option<String>)> = (0..20)
        .map(|i| {
            (
                format!("environments/team2/dev-{i}.json"),
                Some(claim(&format!("dev-{i}"), "dev")),
            )
        })
        .collect();
    files.push(("environments/team1/dev-b.yaml".into(), None));
    let refs: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_deref()))
        .collect();
    repo.commit(&refs, "many", &[]);
    std::fs::create_dir_all(repo.work().join("environments/team3")).expect("mkdir");
    git(
        &repo.work(),
        &[
            "mv",
            "environments/team1/dev-a.yaml",
            "environments/team3/dev-a.yaml",
        ],
    );
    repo.commit(&[], "rename a", &[]);
    let fourth = s.read().expect("many, delete, rename");
    assert_eq!(fourth.files.len(), 21);
    assert!(paths(&fourth).contains(&"environments/team3/dev-a.yaml"));
    assert!(!paths(&fourth).iter().any(|p| p.ends_with("dev-b.yaml")));

    // A force-push that rewrites history is read against the new tree.
    git(&repo.work(), &["reset", "-q", "--hard", &c2]);
    git(
        &repo.work(),
        &["commit", "-q", "--amend", "-m", "rewritten"],
    );
    git(&repo.work(), &["push", "-q", "-f", "origin", "HEAD:main"]);
    let fifth = s.read().expect("after force-push");
    assert_eq!(
        paths(&fifth),
        [
            "environments/team1/dev-a.yaml",
            "environments/team1/dev-b.yaml"
        ]
    );

    // A deleted branch and a stopped server are errors, not empty snapshots.
    git(&repo.bare(), &["update-ref", "-d", "refs/heads/main"]);
    let err = s.read().expect_err("branch gone");
    assert_eq!(err.reason(), "BranchMissing", "{err}");
    drop(server);
    let err = s.read().expect_err("server down");
    assert_eq!(err.reason(), "Unreachable", "{err}");
}

#[test]
#[ignore = "needs lighttpd (scripts/test installs it)"]
fn plain_http_serves_the_source() {
    let repo = Repo::new();
    repo.commit(
        &[("environments/dev-a.yaml", Some(&claim("dev-a", "dev")))],
        "first",
        &[],
    );
    let server = http_server(&repo, false);
    let state = tempfile::tempdir().expect("state");
    let mut s = source(&server.url, state.path(), Auth::None, Trust::default());
    assert_eq!(
        paths(&s.read().expect("over http")),
        ["environments/dev-a.yaml"]
    );
    assert_eq!(counts(&s).1, 1);
    s.read().expect("no-op poll");
    assert_eq!(counts(&s), (2, 1, 1), "no fetch, no blob read");
}

#[test]
#[ignore = "needs lighttpd with mod_openssl, and openssl (scripts/test installs them)"]
fn https_with_basic_auth_works_and_bad_credentials_fail_without_leaking() {
    let repo = Repo::new();
    repo.commit(
        &[("environments/dev-a.yaml", Some(&claim("dev-a", "dev")))],
        "first",
        &[],
    );
    let server = http_server(&repo, true);
    let p = project(&server.url, "");
    p.write("password", "s3cret\n");
    p.write("wrong", "wrong-password-123\n");
    let config = std::fs::read_to_string(p.path("converge.yaml")).expect("config");
    let with_auth = |file: &str| {
        config.replace(
            "    interval: 1s\n",
            &format!(
                "    interval: 1s\n    auth:\n      username: ci\n      password_file: {file}\n"
            ),
        )
    };
    let ca = repo.root.path().join("ca.pem");
    let plan = |p: &Project| {
        std::process::Command::new(env!("CARGO_BIN_EXE_converge"))
            .args(["plan"])
            .current_dir(p.dir.path())
            .env("SSL_CERT_FILE", &ca)
            .env("CONVERGE_LOG", "warn")
            .output()
            .expect("converge runs")
    };
    std::fs::write(p.path("converge.yaml"), with_auth("password")).expect("write");
    let ok = plan(&p);
    assert_eq!(ok.status.code(), Some(1), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("+ dev-a"), "{}", stdout(&ok));
    std::fs::remove_dir_all(p.path(".converge")).expect("fresh mirror");
    std::fs::write(p.path("converge.yaml"), with_auth("wrong")).expect("write");
    let bad = plan(&p);
    assert_eq!(bad.status.code(), Some(2));
    let err = stderr(&bad);
    assert!(
        err.contains("AuthFailed") || err.to_lowercase().contains("auth"),
        "{err}"
    );
    assert!(!err.contains("wrong-password-123"), "{err}");
    let leaky = config.replace(
        &server.url,
        &server
            .url
            .replace("https://", "https://ci:wrong-password-123@"),
    );
    std::fs::write(p.path("converge.yaml"), leaky).expect("write");
    let bad = plan(&p);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        !stderr(&bad).contains("wrong-password-123"),
        "credentials in a URL are sanitized: {}",
        stderr(&bad)
    );
}

#[test]
fn ssh_signed_commits_verify_against_allowed_signers_and_unsigned_ones_do_not() {
    let repo = Repo::new();
    let allowed = repo.ssh_signing();
    let signed = repo.commit(
        &[("environments/prod-a.yaml", Some(&claim("prod-a", "prod")))],
        "signed\n\nApproved-by: Jane <jane@x>",
        &["-S"],
    );
    let server = git_daemon(&repo);
    let state = tempfile::tempdir().expect("state");
    let trust = Trust::load(Some(&allowed), &[] as &[PathBuf]).expect("trust");
    let mut s = source(&server.url, state.path(), Auth::None, trust);
    let snap = s.read().expect("read");
    match snap.files[0].provenance.as_deref() {
        Some(Provenance::Git {
            commit,
            signature,
            trailers,
            ..
        }) => {
            assert_eq!(commit, &signed);
            assert!(signature.verified, "{signature:?}");
            assert_eq!(signature.kind, "ssh");
            assert_eq!(signature.signer.as_deref(), Some("ci@company.com"));
            assert_eq!(trailers["Approved-by"], ["Jane <jane@x>"]);
        }
        other => panic!("{other:?}"),
    }
    repo.commit(
        &[(
            "environments/prod-a.yaml",
            Some(&claim("prod-a", "prod").replace("v1.2.3", "v9.9.9")),
        )],
        "unsigned",
        &["--no-gpg-sign"],
    );
    let snap = s.read().expect("read");
    match snap.files[0].provenance.as_deref() {
        Some(Provenance::Git { signature, .. }) => assert!(
            !signature.verified && signature.kind == "none",
            "{signature:?}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
#[ignore = "needs gpg (scripts/test installs gnupg)"]
fn gnupg_signed_commits_verify_against_trusted_openpgp_keys() {
    let repo = Repo::new();
    let home = repo.root.path().join("gnupg");
    std::fs::create_dir_all(&home).expect("mkdir");
    let gpg = |args: &[&str]| {
        Command::new("gpg")
            .arg("--homedir")
            .arg(&home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .expect("gpg runs")
    };
    let made = gpg(&[
        "--quick-gen-key",
        "CI Bot <ci-bot@company.com>",
        "ed25519",
        "sign",
        "1d",
    ]);
    assert!(
        made.status.success(),
        "gpg cannot make a key: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let export = gpg(&["--armor", "--export", "ci-bot@company.com"]);
    let key_file = repo.root.path().join("ci-bot.asc");
    std::fs::write(&key_file, &export.stdout).expect("write key");
    git(&repo.work(), &["config", "gpg.program", "gpg"]);
    git(
        &repo.work(),
        &["config", "user.signingkey", "ci-bot@company.com"],
    );
    let out = Command::new("git")
        .args(["-c", "gpg.format=openpgp"])
        .args(["commit", "-q", "--allow-empty", "-S", "-m", "gpg signed"])
        .current_dir(repo.work())
        .env("GNUPGHOME", &home)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    repo.commit(
        &[("environments/dev-a.yaml", Some(&claim("dev-a", "dev")))],
        "placeholder",
        &[],
    );
    // Make the signed commit the tip: put the claim in the signed commit itself.
    git(&repo.work(), &["reset", "-q", "--soft", "HEAD~1"]);
    let out = Command::new("git")
        .args(["commit", "-q", "--amend", "-S", "-m", "gpg signed claim"])
        .current_dir(repo.work())
        .env("GNUPGHOME", &home)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    git(&repo.work(), &["push", "-q", "-f", "origin", "HEAD:main"]);
    let server = git_daemon(&repo);
    let state = tempfile::tempdir().expect("state");
    let trust = Trust::load(None, &[&key_file]).expect("trust");
    let mut s = source(&server.url, state.path(), Auth::None, trust);
    let snap = s.read().expect("read");
    match snap.files[0].provenance.as_deref() {
        Some(Provenance::Git { signature, .. }) => {
            assert!(signature.verified, "{signature:?}");
            assert_eq!(signature.kind, "gpg");
            assert!(
                signature
                    .signer
                    .as_deref()
                    .is_some_and(|s| s.contains("ci-bot@company.com")),
                "{signature:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let untrusted = Trust::default();
    let mut s = source(&server.url, &state.path().join("b"), Auth::None, untrusted);
    match s.read().expect("read").files[0].provenance.as_deref() {
        Some(Provenance::Git { signature, .. }) => assert!(!signature.verified),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_server_that_never_answers_times_out_and_the_next_read_fails_fast() {
    let silent = Silent::start();
    let port = silent.addr.port();
    let state = tempfile::tempdir().expect("state");
    let mut s = source_with_timeout(
        &format!("git://127.0.0.1:{port}/envs.git"),
        state.path(),
        Auth::None,
        Trust::default(),
        Duration::from_secs(1),
    );
    let started = Instant::now();
    let err = s.read().expect_err("no answer");
    assert_eq!(err.reason(), "Timeout", "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let started = Instant::now();
    let err = s.read().expect_err("still busy");
    assert_eq!(err.reason(), "Timeout", "{err}");
    assert!(err.to_string().contains("still running"), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "fails fast while the abandoned read runs"
    );
    // The server drops its connections: the abandoned read ends and the
    // next read is attempted again (and waits for its own answer).
    silent.hang_up();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let started = Instant::now();
        let err = s.read().expect_err("never answered");
        if started.elapsed() >= Duration::from_millis(900) {
            assert_eq!(err.reason(), "Timeout", "{err}");
            break;
        }
        assert!(Instant::now() < deadline, "the abandoned read never ended");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_unsigned_change_to_a_prod_claim_stays_at_its_last_acceptable_version() {
    let repo = Repo::new();
    let allowed = repo.ssh_signing();
    repo.commit(
        &[("environments/prod-a.yaml", Some(&claim("prod-a", "prod")))],
        "signed",
        &["-S"],
    );
    let server = git_daemon(&repo);
    let p = project(&server.url, "");
    let config = std::fs::read_to_string(p.path("converge.yaml")).expect("config").replace(
        "    interval: 1s\n",
        &format!("    interval: 1s\n    signatures:\n      required_for: [prod, stage]\n      allowed_signers: {}\n", allowed.display()),
    );
    std::fs::write(p.path("converge.yaml"), config).expect("write");
    assert_eq!(p.run(&["run", "--once"]).status.code(), Some(0));
    let deployment = p.path("out/prod-a/deployment-user-service.yaml");
    assert!(
        std::fs::read_to_string(&deployment)
            .expect("applied")
            .contains("v1.2.3")
    );
    repo.commit(
        &[(
            "environments/prod-a.yaml",
            Some(&claim("prod-a", "prod").replace("v1.2.3", "v6.6.6")),
        )],
        "unsigned",
        &["--no-gpg-sign"],
    );
    let plan = p.run(&["plan"]);
    let text = stdout(&plan);
    assert!(
        text.contains("prod-a left as it is (SignatureRequired)"),
        "{text}"
    );
    assert!(text.contains("(signature-required)"), "{text}");
    assert_eq!(p.run(&["run", "--once"]).status.code(), Some(0));
    assert!(
        std::fs::read_to_string(&deployment)
            .expect("kept")
            .contains("v1.2.3"),
        "not applied, not deleted"
    );
}

#[test]
fn a_static_claim_must_come_from_the_repository_and_branch_it_names() {
    let repo = Repo::new();
    let wrong = claim("prod-a", "prod").replace(
        "deployment_method: git",
        "deployment_method: git\ngit_repository: https://git.example.com/other.git\nbranch: main",
    );
    repo.commit(&[("environments/prod-a.yaml", Some(&wrong))], "first", &[]);
    let server = git_daemon(&repo);
    let p = project(&server.url, "");
    let plan = stdout(&p.run(&["plan"]));
    assert!(plan.contains("/git_repository"), "{plan}");
    assert!(plan.contains("(static-origin)"), "{plan}");
}

#[test]
fn the_pull_request_plan_shows_what_merging_would_do() {
    let repo = Repo::new();
    let with = |v: &str| claim("prod-a", "prod").replace("v1.2.3", v);
    let base = repo.commit(
        &[
            ("environments/prod-a.yaml", Some(&with("v1.2.3"))),
            ("environments/dev-b.yaml", Some(&claim("dev-b", "dev"))),
            ("environments/dev-c.yaml", Some(&claim("dev-c", "dev"))),
        ],
        "base",
        &[],
    );
    let head = repo.commit(
        &[
            ("environments/prod-a.yaml", Some(&with("v1.3.0"))),
            ("environments/dev-b.yaml", None),
            ("environments/dev-d.yaml", Some(&claim("dev-d", "dev"))),
            ("environments/bad.yaml", Some("environment_name: Bad\n")),
        ],
        "change",
        &[],
    );
    let p = Project::new("safety:\n  max_delete_fraction: 0.5\n");
    let work = repo.work();
    let run = |format: &str| {
        p.run(&[
            "plan",
            "--repo",
            work.to_str().expect("utf-8"),
            "--base",
            &base,
            "--head",
            &head,
            "--format",
            format,
        ])
    };
    let md = run("markdown");
    assert_eq!(md.status.code(), Some(1), "changes: {}", stderr(&md));
    let text = stdout(&md);
    assert!(text.contains("| + | `dev-d` |"), "{text}");
    assert!(text.contains("| - | `dev-b` |"), "{text}");
    assert!(text.contains("user-service v1.2.3 -> v1.3.0"), "{text}");
    assert!(text.contains("`environments/bad.yaml`"), "{text}");
    let json = run("json");
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(doc["environments"].as_array().expect("list").len(), 3);
    let none = p.run(&[
        "plan",
        "--repo",
        work.to_str().expect("utf-8"),
        "--base",
        &base,
        "--head",
        &base,
    ]);
    assert_eq!(none.status.code(), Some(0), "{}", stdout(&none));
}

/// `git fast-import` builds 10,000 claims and 1,000 one-claim commits in a second.
fn big_repository(repo: &Repo, claims: usize, commits: usize) {
    use std::fmt::Write as _;
    let now: u64 = 1_767_225_600;
    let mut stream = format!(
        "commit refs/heads/main\nmark :1\ncommitter Bot <bot@x> {now} +0000\ndata 4\nbulk\n"
    );
    for i in 0..claims {
        let body = claim(&format!("dev-{i}"), "dev");
        let _ = write!(
            stream,
            "M 100644 inline environments/dev-{i}.yaml\ndata {}\n{body}\n",
            body.len()
        );
    }
    for (c, mark) in (0..commits.saturating_sub(1)).zip(2_u64..) {
        let i = c % claims;
        let body = claim(&format!("dev-{i}"), "dev").replace("v1.2.3", &format!("v1.2.{}", 4 + c));
        let _ = write!(
            stream,
            "commit refs/heads/main\nmark :{mark}\ncommitter Bot <bot@x> {} +0000\ndata 6\nchange\nfrom :{}\n\
             M 100644 inline environments/dev-{i}.yaml\ndata {}\n{body}\n",
            now + mark,
            mark - 1,
            body.len()
        );
    }
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(repo.bare())
        .stdin(Stdio::piped())
        .spawn()
        .expect("fast-import");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stream.as_bytes())
        .expect("write");
    assert!(child.wait().expect("wait").success());
}

#[test]
fn ten_thousand_claims_and_a_thousand_commits_take_the_incremental_path() {
    let repo = Repo::new();
    big_repository(&repo, 10_000, 1_000);
    let server = git_daemon(&repo);
    let state = tempfile::tempdir().expect("state");
    let timeout = Duration::from_mins(10);
    let mut s = source_with_timeout(
        &server.url,
        state.path(),
        Auth::None,
        Trust::default(),
        timeout,
    );
    let first = s.read().expect("first read");
    assert_eq!(first.files.len(), 10_000);
    let pipeline = converge::pipeline_for(&converge::config::Config::default()).expect("pipeline");
    let mut cache = converge::pipeline::Cache::default();
    let options = converge::pipeline::Options {
        now: chrono::Utc::now(),
    };
    let live = converge::target::Inventory::default();
    let e1 = pipeline.evaluate_cached(std::slice::from_ref(&first), &live, options, &mut cache);
    assert_eq!(e1.counters.parsed, 10_000);
    // One new commit touching one claim: one blob read, one claim re-processed.
    git(&repo.work(), &["fetch", "-q", "origin"]);
    git(&repo.work(), &["reset", "-q", "--hard", "origin/main"]);
    repo.commit(
        &[(
            "environments/dev-42.yaml",
            Some(&claim("dev-42", "dev").replace("v1.2.3", "v7.0.0")),
        )],
        "one",
        &[],
    );
    let (_, _, blobs_before) = counts(&s);
    let second = s.read().expect("incremental read");
    assert_eq!(counts(&s).2 - blobs_before, 1, "exactly one blob read");
    let e2 = pipeline.evaluate_cached(std::slice::from_ref(&second), &live, options, &mut cache);
    assert_eq!(
        (
            e2.counters.parsed,
            e2.counters.validated,
            e2.counters.authorized
        ),
        (1, 1, 1)
    );
    assert_eq!(
        e2.desired["dev-42"].record.versions["user-service"].tag,
        "v7.0.0"
    );
}

#[test]
#[ignore = "needs sshd (scripts/test installs openssh-server)"]
fn ssh_with_a_key_file_goes_through_the_system_ssh() {
    let repo = Repo::new();
    repo.commit(
        &[("environments/dev-a.yaml", Some(&claim("dev-a", "dev")))],
        "first",
        &[],
    );
    let dir = repo.root.path().join("ssh");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for key in ["client", "stranger"] {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join(key))
            .output()
            .expect("ssh-keygen");
        assert!(out.status.success());
    }
    std::fs::copy(dir.join("client.pub"), dir.join("authorized_keys")).expect("authorize");
    let server = ssh_server(&dir);
    let url = format!("{}{}", server.url, repo.bare().display());
    let plan_with_key = |key: &str| {
        let p = project(&url, "");
        let config = std::fs::read_to_string(p.path("converge.yaml"))
            .expect("config")
            .replace(
                "    interval: 1s\n",
                &format!(
                    "    interval: 1s\n    auth:\n      ssh_key_file: {}\n",
                    dir.join(key).display()
                ),
            );
        std::fs::write(p.path("converge.yaml"), config).expect("write");
        Command::new(env!("CARGO_BIN_EXE_converge"))
            .arg("plan")
            .current_dir(p.dir.path())
            .env("HOME", &dir) // known_hosts lands in the test's directory
            .env("CONVERGE_LOG", "warn")
            .output()
            .expect("converge runs")
    };
    let ok = plan_with_key("client");
    assert_eq!(ok.status.code(), Some(1), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("+ dev-a"), "{}", stdout(&ok));
    let refused = plan_with_key("stranger");
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
}

#[test]
#[ignore = "needs lighttpd (scripts/test installs it)"]
fn a_repository_the_http_server_does_not_have_is_repository_missing() {
    let repo = Repo::new();
    repo.commit(
        &[("environments/dev-a.yaml", Some(&claim("dev-a", "dev")))],
        "first",
        &[],
    );
    let server = http_server(&repo, false);
    let state = tempfile::tempdir().expect("state");
    let url = server.url.replace("envs.git", "nope.git");
    let err = source(&url, state.path(), Auth::None, Trust::default())
        .read()
        .expect_err("no such repository");
    assert_eq!(err.reason(), "RepositoryMissing", "{err}");
}
