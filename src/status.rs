//! Stage 9, record: per-environment status from what a pass saw and did.
//!
//! Every environment converge knows of (claimed, live, or both) gets a status
//! with Kubernetes-style [`Condition`]s: `Ready` first, then one condition per
//! problem the pipeline found, each with a stable [`Reason`]. Statuses are
//! rebuilt only where something changed; [`crate::view`] serves them.

use serde::Serialize;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::condition::{Condition, ConditionType, Reason};
use crate::inventory::{Inventory, LiveEnvironment};
use crate::pipeline::{Desired, Evaluation};
use crate::plan::{Change, EnvironmentPlan, Plan};
use crate::resolve::Resolved;

/// An environment's status word: a closed set, written as its name
/// (`"Ready"`, `"Stalled"`, …) in the API, the state store and events.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
pub enum Status {
    /// Applied (or up to date) and healthy.
    Ready,
    /// Applied; some object is still rolling out.
    Reconciling,
    /// Applied; an object failed or the health timeout passed.
    Stalled,
    /// Planned, not applied yet.
    Pending,
    /// A deletion held by the mass-deletion gate.
    Held,
    /// The apply failed.
    Failed,
    /// The claim is refused; the environment is left as it is.
    Invalid,
    /// The claim expired.
    Expired,
}

impl Status {
    /// The word, as the JSON writes it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Reconciling => "Reconciling",
            Self::Stalled => "Stalled",
            Self::Pending => "Pending",
            Self::Held => "Held",
            Self::Failed => "Failed",
            Self::Invalid => "Invalid",
            Self::Expired => "Expired",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    pub status: Status,
    pub expires_at: Option<String>,
    pub conditions: Vec<Condition>,
}

impl Item {
    /// Whether it has a `Drifted` condition (objects changed or deleted by
    /// someone else since converge applied them).
    #[must_use]
    pub fn drifted(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.kind == crate::condition::ConditionType::Drifted && c.status)
    }

    /// The drifted objects' count (the `Drifted` message names one per `; `).
    #[must_use]
    pub fn drifted_objects(&self) -> usize {
        self.conditions
            .iter()
            .filter(|c| c.kind == crate::condition::ConditionType::Drifted && c.status)
            .map(|c| c.message.split("; ").count())
            .sum()
    }
}

/// One pass in an environment's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HistoryEntry {
    pub pass: u64,
    pub time: String,
    pub status: Status,
    pub reason: Reason,
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
    /// Per service with manifests of its own: the artifact it runs
    /// (reference, digest, source, revision).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub manifests: BTreeMap<String, crate::inventory::ManifestsRecord>,
    pub last_plan: Option<EnvironmentPlan>,
    /// Objects converge applied (`kind/name` and digest).
    pub inventory: Vec<InventoryEntry>,
    pub history: VecDeque<HistoryEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct InventoryEntry {
    #[serde(rename = "apiVersion", default)]
    pub api_version: Option<String>,
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
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
    /// Where [`EnvStatus::versions`] are read from.
    versions: Versions,
    pub manifests: BTreeMap<String, crate::inventory::ManifestsRecord>,
    pub last_plan: Option<EnvironmentPlan>,
    pub history: VecDeque<HistoryEntry>,
    desired: Option<Arc<Desired>>,
    live: Option<Arc<LiveEnvironment>>,
    /// `item` as JSON, for the list body.
    pub(crate) item_json: Bytes,
    /// The `/api/v1/environments/{name}` body, serialized on first use.
    body: OnceLock<Bytes>,
}

/// Where an environment's resolved versions are: in its desired or live
/// record (borrowed, not copied: one map per environment, not three), or,
/// with neither (restored, refused, expired), a copy of its own.
#[derive(Debug, Clone)]
enum Versions {
    Desired,
    Live,
    Own(BTreeMap<String, Resolved>),
}

