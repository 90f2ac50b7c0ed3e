//! Stage 9, record: conditions and per-environment status.
//!
//! Every environment converge knows of (claimed, live, or both) gets a status
//! with Kubernetes-style conditions: `Ready` plus one condition per problem,
//! each with a stable `reason` used in the API and metric labels.

use serde::Serialize;

/// A condition type/status/reason/message, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl Condition {
    /// A problem condition: `<kind>` is `True` with this reason.
    #[must_use]
    pub fn problem(kind: &str, reason: &str, message: impl Into<String>) -> Condition {
        Condition {
            kind: kind.to_owned(),
            status: "True".to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// The `Ready` condition.
    #[must_use]
    pub fn ready(ready: bool, reason: &str, message: impl Into<String>) -> Condition {
        Condition {
            kind: "Ready".to_owned(),
            status: if ready { "True" } else { "False" }.to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// Stable condition reasons.
pub mod reason {
    pub const APPLIED: &str = "Applied";
    pub const UNCHANGED: &str = "Unchanged";
    pub const PLANNED: &str = "Planned";
    pub const INVALID: &str = "ClaimInvalid";
    pub const DENIED: &str = "PolicyDenied";
    pub const CONFLICT: &str = "DuplicateEnvironment";
    pub const VERSION_UNRESOLVED: &str = "VersionUnresolved";
    pub const SECRETS_UNAVAILABLE: &str = "SecretsUnavailable";
    pub const RENDER_FAILED: &str = "RenderFailed";
    pub const EXPIRED: &str = "Expired";
    pub const UNCLAIMED: &str = "Unclaimed";
    pub const HELD: &str = "MassDeletionHeld";
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// A source refused a newer version of the claim and serves an earlier one.
    pub const REFUSED: &str = "NewerVersionRefused";
    /// A git source requires verified commits for this type, and the newest change is not.
    pub const SIGNATURE_REQUIRED: &str = "SignatureRequired";
}

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::pipeline::{Desired, Evaluation};
use crate::plan::{Change, EnvironmentPlan, Plan};
use crate::resolve::Resolved;
use crate::target::{Inventory, LiveEnvironment};

/// One environment in `/api/v1/environments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Item {
    pub name: String,
    #[serde(rename = "type")]
    pub env_type: String,
    pub pool: String,
    pub owner: String,
    pub source: Option<String>,
    pub revision: Option<String>,
    pub ready: bool,
    /// `Ready`, `Pending`, `Held`, `Failed`, `Invalid` or `Expired`.
    pub status: String,
    pub expires_at: Option<String>,
    pub conditions: Vec<ConditionDoc>,
}

/// A condition as stored and served (owned strings both ways).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ConditionDoc {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

impl From<&Condition> for ConditionDoc {
    fn from(c: &Condition) -> Self {
        ConditionDoc {
            kind: c.kind.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        }
    }
}

/// One pass in an environment's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HistoryEntry {
    pub pass: u64,
    pub time: String,
    pub status: String,
    pub reason: String,
}

/// `/api/v1/environments/{name}`: the item plus what converge knows about it,
/// as clients read it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Detail {
    #[serde(flatten)]
    pub item: Item,
    /// The claim as applied, redacted (secret values never appear).
    pub claim: Option<serde_json::Value>,
    /// The commit (git) or object (s3) this version of the claim came from.
    #[serde(default)]
    pub provenance: Option<crate::source::Provenance>,
    pub versions: BTreeMap<String, Resolved>,
    pub last_plan: Option<EnvironmentPlan>,
    /// Objects converge applied (`kind/name` and digest).
    pub inventory: Vec<InventoryEntry>,
    pub history: VecDeque<HistoryEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct InventoryEntry {
    pub kind: String,
    pub name: String,
    pub digest: crate::render::Digest,
}

/// What the daemon keeps of one environment between passes: the small,
/// owned part of its [`Detail`]. The claim and the inventory are borrowed
/// from the pipeline's cache and the target's inventory, and the API body is
/// serialized on first request, so an environment costs little beyond what
/// the pipeline and the target keep anyway.
#[derive(Debug)]
pub struct EnvStatus {
    pub item: Item,
    pub provenance: Option<crate::source::Provenance>,
    pub versions: BTreeMap<String, Resolved>,
    pub last_plan: Option<EnvironmentPlan>,
    pub history: VecDeque<HistoryEntry>,
    desired: Option<Arc<Desired>>,
    live: Option<Arc<LiveEnvironment>>,
    /// `item` as JSON, for the list body.
    item_json: Bytes,
    /// The `/api/v1/environments/{name}` body, serialized on first use.
    body: OnceLock<Bytes>,
}

impl EnvStatus {
    /// What the state store keeps of an environment: its detail without the
    /// claim and the inventory, which the pipeline and the target provide
    /// again on the first pass after a restart (a few hundred bytes instead
    /// of kilobytes per environment).
    #[must_use]
    pub fn stored(&self) -> Vec<u8> {
        let doc = DetailDoc {
            item: &self.item,
            claim: None,
            provenance: self.provenance.as_ref(),
            versions: &self.versions,
            last_plan: self.last_plan.as_ref(),
            inventory: InventoryDoc(None),
            history: &self.history,
        };
        serde_json::to_vec(&doc).expect("a detail serializes")
    }

    /// An environment as a restart finds it in the state store ([`stored`]):
    /// served without its claim and inventory until the first pass.
    ///
    /// # Errors
    /// When `stored` is not a detail document.
    ///
    /// [`stored`]: EnvStatus::stored
    pub fn restored(stored: &[u8]) -> Result<EnvStatus, serde_json::Error> {
        let d: Detail = serde_json::from_slice(stored)?;
        let status = EnvStatus {
            item_json: Bytes::from(serde_json::to_vec(&d.item)?),
            item: d.item,
            provenance: d.provenance,
            versions: d.versions,
            last_plan: d.last_plan,
            history: d.history,
            desired: None,
            live: None,
            body: OnceLock::new(),
        };
        Ok(status)
    }

    /// The `/api/v1/environments/{name}` body.
    #[must_use]
    pub fn body(&self) -> Bytes {
        self.body
            .get_or_init(|| {
                let doc = DetailDoc {
                    item: &self.item,
                    claim: self.desired.as_deref().map(redacted),
                    provenance: self.provenance.as_ref(),
                    versions: &self.versions,
                    last_plan: self.last_plan.as_ref(),
                    inventory: InventoryDoc(self.live.as_deref()),
                    history: &self.history,
                };
                Bytes::from(serde_json::to_vec(&doc).expect("a detail serializes"))
            })
            .clone()
    }
}

/// The serialized form of [`Detail`], borrowing its parts.
#[derive(Serialize)]
struct DetailDoc<'a> {
    #[serde(flatten)]
    item: &'a Item,
    claim: Option<serde_json::Value>,
    provenance: Option<&'a crate::source::Provenance>,
    versions: &'a BTreeMap<String, Resolved>,
    last_plan: Option<&'a EnvironmentPlan>,
    inventory: InventoryDoc<'a>,
    history: &'a VecDeque<HistoryEntry>,
}

struct InventoryDoc<'a>(Option<&'a LiveEnvironment>);

