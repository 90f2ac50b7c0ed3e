//! A hostile OCI registry (`hostile_registry.py`, Python 3's standard
//! library only): the registry converge is configured with, on 127.0.0.1 and
//! a free port (TLS with a test CA when asked), and a foreign server on
//! another host (`127.0.0.1` on another port, or `127.0.0.2`) that it points
//! converge at with huge token lifetimes, foreign token realms and
//! redirects. Both record every request and its `Authorization` header, so
//! a test can assert that no credential reached the foreign one. The
//! hostile party is the point of the test, so it is written here rather than
//! being a real registry. Stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use super::{repo, tethered};

/// What the registry does to its client.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// A token answer with `expires_in: 18446744073709551615`.
    HugeToken,
    /// A bearer challenge whose realm is the foreign server over plain HTTP.
    ForeignRealm,
    /// Basic auth; `releases/billing` redirects to the foreign server,
    /// `releases/user-service` to another path of the registry itself.
    Redirect,
}

/// One request a server received.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Request {
    /// `registry` or `foreign`.
    pub server: String,
    pub path: String,
    pub authorization: Option<String>,
}

/// A running hostile registry.
pub struct HostileRegistry {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
    pub port: u16,
    /// `host:port` of the foreign server.
    pub foreign: String,
}

impl HostileRegistry {
    /// Starts it; `tls` is a directory with `cert.pem` and `key.pem`
    /// ([`super::test_ca`]) for a registry over HTTPS; `foreign_host` is
    /// where the foreign server listens (`127.0.0.1`, `127.0.0.2`).
    #[must_use]
    pub fn start(mode: Mode, tls: Option<&Path>, foreign_host: &str) -> HostileRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("requests.jsonl");
        let mode_arg = match mode {
            Mode::HugeToken => "huge-token",
            Mode::ForeignRealm => "foreign-realm",
            Mode::Redirect => "redirect",
        };
        let mut command = tethered("python3");
        command
            .arg(repo().join("tests/it/support/hostile_registry.py"))
            .args(["--mode", mode_arg, "--foreign-host", foreign_host])
            .arg("--log")
            .arg(&log);
        if let Some(tls) = tls {
            command
                .arg("--tls-cert")
                .arg(tls.join("cert.pem"))
                .arg("--tls-key")
                .arg(tls.join("key.pem"));
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("needs python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the ready line");
        let mut words = line.split_whitespace();
        assert_eq!(
            words.next(),
            Some("ready"),
            "hostile registry did not start: {line:?}"
        );
        let mut port = || -> u16 {
            words
                .next()
                .and_then(|p| p.parse().ok())
                .expect("a port in the ready line")
        };
        let (port, foreign_port) = (port(), port());
        HostileRegistry {
            child,
            log,
            _dir: dir,
            port,
            foreign: format!("{foreign_host}:{foreign_port}"),
        }
    }

    /// `127.0.0.1:PORT`, what `images.registry` names.
    #[must_use]
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request received so far, by either server.
    #[must_use]
    pub fn requests(&self) -> Vec<Request> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a request record"))
            .collect()
    }

    /// The requests the foreign server received.
    #[must_use]
    pub fn foreign_requests(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.server == "foreign")
            .collect()
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
