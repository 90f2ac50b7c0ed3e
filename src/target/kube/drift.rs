//! Drift: what the watches have seen ([`Observed`]), the fields converge
//! owns after its last apply (fingerprints kept in the inventory), and the
//! one-shot scan of a run without watches.

use super::client::plural;
use super::error::request_error;
use super::watch::watched_resources;
use super::{Key, Kubernetes, watched_key};
use crate::health::ObjectHealth;
use crate::object::ObjectRef;
use crate::render::{Digest, MANAGED_BY};
use crate::target::{Inventory, LiveEnvironment};
use futures::{StreamExt, stream};
use kube::api::{Api, DynamicObject, ListParams};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

/// What the watches have seen, shared with the target.
#[derive(Debug, Default)]
pub(super) struct Observed {
    /// Workloads' health.
    pub(super) health: HashMap<Key, ObjectHealth>,
    /// Watched objects that exist.
    pub(super) present: HashSet<Key>,
    /// Kinds whose first listing is complete.
    pub(super) synced: HashSet<&'static str>,
    /// The fields converge owned right after its last apply (or when first
    /// seen by this process), as sorted hashes of their paths (a few hundred
    /// bytes per object, not kilobytes of paths): drift is losing one of
    /// them, or the object.
    pub(super) baseline: HashMap<Key, Box<[u64]>>,
    /// Objects that drifted since converge last applied them, and how.
    pub(super) drifted: HashMap<Key, String>,
    /// The uid of each object as the watch last saw it exist.
    pub(super) uids: HashMap<Key, String>,
    /// Objects converge applied that the watch has not seen since (the uid
    /// the apply returned): until it does, what it says of an object by
    /// that name is older than the apply (a listing taken before it, an
    /// event about an earlier object) and is no drift.
    pub(super) unseen: HashMap<Key, String>,
    /// The pods of converge's workloads that the scheduler could not
    /// place, by namespace and pod name, with why (`PodScheduled` False,
    /// `Unschedulable`) and the node labels they require: a workload that
    /// does not roll out names them (a cluster without the node-pool labels).
    pub(super) unschedulable: HashMap<String, BTreeMap<String, ObjectHealth>>,
}

/// The hash of one field path (the same in every call of a process).
pub(super) fn hash_path(path: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(path)
}

/// Sorted hashes of field paths.
pub(super) fn hashed(fields: &BTreeSet<String>) -> Box<[u64]> {
    let mut out: Vec<u64> = fields.iter().map(|f| hash_path(f)).collect();
    out.sort_unstable();
    out.dedup();
    out.into_boxed_slice()
}

impl Observed {
    /// How an object converge applied drifted: as a watch saw it, or gone
    /// from its kind's complete listing without converge having applied it
    /// since (deleted while converge was not watching).
    pub(super) fn drift_of(&self, key: &Key) -> Option<&str> {
        if let Some(how) = self.drifted.get(key) {
            return Some(how);
        }
        (self.synced.contains(key.0)
            && !self.present.contains(key)
            && !self.unseen.contains_key(key))
        .then_some("deleted")
    }

    /// Records what a watch saw of `key` (`None`: deleted; else converge's
    /// fields and every other manager's) and whether that is drift from the
    /// baseline.
    /// A watch saw `key` exist (`meta`, converge's fields and every other
    /// manager's). First seen by this process, it is compared with the
    /// fields converge owned after its last apply, as the inventory keeps
    /// them (`fingerprints`).
    pub(super) fn sighted(
        &mut self,
        key: &Key,
        meta: &kube::api::ObjectMeta,
        ours: BTreeSet<String>,
        others: &[(String, BTreeSet<String>)],
        fingerprints: &Mutex<HashMap<Key, String>>,
    ) {
        let edited_before = if self.baseline.contains_key(key) {
            None
        } else {
            fingerprints
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(key)
                .and_then(|f| edit_detail(f, &ours, others))
        };
        self.saw(
            key.clone(),
            meta.uid.as_deref(),
            meta.deletion_timestamp.is_some(),
            Some(ours),
            others,
        );
        if let Some(detail) = edited_before {
            self.drifted.insert(
                key.clone(),
                format!("{detail}, while converge was not watching"),
            );
        }
    }

