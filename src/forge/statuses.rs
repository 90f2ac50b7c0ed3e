//! Apply statuses (`<context>/apply`) on the commits the daemon picks up.
//!
//! For each git source with a forge and `commit_statuses`, a new revision
//! gets `pending` when the pass that reads it starts; after each pass the
//! open commits are judged ([`judge`]): `failure` naming the first
//! environment of the source that is invalid, denied, unreviewed, held,
//! failed or stalled; `success` once every environment the commit changed is
//! Ready; still pending otherwise. A newer commit of the same source closes
//! the older ones at once (their changes are in it).
//!
//! Posting never delays a pass: the statuses go to a queue served by a
//! thread of its own (its `Worker`), which reads before it writes (a status
//! already there is not written again), retries with backoff (1 s doubling,
//! at most [`MAX_BACKOFF`], longer when the forge asks), keeps the newest
//! status per commit and context, and holds at most [`MAX_QUEUED`]. The
//! queue is persisted in the state store's `forge` table
//! (`status/<source>/<commit>/<context>`), and so is the last revision each
//! source was seen at (`seen/<source>`), so a restart neither loses a
//! pending status nor posts `pending` again on a commit already judged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{CommitStatus, Forge, State};
use crate::config::{Config, SourceConfig};
use crate::source::Snapshot;
use crate::status::{EnvStatus, Status};

/// The longest wait between two attempts at one status.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The most statuses queued; the oldest is dropped beyond (with a warning).
pub const MAX_QUEUED: usize = 10_000;

/// One status to post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    pub source: String,
    pub commit: String,
    pub status: CommitStatus,
}

impl Queued {
    fn key(&self) -> String {
        format!(
            "status/{}/{}/{}",
            self.source, self.commit, self.status.context
        )
    }
}

/// A commit picked up and not judged yet.
#[derive(Debug, Clone)]
struct Open {
    source: String,
    commit: String,
    /// Environments of the source the passes since changed.
    changed: BTreeSet<String>,
    /// The claim files the commit brought (changed since the source's
    /// previous revision; every file on the first one).
    paths: BTreeSet<String>,
    /// A newer commit of the source came: judge it now, Ready or not.
    superseded: bool,
}

/// What the worker and the daemon share.
#[derive(Default)]
struct Shared {
    /// State-store rows to write (`None` removes).
    dirty: Vec<(String, Option<Vec<u8>>)>,
    /// The last failure per source (cleared by a success).
    failures: BTreeMap<String, String>,
    /// The newest status handed to the poster per key: its row is removed
    /// only once that one is posted (not an older one still in flight).
    latest: HashMap<String, CommitStatus>,
}

/// The daemon's side: what it picked up, what it judged, the queue.
pub struct Statuses {
    /// Per source: its forge and status context (`<context>/apply`).
    sources: BTreeMap<String, (Arc<dyn Forge>, String)>,
    seen: HashMap<String, String>,
    /// Per source: each claim file's commit at the last revision seen.
    files: HashMap<String, HashMap<String, String>>,
    open: Vec<Open>,
    shared: Arc<Mutex<Shared>>,
    tx: Sender<Queued>,
    /// The status page's address as users reach it (`api.external_url`):
    /// a verdict links to its environment there.
    external_url: Option<String>,
}

