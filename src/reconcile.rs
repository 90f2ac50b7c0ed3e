//! The loop: continuous, level-triggered reconcile with durable state.
//!
//! One writer (this loop) runs passes; readers (the API) see immutable
//! [`View`]s swapped in after each pass. Sources are polled on their interval
//! with jitter, and dir sources are also watched (`notify`, debounced), so a
//! saved file is applied within a second or two. A pass also runs at the
//! earliest expiry, and when an apply retry is due. A pass never asks why it
//! ran: it reads what is due, evaluates every snapshot (cached), plans against
//! the target's inventory and applies.
//!
//! Errors are classified: a source that fails is retried with jittered
//! exponential backoff and keeps its last good snapshot (and while a source
//! has not been read since start, nothing it claimed is deleted); a transient
//! apply failure is retried with backoff; a permanent one (invalid claim,
//! denial, held plan, foreign object) is a condition that waits for the input
//! to change. Every pass is committed to the state store in one transaction.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::condition::Reason;
use crate::config::SourceConfig;
use crate::metrics::{ActionLabels, EnvLabels, Metrics, SourceErrorLabels, SourceLabels};
use crate::pipeline::Evaluation;
use crate::plan::{Change, Plan};
use crate::render::timestamp;
use crate::source::{self, Snapshot};
use crate::state::{self, Commit, Event, PassRecord, Store};
use crate::status::{self, EnvStatus, PassFacts, Statuses};
use crate::target::TargetEvent;
use crate::view::{View, list_json};
use crate::{Converge, Memory, Mode, PassError, PassOptions, PassOutcome, apply, plan};

/// A full pass runs at least this often even when no source changed.
const RESYNC: Duration = Duration::from_mins(10);

/// The file an operator creates to let the next held plan through, once.
pub const ALLOW_MASS_DELETE_FILE: &str = "allow-mass-delete";

/// Jittered exponential backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    failures: u32,
    base: Duration,
    max: Duration,
}

impl Backoff {
    #[must_use]
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            failures: 0,
            base,
            max,
        }
    }

    /// The next delay: `base * 2^failures`, capped at `max`, then a uniform
    /// jitter in `[d/2, d]` so many failing sources do not retry in step.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1 << self.failures.min(20));
        let d = exp.min(self.max);
        self.failures = self.failures.saturating_add(1);
        jitter(d, 0.5)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// `d` scaled by a uniform factor in `[1 - spread, 1]`.
#[must_use]
pub fn jitter(d: Duration, spread: f64) -> Duration {
    d.mul_f64(1.0 - spread * fastrand::f64())
}

/// Object steps of the last plan kept for `/api/v1/plan` and the status page.
const PLAN_STEPS_KEPT: usize = 1000;

/// A poll interval with downward jitter (`d × U(0.9, 1.0)`): sources do not
/// poll in step, and a change never waits longer than one interval.
fn jittered_interval(d: Duration) -> Duration {
    jitter(d, 0.1)
}

/// One source as the loop tracks it.
struct SourceState {
    config: SourceConfig,
    source: Box<dyn source::Source>,
    interval: Duration,
    /// The snapshot passes use; also the revision a poll asks "changed?"
    /// about (`read_changed`), so a source is never "unchanged" against a
    /// snapshot no pass got.
    last_good: Option<Snapshot>,
    /// A read completed since this process started and its snapshot is
    /// `last_good` (restored snapshots are stale until then).
    fresh: bool,
    due: Instant,
    backoff: Backoff,
    last_success: Option<DateTime<Utc>>,
    last_error: Option<(String, String)>,
    errors: u64,
    /// When a new revision was first seen and not yet applied.
    changed_at: Option<Instant>,
    /// Whether `last_good` changed since the last commit.
    dirty: bool,
    /// What the state store holds of this source (so a commit writes only
    /// the files that changed); `None` when it holds nothing yet.
    stored: Option<state::Stored>,
    /// `converge_source_polls_total{source}`.
    polls: Counter,
    /// `converge_source_last_success_timestamp_seconds{source}`.
    last_success_gauge: Gauge<f64, AtomicU64>,
    /// A git source's work counters, mirrored into metrics after each poll.
    git: Option<GitWork>,
}

/// A git source's counters and what of them the metrics already count.
struct GitWork {
    stats: Arc<source::git::Stats>,
    /// Ref checks, fetches, blob reads already counted.
    seen: [u64; 3],
    /// `converge_git_{ref_checks,fetches,blob_reads}_total{source}`.
    counters: [Counter; 3],
}

impl GitWork {
    /// Adds the work done since the last call to the metrics.
    fn count(&mut self) {
        let now = [
            self.stats.ref_checks.load(Ordering::Relaxed),
            self.stats.fetches.load(Ordering::Relaxed),
            self.stats.blob_reads.load(Ordering::Relaxed),
        ];
        for ((counter, seen), now) in self.counters.iter().zip(&mut self.seen).zip(now) {
            counter.inc_by(now.saturating_sub(*seen));
            *seen = now;
        }
    }
}

/// `/api/v1/sources` items.
#[derive(Debug, Serialize)]
struct SourceDoc<'a> {
    name: &'a str,
    kind: &'static str,
    revision: Option<&'a str>,
    files: usize,
    /// Read at least once since start, and the last read succeeded.
    ready: bool,
    last_success: Option<String>,
    errors: u64,
    last_error: Option<SourceErrorDoc<'a>>,
    next_poll_in_ms: u128,
    /// Files refused without naming a valid environment (the first
    /// [`REFUSED_FILES_SHOWN`] by path), and how many there are.
    refused_files: Vec<RefusedFileDoc<'a>>,
    refused_files_total: usize,
}

/// How many refused files `/api/v1/sources` lists per source.
const REFUSED_FILES_SHOWN: usize = 100;

/// A file refused before it named an environment: its first problem.
#[derive(Debug, Serialize)]
struct RefusedFileDoc<'a> {
    path: &'a str,
    pointer: &'a str,
    rule: &'a str,
    message: &'a str,
}

#[derive(Debug, Serialize)]
struct SourceErrorDoc<'a> {
    reason: &'a str,
    message: &'a str,
}

/// What the loop does after a pass (kube-rs's `reconcile` -> `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run again after this long even if no input changes (an apply retry,
    /// the earliest expiry).
    Requeue(Duration),
    /// Run again only when an input changes.
    AwaitChange,
}

