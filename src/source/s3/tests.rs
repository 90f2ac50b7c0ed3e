//! The listing delta, classification, config checks and credentials of the
//! s3 source, without a server (or against one that refuses or stalls).

use super::delta::*;
use super::error::*;
use super::fetch::*;
use super::options::read_secret;
use super::*;
use crate::source::{Content, SourceFile};

fn options(is_static: bool) -> Options {
    Options {
        name: "bucket".into(),
        endpoint: Some("http://127.0.0.1:9".into()),
        region: "garage".into(),
        bucket: "environments".into(),
        prefix: String::new(),
        path_style: true,
        is_static,
        credentials: CredentialSources::environment(),
        ca_pem: None,
        timeout: Duration::from_secs(1),
        interval: Duration::from_secs(10),
        max_file_bytes: 100,
    }
}

fn listed(key: &str, etag: &str, size: u64) -> Listed {
    Listed {
        key: key.into(),
        etag: Some(etag.into()),
        size,
        last_modified: Some("2024-01-15T10:30:00Z".into()),
    }
}

fn fetched(body: &str, etag: &str) -> Fetched {
    Fetched {
        etag: Some(etag.into()),
        last_modified: Some("2024-01-15T10:30:00Z".into()),
        metadata: BTreeMap::from([("uploader".into(), "ci".into())]),
        content: Content::Bytes(body.as_bytes().to_vec().into()),
    }
}

/// One poll over `listing`, with `bodies` as what a GET would return.
fn poll(
    o: &Options,
    known: &BTreeMap<String, Served>,
    listing: Vec<Listed>,
    bodies: &[(&str, &str, &str)],
) -> (BTreeMap<String, Served>, Snapshot, Vec<String>) {
    let steps: Vec<(Listed, Step)> = listing
        .into_iter()
        .map(|l| {
            let s = plan(known, &l, o.is_static, o.max_file_bytes);
            (l, s)
        })
        .collect();
    let gets: Vec<String> = steps
        .iter()
        .filter(|(_, s)| *s == Step::Fetch)
        .map(|(l, _)| l.key.clone())
        .collect();
    let fetched = bodies
        .iter()
        .filter(|(k, _, _)| gets.iter().any(|g| g == k))
        .map(|(k, body, etag)| ((*k).to_owned(), fetched(body, etag)))
        .collect();
    let (known, snap) = assemble(o, known, steps, fetched);
    (known, snap, gets)
}

fn body(f: &SourceFile) -> &str {
    match &f.content {
        Content::Bytes(b) => std::str::from_utf8(b).expect("utf-8"),
        other => panic!("not bytes: {other:?}"),
    }
}

#[test]
fn the_expected_region_is_taken_from_aws_words_only() {
    assert_eq!(
        expected_region("The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'").as_deref(),
        Some("eu-west-1")
    );
    assert_eq!(
        expected_region("unexpected scope: 20261130/us-east-1/s3/aws4_request"),
        None
    );
    assert_eq!(
        region_element(
            b"<Error><Code>AuthorizationHeaderMalformed</Code><Region>garage</Region></Error>"
        )
        .as_deref(),
        Some("garage")
    );
    assert_eq!(region_element(b"<Error><Region>a b</Region></Error>"), None);
    assert_eq!(region_element(b"<Error><Region></Region></Error>"), None);
    assert_eq!(plain_region(" eu-west-1 ").as_deref(), Some("eu-west-1"));
}

#[test]
fn only_new_and_changed_objects_are_fetched_and_removed_keys_drop_their_files() {
    let o = options(false);
    let (known, first, gets) = poll(
        &o,
        &BTreeMap::new(),
        vec![listed("a.yaml", "e1", 3), listed("b.yaml", "e2", 3)],
        &[("a.yaml", "a-1", "e1"), ("b.yaml", "b-1", "e2")],
    );
    assert_eq!(gets, ["a.yaml", "b.yaml"]);
    assert_eq!(first.files[0].path, "s3://environments/a.yaml");
    let (known, idle, gets) = poll(
        &o,
        &known,
        vec![listed("a.yaml", "e1", 3), listed("b.yaml", "e2", 3)],
        &[],
    );
    assert!(gets.is_empty(), "an idle poll fetches nothing");
    assert_eq!(idle.revision, first.revision);
    assert_eq!(idle.files, first.files);
    let (_, changed, gets) = poll(
        &o,
        &known,
        vec![listed("a.yaml", "e3", 3)],
        &[("a.yaml", "a-2", "e3")],
    );
    assert_eq!(gets, ["a.yaml"]);
    assert_ne!(changed.revision, first.revision);
    assert_eq!(changed.files.len(), 1, "b.yaml was removed");
    assert_eq!(body(&changed.files[0]), "a-2");
    let Some(Provenance::S3 { etag, metadata, .. }) = changed.files[0].provenance.as_deref() else {
        panic!("s3 provenance")
    };
    assert_eq!((etag.as_str(), metadata["uploader"].as_str()), ("e3", "ci"));
}

