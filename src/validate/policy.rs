//! Cedar authorization of claims.
//!
//! Every claim is one request: principal = the claim's `user`, action =
//! `create` or `update` (or `delete` when an environment goes away), resource
//! = the environment with its attributes, context = the source it came from
//! and the time. The policy set, schema and entities are parsed, validated and
//! kept resident; each request builds only a tiny entity slice (the user, the
//! user's pools and the environment), so a 12k-user entity store costs nothing
//! per claim. A denial is a diagnostic naming the `@id` of each policy that
//! denied it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::claim::Claim;
use crate::diagnostic::Diagnostic;
use crate::render::service::Emit;
use crate::source::{Provenance, SourceKind};

const BUILTIN_POLICIES: &str = include_str!("../../policies/default.cedar");
const BUILTIN_SCHEMA: &str = include_str!("../../policies/converge.cedarschema");
const BUILTIN_ENTITIES: &str = include_str!("../../policies/entities.json");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read policies {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid policies {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The action a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// The environment a claim would update, as policies see it in
/// `context.live`: who owns it now, so an update is judged against what it
/// changes (another pool, owner or type) and not only against the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Live<'a> {
    /// The source that created it (its claim comes from there).
    pub source: &'a str,
    pub env_type: &'a str,
    pub pool: &'a str,
    pub owner: &'a str,
}

impl<'a> Live<'a> {
    /// The live environment of a target's record (none for a record
    /// written before records carried their origin).
    #[must_use]
    pub fn of(record: &'a crate::inventory::EnvironmentRecord) -> Option<Live<'a>> {
        Some(Live {
            source: &record.origin.as_ref()?.source,
            env_type: &record.env_type,
            pool: &record.pool,
            owner: &record.owner,
        })
    }

    /// What the environment will be once `claim` from `source` applied it.
    #[must_use]
    pub fn after(claim: &'a Claim, source: &'a str) -> Live<'a> {
        Live {
            source,
            env_type: claim.environment_type.as_str(),
            pool: &claim.environment_pool,
            owner: &claim.user,
        }
    }

    /// A digest of these facts, for caches keyed by what was asked.
    #[must_use]
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// What a claim asks for: its environment created, or the live one updated.
#[derive(Debug, Clone, Copy)]
pub enum Ask<'a> {
    Create,
    Update(Option<Live<'a>>),
}

impl Ask<'_> {
    #[must_use]
    pub fn action(&self) -> Action {
        match self {
            Self::Create => Action::Create,
            Self::Update(_) => Action::Update,
        }
    }
}

/// Where a claim came from, as policies see it.
#[derive(Debug, Clone)]
pub struct RequestSource<'a> {
    pub kind: SourceKind,
    pub name: &'a str,
    pub is_static: bool,
    /// The commit or object the claim file came from.
    pub provenance: Option<&'a Provenance>,
    /// Who reviewed and merged that commit, when a forge is configured for
    /// the source (`context.review`); `None` without a forge.
    pub review: Option<&'a crate::review::Lookup>,
}

/// The denial rule of a request denied only by policies annotated
/// `@reason("Unreviewed")`: the change was not reviewed as required.
pub const UNREVIEWED_RULE: &str = "unreviewed";

/// The resident policy set, schema and entities.
pub struct Policies {
    set: PolicySet,
    /// Per user: the user entity and every ancestor (pool) entity.
    slices: HashMap<String, Vec<Entity>>,
    user_type: EntityTypeName,
    pool_type: EntityTypeName,
    env_type: EntityTypeName,
    service_type: EntityTypeName,
    actions: [EntityUid; 3],
    /// `emit`, when the schema declares it (service manifests).
    emit: Option<EntityUid>,
    /// `pin_manifests`, when the schema declares it.
    pin: Option<EntityUid>,
    authorizer: Authorizer,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("users", &self.slices.len())
            .finish_non_exhaustive()
    }
}

impl Policies {
    /// The built-in policy set of `policies/`.
    #[must_use]
    pub fn builtin() -> Policies {
        Self::build(
            "<built-in policies>",
            &[("default.cedar".into(), BUILTIN_POLICIES.into())],
            BUILTIN_SCHEMA,
            BUILTIN_ENTITIES,
        )
        .expect("the built-in policies are valid")
    }

