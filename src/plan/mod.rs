//! Stage 7, plan: diffs -> an ordered plan, held when it deletes too much.
//!
//! Pure. Environments are created or updated Namespace-first and deleted in
//! the reverse order; a live environment that no valid claim asks for is
//! deleted (`Unclaimed`), one whose claim expired is deleted (`Expired`), and
//! one in the evaluation's keep set is never touched. The mass-deletion gate
//! holds the whole plan when it would delete more than
//! `safety.max_delete_fraction` of the live environments, or all of them,
//! unless this run explicitly allows it. [`format`](mod@format) writes a plan as text,
//! JSON or Markdown.
//!
//! An environment the last plan found in sync is not diffed again while
//! neither its `Desired` nor its live record changed: the caller keeps that
//! memo ([`InSync`]) between plans.

mod format;

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};

use rayon::prelude::*;
use serde::Serialize;

pub use format::{Format, format, markdown_unbounded, summary, write};

use crate::condition::Reason;
use crate::diagnostic::Diagnostic;
use crate::diff::diff;
use crate::inventory::{Inventory, LiveEnvironment};
use crate::object::{ObjectRef, kind_rank};
use crate::pipeline::{Desired, Evaluation};

/// Knobs of the plan stage.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub max_delete_fraction: f64,
    /// This run allows a plan over the mass-deletion threshold.
    pub allow_mass_delete: bool,
}

/// What happens to one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Create,
    Update,
    Delete,
}

/// One object-level step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepAction {
    Create,
    Update,
    Delete,
}

/// A cold plan of 10k environments holds ~400k of these: the environment
/// name is shared by its steps, and the object's strings are shared
/// ([`crate::object`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    #[serde(serialize_with = "as_str")]
    pub environment: Arc<str>,
    pub action: StepAction,
    #[serde(flatten)]
    pub object: ObjectRef,
}

fn as_str<S: serde::Serializer>(s: &Arc<str>, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s)
}

/// A service whose deployed version changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VersionChange {
    pub service: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub constraint: Option<String>,
    /// The services of the claim this one comes with (catalog dependencies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependency_of: Vec<String>,
}

impl std::fmt::Display for VersionChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let from = self.from.as_deref().unwrap_or("(none)");
        let to = self.to.as_deref().unwrap_or("(removed)");
        write!(f, "{} {from} -> {to}", self.service)?;
        let mut notes = Vec::new();
        if let Some(c) = &self.constraint
            && Some(c) != self.to.as_ref()
        {
            notes.push(c.clone());
        }
        if !self.dependency_of.is_empty() {
            notes.push(format!("dependency of {}", self.dependency_of.join(", ")));
        }
        if !notes.is_empty() {
            write!(f, " ({})", notes.join(", "))?;
        }
        Ok(())
    }
}

/// A service whose manifests artifact changes (issue 23): what was asked
/// for and the digest found, before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ManifestsChange {
    pub service: String,
    pub from: Option<crate::inventory::ManifestsRecord>,
    pub to: Option<crate::inventory::ManifestsRecord>,
}

impl std::fmt::Display for ManifestsChange {
    /// `user-service manifests 1.2.3 -> 1.2.4 (sha256:0a1b2c3d4e5f -> sha256:…)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |d: &str| -> String {
            let hex = d.strip_prefix("sha256:").unwrap_or(d);
            format!("sha256:{}", hex.get(..12).unwrap_or(hex))
        };
        let side = |r: Option<&crate::inventory::ManifestsRecord>, none: &str| {
            r.map_or_else(
                || (none.to_owned(), none.to_owned()),
                |r| (r.reference.clone(), short(&r.digest)),
            )
        };
        let (from, from_digest) = side(self.from.as_ref(), "(none)");
        let (to, to_digest) = side(self.to.as_ref(), "(removed)");
        write!(
            f,
            "{} manifests {from} -> {to} ({from_digest} -> {to_digest})",
            self.service
        )
    }
}

/// The manifests artifacts that change between two records.
fn manifests_changes(
    before: Option<&BTreeMap<String, crate::inventory::ManifestsRecord>>,
    after: Option<&BTreeMap<String, crate::inventory::ManifestsRecord>>,
) -> Vec<ManifestsChange> {
    let empty = BTreeMap::new();
    let (b, a) = (before.unwrap_or(&empty), after.unwrap_or(&empty));
    b.keys()
        .chain(a.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| {
            b.get(*k).map(|r| &r.digest) != a.get(*k).map(|r| &r.digest)
                || b.get(*k).map(|r| &r.reference) != a.get(*k).map(|r| &r.reference)
        })
        .map(|k| ManifestsChange {
            service: k.clone(),
            from: b.get(k).cloned(),
            to: a.get(k).cloned(),
        })
        .collect()
}

