//! The container image `scripts/image` builds without a Docker daemon:
//! pushed to a real registry (the CNCF distribution registry), pulled back
//! with crane, its root filesystem extracted and run with chroot as the
//! image's non-root user.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::kube::tool;
use crate::support::registry::{Auth, Registry};
use crate::support::{repo, stderr, stdout};

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

fn crane(args: &[&str]) -> String {
    let out = Command::new(tool("crane"))
        .arg("--insecure")
        .args(args)
        .output()
        .expect("crane runs");
    ok(&out, &format!("crane {args:?}"))
}

/// Runs `args` inside `root` as the image's user: chroot as root, else an
/// unprivileged user namespace (`unshare --map-root-user --root`).
fn inside(root: &Path, args: &[&str]) -> Output {
    let uid = ok(
        &Command::new("id").arg("-u").output().expect("id runs"),
        "id -u",
    );
    let mut command = if uid.trim() == "0" {
        let mut c = Command::new("chroot");
        c.arg("--userspec=65532:65532").arg(root);
        c
    } else {
        let mut c = Command::new("unshare");
        c.args(["--user", "--map-root-user"])
            .arg(format!("--root={}", root.display()));
        c
    };
    command.args(args).output().expect("chroot runs")
}

/// Every regular file (path from the root) under `dir`.
fn files(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        let name = format!("{prefix}/{}", entry.file_name().to_string_lossy());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            files(&entry.path(), &name, out);
        } else {
            out.insert(name);
        }
    }
}

/// The checkout's commit.
fn head_commit() -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(["rev-parse", "HEAD"])
        .output()
        .expect("git runs");
    ok(&out, "git rev-parse HEAD").trim().to_owned()
}

#[test]
#[ignore = "needs registry and crane (scripts/tools builds them), and root or user namespaces"]
fn the_image_is_pushed_pulled_back_and_runs_converge_as_a_non_root_user() {
    let registry = Registry::start(Auth::None);
    let reference = format!("{}/converge:test", registry.host());
    let binary = env!("CARGO_BIN_EXE_converge");
    let out = Command::new(repo().join("scripts/image"))
        .args(["--binary", binary, "--push", &reference])
        .env(
            "PATH",
            format!(
                "{}:{}",
                tool("crane").parent().expect("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("scripts/image runs");
    ok(&out, "scripts/image");

    // The config: converge as entrypoint, run as the non-root user.
    let config: Value = serde_json::from_str(&crane(&["config", &reference])).expect("JSON");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/converge"])
    );
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["os"], "linux");
    // It says what it was built from: the checkout's commit.
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.revision"],
        head_commit()
    );

    // Pulled back: exactly the binary, the libraries it links, CA
    // certificates, users and groups.
    let root = tempfile::tempdir().expect("tempdir");
    let tarball = root.path().join("image.tar");
    crane(&["export", &reference, tarball.to_str().expect("UTF-8")]);
    let fs = root.path().join("rootfs");
    std::fs::create_dir(&fs).expect("mkdir");
    ok(
        &Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&fs)
            .output()
            .expect("tar runs"),
        "tar -x",
    );
    std::fs::remove_file(&tarball).expect("remove the tarball");
    let linked = ok(
        &Command::new("ldd").arg(binary).output().expect("ldd runs"),
        "ldd",
    );
    let mut expected: BTreeSet<String> = linked
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            match l.split_once("=> ") {
                Some((_, path)) => path.split_whitespace().next().map(str::to_owned),
                None => l
                    .starts_with('/')
                    .then(|| l.split_whitespace().next().unwrap_or_default().to_owned()),
            }
        })
        .collect();
    expected.extend(
        [
            "/usr/local/bin/converge",
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/passwd",
            "/etc/group",
            "/etc/nsswitch.conf",
        ]
        .map(str::to_owned),
    );
    let mut found = BTreeSet::new();
    files(&fs, "", &mut found);
    assert_eq!(found, expected);
    let passwd = std::fs::read_to_string(fs.join("etc/passwd")).expect("passwd");
    assert!(passwd.contains("converge:x:65532:65532:"), "{passwd}");

    // It runs: the version, and validate on the quick start.
    let out = inside(&fs, &["/usr/local/bin/converge", "--version"]);
    assert!(ok(&out, "converge --version").starts_with("converge "));
    let quickstart = fs.join("tmp/quickstart");
    std::fs::create_dir_all(&quickstart).expect("mkdir");
    for rel in ["converge.yaml", "claims"] {
        let out = Command::new("cp")
            .arg("-r")
            .arg(repo().join("examples/quickstart").join(rel))
            .arg(quickstart.join(rel))
            .output()
            .expect("cp runs");
        ok(&out, "cp");
    }
    let out = inside(
        &fs,
        &[
            "/usr/local/bin/converge",
            "validate",
            "--config",
            "/tmp/quickstart/converge.yaml",
            "/tmp/quickstart/claims",
        ],
    );
    let text = ok(&out, "converge validate in the image");
    assert!(text.contains("valid"), "{text}");
}

/// Without `--binary`, scripts/image packages what `cargo build --release`
/// wrote, in `$CARGO_TARGET_DIR` when it is set (a `cargo` on `PATH` that
/// records its call and writes the binary where the real one would).
#[test]
fn the_image_script_packages_the_binary_from_cargo_target_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("elsewhere");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let log = dir.path().join("cargo.log");
    let cargo = bin.join("cargo");
    std::fs::write(
        &cargo,
        format!(
            "#!/bin/sh\necho \"$@\" >>{log}\nmkdir -p \"$CARGO_TARGET_DIR/release\"\ncp {real} \"$CARGO_TARGET_DIR/release/converge\"\n",
            log = log.display(),
            real = env!("CARGO_BIN_EXE_converge"),
        ),
    )
    .expect("write cargo");
    let mut perms = std::fs::metadata(&cargo).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&cargo, perms).expect("chmod");
    let rootfs = dir.path().join("rootfs");
    let out = Command::new(repo().join("scripts/image"))
        .arg("--rootfs")
        .arg(&rootfs)
        .env("CARGO_TARGET_DIR", &target)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("scripts/image runs");
    ok(&out, "scripts/image --rootfs");
    let calls = std::fs::read_to_string(&log).expect("cargo was called");
    assert_eq!(calls.trim(), "build --release --locked");
    let packaged = rootfs.join("usr/local/bin/converge");
    let out = Command::new(&packaged)
        .arg("--version")
        .output()
        .expect("the packaged binary runs");
    assert!(ok(&out, "converge --version").starts_with("converge "));
}
