//! Stages 2–5 for every claim file of every snapshot, in parallel.
//!
//! `Pipeline::evaluate` takes the sources' snapshots and the target's
//! inventory and returns an [`Evaluation`]: the environments to render (with
//! their objects), the ones that expired, the ones that must be left exactly
//! as they are (invalid, denied, conflicting, unresolved), every diagnostic,
//! and per-environment conditions. Each file goes parse -> schema -> claim ->
//! policy -> expiry -> resolve -> render on a rayon worker; only the typed
//! claim and its rendered objects are kept. Pure: no IO.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::Serialize;

use crate::claim::Claim;
use crate::condition::{Condition, ConditionType, Reason};
use crate::diagnostic::Diagnostic;
use crate::inventory::{DesiredObjects, EnvironmentRecord, Inventory, LiveEnvironment};
use crate::load;
use crate::render::{RenderError, Renderer, timestamp};
use crate::resolve::{Catalog, Request, Resolved, TagSet, resolve};
use crate::secret::{Decryptor, Sealed, Secrets};
use crate::source::{Origin, Provenance, Revision, Snapshot, SourceFile};
use crate::validate::policy::{Ask, Live, Policies, RequestSource};
use crate::validate::schema::Schema;

mod cache;
mod evaluation;
mod outcome;
mod validate;

pub use cache::Cache;
use cache::{Entry, Evaluated, Hit, Resolve, ResolveMemo, running, versions_digest};
pub use evaluation::Evaluation;
#[allow(clippy::wildcard_imports)]
use outcome::*;
pub use outcome::{REVIEW_UNAVAILABLE_RULE, lifetime_problem};
pub use validate::Validated;

/// The compiled, resident state every pass uses.
pub struct Pipeline {
    pub schema: Schema,
    /// Shared with the renderer, which asks them what services may emit.
    pub policies: Arc<Policies>,
    pub renderer: Renderer,
    /// The tag lists constraints resolve against: the config's fixed lists,
    /// or what the daemon last read from a registry or git tags (handed in
    /// by [`crate::Converge::adopt_tags`] before a pass).
    pub tags: TagSet,
    /// The service catalog (dependencies come along).
    pub catalog: Catalog,
    /// Per git source: the environment types whose claims must come from
    /// verified (signed by a trusted key) commits.
    pub signatures_required: std::collections::HashMap<String, Vec<crate::claim::EnvironmentType>>,
    /// The configured sources' names: an environment created from one of
    /// them belongs to it (a claim from another is `NameTaken`).
    pub sources: BTreeSet<String>,
    /// The git sources with a forge: their claims carry `context.review`.
    pub forges: BTreeSet<String>,
    /// Per commit id: who reviewed and merged it (handed in by
    /// [`crate::Converge::pass`] before each evaluation; a commit missing
    /// here is `Unavailable`).
    pub reviews: crate::review::Reviews,
    /// Per s3 source with `pool_from_prefix`: its prefix. A claim's pool must
    /// be the first segment of its key after it.
    pub pool_prefixes: std::collections::HashMap<String, String>,
    /// Environments per pool and per user, services per claim.
    pub limits: Limits,
    /// The key service that opens SOPS-encrypted `secrets`.
    pub secrets: Arc<dyn Decryptor>,
    /// Claims whose secrets were opened (decrypted and MAC-checked, or failed).
    pub decrypts: AtomicUsize,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

/// An environment a claim asks for, rendered.
#[derive(Debug, Clone)]
pub struct Desired {
    pub claim: Arc<Claim>,
    /// The commit or object this version of the claim came from.
    pub provenance: Option<Arc<Provenance>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub origin: Origin,
    pub revision: Revision,
    pub record: EnvironmentRecord,
    /// As rendered until the target holds exactly them; then the target's
    /// record, shared ([`Cache::share_applied`]).
    pub objects: DesiredObjects,
    /// Problems that do not stop the environment (a resolved tag kept
    /// although it left the tag list).
    pub conditions: Vec<Condition>,
    /// The decrypted `secrets`, kept for apply to render the `Secret`
    /// (zeroed when the last reference goes).
    pub secrets: Option<Arc<Secrets>>,
}

/// What one writer may ask for (`limits:` in the config): `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `deployment_method: dynamic` environments per pool.
    pub per_pool: Option<usize>,
    /// `deployment_method: dynamic` environments per user.
    pub per_user: Option<usize>,
    pub services_per_claim: Option<usize>,
}

