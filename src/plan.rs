//! Stage 7, plan: diffs -> an ordered plan, held when it deletes too much.
//!
//! Pure. Environments are created or updated Namespace-first and deleted in
//! the reverse order; a live environment that no valid claim asks for is
//! deleted (`Unclaimed`), one whose claim expired is deleted (`Expired`), and
//! one in the evaluation's keep set is never touched. The mass-deletion gate
//! holds the whole plan when it would delete more than
//! `safety.max_delete_fraction` of the live environments, or all of them,
//! unless this run explicitly allows it. Rendered as text, JSON or Markdown.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use serde::Serialize;

use crate::diagnostic::Diagnostic;
use crate::diff::diff;
use crate::pipeline::Evaluation;
use crate::render::{kind_rank, object_file_name};
use crate::status::reason;
use crate::target::Inventory;
use rayon::prelude::*;

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
/// name is shared by its steps, built-in kinds are static, and the file name
/// is derived (serialized as `file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub environment: Arc<str>,
    pub action: StepAction,
    pub kind: crate::render::Kind,
    pub name: Box<str>,
}

impl Step {
    /// The file the manifests target keeps the object in.
    #[must_use]
    pub fn file(&self) -> String {
        object_file_name(&self.kind, &self.name)
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Step", 5)?;
        st.serialize_field("environment", &*self.environment)?;
        st.serialize_field("action", &self.action)?;
        st.serialize_field("kind", &*self.kind)?;
        st.serialize_field("name", &*self.name)?;
        st.serialize_field("file", &self.file())?;
        st.end()
    }
}

/// A service whose deployed version changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VersionChange {
    pub service: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub constraint: Option<String>,
}

impl std::fmt::Display for VersionChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let from = self.from.as_deref().unwrap_or("(none)");
        let to = self.to.as_deref().unwrap_or("(removed)");
        write!(f, "{} {from} -> {to}", self.service)?;
        if let Some(c) = &self.constraint
            && Some(c) != self.to.as_ref()
        {
            write!(f, " ({c})")?;
        }
        Ok(())
    }
}

/// The plan for one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EnvironmentPlan {
    pub name: String,
    pub change: Change,
    /// Why (for deletions: `Expired` or `Unclaimed`).
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub versions: Vec<VersionChange>,
    pub creates: usize,
    pub updates: usize,
    pub deletes: usize,
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
    pub untouched: BTreeMap<String, String>,
    pub unchanged: usize,
    pub live: usize,
    pub hold: Option<Hold>,
    pub diagnostics: Vec<Diagnostic>,
    /// Steps left out of `steps` by [`Plan::summarized`] (the daemon's
    /// `/api/v1/plan`); every environment is still listed with its counts.
    #[serde(skip_serializing_if = "is_zero")]
    pub steps_omitted: usize,
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

/// Builds the plan of an evaluation against the live inventory.
#[must_use]
pub fn build(eval: &Evaluation, live: &Inventory, options: Options) -> Plan {
    let mut plan = Plan {
        live: live.environments.len(),
        diagnostics: eval.diagnostics.clone(),
        ..Plan::default()
    };
    let planned: Vec<Option<Planned>> = eval
        .desired
        .par_iter()
        .map(|(name, desired)| plan_environment(name, desired, live.environments.get(name)))
        .collect();
    // Sized once: a cold plan of 10k environments has ~400k steps.
    let (n_upserts, n_deletes) = planned
        .iter()
        .flatten()
        .fold((0, 0), |(u, d), p| (u + p.1.len(), d + p.2.len()));
    let mut upserts = Vec::with_capacity(n_upserts);
    let mut deletes = Vec::with_capacity(n_deletes);
    for p in planned {
        match p {
            Some((env, u, d)) => {
                plan.environments.push(env);
                upserts.extend(u);
                deletes.extend(d);
            }
            None => plan.unchanged += 1,
        }
    }
    for (name, env) in &live.environments {
        if eval.desired.contains_key(name) {
            continue;
        }
        if let Some(why) = eval.keep.get(name) {
            plan.untouched.insert(name.clone(), (*why).to_owned());
            continue;
        }
        let why = if eval.expired.contains_key(name) {
            reason::EXPIRED
        } else {
            reason::UNCLAIMED
        };
        let environment: Arc<str> = Arc::from(name.as_str());
        for l in env.objects.values() {
            deletes.push(Step {
                environment: environment.clone(),
                action: StepAction::Delete,
                kind: l.kind.clone(),
                name: l.name.clone(),
            });
        }
        plan.environments.push(EnvironmentPlan {
            name: name.clone(),
            change: Change::Delete,
            reason: why.to_owned(),
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
                })
                .collect(),
            creates: 0,
            updates: 0,
            deletes: env.objects.len(),
        });
    }
    for (name, why) in &eval.keep {
        plan.untouched
            .entry(name.clone())
            .or_insert_with(|| (*why).to_owned());
    }
    plan.environments.sort_by(|a, b| a.name.cmp(&b.name));
    // Keys are unique per object, so an unstable sort (no buffer) is exact.
    upserts.par_sort_unstable_by(|a, b| {
        (kind_rank(&a.kind), &a.environment, &a.kind, &a.name).cmp(&(
            kind_rank(&b.kind),
            &b.environment,
            &b.kind,
            &b.name,
        ))
    });
    deletes.par_sort_unstable_by(|a, b| {
        (
            Reverse(kind_rank(&a.kind)),
            &a.environment,
            &a.kind,
            &a.name,
        )
            .cmp(&(
                Reverse(kind_rank(&b.kind)),
                &b.environment,
                &b.kind,
                &b.name,
            ))
    });
    plan.steps = upserts;
    plan.steps.extend(deletes);
    plan.hold = gate(plan.count(Change::Delete), plan.live, options);
    plan
}

