//! The pass, observed: [`Converge::pass`](crate::Converge::pass) does the
//! work; the loop records its outcome in steps of one shape, each a
//! [`Step`] reading the [`Observation`] and writing what it learned.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{Action, Daemon, PLAN_STEPS_KEPT, drift_message};
use crate::condition::Reason;
use crate::metrics::{ActionLabels, EnvLabels};
use crate::plan::{Change, Plan};
use crate::render::timestamp;
use crate::source::Snapshot;
use crate::status::{self, PassFacts, Status, Statuses};
use crate::store::{self, Event};
use crate::target::TargetEvent;
use crate::{Mode, PassOptions, PassOutcome, apply, plan};

/// What the passes found and reported, so the next reports only changes.
pub(super) struct Observed {
    pub(super) statuses: Statuses,
    pub(super) last_plan: Option<Arc<Plan>>,
    /// Files the last evaluation refused before they became claims: their
    /// bytes are not stored (they may hold a secret by mistake). `None`
    /// until a pass evaluated the sources' snapshots; snapshots are stored
    /// only after one did.
    pub(super) withheld: Option<BTreeSet<crate::source::Origin>>,
    /// Files the last evaluation refused without naming a valid environment,
    /// shown per source in `/api/v1/sources` (and so by `converge status`).
    pub(super) unnamed: BTreeMap<crate::source::Origin, Vec<crate::diagnostic::Diagnostic>>,
    /// Diagnostics already reported as events (so a pass does not repeat them).
    pub(super) reported: BTreeSet<String>,
    pub(super) last_hold: Option<String>,
    /// Drift last reported per environment (`drift: report`), so it is
    /// reported once.
    pub(super) drift_reported: BTreeMap<String, String>,
    /// Drift found and not corrected, per environment, as the state store
    /// holds it (restored at start and handed to the target).
    pub(super) drift_kept: BTreeMap<String, Vec<(String, String)>>,
    /// The shard members of the last pass (`shards`).
    pub(super) shard: Option<Arc<crate::shard::Members>>,
    /// Files with diagnostics in the last pass (their recovery is logged).
    pub(super) rejected_files: BTreeSet<String>,
}

/// One pass's outcome as the steps see it, and what they collect for the
/// commit.
pub(super) struct Observation {
    pub(super) outcome: PassOutcome,
    pub(super) now: DateTime<Utc>,
    /// The allow file of a held plan was there when the pass started.
    pub(super) allowed: bool,
    /// Every environment's status before the pass.
    pub(super) before: Statuses,
    /// The events to record (the reads' before the pass's own).
    pub(super) events: Vec<Event>,
    /// The environments whose status changed (`observe_statuses`).
    pub(super) touched: Vec<String>,
    /// The drift the state store must now hold (`observe_drift`).
    pub(super) drift: Vec<(String, Option<Vec<u8>>)>,
}

/// An observation step: one shape for all (source-controller's
/// `reconcileFunc`), each reading the [`Observation`], reporting once what
/// changed and keeping what the next pass compares against.
type Step = fn(&mut Daemon, &mut Observation);

/// The steps, in order (`observe_stalls` compares with `observe_statuses`'s
/// result).
const STEPS: [Step; 10] = [
    Daemon::observe_evaluation,
    Daemon::observe_hold,
    Daemon::observe_applies,
    Daemon::observe_diagnostics,
    Daemon::observe_latency,
    Daemon::observe_drift,
    Daemon::observe_counters,
    Daemon::observe_shard,
    Daemon::observe_statuses,
    Daemon::observe_stalls,
];