/// Why the loop woke: a closed set (rust-analyzer's main loop `Event`).
#[derive(Debug)]
enum Wake {
    /// A source's poll is due, or these dir sources' files changed.
    Poll(BTreeSet<usize>),
    /// The last pass asked to run again now.
    Requeue,
    /// The periodic full resync is due.
    Resync,
    /// Time to look for the allow file of a held plan.
    Allowed,
    /// The target observed a change of health or drift.
    TargetChanged,
    /// Time to look whether this replica leads (leader election).
    Leadership,
    /// The tag source's scan is due (`versions.interval`).
    Tags,
    Shutdown,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    State(#[from] state::Error),
    #[error(transparent)]
    Source(#[from] source::Error),
}

/// The single writer.
pub struct Daemon {
    converge: Converge,
    /// The state dir's writer lock, held as long as the daemon lives.
    _lock: Vec<state::WriterLock>,
    store: Store,
    metrics: Arc<Metrics>,
    view: Arc<ArcSwap<View>>,
    sources: Vec<SourceState>,
    /// What the last pass learned (evaluations of unchanged files, the plan memo).
    memory: Memory,
    statuses: Statuses,
    events: VecDeque<Event>,
    passes: VecDeque<PassRecord>,
    next_event: u64,
    pass: u64,
    first_pass_done: bool,
    last_plan: Option<Arc<Plan>>,
    apply_backoff: Backoff,
    /// When the last pass asked to run again (an apply retry, an expiry).
    requeue_at: Option<Instant>,
    /// Files the last evaluation refused before they became claims: their
    /// bytes are not stored (they may hold a secret by mistake). `None`
    /// until a pass evaluated the sources' snapshots; snapshots are stored
    /// only after one did.
    withheld: Option<BTreeSet<crate::source::Origin>>,
    /// Files the last evaluation refused without naming a valid environment,
    /// shown per source in `/api/v1/sources` (and so by `converge status`).
    unnamed: BTreeMap<crate::source::Origin, Vec<crate::diagnostic::Diagnostic>>,
    /// Diagnostics already reported as events (so a pass does not repeat them).
    reported: BTreeSet<String>,
    last_hold: Option<String>,
    last_full_pass: Option<Instant>,
    /// `/api/v1/events` serialized, rebuilt only when an event is added.
    events_body: Option<Bytes>,
    /// Drift last reported per environment (`drift: report`), so it is
    /// reported once.
    drift_reported: BTreeMap<String, String>,
    /// Drift found and not corrected, per environment, as the state store
    /// holds it (restored at start and handed to the target).
    drift_kept: BTreeMap<String, Vec<(String, String)>>,
    /// The target's signal of observed changes (health, drift).
    target_changes: Option<watch::Receiver<u64>>,
    /// Whether this replica led at the last look (leader election).
    leading: bool,
    /// The shard members of the last pass (`shards`).
    shard: Option<Arc<crate::shard::Members>>,
    /// Files with diagnostics in the last pass (their recovery is logged).
    rejected_files: BTreeSet<String>,
    /// When the tag source scans next (none without one).
    tags_due: Option<Instant>,
    /// The tag source's last failure reported as an event.
    tags_error: Option<String>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("pass", &self.pass)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Opens the state store and restores what the last run left.
    pub fn new(
        mut converge: Converge,
        metrics: Arc<Metrics>,
        view: Arc<ArcSwap<View>>,
    ) -> Result<Daemon, Error> {
        let lock = converge.writer_locks()?;
        let store = Store::open(&converge.config.state_dir)?;
        let restored = store.restore()?;
        let now = Instant::now();
        // The last good tag lists resolve as before until the first scan
        // (a restart during a registry outage changes nothing).
        let tags_due = match &mut converge.tags {
            Some(scanner) => {
                scanner.restore(&restored.tags);
                Some(now)
            }
            None => None,
        };
        converge.adopt_tags();
        let max_backoff = converge.config.reconcile.max_backoff;
        let mut sources = Vec::new();
        for c in &converge.config.sources {
            let mut source = converge.source(c)?;
            if let Some(snapshot) = restored.snapshots.get(c.name()) {
                source.restore(snapshot);
            }
            let labels = SourceLabels {
                source: c.name().to_owned(),
            };
            let git = source.git_stats().map(|stats| GitWork {
                stats,
                seen: [0; 3],
                counters: [
                    &metrics.git_ref_checks,
                    &metrics.git_fetches,
                    &metrics.git_blob_reads,
                ]
                .map(|family| family.get_or_create(&labels).clone()),
            });
            sources.push(SourceState {
                stored: restored.snapshots.get(c.name()).map(state::Stored::of),
                polls: metrics.source_polls.get_or_create(&labels).clone(),
                last_success_gauge: metrics.source_last_success.get_or_create(&labels).clone(),
                git,
                last_good: restored.snapshots.get(c.name()).cloned(),
                config: c.clone(),
                interval: source.interval(),
                source,
                fresh: false,
                due: now,
                backoff: Backoff::new(
                    Duration::from_secs(1),
                    max_backoff.max(Duration::from_secs(1)),
                ),
                last_success: None,
                last_error: None,
                errors: 0,
                changed_at: None,
                dirty: false,
            });
        }
        let drift_reported = restore_drift(&converge, &restored.drift);
        let statuses: BTreeMap<String, Arc<EnvStatus>> = restored
            .environments
            .into_iter()
            .filter_map(|(k, v)| Some((k, Arc::new(EnvStatus::restored(&v).ok()?))))
            .collect();
        let pass = restored.passes.last().map_or(0, |p| p.id);
        let next_event = restored.events.last().map_or(1, |e| e.id + 1);
        let mut daemon = Daemon {
            converge,
            _lock: lock,
            store,
            metrics,
            view,
            sources,
            memory: Memory::default(),
            statuses: Arc::new(statuses),
            events: restored.events.into(),
            passes: restored.passes.into(),
            next_event,
            pass,
            first_pass_done: false,
            last_plan: None,
            apply_backoff: Backoff::new(
                Duration::from_secs(1),
                max_backoff.max(Duration::from_secs(1)),
            ),
            requeue_at: None,
            withheld: None,
            unnamed: BTreeMap::new(),
            reported: BTreeSet::new(),
            last_hold: None,
            last_full_pass: None,
            events_body: None,
            drift_reported,
            drift_kept: restored.drift,
            target_changes: None,
            leading: true,
            shard: None,
            rejected_files: BTreeSet::new(),
            tags_due,
            tags_error: None,
        };
        daemon.publish();
        Ok(daemon)
    }

    fn allow_file(&self) -> PathBuf {
        self.converge.config.state_dir.join(ALLOW_MASS_DELETE_FILE)
    }

    /// Whether the last plan is held (the loop then looks for the allow file).
    fn held(&self) -> bool {
        self.last_plan.as_ref().is_some_and(|p| p.hold.is_some())
    }

    /// The next timer and what it means.
    fn next_timer(&self) -> (Instant, Wake) {
        let now = Instant::now();
        let mut next = (now + Duration::from_hours(1), Wake::Poll(BTreeSet::new()));
        let mut consider = |at: Instant, wake: Wake| {
            if at < next.0 {
                next = (at, wake);
            }
        };
        if let Some(due) = self.sources.iter().map(|s| s.due).min() {
            consider(due, Wake::Poll(BTreeSet::new()));
        }
        if let Some(at) = self.requeue_at {
            consider(at, Wake::Requeue);
        }
        if let Some(at) = self.tags_due {
            consider(at, Wake::Tags);
        }
        consider(
            self.last_full_pass.map_or(now, |t| t + RESYNC),
            Wake::Resync,
        );
        if self.held() {
            consider(now + Duration::from_secs(2), Wake::Allowed);
        }
        if !self.leading {
            consider(now + Duration::from_millis(500), Wake::Leadership);
        }
        next
    }

    /// Waits for the next reason to wake.
    async fn wait(
        &mut self,
        changes: &mut mpsc::Receiver<usize>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Wake {
        let (at, timer) = self.next_timer();
        if self.target_changes.is_none() {
            self.target_changes = self.converge.target.changes();
        }
        let observed = self.target_changes.as_mut();
        let target_changed = async move {
            match observed {
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = target_changed => Wake::TargetChanged,
            () = tokio::time::sleep_until(at) => timer,
            Some(i) = changes.recv() => {
                // Debounce: editors write several events per save.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut touched = BTreeSet::from([i]);
                while let Ok(j) = changes.try_recv() {
                    touched.insert(j);
                }
                Wake::Poll(touched)
            }
            signal = shutdown.changed() => {
                if signal.is_err() || *shutdown.borrow() {
                    Wake::Shutdown
                } else {
                    Wake::Poll(BTreeSet::new())
                }
            }
        }
    }

    /// Runs until `shutdown` turns true; the pass in progress always finishes.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let (tx, mut rx) = mpsc::channel::<usize>(256);
        let mut watchers = Vec::new();
        loop {
            if watchers.len() < self.dir_sources() {
                watchers = self.watch_dirs(&tx);
            }
            let wake = self.wait(&mut rx, &mut shutdown).await;
            if matches!(wake, Wake::Shutdown) {
                break;
            }
            tokio::task::block_in_place(|| self.handle(&wake));
        }
        tracing::info!("shutting down: the last pass is complete");
    }

    /// Reads what is due and runs a pass when anything a pass depends on
    /// changed. Level-triggered, but not wasteful: an idle poll of unchanged
    /// sources costs a ref check or a listing, not a pass; a full pass still
    /// runs every [`RESYNC`].
    fn handle(&mut self, wake: &Wake) {
        // Only the leader reads, plans and applies; a standby stays not
        // ready (so a Service routes API reads to the leader) until it leads,
        // then reads the inventory from the target and passes at once.
        let leading = self.converge.target.leading();
        if leading != self.leading {
            self.leading = leading;
            tracing::info!(leading, "leadership changed");
            if leading {
                self.converge.target.reload();
                self.last_full_pass = None;
            } else {
                self.publish_sources();
            }
        }
        if !leading {
            return;
        }
        let now = Instant::now();
        let mut due: BTreeSet<usize> = (0..self.sources.len())
            .filter(|&i| self.sources[i].due <= now)
            .collect();
        if let Wake::Poll(touched) = wake {
            due.extend(touched);
        }
        let requeue = self.requeue_at.is_some_and(|at| at <= now);
        let resync = self.last_full_pass.is_none_or(|t| t.elapsed() >= RESYNC);
        let allowed = self.held() && self.allow_file().exists();
        let observed = matches!(wake, Wake::TargetChanged);
        let tags_due = self.tags_due.is_some_and(|at| at <= now);
        if due.is_empty() && !requeue && !resync && !allowed && !observed && !tags_due {
            return;
        }
        let mut events = Vec::new();
        let mut changed = self.read_sources(&due, &mut events);
        if tags_due {
            changed |= self.scan_tags(&mut events);
        }
        // The age key files are checked with the sources: new keys may open
        // claims that waited for them.
        let keys = !due.is_empty() && self.converge.key_files.refresh();
        if changed || keys || requeue || resync || allowed || observed {
            let started = Instant::now();
            if resync {
                self.converge.target.reload();
            }
            self.requeue_at = match self.pass(events) {
                Action::Requeue(d) => Some(Instant::now() + d),
                Action::AwaitChange => None,
            };
            // Committed and swapped in: the API serves the result.
            self.metrics
                .pass_ready
                .observe(started.elapsed().as_secs_f64());
        } else {
            // Nothing a pass depends on changed: no pass, and no state
            // transaction unless there are events to record.
            self.commit(&[], &events, None, &[]);
            self.publish_sources();
        }
    }

    fn dir_sources(&self) -> usize {
        self.sources
            .iter()
            .filter(|s| matches!(s.config, SourceConfig::Dir { .. }))
            .count()
    }

    /// Watches every dir source; a source whose directory is missing is retried next time.
    fn watch_dirs(&self, tx: &mpsc::Sender<usize>) -> Vec<notify::RecommendedWatcher> {
        use notify::Watcher;
        let mut out = Vec::new();
        for (i, s) in self.sources.iter().enumerate() {
            let SourceConfig::Dir { path, .. } = &s.config else {
                continue;
            };
            let tx = tx.clone();
            let handler = move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.try_send(i);
                }
            };
            match notify::recommended_watcher(handler) {
                Ok(mut w) => match w.watch(path, notify::RecursiveMode::Recursive) {
                    Ok(()) => out.push(w),
                    Err(e) => {
                        tracing::debug!(source = s.config.name(), error = %e, "cannot watch yet; polling");
                    }
                },
                Err(e) => tracing::warn!(error = %e, "file watching unavailable; polling only"),
            }
        }
        out
    }

    fn event(
        &mut self,
        kind: &str,
        reason: &str,
        environment: Option<&str>,
        message: String,
    ) -> Event {
        let event = Event {
            id: self.next_event,
            time: timestamp(Utc::now()),
            pass: self.pass,
            kind: kind.to_owned(),
            reason: reason.to_owned(),
            environment: environment.map(str::to_owned),
            message,
        };
        self.next_event += 1;
        self.events_body = None;
        self.events.push_back(event.clone());
        while self.events.len() > usize::try_from(state::EVENT_HISTORY).unwrap_or(usize::MAX) {
            self.events.pop_front();
        }
        event
    }

    /// Reads the due sources; true when anything a pass depends on changed
    /// (a new revision, a first read, an error starting or ending).
    fn read_sources(&mut self, due: &BTreeSet<usize>, new_events: &mut Vec<Event>) -> bool {
        let mut any = false;
        for &i in due {
            // "Unchanged" is asked about the snapshot the passes use, never
            // about what the source saw last (a read abandoned at its
            // timeout may have seen more): nothing is skipped, and a source
            // is fresh only with a snapshot of a completed read.
            let s = &mut self.sources[i];
            let have = s.last_good.as_ref().map(|l| &l.revision);
            let result = s.source.read_changed(have);
            self.sources[i].polls.inc();
            if let Some(git) = &mut self.sources[i].git {
                git.count();
            }
            let name = self.sources[i].config.name().to_owned();
            match result {
                Ok(None) if self.sources[i].last_good.is_none() => {
                    // A source breaking `read_changed`'s contract: nothing
                    // to use, so it stays stale (unreadable is not empty).
                    tracing::error!(source = %name, "the source said unchanged before any snapshot; read again next poll");
                    let s = &mut self.sources[i];
                    s.due = Instant::now() + s.backoff.next_delay().min(s.interval);
                }
                Ok(snapshot) => {
                    let s = &mut self.sources[i];
                    if let Some(snapshot) = snapshot {
                        let changed = s
                            .last_good
                            .as_ref()
                            .is_none_or(|old| old.revision != snapshot.revision);
                        if changed {
                            s.changed_at.get_or_insert_with(Instant::now);
                            s.dirty = true;
                            s.last_good = Some(snapshot);
                            any = true;
                        }
                    }
                    any |= !s.fresh || s.last_error.is_some();
                    s.fresh = true;
                    s.backoff.reset();
                    s.due = Instant::now() + jittered_interval(s.interval);
                    s.last_success = Some(Utc::now());
                    let recovered = s.last_error.take();
                    s.last_success_gauge
                        .set(Utc::now().timestamp_millis() as f64 / 1000.0);
                    if let Some((_, message)) = recovered {
                        let e = self.event(
                            "Normal",
                            "SourceRecovered",
                            None,
                            format!("source {name} is readable again (was: {message})"),
                        );
                        new_events.push(e);
                    }
                }
                Err(e) => {
                    let (reason, message) = (e.reason().to_owned(), e.to_string());
                    self.metrics
                        .source_errors
                        .get_or_create(&SourceErrorLabels {
                            source: name.clone(),
                            reason: reason.clone(),
                        })
                        .inc();
                    let s = &mut self.sources[i];
                    s.errors += 1;
                    let delay = s
                        .backoff
                        .next_delay()
                        .min(s.interval.max(Duration::from_secs(1)));
                    s.due = Instant::now() + delay;
                    let repeated = s.last_error.as_ref().is_some_and(|(_, m)| *m == message);
                    any |= s.last_error.is_none();
                    s.last_error = Some((reason.clone(), message.clone()));
                    tracing::warn!(source = %name, reason = %reason, retry_in_ms = delay.as_millis(), "{message}");
                    if !repeated {
                        let text = format!(
                            "{message}; keeping the last good snapshot, nothing it claims is deleted"
                        );
                        let e = self.event("Warning", &reason, None, text);
                        new_events.push(e);
                    }
                }
            }
        }
        any
    }

    /// Lists every wanted repository again; true when a list changed or
    /// turned stale or fresh (a pass is due). A failure keeps the last good
    /// lists and is reported once, as for sources.
    fn scan_tags(&mut self, new_events: &mut Vec<Event>) -> bool {
        let Some(outcome) = self.converge.scan_tags() else {
            self.tags_due = None;
            return false;
        };
        let Some(scanner) = &self.converge.tags else {
            return false;
        };
        self.tags_due = Some(Instant::now() + jittered_interval(scanner.interval));
        self.metrics.tag_scans.inc();
        for (repository, n) in scanner.seen() {
            self.metrics
                .tags_seen
                .get_or_create(&crate::metrics::RepositoryLabels { repository })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let kind = scanner.kind();
        if outcome.failed.is_empty() {
            self.metrics
                .tags_last_scan
                .set(Utc::now().timestamp_millis() as f64 / 1000.0);
            if let Some(was) = self.tags_error.take() {
                let text = format!("the {kind} tag source is readable again (was: {was})");
                let e = self.event("Normal", "SourceRecovered", None, text);
                new_events.push(e);
            }
        } else {
            for (key, reason, message) in &outcome.failed {
                self.metrics
                    .source_errors
                    .get_or_create(&SourceErrorLabels {
                        source: "versions".to_owned(),
                        reason: reason.clone(),
                    })
                    .inc();
                tracing::warn!(service = %key.service, dev = key.dev, reason = %reason, "{message}");
            }
            let (_, reason, message) = &outcome.failed[0];
            let more = outcome.failed.len() - 1;
            let text = if more > 0 {
                format!("{message} (and {more} more listings)")
            } else {
                message.clone()
            };
            if self.tags_error.as_deref() != Some(text.as_str()) {
                let e = self.event(
                    "Warning",
                    reason,
                    None,
                    format!("{text}; the last resolved versions stay, nothing is deleted"),
                );
                new_events.push(e);
                self.tags_error = Some(text);
            }
        }
        outcome.changed || outcome.staleness_changed
    }

    /// One pass, observed. [`Converge::pass`] does the work; the loop records
    /// its outcome, whatever it was, in the same steps (events, metrics,
    /// statuses, the pass record, the commit, the view) and returns when to
    /// run again. Synchronous: it runs on a blocking thread.
    fn pass(&mut self, mut events: Vec<Event>) -> Action {
        let started = Instant::now();
        let now = Utc::now();
        self.pass += 1;
        let span = tracing::info_span!("pass", id = self.pass);
        let _guard = span.enter();
        self.last_full_pass = Some(started);

        let snapshots: Vec<Snapshot> = self
            .sources
            .iter()
            .filter_map(|s| s.last_good.clone())
            .collect();
        // Unreadable is not empty: what a source not read since start (or
        // failing now) claims is never deleted.
        let stale: BTreeSet<&str> = self
            .sources
            .iter()
            .filter(|s| !s.fresh || s.last_error.is_some())
            .map(|s| s.config.name())
            .collect();
        let allowed = self.allow_file().exists();
        let options = PassOptions {
            now,
            mode: Mode::Apply { observe: true },
            allow_mass_delete: allowed,
        };
        let result = self
            .converge
            .pass(snapshots, &stale, options, &mut self.memory);
        drop(stale);

        let mut drift_changes = Vec::new();
        let (action, touched, record) = match result {
            Ok(outcome) => {
                self.withheld = Some(outcome.evaluation.withheld.clone());
                self.unnamed.clone_from(&outcome.evaluation.unnamed);
                self.observe_hold(&outcome.plan, allowed, &mut events);
                self.observe_applies(&outcome, &mut events);
                self.observe_diagnostics(&outcome.evaluation, &mut events);
                self.observe_latency(&outcome);
                drift_changes = self.observe_drift(&outcome, &mut events);
                self.observe_counters(&outcome);
                self.observe_shard(&outcome);
                let action = self.action_after(&outcome, now);
                let record = self.pass_record(Ok(&outcome), started, now);
                let before = Arc::clone(&self.statuses);
                let touched = self.observe_statuses(outcome, now);
                self.observe_stalls(&before, &touched, &mut events);
                (action, touched, record)
            }
            Err(e) => {
                // Its snapshots were not evaluated: stored after a pass that is.
                self.withheld = None;
                tracing::error!(error = %e, reason = %e.reason(), "the pass could not run");
                let ev = self.event("Warning", e.reason().as_str(), None, e.to_string());
                events.push(ev);
                let delay = self.apply_backoff.next_delay();
                let record = self.pass_record(Err(&e), started, now);
                (Action::Requeue(delay), Vec::new(), record)
            }
        };
        let changed_envs: Vec<(String, Option<Vec<u8>>)> = touched
            .into_iter()
            .map(|name| {
                let body = self.statuses.get(&name).map(|e| e.stored());
                (name, body)
            })
            .collect();
        self.passes.push_back(record.clone());
        while self.passes.len() > usize::try_from(state::PASS_HISTORY).unwrap_or(usize::MAX) {
            self.passes.pop_front();
        }
        self.record_in_target(&events);
        let changed: Vec<String> = changed_envs.iter().map(|(n, _)| n.clone()).collect();
        self.converge.target.publish(&self.statuses, &changed);
        self.commit(&changed_envs, &events, Some(record), &drift_changes);
        self.publish();
        action
    }

    /// Step: a held plan is reported once (and its allow file consumed once
    /// the plan it allowed went through).
    fn observe_hold(&mut self, plan: &Plan, allowed: bool, events: &mut Vec<Event>) {
        let allow_file = self.allow_file();
        if let Some(hold) = &plan.hold {
            self.metrics.plan_held.set(1);
            if self.last_hold.as_deref() != Some(hold.message.as_str()) {
                self.metrics.plans_held.inc();
                let message = format!(
                    "{}; to allow it once, create {} (never through the API)",
                    hold.message,
                    allow_file.display()
                );
                tracing::warn!("{message}");
                let ev = self.event("Warning", Reason::MassDeletionHeld.as_str(), None, message);
                events.push(ev);
                self.last_hold = Some(hold.message.clone());
            }
            return;
        }
        self.metrics.plan_held.set(0);
        self.last_hold = None;
        if allowed && plan.environments.iter().any(|e| e.change == Change::Delete) {
            let _ = std::fs::remove_file(&allow_file);
            let ev = self.event(
                "Normal",
                "MassDeletionAllowed",
                None,
                format!("{} was used and removed", allow_file.display()),
            );
            events.push(ev);
        }
    }

    /// Step: an event and a metric per environment applied or failed.
    fn observe_applies(&mut self, outcome: &PassOutcome, events: &mut Vec<Event>) {
        let Some(report) = &outcome.report else {
            return;
        };
        let changes: BTreeMap<&str, &plan::EnvironmentPlan> = outcome
            .plan
            .environments
            .iter()
            .map(|e| (e.name.as_str(), e))
            .collect();
        for name in &report.applied {
            let Some(env) = changes.get(name.as_str()) else {
                continue;
            };
            let (reason, action) = match env.change {
                Change::Create => ("Created", "create"),
                Change::Update => ("Updated", "update"),
                Change::Delete => ("Deleted", "delete"),
            };
            self.metrics
                .plan_changes
                .get_or_create(&ActionLabels {
                    action: action.to_owned(),
                })
                .inc();
            let versions: Vec<String> = env.versions.iter().map(ToString::to_string).collect();
            let mut message = format!("{} ({})", action, env.reason);
            if !versions.is_empty() {
                message = format!("{message}: {}", versions.join(", "));
            }
            tracing::info!(environment = %name, change = action, reason = %env.reason, "applied");
            if env.reason == Reason::DriftCorrected {
                continue; // its event names the objects (`observe_drift`)
            }
            let ev = self.event("Normal", reason, Some(name), message);
            events.push(ev);
        }
        for (name, failure) in &report.failed {
            self.metrics.apply_failures.inc();
            tracing::error!(environment = %name, reason = %failure.reason(), "{failure}");
            let ev = self.event(
                "Warning",
                failure.reason().as_str(),
                Some(name),
                failure.to_string(),
            );
            events.push(ev);
        }
    }

    /// Step: each new diagnostic is reported once, as an event.
    fn observe_diagnostics(&mut self, evaluation: &Evaluation, events: &mut Vec<Event>) {
        let diagnostics: BTreeSet<String> = evaluation
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect();
        let previously = std::mem::replace(&mut self.reported, diagnostics);
        let files: BTreeSet<String> = evaluation
            .diagnostics
            .iter()
            .map(|d| d.file.clone())
            .collect();
        for file in self.rejected_files.difference(&files) {
            let present = self.sources.iter().any(|s| {
                s.last_good
                    .as_ref()
                    .is_some_and(|g| g.files.iter().any(|f| f.path == *file))
            });
            if present {
                tracing::info!(file = %file, "claim file no longer rejected: it is valid now");
            } else {
                tracing::info!(file = %file, "claim file no longer rejected: it was removed");
            }
        }
        self.rejected_files = files;
        for d in evaluation
            .diagnostics
            .iter()
            .filter(|d| !previously.contains(&d.to_string()))
            .take(100)
        {
            tracing::warn!(
                file = %d.file,
                pointer = %d.pointer,
                rule = %d.rule,
                environment = d.environment.as_deref().unwrap_or(""),
                "{}",
                d.message
            );
            let ev = self.event(
                "Warning",
                "ClaimRejected",
                d.environment.as_deref(),
                d.to_string(),
            );
            events.push(ev);
        }
    }

    /// Step: the time from a source change being seen to it being applied.
    fn observe_latency(&mut self, outcome: &PassOutcome) {
        let applied = outcome
            .report
            .as_ref()
            .is_some_and(|r| !r.applied.is_empty());
        if applied {
            let seen = self
                .sources
                .iter_mut()
                .filter_map(|s| s.changed_at.take())
                .min();
            if let Some(seen) = seen {
                self.metrics
                    .apply_latency
                    .observe(seen.elapsed().as_secs_f64());
            }
        } else if outcome.plan.environments.is_empty() {
            for s in &mut self.sources {
                s.changed_at = None;
            }
        }
    }

    /// Step: drift is reported once per change, as an event and a log line
    /// (`Drifted`), and a correction as `DriftCorrected` (an event, a log
    /// line and `converge_drift_corrections_total`, per object) for each
    /// environment the pass applied; an environment whose apply failed (or
    /// that the plan left alone) keeps its drift. Returns the drift the
    /// state store must now hold, for the commit.
    fn observe_drift(
        &mut self,
        outcome: &PassOutcome,
        events: &mut Vec<Event>,
    ) -> Vec<(String, Option<Vec<u8>>)> {
        let applied: BTreeSet<&str> = outcome
            .report
            .iter()
            .flat_map(|r| &r.applied)
            .map(String::as_str)
            .collect();
        // What the plan applied again, of environments applied.
        let mut corrected: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
        for d in outcome
            .plan
            .drift
            .iter()
            .filter(|d| d.corrected && applied.contains(d.environment.as_str()))
        {
            corrected
                .entry(d.environment.as_str())
                .or_default()
                .push((d.object.clone(), d.how.clone()));
        }
        for (name, objects) in &corrected {
            let message = drift_message(objects);
            let text = format!("applied again: {message}");
            tracing::warn!(environment = %name, reason = Reason::DriftCorrected.as_str(), "{text}");
            self.metrics.drift_corrections.inc_by(objects.len() as u64);
            let ev = self.event("Warning", Reason::DriftCorrected.as_str(), Some(name), text);
            events.push(ev);
        }
        // What stands: every finding not corrected by this pass.
        let standing: BTreeMap<String, Vec<(String, String)>> = outcome
            .drift
            .iter()
            .filter_map(|(name, objects)| {
                let fixed = corrected.get(name.as_str());
                let left: Vec<(String, String)> = objects
                    .iter()
                    .filter(|o| fixed.is_none_or(|f| !f.contains(o)))
                    .cloned()
                    .collect();
                (!left.is_empty()).then(|| (name.clone(), left))
            })
            .collect();
        let before = std::mem::take(&mut self.drift_reported);
        for (name, objects) in &standing {
            let message = drift_message(objects);
            if before.get(name) == Some(&message) {
                self.drift_reported.insert(name.clone(), message);
                continue;
            }
            tracing::warn!(environment = %name, reason = Reason::Drifted.as_str(), "{message}");
            let ev = self.event(
                "Warning",
                Reason::Drifted.as_str(),
                Some(name),
                message.clone(),
            );
            events.push(ev);
            self.drift_reported.insert(name.clone(), message);
        }
        // The store keeps the drift of this replica's share: environments
        // outside it (another shard's) are left as they are.
        let in_share = |name: &str| {
            outcome.live.environments.contains_key(name)
                || outcome.evaluation.desired.contains_key(name)
                || outcome.members.is_none()
        };
        let mut changes = Vec::new();
        for (name, objects) in &standing {
            if self.drift_kept.get(name) != Some(objects) {
                changes.push((name.clone(), Some(state::DriftRecord::encode(objects))));
            }
        }
        for name in self.drift_kept.keys() {
            if !standing.contains_key(name) && in_share(name) {
                changes.push((name.clone(), None));
            }
        }
        for (name, record) in &changes {
            match record {
                Some(_) => {
                    self.drift_kept.insert(name.clone(), standing[name].clone());
                }
                None => {
                    self.drift_kept.remove(name);
                }
            }
        }
        changes
    }

    /// Step: environments' events also go to the target's own event stream
    /// (Kubernetes Events).
    fn record_in_target(&self, events: &[Event]) {
        let events: Vec<TargetEvent<'_>> = events
            .iter()
            .filter_map(|e| {
                Some(TargetEvent {
                    environment: e.environment.as_deref()?,
                    warning: e.kind == "Warning",
                    reason: &e.reason,
                    message: &e.message,
                })
            })
            .collect();
        if !events.is_empty() {
            self.converge.target.record(&events);
        }
    }

    /// Step: the work counters.
    fn observe_counters(&self, outcome: &PassOutcome) {
        let c = outcome.counters;
        self.metrics.claims_parsed.inc_by(c.parsed as u64);
        self.metrics.claims_validated.inc_by(c.validated as u64);
        self.metrics.claims_authorized.inc_by(c.authorized as u64);
        self.metrics.claims_rendered.inc_by(c.rendered as u64);
        self.metrics.claims_resolved.inc_by(c.resolved as u64);
        self.metrics.secrets_decrypts.inc_by(c.decrypts as u64);
        self.metrics
            .secrets_key_unwraps
            .inc_by(c.key_unwraps as u64);
    }

    /// Step: the shard members the pass planned with (`shards`), for the
    /// view, and this replica's share in the gauges.
    fn observe_shard(&mut self, outcome: &PassOutcome) {
        self.shard.clone_from(&outcome.members);
        if let Some(m) = &outcome.members {
            let share = outcome
                .evaluation
                .desired
                .keys()
                .chain(outcome.live.environments.keys())
                .collect::<BTreeSet<_>>()
                .len();
            self.metrics
                .shard_members
                .set(i64::try_from(m.live().len()).unwrap_or(i64::MAX));
            self.metrics
                .shard_environments
                .set(i64::try_from(share).unwrap_or(i64::MAX));
        }
    }

    /// Step: every environment's status (rebuilt only where something
    /// changed) and the environment gauges; returns the names whose status
    /// changed, for the commit.
    fn observe_statuses(&mut self, outcome: PassOutcome, now: DateTime<Utc>) -> Vec<String> {
        let failed: BTreeMap<String, (Reason, String)> = outcome
            .report
            .iter()
            .flat_map(|r| &r.failed)
            .map(|(name, f)| (name.clone(), (f.reason(), f.to_string())))
            .collect();
        let applied: &[String] = outcome.report.as_ref().map_or(&[], |r| &r.applied);
        let time = timestamp(now);
        let drifted: BTreeMap<String, String> = if outcome.drift_corrected {
            BTreeMap::new()
        } else {
            outcome
                .drift
                .iter()
                .map(|(name, objects)| (name.clone(), drift_message(objects)))
                .collect()
        };
        let facts = PassFacts {
            pass: self.pass,
            time: &time,
            evaluation: &outcome.evaluation,
            plan: &outcome.plan,
            applied,
            failed: &failed,
            applying: outcome.report.is_some(),
            live: &outcome.live,
            health: &outcome.health,
            drifted: &drifted,
        };
        let (statuses, touched) = status::statuses(
            &facts,
            &self.statuses,
            self.converge.config.reconcile.history,
        );
        let mut by_type: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        let mut drifted_by_type: BTreeMap<&str, i64> = BTreeMap::new();
        for e in statuses.values() {
            *by_type
                .entry((e.item.env_type.as_str(), e.item.status.as_str()))
                .or_default() += 1;
            if e.item.drifted() {
                *drifted_by_type.entry(e.item.env_type.as_str()).or_default() += 1;
            }
        }
        // Every type present, so a drift that ends reads 0, not absent.
        self.metrics.environments_drifted.clear();
        for (t, _) in by_type.keys() {
            self.metrics
                .environments_drifted
                .get_or_create(&crate::metrics::TypeLabels {
                    r#type: (*t).to_owned(),
                })
                .set(drifted_by_type.get(t).copied().unwrap_or(0));
        }
        self.metrics.environments.clear();
        for ((t, s), n) in by_type {
            self.metrics
                .environments
                .get_or_create(&EnvLabels {
                    r#type: t.to_owned(),
                    status: s.to_owned(),
                })
                .set(n);
        }
        self.statuses = Arc::new(statuses);
        self.last_plan = Some(Arc::new(outcome.plan.summarized(PLAN_STEPS_KEPT)));
        self.first_pass_done = true;
        touched
    }

    /// Step: an environment turning `Stalled` (from `Reconciling`, or from a
    /// first apply) is logged and evented once, on the transition; the
    /// event goes to the target's event stream too (a Kubernetes Event on
    /// its Namespace).
    fn observe_stalls(
        &mut self,
        before: &BTreeMap<String, Arc<EnvStatus>>,
        touched: &[String],
        events: &mut Vec<Event>,
    ) {
        const STALLED: &str = "Stalled";
        let mut stalled = Vec::new();
        for name in touched {
            let Some(now) = self.statuses.get(name) else {
                continue;
            };
            if now.item.status != STALLED
                || before.get(name).is_some_and(|b| b.item.status == STALLED)
            {
                continue;
            }
            let (reason, message) = now
                .item
                .conditions
                .iter()
                .find(|c| c.kind == crate::condition::ConditionType::Stalled)
                .map_or((Reason::Unhealthy, String::new()), |c| {
                    (c.reason, c.message.clone())
                });
            let was = before.get(name).map_or("new", |b| b.item.status.as_str());
            tracing::warn!(environment = %name, reason = %reason, was, "stalled: {message}");
            stalled.push((
                name.clone(),
                format!("stalled ({reason}, was {was}): {message}"),
            ));
        }
        for (name, message) in stalled {
            let ev = self.event("Warning", STALLED, Some(&name), message);
            events.push(ev);
        }
    }

    /// When to run again without an input changing: after a backoff when an
    /// apply failed transiently or a service's manifests were unavailable,
    /// at the earliest expiry; otherwise on change.
    fn action_after(&mut self, outcome: &PassOutcome, now: DateTime<Utc>) -> Action {
        let transient = outcome
            .report
            .iter()
            .flat_map(|r| r.failed.values())
            .any(apply::Failure::is_transient)
            // A service's manifests that could not be fetched are tried
            // again after the same backoff, not at the next resync.
            || outcome
                .evaluation
                .keep
                .values()
                .any(|r| *r == crate::condition::Reason::ManifestsUnavailable);
        let retry = if transient {
            Some(self.apply_backoff.next_delay())
        } else {
            self.apply_backoff.reset();
            None
        };
        let expiry = outcome
            .evaluation
            .desired
            .values()
            .filter_map(|d| d.expires_at)
            .filter(|at| *at > now)
            .min()
            .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO));
        // A rollout's progress wakes the loop through the target's watches;
        // its timeout passes without any event, so look again then.
        let rolling = outcome.health_deadline;
        match retry.into_iter().chain(expiry).chain(rolling).min() {
            Some(d) => Action::Requeue(d),
            None => Action::AwaitChange,
        }
    }