impl Serialize for InventoryDoc<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            kind: &'a str,
            name: &'a str,
            digest: crate::render::Digest,
        }
        s.collect_seq(self.0.into_iter().flat_map(|l| {
            l.objects.values().map(|o| Entry {
                kind: o.kind.as_ref(),
                name: o.name.as_ref(),
                digest: o.digest,
            })
        }))
    }
}

/// What one pass did, as the status stage needs it.
#[derive(Debug, Clone, Copy)]
pub struct PassFacts<'a> {
    pub pass: u64,
    pub time: &'a str,
    pub evaluation: &'a Evaluation,
    pub plan: &'a Plan,
    /// Environments applied this pass (empty when only planning or held).
    pub applied: &'a [String],
    /// Environments whose apply failed, with the reason and message.
    pub failed: &'a BTreeMap<String, (String, String)>,
    /// Whether the plan was applied (false for `plan` and held plans).
    pub applying: bool,
    /// The target's inventory after the pass.
    pub live: &'a Inventory,
}

/// Every environment's status after a pass, and the names whose status
/// changed (added, updated or removed) since `previous`. An environment
/// whose claim, live objects, plan entry and conditions are all as they were
/// keeps its previous entry (same `Arc`): a one-claim pass builds one status.
#[must_use]
pub fn statuses(
    facts: &PassFacts<'_>,
    previous: &BTreeMap<String, Arc<EnvStatus>>,
    history_len: usize,
) -> (BTreeMap<String, Arc<EnvStatus>>, Vec<String>) {
    let eval = facts.evaluation;
    let plans: HashMap<&str, &EnvironmentPlan> = facts
        .plan
        .environments
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    let applied: HashSet<&str> = facts.applied.iter().map(String::as_str).collect();
    let mut names: BTreeSet<&str> = eval.desired.keys().map(String::as_str).collect();
    names.extend(eval.keep.keys().map(String::as_str));
    names.extend(eval.expired.keys().map(String::as_str));
    names.extend(facts.live.environments.keys().map(String::as_str));
    let mut out = BTreeMap::new();
    let mut touched = Vec::new();
    for name in names {
        let desired = eval.desired.get(name);
        let live = facts.live.environments.get(name);
        let plan = plans.get(name).copied();
        let applied_now = plan.is_some() && applied.contains(name);
        let Some((ready, status, reason, message)) =
            readiness(facts, name, plan, applied_now, desired.is_some())
        else {
            continue;
        };
        let mut conditions: Vec<ConditionDoc> = Vec::new();
        conditions.push(ConditionDoc {
            kind: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            reason: reason.clone(),
            message,
        });
        conditions.extend(
            eval.conditions
                .get(name)
                .into_iter()
                .flatten()
                .map(ConditionDoc::from),
        );
        let before = previous.get(name);
        if let Some(b) = before
            && plan.is_none()
            && b.item.ready == ready
            && b.item.status == status
            && b.item.conditions == conditions
            && same(b.desired.as_ref(), desired)
            && same_live(b.live.as_ref(), live)
        {
            out.insert(name.to_owned(), b.clone());
            continue;
        }
        let record = desired.map(|d| &d.record).or(live.map(|l| &l.record));
        let item = match (record, before) {
            (Some(record), _) => Item {
                name: name.to_owned(),
                env_type: record.env_type.clone(),
                pool: record.pool.clone(),
                owner: record.owner.clone(),
                source: record
                    .origin
                    .as_ref()
                    .map(|o| format!("{}:{}", o.source, o.path)),
                revision: desired.map(|d| d.revision.0.clone()),
                ready,
                status: status.to_owned(),
                expires_at: record.expires_at.clone(),
                conditions,
            },
            // Removed (expired, say) but still claimed: keep what we knew.
            (None, Some(before)) => Item {
                ready,
                status: status.to_owned(),
                conditions,
                ..before.item.clone()
            },
            (None, None) => continue,
        };
        let versions = record.map_or_else(
            || before.map(|b| b.versions.clone()).unwrap_or_default(),
            |r| r.versions.clone(),
        );
        let mut history = before.map(|b| b.history.clone()).unwrap_or_default();
        let changed = applied_now
            || history
                .front()
                .is_none_or(|h| h.status != item.status || h.reason != reason);
        if changed {
            history.push_front(HistoryEntry {
                pass: facts.pass,
                time: facts.time.to_owned(),
                status: item.status.clone(),
                reason,
            });
            history.truncate(history_len);
        }
        let entry = EnvStatus {
            item_json: Bytes::from(serde_json::to_vec(&item).expect("an item serializes")),
            item,
            provenance: desired
                .and_then(|d| d.provenance.as_deref().cloned())
                .or_else(|| before.and_then(|b| b.provenance.clone())),
            versions,
            last_plan: plan
                .cloned()
                .or_else(|| before.and_then(|b| b.last_plan.clone())),
            history,
            desired: desired.cloned(),
            live: live.cloned(),
            body: OnceLock::new(),
        };
        touched.push(name.to_owned());
        out.insert(name.to_owned(), Arc::new(entry));
    }
    touched.extend(
        previous
            .keys()
            .filter(|k| !out.contains_key(k.as_str()))
            .cloned(),
    );
    (out, touched)
}