impl Daemon {
    /// One pass, observed. [`Converge::pass`](crate::Converge::pass) does the work; the loop records
    /// its outcome, whatever it was, in the same steps (events, metrics,
    /// statuses, the pass record, the commit, the view) and returns when to
    /// run again. Synchronous: it runs on a blocking thread.
    pub(super) fn pass(&mut self, mut events: Vec<Event>) -> Action {
        let started = Instant::now();
        let now = Utc::now();
        self.pacing.pass += 1;
        let span = tracing::info_span!("pass", id = self.pacing.pass);
        let _guard = span.enter();
        self.pacing.last_full_pass = Some(started);

        let snapshots: Vec<Snapshot> = self
            .polling
            .sources
            .iter()
            .filter_map(|s| s.last_good.clone())
            .collect();
        // Unreadable is not empty: what a source not read since start (or
        // failing now) claims is never deleted.
        let stale: BTreeSet<&str> = self
            .polling
            .sources
            .iter()
            .filter(|s| !s.fresh || s.last_error.is_some())
            .map(|s| s.config.name())
            .collect();
        if let Some(statuses) = &mut self.forge_statuses {
            statuses.begin(&snapshots);
        }
        let allowed = self.allow_file().exists();
        let options = PassOptions {
            now,
            mode: Mode::Apply { observe: true },
            allow_mass_delete: allowed,
        };
        let result = self
            .converge
            .pass(snapshots, &stale, options, &mut self.memory);
        drop(stale);

        let (action, record, events, touched, drift) = match result {
            Ok(outcome) => {
                let mut obs = Observation {
                    outcome,
                    now,
                    allowed,
                    before: Arc::clone(&self.observed.statuses),
                    events,
                    touched: Vec::new(),
                    drift: Vec::new(),
                };
                for step in STEPS {
                    step(self, &mut obs);
                }
                self.observe_forge(&mut obs);
                let action = self.action_after(&obs.outcome, now);
                let record = self.pass_record(Ok(&obs.outcome), started, now);
                self.observed.last_plan =
                    Some(Arc::new(obs.outcome.plan.summarized(PLAN_STEPS_KEPT)));
                (action, record, obs.events, obs.touched, obs.drift)
            }
            Err(e) => {
                // Its snapshots were not evaluated: stored after a pass that is.
                self.observed.withheld = None;
                tracing::error!(error = %e, reason = %e.reason(), "the pass could not run");
                let ev = self.event("Warning", e.reason().as_str(), None, e.to_string());
                events.push(ev);
                let delay = self.pacing.apply_backoff.next_delay();
                let record = self.pass_record(Err(&e), started, now);
                (
                    Action::Requeue(delay),
                    record,
                    events,
                    Vec::new(),
                    Vec::new(),
                )
            }
        };
        let changed_envs: Vec<(String, Option<Vec<u8>>)> = touched
            .into_iter()
            .map(|name| {
                let body = self.observed.statuses.get(&name).map(|e| e.stored());
                (name, body)
            })
            .collect();
        self.published.passes.push_back(record.clone());
        while self.published.passes.len()
            > usize::try_from(store::PASS_HISTORY).unwrap_or(usize::MAX)
        {
            self.published.passes.pop_front();
        }
        self.record_in_target(&events);
        let changed: Vec<String> = changed_envs.iter().map(|(n, _)| n.clone()).collect();
        self.converge
            .target
            .publish(&self.observed.statuses, &changed);
        self.commit(&changed_envs, &events, Some(record), &drift);
        self.publish();
        action
    }

    /// The apply statuses of the commits the pass picked up (after the
    /// steps: they read the statuses `observe_statuses` made), and the
    /// forges' failures as events, once per message (a recovery too).
    fn observe_forge(&mut self, obs: &mut Observation) {
        let mut now: BTreeMap<String, String> = BTreeMap::new();
        if let Some(r) = &self.converge.reviewer {
            for (source, message) in &r.failures {
                now.insert(
                    format!("{source}: review provenance"),
                    format!("{message}; claims that need a review are held as they are"),
                );
            }
        }
        if let Some(s) = &self.forge_statuses {
            for (source, message) in s.failures() {
                now.insert(
                    format!("{source}: apply statuses"),
                    format!("{message}; queued, retried with backoff"),
                );
            }
        }
        let before = std::mem::take(&mut self.forge_errors);
        for (what, message) in &now {
            if before.get(what) != Some(message) {
                let text = format!("forge of source {what}: {message}");
                let e = self.event("Warning", "ForgeUnavailable", None, text);
                obs.events.push(e);
            }
        }
        for what in before.keys().filter(|k| !now.contains_key(*k)) {
            let text = format!("forge of source {what}: answering again");
            let e = self.event("Normal", "ForgeRecovered", None, text);
            obs.events.push(e);
        }
        self.forge_errors = now;
        if let Some(statuses) = &mut self.forge_statuses {
            let changed: Vec<String> = obs
                .outcome
                .plan
                .environments
                .iter()
                .map(|e| e.name.clone())
                .collect();
            statuses.after(
                &changed,
                &self.observed.statuses,
                &obs.outcome.plan.diagnostics,
            );
        }
    }

