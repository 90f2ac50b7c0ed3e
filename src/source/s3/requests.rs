//! Request counting: an SDK interceptor counts every HTTP attempt per
//! source and operation, into the source's [`Requests`] and the process-wide
//! `converge_s3_requests_total` family.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use prometheus_client::metrics::counter::Counter;

/// Requests one source made since it was built (every HTTP attempt, retries
/// included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// `ListObjectsV2` pages.
    pub list: u64,
    /// `GetObject`s.
    pub get: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) list: AtomicU64,
    pub(super) get: AtomicU64,
}

/// Counts every HTTP attempt the SDK transmits, per source and operation.
#[derive(Debug, Clone)]
pub(super) struct RequestCounter {
    pub(super) counts: Arc<Counts>,
    pub(super) list_metric: Counter,
    pub(super) get_metric: Counter,
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "converge-request-counter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        if request.uri().contains("list-type=2") {
            self.counts.list.fetch_add(1, Ordering::Relaxed);
            self.list_metric.inc();
        } else {
            self.counts.get.fetch_add(1, Ordering::Relaxed);
            self.get_metric.inc();
        }
        Ok(())
    }
}
