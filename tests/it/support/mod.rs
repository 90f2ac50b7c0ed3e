//! What the tests share: a temporary project and the built binary (here), and
//! the harnesses for real servers, each started on 127.0.0.1 on a free port and
//! stopped on drop. A harness whose tool is missing panics with what is
//! missing; tests that need such a tool are `#[ignore = "needs …"]`.
//!
//! - `daemon.rs`: `converge run` on a free port and an HTTP client for its API.
//! - `git.rs`: repositories built with the real `git`, served by `git daemon`,
//!   by `git http-backend` behind lighttpd (plain or TLS with basic auth) and by
//!   sshd.
//! - `garage.rs`: Garage, a real S3 server, and buckets written with the AWS SDK.
//! - `fault_proxy.rs`: network faults: a server that accepts and never answers,
//!   and a proxy that cuts connections after a number of requests.
//! - `tls_fault_proxy.rs`: a proxy that terminates TLS in front of the API
//!   server and resets connections in the middle of HTTPS responses.
//! - `registry.rs`: the CNCF distribution registry (no auth, htpasswd basic
//!   auth, or bearer tokens from a token server in front of it), tags pushed
//!   and deleted by plain HTTP; the image test pushes to it too.
//! - `hostile_registry.rs`: a registry written in Python that attacks its
//!   client (huge token lifetimes, foreign token realms, redirects to another
//!   host) and records every `Authorization` header it and its foreign
//!   accomplice receive.
//! - `sops.rs`: age identities (`age-keygen`) and claims encrypted by the
//!   real `sops` CLI.
//! - `kube.rs`: a Kubernetes API server (etcd, kube-apiserver,
//!   kube-controller-manager) for the kubernetes target; opt-in, a cluster
//!   whose pods schedule and run (kube-scheduler, kwok and fake Nodes).
//! - `gitea.rs`: a real Gitea (the forge tests): users admin, reviewer and
//!   author, repositories, pushes over HTTP, pull requests, reviews, merges,
//!   comments and commit statuses.

pub mod daemon;
pub mod fault_proxy;
pub mod garage;
pub mod git;
pub mod gitea;
pub mod hostile_registry;
pub mod kube;
pub mod registry;
pub mod sops;
pub mod tls_fault_proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A temporary quick-start-like project: `converge.yaml`, `claims/`, `out/`.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    /// A project with a dir source on `claims/`, a manifests target on `out/`, and `extra` config appended.
    #[must_use]
    pub fn new(extra: &str) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("claims")).expect("mkdir claims");
        let config = format!(
            "sources:\n  - name: local\n    kind: dir\n    path: claims\ntarget:\n  kind: manifests\n  path: out\n{extra}"
        );
        std::fs::write(dir.path().join("converge.yaml"), config).expect("write config");
        Project { dir }
    }

    #[must_use]
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path(rel)).expect("remove");
    }

    /// Runs `converge ARGS` in the project directory.
    #[must_use]
    pub fn run(&self, args: &[&str]) -> Output {
        converge(self.dir.path(), args)
    }

    /// Environment directories under `out/` (and anything else there but
    /// the writers' lock file).
    #[must_use]
    pub fn environments(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("out"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != converge::store::TARGET_LOCK_FILE)
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// Runs the built binary in `dir`.
#[must_use]
pub fn converge(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_converge"))
        .args(args)
        .current_dir(dir)
        .env("CONVERGE_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("converge runs")
}

#[must_use]
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[must_use]
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A valid claim (YAML) for `name` of `env_type`, owned by john in team1.
#[must_use]
pub fn claim(name: &str, env_type: &str) -> String {
    let method = if matches!(env_type, "prod" | "stage") {
        "git"
    } else {
        "dynamic"
    };
    format!(
        "user: john.doe@company.com\nenvironment_pool: team1\ncreation_date: \"2024-01-15T10:30:00Z\"\n\
         environment_name: {name}\nenvironment_type: {env_type}\nexpiration_date: null\n\
         deployment_method: {method}\nservices:\n  user-service: v1.2.3\n"
    )
}

/// The repository root (for examples and golden files).
#[must_use]
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on 127.0.0.1 for a server to bind later.
///
/// Chosen below Linux's ephemeral range (32768–60999), so no outgoing
/// connection can take it between this check and the server's bind (a port
/// from `bind(0)` could: etcd once died "address already in use"), and never
/// handed out twice by one test process.
#[must_use]
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..32_000);
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in 20000-32000 after 1000 tries")
}

/// Waits (at most 10 s) until something accepts connections on `port`.
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "server on port {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A command for `program` whose process is killed when the thread that
/// spawns it ends (`setpriv --pdeathsig`, where util-linux has it), so a
/// server started by a test never outlives it, even when the test process is
/// killed and no `Drop` runs.
#[must_use]
pub fn tethered(program: impl AsRef<std::ffi::OsStr>) -> Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    if Path::new(SETPRIV).exists() {
        let mut command = Command::new(SETPRIV);
        command.args(["--pdeathsig", "KILL", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A server process (see [`tethered`]) stopped on drop.
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

/// Whether `bin` is on `PATH`.
#[must_use]
pub fn which(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A test CA (`ca.pem`) and a leaf for 127.0.0.1 (`cert.pem`, `key.pem`) in
/// `dir`, made with `openssl`.
pub fn test_ca(dir: &Path) {
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write leaf.ext");
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let steps = [
        format!("req -x509 {ec} -days 1 -subj /CN=converge-test-CA -keyout ca.key -out ca.pem"),
        format!("req {ec} -subj /CN=127.0.0.1 -keyout key.pem -out leaf.csr"),
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile leaf.ext -out cert.pem".to_owned(),
    ];
    for args in &steps {
        let out = Command::new("openssl")
            .args(args.split(' '))
            .current_dir(dir)
            .output()
            .expect("needs openssl (scripts/test installs it)");
        assert!(
            out.status.success(),
            "openssl {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
