//! The config file: sources, target, policies, presets and safety knobs.
//!
//! YAML, parsed with a budget; unknown keys are refused. Relative paths are
//! resolved against the config file's directory once, at load, so every later
//! stage sees absolute paths. The built-in environment presets live here and
//! can be overridden field by field from the config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::claim::EnvironmentType;

/// Files above this size are refused before parsing (claims are ~1 KiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config {path}: {source}{}", if source.kind() == std::io::ErrorKind::NotFound { " (give the config file with --config)" } else { "" })]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub target: TargetConfig,
    /// Where converge keeps its own durable state.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// A directory of `*.cedar`, `*.cedarschema` and `entities.json`; the
    /// built-in set when absent.
    #[serde(default)]
    pub policies: Option<PathBuf>,
    /// Users and pools (`pool: [user, …]`, YAML or JSON): replaces the
    /// policy set's `entities.json` (README, "Users and pools").
    #[serde(default)]
    pub identities: Option<PathBuf>,
    /// A claim JSON Schema replacing the built-in `schemas/claim.v1.json`.
    #[serde(default)]
    pub schema: Option<PathBuf>,
    /// A directory of minijinja templates (`*.j2`) rendered once per
    /// environment: `templates: DIR`, or `templates: {path: DIR,
    /// cluster_scoped: [FILE, ...]}`.
    #[serde(default)]
    pub templates: Option<TemplatesConfig>,
    #[serde(default)]
    pub images: ImagesConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    #[serde(default)]
    pub safety: SafetyConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Per-type overrides of the built-in presets (only the keys given change).
    #[serde(default)]
    pub presets: BTreeMap<EnvironmentType, serde_json::Value>,
    /// Fixed tag lists per service (`versions.from: static`, the default).
    #[serde(default)]
    pub tags: BTreeMap<String, Vec<String>>,
    /// Keys for SOPS-encrypted claim `secrets`.
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// Where version constraints find the tags that exist.
    #[serde(default)]
    pub versions: VersionsConfig,
    /// The service catalog: asking for a service brings its dependencies.
    #[serde(default)]
    pub services: BTreeMap<String, CatalogService>,
}

/// `templates:`: the directory of custom templates, and which of its files
/// may create cluster-scoped objects (or objects in another namespace than
/// the environment's). Written as a path alone, no template may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplatesConfig {
    pub path: PathBuf,
    /// File names (`crds.yaml.j2`) of templates whose objects keep the
    /// namespace they name (or none): the platform team vouches for them.
    pub cluster_scoped: Vec<String>,
}

impl<'de> Deserialize<'de> for TemplatesConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TemplatesConfig, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            path: PathBuf,
            #[serde(default)]
            cluster_scoped: Vec<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Path(PathBuf),
            Full(serde_json::Value),
        }
        match Either::deserialize(d)? {
            Either::Path(path) => Ok(TemplatesConfig {
                path,
                cluster_scoped: Vec::new(),
            }),
            Either::Full(value) => {
                let full: Full = serde_json::from_value(value).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "templates: a directory, or {{path, cluster_scoped}}: {e}"
                    ))
                })?;
                Ok(TemplatesConfig {
                    path: full.path,
                    cluster_scoped: full.cluster_scoped,
                })
            }
        }
    }
}

/// `versions:`: where the tags constraints resolve against come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionsConfig {
    #[serde(default)]
    pub from: VersionsFrom,
    /// How often the tag lists are read again.
    #[serde(
        default = "default_versions_interval",
        deserialize_with = "de_duration"
    )]
    pub interval: Duration,
    /// Talk to the registry over `http://` (only when set; never a fallback).
    #[serde(default)]
    pub plain_http: bool,
    /// Registry credentials, read from files on every scan.
    #[serde(default)]
    pub credentials: Option<RegistryCredentials>,
    /// PEM CA certificates trusted for the registry (instead of the system roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The bound on each request.
    #[serde(default = "default_s3_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// At most this many tags are read per repository per scan.
    #[serde(default = "default_max_tags")]
    pub max_tags: usize,
    /// Tags asked for per page (`n`); the registry may send fewer.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// At most this many requests per registry per scan; repositories left
    /// over keep their last list and are listed first in the next scan.
    #[serde(default = "default_budget")]
    pub budget: u32,
    /// Listings in flight at once.
    #[serde(default = "default_versions_concurrency")]
    pub concurrency: usize,
    /// `from: git`: the repository whose tags are the versions.
    #[serde(default)]
    pub git: Option<GitTagsConfig>,
}

