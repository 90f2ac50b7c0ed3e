//! Sharded replicas (`target.shards`) against a real API server: three
//! `converge run` processes split the environments by rendezvous hashing,
//! each applied exactly once; one killed, its share moves to the others
//! untouched; one added, it takes its share (about 1/3) and nothing else
//! moves; one stopped cleanly, its share moves at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use std::sync::Arc;

use converge::shard::Members;
use converge::target::{EnvironmentChange, Error, Inventory, Target};
use converge::{Converge, Memory, Mode, PassOptions};

use super::kube::{Applied, applied, json, project, ready};
use crate::support::daemon::Daemon;
use crate::support::kube::KubeApi;
use crate::support::{Project, claim};

const INVENTORY: &str = "converge-shards";

fn names() -> Vec<String> {
    (1..=24).map(|i| format!("dev-shard-{i:02}")).collect()
}

/// A member: its own directory and state, the shared claims and cluster,
/// its own membership Lease (short timings, so the test is quick).
fn member(api: &KubeApi, identity: &str) -> Project {
    let p = project(api, INVENTORY);
    let config = std::fs::read_to_string(p.path("converge.yaml")).expect("config");
    p.write(
        "converge.yaml",
        config.replace(
            "  kind: kubernetes\n",
            &format!(
                "  kind: kubernetes\n  shards:\n    identity: {identity}\n    lease_duration: 4s\n    renew_deadline: 3s\n    retry_period: 1s\n"
            ),
        ),
    );
    for n in names() {
        p.write(&format!("claims/{n}.yaml"), claim(&n, "dev"));
    }
    p
}

/// What the rendezvous hash gives `me` among `live`.
fn predicted(me: &str, live: &[&str]) -> BTreeSet<String> {
    let m = Members::new(me, live.iter().map(|s| (*s).to_owned()).collect(), 1);
    names().into_iter().filter(|n| m.owns(n)).collect()
}

/// The environments a replica lists: its own share.
fn share(d: &Daemon) -> BTreeSet<String> {
    d.names().into_iter().collect()
}

