//! The API's snapshot: an immutable [`View`] of everything the read-only API
//! serves, built by the loop after each pass and swapped in whole, so readers
//! never wait on a pass. The sources, plan and events bodies are serialized
//! once per view; the environments list is paged from the name-ordered
//! statuses and their pre-serialized items ([`list`]); an environment's
//! detail body is serialized on its first request
//! ([`crate::status::EnvStatus::body`]).

pub mod list;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::plan::Plan;
use crate::shard::Members;
use crate::status::{Item, Status, Statuses};

/// An immutable snapshot of everything the API serves. The loop builds a new
/// one after each pass and swaps it in; readers never wait on a pass.
#[derive(Debug, Default)]
pub struct View {
    /// Every source read at least once since start, and the first pass done.
    pub ready: bool,
    /// Every environment, sorted by name (list pages, detail bodies, the page).
    pub environments: Statuses,
    /// How many environments there are of each status, type and mark.
    pub counts: Counts,
    pub sources: Bytes,
    pub plan: Bytes,
    pub events: Bytes,
    /// The last plan, for the status page.
    pub last_plan: Option<Arc<Plan>>,
    pub pass: u64,
    /// The shard members of the last pass (`shards`): the environments
    /// are this replica's share.
    pub shard: Option<Arc<Members>>,
}

impl View {
    /// Builds a view from the environments' statuses.
    #[must_use]
    pub fn new(
        environments: Statuses,
        sources: &impl Serialize,
        plan: Option<Arc<Plan>>,
        events: &impl Serialize,
        ready: bool,
        pass: u64,
    ) -> View {
        View {
            ready,
            counts: Counts::of(environments.values().map(|e| &e.item)),
            environments,
            sources: list_json(sources),
            plan: Bytes::from(serde_json::to_vec(&plan.as_deref()).expect("a plan serializes")),
            events: list_json(events),
            last_plan: plan,
            pass,
            shard: None,
        }
    }

    /// The same view for one shard: the list says whose share it is
    /// (`{"shard": {"identity": …, "members": […]}, "items": …}`).
    #[must_use]
    pub fn for_shard(mut self, shard: Option<Arc<Members>>) -> View {
        self.shard = shard;
        self
    }

    /// The same view with new sources and events (nothing else changed);
    /// `events` is the serialized body (see [`list_json`]).
    #[must_use]
    pub fn with_sources(&self, sources: &impl Serialize, events: Bytes, ready: bool) -> View {
        View {
            ready,
            environments: self.environments.clone(),
            counts: self.counts.clone(),
            sources: list_json(sources),
            plan: self.plan.clone(),
            events,
            last_plan: self.last_plan.clone(),
            pass: self.pass,
            shard: self.shard.clone(),
        }
    }

    /// Every environment's list item, sorted by name.
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.environments.values().map(|e| &e.item)
    }
}

/// How many environments there are of each status and type, and with the
/// marks the status page counts (ready, drifted); counted once per view.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub ready: usize,
    pub drifted: usize,
    pub by_status: BTreeMap<Status, usize>,
    pub by_type: BTreeMap<String, usize>,
}

impl Counts {
    /// Counts the items.
    pub fn of<'a>(items: impl IntoIterator<Item = &'a Item>) -> Counts {
        let mut c = Counts::default();
        for i in items {
            c.ready += usize::from(i.ready);
            c.drifted += usize::from(i.drifted());
            *c.by_status.entry(i.status).or_default() += 1;
            match c.by_type.get_mut(i.env_type.as_str()) {
                Some(n) => *n += 1,
                None => {
                    c.by_type.insert(i.env_type.clone(), 1);
                }
            }
        }
        c
    }

    /// Environments of a status.
    #[must_use]
    pub fn status(&self, s: Status) -> usize {
        self.by_status.get(&s).copied().unwrap_or_default()
    }
}

/// A shard as the API shows it: this replica's identity and the live members.
#[must_use]
pub fn shard_json(m: &Members) -> serde_json::Value {
    serde_json::json!({ "identity": m.me(), "members": m.live() })
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