    /// Loads a directory: every `*.cedar` file, one `*.cedarschema` and `entities.json`.
    pub fn from_dir(dir: &Path) -> Result<Policies, Error> {
        let name = dir.display().to_string();
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| Error::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|source| Error::Read {
                path: name.clone(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        let mut policies = Vec::new();
        let mut schema = None;
        for path in &entries {
            match path.extension().and_then(|e| e.to_str()) {
                Some("cedar") => policies.push((file_name(path), read(path)?)),
                Some("cedarschema") if schema.is_none() => schema = Some(read(path)?),
                Some("cedarschema") => {
                    return Err(Error::Invalid {
                        path: name,
                        message: "more than one *.cedarschema file".into(),
                    });
                }
                _ => {}
            }
        }
        let schema = schema.ok_or_else(|| Error::Invalid {
            path: name.clone(),
            message: "no *.cedarschema file".into(),
        })?;
        let entities_path = dir.join("entities.json");
        let entities = if entities_path.exists() {
            read(&entities_path)?
        } else {
            "[]".to_owned()
        };
        if policies.is_empty() {
            return Err(Error::Invalid {
                path: name,
                message: "no *.cedar policy file".into(),
            });
        }
        Self::build(&name, &policies, &schema, &entities)
    }

    fn build(
        name: &str,
        files: &[(String, String)],
        schema: &str,
        entities: &str,
    ) -> Result<Policies, Error> {
        let invalid = |message: String| Error::Invalid {
            path: name.to_owned(),
            message,
        };
        let (schema, _warnings) =
            Schema::from_cedarschema_str(schema).map_err(|e| invalid(format!("schema: {e}")))?;
        let mut set = PolicySet::new();
        for (file, text) in files {
            let parsed = PolicySet::from_str(text).map_err(|e| invalid(format!("{file}: {e}")))?;
            for (i, policy) in parsed.policies().enumerate() {
                let id = policy
                    .annotation("id")
                    .map_or_else(|| format!("{file}#{i}"), str::to_owned);
                set.add(policy.new_id(PolicyId::new(&id)))
                    .map_err(|e| invalid(format!("{file}: policy {id:?}: {e}")))?;
            }
        }
        let validation = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
        if !validation.validation_passed() {
            let errors: Vec<String> = validation
                .validation_errors()
                .map(ToString::to_string)
                .collect();
            return Err(invalid(format!(
                "policies do not match the schema: {}",
                errors.join("; ")
            )));
        }
        let store = Entities::from_json_str(entities, Some(&schema))
            .map_err(|e| invalid(format!("entities.json: {e}")))?;
        let user_type = EntityTypeName::from_str("Converge::User").expect("valid type name");
        let slices = slices(&store, &user_type);
        let action = |a: &str| {
            EntityUid::from_str(&format!("Converge::Action::\"{a}\"")).expect("valid action uid")
        };
        let emit = action("emit");
        let emit = schema.actions().any(|a| *a == emit).then_some(emit);
        let pin = action("pin_manifests");
        let pin = schema.actions().any(|a| *a == pin).then_some(pin);
        Ok(Policies {
            set,
            slices,
            service_type: EntityTypeName::from_str("Converge::Service").expect("valid type name"),
            emit,
            pin,
            user_type,
            pool_type: EntityTypeName::from_str("Converge::Pool").expect("valid type name"),
            env_type: EntityTypeName::from_str("Converge::Environment").expect("valid type name"),
            actions: [action("create"), action("update"), action("delete")],
            authorizer: Authorizer::new(),
        })
    }

    /// Replaces the entities with the users and pools of an identities file:
    /// a mapping of pool to its members (YAML or JSON), the shape of the
    /// group export a platform already has.
    pub fn with_identities(mut self, path: &Path) -> Result<Policies, Error> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: name.clone(),
            source,
        })?;
        let pools: std::collections::BTreeMap<String, Vec<String>> = if text.trim().is_empty() {
            std::collections::BTreeMap::new()
        } else {
            serde_saphyr::from_str_with_options(&text, crate::yaml_limits::options()).map_err(
                |e| Error::Invalid {
                    path: name.clone(),
                    message: format!("expected a mapping of pool to its users: {e}"),
                },
            )?
        };
        let mut users: std::collections::BTreeMap<&str, Vec<serde_json::Value>> =
            std::collections::BTreeMap::new();
        for (pool, members) in &pools {
            for user in members {
                users
                    .entry(user)
                    .or_default()
                    .push(serde_json::json!({"type": "Converge::Pool", "id": pool}));
            }
        }
        let entities: Vec<serde_json::Value> = pools
            .keys()
            .map(|p| {
                serde_json::json!({"uid": {"type": "Converge::Pool", "id": p}, "attrs": {}, "parents": []})
            })
            .chain(users.into_iter().map(|(u, parents)| {
                serde_json::json!({"uid": {"type": "Converge::User", "id": u}, "attrs": {}, "parents": parents})
            }))
            .collect();
        let store =
            Entities::from_json_value(serde_json::Value::Array(entities), None).map_err(|e| {
                Error::Invalid {
                    path: name,
                    message: e.to_string(),
                }
            })?;
        self.slices = slices(&store, &self.user_type);
        Ok(self)
    }

    /// The number of users the entities declare (none: every claim is denied
    /// by policies that require pool membership).
    #[must_use]
    pub fn users(&self) -> usize {
        self.slices.len()
    }

    /// Asks whether `claim.user` may perform `action` on the claimed
    /// environment from `source`; a denial is a diagnostic on `file`.
    #[allow(
        clippy::too_many_lines,
        reason = "builds the Cedar request's entities in the order the schema declares them"
    )]
    pub fn authorize(
        &self,
        file: &str,
        claim: &Claim,
        ask: Ask<'_>,
        source: &RequestSource<'_>,
        now_unix: i64,
        expires_at: Option<i64>,
    ) -> Result<(), Diagnostic> {
        let action = ask.action();
        let deny = |message: String| {
            Err(Diagnostic::new(file, "", "policy", message)
                .for_environment(Some(claim.environment_name.as_str())))
        };
        let principal =
            EntityUid::from_type_name_and_id(self.user_type.clone(), EntityId::new(&claim.user));
        let (resource, entities) = match self.environment_entities(claim, expires_at, Vec::new()) {
            Ok(e) => e,
            Err(e) => return deny(format!("cannot build the policy request: {e}")),
        };
        let live = match ask {
            Ask::Update(Some(live)) => Some(self.live_record(&live)),
            _ => None,
        };
        let context = request_context(source, now_unix, live);
        let context = match context {
            Ok(c) => c,
            Err(e) => return deny(format!("cannot build the policy request: {e}")),
        };
        let action_uid = match action {
            Action::Create => &self.actions[0],
            Action::Update => &self.actions[1],
            Action::Delete => &self.actions[2],
        };
        let request = match Request::new(principal, action_uid.clone(), resource, context, None) {
            Ok(r) => r,
            Err(e) => return deny(format!("cannot build the policy request: {e}")),
        };
        let response = self
            .authorizer
            .is_authorized(&request, &self.set, &entities);
        if response.decision() == Decision::Allow {
            return Ok(());
        }
        let who = format!(
            "user {:?} may not {} {} environment {:?} in pool {:?} from {} source {:?}",
            claim.user,
            action.as_str(),
            claim.environment_type,
            claim.environment_name.as_str(),
            claim.environment_pool,
            source.kind.as_str(),
            source.name
        );
        let reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        let unreviewed = !reasons.is_empty()
            && response.diagnostics().reason().all(|id| {
                self.set
                    .policy(id)
                    .and_then(|p| p.annotation("reason"))
                    .is_some_and(|r| r == "Unreviewed")
            });
        let mut message = if reasons.is_empty() {
            format!(
                "{who}: no policy permits it (default deny; is the user a member of pool {:?}?)",
                claim.environment_pool
            )
        } else {
            format!("{who}: denied by policy {}", reasons.join(", "))
        };
        if !errors.is_empty() {
            message = format!("{message}; policy errors: {}", errors.join("; "));
        }
        if unreviewed {
            if let Some(crate::review::Lookup::Known(review)) = source.review {
                message = format!("{message}: {}", review.describe());
            }
            return Err(Diagnostic::new(file, "", UNREVIEWED_RULE, message)
                .for_environment(Some(claim.environment_name.as_str())));
        }
        deny(message)
    }
}

