//! The API's snapshot: an immutable [`View`] of everything the read-only API
//! serves, built by the loop after each pass and swapped in whole, so readers
//! never wait on a pass. List bodies are serialized once per view; an
//! environment's detail body is serialized on its first request
//! ([`crate::status::EnvStatus::body`]).

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::plan::Plan;
use crate::shard::Members;
use crate::status::{Item, Statuses};

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
            shard: None,
        }
    }

    /// The same view for one shard: the list body says whose share it is
    /// (`{"shard": {"identity": …, "members": […]}, "items": …}`).
    #[must_use]
    pub fn for_shard(mut self, shard: Option<Arc<Members>>) -> View {
        if let Some(m) = &shard {
            let head = serde_json::to_vec(&shard_json(m)).expect("a shard serializes");
            let mut list = Vec::with_capacity(self.list.len() + head.len() + 12);
            list.extend_from_slice(b"{\"shard\":");
            list.extend_from_slice(&head);
            list.push(b',');
            list.extend_from_slice(&self.list[1..]);
            self.list = Bytes::from(list);
        }
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
            list: self.list.clone(),
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