/// A metric sample; a series never set counts 0.
fn metric(d: &Daemon, series: &str) -> u64 {
    let (status, body) = d.get("/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn changes(d: &Daemon, action: &str) -> u64 {
    metric(
        d,
        &format!("converge_plan_changes_total{{action=\"{action}\"}}"),
    )
}

/// Polls until `check` holds (at most `limit`); how long it took.
fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// Every environment's objects as last written (see `kube::applied`).
fn applied_all(api: &KubeApi) -> BTreeMap<String, Applied> {
    names()
        .into_iter()
        .map(|n| (applied(api, &n), n))
        .map(|(a, n)| (n, a))
        .collect()
}

/// The shares are disjoint and together hold every environment.
fn partition(shares: &[BTreeSet<String>]) -> bool {
    let total: usize = shares.iter().map(BTreeSet::len).sum();
    let union: BTreeSet<&String> = shares.iter().flatten().collect();
    total == names().len() && union.len() == names().len()
}

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/tools builds them)"]
#[allow(
    clippy::too_many_lines,
    reason = "one story: start, kill, join, leave, each checked"
)]
fn three_shards_apply_each_environment_once_and_heal_when_one_dies_or_joins() {
    let api = KubeApi::start();
    let (pa, pb, pc) = (member(&api, "a"), member(&api, "b"), member(&api, "c"));
    let a = Daemon::start(pa.dir.path());
    let b = Daemon::start(pb.dir.path());
    let c = Daemon::start(pc.dir.path());

    // Every environment applied, each by exactly one replica.
    until(
        "three active members sharing every environment",
        Duration::from_secs(90),
        || {
            [&a, &b, &c]
                .iter()
                .all(|d| ready(d) && metric(d, "converge_shard_members") == 3)
                && partition(&[share(&a), share(&b), share(&c)])
        },
    );
    let all = ["a", "b", "c"];
    assert_eq!(share(&a), predicted("a", &all));
    assert_eq!(share(&b), predicted("b", &all));
    assert_eq!(share(&c), predicted("c", &all));
    let created: u64 = [&a, &b, &c].iter().map(|d| changes(d, "create")).sum();
    assert_eq!(created, 24, "each environment created exactly once");
    for d in [&a, &b, &c] {
        assert_eq!(changes(d, "update") + changes(d, "delete"), 0);
        assert_eq!(
            metric(d, "converge_shard_environments"),
            share(d).len() as u64
        );
    }
    // Each replica lists its own share and says whose it is; another's
    // environment is a 404 naming its owner.
    let list = a.json("/api/v1/environments");
    assert_eq!(list["shard"]["identity"], "a");
    assert_eq!(list["shard"]["members"], serde_json::json!(["a", "b", "c"]));
    let of_b = predicted("b", &all)
        .into_iter()
        .next()
        .expect("b owns some");
    let (status, body) = a.get(&format!("/api/v1/environments/{of_b}"));
    assert_eq!(status, 404);
    assert!(body.contains("member b"), "{body}");
    let leases = api.kubectl_ok(&["get", "leases", "-n", INVENTORY, "-o", "name"]);
    for m in all {
        assert!(leases.contains(&format!("converge-shard-{m}")), "{leases}");
    }
    let before = applied_all(&api);
    assert!(
        before
            .values()
            .all(|a| a.versions.len() >= 5 && !a.times.is_empty())
    );

    // b dies: its share moves to a and c, applying nothing again.
    let (created_a, created_c) = (changes(&a, "create"), changes(&c, "create"));
    b.kill9();
    let took = until("b's share taken over", Duration::from_mins(1), || {
        partition(&[share(&a), share(&c)])
    });
    eprintln!(
        "b's share taken over {:.1} s after kill -9 (lease 4 s)",
        took.as_secs_f64()
    );
    assert_eq!(share(&a), predicted("a", &["a", "c"]));
    assert_eq!(share(&c), predicted("c", &["a", "c"]));
    until("both survivors ready", Duration::from_secs(20), || {
        ready(&a) && ready(&c)
    });
    assert_eq!(
        applied_all(&api),
        before,
        "the survivors read b's inventory: nothing applied twice (resourceVersions and managedFields times)"
    );
    assert_eq!(
        (changes(&a, "create"), changes(&c, "create")),
        (created_a, created_c)
    );
    for d in [&a, &c] {
        assert_eq!(
            changes(d, "update") + changes(d, "delete"),
            0,
            "{}",
            d.log()
        );
    }
    // The new owner of one of b's environments reconciles it.
    let moved = predicted("b", &all)
        .into_iter()
        .next()
        .expect("b owned something");
    for p in [&pa, &pc] {
        p.write(
            &format!("claims/{moved}.yaml"),
            claim(&moved, "dev").replace("v1.2.3", "v1.2.4"),
        );
    }
    until(
        "the change applied by the new owner",
        Duration::from_secs(30),
        || {
            json(&api, &["get", "deployment", "user-service", "-n", &moved])["spec"]["template"]
            ["spec"]["containers"][0]["image"]
            .as_str()
            .is_some_and(|i| i.ends_with(":v1.2.4"))
        },
    );
    let after_change = applied_all(&api);

    // d joins: it takes what the hash gives it (about a third), nothing
    // else moves, nothing is applied again or deleted.
    let pd = member(&api, "d");
    pd.write(
        &format!("claims/{moved}.yaml"),
        claim(&moved, "dev").replace("v1.2.3", "v1.2.4"),
    );
    let (share_a, share_c) = (share(&a), share(&c));
    let d = Daemon::start(pd.dir.path());
    until("d active and sharing", Duration::from_mins(1), || {
        ready(&d) && partition(&[share(&a), share(&c), share(&d)])
    });
    let now = ["a", "c", "d"];
    assert_eq!(share(&d), predicted("d", &now));
    assert!(share(&a).is_subset(&share_a) && share(&c).is_subset(&share_c));
    let fraction = share(&d).len() as f64 / names().len() as f64;
    eprintln!(
        "d joined: {} of {} environments moved ({fraction:.2}; 1/3 expected)",
        share(&d).len(),
        names().len()
    );
    assert!(fraction > 0.0 && fraction <= 0.5, "{fraction}");
    assert_eq!(applied_all(&api), after_change, "nothing applied again");
    assert_eq!(changes(&d, "create") + changes(&d, "update"), 0);
    for x in [&a, &c, &d] {
        assert_eq!(changes(x, "delete"), 0, "nothing deleted");
        assert_eq!(
            metric(x, "converge_plans_held_total"),
            0,
            "handed over, not held"
        );
    }

    // d stops cleanly: its Lease is deleted and its share moves at once.
    let d_share = share(&d);
    assert_eq!(d.terminate(), Some(0));
    let leases = api.kubectl_ok(&["get", "leases", "-n", INVENTORY, "-o", "name"]);
    assert!(!leases.contains("converge-shard-d"), "{leases}");
    until(
        "d's share back with a and c",
        Duration::from_secs(30),
        || partition(&[share(&a), share(&c)]),
    );
    assert!(
        d_share
            .iter()
            .all(|n| share(&a).contains(n) || share(&c).contains(n))
    );
    assert_eq!(applied_all(&api), after_change, "nothing applied again");
}

