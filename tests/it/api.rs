//! The API as its `OpenAPI` document describes it: every endpoint's real
//! responses (successes and errors) checked against the document's schemas,
//! and schemathesis attacking a real daemon from the same document.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use serde_json::{Value, json};

use crate::support::daemon::Daemon;
use crate::support::git::Repo;
use crate::support::{Project, claim, repo};

const AUTH: [(&str, &str); 1] = [("Authorization", "Bearer s3cret-token")];

/// The quick start's claims, a rejected claim naming an environment, an
/// expired claim, a claim whose version cannot resolve, and a git source
/// (for provenance); a token on the API.
fn project(git: &Repo) -> Project {
    let p = Project::new("");
    for entry in std::fs::read_dir(repo().join("examples/quickstart/claims")).expect("claims") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), p.path("claims").join(entry.file_name())).expect("copy");
    }
    p.write(
        "claims/broken.yaml",
        "environment_name: dev-broken\nenvironment_type: dev\nuser: nobody\n",
    );
    p.write(
        "claims/expired.yaml",
        claim("dev-expired", "dev").replace(
            "expiration_date: null",
            "expiration_date: \"2024-02-01T00:00:00Z\"",
        ),
    );
    p.write(
        "claims/unresolved.yaml",
        claim("dev-unresolved", "dev").replace("user-service: v1.2.3", "search: ^9.0.0"),
    );
    p.write("token", "s3cret-token\n");
    git.commit(
        &[(
            "environments/dev-from-git.yaml",
            Some(&claim("dev-from-git", "dev")),
        )],
        "add dev-from-git\n\nReviewed-by: Ann <ann@company.com>",
        &[],
    );
    let quickstart =
        std::fs::read_to_string(repo().join("examples/quickstart/converge.yaml")).expect("config");
    let tags = quickstart
        .split("tags:")
        .nth(1)
        .expect("quick start has tags");
    let config = format!(
        "sources:\n  - name: local\n    kind: dir\n    path: claims\n\
         \x20 - name: envs\n    kind: git\n    url: file://{}\n    branch: main\n    paths: [\"environments/*.yaml\"]\n\
         target:\n  kind: manifests\n  path: out\nstate_dir: .converge\n\
         api:\n  token_file: token\ntags:{tags}",
        git.bare().display()
    );
    std::fs::write(p.path("converge.yaml"), config).expect("write");
    p
}

/// A validator for `schema` (which may point into the document's components).
fn validator(document: &Value, schema: &Value) -> jsonschema::Validator {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": document["components"],
        "allOf": [schema],
    });
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("the document's schema compiles: {e}"))
}

/// Checks one real response against what the document says of it.
fn check(document: &Value, d: &Daemon, route: &str, path: &str, auth: bool) -> u16 {
    let headers: &[(&str, &str)] = if auth { &AUTH } else { &[] };
    let (status, head, body) = d.request("GET", path, headers);
    let operation = &document["paths"][route]["get"];
    assert!(operation.is_object(), "{route} is documented");
    let response = &operation["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "GET {path} answered {status}, which {route} does not document: {body}"
    );
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type").then(|| v.trim())
        })
        .unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default();
    let described = &response["content"][media];
    assert!(
        described.is_object(),
        "GET {path}: {media} is not what the document says for {status}: {response}"
    );
    if media == "application/json" {
        let value: Value = serde_json::from_str(&body).expect("a JSON body");
        let validator = validator(document, &described["schema"]);
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}: {e}", e.instance_path(), e.schema_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "GET {path} ({status}) does not match the document:\n{}\n{body}",
            errors.join("\n")
        );
    }
    status
}

