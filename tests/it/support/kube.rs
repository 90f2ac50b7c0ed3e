//! A real Kubernetes API server for the tests, on loopback, no containers:
//! etcd, kube-apiserver and kube-controller-manager (only the namespace and
//! garbage-collector controllers), built from Go modules by
//! `scripts/tools` into the tools cache.
//!
//! TLS is real: a test CA (made with openssl) signs the API server's
//! certificate for 127.0.0.1, and clients verify it with [`KubeApi::ca_file`].
//! Authentication is by static bearer tokens (`--token-auth-file`: the admin
//! token is in `system:masters`); authorization is RBAC, so `ServiceAccount`
//! tokens minted through the `TokenRequest` API carry only what their roles
//! grant. No clusterrole-aggregation controller runs, so the aggregated
//! cluster roles (`view`, `edit`, `admin`) have no rules: bind roles of your own.
//!
//! Each server runs under `scripts/tether`, which stops it when the pipe on its
//! stdin closes: when the handle is dropped, and also when the test process is
//! killed (even with `kill -9`), so no server outlives the tests. The crate
//! forbids unsafe code, tests included, which rules out `PR_SET_PDEATHSIG`.
//!
//! Tests that use it are `#[ignore = "needs kube-apiserver, etcd
//! (scripts/tools builds them)"]`; `scripts/test` runs them.
//!
//! [`KubeApi::start_scheduling`] is a cluster whose pods run: kube-scheduler,
//! kwok (a simulated kubelet: pods on its fake Nodes get an IP and turn
//! Running and Ready by its stages, no containers) and the controllers a
//! rollout needs (deployment, replicaset, resourcequota, service accounts).
//! Its Nodes carry none of converge's node-pool labels: a plain cluster, as
//! a new user's.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::TcpStream;

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to become ready: ~3 s on quiet cores, 8 s seen
/// while others compiled; generous for a loaded CI machine.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The issuer of `ServiceAccount` tokens.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// etcd, an API server and a controller manager, stopped on drop.
pub struct KubeApi {
    dir: tempfile::TempDir,
    port: u16,
    etcd_url: String,
    token: String,
    servers: Mutex<Servers>,
}

#[derive(Default)]
struct Servers {
    etcd: Option<Server>,
    apiserver: Option<Server>,
    controller_manager: Option<Server>,
    scheduler: Option<Server>,
    kwok: Option<Server>,
}

/// The controllers of a cluster whose pods schedule and run (see
/// [`KubeApi::start_scheduling`]); the quota controller fills in the usage
/// that quota admission needs before it admits a pod.
const ROLLOUT_CONTROLLERS: &str = "namespace,garbagecollector,deployment,replicaset,resourcequota,serviceaccount,serviceaccount-token";

impl KubeApi {
    /// Starts a new, empty cluster and waits until the API server's `/readyz`
    /// is ok (about 3 s on a quiet machine).
    #[must_use]
    pub fn start() -> KubeApi {
        Self::start_with(0)
    }

    /// A new cluster whose pods schedule and run: kube-scheduler, kwok and
    /// the rollout controllers, and `nodes` fake Nodes (`kwok-node-N`,
    /// annotated `kwok.x-k8s.io/node: fake`, Ready, untainted, without any
    /// `converge.dev/node-pool` label). Stopped on drop like the others.
    #[must_use]
    pub fn start_scheduling(nodes: usize) -> KubeApi {
        assert!(nodes > 0, "a scheduling cluster needs a Node");
        Self::start_with(nodes)
    }

    fn start_with(nodes: usize) -> KubeApi {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("converge-kube-")
            .tempdir()
            .expect("tempdir");
        make_certs(dir.path());
        let token = random_hex(32);
        std::fs::write(
            dir.path().join("tokens.csv"),
            format!("{token},admin,admin-uid,\"system:masters\"\n"),
        )
        .expect("write tokens.csv");
        let api = KubeApi {
            port: free_port(),
            etcd_url: String::new(),
            token,
            servers: Mutex::new(Servers::default()),
            dir,
        };
        let api = api.start_etcd();
        api.write_kubeconfig(&api.kubeconfig(), None, &api.token);
        api.start_apiserver();
        if nodes == 0 {
            api.start_controller_manager("namespace,garbagecollector");
        } else {
            api.start_controller_manager(ROLLOUT_CONTROLLERS);
            api.start_scheduler_and_kwok();
            for n in 0..nodes {
                api.add_node(&format!("kwok-node-{n}"));
            }
        }
        eprintln!(
            "kube: API server at {} ready in {:.1} s",
            api.url(),
            started.elapsed().as_secs_f64()
        );
        api
    }

