//! Prometheus metrics (`OpenMetrics` text), named by Prometheus conventions.
//!
//! The loop is the only writer; `/metrics` encodes the registry on demand.
//! Work counters (`converge_claims_*_total`) count claims actually parsed,
//! validated, authorized and rendered, so benchmarks can prove that a pass
//! re-processes only what changed; `converge_source_polls_total` and the git
//! work counters (`converge_git_*_total`) prove that an idle poll does no more
//! than a ref check.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvLabels {
    pub r#type: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceErrorLabels {
    pub source: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct S3RequestLabels {
    pub source: String,
    /// `list` (a `ListObjectsV2` page) or `get` (a `GetObject`).
    pub op: String,
}

/// HTTP requests s3 sources made (every attempt), by source and operation.
/// Process-wide because sources are built without the daemon's registry;
/// every [`Metrics`] registers this same family.
pub static S3_REQUESTS: std::sync::LazyLock<Family<S3RequestLabels, Counter>> =
    std::sync::LazyLock::new(Family::default);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryRequestLabels {
    /// The registry's host (or a git tag source's sanitized URL).
    pub registry: String,
    /// `tags` (a tag list page), `token` (a token endpoint), `ls-refs` (git tags).
    pub op: String,
    /// The HTTP status, or `error` when no answer came.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepositoryLabels {
    /// `registry/repository` (or the git URL and tag prefix).
    pub repository: String,
}

/// Requests tag sources made, by registry, operation and status.
/// Process-wide like [`S3_REQUESTS`]: `validate` and `plan` list tags too.
pub static REGISTRY_REQUESTS: std::sync::LazyLock<Family<RegistryRequestLabels, Counter>> =
    std::sync::LazyLock::new(Family::default);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForgeRequestLabels {
    /// `gitea`, `github` or `gitlab`.
    pub forge: String,
    /// `list_pulls`, `list_comments`, `create_comment`, `edit_comment`,
    /// `list_statuses`, `set_status`, `merged_pull`, `get_pull`, `list_reviews`.
    pub op: String,
    /// The HTTP status, or `error` when no answer came.
    pub status: String,
}

/// Requests made to forges, by forge, operation and status. Process-wide
/// like [`S3_REQUESTS`].
pub static FORGE_REQUESTS: std::sync::LazyLock<Family<ForgeRequestLabels, Counter>> =
    std::sync::LazyLock::new(Family::default);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PublishLabels {
    /// `apply` (the object or its status) or `delete`.
    pub op: String,
    /// `ok` or `failed`.
    pub result: String,
}

/// Writes of `Environment` resources (the Kubernetes target's published
/// statuses), by operation and result. Process-wide like [`S3_REQUESTS`]:
/// the target is built without the daemon's registry.
pub static ENVIRONMENT_WRITES: std::sync::LazyLock<Family<PublishLabels, Counter>> =
    std::sync::LazyLock::new(Family::default);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ManifestsFetchLabels {
    pub service: String,
    /// `fetched` (from the registry or git server), `cached` (from the
    /// artifact cache in the state dir), `refused` (a hostile artifact, a
    /// failed build, not YAML) or `failed` (unreachable: kept as it is).
    pub outcome: String,
}

/// Services' manifests loaded, once per (service, version) and process,
/// by outcome. Process-wide like [`S3_REQUESTS`]: `validate` and `plan`
/// fetch too.
pub static MANIFESTS_FETCHES: std::sync::LazyLock<Family<ManifestsFetchLabels, Counter>> =
    std::sync::LazyLock::new(Family::default);

