//! The git source against real repositories served on loopback by `git
//! daemon` and by `git http-backend` behind lighttpd. Repositories are built
//! with the real `git` (signed commits with `ssh-keygen` and `GnuPG`).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use converge::source::git::{Auth, GitSource, Options};
use converge::source::verify::Trust;
use converge::source::{Provenance, Source};

use crate::{Project, claim};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A bare "server" repository and a work clone that pushes to it.
pub struct Repo {
    pub root: tempfile::TempDir,
}

impl Repo {
    pub fn new() -> Repo {
        let root = tempfile::tempdir().expect("tempdir");
        let bare = root.path().join("srv/envs.git");
        std::fs::create_dir_all(&bare).expect("mkdir");
        git(&bare, &["init", "--bare", "-q", "-b", "main"]);
        git(root.path(), &["init", "-q", "-b", "main", "work"]);
        let work = root.path().join("work");
        for (k, v) in [
            ("user.name", "Jane Roe"),
            ("user.email", "jane.roe@company.com"),
            ("commit.gpgsign", "false"),
        ] {
            git(&work, &["config", k, v]);
        }
        git(
            &work,
            &["remote", "add", "origin", bare.to_str().expect("utf-8")],
        );
        Repo { root }
    }

    pub fn work(&self) -> PathBuf {
        self.root.path().join("work")
    }

    pub fn bare(&self) -> PathBuf {
        self.root.path().join("srv/envs.git")
    }