impl Versions {
    /// As `record_of` chooses the record: the desired one, else the live
    /// one, else a copy (of the refused claim's record, or what was known).
    fn of(
        desired: bool,
        live: bool,
        record: Option<&crate::inventory::EnvironmentRecord>,
        before: Option<&Arc<EnvStatus>>,
    ) -> Versions {
        if desired {
            Versions::Desired
        } else if live {
            Versions::Live
        } else {
            Versions::Own(record.map_or_else(
                || before.map(|b| b.versions().clone()).unwrap_or_default(),
                |r| r.versions.clone(),
            ))
        }
    }
}

impl EnvStatus {
    /// The versions the environment resolved (its record's).
    #[must_use]
    pub fn versions(&self) -> &BTreeMap<String, Resolved> {
        match &self.versions {
            Versions::Desired => {
                &self
                    .desired
                    .as_ref()
                    .expect("Versions::Desired only with a desired environment")
                    .record
                    .versions
            }
            Versions::Live => {
                &self
                    .live
                    .as_ref()
                    .expect("Versions::Live only with a live environment")
                    .record
                    .versions
            }
            Versions::Own(v) => v,
        }
    }

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
            versions: self.versions(),
            manifests: &self.manifests,
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
            versions: Versions::Own(d.versions),
            manifests: d.manifests,
            last_plan: d.last_plan,
            history: d.history,
            desired: None,
            live: None,
            body: OnceLock::new(),
        };
        Ok(status)
    }

    /// The same status holding `desired` (an equal environment whose
    /// objects are now shared with the target's record).
    fn with_desired(&self, desired: Option<Arc<Desired>>) -> EnvStatus {
        EnvStatus {
            item: self.item.clone(),
            provenance: self.provenance.clone(),
            versions: self.versions.clone(),
            manifests: self.manifests.clone(),
            last_plan: self.last_plan.clone(),
            history: self.history.clone(),
            desired,
            live: self.live.clone(),
            item_json: self.item_json.clone(),
            body: self.body.clone(),
        }
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
                    versions: self.versions(),
                    manifests: &self.manifests,
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
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    manifests: &'a BTreeMap<String, crate::inventory::ManifestsRecord>,
    last_plan: Option<&'a EnvironmentPlan>,
    inventory: InventoryDoc<'a>,
    history: &'a VecDeque<HistoryEntry>,
}

struct InventoryDoc<'a>(Option<&'a LiveEnvironment>);