/// A target that plays member `a` of `a` and `b` over another target.
struct Member {
    inner: Box<dyn Target>,
    members: Arc<Members>,
}

impl Target for Member {
    fn inventory(&self) -> Result<Arc<Inventory>, Error> {
        self.inner.inventory()
    }
    fn apply(&self, change: &EnvironmentChange<'_>) -> Result<(), Error> {
        self.inner.apply(change)
    }
    fn members(&self) -> Option<Arc<Members>> {
        Some(Arc::clone(&self.members))
    }
}

fn pass(converge: &Converge, mode: Mode) -> converge::PassOutcome {
    let snapshots = converge.read_sources().expect("sources read");
    let options = PassOptions {
        now: chrono::Utc::now(),
        mode,
        allow_mass_delete: false,
    };
    converge
        .pass(snapshots, &BTreeSet::new(), options, &mut Memory::default())
        .expect("a pass")
}

#[test]
fn a_shard_prunes_only_its_own_environments_and_its_gate_counts_only_its_share() {
    let p = Project::new("safety:\n  max_delete_fraction: 0.5\n");
    for n in names() {
        p.write(&format!("claims/{n}.yaml"), claim(&n, "dev"));
    }
    assert!(p.run(&["run", "--once"]).status.success());
    assert_eq!(p.environments().len(), 24);
    let config = converge::config::Config::load(&p.path("converge.yaml")).expect("config");
    let mut converge = Converge::new(config).expect("converge");
    let inner = std::mem::replace(
        &mut converge.target,
        Box::new(converge::target::manifests::Manifests::new(p.path("out"))),
    );
    converge.target = Box::new(Member {
        inner,
        members: Arc::new(Members::new("a", vec!["a".into(), "b".into()], 1)),
    });
    let mine = predicted("a", &["a", "b"]);

    // Every claim there: b's environments are not a's to plan.
    let outcome = pass(&converge, Mode::Apply { observe: false });
    assert!(
        outcome.plan.environments.is_empty(),
        "{:?}",
        outcome.plan.environments
    );
    assert_eq!(outcome.live.environments.len(), mine.len());
    // Planning only joins no shard: every environment is planned.
    let outcome = pass(&converge, Mode::Plan { preview: false });
    assert_eq!(outcome.live.environments.len(), 24);
    assert!(outcome.members.is_none());

    // Four of a's claims and all of b's removed: a deletes its four (under
    // half of its share: the gate counts a's share, not all 24) and
    // leaves b's alone.
    let removed: Vec<&String> = mine.iter().take(4).collect();
    for n in names() {
        if removed.contains(&&n) || !mine.contains(&n) {
            p.remove(&format!("claims/{n}.yaml"));
        }
    }
    let outcome = pass(&converge, Mode::Apply { observe: false });
    assert!(outcome.plan.hold.is_none(), "{:?}", outcome.plan.hold);
    let deleted: Vec<&String> = outcome.plan.environments.iter().map(|e| &e.name).collect();
    assert_eq!(deleted, removed);
    let left: BTreeSet<String> = p.environments().into_iter().collect();
    let expected: BTreeSet<String> = names()
        .into_iter()
        .filter(|n| !removed.contains(&n))
        .collect();
    assert_eq!(left, expected, "b's environments stay");

    // All of a's claims removed: more than half of a's share, held.
    for n in &mine {
        let _ = std::fs::remove_file(p.path(&format!("claims/{n}.yaml")));
    }
    let outcome = pass(&converge, Mode::Apply { observe: false });
    assert!(outcome.plan.hold.is_some(), "the gate holds a's share");
}