impl Default for VersionsConfig {
    fn default() -> Self {
        Self {
            from: VersionsFrom::Static,
            interval: default_versions_interval(),
            plain_http: false,
            credentials: None,
            ca_file: None,
            timeout: default_s3_timeout(),
            max_tags: default_max_tags(),
            page_size: default_page_size(),
            budget: default_budget(),
            concurrency: default_versions_concurrency(),
            git: None,
        }
    }
}

/// `versions.from`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionsFrom {
    /// The config's `tags:` lists.
    #[default]
    Static,
    /// The OCI registries of `images.registry` and `images.dev_registry`.
    Registry,
    /// A repository's git tags (`versions.git`).
    Git,
}

/// `versions.credentials`: a user name with a password file, or a token file
/// (sent as a bearer token, or exchanged at a token endpoint as the password).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredentials {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// `versions.git`: tags of one repository.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitTagsConfig {
    pub url: String,
    /// A tag prefix per service: `{service}/` reads `billing/v1.2.3` as
    /// version `v1.2.3` of `billing`; empty: every tag is every service's.
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub auth: Option<GitAuthConfig>,
}

/// One service of the catalog.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogService {
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The constraint a dependency is deployed at unless the claim names it.
    #[serde(default = "default_catalog_version")]
    pub version: String,
}

fn default_catalog_version() -> String {
    "*".to_owned()
}

fn default_versions_interval() -> Duration {
    Duration::from_mins(2)
}

fn default_max_tags() -> usize {
    1000
}

fn default_page_size() -> usize {
    1000
}

fn default_budget() -> u32 {
    1000
}

fn default_versions_concurrency() -> usize {
    4
}

/// Keys for SOPS-encrypted claim values (age only).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// age identity files (`AGE-SECRET-KEY-1...`, one per line), read again
    /// when they change.
    #[serde(default)]
    pub age_key_files: Vec<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            target: TargetConfig::default(),
            state_dir: default_state_dir(),
            policies: None,
            identities: None,
            schema: None,
            templates: None,
            images: ImagesConfig::default(),
            api: ApiConfig::default(),
            reconcile: ReconcileConfig::default(),
            safety: SafetyConfig::default(),
            limits: LimitsConfig::default(),
            presets: BTreeMap::new(),
            tags: BTreeMap::new(),
            versions: VersionsConfig::default(),
            services: BTreeMap::new(),
            secrets: SecretsConfig::default(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(".converge")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    Dir {
        name: String,
        path: PathBuf,
        /// The path as written in the config (relative to the config file):
        /// how claim files are named in diagnostics and recorded as origins,
        /// whatever the working directory.
        #[serde(skip)]
        shown: String,
    },
    Git {
        name: String,
        url: String,
        #[serde(default = "default_branch")]
        branch: String,
        #[serde(default)]
        paths: Vec<String>,
        #[serde(default = "default_interval", deserialize_with = "de_duration")]
        interval: Duration,
        #[serde(default)]
        auth: Option<GitAuthConfig>,
        #[serde(default)]
        signatures: Option<SignaturesConfig>,
        /// The longest one poll (ref check and fetch) may take.
        #[serde(default = "default_git_timeout", deserialize_with = "de_duration")]
        timeout: Duration,
    },
    S3 {
        name: String,
        #[serde(default)]
        endpoint: Option<String>,
        #[serde(default)]
        region: Option<String>,
        bucket: String,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        path_style: bool,
        #[serde(default, rename = "static")]
        is_static: bool,
        /// Where the access key id and secret come from; the
        /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and
        /// `AWS_SESSION_TOKEN`) environment variables when absent.
        #[serde(default)]
        credentials: Option<S3Credentials>,
        /// PEM CA certificates trusted for an `https://` endpoint (instead of
        /// the system roots).
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// The bound on each request (connecting: at most 5 s of it).
        #[serde(default = "default_s3_timeout", deserialize_with = "de_duration")]
        timeout: Duration,
        #[serde(default = "default_interval", deserialize_with = "de_duration")]
        interval: Duration,
        /// A claim's `environment_pool` must be the first segment of its key
        /// (after `prefix`): with a per-pool write permission on the bucket,
        /// the pool is bound to who may write there.
        #[serde(default)]
        pool_from_prefix: bool,
    },
}

/// Where an s3 source's key id and secret are read from, on every poll (so
/// rotated secrets are picked up): a file (trimmed) or an environment
/// variable, one of each.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Credentials {
    #[serde(default)]
    pub access_key_id_file: Option<PathBuf>,
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
}

fn default_s3_timeout() -> Duration {
    Duration::from_secs(30)
}

impl SourceConfig {
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Dir { name, .. } | Self::Git { name, .. } | Self::S3 { name, .. } => name,
        }
    }
}

