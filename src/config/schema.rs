//! The config's top-level [`Config`] and its smaller blocks (templates,
//! versions, secrets, images, API, reconcile, safety, limits), with their
//! defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::duration::de_duration;
use super::sources::{default_interval, default_s3_timeout};
use super::{DEFAULT_MAX_FILE_BYTES, GitAuthConfig, SourceConfig, TargetConfig};
use crate::claim::EnvironmentType;

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
    /// What `converge claim` uses when a flag is not given.
    #[serde(default)]
    pub claims: ClaimsConfig,
    /// How a service's `kustomization.yaml` is built (issue 23).
    #[serde(default)]
    pub kustomize: KustomizeConfig,
}

/// `claims:`: defaults of `converge claim`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsConfig {
    /// The `user` of `converge claim new` without `--user`.
    #[serde(default)]
    pub default_user: Option<String>,
}

/// `kustomize:`: the real `kustomize` (v5) that builds a service's
/// manifests holding a `kustomization.yaml`, once per (service, version).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KustomizeConfig {
    /// The binary: a bare name is looked up on `PATH`, a path is relative
    /// to the config's directory.
    #[serde(default = "default_kustomize_path")]
    pub path: PathBuf,
    /// A build that takes longer is killed and the artifact refused.
    #[serde(
        default = "default_kustomize_timeout",
        deserialize_with = "de_duration"
    )]
    pub timeout: Duration,
    /// Let a kustomization reach outside the artifact (`../` past its
    /// root, remote bases). Off: such an artifact is refused before
    /// kustomize runs.
    #[serde(default)]
    pub allow_outside: bool,
}

impl Default for KustomizeConfig {
    fn default() -> KustomizeConfig {
        KustomizeConfig {
            path: default_kustomize_path(),
            timeout: default_kustomize_timeout(),
            allow_outside: false,
        }
    }
}

fn default_kustomize_path() -> PathBuf {
    PathBuf::from("kustomize")
}

fn default_kustomize_timeout() -> Duration {
    Duration::from_secs(30)
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
    /// Where the service's own manifests live (issue 23); none: the
    /// built-in objects. Under `services.defaults`, for every service.
    #[serde(default)]
    pub manifests: Option<ManifestsConfig>,
}

/// `services.<name>.manifests`: an OCI artifact in Flux's format
/// (`oci: <registry>/<repository>`, tagged with the resolved version) or a
/// path in a git repository at a tag. `{service}` in either stands for the
/// service's name, `{version}` in `git.ref` for the resolved version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestsConfig {
    #[serde(default)]
    pub oci: Option<String>,
    /// Where environments that use dev tags (`sue`, `use_dev_tags`) take
    /// their artifact from, at the dev tag resolved for them (as their
    /// images come from `images.dev_registry`); `oci` when absent.
    #[serde(default)]
    pub oci_dev: Option<String>,
    #[serde(default)]
    pub git: Option<GitManifestsConfig>,
}

/// `manifests.git`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitManifestsConfig {
    pub url: String,
    /// The directory of the manifests in the repository (the root if empty).
    #[serde(default)]
    pub path: String,
    #[serde(rename = "ref", default = "default_manifests_ref")]
    pub reference: String,
}

fn default_manifests_ref() -> String {
    "refs/tags/{version}".to_owned()
}

/// The key of `services:` whose `manifests` apply to every service.
pub const SERVICES_DEFAULTS: &str = "defaults";

pub(super) fn default_catalog_version() -> String {
    "*".to_owned()
}

pub(super) fn default_versions_interval() -> Duration {
    Duration::from_mins(2)
}

pub(super) fn default_max_tags() -> usize {
    1000
}

pub(super) fn default_page_size() -> usize {
    1000
}

pub(super) fn default_budget() -> u32 {
    1000
}

pub(super) fn default_versions_concurrency() -> usize {
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
            kustomize: KustomizeConfig::default(),
            secrets: SecretsConfig::default(),
            claims: ClaimsConfig::default(),
        }
    }
}

pub(super) fn default_state_dir() -> PathBuf {
    PathBuf::from(".converge")
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

pub(super) fn default_registry() -> String {
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
    /// The status page's address as its users reach it (behind an ingress,
    /// say): the forge's apply statuses link to the environment there.
    #[serde(default)]
    pub external_url: Option<String>,
}

/// `api.cors`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://dash.example.com`) allowed to read the API.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

pub(super) fn default_max_connections() -> usize {
    256
}

pub(super) fn default_idle_timeout() -> Duration {
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
            external_url: None,
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

pub(super) fn default_health_timeout() -> Duration {
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

pub(super) fn default_max_backoff() -> Duration {
    Duration::from_mins(5)
}

pub(super) fn default_history() -> usize {
    20
}

pub(super) fn default_listen() -> String {
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

pub(super) fn default_max_delete_fraction() -> f64 {
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

pub(super) fn default_max_file_bytes() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}
