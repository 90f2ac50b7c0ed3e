//! Review provenance through the real binary against a real Gitea: a prod
//! claim merged by an approved pull request is applied; a direct push, the
//! author's own approval and an approval of an older head are `Unreviewed`;
//! a forge that cannot be asked holds the claims that need a review
//! (`ReviewUnavailable`) while the rest is applied.

use crate::support::gitea::{ADMIN, AUTHOR, Gitea, GiteaRepo, REVIEWER};
use crate::support::{Project, claim, stderr};

/// A project whose git source is `repo` with its forge, the token of `user`.
pub fn project(repo: &GiteaRepo<'_>, user: &str, forge_extra: &str) -> Project {
    let p = Project::new("");
    p.write("forge-token", repo.gitea.user_token(user));
    let config = format!(
        "sources:\n  - name: claims\n    kind: git\n    url: {url}\n    branch: main\n    paths: [\"claims/**/*.yaml\"]\n    timeout: 10s\n    interval: 1s\n    forge:\n      kind: gitea\n      token_file: forge-token\n      timeout: 3s\n{forge_extra}\
         target:\n  kind: manifests\n  path: out\nstate_dir: .converge\n",
        url = repo.clone_url()
    );
    p.write("converge.yaml", config);
    p
}

fn run_once(p: &Project) -> String {
    let out = p.run(&["run", "--once"]);
    let err = stderr(&out);
    assert!(out.status.success(), "run --once: {err}");
    err
}

fn prod_claim(name: &str, version: &str) -> String {
    claim(name, "prod").replace("v1.2.3", version)
}

#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn a_prod_claim_applies_only_when_approved_at_its_merged_head_by_someone_else() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("provenance");
    let p = project(&repo, ADMIN, "");

    // Approved by the reviewer and merged: applied.
    repo.push(
        AUTHOR,
        "add-a",
        &[("claims/a.yaml", Some(&prod_claim("prod-a", "v1.2.3")))],
        "add prod-a",
    );
    let pr = repo.open_pull(AUTHOR, "add-a", "add prod-a");
    repo.approve(REVIEWER, pr);
    repo.merge(ADMIN, pr);
    let log = run_once(&p);
    assert_eq!(p.environments(), ["prod-a"], "{log}");

    // Pushed straight to main: refused, naming the commit; prod-a stays.
    let direct = repo.push(
        ADMIN,
        "main",
        &[("claims/d.yaml", Some(&prod_claim("prod-direct", "v1.2.3")))],
        "direct",
    );
    let log = run_once(&p);
    assert_eq!(p.environments(), ["prod-a"], "{log}");
    assert!(log.contains("unreviewed"), "{log}");
    assert!(
        log.contains(&format!("commit {direct} was not merged by a pull request")),
        "{log}"
    );

    // The author's own approval (Gitea refuses it; converge would not count
    // it either) and a merge without review: refused.
    repo.push(
        AUTHOR,
        "add-b",
        &[("claims/b.yaml", Some(&prod_claim("prod-b", "v1.2.3")))],
        "add prod-b",
    );
    let pr = repo.open_pull(AUTHOR, "add-b", "add prod-b");
    assert_eq!(repo.try_approve(AUTHOR, pr).0, 422);
    let merged = repo.merge(ADMIN, pr);
    let log = run_once(&p);
    assert!(!p.environments().contains(&"prod-b".to_owned()), "{log}");
    assert!(
        log.contains(&format!("commit {merged} came from PR #{pr} by author, approved at its merged head by nobody but its author")),
        "{log}"
    );

    // Approved, then pushed again: the approval is stale.
    repo.push(
        AUTHOR,
        "add-c",
        &[("claims/c.yaml", Some(&claim("stage-c", "stage")))],
        "add stage-c",
    );
    let pr = repo.open_pull(AUTHOR, "add-c", "add stage-c");
    repo.approve(REVIEWER, pr);
    repo.push(
        AUTHOR,
        "add-c",
        &[(
            "claims/c.yaml",
            Some(&claim("stage-c", "stage").replace("v1.2.3", "v1.2.4")),
        )],
        "bump",
    );
    repo.merge(ADMIN, pr);
    let log = run_once(&p);
    assert!(!p.environments().contains(&"stage-c".to_owned()), "{log}");
    assert!(
        log.contains("stale: approved by reviewer before a later push"),
        "{log}"
    );
}

#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn a_forge_that_cannot_be_asked_holds_what_needs_review_and_nothing_else() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("down");
    let p = project(&repo, ADMIN, "");
    repo.push(
        AUTHOR,
        "add",
        &[
            ("claims/a.yaml", Some(&prod_claim("prod-a", "v1.2.3"))),
            ("claims/d.yaml", Some(&claim("dev-team1-d", "dev"))),
        ],
        "add",
    );
    let pr = repo.open_pull(AUTHOR, "add", "add");
    repo.approve(REVIEWER, pr);
    repo.merge(ADMIN, pr);
    // The mirror is fetched while Gitea serves; then only its API is down
    // for the next pass (the source keeps its last good snapshot either way).
    let log = run_once(&p);
    assert_eq!(p.environments(), ["dev-team1-d", "prod-a"], "{log}");

    // A token the forge refuses: the review cannot be known; prod-a is held
    // as it is (a bump is not applied), the dev claim's change is.
    repo.push(
        AUTHOR,
        "bump",
        &[
            ("claims/a.yaml", Some(&prod_claim("prod-a", "v1.2.4"))),
            (
                "claims/d.yaml",
                Some(&claim("dev-team1-d", "dev").replace("v1.2.3", "v1.2.4")),
            ),
        ],
        "bump",
    );
    let pr = repo.open_pull(AUTHOR, "bump", "bump");
    repo.approve(REVIEWER, pr);
    repo.merge(ADMIN, pr);
    p.write("forge-token", "not-a-token");
    let log = run_once(&p);
    assert!(log.contains("review-unavailable"), "{log}");
    assert!(log.contains("cannot be asked who reviewed commit"), "{log}");
    let rendered = |env: &str| {
        let mut text = String::new();
        for e in std::fs::read_dir(p.path("out").join(env)).expect("env dir") {
            text.push_str(&std::fs::read_to_string(e.expect("entry").path()).unwrap_or_default());
        }
        text
    };
    assert!(
        rendered("prod-a").contains("v1.2.3") && !rendered("prod-a").contains("v1.2.4"),
        "held"
    );
    assert!(rendered("dev-team1-d").contains("v1.2.4"), "applied");

    // The forge answers again: the bump is applied.
    p.write("forge-token", gitea.user_token(ADMIN));
    let log = run_once(&p);
    assert!(rendered("prod-a").contains("v1.2.4"), "{log}");
}