#[test]
fn objects_over_the_cap_are_refused_from_the_listing_without_a_get() {
    let o = options(false);
    let (_, snap, gets) = poll(
        &o,
        &BTreeMap::new(),
        vec![listed("big.yaml", "e", 101)],
        &[],
    );
    assert!(gets.is_empty());
    assert_eq!(
        snap.files[0].content,
        Content::TooLarge {
            size: 101,
            limit: 100
        }
    );
}

#[test]
fn a_static_bucket_keeps_the_first_version_of_a_changed_object_with_a_notice() {
    let o = options(true);
    let (known, _, _) = poll(
        &o,
        &BTreeMap::new(),
        vec![listed("prod.yaml", "first", 3)],
        &[("prod.yaml", "v1", "first")],
    );
    let (known, snap, gets) = poll(
        &o,
        &known,
        vec![listed("prod.yaml", "second", 3), listed("new.yaml", "n", 3)],
        &[("new.yaml", "new", "n")],
    );
    assert_eq!(gets, ["new.yaml"], "the changed object is not even fetched");
    let refused = snap
        .files
        .iter()
        .find(|f| f.path.ends_with("prod.yaml"))
        .expect("still served");
    assert_eq!(body(refused), "v1");
    let notice = refused.notice.as_ref().expect("a notice");
    assert_eq!(notice.rule, "write-once");
    assert!(
        notice.message.contains("second") && notice.message.contains("first"),
        "{}",
        notice.message
    );
    assert!(
        snap.files
            .iter()
            .any(|f| f.path.ends_with("new.yaml") && f.notice.is_none()),
        "a new key is accepted"
    );
    assert!(known["prod.yaml"].file.notice.is_none());
    assert_eq!(known["prod.yaml"].etag.as_deref(), Some("first"));
    // Still refused on the next poll, with the same revision.
    let (_, again, gets) = poll(
        &o,
        &known,
        vec![listed("prod.yaml", "second", 3), listed("new.yaml", "n", 3)],
        &[],
    );
    assert!(gets.is_empty());
    assert_eq!(again.revision, snap.revision);
}

#[test]
fn the_digest_covers_bytes_and_object_identity() {
    let o = options(false);
    let a = object_file(
        &o,
        "a.yaml",
        Content::Bytes(b"x".to_vec().into()),
        Some("e1"),
        None,
        BTreeMap::new(),
    );
    let b = object_file(
        &o,
        "a.yaml",
        Content::Bytes(b"x".to_vec().into()),
        Some("e1"),
        None,
        BTreeMap::from([("uploader".into(), "someone".into())]),
    );
    let c = object_file(
        &o,
        "a.yaml",
        Content::Bytes(b"x".to_vec().into()),
        Some("e1"),
        None,
        BTreeMap::new(),
    );
    assert_ne!(a.digest, b.digest, "other metadata is authorized again");
    assert_eq!(a.digest, c.digest);
}

#[test]
fn claim_keys_are_filtered_by_suffix_and_hidden_segments() {
    for (key, want) in [
        ("team1/dev-x.yaml", true),
        ("dev-x.JSON", true),
        ("a.yml", true),
        ("README.md", false),
        ("folder/", false),
        (".git/x.yaml", false),
        ("team1/.dev-x.yaml.swp", false),
        ("team1/.hidden.yaml", false),
    ] {
        assert_eq!(is_claim_key("", key), want, "{key}");
    }
    assert!(
        is_claim_key(".configs/", ".configs/a.yaml"),
        "the prefix itself may be hidden"
    );
}

fn s3_config(extra: &str) -> Result<Options, Box<dyn std::error::Error>> {
    let text = format!("sources:\n  - name: b\n    kind: s3\n    bucket: environments\n{extra}");
    let config = crate::config::Config::parse(&text)?;
    Ok(Options::from_config(&config.sources[0], 10)?)
}