    /// The pass as history keeps it (and logs it).
    fn pass_record(
        &self,
        result: Result<&PassOutcome, &PassError>,
        started: Instant,
        now: DateTime<Utc>,
    ) -> PassRecord {
        let elapsed = started.elapsed();
        self.metrics.pass_duration.observe(elapsed.as_secs_f64());
        self.metrics.passes.inc();
        let mut record = PassRecord {
            id: self.pass,
            started_at: timestamp(now),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            revisions: self
                .sources
                .iter()
                .filter_map(|s| {
                    Some((
                        s.config.name().to_owned(),
                        s.last_good.as_ref()?.revision.0.clone(),
                    ))
                })
                .collect(),
            created: 0,
            updated: 0,
            deleted: 0,
            unchanged: 0,
            held: false,
            failed: 0,
            parsed: 0,
            error: None,
        };
        match result {
            Ok(outcome) => {
                let changes: BTreeMap<&str, Change> = outcome
                    .plan
                    .environments
                    .iter()
                    .map(|e| (e.name.as_str(), e.change))
                    .collect();
                if let Some(report) = &outcome.report {
                    for name in &report.applied {
                        match changes.get(name.as_str()) {
                            Some(Change::Create) => record.created += 1,
                            Some(Change::Update) => record.updated += 1,
                            Some(Change::Delete) => record.deleted += 1,
                            None => {}
                        }
                    }
                    record.held = report.held;
                    record.failed = report.failed.len();
                }
                record.unchanged = outcome.plan.unchanged;
                record.parsed = outcome.counters.parsed;
            }
            Err(e) => record.error = Some(e.to_string()),
        }
        tracing::info!(
            duration_ms = record.duration_ms,
            parsed = record.parsed,
            created = record.created,
            updated = record.updated,
            deleted = record.deleted,
            failed = record.failed,
            held = record.held,
            error = record.error.as_deref(),
            "pass done"
        );
        record
    }

