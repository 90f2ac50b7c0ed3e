//! Plans on pull requests against a real Gitea (issue 24.2): the daemon
//! lists the open pull requests of its git source's branch, plans each new
//! head, keeps one comment per pull request (edited on each push) and sets
//! the `<context>/plan` status on the head; invalid claims and plans that
//! delete too much fail the status; secrets appear in neither.

use std::fmt::Write as _;

use crate::support::daemon::Daemon;
use crate::support::gitea::{ADMIN, AUTHOR, Gitea, GiteaRepo};
use crate::support::sops::{age_key, encrypt};
use crate::support::{Project, claim};

const CONTEXT: &str = "converge/test";
const MARKER: &str = "<!-- converge:plan source=claims context=converge/test part=1 -->";

/// A project whose git source is `repo` on the Gitea, with its forge (the
/// admin's token), 1 s polls and a manifests target.
fn project(repo: &GiteaRepo<'_>, extra: &str) -> Project {
    project_with_target(repo, "target:\n  kind: manifests\n  path: out\n", extra)
}

/// The same with another `target:` block.
fn project_with_target(repo: &GiteaRepo<'_>, target: &str, extra: &str) -> Project {
    let p = Project::new("");
    p.write("forge-token", repo.gitea.user_token(ADMIN));
    let config = format!(
        "sources:\n  - name: claims\n    kind: git\n    url: {url}\n    branch: main\n    paths: [\"environments/**/*.yaml\"]\n    interval: 1s\n    timeout: 5s\n    forge:\n      kind: gitea\n      token_file: forge-token\n      pull_requests: true\n      commit_statuses: false\n      context: {CONTEXT}\n\
         {target}state_dir: .converge\nsafety:\n  max_delete_fraction: 0.5\n{extra}",
        url = repo.clone_url()
    );
    p.write("converge.yaml", config);
    p
}

/// The plan status on `sha`: (state, description), once there is one.
fn plan_status(repo: &GiteaRepo<'_>, sha: &str) -> Option<(String, String)> {
    repo.statuses(sha)
        .into_iter()
        .find(|(context, ..)| context == &format!("{CONTEXT}/plan"))
        .map(|(_, state, description, _)| (state, description))
}

/// converge's comments on pull request `pr`: (id, body).
fn plan_comments(repo: &GiteaRepo<'_>, pr: u64) -> Vec<(u64, String)> {
    repo.comments(pr)
        .into_iter()
        .filter(|(_, _, body)| body.starts_with("<!-- converge:plan "))
        .map(|(id, _, body)| (id, body))
        .collect()
}

/// Waits (at most 20 s, polls are 1 s) until `sha` has a plan status.
fn wait_plan(d: &Daemon, repo: &GiteaRepo<'_>, sha: &str) -> (String, String) {
    let mut found = None;
    d.wait_for(&format!("the plan status on {sha}"), |_| {
        found = plan_status(repo, sha);
        found.is_some()
    });
    found.expect("found")
}

fn main_with(repo: &GiteaRepo<'_>, names: &[&str]) -> String {
    let files: Vec<(String, String)> = names
        .iter()
        .map(|n| (format!("environments/{n}.yaml"), claim(n, "dev")))
        .collect();
    let files: Vec<(&str, Option<&str>)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), Some(c.as_str())))
        .collect();
    repo.push(ADMIN, "main", &files, "claims")
}

