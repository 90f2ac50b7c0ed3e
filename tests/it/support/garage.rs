//! Garage, a real S3 server, on loopback ports: started and provisioned with
//! real `SigV4` keys (`garage key import`), one bucket per test ([`Bucket`],
//! written with `aws-sdk-s3` as a user's tooling would).
//!
//! Garage comes from `$GARAGE_BIN`, `PATH` or `scripts/test`'s install root
//! (`~/.cache/converge-test-tools/bin`); tests that need it are
//! `#[ignore = "needs garage (scripts/test builds it)"]`. Garage runs under
//! `scripts/garage`, which stops it when this test process is gone, so no
//! server outlives the tests (the shared server is a static, never dropped).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{free_port, repo};

/// The key every test uses (Garage key ids are `GK` + 24 hex digits).
pub const KEY_ID: &str = "GK0c0de0c0de0c0de0c0de0c01";
pub const SECRET: &str = "5ec2e7a15ec2e7a15ec2e7a15ec2e7a15ec2e7a15ec2e7a15ec2e7a15ec2e7a1";
pub const REGION: &str = "garage";

/// A Garage server on loopback ports, its data in a temporary directory.
pub struct Garage {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub s3_addr: SocketAddr,
    wrapper: Mutex<Option<Child>>,
}

impl Garage {
    /// The binary, or `None` when Garage is not installed.
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
    pub fn start() -> Garage {
        let bin =
            Self::binary().expect("needs garage (cargo install garage; scripts/test builds it)");
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
        garage
    }

    /// The server every test shares (one per test binary).
    pub fn shared() -> &'static Garage {
        static SHARED: OnceLock<Garage> = OnceLock::new();
        SHARED.get_or_init(Garage::start)
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
        let child = Command::new(repo().join("scripts/garage"))
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

/// The YAML of an s3 source named `bucket` (one item of `sources:`) for
/// `bucket` at `endpoint`, with the key in the files `id` and `secret`,
/// 1 s polls and a 5 s timeout; `extra` is appended.
pub fn source_yaml(endpoint: &str, bucket: &str, id: &Path, secret: &Path, extra: &str) -> String {
    format!(
        "  - name: bucket\n    kind: s3\n    endpoint: {endpoint}\n    region: {REGION}\n    bucket: {bucket}\n    \
         path_style: true\n    timeout: 5s\n    interval: 1s\n    credentials:\n      access_key_id_file: {}\n      \
         secret_access_key_file: {}\n{extra}",
        id.display(),
        secret.display()
    )
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

    /// The object at `key`, as text, and its `ETag`; `None` when there is none.
    pub fn get(&self, key: &str) -> Option<(String, String)> {
        let out = self
            .runtime
            .block_on(self.client.get_object().bucket(&self.name).key(key).send())
            .ok()?;
        let etag = out.e_tag().unwrap_or_default().trim_matches('"').to_owned();
        let body = self
            .runtime
            .block_on(out.body.collect())
            .expect("body")
            .into_bytes();
        Some((String::from_utf8_lossy(&body).into_owned(), etag))
    }

    /// Every key in the bucket.
    pub fn keys(&self) -> Vec<String> {
        let out = self
            .runtime
            .block_on(self.client.list_objects_v2().bucket(&self.name).send())
            .expect("list");
        out.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
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