/// `Ready`'s status, reason and message for one environment; `None` when
/// converge has nothing to say about it any more (deleted, not claimed).
fn readiness(
    facts: &PassFacts<'_>,
    name: &str,
    plan: Option<&EnvironmentPlan>,
    applied_now: bool,
    desired: bool,
) -> Option<(bool, &'static str, String, String)> {
    let eval = facts.evaluation;
    if let Some((reason, message)) = facts.failed.get(name) {
        return Some((false, "Failed", reason.clone(), message.clone()));
    }
    if let Some(why) = eval.keep.get(name) {
        let message = "the environment is left as it is".to_owned();
        return Some((false, "Invalid", (*why).to_owned(), message));
    }
    if eval.expired.contains_key(name) {
        let message = "the environment expired".to_owned();
        return Some((false, "Expired", reason::EXPIRED.to_owned(), message));
    }
    if let (Some(hold), Some(_)) = (&facts.plan.hold, plan) {
        return Some((false, "Held", reason::HELD.to_owned(), hold.message.clone()));
    }
    if let Some(p) = plan {
        if facts.applying && applied_now {
            if p.change == Change::Delete {
                return None; // gone: no claim asks for it and it was removed
            }
            return Some((
                true,
                "Ready",
                reason::APPLIED.to_owned(),
                "applied".to_owned(),
            ));
        }
        let message = format!("planned: {:?}", p.change).to_lowercase();
        return Some((false, "Pending", reason::PLANNED.to_owned(), message));
    }
    desired.then(|| {
        let message = "up to date".to_owned();
        (true, "Ready", reason::UNCHANGED.to_owned(), message)
    })
}