    /// Step: the files the evaluation refused (withheld from the store,
    /// shown per source).
    fn observe_evaluation(&mut self, obs: &mut Observation) {
        self.observed.withheld = Some(obs.outcome.evaluation.withheld.clone());
        self.observed
            .unnamed
            .clone_from(&obs.outcome.evaluation.unnamed);
    }

    /// Step: a held plan is reported once (and its allow file consumed once
    /// the plan it allowed went through).
    fn observe_hold(&mut self, obs: &mut Observation) {
        let (plan, allowed, events) = (&obs.outcome.plan, obs.allowed, &mut obs.events);
        let allow_file = self.allow_file();
        if let Some(hold) = &plan.hold {
            self.metrics.plan_held.set(1);
            if self.observed.last_hold.as_deref() != Some(hold.message.as_str()) {
                self.metrics.plans_held.inc();
                let message = format!(
                    "{}; to allow it once, create {} (never through the API)",
                    hold.message,
                    allow_file.display()
                );
                tracing::warn!("{message}");
                let ev = self.event("Warning", Reason::MassDeletionHeld.as_str(), None, message);
                events.push(ev);
                self.observed.last_hold = Some(hold.message.clone());
            }
            return;
        }
        self.metrics.plan_held.set(0);
        self.observed.last_hold = None;
        if allowed && plan.environments.iter().any(|e| e.change == Change::Delete) {
            let _ = std::fs::remove_file(&allow_file);
            let ev = self.event(
                "Normal",
                "MassDeletionAllowed",
                None,
                format!("{} was used and removed", allow_file.display()),
            );
            events.push(ev);
        }
    }

    /// Step: an event and a metric per environment applied or failed.
    fn observe_applies(&mut self, obs: &mut Observation) {
        let (outcome, events) = (&obs.outcome, &mut obs.events);
        let Some(report) = &outcome.report else {
            return;
        };
        let changes: BTreeMap<&str, &plan::EnvironmentPlan> = outcome
            .plan
            .environments
            .iter()
            .map(|e| (e.name.as_str(), e))
            .collect();
        for name in &report.applied {
            let Some(env) = changes.get(name.as_str()) else {
                continue;
            };
            let (reason, action) = match env.change {
                Change::Create => ("Created", "create"),
                Change::Update => ("Updated", "update"),
                Change::Delete => ("Deleted", "delete"),
            };
            self.metrics
                .plan_changes
                .get_or_create(&ActionLabels {
                    action: action.to_owned(),
                })
                .inc();
            let versions: Vec<String> = env.versions.iter().map(ToString::to_string).collect();
            let mut message = format!("{} ({})", action, env.reason);
            if !versions.is_empty() {
                message = format!("{message}: {}", versions.join(", "));
            }
            tracing::info!(environment = %name, change = action, reason = %env.reason, "applied");
            if env.reason == Reason::DriftCorrected {
                continue; // its event names the objects (`observe_drift`)
            }
            let ev = self.event("Normal", reason, Some(name), message);
            events.push(ev);
        }
        for (name, failure) in &report.failed {
            self.metrics.apply_failures.inc();
            tracing::error!(environment = %name, reason = %failure.reason(), "{failure}");
            let ev = self.event(
                "Warning",
                failure.reason().as_str(),
                Some(name),
                failure.to_string(),
            );
            events.push(ev);
        }
    }

