//! What the CLI commands compute beside the pass: the start notice about
//! identities, `converge validate`'s version check, and `converge plan`'s
//! pull-request plan.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::pipeline::{Evaluation, Pipeline};
use crate::plan::Plan;
pub use crate::pull_request::PlanError;
use crate::source::Snapshot;
use crate::{SetupError, claim, diagnostic, resolve, tags};

/// What a writer says at start about its users and pools: none declared
/// (every claim is denied by policies that require pool membership), or
/// the built-in example identities in use.
#[must_use]
pub fn identities_notice(config: &Config, pipeline: &Pipeline) -> Option<String> {
    if pipeline.policies.users() == 0 {
        return Some(
            "no users or pools are declared (identities): the default policies deny every claim; \
             declare them (README, \"Users and pools\")"
                .to_owned(),
        );
    }
    (config.policies.is_none() && config.identities.is_none()).then(|| {
        "the built-in policies' example identities are in use (john.doe@company.com, \
         jane.roe@company.com, ops@company.com): declare your own users and pools \
         (README, \"Users and pools\")"
            .to_owned()
    })
}

/// What `converge validate` found checking versions against the tags that exist.
#[derive(Debug, Default)]
pub struct VersionCheck {
    /// Constraints that match no tag (rule `version-unresolved`).
    pub diagnostics: Vec<diagnostic::Diagnostic>,
    /// Constraints checked against a tag list.
    pub checked: usize,
    /// Constraints that could not be checked, and why.
    pub unchecked: Vec<String>,
    /// No tag source and no `tags:` lists: nothing could be checked (one
    /// line says so rather than one per constraint).
    pub no_source: bool,
    /// The tag lists the constraints were checked against (what the
    /// services' manifests are then checked at).
    pub tags: resolve::TagSet,
}

/// Resolves every constraint of the valid claims in `snapshots` against the
/// tags that exist (the tag source's lists, read now, or the fixed `tags:`).
pub fn check_versions(
    config: &Config,
    pipeline: &Pipeline,
    snapshots: &[Snapshot],
    now: DateTime<Utc>,
) -> Result<VersionCheck, SetupError> {
    let claims = pipeline.valid_claims(snapshots, now);
    let presets = pipeline.renderer.presets();
    let requested: Vec<(String, bool, BTreeMap<String, resolve::Request>)> = claims
        .iter()
        .map(|(file, claim)| {
            let dev = presets.get(claim.environment_type).use_dev_tags;
            (
                file.clone(),
                dev,
                resolve::requests(claim, &pipeline.catalog),
            )
        })
        .collect();
    let mut scanner = tags::Scanner::from_config(config)?;
    let tag_set = match &mut scanner {
        Some(scanner) => {
            let wanted = requested
                .iter()
                .flat_map(|(_, dev, r)| {
                    r.iter()
                        .filter(|(_, q)| !matches!(q.constraint, claim::Constraint::Exact(_)))
                        .map(|(s, _)| (s.clone(), *dev))
                })
                .collect();
            let keys = scanner.want(&wanted);
            scanner.scan(Some(&keys));
            scanner.tag_set()
        }
        None => pipeline.tags.clone(),
    };
    let mut out = VersionCheck {
        no_source: scanner.is_none() && tag_set.is_empty(),
        tags: tag_set.clone(),
        ..VersionCheck::default()
    };
    for (file, dev, requests) in &requested {
        for (service, r) in requests {
            if matches!(r.constraint, claim::Constraint::Exact(_)) {
                continue;
            }
            let constraint = r.constraint.to_string();
            let (pointer, via) = match r.dependency_of.first() {
                Some(root) => (
                    diagnostic::pointer_join("/services", root),
                    format!(
                        " (a dependency of {}, at the catalog's constraint)",
                        r.dependency_of.join(", ")
                    ),
                ),
                None => (
                    diagnostic::pointer_join("/services", service),
                    String::new(),
                ),
            };
            let Some(list) = tag_set.get(service, *dev) else {
                let why = match scanner.as_ref().and_then(|s| s.failure(service, *dev)) {
                    Some((_, message)) => message.clone(),
                    None => "no tag list is configured for it".to_owned(),
                };
                out.unchecked.push(format!(
                    "{file}{pointer}: {service} {constraint:?}{via}: {why}"
                ));
                continue;
            };
            out.checked += 1;
            if r.constraint
                .pick(list.tags.iter().map(String::as_str))
                .is_none()
            {
                out.diagnostics.push(diagnostic::Diagnostic::new(
                    file,
                    pointer,
                    "version-unresolved",
                    format!(
                        "{service} {constraint:?}{via} matches none of its {} {}tags",
                        list.tags.len(),
                        if *dev { "dev " } else { "" }
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// What `converge plan --repo R --base B --head H` compares.
#[derive(Debug, Clone)]
pub struct PullRequest<'a> {
    pub repo: &'a std::path::Path,
    pub base: &'a str,
    pub head: &'a str,
}

/// The plan merging `head` into `base` would cause: both revisions are read
/// straight from the repository (no checkout); what `base` asks for plays the
/// live infrastructure, what `head` asks for is desired. Uses the config's
/// first git source for path globs and trusted signing keys when there is one
/// ([`crate::pull_request::Planner`]; no dry run against the target).
pub fn pull_request_plan(
    config: &Config,
    pr: &PullRequest<'_>,
    now: DateTime<Utc>,
) -> Result<(Plan, Evaluation), PlanError> {
    let mut planner = crate::pull_request::Planner::new(config, None, false)?;
    let outcome = planner.plan(pr.repo, pr.base, pr.head, now)?;
    Ok((outcome.plan, outcome.evaluation))
}
