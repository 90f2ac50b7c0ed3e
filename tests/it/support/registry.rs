//! The CNCF distribution registry (`registry`, v3, built into the tools cache
//! by `scripts/tools`), on a free loopback port, stopped on drop.
//!
//! Three modes ([`Auth`]): none (plain HTTP, no auth; what image tests need),
//! htpasswd basic auth (`ci` / `s3cret`, the bcrypt hash is fixed test data),
//! and bearer tokens: a small token server in front of the registry answers
//! `/token` (basic `ci` / `s3cret` → a fresh token) and lets only requests
//! with a token it issued through to the registry, answering others with a
//! `WWW-Authenticate: Bearer realm,service,scope` challenge, the flow Docker
//! Hub, GHCR and Harbor use. Tags are created by plain HTTP (a `{}` config
//! blob and one OCI manifest with no layers per tag, annotated with the tag
//! so every tag has its own digest and can be deleted alone).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::daemon::http;
use super::{free_port, tethered, wait_for_port};

/// The password of user `ci` in the basic and token modes.
pub const PASSWORD: &str = "s3cret";
/// bcrypt of [`PASSWORD`] (the registry's htpasswd accepts bcrypt only).
const HTPASSWD: &str = "ci:$2b$05$r1GYl2D.xvSEV9n0Agi5TO9zkh7FyirVw99lZ74vWvZw1l6k27laS\n";
/// sha256 of `{}`, the config blob every manifest names.
const CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// How the registry authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic,
    Token,
}

/// A running registry.
pub struct Registry {
    dir: tempfile::TempDir,
    auth: Auth,
    /// What clients talk to (the token server's port in token mode).
    pub port: u16,
    /// The registry's own port.
    backend: u16,
    child: Option<Child>,
    proxy: Option<TokenServer>,
}

impl Registry {
    /// The binary: `REGISTRY_BIN`, `PATH`, or the tools cache.
    #[must_use]
    pub fn binary() -> Option<PathBuf> {
        if let Some(bin) = std::env::var_os("REGISTRY_BIN") {
            return Some(PathBuf::from(bin));
        }
        let cache = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/converge-test-tools/bin"));
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain(cache)
            .map(|d| d.join("registry"))
            .find(|p| p.is_file())
    }