/// Credentials of a git source, read from files (never inline).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitAuthConfig {
    /// HTTPS: a token file (sent as the password).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// HTTPS basic auth user name (with `password_file` or `token_file`).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// SSH: a private key for the system `ssh`.
    #[serde(default)]
    pub ssh_key_file: Option<PathBuf>,
}

impl GitAuthConfig {
    /// The one way of authenticating the block names. Naming more than one,
    /// or a password without a user name, is an error.
    pub fn method(&self) -> Result<GitAuth, String> {
        match (&self.token_file, &self.password_file, &self.ssh_key_file) {
            (Some(token_file), None, None) => Ok(GitAuth::Token {
                username: self.username.clone(),
                token_file: token_file.clone(),
            }),
            (None, Some(password_file), None) => Ok(GitAuth::Basic {
                username: self
                    .username
                    .clone()
                    .ok_or("auth.password_file needs auth.username")?,
                password_file: password_file.clone(),
            }),
            (None, None, Some(key_file)) => Ok(GitAuth::SshKey {
                key_file: key_file.clone(),
            }),
            (None, None, None) => Ok(GitAuth::None),
            _ => Err("auth: give one of token_file, password_file or ssh_key_file".to_owned()),
        }
    }
}

/// How a git source authenticates to its remote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GitAuth {
    #[default]
    None,
    /// HTTPS: a token used as the password (user `x-access-token` unless given).
    Token {
        username: Option<String>,
        token_file: PathBuf,
    },
    /// HTTPS basic credentials, the password read from a file.
    Basic {
        username: String,
        password_file: PathBuf,
    },
    /// SSH with this private key (the system `ssh` does the connecting).
    SshKey { key_file: PathBuf },
}

/// Commit signature verification for a git source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignaturesConfig {
    /// Environment types whose claims must come from verified commits.
    #[serde(default)]
    pub required_for: Vec<EnvironmentType>,
    /// SSH allowed signers (`principal [namespaces="git"] keytype key`).
    #[serde(default)]
    pub allowed_signers: Option<PathBuf>,
    /// Armored `OpenPGP` public keys.
    #[serde(default)]
    pub openpgp_keys: Vec<PathBuf>,
}

fn default_git_timeout() -> Duration {
    Duration::from_mins(1)
}

fn default_branch() -> String {
    "main".to_owned()
}

fn default_interval() -> Duration {
    Duration::from_secs(30)
}

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

fn default_lease_prefix() -> String {
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

fn default_lease() -> String {
    "converge".to_owned()
}

fn default_lease_duration() -> Duration {
    Duration::from_secs(15)
}

fn default_renew_deadline() -> Duration {
    Duration::from_secs(10)
}

fn default_retry_period() -> Duration {
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

fn default_field_manager() -> String {
    "converge".to_owned()
}

fn default_concurrency() -> usize {
    8
}

fn default_inventory_namespace() -> String {
    "converge-system".to_owned()
}

fn default_kube_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self::Manifests {
            path: PathBuf::from("out"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// Image prefix for services without `docker_image`: `<registry>/<service>:<tag>`.
    #[serde(default = "default_registry")]
    pub registry: String,
    /// Where dev tags live (environments whose preset says `use_dev_tags`,
    /// `sue` by default): their images come from here and their constraints
    /// resolve against its tags. `registry` when absent.
    #[serde(default)]
    pub dev_registry: Option<String>,
}

impl ImagesConfig {
    /// The image prefix for an environment that uses dev tags or not.
    #[must_use]
    pub fn registry_for(&self, dev: bool) -> &str {
        match (&self.dev_registry, dev) {
            (Some(d), true) => d,
            _ => &self.registry,
        }
    }
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            registry: default_registry(),
            dev_registry: None,
        }
    }
}

fn default_registry() -> String {
    "artifactory/docker-releases".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// A file holding the bearer token every request but `/health` and
    /// `/ready` must carry; no auth when absent.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Connections served at once; more are closed as they arrive (and the
    /// limit is lowered to fit the process's file descriptors).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed, and a
    /// request's headers must arrive within it (slow clients cannot hold
    /// connections).
    #[serde(default = "default_idle_timeout", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// Cross-origin reads for a dashboard on another origin; off by default.
    #[serde(default)]
    pub cors: CorsConfig,
    /// `/health` and `/ready` served on a listener of their own too (plain
    /// HTTP, its own few connections and a short idle timeout), so clients
    /// holding the API's connections cannot starve the kubelet's probes.
    #[serde(default)]
    pub probe_listen: Option<String>,
}

/// `api.cors`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://dash.example.com`) allowed to read the API.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

fn default_max_connections() -> usize {
    256
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            token_file: None,
            tls: None,
            max_connections: default_max_connections(),
            idle_timeout: default_idle_timeout(),
            cors: CorsConfig::default(),
            probe_listen: None,
        }
    }
}

