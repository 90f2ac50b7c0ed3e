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

mod backoff;
mod commit;
mod observe;
mod published;
mod sources;
mod wake;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

pub use self::backoff::{Backoff, jitter};
use self::observe::Observed;
use self::published::Published;
use self::sources::{Polling, SourceState};
use self::wake::Pacing;
use crate::metrics::Metrics;
use crate::status::EnvStatus;
use crate::store::{self, Store};
use crate::view::View;
use crate::{Converge, Memory, source};

/// A full pass runs at least this often even when no source changed.
const RESYNC: Duration = Duration::from_mins(10);

/// The file an operator creates to let the next held plan through, once.
pub const ALLOW_MASS_DELETE_FILE: &str = "allow-mass-delete";

/// Object steps of the last plan kept for `/api/v1/plan` and the status page.
const PLAN_STEPS_KEPT: usize = 1000;

/// What the loop does after a pass (kube-rs's `reconcile` -> `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run again after this long even if no input changes (an apply retry,
    /// the earliest expiry).
    Requeue(Duration),
    /// Run again only when an input changes.
    AwaitChange,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    State(#[from] store::Error),
    #[error(transparent)]
    Source(#[from] source::Error),
    #[error(transparent)]
    Forge(#[from] crate::forge::Error),
}

/// The single writer. Its state, by what it holds: the sources and their
/// polling ([`Polling`]), when and whether to pass ([`Pacing`]), what the
/// passes found and reported ([`Observed`]), and what the API shows
/// ([`Published`]).
pub struct Daemon {
    converge: Converge,
    /// The state dir's writer lock, held as long as the daemon lives.
    _lock: Vec<store::WriterLock>,
    store: Store,
    metrics: Arc<Metrics>,
    /// What the last pass learned (evaluations of unchanged files, the plan memo).
    memory: Memory,
    polling: Polling,
    pacing: Pacing,
    observed: Observed,
    published: Published,
    /// The pull-request pollers (threads of their own), one per git source
    /// whose forge plans pull requests: their reports are shown under the
    /// source and their events recorded.
    pull_requests: Vec<crate::pull_request::poll::Handle>,
    /// Apply statuses on the commits the passes pick up (git sources with
    /// a forge and `commit_statuses`), posted by a thread of their own.
    forge_statuses: Option<crate::forge::Statuses>,
    /// The forges' failures last reported as events, by what failed.
    forge_errors: BTreeMap<String, String>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("pass", &self.pacing.pass)
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
        if let Some(reviewer) = &mut converge.reviewer {
            reviewer.restore(&restored.forge);
        }
        let mut forge_statuses = crate::forge::Statuses::from_config(&converge.config)?;
        if let Some(s) = &mut forge_statuses {
            s.restore(&restored.forge);
        }
        let max_backoff = converge.config.reconcile.max_backoff;
        let mut sources = Vec::new();
        for c in &converge.config.sources {
            let mut source = converge.source(c)?;
            if let Some(snapshot) = restored.snapshots.get(c.name()) {
                source.restore(snapshot);
            }
            let snapshot = restored.snapshots.get(c.name());
            sources.push(SourceState::start(
                c,
                source,
                snapshot,
                &metrics,
                max_backoff,
                now,
            ));
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
            memory: Memory::default(),
            polling: Polling {
                sources,
                tags_due,
                tags_error: None,
            },
            pacing: Pacing {
                pass,
                first_pass_done: false,
                apply_backoff: Backoff::new(
                    Duration::from_secs(1),
                    max_backoff.max(Duration::from_secs(1)),
                ),
                requeue_at: None,
                last_full_pass: None,
                target_changes: None,
                leading: true,
            },
            observed: Observed {
                statuses: Arc::new(statuses),
                last_plan: None,
                withheld: None,
                unnamed: BTreeMap::new(),
                reported: BTreeSet::new(),
                last_hold: None,
                drift_reported,
                drift_kept: restored.drift,
                shard: None,
                rejected_files: BTreeSet::new(),
            },
            published: Published {
                view,
                events: restored.events.into(),
                passes: restored.passes.into(),
                next_event,
                events_body: None,
            },
            pull_requests: Vec::new(),
            forge_statuses,
            forge_errors: BTreeMap::new(),
        };
        daemon.publish();
        Ok(daemon)
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
            let token = crate::secret_file::read(path).map_err(|source| RunError::Token {
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
    let mut daemon = Daemon::new(converge, metrics.clone(), view.clone())?;
    // Beside the loop: a forge never delays or fails a pass.
    daemon.pull_requests = crate::pull_request::poll::start(&daemon.converge.config);
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
