//! `target:`: the manifests directory or a Kubernetes cluster, with its
//! leader election, shards and drift handling.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration::de_duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TargetConfig {
    Manifests { path: PathBuf },
    Kubernetes(KubernetesConfig),
}

/// `target: {kind: kubernetes, ...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file; else `$KUBECONFIG` (or `~/.kube/config`), else the
    /// in-cluster service account.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig; else its current context.
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default = "default_field_manager")]
    pub field_manager: String,
    #[serde(default)]
    pub drift: Drift,
    /// API requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// The Namespace holding one inventory `ConfigMap` per environment.
    #[serde(default = "default_inventory_namespace")]
    pub inventory_namespace: String,
    /// Delete and create again an object whose change the API server
    /// refuses as immutable (a Service's `clusterIP`, a Deployment's
    /// selector); off: such a change is an `ImmutableField` error.
    #[serde(default)]
    pub recreate: bool,
    /// Each request is abandoned after this long (a transient error).
    #[serde(default = "default_kube_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Replicas elect one writer with a Lease in `inventory_namespace`.
    #[serde(default)]
    pub leader_election: Option<Box<LeaderElection>>,
    /// Replicas split the environments between them (one membership Lease
    /// each in `inventory_namespace`); not with `leader_election`.
    #[serde(default)]
    pub shards: Option<Box<Shards>>,
    /// `Environment` resources (`environments.converge.dev`): each
    /// environment's status where `kubectl` reads it.
    #[serde(default)]
    pub environments: EnvironmentResources,
}

/// `target.environments`: converge publishes one read-only `Environment`
/// resource per environment in `inventory_namespace` (written only, never
/// read to decide anything).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentResources {
    /// Publish them (on by default).
    #[serde(default = "yes")]
    pub publish: bool,
    /// Apply the `CustomResourceDefinition` at start (needs the right to
    /// patch `customresourcedefinitions`); off where something else installs
    /// it (the chart ships it under `crds/`).
    #[serde(default = "yes")]
    pub install_crd: bool,
}

impl Default for EnvironmentResources {
    fn default() -> Self {
        EnvironmentResources {
            publish: true,
            install_crd: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// `target.shards`: each replica keeps a Lease `<lease_prefix><identity>`;
/// an environment belongs to the live member with the highest rendezvous
/// weight for its name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shards {
    /// Membership Leases are named with this prefix and the identity.
    #[serde(default = "default_lease_prefix")]
    pub lease_prefix: String,
    /// This replica's identity; empty: the pod name (or host name) and pid.
    #[serde(default)]
    pub identity: String,
    /// A member whose Lease is not renewed for this long drops out.
    #[serde(default = "default_lease_duration", deserialize_with = "de_duration")]
    pub lease_duration: Duration,
    /// A member that has not renewed its Lease (and read the others') for
    /// this long stops applying (shorter than `lease_duration`, so it stops
    /// before its environments move).
    #[serde(default = "default_renew_deadline", deserialize_with = "de_duration")]
    pub renew_deadline: Duration,
    /// How often a member renews its Lease and reads the others'.
    #[serde(default = "default_retry_period", deserialize_with = "de_duration")]
    pub retry_period: Duration,
}

pub(super) fn default_lease_prefix() -> String {
    "converge-shard-".to_owned()
}

/// `target.leader_election`: client-go's timings by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderElection {
    /// The Lease's name.
    #[serde(default = "default_lease")]
    pub lease: String,
    /// This replica's identity; empty: the pod name (or host name) and pid.
    #[serde(default)]
    pub identity: String,
    /// How long a Lease not renewed stays held.
    #[serde(default = "default_lease_duration", deserialize_with = "de_duration")]
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops applying (shorter
    /// than `lease_duration`, so it stops before anyone may take over).
    #[serde(default = "default_renew_deadline", deserialize_with = "de_duration")]
    pub renew_deadline: Duration,
    /// How often replicas try to acquire or renew.
    #[serde(default = "default_retry_period", deserialize_with = "de_duration")]
    pub retry_period: Duration,
}

pub(super) fn default_lease() -> String {
    "converge".to_owned()
}

pub(super) fn default_lease_duration() -> Duration {
    Duration::from_secs(15)
}

pub(super) fn default_renew_deadline() -> Duration {
    Duration::from_secs(10)
}

pub(super) fn default_retry_period() -> Duration {
    Duration::from_secs(2)
}

/// What to do about live objects that differ from what converge applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Drift {
    /// Apply again, and record an event.
    #[default]
    Correct,
    /// Record a `Drifted` condition and event; change nothing.
    Report,
}

pub(super) fn default_field_manager() -> String {
    "converge".to_owned()
}

pub(super) fn default_concurrency() -> usize {
    8
}

pub(super) fn default_inventory_namespace() -> String {
    "converge-system".to_owned()
}

pub(super) fn default_kube_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self::Manifests {
            path: PathBuf::from("out"),
        }
    }
}