/// TLS for the API: PEM certificate chain and private key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// How the daemon schedules passes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// How often a dir source is re-read even without file events.
    #[serde(default = "default_interval", deserialize_with = "de_duration")]
    pub dir_interval: Duration,
    /// The longest wait between retries of a failing source or apply.
    #[serde(default = "default_max_backoff", deserialize_with = "de_duration")]
    pub max_backoff: Duration,
    /// Passes kept in each environment's history.
    #[serde(default = "default_history")]
    pub history: usize,
    /// How long after an apply an object may take to become current (a
    /// Deployment rolled out) before its environment is `Stalled`.
    #[serde(default = "default_health_timeout", deserialize_with = "de_duration")]
    pub health_timeout: Duration,
}

fn default_health_timeout() -> Duration {
    Duration::from_mins(10)
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            dir_interval: default_interval(),
            max_backoff: default_max_backoff(),
            history: default_history(),
            health_timeout: default_health_timeout(),
        }
    }
}

fn default_max_backoff() -> Duration {
    Duration::from_mins(5)
}

fn default_history() -> usize {
    20
}

fn default_listen() -> String {
    "127.0.0.1:8090".to_owned()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// A plan deleting more than this share of the live environments (or all
    /// of them) is held.
    #[serde(default = "default_max_delete_fraction")]
    pub max_delete_fraction: f64,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            max_delete_fraction: default_max_delete_fraction(),
        }
    }
}

fn default_max_delete_fraction() -> f64 {
    0.2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Claim files above this many bytes are refused before parsing.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// At most this many `deployment_method: dynamic` environments per pool:
    /// a claim that would create one more is refused (`LimitExceeded`).
    #[serde(default)]
    pub environments_per_pool: Option<usize>,
    /// At most this many `deployment_method: dynamic` environments per user.
    #[serde(default)]
    pub environments_per_user: Option<usize>,
    /// At most this many services named by one claim (the schema allows 100).
    #[serde(default)]
    pub services_per_claim: Option<usize>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: default_max_file_bytes(),
            environments_per_pool: None,
            environments_per_user: None,
            services_per_claim: None,
        }
    }
}

fn default_max_file_bytes() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

/// What an environment type renders to; the built-in table is PRODUCT.md's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Highly available: several replicas and a `PodDisruptionBudget`.
    pub ha: bool,
    pub replicas: u32,
    /// Values of the `converge.dev/node-pool` node label a Deployment's
    /// pods go to (and whose taints they tolerate); empty: no affinity.
    pub node_pools: Vec<String>,
    /// How `node_pools` binds: `required` (only those nodes), `preferred`
    /// (those first, others when they are full or absent) or `none`.
    #[serde(default)]
    pub placement: Placement,
    pub autoscaling: Autoscaling,
    pub quota: Quota,
    pub container: ContainerDefaults,
    /// `shared` (on the platform) or `dedicated` logging, monitoring, gateway and authz.
    pub platform_services: String,
    pub waf: bool,
    /// Lifetime after `creation_date` when the claim gives no `expiration_date`.
    #[serde(default, with = "opt_duration")]
    pub ttl: Option<Duration>,
    /// Resolve versions against the dev tags.
    pub use_dev_tags: bool,
}

