//! The daemon resolving against the real distribution registry: a new tag
//! is followed within an interval re-rendering only the environment it
//! concerns, an unchanged tag list costs its listing requests and nothing
//! else, an outage (also across a restart) changes nothing, a deleted tag is
//! kept; `sue` runs dev tags and dependencies come along.

use crate::support::Project;
use crate::support::daemon::Daemon;
use crate::support::registry::{Auth, Registry};
use crate::tags::{claim_with, images, registry_config};

fn conditions(d: &Daemon, env: &str) -> Vec<String> {
    let detail = d.json(&format!("/api/v1/environments/{env}"));
    detail["conditions"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| format!("{}:{}", c["type"].as_str().unwrap_or(""), c["message"]))
                .collect()
        })
        .unwrap_or_default()
}

fn events(d: &Daemon) -> String {
    d.json("/api/v1/events").to_string()
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn a_new_tag_is_followed_an_outage_changes_nothing_and_a_deleted_tag_is_kept() {
    let mut r = Registry::start(Auth::None);
    for t in ["1.2.0", "1.2.3", "2.0.0"] {
        r.push("releases/user-service", t);
    }
    r.push("releases/billing", "1.0.0");
    let host = r.host();
    let p = Project::new(&registry_config(&host, ""));
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("user-service", "^1.2.0")]),
    );
    p.write(
        "claims/dev-b.yaml",
        claim_with("dev-b", "dev", &[("billing", "^1.0.0")]),
    );
    p.write(
        "claims/dev-c.yaml",
        claim_with("dev-c", "dev", &[("billing", "1.0.0")]),
    );
    let d = Daemon::start(p.dir.path());
    let user = |tag: &str| vec![format!("{host}/releases/user-service:{tag}")];
    d.wait_for("dev-a at 1.2.3", |_| images(&p, "dev-a") == user("1.2.3"));
    d.wait_for("all three", |d| d.names() == ["dev-a", "dev-b", "dev-c"]);

    let (resolved0, rendered0) = idle_scans_cost_only_listings(&d, &host);
    let (resolved, rendered) = (
        "converge_claims_resolved_total",
        "converge_claims_rendered_total",
    );
    // A new matching tag: followed, and only the environment it concerns
    // is resolved and rendered again.
    r.push("releases/user-service", "1.2.4");
    d.wait_for("dev-a at 1.2.4", |_| images(&p, "dev-a") == user("1.2.4"));
    d.wait_for("the event", |d| {
        events(d).contains("update (TagsChanged): user-service 1.2.3 -> 1.2.4 (^1.2.0)")
    });
    assert_eq!(
        d.sample(resolved),
        resolved0 + 1,
        "only dev-a resolved again"
    );
    assert_eq!(
        d.sample(rendered),
        rendered0 + 1,
        "only dev-a rendered again"
    );

    // The registry goes away: nothing changes, each environment says so.
    r.stop();
    d.wait_for("the tag source error", |d| {
        let sources = d.json("/api/v1/sources");
        sources["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|s| s["name"] == "versions" && !s["last_error"].is_null())
    });
    d.wait_for("TagsStale", |d| has(d, "dev-a", "TagsStale"));
    assert_eq!(
        d.names(),
        ["dev-a", "dev-b", "dev-c"],
        "an outage deletes nothing"
    );
    assert_eq!(images(&p, "dev-a"), user("1.2.4"));
    assert!(
        !has(&d, "dev-c", "TagsStale"),
        "exact versions do not depend on the registry"
    );

    // A restart during the outage: the stored lists keep every version.
    assert_eq!(d.terminate(), Some(0));
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    d.wait_for("TagsStale again", |d| has(d, "dev-a", "TagsStale"));
    assert_eq!(images(&p, "dev-a"), user("1.2.4"));
    assert_eq!(d.names(), ["dev-a", "dev-b", "dev-c"]);

    // Back, with 1.2.4 deleted: no downgrade to 1.2.3.
    r.resume();
    r.delete("releases/user-service", "1.2.4");
    d.wait_for("ResolvedTagMissing", |d| {
        conditions(d, "dev-a")
            .iter()
            .any(|c| c.starts_with("ResolvedTagMissing:") && c.contains("1.2.4"))
    });
    assert!(!has(&d, "dev-a", "TagsStale"));
    assert_eq!(
        images(&p, "dev-a"),
        user("1.2.4"),
        "kept, never a downgrade"
    );
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn sue_runs_dev_tags_from_the_dev_registry_and_dependencies_come_along() {
    let r = Registry::start(Auth::None);
    r.push("releases/checkout", "1.0.0");
    r.push("releases/billing", "1.3.0");
    r.push("snapshots/checkout", "1.1.0-dev.4");
    r.push("snapshots/checkout", "1.1.0");
    r.push("snapshots/billing", "1.4.0");
    let host = r.host();
    let catalog =
        "services:\n  checkout:\n    depends_on: [billing]\n  billing:\n    version: ^1.0.0\n";
    let p = Project::new(&(registry_config(&host, "") + catalog));
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("checkout", "^1.0.0")]),
    );
    p.write(
        "claims/sue-a.yaml",
        claim_with("sue-a", "sue", &[("checkout", "^1.0.0")]),
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("both", |d| d.names() == ["dev-a", "sue-a"]);
    assert_eq!(
        images(&p, "dev-a"),
        [
            format!("{host}/releases/billing:1.3.0"),
            format!("{host}/releases/checkout:1.0.0")
        ]
    );
    assert_eq!(
        images(&p, "sue-a"),
        [
            format!("{host}/snapshots/billing:1.4.0"),
            format!("{host}/snapshots/checkout:1.1.0")
        ]
    );
    let detail = d.json("/api/v1/environments/sue-a");
    assert_eq!(
        detail["versions"]["billing"]["dependency_of"],
        serde_json::json!(["checkout"]),
        "{detail}"
    );
    assert!(
        detail["versions"]["checkout"]
            .get("dependency_of")
            .is_none(),
        "{detail}"
    );
    assert!(
        events(&d).contains("billing (none) -> 1.4.0 (^1.0.0, dependency of checkout)"),
        "{}",
        events(&d)
    );
}

/// An unchanged tag list costs its listing requests and nothing else; returns
/// the resolved and rendered counters.
fn idle_scans_cost_only_listings(d: &Daemon, host: &str) -> (u64, u64) {
    let listed = r#"converge_registry_requests_total{registry="HOST",op="tags",status="200"}"#
        .replace("HOST", host);
    let resolved = "converge_claims_resolved_total";
    let rendered = "converge_claims_rendered_total";
    let (scans0, listed0) = (d.sample("converge_tag_scans_total"), d.sample(&listed));
    let (resolved0, rendered0) = (d.sample(resolved), d.sample(rendered));
    let passes0 = d.sample("converge_passes_total");
    d.wait_for("two idle scans", |d| {
        d.sample("converge_tag_scans_total") >= scans0 + 2
    });
    assert!(
        d.sample(&listed) >= listed0 + 4,
        "two repositories listed per scan"
    );
    assert_eq!(
        d.sample(resolved),
        resolved0,
        "an unchanged list resolves nothing"
    );
    assert_eq!(d.sample(rendered), rendered0);
    assert_eq!(
        d.sample("converge_passes_total"),
        passes0,
        "and runs no pass"
    );
    (resolved0, rendered0)
}

fn has(d: &Daemon, env: &str, condition: &str) -> bool {
    conditions(d, env)
        .iter()
        .any(|c| c.starts_with(&format!("{condition}:")))
}
