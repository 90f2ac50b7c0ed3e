//! The verdict on a pull request's plan: the `<context>/plan` commit
//! status. Pure.
//!
//! Success when every claim file the pull request changes is valid,
//! authorized and would apply (the target's dry run refused none of its
//! objects) and the plan is not held; otherwise failure, naming the first
//! problem (the hold first: nothing of a held plan applies), with the full
//! list for the comment. Claims the pull request leaves alone do not fail
//! it: their problems are the branch's, shown in the plan.

use std::collections::{BTreeMap, BTreeSet};

use crate::condition::Reason;
use crate::pipeline::Evaluation;
use crate::plan::{self, Plan};
use crate::source::Snapshot;

/// The most characters a status description holds on every forge
/// (GitHub's limit; Gitea and GitLab take more).
pub const DESCRIPTION_LIMIT: usize = 140;

/// A commit status' state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Success,
    Failure,
}

impl State {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            State::Success => "success",
            State::Failure => "failure",
        }
    }
}

/// One thing that stops the pull request's change from applying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Why, as the environment's condition would say it.
    pub reason: Reason,
    /// What: the file, JSON pointer, message and rule of the diagnostic;
    /// the hold's message; or the environment and the target's refusal.
    pub what: String,
}

impl Finding {
    /// The kind of problem in words: `invalid claim`, `policy denial`, ...
    #[must_use]
    pub fn kind(&self) -> &'static str {
        kind(self.reason)
    }
}

/// The plan status of a pull request's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub state: State,
    /// Every problem, the first one first.
    pub findings: Vec<Finding>,
    /// On success, what merging changes (`1 to create, 2 to update, ...`).
    pub summary: String,
}

/// The claim files `head` adds or changes against `base` (by content
/// digest): the claims the pull request asks to apply.
#[must_use]
pub fn changed_files(base: &Snapshot, head: &Snapshot) -> BTreeSet<String> {
    let before: BTreeMap<&str, &[u8; 32]> = base
        .files
        .iter()
        .map(|f| (f.path.as_str(), &f.digest))
        .collect();
    head.files
        .iter()
        .filter(|f| before.get(f.path.as_str()) != Some(&&f.digest))
        .map(|f| f.path.clone())
        .collect()
}

/// The verdict on a pull request's plan: `evaluation` is the head's,
/// `changed` the files it changes ([`changed_files`]), `refused` what the
/// target's dry run refused, by environment (reason and message).
#[must_use]
pub fn verdict(
    plan: &Plan,
    evaluation: &Evaluation,
    changed: &BTreeSet<String>,
    refused: &BTreeMap<String, (Reason, String)>,
) -> Verdict {
    let mut findings = Vec::new();
    if let Some(hold) = &plan.hold {
        findings.push(Finding {
            reason: Reason::MassDeletionHeld,
            what: hold.message.clone(),
        });
    }
    for d in evaluation
        .diagnostics
        .iter()
        .filter(|d| changed.contains(&d.file))
    {
        findings.push(Finding {
            reason: reason_of(evaluation, d.environment.as_deref()),
            what: d.to_string(),
        });
    }
    for (environment, (reason, message)) in refused {
        findings.push(Finding {
            reason: *reason,
            what: format!("environment {environment}: {message}"),
        });
    }
    let state = if findings.is_empty() {
        State::Success
    } else {
        State::Failure
    };
    Verdict {
        state,
        findings,
        summary: format!(
            "{} to create, {} to update, {} to delete",
            count(plan, plan::Change::Create),
            count(plan, plan::Change::Update),
            count(plan, plan::Change::Delete)
        ),
    }
}

fn count(plan: &Plan, change: plan::Change) -> usize {
    plan.environments
        .iter()
        .filter(|e| e.change == change)
        .count()
}

/// Why a diagnostic's environment is not applied: what the evaluation keeps
/// it for, else its first condition; a file naming no valid environment is
/// an invalid claim.
fn reason_of(evaluation: &Evaluation, environment: Option<&str>) -> Reason {
    let Some(name) = environment else {
        return Reason::ClaimInvalid;
    };
    evaluation
        .keep
        .get(name)
        .copied()
        .or_else(|| {
            evaluation
                .conditions
                .get(name)
                .and_then(|c| c.first())
                .map(|c| c.reason)
        })
        .unwrap_or(Reason::ClaimInvalid)
}

