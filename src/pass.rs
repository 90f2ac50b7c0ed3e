//! The pass: evaluate the snapshots against the target's inventory, plan,
//! and (if asked and not held) apply; what it returns ([`PassOutcome`]) and
//! what it keeps for the next one ([`Memory`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::condition::{self, Reason};
use crate::config::{self, TargetConfig};
use crate::pipeline::{self, Counters, Evaluation};
use crate::plan::{self, Plan};
use crate::source::{self, Snapshot};
use crate::target::{self, Inventory};
use crate::{Converge, apply, claim, diagnostic, health, shard};

/// Why a pass failed as a whole (bad claims never fail a pass).
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Source(#[from] source::Error),
    #[error(transparent)]
    Target(#[from] target::Error),
}

impl PassError {
    /// A stable reason for events and metric labels.
    #[must_use]
    pub fn reason(&self) -> Reason {
        match self {
            Self::Source(_) => Reason::SourceUnavailable,
            Self::Target(e) => e.reason(),
        }
    }
}

/// Options of one pass.
#[derive(Debug, Clone, Copy)]
pub struct PassOptions {
    pub now: DateTime<Utc>,
    /// What the pass does with its plan.
    pub mode: Mode,
    pub allow_mass_delete: bool,
}

/// What a pass does with its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only plan (`converge plan`); with `preview`, ask the target what each
    /// update would change, field by field.
    Plan { preview: bool },
    /// Apply the plan (unless held); with `observe`, read the applied
    /// objects' health and drift from the target (the daemon: a one-shot
    /// pass does not wait for rollouts).
    Apply { observe: bool },
}

/// What one pass saw, decided and did.
#[derive(Debug)]
pub struct PassOutcome {
    pub evaluation: Evaluation,
    pub plan: Plan,
    /// What applying did; `None` when the pass only planned.
    pub report: Option<apply::Report>,
    /// The target's inventory after the pass.
    pub live: Arc<Inventory>,
    /// The work done, re-authorizations after apply included.
    pub counters: Counters,
    /// Each live environment's health, when observed (the target observes
    /// health and the pass was asked to).
    pub health: BTreeMap<String, health::EnvironmentHealth>,
    /// How long until the first environment still rolling out reaches the
    /// health timeout (and becomes `Stalled` if nothing changes).
    pub health_deadline: Option<std::time::Duration>,
    /// Each environment whose objects drifted from what converge applied:
    /// `Kind/name` and how, as the target found them at the start of the
    /// pass. With `drift: correct` the plan applied them again (those of
    /// environments the report lists as applied are corrected).
    pub drift: BTreeMap<String, Vec<(String, String)>>,
    /// Whether drift is corrected (`drift: correct`) or only reported.
    pub drift_corrected: bool,
    /// The shard members the pass planned with (`shards`): the evaluation,
    /// the plan and `live` hold only this replica's share.
    pub members: Option<Arc<shard::Members>>,
}

/// What a pass keeps for the next one: the daemon holds it across passes,
/// one-shot commands start from empty.
#[derive(Debug)]
pub struct Memory {
    /// Evaluations of unchanged files.
    pub cache: pipeline::Cache,
    /// Environments the last plan found in sync.
    pub in_sync: plan::InSync,
    /// When each environment was last applied by this process (monotonic,
    /// for the health timeout; and the wall-clock time messages name).
    pub applied_at: HashMap<String, (Instant, String)>,
    /// When this memory began (the last apply of environments applied
    /// before: the health timeout counts from the start).
    pub started: (Instant, String),
}

impl Default for Memory {
    fn default() -> Memory {
        Memory {
            cache: pipeline::Cache::default(),
            in_sync: plan::InSync::default(),
            applied_at: HashMap::new(),
            started: (Instant::now(), wall_clock(chrono::Utc::now())),
        }
    }
}