#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn a_pull_request_gets_one_plan_comment_and_status_edited_on_each_push() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("pr-plan");
    main_with(&repo, &["dev-a"]);
    let p = project(&repo, "");
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-a applied", |d| d.names() == ["dev-a"]);
    let head = repo.push(
        AUTHOR,
        "add-b",
        &[("environments/dev-b.yaml", Some(&claim("dev-b", "dev")))],
        "add dev-b",
    );
    let pr = repo.open_pull(AUTHOR, "add-b", "add dev-b");
    let (state, description) = wait_plan(&d, &repo, &head);
    assert_eq!(state, "success", "{description}");
    assert_eq!(description, "plan: 1 to create, 0 to update, 0 to delete");
    let comments = plan_comments(&repo, pr);
    assert_eq!(comments.len(), 1, "{comments:?}");
    let (id, body) = &comments[0];
    assert!(body.starts_with(MARKER), "{body}");
    assert!(body.contains("| + | `dev-b` | Claimed |"), "{body}");
    assert!(body.contains(&head[..12]), "{body}");
    assert!(!body.contains("`dev-a`"), "dev-a does not change: {body}");
    let author = &repo
        .comments(pr)
        .into_iter()
        .find(|(i, ..)| i == id)
        .expect("the comment")
        .1;
    assert_eq!(author, ADMIN, "written with the forge token");

    // A second push: the same comment, edited; a status on the new head.
    let second = claim("dev-b", "dev").replace("v1.2.3", "v1.2.4");
    let head2 = repo.push(
        AUTHOR,
        "add-b",
        &[("environments/dev-b.yaml", Some(&second))],
        "dev-b at v1.2.4",
    );
    let (state, _) = wait_plan(&d, &repo, &head2);
    assert_eq!(state, "success");
    d.wait_for("the comment edited", |_| {
        plan_comments(&repo, pr)
            .first()
            .is_some_and(|(_, b)| b.contains(&head2[..12]))
    });
    let comments = plan_comments(&repo, pr);
    assert_eq!(
        comments.len(),
        1,
        "one comment per pull request: {comments:?}"
    );
    assert_eq!(comments[0].0, *id, "the same comment, edited");
    assert!(
        comments[0].1.contains("user-service (none) -> v1.2.4"),
        "{}",
        comments[0].1
    );
    // The pull request changed nothing that converge applies.
    assert_eq!(d.names(), ["dev-a"]);
    assert!(!p.path("out/dev-b").exists());
    // The source shows its pull-request poller, without an error.
    let sources = d.json("/api/v1/sources");
    let pulls = &sources["items"][0]["pull_requests"];
    assert_eq!(pulls["open"], 1, "{sources}");
    assert!(pulls["last_error"].is_null(), "{sources}");
}

#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn an_invalid_claim_fails_the_plan_status_naming_it() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("pr-invalid");
    main_with(&repo, &["dev-a"]);
    let p = project(&repo, "");
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-a applied", |d| d.names() == ["dev-a"]);
    let bad = claim("dev-c", "dev").replace("environment_type: dev", "environment_type: nope");
    let head = repo.push(
        AUTHOR,
        "bad",
        &[("environments/dev-c.yaml", Some(&bad))],
        "a bad claim",
    );
    let pr = repo.open_pull(AUTHOR, "bad", "bad claim");
    let (state, description) = wait_plan(&d, &repo, &head);
    assert_eq!(state, "failure", "{description}");
    assert!(
        description.starts_with("invalid claim: environments/dev-c.yaml: /environment_type: "),
        "{description}"
    );
    let comments = plan_comments(&repo, pr);
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0]
            .1
            .contains("- invalid claim: `environments/dev-c.yaml: /environment_type:"),
        "{}",
        comments[0].1
    );
    assert_eq!(d.names(), ["dev-a"]);
}

#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn a_pull_request_that_deletes_too_much_fails_as_held() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("pr-held");
    main_with(&repo, &["dev-a", "dev-b", "dev-c"]);
    let p = project(&repo, "");
    let d = Daemon::start(p.dir.path());
    d.wait_for("three applied", |d| d.names().len() == 3);
    let head = repo.push(
        AUTHOR,
        "purge",
        &[
            ("environments/dev-a.yaml", None),
            ("environments/dev-b.yaml", None),
        ],
        "remove two of three",
    );
    let pr = repo.open_pull(AUTHOR, "purge", "purge");
    let (state, description) = wait_plan(&d, &repo, &head);
    assert_eq!(state, "failure", "{description}");
    assert!(
        description.starts_with("mass-deletion hold: "),
        "{description}"
    );
    let comments = plan_comments(&repo, pr);
    assert!(comments[0].1.contains("**Held:**"), "{}", comments[0].1);
    assert_eq!(d.names().len(), 3, "nothing deleted");
}