impl std::fmt::Debug for Statuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statuses")
            .field("sources", &self.sources.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Statuses {
    /// The apply statuses of `config`'s git sources with a forge and
    /// `commit_statuses`; `None` when there are none. Starts the poster.
    pub fn from_config(config: &Config) -> Result<Option<Statuses>, super::Error> {
        let forges = super::forges(config)?;
        let mut sources = BTreeMap::new();
        for s in &config.sources {
            if let SourceConfig::Git {
                name,
                forge: Some(f),
                ..
            } = s
                && f.commit_statuses
                && let Some(forge) = forges.get(name)
            {
                let context = f.context.clone().unwrap_or_else(super::default_context);
                sources.insert(name.clone(), (forge.clone(), format!("{context}/apply")));
            }
        }
        if sources.is_empty() {
            return Ok(None);
        }
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = Worker {
            forges: sources
                .iter()
                .map(|(k, (f, _))| (k.clone(), f.clone()))
                .collect(),
            shared: shared.clone(),
            queue: BTreeMap::new(),
            order: 0,
        };
        std::thread::Builder::new()
            .name("forge-statuses".into())
            .spawn(move || worker.run(&rx))
            .map_err(|e| super::Error::Config {
                forge: "statuses".into(),
                message: format!("cannot start the status thread: {e}"),
            })?;
        Ok(Some(Statuses {
            sources,
            seen: HashMap::new(),
            files: HashMap::new(),
            open: Vec::new(),
            shared,
            tx,
            external_url: config
                .api
                .external_url
                .as_deref()
                .map(|u| u.trim_end_matches('/').to_owned()),
        }))
    }

    /// What a previous run left: the queue (posted again) and the revision
    /// each source was seen at.
    pub fn restore(&mut self, rows: &BTreeMap<String, Vec<u8>>) {
        for (k, v) in rows {
            if let Some(source) = k.strip_prefix("seen/") {
                self.seen
                    .insert(source.to_owned(), String::from_utf8_lossy(v).into_owned());
            } else if k.starts_with("status/")
                && let Ok(q) = serde_json::from_slice::<Queued>(v)
            {
                let _ = self.tx.send(q);
            }
        }
    }

    /// Rows for the state store since the last call.
    pub fn take_dirty(&mut self) -> Vec<(String, Option<Vec<u8>>)> {
        std::mem::take(&mut self.lock().dirty)
    }

    /// The last failure to post per source (for the API and events).
    #[must_use]
    pub fn failures(&self) -> BTreeMap<String, String> {
        self.lock().failures.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn post(
        &mut self,
        source: &str,
        commit: &str,
        state: State,
        description: &str,
        environment: Option<&str>,
    ) {
        let Some((_, context)) = self.sources.get(source) else {
            return;
        };
        // The environment's page, or the whole page for several.
        let target_url = self.external_url.as_ref().map(|u| match environment {
            Some(name) => format!("{u}/environments/{name}"),
            None => format!("{u}/"),
        });
        let q = Queued {
            source: source.to_owned(),
            commit: commit.to_owned(),
            status: CommitStatus {
                context: context.clone(),
                state,
                description: super::truncate(description, super::MAX_DESCRIPTION),
                target_url,
            },
        };
        if let Ok(bytes) = serde_json::to_vec(&q) {
            let mut shared = self.lock();
            shared.dirty.push((q.key(), Some(bytes)));
            shared.latest.insert(q.key(), q.status.clone());
        }
        let _ = self.tx.send(q);
    }

    /// At the start of a pass: `pending` on each new revision of a source
    /// with statuses.
    pub fn begin(&mut self, snapshots: &[Snapshot]) {
        for snapshot in snapshots {
            if !self.sources.contains_key(&snapshot.source) {
                continue;
            }
            let commit = snapshot.revision.0.clone();
            let files: HashMap<String, String> = snapshot
                .files
                .iter()
                .filter_map(|f| match f.provenance.as_deref() {
                    Some(crate::source::Provenance::Git { commit, .. }) => {
                        Some((f.path.clone(), commit.clone()))
                    }
                    _ => None,
                })
                .collect();
            let before = self.files.insert(snapshot.source.clone(), files.clone());
            if self.seen.get(&snapshot.source) == Some(&commit) {
                continue;
            }
            let paths = files
                .iter()
                .filter(|(path, c)| before.as_ref().and_then(|b| b.get(*path)) != Some(*c))
                .map(|(path, _)| path.clone())
                .collect();
            self.seen.insert(snapshot.source.clone(), commit.clone());
            self.lock().dirty.push((
                format!("seen/{}", snapshot.source),
                Some(commit.clone().into_bytes()),
            ));
            for o in &mut self.open {
                if o.source == snapshot.source {
                    o.superseded = true;
                }
            }
            self.open.push(Open {
                source: snapshot.source.clone(),
                commit: commit.clone(),
                changed: BTreeSet::new(),
                paths,
                superseded: false,
            });
            self.post(
                &snapshot.source,
                &commit,
                State::Pending,
                "converge is applying this commit",
                None,
            );
        }
    }

    /// After a pass: the environments it changed and every environment's
    /// status now. Posts the verdict of each open commit that
    /// has one.
    pub fn after(
        &mut self,
        changed: &[String],
        statuses: &BTreeMap<String, Arc<EnvStatus>>,
        diagnostics: &[crate::diagnostic::Diagnostic],
    ) {
        for o in &mut self.open {
            for name in changed {
                if statuses.get(name).and_then(|s| source_of(s)) == Some(o.source.as_str()) {
                    o.changed.insert(name.clone());
                }
            }
        }
        let open = std::mem::take(&mut self.open);
        for o in open {
            let verdict = match judge(&o.source, &o.paths, &o.changed, statuses, o.superseded) {
                Some((State::Success, text)) => {
                    Some(refused_file(&o.paths, diagnostics).unwrap_or((State::Success, text)))
                }
                other => other,
            };
            match verdict {
                Some((state, description)) => {
                    let environment = linked(&o, state, statuses);
                    self.post(&o.source, &o.commit, state, &description, environment);
                }
                None => self.open.push(o),
            }
        }
    }
}

/// The verdict on a commit of `source` that brought the claim files `paths`
/// and changed the environments `changed`: `failure` naming the first
/// environment of those files or changes that is not applied (invalid,
/// denied, unreviewed, held, failed, stalled), `success` when every changed
/// environment is Ready (or `final_now`: a newer commit superseded it),
/// `None` while one is still rolling out.
#[must_use]
pub fn judge(
    source: &str,
    paths: &BTreeSet<String>,
    changed: &BTreeSet<String>,
    statuses: &BTreeMap<String, Arc<EnvStatus>>,
    final_now: bool,
) -> Option<(State, String)> {
    let of_source = statuses.values().filter(|s| {
        source_of(s) == Some(source)
            && (changed.contains(&s.item.name) || path_of(s).is_some_and(|p| paths.contains(p)))
    });
    let problems: Vec<&EnvStatus> = of_source
        .filter(|s| {
            matches!(
                s.item.status,
                Status::Invalid | Status::Held | Status::Failed | Status::Stalled
            )
        })
        .map(AsRef::as_ref)
        .collect();
    if let Some(first) = problems.first() {
        let reason = first
            .item
            .conditions
            .iter()
            .find(|c| c.status && c.kind != crate::condition::ConditionType::Ready)
            .or_else(|| first.item.conditions.first())
            .map_or(first.item.status.as_str(), |c| c.reason.as_str());
        let more = if problems.len() > 1 {
            format!(" (and {} more)", problems.len() - 1)
        } else {
            String::new()
        };
        return Some((
            State::Failure,
            format!(
                "{} {}: {reason}{more}",
                first.item.name,
                first.item.status.as_str()
            ),
        ));
    }
    let waiting = changed.iter().any(|n| {
        statuses
            .get(n)
            .is_some_and(|s| matches!(s.item.status, Status::Reconciling | Status::Pending))
    });
    if waiting && !final_now {
        return None;
    }
    Some(match changed.len() {
        0 => (State::Success, "nothing to change".to_owned()),
        1 => (
            State::Success,
            format!(
                "applied {}",
                changed.iter().next().map_or("", String::as_str)
            ),
        ),
        n => (State::Success, format!("applied {n} environments")),
    })
}

/// The environment a verdict on `o` links to: the one it names on a
/// failure (the first of its source not applied), the one it changed on a
/// success; `None` (the whole page) otherwise.
fn linked<'a>(
    o: &'a Open,
    state: State,
    statuses: &'a BTreeMap<String, Arc<EnvStatus>>,
) -> Option<&'a str> {
    if state == State::Success {
        return (o.changed.len() == 1)
            .then(|| o.changed.iter().next().map(String::as_str))
            .flatten();
    }
    statuses
        .values()
        .find(|s| {
            source_of(s) == Some(o.source.as_str())
                && (o.changed.contains(&s.item.name)
                    || path_of(s).is_some_and(|p| o.paths.contains(p)))
                && matches!(
                    s.item.status,
                    Status::Invalid | Status::Held | Status::Failed | Status::Stalled
                )
        })
        .map(|s| s.item.name.as_str())
}