/// `presets.<type>.placement`: how a Deployment's pods are bound to the
/// nodes labelled `converge.dev/node-pool` with one of the preset's pools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Required node affinity: pods wait for such a node.
    #[default]
    Required,
    /// Preferred node affinity: such nodes first, any node otherwise.
    Preferred,
    /// No node affinity (the tolerations stay).
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscaling {
    pub profile: String,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub target_cpu_utilization: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerDefaults {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

impl Preset {
    /// What the API server would refuse in the objects a preset renders
    /// to, as `key: rule` (`node_pools[1]: ...`).
    fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, pool) in self.node_pools.iter().enumerate() {
            if !is_label_value(pool) {
                return Err(format!(
                    "node_pools[{i}]: {pool:?} is not a Kubernetes label value (1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
                ));
            }
            if !seen.insert(pool) {
                return Err(format!("node_pools[{i}]: {pool:?} is listed twice"));
            }
        }
        let a = &self.autoscaling;
        if a.min_replicas == 0 || a.min_replicas > a.max_replicas {
            return Err(format!(
                "autoscaling: 1 <= min_replicas <= max_replicas is needed (min_replicas {}, max_replicas {})",
                a.min_replicas, a.max_replicas
            ));
        }
        if !(1..=100).contains(&a.target_cpu_utilization) {
            return Err(format!(
                "autoscaling.target_cpu_utilization: a percentage from 1 to 100 is needed, not {}",
                a.target_cpu_utilization
            ));
        }
        Ok(())
    }

    /// The built-in preset of a type (PRODUCT.md, "Environment types").
    #[must_use]
    pub fn builtin(t: EnvironmentType) -> Preset {
        let pools = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let autoscaling = |profile: &str, min, max, cpu| Autoscaling {
            profile: profile.to_owned(),
            min_replicas: min,
            max_replicas: max,
            target_cpu_utilization: cpu,
        };
        let quota = |cpu: &str, memory: &str, pods| Quota {
            cpu: cpu.to_owned(),
            memory: memory.to_owned(),
            pods,
        };
        let container = |cr: &str, mr: &str, cl: &str, ml: &str| ContainerDefaults {
            cpu_request: cr.to_owned(),
            memory_request: mr.to_owned(),
            cpu_limit: cl.to_owned(),
            memory_limit: ml.to_owned(),
        };
        match t {
            EnvironmentType::Dev | EnvironmentType::Sue => Preset {
                ha: false,
                replicas: 1,
                node_pools: pools(&["general-restricted", "general-public", "spot"]),
                placement: Placement::Required,
                autoscaling: autoscaling("aggressive", 1, 3, 60),
                quota: quota("8", "16Gi", 50),
                container: container("100m", "128Mi", "500m", "512Mi"),
                platform_services: "shared".to_owned(),
                waf: false,
                ttl: (t == EnvironmentType::Sue).then_some(Duration::from_hours(24)),
                use_dev_tags: t == EnvironmentType::Sue,
            },
            EnvironmentType::Stage => Preset {
                ha: true,
                replicas: 2,
                node_pools: pools(&["general-restricted", "general-public", "memory"]),
                placement: Placement::Required,
                autoscaling: autoscaling("moderate", 2, 6, 70),
                quota: quota("32", "64Gi", 200),
                container: container("250m", "256Mi", "1", "1Gi"),
                platform_services: "dedicated".to_owned(),
                waf: true,
                ttl: None,
                use_dev_tags: false,
            },
            EnvironmentType::Prod => Preset {
                ha: true,
                replicas: 3,
                node_pools: pools(&[
                    "general-restricted",
                    "general-public",
                    "memory",
                    "storage",
                    "ai",
                ]),
                placement: Placement::Required,
                autoscaling: autoscaling("conservative", 3, 12, 80),
                quota: quota("128", "256Gi", 1000),
                container: container("500m", "512Mi", "2", "2Gi"),
                platform_services: "dedicated".to_owned(),
                waf: true,
                ttl: None,
                use_dev_tags: false,
            },
        }
    }
}

/// The presets in force: built-ins with the config's overrides merged in.
#[derive(Debug, Clone)]
pub struct Presets(BTreeMap<EnvironmentType, Preset>);

impl Presets {
    /// Merges `overrides` (partial presets) onto the built-ins; an unknown key
    /// or a wrong type is an error naming the type and key.
    pub fn new(
        overrides: &BTreeMap<EnvironmentType, serde_json::Value>,
    ) -> Result<Presets, String> {
        let mut out = BTreeMap::new();
        for t in EnvironmentType::ALL {
            let builtin = Preset::builtin(t);
            let preset = match overrides.get(&t) {
                None => builtin,
                Some(patch) => {
                    let mut base = serde_json::to_value(&builtin).map_err(|e| e.to_string())?;
                    merge(&mut base, patch);
                    serde_json::from_value(base).map_err(|e| format!("presets.{t}: {e}"))?
                }
            };
            preset.check().map_err(|e| format!("presets.{t}.{e}"))?;
            out.insert(t, preset);
        }
        Ok(Presets(out))
    }

    #[must_use]
    pub fn get(&self, t: EnvironmentType) -> &Preset {
        self.0.get(&t).expect("every environment type has a preset")
    }
}

impl Default for Presets {
    fn default() -> Self {
        Self::new(&BTreeMap::new()).expect("built-in presets are valid")
    }
}

