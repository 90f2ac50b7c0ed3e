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

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;

use crate::pipeline::Evaluation;
use crate::plan::{Change, EnvironmentPlan, Plan};
use crate::resolve::Resolved;
use crate::target::Inventory;

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

/// `/api/v1/environments/{name}`: the item plus what converge knows about it.
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

/// Builds every environment's detail after a pass. `previous` carries history.
#[must_use]
pub fn details(
    facts: &PassFacts<'_>,
    previous: &BTreeMap<String, Detail>,
    history_len: usize,
) -> BTreeMap<String, Detail> {
    let eval = facts.evaluation;
    let plans: HashMap<&str, &EnvironmentPlan> = facts
        .plan
        .environments
        .iter()
        .map(|e| (e.name.as_str(), e))
        .collect();
    let mut names: std::collections::BTreeSet<&str> =
        eval.desired.keys().map(String::as_str).collect();
    names.extend(eval.keep.keys().map(String::as_str));
    names.extend(eval.expired.keys().map(String::as_str));
    names.extend(facts.live.environments.keys().map(String::as_str));
    let mut out = BTreeMap::new();
    for name in names {
        let desired = eval.desired.get(name);
        let live = facts.live.environments.get(name);
        let plan = plans.get(name).copied();
        let failed = facts.failed.get(name);
        let mut conditions: Vec<ConditionDoc> = eval
            .conditions
            .get(name)
            .into_iter()
            .flatten()
            .map(ConditionDoc::from)
            .collect();
        let (ready, status, reason, message) = if let Some((reason, message)) = failed {
            (false, "Failed", reason.clone(), message.clone())
        } else if let Some(why) = eval.keep.get(name) {
            (
                false,
                "Invalid",
                (*why).to_owned(),
                "the environment is left as it is".to_owned(),
            )
        } else if eval.expired.contains_key(name) {
            (
                false,
                "Expired",
                reason::EXPIRED.to_owned(),
                "the environment expired".to_owned(),
            )
        } else if facts.plan.hold.is_some() && plan.is_some() {
            let message = facts
                .plan
                .hold
                .as_ref()
                .map(|h| h.message.clone())
                .unwrap_or_default();
            (false, "Held", reason::HELD.to_owned(), message)
        } else if let Some(p) = plan {
            if facts.applying && facts.applied.iter().any(|a| a == name) {
                if p.change == Change::Delete {
                    continue; // gone: no claim asks for it and it was removed
                }
                (
                    true,
                    "Ready",
                    reason::APPLIED.to_owned(),
                    "applied".to_owned(),
                )
            } else {
                (
                    false,
                    "Pending",
                    reason::PLANNED.to_owned(),
                    format!("planned: {:?}", p.change).to_lowercase(),
                )
            }
        } else if desired.is_some() {
            (
                true,
                "Ready",
                reason::UNCHANGED.to_owned(),
                "up to date".to_owned(),
            )
        } else {
            continue;
        };
        conditions.insert(
            0,
            ConditionDoc {
                kind: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: reason.clone(),
                message,
            },
        );
        let record = desired.map(|d| &d.record).or(live.map(|l| &l.record));
        let before = previous.get(name);
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
        let mut history = previous
            .get(name)
            .map(|d| d.history.clone())
            .unwrap_or_default();
        let applied_now = plan.is_some() && facts.applied.iter().any(|a| a == name);
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
        let inventory = live
            .map(|l| {
                l.objects
                    .values()
                    .map(|o| InventoryEntry {
                        kind: o.kind.to_string(),
                        name: o.name.to_string(),
                        digest: o.digest,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let claim = desired.map(|d| redacted(d));
        let last_plan = plan
            .cloned()
            .or_else(|| previous.get(name).and_then(|d| d.last_plan.clone()));
        out.insert(
            name.to_owned(),
            Detail {
                item,
                claim,
                provenance: desired
                    .and_then(|d| d.provenance.as_deref().cloned())
                    .or_else(|| before.and_then(|b| b.provenance.clone())),
                versions,
                last_plan,
                inventory,
                history,
            },
        );
    }
    out
}

fn redacted(d: &crate::pipeline::Desired) -> serde_json::Value {
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

/// An immutable snapshot of everything the API serves. The loop builds a new
/// one after each pass and swaps it in; readers never wait on a pass.
#[derive(Debug, Default)]
pub struct View {
    /// Every source read at least once since start, and the first pass done.
    pub ready: bool,
    pub items: std::sync::Arc<Vec<Item>>,
    /// Pre-serialized `/api/v1/environments/{name}` bodies.
    pub details: std::sync::Arc<HashMap<String, Bytes>>,
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
    /// Builds a view from details (sorted by name).
    #[must_use]
    pub fn new(
        details: &BTreeMap<String, Detail>,
        sources: &impl Serialize,
        plan: Option<std::sync::Arc<Plan>>,
        events: &impl Serialize,
        ready: bool,
        pass: u64,
    ) -> View {
        let items: Vec<Item> = details.values().map(|d| d.item.clone()).collect();
        View {
            ready,
            list: Bytes::from(
                serde_json::to_vec(&serde_json::json!({ "items": items }))
                    .expect("items serialize"),
            ),
            details: details
                .iter()
                .map(|(k, d)| {
                    (
                        k.clone(),
                        Bytes::from(serde_json::to_vec(d).expect("a detail serializes")),
                    )
                })
                .collect::<HashMap<_, _>>()
                .into(),
            items: items.into(),
            sources: list_json(sources),
            plan: Bytes::from(serde_json::to_vec(&plan.as_deref()).expect("a plan serializes")),
            events: list_json(events),
            last_plan: plan,
            pass,
        }
    }

    /// The same view with new sources and events (nothing else changed).
    #[must_use]
    pub fn with_sources(
        &self,
        sources: &impl Serialize,
        events: &impl Serialize,
        ready: bool,
    ) -> View {
        View {
            ready,
            items: self.items.clone(),
            details: self.details.clone(),
            list: self.list.clone(),
            sources: list_json(sources),
            plan: self.plan.clone(),
            events: list_json(events),
            last_plan: self.last_plan.clone(),
            pass: self.pass,
        }
    }
}

/// `{"items": ...}` as bytes.
fn list_json(items: &impl Serialize) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({ "items": items })).expect("items serialize"),
    )
}
