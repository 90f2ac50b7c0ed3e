//! The leader's Lease on a clean stop (SIGTERM): released, so the next
//! replica (a `Recreate` rollout's new pod) leads at its next retry instead
//! of waiting out the lease duration.

use super::kube::{json, project, ready};
use crate::support::claim;
use crate::support::daemon::Daemon;
use crate::support::kube::KubeApi;

#[test]
#[ignore = "needs kube-apiserver, etcd (scripts/tools builds them)"]
fn the_leader_releases_its_lease_on_sigterm_and_the_next_replica_leads_at_once() {
    let api = KubeApi::start();
    let replica = || {
        let p = project(&api, "converge-release");
        let config = std::fs::read_to_string(p.path("converge.yaml")).expect("config");
        // A long lease: waiting it out would show.
        p.write(
            "converge.yaml",
            config.replace(
                "  kind: kubernetes\n",
                "  kind: kubernetes\n  leader_election:\n    lease: converge-release\n    lease_duration: 60s\n    renew_deadline: 40s\n    retry_period: 1s\n",
            ),
        );
        p.write("claims/dev-release.yaml", claim("dev-release", "dev"));
        p
    };
    let (p1, p2) = (replica(), replica());
    let leader = Daemon::start(p1.dir.path());
    leader.wait_for("the first replica leads and applies", ready);
    let lease = json(
        &api,
        &["get", "lease", "converge-release", "-n", "converge-release"],
    );
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!holder.is_empty(), "{lease}");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 60);

    assert_eq!(leader.terminate(), Some(0));
    let log: String = std::fs::read_dir(p1.dir.path())
        .expect("project dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("daemon-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(log.contains("released the lease"), "{log}");
    let lease = json(
        &api,
        &["get", "lease", "converge-release", "-n", "converge-release"],
    );
    assert_eq!(
        lease["spec"]["holderIdentity"].as_str().unwrap_or_default(),
        "",
        "{lease}"
    );
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 1, "{lease}");

    // The next replica takes the free Lease at its first try: long before
    // the 60 s the old holder's lease would have run.
    let stopped = std::time::Instant::now();
    let next = Daemon::start(p2.dir.path());
    next.wait_for("the next replica leads", ready);
    eprintln!(
        "the next replica led {:.1} s after the leader stopped (lease 60 s)",
        stopped.elapsed().as_secs_f64()
    );
    let lease = json(
        &api,
        &["get", "lease", "converge-release", "-n", "converge-release"],
    );
    let now = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
    assert!(!now.is_empty() && now != holder, "{lease}");
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
}