/// Work done by one evaluation, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub files: usize,
    pub parsed: usize,
    pub validated: usize,
    pub authorized: usize,
    pub rendered: usize,
    /// Claims whose versions were resolved (again): a new tag list costs
    /// only the claims whose constraints consult it.
    pub resolved: usize,
    /// Claims whose SOPS secrets were opened.
    pub decrypts: usize,
    /// Data keys unwrapped (X25519 operations) by the key service.
    pub key_unwraps: usize,
}

/// Options of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The time the pass runs at (expiry, policy context).
    pub now: DateTime<Utc>,
}

impl Pipeline {
    /// Evaluates every file of every snapshot against the live inventory.
    #[must_use]
    pub fn evaluate(
        &self,
        snapshots: &[Snapshot],
        live: &Inventory,
        options: Options,
    ) -> Evaluation {
        self.evaluate_cached(snapshots, live, options, &mut Cache::default())
    }

    /// Like [`Pipeline::evaluate`], reusing `cache`: a file whose content
    /// digest and policy action are unchanged since the last evaluation is not
    /// parsed, validated, authorized or rendered again (only its expiry is
    /// checked against `now`). The counters count the work actually done.
    pub fn evaluate_cached(
        &self,
        snapshots: &[Snapshot],
        live: &Inventory,
        options: Options,
        cache: &mut Cache,
    ) -> Evaluation {
        let files = every_file(snapshots);
        let generation = self.secrets.generation();
        let (decrypts, unwraps) = (
            self.decrypts.load(Ordering::Relaxed),
            self.secrets.unwraps(),
        );
        let mut previous = std::mem::take(&mut cache.entries);
        let mut hits = Vec::new();
        let mut misses = Vec::new();
        let mut reauthorized = 0;
        for (snapshot, file) in files.iter().copied() {
            let origin = Origin {
                source: snapshot.source.clone(),
                path: file.path.clone(),
            };
            match previous.remove(&origin) {
                Some(mut entry)
                    if entry.digest == file.digest
                        && entry.keys.is_none_or(|g| g == generation)
                        && entry.review == self.review_digest(snapshot, file) =>
                {
                    match self.reuse(&mut entry, snapshot, file, live, options.now) {
                        Reuse::Hit => hits.push((origin, entry, snapshot, file)),
                        Reuse::Reauthorized => {
                            reauthorized += 1;
                            hits.push((origin, entry, snapshot, file));
                        }
                        Reuse::Miss => misses.push((origin, snapshot, file)),
                    }
                }
                _ => misses.push((origin, snapshot, file)),
            }
        }
        let (hits, resolved_again) = self.resolve_stale(hits, live, options, generation);
        let computed: Vec<(Origin, Entry)> = misses
            .into_par_iter()
            .map(|(origin, snapshot, file)| {
                let entry = self.entry(snapshot, file, live, options, generation);
                (origin, entry)
            })
            .collect();
        let mut eval = Evaluation {
            counters: Counters {
                files: files.len(),
                ..Counters::default()
            },
            ..Evaluation::default()
        };
        count_work(&mut eval.counters, &computed, &resolved_again);
        eval.counters.authorized += reauthorized;
        eval.counters.decrypts = self
            .decrypts
            .load(Ordering::Relaxed)
            .saturating_sub(decrypts);
        eval.counters.key_unwraps =
            usize::try_from(self.secrets.unwraps().saturating_sub(unwraps)).unwrap_or(usize::MAX);
        let mut outcomes: Vec<(Origin, Outcome)> = Vec::with_capacity(files.len());
        for (origin, mut entry) in hits.into_iter().chain(resolved_again).chain(computed) {
            entry.expire(options.now);
            outcomes.push((origin.clone(), entry.outcome.clone()));
            cache.entries.insert(origin, entry);
        }
        for (snapshot, file) in &files {
            if let Some(notice) = &file.notice {
                eval.refused(snapshot, file, notice, cache);
            }
        }

        // Conflicts: a name claimed by two valid, authorized files changes
        // nothing. A rejected file takes no part: whoever may write a file
        // that is refused cannot freeze someone else's environment.
        let named = outcomes
            .iter()
            .filter(|(_, o)| !matches!(o, Outcome::Invalid(_)))
            .filter_map(|(origin, o)| Some((outcome_name(o)?, origin.path.as_str())));
        let conflicts = load::conflicts(named);
        let conflicted: BTreeSet<String> = conflicts
            .iter()
            .filter_map(|d| d.environment.clone())
            .collect();
        for d in &conflicts {
            let name = d.environment.as_deref().unwrap_or_default();
            eval.conditions
                .entry(name.to_owned())
                .or_default()
                .push(Condition::problem(
                    ConditionType::Conflict,
                    Reason::DuplicateEnvironment,
                    d.message.clone(),
                ));
        }
        for name in &conflicted {
            eval.keep.insert(name.clone(), Reason::DuplicateEnvironment);
        }
        eval.diagnostics.extend(conflicts);

        eval.absorb(outcomes, &conflicted, live, &self.sources);
        eval.limit(live, self.limits);
        eval.diagnostics
            .sort_by(|a, b| a.file.cmp(&b.file).then_with(|| a.pointer.cmp(&b.pointer)));
        eval
    }

