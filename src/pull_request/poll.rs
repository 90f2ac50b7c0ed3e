//! The daemon's pull-request poller: one thread per git source whose
//! `forge:` has `pull_requests: true`, beside the loop (a poll never delays
//! a pass, and a forge that is down, slow or rate limiting never fails one).
//!
//! Every `interval` (the source's) it lists the open pull requests into the
//! source's branch with a conditional request: an idle poll is one request
//! (`304`, or a listing whose heads are all planned already). For each new
//! head it fetches the head (`refs/pull/N/head`, GitLab
//! `refs/merge-requests/N/head`) and the branch into a bare repository of
//! its own (`<state_dir>/forge/<source>.git`), plans the head against its
//! merge base with the branch ([`super::Planner`]: claim files read as
//! data, nothing of the pull request executed), writes the plan comment
//! (created once, then edited: its ids are remembered, so a later head
//! costs one edit per part and no listing) and sets the `<context>/plan`
//! status on the head. A failed poll lists everything again next time.
//! What it did and its last error are in a [`Report`] the daemon shows
//! under the source in `/api/v1/sources`, in metrics and in events.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::config::{Config, ForgeKind, SourceConfig};
use crate::forge::{self, CommitStatus, Forge, Listing, PullRequest};
use crate::plan;

use super::comment::{self, Heading, Marker};
use super::{Planner, State};

/// The largest comment body each forge takes, in bytes: GitHub's is 65,536
/// characters; Gitea/Forgejo store `LONGTEXT` but refuse bodies over their
/// request limits long before that, so GitHub's limit is kept; GitLab's
/// notes take 1,000,000 characters.
#[must_use]
pub fn comment_limit(kind: ForgeKind) -> usize {
    match kind {
        ForgeKind::Gitea | ForgeKind::Github => 65_536,
        ForgeKind::Gitlab => 1_000_000,
    }
}

/// The ref a forge keeps a pull request's head under, in the base
/// repository (forks included).
#[must_use]
pub fn head_ref(kind: ForgeKind, number: u64) -> String {
    match kind {
        ForgeKind::Gitea | ForgeKind::Github => format!("refs/pull/{number}/head"),
        ForgeKind::Gitlab => format!("refs/merge-requests/{number}/head"),
    }
}

/// What the poller did, for the API, metrics and events (shared with the
/// daemon, which reads it when it shows the sources).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Polls done (each a listing of the open pull requests).
    pub polls: u64,
    /// Open pull requests into the branch, at the last listing.
    pub open: usize,
    /// Heads planned (a comment and a status written for each).
    pub planned: u64,
    /// Polls that failed.
    pub errors: u64,
    /// The last poll's error (reason, message); `None` once a poll succeeds.
    pub last_error: Option<(String, String)>,
    /// Events not yet taken by the daemon: (reason, message).
    pub events: Vec<(String, String)>,
}

impl Report {
    /// Takes the events the daemon has not recorded yet.
    pub fn take_events(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.events)
    }
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Forge(#[from] forge::Error),
    #[error(transparent)]
    Git(#[from] crate::source::Error),
    #[error("the head {head} of pull request #{number} was not fetched")]
    HeadMissing { number: u64, head: String },
}

impl Error {
    /// A stable word for the API, events and metrics.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Forge(e) => e.reason(),
            Self::Git(_) => "GitFetchFailed",
            Self::HeadMissing { .. } => "HeadMissing",
        }
    }
}

/// One pull request's comments, by part, once known.
#[derive(Debug, Default)]
struct Known {
    /// The head planned last.
    head: Option<String>,
    /// Comment ids by part (1-based) and the body each holds.
    parts: BTreeMap<usize, (u64, String)>,
    /// The comments were listed (or created) in this process.
    listed: bool,
}