/// A reason in the words of the pull-request status.
fn kind(reason: Reason) -> &'static str {
    match reason {
        Reason::PolicyDenied => "policy denial",
        Reason::MassDeletionHeld => "mass-deletion hold",
        Reason::VersionUnresolved | Reason::ResolvedTagMissing => "unresolvable version",
        Reason::SecretsTampered => "tampered secret",
        Reason::SecretsUnavailable | Reason::SecretsUnsupported => "secrets cannot be opened",
        Reason::SignatureRequired => "unsigned commit",
        Reason::DuplicateEnvironment | Reason::NameTaken => "conflicting claim",
        Reason::LimitExceeded => "limit exceeded",
        Reason::RenderFailed | Reason::ManifestsUnavailable => "cannot render",
        Reason::ClaimInvalid => "invalid claim",
        _ => "would not apply",
    }
}

impl Verdict {
    /// The status description: on success what merging changes; on failure
    /// the first problem and how many more, at most [`DESCRIPTION_LIMIT`]
    /// characters.
    #[must_use]
    pub fn description(&self) -> String {
        let Some(first) = self.findings.first() else {
            return cut(&format!("plan: {}", self.summary), DESCRIPTION_LIMIT);
        };
        let more = match self.findings.len() - 1 {
            0 => String::new(),
            n => format!(" (+{n} more, see the comment)"),
        };
        let room = DESCRIPTION_LIMIT.saturating_sub(more.chars().count());
        let head = cut(&format!("{}: {}", first.kind(), first.what), room);
        format!("{head}{more}")
    }
}

