//! The evaluation fold: each file's outcome taken into what the claims ask
//! for, what is kept as it is, and why.

#[allow(clippy::wildcard_imports)]
use super::*;

/// What the claims ask for, and what must not be touched.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Environments to create or keep up to date.
    pub desired: BTreeMap<String, Arc<Desired>>,
    /// Valid claims whose environment has expired: removed if live.
    pub expired: BTreeMap<String, DateTime<Utc>>,
    /// Environments that must stay exactly as they are, with the reason.
    pub keep: BTreeMap<String, Reason>,
    pub diagnostics: Vec<Diagnostic>,
    /// Files refused before they became a typed claim (unreadable,
    /// unparsable, schema or secrets errors): the state store keeps their
    /// digest, not their bytes, since they may hold a secret by mistake.
    pub withheld: BTreeSet<Origin>,
    /// Problem conditions per environment name.
    pub conditions: BTreeMap<String, Vec<Condition>>,
    /// What a refused claim asked for, by the environment only it names
    /// (no valid claim, nothing live): its status row shows type, pool and
    /// owner.
    pub refused: BTreeMap<String, Box<EnvironmentRecord>>,
    /// Files refused without naming a valid environment (unparsable, or an
    /// invalid `environment_name`), with their diagnostics: `status` lists
    /// them by file, since there is no environment row to show them on.
    pub unnamed: BTreeMap<Origin, Vec<Diagnostic>>,
    pub counters: Counters,
}

impl Evaluation {
    /// The inventory a target would hold once this evaluation is applied
    /// (the base of a pull-request plan; tests).
    #[must_use]
    pub fn as_live(&self) -> Inventory {
        let environments = self
            .desired
            .iter()
            .map(|(name, d)| {
                let objects = d.objects.iter().map(|o| (o.id.clone(), o.digest)).collect();
                let live = LiveEnvironment {
                    record: d.record.clone(),
                    objects,
                };
                (name.clone(), Arc::new(live))
            })
            .collect();
        Inventory { environments }
    }

    /// Keeps only the environments `owned` accepts (a shard's share):
    /// desired, expired, kept and their conditions. Diagnostics name files
    /// and stay.
    pub fn retain_environments(&mut self, owned: impl Fn(&str) -> bool) {
        self.desired.retain(|name, _| owned(name));
        self.expired.retain(|name, _| owned(name));
        self.keep.retain(|name, _| owned(name));
        self.conditions.retain(|name, _| owned(name));
        self.refused.retain(|name, _| owned(name));
    }

    /// Takes each file's outcome into the evaluation: desired, expired, or
    /// kept as it is with its conditions; names in `conflicted` stay as they
    /// are. A live environment whose claim file is there but unreadable is
    /// kept too. A rejected file holds a live environment only when it comes
    /// from the environment's own source (`sources`: the configured ones):
    /// a bad file elsewhere cannot stop its owner from deleting it.
    pub(super) fn absorb(
        &mut self,
        outcomes: Vec<(Origin, Outcome)>,
        conflicted: &BTreeSet<String>,
        live: &Inventory,
        sources: &BTreeSet<String>,
    ) {
        let mut failed_origins = BTreeSet::new();
        // Names a valid claim takes care of: a rejected file naming one of
        // them keeps its diagnostics but neither holds nor marks it.
        let claimed: BTreeSet<String> = outcomes
            .iter()
            .filter(|(_, o)| !matches!(o, Outcome::Invalid(_)))
            .filter_map(|(_, o)| outcome_name(o).map(str::to_owned))
            .collect();
        for (origin, outcome) in outcomes {
            match outcome {
                Outcome::Invalid(Rejected {
                    name,
                    diagnostics,
                    refusal,
                    stage,
                    asked,
                }) => {
                    if stage < Stage::Validated {
                        self.withheld.insert(origin.clone());
                    }
                    let message = diagnostics
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ");
                    match &name {
                        Some(n)
                            if refusal == Refusal::Taken
                                || matches!(
                                    meets(Some(n), &origin.source, live, sources),
                                    Meets::Owner(_)
                                ) => {}
                        Some(n) if !conflicted.contains(n) && !claimed.contains(n) => {
                            self.hold_refused(n, refusal, message, asked, live);
                        }
                        Some(_) => {}
                        None => {
                            self.unnamed.insert(origin.clone(), diagnostics.clone());
                            failed_origins.insert(origin);
                        }
                    }
                    self.diagnostics.extend(diagnostics);
                }
                Outcome::Kept(kept) => {
                    let Kept {
                        name,
                        why,
                        condition,
                        diagnostic,
                        ..
                    } = *kept;
                    if !conflicted.contains(&name) {
                        self.keep(&name, why, condition);
                    }
                    self.diagnostics.push(diagnostic);
                }
                Outcome::Expired { name, at } => {
                    if !conflicted.contains(&name) {
                        self.conditions
                            .entry(name.clone())
                            .or_default()
                            .push(Condition::problem(
                                ConditionType::Expired,
                                Reason::Expired,
                                format!("expired at {}", timestamp(at)),
                            ));
                        self.expired.insert(name, at);
                    }
                }
                Outcome::Desired(d) => {
                    let name = d.claim.environment_name.as_str().to_owned();
                    if !conflicted.contains(&name) {
                        if !d.conditions.is_empty() {
                            self.conditions
                                .entry(name.clone())
                                .or_default()
                                .extend(d.conditions.iter().cloned());
                        }
                        self.desired.insert(name, d);
                    }
                }
            }
        }
        // A live environment whose claim file is there but unreadable stays as it is.
        for (name, env) in &live.environments {
            if let Some(origin) = &env.record.origin
                && failed_origins.contains(origin)
                && !self.desired.contains_key(name)
            {
                self.keep(
                    name,
                    Reason::ClaimInvalid,
                    Condition::problem(
                        ConditionType::Invalid,
                        Reason::ClaimInvalid,
                        format!("its claim file {} cannot be read", origin.path),
                    ),
                );
            }
        }
    }

