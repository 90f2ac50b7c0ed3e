//! The registry client against a hostile registry (`support/hostile_registry`):
//! no answer panics converge, credentials go only to the registry itself or
//! to a realm it may trust with them, and nothing from another host is used.

use super::{claim_with, images, registry_config};
use crate::support::daemon::Daemon;
use crate::support::hostile_registry::{HostileRegistry, Mode};
use crate::support::{Project, stderr, stdout, test_ca};

const CREDENTIALS: &str =
    "  credentials:\n    username: ci\n    password_file: registry-password\n";

fn project(host: &str, extra: &str) -> Project {
    let p = Project::new(&registry_config(host, &format!("{CREDENTIALS}{extra}")));
    p.write("registry-password", "s3cret\n");
    p
}

#[test]
fn a_token_lifetime_past_the_clock_neither_panics_nor_stops_the_daemon() {
    let r = HostileRegistry::start(Mode::HugeToken, None, "127.0.0.1");
    let p = project(&r.host(), "");
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", "^1.0.0")]),
    );
    let out = p.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let image = format!("{}/releases/billing:1.2.0", r.host());
    assert_eq!(images(&p, "dev-a"), std::slice::from_ref(&image));

    // The daemon, which exited 101 on every start, starts, applies and
    // keeps scanning (interval 1 s) with the token it keeps.
    std::fs::remove_dir_all(p.path("out")).expect("clear out");
    let d = Daemon::start(p.dir.path());
    d.wait_for("dev-a applied", |_| images(&p, "dev-a") == [image.clone()]);
    let scans = |r: &HostileRegistry| {
        r.requests()
            .iter()
            .filter(|q| q.path.contains("/tags/list"))
            .count()
    };
    let before = scans(&r);
    d.wait_for("another scan", |_| scans(&r) > before);
    assert!(!d.log().contains("panicked"), "{}", d.log());
    assert_eq!(d.terminate(), Some(0));
}

/// The realm is the foreign server; the registry is plain HTTP (with
/// `plain_http: true`) or HTTPS (`plain_http: false`, a test CA).
fn assert_foreign_realm_refused(r: &HostileRegistry, p: &Project) {
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", "^1.0.0")]),
    );
    let out = p.run(&["validate", "claims"]);
    let text = stdout(&out);
    assert!(
        text.contains("not checked: claims/dev-a.yaml/services/billing")
            && text.contains("refused: a token realm over plain HTTP"),
        "{text}{}",
        stderr(&out)
    );
    let out = p.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(images(p, "dev-a").is_empty(), "left unresolved");
    assert_eq!(
        r.foreign_requests().len(),
        0,
        "the foreign realm was never asked, so received no credential: {:?}",
        r.foreign_requests()
    );
    assert!(
        r.requests().iter().all(|q| q.authorization.is_none()),
        "the registry asked for a token, never for the password: {:?}",
        r.requests()
    );
    assert!(!text.contains("s3cret") && !stderr(&out).contains("s3cret"));
}

#[test]
fn credentials_never_go_to_a_plain_http_realm_on_another_port() {
    let r = HostileRegistry::start(Mode::ForeignRealm, None, "127.0.0.1");
    let p = project(&r.host(), "");
    assert_foreign_realm_refused(&r, &p);
}

#[test]
fn credentials_never_go_to_a_plain_http_realm_when_plain_http_is_false() {
    let tls = tempfile::tempdir().expect("tempdir");
    test_ca(tls.path());
    let r = HostileRegistry::start(Mode::ForeignRealm, Some(tls.path()), "127.0.0.1");
    let config = registry_config(&r.host(), "").replace("plain_http: true", "plain_http: false");
    let p = Project::new(&format!(
        "{config}{CREDENTIALS}  ca_file: {}\n",
        tls.path().join("ca.pem").display()
    ));
    p.write("registry-password", "s3cret\n");
    assert_foreign_realm_refused(&r, &p);
}

#[test]
fn a_redirect_to_another_host_is_refused_and_one_within_the_registry_is_followed() {
    let r = HostileRegistry::start(Mode::Redirect, None, "127.0.0.2");
    let p = project(&r.host(), "");
    p.write(
        "claims/dev-a.yaml",
        claim_with("dev-a", "dev", &[("billing", "*")]),
    );
    p.write(
        "claims/dev-b.yaml",
        claim_with("dev-b", "dev", &[("user-service", "*")]),
    );
    let out = p.run(&["validate", "claims"]);
    let text = stdout(&out);
    assert!(
        text.contains("not checked: claims/dev-a.yaml/services/billing")
            && text.contains("refused: a redirect to another host")
            && text.contains(&r.foreign),
        "{text}{}",
        stderr(&out)
    );
    let out = p.run(&["run", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        images(&p, "dev-a").is_empty(),
        "the foreign host's 9.9.9 is not used"
    );
    assert_eq!(
        images(&p, "dev-b"),
        [format!("{}/releases/user-service:1.2.0", r.host())]
    );
    assert_eq!(r.foreign_requests().len(), 0, "{:?}", r.foreign_requests());
    let moved: Vec<_> = r
        .requests()
        .into_iter()
        .filter(|q| q.path.contains("moved=1"))
        .collect();
    assert!(
        !moved.is_empty()
            && moved
                .iter()
                .all(|q| q.authorization.as_deref() == Some("Basic Y2k6czNjcmV0")),
        "the redirect within the registry was followed with the credentials: {moved:?}"
    );
}
