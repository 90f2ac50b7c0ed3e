//! What one file came to: its `Outcome` (desired, kept, expired, or
//! refused and why), what it was decided against, and the counters.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A claim whose `expiration_date` is further from its `creation_date`
/// than its type's `max_lifetime` (presets).
#[must_use]
pub fn lifetime_problem(
    path: &str,
    claim: &Claim,
    presets: &crate::config::Presets,
) -> Option<Diagnostic> {
    let t = claim.environment_type;
    let max = presets.get(t).max_lifetime?;
    let until = claim.expiration_date?;
    let limit = claim
        .creation_date
        .checked_add_signed(chrono::Duration::from_std(max).ok()?)?;
    (until > limit).then(|| {
        Diagnostic::new(
            path,
            "/expiration_date",
            "max-lifetime",
            format!(
                "{} is more than {} after creation_date {}: type {t} lives at most that long (presets.{t}.max_lifetime)",
                timestamp(until),
                crate::config::format_duration(max),
                timestamp(claim.creation_date)
            ),
        )
    })
}

/// A static claim (`deployment_method: git`) that names a repository or
/// branch must come from exactly that repository and branch.
pub(super) fn static_origin_problem(
    path: &str,
    file: &SourceFile,
    claim: &Claim,
) -> Option<Diagnostic> {
    if claim.deployment_method != crate::claim::DeploymentMethod::Git {
        return None;
    }
    let Some(Provenance::Git {
        repository, branch, ..
    }) = file.provenance.as_deref()
    else {
        return None;
    };
    let normalize = |u: &str| {
        crate::source::sanitize_url(u)
            .trim_end_matches('/')
            .trim_end_matches(".git")
            .to_owned()
    };
    if let Some(want) = &claim.git_repository
        && normalize(want) != normalize(repository)
    {
        let message = format!("the claim names repository {want:?} but came from {repository:?}");
        return Some(Diagnostic::new(
            path,
            "/git_repository",
            "static-origin",
            message,
        ));
    }
    if let Some(want) = &claim.branch
        && want != branch
    {
        let message = format!("the claim names branch {want:?} but came from branch {branch:?}");
        return Some(Diagnostic::new(path, "/branch", "static-origin", message));
    }
    None
}

/// What a file's outcome was decided against: a create, an update of the
/// live environment as policies see it (a digest of [`Live`]: its source,
/// type, pool and owner), or a name another source owns. A cached outcome
/// is reused only against the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Asked {
    Create,
    Update(u64),
    Taken,
}

/// What becomes of a cached entry.
pub(super) enum Reuse {
    Hit,
    Reauthorized,
    Miss,
}

/// The refusal of a claim for an environment another source owns.
pub(super) fn taken(path: &str, env_name: &str, owner: &str, source: &str) -> Rejected {
    let message = format!(
        "environment {env_name:?} belongs to source {owner:?}, which created it; a claim from \
         source {source:?} cannot change it until it is deleted (NameTaken)"
    );
    Rejected {
        name: Some(env_name.to_owned()),
        diagnostics: vec![
            Diagnostic::new(path, "/environment_name", "name-taken", message)
                .for_environment(Some(env_name)),
        ],
        refusal: Refusal::Taken,
        stage: Stage::Validated,
        asked: None,
    }
}

/// What a claim from one source meets under its environment's name.
#[derive(Debug, Clone, Copy)]
pub(super) enum Meets<'a> {
    /// No live environment: a create.
    Nothing,
    /// The live environment, and what policies see of it (none for a
    /// record without an origin): an update.
    Live(Option<Live<'a>>),
    /// The live environment belongs to this other configured source.
    Owner(&'a str),
}

/// The live environment `name` and who owns it, as a claim from `source`
/// meets it. An environment whose owner is no longer configured (a source
/// removed or renamed) can be claimed by any source its policies allow.
pub(super) fn meets<'a>(
    name: Option<&str>,
    source: &str,
    live: &'a Inventory,
    sources: &BTreeSet<String>,
) -> Meets<'a> {
    let Some(env) = name.and_then(|n| live.environments.get(n)) else {
        return Meets::Nothing;
    };
    match Live::of(&env.record) {
        Some(l) if l.source != source && sources.contains(l.source) => Meets::Owner(l.source),
        facts => Meets::Live(facts),
    }
}

