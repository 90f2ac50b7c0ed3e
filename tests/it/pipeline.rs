//! The pipeline as a library: incremental evaluation reprocesses only what changed.

use converge::config::Config;
use converge::pipeline::{Cache, Options};
use converge::source::{Content, Revision, Snapshot, SourceFile, SourceKind};
use converge::target::Inventory;

use crate::support::claim;

fn snapshot(files: &[(String, String)]) -> Snapshot {
    Snapshot {
        source: "local".into(),
        kind: SourceKind::Dir,
        is_static: false,
        revision: Revision("r".into()),
        files: files
            .iter()
            .map(|(path, text)| {
                SourceFile::new(
                    path.clone(),
                    Content::Bytes(text.clone().into_bytes().into()),
                )
            })
            .collect(),
    }
}

/// `claims/{i}.yaml` holding a dev claim for `dev-{i}`, for `i` in `0..n`.
fn dev_claims(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("claims/{i}.yaml"),
                claim(&format!("dev-{i}"), "dev"),
            )
        })
        .collect()
}

fn now() -> Options {
    Options {
        now: chrono::Utc::now(),
    }
}

#[test]
fn an_unchanged_file_is_not_reprocessed_and_a_changed_one_is() {
    let pipeline = converge::pipeline_for(&Config::default()).expect("pipeline");
    let mut files: Vec<(String, String)> = dev_claims(50);
    files.push(("claims/bad.yaml".into(), "environment_name: [".into()));
    let options = now();
    let mut cache = Cache::default();
    let live = Inventory::default();
    let first = pipeline.evaluate_cached(&[snapshot(&files)], &live, options, &mut cache);
    assert_eq!(
        (
            first.counters.files,
            first.counters.parsed,
            first.counters.rendered
        ),
        (51, 50, 50)
    );
    assert_eq!(first.desired.len(), 50);

    let second = pipeline.evaluate_cached(&[snapshot(&files)], &live, options, &mut cache);
    assert_eq!(
        (
            second.counters.parsed,
            second.counters.authorized,
            second.counters.rendered
        ),
        (0, 0, 0)
    );
    assert_eq!(second.desired.len(), 50, "cached outcomes still count");
    assert_eq!(second.diagnostics.len(), 1, "and so do cached diagnostics");

    files[7].1 = files[7].1.replace("v1.2.3", "v1.2.4");
    let third = pipeline.evaluate_cached(&[snapshot(&files)], &live, options, &mut cache);
    assert_eq!(
        (
            third.counters.parsed,
            third.counters.validated,
            third.counters.authorized,
            third.counters.rendered
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(
        third.desired["dev-7"].record.versions["user-service"].tag,
        "v1.2.4"
    );
}

#[test]
fn after_environments_are_created_a_one_claim_change_authorizes_one_claim() {
    let pipeline = converge::pipeline_for(&Config::default()).expect("pipeline");
    let mut files: Vec<(String, String)> = dev_claims(20);
    let options = now();
    let mut cache = Cache::default();
    let snapshots = [snapshot(&files)];
    let first = pipeline.evaluate_cached(&snapshots, &Inventory::default(), options, &mut cache);
    assert_eq!(first.counters.authorized, 20, "authorized to create");
    // The pass applied them all: they are live, and their claims are
    // authorized for `update` in the same pass.
    let live = first.as_live();
    let created: std::collections::BTreeSet<&str> =
        first.desired.keys().map(String::as_str).collect();
    let settled = pipeline.settle_created(&mut cache, &snapshots, &created, options.now);
    assert_eq!(settled, 20);

    files[3].1 = files[3].1.replace("v1.2.3", "v1.2.4");
    let next = pipeline.evaluate_cached(&[snapshot(&files)], &live, options, &mut cache);
    assert_eq!(
        (
            next.counters.parsed,
            next.counters.validated,
            next.counters.authorized,
            next.counters.rendered
        ),
        (1, 1, 1, 1),
        "only the changed claim is authorized again"
    );
    assert_eq!(next.desired.len(), 20);
}

#[test]
fn a_cached_claim_expires_when_its_time_comes() {
    let pipeline = converge::pipeline_for(&Config::default()).expect("pipeline");
    let created = chrono::Utc::now();
    let sue = claim("sue-a", "sue").replace("2024-01-15T10:30:00Z", &created.to_rfc3339());
    let files = vec![("claims/sue.yaml".to_owned(), sue)];
    let mut cache = Cache::default();
    let live = Inventory::default();
    let now = pipeline.evaluate_cached(
        &[snapshot(&files)],
        &live,
        Options { now: created },
        &mut cache,
    );
    assert!(now.desired.contains_key("sue-a"));
    let later = created + chrono::Duration::hours(25);
    let then = pipeline.evaluate_cached(
        &[snapshot(&files)],
        &live,
        Options { now: later },
        &mut cache,
    );
    assert_eq!(then.counters.parsed, 0);
    assert!(then.expired.contains_key("sue-a"));
    assert!(then.desired.is_empty());
}

#[test]
fn a_pass_rebuilds_the_status_of_the_changed_environment_only() {
    use converge::status::{PassFacts, statuses};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    let pipeline = converge::pipeline_for(&Config::default()).expect("pipeline");
    let mut files: Vec<(String, String)> = dev_claims(10);
    let options = now();
    let mut cache = Cache::default();
    let eval = pipeline.evaluate_cached(
        &[snapshot(&files)],
        &Inventory::default(),
        options,
        &mut cache,
    );
    let live = eval.as_live();
    let no_plan = converge::plan::Plan::default();
    let failed = BTreeMap::new();
    let health = BTreeMap::new();
    let health_drift = BTreeMap::new();
    let facts = |eval, pass| PassFacts {
        pass,
        time: "t",
        evaluation: eval,
        plan: &no_plan,
        applied: &[],
        failed: &failed,
        applying: true,
        live: &live,
        health: &health,
        drifted: &health_drift,
    };
    let (first, touched) = statuses(&facts(&eval, 1), &BTreeMap::new(), 10);
    assert_eq!((first.len(), touched.len()), (10, 10));

    let again = pipeline.evaluate_cached(&[snapshot(&files)], &live, options, &mut cache);
    let (second, touched) = statuses(&facts(&again, 2), &first, 10);
    assert!(touched.is_empty(), "nothing changed: {touched:?}");
    assert!(first.iter().all(|(k, v)| Arc::ptr_eq(v, &second[k])));

    files[4].1 = files[4].1.replace("v1.2.3", "v1.2.4");
    let changed = pipeline.evaluate_cached(&[snapshot(&files)], &live, options, &mut cache);
    let (third, touched) = statuses(&facts(&changed, 3), &second, 10);
    assert_eq!(touched, vec!["dev-4".to_owned()]);
    let body: serde_json::Value = serde_json::from_slice(&third["dev-4"].body()).expect("json");
    assert_eq!(
        body["claim"]["services"]["user-service"]["version"],
        "v1.2.4"
    );
    assert_eq!(
        body["inventory"].as_array().map(Vec::len),
        Some(live.environments["dev-4"].objects.len())
    );
}

#[test]
fn an_environment_in_sync_keeps_the_targets_list_of_its_objects_and_its_status() {
    use converge::inventory::DesiredObjects;
    use converge::status::{PassFacts, statuses};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    let pipeline = converge::pipeline_for(&Config::default()).expect("pipeline");
    let files: Vec<(String, String)> = dev_claims(4);
    let options = now();
    let mut cache = Cache::default();
    let mut eval = pipeline.evaluate_cached(
        &[snapshot(&files)],
        &Inventory::default(),
        options,
        &mut cache,
    );
    // The target holds three of the four as rendered; the fourth differs.
    let mut live = eval.as_live();
    let mut other = (*live.environments["dev-3"]).clone();
    let first = other.objects.keys().next().expect("objects").clone();
    other.objects.remove(&first);
    live.environments.insert("dev-3".into(), Arc::new(other));
    let no_plan = converge::plan::Plan::default();
    let (failed, health, drifted) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    macro_rules! facts {
        ($eval:expr) => {
            PassFacts {
                pass: 1,
                time: "t",
                evaluation: $eval,
                plan: &no_plan,
                applied: &[],
                failed: &failed,
                applying: true,
                live: &live,
                health: &health,
                drifted: &drifted,
            }
        };
    }
    let (before, _) = statuses(&facts!(&eval), &BTreeMap::new(), 10);

    assert_eq!(cache.share_applied(&mut eval.desired, &live), 3);
    for name in ["dev-0", "dev-1", "dev-2"] {
        let DesiredObjects::Applied(held) = &eval.desired[name].objects else {
            panic!("{name}: rendered list kept");
        };
        assert!(Arc::ptr_eq(held, &live.environments[name]));
    }
    assert!(matches!(
        eval.desired["dev-3"].objects,
        DesiredObjects::Rendered(_)
    ));
    assert_eq!(cache.share_applied(&mut eval.desired, &live), 0, "once");

    // The statuses stay as they were (nothing written again), holding the
    // shared environment; the next pass finds the same `Arc` in the cache.
    let (after, touched) = statuses(&facts!(&eval), &before, 10);
    assert!(touched.is_empty(), "{touched:?}");
    assert_eq!(after["dev-1"].body(), before["dev-1"].body());
    let again = pipeline.evaluate_cached(&[snapshot(&files)], &live, options, &mut cache);
    assert!(Arc::ptr_eq(&again.desired["dev-1"], &eval.desired["dev-1"]));
    // In sync: nothing to plan for the three; the fourth's object is created.
    let plan = converge::plan::build(
        &again,
        &live,
        converge::plan::Options {
            max_delete_fraction: 1.0,
            allow_mass_delete: false,
        },
        &mut converge::plan::InSync::default(),
    );
    let changed: Vec<&str> = plan.environments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(changed, ["dev-3"]);
    assert_eq!(plan.environments[0].creates, 1);
}

#[test]
fn a_plan_remembers_environments_in_sync_until_either_side_changes() {
    let pipeline = converge::pipeline_for(&Config::default()).expect("pipeline");
    let files: Vec<(String, String)> = dev_claims(3);
    let options = now();
    let eval = pipeline.evaluate(&[snapshot(&files)], &Inventory::default(), options);
    let mut live = eval.as_live();
    let plan_options = converge::plan::Options {
        max_delete_fraction: 1.0,
        allow_mass_delete: false,
    };
    let mut in_sync = converge::plan::InSync::default();
    let first = converge::plan::build(&eval, &live, plan_options, &mut in_sync);
    assert!(!first.has_changes());
    let d = &eval.desired["dev-1"];
    assert!(in_sync.is("dev-1", d, &live.environments["dev-1"]));
    assert!(!converge::plan::build(&eval, &live, plan_options, &mut in_sync).has_changes());

    // The live side changes (a new Arc): the memo no longer applies.
    let mut changed = (*live.environments["dev-1"]).clone();
    changed.objects.clear();
    live.environments
        .insert("dev-1".into(), std::sync::Arc::new(changed));
    assert!(!in_sync.is("dev-1", d, &live.environments["dev-1"]));
    let again = converge::plan::build(&eval, &live, plan_options, &mut in_sync);
    assert_eq!(
        again
            .environments
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["dev-1"]
    );
}

#[test]
fn a_new_tag_list_resolves_and_renders_again_only_the_claims_that_consult_it() {
    let mut pipeline = converge::pipeline_for(&Config::default()).expect("pipeline");
    let with = |name: &str, service: &str| {
        claim(name, "dev").replace("user-service: v1.2.3", &format!("{service}: ^1.0.0"))
    };
    let files = vec![
        ("claims/a.yaml".to_owned(), with("dev-a", "billing")),
        ("claims/b.yaml".to_owned(), with("dev-b", "ledger")),
        ("claims/c.yaml".to_owned(), claim("dev-c", "dev")),
    ];
    let list = |tags: &[&str]| {
        std::sync::Arc::new(converge::resolve::TagList::new(
            tags.iter().map(|t| (*t).to_owned()).collect(),
        ))
    };
    let mut tags = converge::resolve::TagSet::default();
    tags.insert("billing", false, list(&["1.0.0"]));
    tags.insert("ledger", false, list(&["1.1.0"]));
    pipeline.tags = tags.clone();
    let (options, mut cache, live) = (now(), Cache::default(), Inventory::default());
    let snapshots = [snapshot(&files)];
    let first = pipeline.evaluate_cached(&snapshots, &live, options, &mut cache);
    assert_eq!((first.counters.resolved, first.counters.rendered), (2, 3));
    // The same lists again (a new TagSet, equal contents): nothing to do.
    pipeline.tags = tags.clone();
    let idle = pipeline.evaluate_cached(&snapshots, &live, options, &mut cache);
    assert_eq!((idle.counters.resolved, idle.counters.rendered), (0, 0));
    // billing gets 1.0.1: dev-a only.
    tags.insert("billing", false, list(&["1.0.0", "1.0.1"]));
    pipeline.tags = tags;
    let moved = pipeline.evaluate_cached(&snapshots, &live, options, &mut cache);
    assert_eq!((moved.counters.resolved, moved.counters.rendered), (1, 1));
    assert_eq!(
        moved.desired["dev-a"].record.versions["billing"].tag,
        "1.0.1"
    );
    assert_eq!(
        moved.desired["dev-b"].record.versions["ledger"].tag,
        "1.1.0"
    );
}

/// Issue 21.1: an update that only applies again what the target found
/// drifted is `DriftCorrected`; an object pending because its write failed
/// is no drift (`ClaimChanged`), whatever its digest says.
#[test]
fn a_plan_marks_drift_corrected_only_from_the_targets_drift_list() {
    use converge::condition::Reason;
    use converge::render::Digest;
    let pipeline = converge::pipeline_for(&Config::default()).expect("pipeline");
    let eval = pipeline.evaluate(&[snapshot(&dev_claims(3))], &Inventory::default(), now());
    let mut live = eval.as_live();
    // dev-1: the target found its Deployment edited (marked pending to be
    // applied again); dev-2: a write failed (pending, no drift).
    let mut pending = |name: &str| {
        let mut env = (*live.environments[name]).clone();
        let id = env
            .objects
            .keys()
            .find(|id| &*id.kind == "Deployment")
            .cloned()
            .expect("a Deployment");
        env.objects.insert(id.clone(), Digest::PENDING);
        live.environments
            .insert(name.into(), std::sync::Arc::new(env));
        format!("{}/{}", id.kind, id.name)
    };
    let drifted = pending("dev-1");
    pending("dev-2");
    let drift: converge::plan::Drift = [
        (
            "dev-1".to_owned(),
            vec![(
                drifted.clone(),
                "edited: spec.replicas (by kubectl-edit)".to_owned(),
            )],
        ),
        (
            "dev-3".to_owned(),
            vec![("ConfigMap/claim".to_owned(), "deleted".to_owned())],
        ),
    ]
    .into();
    let mut plan = converge::plan::build(
        &eval,
        &live,
        converge::plan::Options {
            max_delete_fraction: 1.0,
            allow_mass_delete: false,
        },
        &mut converge::plan::InSync::default(),
    );
    converge::plan::mark_drift(&mut plan, &eval, &live, &drift);
    let reasons: Vec<(&str, Reason)> = plan
        .environments
        .iter()
        .map(|e| (e.name.as_str(), e.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            ("dev-1", Reason::DriftCorrected),
            ("dev-2", Reason::ClaimChanged)
        ]
    );
    let listed: Vec<(&str, &str, bool)> = plan
        .drift
        .iter()
        .map(|d| (d.environment.as_str(), d.object.as_str(), d.corrected))
        .collect();
    assert_eq!(
        listed,
        [
            ("dev-1", drifted.as_str(), true),
            ("dev-3", "ConfigMap/claim", false)
        ]
    );
    let text = converge::plan::format(&plan, converge::plan::Format::Text);
    assert!(text.contains("~ dev-1 (DriftCorrected)"), "{text}");
    assert!(
        text.contains("drifted: edited: spec.replicas (by kubectl-edit)"),
        "{text}"
    );
    assert!(
        text.contains("! dev-3 ConfigMap/claim drifted, not applied again by this plan: deleted"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&converge::plan::format(&plan, converge::plan::Format::Json))
            .expect("JSON");
    assert_eq!(
        json["drift"][0]["how"],
        "edited: spec.replicas (by kubectl-edit)"
    );
    assert_eq!(json["environments"][0]["reason"], "DriftCorrected");
}