/// The source an environment's status names (`<source>:<path>`).
fn source_of(s: &EnvStatus) -> Option<&str> {
    s.item.source.as_deref()?.split_once(':').map(|(s, _)| s)
}

/// A failure for a file the commit brought that was refused before it
/// named an environment's status (unparsable, invalid, a plaintext secret):
/// its file, environment and rule, never its message (which a value could
/// reach).
fn refused_file(
    paths: &BTreeSet<String>,
    diagnostics: &[crate::diagnostic::Diagnostic],
) -> Option<(State, String)> {
    let d = diagnostics.iter().find(|d| paths.contains(&d.file))?;
    let what = d.environment.as_deref().unwrap_or(&d.file);
    Some((
        State::Failure,
        format!("{what} refused: {} ({})", d.rule, d.file),
    ))
}

/// The claim file an environment's status names.
fn path_of(s: &EnvStatus) -> Option<&str> {
    s.item.source.as_deref()?.split_once(':').map(|(_, p)| p)
}

/// The poster's thread: the queue, newest status per key.
struct Worker {
    forges: BTreeMap<String, Arc<dyn Forge>>,
    shared: Arc<Mutex<Shared>>,
    /// key -> (status, attempts, next attempt, arrival order)
    queue: BTreeMap<String, (Queued, u32, Instant, u64)>,
    order: u64,
}

