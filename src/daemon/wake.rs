//! The loop: why it wakes (a closed set), when, and what a wake does.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::{ALLOW_MASS_DELETE_FILE, Action, Daemon, RESYNC};

/// When and whether to pass: the pass count, its retry backoff and timers,
/// leadership and the target's change signal.
pub(super) struct Pacing {
    /// The id of the last pass.
    pub(super) pass: u64,
    pub(super) first_pass_done: bool,
    pub(super) apply_backoff: Backoff,
    /// When the last pass asked to run again (an apply retry, an expiry).
    pub(super) requeue_at: Option<Instant>,
    pub(super) last_full_pass: Option<Instant>,
    /// The target's signal of observed changes (health, drift).
    pub(super) target_changes: Option<watch::Receiver<u64>>,
    /// Whether this replica led at the last look (leader election).
    pub(super) leading: bool,
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

impl Daemon {
    pub(super) fn allow_file(&self) -> PathBuf {
        self.converge.config.state_dir.join(ALLOW_MASS_DELETE_FILE)
    }

    /// Whether the last plan is held (the loop then looks for the allow file).
    pub(super) fn held(&self) -> bool {
        self.observed
            .last_plan
            .as_ref()
            .is_some_and(|p| p.hold.is_some())
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
        if let Some(due) = self.polling.sources.iter().map(|s| s.due).min() {
            consider(due, Wake::Poll(BTreeSet::new()));
        }
        if let Some(at) = self.pacing.requeue_at {
            consider(at, Wake::Requeue);
        }
        if let Some(at) = self.polling.tags_due {
            consider(at, Wake::Tags);
        }
        consider(
            self.pacing.last_full_pass.map_or(now, |t| t + RESYNC),
            Wake::Resync,
        );
        if self.held() {
            consider(now + Duration::from_secs(2), Wake::Allowed);
        }
        if !self.pacing.leading {
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
        if self.pacing.target_changes.is_none() {
            self.pacing.target_changes = self.converge.target.changes();
        }
        let observed = self.pacing.target_changes.as_mut();
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
        if leading != self.pacing.leading {
            self.pacing.leading = leading;
            tracing::info!(leading, "leadership changed");
            if leading {
                self.converge.target.reload();
                self.pacing.last_full_pass = None;
            } else {
                self.publish_sources();
            }
        }
        if !leading {
            return;
        }
        let now = Instant::now();
        let mut due: BTreeSet<usize> = (0..self.polling.sources.len())
            .filter(|&i| self.polling.sources[i].due <= now)
            .collect();
        if let Wake::Poll(touched) = wake {
            due.extend(touched);
        }
        let requeue = self.pacing.requeue_at.is_some_and(|at| at <= now);
        let resync = self
            .pacing
            .last_full_pass
            .is_none_or(|t| t.elapsed() >= RESYNC);
        let allowed = self.held() && self.allow_file().exists();
        let observed = matches!(wake, Wake::TargetChanged);
        let tags_due = self.polling.tags_due.is_some_and(|at| at <= now);
        if due.is_empty() && !requeue && !resync && !allowed && !observed && !tags_due {
            return;
        }
        let mut events = Vec::new();
        let mut changed = self.read_sources(&due, &mut events);
        self.pull_request_events(&mut events);
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
            self.pacing.requeue_at = match self.pass(events) {
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
}
