//! The daemon against a git server (`git daemon` on loopback): a push is
//! applied with its commit and author in the API, an outage deletes nothing,
//! and idle polls cost a ref check each.

use crate::support::claim;
use crate::support::daemon::Daemon;
use crate::support::git::{Repo, git_daemon, project};

#[test]
fn a_push_drives_the_daemon_end_to_end_with_commit_and_author_in_the_api() {
    let repo = Repo::new();
    repo.commit(
        &[("environments/dev-a.yaml", Some(&claim("dev-a", "dev")))],
        "first",
        &[],
    );
    let server = git_daemon(&repo);
    let p = project(&server.url, "");
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-a", |d| d.names() == ["dev-a"]);
    let c2 = repo.commit(
        &[("environments/dev-b.yaml", Some(&claim("dev-b", "dev")))],
        "add b\n\nReviewed-by: Ops <ops@x>",
        &[],
    );
    d.wait_for("dev-b", |d| d.names() == ["dev-a", "dev-b"]);
    assert!(p.path("out/dev-b/namespace-dev-b.yaml").exists());
    let detail = d.json("/api/v1/environments/dev-b");
    assert_eq!(detail["revision"], c2, "{detail}");
    assert_eq!(detail["provenance"]["commit"], c2, "{detail}");
    assert_eq!(
        detail["provenance"]["author"]["email"], "jane.roe@company.com",
        "{detail}"
    );
    let sources = d.json("/api/v1/sources");
    assert_eq!(sources["items"][0]["kind"], "git");
    drop(server);
    d.wait_for("the source error", |d| {
        !d.json("/api/v1/sources")["items"][0]["last_error"].is_null()
    });
    assert_eq!(
        d.names(),
        ["dev-a", "dev-b"],
        "a server outage deletes nothing"
    );
    assert_eq!(p.environments(), ["dev-a", "dev-b"]);
}

#[test]
fn idle_polls_are_counted_and_read_no_blobs() {
    let repo = Repo::new();
    repo.commit(
        &[
            ("environments/dev-a.yaml", Some(&claim("dev-a", "dev"))),
            ("environments/dev-b.yaml", Some(&claim("dev-b", "dev"))),
        ],
        "first",
        &[],
    );
    let server = git_daemon(&repo);
    let p = project(&server.url, "");
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    let polls = r#"converge_source_polls_total{source="envs"}"#;
    let ref_checks = r#"converge_git_ref_checks_total{source="envs"}"#;
    let fetches = r#"converge_git_fetches_total{source="envs"}"#;
    let blobs = r#"converge_git_blob_reads_total{source="envs"}"#;
    assert_eq!(d.sample(blobs), 2, "the first read reads every claim");
    assert_eq!(d.sample(fetches), 1);
    assert!(d.sample("converge_pass_ready_seconds_count") >= 1);
    let (polls0, checks0) = (d.sample(polls), d.sample(ref_checks));
    let passes0 = d.sample("converge_passes_total");
    // 1 s polls: wait for at least two idle ones.
    d.wait_for("two more polls", |d| d.sample(polls) >= polls0 + 2);
    assert!(d.sample(ref_checks) >= checks0 + 2, "a ref check per poll");
    assert_eq!(d.sample(fetches), 1, "idle polls fetch nothing");
    assert_eq!(d.sample(blobs), 2, "idle polls read no blobs");
    assert_eq!(
        d.sample("converge_passes_total"),
        passes0,
        "idle polls run no pass"
    );
    // A commit changing one claim: one fetch, one blob read, one more ready pass.
    let ready0 = d.sample("converge_pass_ready_seconds_count");
    repo.commit(
        &[(
            "environments/dev-b.yaml",
            Some(&claim("dev-b", "dev").replace("v1.2.3", "v1.2.4")),
        )],
        "bump b",
        &[],
    );
    d.wait_for("the new version", |d| {
        d.json("/api/v1/environments/dev-b")["claim"]["services"]["user-service"]["version"]
            == "v1.2.4"
    });
    assert_eq!(d.sample(fetches), 2);
    assert_eq!(d.sample(blobs), 3, "exactly one blob read");
    assert!(d.sample("converge_pass_ready_seconds_count") > ready0);
    let sources = d.json("/api/v1/sources");
    let item = &sources["items"][0];
    assert!(item["last_success"].is_string(), "{sources}");
    assert!(
        item["next_poll_in_ms"]
            .as_u64()
            .is_some_and(|ms| ms <= 1000),
        "a 1 s interval never waits longer: {sources}"
    );
}