#[test]
#[ignore = "needs gitea and sops (scripts/tools builds them)"]
fn the_secret_canary_appears_in_no_comment_and_no_status() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("pr-canary");
    main_with(&repo, &["dev-a"]);
    let p = project(&repo, "secrets:\n  age_key_files: [keys/a.key]\n");
    let key = age_key(&p.path("keys"), "a");
    let canary = format!("CANARY-{}", fastrand::u64(..));
    let scratch = tempfile::tempdir().expect("tempdir");
    let claim_with = |value: &str| {
        let mut text = claim("dev-s", "dev");
        let _ = writeln!(text, "secrets:\n  db_password: {value}");
        encrypt(scratch.path(), "s.yaml", &text, &[&key])
    };
    let first = claim_with(&canary);
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-a applied", |d| d.names() == ["dev-a"]);
    let head = repo.push(
        AUTHOR,
        "secret",
        &[("environments/dev-s.yaml", Some(&first))],
        "a claim with a secret",
    );
    let pr = repo.open_pull(AUTHOR, "secret", "secret");
    let (state, _) = wait_plan(&d, &repo, &head);
    assert_eq!(state, "success");
    // A new value: its key is planned by fingerprint.
    let second = claim_with(&format!("{canary}-2"));
    let head2 = repo.push(
        AUTHOR,
        "secret",
        &[("environments/dev-s.yaml", Some(&second))],
        "a new secret value",
    );
    wait_plan(&d, &repo, &head2);
    // And a tampered one (a plaintext field changed after encryption: the
    // MAC does not match): the status fails, naming no value.
    let tampered = second.replace("user-service: v1.2.3", "user-service: v1.2.4");
    assert_ne!(tampered, second);
    let head3 = repo.push(
        AUTHOR,
        "secret",
        &[("environments/dev-s.yaml", Some(&tampered))],
        "tampered",
    );
    let (state, description) = wait_plan(&d, &repo, &head3);
    assert_eq!(state, "failure", "{description}");
    assert!(
        description.starts_with("tampered secret: "),
        "{description}"
    );
    let mut seen: Vec<String> = plan_comments(&repo, pr)
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    for sha in [&head, &head2, &head3] {
        seen.extend(
            repo.statuses(sha)
                .into_iter()
                .map(|(c, s, desc, url)| format!("{c} {s} {desc} {url}")),
        );
    }
    assert!(seen.len() >= 4, "{seen:?}");
    for text in &seen {
        assert!(!text.contains(&canary), "the canary leaked: {text}");
    }
}

