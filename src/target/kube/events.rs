//! Kubernetes Events on each environment's Namespace, through kube's
//! `Recorder` (repeats folded into series).

use futures::{StreamExt, stream};

use super::Kubernetes;
use crate::target::TargetEvent;

/// Kubernetes Events published per call at most (a cold start of thousands
/// of environments records the rest only in converge's own event list).
pub(super) const EVENTS_PER_CALL: usize = 500;

impl Kubernetes {
    /// Publishes `events` (see [`crate::target::Target::record`]).
    pub(super) fn record_events(&self, events: &[TargetEvent<'_>]) {
        use kube::runtime::events::{Event, EventType};
        let publish: Vec<_> = events
            .iter()
            .take(EVENTS_PER_CALL)
            .map(|e| async move {
                let reference = k8s_openapi::api::core::v1::ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Namespace".into()),
                    name: Some(e.environment.to_owned()),
                    namespace: Some(e.environment.to_owned()),
                    ..Default::default()
                };
                let event = Event {
                    type_: if e.warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: e.reason.to_owned(),
                    note: Some(e.message.chars().take(1000).collect()),
                    action: e.reason.to_owned(),
                    secondary: None,
                };
                if let Err(err) = self.recorder.publish(&event, &reference).await {
                    tracing::debug!(environment = e.environment, error = %err, "cannot record a Kubernetes Event");
                }
            })
            .collect();
        self.runtime.block_on(async {
            stream::iter(publish)
                .buffer_unordered(self.options.concurrency.max(1))
                .collect::<Vec<()>>()
                .await;
        });
    }
}