/// A secret key whose value changes, shown by keyed fingerprints
/// (`hmac:<16 hex>`), never by value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SecretChange {
    pub key: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl std::fmt::Display for SecretChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let from = self.from.as_deref().unwrap_or("(none)");
        let to = self.to.as_deref().unwrap_or("(removed)");
        write!(f, "secret {} {from} -> {to}", self.key)
    }
}

/// The secret keys whose fingerprints differ between two records.
fn secret_changes(
    before: Option<&BTreeMap<String, String>>,
    after: Option<&BTreeMap<String, String>>,
) -> Vec<SecretChange> {
    let empty = BTreeMap::new();
    let (b, a) = (before.unwrap_or(&empty), after.unwrap_or(&empty));
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| SecretChange {
            key: k.clone(),
            from: b.get(k).cloned(),
            to: a.get(k).cloned(),
        })
        .collect()
}

/// The plan for one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EnvironmentPlan {
    pub name: String,
    pub change: Change,
    /// Why: `Claimed`, `ClaimChanged`, `TagsChanged`, `DriftCorrected`,
    /// `Expired` or `Unclaimed`.
    pub reason: Reason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub versions: Vec<VersionChange>,
    /// Secret keys whose values change (by fingerprint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretChange>,
    /// Services whose manifests artifact changes (by digest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<ManifestsChange>,
    pub creates: usize,
    pub updates: usize,
    pub deletes: usize,
}

/// The fields one updated object would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectFields {
    pub environment: String,
    #[serde(flatten)]
    pub object: ObjectRef,
    pub changes: Vec<crate::diff::FieldChange>,
}

/// Why a plan is not applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hold {
    pub deletions: usize,
    pub live: usize,
    pub max_delete_fraction: f64,
    pub message: String,
}

/// An ordered plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// Environments that change, by name.
    pub environments: Vec<EnvironmentPlan>,
    /// Object steps in apply order: creates/updates Namespace-first, then deletions in reverse.
    pub steps: Vec<Step>,
    /// Environments left exactly as they are, with the reason.
    pub untouched: BTreeMap<String, Reason>,
    pub unchanged: usize,
    pub live: usize,
    pub hold: Option<Hold>,
    pub diagnostics: Vec<Diagnostic>,
    /// For updated objects, the fields that change (a server-side dry run;
    /// `converge plan` against a target that can tell).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<ObjectFields>,
    /// Steps left out of `steps` by [`Plan::summarized`] (the daemon's
    /// `/api/v1/plan`); every environment is still listed with its counts.
    #[serde(skip_serializing_if = "is_zero")]
    pub steps_omitted: usize,
    /// Objects that drifted from what converge applied, as the target found
    /// them (its watches, or one listing per kind): corrected by this plan
    /// (`drift: correct`) or only reported.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<ObjectDrift>,
}

/// One object that drifted from what converge applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectDrift {
    pub environment: String,
    /// `Kind/name`.
    pub object: String,
    /// How: `deleted`, or `edited: <fields> (by <managers>)`.
    pub how: String,
    /// The plan applies it again (`drift: correct`).
    pub corrected: bool,
}

/// Drifted objects per environment, as the target found them: `Kind/name`
/// and how.
pub type Drift = BTreeMap<String, Vec<(String, String)>>;

