//! The registry tag source against the real distribution registry.

use super::{claim_with, images, registry_config};
use crate::support::registry::{Auth, PASSWORD, Registry};
use crate::support::{Project, stderr, stdout};

fn push_all(r: &Registry, repository: &str, tags: &[&str]) {
    for t in tags {
        r.push(repository, t);
    }
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn a_paged_lexical_listing_resolves_to_the_numerically_highest_matching_tag() {
    let r = Registry::start(Auth::None);
    // Listed lexically, in pages of 2: v1.10.0 comes before v1.2.9.
    push_all(
        &r,
        "releases/user-service",
        &[
            "v1.2.0",
            "v1.2.9",
            "v1.10.0",
            "latest",
            "v1.11.0-rc.1",
            "v2.0.0.1",
        ],
    );
    let p = Project::new(&registry_config(&r.host(), ""));
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("user-service", "^1.2.0")]),
    );
    p.write(
        "claims/dev-b.yaml",
        claim_with("dev-b", "dev", &[("user-service", "*")]),
    );
    let out = p.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let host = r.host();
    assert_eq!(
        images(&p, "dev-a"),
        [format!("{host}/releases/user-service:v1.10.0")]
    );
    assert_eq!(
        images(&p, "dev-b"),
        [format!("{host}/releases/user-service:v2.0.0.1")]
    );
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn htpasswd_basic_auth_lists_with_the_password_file_and_a_wrong_one_is_auth_failed() {
    let r = Registry::start(Auth::Basic);
    push_all(&r, "releases/billing", &["1.0.0", "1.4.2"]);
    let creds = "  credentials:\n    username: ci\n    password_file: registry-password\n";
    let p = Project::new(&registry_config(&r.host(), creds));
    p.write("registry-password", format!("{PASSWORD}\n"));
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", "^1.0.0")]),
    );
    let out = p.run(&["validate", "claims"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(!stdout(&out).contains("not checked"), "{}", stdout(&out));
    let out = p.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        images(&p, "dev-a"),
        [format!("{}/releases/billing:1.4.2", r.host())]
    );

    p.write("registry-password", "wrong\n");
    let out = p.run(&["validate", "claims"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "could not check is not a failure"
    );
    let text = stdout(&out);
    assert!(
        text.contains("not checked: claims/dev-a.yaml/services/billing")
            && text.contains("authentication failed (HTTP 401)"),
        "{text}"
    );
    assert!(!text.contains("wrong"), "no credential in messages: {text}");
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn the_bearer_challenge_is_answered_at_the_token_endpoint() {
    let r = Registry::start(Auth::Token);
    push_all(&r, "releases/billing", &["1.0.0", "1.1.0", "1.2.0"]);
    let creds = "  credentials:\n    username: ci\n    password_file: registry-password\n";
    let p = Project::new(&registry_config(&r.host(), creds));
    p.write("registry-password", PASSWORD);
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", "1.x")]),
    );
    let out = p.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        images(&p, "dev-a"),
        [format!("{}/releases/billing:1.2.0", r.host())]
    );
    assert_eq!(
        r.proxied(),
        2,
        "3 tags in pages of 2, each page once with the token"
    );

    p.write("registry-password", "nope");
    let out = p.run(&["validate", "claims"]);
    let text = stdout(&out);
    assert!(text.contains("authentication failed (HTTP 401)"), "{text}");
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn validate_fails_on_a_constraint_no_tag_matches_and_says_when_it_cannot_check() {
    let mut r = Registry::start(Auth::None);
    push_all(&r, "releases/user-service", &["1.2.3"]);
    push_all(&r, "snapshots/user-service", &["2.0.0-dev.1", "2.0.0"]);
    let p = Project::new(&registry_config(&r.host(), ""));
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("user-service", "^2.0.0")]),
    );
    // sue resolves against the dev tags, where 2.0.0 exists.
    p.write(
        "claims/sue-a.yaml",
        claim_with("sue-a", "sue", &[("user-service", "^2.0.0")]),
    );
    let out = p.run(&["validate", "claims"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("claims/dev-a.yaml")
            && text.contains("/services/user-service")
            && text.contains("version-unresolved")
            && text.contains("\"^2.0.0\""),
        "{text}"
    );
    assert!(!text.contains("sue-a"), "{text}");

    r.stop();
    let out = p.run(&["validate", "claims"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("not checked: claims/dev-a.yaml/services/user-service"),
        "{text}"
    );
    assert!(text.contains("could not be checked"), "{text}");
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn a_429_is_waited_out_and_a_listing_failing_halfway_is_no_list() {
    let r = Registry::start(Auth::Token);
    push_all(&r, "releases/billing", &["1.0.0", "1.1.0", "1.2.0"]);
    let creds = "  credentials:\n    username: ci\n    password_file: registry-password\n";
    let p = Project::new(&registry_config(&r.host(), creds));
    p.write("registry-password", PASSWORD);
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", "^1.0.0")]),
    );
    // Rate limited once: Retry-After is honoured, then the listing goes on.
    r.answer_next(&[Some(429)]);
    let out = p.run(&["validate", "claims"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(!stdout(&out).contains("not checked"), "{}", stdout(&out));
    // The second page fails: the whole listing fails, nothing partial.
    r.answer_next(&[None, Some(503)]);
    let out = p.run(&["validate", "claims"]);
    let text = stdout(&out);
    assert!(
        text.contains("page 2 of the listing failed") && text.contains("HTTP 503"),
        "{text}"
    );
    // The same in a pass: the environment is not created from half a list.
    r.answer_next(&[None, Some(503)]);
    let out = p.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        images(&p, "dev-a").is_empty(),
        "left as it is (VersionUnresolved)"
    );
}

#[test]
#[ignore = "needs the distribution registry (scripts/tools builds it)"]
fn the_request_budget_and_the_tag_cap_bound_a_scan() {
    let r = Registry::start(Auth::None);
    push_all(&r, "releases/a", &["1.0.0", "1.1.0", "1.2.0"]);
    push_all(&r, "releases/b", &["1.0.0"]);
    // Budget 2: a's two pages spend it, b is left for the next scan.
    let p = Project::new(&registry_config(&r.host(), "  budget: 2\n"));
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("a", "*"), ("b", "*")]),
    );
    let text = stdout(&p.run(&["validate", "claims"]));
    assert!(
        text.contains("the request budget of this scan is spent"),
        "{text}"
    );
    // A cap of 2 tags: the first two (lexically) are all that is read.
    let p = Project::new(&registry_config(&r.host(), "  max_tags: 2\n"));
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("a", "*")]),
    );
    let out = p.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        images(&p, "dev-a"),
        [format!("{}/releases/a:1.1.0", r.host())]
    );
}