    /// Splits cache hits: those whose resolution inputs changed (a new tag
    /// list, another running version) are resolved and rendered again (the
    /// second list); the rest are kept as they are.
    fn resolve_stale(
        &self,
        hits: Vec<Hit<'_>>,
        live: &Inventory,
        options: Options,
        generation: u64,
    ) -> (Vec<Evaluated>, Vec<Evaluated>) {
        // An environment kept for unavailable manifests is rendered again:
        // it recovers by itself once they can be fetched.
        let (hits, stale): (Vec<_>, Vec<_>) = hits.into_iter().partition(|(_, e, _, _)| {
            !matches!(&e.outcome, Outcome::Kept(k) if k.why == Reason::ManifestsUnavailable)
                && e.memo.as_ref().is_none_or(|m| {
                    m.current(&self.tags, live, e.name.as_deref().unwrap_or_default())
                })
        });
        let resolved_again = stale
            .into_par_iter()
            .map(|(origin, mut entry, snapshot, file)| {
                if entry.keys.is_some() {
                    // A claim with secrets is opened again from its file
                    // (the decrypted values are not cached).
                    entry = self.entry(snapshot, file, live, options, generation);
                } else if let Some(claim) = entry.claim.clone() {
                    let preset = self.renderer.presets().get(claim.environment_type);
                    let expires_at = claim.expires_at(preset.ttl);
                    let (outcome, memo) = self
                        .evaluate_claim(snapshot, file, &claim, expires_at, live, None, options);
                    entry.outcome = outcome;
                    entry.memo = memo;
                }
                (origin, entry)
            })
            .collect();
        let hits = hits.into_iter().map(|(o, e, _, _)| (o, e)).collect();
        (hits, resolved_again)
    }

    /// Stage 4 for one claim: its requests (dependencies included) against
    /// the tag lists, never below what the environment runs; the memo of
    /// what it read (none when every version is exact).
    fn resolve_versions(
        &self,
        claim: &Claim,
        dev: bool,
        before: Option<&BTreeMap<String, Resolved>>,
    ) -> (Resolve, Option<ResolveMemo>) {
        let requests = crate::resolve::requests(claim, &self.catalog);
        let memo = (!crate::resolve::all_exact(&requests)).then(|| ResolveMemo {
            inputs: crate::resolve::inputs_digest(&requests, dev, &self.tags),
            previous: versions_digest(before),
            result: versions_digest(before),
            requests: Arc::new(requests.clone()),
            dev,
        });
        match resolve(&requests, dev, &self.tags, before) {
            Ok(r) => {
                let conditions = r
                    .missing
                    .iter()
                    .map(|n| {
                        Condition::problem(
                            ConditionType::ResolvedTagMissing,
                            Reason::ResolvedTagMissing,
                            n.message.clone(),
                        )
                    })
                    .collect();
                let memo = memo.map(|m| ResolveMemo {
                    result: versions_digest(Some(&r.versions)),
                    ..m
                });
                (Ok((r.versions, conditions)), memo)
            }
            Err(unresolved) => (Err(unresolved), memo),
        }
    }

