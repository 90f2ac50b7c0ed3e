//! The sources and their polling: each source's last good snapshot,
//! freshness, backoff and errors; the tag source's schedule; dir watches.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Daemon;
use super::backoff::{Backoff, jittered_interval};
use crate::config::SourceConfig;
use crate::metrics::{Metrics, SourceErrorLabels, SourceLabels};
use crate::source::{self, Snapshot};
use crate::store::{self, Event};

/// The sources and their polling.
pub(super) struct Polling {
    pub(super) sources: Vec<SourceState>,
    /// When the tag source scans next (none without one).
    pub(super) tags_due: Option<Instant>,
    /// The tag source's last failure reported as an event.
    pub(super) tags_error: Option<String>,
}

/// One source as the loop tracks it.
pub(super) struct SourceState {
    pub(super) config: SourceConfig,
    pub(super) source: Box<dyn source::Source>,
    pub(super) interval: Duration,
    /// The snapshot passes use; also the revision a poll asks "changed?"
    /// about (`read_changed`), so a source is never "unchanged" against a
    /// snapshot no pass got.
    pub(super) last_good: Option<Snapshot>,
    /// A read completed since this process started and its snapshot is
    /// `last_good` (restored snapshots are stale until then).
    pub(super) fresh: bool,
    pub(super) due: Instant,
    pub(super) backoff: Backoff,
    pub(super) last_success: Option<DateTime<Utc>>,
    pub(super) last_error: Option<(String, String)>,
    pub(super) errors: u64,
    /// When a new revision was first seen and not yet applied.
    pub(super) changed_at: Option<Instant>,
    /// Whether `last_good` changed since the last commit.
    pub(super) dirty: bool,
    /// What the state store holds of this source (so a commit writes only
    /// the files that changed); `None` when it holds nothing yet.
    pub(super) stored: Option<store::Stored>,
    /// `converge_source_polls_total{source}`.
    pub(super) polls: Counter,
    /// `converge_source_last_success_timestamp_seconds{source}`.
    pub(super) last_success_gauge: Gauge<f64, AtomicU64>,
    /// A git source's work counters, mirrored into metrics after each poll.
    pub(super) git: Option<GitWork>,
}

impl SourceState {
    /// A configured source as the loop starts it: with the snapshot the
    /// state store restored (stale until a read completes), due now.
    pub(super) fn start(
        config: &SourceConfig,
        source: Box<dyn source::Source>,
        restored: Option<&Snapshot>,
        metrics: &Metrics,
        max_backoff: Duration,
        now: Instant,
    ) -> SourceState {
        let labels = SourceLabels {
            source: config.name().to_owned(),
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
        SourceState {
            stored: restored.map(store::Stored::of),
            polls: metrics.source_polls.get_or_create(&labels).clone(),
            last_success_gauge: metrics.source_last_success.get_or_create(&labels).clone(),
            git,
            last_good: restored.cloned(),
            config: config.clone(),
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
        }
    }
}

/// A git source's counters and what of them the metrics already count.
pub(super) struct GitWork {
    pub(super) stats: Arc<source::git::Stats>,
    /// Ref checks, fetches, blob reads already counted.
    pub(super) seen: [u64; 3],
    /// `converge_git_{ref_checks,fetches,blob_reads}_total{source}`.
    pub(super) counters: [Counter; 3],
}

impl GitWork {
    /// Adds the work done since the last call to the metrics.
    pub(super) fn count(&mut self) {
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

impl Daemon {
    pub(super) fn dir_sources(&self) -> usize {
        self.polling
            .sources
            .iter()
            .filter(|s| matches!(s.config, SourceConfig::Dir { .. }))
            .count()
    }

    /// Watches every dir source; a source whose directory is missing is retried next time.
    pub(super) fn watch_dirs(&self, tx: &mpsc::Sender<usize>) -> Vec<notify::RecommendedWatcher> {
        use notify::Watcher;
        let mut out = Vec::new();
        for (i, s) in self.polling.sources.iter().enumerate() {
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

    /// Reads the due sources; true when anything a pass depends on changed
    /// (a new revision, a first read, an error starting or ending).
    pub(super) fn read_sources(
        &mut self,
        due: &BTreeSet<usize>,
        new_events: &mut Vec<Event>,
    ) -> bool {
        let mut any = false;
        for &i in due {
            // "Unchanged" is asked about the snapshot the passes use, never
            // about what the source saw last (a read abandoned at its
            // timeout may have seen more): nothing is skipped, and a source
            // is fresh only with a snapshot of a completed read.
            let s = &mut self.polling.sources[i];
            let have = s.last_good.as_ref().map(|l| &l.revision);
            let result = s.source.read_changed(have);
            self.polling.sources[i].polls.inc();
            if let Some(git) = &mut self.polling.sources[i].git {
                git.count();
            }
            let name = self.polling.sources[i].config.name().to_owned();
            match result {
                Ok(None) if self.polling.sources[i].last_good.is_none() => {
                    // A source breaking `read_changed`'s contract: nothing
                    // to use, so it stays stale (unreadable is not empty).
                    tracing::error!(source = %name, "the source said unchanged before any snapshot; read again next poll");
                    let s = &mut self.polling.sources[i];
                    s.due = Instant::now() + s.backoff.next_delay().min(s.interval);
                }
                Ok(snapshot) => {
                    let s = &mut self.polling.sources[i];
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
                    let s = &mut self.polling.sources[i];
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
    pub(super) fn scan_tags(&mut self, new_events: &mut Vec<Event>) -> bool {
        let Some(outcome) = self.converge.scan_tags() else {
            self.polling.tags_due = None;
            return false;
        };
        let Some(scanner) = &self.converge.tags else {
            return false;
        };
        self.polling.tags_due = Some(Instant::now() + jittered_interval(scanner.interval));
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
            if let Some(was) = self.polling.tags_error.take() {
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
            if self.polling.tags_error.as_deref() != Some(text.as_str()) {
                let e = self.event(
                    "Warning",
                    reason,
                    None,
                    format!("{text}; the last resolved versions stay, nothing is deleted"),
                );
                new_events.push(e);
                self.polling.tags_error = Some(text);
            }
        }
        outcome.changed || outcome.staleness_changed
    }
}
