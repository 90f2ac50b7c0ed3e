//! The daemon harness: `converge run` on a free loopback port (its log in the
//! project directory), stopped on drop, and a minimal HTTP/1.1 client for its
//! API. Waits are bounded polls (a timeout is a failure, never a performance
//! assertion).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tethered;

/// A running `converge run`.
pub struct Daemon {
    child: Option<Child>,
    pub addr: String,
    log: PathBuf,
}

impl Daemon {
    /// Starts `converge run --listen 127.0.0.1:0` in `dir` and waits until it listens.
    pub fn start(dir: &Path) -> Daemon {
        Self::try_start(dir).unwrap_or_else(|log| panic!("daemon did not start:\n{log}"))
    }

    /// Like `start`, but returns the log when the daemon exits or never listens.
    pub fn try_start(dir: &Path) -> Result<Daemon, String> {
        Self::try_start_limited(dir, None, "info")
    }

    /// Like `start`, logging at `level` (`CONVERGE_LOG`).
    pub fn start_logging(dir: &Path, level: &str) -> Daemon {
        Self::try_start_limited(dir, None, level)
            .unwrap_or_else(|log| panic!("daemon did not start:\n{log}"))
    }

    /// Like `start`, with soft and hard limits of `nofile` open files
    /// (`prlimit`, util-linux).
    pub fn start_with_open_files(dir: &Path, nofile: u64) -> Daemon {
        Self::try_start_limited(dir, Some(nofile), "info")
            .unwrap_or_else(|log| panic!("daemon did not start:\n{log}"))
    }

    fn try_start_limited(dir: &Path, nofile: Option<u64>, level: &str) -> Result<Daemon, String> {
        let log = dir.join(format!("daemon-{}.log", fastrand::u32(..)));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = match nofile {
            None => tethered(env!("CARGO_BIN_EXE_converge")),
            Some(n) => {
                let mut c = tethered("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(env!("CARGO_BIN_EXE_converge"));
                c
            }
        };
        let child = command
            .args(["run", "--listen", "127.0.0.1:0"])
            .current_dir(dir)
            .env("CONVERGE_LOG", level)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("converge starts");
        let mut daemon = Daemon {
            child: Some(child),
            addr: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let text = daemon.log();
            // Only a whole line: the log may be read while the daemon is
            // still writing it (a cut address fails to connect).
            if let Some((line, _)) = text
                .split("api listening on ")
                .nth(1)
                .and_then(|r| r.split("://").nth(1))
                .and_then(|r| r.split_once('\n'))
            {
                line.trim().clone_into(&mut daemon.addr);
                return Ok(daemon);
            }
            if let Some(status) = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                daemon.child = None;
                return Err(format!("exited with {status}:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(daemon.log())
    }

    /// The daemon's process id (`setpriv` execs converge in place).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A raw HTTP/1.1 request; returns (status, headers, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, String) {
        http(&self.addr, method, path, headers)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let (status, _, body) = self.request("GET", path, &[]);
        (status, body)
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON body")
    }

    /// Polls until `check` holds (at most 20 s).
    pub fn wait_for(&self, what: &str, mut check: impl FnMut(&Daemon) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if check(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}\n--- log ---\n{}", self.log());
    }

    pub fn names(&self) -> Vec<String> {
        self.items("")
            .iter()
            .map(|i| i["name"].as_str().expect("name").to_owned())
            .collect()
    }

    /// Every environment's list item that passes `filters` (`type=dev&…`,
    /// or empty), page after page (following `continue`).
    pub fn items(&self, filters: &str) -> Vec<serde_json::Value> {
        let mut items = Vec::new();
        let mut path = format!("/api/v1/environments?{filters}");
        loop {
            let page = self.json(&path);
            items.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["continue"].as_str() {
                Some(token) => {
                    path = format!("/api/v1/environments?{filters}&continue={token}");
                }
                None => return items,
            }
        }
    }

    /// The value of one integer sample (a counter, a histogram count), by
    /// `name{labels}` exactly as exposed in `/metrics`.
    pub fn sample(&self, series: &str) -> u64 {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{series} in\n{body}"))
    }

    /// SIGTERM, then the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("no exit after SIGTERM");
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal HTTP/1.1 client over loopback (Connection: close).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request = format!("{request}{k}: {v}\r\n");
    }
    if method == "POST" || method == "PUT" {
        request.push_str("Content-Length: 2\r\n\r\n{}");
    } else {
        request.push_str("\r\n");
    }
    stream.write_all(request.as_bytes()).expect("write");
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let mut head = String::new();
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        chunked |= line
            .to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked");
        head.push_str(&line);
    }
    let mut raw = Vec::new();
    if method != "HEAD" {
        reader.read_to_end(&mut raw).expect("body");
    }
    let body = if chunked { dechunk(&raw) } else { raw };
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap_or("0").trim(), 16)
                .unwrap_or(0);
        if size == 0 {
            return out;
        }
        raw = &raw[end + 2..];
        out.extend_from_slice(&raw[..size.min(raw.len())]);
        raw = &raw[(size + 2).min(raw.len())..];
    }
}