    /// One file evaluated anew, as the cache keeps it.
    fn entry(
        &self,
        snapshot: &Snapshot,
        file: &SourceFile,
        live: &Inventory,
        options: Options,
        generation: u64,
    ) -> Entry {
        let (outcome, claim, sealed, memo) = self.evaluate_file(snapshot, file, live, options);
        let name = outcome_name(&outcome).map(str::to_owned);
        let asked = meets(name.as_deref(), &snapshot.source, live, &self.sources).asked();
        Entry {
            digest: file.digest,
            review: self.review_digest(snapshot, file),
            asked,
            name,
            claim,
            outcome,
            keys: sealed.then_some(generation),
            memo,
        }
    }

    /// Parse, schema, claim checks and policy for one file.
    fn check_file(
        &self,
        snapshot: &Snapshot,
        file: &SourceFile,
        live: &Inventory,
        now: DateTime<Utc>,
    ) -> Result<Checked, Rejected> {
        let path = file.path.as_str();
        let doc = match load::parse(file) {
            Ok(doc) => doc,
            Err(d) => {
                return Err(Rejected {
                    name: None,
                    diagnostics: vec![d],
                    refusal: Refusal::Invalid,
                    stage: Stage::Read,
                    asked: None,
                });
            }
        };
        let name = doc
            .get("environment_name")
            .and_then(serde_json::Value::as_str)
            .filter(|n| crate::claim::EnvironmentName::is_valid(n))
            .map(str::to_owned);
        let problems = self.schema.check(path, &doc);
        if !problems.is_empty() {
            let diagnostics = problems
                .into_iter()
                .map(|d| d.for_environment(name.as_deref()))
                .collect();
            let asked = name
                .as_ref()
                .map(|_| asked_in(&snapshot.source, path, &doc));
            return Err(Rejected {
                name,
                diagnostics,
                refusal: Refusal::Invalid,
                stage: Stage::Parsed,
                asked,
            });
        }
        let sealed = match crate::secret::seal(path, &doc) {
            Ok(s) => s,
            Err(diagnostics) => {
                return Err(Rejected {
                    diagnostics: diagnostics
                        .into_iter()
                        .map(|d| d.for_environment(name.as_deref()))
                        .collect(),
                    name,
                    refusal: Refusal::Invalid,
                    stage: Stage::Parsed,
                    asked: None,
                });
            }
        };
        let claim = match Claim::from_document(path, doc) {
            Ok(c) => c,
            Err(diagnostics) => {
                return Err(Rejected {
                    name,
                    diagnostics,
                    refusal: Refusal::Invalid,
                    stage: Stage::Parsed,
                    asked: None,
                });
            }
        };
        let env_name = claim.environment_name.as_str();
        if let Some(d) = self.pool_prefix_problem(path, snapshot, file, &claim) {
            return Err(denied(&snapshot.source, path, &claim, d));
        }
        if let Some(d) = static_origin_problem(path, file, &claim)
            .or_else(|| lifetime_problem(path, &claim, self.renderer.presets()))
        {
            return Err(Rejected {
                name: Some(env_name.to_owned()),
                diagnostics: vec![d],
                refusal: Refusal::Invalid,
                stage: Stage::Parsed,
                asked: None,
            });
        }
        let expires_at = claim.expires_at(self.renderer.presets().get(claim.environment_type).ttl);
        let ask = match meets(Some(env_name), &snapshot.source, live, &self.sources) {
            Meets::Owner(owner) => return Err(taken(path, env_name, owner, &snapshot.source)),
            m => m.ask().unwrap_or(Ask::Create),
        };
        if let Err(d) = self.authorize(snapshot, file, &claim, ask, now) {
            return Err(denied(&snapshot.source, path, &claim, d));
        }
        Ok((claim, expires_at, sealed))
    }