    /// `uid` is the object's (`None`: gone from a listing, never seen);
    /// `terminating`: it has a deletion timestamp.
    pub(super) fn saw(
        &mut self,
        key: Key,
        uid: Option<&str>,
        terminating: bool,
        fields: Option<BTreeSet<String>>,
        others: &[(String, BTreeSet<String>)],
    ) {
        if let Some(applied) = self.unseen.get(&key) {
            if uid != Some(applied.as_str()) {
                return; // older than converge's apply: not drift
            }
            if fields.is_some() {
                self.unseen.remove(&key);
            }
        }
        let Some(baseline) = self.baseline.get(&key) else {
            if let Some(fields) = fields {
                // An object already being deleted is no baseline (converge
                // deleted it, or applied it in vain while it terminated):
                // its going is no drift.
                if !terminating {
                    self.baseline.insert(key.clone(), hashed(&fields));
                }
                self.present.insert(key.clone());
                if let Some(uid) = uid {
                    self.uids.insert(key, uid.to_owned());
                }
            } else {
                self.present.remove(&key);
                self.uids.remove(&key);
            }
            return;
        };
        let Some(fields) = fields else {
            // A deletion counts only for an object the watch saw exist.
            let seen = uid.is_some() && self.uids.get(&key).map(String::as_str) == uid;
            if seen {
                self.drifted.insert(key.clone(), "deleted".to_owned());
            }
            self.present.remove(&key);
            self.uids.remove(&key);
            return;
        };
        if let Some(uid) = uid {
            self.uids.insert(key.clone(), uid.to_owned());
        }
        let current = hashed(&fields);
        let lost: HashSet<u64> = baseline
            .iter()
            .filter(|h| current.binary_search(h).is_err())
            .copied()
            .collect();
        self.present.insert(key.clone());
        if lost.is_empty() {
            return;
        }
        // Name the lost fields by whoever owns them now; fields an
        // autoscaler took through the scale subresource are its to set.
        let mut names = BTreeSet::new();
        let mut by = Vec::new();
        let mut scaled = 0;
        for (manager, owned) in others {
            let taken: Vec<&String> = owned
                .iter()
                .filter(|f| lost.contains(&hash_path(f)))
                .collect();
            if taken.is_empty() {
                continue;
            }
            if manager.ends_with(SCALER) {
                scaled += taken.len();
            } else {
                names.extend(taken.into_iter().cloned());
                by.push(manager.as_str());
            }
        }
        if scaled == lost.len() {
            return;
        }
        let mut detail = if names.is_empty() {
            format!("edited: {} field(s) converge set", lost.len() - scaled)
        } else {
            format!(
                "edited: {}",
                names.into_iter().collect::<Vec<_>>().join(", ")
            )
        };
        if !by.is_empty() {
            detail = format!("{detail} (by {})", by.join(", "));
        }
        self.drifted.insert(key, detail);
    }
}

/// The field paths (`spec.replicas`, `metadata.labels.app`) a `fieldsV1`
/// trie names.
pub(super) fn field_paths(trie: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    let Some(map) = trie.as_object() else {
        return;
    };
    if map.is_empty() && !prefix.is_empty() {
        out.insert(prefix.to_owned());
        return;
    }
    for (key, sub) in map {
        if key == "." {
            out.insert(prefix.to_owned());
            continue;
        }
        let part = key
            .strip_prefix("f:")
            .map(str::to_owned)
            .or_else(|| key.strip_prefix("k:").map(|k| format!("[{k}]")))
            .or_else(|| key.strip_prefix("v:").map(|v| format!("[{v}]")))
            .unwrap_or_else(|| key.clone());
        let path = if prefix.is_empty() {
            part
        } else if part.starts_with('[') {
            format!("{prefix}{part}")
        } else {
            format!("{prefix}.{part}")
        };
        field_paths(sub, &path, out);
    }
}

/// converge's owned field paths, and every other manager's.
pub(super) type Owners = (BTreeSet<String>, Vec<(String, BTreeSet<String>)>);

