//! Stage 8, apply: an unheld plan -> the target, one environment at a time.
//!
//! The only stage that changes the world, and only through [`Target`]. Each
//! environment's steps go to the target as one change (creates and updates in
//! plan order, then deletions in reverse order); environments are applied in
//! parallel and independently: one failing environment does not stop the
//! others. A held plan is never applied. The plan goes to the target in
//! chunks of [`CHUNK`] environments, so only one chunk's rendered objects are
//! in memory at a time.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use crate::condition::Reason;
use crate::object::ObjectRef;
use crate::pipeline::Evaluation;
use crate::plan::{Change, Plan, StepAction};
use crate::render::{Digest, RenderError, Rendered, Renderer};
use crate::target::{EnvironmentChange, Error, Target};

/// Why one environment's change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Target(#[from] Error),
    /// Rendering the environment again failed.
    #[error("rendering the environment again gave an error in {0}")]
    Render(#[source] RenderError),
    /// Rendering the environment again gave an object other than the plan's.
    #[error(
        "rendering the environment again gave different content for {object} than planned; not applied"
    )]
    Unplanned { object: String },
}

impl Failure {
    /// A stable reason for conditions and metric labels.
    #[must_use]
    pub fn reason(&self) -> Reason {
        match self {
            Self::Target(e) => e.reason(),
            Self::Render(_) | Self::Unplanned { .. } => Reason::RenderFailed,
        }
    }

    /// Whether retrying later may succeed without the input changing.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Target(e) if e.is_transient())
    }
}

/// One environment's change, rendered and checked, before it is applied.
struct Prepared<'e> {
    fresh: Vec<Rendered>,
    /// Indices into `fresh` of the objects to write, in plan order.
    upserts: Vec<usize>,
    deletes: Vec<ObjectRef>,
    record: Option<&'e crate::target::EnvironmentRecord>,
}

fn prepare<'e>(
    change: Change,
    desired: Option<&'e crate::pipeline::Desired>,
    steps: &[&crate::plan::Step],
    renderer: &Renderer,
) -> Result<Prepared<'e>, Failure> {
    let writes = steps.iter().any(|s| s.action != StepAction::Delete);
    let fresh = match desired.filter(|_| writes) {
        Some(d) => renderer
            .render(
                &d.claim,
                &d.record.versions,
                d.expires_at,
                d.secrets.as_deref(),
            )
            .map_err(Failure::Render)?,
        None => Vec::new(),
    };
    let by_id: HashMap<&ObjectRef, usize> = fresh
        .iter()
        .enumerate()
        .map(|(i, r)| (&r.object.id, i))
        .collect();
    let planned: HashMap<&ObjectRef, Digest> =
        desired.into_iter().flat_map(|d| d.objects.iter()).collect();
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for step in steps {
        match step.action {
            StepAction::Delete => deletes.push(step.object.clone()),
            StepAction::Create | StepAction::Update => match by_id.get(&step.object) {
                Some(&i) if planned.get(&step.object) == Some(&fresh[i].object.digest) => {
                    upserts.push(i);
                }
                _ => {
                    return Err(Failure::Unplanned {
                        object: step.object.to_string(),
                    });
                }
            },
        }
    }
    let record = if change == Change::Delete {
        None
    } else {
        desired.map(|d| &d.record)
    };
    Ok(Prepared {
        fresh,
        upserts,
        deletes,
        record,
    })
}

/// The fields each updated object of `plan` would change, as `target` would
/// apply it (a dry run: nothing is written). Environments are rendered again
/// as for [`apply`]; one whose preview fails is left out, with the error.
pub fn preview(
    plan: &Plan,
    eval: &Evaluation,
    renderer: &Renderer,
    target: &dyn Target,
) -> (Vec<crate::plan::ObjectFields>, BTreeMap<String, Failure>) {
    let steps = plan.steps_by_environment();
    let mut fields = Vec::new();
    let mut failed = BTreeMap::new();
    for env in plan
        .environments
        .iter()
        .filter(|e| e.change == Change::Update)
    {
        let env_steps = steps.get(env.name.as_str()).map_or(&[][..], Vec::as_slice);
        if !env_steps.iter().any(|s| s.action == StepAction::Update) {
            continue;
        }
        let desired = eval.desired.get(&env.name).map(AsRef::as_ref);
        let result = prepare(env.change, desired, env_steps, renderer).and_then(|p| {
            let change = EnvironmentChange {
                name: &env.name,
                record: p.record,
                upserts: p.upserts.iter().map(|&i| &p.fresh[i]).collect(),
                deletes: p.deletes.clone(),
            };
            target.preview(&change).map_err(Failure::from)
        });
        match result {
            Ok(objects) => fields.extend(objects.into_iter().map(|(object, changes)| {
                crate::plan::ObjectFields {
                    environment: env.name.clone(),
                    object,
                    changes,
                }
            })),
            Err(e) => {
                failed.insert(env.name.clone(), e);
            }
        }
    }
    (fields, failed)
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

/// Environments rendered and applied per batch: bounds the rendered YAML held
/// at once (~50 KiB per environment of the benchmark, so ~25 MiB) while
/// keeping the target's per-batch costs (two to four filesystem syncs for the
/// manifests target) few.
pub const CHUNK: usize = 512;

/// Applies `plan` (built from `eval`) to `target`. Environments with objects
/// to write are rendered again by `renderer` (evaluation keeps digests only).
/// The plan is applied in chunks of [`CHUNK`] environments, in plan order:
/// each chunk is rendered (in parallel), handed to the target, and dropped
/// before the next is rendered.
pub fn apply(plan: &Plan, eval: &Evaluation, renderer: &Renderer, target: &dyn Target) -> Report {
    // A held plan holds its deletions, nothing else: creates and updates
    // (of any source) go ahead.
    let held = plan.hold.is_some();
    let environments: Vec<&crate::plan::EnvironmentPlan> = plan
        .environments
        .iter()
        .filter(|e| !(held && e.change == Change::Delete))
        .collect();
    let steps = plan.steps_by_environment();
    let mut report = Report {
        held,
        ..Report::default()
    };
    for chunk in environments.chunks(CHUNK) {
        // Render again what will be written (in parallel), checking it is what was planned.
        let prepared: Vec<(&str, Result<Prepared<'_>, Failure>)> = chunk
            .par_iter()
            .map(|env| {
                let desired = eval.desired.get(&env.name);
                let env_steps = steps.get(env.name.as_str()).map_or(&[][..], Vec::as_slice);
                (
                    env.name.as_str(),
                    prepare(env.change, desired.map(AsRef::as_ref), env_steps, renderer),
                )
            })
            .collect();
        let mut ready = Vec::with_capacity(prepared.len());
        for (name, p) in prepared {
            match p {
                Ok(p) => ready.push((name, p)),
                Err(e) => {
                    report.failed.insert(name.to_owned(), e);
                }
            }
        }
        let changes: Vec<EnvironmentChange<'_>> = ready
            .iter()
            .map(|(name, p)| EnvironmentChange {
                name,
                record: p.record,
                upserts: p.upserts.iter().map(|&i| &p.fresh[i]).collect(),
                deletes: p.deletes.clone(),
            })
            .collect();
        for ((name, _), result) in ready.iter().zip(target.apply_all(&changes)) {
            match result {
                Ok(()) => report.applied.push((*name).to_owned()),
                Err(e) => {
                    report.failed.insert((*name).to_owned(), Failure::from(e));
                }
            }
        }
    }
    report
}
