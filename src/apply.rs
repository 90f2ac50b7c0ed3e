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
use crate::render::Object;
use crate::target::{EnvironmentChange, Error, Target};

/// What applying did.
#[derive(Debug, Default)]
pub struct Report {
    /// Environments whose change was applied.
    pub applied: Vec<String>,
    /// Environments whose change failed, with the error.
    pub failed: BTreeMap<String, Error>,
    /// True when the plan was held and nothing was applied.
    pub held: bool,
}

/// Applies `plan` (built from `eval`) to `target`.
pub fn apply(plan: &Plan, eval: &Evaluation, target: &dyn Target) -> Report {
    if plan.hold.is_some() {
        return Report {
            held: true,
            ..Report::default()
        };
    }
    let steps = plan.steps_by_environment();
    let results: Vec<(String, Result<(), Error>)> = plan
        .environments
        .par_iter()
        .map(|env| {
            let desired = eval.desired.get(&env.name);
            let objects: BTreeMap<String, &Object> = desired
                .into_iter()
                .flat_map(|d| d.objects.iter().map(|o| (o.file_name(), o)))
                .collect();
            let mut upserts = Vec::new();
            let mut deletes = Vec::new();
            for step in steps.get(env.name.as_str()).into_iter().flatten() {
                match step.action {
                    StepAction::Delete => deletes.push(step.file.clone()),
                    StepAction::Create | StepAction::Update => {
                        let object = objects
                            .get(&step.file)
                            .expect("a create or update step comes from a desired object");
                        upserts.push(*object);
                    }
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
            (env.name.clone(), target.apply(&change))
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