/// A manager that changed fields through the scale subresource (an
/// autoscaler): taking `spec.replicas` that way is not drift.
pub(super) const SCALER: &str = " (scale)";

/// Converge's owned fields and every other updater's, from managed fields
/// (the status subresource left out: controllers report there; the scale
/// subresource marked with [`SCALER`]).
pub(super) fn owners(meta: &kube::api::ObjectMeta, manager: &str) -> Owners {
    let mut ours = BTreeSet::new();
    let mut others = Vec::new();
    for entry in meta.managed_fields.iter().flatten() {
        let scale = match entry.subresource.as_deref() {
            None | Some("") => false,
            Some("scale") => true,
            Some(_) => continue,
        };
        let mut fields = BTreeSet::new();
        if let Some(f) = &entry.fields_v1 {
            field_paths(&f.0, "", &mut fields);
        }
        match entry.manager.as_deref() {
            Some(m) if m == manager && !scale => ours.extend(fields),
            Some(m) if scale => others.push((format!("{m}{SCALER}"), fields)),
            Some(m) => others.push((m.to_owned(), fields)),
            None => {}
        }
    }
    (ours, others)
}

/// A fingerprint of a set of field paths that stays the same across
/// processes and versions (the first 8 bytes of SHA-256, in hex).
pub(super) fn fingerprint<'a>(fields: impl IntoIterator<Item = &'a String>) -> String {
    let mut sorted: Vec<&String> = fields.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut text = String::new();
    for f in sorted {
        text.push_str(f);
        text.push('\n');
    }
    crate::hex::encode(&Digest::of(text.as_bytes()).0[..8])
}

/// Whether an object converge applied with fields fingerprinted `baseline`
/// lost a field to someone else: its fields now (`ours`) differ, and not
/// only by what an autoscaler took through the scale subresource.
pub(super) fn edited(
    baseline: &str,
    ours: &BTreeSet<String>,
    others: &[(String, BTreeSet<String>)],
) -> bool {
    if fingerprint(ours) == baseline {
        return false;
    }
    let scaled: BTreeSet<&String> = others
        .iter()
        .filter(|(m, _)| m.ends_with(SCALER))
        .flat_map(|(_, f)| f)
        .collect();
    scaled.is_empty() || fingerprint(ours.iter().chain(scaled)) != baseline
}

/// Candidate fields at most this many: beyond, which ones were lost is not
/// searched for (2^n fingerprints).
pub(super) const MAX_GUESSED_FIELDS: usize = 12;

/// How an object converge applied with fields fingerprinted `baseline` was
/// edited (`None`: it was not, see [`edited`]): the fields converge lost and
/// who owns them now, `edited: <paths> (by <managers>)`. The fingerprint
/// keeps no paths, so the lost ones are found among the fields other
/// managers own and converge does not: the smallest set that, given back to
/// converge, matches the fingerprint again. Without one (a field removed,
/// too many candidates) the managers are named alone.
pub(super) fn edit_detail(
    baseline: &str,
    ours: &BTreeSet<String>,
    others: &[(String, BTreeSet<String>)],
) -> Option<String> {
    if !edited(baseline, ours, others) {
        return None;
    }
    let scaled: Vec<&String> = others
        .iter()
        .filter(|(m, _)| m.ends_with(SCALER))
        .flat_map(|(_, f)| f)
        .collect();
    let mut candidates: Vec<(&String, &str)> = others
        .iter()
        .filter(|(m, _)| !m.ends_with(SCALER))
        .flat_map(|(m, f)| {
            f.iter()
                .filter(|p| !ours.contains(*p))
                .map(move |p| (p, m.as_str()))
        })
        .collect();
    candidates.sort_unstable();
    candidates.dedup_by(|a, b| a.0 == b.0);
    let mut best: Option<u32> = None;
    if candidates.len() <= MAX_GUESSED_FIELDS {
        for mask in 1u32..(1 << candidates.len()) {
            if best.is_some_and(|b| b.count_ones() <= mask.count_ones()) {
                continue;
            }
            let chosen = || {
                candidates
                    .iter()
                    .enumerate()
                    .filter(move |(i, _)| mask & (1 << i) != 0)
                    .map(|(_, (p, _))| *p)
            };
            if fingerprint(ours.iter().chain(chosen())) == baseline
                || fingerprint(ours.iter().chain(chosen()).chain(scaled.iter().copied()))
                    == baseline
            {
                best = Some(mask);
            }
        }
    }
    let picked: Vec<&(&String, &str)> = match best {
        Some(mask) => candidates
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, c)| c)
            .collect(),
        None => candidates.iter().collect(),
    };
    let mut by: Vec<&str> = picked.iter().map(|(_, m)| *m).collect();
    by.sort_unstable();
    by.dedup();
    let by = if by.is_empty() {
        String::new()
    } else {
        format!(" (by {})", by.join(", "))
    };
    Some(match best {
        Some(_) => {
            let names: Vec<&str> = picked.iter().map(|(p, _)| p.as_str()).collect();
            format!("edited: {}{by}", names.join(", "))
        }
        None => format!("edited{by}"),
    })
}

