//! converge's integration tests: one binary, a module per area, mirroring `src/`.
//! CLI tests run the built `converge` binary against temporary directories.

mod bad_input;
mod cli;
mod daemon;
mod examples;
mod git;
mod golden;
mod kube;
mod pipeline;
mod s3;
mod support;
mod target;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

    /// Environment directories under `out/`.
    #[must_use]
    pub fn environments(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("out"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
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