/// Every metric converge exposes.
pub struct Metrics {
    registry: Registry,
    pub pass_duration: Histogram,
    pub passes: Counter,
    pub environments: Family<EnvLabels, Gauge>,
    /// Environments with a `Drifted` condition (objects changed or deleted
    /// by someone else since converge applied them), by type.
    pub environments_drifted: Family<TypeLabels, Gauge>,
    pub source_last_success: Family<SourceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub source_errors: Family<SourceErrorLabels, Counter>,
    pub plan_changes: Family<ActionLabels, Counter>,
    pub plan_held: Gauge,
    pub plans_held: Counter,
    /// Objects applied again because they drifted (`drift: correct`).
    pub drift_corrections: Counter,
    pub apply_latency: Histogram,
    pub apply_failures: Counter,
    pub claims_parsed: Counter,
    pub claims_validated: Counter,
    pub claims_authorized: Counter,
    pub claims_rendered: Counter,
    /// Claims whose SOPS secrets were decrypted and MAC-checked (or failed to).
    pub secrets_decrypts: Counter,
    /// SOPS data keys unwrapped (X25519 operations).
    pub secrets_key_unwraps: Counter,
    pub s3_requests: Family<S3RequestLabels, Counter>,
    pub source_polls: Family<SourceLabels, Counter>,
    pub git_ref_checks: Family<SourceLabels, Counter>,
    pub git_fetches: Family<SourceLabels, Counter>,
    pub git_blob_reads: Family<SourceLabels, Counter>,
    pub pass_ready: Histogram,
    pub registry_requests: Family<RegistryRequestLabels, Counter>,
    pub tags_seen: Family<RepositoryLabels, Gauge>,
    pub tags_last_scan: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub tag_scans: Counter,
    pub claims_resolved: Counter,
    pub shard_members: Gauge,
    pub shard_environments: Gauge,
    pub environment_writes: Family<PublishLabels, Counter>,
    pub forge_requests: Family<ForgeRequestLabels, Counter>,
    pub manifests_fetches: Family<ManifestsFetchLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    #[allow(
        clippy::too_many_lines,
        reason = "one registration per metric family, in the order /metrics lists them"
    )]
    #[must_use]
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("converge");
        let m = Metrics {
            pass_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            passes: Counter::default(),
            environments: Family::default(),
            environments_drifted: Family::default(),
            source_last_success: Family::default(),
            source_errors: Family::default(),
            plan_changes: Family::default(),
            plan_held: Gauge::default(),
            plans_held: Counter::default(),
            drift_corrections: Counter::default(),
            apply_latency: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            apply_failures: Counter::default(),
            claims_parsed: Counter::default(),
            claims_validated: Counter::default(),
            claims_authorized: Counter::default(),
            claims_rendered: Counter::default(),
            secrets_decrypts: Counter::default(),
            secrets_key_unwraps: Counter::default(),
            s3_requests: S3_REQUESTS.clone(),
            source_polls: Family::default(),
            git_ref_checks: Family::default(),
            git_fetches: Family::default(),
            git_blob_reads: Family::default(),
            pass_ready: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            registry_requests: REGISTRY_REQUESTS.clone(),
            tags_seen: Family::default(),
            tags_last_scan: Gauge::default(),
            tag_scans: Counter::default(),
            claims_resolved: Counter::default(),
            shard_members: Gauge::default(),
            shard_environments: Gauge::default(),
            environment_writes: ENVIRONMENT_WRITES.clone(),
            forge_requests: FORGE_REQUESTS.clone(),
            manifests_fetches: MANIFESTS_FETCHES.clone(),
            registry: Registry::default(),
        };
        registry.register(
            "pass_duration_seconds",
            "Duration of reconcile passes",
            m.pass_duration.clone(),
        );
        registry.register("passes", "Reconcile passes run", m.passes.clone());
        registry.register(
            "environments",
            "Environments by type and status",
            m.environments.clone(),
        );
        registry.register(
            "environments_drifted",
            "Environments whose applied objects someone else changed or deleted (a Drifted condition), by type",
            m.environments_drifted.clone(),
        );
        registry.register(
            "source_last_success_timestamp_seconds",
            "Unix time of each source's last successful read",
            m.source_last_success.clone(),
        );
        registry.register(
            "source_errors",
            "Failed source reads by reason",
            m.source_errors.clone(),
        );
        registry.register(
            "plan_changes",
            "Environment changes applied, by action",
            m.plan_changes.clone(),
        );
        registry.register(
            "plan_held",
            "1 while the current plan is held by the mass-deletion gate",
            m.plan_held.clone(),
        );
        registry.register(
            "plans_held",
            "Plans held by the mass-deletion gate",
            m.plans_held.clone(),
        );
        registry.register(
            "drift_corrections",
            "Objects applied again because someone else changed or deleted them (drift: correct)",
            m.drift_corrections.clone(),
        );
        registry.register(
            "apply_latency_seconds",
            "From a source change seen to its environments applied",
            m.apply_latency.clone(),
        );
        registry.register(
            "apply_failures",
            "Environment applies that failed",
            m.apply_failures.clone(),
        );
        registry.register(
            "claims_parsed",
            "Claim files parsed",
            m.claims_parsed.clone(),
        );
        registry.register(
            "claims_validated",
            "Claims that passed schema validation",
            m.claims_validated.clone(),
        );
        registry.register(
            "claims_authorized",
            "Claims authorized by the policies",
            m.claims_authorized.clone(),
        );
        registry.register(
            "claims_rendered",
            "Environments rendered",
            m.claims_rendered.clone(),
        );
        registry.register(
            "secrets_decrypts",
            "Claims whose SOPS secrets were decrypted and MAC-checked",
            m.secrets_decrypts.clone(),
        );
        registry.register(
            "secrets_key_unwraps",
            "SOPS data keys unwrapped (X25519 operations)",
            m.secrets_key_unwraps.clone(),
        );
        registry.register(
            "environment_resource_writes",
            "Writes of Environment resources (kubectl's view of each environment), by operation and result",
            m.environment_writes.clone(),
        );
        registry.register(
            "forge_requests",
            "Requests made to forges (Gitea/Forgejo, GitHub, GitLab), by forge, operation and status",
            m.forge_requests.clone(),
        );
        registry.register(
            "s3_requests",
            "HTTP requests made by s3 sources, by operation",
            m.s3_requests.clone(),
        );
        registry.register(
            "source_polls",
            "Source reads (polls), successful or not, changed or not",
            m.source_polls.clone(),
        );
        registry.register(
            "git_ref_checks",
            "Branch listings (ls-refs) made by git sources",
            m.git_ref_checks.clone(),
        );
        registry.register(
            "git_fetches",
            "Fetches made by git sources (the branch moved)",
            m.git_fetches.clone(),
        );
        registry.register(
            "git_blob_reads",
            "Blobs (claim files) git sources read from their mirror",
            m.git_blob_reads.clone(),
        );
        registry.register(
            "pass_ready_seconds",
            "From a pass's start to the API serving its result (state committed, view swapped)",
            m.pass_ready.clone(),
        );
        registry.register(
            "registry_requests",
            "Requests tag sources made (registry tag list pages, token endpoints, git ls-refs), by status",
            m.registry_requests.clone(),
        );
        registry.register(
            "manifests_fetches",
            "Services' manifests loaded, once per (service, version): fetched, cached (the state dir's artifact cache), refused or failed",
            m.manifests_fetches.clone(),
        );
        registry.register(
            "tags_seen",
            "Tags in each repository's last successful listing",
            m.tags_seen.clone(),
        );
        registry.register(
            "tags_last_scan_success_timestamp_seconds",
            "Unix time of the last tag scan in which every listing succeeded",
            m.tags_last_scan.clone(),
        );
        registry.register("tag_scans", "Tag scans run", m.tag_scans.clone());
        registry.register(
            "claims_resolved",
            "Claims whose versions were resolved (again)",
            m.claims_resolved.clone(),
        );
        registry.register(
            "shard_members",
            "Live shard members this replica sees, itself included once active (shards only)",
            m.shard_members.clone(),
        );
        registry.register(
            "shard_environments",
            "Environments this replica owns and reconciles (shards only)",
            m.shard_environments.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The registry in `OpenMetrics` text format.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