    /// The cluster every test shares that needs no isolation (one per test
    /// binary; it stops when the test process exits).
    pub fn shared() -> &'static KubeApi {
        static SHARED: OnceLock<KubeApi> = OnceLock::new();
        SHARED.get_or_init(KubeApi::start)
    }

    /// `https://127.0.0.1:PORT`; the same across [`KubeApi::restart_apiserver`].
    #[must_use]
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The CA certificate (PEM) that signed the API server's certificate.
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A bearer token of `admin` in `system:masters`.
    #[must_use]
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// The admin kubeconfig (context `converge-test`), written at start.
    #[must_use]
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// Writes a kubeconfig for this server and `token` to `path`: one cluster,
    /// user and context named `context` (default `converge-test`), which is
    /// the current context. The CA is referenced by its absolute path, so the
    /// file works from any directory while this server lives.
    pub fn write_kubeconfig(&self, path: &Path, context: Option<&str>, token: &str) {
        let context = context.unwrap_or("converge-test");
        let config = format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: {context}\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\n\
             users:\n- name: {context}\n  user:\n    token: {token}\n\
             contexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\n\
             current-context: {context}\n",
            url = self.url(),
            ca = self.ca_file().display(),
        );
        std::fs::write(path, config).expect("write kubeconfig");
    }

    /// Runs the built kubectl with the admin kubeconfig.
    #[must_use]
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_input(args, "")
    }

    /// Runs kubectl with `input` on its stdin (`apply -f -`).
    #[must_use]
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> Output {
        let mut child = Command::new(tool("kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .env_remove("KUBECONFIG")
            .env("KUBECACHEDIR", self.dir.path().join("kubectl-cache"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_owned();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().expect("kubectl output");
        let _ = writer.join();
        out
    }

    /// kubectl `args`, which must succeed; its stdout.
    #[must_use]
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        ok(&self.kubectl(args), args)
    }

    /// kubectl `args` with `input` on stdin, which must succeed; its stdout.
    #[must_use]
    pub fn kubectl_with_input_ok(&self, args: &[&str], input: &str) -> String {
        ok(&self.kubectl_with_input(args, input), args)
    }

    /// A token of `ServiceAccount` `namespace/name` (created, with its
    /// Namespace, when missing), minted through the `TokenRequest` API: it
    /// can do what RBAC grants that account, for a kubeconfig from
    /// [`KubeApi::write_kubeconfig`].
    #[must_use]
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        for args in [
            &["create", "namespace", namespace][..],
            &["create", "serviceaccount", name, "-n", namespace],
        ] {
            let out = self.kubectl(args);
            assert!(
                out.status.success()
                    || String::from_utf8_lossy(&out.stderr).contains("already exists"),
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.kubectl_ok(&["create", "token", name, "-n", namespace, "--duration=1h"])
            .trim()
            .to_owned()
    }

    /// Marks a Deployment rolled out, as its controller would (none runs in
    /// the test cluster): its status subresource says every replica is
    /// updated, ready and available for its current generation.
    pub fn roll_out(&self, namespace: &str, name: &str) {
        let d: serde_json::Value = serde_json::from_str(&self.kubectl_ok(&[
            "get",
            "deployment",
            name,
            "-n",
            namespace,
            "-o",
            "json",
        ]))
        .expect("JSON");
        let generation = d["metadata"]["generation"].as_i64().expect("generation");
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let status = serde_json::json!({"status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
            ]
        }});
        let _ = self.kubectl_ok(&[
            "patch",
            "deployment",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    }

    /// Stops the API server (etcd and the controller manager keep running),
    /// for tests of an API server gone mid-run.
    pub fn stop_apiserver(&self) {
        let server = self.servers().apiserver.take();
        drop(server);
    }

    /// Starts the API server again (after [`KubeApi::stop_apiserver`]) on the
    /// same port and etcd, and waits until it is ready.
    pub fn start_apiserver(&self) {
        assert!(
            self.servers().apiserver.is_none(),
            "start_apiserver: one is running"
        );
        let bin = tool("kube-apiserver");
        let d = self.dir.path();
        let p = |name: &str| d.join(name).display().to_string();
        let args = [
            format!("--etcd-servers={}", self.etcd_url),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--secure-port={}", self.port),
            format!("--cert-dir={}", p("apiserver-certs")),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/12".to_owned(),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--authorization-mode=RBAC".to_owned(),
            "--disable-admission-plugins=ServiceAccount".to_owned(),
            "--endpoint-reconciler-type=none".to_owned(),
            "--profiling=false".to_owned(),
        ];
        let mut server = Server::spawn(
            "kube-apiserver",
            &bin,
            &args,
            &d.join("apiserver.log"),
            // Its graceful shutdown drains watches for up to 60 s; an API
            // server gone at once is also what "stopped mid-run" tests want.
            0,
            None,
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            server.check_running();
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self
                    .kubectl(&["get", "--raw", "/readyz", "--request-timeout=5s"])
                    .status
                    .success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready in {READY_TIMEOUT:?}:\n{}",
                server.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.servers().apiserver = Some(server);
    }

    /// Stops the API server and starts it again on the same port and etcd.
    pub fn restart_apiserver(&self) {
        self.stop_apiserver();
        self.start_apiserver();
    }

    /// Stops everything (the controller manager, the API server, etcd) and
    /// removes the temporary directory (data, certificates, logs); the drop
    /// does this too.
    pub fn stop(&self) {
        let mut servers = self.servers();
        drop(servers.kwok.take());
        drop(servers.scheduler.take());
        drop(servers.controller_manager.take());
        drop(servers.apiserver.take());
        drop(servers.etcd.take());
    }

    /// The log of `component` (`etcd`, `apiserver`, `controller-manager`,
    /// `scheduler`, `kwok`).
    #[must_use]
    pub fn log(&self, component: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{component}.log")))
            .unwrap_or_default()
    }

    fn servers(&self) -> MutexGuard<'_, Servers> {
        self.servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn start_etcd(mut self) -> KubeApi {
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let args = [
            "--name=converge-test".to_owned(),
            format!("--data-dir={}", self.dir.path().join("etcd").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=converge-test={peer_url}"),
            "--unsafe-no-fsync".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        let mut server = Server::spawn(
            "etcd",
            &tool("etcd"),
            &args,
            &self.dir.path().join("etcd.log"),
            5,
            // etcd stops last; its tether removes the directory even when the
            // test process was killed or this is the never-dropped shared one.
            Some(self.dir.path()),
        );
        let deadline = Instant::now() + READY_TIMEOUT;
        while !http_get(client, "/health").contains("\"health\":\"true\"") {
            server.check_running();
            assert!(
                Instant::now() < deadline,
                "etcd not healthy in {READY_TIMEOUT:?}:\n{}",
                server.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.etcd_url = client_url;
        self.servers().etcd = Some(server);
        self
    }

    fn start_controller_manager(&self, controllers: &str) {
        let d = self.dir.path();
        let args = [
            format!("--kubeconfig={}", self.kubeconfig().display()),
            format!("--controllers={controllers}"),
            format!(
                "--service-account-private-key-file={}",
                d.join("sa.key").display()
            ),
            format!("--root-ca-file={}", d.join("ca.crt").display()),
            "--leader-elect=false".to_owned(),
            "--bind-address=127.0.0.1".to_owned(),
            "--secure-port=0".to_owned(),
            "--use-service-account-credentials=false".to_owned(),
        ];
        let server = Server::spawn(
            "kube-controller-manager",
            &tool("kube-controller-manager"),
            &args,
            &self.dir.path().join("controller-manager.log"),
            0,
            None,
        );
        self.servers().controller_manager = Some(server);
    }

    /// kube-scheduler and kwok (managing only the Nodes annotated
    /// `kwok.x-k8s.io/node: fake`, with the fast node and pod stages
    /// `scripts/tools` keeps in `kwok-stages.yaml`), both on the admin
    /// kubeconfig, serving nothing of their own on the network.
    fn start_scheduler_and_kwok(&self) {
        let d = self.dir.path();
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig().display());
        let scheduler = Server::spawn(
            "kube-scheduler",
            &tool("kube-scheduler"),
            &[
                kubeconfig.clone(),
                "--leader-elect=false".to_owned(),
                "--secure-port=0".to_owned(),
            ],
            &d.join("scheduler.log"),
            0,
            None,
        );
        self.servers().scheduler = Some(scheduler);
        let kwok = Server::spawn(
            "kwok",
            &tool("kwok"),
            &[
                format!("--config={}", tool("kwok-stages.yaml").display()),
                kubeconfig,
                "--manage-all-nodes=false".to_owned(),
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".to_owned(),
                "--node-ip=10.0.0.1".to_owned(),
                "--server-address=127.0.0.1:0".to_owned(),
            ],
            &d.join("kwok.log"),
            0,
            None,
        );
        self.servers().kwok = Some(kwok);
    }

    /// A fake Node kwok manages, with room for pods, and waits until kwok
    /// has made it Ready; then takes off the `not-ready` taint the API
    /// server put on it at creation (no node lifecycle controller runs).
    fn add_node(&self, name: &str) {
        let capacity = serde_json::json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
        let node = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            "status": {"capacity": capacity, "allocatable": capacity},
        })
        .to_string();
        let _ = self.kubectl_with_input_ok(&["create", "-f", "-"], &node);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = self.kubectl_ok(&[
                "get",
                "node",
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            if ready.trim() == "True" {
                break;
            }
            if let Some(kwok) = self.servers().kwok.as_mut() {
                kwok.check_running();
            }
            assert!(
                Instant::now() < deadline,
                "kwok did not make Node {name} Ready in {READY_TIMEOUT:?}:\n{}",
                self.log("kwok")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = self.kubectl(&[
            "taint",
            "node",
            name,
            "node.kubernetes.io/not-ready:NoSchedule-",
        ]);
        assert!(
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("not found"),
            "kubectl taint: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One server process under `scripts/tether`, stopped on drop.
struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Runs `bin` under the tether, which stops it with SIGTERM and after
    /// `grace` seconds SIGKILL (0: SIGKILL at once), then removes `remove`.
    fn spawn(
        name: &'static str,
        bin: &Path,
        args: &[String],
        log: &Path,
        grace: u32,
        remove: Option<&Path>,
    ) -> Server {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let mut tether = Command::new(super::repo().join("scripts/tether"));
        tether.arg("--grace").arg(grace.to_string());
        if let Some(dir) = remove {
            tether.arg("--remove").arg(dir);
        }
        let child = tether
            .arg(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("scripts/tether {name}: {e}"));
        Server {
            name,
            child,
            log: log.to_owned(),
        }
    }

    /// Panics with the log when the server has exited.
    fn check_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_tail());
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing the pipe makes the tether stop the server.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A built tool from the tools cache (`$CONVERGE_TOOLS_DIR/bin`, default
/// `~/.cache/converge-test-tools/bin`).
#[must_use]
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("CONVERGE_TOOLS_DIR").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/converge-test-tools")
        },
        PathBuf::from,
    );
    let bin = dir.join("bin").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: scripts/tools builds it",
        bin.display()
    );
    bin
}

/// The test CA, the API server's certificate for 127.0.0.1 signed by it,
/// and the `ServiceAccount` token signing key pair, all made by openssl.
fn make_certs(dir: &Path) {
    std::fs::write(
        dir.join("openssl.cnf"),
        "[req]\ndistinguished_name = dn\n[dn]\n\
         [ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [server]\nbasicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, \
         DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, IP:10.96.0.1\n\
         subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
    )
    .expect("write openssl.cnf");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let config = ["-config", "openssl.cnf"];
    openssl(
        &[
            &["req", "-x509", "-extensions", "ca", "-days", "30"][..],
            &config,
            &ec,
            &[
                "-subj",
                "/CN=converge-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-new"][..],
            &config,
            &ec,
            &[
                "-subj",
                "/CN=kube-apiserver",
                "-keyout",
                "apiserver.key",
                "-out",
                "apiserver.csr",
            ],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-set_serial",
        &format!("0x{}", random_hex(16)),
        "-days",
        "30",
        "-extfile",
        "openssl.cnf",
        "-extensions",
        "server",
        "-out",
        "apiserver.crt",
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "sa.key",
    ]);
    openssl(&["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
}

/// A plain-HTTP GET on loopback (etcd's `/health`); the response, or "".
fn http_get(port: u16, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    if stream.write_all(request.as_bytes()).is_ok() {
        let _ = stream.read_to_string(&mut response);
    }
    response
}

fn ok(out: &Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn random_hex(len: usize) -> String {
    (0..len)
        .map(|_| char::from_digit(fastrand::u32(..16), 16).expect("a hex digit"))
        .collect()
}
