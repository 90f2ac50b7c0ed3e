//! What the API shows: the events and pass history, the `/api/v1/sources`
//! documents, and the [`View`] swapped in after each pass.

use std::collections::VecDeque;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use tokio::time::Instant;

use super::Daemon;
use crate::config::SourceConfig;
use crate::render::timestamp;
use crate::store::{self, Event, PassRecord};
use crate::view::{View, list_json};

/// What the API shows, and the history behind it.
pub(super) struct Published {
    pub(super) view: Arc<ArcSwap<View>>,
    pub(super) events: VecDeque<Event>,
    pub(super) passes: VecDeque<PassRecord>,
    pub(super) next_event: u64,
    /// `/api/v1/events` serialized, rebuilt only when an event is added.
    pub(super) events_body: Option<Bytes>,
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
    /// The source's pull-request poller (plans on pull requests), when its
    /// forge has one.
    pull_requests: Option<PullRequestsDoc>,
}

/// What a source's pull-request poller did: polls, open pull requests,
/// heads planned, failed polls and the last one's error (`None` once a
/// poll succeeds).
#[derive(Debug, Serialize)]
struct PullRequestsDoc {
    polls: u64,
    open: usize,
    planned: u64,
    errors: u64,
    last_error: Option<PullRequestErrorDoc>,
}

#[derive(Debug, Serialize)]
struct PullRequestErrorDoc {
    reason: String,
    message: String,
}

/// How many refused files `/api/v1/sources` lists per source.
const REFUSED_FILES_SHOWN: usize = 100;

/// A file refused before it named an environment: the problem with its
/// `environment_name` when it has one (why it has no row), else its first,
/// and how many problems it has.
#[derive(Debug, Serialize)]
struct RefusedFileDoc<'a> {
    path: &'a str,
    pointer: &'a str,
    rule: &'a str,
    message: &'a str,
    problems: usize,
}

#[derive(Debug, Serialize)]
struct SourceErrorDoc<'a> {
    reason: &'a str,
    message: &'a str,
}

impl Daemon {
    pub(super) fn event(
        &mut self,
        kind: &str,
        reason: &str,
        environment: Option<&str>,
        message: String,
    ) -> Event {
        let event = Event {
            id: self.published.next_event,
            time: timestamp(Utc::now()),
            pass: self.pacing.pass,
            kind: kind.to_owned(),
            reason: reason.to_owned(),
            environment: environment.map(str::to_owned),
            message,
        };
        self.published.next_event += 1;
        self.published.events_body = None;
        self.published.events.push_back(event.clone());
        while self.published.events.len()
            > usize::try_from(store::EVENT_HISTORY).unwrap_or(usize::MAX)
        {
            self.published.events.pop_front();
        }
        event
    }

    fn source_docs(&self) -> Vec<SourceDoc<'_>> {
        let now = Instant::now();
        let tags = self.converge.tags.as_ref().map(|s| SourceDoc {
            name: "versions",
            kind: s.kind(),
            revision: None,
            files: s.lists(),
            ready: s.status.scans > 0 && self.polling.tags_error.is_none(),
            last_success: s.status.last_success.map(timestamp),
            errors: s.status.errors,
            last_error: s
                .status
                .last_error
                .as_ref()
                .map(|(reason, message)| SourceErrorDoc { reason, message }),
            next_poll_in_ms: self
                .polling
                .tags_due
                .map_or(0, |d| d.saturating_duration_since(now).as_millis()),
            refused_files: Vec::new(),
            refused_files_total: 0,
            pull_requests: None,
        });
        self.polling
            .sources
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
                    .observed
                    .unnamed
                    .iter()
                    .filter(|(o, _)| o.source == s.config.name())
                    .filter_map(|(o, all)| {
                        all.iter()
                            .find(|d| d.pointer == "/environment_name")
                            .or_else(|| all.first())
                            .map(|d| RefusedFileDoc {
                                path: &o.path,
                                pointer: &d.pointer,
                                rule: &d.rule,
                                message: &d.message,
                                problems: all.len(),
                            })
                    })
                    .take(REFUSED_FILES_SHOWN)
                    .collect(),
                refused_files_total: self
                    .observed
                    .unnamed
                    .keys()
                    .filter(|o| o.source == s.config.name())
                    .count(),
                pull_requests: self.pull_requests_doc(s.config.name()),
            })
            .chain(tags)
            .collect()
    }

    /// The pull-request poller of `source`, as `/api/v1/sources` shows it.
    fn pull_requests_doc(&self, source: &str) -> Option<PullRequestsDoc> {
        let handle = self.pull_requests.iter().find(|h| h.source() == source)?;
        let report = handle.report();
        let r = report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(PullRequestsDoc {
            polls: r.polls,
            open: r.open,
            planned: r.planned,
            errors: r.errors,
            last_error: r
                .last_error
                .clone()
                .map(|(reason, message)| PullRequestErrorDoc { reason, message }),
        })
    }

    /// Records what the pull-request pollers reported since the last wake
    /// (a forge down, rate limiting or refusing the token; back again) as
    /// events; never a failed pass.
    pub(super) fn pull_request_events(&mut self, new_events: &mut Vec<Event>) {
        let reported: Vec<(String, String)> = self
            .pull_requests
            .iter()
            .flat_map(|h| {
                h.report()
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take_events()
            })
            .collect();
        for (reason, message) in reported {
            let kind = if reason == "ForgeRecovered" {
                "Normal"
            } else {
                "Warning"
            };
            let e = self.event(kind, &reason, None, message);
            new_events.push(e);
        }
    }

    fn ready(&self) -> bool {
        self.pacing.leading
            && self.pacing.first_pass_done
            && self.polling.sources.iter().all(|s| s.fresh)
    }

    /// `/api/v1/events` (newest first), serialized again only after an
    /// event was added.
    fn events_body(&mut self) -> Bytes {
        self.published
            .events_body
            .get_or_insert_with(|| {
                let events: Vec<&Event> = self.published.events.iter().rev().collect();
                list_json(&events)
            })
            .clone()
    }

    /// Swaps in a new view for the API.
    pub(super) fn publish(&mut self) {
        let no_events: [&Event; 0] = [];
        let mut view = View::new(
            self.observed.statuses.clone(),
            &self.source_docs(),
            self.observed.last_plan.clone(),
            &no_events,
            self.ready(),
            self.pacing.pass,
        );
        view.events = self.events_body();
        let view = view.for_shard(self.observed.shard.clone());
        self.published.view.store(Arc::new(view));
    }

    /// Swaps in a view with fresh source status only (an idle poll): the
    /// sources body is rebuilt (a few hundred bytes), everything else shared.
    pub(super) fn publish_sources(&mut self) {
        let events = self.events_body();
        let view =
            self.published
                .view
                .load()
                .with_sources(&self.source_docs(), events, self.ready());
        self.published.view.store(Arc::new(view));
    }

    /// The view readers see (for tests and the binary).
    #[must_use]
    pub fn view(&self) -> Arc<ArcSwap<View>> {
        self.published.view.clone()
    }
}