/// The poller of one source.
pub struct Poller {
    source: SourceConfig,
    branch: String,
    context: String,
    kind: ForgeKind,
    mirror: PathBuf,
    forge: Arc<dyn Forge>,
    planner: Planner,
    etag: Option<String>,
    pulls: HashMap<u64, Known>,
    /// The forge login converge's comments are written by (asked once,
    /// else learnt from the first comment written): a comment with the
    /// marker by anyone else is not ours.
    login: Option<String>,
    login_asked: bool,
    report: Arc<Mutex<Report>>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("source", &self.source.name())
            .finish_non_exhaustive()
    }
}

impl Poller {
    /// The poller of the git source `source` of `config`, planning with a
    /// dry run against the cluster when the target is one.
    pub fn new(
        config: &Config,
        source: &SourceConfig,
        forge: Arc<dyn Forge>,
        context: String,
    ) -> Result<Poller, super::PlanError> {
        let SourceConfig::Git { name, branch, .. } = source else {
            unreachable!("only git sources have a forge");
        };
        Ok(Poller {
            source: source.clone(),
            branch: branch.clone(),
            context,
            kind: forge.kind(),
            mirror: config.state_dir.join("forge").join(format!("{name}.git")),
            forge,
            planner: Planner::new(config, Some(name), true)?,
            etag: None,
            pulls: HashMap::new(),
            login: None,
            login_asked: false,
            report: Arc::new(Mutex::new(Report::default())),
        })
    }

    /// What the poller did, shared.
    #[must_use]
    pub fn report(&self) -> Arc<Mutex<Report>> {
        self.report.clone()
    }

    /// One poll, its outcome recorded in the report.
    pub fn poll(&mut self) {
        let result = self.poll_once();
        let mut report = self.report.lock().unwrap_or_else(PoisonError::into_inner);
        report.polls += 1;
        match result {
            Ok(planned) => {
                report.planned += planned;
                if let Some((reason, _)) = report.last_error.take() {
                    report.events.push((
                        "ForgeRecovered".to_owned(),
                        format!(
                            "the pull requests of {} are read again (was {reason})",
                            self.source.name()
                        ),
                    ));
                }
            }
            Err(e) => {
                // Whatever this poll did not finish is done again next time.
                self.etag = None;
                report.errors += 1;
                let reason = e.reason().to_owned();
                let message = format!("pull-request plans of {}: {e}", self.source.name());
                tracing::warn!(source = self.source.name(), reason, "{message}");
                if report.last_error.as_ref() != Some(&(reason.clone(), message.clone())) {
                    report.events.push((reason.clone(), message.clone()));
                }
                report.last_error = Some((reason, message));
            }
        }
    }

    /// Lists the open pull requests; plans, comments and sets the status of
    /// each new head. Returns how many heads it planned.
    pub fn poll_once(&mut self) -> Result<u64, Error> {
        if !self.login_asked {
            // Once per process: a token that may not read its own account
            // (a scope left out) costs no request per poll.
            self.login_asked = true;
            match self.forge.login() {
                Ok(login) => self.login = login,
                Err(e) => tracing::info!(
                    source = self.source.name(),
                    "the forge does not say whose token this is ({e}); converge's comments are told by their marker alone until it writes one"
                ),
            }
        }
        let listing = self.forge.open_pulls(&self.branch, self.etag.as_deref())?;
        let Listing::Changed { items, etag } = listing else {
            return Ok(0);
        };
        let open: Vec<PullRequest> = items;
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open = open.len();
        self.pulls
            .retain(|number, _| open.iter().any(|p| p.number == *number));
        let new: Vec<&PullRequest> = open
            .iter()
            .filter(|p| {
                self.pulls.get(&p.number).and_then(|k| k.head.as_deref())
                    != Some(p.head_sha.as_str())
            })
            .collect();
        if !new.is_empty() {
            self.fetch_and_plan(&new)?;
        }
        self.etag = etag;
        Ok(new.len() as u64)
    }