    /// Step: each new diagnostic is reported once, as an event.
    fn observe_diagnostics(&mut self, obs: &mut Observation) {
        let (evaluation, events) = (&obs.outcome.evaluation, &mut obs.events);
        let diagnostics: BTreeSet<String> = evaluation
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect();
        let previously = std::mem::replace(&mut self.observed.reported, diagnostics);
        let files: BTreeSet<String> = evaluation
            .diagnostics
            .iter()
            .map(|d| d.file.clone())
            .collect();
        for file in self.observed.rejected_files.difference(&files) {
            let present = self.polling.sources.iter().any(|s| {
                s.last_good
                    .as_ref()
                    .is_some_and(|g| g.files.iter().any(|f| f.path == *file))
            });
            if present {
                tracing::info!(file = %file, "claim file no longer rejected: it is valid now");
            } else {
                tracing::info!(file = %file, "claim file no longer rejected: it was removed");
            }
        }
        self.observed.rejected_files = files;
        for d in evaluation
            .diagnostics
            .iter()
            .filter(|d| !previously.contains(&d.to_string()))
            .take(100)
        {
            tracing::warn!(
                file = %d.file,
                pointer = %d.pointer,
                rule = %d.rule,
                environment = d.environment.as_deref().unwrap_or(""),
                "{}",
                d.message
            );
            let ev = self.event(
                "Warning",
                "ClaimRejected",
                d.environment.as_deref(),
                d.to_string(),
            );
            events.push(ev);
        }
    }

    /// Step: the time from a source change being seen to it being applied.
    fn observe_latency(&mut self, obs: &mut Observation) {
        let outcome = &obs.outcome;
        let applied = outcome
            .report
            .as_ref()
            .is_some_and(|r| !r.applied.is_empty());
        if applied {
            let seen = self
                .polling
                .sources
                .iter_mut()
                .filter_map(|s| s.changed_at.take())
                .min();
            if let Some(seen) = seen {
                self.metrics
                    .apply_latency
                    .observe(seen.elapsed().as_secs_f64());
            }
        } else if outcome.plan.environments.is_empty() {
            for s in &mut self.polling.sources {
                s.changed_at = None;
            }
        }
    }

    /// Step: drift is reported once per change, as an event and a log line
    /// (`Drifted`), and a correction as `DriftCorrected` (an event, a log
    /// line and `converge_drift_corrections_total`, per object) for each
    /// environment the pass applied; an environment whose apply failed (or
    /// that the plan left alone) keeps its drift. Keeps the drift the
    /// state store must now hold in the observation, for the commit.
    fn observe_drift(&mut self, obs: &mut Observation) {
        let (outcome, events) = (&obs.outcome, &mut obs.events);
        let applied: BTreeSet<&str> = outcome
            .report
            .iter()
            .flat_map(|r| &r.applied)
            .map(String::as_str)
            .collect();
        // What the plan applied again, of environments applied.
        let mut corrected: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
        for d in outcome
            .plan
            .drift
            .iter()
            .filter(|d| d.corrected && applied.contains(d.environment.as_str()))
        {
            corrected
                .entry(d.environment.as_str())
                .or_default()
                .push((d.object.clone(), d.how.clone()));
        }
        for (name, objects) in &corrected {
            let message = drift_message(objects);
            let text = format!("applied again: {message}");
            tracing::warn!(environment = %name, reason = Reason::DriftCorrected.as_str(), "{text}");
            self.metrics.drift_corrections.inc_by(objects.len() as u64);
            let ev = self.event("Warning", Reason::DriftCorrected.as_str(), Some(name), text);
            events.push(ev);
        }
        // What stands: every finding not corrected by this pass.
        let standing: BTreeMap<String, Vec<(String, String)>> = outcome
            .drift
            .iter()
            .filter_map(|(name, objects)| {
                let fixed = corrected.get(name.as_str());
                let left: Vec<(String, String)> = objects
                    .iter()
                    .filter(|o| fixed.is_none_or(|f| !f.contains(o)))
                    .cloned()
                    .collect();
                (!left.is_empty()).then(|| (name.clone(), left))
            })
            .collect();
        let before = std::mem::take(&mut self.observed.drift_reported);
        for (name, objects) in &standing {
            let message = drift_message(objects);
            if before.get(name) == Some(&message) {
                self.observed.drift_reported.insert(name.clone(), message);
                continue;
            }
            tracing::warn!(environment = %name, reason = Reason::Drifted.as_str(), "{message}");
            let ev = self.event(
                "Warning",
                Reason::Drifted.as_str(),
                Some(name),
                message.clone(),
            );
            events.push(ev);
            self.observed.drift_reported.insert(name.clone(), message);
        }
        // The store keeps the drift of this replica's share: environments
        // outside it (another shard's) are left as they are.
        let in_share = |name: &str| {
            outcome.live.environments.contains_key(name)
                || outcome.evaluation.desired.contains_key(name)
                || outcome.members.is_none()
        };
        let mut changes = Vec::new();
        for (name, objects) in &standing {
            if self.observed.drift_kept.get(name) != Some(objects) {
                changes.push((name.clone(), Some(store::DriftRecord::encode(objects))));
            }
        }
        for name in self.observed.drift_kept.keys() {
            if !standing.contains_key(name) && in_share(name) {
                changes.push((name.clone(), None));
            }
        }
        for (name, record) in &changes {
            match record {
                Some(_) => {
                    self.observed
                        .drift_kept
                        .insert(name.clone(), standing[name].clone());
                }
                None => {
                    self.observed.drift_kept.remove(name);
                }
            }
        }
        obs.drift = changes;
    }