impl Policies {
    /// The environment a claim asks for as a Cedar entity, and the request's
    /// entities: the user with their pools, the environment, and `more`.
    fn environment_entities(
        &self,
        claim: &Claim,
        expires_at: Option<i64>,
        more: Vec<Entity>,
    ) -> Result<(EntityUid, Entities), String> {
        let principal =
            EntityUid::from_type_name_and_id(self.user_type.clone(), EntityId::new(&claim.user));
        let pool = EntityUid::from_type_name_and_id(
            self.pool_type.clone(),
            EntityId::new(&claim.environment_pool),
        );
        let resource = EntityUid::from_type_name_and_id(
            self.env_type.clone(),
            EntityId::new(claim.environment_name.as_str()),
        );
        let strings = |items: &mut dyn Iterator<Item = &String>| {
            RestrictedExpression::new_set(
                items.map(|s| RestrictedExpression::new_string(s.clone())),
            )
        };
        let mut attrs: HashMap<String, RestrictedExpression> = HashMap::from([
            (
                "type".into(),
                RestrictedExpression::new_string(claim.environment_type.as_str().into()),
            ),
            ("pool".into(), RestrictedExpression::new_entity_uid(pool)),
            (
                "owner".into(),
                RestrictedExpression::new_entity_uid(principal.clone()),
            ),
            (
                "deployment_method".into(),
                RestrictedExpression::new_string(claim.deployment_method.as_str().into()),
            ),
            ("services".into(), strings(&mut claim.services.keys())),
            (
                "named_for_pool".into(),
                RestrictedExpression::new_bool(named_for_pool(claim)),
            ),
            ("secrets".into(), strings(&mut claim.secret_names.iter())),
        ]);
        if let Some(at) = expires_at {
            attrs.insert("expires_at".into(), RestrictedExpression::new_long(at));
        }
        if let Some(repo) = &claim.git_repository {
            attrs.insert(
                "git_repository".into(),
                RestrictedExpression::new_string(repo.clone()),
            );
        }
        if let Some(branch) = &claim.branch {
            attrs.insert(
                "branch".into(),
                RestrictedExpression::new_string(branch.clone()),
            );
        }
        let env =
            Entity::new(resource.clone(), attrs, HashSet::new()).map_err(|e| e.to_string())?;
        let mut slice = self
            .slices
            .get(&claim.user)
            .cloned()
            .unwrap_or_else(|| vec![Entity::new_no_attrs(principal, HashSet::new())]);
        slice.push(env);
        slice.extend(more);
        let entities = Entities::from_entities(slice, None).map_err(|e| e.to_string())?;
        Ok((resource, entities))
    }

    /// Whether the policies declare the `emit` action (service manifests).
    #[must_use]
    pub fn declares_emit(&self) -> bool {
        self.emit.is_some()
    }