/// `converge_forge_requests_total` summed over the series whose labels
/// contain `filter`.
fn forge_requests(d: &Daemon, filter: &str) -> u64 {
    let (_, body) = d.get("/metrics");
    body.lines()
        .filter(|l| l.starts_with("converge_forge_requests_total{") && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn pulls_doc(d: &Daemon) -> serde_json::Value {
    d.json("/api/v1/sources")["items"][0]["pull_requests"].clone()
}

#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn idle_polls_write_nothing_and_cost_one_listing_each() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("pr-idle");
    main_with(&repo, &["dev-a"]);
    let p = project(&repo, "");
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-a applied", |d| d.names() == ["dev-a"]);
    let head = repo.push(
        AUTHOR,
        "add-b",
        &[("environments/dev-b.yaml", Some(&claim("dev-b", "dev")))],
        "add dev-b",
    );
    let pr = repo.open_pull(AUTHOR, "add-b", "add dev-b");
    wait_plan(&d, &repo, &head);
    d.wait_for("the plan counted", |d| pulls_doc(d)["planned"] == 1);
    let polls = |d: &Daemon| pulls_doc(d)["polls"].as_u64().unwrap_or_default();
    let writes = |d: &Daemon| {
        [
            "create_comment",
            "edit_comment",
            "set_status",
            "list_comments",
        ]
        .iter()
        .map(|op| forge_requests(d, &format!("op=\"{op}\"")))
        .sum::<u64>()
    };
    let (polls0, listings0, writes0) = (
        polls(&d),
        forge_requests(&d, "op=\"list_pulls\""),
        writes(&d),
    );
    d.wait_for("three idle polls", |d| polls(d) >= polls0 + 3);
    let (polls1, listings1, writes1) = (
        polls(&d),
        forge_requests(&d, "op=\"list_pulls\""),
        writes(&d),
    );
    assert_eq!(writes1, writes0, "an idle poll writes no comment or status");
    assert!(
        listings1 - listings0 <= polls1 - polls0 + 1,
        "one listing per idle poll: {} listings in {} polls",
        listings1 - listings0,
        polls1 - polls0
    );
    assert_eq!(plan_comments(&repo, pr).len(), 1);
    assert_eq!(pulls_doc(&d)["planned"], 1, "the head is planned once");
}

#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn a_token_that_cannot_comment_is_an_error_under_the_source_and_passes_go_on() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("pr-readonly");
    main_with(&repo, &["dev-a"]);
    let p = project(&repo, "");
    p.write(
        "forge-token",
        gitea.token(ADMIN, "read:repository,read:issue"),
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-a applied", |d| d.names() == ["dev-a"]);
    let head = repo.push(
        AUTHOR,
        "add-b",
        &[("environments/dev-b.yaml", Some(&claim("dev-b", "dev")))],
        "add dev-b",
    );
    repo.open_pull(AUTHOR, "add-b", "add dev-b");
    d.wait_for("the error under the source", |d| {
        !pulls_doc(d)["last_error"].is_null()
    });
    let error = &pulls_doc(&d)["last_error"];
    assert_eq!(error["reason"], "PermissionMissing", "{error}");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("create_comment") || message.contains("comment"),
        "{message}"
    );
    assert!(!message.contains(gitea.user_token(ADMIN)), "{message}");
    let events = d.json("/api/v1/events");
    assert!(
        events["items"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["reason"] == "PermissionMissing"),
        "{events}"
    );
    assert!(plan_status(&repo, &head).is_none());
    // Passes go on: a merge to main is applied.
    main_with(&repo, &["dev-a", "dev-c"]);
    d.wait_for("dev-c applied", |d| d.names() == ["dev-a", "dev-c"]);
    assert_eq!(d.get("/ready").0, 200);
}

#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn after_a_restart_the_comment_is_found_again_and_the_status_not_repeated() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("pr-restart");
    main_with(&repo, &["dev-a"]);
    let p = project(&repo, "");
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-a applied", |d| d.names() == ["dev-a"]);
    let head = repo.push(
        AUTHOR,
        "add-b",
        &[("environments/dev-b.yaml", Some(&claim("dev-b", "dev")))],
        "add dev-b",
    );
    let pr = repo.open_pull(AUTHOR, "add-b", "add dev-b");
    wait_plan(&d, &repo, &head);
    let id = plan_comments(&repo, pr)[0].0;
    assert_eq!(d.terminate(), Some(0));
    let d = Daemon::start(p.dir.path());
    d.wait_for("the head planned again", |d| pulls_doc(d)["planned"] == 1);
    let comments = plan_comments(&repo, pr);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert_eq!(comments[0].0, id, "the same comment");
    let plan_statuses = repo
        .statuses(&head)
        .into_iter()
        .filter(|(c, ..)| c == &format!("{CONTEXT}/plan"))
        .count();
    assert_eq!(plan_statuses, 1, "read before written: not repeated");
}

