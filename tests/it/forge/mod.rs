//! The forge loop against a real Gitea (`support/gitea.rs`): the harness
//! itself here; review provenance (`provenance.rs`) and apply statuses
//! (`statuses.rs`).

use serde_json::json;

use crate::support::gitea::{ADMIN, AUTHOR, Gitea, REVIEWER};

/// The harness does what the forge tests rely on: a pushed branch, a PR, a
/// review at its head, a merge commit, a comment and a status read back.
#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn the_gitea_harness_opens_reviews_and_merges_a_pull_request() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("harness");
    let head = repo.push(
        AUTHOR,
        "feature",
        &[("claims/a.yaml", Some("a: 1\n"))],
        "add a",
    );
    let pr = repo.open_pull(AUTHOR, "feature", "add a");
    assert_eq!(repo.pull(pr)["head"]["sha"], json!(head));
    repo.approve(REVIEWER, pr);
    let reviews = gitea.ok(
        ADMIN,
        "GET",
        &format!("{}/pulls/{pr}/reviews", repo.path()),
        None,
    );
    let review = &reviews.as_array().expect("reviews")[0];
    assert_eq!(review["state"], json!("APPROVED"));
    assert_eq!(review["commit_id"], json!(head));
    assert_eq!(review["user"]["login"], json!(REVIEWER));
    gitea.ok(
        AUTHOR,
        "POST",
        &format!("{}/issues/{pr}/comments", repo.path()),
        Some(&json!({"body": "hello"})),
    );
    assert_eq!(repo.comments(pr)[0].2, "hello");
    let merge = repo.merge(ADMIN, pr);
    assert_ne!(merge, head);
    gitea.ok(
        ADMIN,
        "POST",
        &format!("{}/statuses/{merge}", repo.path()),
        Some(&json!({"state": "success", "context": "t/apply", "description": "ok"})),
    );
    let statuses = repo.statuses(&merge);
    assert_eq!(statuses[0].0, "t/apply");
    assert_eq!(statuses[0].1, "success");
}