fn same(a: Option<&Arc<Desired>>, b: Option<&Arc<Desired>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

fn same_live(a: Option<&Arc<LiveEnvironment>>, b: Option<&Arc<LiveEnvironment>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

fn redacted(d: &Desired) -> serde_json::Value {
    let c = &d.claim;
    let services: serde_json::Map<String, serde_json::Value> = c
        .services
        .iter()
        .map(|(name, s)| {
            let mut m = serde_json::Map::new();
            m.insert(
                "version".into(),
                serde_json::Value::String(s.version.to_string()),
            );
            if let Some(i) = &s.docker_image {
                m.insert("docker_image".into(), serde_json::Value::String(i.clone()));
            }
            if let Some(a) = &s.ansible_artifact {
                m.insert(
                    "ansible_artifact".into(),
                    serde_json::Value::String(a.clone()),
                );
            }
            (name.clone(), serde_json::Value::Object(m))
        })
        .collect();
    let secrets: serde_json::Map<String, serde_json::Value> = c
        .secret_names
        .iter()
        .map(|n| (n.clone(), serde_json::Value::String("***".into())))
        .collect();
    serde_json::json!({
        "user": c.user,
        "environment_pool": c.environment_pool,
        "creation_date": crate::render::timestamp(c.creation_date),
        "environment_name": c.environment_name.as_str(),
        "environment_type": c.environment_type.as_str(),
        "expiration_date": c.expiration_date.map(crate::render::timestamp),
        "deployment_method": c.deployment_method.as_str(),
        "git_repository": c.git_repository,
        "branch": c.branch,
        "services": services,
        "secrets": secrets,
    })
}

/// Every environment's status, by name, as a view shares it.
pub type Statuses = Arc<BTreeMap<String, Arc<EnvStatus>>>;

/// An immutable snapshot of everything the API serves. The loop builds a new
/// one after each pass and swaps it in; readers never wait on a pass.
#[derive(Debug, Default)]
pub struct View {
    /// Every source read at least once since start, and the first pass done.
    pub ready: bool,
    /// Every environment, sorted by name (list filters, detail bodies, the page).
    pub environments: Statuses,
    /// Pre-serialized `/api/v1/environments` (unfiltered).
    pub list: Bytes,
    pub sources: Bytes,
    pub plan: Bytes,
    pub events: Bytes,
    /// The last plan, for the status page.
    pub last_plan: Option<std::sync::Arc<Plan>>,
    pub pass: u64,
}

impl View {
    /// Builds a view from the environments' statuses.
    #[must_use]
    pub fn new(
        environments: Statuses,
        sources: &impl Serialize,
        plan: Option<std::sync::Arc<Plan>>,
        events: &impl Serialize,
        ready: bool,
        pass: u64,
    ) -> View {
        let size: usize = environments.values().map(|e| e.item_json.len() + 1).sum();
        let mut list = Vec::with_capacity(size + 16);
        list.extend_from_slice(b"{\"items\":[");
        for (i, e) in environments.values().enumerate() {
            if i > 0 {
                list.push(b',');
            }
            list.extend_from_slice(&e.item_json);
        }
        list.extend_from_slice(b"]}");
        View {
            ready,
            list: Bytes::from(list),
            environments,
            sources: list_json(sources),
            plan: Bytes::from(serde_json::to_vec(&plan.as_deref()).expect("a plan serializes")),
            events: list_json(events),
            last_plan: plan,
            pass,
        }
    }

    /// The same view with new sources and events (nothing else changed);
    /// `events` is the serialized body (see [`list_json`]).
    #[must_use]
    pub fn with_sources(&self, sources: &impl Serialize, events: Bytes, ready: bool) -> View {
        View {
            ready,
            environments: self.environments.clone(),
            list: self.list.clone(),
            sources: list_json(sources),
            plan: self.plan.clone(),
            events,
            last_plan: self.last_plan.clone(),
            pass: self.pass,
        }
    }

    /// Every environment's list item, sorted by name.
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.environments.values().map(|e| &e.item)
    }
}

/// `{"items": ...}` as bytes (serialized directly, not through a `Value`).
#[must_use]
pub fn list_json(items: &impl Serialize) -> Bytes {
    #[derive(Serialize)]
    struct Items<'a, T> {
        items: &'a T,
    }
    Bytes::from(serde_json::to_vec(&Items { items }).expect("items serialize"))
}
