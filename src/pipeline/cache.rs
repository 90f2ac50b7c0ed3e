//! Evaluations of unchanged files kept between passes, and what a claim's
//! resolution depended on.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Evaluations of unchanged files, kept between passes.
#[derive(Default)]
pub struct Cache {
    pub(super) entries: std::collections::HashMap<Origin, Entry>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl Cache {
    /// The tag lists the cached claims' constraints consult: (service, dev).
    #[must_use]
    pub fn wanted(&self) -> BTreeSet<(String, bool)> {
        let mut seen: std::collections::HashSet<(&str, bool)> = std::collections::HashSet::new();
        for memo in self.entries.values().filter_map(|e| e.memo.as_ref()) {
            for (service, r) in memo.requests.iter() {
                if !matches!(r.constraint, crate::claim::Constraint::Exact(_)) {
                    seen.insert((service.as_str(), memo.dev));
                }
            }
        }
        seen.into_iter().map(|(s, d)| (s.to_owned(), d)).collect()
    }

    /// Forgets one environment's evaluation, so the next pass renders it again.
    pub fn forget_environment(&mut self, name: &str) {
        self.entries.retain(|_, e| e.name.as_deref() != Some(name));
    }
}

pub(super) struct Entry {
    pub(super) digest: [u8; 32],
    /// A digest of the review the outcome was decided with (0: none).
    pub(super) review: u64,
    /// What the outcome was authorized against.
    pub(super) asked: Asked,
    pub(super) name: Option<String>,
    /// The claim, when the file held a valid one (for re-authorization).
    pub(super) claim: Option<Arc<Claim>>,
    pub(super) outcome: Outcome,
    /// The key generation a claim with secrets was opened with: new keys
    /// evaluate it again.
    pub(super) keys: Option<u64>,
    /// What the outcome's resolution read, when it consulted tag lists.
    pub(super) memo: Option<ResolveMemo>,
}

/// A file's cache entry.
pub(super) type Evaluated = (Origin, Entry);

/// A cache hit: the entry and the file it is for.
pub(super) type Hit<'a> = (Origin, Entry, &'a Snapshot, &'a SourceFile);

/// Resolved versions with the conditions resolution adds, or what did not resolve.
pub(super) type Resolve =
    Result<(BTreeMap<String, Resolved>, Vec<Condition>), Vec<crate::resolve::Unresolved>>;

/// What a claim's resolution depended on: its requests (kept, as they
/// depend only on the claim and the catalog), the digest of the constraints
/// and tag lists they consulted, and the versions the environment ran
/// before and after. A pass resolves a cached claim again only when the
/// digest changed or the environment runs something else than either.
#[derive(Clone)]
pub(super) struct ResolveMemo {
    pub(super) requests: Arc<BTreeMap<String, Request>>,
    pub(super) dev: bool,
    pub(super) inputs: u64,
    pub(super) previous: u64,
    pub(super) result: u64,
}

impl ResolveMemo {
    pub(super) fn current(&self, tags: &TagSet, live: &Inventory, name: &str) -> bool {
        let running = versions_digest(running(live, name));
        crate::resolve::inputs_digest(&self.requests, self.dev, tags) == self.inputs
            && (running == self.previous || running == self.result)
    }
}

pub(super) fn running<'a>(
    live: &'a Inventory,
    name: &str,
) -> Option<&'a BTreeMap<String, Resolved>> {
    live.environments.get(name).map(|e| &e.record.versions)
}

pub(super) fn versions_digest(v: Option<&BTreeMap<String, Resolved>>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

impl Entry {
    /// Time moves on: a valid claim past its expiry becomes `Expired`.
    pub(super) fn expire(&mut self, now: DateTime<Utc>) {
        let at = match &self.outcome {
            Outcome::Desired(d) => d.expires_at,
            Outcome::Kept(k) => k.expires_at,
            Outcome::Invalid(_) | Outcome::Expired { .. } => None,
        };
        if let (Some(at), Some(name)) = (at, &self.name)
            && at <= now
        {
            self.outcome = Outcome::Expired {
                name: name.clone(),
                at,
            };
        }
    }
}
