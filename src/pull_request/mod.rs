//! Plans on pull requests: what merging a head commit into its base would
//! change, the verdict on it and the comment that shows it.
//!
//! [`Planner::plan`] reads two revisions of a repository (claim files read
//! as data, from the object database: nothing of the pull request is
//! executed or checked out), evaluates the base as if it were live and
//! plans the head against it, so the plan shows exactly what merging
//! changes. With a cluster target it then asks the cluster what each update
//! would change, field by field (a server-side dry run against what is
//! live: writes nothing). `converge plan --repo --base --head` and the
//! daemon's pull-request poller both call it. [`verdict`] and [`comment`]
//! are pure: the `<context>/plan` status and the comment bodies.

pub mod comment;
pub mod poll;
pub mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::condition::Reason;
use crate::config::{Config, SourceConfig, TargetConfig};
use crate::pipeline::{self, Evaluation, Pipeline};
use crate::plan::{self, Plan};
use crate::source::{self, Snapshot};
use crate::target::{Inventory, Target};
use crate::{SetupError, apply, diagnostic, pipeline_for, tags};

pub use verdict::{Finding, State, Verdict};

/// Why a pull-request plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Source(#[from] source::Error),
}

/// What merging `head` into `base` would change, and the verdict on it.
#[derive(Debug)]
pub struct PullRequestPlan {
    pub plan: Plan,
    /// The head's evaluation (against the base as live).
    pub evaluation: Evaluation,
    /// The claim files the head adds or changes.
    pub changed: BTreeSet<String>,
    pub verdict: Verdict,
}

/// The git source whose claims a pull request changes: its name, path
/// globs and trusted signing keys.
#[derive(Debug, Clone)]
struct Side {
    name: String,
    paths: Vec<String>,
    trust: source::verify::Trust,
}

/// Plans pull requests of one git source with one config: the pipeline
/// (schema, policies, templates, keys) is compiled once.
pub struct Planner {
    config: Config,
    pipeline: Pipeline,
    side: Side,
    /// The cluster asked for field-level changes, when the target is one.
    target: Option<Box<dyn Target>>,
}

impl std::fmt::Debug for Planner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planner")
            .field("source", &self.side.name)
            .field("preview", &self.target.is_some())
            .finish_non_exhaustive()
    }
}

impl Planner {
    /// A planner for the git source `source` of `config` (`None`: the
    /// first git source, for path globs and trusted keys; without one,
    /// every claim file counts). With `preview` and a Kubernetes target,
    /// updates are dry-run against the cluster (a client of its own:
    /// nothing is requested until then).
    pub fn new(config: &Config, source: Option<&str>, preview: bool) -> Result<Planner, PlanError> {
        let mut pipeline = pipeline_for(config)?;
        // A pull request is judged as if merged: who reviews it is what
        // the merge's own `context.review` will say, asked of the forge
        // when the branch's pass reads the merge commit. Its plan carries
        // no review (a proposal is never `Unreviewed`).
        pipeline.forges.clear();
        let git = config.sources.iter().find_map(|s| match s {
            SourceConfig::Git {
                name,
                paths,
                signatures,
                ..
            } if source.is_none_or(|want| want == name) => {
                Some((name.clone(), paths.clone(), signatures.clone()))
            }
            _ => None,
        });
        let (name, paths, signatures) =
            git.unwrap_or_else(|| (source.unwrap_or("repo").to_owned(), Vec::new(), None));
        let trust = source::verify::Trust::from_config(signatures.as_ref()).map_err(|e| {
            source::Error::Git {
                source_name: name.clone(),
                error: Box::new(e.into()),
            }
        })?;
        let target: Option<Box<dyn Target>> = match &config.target {
            TargetConfig::Kubernetes(options) if preview => Some(Box::new(
                crate::target::kube::Kubernetes::from_config(options).map_err(SetupError::from)?,
            )),
            _ => None,
        };
        Ok(Planner {
            config: config.clone(),
            pipeline,
            side: Side { name, paths, trust },
            target,
        })
    }

    /// The source whose pull requests this planner plans.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.side.name
    }

    /// Reads both revisions of the repository at `repo` (commit ids, branch
    /// or tag names) and plans merging `head` into `base`.
    pub fn plan(
        &mut self,
        repo: &Path,
        base: &str,
        head: &str,
        now: DateTime<Utc>,
    ) -> Result<PullRequestPlan, PlanError> {
        let max = self.config.limits.max_file_bytes;
        let side = &self.side;
        let read = |rev: &str| {
            source::git::read_revision(&side.name, repo, rev, &side.paths, &side.trust, max)
        };
        let base = read(base)?;
        let head = read(head)?;
        Ok(self.plan_snapshots(&base, &head, now)?)
    }

    /// Plans `head` against `base` (two snapshots of the source).
    pub fn plan_snapshots(
        &mut self,
        base: &Snapshot,
        head: &Snapshot,
        now: DateTime<Utc>,
    ) -> Result<PullRequestPlan, SetupError> {
        let options = pipeline::Options { now };
        if let Some(mut scanner) = tags::Scanner::from_config(&self.config)? {
            // The tags both revisions need, read once.
            let mut cache = pipeline::Cache::default();
            let both = [base.clone(), head.clone()];
            let _ =
                self.pipeline
                    .evaluate_cached(&both, &Inventory::default(), options, &mut cache);
            let keys = scanner.want(&cache.wanted());
            scanner.scan(Some(&keys));
            self.pipeline.tags = scanner.tag_set();
        }
        let before =
            self.pipeline
                .evaluate(std::slice::from_ref(base), &Inventory::default(), options);
        let live = before.as_live();
        let after = self
            .pipeline
            .evaluate(std::slice::from_ref(head), &live, options);
        let mut plan = plan::build(
            &after,
            &live,
            plan::Options {
                max_delete_fraction: self.config.safety.max_delete_fraction,
                allow_mass_delete: false,
            },
            &mut plan::InSync::default(),
        );
        let refused = self.preview(&mut plan, &after);
        let changed = verdict::changed_files(base, head);
        let verdict = verdict::verdict(&plan, &after, &changed, &refused);
        Ok(PullRequestPlan {
            plan,
            evaluation: after,
            changed,
            verdict,
        })
    }

    /// The cluster's dry run of every update: its field-level changes go
    /// into the plan; what the cluster refuses (invalid, forbidden, an
    /// immutable field) is returned by environment; what it cannot answer
    /// now (unreachable, overloaded) is a plan diagnostic only, never a
    /// refusal.
    fn preview(
        &self,
        plan: &mut Plan,
        evaluation: &Evaluation,
    ) -> BTreeMap<String, (Reason, String)> {
        let Some(target) = &self.target else {
            return BTreeMap::new();
        };
        let (fields, failed) =
            apply::preview(plan, evaluation, &self.pipeline.renderer, target.as_ref());
        plan.fields = fields;
        let mut refused = BTreeMap::new();
        for (name, e) in failed {
            if e.is_transient() {
                plan.diagnostics.push(diagnostic::Diagnostic::new(
                    &name,
                    "",
                    "preview",
                    format!("the target cannot preview the change now: {e}"),
                ));
            } else {
                refused.insert(name, (e.reason(), e.to_string()));
            }
        }
        refused
    }
}