/// Marks what the target found drifted: an update that only applies drifted
/// objects again (the claim and record as they were, no object created or
/// deleted) has the reason `DriftCorrected`, not `ClaimChanged`; every
/// drifted object is listed in [`Plan::drift`], corrected when the plan
/// updates it. Only the target's own drift list counts: an object listed
/// with a pending digest because its last write failed is no drift.
pub fn mark_drift(plan: &mut Plan, eval: &Evaluation, live: &Inventory, drift: &Drift) {
    if drift.is_empty() {
        return;
    }
    let mut updated: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (env, steps) in &plan.steps_by_environment() {
        updated.insert(
            (*env).to_owned(),
            steps
                .iter()
                .filter(|s| s.action == StepAction::Update)
                .map(|s| s.object.to_string())
                .collect(),
        );
    }
    let mut listed = Vec::new();
    for (name, objects) in drift {
        let in_plan = updated.get(name);
        for (object, how) in objects {
            listed.push(ObjectDrift {
                environment: name.clone(),
                object: object.clone(),
                how: how.clone(),
                corrected: in_plan.is_some_and(|u| u.contains(object)),
            });
        }
    }
    for env in &mut plan.environments {
        let Some(objects) = drift.get(&env.name) else {
            continue;
        };
        let same_record = matches!(
            (eval.desired.get(&env.name), live.environments.get(&env.name)),
            (Some(d), Some(l)) if d.record == l.record
        );
        let only_drifted = updated.get(&env.name).is_some_and(|u| {
            !u.is_empty() && u.iter().all(|o| objects.iter().any(|(d, _)| d == o))
        });
        if env.change == Change::Update
            && same_record
            && env.creates == 0
            && env.deletes == 0
            && only_drifted
        {
            env.reason = Reason::DriftCorrected;
        }
    }
    plan.drift = listed;
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Plan {
    /// The plan with at most `max_steps` object steps: what the daemon keeps
    /// and serves as its last plan. A cold start of 10k environments plans
    /// ~400k steps (tens of megabytes of JSON); each environment's counts,
    /// and its own detail, say what it changed.
    #[must_use]
    pub fn summarized(mut self, max_steps: usize) -> Plan {
        if self.steps.len() > max_steps {
            self.steps_omitted += self.steps.len() - max_steps;
            self.steps.truncate(max_steps);
            self.steps.shrink_to_fit();
        }
        self
    }

    #[must_use]
    pub fn has_changes(&self) -> bool {
        !self.environments.is_empty()
    }

    /// The steps of each environment, in plan order.
    #[must_use]
    pub fn steps_by_environment(&self) -> BTreeMap<&str, Vec<&Step>> {
        let mut by_env: BTreeMap<&str, Vec<&Step>> = BTreeMap::new();
        for step in &self.steps {
            by_env.entry(&*step.environment).or_default().push(step);
        }
        by_env
    }

    fn count(&self, change: Change) -> usize {
        self.environments
            .iter()
            .filter(|e| e.change == change)
            .count()
    }
}

/// The environments a plan found identical to their live record, kept by the
/// caller between plans: while an environment's `Desired` and live record
/// are the same allocations, the next plan skips its object diff. Weak
/// references keep nothing alive, and an address cannot be reused while one
/// is held.
#[derive(Debug, Default)]
pub struct InSync {
    seen: HashMap<String, (Weak<Desired>, Weak<LiveEnvironment>)>,
}

impl InSync {
    /// Whether the last plan found `desired` identical to `live`, and
    /// neither changed since.
    #[must_use]
    pub fn is(&self, name: &str, desired: &Arc<Desired>, live: &Arc<LiveEnvironment>) -> bool {
        self.seen.get(name).is_some_and(|(d, l)| {
            std::ptr::eq(d.as_ptr(), Arc::as_ptr(desired))
                && std::ptr::eq(l.as_ptr(), Arc::as_ptr(live))
        })
    }
}

/// What planning one desired environment found.
enum Planned {
    /// Identical to its live record (`true`: found so by this diff, not by the memo).
    InSync(bool),
    /// Its plan, its create/update steps and its delete steps.
    Changes(EnvironmentPlan, Vec<Step>, Vec<Step>),
}

/// Builds the plan of an evaluation against the live inventory, skipping
/// the diff of environments `in_sync` remembers, and remembering those
/// found in sync now.
#[must_use]
pub fn build(eval: &Evaluation, live: &Inventory, options: Options, in_sync: &mut InSync) -> Plan {
    let mut plan = Plan {
        live: live.environments.len(),
        diagnostics: eval.diagnostics.clone(),
        ..Plan::default()
    };
    let memo = &*in_sync;
    let planned: Vec<(&String, Planned)> = eval
        .desired
        .par_iter()
        .map(|(name, desired)| {
            let live = live.environments.get(name);
            let planned = match live {
                Some(l) if memo.is(name, desired, l) => Planned::InSync(false),
                _ => plan_environment(name, desired, live.map(AsRef::as_ref)),
            };
            (name, planned)
        })
        .collect();
    // Sized once: a cold plan of 10k environments has ~400k steps.
    let (n_upserts, n_deletes) = planned.iter().fold((0, 0), |(u, d), (_, p)| match p {
        Planned::Changes(_, us, ds) => (u + us.len(), d + ds.len()),
        Planned::InSync(_) => (u, d),
    });
    let mut upserts = Vec::with_capacity(n_upserts);
    let mut deletes = Vec::with_capacity(n_deletes);
    for (name, p) in planned {
        match p {
            Planned::Changes(env, u, d) => {
                plan.environments.push(env);
                upserts.extend(u);
                deletes.extend(d);
            }
            Planned::InSync(found_now) => {
                plan.unchanged += 1;
                if found_now && let Some(l) = live.environments.get(name) {
                    let d = &eval.desired[name];
                    in_sync
                        .seen
                        .insert(name.clone(), (Arc::downgrade(d), Arc::downgrade(l)));
                }
            }
        }
    }
    if in_sync.seen.len() > eval.desired.len() {
        in_sync
            .seen
            .retain(|name, _| eval.desired.contains_key(name));
    }
    for (name, env) in &live.environments {
        if eval.desired.contains_key(name) {
            continue;
        }
        if let Some(why) = eval.keep.get(name) {
            plan.untouched.insert(name.clone(), *why);
            continue;
        }
        let why = if eval.expired.contains_key(name) {
            Reason::Expired
        } else {
            Reason::Unclaimed
        };
        plan.environments
            .push(plan_deletion(name, env, why, &mut deletes));
    }
    for (name, why) in &eval.keep {
        plan.untouched.entry(name.clone()).or_insert(*why);
    }
    plan.environments.sort_by(|a, b| a.name.cmp(&b.name));
    // Keys are unique per object, so an unstable sort (no buffer) is exact.
    upserts.par_sort_unstable_by(|a, b| {
        (kind_rank(&a.object.kind), &a.environment, &a.object).cmp(&(
            kind_rank(&b.object.kind),
            &b.environment,
            &b.object,
        ))
    });
    deletes.par_sort_unstable_by(|a, b| {
        (
            Reverse(kind_rank(&a.object.kind)),
            &a.environment,
            &a.object,
        )
            .cmp(&(
                Reverse(kind_rank(&b.object.kind)),
                &b.environment,
                &b.object,
            ))
    });
    plan.steps = upserts;
    plan.steps.extend(deletes);
    plan.hold = gate(plan.count(Change::Delete), plan.live, options).map(|mut hold| {
        hold.message = format!("{} (held: {})", hold.message, held_by_source(&plan, live));
        hold
    });
    plan
}

/// The deletions a hold holds, counted per source: `3 of source "a", …`.
fn held_by_source(plan: &Plan, live: &Inventory) -> String {
    let mut by_source: BTreeMap<&str, usize> = BTreeMap::new();
    for env in plan
        .environments
        .iter()
        .filter(|e| e.change == Change::Delete)
    {
        let source = live
            .environments
            .get(&env.name)
            .and_then(|l| l.record.origin.as_ref())
            .map_or("an unknown source", |o| o.source.as_str());
        *by_source.entry(source).or_default() += 1;
    }
    by_source
        .iter()
        .map(|(s, n)| format!("{n} of source {s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A live environment that no claim asks for: every object deleted.
fn plan_deletion(
    name: &str,
    env: &LiveEnvironment,
    why: Reason,
    deletes: &mut Vec<Step>,
) -> EnvironmentPlan {
    let environment: Arc<str> = Arc::from(name);
    deletes.extend(env.objects.keys().map(|id| Step {
        environment: environment.clone(),
        action: StepAction::Delete,
        object: id.clone(),
    }));
    EnvironmentPlan {
        name: name.to_owned(),
        change: Change::Delete,
        reason: why,
        source: env.record.origin.as_ref().map(|o| o.path.clone()),
        versions: env
            .record
            .versions
            .iter()
            .map(|(s, v)| VersionChange {
                service: s.clone(),
                from: Some(v.tag.clone()),
                to: None,
                constraint: None,
                dependency_of: Vec::new(),
            })
            .collect(),
        secrets: secret_changes(Some(&env.record.secrets), None),
        manifests: manifests_changes(Some(&env.record.manifests), None),
        creates: 0,
        updates: 0,
        deletes: env.objects.len(),
    }
}

/// True when two records differ in resolved tags only: the same services at
/// the same constraints (what a newly published tag changes).
fn only_tags_changed(
    live: &crate::inventory::EnvironmentRecord,
    desired: &crate::inventory::EnvironmentRecord,
) -> bool {
    let same_constraints = live.versions.len() == desired.versions.len()
        && live
            .versions
            .iter()
            .zip(&desired.versions)
            .all(|((a, x), (b, y))| {
                a == b && x.constraint == y.constraint && x.dependency_of == y.dependency_of
            });
    let others_same = live.origin == desired.origin
        && live.env_type == desired.env_type
        && live.pool == desired.pool
        && live.owner == desired.owner
        && live.expires_at == desired.expires_at;
    same_constraints && others_same && live.versions != desired.versions
}

/// One desired environment's plan against its live state.
fn plan_environment(name: &str, desired: &Desired, current: Option<&LiveEnvironment>) -> Planned {
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    let d = diff(&desired.objects, current);
    let record_changed = current.is_none_or(|c| c.record != desired.record);
    if d.is_empty() && !record_changed {
        return Planned::InSync(true);
    }
    let before = current.map(|c| &c.record.versions);
    let mut versions = Vec::new();
    for (service, r) in &desired.record.versions {
        let from = before.and_then(|b| b.get(service)).map(|v| v.tag.clone());
        if from.as_ref() != Some(&r.tag) {
            versions.push(VersionChange {
                service: service.clone(),
                from,
                to: Some(r.tag.clone()),
                constraint: Some(r.constraint.clone()),
                dependency_of: r.dependency_of.clone(),
            });
        }
    }
    for (service, v) in before.into_iter().flatten() {
        if !desired.record.versions.contains_key(service) {
            versions.push(VersionChange {
                service: service.clone(),
                from: Some(v.tag.clone()),
                to: None,
                constraint: None,
                dependency_of: Vec::new(),
            });
        }
    }
    let environment: Arc<str> = Arc::from(name);
    let step = |action, id: &ObjectRef| Step {
        environment: environment.clone(),
        action,
        object: id.clone(),
    };
    upserts.extend(d.creates.iter().map(|id| step(StepAction::Create, id)));
    upserts.extend(d.updates.iter().map(|id| step(StepAction::Update, id)));
    deletes.extend(d.deletes.iter().map(|id| step(StepAction::Delete, id)));
    let env = EnvironmentPlan {
        name: name.to_owned(),
        change: if current.is_some() {
            Change::Update
        } else {
            Change::Create
        },
        reason: if current.is_some_and(|c| only_tags_changed(&c.record, &desired.record)) {
            Reason::TagsChanged
        } else if current.is_some() {
            Reason::ClaimChanged
        } else {
            Reason::Claimed
        },
        source: Some(desired.origin.path.clone()),
        versions,
        secrets: secret_changes(
            current.map(|c| &c.record.secrets),
            Some(&desired.record.secrets),
        ),
        manifests: manifests_changes(
            current.map(|c| &c.record.manifests),
            Some(&desired.record.manifests),
        ),
        creates: d.creates.len(),
        updates: d.updates.len(),
        deletes: d.deletes.len(),
    };
    Planned::Changes(env, upserts, deletes)
}

/// The mass-deletion gate.
fn gate(deletions: usize, live: usize, options: Options) -> Option<Hold> {
    if deletions == 0 || options.allow_mass_delete {
        return None;
    }
    let all = deletions >= live;
    let fraction = deletions as f64 / live.max(1) as f64;
    if !all && fraction <= options.max_delete_fraction {
        return None;
    }
    let what = if all {
        "every live environment".to_owned()
    } else {
        format!("{:.0}% of the live environments", fraction * 100.0)
    };
    Some(Hold {
        deletions,
        live,
        max_delete_fraction: options.max_delete_fraction,
        message: format!(
            "the plan deletes {deletions} of {live} environments ({what}), over safety.max_delete_fraction {}; these deletions wait until a run allows them (--allow-mass-delete), creates and updates go ahead",
            options.max_delete_fraction
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_holds_over_the_fraction_and_all() {
        let opts = Options {
            max_delete_fraction: 0.2,
            allow_mass_delete: false,
        };
        assert!(gate(0, 10, opts).is_none());
        assert!(gate(2, 10, opts).is_none());
        assert!(gate(3, 10, opts).is_some());
        assert!(
            gate(
                1,
                1,
                Options {
                    max_delete_fraction: 1.0,
                    allow_mass_delete: false
                }
            )
            .is_some()
        );
        assert!(
            gate(
                10,
                10,
                Options {
                    allow_mass_delete: true,
                    ..opts
                }
            )
            .is_none()
        );
    }
}
