//! The CNCF distribution registry (`registry`, v3, built into the tools cache
//! by `scripts/tools`) on a free loopback port, plain HTTP, no auth, stopped
//! on drop: what the image test pushes to and pulls from.
//!
//! A minimal harness; the tag-source tests' harness (issue 14) has the same
//! `Registry::start(Auth::None)` and `host()` and adds basic and token auth.

use std::path::PathBuf;
use std::process::{Child, Stdio};

use super::{free_port, tethered, wait_for_port};

/// How the registry authenticates (this harness serves none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
}

/// A running registry.
pub struct Registry {
    _dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Registry {
    /// The binary: the tools cache's.
    #[must_use]
    pub fn binary() -> PathBuf {
        super::kube::tool("registry")
    }

    /// Starts a registry with empty storage.
    #[must_use]
    pub fn start(auth: Auth) -> Registry {
        let Auth::None = auth;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("write config");
        let child = tethered(Self::binary())
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("registry starts");
        wait_for_port(port);
        Registry {
            _dir: dir,
            port,
            child: Some(child),
        }
    }

    /// `127.0.0.1:PORT`.
    #[must_use]
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
