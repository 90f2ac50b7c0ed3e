//! The s3 source against a real S3 server: Garage on 127.0.0.1, started and
//! provisioned here with real `SigV4` keys (`garage key import`), one bucket
//! per test. Objects are uploaded with `aws-sdk-s3` itself.
//!
//! Garage comes from `$GARAGE_BIN`, `PATH` or `scripts/test`'s install root;
//! without it these tests are skipped, unless `CONVERGE_REQUIRE_TOOLS` is set
//! (as `scripts/test` does). Garage runs under `scripts/garage`, which stops it
//! when this test process is gone, so no server outlives the tests.
//!
//! Two faults are real network conditions, not mocks of S3: a listener that
//! accepts and never answers (timeouts) and a loopback proxy in front of
//! Garage that cuts connections after a number of requests (a listing
//! interrupted between pages).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use converge::config::Config;
use converge::source::s3::{Requests, S3Source};
use converge::source::{Content, Error, Provenance, Snapshot, Source, SourceFile};

use crate::daemon::Daemon;
use crate::{Project, claim};

/// The key every test uses (Garage key ids are `GK` + 24 hex digits).
const KEY_ID: &str = "GK0c0de0c0de0c0de0c0de0c01";
const SECRET: &str = "5ec2e7a15ec2e7a15ec2e7a15ec2e7a15ec2e7a15ec2e7a15ec2e7a15ec2e7a1";
const REGION: &str = "garage";

/// A Garage server on loopback ports, its data in a temporary directory.
pub struct Garage {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub s3_addr: SocketAddr,
    wrapper: Mutex<Option<Child>>,
}

impl Garage {
    /// The binary, or `None` (the test is skipped) when Garage is not installed.
    fn binary() -> Option<PathBuf> {
        if let Some(bin) = std::env::var_os("GARAGE_BIN") {
            return Some(PathBuf::from(bin));
        }
        let on_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        let cache = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/converge-test-tools/bin"));
        on_path
            .into_iter()
            .chain(cache)
            .map(|dir| dir.join("garage"))
            .find(|p| p.is_file())
    }

    /// Starts and provisions a new server: a one-node layout, the test key.
    pub fn start() -> Option<Garage> {
        let Some(bin) = Self::binary() else {
            return skip("garage (cargo install garage; scripts/test does)");
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let (s3_port, rpc_port) = (free_port(), free_port());
        let rpc_secret: String = (0..64)
            .map(|_| char::from_digit(fastrand::u32(..16), 16).expect("a hex digit"))
            .collect();
        let root = dir.path().display();
        std::fs::write(
            dir.path().join("garage.toml"),
            format!(
                "metadata_dir = \"{root}/meta\"\ndata_dir = \"{root}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{rpc_secret}\"\n\
                 [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n"
            ),
        )
        .expect("write garage.toml");
        std::fs::write(dir.path().join("key-id"), format!("{KEY_ID}\n")).expect("write");
        std::fs::write(dir.path().join("secret"), format!("{SECRET}\n")).expect("write");
        let garage = Garage {
            dir,
            bin,
            s3_addr: SocketAddr::from(([127, 0, 0, 1], s3_port)),
            wrapper: Mutex::new(None),
        };
        garage.run();
        let node = stdout_of(&garage.cli(&["node", "id", "-q"]));
        let node = node.split('@').next().expect("node id").trim().to_owned();
        garage.ok(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        garage.ok(&["layout", "apply", "--version", "1"]);
        garage.ok(&[
            "key",
            "import",
            "--yes",
            "-n",
            "converge-test",
            KEY_ID,
            SECRET,
        ]);
        Some(garage)
    }

    /// The server every test shares (one per test binary), or `None` to skip.
    pub fn shared() -> Option<&'static Garage> {
        static SHARED: OnceLock<Option<Garage>> = OnceLock::new();
        SHARED.get_or_init(Garage::start).as_ref()
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.s3_addr)
    }

