//! converge: a declarative `GitOps` reconciler for environment claims.
//!
//! One pass, in pipeline order (the modules below are listed the same way):
//!
//! 1. [`source`] reads claim files as bytes into snapshots;
//! 2. [`load`] parses them (JSON, or YAML under a budget);
//! 3. [`validate`] checks the JSON Schema and asks Cedar;
//! 4. [`resolve`] turns version constraints into tags;
//! 5. [`render`] builds each environment's objects ([`secret`] opens
//!    SOPS-encrypted `secrets` for its `Secret`);
//! 6. [`diff`] compares them with the target's inventory;
//! 7. [`plan`] orders the changes and holds mass deletions;
//! 8. [`apply`] hands the plan to the [`target`];
//! 9. [`status`] records conditions.
//!
//! [`pipeline`] runs stages 2–5 for every file in parallel; [`Converge`]
//! wires a [`config::Config`] to sources, pipeline and target.

pub mod api;
pub mod apply;
pub mod artifact;
pub mod blocking;
pub mod claim;
pub mod client;
pub mod condition;
pub mod config;
pub mod coordination;
pub mod diagnostic;
pub mod diff;
pub mod health;
pub mod hex;
pub mod inventory;
pub mod keys;
pub mod load;
pub mod metrics;
pub mod object;
pub mod openapi;
pub mod page;
pub mod pipeline;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod resolve;
pub mod secret;
pub mod shard;
pub mod source;
pub mod state;
pub mod status;
pub mod tags;
pub mod target;
pub mod validate;
pub mod view;
pub mod yaml;

#[cfg(test)]
mod tidy;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use condition::Reason;
use config::{Config, Presets, SourceConfig, TargetConfig};
use pipeline::{Counters, Evaluation, Pipeline};
use plan::Plan;
use source::Snapshot;
use source::dir::DirSource;
use source::git::GitSource;
use source::s3::S3Source;
use target::{Inventory, Target};

