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

    /// One configured source.
    pub fn source(&self, config: &SourceConfig) -> Result<Box<dyn source::Source>, source::Error> {
        let max_file_bytes = self.config.limits.max_file_bytes;
        match config {
            SourceConfig::Dir { name, path, shown } => Ok(Box::new(source::dir::DirSource {
                options: source::dir::Options {
                    name: name.clone(),
                    root: path.clone(),
                    display_root: if shown.is_empty() {
                        path.display().to_string()
                    } else {
                        shown.clone()
                    },
                    max_file_bytes,
                },
                interval: self.config.reconcile.dir_interval,
            })),
            SourceConfig::Git { name, .. } => Err(source::Error::Unsupported {
                source_name: name.clone(),
                kind: "git",
            }),
            SourceConfig::S3 { name, .. } => Err(source::Error::Unsupported {
                source_name: name.clone(),
                kind: "s3",
            }),
        }
    }

    /// One pass: read, evaluate, plan, and (if asked and not held) apply.
    pub fn pass(&self, options: PassOptions) -> Result<PassOutcome, PassError> {
        let snapshots = self.read_sources()?;
        let live: Inventory = self.target.inventory()?;
        let evaluation =
            self.pipeline
                .evaluate(&snapshots, &live, pipeline::Options { now: options.now });
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
    Ok(Pipeline {
        schema,
        policies,
        renderer,
        tags,
    })
}