/// `s` in at most `max` characters, `…` marking a cut.
fn cut(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::{Condition, ConditionType};
    use crate::diagnostic::Diagnostic;
    use crate::source::{Content, Revision, SourceFile, SourceKind};

    fn file(path: &str, digest: u8) -> SourceFile {
        SourceFile {
            path: path.to_owned(),
            content: Content::Bytes(bytes::Bytes::new()),
            digest: [digest; 32],
            provenance: None,
            notice: None,
        }
    }

    fn snapshot(files: Vec<SourceFile>) -> Snapshot {
        Snapshot {
            source: "claims".to_owned(),
            kind: SourceKind::Git,
            is_static: false,
            revision: Revision(String::new()),
            files,
        }
    }

    fn denied(file: &str, env: &str) -> (Diagnostic, Reason) {
        (
            Diagnostic::new(file, "", "policy", "denied by policy forbid-sue-ai")
                .for_environment(Some(env)),
            Reason::PolicyDenied,
        )
    }

    fn evaluation(problems: &[(Diagnostic, Reason)]) -> Evaluation {
        let mut eval = Evaluation::default();
        for (d, reason) in problems {
            if let Some(env) = &d.environment {
                eval.keep.insert(env.clone(), *reason);
                eval.conditions
                    .entry(env.clone())
                    .or_default()
                    .push(Condition::problem(
                        ConditionType::Invalid,
                        *reason,
                        d.message.clone(),
                    ));
            }
            eval.diagnostics.push(d.clone());
        }
        eval
    }

    #[test]
    fn changed_files_are_new_or_of_other_content() {
        let base = snapshot(vec![
            file("a.yaml", 1),
            file("b.yaml", 2),
            file("gone.yaml", 3),
        ]);
        let head = snapshot(vec![
            file("a.yaml", 1),
            file("b.yaml", 9),
            file("new.yaml", 4),
        ]);
        let changed = changed_files(&base, &head);
        assert_eq!(
            changed.into_iter().collect::<Vec<_>>(),
            ["b.yaml", "new.yaml"]
        );
    }

    #[test]
    fn a_clean_plan_succeeds_and_says_what_merging_changes() {
        let v = verdict(
            &Plan::default(),
            &Evaluation::default(),
            &BTreeSet::new(),
            &BTreeMap::new(),
        );
        assert_eq!(v.state, State::Success);
        assert_eq!(
            v.description(),
            "plan: 0 to create, 0 to update, 0 to delete"
        );
    }

    #[test]
    fn only_the_changed_claims_fail_the_pull_request() {
        let eval = evaluation(&[denied("old.yaml", "dev-old")]);
        let changed = BTreeSet::from(["new.yaml".to_owned()]);
        let v = verdict(&Plan::default(), &eval, &changed, &BTreeMap::new());
        assert_eq!(v.state, State::Success, "{v:?}");
        let changed = BTreeSet::from(["old.yaml".to_owned()]);
        let v = verdict(&Plan::default(), &eval, &changed, &BTreeMap::new());
        assert_eq!(v.state, State::Failure);
        assert_eq!(
            v.description(),
            "policy denial: old.yaml: /: denied by policy forbid-sue-ai (policy)"
        );
    }

    #[test]
    fn each_problem_is_named_by_its_reason() {
        let cases = [
            (Reason::ClaimInvalid, "invalid claim"),
            (Reason::PolicyDenied, "policy denial"),
            (Reason::VersionUnresolved, "unresolvable version"),
            (Reason::SecretsTampered, "tampered secret"),
        ];
        for (reason, words) in cases {
            let d = Diagnostic::new("x.yaml", "/a", "rule", "bad").for_environment(Some("dev-x"));
            let eval = evaluation(&[(d, reason)]);
            let v = verdict(
                &Plan::default(),
                &eval,
                &BTreeSet::from(["x.yaml".to_owned()]),
                &BTreeMap::new(),
            );
            assert_eq!(v.findings[0].reason, reason);
            assert_eq!(v.description(), format!("{words}: x.yaml: /a: bad (rule)"));
        }
        // A file that names no valid environment is an invalid claim.
        let mut eval = Evaluation::default();
        eval.diagnostics
            .push(Diagnostic::new("x.yaml", "", "yaml", "cannot parse"));
        let v = verdict(
            &Plan::default(),
            &eval,
            &BTreeSet::from(["x.yaml".to_owned()]),
            &BTreeMap::new(),
        );
        assert_eq!(v.findings[0].kind(), "invalid claim");
    }

    #[test]
    fn a_held_plan_fails_first_and_the_rest_is_counted() {
        let plan = Plan {
            hold: Some(plan::Hold {
                deletions: 3,
                live: 4,
                max_delete_fraction: 0.5,
                message: "would delete 3 of 4 live environments".to_owned(),
            }),
            ..Plan::default()
        };
        let eval = evaluation(&[denied("a.yaml", "dev-a"), denied("b.yaml", "dev-b")]);
        let changed = BTreeSet::from(["a.yaml".to_owned(), "b.yaml".to_owned()]);
        let refused = BTreeMap::from([(
            "dev-c".to_owned(),
            (Reason::Forbidden, "deployments are forbidden".to_owned()),
        )]);
        let v = verdict(&plan, &eval, &changed, &refused);
        assert_eq!(v.state, State::Failure);
        assert_eq!(v.findings.len(), 4);
        assert_eq!(v.findings[0].reason, Reason::MassDeletionHeld);
        assert_eq!(v.findings[3].kind(), "would not apply");
        assert_eq!(
            v.description(),
            "mass-deletion hold: would delete 3 of 4 live environments (+3 more, see the comment)"
        );
    }

    #[test]
    fn the_description_fits_every_forge_and_stays_on_one_line() {
        let long = "x".repeat(500);
        let d = Diagnostic::new("x.yaml", "/a", "rule", format!("line\none {long}"))
            .for_environment(Some("dev-x"));
        let eval = evaluation(&[(d.clone(), Reason::ClaimInvalid), (d, Reason::ClaimInvalid)]);
        let v = verdict(
            &Plan::default(),
            &eval,
            &BTreeSet::from(["x.yaml".to_owned()]),
            &BTreeMap::new(),
        );
        let text = v.description();
        assert_eq!(text.chars().count(), DESCRIPTION_LIMIT, "{text}");
        assert!(!text.contains('\n'));
        assert!(text.ends_with("… (+1 more, see the comment)"), "{text}");
    }
}