    /// Runs the server (under `scripts/garage`) until the CLI reaches it.
    fn run(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("garage.log"))
            .expect("log file");
        let child = Command::new(crate::repo().join("scripts/garage"))
            .arg(std::process::id().to_string())
            .arg(self.dir.path().join("garage.toml"))
            .env("GARAGE_BIN", &self.bin)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("scripts/garage starts");
        *self.wrapper.lock().expect("lock") = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.cli(&["status"]).status.success() && TcpStream::connect(self.s3_addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("garage did not start:\n{}", self.log());
    }

    /// Stops the server (its data stays for [`Garage::restart`]).
    pub fn stop(&self) {
        let Some(mut child) = self.wrapper.lock().expect("lock").take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts it again on the same ports with the same data.
    pub fn restart(&self) {
        self.run();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("garage runs")
    }

    fn ok(&self, args: &[&str]) {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "garage {args:?}: {}{}",
            stdout_of(&out),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new empty bucket the test key may read and write.
    pub fn bucket(&self) -> Bucket {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}-{}",
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        self.ok(&["bucket", "create", &name]);
        self.ok(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &name,
            "--key",
            "converge-test",
        ]);
        Bucket::new(&self.endpoint(), &name)
    }

    /// The credential files of the test key.
    pub fn key_files(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("key-id"),
            self.dir.path().join("secret"),
        )
    }

    /// A source config for `bucket` (at `endpoint`, default the server's),
    /// with the test key.
    pub fn source_yaml(&self, bucket: &str, extra: &str) -> String {
        let (id, secret) = self.key_files();
        source_yaml(&self.endpoint(), bucket, &id, &secret, extra)
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

fn source_yaml(endpoint: &str, bucket: &str, id: &Path, secret: &Path, extra: &str) -> String {
    format!(
        "  - name: bucket\n    kind: s3\n    endpoint: {endpoint}\n    region: {REGION}\n    bucket: {bucket}\n    \
         path_style: true\n    timeout: 5s\n    interval: 1s\n    credentials:\n      access_key_id_file: {}\n      \
         secret_access_key_file: {}\n{extra}",
        id.display(),
        secret.display()
    )
}

/// An s3 source built from config YAML, as `converge` builds it.
fn source(yaml: &str, max_file_bytes: u64) -> S3Source {
    let config = Config::parse(&format!("sources:\n{yaml}")).expect("config parses");
    S3Source::from_config(&config.sources[0], max_file_bytes).expect("source builds")
}

fn skip<T>(why: &str) -> Option<T> {
    assert!(
        std::env::var_os("CONVERGE_REQUIRE_TOOLS").is_none(),
        "required tool missing: {why}"
    );
    eprintln!("skipped: {why} (scripts/test installs it)");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bucket, written to with the AWS SDK (as a user's tooling would).
pub struct Bucket {
    pub name: String,
    client: aws_sdk_s3::Client,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    fn new(endpoint: &str, name: &str) -> Bucket {
        use aws_sdk_s3::config::{
            BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        };
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(KEY_ID, SECRET, None, None, "test"))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        Bucket {
            name: name.to_owned(),
            client: aws_sdk_s3::Client::from_conf(config),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    /// Uploads `body` to `key` with user metadata; returns the `ETag`.
    pub fn put(&self, key: &str, body: impl Into<Vec<u8>>, metadata: &[(&str, &str)]) -> String {
        let mut put = self
            .client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(body.into().into());
        for (k, v) in metadata {
            put = put.metadata(*k, *v);
        }
        let out = self.runtime.block_on(put.send()).expect("upload");
        out.e_tag().unwrap_or_default().trim_matches('"').to_owned()
    }

    /// Uploads many objects, 32 at a time.
    pub fn put_many(&self, objects: Vec<(String, Vec<u8>)>) {
        self.runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (key, body) in objects {
                if tasks.len() >= 32 {
                    tasks.join_next().await.expect("a task").expect("joins");
                }
                let put = self
                    .client
                    .put_object()
                    .bucket(&self.name)
                    .key(key)
                    .body(body.into())
                    .send();
                tasks.spawn(async move {
                    put.await.expect("upload");
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.expect("joins");
            }
        });
    }

    pub fn delete(&self, key: &str) {
        self.runtime
            .block_on(
                self.client
                    .delete_object()
                    .bucket(&self.name)
                    .key(key)
                    .send(),
            )
            .expect("delete");
    }
}

fn paths(snapshot: &Snapshot) -> Vec<&str> {
    snapshot.files.iter().map(|f| f.path.as_str()).collect()
}

fn file<'a>(snapshot: &'a Snapshot, key: &str) -> &'a SourceFile {
    snapshot
        .files
        .iter()
        .find(|f| f.path.ends_with(&format!("/{key}")))
        .unwrap_or_else(|| panic!("{key} in {:?}", paths(snapshot)))
}

fn text(f: &SourceFile) -> &str {
    match &f.content {
        Content::Bytes(b) => std::str::from_utf8(b).expect("utf-8"),
        other => panic!("{}: not bytes: {other:?}", f.path),
    }
}

/// The requests made by `f`.
fn requests_during<T>(s: &mut S3Source, f: impl FnOnce(&mut S3Source) -> T) -> (T, Requests) {
    let before = s.requests();
    let out = f(s);
    let after = s.requests();
    (
        out,
        Requests {
            list: after.list - before.list,
            get: after.get - before.get,
        },
    )
}

fn remote_reason(e: &Error) -> &'static str {
    match e {
        Error::S3 { .. } => e.reason(),
        other => panic!("not a remote error: {other}"),
    }
}

#[test]
fn the_first_listing_reads_claims_with_their_object_provenance_and_ignores_other_keys() {
    let Some(garage) = Garage::shared() else {
        return;
    };
    let b = garage.bucket();
    let etag = b.put(
        "team1/dev-x.yaml",
        claim("dev-x", "dev"),
        &[("uploader", "ci")],
    );
    b.put("dev-y.json", "{}", &[]);
    b.put("README.md", "not a claim", &[]);
    b.put("team1/.dev-x.yaml.swp", "editor junk", &[]);
    b.put("big.yaml", "x".repeat(2000), &[]);
    let mut s = source(&garage.source_yaml(&b.name, ""), 1000);
    let (snap, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    let bucket = &b.name;
    assert_eq!(
        paths(&snap),
        [
            format!("s3://{bucket}/big.yaml"),
            format!("s3://{bucket}/dev-y.json"),
            format!("s3://{bucket}/team1/dev-x.yaml"),
        ]
    );
    assert_eq!(
        n,
        Requests { list: 1, get: 2 },
        "the big object is not fetched"
    );
    assert_eq!(
        file(&snap, "big.yaml").content,
        Content::TooLarge {
            size: 2000,
            limit: 1000
        }
    );
    let dev_x = file(&snap, "dev-x.yaml");
    assert_eq!(text(dev_x), claim("dev-x", "dev"));
    let Some(Provenance::S3 {
        bucket: pb,
        key,
        etag: pe,
        last_modified,
        metadata,
    }) = dev_x.provenance.as_deref()
    else {
        panic!("s3 provenance: {dev_x:?}")
    };
    assert_eq!((pb, key.as_str(), pe), (bucket, "team1/dev-x.yaml", &etag));
    assert!(
        last_modified.as_deref().is_some_and(|t| t.ends_with('Z')),
        "{last_modified:?}"
    );
    assert_eq!(metadata.get("uploader").map(String::as_str), Some("ci"));
    assert!(!snap.is_static);
}

#[test]
fn an_idle_poll_lists_once_and_fetches_nothing() {
    let Some(garage) = Garage::shared() else {
        return;
    };
    let b = garage.bucket();
    b.put("a.yaml", claim("dev-a", "dev"), &[]);
    b.put("b.yaml", claim("dev-b", "dev"), &[]);
    let mut s = source(&garage.source_yaml(&b.name, ""), 1 << 20);
    let first = s.read().expect("reads");
    let (idle, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(n, Requests { list: 1, get: 0 });
    assert_eq!(idle.revision, first.revision);
    assert_eq!(idle.files, first.files);
}

#[test]
fn uploads_overwrites_and_deletes_fetch_only_what_changed() {
    let Some(garage) = Garage::shared() else {
        return;
    };
    let b = garage.bucket();
    b.put("a.yaml", claim("dev-a", "dev"), &[]);
    b.put("b.yaml", claim("dev-b", "dev"), &[]);
    let mut s = source(&garage.source_yaml(&b.name, ""), 1 << 20);
    let first = s.read().expect("reads");

    b.put("c.yaml", claim("dev-c", "dev"), &[]);
    let (added, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(n, Requests { list: 1, get: 1 }, "only the new object");
    assert_eq!(added.files.len(), 3);
    assert_ne!(added.revision, first.revision);

    let changed = claim("dev-a", "dev").replace("v1.2.3", "v1.2.4");
    b.put("a.yaml", changed.as_str(), &[("uploader", "ci")]);
    let (overwritten, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(n, Requests { list: 1, get: 1 }, "only the changed object");
    assert_eq!(text(file(&overwritten, "a.yaml")), changed);
    assert_eq!(file(&overwritten, "b.yaml"), file(&added, "b.yaml"));

    b.delete("b.yaml");
    let (deleted, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(n, Requests { list: 1, get: 0 });
    assert_eq!(deleted.files.len(), 2);
    assert!(!paths(&deleted).iter().any(|p| p.ends_with("/b.yaml")));
}

#[test]
fn twenty_five_hundred_objects_are_listed_across_pages_and_an_interrupted_listing_returns_nothing()
{
    let Some(garage) = Garage::shared() else {
        return;
    };
    let b = garage.bucket();
    let objects: Vec<(String, Vec<u8>)> = (0..2500)
        .map(|i| {
            let name = format!("dev-{i:04}");
            (
                format!("team1/{name}.yaml"),
                claim(&name, "dev").into_bytes(),
            )
        })
        .collect();
    b.put_many(objects);
    // Through a loopback proxy that can cut connections after N requests.
    let proxy = Proxy::start(garage.s3_addr);
    let (id, secret) = garage.key_files();
    let yaml = source_yaml(&proxy.endpoint(), &b.name, &id, &secret, "");
    let mut s = source(&yaml, 1 << 20);

    let (first, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(first.files.len(), 2500);
    assert_eq!(n, Requests { list: 3, get: 2500 });
    let (idle, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    eprintln!("idle poll of 2,500 objects: {} LIST, {} GET", n.list, n.get);
    assert_eq!(n, Requests { list: 3, get: 0 }, "⌈2500/1000⌉ LISTs, no GET");
    assert_eq!(idle.revision, first.revision);

    // The second page fails (every retry too): an error, nothing partial.
    b.put("team1/dev-new.yaml", claim("dev-new", "dev"), &[]);
    proxy.allow(1);
    let err = s.read().expect_err("an interrupted listing is an error");
    assert_eq!(remote_reason(&err), "ListingInterrupted", "{err}");
    assert!(err.to_string().contains("after 1 page"), "{err}");

    // The last good listing is still the base: only the new object is fetched.
    proxy.allow(-1);
    let (recovered, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(recovered.files.len(), 2501);
    assert_eq!(n, Requests { list: 3, get: 1 });
}

#[test]
fn wrong_credentials_fail_with_auth_failed_and_never_show_the_secret() {
    let Some(garage) = Garage::shared() else {
        return;
    };
    let b = garage.bucket();
    b.put("a.yaml", claim("dev-a", "dev"), &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = "0000000000000000000000000000000000000000000000000000000000000bad";
    for (id, secret) in [(KEY_ID, wrong), ("GK000000000000000000000000", SECRET)] {
        std::fs::write(dir.path().join("id"), id).expect("write");
        std::fs::write(dir.path().join("secret"), secret).expect("write");
        let yaml = source_yaml(
            &garage.endpoint(),
            &b.name,
            &dir.path().join("id"),
            &dir.path().join("secret"),
            "",
        );
        let err = source(&yaml, 1 << 20).read().expect_err("refused");
        assert_eq!(err.reason(), "AuthFailed", "{err}");
        let message = err.to_string();
        assert!(
            !message.contains(secret) && !message.contains(SECRET),
            "{message}"
        );
    }
}

#[test]
fn a_missing_bucket_is_an_error_not_an_empty_snapshot() {
    let Some(garage) = Garage::shared() else {
        return;
    };
    let mut s = source(&garage.source_yaml("no-such-bucket", ""), 1 << 20);
    let err = s.read().expect_err("refused");
    assert_eq!(err.reason(), "BucketMissing", "{err}");
    assert!(err.to_string().contains("no-such-bucket"), "{err}");
}

#[test]
fn a_server_that_never_answers_is_a_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("id"), KEY_ID).expect("write");
    std::fs::write(dir.path().join("secret"), SECRET).expect("write");
    let yaml = source_yaml(
        &format!("http://{addr}"),
        "environments",
        &dir.path().join("id"),
        &dir.path().join("secret"),
        "",
    )
    .replace("timeout: 5s", "timeout: 1s");
    let started = Instant::now();
    let err = source(&yaml, 1 << 20).read().expect_err("times out");
    assert_eq!(err.reason(), "Timeout", "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded");
}

#[test]
fn a_stopped_server_is_an_error_and_the_source_recovers_when_it_returns() {
    let Some(garage) = Garage::start() else {
        return;
    };
    let b = garage.bucket();
    b.put("a.yaml", claim("dev-a", "dev"), &[]);
    b.put("b.yaml", claim("dev-b", "dev"), &[]);
    let mut s = source(&garage.source_yaml(&b.name, ""), 1 << 20);
    let before = s.read().expect("reads");

    garage.stop();
    let err = s.read().expect_err("the server is down");
    assert_eq!(err.reason(), "Unreachable", "{err}");
    assert!(err.to_string().contains(&garage.endpoint()), "{err}");

    garage.restart();
    let (after, n) = requests_during(&mut s, |s| s.read().expect("reads again"));
    assert_eq!(after.revision, before.revision);
    assert_eq!(after.files, before.files);
    assert_eq!(n.get, 0, "the last good listing survived the outage");
}

#[test]
fn the_static_bucket_refuses_a_changed_object_and_keeps_serving_the_first_version() {
    let Some(garage) = Garage::shared() else {
        return;
    };
    let b = garage.bucket();
    let first = claim("prod-a", "prod");
    let first_etag = b.put("prod-a.yaml", first.as_str(), &[("uploader", "ci")]);
    let yaml = garage.source_yaml(&b.name, "    static: true\n");
    let mut s = source(&yaml, 1 << 20);
    let snap = s.read().expect("reads");
    assert!(snap.is_static);

    let second = first.replace("v1.2.3", "v9.9.9");
    let second_etag = b.put("prod-a.yaml", second.as_str(), &[("uploader", "mallory")]);
    b.put("prod-b.yaml", claim("prod-b", "prod"), &[]);
    let (refused, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(
        n,
        Requests { list: 1, get: 1 },
        "only the new key is fetched"
    );
    let a = file(&refused, "prod-a.yaml");
    assert_eq!(text(a), first, "the first version stays in force");
    let Some(Provenance::S3 { etag, metadata, .. }) = a.provenance.as_deref() else {
        panic!("provenance")
    };
    assert_eq!(etag, &first_etag);
    assert_eq!(metadata["uploader"], "ci");
    let notice = a.notice.as_ref().expect("a write-once notice");
    assert_eq!(notice.rule, "write-once");
    for part in [&b.name, "prod-a.yaml", &first_etag, &second_etag] {
        assert!(notice.message.contains(part), "{part}: {}", notice.message);
    }
    assert!(
        file(&refused, "prod-b.yaml").notice.is_none(),
        "new keys are accepted"
    );

    // A restarted source seeded with the last good snapshot keeps refusing,
    // and fetches nothing for an unchanged bucket.
    let mut restarted = source(&yaml, 1 << 20);
    assert_eq!(restarted.restore(&refused), 2);
    let (again, n) = requests_during(&mut restarted, |s| s.read().expect("reads"));
    assert_eq!(n, Requests { list: 1, get: 0 });
    assert_eq!(text(file(&again, "prod-a.yaml")), first);
    assert!(file(&again, "prod-a.yaml").notice.is_some());
    assert_eq!(again.revision, refused.revision);
}

#[test]
fn the_source_reads_from_sync_code_from_block_in_place_and_from_async_code() {
    let Some(garage) = Garage::shared() else {
        return;
    };
    let b = garage.bucket();
    b.put("a.yaml", claim("dev-a", "dev"), &[]);
    let mut s = source(&garage.source_yaml(&b.name, ""), 1 << 20);
    let plain = s.read().expect("reads from sync code");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        // As the daemon does.
        let daemon = tokio::task::block_in_place(|| s.read()).expect("reads in block_in_place");
        assert_eq!(daemon.revision, plain.revision);
        // Straight from async code (blocking a worker, but working).
        let direct = s.read().expect("reads from async code");
        assert_eq!(direct.revision, plain.revision);
        // Dropping the source inside a runtime does not panic.
        drop(s);
    });
}

/// A project whose only source is `bucket`, with the default policies plus
/// one that accepts bucket claims only when uploaded with `uploader=ci`.
fn bucket_project(garage: &Garage, b: &Bucket, extra: &str) -> Project {
    let p = Project::new("");
    let (id, secret) = garage.key_files();
    std::fs::copy(id, p.path("s3-key-id")).expect("copy");
    std::fs::copy(secret, p.path("s3-secret")).expect("copy");
    for f in ["default.cedar", "converge.cedarschema", "entities.json"] {
        std::fs::create_dir_all(p.path("policies")).expect("mkdir");
        std::fs::copy(
            crate::repo().join("policies").join(f),
            p.path("policies").join(f),
        )
        .expect("copy policies");
    }
    p.write(
        "policies/uploader.cedar",
        "@id(\"bucket-claims-come-from-ci\")\nforbid (principal, action, resource)\nwhen {\n  \
         context.source.kind == \"s3\" &&\n  \
         !(context has object && context.object.metadata.contains(\"uploader=ci\"))\n};\n",
    );
    let yaml = source_yaml(
        &garage.endpoint(),
        &b.name,
        Path::new("s3-key-id"),
        Path::new("s3-secret"),
        extra,
    );
    p.write(
        "converge.yaml",
        format!(
            "sources:\n{yaml}target:\n  kind: manifests\n  path: out\nstate_dir: .converge\npolicies: policies\n"
        ),
    );
    p
}

#[test]
fn an_uploaded_claim_is_applied_by_the_daemon_and_its_object_shows_in_the_api() {
    let Some(garage) = Garage::shared() else {
        return;
    };
    let b = garage.bucket();
    let p = bucket_project(garage, &b, "");
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    assert!(d.names().is_empty());

    b.put(
        "team1/dev-s3.yaml",
        claim("dev-s3", "dev"),
        &[("uploader", "ci")],
    );
    b.put(
        "team1/dev-rogue.yaml",
        claim("dev-rogue", "dev"),
        &[("uploader", "alice")],
    );
    d.wait_for("dev-s3 ready", |d| {
        d.names().contains(&"dev-s3".to_owned())
            && d.json("/api/v1/environments/dev-s3")["status"] == "Ready"
    });
    assert!(p.path("out/dev-s3/namespace-dev-s3.yaml").exists());
    let detail = d.json("/api/v1/environments/dev-s3");
    assert_eq!(
        detail["source"],
        format!("bucket:s3://{}/team1/dev-s3.yaml", b.name)
    );
    let object = &detail["provenance"];
    assert_eq!(object["kind"], "s3", "{detail}");
    assert_eq!(object["bucket"].as_str(), Some(b.name.as_str()));
    assert_eq!(object["key"], "team1/dev-s3.yaml");
    assert_eq!(object["metadata"]["uploader"], "ci");
    assert!(
        object["etag"].as_str().is_some_and(|e| !e.is_empty())
            && object["last_modified"].is_string(),
        "{object}"
    );
    // The uploader's metadata reached the Cedar context: the other claim is
    // denied (a diagnostic, shown as an event naming the object).
    d.wait_for("dev-rogue denied", |d| {
        d.get("/api/v1/events")
            .1
            .contains("bucket-claims-come-from-ci")
    });
    let events = d.get("/api/v1/events").1;
    assert!(
        events.contains(&format!("s3://{}/team1/dev-rogue.yaml", b.name)),
        "{events}"
    );
    assert!(
        !p.path("out/dev-rogue").exists(),
        "a denied claim is not applied"
    );

    b.put(
        "team1/dev-s3.yaml",
        claim("dev-s3", "dev").replace("v1.2.3", "v1.2.4"),
        &[("uploader", "ci")],
    );
    d.wait_for("the new version", |d| {
        d.json("/api/v1/environments/dev-s3")["versions"]["user-service"]["tag"] == "v1.2.4"
    });
    let metrics = d.get("/metrics").1;
    assert!(
        metrics.contains("converge_s3_requests_total{source=\"bucket\",op=\"list\"}"),
        "{metrics}"
    );
}

/// A loopback TCP proxy that forwards to `upstream` and, when given a
/// budget, cuts every connection once that many requests went through.
struct Proxy {
    addr: SocketAddr,
    /// Requests still allowed; negative: no limit.
    budget: Arc<AtomicI64>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let budget = Arc::new(AtomicI64::new(-1));
        let shared = budget.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let budget = shared.clone();
                std::thread::spawn(move || forward(client, upstream, &budget));
            }
        });
        Proxy { addr, budget }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets `n` more requests through (negative: all).
    fn allow(&self, n: i64) {
        self.budget.store(n, Ordering::SeqCst);
    }
}

fn forward(mut client: TcpStream, upstream: SocketAddr, budget: &AtomicI64) {
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(mut from_server), Ok(mut to_client)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(std::net::Shutdown::Both);
    });
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let requests = buf[..n]
            .windows(5)
            .filter(|w| matches!(*w, b"GET /" | b"PUT /" | b"HEAD "))
            .count();
        let requests = i64::try_from(requests).expect("a few requests per read");
        if requests > 0 && !take(budget, requests) {
            let _ = client.shutdown(std::net::Shutdown::Both);
            let _ = server.shutdown(std::net::Shutdown::Both);
            return;
        }
        if server.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = server.shutdown(std::net::Shutdown::Write);
}

fn take(budget: &AtomicI64, n: i64) -> bool {
    let mut current = budget.load(Ordering::SeqCst);
    loop {
        if current < 0 {
            return true;
        }
        if current < n {
            return false;
        }
        match budget.compare_exchange(current, current - n, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return true,
            Err(now) => current = now,
        }
    }
}

#[test]
fn the_daemon_keeps_the_first_version_of_a_rewritten_static_object_with_a_condition() {
    let Some(garage) = Garage::shared() else {
        return;
    };
    let b = garage.bucket();
    let p = bucket_project(garage, &b, "    static: true\n");
    b.put(
        "prod-a.yaml",
        claim("prod-a", "prod"),
        &[("uploader", "ci")],
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("prod-a ready", |d| {
        d.names().contains(&"prod-a".to_owned())
            && d.json("/api/v1/environments/prod-a")["status"] == "Ready"
    });
    b.put(
        "prod-a.yaml",
        claim("prod-a", "prod").replace("v1.2.3", "v9.9.9"),
        &[("uploader", "ci")],
    );
    d.wait_for("the rewrite refused", |d| {
        d.get("/api/v1/environments/prod-a")
            .1
            .contains("NewerVersionRefused")
    });
    let detail = d.json("/api/v1/environments/prod-a");
    assert_eq!(
        detail["versions"]["user-service"]["tag"], "v1.2.3",
        "the first version stays in force: {detail}"
    );
    let deployment = std::fs::read_to_string(p.path("out/prod-a/deployment-user-service.yaml"))
        .expect("deployment");
    assert!(deployment.contains("user-service:v1.2.3"), "{deployment}");
}

#[test]
fn after_a_restart_bucket_claims_are_still_authorized_with_their_object_metadata() {
    let Some(garage) = Garage::shared() else {
        return;
    };
    let b = garage.bucket();
    let p = bucket_project(garage, &b, "");
    b.put(
        "team1/dev-s3.yaml",
        claim("dev-s3", "dev"),
        &[("uploader", "ci")],
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-s3 ready", |d| {
        d.names().contains(&"dev-s3".to_owned())
            && d.json("/api/v1/environments/dev-s3")["status"] == "Ready"
    });
    assert_eq!(d.terminate(), Some(0));
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    // A few polls of the unchanged bucket.
    std::thread::sleep(Duration::from_secs(3));
    let detail = d.json("/api/v1/environments/dev-s3");
    assert_eq!(detail["status"], "Ready", "{detail}");
}
