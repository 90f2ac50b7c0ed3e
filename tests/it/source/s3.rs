//! The s3 source against a real S3 server: Garage on 127.0.0.1
//! (`support::garage`), one bucket per test; objects are uploaded with
//! `aws-sdk-s3` itself. A server that never answers and a proxy that cuts a
//! listing between pages are real network faults (`support::fault_proxy`).

use std::time::{Duration, Instant};

use converge::config::Config;
use converge::source::s3::{Requests, S3Source};
use converge::source::{Content, Error, Provenance, Snapshot, Source, SourceFile};

use crate::support::claim;
use crate::support::fault_proxy::{Proxy, Silent};
use crate::support::garage::{Garage, KEY_ID, REGION, SECRET, source_yaml};

/// An s3 source built from config YAML, as `converge` builds it.
fn source(yaml: &str, max_file_bytes: u64) -> S3Source {
    let config = Config::parse(&format!("sources:\n{yaml}")).expect("config parses");
    S3Source::from_config(&config.sources[0], max_file_bytes).expect("source builds")
}

fn paths(snapshot: &Snapshot) -> Vec<&str> {
    snapshot.files.iter().map(|f| f.path.as_str()).collect()
}

fn file<'a>(snapshot: &'a Snapshot, key: &str) -> &'a SourceFile {
    snapshot
        .files
        .iter()
        .find(|f| f.path.ends_with(&format!("/{key}")))
        .unwrap_or_else(|| panic!("{key} in {:?}", paths(snapshot)))
}

fn text(f: &SourceFile) -> &str {
    match &f.content {
        Content::Bytes(b) => std::str::from_utf8(b).expect("utf-8"),
        other => panic!("{}: not bytes: {other:?}", f.path),
    }
}

/// The requests made by `f`.
fn requests_during<T>(s: &mut S3Source, f: impl FnOnce(&mut S3Source) -> T) -> (T, Requests) {
    let before = s.requests();
    let out = f(s);
    let after = s.requests();
    (
        out,
        Requests {
            list: after.list - before.list,
            get: after.get - before.get,
        },
    )
}

