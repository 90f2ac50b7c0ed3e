//! Apply statuses through the real daemon against a real Gitea: success on
//! an approved merge, failure naming a refused claim (never a secret), a
//! forge outage that changes nothing converge applies and statuses that
//! catch up after it, two installations with their own contexts.

use std::time::{Duration, Instant};

use crate::support::daemon::Daemon;
use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::gitea::{ADMIN, AUTHOR, Gitea, GiteaRepo, REVIEWER};
use crate::support::{Project, claim};

fn project(repo: &GiteaRepo<'_>, context: &str, api_url: Option<&str>) -> Project {
    let api = api_url.map_or(String::new(), |u| format!("      api_url: {u}\n"));
    super::provenance::project(repo, ADMIN, &format!("      context: {context}\n{api}"))
}

/// Waits (at most 60 s) until `commit` has a status of `context` in `state`;
/// returns its description.
fn wait_status(repo: &GiteaRepo<'_>, commit: &str, context: &str, state: &str) -> String {
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let statuses = repo.statuses(commit);
        if let Some(s) = statuses.iter().find(|s| s.0 == context)
            && s.1 == state
        {
            return s.2.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {state} status {context} on {commit}: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn merge_reviewed(repo: &GiteaRepo<'_>, branch: &str, files: &[(&str, Option<&str>)]) -> String {
    repo.push(AUTHOR, branch, files, branch);
    let pr = repo.open_pull(AUTHOR, branch, branch);
    repo.approve(REVIEWER, pr);
    repo.merge(ADMIN, pr)
}

#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn applied_commits_get_success_and_refused_ones_failure_naming_the_claim_never_a_secret() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("statuses");
    let p = project(&repo, "converge/test", None);
    // Behind an ingress: the statuses link to the status page there.
    let config = std::fs::read_to_string(p.path("converge.yaml")).expect("config");
    p.write(
        "converge.yaml",
        config.replace(
            "state_dir: .converge\n",
            "state_dir: .converge\napi:\n  external_url: https://converge.example.com/\n",
        ),
    );
    let link = |commit: &str| {
        repo.statuses(commit)
            .into_iter()
            .find(|s| s.0 == "converge/test/apply")
            .map(|s| s.3)
            .unwrap_or_default()
    };
    let merge = merge_reviewed(
        &repo,
        "add-a",
        &[("claims/a.yaml", Some(&claim("prod-a", "prod")))],
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("prod-a", |d| d.names() == ["prod-a"]);
    let text = wait_status(&repo, &merge, "converge/test/apply", "success");
    assert_eq!(text, "applied prod-a");
    assert_eq!(
        link(&merge),
        "https://converge.example.com/environments/prod-a"
    );

    // A direct push of a prod claim: refused, the status says so.
    let direct = repo.push(
        ADMIN,
        "main",
        &[("claims/d.yaml", Some(&claim("prod-direct", "prod")))],
        "direct",
    );
    d.wait_for("prod-direct refused", |d| {
        d.get("/api/v1/environments/prod-direct")
            .1
            .contains("\"Unreviewed\"")
    });
    let text = wait_status(&repo, &direct, "converge/test/apply", "failure");
    assert!(
        text.contains("prod-direct") && text.contains("Unreviewed"),
        "{text}"
    );
    assert_eq!(
        link(&direct),
        "https://converge.example.com/environments/prod-direct"
    );
    let detail = d.json("/api/v1/environments/prod-direct");
    assert!(detail.to_string().contains("\"Unreviewed\""), "{detail}");
    assert_eq!(p.environments(), ["prod-a"]);

    // A plaintext secret (refused, invalid): the canary never reaches the forge.
    let canary = "CANARY-4f1d2c9e-forge-status";
    let leaky = format!(
        "{}secrets:\n  db_password: {canary}\n",
        claim("dev-team1-leak", "dev")
    );
    let leak = merge_reviewed(&repo, "leak", &[("claims/leak.yaml", Some(&leaky))]);
    let text = wait_status(&repo, &leak, "converge/test/apply", "failure");
    assert!(text.contains("dev-team1-leak"), "{text}");
    for commit in [&merge, &direct, &leak] {
        for s in repo.statuses(commit) {
            assert!(!format!("{s:?}").contains(canary), "{s:?}");
        }
    }
}

#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn a_forge_outage_changes_nothing_applied_and_statuses_catch_up_after_it() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("outage");
    let upstream = format!("127.0.0.1:{}", gitea.port).parse().expect("addr");
    let proxy = FaultProxy::start(upstream);
    let api = format!("{}/api/v1", proxy.endpoint());
    let p = project(&repo, "converge/outage", Some(&api));
    let first = merge_reviewed(
        &repo,
        "one",
        &[("claims/a.yaml", Some(&claim("dev-team1-a", "dev")))],
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-team1-a", |d| d.names() == ["dev-team1-a"]);
    wait_status(&repo, &first, "converge/outage/apply", "success");

    // The forge's API is down; git still serves: passes go on.
    proxy.set(Fault::Refuse);
    let second = merge_reviewed(
        &repo,
        "two",
        &[("claims/b.yaml", Some(&claim("dev-team1-b", "dev")))],
    );
    d.wait_for("dev-team1-b", |d| {
        d.names() == ["dev-team1-a", "dev-team1-b"]
    });
    assert!(repo.statuses(&second).is_empty(), "nothing could be posted");
    d.wait_for("the forge's failure as an event", |d| {
        let events = d.get("/api/v1/events").1;
        events.contains("ForgeUnavailable") && events.contains("review provenance")
    });

    // A restart while the status waits: it is not lost.
    drop(d);
    let d = Daemon::start(p.dir.path());
    d.wait_for("the restored snapshot", |d| d.names().len() == 2);
    proxy.set(Fault::None);
    let text = wait_status(&repo, &second, "converge/outage/apply", "success");
    assert_eq!(text, "applied dev-team1-b");
    // Counted once its answer is read, which may be just after Gitea shows
    // the status.
    d.wait_for("the post counted", |d| {
        d.get("/metrics").1.contains(
            r#"converge_forge_requests_total{forge="gitea",op="set_status",status="201"} "#,
        )
    });
}

#[test]
#[ignore = "needs gitea (scripts/tools builds it)"]
fn two_installations_post_their_own_contexts_on_one_repository() {
    let gitea = Gitea::shared();
    let repo = gitea.repo("two");
    let eu = project(&repo, "converge/prod-eu", None);
    let us = project(&repo, "converge/prod-us", None);
    let merge = merge_reviewed(
        &repo,
        "add",
        &[("claims/a.yaml", Some(&claim("prod-a", "prod")))],
    );
    let d1 = Daemon::start(eu.dir.path());
    let d2 = Daemon::start(us.dir.path());
    wait_status(&repo, &merge, "converge/prod-eu/apply", "success");
    wait_status(&repo, &merge, "converge/prod-us/apply", "success");
    drop((d1, d2));
    let contexts: std::collections::BTreeSet<String> =
        repo.statuses(&merge).into_iter().map(|s| s.0).collect();
    assert_eq!(
        contexts.into_iter().collect::<Vec<_>>(),
        ["converge/prod-eu/apply", "converge/prod-us/apply"]
    );
}