/// A pull request is judged as if merged: review provenance is what its
/// merge commit will carry, so a `prod` change is planned, not refused as
/// `Unreviewed` (which a direct push to the branch is).
#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn a_prod_change_is_planned_as_if_merged_not_refused_as_unreviewed() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("pr-prod");
    main_with(&repo, &["dev-a"]);
    let p = project(&repo, "");
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-a applied", |d| d.names() == ["dev-a"]);
    let head = repo.push(
        AUTHOR,
        "prod",
        &[("environments/prod-p.yaml", Some(&claim("prod-p", "prod")))],
        "add prod-p",
    );
    let pr = repo.open_pull(AUTHOR, "prod", "add prod-p");
    let (state, description) = wait_plan(&d, &repo, &head);
    assert_eq!(state, "success", "{description}");
    assert!(
        plan_comments(&repo, pr)[0]
            .1
            .contains("| + | `prod-p` | Claimed |"),
        "{:?}",
        plan_comments(&repo, pr)
    );
}

/// A comment carrying converge's marker written by someone else (the
/// author, here) is not converge's: it is left as it is, and converge keeps
/// its own comment.
#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn a_marker_in_someone_elses_comment_is_not_taken_for_converges() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("pr-forged");
    main_with(&repo, &["dev-a"]);
    let head = repo.push(
        AUTHOR,
        "add-b",
        &[("environments/dev-b.yaml", Some(&claim("dev-b", "dev")))],
        "add dev-b",
    );
    let pr = repo.open_pull(AUTHOR, "add-b", "add dev-b");
    let forged = format!("{MARKER}\n**converge plan**: all fine, merge away\n");
    gitea.ok(
        AUTHOR,
        "POST",
        &format!("{}/issues/{pr}/comments", repo.path()),
        Some(&serde_json::json!({ "body": forged })),
    );
    let p = project(&repo, "");
    let d = Daemon::start(p.dir.path());
    let (state, _) = wait_plan(&d, &repo, &head);
    assert_eq!(state, "success");
    let comments = repo.comments(pr);
    let by = |who: &str| -> Vec<&String> {
        comments
            .iter()
            .filter(|(_, author, _)| author == who)
            .map(|(_, _, body)| body)
            .collect()
    };
    assert_eq!(by(AUTHOR), [&forged], "the author's comment is untouched");
    let ours = by(ADMIN);
    assert_eq!(ours.len(), 1, "{comments:?}");
    assert!(ours[0].contains("| + | `dev-b` | Claimed |"), "{}", ours[0]);
}

/// With a cluster as the target, the comment shows the field-level change
/// of each updated object: the cluster's server-side dry run against what
/// is live.
#[test]
#[ignore = "needs gitea, kube-apiserver and etcd (scripts/tools builds them)"]
fn with_a_cluster_the_comment_shows_the_dry_run_field_changes() {
    let api = crate::support::kube::KubeApi::shared();
    let gitea = Gitea::shared();
    let repo = gitea.repo("pr-fields");
    main_with(&repo, &["dev-prfields"]);
    let target = format!(
        "target:\n  kind: kubernetes\n  kubeconfig: {}\n  inventory_namespace: converge-prfields\n",
        api.kubeconfig().display()
    );
    let p = project_with_target(&repo, &target, "");
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-prfields applied", |_| {
        let out = api.kubectl(&["get", "deployments", "-n", "dev-prfields", "-o", "name"]);
        out.status.success() && !out.stdout.is_empty()
    });
    let next = claim("dev-prfields", "dev").replace("v1.2.3", "v1.2.4");
    let head = repo.push(
        AUTHOR,
        "bump",
        &[("environments/dev-prfields.yaml", Some(&next))],
        "user-service v1.2.4",
    );
    let pr = repo.open_pull(AUTHOR, "bump", "bump");
    let (state, description) = wait_plan(&d, &repo, &head);
    assert_eq!(state, "success", "{description}");
    let body = &plan_comments(&repo, pr)[0].1;
    assert!(body.contains("**Field changes**"), "{body}");
    assert!(
        body.contains("spec.template.spec.containers[name=user-service].image:"),
        "{body}"
    );
    assert!(body.contains("v1.2.4"), "{body}");
}
