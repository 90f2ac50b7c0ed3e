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