impl<'a> Meets<'a> {
    pub(super) fn asked(self) -> Asked {
        match self {
            Meets::Nothing => Asked::Create,
            Meets::Live(facts) => Asked::Update(facts.map_or(0, |l| l.digest())),
            Meets::Owner(_) => Asked::Taken,
        }
    }

    /// The policy request, unless another source owns the name.
    pub(super) fn ask(self) -> Option<Ask<'a>> {
        match self {
            Meets::Nothing => Some(Ask::Create),
            Meets::Live(facts) => Some(Ask::Update(facts)),
            Meets::Owner(_) => None,
        }
    }
}

/// What became of one file.
#[derive(Clone)]
pub(super) enum Outcome {
    Invalid(Rejected),
    /// Valid, but the environment must stay as it is.
    Kept(Box<Kept>),
    Expired {
        name: String,
        at: DateTime<Utc>,
    },
    Desired(Arc<Desired>),
}

/// A file that could not be read, parsed, validated or authorized.
#[derive(Clone)]
pub(super) struct Rejected {
    /// The environment, when the file names one.
    pub(super) name: Option<String>,
    pub(super) diagnostics: Vec<Diagnostic>,
    pub(super) refusal: Refusal,
    /// How far the file got.
    pub(super) stage: Stage,
    /// What the file asked for (type, pool, owner, its origin), when it
    /// says: the status row of an environment only a refused file names.
    pub(super) asked: Option<Box<EnvironmentRecord>>,
}

/// Every file of every snapshot, with its snapshot (what passes and
/// `validate` check in parallel).
pub(super) fn every_file(snapshots: &[Snapshot]) -> Vec<(&Snapshot, &SourceFile)> {
    snapshots
        .iter()
        .flat_map(|s| s.files.iter().map(move |f| (s, f)))
        .collect()
}

/// The refusal of a claim the policies deny.
pub(super) fn denied(source: &str, path: &str, claim: &Claim, diagnostic: Diagnostic) -> Rejected {
    let what = (
        claim.environment_type.as_str(),
        claim.environment_pool.as_str(),
        claim.user.as_str(),
    );
    let name = claim.environment_name.as_str();
    let refusal = match diagnostic.rule.as_str() {
        crate::validate::policy::UNREVIEWED_RULE => Refusal::Unreviewed,
        REVIEW_UNAVAILABLE_RULE => Refusal::ReviewUnavailable,
        _ => Refusal::Denied,
    };
    Rejected {
        name: Some(name.to_owned()),
        diagnostics: vec![diagnostic.for_environment(Some(name))],
        refusal,
        stage: Stage::Validated,
        asked: Some(asked_for(source, path, what)),
    }
}

/// What an invalid document asked for, as far as its fields say.
pub(super) fn asked_in(
    source: &str,
    path: &str,
    doc: &serde_json::Value,
) -> Box<EnvironmentRecord> {
    let field = |key: &str| {
        doc.get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
    };
    let what = (
        field("environment_type"),
        field("environment_pool"),
        field("user"),
    );
    asked_for(source, path, what)
}

/// The record a refused claim asked for (no versions): what `status` shows
/// of an environment only that claim names.
pub(super) fn asked_for(
    source: &str,
    path: &str,
    (env_type, pool, owner): (&str, &str, &str),
) -> Box<EnvironmentRecord> {
    Box::new(EnvironmentRecord {
        origin: Some(Origin {
            source: source.to_owned(),
            path: path.to_owned(),
        }),
        env_type: env_type.to_owned(),
        pool: pool.to_owned(),
        owner: owner.to_owned(),
        versions: BTreeMap::new(),
        expires_at: None,
        secrets: BTreeMap::new(),
        manifests: BTreeMap::new(),
    })
}

