//! Problems you can see (issue 21, point 5) with a dir source: a failing
//! source reads `ready: false` until it is read again; a rejected claim file
//! that goes away is said to be removed, not "no longer rejected" as if valid.

use super::quickstart;
use crate::support::daemon::Daemon;

#[test]
fn a_failing_source_reads_not_ready_until_it_is_read_again() {
    let p = quickstart();
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    assert_eq!(d.json("/api/v1/sources")["items"][0]["ready"], true);
    std::fs::rename(p.path("claims"), p.path("claims.away")).expect("move claims away");
    d.wait_for("the source error", |d| {
        !d.json("/api/v1/sources")["items"][0]["last_error"].is_null()
    });
    let source = &d.json("/api/v1/sources")["items"][0];
    assert_eq!(source["ready"], false, "{source}");
    std::fs::rename(p.path("claims.away"), p.path("claims")).expect("move back");
    d.wait_for("ready again", |d| {
        d.json("/api/v1/sources")["items"][0]["ready"] == true
    });
}

#[test]
fn a_rejected_claim_file_removed_is_said_to_be_removed() {
    let p = crate::support::Project::new("");
    p.write(
        "claims/dev-good.yaml",
        crate::support::claim("dev-good", "dev"),
    );
    p.write(
        "claims/dev-bad.yaml",
        crate::support::claim("dev-bad", "dev")
            .replace("environment_type: dev", "environment_type: nope"),
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    p.remove("claims/dev-bad.yaml");
    d.wait_for("its removal logged", |d| {
        d.log()
            .contains("claim file no longer rejected: it was removed")
    });
    assert!(!d.log().contains("it is valid now"), "{}", d.log());
}

/// A denied claim's row (and an invalid one's) shows the type, pool and
/// owner it asked for, and the file it came from.
#[test]
fn a_refused_claims_row_shows_what_it_asked_for() {
    let p = crate::support::Project::new("");
    p.write(
        "claims/dev-denied.yaml",
        crate::support::claim("dev-denied", "dev").replace("pool: team1", "pool: team2"),
    );
    p.write(
        "claims/dev-invalid.yaml",
        crate::support::claim("dev-invalid", "dev").replace("v1.2.3", "not a version!"),
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    let items = d.json("/api/v1/environments");
    let row = |name: &str| {
        items["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|i| i["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} listed: {items}"))
    };
    let denied = row("dev-denied");
    assert_eq!(denied["status"], "Invalid", "{denied}");
    assert_eq!(denied["type"], "dev", "{denied}");
    assert_eq!(denied["pool"], "team2", "{denied}");
    assert_eq!(denied["owner"], "john.doe@company.com", "{denied}");
    assert_eq!(denied["source"], "local:claims/dev-denied.yaml", "{denied}");
    let invalid = row("dev-invalid");
    assert_eq!(invalid["pool"], "team1", "{invalid}");
    assert_eq!(
        invalid["source"], "local:claims/dev-invalid.yaml",
        "{invalid}"
    );
    let url = format!("http://{}", d.addr);
    let table = crate::support::stdout(&p.run(&["status", "--url", &url]));
    assert!(table.contains("team2"), "{table}");
}

/// A claim whose name is invalid has no environment row: `status` lists it
/// by file, with the JSON path and the rule (and `/api/v1/sources` does).
#[test]
fn a_claim_with_an_invalid_name_shows_in_status_by_file() {
    let p = crate::support::Project::new("");
    p.write(
        "claims/dev-good.yaml",
        crate::support::claim("dev-good", "dev"),
    );
    p.write(
        "claims/bad-name.yaml",
        crate::support::claim("Bad_Name!", "dev"),
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    let source = &d.json("/api/v1/sources")["items"][0];
    assert_eq!(source["refused_files_total"], 1, "{source}");
    let file = &source["refused_files"][0];
    assert_eq!(file["path"], "claims/bad-name.yaml", "{source}");
    assert_eq!(file["pointer"], "/environment_name", "{source}");
    let url = format!("http://{}", d.addr);
    let table = crate::support::stdout(&p.run(&["status", "--url", &url]));
    assert!(table.contains("dev-good"), "{table}");
    assert!(
        table.contains("1 file(s) refused before naming a valid environment"),
        "{table}"
    );
    assert!(
        table.contains("claims/bad-name.yaml at /environment_name:"),
        "{table}"
    );
    // The status page lists it too, by file.
    let (code, page) = d.get("/");
    assert_eq!(code, 200);
    assert!(page.contains("id=\"refused-files\""), "{page}");
    assert!(page.contains("claims/bad-name.yaml"), "{page}");
    // Fixed, it leaves the list.
    p.write(
        "claims/bad-name.yaml",
        crate::support::claim("dev-fixed", "dev"),
    );
    d.wait_for("the file gone from the refused list", |d| {
        d.json("/api/v1/sources")["items"][0]["refused_files_total"] == 0
    });
}
