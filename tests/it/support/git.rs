//! Git servers on loopback for the git source: a bare repository and a work
//! clone built with the real `git` ([`Repo`]), served by `git daemon`
//! ([`git_daemon`]), by `git http-backend` behind lighttpd ([`http_server`],
//! plain or TLS with basic auth) and by sshd ([`ssh_server`]). Each server is
//! a [`Server`], stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Project, Server, free_port, test_ca, tethered, wait_for_port};

/// Runs `git ARGS` in `dir` at a fixed date; returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
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

    /// An ed25519 key (`ssh-keygen`), an allowed-signers file naming it
    /// (returned), and the work clone configured to sign with it.
    pub fn ssh_signing(&self) -> PathBuf {
        let key = self.root.path().join("signing");
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
        let allowed = self.root.path().join("allowed_signers");
        std::fs::write(
            &allowed,
            format!("ci@company.com namespaces=\"git\" {public}"),
        )
        .expect("write");
        git(&self.work(), &["config", "gpg.format", "ssh"]);
        git(
            &self.work(),
            &["config", "user.signingkey", key.to_str().expect("utf-8")],
        );
        allowed
    }
}

/// A project whose only source is the git repository at `url` (branch `main`,
/// `environments/**/*.yaml`, 1 s polls, 3 s timeout), with `extra` config appended.
pub fn project(url: &str, extra: &str) -> Project {
    let p = Project::new("");
    let config = format!(
        "sources:\n  - name: envs\n    kind: git\n    url: {url}\n    branch: main\n    paths: [\"environments/**/*.yaml\"]\n    timeout: 3s\n    interval: 1s\n\
         target:\n  kind: manifests\n  path: out\nstate_dir: .converge\nsafety:\n  max_delete_fraction: 0.5\n{extra}"
    );
    std::fs::write(p.path("converge.yaml"), config).expect("write");
    p
}

/// `git daemon` serving `repo.root/srv` on a free loopback port.
pub fn git_daemon(repo: &Repo) -> Server {
    let port = free_port();
    let base = repo.root.path().join("srv");
    // Run git-daemon itself, not through the `git` wrapper (killing the
    // wrapper would leave the daemon serving).
    let exec_path = git(Path::new("."), &["--exec-path"]);
    let child = tethered(Path::new(&exec_path).join("git-daemon"))
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
/// (`ci` / `s3cret`) and a test CA (`<root>/ca.pem`, made with `openssl`).
pub fn http_server(repo: &Repo, tls: bool) -> Server {
    let auth = tls;
    let lighttpd = ["/usr/sbin/lighttpd", "/usr/bin/lighttpd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("needs lighttpd (scripts/test installs it)");
    let backend = [
        "/usr/lib/git-core/git-http-backend",
        "/usr/libexec/git-core/git-http-backend",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("needs git-http-backend (part of git)");
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
        test_ca(dir);
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
    let child = tethered(lighttpd)
        .args(["-D", "-f"])
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("lighttpd starts");
    wait_for_port(port);
    let scheme = if tls { "https" } else { "http" };
    Server {
        child,
        url: format!("{scheme}://127.0.0.1:{port}/git/envs.git"),
    }
}

/// sshd on a free loopback port with a new host key in `dir`, accepting the
/// public keys in `dir/authorized_keys` for the current user (no passwords).
/// Its `url` is `ssh://USER@127.0.0.1:PORT`; append a repository's path.
pub fn ssh_server(dir: &Path) -> Server {
    let sshd = ["/usr/sbin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("needs sshd (scripts/test installs openssh-server)");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(dir.join("host"))
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = free_port();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\n\
         PidFile {d}/sshd.pid\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\n",
        d = dir.display()
    );
    std::fs::write(dir.join("sshd_config"), config).expect("write");
    let child = tethered(sshd)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sshd starts");
    let user = String::from_utf8_lossy(&Command::new("id").arg("-un").output().expect("id").stdout)
        .trim()
        .to_owned();
    let server = Server {
        child,
        url: format!("ssh://{user}@127.0.0.1:{port}"),
    };
    wait_for_port(port);
    server
}
