//! Stage 8, apply: an unheld plan -> the target, one environment at a time.
//!
//! The only stage that changes the world, and only through [`Target`]. Each
//! environment's steps go to the target as one change (creates and updates in
//! plan order, then deletions in reverse order); environments are applied in
//! parallel and independently: one failing environment does not stop the
//! others. A held plan is never applied.

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::pipeline::Evaluation;
use crate::plan::{Change, Plan, StepAction};
use crate::render::{Rendered, Renderer};
use crate::target::{EnvironmentChange, Error, Target};

/// Why one environment's change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Target(#[from] Error),
    #[error("rendering the environment again gave {0}")]
    Render(String),
}

impl Failure {
    /// A stable reason for conditions and metric labels.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Target(e) => e.reason(),
            Self::Render(_) => "RenderFailed",
        }
    }

    /// Whether retrying later may succeed without the input changing.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Target(e) if e.is_transient())
    }
}

/// What applying did.
#[derive(Debug, Default)]
pub struct Report {
    /// Environments whose change was applied.
    pub applied: Vec<String>,
    /// Environments whose change failed, with the error.
    pub failed: BTreeMap<String, Failure>,
    /// True when the plan was held and nothing was applied.
    pub held: bool,
}

/// Applies `plan` (built from `eval`) to `target`. Environments with objects
/// to write are rendered again by `renderer` (evaluation keeps digests only).
pub fn apply(plan: &Plan, eval: &Evaluation, renderer: &Renderer, target: &dyn Target) -> Report {
    if plan.hold.is_some() {
        return Report {
            held: true,
            ..Report::default()
        };
    }
    let steps = plan.steps_by_environment();
    let results: Vec<(String, Result<(), Failure>)> = plan
        .environments
        .par_iter()
        .map(|env| {
            let desired = eval.desired.get(&env.name);
            let env_steps = steps.get(env.name.as_str()).map_or(&[][..], Vec::as_slice);
            let writes = env_steps.iter().any(|s| s.action != StepAction::Delete);
            let fresh = match desired.filter(|_| writes) {
                Some(d) => match renderer.render(&d.claim, &d.record.versions, d.expires_at) {
                    Ok(r) => r,
                    Err((template, message)) => {
                        let failure = Failure::Render(format!("an error in {template}: {message}"));
                        return (env.name.clone(), Err(failure));
                    }
                },
                None => Vec::new(),
            };
            let by_file: BTreeMap<String, &Rendered> =
                fresh.iter().map(|r| (r.object.file_name(), r)).collect();
            let planned: BTreeMap<String, &str> = desired
                .into_iter()
                .flat_map(|d| d.objects.iter().map(|o| (o.file_name(), o.digest.as_str())))
                .collect();
            let mut upserts = Vec::new();
            let mut deletes = Vec::new();
            for step in env_steps {
                match step.action {
                    StepAction::Delete => deletes.push(step.file.clone()),
                    StepAction::Create | StepAction::Update => match by_file.get(&step.file) {
                        Some(r) if planned.get(&step.file) == Some(&r.object.digest.as_str()) => {
                            upserts.push(*r);
                        }
                        _ => {
                            let failure = Failure::Render(format!(
                                "different content for {} than planned; not applied",
                                step.file
                            ));
                            return (env.name.clone(), Err(failure));
                        }
                    },
                }
            }
            let change = EnvironmentChange {
                name: &env.name,
                record: if env.change == Change::Delete {
                    None
                } else {
                    desired.map(|d| &d.record)
                },
                upserts,
                deletes,
            };
            (
                env.name.clone(),
                target.apply(&change).map_err(Failure::from),
            )
        })
        .collect();
    let mut report = Report::default();
    for (name, result) in results {
        match result {
            Ok(()) => report.applied.push(name),
            Err(e) => {
                report.failed.insert(name, e);
            }
        }
    }
    report
}