impl Kubernetes {
    /// After converge applied `id` (with `fields` now its own) or deleted it
    /// (`None`): the new baseline of drift, and no drift.
    pub(super) fn rebase(
        &self,
        id: &ObjectRef,
        environment: &str,
        applied: Option<(BTreeSet<String>, Option<String>)>,
    ) {
        let (fields, uid) = match applied {
            Some((fields, uid)) => (Some(fields), uid),
            None => (None, None),
        };
        if let Some(env) = self
            .restored
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(environment)
        {
            env.remove(&format!("{}/{}", id.kind, id.name));
        }
        let Some(key) = watched_key(id, environment) else {
            return;
        };
        match &fields {
            Some(fields) => self.fingerprints().insert(key.clone(), fingerprint(fields)),
            None => self.fingerprints().remove(&key),
        };
        if let Some(scanned) = self
            .scanned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            scanned.remove(&key);
        }
        let Some(watches) = self.watches.get() else {
            return;
        };
        let mut observed = watches
            .observed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        observed.drifted.remove(&key);
        match uid {
            // Seen already (the watch was quicker than this): nothing unseen.
            Some(uid) if observed.uids.get(&key) != Some(&uid) => {
                observed.unseen.insert(key.clone(), uid);
            }
            _ => {
                observed.unseen.remove(&key);
            }
        }
        match fields {
            Some(fields) => observed.baseline.insert(key, hashed(&fields)),
            None => observed.baseline.remove(&key),
        };
    }

    pub(super) fn fingerprints(&self) -> std::sync::MutexGuard<'_, HashMap<Key, String>> {
        self.fingerprints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What a run without watches (`run --once`, `plan`) finds of the
    /// objects `inventory` lists, with one label-selected metadata LIST per
    /// watched kind (as the daemon's watches start): those gone, and those
    /// whose fields converge set someone else took. A kind whose LIST fails
    /// is left out (its objects are as the inventory says).
    pub(super) async fn scan(&self, inventory: &Inventory) -> HashMap<Key, String> {
        let lists: Vec<_> = watched_resources()
            .into_iter()
            .map(|(kind, resource)| async move {
                let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
                let mut params = ListParams::default()
                    .labels(&format!("{MANAGED_BY}=converge"))
                    .limit(500);
                let mut found: HashMap<Key, Owners> =
                    HashMap::new();
                loop {
                    let page = match api.list_metadata(&params).await {
                        Ok(page) => page,
                        Err(e) => {
                            let e = request_error("list", &plural(&resource), "", e);
                            tracing::warn!(kind, error = %e, "cannot look for deleted or edited objects of this kind");
                            return None;
                        }
                    };
                    for o in page.items {
                        let key = (
                            kind,
                            o.metadata.namespace.clone().unwrap_or_default(),
                            o.metadata.name.clone().unwrap_or_default(),
                        );
                        found.insert(key, owners(&o.metadata, &self.options.field_manager));
                    }
                    match page.metadata.continue_.filter(|c| !c.is_empty()) {
                        Some(token) => params = params.continue_token(&token),
                        None => break,
                    }
                }
                Some((kind, found))
            })
            .collect();
        let listed: Vec<_> = stream::iter(lists)
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        let listed: HashMap<&'static str, _> = listed.into_iter().flatten().collect();
        let fingerprints = self.fingerprints();
        let mut out = HashMap::new();
        for (name, env) in &inventory.environments {
            for (id, digest) in &env.objects {
                let Some(key) = watched_key(id, name) else {
                    continue;
                };
                let Some(found) = listed.get(key.0) else {
                    continue;
                };
                if digest.is_pending() {
                    continue;
                }
                match found.get(&key) {
                    None => {
                        out.insert(key, "deleted".to_owned());
                    }
                    Some((ours, others)) => {
                        if let Some(detail) = fingerprints
                            .get(&key)
                            .and_then(|f| edit_detail(f, ours, others))
                        {
                            out.insert(key, detail);
                        }
                    }
                }
            }
        }
        out
    }

    /// Without watches: looks once per read of the inventory for objects it
    /// lists that are gone or were edited ([`Kubernetes::scan`]).
    pub(super) fn scan_once(&self, inventory: &Inventory) {
        let mut scanned = self.scanned.lock().unwrap_or_else(PoisonError::into_inner);
        if scanned.is_none() {
            let found = self.runtime.block_on(self.scan(inventory));
            for (key, how) in &found {
                tracing::info!(
                    kind = key.0,
                    namespace = key.1,
                    name = key.2,
                    how = how.as_str(),
                    "drifted while converge was not watching"
                );
            }
            *scanned = Some(found);
        }
    }

    /// The objects of one environment that drifted from what converge
    /// applied, and how: what the watches saw (or their first listing
    /// compared with the fingerprints), what a one-shot listing found
    /// ([`Kubernetes::scan`]), and what the state store remembered from
    /// before the restart ([`crate::target::Target::restore_drift`]); each until converge
    /// applies the object again. `base` is the environment as the inventory
    /// records it (an object pending there was never applied: its absence
    /// is not drift).
    pub(super) fn drifted_objects<'a>(
        &self,
        environment: &str,
        live: &'a LiveEnvironment,
        base: Option<&LiveEnvironment>,
    ) -> Vec<(&'a ObjectRef, String)> {
        let restored = self.restored.lock().unwrap_or_else(PoisonError::into_inner);
        let restored = restored.get(environment);
        let scanned = self.scanned.lock().unwrap_or_else(PoisonError::into_inner);
        let scanned = scanned.as_ref().filter(|s| !s.is_empty());
        let observed = self
            .watches
            .get()
            .map(|w| w.observed.lock().unwrap_or_else(PoisonError::into_inner));
        let observed = observed
            .as_deref()
            .filter(|o| !o.drifted.is_empty() || !o.synced.is_empty());
        if restored.is_none() && scanned.is_none() && observed.is_none() {
            return Vec::new();
        }
        let fingerprints = restored.map(|_| self.fingerprints());
        live.objects
            .keys()
            .filter_map(|id| {
                let key = watched_key(id, environment)?;
                let pending = base
                    .and_then(|b| b.objects.get(id))
                    .is_none_or(Digest::is_pending);
                let seen = observed.and_then(|o| match o.drifted.get(&key) {
                    Some(how) => Some(how.clone()),
                    None if pending => None,
                    None => o.drift_of(&key).map(str::to_owned),
                });
                let how = seen
                    .or_else(|| scanned.and_then(|s| s.get(&key)).cloned())
                    .or_else(|| {
                        let how = restored?.get(&format!("{}/{}", id.kind, id.name))?;
                        // The watches listed it as converge's fingerprint
                        // says it left it: applied again before a crash
                        // lost the store's update.
                        let as_left =
                            observed.is_some_and(|o| {
                                o.synced.contains(key.0)
                                    && o.present.contains(&key)
                                    && !o.drifted.contains_key(&key)
                            }) && fingerprints.as_ref().is_some_and(|f| f.contains_key(&key));
                        (!as_left).then(|| how.clone())
                    })?;
                Some((id, how))
            })
            .collect()
    }
}