    fn fetch_and_plan(&mut self, new: &[&PullRequest]) -> Result<(), Error> {
        let branch = format!("refs/heads/{}", self.branch);
        let mut specs = vec![format!("+{branch}:{branch}")];
        specs.extend(new.iter().map(|p| {
            let r = head_ref(self.kind, p.number);
            format!("+{r}:{r}")
        }));
        let tips = crate::source::git::fetch_refs(&self.source, &self.mirror, &specs)?;
        let tip = tips.get(&branch).copied();
        for pr in new {
            let head = gix::ObjectId::from_hex(pr.head_sha.as_bytes()).map_err(|_| {
                Error::HeadMissing {
                    number: pr.number,
                    head: pr.head_sha.clone(),
                }
            })?;
            // The head the listing names, which the fetch may have passed
            // (a push in between): planned as listed, or next poll.
            let base = match tip {
                Some(tip) => {
                    crate::source::git::merge_base(self.source.name(), &self.mirror, tip, head)?
                        .unwrap_or(tip)
                }
                None => head,
            };
            self.plan_one(pr, &base.to_string())?;
        }
        Ok(())
    }

    /// Plans one head and writes its comment and status.
    fn plan_one(&mut self, pr: &PullRequest, base: &str) -> Result<(), Error> {
        let now = chrono::Utc::now();
        let (bodies, status) = match self.planner.plan(&self.mirror, base, &pr.head_sha, now) {
            Ok(planned) => {
                let markdown = plan::markdown_unbounded(&planned.plan);
                let marker = self.marker();
                let heading = Heading {
                    head: &pr.head_sha,
                    base,
                    verdict: &planned.verdict,
                };
                let bodies = comment::bodies(marker, heading, &markdown, comment_limit(self.kind));
                let state = match planned.verdict.state {
                    State::Success => forge::State::Success,
                    State::Failure => forge::State::Failure,
                };
                (bodies, (state, planned.verdict.description()))
            }
            Err(e) => {
                // The head cannot be planned (a revision that cannot be
                // read): said on the pull request, planned again on its
                // next head.
                let text = format!("converge cannot plan this head: {e}");
                let body = format!(
                    "{}\n**converge plan** for `{}`: **error**\n\n{}\n",
                    self.marker().line(1),
                    pr.head_sha,
                    text.replace('`', "'")
                );
                (vec![body], (forge::State::Error, text))
            }
        };
        // The first head of a pull request this process plans may carry
        // this status already (a restart): read before write. A later head
        // is new to the forge too: written at once.
        let first = !self.pulls.get(&pr.number).is_some_and(|k| k.listed);
        self.write_comment(pr.number, &bodies)?;
        let (state, description) = status;
        let status = CommitStatus {
            context: format!("{}/plan", self.context),
            state,
            description: forge::truncate(&description, forge::MAX_DESCRIPTION),
            target_url: None,
        };
        if first {
            self.forge.ensure_status(&pr.head_sha, &status)?;
        } else {
            self.forge.set_status(&pr.head_sha, &status)?;
        }
        self.pulls.entry(pr.number).or_default().head = Some(pr.head_sha.clone());
        Ok(())
    }

    fn marker(&self) -> Marker<'_> {
        Marker {
            source: self.source.name(),
            context: &self.context,
        }
    }

    /// Creates or edits the comment parts of pull request `number`: one
    /// listing the first time in this process, then edits by id only where
    /// a body changed. Parts an earlier, longer plan left say they are no
    /// longer needed.
    fn write_comment(&mut self, number: u64, bodies: &[String]) -> Result<(), Error> {
        if !self.pulls.get(&number).is_some_and(|k| k.listed) {
            let comments = self.forge.comments(number)?;
            let marker = self.marker();
            let mut parts = BTreeMap::new();
            for c in comments {
                if self.login.as_ref().is_some_and(|l| *l != c.author) {
                    continue;
                }
                if let Some(part) = marker.part_of(&c.body) {
                    parts.entry(part).or_insert((c.id, c.body));
                }
            }
            let known = self.pulls.entry(number).or_default();
            known.parts = parts;
            known.listed = true;
        }
        let count = bodies.len();
        let mut wanted: Vec<(usize, String)> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| (i + 1, b.clone()))
            .collect();
        let stale: Vec<usize> = self.pulls[&number]
            .parts
            .keys()
            .copied()
            .filter(|p| *p > count)
            .collect();
        for part in stale {
            wanted.push((
                part,
                format!(
                    "{}\n_This part of an earlier plan is no longer needed: the plan is in {count} comment(s) now._\n",
                    self.marker().line(part)
                ),
            ));
        }
        for (part, body) in wanted {
            let existing = self.pulls[&number].parts.get(&part).cloned();
            let written = match existing {
                Some((_, old)) if old == body => continue,
                Some((id, _)) => self.forge.edit_comment(number, id, &body)?,
                None => self.forge.create_comment(number, &body)?,
            };
            self.login.get_or_insert_with(|| written.author.clone());
            if let Some(known) = self.pulls.get_mut(&number) {
                known.parts.insert(part, (written.id, body));
            }
        }
        Ok(())
    }
}

