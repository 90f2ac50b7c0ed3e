//! The git tag source against `git daemon`: tags with a per-service prefix.

use super::{claim_with, images};
use crate::support::git::{Repo, git, git_daemon};
use crate::support::{Project, stderr};

#[test]
fn git_tags_with_a_service_prefix_resolve_through_git_daemon() {
    let repo = Repo::new();
    repo.commit(&[("README", Some("billing and ledger\n"))], "first", &[]);
    for tag in [
        "billing/v1.2.3",
        "billing/v1.10.0",
        "billing/v2.0.0",
        "ledger/v0.9.0",
        "unrelated",
    ] {
        git(&repo.work(), &["tag", tag]);
    }
    git(&repo.work(), &["push", "-q", "origin", "main", "--tags"]);
    let server = git_daemon(&repo);
    let p = Project::new(&format!(
        "state_dir: .converge\nimages:\n  registry: registry.example/releases\nversions:\n  from: git\n  git:\n    url: {}\n    prefix: \"{{service}}/\"\n",
        server.url
    ));
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", "^1.2.0"), ("ledger", "*")]),
    );
    let out = p.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        images(&p, "dev-a"),
        [
            "registry.example/releases/billing:v1.10.0",
            "registry.example/releases/ledger:v0.9.0"
        ]
    );
}