    /// The policies' decision on `claim` from `file` of `snapshot`, asked
    /// as `ask` (create, or update of what is live).
    fn authorize(
        &self,
        snapshot: &Snapshot,
        file: &SourceFile,
        claim: &Claim,
        ask: Ask<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), Diagnostic> {
        let preset = self.renderer.presets().get(claim.environment_type);
        let expires_at = claim.expires_at(preset.ttl).map(|t| t.timestamp());
        let review = self.review_for(snapshot, file);
        let source = RequestSource {
            kind: snapshot.kind,
            name: &snapshot.source,
            is_static: snapshot.is_static,
            provenance: file.provenance.as_deref(),
            review: review.as_ref(),
        };
        let decision =
            self.policies
                .authorize(&file.path, claim, ask, &source, now.timestamp(), expires_at);
        match (decision, &review) {
            (Err(d), Some(crate::review::Lookup::Unavailable(why)))
                if d.rule == crate::validate::policy::UNREVIEWED_RULE =>
            {
                let commit = match file.provenance.as_deref() {
                    Some(Provenance::Git { commit, .. }) => commit.as_str(),
                    _ => "?",
                };
                let message = format!(
                    "{} environments need a reviewed change, and the forge of source {:?} cannot be asked who reviewed commit {commit} ({why}); the environment stays as it is until it answers",
                    claim.environment_type, snapshot.source
                );
                Err(
                    Diagnostic::new(&file.path, "", REVIEW_UNAVAILABLE_RULE, message)
                        .for_environment(Some(claim.environment_name.as_str())),
                )
            }
            (decision, _) => decision,
        }
    }

    /// What the source's forge said about the commit `file` came from
    /// (`None` without a forge or a commit).
    fn review_for(&self, snapshot: &Snapshot, file: &SourceFile) -> Option<crate::review::Lookup> {
        if !self.forges.contains(&snapshot.source) {
            return None;
        }
        let Some(Provenance::Git { commit, .. }) = file.provenance.as_deref() else {
            return None;
        };
        Some(
            self.reviews
                .get(commit)
                .cloned()
                .unwrap_or_else(|| crate::review::Lookup::Unavailable("not asked yet".to_owned())),
        )
    }

    /// A digest of [`Pipeline::review_for`]: a cached outcome is reused only
    /// against the same review.
    fn review_digest(&self, snapshot: &Snapshot, file: &SourceFile) -> u64 {
        self.review_for(snapshot, file).map_or(0, |l| l.digest())
    }

    /// With `pool_from_prefix`: the claim's pool is not its key's first
    /// segment (after the source's prefix).
    fn pool_prefix_problem(
        &self,
        path: &str,
        snapshot: &Snapshot,
        file: &SourceFile,
        claim: &Claim,
    ) -> Option<Diagnostic> {
        let prefix = self.pool_prefixes.get(&snapshot.source)?;
        let key = match file.provenance.as_deref() {
            Some(Provenance::S3 { key, .. }) => key.as_str(),
            _ => file.path.as_str(),
        };
        let rest = key
            .strip_prefix(prefix.as_str())
            .unwrap_or(key)
            .trim_start_matches('/');
        let segment = rest.split_once('/').map(|(first, _)| first);
        let pool = claim.environment_pool.as_str();
        (segment != Some(pool)).then(|| {
            Diagnostic::new(
                path,
                "/environment_pool",
                "pool-from-prefix",
                format!(
                    "pool {pool:?} must be the first segment of the object's key ({key:?}): source {:?} binds pools to key prefixes (pool_from_prefix)",
                    snapshot.source
                ),
            )
        })
    }

    /// Whether a cached entry (same bytes, same keys) can be reused against
    /// `live`: as it is when it was asked against the same, re-authorized
    /// when only the live facts changed, evaluated anew otherwise (a name
    /// taken or freed).
    fn reuse(
        &self,
        entry: &mut Entry,
        snapshot: &Snapshot,
        file: &SourceFile,
        live: &Inventory,
        now: DateTime<Utc>,
    ) -> Reuse {
        let m = meets(entry.name.as_deref(), &snapshot.source, live, &self.sources);
        let asked = m.asked();
        if entry.asked == asked {
            return Reuse::Hit;
        }
        match m.ask() {
            Some(ask)
                if entry.asked != Asked::Taken
                    && self.reauthorize(entry, snapshot, file, (asked, ask), now) =>
            {
                Reuse::Reauthorized
            }
            _ => Reuse::Miss,
        }
    }

