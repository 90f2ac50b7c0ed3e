//! The commit to the state store: the pass record, and one transaction per
//! pass (or per idle poll with events to record).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::Daemon;
use crate::plan::Change;
use crate::render::timestamp;
use crate::source::Snapshot;
use crate::store::{self, Commit, Event, PassRecord};
use crate::{PassError, PassOutcome};

impl Daemon {
    /// The pass as history keeps it (and logs it).
    pub(super) fn pass_record(
        &self,
        result: Result<&PassOutcome, &PassError>,
        started: Instant,
        now: DateTime<Utc>,
    ) -> PassRecord {
        let elapsed = started.elapsed();
        self.metrics.pass_duration.observe(elapsed.as_secs_f64());
        self.metrics.passes.inc();
        let mut record = PassRecord {
            id: self.pacing.pass,
            started_at: timestamp(now),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            revisions: self
                .polling
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

    pub(super) fn commit(
        &mut self,
        environments: &[(String, Option<Vec<u8>>)],
        events: &[Event],
        pass: Option<PassRecord>,
        drift: &[(String, Option<Vec<u8>>)],
    ) {
        let evaluated = self.observed.withheld.is_some();
        let dirty: Vec<(&Snapshot, Option<&store::Stored>)> = self
            .polling
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
        let mut forge = self
            .converge
            .reviewer
            .as_mut()
            .map(crate::forge::Reviewer::take_dirty)
            .unwrap_or_default();
        if let Some(statuses) = &mut self.forge_statuses {
            forge.extend(statuses.take_dirty());
        }
        if dirty.is_empty()
            && forge.is_empty()
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
            forge: &forge,
            drift,
            withheld: self.observed.withheld.as_ref(),
        };
        match self.store.commit(&commit) {
            Ok(()) => {
                for s in self
                    .polling
                    .sources
                    .iter_mut()
                    .filter(|s| s.dirty && evaluated)
                {
                    s.dirty = false;
                    if let Some(snapshot) = &s.last_good {
                        match &mut s.stored {
                            Some(stored) => stored.update(snapshot),
                            None => s.stored = Some(store::Stored::of(snapshot)),
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record the pass in the state store; will retry with the next pass");
            }
        }
    }
}
