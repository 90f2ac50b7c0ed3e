//! The manifests target's output as its consumers read it: the real
//! `kubectl` applying the whole directory (`-R -f out/`) and each
//! environment's directory against a real API server (`support::kube`);
//! converge's inventory files are not among what it reads.

use crate::support::kube::KubeApi;
use crate::support::{Project, claim, stderr};

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/kube-tools builds them)"]
fn kubectl_applies_the_whole_manifests_directory_and_each_environment() {
    let api = KubeApi::shared();
    let p = Project::new("");
    // Names of their own: the cluster is shared with other tests.
    let suffix = fastrand::u32(..).to_string();
    let names: Vec<String> = ["dev", "stage", "prod", "sue"]
        .iter()
        .map(|t| format!("mf-{t}-{suffix}"))
        .collect();
    for (name, env_type) in names.iter().zip(["dev", "stage", "prod", "sue"]) {
        // Not expired: a sue environment lives 24 h unless it says otherwise.
        let claim = claim(name, env_type).replace(
            "expiration_date: null",
            "expiration_date: \"2099-01-01T00:00:00Z\"",
        );
        p.write(&format!("claims/{name}.yaml"), claim);
    }
    let out = p.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(p.environments(), {
        let mut sorted = names.clone();
        sorted.sort();
        sorted
    });
    // One environment as an earlier converge left it: its inventory under
    // the name kubectl read as an object. The next run renames it.
    let legacy = p.path(&format!("out/{}/.converge-inventory.json", names[0]));
    std::fs::rename(
        p.path(&format!("out/{}/.converge-inventory", names[0])),
        &legacy,
    )
    .expect("rename");
    let out = p.run(&["run", "--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!legacy.exists(), "migrated");
    // A server-side dry run creates nothing, so the objects inside each
    // environment's Namespace need the Namespace to exist for real.
    for name in &names {
        let _ = api.kubectl_ok(&["create", "namespace", name]);
    }
    let root = p.path("out");
    let root = root.to_str().expect("utf-8 path");
    for args in [
        &["apply", "--dry-run=server", "-R", "-f", root][..],
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=converge-test",
            "-R",
            "-f",
            root,
        ],
    ] {
        let applied = api.kubectl_ok(args);
        for name in &names {
            assert!(
                applied.contains(&format!("namespace/{name}")),
                "{args:?}: {applied}"
            );
        }
    }
    for name in &names {
        let dir = p.path(&format!("out/{name}"));
        let applied = api.kubectl_ok(&[
            "apply",
            "--dry-run=server",
            "-f",
            dir.to_str().expect("utf-8 path"),
        ]);
        assert!(
            applied.contains("deployment.apps/user-service"),
            "{applied}"
        );
    }
}
