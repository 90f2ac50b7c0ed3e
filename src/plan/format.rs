//! Plan output: text for terminals, JSON for machines, Markdown for pull
//! request comments. Text and JSON stream to a writer (a cold plan of 10k
//! environments is tens of megabytes); Markdown stops before a comment's size
//! limit.

use std::fmt::Write;

use super::{Change, Plan, StepAction};

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
        "{} to create, {} to update, {} to delete, {} unchanged, {} left as they are (claim refused or unresolved: not applied, not deleted; {} live)",
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
    let fields: std::collections::HashMap<
        (&str, &crate::object::ObjectRef),
        &Vec<crate::diff::FieldChange>,
    > = plan
        .fields
        .iter()
        .map(|f| ((f.environment.as_str(), &f.object), &f.changes))
        .collect();
    let drifted: std::collections::HashMap<(&str, &str), &str> = plan
        .drift
        .iter()
        .filter(|d| d.corrected)
        .map(|d| ((d.environment.as_str(), d.object.as_str()), d.how.as_str()))
        .collect();
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
        for c in &env.secrets {
            let _ = writeln!(out, "    {c}");
        }
        for m in &env.manifests {
            let _ = writeln!(out, "    {m}");
        }
        for step in steps.get(env.name.as_str()).into_iter().flatten() {
            let mark = match step.action {
                StepAction::Create => '+',
                StepAction::Update => '~',
                StepAction::Delete => '-',
            };
            let _ = writeln!(out, "    {mark} {}", step.object);
            let shown = step.object.to_string();
            if let Some(how) = drifted.get(&(env.name.as_str(), shown.as_str())) {
                let _ = writeln!(out, "        drifted: {how}");
            }
            for change in fields
                .get(&(env.name.as_str(), &step.object))
                .into_iter()
                .flat_map(|changes| changes.iter())
            {
                let _ = writeln!(out, "        {change}");
            }
        }
    }
    for (name, why) in &plan.untouched {
        let _ = writeln!(out, "= {name} left as it is ({why})");
    }
    for d in plan.drift.iter().filter(|d| !d.corrected) {
        let _ = writeln!(
            out,
            "! {} {} drifted, not applied again by this plan: {}",
            d.environment, d.object, d.how
        );
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
    markdown_within(plan, MARKDOWN_LIMIT)
}

/// The whole Markdown plan, however long: the daemon splits it over as
/// many pull-request comments as the forge's size limit needs.
#[must_use]
pub fn markdown_unbounded(plan: &Plan) -> String {
    markdown_within(plan, usize::MAX)
}

/// The Markdown plan, stopping (with a line that says so) once it is over
/// `limit` bytes.
fn markdown_within(plan: &Plan, limit: usize) -> String {
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
                .map(ToString::to_string)
                .chain(env.secrets.iter().map(ToString::to_string))
                .chain(env.manifests.iter().map(ToString::to_string))
                .map(|v| format!("`{}`", escape_md(&v)))
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
            if out.len() > limit {
                let _ = writeln!(
                    out,
                    "\n…and more: the plan is too long for a comment; run `converge plan` for all of it."
                );
                return out;
            }
        }
        out.push('\n');
    }
    if !markdown_fields(plan, limit, &mut out) {
        return out;
    }
    if !plan.untouched.is_empty() {
        let _ = writeln!(out, "**Left as they are:**\n");
        for (name, why) in &plan.untouched {
            let _ = writeln!(out, "- `{name}`: {why}");
        }
        out.push('\n');
    }
    if !plan.drift.is_empty() {
        let _ = writeln!(out, "**Drifted from what converge applied:**\n");
        for d in &plan.drift {
            let _ = writeln!(
                out,
                "- `{}` `{}`: {} ({})",
                d.environment,
                escape_md(&d.object),
                escape_md(&d.how),
                if d.corrected {
                    "applied again"
                } else {
                    "not applied again"
                }
            );
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
            if out.len() > limit {
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

/// The field changes of a plan's updates (the target's dry run); false
/// when it stopped at `limit`.
fn markdown_fields(plan: &Plan, limit: usize, out: &mut String) -> bool {
    if !plan.fields.is_empty() {
        let _ = writeln!(
            out,
            "**Field changes** (the target's server-side dry run against what is live):\n"
        );
        for f in &plan.fields {
            let _ = writeln!(
                out,
                "- `{}` `{}`",
                f.environment,
                escape_md(&f.object.to_string())
            );
            for change in &f.changes {
                let _ = writeln!(out, "  - `{}`", escape_md(&change.to_string()));
            }
            if out.len() > limit {
                let _ = writeln!(
                    out,
                    "\n…and more field changes: run `converge plan` for all of them."
                );
                return false;
            }
        }
        out.push('\n');
    }
    true
}

fn escape_md(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('`', "'")
        .replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::super::{ObjectFields, Plan, VersionChange};
    use crate::diff::FieldChange;

    #[test]
    fn the_markdown_plan_shows_field_changes_and_hides_secret_values() {
        let object: crate::object::ObjectRef = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "namespace": "dev-a", "name": "web"
        }))
        .expect("object");
        let plan = Plan {
            fields: vec![ObjectFields {
                environment: "dev-a".to_owned(),
                object,
                changes: vec![
                    FieldChange {
                        path: "spec.replicas".to_owned(),
                        from: Some("1".to_owned()),
                        to: Some("2".to_owned()),
                    },
                    FieldChange {
                        path: "data.password".to_owned(),
                        from: None,
                        to: None,
                    },
                ],
            }],
            ..Plan::default()
        };
        let md = super::markdown_unbounded(&plan);
        assert!(md.contains("**Field changes**"), "{md}");
        assert!(md.contains("  - `spec.replicas: 1 -> 2`"), "{md}");
        assert!(
            md.contains("  - `data.password: changed (value hidden)`"),
            "{md}"
        );
    }

    #[test]
    fn version_changes_read_like_the_product_brief() {
        let v = VersionChange {
            service: "user-service".into(),
            from: Some("1.2.3".into()),
            to: Some("1.2.4".into()),
            constraint: Some("^1.0.0.0".into()),
            dependency_of: Vec::new(),
        };
        assert_eq!(v.to_string(), "user-service 1.2.3 -> 1.2.4 (^1.0.0.0)");
        let dep = VersionChange {
            service: "billing".into(),
            from: None,
            to: Some("1.4.0".into()),
            constraint: Some("^1.0.0".into()),
            dependency_of: vec!["checkout".into()],
        };
        assert_eq!(
            dep.to_string(),
            "billing (none) -> 1.4.0 (^1.0.0, dependency of checkout)"
        );
    }
}