/// An environment's plan with its create/update steps and its delete steps.
type Planned = (EnvironmentPlan, Vec<Step>, Vec<Step>);

/// One desired environment's plan against its live state; `None` when unchanged.
fn plan_environment(
    name: &str,
    desired: &crate::pipeline::Desired,
    live: Option<&Arc<crate::target::LiveEnvironment>>,
) -> Option<Planned> {
    if let Some(l) = live
        && desired.in_sync.is(l)
    {
        return None; // neither changed since the last plan found them equal
    }
    let current = live.map(AsRef::as_ref);
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    let d = diff(&desired.objects, current);
    let record_changed = current.is_none_or(|c| c.record != desired.record);
    if d.is_empty() && !record_changed {
        if let Some(l) = live {
            desired.in_sync.set(l);
        }
        return None;
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
            });
        }
    }
    let environment: Arc<str> = Arc::from(name);
    let step = |action, o: &crate::render::Object| Step {
        environment: environment.clone(),
        action,
        kind: o.kind.clone(),
        name: o.name.clone(),
    };
    upserts.extend(d.creates.iter().map(|o| step(StepAction::Create, o)));
    upserts.extend(d.updates.iter().map(|o| step(StepAction::Update, o)));
    for file in &d.deletes {
        let l = &current
            .expect("deletes come from a live environment")
            .objects[file];
        deletes.push(Step {
            environment: environment.clone(),
            action: StepAction::Delete,
            kind: l.kind.clone(),
            name: l.name.clone(),
        });
    }
    let env = EnvironmentPlan {
        name: name.to_owned(),
        change: if current.is_some() {
            Change::Update
        } else {
            Change::Create
        },
        reason: if current.is_some() {
            "ClaimChanged"
        } else {
            "Claimed"
        }
        .to_owned(),
        source: Some(desired.origin.path.clone()),
        versions,
        creates: d.creates.len(),
        updates: d.updates.len(),
        deletes: d.deletes.len(),
    };
    Some((env, upserts, deletes))
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
            "the plan deletes {deletions} of {live} environments ({what}), over safety.max_delete_fraction {}; nothing is applied until a run allows it (--allow-mass-delete)",
            options.max_delete_fraction
        ),
    })
}

/// Output formats of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

/// Renders a plan in a format.
#[must_use]
pub fn format(plan: &Plan, format: Format) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(plan).expect("a plan serializes");
            s.push('\n');
            s
        }
        Format::Text => {
            let mut out = String::new();
            text(plan, &mut out);
            out
        }
        Format::Markdown => markdown(plan),
    }
}

/// Writes a plan in a format to `out`, streaming: a cold plan of 10k
/// environments is tens of megabytes of text or JSON.
///
/// # Errors
/// When `out` fails (a closed pipe, a full disk).
pub fn write(plan: &Plan, format: Format, out: &mut impl std::io::Write) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, plan)?;
            out.write_all(b"\n")
        }
        Format::Text => {
            let mut adapter = IoText { out, error: None };
            text(plan, &mut adapter);
            adapter.error.map_or(Ok(()), Err)
        }
        Format::Markdown => out.write_all(markdown(plan).as_bytes()),
    }
}

/// `fmt::Write` onto an `io::Write`, keeping the first IO error.
struct IoText<'a, W> {
    out: &'a mut W,
    error: Option<std::io::Error>,
}