impl Worker {
    fn run(mut self, rx: &Receiver<Queued>) {
        loop {
            let now = Instant::now();
            let wait = self
                .queue
                .values()
                .map(|(_, _, at, _)| at.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_hours(1));
            match rx.recv_timeout(wait) {
                Ok(q) => {
                    self.add(q);
                    // Take whatever else is waiting before posting.
                    while let Ok(q) = rx.try_recv() {
                        self.add(q);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.post_due();
        }
    }

    fn add(&mut self, q: Queued) {
        self.order += 1;
        self.queue
            .insert(q.key(), (q, 0, Instant::now(), self.order));
        while self.queue.len() > MAX_QUEUED {
            let oldest = self
                .queue
                .iter()
                .min_by_key(|(_, (_, _, _, order))| *order)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                tracing::warn!(key = %k, "forge statuses: more than {MAX_QUEUED} queued, the oldest dropped");
                self.queue.remove(&k);
                self.shared().dirty.push((k, None));
            }
        }
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn post_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .queue
            .iter()
            .filter(|(_, (_, _, at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        // One forge that fails waits; the others go on.
        let mut failing: BTreeSet<String> = BTreeSet::new();
        for key in due {
            let Some((q, attempts, _, order)) = self.queue.get(&key).cloned() else {
                continue;
            };
            let Some(forge) = self.forges.get(&q.source) else {
                self.queue.remove(&key);
                continue;
            };
            if failing.contains(&q.source) {
                let at = Instant::now() + backoff(attempts);
                self.queue.insert(key, (q, attempts, at, order));
                continue;
            }
            match forge.ensure_status(&q.commit, &q.status) {
                Ok(wrote) => {
                    tracing::debug!(source = %q.source, commit = %q.commit, state = q.status.state.as_str(), wrote, "forge status");
                    self.queue.remove(&key);
                    let mut shared = self.shared();
                    shared.failures.remove(&q.source);
                    // A newer status for the key may be on its way: its row stays.
                    if shared.latest.get(&key).is_none_or(|l| *l == q.status) {
                        shared.latest.remove(&key);
                        shared.dirty.push((key, None));
                    }
                }
                Err(e) => {
                    let attempts = attempts.saturating_add(1);
                    let wait = backoff(attempts).max(e.wait().unwrap_or_default());
                    if attempts == 1 {
                        tracing::warn!(source = %q.source, commit = %q.commit, "forge status not posted (retried): {e}");
                    }
                    self.shared()
                        .failures
                        .insert(q.source.clone(), e.to_string());
                    failing.insert(q.source.clone());
                    self.queue
                        .insert(key, (q, attempts, Instant::now() + wait, order));
                }
            }
        }
    }
}

/// 1 s doubling per attempt, at most [`MAX_BACKOFF`].
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(6).saturating_sub(1)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_up_to_a_bound() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(50), MAX_BACKOFF);
    }

    #[test]
    fn a_commit_with_nothing_to_change_succeeds() {
        let verdict = judge(
            "s",
            &BTreeSet::new(),
            &BTreeSet::new(),
            &BTreeMap::new(),
            false,
        );
        assert_eq!(
            verdict,
            Some((State::Success, "nothing to change".to_owned()))
        );
    }
}
