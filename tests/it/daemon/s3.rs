//! The daemon against a bucket on Garage (`support::garage`): uploads are
//! applied, the uploader's metadata reaches the policies, a rewritten static
//! object is refused, and authorization survives a restart.

use std::path::Path;
use std::time::Duration;

use crate::support::daemon::Daemon;
use crate::support::garage::{Bucket, Garage, source_yaml};
use crate::support::{Project, claim, repo};

/// A project whose only source is `bucket`, with the default policies plus
/// one that accepts bucket claims only when uploaded with `uploader=ci`.
fn bucket_project(garage: &Garage, b: &Bucket, extra: &str) -> Project {
    let p = Project::new("");
    let (id, secret) = garage.key_files();
    std::fs::copy(id, p.path("s3-key-id")).expect("copy");
    std::fs::copy(secret, p.path("s3-secret")).expect("copy");
    for f in ["default.cedar", "converge.cedarschema", "entities.json"] {
        std::fs::create_dir_all(p.path("policies")).expect("mkdir");
        std::fs::copy(repo().join("policies").join(f), p.path("policies").join(f))
            .expect("copy policies");
    }
    p.write(
        "policies/uploader.cedar",
        "@id(\"bucket-claims-come-from-ci\")\nforbid (principal, action in [Converge::Action::\"create\", Converge::Action::\"update\", Converge::Action::\"delete\"], resource)\nwhen {\n  \
         context.source.kind == \"s3\" &&\n  \
         !(context has object && context.object.metadata.contains(\"uploader=ci\"))\n};\n",
    );
    let yaml = source_yaml(
        &garage.endpoint(),
        &b.name,
        Path::new("s3-key-id"),
        Path::new("s3-secret"),
        extra,
    );
    p.write(
        "converge.yaml",
        format!(
            "sources:\n{yaml}target:\n  kind: manifests\n  path: out\nstate_dir: .converge\npolicies: policies\n"
        ),
    );
    p
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn an_uploaded_claim_is_applied_by_the_daemon_and_its_object_shows_in_the_api() {
    let garage = Garage::shared();
    let b = garage.bucket();
    let p = bucket_project(garage, &b, "");
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    assert!(d.names().is_empty());

    b.put(
        "team1/dev-team1-s3.yaml",
        claim("dev-team1-s3", "dev"),
        &[("uploader", "ci")],
    );
    b.put(
        "team1/dev-team1-rogue.yaml",
        claim("dev-team1-rogue", "dev"),
        &[("uploader", "alice")],
    );
    d.wait_for("dev-team1-s3 ready", |d| {
        d.names().contains(&"dev-team1-s3".to_owned())
            && d.json("/api/v1/environments/dev-team1-s3")["status"] == "Ready"
    });
    assert!(
        p.path("out/dev-team1-s3/namespace-dev-team1-s3.yaml")
            .exists()
    );
    let detail = d.json("/api/v1/environments/dev-team1-s3");
    assert_eq!(
        detail["source"],
        format!("bucket:s3://{}/team1/dev-team1-s3.yaml", b.name)
    );
    let object = &detail["provenance"];
    assert_eq!(object["kind"], "s3", "{detail}");
    assert_eq!(object["bucket"].as_str(), Some(b.name.as_str()));
    assert_eq!(object["key"], "team1/dev-team1-s3.yaml");
    assert_eq!(object["metadata"]["uploader"], "ci");
    assert!(
        object["etag"].as_str().is_some_and(|e| !e.is_empty())
            && object["last_modified"].is_string(),
        "{object}"
    );
    // The uploader's metadata reached the Cedar context: the other claim is
    // denied (a diagnostic, shown as an event naming the object).
    d.wait_for("dev-team1-rogue denied", |d| {
        d.get("/api/v1/events")
            .1
            .contains("bucket-claims-come-from-ci")
    });
    let events = d.get("/api/v1/events").1;
    assert!(
        events.contains(&format!("s3://{}/team1/dev-team1-rogue.yaml", b.name)),
        "{events}"
    );
    assert!(
        !p.path("out/dev-team1-rogue").exists(),
        "a denied claim is not applied"
    );

    b.put(
        "team1/dev-team1-s3.yaml",
        claim("dev-team1-s3", "dev").replace("v1.2.3", "v1.2.4"),
        &[("uploader", "ci")],
    );
    d.wait_for("the new version", |d| {
        d.json("/api/v1/environments/dev-team1-s3")["versions"]["user-service"]["tag"] == "v1.2.4"
    });
    let metrics = d.get("/metrics").1;
    assert!(
        metrics.contains("converge_s3_requests_total{source=\"bucket\",op=\"list\"}"),
        "{metrics}"
    );
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn the_daemon_keeps_the_first_version_of_a_rewritten_static_object_with_a_condition() {
    let garage = Garage::shared();
    let b = garage.bucket();
    let p = bucket_project(garage, &b, "    static: true\n");
    b.put(
        "prod-a.yaml",
        claim("prod-a", "prod"),
        &[("uploader", "ci")],
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("prod-a ready", |d| {
        d.names().contains(&"prod-a".to_owned())
            && d.json("/api/v1/environments/prod-a")["status"] == "Ready"
    });
    b.put(
        "prod-a.yaml",
        claim("prod-a", "prod").replace("v1.2.3", "v9.9.9"),
        &[("uploader", "ci")],
    );
    d.wait_for("the rewrite refused", |d| {
        d.get("/api/v1/environments/prod-a")
            .1
            .contains("NewerVersionRefused")
    });
    let detail = d.json("/api/v1/environments/prod-a");
    assert_eq!(
        detail["versions"]["user-service"]["tag"], "v1.2.3",
        "the first version stays in force: {detail}"
    );
    let deployment = std::fs::read_to_string(p.path("out/prod-a/deployment-user-service.yaml"))
        .expect("deployment");
    assert!(deployment.contains("user-service:v1.2.3"), "{deployment}");
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn after_a_restart_bucket_claims_are_still_authorized_with_their_object_metadata() {
    let garage = Garage::shared();
    let b = garage.bucket();
    let p = bucket_project(garage, &b, "");
    b.put(
        "team1/dev-team1-s3.yaml",
        claim("dev-team1-s3", "dev"),
        &[("uploader", "ci")],
    );
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-team1-s3 ready", |d| {
        d.names().contains(&"dev-team1-s3".to_owned())
            && d.json("/api/v1/environments/dev-team1-s3")["status"] == "Ready"
    });
    assert_eq!(d.terminate(), Some(0));
    let d = Daemon::start(p.dir.path());
    d.wait_for("ready", |d| d.get("/ready").0 == 200);
    // A few polls of the unchanged bucket.
    std::thread::sleep(Duration::from_secs(3));
    let detail = d.json("/api/v1/environments/dev-team1-s3");
    assert_eq!(detail["status"], "Ready", "{detail}");
}