    /// Starts a registry with empty storage.
    #[must_use]
    pub fn start(auth: Auth) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = free_port();
        let mut auth_block = String::new();
        if auth == Auth::Basic {
            std::fs::write(dir.path().join("htpasswd"), HTPASSWD).expect("write htpasswd");
            auth_block = format!(
                "auth:\n  htpasswd:\n    realm: converge-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{backend}\n{auth_block}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("write config");
        let mut registry = Registry {
            dir,
            auth,
            port: backend,
            backend,
            child: None,
            proxy: None,
        };
        registry.resume();
        if auth == Auth::Token {
            let proxy = TokenServer::start(backend);
            registry.port = proxy.port;
            registry.proxy = Some(proxy);
        }
        registry
    }

    /// `127.0.0.1:PORT`, what `images.registry` names.
    #[must_use]
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the registry process (the token server stays; it answers 502).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again on the same port and storage.
    pub fn resume(&mut self) {
        let bin =
            Self::binary().expect("needs the distribution registry (scripts/tools builds it)");
        let child = tethered(bin)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("registry starts");
        self.child = Some(child);
        wait_for_port(self.backend);
    }

    fn direct(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if self.auth == Auth::Basic {
            all.push(("Authorization".to_owned(), format!("Basic {}", basic())));
        }
        raw(self.backend, method, path, &all, body)
    }

    /// Creates `repository:tag` (an empty image).
    pub fn push(&self, repository: &str, tag: &str) {
        assert_eq!(self.upload(repository, b"{}"), CONFIG_DIGEST);
        let manifest = manifest(tag);
        let (status, head) = self.direct(
            "PUT",
            &format!("/v2/{repository}/manifests/{tag}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            manifest.as_bytes(),
        );
        assert_eq!(status, 201, "manifest {repository}:{tag}: {head}");
    }

    /// Uploads a blob, returns its digest.
    pub fn upload(&self, repository: &str, bytes: &[u8]) -> String {
        use sha2::Digest;
        let digest = format!(
            "sha256:{}",
            converge::hex::encode(&sha2::Sha256::digest(bytes))
        );
        let (status, head) = self.direct(
            "POST",
            &format!("/v2/{repository}/blobs/uploads/"),
            &[],
            b"",
        );
        assert_eq!(status, 202, "start upload: {head}");
        let location = header(&head, "location").expect("upload location");
        let path = location
            .strip_prefix(&format!("http://127.0.0.1:{}", self.backend))
            .unwrap_or(&location)
            .to_owned();
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, head) = self.direct(
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            bytes,
        );
        assert_eq!(status, 201, "blob: {head}");
        digest
    }

    /// Pushes `layer` (a `.tar.gz`) as `repository:tag` in the layout
    /// `flux push artifact` writes: a `{}` config of type
    /// `application/vnd.cncf.flux.config.v1+json`, one layer of type
    /// `application/vnd.cncf.flux.content.v1.tar+gzip`, and the source and
    /// revision annotations. Returns the layer's digest.
    pub fn push_flux_artifact(&self, repository: &str, tag: &str, layer: &[u8]) -> String {
        self.push_flux_artifact_digests(repository, tag, layer).0
    }

    /// As [`Registry::push_flux_artifact`]; returns the layer's digest and
    /// the manifest's (what `repository@sha256:…` names).
    pub fn push_flux_artifact_digests(
        &self,
        repository: &str,
        tag: &str,
        layer: &[u8],
    ) -> (String, String) {
        use sha2::Digest;
        let config = self.upload(repository, b"{}");
        let digest = self.upload(repository, layer);
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
             \"config\":{{\"mediaType\":\"application/vnd.cncf.flux.config.v1+json\",\"digest\":\"{config}\",\"size\":2}},\
             \"layers\":[{{\"mediaType\":\"application/vnd.cncf.flux.content.v1.tar+gzip\",\"digest\":\"{digest}\",\"size\":{}}}],\
             \"annotations\":{{\"org.opencontainers.image.source\":\"https://git.example.com/svc/{repository}\",\
             \"org.opencontainers.image.revision\":\"{tag}@sha1:0000000000000000000000000000000000000000\"}}}}",
            layer.len()
        );
        let (status, head) = self.direct(
            "PUT",
            &format!("/v2/{repository}/manifests/{tag}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            manifest.as_bytes(),
        );
        assert_eq!(status, 201, "manifest {repository}:{tag}: {head}");
        let manifest_digest = format!(
            "sha256:{}",
            converge::hex::encode(&sha2::Sha256::digest(manifest.as_bytes()))
        );
        (digest, manifest_digest)
    }

    /// Deletes `repository:tag` (its manifest; every tag has its own).
    pub fn delete(&self, repository: &str, tag: &str) {
        use sha2::Digest;
        let digest = format!(
            "sha256:{}",
            converge::hex::encode(&sha2::Sha256::digest(manifest(tag).as_bytes()))
        );
        let (status, head) = self.direct(
            "DELETE",
            &format!("/v2/{repository}/manifests/{digest}"),
            &[],
            b"",
        );
        assert_eq!(status, 202, "delete {repository}:{tag}: {head}");
    }

    /// How the token server answers the next authorized requests (token
    /// mode): `None` passes one through, `Some(429)` asks to retry after 1 s,
    /// another status is an error answer.
    pub fn answer_next(&self, answers: &[Option<u16>]) {
        let proxy = self.proxy.as_ref().expect("answers need Auth::Token");
        proxy
            .answers
            .lock()
            .expect("answers")
            .extend(answers.iter().copied());
    }

    /// Tag-list requests that reached the registry through the token server.
    #[must_use]
    pub fn proxied(&self) -> usize {
        self.proxy
            .as_ref()
            .map_or(0, |p| p.forwarded.load(Ordering::Relaxed))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn manifest(tag: &str) -> String {
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{CONFIG_DIGEST}\",\"size\":2}},\"layers\":[],\"annotations\":{{\"converge.test/tag\":\"{tag}\"}}}}"
    )
}

fn basic() -> String {
    // "ci:s3cret"
    "Y2k6czNjcmV0".to_owned()
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// One request with a body, `Connection: close`; the status and the head.
fn raw(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        let _ = write!(request, "{k}: {v}\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("write");
    stream.write_all(body).expect("write body");
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    (status, head)
}

/// The token server in front of the registry.
struct TokenServer {
    port: u16,
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicUsize>,
    answers: Answers,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Answers = Arc<Mutex<std::collections::VecDeque<Option<u16>>>>;

impl TokenServer {
    fn start(backend: u16) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicUsize::new(0));
        let tokens: Arc<Mutex<HashSet<String>>> = Arc::default();
        let answers: Answers = Arc::default();
        let (s, f, a) = (stop.clone(), forwarded.clone(), answers.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (tokens, f, a) = (tokens.clone(), f.clone(), a.clone());
                        std::thread::spawn(move || serve(conn, port, backend, &tokens, &f, &a));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TokenServer {
            port,
            stop,
            forwarded,
            answers,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: any number of GET requests (keep-alive).
fn serve(
    conn: TcpStream,
    port: u16,
    backend: u16,
    tokens: &Mutex<HashSet<String>>,
    forwarded: &AtomicUsize,
    answers: &Mutex<std::collections::VecDeque<Option<u16>>>,
) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut out = conn.try_clone().expect("clone");
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let target = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let response = if target.starts_with("/token") {
            if get("authorization").as_deref() == Some(format!("Basic {}", basic()).as_str()) {
                let token = format!("t{}", fastrand::u64(..));
                tokens.lock().expect("tokens").insert(token.clone());
                let body = format!("{{\"token\":\"{token}\",\"expires_in\":300}}");
                reply(200, &[("Content-Type", "application/json")], &body)
            } else {
                reply(401, &[], "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}")
            }
        } else {
            let authorized = get("authorization")
                .and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned))
                .is_some_and(|t| tokens.lock().expect("tokens").contains(&t));
            let answer = if authorized {
                answers.lock().expect("answers").pop_front().flatten()
            } else {
                None
            };
            if authorized && answer == Some(429) {
                reply(
                    429,
                    &[("Retry-After", "1")],
                    "{\"errors\":[{\"code\":\"TOOMANYREQUESTS\"}]}",
                )
            } else if let (true, Some(status)) = (authorized, answer) {
                reply(status, &[], "{\"errors\":[{\"code\":\"UNAVAILABLE\"}]}")
            } else if authorized {
                forwarded.fetch_add(1, Ordering::Relaxed);
                forward(backend, &target)
            } else {
                let name = target
                    .strip_prefix("/v2/")
                    .and_then(|p| p.split("/tags/").next())
                    .unwrap_or("");
                let challenge = format!(
                    "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"converge-test\",scope=\"repository:{name}:pull\""
                );
                reply(
                    401,
                    &[
                        ("WWW-Authenticate", &challenge),
                        ("Content-Type", "application/json"),
                    ],
                    "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}",
                )
            }
        };
        if out.write_all(&response).is_err() {
            return;
        }
    }
}

fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        let _ = write!(r, "{k}: {v}\r\n");
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

/// GETs `target` from the registry and answers with its status, `Link`
/// header and body (502 when the registry is down).
fn forward(backend: u16, target: &str) -> Vec<u8> {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", backend)) else {
        return reply(502, &[], "");
    };
    drop(stream);
    let (status, head, body) = http(&format!("127.0.0.1:{backend}"), "GET", target, &[]);
    let link = header(&head, "link");
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(link) = &link {
        headers.push(("Link", link));
    }
    reply(status, &headers, &body)
}
