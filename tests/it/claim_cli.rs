//! `converge claim` through the real binary: `new` writes claims that
//! `validate` accepts; `put`, `rm` and `extend` against a bucket on Garage
//! (objects checked with the AWS SDK), `--wait` through a running daemon.

use crate::support::{Project, stderr, stdout};

/// A project whose config has a service catalog and a default user.
fn catalog_project() -> Project {
    Project::new(
        "services:\n  checkout:\n    depends_on: [billing]\n  billing:\n    version: ^1.0.0\n\
         claims:\n  default_user: jane.roe@company.com\n",
    )
}

#[test]
fn claim_new_writes_a_claim_that_validate_accepts() {
    let p = catalog_project();
    let out = p.run(&[
        "claim",
        "new",
        "dev-team1-new",
        "--type",
        "dev",
        "--pool",
        "team1",
        "--user",
        "john.doe@company.com",
        "--services",
        "user-service=^1.2.0,billing=1.x.x",
        "--expires",
        "24h",
        "-o",
        "claims/dev-team1-new.yaml",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(p.path("claims/dev-team1-new.yaml")).expect("written");
    assert!(text.contains("user: \"john.doe@company.com\""), "{text}");
    assert!(text.contains("user-service: \"^1.2.0\""), "{text}");
    let valid = p.run(&["validate", "claims/dev-team1-new.yaml"]);
    assert_eq!(valid.status.code(), Some(0), "{}", stdout(&valid));

    // JSON to stdout, the user from claims.default_user.
    let out = p.run(&[
        "claim",
        "new",
        "dev-team1-json",
        "--type",
        "dev",
        "--pool",
        "team1",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["user"], "jane.roe@company.com");
    assert_eq!(doc["deployment_method"], "dynamic");
    assert!(doc["expiration_date"].is_null());
}

#[test]
fn claim_new_without_a_user_is_refused_with_a_hint_and_writes_nothing() {
    let p = Project::new("");
    let out = p.run(&[
        "claim",
        "new",
        "dev-team1-x",
        "--type",
        "dev",
        "--pool",
        "team1",
        "-o",
        "claims/x.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--user"), "{}", stderr(&out));
    assert!(!p.path("claims/x.yaml").exists());

    let out = p.run(&[
        "claim", "new", "Bad_Name", "--type", "dev", "--pool", "team1", "--user", "a@b.c",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/environment_name:") && stderr(&out).contains("(pattern)"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn claim_new_shows_the_services_the_catalog_brings() {
    let p = catalog_project();
    let out = p.run(&[
        "claim",
        "new",
        "dev-team1-c",
        "--type",
        "dev",
        "--pool",
        "team1",
        "--services",
        "checkout=v2.0.0",
        "--show-closure",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The claim on stdout, the closure on stderr.
    assert!(!stdout(&out).contains("dependency"), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("dev-team1-c runs 2 service(s)"), "{err}");
    assert!(err.contains("checkout v2.0.0"), "{err}");
    assert!(
        err.contains("billing ^1.0.0 (a dependency of checkout"),
        "{err}"
    );
}