/// Why converge cannot start with a config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Schema(#[from] validate::schema::Error),
    #[error(transparent)]
    Policies(#[from] validate::policy::Error),
    #[error(transparent)]
    Templates(#[from] render::Error),
    #[error("invalid presets: {0}")]
    Presets(String),
    #[error("invalid service catalog: {0}")]
    Catalog(String),
    #[error(transparent)]
    Kubernetes(#[from] target::kube::SetupError),
    #[error(transparent)]
    Tags(#[from] tags::Error),
    #[error("the fingerprint key in the state dir cannot be used: {0}")]
    FingerprintKey(String),
}

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

/// A config wired to its pipeline and target.
pub struct Converge {
    pub config: Config,
    pub pipeline: Pipeline,
    pub target: Box<dyn Target>,
    /// The registry or git tag source (`versions.from`), if any.
    pub tags: Option<tags::Scanner>,
    /// The age identity files, stat'ed before every pass.
    pub key_files: keys::KeyFiles,
}

impl std::fmt::Debug for Converge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Converge")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Converge {
    /// Compiles the schema, policies and templates a config names.
    pub fn new(config: Config) -> Result<Converge, SetupError> {
        let (pipeline, key_files) = pipeline_and_keys(&config)?;
        let target: Box<dyn Target> = match &config.target {
            TargetConfig::Manifests { path } => {
                Box::new(target::manifests::Manifests::new(path.clone()))
            }
            TargetConfig::Kubernetes(options) => {
                Box::new(target::kube::Kubernetes::from_config(options)?)
            }
        };
        let tags = tags::Scanner::from_config(&config)?;
        match identities_notice(&config, &pipeline) {
            Some(notice) if pipeline.policies.users() == 0 => tracing::warn!("{notice}"),
            Some(notice) => tracing::info!("{notice}"),
            None => {}
        }
        Ok(Converge {
            config,
            pipeline,
            target,
            tags,
            key_files,
        })
    }

    /// The locks every writer (`run`, `run --once`) holds while it runs: the
    /// state dir's, and a manifests target directory's (two writers with
    /// different state dirs must not write one directory either). A second
    /// writer fails at once, naming the holder.
    pub fn writer_locks(&self) -> Result<Vec<state::WriterLock>, state::Error> {
        let mut locks = vec![state::WriterLock::acquire(&self.config.state_dir)?];
        if let TargetConfig::Manifests { path } = &self.config.target {
            locks.push(state::WriterLock::acquire_target(path)?);
        }
        Ok(locks)
    }

    /// For a writer (`run`): the installation's fingerprint key, created in
    /// the state dir (made 0700 when missing) on first use, so `Secret`
    /// digests and fingerprints stay the same across restarts.
    pub fn with_installation_key(mut self) -> Result<Converge, SetupError> {
        let key = keys::fingerprint_key(&self.config.state_dir, true)
            .map_err(|e| SetupError::FingerprintKey(e.to_string()))?;
        self.pipeline.renderer.set_fingerprint_key(key);
        Ok(self)
    }

    /// Reads every source once; any unreadable source fails the read (never
    /// an empty snapshot).
    pub fn read_sources(&self) -> Result<Vec<Snapshot>, source::Error> {
        let mut sources = self.sources()?;
        sources.iter_mut().map(|s| s.read()).collect()
    }

    /// The configured sources, ready to read.
    pub fn sources(&self) -> Result<Vec<Box<dyn source::Source>>, source::Error> {
        self.config.sources.iter().map(|s| self.source(s)).collect()
    }

    /// One configured source, built by its kind's `from_config`.
    pub fn source(&self, config: &SourceConfig) -> Result<Box<dyn source::Source>, source::Error> {
        let (max, every, state) = (
            self.config.limits.max_file_bytes,
            self.config.reconcile.dir_interval,
            &self.config.state_dir,
        );
        Ok(match config {
            SourceConfig::Dir { .. } => Box::new(DirSource::from_config(config, every, max)?),
            SourceConfig::Git { .. } => Box::new(GitSource::from_config(config, state, max)?),
            SourceConfig::S3 { .. } => Box::new(S3Source::from_config(config, max)?),
        })
    }

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

    /// Lists the tags of services the cached claims need and the tag source
    /// has never tried; true when the pipeline got new lists.
    pub fn list_new_tags(&mut self, cache: &pipeline::Cache) -> bool {
        let Some(scanner) = &mut self.tags else {
            return false;
        };
        let new = scanner.want(&cache.wanted());
        if new.is_empty() {
            return false;
        }
        let outcome = scanner.scan(Some(&new));
        for (key, reason, message) in &outcome.failed {
            tracing::warn!(service = %key.service, dev = key.dev, reason = %reason, "{message}");
        }
        self.adopt_tags();
        outcome.changed
    }

    /// Hands the scanner's tag lists to the pipeline: the one place
    /// [`Pipeline::tags`] follows the tag source (after a scan, and after
    /// restoring the lists from the state store).
    pub fn adopt_tags(&mut self) {
        if let Some(scanner) = &self.tags {
            self.pipeline.tags = scanner.tag_set();
        }
    }

    /// Lists every wanted repository again (the daemon, every
    /// `versions.interval`); the pipeline gets the lists. `None` without a
    /// tag source.
    pub fn scan_tags(&mut self) -> Option<tags::ScanOutcome> {
        let scanner = self.tags.as_mut()?;
        let outcome = scanner.scan(None);
        if outcome.changed {
            self.adopt_tags();
        }
        Some(outcome)
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
}

impl Converge {
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

/// The pipeline a config describes (schema, policies, presets, templates,
/// secrets keys). The age key files are read once, here; the fingerprint key
/// is the state dir's when it exists (read-only commands create nothing).
pub fn pipeline_for(config: &Config) -> Result<Pipeline, SetupError> {
    Ok(pipeline_and_keys(config)?.0)
}

fn pipeline_and_keys(config: &Config) -> Result<(Pipeline, keys::KeyFiles), SetupError> {
    let schema = match &config.schema {
        Some(path) => validate::schema::Schema::from_file(path)?,
        None => validate::schema::Schema::builtin(),
    };
    let mut policies = match &config.policies {
        Some(dir) => validate::policy::Policies::from_dir(dir)?,
        None => validate::policy::Policies::builtin(),
    };
    if let Some(file) = &config.identities {
        policies = policies.with_identities(file)?;
    }
    let presets = Presets::new(&config.presets).map_err(SetupError::Presets)?;
    let key = keys::fingerprint_key(&config.state_dir, false)
        .map_err(|e| SetupError::FingerprintKey(e.to_string()))?;
    let mut renderer = render::Renderer::new(presets, config.images.registry.clone())
        .with_dev_registry(config.images.dev_registry.clone())
        .with_fingerprint_key(key);
    if let Some(t) = &config.templates {
        renderer = renderer.with_templates(&t.path, &t.cluster_scoped)?;
    }
    if let Some(store) = artifact::Store::from_config(config, &config.state_dir) {
        renderer = renderer.with_manifests(Arc::new(store));
    }
    // The fixed lists; a registry or git tag source replaces them with what
    // it reads (the daemon before each pass, `validate` and `plan` once).
    let tags = if config.versions.from == config::VersionsFrom::Static {
        resolve::TagSet::fixed(&config.tags)
    } else {
        resolve::TagSet::default()
    };
    let catalog = config.catalog().map_err(SetupError::Catalog)?;
    let signatures_required = config
        .sources
        .iter()
        .filter_map(|s| match s {
            SourceConfig::Git {
                name,
                signatures: Some(sig),
                ..
            } => Some((name.clone(), sig.required_for.clone())),
            _ => None,
        })
        .collect();
    let key_files = keys::KeyFiles::new(config.secrets.age_key_files.clone());
    let pipeline = Pipeline {
        schema,
        policies,
        renderer,
        tags,
        catalog,
        signatures_required,
        sources: config.sources.iter().map(|s| s.name().to_owned()).collect(),
        pool_prefixes: config
            .sources
            .iter()
            .filter_map(|s| match s {
                SourceConfig::S3 {
                    name,
                    prefix,
                    pool_from_prefix: true,
                    ..
                } => Some((name.clone(), prefix.clone())),
                _ => None,
            })
            .collect(),
        limits: pipeline::Limits {
            per_pool: config.limits.environments_per_pool,
            per_user: config.limits.environments_per_user,
            services_per_claim: config.limits.services_per_claim,
        },
        secrets: key_files.keys(),
        decrypts: std::sync::atomic::AtomicUsize::new(0),
    };
    Ok((pipeline, key_files))
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
/// first git source for path globs and trusted signing keys when there is one.
pub fn pull_request_plan(
    config: &Config,
    pr: &PullRequest<'_>,
    now: DateTime<Utc>,
) -> Result<(Plan, Evaluation), PlanError> {
    let mut pipeline = pipeline_for(config)?;
    let git = config.sources.iter().find_map(|s| match s {
        SourceConfig::Git {
            name,
            paths,
            signatures,
            ..
        } => Some((name.clone(), paths.clone(), signatures.clone())),
        _ => None,
    });
    let (name, paths, signatures) = git.unwrap_or_else(|| ("repo".to_owned(), Vec::new(), None));
    let trust = source::verify::Trust::from_config(signatures.as_ref()).map_err(|e| {
        source::Error::Git {
            source_name: name.clone(),
            error: Box::new(e.into()),
        }
    })?;
    let max = config.limits.max_file_bytes;
    let base = source::git::read_revision(&name, pr.repo, pr.base, &paths, &trust, max)?;
    let head = source::git::read_revision(&name, pr.repo, pr.head, &paths, &trust, max)?;
    let options = pipeline::Options { now };
    if let Some(mut scanner) = tags::Scanner::from_config(config).map_err(SetupError::from)? {
        // The tags both revisions need, read once.
        let mut cache = pipeline::Cache::default();
        let both = [base.clone(), head.clone()];
        let _ = pipeline.evaluate_cached(&both, &Inventory::default(), options, &mut cache);
        let keys = scanner.want(&cache.wanted());
        scanner.scan(Some(&keys));
        pipeline.tags = scanner.tag_set();
    }
    let before = pipeline.evaluate(std::slice::from_ref(&base), &Inventory::default(), options);
    let live = before.as_live();
    let after = pipeline.evaluate(std::slice::from_ref(&head), &live, options);
    let plan = plan::build(
        &after,
        &live,
        plan::Options {
            max_delete_fraction: config.safety.max_delete_fraction,
            allow_mass_delete: false,
        },
        &mut plan::InSync::default(),
    );
    Ok((plan, after))
}

/// Why a pull-request plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Source(#[from] source::Error),
}
