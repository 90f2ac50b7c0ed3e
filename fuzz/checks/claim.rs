//! The claim loader: any bytes, as a YAML or a JSON file, through parse,
//! schema, claim checks, policy, resolution and rendering, end as a desired
//! environment or diagnostics naming the file; never a panic.
use converge::config::Config;
use converge::inventory::Inventory;
use converge::pipeline::{Options, Pipeline};
use converge::source::{Content, Revision, Snapshot, SourceFile, SourceKind};

thread_local! {
    /// The pipeline (not `Sync`: one per thread).
    static PIPELINE: Pipeline = {
        let config = Config::parse(
            "tags:\n  billing: [1.0.0.1, 1.4.2.0, 2.0.0.0]\n  auth-service: [v2.0.9, v2.1.4, v2.2.0-rc.1, v3.0.0]\n",
        )
        .expect("the fuzz config parses");
        converge::pipeline_for(&config).expect("the built-in pipeline builds")
    };
}

/// One input: panics when a property does not hold.
pub fn check(data: &[u8]) {
    // The first byte picks the format (the file name decides it).
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let path = if first & 1 == 0 {
        "claims/a.yaml"
    } else {
        "claims/a.json"
    };
    let snapshot = Snapshot {
        source: "fuzz".to_owned(),
        kind: SourceKind::Dir,
        is_static: false,
        revision: Revision("r".to_owned()),
        files: vec![SourceFile {
            path: path.to_owned(),
            content: Content::Bytes(bytes::Bytes::copy_from_slice(bytes)),
            digest: [first; 32],
            provenance: None,
            notice: None,
        }],
    };
    let now = chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
        .expect("a time")
        .to_utc();
    let snapshots = [snapshot];
    PIPELINE.with(|pipeline| evaluate(pipeline, path, &snapshots, now));
}

fn evaluate(
    pipeline: &Pipeline,
    path: &str,
    snapshots: &[Snapshot],
    now: chrono::DateTime<chrono::Utc>,
) {
    let eval = pipeline.evaluate(snapshots, &Inventory::default(), Options { now });
    for d in &eval.diagnostics {
        assert_eq!(d.file, path, "a diagnostic names the file");
        assert!(d.pointer.is_empty() || d.pointer.starts_with('/'), "{d}");
        assert!(!d.rule.is_empty(), "{d}");
    }
    // A file is one environment or diagnostics, never both.
    assert!(eval.desired.len() + eval.expired.len() <= 1);
    if !eval.desired.is_empty() {
        assert!(eval.diagnostics.is_empty(), "{:?}", eval.diagnostics);
    }
    let validated = pipeline.validate(snapshots, now);
    let (files, diagnostics) = (validated.files, validated.diagnostics);
    assert_eq!(files, 1);
    // Stages 2–3 refuse nothing the whole evaluation accepts.
    assert!(diagnostics.is_empty() || !eval.diagnostics.is_empty());
}