/// A non-empty Kubernetes label value.
fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn merge(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Parses `30s`, `5m`, `24h`, `2d`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid duration {s:?}: expected a number and a unit like 30s, 5m, 24h")
    })?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unit must be ms, s, m, h or d"
            ));
        }
    };
    secs.map(Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

/// Formats a duration the way `parse_duration` reads it.
#[must_use]
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option, reason = "serde's `with` passes a reference")]
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl Config {
    /// Reads and parses a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = read_capped(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| Error::Invalid {
            path: path.to_owned(),
            message,
        })?;
        let base = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        config.resolve_paths(&base);
        Ok(config)
    }

    /// Parses config YAML (paths left as written).
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = serde_saphyr::from_str_with_options(text, crate::yaml::options())
            .map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for s in &self.sources {
            if !names.insert(s.name()) {
                return Err(format!("sources: the name {:?} is used twice", s.name()));
            }
            if let SourceConfig::Git {
                name,
                auth: Some(auth),
                ..
            } = s
            {
                auth.method()
                    .map_err(|message| format!("sources: {name}: {message}"))?;
            }
        }
        if !(0.0..=1.0).contains(&self.safety.max_delete_fraction) {
            return Err("safety.max_delete_fraction must be between 0 and 1".to_owned());
        }
        if let TargetConfig::Kubernetes(KubernetesConfig {
            leader_election: Some(le),
            ..
        }) = &self.target
            && (le.renew_deadline >= le.lease_duration || le.retry_period >= le.renew_deadline)
        {
            return Err(
                "target.leader_election: retry_period < renew_deadline < lease_duration is needed, so a leader stops applying before its lease can be taken"
                    .to_owned(),
            );
        }
        if let TargetConfig::Kubernetes(k) = &self.target
            && let Some(sh) = &k.shards
        {
            if k.leader_election.is_some() {
                return Err(
                    "target: leader_election and shards exclude each other (shards: every replica writes its own share; leader_election: one replica writes all)"
                        .to_owned(),
                );
            }
            if sh.renew_deadline >= sh.lease_duration || sh.retry_period >= sh.renew_deadline {
                return Err(
                    "target.shards: retry_period < renew_deadline < lease_duration is needed, so a member stops applying before its environments move"
                        .to_owned(),
                );
            }
            if !crate::shard::valid_name_part(&sh.lease_prefix)
                || !crate::shard::valid_name_part(&sh.identity)
            {
                return Err(
                    "target.shards: lease_prefix and identity may hold only lower-case letters, digits, '-' and '.' (they name a Lease)"
                        .to_owned(),
                );
            }
        }
        Presets::new(&self.presets)?;
        self.catalog()?;
        if self.versions.from == VersionsFrom::Git && self.versions.git.is_none() {
            return Err("versions.from: git needs versions.git.url".to_owned());
        }
        if let Some(GitTagsConfig {
            auth: Some(auth), ..
        }) = &self.versions.git
        {
            auth.method().map_err(|m| format!("versions.git: {m}"))?;
        }
        if let Some(c) = &self.versions.credentials
            && (c.password_file.is_some() == c.token_file.is_some()
                || (c.password_file.is_some() && c.username.is_none()))
        {
            return Err(
                "versions.credentials: give username with password_file, or token_file".to_owned(),
            );
        }
        if self.versions.concurrency == 0
            || self.versions.budget == 0
            || self.versions.max_tags == 0
        {
            return Err("versions: concurrency, budget and max_tags must be at least 1".to_owned());
        }
        Ok(())
    }

    /// The service catalog, checked: constraints parse, every dependency is
    /// in the catalog, no cycle.
    pub fn catalog(&self) -> Result<crate::resolve::Catalog, String> {
        let mut entries = BTreeMap::new();
        for (name, s) in &self.services {
            let version = s
                .version
                .parse()
                .map_err(|e| format!("services.{name}.version: {e}"))?;
            let entry = crate::resolve::CatalogEntry {
                depends_on: s.depends_on.clone(),
                version,
            };
            entries.insert(name.clone(), entry);
        }
        crate::resolve::Catalog::new(entries).map_err(|e| e.to_string())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for s in &mut self.sources {
            match s {
                SourceConfig::Dir { path, shown, .. } => {
                    *shown = path.display().to_string();
                    join(path);
                }
                SourceConfig::Git {
                    auth,
                    signatures,
                    url,
                    ..
                } => {
                    for p in auth
                        .iter_mut()
                        .flat_map(|a| {
                            [&mut a.token_file, &mut a.password_file, &mut a.ssh_key_file]
                        })
                        .flatten()
                    {
                        join(p);
                    }
                    if let Some(sig) = signatures {
                        if let Some(p) = &mut sig.allowed_signers {
                            join(p);
                        }
                        sig.openpgp_keys.iter_mut().for_each(&join);
                    }
                    // A local repository path (not a URL) is relative to the config too.
                    if !url.contains("://")
                        && !url.contains('@')
                        && Path::new(url.as_str()).is_relative()
                    {
                        *url = base.join(url.as_str()).display().to_string();
                    }
                }
                SourceConfig::S3 { .. } => {}
            }
        }
        for s in &mut self.sources {
            if let SourceConfig::S3 {
                credentials,
                ca_file,
                ..
            } = s
            {
                let creds = credentials
                    .as_mut()
                    .map(|c| [&mut c.access_key_id_file, &mut c.secret_access_key_file]);
                for p in creds.into_iter().flatten().chain([ca_file]).flatten() {
                    join(p);
                }
            }
        }
        match &mut self.target {
            TargetConfig::Manifests { path }
            | TargetConfig::Kubernetes(KubernetesConfig {
                kubeconfig: Some(path),
                ..
            }) => join(path),
            TargetConfig::Kubernetes(_) => {}
        }
        join(&mut self.state_dir);
        self.resolve_version_paths(base);
        for p in &mut self.secrets.age_key_files {
            join(p);
        }
        if let Some(tls) = &mut self.api.tls {
            join(&mut tls.cert_file);
            join(&mut tls.key_file);
        }
        for p in [
            &mut self.policies,
            &mut self.identities,
            &mut self.schema,
            &mut self.api.token_file,
        ]
        .into_iter()
        .flatten()
        {
            join(p);
        }
        if let Some(t) = &mut self.templates {
            join(&mut t.path);
        }
    }

    /// The `versions:` block's files and a local git tag repository.
    fn resolve_version_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let creds = self.versions.credentials.as_mut();
        for p in creds
            .into_iter()
            .flat_map(|c| [&mut c.password_file, &mut c.token_file])
            .chain([&mut self.versions.ca_file])
            .flatten()
        {
            join(p);
        }
        if let Some(git) = &mut self.versions.git {
            for p in git
                .auth
                .iter_mut()
                .flat_map(|a| [&mut a.token_file, &mut a.password_file, &mut a.ssh_key_file])
                .flatten()
            {
                join(p);
            }
            if !git.url.contains("://")
                && !git.url.contains('@')
                && Path::new(&git.url).is_relative()
            {
                git.url = base.join(&git.url).display().to_string();
            }
        }
    }
}