    /// Environments' events also go to the target's own event stream
    /// (Kubernetes Events).
    fn record_in_target(&self, events: &[Event]) {
        let events: Vec<TargetEvent<'_>> = events
            .iter()
            .filter_map(|e| {
                Some(TargetEvent {
                    environment: e.environment.as_deref()?,
                    warning: e.kind == "Warning",
                    reason: &e.reason,
                    message: &e.message,
                })
            })
            .collect();
        if !events.is_empty() {
            self.converge.target.record(&events);
        }
    }

    /// Step: the work counters.
    fn observe_counters(&mut self, obs: &mut Observation) {
        let c = obs.outcome.counters;
        self.metrics.claims_parsed.inc_by(c.parsed as u64);
        self.metrics.claims_validated.inc_by(c.validated as u64);
        self.metrics.claims_authorized.inc_by(c.authorized as u64);
        self.metrics.claims_rendered.inc_by(c.rendered as u64);
        self.metrics.claims_resolved.inc_by(c.resolved as u64);
        self.metrics.secrets_decrypts.inc_by(c.decrypts as u64);
        self.metrics
            .secrets_key_unwraps
            .inc_by(c.key_unwraps as u64);
    }

    /// Step: the shard members the pass planned with (`shards`), for the
    /// view, and this replica's share in the gauges.
    fn observe_shard(&mut self, obs: &mut Observation) {
        let outcome = &obs.outcome;
        self.observed.shard.clone_from(&outcome.members);
        if let Some(m) = &outcome.members {
            let share = outcome
                .evaluation
                .desired
                .keys()
                .chain(outcome.live.environments.keys())
                .collect::<BTreeSet<_>>()
                .len();
            self.metrics
                .shard_members
                .set(i64::try_from(m.live().len()).unwrap_or(i64::MAX));
            self.metrics
                .shard_environments
                .set(i64::try_from(share).unwrap_or(i64::MAX));
        }
    }

