//! converge: a declarative `GitOps` reconciler for environment claims.
//!
//! One pass, in pipeline order (the modules below are listed the same way):
//!
//! 1. [`source`] reads claim files as bytes into snapshots;
//! 2. [`load`] parses them (JSON, or YAML under a budget);
//! 3. [`validate`] checks the JSON Schema and asks Cedar;
//! 4. [`resolve`] turns version constraints into tags;
//! 5. [`render`] builds each environment's objects ([`secret`] opens
//!    SOPS-encrypted `secrets` for its `Secret`);
//! 6. [`diff`] compares them with the target's inventory;
//! 7. [`plan`] orders the changes and holds mass deletions;
//! 8. [`apply`] hands the plan to the [`target`];
//! 9. [`status`] records conditions.
//!
//! [`pipeline`] runs stages 2–5 for every file in parallel; [`Converge`]
//! wires a [`config::Config`] to sources, pipeline and target.

pub mod api;
pub mod apply;
pub mod artifact;
pub mod claim;
pub mod claim_cli;
mod commands;
pub mod condition;
pub mod config;
pub mod coordination;
pub mod daemon;
pub mod diagnostic;
pub mod diff;
pub mod forge;
pub mod health;
pub mod hex;
pub mod inventory;
pub mod io_runtime;
pub mod key_files;
pub mod load;
pub mod metrics;
pub mod object;
pub mod openapi;
pub mod page;
mod pass;
pub mod pipeline;
pub mod plan;
pub mod pull_request;
pub mod render;
pub mod resolve;
pub mod review;
pub mod secret;
pub mod secret_file;
pub mod shard;
pub mod source;
pub mod status;
pub mod status_client;
pub mod store;
pub mod tags;
pub mod target;
pub mod validate;
pub mod view;
pub mod yaml_limits;

#[cfg(test)]
mod tidy;

pub use commands::{
    PlanError, PullRequest, VersionCheck, check_versions, identities_notice, pull_request_plan,
};
pub use pass::{Memory, Mode, PassError, PassOptions, PassOutcome};

use config::{Config, Presets, SourceConfig, TargetConfig};
use pipeline::Pipeline;
use source::Snapshot;
use source::dir::DirSource;
use source::git::GitSource;
use source::s3::S3Source;
use target::Target;