#[test]
fn config_mistakes_are_refused_at_start() {
    for (extra, want) in [
        ("    endpoint: 127.0.0.1:9000\n", "http:// or https://"),
        (
            "    endpoint: http://key:secret@127.0.0.1:9000\n",
            "do not belong in the URL",
        ),
        (
            "    credentials:\n      access_key_id_file: id\n",
            "secret_access_key_file and secret_access_key_env",
        ),
        (
            "    credentials:\n      access_key_id_file: id\n      access_key_id_env: ID\n      secret_access_key_env: S\n",
            "access_key_id_file and access_key_id_env",
        ),
        ("    ca_file: /nonexistent/ca.pem\n", "cannot read ca_file"),
        ("    timeout: 0s\n", "more than 0s"),
        ("    credentials:\n      token: x\n", "token"),
    ] {
        let err = s3_config(extra).expect_err(extra).to_string();
        assert!(err.contains(want), "{extra}: {err}");
    }
    let ok = s3_config(
        "    endpoint: https://minio.example:9000\n    region: eu-west-1\n    prefix: team1/\n    path_style: true\n    static: true\n    timeout: 5s\n    interval: 10s\n    credentials:\n      access_key_id_env: KEY\n      secret_access_key_file: /run/secrets/s3\n",
    )
    .expect("valid");
    assert_eq!(
        ok.credentials,
        CredentialSources {
            access_key_id: Secret::Env("KEY".into()),
            secret_access_key: Secret::File("/run/secrets/s3".into()),
            session_token: None,
        }
    );
    assert!(ok.is_static && ok.path_style);
    assert_eq!(
        (ok.region.as_str(), ok.prefix.as_str()),
        ("eu-west-1", "team1/")
    );
}

/// A source for `endpoint` whose credentials come from files in `dir`.
fn local_source(dir: &std::path::Path, endpoint: String) -> S3Source {
    std::fs::write(dir.join("id"), "GKTEST").expect("write");
    std::fs::write(dir.join("secret"), "not-a-real-secret").expect("write");
    let mut o = options(false);
    o.endpoint = Some(endpoint);
    o.credentials = CredentialSources {
        access_key_id: Secret::File(dir.join("id")),
        secret_access_key: Secret::File(dir.join("secret")),
        session_token: None,
    };
    S3Source::new(o).expect("source builds")
}

#[test]
fn a_refused_connection_is_unreachable_and_keeps_its_cause() {
    use crate::source::Source as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut s = local_source(dir.path(), format!("http://127.0.0.1:{port}"));
    let err = s.read().expect_err("nothing listens");
    assert_eq!(err.reason(), "Unreachable", "{err}");
    let crate::source::Error::S3 { error, .. } = &err else {
        panic!("an s3 error: {err}");
    };
    assert!(
        matches!(**error, Error::Unreachable { error: Some(_), .. }),
        "the connector error is kept: {error:?}"
    );
    assert!(!err.to_string().contains("not-a-real-secret"), "{err}");
}

#[test]
fn a_server_that_never_answers_is_a_timeout() {
    use crate::source::Source as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        std::thread::sleep(Duration::from_secs(5));
        drop(stream);
    });
    let mut s = local_source(dir.path(), format!("http://127.0.0.1:{port}"));
    let err = s.read().expect_err("no answer");
    assert_eq!(err.reason(), "Timeout", "{err}");
    drop(held);
}

#[test]
fn a_ca_file_without_a_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, "not a certificate").expect("write");
    let err = s3_config(&format!("    ca_file: {}\n", path.display()))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("no PEM certificate"), "{err}");
}

#[test]
fn secret_files_are_trimmed_and_errors_never_show_a_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = dir.path().join("id");
    let secret = dir.path().join("secret");
    std::fs::write(&id, "GK0123\n").expect("write");
    std::fs::write(&secret, "  \n").expect("write");
    assert_eq!(
        read_secret(&Secret::File(id.clone()), "access key id").as_deref(),
        Ok("GK0123")
    );
    let err = read_secret(&Secret::File(secret), "secret access key").expect_err("empty");
    assert!(err.contains("is empty"), "{err}");
    let err = read_secret(
        &Secret::Env("CONVERGE_TEST_SURELY_UNSET_VARIABLE".into()),
        "secret access key",
    )
    .expect_err("unset");
    assert!(
        err.contains("CONVERGE_TEST_SURELY_UNSET_VARIABLE is not set"),
        "{err}"
    );
}