    /// A file a source refused a newer version of (it serves an earlier one).
    pub(super) fn refused(
        &mut self,
        snapshot: &Snapshot,
        file: &SourceFile,
        notice: &crate::source::Notice,
        cache: &Cache,
    ) {
        let origin = Origin {
            source: snapshot.source.clone(),
            path: file.path.clone(),
        };
        let name = cache.entries.get(&origin).and_then(|e| e.name.clone());
        if let Some(name) = &name {
            self.conditions
                .entry(name.clone())
                .or_default()
                .push(Condition::problem(
                    ConditionType::Refused,
                    Reason::NewerVersionRefused,
                    notice.message.clone(),
                ));
        }
        self.diagnostics.push(
            Diagnostic::new(&file.path, "", &notice.rule, &notice.message)
                .for_environment(name.as_deref()),
        );
    }

    /// Refuses what exceeds `limits`: a claim naming too many services (its
    /// environment, if live, is kept as it is), and the creation of a
    /// dynamic environment past its pool's or user's count. Live environments
    /// count first and are never removed for a limit; creations are admitted
    /// in name order, so the same claims are admitted on every pass.
    pub(super) fn limit(&mut self, live: &Inventory, limits: Limits) {
        if limits == Limits::default() {
            return;
        }
        let mut refused: Vec<(String, &'static str, String)> = Vec::new();
        if let Some(max) = limits.services_per_claim {
            for (name, d) in &self.desired {
                let n = d.claim.services.len();
                if n > max {
                    refused.push((
                        name.clone(),
                        "/services",
                        format!(
                            "the claim names {n} services, over limits.services_per_claim {max}"
                        ),
                    ));
                }
            }
        }
        let dynamic =
            |d: &Desired| d.claim.deployment_method == crate::claim::DeploymentMethod::Dynamic;
        let mut pools: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let mut users: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (name, d) in &self.desired {
            if live.environments.contains_key(name) && dynamic(d) {
                *pools.entry(&d.claim.environment_pool).or_default() += 1;
                *users.entry(&d.claim.user).or_default() += 1;
            }
        }
        for (name, d) in &self.desired {
            let too_many = limits
                .services_per_claim
                .is_some_and(|max| d.claim.services.len() > max);
            if live.environments.contains_key(name) || !dynamic(d) || too_many {
                continue;
            }
            let (pool, user) = (d.claim.environment_pool.as_str(), d.claim.user.as_str());
            let in_pool = pools.get(pool).copied().unwrap_or(0);
            let by_user = users.get(user).copied().unwrap_or(0);
            let message = match (limits.per_pool, limits.per_user) {
                (Some(max), _) if in_pool >= max => Some(format!(
                    "pool {pool:?} has {in_pool} dynamic environments, limits.environments_per_pool is {max}"
                )),
                (_, Some(max)) if by_user >= max => Some(format!(
                    "user {user:?} has {by_user} dynamic environments, limits.environments_per_user is {max}"
                )),
                _ => None,
            };
            if let Some(m) = message {
                refused.push((
                    name.clone(),
                    "/environment_name",
                    format!("not created: {m}"),
                ));
            } else {
                *pools.entry(pool).or_default() += 1;
                *users.entry(user).or_default() += 1;
            }
        }
        for (name, pointer, message) in refused {
            let Some(d) = self.desired.remove(&name) else {
                continue;
            };
            let condition = Condition::problem(
                ConditionType::Denied,
                Reason::LimitExceeded,
                message.clone(),
            );
            if live.environments.contains_key(&name) {
                self.keep(&name, Reason::LimitExceeded, condition);
            } else {
                self.conditions
                    .entry(name.clone())
                    .or_default()
                    .push(condition);
            }
            self.diagnostics.push(
                Diagnostic::new(&d.origin.path, pointer, "limit", message)
                    .for_environment(Some(&name)),
            );
        }
    }

    /// A rejected file holds the environment it names as it is (and, when
    /// nothing is live, its status row shows what the file asked for).
    fn hold_refused(
        &mut self,
        name: &str,
        refusal: Refusal,
        message: String,
        asked: Option<Box<EnvironmentRecord>>,
        live: &Inventory,
    ) {
        let (kind, why) = match refusal {
            Refusal::Denied => (ConditionType::Denied, Reason::PolicyDenied),
            Refusal::Unreviewed => (ConditionType::Denied, Reason::Unreviewed),
            Refusal::ReviewUnavailable => (ConditionType::Denied, Reason::ReviewUnavailable),
            Refusal::Invalid | Refusal::Taken => (ConditionType::Invalid, Reason::ClaimInvalid),
        };
        self.keep(name, why, Condition::problem(kind, why, message));
        if let Some(asked) = asked
            && !live.environments.contains_key(name)
        {
            self.refused.entry(name.to_owned()).or_insert(asked);
        }
    }

    fn keep(&mut self, name: &str, why: Reason, condition: Condition) {
        self.keep.entry(name.to_owned()).or_insert(why);
        self.conditions
            .entry(name.to_owned())
            .or_default()
            .push(condition);
    }
}