    /// Step: every environment's status (rebuilt only where something
    /// changed) and the environment gauges; keeps the names whose status
    /// changed in the observation, for the commit.
    fn observe_statuses(&mut self, obs: &mut Observation) {
        let (outcome, now) = (&obs.outcome, obs.now);
        let failed: BTreeMap<String, (Reason, String)> = outcome
            .report
            .iter()
            .flat_map(|r| &r.failed)
            .map(|(name, f)| (name.clone(), (f.reason(), f.to_string())))
            .collect();
        let applied: &[String] = outcome.report.as_ref().map_or(&[], |r| &r.applied);
        let time = timestamp(now);
        let drifted: BTreeMap<String, String> = if outcome.drift_corrected {
            BTreeMap::new()
        } else {
            outcome
                .drift
                .iter()
                .map(|(name, objects)| (name.clone(), drift_message(objects)))
                .collect()
        };
        let facts = PassFacts {
            pass: self.pacing.pass,
            time: &time,
            evaluation: &outcome.evaluation,
            plan: &outcome.plan,
            applied,
            failed: &failed,
            applying: outcome.report.is_some(),
            live: &outcome.live,
            health: &outcome.health,
            drifted: &drifted,
        };
        let (statuses, touched) = status::statuses(
            &facts,
            &self.observed.statuses,
            self.converge.config.reconcile.history,
        );
        let mut by_type: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        let mut drifted_by_type: BTreeMap<&str, i64> = BTreeMap::new();
        for e in statuses.values() {
            *by_type
                .entry((e.item.env_type.as_str(), e.item.status.as_str()))
                .or_default() += 1;
            if e.item.drifted() {
                *drifted_by_type.entry(e.item.env_type.as_str()).or_default() += 1;
            }
        }
        // Every type present, so a drift that ends reads 0, not absent.
        self.metrics.environments_drifted.clear();
        for (t, _) in by_type.keys() {
            self.metrics
                .environments_drifted
                .get_or_create(&crate::metrics::TypeLabels {
                    r#type: (*t).to_owned(),
                })
                .set(drifted_by_type.get(t).copied().unwrap_or(0));
        }
        self.metrics.environments.clear();
        for ((t, s), n) in by_type {
            self.metrics
                .environments
                .get_or_create(&EnvLabels {
                    r#type: t.to_owned(),
                    status: s.to_owned(),
                })
                .set(n);
        }
        self.observed.statuses = Arc::new(statuses);
        self.pacing.first_pass_done = true;
        obs.touched = touched;
    }

    /// Step: an environment turning `Stalled` (from `Reconciling`, or from a
    /// first apply) is logged and evented once, on the transition; the
    /// event goes to the target's event stream too (a Kubernetes Event on
    /// its Namespace).
    fn observe_stalls(&mut self, obs: &mut Observation) {
        let (before, touched, events) = (&obs.before, &obs.touched, &mut obs.events);
        let mut stalled = Vec::new();
        for name in touched {
            let Some(now) = self.observed.statuses.get(name) else {
                continue;
            };
            if now.item.status != Status::Stalled
                || before
                    .get(name)
                    .is_some_and(|b| b.item.status == Status::Stalled)
            {
                continue;
            }
            let (reason, message) = now
                .item
                .conditions
                .iter()
                .find(|c| c.kind == crate::condition::ConditionType::Stalled)
                .map_or((Reason::Unhealthy, String::new()), |c| {
                    (c.reason, c.message.clone())
                });
            let was = before.get(name).map_or("new", |b| b.item.status.as_str());
            tracing::warn!(environment = %name, reason = %reason, was, "stalled: {message}");
            stalled.push((
                name.clone(),
                format!("stalled ({reason}, was {was}): {message}"),
            ));
        }
        for (name, message) in stalled {
            let ev = self.event("Warning", Status::Stalled.as_str(), Some(&name), message);
            events.push(ev);
        }
    }

    /// When to run again without an input changing: after a backoff when an
    /// apply failed transiently or a service's manifests were unavailable,
    /// at the earliest expiry; otherwise on change.
    fn action_after(&mut self, outcome: &PassOutcome, now: DateTime<Utc>) -> Action {
        let transient = outcome
            .report
            .iter()
            .flat_map(|r| r.failed.values())
            .any(apply::Failure::is_transient)
            // A service's manifests that could not be fetched are tried
            // again after the same backoff, not at the next resync.
            || outcome
                .evaluation
                .keep
                .values()
                .any(|r| {
                    matches!(
                        r,
                        crate::condition::Reason::ManifestsUnavailable
                            // A forge that could not be asked who reviewed a
                            // commit: asked again after the same backoff.
                            | crate::condition::Reason::ReviewUnavailable
                    )
                });
        let retry = if transient {
            Some(self.pacing.apply_backoff.next_delay())
        } else {
            self.pacing.apply_backoff.reset();
            None
        };
        let expiry = outcome
            .evaluation
            .desired
            .values()
            .filter_map(|d| d.expires_at)
            .filter(|at| *at > now)
            .min()
            .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO));
        // A rollout's progress wakes the loop through the target's watches;
        // its timeout passes without any event, so look again then.
        let rolling = outcome.health_deadline;
        match retry.into_iter().chain(expiry).chain(rolling).min() {
            Some(d) => Action::Requeue(d),
            None => Action::AwaitChange,
        }
    }
}