    /// Asks, for each object services' own manifests emit into `claim`'s
    /// environment, whether the policies permit action `emit` (principal =
    /// the service, resource = the environment, context = the object and
    /// its artifact). The first refused: its index, and why in words.
    ///
    /// # Errors
    ///
    /// The index of the first object no policy permits (or one forbids).
    pub fn judge_emits(
        &self,
        claim: &Claim,
        expires_at: Option<i64>,
        emits: &[Emit<'_>],
    ) -> Result<(), (usize, String)> {
        if emits.is_empty() {
            return Ok(());
        }
        let Some(action) = &self.emit else {
            return Err((
                0,
                "the policies declare no action \"emit\", so no service may create objects: declare it as the built-in policies/converge.cedarschema does and permit what services may create".to_owned(),
            ));
        };
        let service = |name: &str| {
            EntityUid::from_type_name_and_id(self.service_type.clone(), EntityId::new(name))
        };
        let mut names: Vec<&str> = emits.iter().map(|e| e.service).collect();
        names.sort_unstable();
        names.dedup();
        let services = names
            .iter()
            .map(|n| Entity::new_no_attrs(service(n), HashSet::new()))
            .collect();
        let (resource, entities) = self
            .environment_entities(claim, expires_at, services)
            .map_err(|e| (0, format!("cannot build the policy request: {e}")))?;
        for (i, e) in emits.iter().enumerate() {
            let fail = |m: String| (i, m);
            let context = emit_context(e)
                .map_err(|m| fail(format!("cannot build the policy request: {m}")))?;
            let request = Request::new(
                service(e.service),
                action.clone(),
                resource.clone(),
                context,
                None,
            )
            .map_err(|m| fail(format!("cannot build the policy request: {m}")))?;
            let response = self
                .authorizer
                .is_authorized(&request, &self.set, &entities);
            if response.decision() == Decision::Allow {
                continue;
            }
            let who = format!(
                "service {:?} may not emit {} ({}) into {} environment {:?}",
                e.service,
                e.group_kind(),
                e.api_version,
                claim.environment_type,
                claim.environment_name.as_str(),
            );
            let reasons: Vec<String> = response
                .diagnostics()
                .reason()
                .map(ToString::to_string)
                .collect();
            let errors: Vec<String> = response
                .diagnostics()
                .errors()
                .map(ToString::to_string)
                .collect();
            let mut message = if reasons.is_empty() {
                format!(
                    "{who}: no policy permits it (default deny: the policies permit action \"emit\" of the kinds services may create)"
                )
            } else {
                format!("{who}: denied by policy {}", reasons.join(", "))
            };
            if !errors.is_empty() {
                message = format!("{message}; policy errors: {}", errors.join("; "));
            }
            return Err(fail(message));
        }
        Ok(())
    }

    /// Asks whether `claim.user` may name `service`'s manifests artifact
    /// itself (`reference`: its `ansible_artifact`, a tag or
    /// `@sha256:<digest>`): action `pin_manifests`.
    ///
    /// # Errors
    ///
    /// Why not, in words (the policies that forbid it, or that none permits it).
    pub fn judge_pin(
        &self,
        claim: &Claim,
        expires_at: Option<i64>,
        service: &str,
        reference: &str,
    ) -> Result<(), String> {
        let Some(action) = &self.pin else {
            return Err("the policies declare no action \"pin_manifests\", so no claim may name a service's manifests artifact: declare it as the built-in policies/converge.cedarschema does".to_owned());
        };
        let build = |m: String| format!("cannot build the policy request: {m}");
        let (resource, entities) = self
            .environment_entities(claim, expires_at, Vec::new())
            .map_err(build)?;
        let principal =
            EntityUid::from_type_name_and_id(self.user_type.clone(), EntityId::new(&claim.user));
        let context = Context::from_pairs([
            (
                "service".to_owned(),
                RestrictedExpression::new_string(service.to_owned()),
            ),
            (
                "reference".to_owned(),
                RestrictedExpression::new_string(reference.to_owned()),
            ),
            (
                "by_digest".to_owned(),
                RestrictedExpression::new_bool(reference.starts_with("@sha256:")),
            ),
        ])
        .map_err(|e| build(e.to_string()))?;
        let request = Request::new(principal, action.clone(), resource, context, None)
            .map_err(|e| build(e.to_string()))?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.set, &entities);
        if response.decision() == Decision::Allow {
            return Ok(());
        }
        let who = format!(
            "user {:?} may not name the manifests artifact of service {service:?} ({reference}) in {} environment {:?}",
            claim.user,
            claim.environment_type,
            claim.environment_name.as_str(),
        );
        let reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        Err(if reasons.is_empty() {
            format!("{who}: no policy permits it (default: only in dev and sue environments)")
        } else {
            format!("{who}: denied by policy {}", reasons.join(", "))
        })
    }

    /// `context.live`: the environment an update changes.
    fn live_record(&self, live: &Live<'_>) -> RestrictedExpression {
        use RestrictedExpression as E;
        let uid = |t: &EntityTypeName, id: &str| {
            E::new_entity_uid(EntityUid::from_type_name_and_id(
                t.clone(),
                EntityId::new(id),
            ))
        };
        E::new_record([
            ("source".to_owned(), E::new_string(live.source.to_owned())),
            ("type".to_owned(), E::new_string(live.env_type.to_owned())),
            ("pool".to_owned(), uid(&self.pool_type, live.pool)),
            ("owner".to_owned(), uid(&self.user_type, live.owner)),
        ])
        .expect("four distinct keys")
    }
}