impl Converge {
    /// The pass: evaluate the snapshots against the target's inventory,
    /// plan, and (if asked and not held) apply. What a `stale` source (one
    /// that cannot be read now) claimed is never deleted. `memory` carries
    /// what the last pass learned (`Memory::default()` for a one-shot pass).
    pub fn pass(
        &mut self,
        snapshots: Vec<Snapshot>,
        stale: &BTreeSet<&str>,
        options: PassOptions,
        memory: &mut Memory,
    ) -> Result<PassOutcome, PassError> {
        self.key_files.refresh();
        if let Some(m) = self.pipeline.renderer.manifests() {
            m.begin_pass();
        }
        // Sharded: one view of the members for the whole pass, so an
        // environment is in both the share of the inventory and of the
        // claims, or in neither (never planned as a deletion). Planning
        // only (`converge plan`) joins no shard and shows every environment.
        let members = match options.mode {
            Mode::Apply { .. } => self.target.members(),
            Mode::Plan { .. } => None,
        };
        let all = self.target.inventory()?;
        let live = share(&all, members.as_deref());
        let observe = options.mode == Mode::Apply { observe: true };
        // What the target found drifted (its watches, or one listing per
        // kind for a one-shot run; what the state store remembered): never
        // inferred from pending digests, which a failed write leaves too.
        let drift: plan::Drift = live
            .environments
            .iter()
            .filter_map(|(name, env)| {
                let d = self.target.drift(name, env);
                (!d.is_empty()).then(|| (name.clone(), d))
            })
            .collect();
        // Every claim is evaluated against the whole inventory (policies
        // see create or update truly); the plan sees only this share.
        if let Some(reviewer) = &mut self.reviewer {
            self.pipeline.reviews = reviewer.lookup(&snapshots);
        }
        let mut evaluation = self.pipeline.evaluate_cached(
            &snapshots,
            &all,
            pipeline::Options { now: options.now },
            &mut memory.cache,
        );
        if self.list_new_tags(&memory.cache) {
            // Lists for services no claim needed before: resolve again (only
            // the claims that consult them are resolved and rendered).
            let before = evaluation.counters;
            evaluation = self.pipeline.evaluate_cached(
                &snapshots,
                &all,
                pipeline::Options { now: options.now },
                &mut memory.cache,
            );
            add_counters(&mut evaluation.counters, before);
        }
        drop(all);
        if let Some(m) = &members {
            evaluation.retain_environments(|name| m.owns(name));
        }
        self.tags_stale(&mut evaluation);
        keep_stale(&mut evaluation, &live, stale);
        // Planning only: the claims' bytes are parsed, free them before planning.
        let snapshots = matches!(options.mode, Mode::Apply { .. }).then_some(snapshots);
        let mut plan = plan::build(
            &evaluation,
            &live,
            plan::Options {
                max_delete_fraction: self.config.safety.max_delete_fraction,
                allow_mass_delete: options.allow_mass_delete,
            },
            &mut memory.in_sync,
        );
        plan::mark_drift(&mut plan, &evaluation, &live, &drift);
        let mut outcome = PassOutcome {
            counters: evaluation.counters,
            evaluation,
            plan: Plan::default(),
            report: None,
            live,
            health: BTreeMap::new(),
            health_deadline: None,
            drift,
            drift_corrected: matches!(
                &self.config.target,
                TargetConfig::Kubernetes(k) if k.drift == config::Drift::Correct
            ),
            members,
        };
        match options.mode {
            Mode::Plan { preview } => {
                if preview {
                    self.preview(&mut plan, &outcome.evaluation);
                }
                outcome.plan = plan;
            }
            Mode::Apply { .. } => {
                outcome.plan = plan;
                let snapshots = snapshots.as_deref().unwrap_or_default();
                self.apply(&mut outcome, snapshots, options.now, memory);
                if observe {
                    self.observe_health(&mut outcome, memory);
                }
            }
        }
        Ok(outcome)
    }

    /// `TagsStale` on each desired environment that resolved a constraint
    /// against a list the tag source cannot read now.
    fn tags_stale(&self, evaluation: &mut Evaluation) {
        let Some(scanner) = self.tags.as_ref().filter(|s| s.any_stale()) else {
            return;
        };
        let presets = self.pipeline.renderer.presets();
        for (name, d) in &evaluation.desired {
            let dev = presets.get(d.claim.environment_type).use_dev_tags;
            for (service, r) in &d.record.versions {
                if matches!(
                    r.constraint.parse::<claim::Constraint>(),
                    Ok(claim::Constraint::Exact(_)) | Err(_)
                ) {
                    continue;
                }
                if let Some(why) = scanner.stale(service, dev) {
                    evaluation
                        .conditions
                        .entry(name.clone())
                        .or_default()
                        .push(condition::Condition::problem(
                            condition::ConditionType::TagsStale,
                            Reason::TagsStale,
                            format!(
                                "the tags of {service} cannot be read now ({why}); it stays at {} ({})",
                                r.tag, r.constraint
                            ),
                        ));
                }
            }
        }
    }

    /// The preview step of a plan: field-level changes from the target.
    fn preview(&self, plan: &mut Plan, evaluation: &Evaluation) {
        let (fields, failed) = apply::preview(
            plan,
            evaluation,
            &self.pipeline.renderer,
            self.target.as_ref(),
        );
        plan.fields = fields;
        for (name, e) in failed {
            plan.diagnostics.push(diagnostic::Diagnostic::new(
                &name,
                "",
                "preview",
                format!("the target cannot preview the change: {e}"),
            ));
        }
    }