/// Why converge cannot start with a config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Schema(#[from] validate::schema::Error),
    #[error(transparent)]
    Policies(#[from] validate::policy::Error),
    #[error(transparent)]
    Templates(#[from] render::Error),
    #[error("invalid presets: {0}")]
    Presets(#[source] config::PresetError),
    #[error("invalid service catalog: {0}")]
    Catalog(#[source] config::ServicesError),
    #[error(transparent)]
    Kubernetes(#[from] target::kube::SetupError),
    #[error(transparent)]
    Tags(#[from] tags::Error),
    #[error(transparent)]
    Forge(#[from] forge::Error),
    #[error("the fingerprint key in the state dir cannot be used: {0}")]
    FingerprintKey(#[source] std::io::Error),
}

/// A config wired to its pipeline and target.
pub struct Converge {
    pub config: Config,
    pub pipeline: Pipeline,
    pub target: Box<dyn Target>,
    /// The registry or git tag source (`versions.from`), if any.
    pub tags: Option<tags::Scanner>,
    /// The age identity files, stat'ed before every pass.
    pub key_files: key_files::KeyFiles,
    /// Review provenance from the git sources' forges (`forge:`), asked
    /// before every pass.
    pub reviewer: Option<forge::Reviewer>,
}

impl std::fmt::Debug for Converge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Converge")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Converge {
    /// Compiles the schema, policies and templates a config names.
    pub fn new(config: Config) -> Result<Converge, SetupError> {
        let (mut pipeline, key_files) = pipeline_and_keys(&config)?;
        let reviewer = forge::Reviewer::from_config(&config)?;
        if let Some(r) = &reviewer {
            pipeline.forges = r.sources();
        }
        let target: Box<dyn Target> = match &config.target {
            TargetConfig::Manifests { path } => {
                Box::new(target::manifests::Manifests::new(path.clone()))
            }
            TargetConfig::Kubernetes(options) => {
                Box::new(target::kube::Kubernetes::from_config(options)?)
            }
        };
        let tags = tags::Scanner::from_config(&config)?;
        match identities_notice(&config, &pipeline) {
            Some(notice) if pipeline.policies.users() == 0 => tracing::warn!("{notice}"),
            Some(notice) => tracing::info!("{notice}"),
            None => {}
        }
        Ok(Converge {
            config,
            pipeline,
            target,
            tags,
            key_files,
            reviewer,
        })
    }

    /// The locks every writer (`run`, `run --once`) holds while it runs: the
    /// state dir's, and a manifests target directory's (two writers with
    /// different state dirs must not write one directory either). A second
    /// writer fails at once, naming the holder.
    pub fn writer_locks(&self) -> Result<Vec<store::WriterLock>, store::Error> {
        let mut locks = vec![store::WriterLock::acquire(&self.config.state_dir)?];
        if let TargetConfig::Manifests { path } = &self.config.target {
            locks.push(store::WriterLock::acquire_target(path)?);
        }
        Ok(locks)
    }

    /// For a writer (`run`): the installation's fingerprint key, created in
    /// the state dir (made 0700 when missing) on first use, so `Secret`
    /// digests and fingerprints stay the same across restarts.
    pub fn with_installation_key(mut self) -> Result<Converge, SetupError> {
        let key = key_files::fingerprint_key(&self.config.state_dir, true)
            .map_err(SetupError::FingerprintKey)?;
        self.pipeline.renderer.set_fingerprint_key(key);
        Ok(self)
    }

    /// Reads every source once; any unreadable source fails the read (never
    /// an empty snapshot).
    pub fn read_sources(&self) -> Result<Vec<Snapshot>, source::Error> {
        let mut sources = self.sources()?;
        sources.iter_mut().map(|s| s.read()).collect()
    }

    /// The configured sources, ready to read.
    pub fn sources(&self) -> Result<Vec<Box<dyn source::Source>>, source::Error> {
        self.config.sources.iter().map(|s| self.source(s)).collect()
    }

    /// One configured source, built by its kind's `from_config`.
    pub fn source(&self, config: &SourceConfig) -> Result<Box<dyn source::Source>, source::Error> {
        let (max, every, state) = (
            self.config.limits.max_file_bytes,
            self.config.reconcile.dir_interval,
            &self.config.state_dir,
        );
        Ok(match config {
            SourceConfig::Dir { .. } => Box::new(DirSource::from_config(config, every, max)?),
            SourceConfig::Git { .. } => Box::new(GitSource::from_config(config, state, max)?),
            SourceConfig::S3 { .. } => Box::new(S3Source::from_config(config, max)?),
        })
    }

    /// Lists the tags of services the cached claims need and the tag source
    /// has never tried; true when the pipeline got new lists.
    pub fn list_new_tags(&mut self, cache: &pipeline::Cache) -> bool {
        let Some(scanner) = &mut self.tags else {
            return false;
        };
        let new = scanner.want(&cache.wanted());
        if new.is_empty() {
            return false;
        }
        let outcome = scanner.scan(Some(&new));
        for (key, reason, message) in &outcome.failed {
            tracing::warn!(service = %key.service, dev = key.dev, reason = %reason, "{message}");
        }
        self.adopt_tags();
        outcome.changed
    }

    /// Hands the scanner's tag lists to the pipeline: the one place
    /// [`Pipeline::tags`] follows the tag source (after a scan, and after
    /// restoring the lists from the state store).
    pub fn adopt_tags(&mut self) {
        if let Some(scanner) = &self.tags {
            self.pipeline.tags = scanner.tag_set();
        }
    }

    /// Lists every wanted repository again (the daemon, every
    /// `versions.interval`); the pipeline gets the lists. `None` without a
    /// tag source.
    pub fn scan_tags(&mut self) -> Option<tags::ScanOutcome> {
        let scanner = self.tags.as_mut()?;
        let outcome = scanner.scan(None);
        if outcome.changed {
            self.adopt_tags();
        }
        Some(outcome)
    }
}

/// The pipeline a config describes (schema, policies, presets, templates,
/// secrets keys). The age key files are read once, here; the fingerprint key
/// is the state dir's when it exists (read-only commands create nothing).
pub fn pipeline_for(config: &Config) -> Result<Pipeline, SetupError> {
    Ok(pipeline_and_keys(config)?.0)
}

fn pipeline_and_keys(config: &Config) -> Result<(Pipeline, key_files::KeyFiles), SetupError> {
    let schema = match &config.schema {
        Some(path) => validate::schema::Schema::from_file(path)?,
        None => validate::schema::Schema::builtin(),
    };
    let mut policies = match &config.policies {
        Some(dir) => validate::policy::Policies::from_dir(dir)?,
        None => validate::policy::Policies::builtin(),
    };
    if let Some(file) = &config.identities {
        policies = policies.with_identities(file)?;
    }
    let policies = std::sync::Arc::new(policies);
    let presets = Presets::new(&config.presets).map_err(SetupError::Presets)?;
    let key =
        key_files::fingerprint_key(&config.state_dir, false).map_err(SetupError::FingerprintKey)?;
    let mut renderer = render::Renderer::new(presets, config.images.registry.clone())
        .with_dev_registry(config.images.dev_registry.clone())
        .with_fingerprint_key(key);
    if let Some(t) = &config.templates {
        renderer = renderer.with_templates(&t.path, &t.cluster_scoped)?;
    }
    if let Some(store) = artifact::Store::from_config(config, &config.state_dir) {
        renderer = renderer.with_manifests(std::sync::Arc::new(store), policies.clone());
    }
    // The fixed lists; a registry or git tag source replaces them with what
    // it reads (the daemon before each pass, `validate` and `plan` once).
    let tags = if config.versions.from == config::VersionsFrom::Static {
        resolve::TagSet::fixed(&config.tags)
    } else {
        resolve::TagSet::default()
    };
    let catalog = config.catalog().map_err(SetupError::Catalog)?;
    let signatures_required = config
        .sources
        .iter()
        .filter_map(|s| match s {
            SourceConfig::Git {
                name,
                signatures: Some(sig),
                ..
            } => Some((name.clone(), sig.required_for.clone())),
            _ => None,
        })
        .collect();
    let key_files = key_files::KeyFiles::new(config.secrets.age_key_files.clone());
    let pipeline = Pipeline {
        schema,
        policies,
        renderer,
        tags,
        catalog,
        signatures_required,
        forges: std::collections::BTreeSet::new(),
        reviews: review::Reviews::new(),
        sources: config.sources.iter().map(|s| s.name().to_owned()).collect(),
        pool_prefixes: config
            .sources
            .iter()
            .filter_map(|s| match s {
                SourceConfig::S3 {
                    name,
                    prefix,
                    pool_from_prefix: true,
                    ..
                } => Some((name.clone(), prefix.clone())),
                _ => None,
            })
            .collect(),
        limits: pipeline::Limits {
            per_pool: config.limits.environments_per_pool,
            per_user: config.limits.environments_per_user,
            services_per_claim: config.limits.services_per_claim,
        },
        secrets: key_files.keys(),
        decrypts: std::sync::atomic::AtomicUsize::new(0),
    };
    Ok((pipeline, key_files))
}