/// Whether the environment's name is bound to its pool: `<type>-<pool>` or
/// `<type>-<pool>-…` (the default policies require it of dynamic-bucket
/// claims, so a bucket writer can name only environments of pools they
/// belong to).
fn named_for_pool(claim: &Claim) -> bool {
    let prefix = format!(
        "{}-{}",
        claim.environment_type.as_str(),
        claim.environment_pool
    );
    let name = claim.environment_name.as_str();
    name.strip_prefix(&prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

/// The Cedar context: where the claim came from, when, and (for an update)
/// the live environment it changes.
fn request_context(
    source: &RequestSource<'_>,
    now_unix: i64,
    live: Option<RestrictedExpression>,
) -> Result<Context, String> {
    use RestrictedExpression as E;
    let record = |pairs: Vec<(&str, E)>| {
        E::new_record(pairs.into_iter().map(|(k, v)| (k.to_owned(), v))).map_err(|e| e.to_string())
    };
    let string = |s: &str| E::new_string(s.to_owned());
    let set = |items: Vec<String>| E::new_set(items.into_iter().map(E::new_string));
    let mut pairs = vec![
        (
            "source".to_owned(),
            record(vec![
                ("kind", string(source.kind.as_str())),
                ("name", string(source.name)),
                ("static", E::new_bool(source.is_static)),
            ])?,
        ),
        ("time".to_owned(), E::new_long(now_unix)),
    ];
    if let Some(live) = live {
        pairs.push(("live".to_owned(), live));
    }
    if let Some(lookup) = source.review {
        pairs.push((
            "review".to_owned(),
            review_record(lookup, source.provenance)?,
        ));
    }
    match source.provenance {
        Some(Provenance::Git {
            repository,
            branch,
            commit,
            author,
            committer,
            time,
            trailers,
            signature,
        }) => {
            let person = |p: &crate::source::Person| {
                record(vec![("name", string(&p.name)), ("email", string(&p.email))])
            };
            let mut fields = vec![
                ("id", string(commit)),
                ("repository", string(repository)),
                ("branch", string(branch)),
                ("author", person(author)?),
                ("committer", person(committer)?),
                ("time", E::new_long(*time)),
                ("signature", string(&signature.kind)),
                ("verified", E::new_bool(signature.verified)),
                ("trailer_keys", set(trailers.keys().cloned().collect())),
                (
                    "trailers",
                    set(trailers
                        .iter()
                        .flat_map(|(k, vs)| vs.iter().map(move |v| format!("{k}: {v}")))
                        .collect()),
                ),
            ];
            if let Some(signer) = &signature.signer {
                fields.push(("signer", string(signer)));
            }
            pairs.push(("commit".to_owned(), record(fields)?));
        }
        Some(Provenance::S3 {
            bucket,
            key,
            etag,
            metadata,
            ..
        }) => {
            let object = record(vec![
                ("bucket", string(bucket)),
                ("key", string(key)),
                ("etag", string(etag)),
                (
                    "metadata",
                    set(metadata.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                ),
            ])?;
            pairs.push(("object".to_owned(), object));
        }
        None => {}
    }
    Context::from_pairs(pairs).map_err(|e| e.to_string())
}

/// `context.review`: the pull request that merged the claim's commit, who
/// approved its merged head (the author excluded), who merged it, and
/// whether the forge could be asked at all (`known`).
fn review_record(
    lookup: &crate::review::Lookup,
    provenance: Option<&Provenance>,
) -> Result<RestrictedExpression, String> {
    use RestrictedExpression as E;
    let set = |items: &std::collections::BTreeSet<String>| {
        E::new_set(items.iter().cloned().map(E::new_string))
    };
    let mut fields: Vec<(String, E)> = Vec::new();
    match lookup {
        crate::review::Lookup::Known(r) => {
            fields.push(("known".into(), E::new_bool(true)));
            fields.push(("commit".into(), E::new_string(r.commit.clone())));
            fields.push(("approvers".into(), set(&r.approvers)));
            fields.push((
                "approvals_at_head".into(),
                E::new_long(i64::try_from(r.approvals_at_head()).unwrap_or(i64::MAX)),
            ));
            if let Some(pr) = r.pr {
                fields.push((
                    "pr".into(),
                    E::new_long(i64::try_from(pr).unwrap_or(i64::MAX)),
                ));
            }
            if let Some(a) = &r.author {
                fields.push(("author".into(), E::new_string(a.clone())));
            }
            if let Some(m) = &r.merged_by {
                fields.push(("merged_by".into(), E::new_string(m.clone())));
            }
        }
        crate::review::Lookup::Unavailable(_) => {
            let commit = match provenance {
                Some(Provenance::Git { commit, .. }) => commit.clone(),
                _ => String::new(),
            };
            fields.push(("known".into(), E::new_bool(false)));
            fields.push(("commit".into(), E::new_string(commit)));
            fields.push(("approvers".into(), E::new_set([])));
            fields.push(("approvals_at_head".into(), E::new_long(0)));
        }
    }
    E::new_record(fields).map_err(|e| e.to_string())
}

impl crate::render::service::Judge for Policies {
    fn judge(
        &self,
        claim: &Claim,
        expires_at: Option<i64>,
        emits: &[Emit<'_>],
    ) -> Result<(), (usize, String)> {
        self.judge_emits(claim, expires_at, emits)
    }

    fn pin(
        &self,
        claim: &Claim,
        expires_at: Option<i64>,
        service: &str,
        reference: &str,
    ) -> Result<(), String> {
        self.judge_pin(claim, expires_at, service, reference)
    }
}

/// The Cedar context of an `emit` request: the object and its artifact.
fn emit_context(e: &Emit<'_>) -> Result<Context, String> {
    use RestrictedExpression as E;
    let string = |s: &str| E::new_string(s.to_owned());
    let artifact = E::new_record(
        [
            ("version", string(e.version)),
            ("digest", string(&e.artifact.digest)),
            ("source", string(&e.artifact.source)),
            ("revision", string(&e.artifact.revision)),
            ("origin", string(&e.artifact.origin)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v)),
    )
    .map_err(|e| e.to_string())?;
    Context::from_pairs([
        ("kind".to_owned(), string(e.kind)),
        ("group".to_owned(), string(e.group())),
        ("group_kind".to_owned(), string(&e.group_kind())),
        ("name".to_owned(), string(e.name)),
        ("file".to_owned(), string(e.file)),
        ("artifact".to_owned(), artifact),
    ])
    .map_err(|e| e.to_string())
}

/// Per user: the user entity and every ancestor (pool) entity.
fn slices(store: &Entities, user_type: &EntityTypeName) -> HashMap<String, Vec<Entity>> {
    let mut slices = HashMap::new();
    for entity in store.iter() {
        let uid = entity.uid();
        if uid.type_name() != user_type {
            continue;
        }
        let mut slice = vec![entity.clone()];
        for ancestor in store.ancestors(&uid).into_iter().flatten() {
            if let Some(e) = store.get(ancestor) {
                slice.push(e.clone());
            }
        }
        slices.insert(uid.id().unescaped().to_owned(), slice);
    }
    slices
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::Claim;
    use serde_json::json;

    fn claim(user: &str, pool: &str, env_type: &str, method: &str) -> Claim {
        named(
            user,
            pool,
            env_type,
            method,
            &format!("{env_type}-{pool}-e"),
        )
    }

    fn named(user: &str, pool: &str, env_type: &str, method: &str, name: &str) -> Claim {
        Claim::from_document(
            "f",
            json!({
                "user": user, "environment_pool": pool, "creation_date": "2024-01-15T10:30:00Z",
                "environment_name": name, "environment_type": env_type, "deployment_method": method,
                "services": {"a": "v1.0.0"}
            }),
        )
        .expect("valid")
    }

    fn decide(c: &Claim, kind: SourceKind, is_static: bool) -> Result<(), String> {
        let source = RequestSource {
            kind,
            name: "src",
            is_static,
            provenance: None,
            review: None,
        };
        Policies::builtin()
            .authorize("f", c, Ask::Create, &source, 0, None)
            .map_err(|d| d.message)
    }

    #[test]
    fn prod_and_stage_need_an_approval_by_someone_else_when_a_forge_is_configured() {
        use crate::review::{Lookup, Review};
        let john = "john.doe@company.com";
        let ask = |env_type: &str, review: Option<&Lookup>| {
            let source = RequestSource {
                kind: SourceKind::Git,
                name: "src",
                is_static: false,
                provenance: None,
                review,
            };
            Policies::builtin().authorize(
                "f",
                &claim(john, "team1", env_type, "git"),
                Ask::Create,
                &source,
                0,
                None,
            )
        };
        let reviewed = Lookup::Known(std::sync::Arc::new(Review {
            commit: "m1".into(),
            pr: Some(3),
            author: Some("author".into()),
            merged_by: Some("admin".into()),
            head: Some("h1".into()),
            approvers: ["reviewer".to_owned()].into(),
            stale: std::collections::BTreeSet::new(),
        }));
        let direct = Lookup::Known(std::sync::Arc::new(Review::direct("d1")));
        let down = Lookup::Unavailable("connection refused".into());
        assert!(ask("prod", None).is_ok(), "no forge: no review asked");
        assert!(ask("prod", Some(&reviewed)).is_ok());
        assert!(ask("dev", Some(&direct)).is_ok(), "dev needs no review");
        for (env_type, lookup) in [("prod", &direct), ("stage", &direct), ("prod", &down)] {
            let d = ask(env_type, Some(lookup)).expect_err("unreviewed");
            assert_eq!(d.rule, UNREVIEWED_RULE, "{}", d.message);
            assert!(
                d.message.contains("prod-and-stage-need-review"),
                "{}",
                d.message
            );
        }
        let d = ask("prod", Some(&direct)).expect_err("unreviewed");
        assert!(
            d.message
                .contains("commit d1 was not merged by a pull request"),
            "{}",
            d.message
        );
    }

    #[test]
    fn default_policies_encode_the_platform_rules() {
        let john = "john.doe@company.com";
        let jane = "jane.roe@company.com";
        assert_eq!(
            decide(
                &claim(john, "team1", "dev", "dynamic"),
                SourceKind::S3,
                false
            ),
            Ok(())
        );
        assert_eq!(
            decide(&claim(john, "team1", "prod", "git"), SourceKind::Git, false),
            Ok(())
        );
        assert_eq!(
            decide(&claim(john, "team1", "prod", "git"), SourceKind::S3, true),
            Ok(())
        );
        assert_eq!(
            decide(&claim(jane, "ai", "dev", "dynamic"), SourceKind::Dir, false),
            Ok(())
        );
        assert_eq!(
            decide(
                &named(john, "team1", "dev", "dynamic", "dev-team1"),
                SourceKind::S3,
                false
            ),
            Ok(())
        );
        // Names are not bound for other sources (git and dir are reviewed or local).
        assert_eq!(
            decide(
                &named(john, "team1", "dev", "dynamic", "feature-x"),
                SourceKind::Dir,
                false
            ),
            Ok(())
        );
        let table = [
            (
                claim(john, "team2", "dev", "dynamic"),
                SourceKind::Dir,
                false,
                "no policy permits",
            ),
            (
                claim("nobody@x.io", "team1", "dev", "dynamic"),
                SourceKind::Dir,
                false,
                "no policy permits",
            ),
            (
                claim(john, "team1", "dev", "git"),
                SourceKind::S3,
                false,
                "static-claims-not-from-dynamic-bucket",
            ),
            (
                claim(john, "team1", "prod", "dynamic"),
                SourceKind::S3,
                false,
                "prod-and-stage-not-from-dynamic-bucket",
            ),
            (
                claim(john, "team1", "stage", "dynamic"),
                SourceKind::S3,
                false,
                "prod-and-stage-not-from-dynamic-bucket",
            ),
            (
                claim(john, "team1", "dev", "dynamic"),
                SourceKind::S3,
                true,
                "static-bucket-holds-only-static-claims",
            ),
            (
                claim(jane, "ai", "sue", "dynamic"),
                SourceKind::Dir,
                false,
                "sue-not-in-ai-pool",
            ),
            (
                named(john, "team1", "dev", "dynamic", "prod-team2-payments"),
                SourceKind::S3,
                false,
                "dynamic-bucket-names-bound-to-pool",
            ),
            (
                named(john, "team1", "dev", "dynamic", "dev-team10"),
                SourceKind::S3,
                false,
                "dynamic-bucket-names-bound-to-pool",
            ),
        ];
        for (c, kind, is_static, want) in table {
            let got = decide(&c, kind, is_static).expect_err("denied");
            assert!(got.contains(want), "want {want}: {got}");
        }
    }

    #[test]
    fn an_update_is_judged_against_the_live_environment() {
        let p = Policies::builtin();
        let ops = "ops@company.com";
        let source = RequestSource {
            kind: SourceKind::Dir,
            name: "src",
            is_static: false,
            provenance: None,
            review: None,
        };
        let c = claim(ops, "team1", "dev", "dynamic");
        let live = |pool: &'static str, owner: &'static str, env_type: &'static str| Live {
            source: "src",
            env_type,
            pool,
            owner,
        };
        let ask = |l: Live<'_>| p.authorize("f", &c, Ask::Update(Some(l)), &source, 0, None);
        assert!(ask(live("team1", ops, "dev")).is_ok());
        for moved in [
            live("team2", ops, "dev"),
            live("team1", "john.doe@company.com", "dev"),
            live("team1", ops, "sue"),
        ] {
            let got = ask(moved).expect_err("denied").message;
            assert!(got.contains("update-keeps-pool-owner-and-type"), "{got}");
        }
        assert_eq!(Live::after(&c, "src"), live("team1", ops, "dev"));
    }

    #[test]
    fn identities_replace_the_entities() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("identities.yaml");
        std::fs::write(&file, "team9: [x@y.z]\n").expect("write");
        let p = Policies::builtin().with_identities(&file).expect("loads");
        assert_eq!(p.users(), 1);
        let source = RequestSource {
            kind: SourceKind::Dir,
            name: "src",
            is_static: false,
            provenance: None,
            review: None,
        };
        let ok = p.authorize(
            "f",
            &claim("x@y.z", "team9", "dev", "dynamic"),
            Ask::Create,
            &source,
            0,
            None,
        );
        assert!(ok.is_ok());
        let gone = claim("john.doe@company.com", "team1", "dev", "dynamic");
        assert!(
            p.authorize("f", &gone, Ask::Create, &source, 0, None)
                .is_err()
        );
        std::fs::write(&file, "{}\n").expect("write");
        assert_eq!(
            Policies::builtin()
                .with_identities(&file)
                .expect("loads")
                .users(),
            0
        );
        std::fs::write(&file, "- not a mapping\n").expect("write");
        let err = Policies::builtin()
            .with_identities(&file)
            .expect_err("refused");
        assert!(
            err.to_string().contains("mapping of pool to its users"),
            "{err}"
        );
    }

    #[test]
    fn services_emit_what_the_policies_permit_per_environment_type() {
        use crate::render::service::{Artifact, Emit};
        let artifact = Artifact {
            digest: "sha256:ab".into(),
            source: "reg/oci/billing-manifests".into(),
            revision: "main@sha1:1".into(),
            origin: "https://git.example.com/billing".into(),
        };
        let emit = |api_version, kind| Emit {
            service: "billing",
            version: "1.0.0",
            artifact: &artifact,
            file: "deploy/x.yaml",
            api_version,
            kind,
            name: "x",
        };
        let dev = claim("u@x.io", "p", "dev", "dynamic");
        let prod = claim("u@x.io", "p", "prod", "git");
        let p = Policies::builtin();
        assert!(p.declares_emit());
        let allowed = [
            emit("apps/v1", "Deployment"),
            emit("v1", "Service"),
            emit("rbac.authorization.k8s.io/v1", "RoleBinding"),
            emit("networking.k8s.io/v1", "Ingress"),
            emit("batch/v1", "CronJob"),
        ];
        assert_eq!(p.judge_emits(&dev, None, &allowed), Ok(()));
        assert_eq!(p.judge_emits(&prod, None, &allowed), Ok(()));
        let refused = [emit("apps/v1", "Deployment"), emit("v1", "Secret")];
        let (i, why) = p.judge_emits(&dev, None, &refused).expect_err("a Secret");
        assert_eq!(i, 1);
        assert!(
            why.contains("\"billing\" may not emit Secret (v1)"),
            "{why}"
        );
        assert!(why.contains("no policy permits it"), "{why}");
        let other_group = [emit("evil.example/v1", "Deployment")];
        assert!(p.judge_emits(&dev, None, &other_group).is_err());
        // Naming the artifact itself (ansible_artifact): dev and sue only.
        let digest = format!("@sha256:{}", "ab".repeat(32));
        assert_eq!(p.judge_pin(&dev, None, "billing", &digest), Ok(()));
        let sue = claim("u@x.io", "p", "sue", "dynamic");
        assert_eq!(p.judge_pin(&sue, None, "billing", "1.0.1"), Ok(()));
        let why = p
            .judge_pin(&prod, None, "billing", &digest)
            .expect_err("prod");
        assert!(why.contains("no policy permits it"), "{why}");
        // A platform's own set: no Ingress in prod, and what the artifact
        // says reaches the context.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("s.cedarschema"), BUILTIN_SCHEMA).expect("write");
        std::fs::write(dir.path().join("default.cedar"), BUILTIN_POLICIES).expect("write");
        std::fs::write(
            dir.path().join("narrow.cedar"),
            "@id(\"no-ingress-in-prod\")\nforbid (principal, action == Converge::Action::\"emit\", resource)\nwhen { resource.type == \"prod\" && context.group_kind == \"Ingress.networking.k8s.io\" };\n\
             @id(\"artifacts-from-our-git\")\nforbid (principal, action == Converge::Action::\"emit\", resource)\nunless { context.artifact.origin like \"https://git.example.com/*\" };\n",
        )
        .expect("write");
        let p = Policies::from_dir(dir.path()).expect("loads");
        let ingress = [emit("networking.k8s.io/v1", "Ingress")];
        assert_eq!(p.judge_emits(&dev, None, &ingress), Ok(()));
        let (_, why) = p.judge_emits(&prod, None, &ingress).expect_err("prod");
        assert!(why.contains("denied by policy no-ingress-in-prod"), "{why}");
        // A schema without `emit`: every object refused, saying why.
        std::fs::write(
            dir.path().join("s.cedarschema"),
            BUILTIN_SCHEMA
                .split("  // A service of the catalog")
                .next()
                .expect("head")
                .to_owned()
                + "}\n",
        )
        .expect("write");
        std::fs::remove_file(dir.path().join("narrow.cedar")).expect("rm");
        std::fs::write(
            dir.path().join("default.cedar"),
            BUILTIN_POLICIES
                .split("// What a service's own manifests")
                .next()
                .expect("head"),
        )
        .expect("write");
        let p = Policies::from_dir(dir.path()).expect("loads");
        assert!(!p.declares_emit());
        let (_, why) = p.judge_emits(&dev, None, &allowed).expect_err("no emit");
        assert!(why.contains("declare no action \"emit\""), "{why}");
    }

    #[test]
    fn a_policy_directory_replaces_the_builtin_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("s.cedarschema"), BUILTIN_SCHEMA).expect("write");
        std::fs::write(
            dir.path().join("open.cedar"),
            "@id(\"allow-all\") permit(principal, action, resource);",
        )
        .expect("write");
        let p = Policies::from_dir(dir.path()).expect("loads");
        let source = RequestSource {
            kind: SourceKind::Dir,
            name: "d",
            is_static: false,
            provenance: None,
            review: None,
        };
        assert!(
            p.authorize(
                "f",
                &claim("x@y.z", "nope", "prod", "git"),
                Ask::Create,
                &source,
                0,
                None
            )
            .is_ok()
        );
        std::fs::write(
            dir.path().join("bad.cedar"),
            "permit(principal, action, resource) when { resource.colour == 1 };",
        )
        .expect("write");
        let err = Policies::from_dir(dir.path()).expect_err("schema mismatch");
        assert!(err.to_string().contains("schema"), "{err}");
    }

    #[test]
    fn commit_provenance_reaches_the_policies() {
        use crate::source::{Person, Signature};
        use std::collections::BTreeMap;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("s.cedarschema"), BUILTIN_SCHEMA).expect("write");
        std::fs::write(
            dir.path().join("p.cedar"),
            r#"@id("base") permit(principal, action, resource);
               @id("prod-needs-verified-approved-commits")
               forbid(principal, action, resource)
               when { resource.type == "prod" &&
                      !(context has commit && context.commit.verified &&
                        context.commit.trailer_keys.contains("Approved-by")) };"#,
        )
        .expect("write");
        let p = Policies::from_dir(dir.path()).expect("loads");
        let person = Person {
            name: "A".into(),
            email: "a@x".into(),
        };
        let commit = |verified: bool, trailer: bool| Provenance::Git {
            repository: "https://git.example/envs.git".into(),
            branch: "main".into(),
            commit: "abc".into(),
            author: person.clone(),
            committer: person.clone(),
            time: 0,
            trailers: if trailer {
                [("Approved-by".to_owned(), vec!["Jane <jane@x>".to_owned()])].into()
            } else {
                BTreeMap::new()
            },
            signature: Signature {
                kind: "ssh".into(),
                verified,
                signer: verified.then(|| "ci".into()),
                problem: None,
            },
        };
        let prod = claim("john.doe@company.com", "team1", "prod", "git");
        let ask = |prov: Option<&Provenance>| {
            let source = RequestSource {
                kind: SourceKind::Git,
                name: "envs",
                is_static: false,
                provenance: prov,
                review: None,
            };
            p.authorize("f", &prod, Ask::Update(None), &source, 0, None)
        };
        assert!(ask(Some(&commit(true, true))).is_ok());
        assert!(ask(Some(&commit(false, true))).is_err());
        assert!(ask(Some(&commit(true, false))).is_err());
        let denied = ask(None).expect_err("no commit at all");
        assert!(
            denied
                .message
                .contains("prod-needs-verified-approved-commits"),
            "{}",
            denied.message
        );
    }
}
