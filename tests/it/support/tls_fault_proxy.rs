//! A TLS-terminating fault proxy in front of the test API server
//! (`tls_fault_proxy.py`, Python 3's standard library only): converge talks
//! HTTPS to the proxy (a certificate for 127.0.0.1 from a test CA of its
//! own), the proxy talks HTTPS to the API server, and in between it sees
//! HTTP. So it can reset a connection in the middle of a response (after a
//! number of its bytes, a watch's stream included), which a plain TCP proxy
//! cannot do to TLS (`fault_proxy.rs` cuts the handshake). The proxy is the
//! hostile party of its tests, hence written here. Stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use super::kube::KubeApi;
use super::{repo, test_ca, tethered};

/// A running TLS fault proxy.
pub struct TlsFaultProxy {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl TlsFaultProxy {
    /// Starts a proxy in front of `api`, relaying only (no rule yet).
    #[must_use]
    pub fn start(api: &KubeApi) -> TlsFaultProxy {
        let dir = tempfile::tempdir().expect("tempdir");
        test_ca(dir.path());
        let upstream = api.url().trim_start_matches("https://").to_owned();
        let mut child = tethered("python3")
            .arg(repo().join("tests/it/support/tls_fault_proxy.py"))
            .arg("--cert")
            .arg(dir.path().join("cert.pem"))
            .arg("--key")
            .arg(dir.path().join("key.pem"))
            .args(["--upstream", &upstream])
            .arg("--upstream-ca")
            .arg(api.ca_file())
            .arg("--control")
            .arg(dir.path().join("control"))
            .arg("--log")
            .arg(dir.path().join("cuts.log"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("needs python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the proxy says where it listens");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("tls_fault_proxy.py did not start: {line:?}"));
        TlsFaultProxy { child, dir, port }
    }

    /// Writes a kubeconfig at `path` for `api`'s admin through this proxy.
    pub fn write_kubeconfig(&self, api: &KubeApi, path: &Path) {
        api.write_kubeconfig(path, None, api.admin_token());
        let text = std::fs::read_to_string(path).expect("kubeconfig");
        let text = text
            .replace(&api.url(), &format!("https://127.0.0.1:{}", self.port))
            .replace(
                &api.ca_file().display().to_string(),
                &self.ca_file().display().to_string(),
            );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    /// The CA that signed the proxy's certificate.
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Cuts the next `count` responses to requests whose request line
    /// contains `pattern` (`PATCH `, `watch=`), each after `bytes` bytes
    /// of it reached the client; `count` 0 relays only.
    pub fn cut(&self, pattern: &str, bytes: usize, count: u32) {
        assert!(!pattern.contains(char::is_whitespace), "one word");
        let control = self.dir.path().join("control");
        let tmp = self.dir.path().join("control.new");
        std::fs::write(&tmp, format!("{pattern} {bytes} {count}\n")).expect("write");
        std::fs::rename(tmp, control).expect("rename");
    }

    /// The request lines of the responses cut so far.
    #[must_use]
    pub fn cuts(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("cuts.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("cut "))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for TlsFaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