    /// The apply step: apply the plan, then settle what applying changed
    /// (cache authorizations, failed environments forgotten, the inventory
    /// after, when each environment was applied).
    fn apply(
        &self,
        outcome: &mut PassOutcome,
        snapshots: &[Snapshot],
        now: DateTime<Utc>,
        memory: &mut Memory,
    ) {
        let report = apply::apply(
            &outcome.plan,
            &outcome.evaluation,
            &self.pipeline.renderer,
            self.target.as_ref(),
        );
        let applied: BTreeSet<&str> = report.applied.iter().map(String::as_str).collect();
        let created: BTreeSet<&str> = outcome
            .plan
            .environments
            .iter()
            .filter(|e| e.change == plan::Change::Create && applied.contains(e.name.as_str()))
            .map(|e| e.name.as_str())
            .collect();
        outcome.counters.authorized +=
            self.pipeline
                .settle_created(&mut memory.cache, snapshots, &created, now);
        for name in report.failed.keys() {
            memory.cache.forget_environment(name);
        }
        if (!report.applied.is_empty() || !report.failed.is_empty())
            && let Ok(live) = self.target.inventory()
        {
            outcome.live = share(&live, outcome.members.as_deref());
        }
        let applied_now = (Instant::now(), wall_clock(chrono::Utc::now()));
        for name in &report.applied {
            memory.applied_at.insert(name.clone(), applied_now.clone());
        }
        let live = &outcome.live;
        memory
            .applied_at
            .retain(|name, _| live.environments.contains_key(name));
        outcome.report = Some(report);
    }

    /// The health step: each live environment's objects as the target
    /// observes them, folded with the health timeout counted from the
    /// environment's last apply.
    fn observe_health(&self, outcome: &mut PassOutcome, memory: &Memory) {
        let timeout = self.config.reconcile.health_timeout;
        let mut deadline: Option<std::time::Duration> = None;
        for (name, env) in &outcome.live.environments {
            let Some(objects) = self.target.health(name, env) else {
                continue;
            };
            let (at, time) = memory.applied_at.get(name).unwrap_or(&memory.started);
            let since = at.elapsed();
            let health = health::environment(&objects, since, timeout, time);
            if health.readiness == health::Readiness::Reconciling {
                let left = timeout.saturating_sub(since);
                deadline = Some(deadline.map_or(left, |d| d.min(left)));
            }
            outcome.health.insert(name.clone(), health);
        }
        outcome.health_deadline = deadline;
    }
}

/// A time as messages name it: RFC 3339, UTC, whole seconds.
fn wall_clock(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn add_counters(c: &mut Counters, before: Counters) {
    c.parsed += before.parsed;
    c.validated += before.validated;
    c.authorized += before.authorized;
    c.rendered += before.rendered;
    c.resolved += before.resolved;
    c.decrypts += before.decrypts;
    c.key_unwraps += before.key_unwraps;
}

/// The part of an inventory a shard owns (all of it when not sharded).
fn share(all: &Arc<Inventory>, members: Option<&shard::Members>) -> Arc<Inventory> {
    match members {
        None => Arc::clone(all),
        Some(m) => Arc::new(Inventory {
            environments: all
                .environments
                .iter()
                .filter(|(name, _)| m.owns(name))
                .map(|(name, env)| (name.clone(), Arc::clone(env)))
                .collect(),
        }),
    }
}

/// Unreadable is not empty: a live environment whose claim came from a
/// stale source, and that no claim asks for now, is left as it is; every
/// environment of a stale source says so (`SourceStale`), applied or not.
fn keep_stale(evaluation: &mut Evaluation, live: &Inventory, stale: &BTreeSet<&str>) {
    if stale.is_empty() {
        return;
    }
    let from_stale: BTreeMap<String, String> = evaluation
        .desired
        .iter()
        .map(|(name, d)| (name.clone(), d.origin.source.clone()))
        .chain(live.environments.iter().filter_map(|(name, env)| {
            Some((name.clone(), env.record.origin.as_ref()?.source.clone()))
        }))
        .filter(|(_, source)| stale.contains(source.as_str()))
        .collect();
    for (name, source) in from_stale {
        evaluation
            .conditions
            .entry(name)
            .or_default()
            .push(condition::Condition::problem(
                condition::ConditionType::SourceStale,
                Reason::SourceStale,
                format!("source {source} cannot be read now: what is applied may be out of date"),
            ));
    }
    for (name, env) in &live.environments {
        let from_stale = env
            .record
            .origin
            .as_ref()
            .is_some_and(|o| stale.contains(o.source.as_str()));
        if from_stale && !evaluation.desired.contains_key(name) {
            evaluation
                .keep
                .entry(name.clone())
                .or_insert(Reason::SourceUnavailable);
        }
    }
}