    /// Writes (or with `None` removes) files, commits with `message`, pushes.
    pub fn commit(&self, files: &[(&str, Option<&str>)], message: &str, extra: &[&str]) -> String {
        for (path, content) in files {
            let full = self.work().join(path);
            match content {
                Some(c) => {
                    std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
                    std::fs::write(&full, c).expect("write");
                }
                None => {
                    let _ = std::fs::remove_file(&full);
                }
            }
        }
        git(&self.work(), &["add", "-A"]);
        let mut args = vec!["commit", "-q", "--allow-empty", "-m", message];
        args.extend_from_slice(extra);
        git(&self.work(), &args);
        git(&self.work(), &["push", "-q", "-f", "origin", "HEAD:main"]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A server process stopped on drop.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "server on port {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `git daemon` serving `repo.root/srv` on a free loopback port.
pub fn git_daemon(repo: &Repo) -> Server {
    let port = free_port();
    let base = repo.root.path().join("srv");
    // Run git-daemon itself, not through the `git` wrapper (killing the
    // wrapper would leave the daemon serving).
    let exec_path = git(Path::new("."), &["--exec-path"]);
    let child = Command::new(Path::new(&exec_path).join("git-daemon"))
        .args([
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            "--export-all",
            "--reuseaddr",
        ])
        .arg(format!("--base-path={}", base.display()))
        .arg(&base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("git daemon starts");
    wait_for_port(port);
    Server {
        child,
        url: format!("git://127.0.0.1:{port}/envs.git"),
    }
}

/// `git http-backend` behind lighttpd; with `tls`, HTTPS with basic auth
/// (`ci` / `s3cret`) and a test CA (`<root>/ca.pem`).
pub fn http_server(repo: &Repo, tls: bool) -> Option<Server> {
    let auth = tls;
    let lighttpd = ["/usr/sbin/lighttpd", "/usr/bin/lighttpd"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let backend = [
        "/usr/lib/git-core/git-http-backend",
        "/usr/libexec/git-core/git-http-backend",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())?;
    let port = free_port();
    let dir = repo.root.path();
    let htpasswd = dir.join("htpasswd");
    std::fs::write(&htpasswd, "ci:s3cret\n").expect("write");
    let auth_conf = if auth {
        format!(
            "server.modules += (\"mod_auth\", \"mod_authn_file\")\nauth.backend = \"plain\"\nauth.backend.plain.userfile = \"{}\"\n\
             auth.require = (\"/\" => (\"method\" => \"basic\", \"realm\" => \"git\", \"require\" => \"valid-user\"))\n",
            htpasswd.display()
        )
    } else {
        String::new()
    };
    let tls_conf = if tls {
        crate::daemon::test_ca(dir)?;
        format!(
            "server.modules += (\"mod_openssl\")\nssl.engine = \"enable\"\nssl.pemfile = \"{0}/cert.pem\"\nssl.privkey = \"{0}/key.pem\"\n",
            dir.display()
        )
    } else {
        String::new()
    };
    let conf = format!(
        "server.modules = (\"mod_alias\", \"mod_cgi\", \"mod_setenv\")\n{auth_conf}{tls_conf}server.document-root = \"{root}\"\n\
         server.bind = \"127.0.0.1\"\nserver.port = {port}\nserver.errorlog = \"{root}/lighttpd.log\"\n\
         alias.url = (\"/git/\" => \"{backend}/\")\ncgi.assign = (\"\" => \"\")\n\
         setenv.set-environment = (\"GIT_PROJECT_ROOT\" => \"{root}/srv\", \"GIT_HTTP_EXPORT_ALL\" => \"1\")\n",
        root = dir.display(),
    );
    let conf_path = dir.join("lighttpd.conf");
    std::fs::write(&conf_path, conf).expect("write");
    let child = Command::new(lighttpd)
        .args(["-D", "-f"])
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_for_port(port);
    let scheme = if tls { "https" } else { "http" };
    Some(Server {
        child,
        url: format!("{scheme}://127.0.0.1:{port}/git/envs.git"),
    })
}

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
fn plain_http_serves_the_source() {
    let repo = Repo::new();
    repo.commit(
        &[("environments/dev-a.yaml", Some(&claim("dev-a", "dev")))],
        "first",
        &[],
    );
    let Some(server) = http_server(&repo, false) else {
        crate::daemon::skip_tool("lighttpd is not installed");
        return;
    };
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
fn https_with_basic_auth_works_and_bad_credentials_fail_without_leaking() {
    let repo = Repo::new();
    repo.commit(
        &[("environments/dev-a.yaml", Some(&claim("dev-a", "dev")))],
        "first",
        &[],
    );
    let Some(server) = http_server(&repo, true) else {
        crate::daemon::skip_tool("lighttpd with mod_openssl, or openssl, is not installed");
        return;
    };
    let p = git_project(&server.url, "");
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
    assert_eq!(ok.status.code(), Some(1), "{}", crate::stderr(&ok));
    assert!(
        crate::stdout(&ok).contains("+ dev-a"),
        "{}",
        crate::stdout(&ok)
    );
    std::fs::remove_dir_all(p.path(".converge")).expect("fresh mirror");
    std::fs::write(p.path("converge.yaml"), with_auth("wrong")).expect("write");
    let bad = plan(&p);
    assert_eq!(bad.status.code(), Some(2));
    let err = crate::stderr(&bad);
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
        !crate::stderr(&bad).contains("wrong-password-123"),
        "credentials in a URL are sanitized: {}",
        crate::stderr(&bad)
    );
}

/// An ed25519 key, an allowed-signers file naming it, and a work repo configured to sign with it.
fn ssh_signing(repo: &Repo) -> PathBuf {
    let key = repo.root.path().join("signing");
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "ci@company.com",
            "-f",
        ])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
    let allowed = repo.root.path().join("allowed_signers");
    std::fs::write(
        &allowed,
        format!("ci@company.com namespaces=\"git\" {public}"),
    )
    .expect("write");
    git(&repo.work(), &["config", "gpg.format", "ssh"]);
    git(
        &repo.work(),
        &["config", "user.signingkey", key.to_str().expect("utf-8")],
    );
    allowed
}

#[test]
fn ssh_signed_commits_verify_against_allowed_signers_and_unsigned_ones_do_not() {
    let repo = Repo::new();
    let allowed = ssh_signing(&repo);
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
    if !made.status.success() {
        crate::daemon::skip_tool(&format!(
            "gpg cannot make a key: {}",
            String::from_utf8_lossy(&made.stderr)
        ));
        return;
    }
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

fn git_project(url: &str, extra: &str) -> Project {
    let p = Project::new("");
    let config = format!(
        "sources:\n  - name: envs\n    kind: git\n    url: {url}\n    branch: main\n    paths: [\"environments/**/*.yaml\"]\n    timeout: 3s\n    interval: 1s\n\
         target:\n  kind: manifests\n  path: out\nstate_dir: .converge\nsafety:\n  max_delete_fraction: 0.5\n{extra}"
    );
    std::fs::write(p.path("converge.yaml"), config).expect("write");
    p
}

#[test]
fn a_push_drives_the_daemon_end_to_end_with_commit_and_author_in_the_api() {
    let repo = Repo::new();
    repo.commit(
        &[("environments/dev-a.yaml", Some(&claim("dev-a", "dev")))],
        "first",
        &[],
    );
    let server = git_daemon(&repo);
    let p = git_project(&server.url, "");
    let d = crate::daemon::Daemon::start(p.dir.path());
    d.wait_for("dev-a", |d| d.names() == ["dev-a"]);
    let c2 = repo.commit(
        &[("environments/dev-b.yaml", Some(&claim("dev-b", "dev")))],
        "add b\n\nReviewed-by: Ops <ops@x>",
        &[],
    );
    d.wait_for("dev-b", |d| d.names() == ["dev-a", "dev-b"]);
    assert!(p.path("out/dev-b/namespace-dev-b.yaml").exists());
    let detail = d.json("/api/v1/environments/dev-b");
    assert_eq!(detail["revision"], c2, "{detail}");
    assert_eq!(detail["provenance"]["commit"], c2, "{detail}");
    assert_eq!(
        detail["provenance"]["author"]["email"], "jane.roe@company.com",
        "{detail}"
    );
    let sources = d.json("/api/v1/sources");
    assert_eq!(sources["items"][0]["kind"], "git");
    drop(server);
    d.wait_for("the source error", |d| {
        !d.json("/api/v1/sources")["items"][0]["last_error"].is_null()
    });
    assert_eq!(
        d.names(),
        ["dev-a", "dev-b"],
        "a server outage deletes nothing"
    );
    assert_eq!(p.environments(), ["dev-a", "dev-b"]);
}

/// The value of one integer sample (a counter, a histogram count), by
/// `name{labels}` exactly as exposed in `/metrics`.
fn sample(d: &crate::daemon::Daemon, series: &str) -> u64 {
    let (status, body) = d.get("/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{series} in\n{body}"))
}

#[test]
fn idle_polls_are_counted_and_read_no_blobs() {
    let repo = Repo::new();
    repo.commit(
        &[
            ("environments/dev-a.yaml", Some(&claim("dev-a", "dev"))),
            ("environments/dev-b.yaml", Some(&claim("dev-b", "dev"))),
        ],
        "first",
        &[],
    );
    let server = git_daemon(&repo);
    let p = git_project(&server.url, "");
    let d = crate::daemon::Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    let polls = r#"converge_source_polls_total{source="envs"}"#;
    let ref_checks = r#"converge_git_ref_checks_total{source="envs"}"#;
    let fetches = r#"converge_git_fetches_total{source="envs"}"#;
    let blobs = r#"converge_git_blob_reads_total{source="envs"}"#;
    assert_eq!(sample(&d, blobs), 2, "the first read reads every claim");
    assert_eq!(sample(&d, fetches), 1);
    assert!(sample(&d, "converge_pass_ready_seconds_count") >= 1);
    let (polls0, checks0) = (sample(&d, polls), sample(&d, ref_checks));
    let passes0 = sample(&d, "converge_passes_total");
    // 1 s polls: wait for at least two idle ones.
    d.wait_for("two more polls", |d| sample(d, polls) >= polls0 + 2);
    assert!(
        sample(&d, ref_checks) >= checks0 + 2,
        "a ref check per poll"
    );
    assert_eq!(sample(&d, fetches), 1, "idle polls fetch nothing");
    assert_eq!(sample(&d, blobs), 2, "idle polls read no blobs");
    assert_eq!(
        sample(&d, "converge_passes_total"),
        passes0,
        "idle polls run no pass"
    );
    // A commit changing one claim: one fetch, one blob read, one more ready pass.
    let ready0 = sample(&d, "converge_pass_ready_seconds_count");
    repo.commit(
        &[(
            "environments/dev-b.yaml",
            Some(&claim("dev-b", "dev").replace("v1.2.3", "v1.2.4")),
        )],
        "bump b",
        &[],
    );
    d.wait_for("the new version", |d| {
        d.json("/api/v1/environments/dev-b")["claim"]["services"]["user-service"]["version"]
            == "v1.2.4"
    });
    assert_eq!(sample(&d, fetches), 2);
    assert_eq!(sample(&d, blobs), 3, "exactly one blob read");
    assert!(sample(&d, "converge_pass_ready_seconds_count") > ready0);
    let sources = d.json("/api/v1/sources");
    let item = &sources["items"][0];
    assert!(item["last_success"].is_string(), "{sources}");
    assert!(
        item["next_poll_in_ms"]
            .as_u64()
            .is_some_and(|ms| ms <= 1000),
        "a 1 s interval never waits longer: {sources}"
    );
}

#[test]
fn a_server_that_never_answers_times_out_and_the_next_read_fails_fast() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            keep.lock().expect("lock").push(stream); // accepted, never answered
        }
    });
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
    held.lock().expect("lock").clear();
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
    let allowed = ssh_signing(&repo);
    repo.commit(
        &[("environments/prod-a.yaml", Some(&claim("prod-a", "prod")))],
        "signed",
        &["-S"],
    );
    let server = git_daemon(&repo);
    let p = git_project(&server.url, "");
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
    let text = crate::stdout(&plan);
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
    let p = git_project(&server.url, "");
    let plan = crate::stdout(&p.run(&["plan"]));
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
    assert_eq!(md.status.code(), Some(1), "changes: {}", crate::stderr(&md));
    let text = crate::stdout(&md);
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
    assert_eq!(none.status.code(), Some(0), "{}", crate::stdout(&none));
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
fn ssh_with_a_key_file_goes_through_the_system_ssh() {
    let Some(sshd) = ["/usr/sbin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        crate::daemon::skip_tool("openssh-server (sshd) is not installed");
        return;
    };
    let repo = Repo::new();
    repo.commit(
        &[("environments/dev-a.yaml", Some(&claim("dev-a", "dev")))],
        "first",
        &[],
    );
    let dir = repo.root.path().join("ssh");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for key in ["host", "client", "stranger"] {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join(key))
            .output()
            .expect("ssh-keygen");
        assert!(out.status.success());
    }
    std::fs::copy(dir.join("client.pub"), dir.join("authorized_keys")).expect("authorize");
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = free_port();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\n\
         PidFile {d}/sshd.pid\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\n",
        d = dir.display()
    );
    std::fs::write(dir.join("sshd_config"), config).expect("write");
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sshd starts");
    let _server = Server {
        child,
        url: String::new(),
    };
    wait_for_port(port);
    let user = String::from_utf8_lossy(&Command::new("id").arg("-un").output().expect("id").stdout)
        .trim()
        .to_owned();
    let url = format!("ssh://{user}@127.0.0.1:{port}{}", repo.bare().display());
    let plan_with_key = |key: &str| {
        let p = git_project(&url, "");
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
    assert_eq!(ok.status.code(), Some(1), "{}", crate::stderr(&ok));
    assert!(
        crate::stdout(&ok).contains("+ dev-a"),
        "{}",
        crate::stdout(&ok)
    );
    let refused = plan_with_key("stranger");
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        crate::stdout(&refused)
    );
}

#[test]
fn a_repository_the_http_server_does_not_have_is_repository_missing() {
    let repo = Repo::new();
    repo.commit(
        &[("environments/dev-a.yaml", Some(&claim("dev-a", "dev")))],
        "first",
        &[],
    );
    let Some(server) = http_server(&repo, false) else {
        crate::daemon::skip_tool("lighttpd is not installed");
        return;
    };
    let state = tempfile::tempdir().expect("state");
    let url = server.url.replace("envs.git", "nope.git");
    let err = source(&url, state.path(), Auth::None, Trust::default())
        .read()
        .expect_err("no such repository");
    assert_eq!(err.reason(), "RepositoryMissing", "{err}");
}
