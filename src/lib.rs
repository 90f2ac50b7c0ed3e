//! converge: a declarative `GitOps` reconciler for environment claims.
//!
//! One pass, in pipeline order (the modules below are listed the same way):
//!
//! 1. [`source`] reads claim files as bytes into snapshots;
//! 2. [`load`] parses them (JSON, or YAML under a budget);
//! 3. [`validate`] checks the JSON Schema and asks Cedar;
//! 4. [`resolve`] turns version constraints into tags;
//! 5. [`render`] builds each environment's objects;
//! 6. [`diff`] compares them with the target's inventory;
//! 7. [`plan`] orders the changes and holds mass deletions;
//! 8. [`apply`] hands the plan to the [`target`];
//! 9. [`status`] records conditions.
//!
//! [`pipeline`] runs stages 2–5 for every file in parallel; [`Converge`]
//! wires a [`config::Config`] to sources, pipeline and target.

pub mod api;
pub mod apply;
pub mod claim;
pub mod client;
pub mod config;
pub mod diagnostic;
pub mod diff;
pub mod hex;
pub mod load;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod resolve;
pub mod source;
pub mod state;
pub mod status;
pub mod target;
pub mod validate;

use chrono::{DateTime, Utc};

use config::{Config, Presets, SourceConfig, TargetConfig};
use pipeline::{Evaluation, Pipeline};
use plan::Plan;
use source::Snapshot;
use source::dir::DirSource;
use source::git::GitSource;
use source::s3::S3Source;
use target::{Inventory, Target};

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
    Presets(String),
    #[error("target kind kubernetes is not supported by this build yet; use kind: manifests")]
    UnsupportedTarget,
}

/// Why a pass failed as a whole (bad claims never fail a pass).
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Source(#[from] source::Error),
    #[error(transparent)]
    Target(#[from] target::Error),
}

/// Options of one pass.
#[derive(Debug, Clone, Copy)]
pub struct PassOptions {
    pub now: DateTime<Utc>,
    /// Apply the plan (false: plan only).
    pub apply: bool,
    pub allow_mass_delete: bool,
}

/// What one pass saw, decided and did.
#[derive(Debug)]
pub struct PassOutcome {
    pub evaluation: Evaluation,
    pub plan: Plan,
    pub report: Option<apply::Report>,
}

/// A config wired to its pipeline and target.
pub struct Converge {
    pub config: Config,
    pub pipeline: Pipeline,
    pub target: Box<dyn Target>,
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
        let pipeline = pipeline_for(&config)?;
        let target: Box<dyn Target> = match &config.target {
            TargetConfig::Manifests { path } => {
                Box::new(target::manifests::Manifests::new(path.clone()))
            }
            TargetConfig::Kubernetes { .. } => return Err(SetupError::UnsupportedTarget),
        };
        Ok(Converge {
            config,
            pipeline,
            target,
        })
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

    /// One pass: read, evaluate, plan, and (if asked and not held) apply.
    pub fn pass(&self, options: PassOptions) -> Result<PassOutcome, PassError> {
        let snapshots = self.read_sources()?;
        let live = self.target.inventory()?;
        let evaluation =
            self.pipeline
                .evaluate(&snapshots, &live, pipeline::Options { now: options.now });
        drop(snapshots); // the claims' bytes are parsed: free them before planning
        let plan = plan::build(
            &evaluation,
            &live,
            plan::Options {
                max_delete_fraction: self.config.safety.max_delete_fraction,
                allow_mass_delete: options.allow_mass_delete,
            },
        );
        let report = options.apply.then(|| {
            apply::apply(
                &plan,
                &evaluation,
                &self.pipeline.renderer,
                self.target.as_ref(),
            )
        });
        Ok(PassOutcome {
            evaluation,
            plan,
            report,
        })
    }
}

/// The pipeline a config describes (schema, policies, presets, templates).
pub fn pipeline_for(config: &Config) -> Result<Pipeline, SetupError> {
    let schema = match &config.schema {
        Some(path) => validate::schema::Schema::from_file(path)?,
        None => validate::schema::Schema::builtin(),
    };
    let policies = match &config.policies {
        Some(dir) => validate::policy::Policies::from_dir(dir)?,
        None => validate::policy::Policies::builtin(),
    };
    let presets = Presets::new(&config.presets).map_err(SetupError::Presets)?;
    let mut renderer = render::Renderer::new(presets, config.images.registry.clone());
    if let Some(dir) = &config.templates {
        renderer = renderer.with_templates(dir)?;
    }
    let tags: Box<dyn resolve::Tags> = if config.tags.is_empty() {
        Box::new(resolve::NoTags)
    } else {
        Box::new(resolve::StaticTags(config.tags.clone()))
    };
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
    Ok(Pipeline {
        schema,
        policies,
        renderer,
        tags,
        signatures_required,
    })
}

/// What `converge plan --repo R --base B --head H` compares.
#[derive(Debug, Clone)]
pub struct PullRequest<'a> {
    pub repo: &'a std::path::Path,
    pub base: &'a str,
    pub head: &'a str,
}

/// The plan merging `head` into `base` would cause: both revisions are read
/// straight from the repository (no checkout); what `base` asks for plays the
/// live infrastructure, what `head` asks for is desired. Uses the config's
/// first git source for path globs and trusted signing keys when there is one.
pub fn pull_request_plan(
    config: &Config,
    pr: &PullRequest<'_>,
    now: DateTime<Utc>,
) -> Result<(Plan, Evaluation), PlanError> {
    let pipeline = pipeline_for(config)?;
    let git = config.sources.iter().find_map(|s| match s {
        SourceConfig::Git {
            name,
            paths,
            signatures,
            ..
        } => Some((name.clone(), paths.clone(), signatures.clone())),
        _ => None,
    });
    let (name, paths, signatures) = git.unwrap_or_else(|| ("repo".to_owned(), Vec::new(), None));
    let trust = source::verify::Trust::from_config(signatures.as_ref()).map_err(|e| {
        source::Error::Git {
            source_name: name.clone(),
            error: Box::new(e.into()),
        }
    })?;
    let max = config.limits.max_file_bytes;
    let base = source::git::read_revision(&name, pr.repo, pr.base, &paths, &trust, max)?;
    let head = source::git::read_revision(&name, pr.repo, pr.head, &paths, &trust, max)?;
    let options = pipeline::Options { now };
    let before = pipeline.evaluate(std::slice::from_ref(&base), &Inventory::default(), options);
    let live = before.as_live();
    let after = pipeline.evaluate(std::slice::from_ref(&head), &live, options);
    let plan = plan::build(
        &after,
        &live,
        plan::Options {
            max_delete_fraction: config.safety.max_delete_fraction,
            allow_mass_delete: false,
        },
    );
    Ok((plan, after))
}

/// Why a pull-request plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Source(#[from] source::Error),
}