    fn commit(
        &mut self,
        environments: &[(String, Option<Vec<u8>>)],
        events: &[Event],
        pass: Option<PassRecord>,
        drift: &[(String, Option<Vec<u8>>)],
    ) {
        let evaluated = self.withheld.is_some();
        let dirty: Vec<(&Snapshot, Option<&state::Stored>)> = self
            .sources
            .iter()
            .filter(|s| s.dirty && evaluated)
            .filter_map(|s| Some((s.last_good.as_ref()?, s.stored.as_ref())))
            .collect();
        let tags = self
            .converge
            .tags
            .as_mut()
            .map(crate::tags::Scanner::take_dirty)
            .unwrap_or_default();
        if dirty.is_empty()
            && environments.is_empty()
            && events.is_empty()
            && pass.is_none()
            && tags.is_empty()
            && drift.is_empty()
        {
            return; // an idle poll: no transaction at all
        }
        let commit = Commit {
            snapshots: dirty,
            environments,
            pass,
            events,
            tags: &tags,
            drift,
            withheld: self.withheld.as_ref(),
        };
        match self.store.commit(&commit) {
            Ok(()) => {
                for s in self.sources.iter_mut().filter(|s| s.dirty && evaluated) {
                    s.dirty = false;
                    if let Some(snapshot) = &s.last_good {
                        match &mut s.stored {
                            Some(stored) => stored.update(snapshot),
                            None => s.stored = Some(state::Stored::of(snapshot)),
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record the pass in the state store; will retry with the next pass");
            }
        }
    }

    fn source_docs(&self) -> Vec<SourceDoc<'_>> {
        let now = Instant::now();
        let tags = self.converge.tags.as_ref().map(|s| SourceDoc {
            name: "versions",
            kind: s.kind(),
            revision: None,
            files: s.lists(),
            ready: s.status.scans > 0 && self.tags_error.is_none(),
            last_success: s.status.last_success.map(timestamp),
            errors: s.status.errors,
            last_error: s
                .status
                .last_error
                .as_ref()
                .map(|(reason, message)| SourceErrorDoc { reason, message }),
            next_poll_in_ms: self
                .tags_due
                .map_or(0, |d| d.saturating_duration_since(now).as_millis()),
            refused_files: Vec::new(),
            refused_files_total: 0,
        });
        self.sources
            .iter()
            .map(|s| SourceDoc {
                name: s.config.name(),
                kind: match s.config {
                    SourceConfig::Dir { .. } => "dir",
                    SourceConfig::Git { .. } => "git",
                    SourceConfig::S3 { .. } => "s3",
                },
                revision: s.last_good.as_ref().map(|g| g.revision.0.as_str()),
                files: s.last_good.as_ref().map_or(0, |g| g.files.len()),
                ready: s.fresh && s.last_error.is_none(),
                last_success: s.last_success.map(timestamp),
                errors: s.errors,
                last_error: s
                    .last_error
                    .as_ref()
                    .map(|(reason, message)| SourceErrorDoc { reason, message }),
                next_poll_in_ms: s.due.saturating_duration_since(now).as_millis(),
                refused_files: self
                    .unnamed
                    .iter()
                    .filter(|(o, _)| o.source == s.config.name())
                    .filter_map(|(o, d)| {
                        d.first().map(|d| RefusedFileDoc {
                            path: &o.path,
                            pointer: &d.pointer,
                            rule: &d.rule,
                            message: &d.message,
                        })
                    })
                    .take(REFUSED_FILES_SHOWN)
                    .collect(),
                refused_files_total: self
                    .unnamed
                    .keys()
                    .filter(|o| o.source == s.config.name())
                    .count(),
            })
            .chain(tags)
            .collect()
    }

    fn ready(&self) -> bool {
        self.leading && self.first_pass_done && self.sources.iter().all(|s| s.fresh)
    }

    /// `/api/v1/events` (newest first), serialized again only after an
    /// event was added.
    fn events_body(&mut self) -> Bytes {
        self.events_body
            .get_or_insert_with(|| {
                let events: Vec<&Event> = self.events.iter().rev().collect();
                list_json(&events)
            })
            .clone()
    }

    /// Swaps in a new view for the API.
    fn publish(&mut self) {
        let no_events: [&Event; 0] = [];
        let mut view = View::new(
            self.statuses.clone(),
            &self.source_docs(),
            self.last_plan.clone(),
            &no_events,
            self.ready(),
            self.pass,
        );
        view.events = self.events_body();
        let view = view.for_shard(self.shard.clone());
        self.view.store(Arc::new(view));
    }

    /// Swaps in a view with fresh source status only (an idle poll): the
    /// sources body is rebuilt (a few hundred bytes), everything else shared.
    fn publish_sources(&mut self) {
        let events = self.events_body();
        let view = self
            .view
            .load()
            .with_sources(&self.source_docs(), events, self.ready());
        self.view.store(Arc::new(view));
    }

    /// The view readers see (for tests and the binary).
    #[must_use]
    pub fn view(&self) -> Arc<ArcSwap<View>> {
        self.view.clone()
    }
}

/// Drift found before the restart stands until converge applies the
/// objects again: handed to the target (reported at once, corrected at the
/// first pass); returns what counts as reported already.
fn restore_drift(
    converge: &Converge,
    drift: &BTreeMap<String, Vec<(String, String)>>,
) -> BTreeMap<String, String> {
    converge.target.restore_drift(drift);
    drift
        .iter()
        .map(|(name, objects)| (name.clone(), drift_message(objects)))
        .collect()
}

/// Drifted objects, one message: `Deployment/a edited: spec.replicas; ConfigMap/b deleted`.
fn drift_message(objects: &[(String, String)]) -> String {
    objects
        .iter()
        .map(|(object, how)| format!("{object} {how}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Starts the API and the loop; returns when `shutdown` turns true and both stopped.
pub async fn run(
    converge: Converge,
    listen: Option<String>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let view = Arc::new(ArcSwap::from_pointee(View::default()));
    let token_digest = match &converge.config.api.token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path).map_err(|source| RunError::Token {
                path: path.display().to_string(),
                source,
            })?;
            if token.trim().is_empty() {
                return Err(RunError::EmptyToken(path.display().to_string()));
            }
            Some(crate::api::token_digest(&token))
        }
        None => None,
    };
    let options = crate::api::ServeOptions {
        listen: listen.unwrap_or_else(|| converge.config.api.listen.clone()),
        tls: converge.config.api.tls.clone(),
        max_connections: converge.config.api.max_connections,
        idle_timeout: converge.config.api.idle_timeout,
    };
    let cors_origins = converge.config.api.cors.allowed_origins.clone();
    let probe_listen = converge.config.api.probe_listen.clone();
    let ready_reason = (converge.pipeline.policies.users() == 0)
        .then(|| crate::identities_notice(&converge.config, &converge.pipeline))
        .flatten()
        .map(Arc::from);
    let daemon = Daemon::new(converge, metrics.clone(), view.clone())?;
    let shared = crate::api::Shared {
        view,
        metrics,
        token_digest,
        cors_origins,
        ready_reason,
    };
    let probe_shared = shared.clone();
    let server = crate::api::serve(crate::api::router(shared), &options).await?;
    tracing::info!(addr = %server.addr, tls = options.tls.is_some(), "api listening");
    eprintln!(
        "converge: api listening on {}://{}",
        if options.tls.is_some() {
            "https"
        } else {
            "http"
        },
        server.addr
    );
    // The probes on a listener of their own: the API's connection limit
    // and whoever holds its connections do not reach them.
    let probes = match &probe_listen {
        Some(listen) => {
            let options = crate::api::ServeOptions {
                listen: listen.clone(),
                tls: None,
                max_connections: crate::api::PROBE_MAX_CONNECTIONS,
                idle_timeout: crate::api::PROBE_IDLE_TIMEOUT,
            };
            let probes =
                crate::api::serve(crate::api::probe_router(probe_shared), &options).await?;
            tracing::info!(addr = %probes.addr, "probes listening");
            eprintln!("converge: probes listening on http://{}", probes.addr);
            Some(probes)
        }
        None => None,
    };
    daemon.run(shutdown).await;
    server.shutdown().await;
    if let Some(probes) = probes {
        probes.shutdown().await;
    }
    Ok(())
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Daemon(#[from] Error),
    #[error(transparent)]
    Api(#[from] crate::api::ServeError),
    #[error("cannot read the api token file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("the api token file {0} is empty")]
    EmptyToken(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_mins(1));
        let mut waited = Vec::new();
        for _ in 0..10 {
            let d = b.next_delay();
            let before = Instant::now();
            tokio::time::sleep(d).await;
            waited.push(before.elapsed());
        }
        for (i, w) in waited.iter().enumerate() {
            let nominal = Duration::from_secs(1 << i.min(6)).min(Duration::from_mins(1));
            assert!(
                *w >= nominal / 2 && *w <= nominal,
                "attempt {i}: waited {w:?}, nominal {nominal:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn poll_intervals_jitter_within_ten_percent() {
        for _ in 0..1000 {
            let d = jittered_interval(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(9) && d <= Duration::from_secs(10),
                "downward only, so a change waits at most one interval: {d:?}"
            );
        }
    }
}