    /// A cached evaluation whose policy action changed (the environment was
    /// created or removed since): asks the policies again and keeps the rest
    /// when the answer is still yes. False when the file must be evaluated anew.
    /// Environments this pass created will be updated from now on: authorize
    /// their cached claims for `update` right away, so the next pass (often a
    /// one-claim change) does not re-authorize every environment created
    /// before it. Returns the number of authorization requests made.
    pub fn settle_created(
        &self,
        cache: &mut Cache,
        snapshots: &[Snapshot],
        created: &BTreeSet<&str>,
        now: DateTime<Utc>,
    ) -> usize {
        if created.is_empty() {
            return 0;
        }
        let mut wanted: std::collections::HashMap<(&str, &str), &mut Entry> = cache
            .entries
            .iter_mut()
            .filter(|(_, e)| {
                e.asked == Asked::Create && e.name.as_deref().is_some_and(|n| created.contains(n))
            })
            .map(|(o, e)| ((o.source.as_str(), o.path.as_str()), e))
            .collect();
        let mut requests = 0;
        for snapshot in snapshots {
            for file in &snapshot.files {
                if let Some(entry) = wanted.remove(&(snapshot.source.as_str(), file.path.as_str()))
                    && entry.digest == file.digest
                {
                    requests += 1;
                    let Some(claim) = entry.claim.clone() else {
                        continue;
                    };
                    let facts = Live::after(&claim, &snapshot.source);
                    let asked = (Asked::Update(facts.digest()), Ask::Update(Some(facts)));
                    self.reauthorize(entry, snapshot, file, asked, now);
                }
            }
        }
        requests
    }