fn remote_reason(e: &Error) -> &'static str {
    match e {
        Error::S3 { .. } => e.reason(),
        other => panic!("not a remote error: {other}"),
    }
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn the_first_listing_reads_claims_with_their_object_provenance_and_ignores_other_keys() {
    let garage = Garage::shared();
    let b = garage.bucket();
    let etag = b.put(
        "team1/dev-x.yaml",
        claim("dev-x", "dev"),
        &[("uploader", "ci")],
    );
    b.put("dev-y.json", "{}", &[]);
    b.put("README.md", "not a claim", &[]);
    b.put("team1/.dev-x.yaml.swp", "editor junk", &[]);
    b.put("big.yaml", "x".repeat(2000), &[]);
    let mut s = source(&garage.source_yaml(&b.name, ""), 1000);
    let (snap, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    let bucket = &b.name;
    assert_eq!(
        paths(&snap),
        [
            format!("s3://{bucket}/big.yaml"),
            format!("s3://{bucket}/dev-y.json"),
            format!("s3://{bucket}/team1/dev-x.yaml"),
        ]
    );
    assert_eq!(
        n,
        Requests { list: 1, get: 2 },
        "the big object is not fetched"
    );
    assert_eq!(
        file(&snap, "big.yaml").content,
        Content::TooLarge {
            size: 2000,
            limit: 1000
        }
    );
    let dev_x = file(&snap, "dev-x.yaml");
    assert_eq!(text(dev_x), claim("dev-x", "dev"));
    let Some(Provenance::S3 {
        bucket: pb,
        key,
        etag: pe,
        last_modified,
        metadata,
    }) = dev_x.provenance.as_deref()
    else {
        panic!("s3 provenance: {dev_x:?}")
    };
    assert_eq!((pb, key.as_str(), pe), (bucket, "team1/dev-x.yaml", &etag));
    assert!(
        last_modified.as_deref().is_some_and(|t| t.ends_with('Z')),
        "{last_modified:?}"
    );
    assert_eq!(metadata.get("uploader").map(String::as_str), Some("ci"));
    assert!(!snap.is_static);
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn an_idle_poll_lists_once_and_fetches_nothing() {
    let garage = Garage::shared();
    let b = garage.bucket();
    b.put("a.yaml", claim("dev-a", "dev"), &[]);
    b.put("b.yaml", claim("dev-b", "dev"), &[]);
    let mut s = source(&garage.source_yaml(&b.name, ""), 1 << 20);
    let first = s.read().expect("reads");
    let (idle, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(n, Requests { list: 1, get: 0 });
    assert_eq!(idle.revision, first.revision);
    assert_eq!(idle.files, first.files);
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn uploads_overwrites_and_deletes_fetch_only_what_changed() {
    let garage = Garage::shared();
    let b = garage.bucket();
    b.put("a.yaml", claim("dev-a", "dev"), &[]);
    b.put("b.yaml", claim("dev-b", "dev"), &[]);
    let mut s = source(&garage.source_yaml(&b.name, ""), 1 << 20);
    let first = s.read().expect("reads");

    b.put("c.yaml", claim("dev-c", "dev"), &[]);
    let (added, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(n, Requests { list: 1, get: 1 }, "only the new object");
    assert_eq!(added.files.len(), 3);
    assert_ne!(added.revision, first.revision);

    let changed = claim("dev-a", "dev").replace("v1.2.3", "v1.2.4");
    b.put("a.yaml", changed.as_str(), &[("uploader", "ci")]);
    let (overwritten, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(n, Requests { list: 1, get: 1 }, "only the changed object");
    assert_eq!(text(file(&overwritten, "a.yaml")), changed);
    assert_eq!(file(&overwritten, "b.yaml"), file(&added, "b.yaml"));

    b.delete("b.yaml");
    let (deleted, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(n, Requests { list: 1, get: 0 });
    assert_eq!(deleted.files.len(), 2);
    assert!(!paths(&deleted).iter().any(|p| p.ends_with("/b.yaml")));
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn twenty_five_hundred_objects_are_listed_across_pages_and_an_interrupted_listing_returns_nothing()
{
    let garage = Garage::shared();
    let b = garage.bucket();
    let objects: Vec<(String, Vec<u8>)> = (0..2500)
        .map(|i| {
            let name = format!("dev-{i:04}");
            (
                format!("team1/{name}.yaml"),
                claim(&name, "dev").into_bytes(),
            )
        })
        .collect();
    b.put_many(objects);
    // Through a loopback proxy that can cut connections after N requests.
    let proxy = Proxy::start(garage.s3_addr);
    let (id, secret) = garage.key_files();
    let yaml = source_yaml(&proxy.endpoint(), &b.name, &id, &secret, "");
    let mut s = source(&yaml, 1 << 20);

    let (first, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(first.files.len(), 2500);
    assert_eq!(n, Requests { list: 3, get: 2500 });
    let (idle, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    eprintln!("idle poll of 2,500 objects: {} LIST, {} GET", n.list, n.get);
    assert_eq!(n, Requests { list: 3, get: 0 }, "⌈2500/1000⌉ LISTs, no GET");
    assert_eq!(idle.revision, first.revision);

    // The second page fails (every retry too): an error, nothing partial.
    b.put("team1/dev-new.yaml", claim("dev-new", "dev"), &[]);
    proxy.allow(1);
    let err = s.read().expect_err("an interrupted listing is an error");
    assert_eq!(remote_reason(&err), "ListingInterrupted", "{err}");
    assert!(err.to_string().contains("after 1 page"), "{err}");

    // The last good listing is still the base: only the new object is fetched.
    proxy.allow(-1);
    let (recovered, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(recovered.files.len(), 2501);
    assert_eq!(n, Requests { list: 3, get: 1 });
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn wrong_credentials_fail_with_auth_failed_and_never_show_the_secret() {
    let garage = Garage::shared();
    let b = garage.bucket();
    b.put("a.yaml", claim("dev-a", "dev"), &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = "0000000000000000000000000000000000000000000000000000000000000bad";
    for (id, secret) in [(KEY_ID, wrong), ("GK000000000000000000000000", SECRET)] {
        std::fs::write(dir.path().join("id"), id).expect("write");
        std::fs::write(dir.path().join("secret"), secret).expect("write");
        let yaml = source_yaml(
            &garage.endpoint(),
            &b.name,
            &dir.path().join("id"),
            &dir.path().join("secret"),
            "",
        );
        let err = source(&yaml, 1 << 20).read().expect_err("refused");
        assert_eq!(err.reason(), "AuthFailed", "{err}");
        let message = err.to_string();
        assert!(
            !message.contains(secret) && !message.contains(SECRET),
            "{message}"
        );
    }
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn a_missing_bucket_is_an_error_not_an_empty_snapshot() {
    let garage = Garage::shared();
    let mut s = source(&garage.source_yaml("no-such-bucket", ""), 1 << 20);
    let err = s.read().expect_err("refused");
    assert_eq!(err.reason(), "BucketMissing", "{err}");
    assert!(err.to_string().contains("no-such-bucket"), "{err}");
}

#[test]
fn a_server_that_never_answers_is_a_timeout() {
    let silent = Silent::start();
    let addr = silent.addr;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("id"), KEY_ID).expect("write");
    std::fs::write(dir.path().join("secret"), SECRET).expect("write");
    let yaml = source_yaml(
        &format!("http://{addr}"),
        "environments",
        &dir.path().join("id"),
        &dir.path().join("secret"),
        "",
    )
    .replace("timeout: 5s", "timeout: 1s");
    let started = Instant::now();
    let err = source(&yaml, 1 << 20).read().expect_err("times out");
    assert_eq!(err.reason(), "Timeout", "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded");
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn a_stopped_server_is_an_error_and_the_source_recovers_when_it_returns() {
    let garage = Garage::start();
    let b = garage.bucket();
    b.put("a.yaml", claim("dev-a", "dev"), &[]);
    b.put("b.yaml", claim("dev-b", "dev"), &[]);
    let mut s = source(&garage.source_yaml(&b.name, ""), 1 << 20);
    let before = s.read().expect("reads");

    garage.stop();
    let err = s.read().expect_err("the server is down");
    assert_eq!(err.reason(), "Unreachable", "{err}");
    assert!(err.to_string().contains(&garage.endpoint()), "{err}");

    garage.restart();
    let (after, n) = requests_during(&mut s, |s| s.read().expect("reads again"));
    assert_eq!(after.revision, before.revision);
    assert_eq!(after.files, before.files);
    assert_eq!(n.get, 0, "the last good listing survived the outage");
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn the_static_bucket_refuses_a_changed_object_and_keeps_serving_the_first_version() {
    let garage = Garage::shared();
    let b = garage.bucket();
    let first = claim("prod-a", "prod");
    let first_etag = b.put("prod-a.yaml", first.as_str(), &[("uploader", "ci")]);
    let yaml = garage.source_yaml(&b.name, "    static: true\n");
    let mut s = source(&yaml, 1 << 20);
    let snap = s.read().expect("reads");
    assert!(snap.is_static);

    let second = first.replace("v1.2.3", "v9.9.9");
    let second_etag = b.put("prod-a.yaml", second.as_str(), &[("uploader", "mallory")]);
    b.put("prod-b.yaml", claim("prod-b", "prod"), &[]);
    let (refused, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(
        n,
        Requests { list: 1, get: 1 },
        "only the new key is fetched"
    );
    let a = file(&refused, "prod-a.yaml");
    assert_eq!(text(a), first, "the first version stays in force");
    let Some(Provenance::S3 { etag, metadata, .. }) = a.provenance.as_deref() else {
        panic!("provenance")
    };
    assert_eq!(etag, &first_etag);
    assert_eq!(metadata["uploader"], "ci");
    let notice = a.notice.as_ref().expect("a write-once notice");
    assert_eq!(notice.rule, "write-once");
    for part in [&b.name, "prod-a.yaml", &first_etag, &second_etag] {
        assert!(notice.message.contains(part), "{part}: {}", notice.message);
    }
    assert!(
        file(&refused, "prod-b.yaml").notice.is_none(),
        "new keys are accepted"
    );

    // A restarted source seeded with the last good snapshot keeps refusing,
    // and fetches nothing for an unchanged bucket.
    let mut restarted = source(&yaml, 1 << 20);
    assert_eq!(restarted.restore(&refused), 2);
    let (again, n) = requests_during(&mut restarted, |s| s.read().expect("reads"));
    assert_eq!(n, Requests { list: 1, get: 0 });
    assert_eq!(text(file(&again, "prod-a.yaml")), first);
    assert!(file(&again, "prod-a.yaml").notice.is_some());
    assert_eq!(again.revision, refused.revision);
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn the_source_reads_from_sync_code_from_block_in_place_and_from_async_code() {
    let garage = Garage::shared();
    let b = garage.bucket();
    b.put("a.yaml", claim("dev-a", "dev"), &[]);
    let mut s = source(&garage.source_yaml(&b.name, ""), 1 << 20);
    let plain = s.read().expect("reads from sync code");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        // As the daemon does.
        let daemon = tokio::task::block_in_place(|| s.read()).expect("reads in block_in_place");
        assert_eq!(daemon.revision, plain.revision);
        // Straight from async code (blocking a worker, but working).
        let direct = s.read().expect("reads from async code");
        assert_eq!(direct.revision, plain.revision);
        // Dropping the source inside a runtime does not panic.
        drop(s);
    });
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn the_same_bytes_uploaded_again_with_other_metadata_are_read_again_both_ways() {
    let garage = Garage::shared();
    let b = garage.bucket();
    let body = claim("dev-meta", "dev");
    b.put("a.yaml", body.as_str(), &[("uploader", "ci")]);
    let mut s = source(&garage.source_yaml(&b.name, ""), 1 << 20);
    let first = s.read().expect("reads");
    let uploader =
        |snap: &converge::source::Snapshot| match file(snap, "a.yaml").provenance.as_deref() {
            Some(Provenance::S3 { metadata, .. }) => metadata.get("uploader").cloned(),
            _ => None,
        };
    assert_eq!(uploader(&first).as_deref(), Some("ci"));
    // LastModified has a one-second grain: let the next PUT land in another second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    b.put("a.yaml", body.as_str(), &[("uploader", "mallory")]);
    let (revoked, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(n, Requests { list: 1, get: 1 }, "the object is read again");
    assert_eq!(uploader(&revoked).as_deref(), Some("mallory"));
    assert_ne!(revoked.revision, first.revision, "a pass judges it again");
    assert_ne!(
        file(&revoked, "a.yaml").digest,
        file(&first, "a.yaml").digest
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    b.put("a.yaml", body.as_str(), &[("uploader", "ci")]);
    let (granted, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(n, Requests { list: 1, get: 1 });
    assert_eq!(uploader(&granted).as_deref(), Some("ci"));
    let (idle, n) = requests_during(&mut s, |s| s.read().expect("reads"));
    assert_eq!(n, Requests { list: 1, get: 0 }, "and then not again");
    assert_eq!(idle.revision, granted.revision);
}

#[test]
#[ignore = "needs garage (scripts/test builds it)"]
fn a_wrong_region_is_followed_to_the_region_the_server_names() {
    let garage = Garage::shared();
    let b = garage.bucket();
    b.put("a.yaml", claim("dev-region", "dev"), &[]);
    let yaml = garage
        .source_yaml(&b.name, "")
        .replace(&format!("region: {REGION}"), "region: us-east-1");
    // Garage names its region in the error's <Region> element, as AWS
    // does; the source follows it as the AWS clients do.
    let mut s = source(&yaml, 1 << 20);
    let snapshot = s.read().expect("the server's region is followed");
    assert_eq!(snapshot.files.len(), 1);
    let again = s.read().expect("and kept");
    assert_eq!(again.revision, snapshot.revision);
}