/// A running poller thread; stopped (and detached) on drop.
#[derive(Debug)]
pub struct Handle {
    stop: Arc<(Mutex<bool>, Condvar)>,
    report: Arc<Mutex<Report>>,
    source: String,
}

impl Handle {
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    #[must_use]
    pub fn report(&self) -> Arc<Mutex<Report>> {
        self.report.clone()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let (stop, wake) = &*self.stop;
        *stop.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
    }
}

/// Starts a poller for every git source of `config` whose forge has
/// `pull_requests` on. A source whose forge or planner cannot be set up is
/// logged and left without one (the daemon runs on).
#[must_use]
pub fn start(config: &Config) -> Vec<Handle> {
    let mut handles = Vec::new();
    for source in &config.sources {
        let SourceConfig::Git {
            url,
            interval,
            forge: Some(forge_config),
            ..
        } = source
        else {
            continue;
        };
        if !forge_config.pull_requests {
            continue;
        }
        let name = source.name().to_owned();
        let forge = match forge::from_config(url, forge_config) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(source = name, "pull-request plans are off: {e}");
                continue;
            }
        };
        let context = forge_config
            .context
            .clone()
            .unwrap_or_else(forge::default_context);
        let report = Arc::new(Mutex::new(Report::default()));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (config, source, every) = (config.clone(), source.clone(), *interval);
        let (thread_report, thread_stop) = (report.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("pulls-{name}"))
            .spawn(move || {
                run(
                    &config,
                    &source,
                    forge,
                    context,
                    every,
                    &thread_report,
                    &thread_stop,
                );
            });
        if let Err(e) = spawned {
            tracing::error!(source = name, "cannot start the pull-request poller: {e}");
            continue;
        }
        handles.push(Handle {
            stop,
            report,
            source: name,
        });
    }
    handles
}

/// The poller thread: poll, then wait `every` (or until stopped).
fn run(
    config: &Config,
    source: &SourceConfig,
    forge: Arc<dyn Forge>,
    context: String,
    every: Duration,
    report: &Arc<Mutex<Report>>,
    stop: &Arc<(Mutex<bool>, Condvar)>,
) {
    let mut poller = match Poller::new(config, source, forge, context) {
        Ok(p) => p,
        Err(e) => {
            let message = format!("pull-request plans of {}: {e}", source.name());
            tracing::error!(source = source.name(), "{message}");
            let mut r = report.lock().unwrap_or_else(PoisonError::into_inner);
            r.last_error = Some(("PlannerSetup".to_owned(), message.clone()));
            r.events.push(("PlannerSetup".to_owned(), message));
            return;
        }
    };
    poller.report = report.clone();
    let (stopped, wake) = &**stop;
    loop {
        if *stopped.lock().unwrap_or_else(PoisonError::into_inner) {
            return;
        }
        poller.poll();
        // Downward jitter, as the sources poll: a push waits at most one
        // interval for its plan.
        let wait = every
            .max(Duration::from_millis(100))
            .mul_f64(1.0 - 0.1 * fastrand::f64());
        let guard = stopped.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = wake
            .wait_timeout_while(guard, wait, |s| !*s)
            .unwrap_or_else(PoisonError::into_inner);
        if *guard {
            return;
        }
    }
}