fn read_capped(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(DEFAULT_MAX_FILE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kube(target_extra: &str) -> Result<Config, String> {
        Config::parse(&format!(
            "sources: []\ntarget:\n  kind: kubernetes\n{target_extra}"
        ))
    }

    #[test]
    fn shards_take_defaults_and_exclude_leader_election() {
        let c = kube("  shards: {}\n").expect("shards parse");
        let TargetConfig::Kubernetes(k) = c.target else {
            panic!("kubernetes")
        };
        let sh = k.shards.expect("shards");
        assert_eq!(sh.lease_prefix, "converge-shard-");
        assert_eq!(sh.lease_duration, Duration::from_secs(15));
        let both = kube("  shards: {}\n  leader_election: {}\n").expect_err("refused");
        assert!(both.contains("exclude each other"), "{both}");
        let timing = kube("  shards: {renew_deadline: 20s}\n").expect_err("refused");
        assert!(
            timing.contains("renew_deadline < lease_duration"),
            "{timing}"
        );
        let name = kube("  shards: {identity: Pod_1}\n").expect_err("refused");
        assert!(name.contains("Lease"), "{name}");
    }

    #[test]
    fn product_example_config_parses() {
        let text = r"
sources:
  - name: local
    kind: dir
    path: claims
  - name: envs
    kind: git
    url: https://git.example.com/platform/environments.git
    branch: main
    paths: ['environments/**/*.yaml']
    interval: 30s
  - name: dynamic
    kind: s3
    endpoint: http://127.0.0.1:9000
    region: us-east-1
    bucket: environments
    prefix: ''
    path_style: true
    static: false
    credentials:
      access_key_id_file: /run/secrets/s3-key-id
      secret_access_key_file: /run/secrets/s3-secret
    interval: 10s
target:
  kind: manifests
  path: out
state_dir: .converge
policies: policies
api:
  listen: 127.0.0.1:8090
safety:
  max_delete_fraction: 0.2
";
        let config = Config::parse(text).expect("parses");
        assert_eq!(config.sources.len(), 3);
        assert!(
            matches!(&config.sources[1], SourceConfig::Git { interval, .. } if *interval == Duration::from_secs(30))
        );
    }

    #[test]
    fn a_bad_git_auth_block_fails_at_load_naming_the_source() {
        let git = |auth: &str| {
            Config::parse(&format!(
                "sources:\n  - name: envs\n    kind: git\n    url: https://git.example/envs.git\n    auth:\n{auth}"
            ))
        };
        let err = git("      token_file: t\n      ssh_key_file: k\n").expect_err("two methods");
        assert_eq!(
            err,
            "sources: envs: auth: give one of token_file, password_file or ssh_key_file"
        );
        let err = git("      password_file: p\n").expect_err("no user name");
        assert_eq!(err, "sources: envs: auth.password_file needs auth.username");
        let config = git("      username: ci\n      password_file: p\n").expect("valid");
        let SourceConfig::Git {
            auth: Some(auth), ..
        } = &config.sources[0]
        else {
            panic!("a git source with auth");
        };
        assert_eq!(
            auth.method(),
            Ok(GitAuth::Basic {
                username: "ci".to_owned(),
                password_file: PathBuf::from("p"),
            })
        );
    }

    #[test]
    fn the_versions_block_and_the_catalog_are_checked_at_load() {
        let config = Config::parse(
            "images:\n  registry: r.example/rel\n  dev_registry: r.example/snap\nversions:\n  from: registry\n  interval: 2m\n  credentials: {username: ci, password_file: p}\n  ca_file: ca.pem\nservices:\n  checkout: {depends_on: [billing]}\n  billing: {version: ^1.0.0}\n",
        )
        .expect("parses");
        assert_eq!(config.versions.from, VersionsFrom::Registry);
        assert_eq!(config.versions.interval, Duration::from_mins(2));
        assert_eq!(config.images.registry_for(true), "r.example/snap");
        let bad = [
            (
                "versions:\n  credentials: {password_file: p}\n",
                "versions.credentials: give username with password_file, or token_file",
            ),
            (
                "versions:\n  from: git\n",
                "versions.from: git needs versions.git.url",
            ),
            (
                "services:\n  a: {depends_on: [b]}\n  b: {depends_on: [a]}\n",
                "services: the dependencies form a cycle: a -> b -> a",
            ),
            (
                "services:\n  a: {depends_on: [nope]}\n",
                "services.a.depends_on names \"nope\", which is not in the catalog",
            ),
        ];
        for (text, want) in bad {
            assert_eq!(Config::parse(text).expect_err(text), want);
        }
        let err = Config::parse("services:\n  a: {version: \"^x\"}\n").expect_err("bad constraint");
        assert!(err.starts_with("services.a.version: "), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::parse("sources: []\ntraget: {}\n").expect_err("refused");
        assert!(err.contains("traget"), "{err}");
    }

    #[test]
    fn preset_overrides_merge_field_by_field() {
        let config = Config::parse(
            "presets:\n  dev:\n    replicas: 2\n    autoscaling: {max_replicas: 9}\n",
        )
        .expect("parses");
        let presets = Presets::new(&config.presets).expect("valid");
        let dev = presets.get(EnvironmentType::Dev);
        assert_eq!(
            (
                dev.replicas,
                dev.autoscaling.max_replicas,
                dev.autoscaling.min_replicas
            ),
            (2, 9, 1)
        );
        let err = Config::parse("presets:\n  dev:\n    replicaz: 2\n").expect_err("refused");
        assert!(err.contains("replicaz"), "{err}");
    }

    #[test]
    fn an_invalid_preset_is_refused_at_load_naming_the_key_and_rule() {
        for (yaml, want) in [
            (
                "presets: {dev: {placement: sometimes}}",
                "presets.dev: unknown variant `sometimes`",
            ),
            (
                "presets: {prod: {node_pools: [general, \"Gen Pool\"]}}",
                "presets.prod.node_pools[1]: \"Gen Pool\" is not a Kubernetes label value",
            ),
            (
                "presets: {stage: {node_pools: [a, a]}}",
                "presets.stage.node_pools[1]: \"a\" is listed twice",
            ),
            (
                "presets: {dev: {autoscaling: {min_replicas: 4}}}",
                "presets.dev.autoscaling: 1 <= min_replicas <= max_replicas",
            ),
            (
                "presets: {sue: {autoscaling: {target_cpu_utilization: 0}}}",
                "presets.sue.autoscaling.target_cpu_utilization",
            ),
        ] {
            let err = Config::parse(yaml).expect_err(yaml);
            assert!(err.contains(want), "{yaml}: {err}");
        }
        for ok in [
            "presets: {dev: {node_pools: []}}",
            "presets: {dev: {placement: preferred}, prod: {placement: none}}",
        ] {
            Config::parse(ok).expect(ok);
        }
    }

    #[test]
    fn durations_parse_and_print() {
        for (s, secs) in [("30s", 30), ("5m", 300), ("24h", 86_400), ("2d", 172_800)] {
            assert_eq!(parse_duration(s), Ok(Duration::from_secs(secs)));
            assert_eq!(
                parse_duration(&format_duration(Duration::from_secs(secs))),
                Ok(Duration::from_secs(secs))
            );
        }
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "5", "m", "5w", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