#[derive(Clone)]
pub(super) struct Kept {
    pub(super) name: String,
    pub(super) expires_at: Option<DateTime<Utc>>,
    pub(super) why: Reason,
    pub(super) condition: Condition,
    pub(super) diagnostic: Diagnostic,
}

/// A valid claim whose environment must stay as it is, for `why`.
pub(super) fn kept(
    name: String,
    expires_at: Option<DateTime<Utc>>,
    why: Reason,
    condition: ConditionType,
    diagnostic: Diagnostic,
) -> Outcome {
    let condition = Condition::problem(condition, why, diagnostic.message.clone());
    let diagnostic = diagnostic.for_environment(Some(&name));
    Outcome::Kept(Box::new(Kept {
        name,
        expires_at,
        why,
        condition,
        diagnostic,
    }))
}

/// The reason, condition and diagnostic rule of a render failure: a
/// service's manifests that cannot be fetched now are `ManifestsUnavailable`
/// (tried again next pass), refused ones `RenderFailed`.
pub(super) fn render_failure(e: &RenderError) -> (Reason, ConditionType, &'static str) {
    match e {
        RenderError::ManifestsUnavailable { .. } => (
            Reason::ManifestsUnavailable,
            ConditionType::ManifestsUnavailable,
            "manifests-unavailable",
        ),
        RenderError::Manifests(_) => (
            Reason::RenderFailed,
            ConditionType::RenderFailed,
            "manifests",
        ),
        RenderError::Pin { rule: "policy", .. } => {
            (Reason::PolicyDenied, ConditionType::Denied, "policy")
        }
        RenderError::Pin { .. } => (
            Reason::RenderFailed,
            ConditionType::RenderFailed,
            "ansible-artifact",
        ),
        _ => (Reason::RenderFailed, ConditionType::RenderFailed, "render"),
    }
}

/// The rule of a denial for want of a review the forge could not be asked about.
pub const REVIEW_UNAVAILABLE_RULE: &str = "review-unavailable";

/// Why a file was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Unreadable, unparsable or invalid: the environment is kept as it is.
    Invalid,
    /// Denied by policy: the environment is kept as it is.
    Denied,
    /// Denied only for want of a review (`@reason("Unreviewed")`).
    Unreviewed,
    /// Such a denial while the forge could not be asked.
    ReviewUnavailable,
    /// The environment belongs to another source: the file takes no part
    /// (it neither holds nor marks the owner's environment).
    Taken,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Stage {
    Read,
    Parsed,
    Validated,
    Authorized,
}

pub(super) fn outcome_name(o: &Outcome) -> Option<&str> {
    match o {
        Outcome::Invalid(r) => r.name.as_deref(),
        Outcome::Kept(k) => Some(&k.name),
        Outcome::Expired { name, .. } => Some(name),
        Outcome::Desired(d) => Some(d.claim.environment_name.as_str()),
    }
}

/// The work of files evaluated anew and of cached claims resolved again.
pub(super) fn count_work(
    c: &mut Counters,
    computed: &[(Origin, Entry)],
    resolved_again: &[(Origin, Entry)],
) {
    for (_, entry) in computed {
        count(c, &entry.outcome);
        c.resolved += usize::from(entry.memo.is_some());
    }
    for (_, entry) in resolved_again {
        c.resolved += 1;
        c.rendered += usize::from(matches!(entry.outcome, Outcome::Desired(_)));
    }
}

pub(super) fn count(c: &mut Counters, o: &Outcome) {
    let stage = match o {
        Outcome::Invalid(r) => r.stage,
        Outcome::Kept(_) | Outcome::Expired { .. } => Stage::Authorized,
        Outcome::Desired(_) => {
            c.rendered += 1;
            Stage::Authorized
        }
    };
    c.parsed += usize::from(stage >= Stage::Parsed);
    c.validated += usize::from(stage >= Stage::Validated);
    c.authorized += usize::from(stage >= Stage::Authorized);
}