impl Serialize for InventoryDoc<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            #[serde(flatten)]
            id: &'a crate::object::ObjectRef,
            digest: crate::render::Digest,
        }
        s.collect_seq(self.0.into_iter().flat_map(|l| {
            l.objects.iter().map(|(id, digest)| Entry {
                id,
                digest: *digest,
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
    pub failed: &'a BTreeMap<String, (Reason, String)>,
    /// Whether the plan was applied (false for `plan`; a held plan applies
    /// all but its deletions).
    pub applying: bool,
    /// The target's inventory after the pass.
    pub live: &'a Inventory,
    /// Each environment's health, where the target observes it.
    pub health: &'a BTreeMap<String, crate::health::EnvironmentHealth>,
    /// Environments whose drift is reported (not corrected), with the objects.
    pub drifted: &'a BTreeMap<String, String>,
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
        let (ready, status, reason, message, health) =
            with_health(facts.health.get(name), (ready, status, reason, message));
        let mut conditions = vec![Condition::ready(ready, reason, message)];
        conditions.extend(health);
        conditions.extend(facts.drifted.get(name).map(|objects| {
            Condition::problem(ConditionType::Drifted, Reason::Drifted, objects.clone())
        }));
        conditions.extend(eval.conditions.get(name).into_iter().flatten().cloned());
        let before = previous.get(name);
        if let Some(b) = before
            && plan.is_none()
            && b.item.ready == ready
            && b.item.status == status
            && b.item.conditions == conditions
            && same_live(b.live.as_ref(), live)
            && let Some(kept) = kept(b, desired)
        {
            out.insert(name.to_owned(), kept);
            continue;
        }
        let record = record_of(name, desired, live, eval);
        let Some(item) = item(
            name,
            record,
            desired.map(AsRef::as_ref),
            before,
            (ready, status),
            conditions,
        ) else {
            continue;
        };
        let versions = Versions::of(desired.is_some(), live.is_some(), record, before);
        let manifests = recorded_manifests(record, before);
        let mut history = before.map(|b| b.history.clone()).unwrap_or_default();
        let changed = applied_now
            || history
                .front()
                .is_none_or(|h| h.status != item.status || h.reason != reason);
        if changed {
            history.push_front(HistoryEntry {
                pass: facts.pass,
                time: facts.time.to_owned(),
                status: item.status,
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
            manifests,
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

/// The record an environment's row shows: what its claim asks for, else
/// what is live, else what a refused claim asked for.
fn record_of<'a>(
    name: &str,
    desired: Option<&'a Arc<Desired>>,
    live: Option<&'a Arc<crate::inventory::LiveEnvironment>>,
    eval: &'a crate::pipeline::Evaluation,
) -> Option<&'a crate::inventory::EnvironmentRecord> {
    desired
        .map(|d| &d.record)
        .or(live.map(|l| &l.record))
        .or(eval.refused.get(name).map(AsRef::as_ref))
}

/// An environment's list item, from its record (desired, else live), or
/// from what was known before when it has neither (removed, but still
/// claimed: an expired environment, say).
fn item(
    name: &str,
    record: Option<&crate::inventory::EnvironmentRecord>,
    desired: Option<&Desired>,
    before: Option<&Arc<EnvStatus>>,
    (ready, status): (bool, Status),
    conditions: Vec<Condition>,
) -> Option<Item> {
    match (record, before) {
        (Some(record), _) => Some(Item {
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
            status,
            expires_at: record.expires_at.clone(),
            conditions,
        }),
        (None, Some(before)) => Some(Item {
            ready,
            status,
            conditions,
            ..before.item.clone()
        }),
        // Named only by a rejected claim: listed, so operators find it.
        (None, None) => (status == Status::Invalid).then(|| Item {
            name: name.to_owned(),
            env_type: String::new(),
            pool: String::new(),
            owner: String::new(),
            source: None,
            revision: None,
            ready,
            status,
            expires_at: None,
            conditions,
        }),
    }
}

/// `Ready`'s status, reason and message for one environment; `None` when
/// converge has nothing to say about it any more (deleted, not claimed).
fn readiness(
    facts: &PassFacts<'_>,
    name: &str,
    plan: Option<&EnvironmentPlan>,
    applied_now: bool,
    desired: bool,
) -> Option<(bool, Status, Reason, String)> {
    let eval = facts.evaluation;
    if let Some((reason, message)) = facts.failed.get(name) {
        return Some((false, Status::Failed, *reason, message.clone()));
    }
    if let Some(why) = eval.keep.get(name) {
        let message = "the environment is left as it is".to_owned();
        return Some((false, Status::Invalid, *why, message));
    }
    if eval.expired.contains_key(name) {
        let message = "the environment expired".to_owned();
        return Some((false, Status::Expired, Reason::Expired, message));
    }
    if let (Some(hold), Some(p)) = (&facts.plan.hold, plan)
        && p.change == Change::Delete
    {
        return Some((
            false,
            Status::Held,
            Reason::MassDeletionHeld,
            hold.message.clone(),
        ));
    }
    if let Some(p) = plan {
        if facts.applying && applied_now {
            if p.change == Change::Delete {
                return None; // gone: no claim asks for it and it was removed
            }
            return Some((true, Status::Ready, Reason::Applied, "applied".to_owned()));
        }
        let message = format!("planned: {:?}", p.change).to_lowercase();
        return Some((false, Status::Pending, Reason::Planned, message));
    }
    desired.then(|| {
        let message = "up to date".to_owned();
        (true, Status::Ready, Reason::Unchanged, message)
    })
}

/// An environment that is otherwise ready is ready only when its objects are
/// healthy: while some object rolls out it is `Reconciling`, and once one
/// failed or the health timeout passed it is `Stalled`; the condition of
/// that name says which objects and why.
fn with_health(
    health: Option<&crate::health::EnvironmentHealth>,
    (ready, status, reason, message): (bool, Status, Reason, String),
) -> (bool, Status, Reason, String, Option<Condition>) {
    let Some(h) = health.filter(|h| ready && h.readiness != crate::health::Readiness::Ready) else {
        return (ready, status, reason, message, None);
    };
    let (status, kind, reason) = if h.readiness == crate::health::Readiness::Stalled {
        let reason = if h.reason == crate::health::Reason::ProgressDeadlineExceeded {
            Reason::ProgressDeadlineExceeded
        } else {
            Reason::Unhealthy
        };
        (Status::Stalled, ConditionType::Stalled, reason)
    } else {
        (
            Status::Reconciling,
            ConditionType::Reconciling,
            Reason::Progressing,
        )
    };
    let message = if reason == Reason::Unhealthy {
        format!("{}: {}", h.reason, h.message)
    } else {
        h.message.clone()
    };
    // Ready says what state it is in; the one long message (which objects,
    // since when) is the Reconciling or Stalled condition's alone.
    let short = format!(
        "{status}: the {} condition names the objects that are not current",
        kind.as_str()
    );
    let condition = Condition::problem(kind, reason, message);
    (false, status, reason, short, Some(condition))
}

/// What each service's manifests were, as the record (or, without one, the
/// status before) says.
fn recorded_manifests(
    record: Option<&crate::inventory::EnvironmentRecord>,
    before: Option<&Arc<EnvStatus>>,
) -> BTreeMap<String, crate::inventory::ManifestsRecord> {
    match (record, before) {
        (Some(r), _) => r.manifests.clone(),
        (None, Some(b)) => b.manifests.clone(),
        (None, None) => BTreeMap::new(),
    }
}

fn same(a: Option<&Arc<Desired>>, b: Option<&Arc<Desired>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// The previous status of an environment found unchanged, if its desired
/// environment is the same: the same `Arc`, or the same environment with its
/// objects now shared with the target's record (`Cache::share_applied`),
/// which gets the same status holding the new `Arc` (so the rendered list
/// is freed), not written again.
fn kept(before: &Arc<EnvStatus>, desired: Option<&Arc<Desired>>) -> Option<Arc<EnvStatus>> {
    if same(before.desired.as_ref(), desired) {
        return Some(before.clone());
    }
    same_but_shared(before.desired.as_ref(), desired)
        .then(|| Arc::new(before.with_desired(desired.cloned())))
}

/// `b` is `a` with its objects shared with the target's record.
fn same_but_shared(a: Option<&Arc<Desired>>, b: Option<&Arc<Desired>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            let crate::inventory::DesiredObjects::Applied(held) = &b.objects else {
                return false;
            };
            Arc::ptr_eq(&a.claim, &b.claim)
                && a.origin == b.origin
                && a.revision == b.revision
                && a.record == b.record
                && a.conditions == b.conditions
                && a.objects.held_by(held)
        }
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

#[cfg(test)]
mod tests {
    use super::Status;

    #[test]
    fn statuses_are_written_as_the_words_they_were() {
        let all = [
            Status::Ready,
            Status::Reconciling,
            Status::Stalled,
            Status::Pending,
            Status::Held,
            Status::Failed,
            Status::Invalid,
            Status::Expired,
        ];
        for s in all {
            let json = serde_json::to_string(&s).expect("serialize");
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<Status>(&json).expect("parse"), s);
        }
    }
}