    fn reauthorize(
        &self,
        entry: &mut Entry,
        snapshot: &Snapshot,
        file: &SourceFile,
        (asked, ask): (Asked, Ask<'_>),
        now: DateTime<Utc>,
    ) -> bool {
        let reusable = match (&entry.outcome, &entry.claim) {
            (Outcome::Invalid(r), _) if r.refusal == Refusal::Invalid => true,
            (Outcome::Invalid(_), _) | (_, None) => false,
            (_, Some(claim)) => self.authorize(snapshot, file, claim, ask, now).is_ok(),
        };
        if reusable {
            entry.asked = asked;
        }
        reusable
    }

    fn evaluate_file(
        &self,
        snapshot: &Snapshot,
        file: &SourceFile,
        live: &Inventory,
        options: Options,
    ) -> (Outcome, Option<Arc<Claim>>, bool, Option<ResolveMemo>) {
        match self.check_file(snapshot, file, live, options.now) {
            Ok((claim, expires_at, sealed)) => {
                let claim = Arc::new(claim);
                let has_secrets = sealed.is_some();
                let (outcome, memo) =
                    self.evaluate_claim(snapshot, file, &claim, expires_at, live, sealed, options);
                (outcome, Some(claim), has_secrets, memo)
            }
            Err(rejected) => (Outcome::Invalid(rejected), None, false, None),
        }
    }

    /// Why a claim from a git source that requires signatures for its type
    /// is not acceptable (its newest change is not a verified commit).
    fn signature_problem(
        &self,
        snapshot: &Snapshot,
        file: &SourceFile,
        claim: &Claim,
    ) -> Option<String> {
        let types = self.signatures_required.get(&snapshot.source)?;
        if !types.contains(&claim.environment_type) {
            return None;
        }
        match file.provenance.as_deref() {
            Some(Provenance::Git {
                commit, signature, ..
            }) if !signature.verified => Some(format!(
                "{} environments need verified commits; commit {commit} is not ({}); the environment stays at its last acceptable version",
                claim.environment_type,
                signature.problem.as_deref().unwrap_or("unverified"),
            )),
            Some(Provenance::Git { .. }) => None,
            _ => Some("signatures are required, but the file has no commit".to_owned()),
        }
    }

    /// Expiry, resolve and render for a claim the policies allow.
    #[allow(
        clippy::too_many_arguments,
        reason = "the file, its claim and what the claim is evaluated against: one call site per path"
    )]
    fn evaluate_claim(
        &self,
        snapshot: &Snapshot,
        file: &SourceFile,
        claim: &Arc<Claim>,
        expires_at: Option<DateTime<Utc>>,
        live: &Inventory,
        sealed: Option<Sealed>,
        options: Options,
    ) -> (Outcome, Option<ResolveMemo>) {
        let path = file.path.as_str();
        let env_name = claim.environment_name.as_str().to_owned();
        let preset = self.renderer.presets().get(claim.environment_type);
        if let Some(problem) = self.signature_problem(snapshot, file, claim) {
            let outcome = kept(
                env_name,
                expires_at,
                Reason::SignatureRequired,
                ConditionType::SignatureRequired,
                Diagnostic::new(path, "", "signature-required", problem),
            );
            return (outcome, None);
        }
        if let Some(at) = expires_at
            && at <= options.now
        {
            return (Outcome::Expired { name: env_name, at }, None);
        }
        let secrets = match sealed.map(|s| self.open_secrets(&s, &env_name)) {
            None => None,
            Some(Ok(s)) => Some(Arc::new(s)),
            Some(Err(e)) => {
                let outcome = kept(
                    env_name,
                    expires_at,
                    e.reason(),
                    ConditionType::SecretsUnavailable,
                    secrets_diagnostic(path, &e),
                );
                return (outcome, None);
            }
        };
        let before = running(live, &env_name);
        let (resolution, memo) = self.resolve_versions(claim, preset.use_dev_tags, before);
        let (versions, conditions) = match resolution {
            Ok(r) => r,
            Err(unresolved) => {
                let message = unresolved
                    .iter()
                    .map(|u| u.reason.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                let pointer = crate::diagnostic::pointer_join("/services", &unresolved[0].service);
                let outcome = kept(
                    env_name,
                    expires_at,
                    Reason::VersionUnresolved,
                    ConditionType::VersionUnresolved,
                    Diagnostic::new(path, pointer, "version-unresolved", message),
                );
                return (outcome, memo);
            }
        };
        let objects = match self
            .renderer
            .render(claim, &versions, expires_at, secrets.as_deref())
        {
            Ok(rendered) => rendered.into_iter().map(|r| r.object).collect(),
            Err(e) => {
                let message = e.to_string();
                let (why, condition, rule) = render_failure(&e);
                let outcome = kept(
                    env_name,
                    expires_at,
                    why,
                    condition,
                    Diagnostic::new(path, e.pointer(), rule, message),
                );
                return (outcome, memo);
            }
        };
        let origin = Origin {
            source: snapshot.source.clone(),
            path: file.path.clone(),
        };
        let record = EnvironmentRecord {
            manifests: self.manifests_records(claim, &versions),
            origin: Some(origin.clone()),
            env_type: claim.environment_type.as_str().to_owned(),
            pool: claim.environment_pool.clone(),
            owner: claim.user.clone(),
            versions,
            expires_at: expires_at.map(timestamp),
            secrets: secrets
                .as_ref()
                .map(|s| s.fingerprints().clone())
                .unwrap_or_default(),
        };
        let desired = Desired {
            claim: claim.clone(),
            provenance: file.provenance.clone(),
            expires_at,
            origin,
            revision: snapshot.revision.clone(),
            record,
            objects: DesiredObjects::Rendered(objects),
            conditions,
            secrets,
        };
        (Outcome::Desired(Arc::new(desired)), memo)
    }
}

impl Pipeline {
    /// Per service with manifests of its own: the artifact the environment
    /// runs, as its record keeps it.
    fn manifests_records(
        &self,
        claim: &Claim,
        versions: &BTreeMap<String, Resolved>,
    ) -> BTreeMap<String, crate::inventory::ManifestsRecord> {
        self.renderer
            .artifacts(claim, versions)
            .into_iter()
            .map(|(service, (reference, a))| {
                let record = crate::inventory::ManifestsRecord {
                    reference,
                    digest: a.digest,
                    source: a.source,
                    revision: a.revision,
                };
                (service, record)
            })
            .collect()
    }
}

/// A claim that passed its checks: the claim, when it expires, and its
/// sealed secrets.
type Checked = (Claim, Option<DateTime<Utc>>, Option<Sealed>);

/// A secrets failure as a diagnostic (never a value): at `/sops`, rule `secrets`.
fn secrets_diagnostic(path: &str, e: &crate::secret::OpenError) -> Diagnostic {
    Diagnostic::new(
        path,
        "/sops",
        "secrets",
        format!("{e}; the environment is left as it is"),
    )
}