const ENV: &str = "/api/v1/environments/{name}";
const LIST: &str = "/api/v1/environments";
/// Each documented route: a request, with or without the token, and the
/// status it answers.
const CASES: &[(&str, &str, bool, u16)] = &[
    ("/health", "/health", false, 200),
    ("/ready", "/ready", false, 200),
    ("/metrics", "/metrics", true, 200),
    ("/metrics", "/metrics", false, 401),
    ("/", "/", true, 200),
    ("/", "/?q=TEAM1&page=2", true, 200),
    ("/", "/?q=a&q=b", true, 400),
    ("/", "/", false, 401),
    (
        "/environments/{name}",
        "/environments/prod-team1-payments",
        true,
        200,
    ),
    (
        "/environments/{name}",
        "/environments/no-such-one",
        true,
        404,
    ),
    ("/environments/{name}", "/environments/x", false, 401),
    (LIST, LIST, true, 200),
    (LIST, LIST, false, 401),
    (
        LIST,
        "/api/v1/environments?type=dev&status=Invalid",
        true,
        200,
    ),
    (LIST, "/api/v1/environments?q=TEAM1&pool=team1", true, 200),
    (LIST, "/api/v1/environments?type=a&type=b", true, 400),
    (LIST, "/api/v1/environments?limit=1", true, 200),
    (
        LIST,
        "/api/v1/environments?limit=2&owner=john.doe%40company.com&service=user-service&version=v1.2.3&expiring_before=2099-01-01T00:00:00Z",
        true,
        200,
    ),
    (LIST, "/api/v1/environments?limit=0", true, 400),
    (LIST, "/api/v1/environments?continue=%21", true, 400),
    (LIST, "/api/v1/environments?expiring_before=x", true, 400),
    ("/", "/?status=Ready&type=prod", true, 200),
    (ENV, "/api/v1/environments/prod-team1-payments", true, 200),
    (ENV, "/api/v1/environments/dev-broken", true, 200),
    (ENV, "/api/v1/environments/dev-unresolved", true, 200),
    (ENV, "/api/v1/environments/dev-from-git", true, 200),
    (ENV, "/api/v1/environments/no-such-one", true, 404),
    (ENV, "/api/v1/environments/x", false, 401),
    ("/api/v1/sources", "/api/v1/sources", true, 200),
    ("/api/v1/plan", "/api/v1/plan", true, 200),
    ("/api/v1/events", "/api/v1/events", true, 200),
    ("/api/v1/openapi.json", "/api/v1/openapi.json", true, 200),
    ("/api/v1/openapi.json", "/api/v1/openapi.json", false, 401),
];

#[test]
fn every_endpoint_answers_as_the_openapi_document_describes() {
    let git = Repo::new();
    let p = project(&git);
    let d = Daemon::start(p.dir.path());
    let (status, _, body) = d.request("GET", "/api/v1/openapi.json", &AUTH);
    assert_eq!(status, 200, "{body}");
    let document: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(document["openapi"], "3.1.0");
    d.wait_for("every environment listed", |d| {
        let (_, _, body) = d.request("GET", "/api/v1/environments", &AUTH);
        [
            "dev-broken",
            "dev-unresolved",
            "dev-from-git",
            "prod-team1-payments",
        ]
        .iter()
        .all(|n| body.contains(n))
    });
    d.wait_for("ready", |d| d.get("/ready").0 == 200);

    // Every route the router has is documented, and nothing else.
    let documented: BTreeSet<&str> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    let routes = BTreeSet::from([
        "/",
        "/environments/{name}",
        "/health",
        "/ready",
        "/metrics",
        "/api/v1/environments",
        "/api/v1/environments/{name}",
        "/api/v1/sources",
        "/api/v1/plan",
        "/api/v1/events",
        "/api/v1/openapi.json",
    ]);
    assert_eq!(documented, routes);

    for (route, path, auth, want) in CASES {
        assert_eq!(
            check(&document, &d, route, path, *auth),
            *want,
            "GET {path}"
        );
    }
    // The details carry what the schema describes in depth.
    let (_, _, git_detail) = d.request("GET", "/api/v1/environments/dev-from-git", &AUTH);
    assert!(git_detail.contains("\"kind\":\"git\""), "{git_detail}");
    assert!(git_detail.contains("Reviewed-by"), "{git_detail}");
}

#[test]
#[ignore = "needs schemathesis (PyPI; scripts/test installs it)"]
fn schemathesis_finds_nothing_against_a_real_daemon() {
    let out = std::process::Command::new(repo().join("scripts/schemathesis"))
        .arg("100")
        .env("CONVERGE_BIN", env!("CARGO_BIN_EXE_converge"))
        .output()
        .expect("scripts/schemathesis runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("No issues found"), "{text}");
}

#[test]
fn every_error_is_json_whoever_answers_it() {
    let p = Project::new("");
    p.write("claims/a.yaml", claim("dev-a", "dev"));
    let d = Daemon::start(p.dir.path());
    let is_json_error = |status: u16, body: &str| {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["status"], status, "{body}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    };
    // The path extractor's rejection (a name that is not UTF-8).
    let (status, _, body) = d.request("GET", "/api/v1/environments/%FF", &[]);
    assert_eq!(status, 400);
    is_json_error(400, &body);
    for (method, path, want) in [
        ("GET", "/nowhere", 404),
        ("DELETE", "/api/v1/plan", 405),
        ("GET", "/api/v1/environments?type=a&type=b", 400),
    ] {
        let (status, _, body) = d.request(method, path, &[]);
        assert_eq!(status, want, "{method} {path}");
        is_json_error(want, &body);
    }
    // The body limit answers before any handler.
    let mut stream = std::net::TcpStream::connect(&d.addr).expect("connect");
    let body = "a".repeat(4096);
    write!(
        stream,
        "GET /api/v1/plan HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let (head, body) = answer.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    is_json_error(413, body);
}