impl<W: std::io::Write> std::fmt::Write for IoText<'_, W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.error.is_some() {
            return Err(std::fmt::Error);
        }
        self.out.write_all(s.as_bytes()).map_err(|e| {
            self.error = Some(e);
            std::fmt::Error
        })
    }
}

/// One line: how many environments each action touches.
#[must_use]
pub fn summary(plan: &Plan) -> String {
    format!(
        "{} to create, {} to update, {} to delete, {} unchanged, {} untouched ({} live)",
        plan.count(Change::Create),
        plan.count(Change::Update),
        plan.count(Change::Delete),
        plan.unchanged,
        plan.untouched.len(),
        plan.live
    )
}

fn sign(c: Change) -> char {
    match c {
        Change::Create => '+',
        Change::Update => '~',
        Change::Delete => '-',
    }
}

fn text(plan: &Plan, out: &mut impl Write) {
    let _ = writeln!(out, "Plan: {}", summary(plan));
    if let Some(hold) = &plan.hold {
        let _ = writeln!(out, "HELD: {}", hold.message);
    }
    let steps = plan.steps_by_environment();
    for env in &plan.environments {
        let _ = write!(out, "{} {} ({})", sign(env.change), env.name, env.reason);
        if let Some(s) = &env.source {
            let _ = write!(out, " from {s}");
        }
        let _ = writeln!(
            out,
            ": {} create, {} update, {} delete",
            env.creates, env.updates, env.deletes
        );
        for v in &env.versions {
            let _ = writeln!(out, "    {v}");
        }
        for step in steps.get(env.name.as_str()).into_iter().flatten() {
            let mark = match step.action {
                StepAction::Create => '+',
                StepAction::Update => '~',
                StepAction::Delete => '-',
            };
            let _ = writeln!(out, "    {mark} {}/{}", step.kind, step.name);
        }
    }
    for (name, why) in &plan.untouched {
        let _ = writeln!(out, "= {name} left as it is ({why})");
    }
    if !plan.diagnostics.is_empty() {
        let _ = writeln!(out, "Diagnostics:");
        for d in &plan.diagnostics {
            let _ = writeln!(out, "  {d}");
        }
    }
}

/// GitHub and GitLab comments stop at 65,535 characters.
const MARKDOWN_LIMIT: usize = 60_000;

fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### converge plan\n\n**{}**\n", summary(plan));
    if let Some(hold) = &plan.hold {
        let _ = writeln!(
            out,
            "> [!WARNING]\n> **Held:** {}\n",
            escape_md(&hold.message)
        );
    }
    if !plan.environments.is_empty() {
        let _ = writeln!(
            out,
            "| | environment | reason | objects | versions |\n|---|---|---|---|---|"
        );
        for env in &plan.environments {
            let versions: Vec<String> = env
                .versions
                .iter()
                .map(|v| format!("`{}`", escape_md(&v.to_string())))
                .collect();
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | +{} ~{} -{} | {} |",
                sign(env.change),
                env.name,
                env.reason,
                env.creates,
                env.updates,
                env.deletes,
                versions.join("<br>")
            );
            if out.len() > MARKDOWN_LIMIT {
                let _ = writeln!(
                    out,
                    "\n…and more: the plan is too long for a comment; run `converge plan` for all of it."
                );
                return out;
            }
        }
        out.push('\n');
    }
    if !plan.untouched.is_empty() {
        let _ = writeln!(out, "**Left as they are:**\n");
        for (name, why) in &plan.untouched {
            let _ = writeln!(out, "- `{name}`: {why}");
        }
        out.push('\n');
    }
    if !plan.diagnostics.is_empty() {
        let _ = writeln!(out, "**Problems:**\n");
        for d in &plan.diagnostics {
            let _ = writeln!(
                out,
                "- `{}` `{}`: {} ({})",
                escape_md(&d.file),
                if d.pointer.is_empty() {
                    "/"
                } else {
                    &d.pointer
                },
                escape_md(&d.message),
                d.rule
            );
            if out.len() > MARKDOWN_LIMIT {
                let _ = writeln!(
                    out,
                    "\n…and more problems: run `converge validate` for all of them."
                );
                return out;
            }
        }
    }
    out
}

fn escape_md(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('`', "'")
        .replace(['\n', '\r'], " ")
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

    #[test]
    fn version_changes_read_like_the_product_brief() {
        let v = VersionChange {
            service: "user-service".into(),
            from: Some("1.2.3".into()),
            to: Some("1.2.4".into()),
            constraint: Some("^1.0.0.0".into()),
        };
        assert_eq!(v.to_string(), "user-service 1.2.3 -> 1.2.4 (^1.0.0.0)");
    }
}
