//! The s3 source: claim objects in an S3-compatible bucket (`MinIO`, Garage,
//! AWS S3), read with `aws-sdk-s3`.
//!
//! Each poll lists the prefix (`ListObjectsV2`, every page) and compares keys
//! and `ETag`s with the last good listing: only new or changed claim objects
//! are fetched, unchanged ones keep the bytes read before, removed keys drop
//! their files, and objects above the size cap are refused from the listing
//! without being fetched. An idle poll of an unchanged bucket therefore costs
//! ⌈keys/1000⌉ `LIST` requests and no `GET` (counted per source in
//! [`S3Source::requests`] and `converge_s3_requests_total`).
//!
//! Failure is not emptiness: a timeout, a connection error, a 403, a 5xx, a
//! missing bucket or any listing page failing is an [`Error`] whose variant
//! gives a stable reason, nothing partial is returned, and the last good
//! listing stays the base of the next comparison. Messages name the endpoint
//! and bucket, never the credentials.
//!
//! A `static` bucket is write-once: a new key is accepted, but a changed
//! `ETag` on a key already seen is refused: the first version stays in force
//! and the file carries a `write-once` [`Notice`](crate::source::Notice).
//!
//! The SDK is async; the source owns a small current-thread tokio runtime and
//! blocks on it, so `read` works from plain sync code (`run --once`) and from
//! the daemon's `block_in_place`.
//!
//! The files: `options.rs` (the config read into [`Options`], credentials
//! read on every poll), `requests.rs` (the per-attempt request counter),
//! `delta.rs` (the pure comparison of a listing with the last good one, and
//! the snapshot built from it), `fetch.rs` (listing and `GET`s), `error.rs`
//! (the [`Error`] and the classification of SDK errors), `write.rs` (what
//! `converge claim` does besides reading: `HEAD`, conditional `PUT`,
//! `DELETE`).

mod delta;
mod error;
mod fetch;
mod options;
mod requests;
mod write;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, IdentityCache, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, SharedHttpClient,
};
use aws_smithy_http_client::tls;

use self::delta::{Listed, Served, Step, assemble, plan};
pub use self::error::Error;
use self::error::source_error;
use self::fetch::{fetch_all, list};
pub use self::options::{CredentialSources, Options, Secret};
use self::requests::RequestCounter;
pub use self::requests::Requests;
pub use self::write::{ObjectVersion, Precondition, WriteError};
use super::{Provenance, Snapshot, SourceKind};
use crate::config::SourceConfig;
use crate::metrics::{S3_REQUESTS, S3RequestLabels};

/// The longest a connection attempt may take, whatever `timeout` says.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An S3 bucket (prefix) as a [`Source`](super::Source).
pub struct S3Source {
    options: Options,
    /// Drives the SDK.
    runtime: crate::io_runtime::Runtime,
    /// Shared by every client this source builds (connection pool, TLS roots).
    http: SharedHttpClient,
    /// The client for the credentials it was built with.
    client: Option<(Credentials, Client)>,
    counter: RequestCounter,
    /// The last good listing: what is served for each claim key.
    known: BTreeMap<String, Served>,
}

impl std::fmt::Debug for S3Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Source")
            .field("name", &self.options.name)
            .field("bucket", &self.options.bucket)
            .field("prefix", &self.options.prefix)
            .field("known", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl S3Source {
    /// The source an `s3` config describes.
    pub fn from_config(
        config: &SourceConfig,
        max_file_bytes: u64,
    ) -> Result<S3Source, super::Error> {
        S3Source::new(Options::from_config(config, max_file_bytes)?)
    }

    pub fn new(options: Options) -> Result<S3Source, super::Error> {
        let fail = |error| source_error(&options.name, error);
        let runtime =
            crate::io_runtime::Runtime::new().map_err(|error| fail(Error::Runtime { error }))?;
        let mut tls_context = tls::TlsContext::builder();
        if let Some(pem) = &options.ca_pem {
            tls_context = tls_context.with_trust_store(
                tls::TrustStore::empty()
                    .with_native_roots(false)
                    .with_pem_certificate(pem.as_slice()),
            );
        }
        let tls_context = tls_context
            .build()
            .map_err(|error| fail(Error::Tls { error }))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(tls_context)
            .build_https();
        let labels = |op: &str| S3RequestLabels {
            source: options.name.clone(),
            op: op.to_owned(),
        };
        // One statement each: a family's read guard lives to the end of its
        // statement, and creating the second label needs the write lock.
        let list_metric = S3_REQUESTS.get_or_create_owned(&labels("list"));
        let get_metric = S3_REQUESTS.get_or_create_owned(&labels("get"));
        let counter = RequestCounter {
            counts: Arc::default(),
            list_metric,
            get_metric,
        };
        Ok(S3Source {
            options,
            runtime,
            http,
            client: None,
            counter,
            known: BTreeMap::new(),
        })
    }

    /// Requests this source has made so far.
    #[must_use]
    pub fn requests(&self) -> Requests {
        Requests {
            list: self.counter.counts.list.load(Ordering::Relaxed),
            get: self.counter.counts.get.load(Ordering::Relaxed),
        }
    }

    /// Seeds the last good listing from a snapshot this source returned
    /// before (e.g. restored from the daemon's state after a restart), so an
    /// unchanged bucket is not fetched again and a write-once bucket keeps
    /// refusing objects that changed while converge was down. Files without
    /// s3 provenance (the state store does not keep it yet) are skipped;
    /// returns how many were taken.
    pub fn restore(&mut self, snapshot: &Snapshot) -> usize {
        if snapshot.source != self.options.name || snapshot.kind != SourceKind::S3 {
            return 0;
        }
        let mut taken = 0;
        for file in &snapshot.files {
            let Some(Provenance::S3 {
                bucket,
                key,
                etag,
                last_modified,
                ..
            }) = file.provenance.as_deref()
            else {
                continue;
            };
            if *bucket != self.options.bucket {
                continue;
            }
            let mut file = file.clone();
            file.notice = None;
            let etag = (!etag.is_empty()).then(|| etag.clone());
            let modified = last_modified.clone();
            self.known.insert(
                key.clone(),
                Served {
                    etag,
                    modified,
                    file,
                },
            );
            taken += 1;
        }
        taken
    }

    /// The client for the current credentials (rebuilt when they change).
    fn client(&mut self) -> Result<Client, Error> {
        let credentials = self
            .options
            .credentials
            .load()
            .map_err(Error::Credentials)?;
        if let Some((current, client)) = &self.client
            && *current == credentials
        {
            return Ok(client.clone());
        }
        let o = &self.options;
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(o.timeout.min(MAX_CONNECT_TIMEOUT))
            .read_timeout(o.timeout)
            .operation_attempt_timeout(o.timeout)
            .operation_timeout(o.timeout)
            .build();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(o.region.clone()))
            .credentials_provider(credentials.clone())
            .identity_cache(IdentityCache::no_cache())
            .force_path_style(o.path_style)
            .http_client(self.http.clone())
            .timeout_config(timeouts)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(1)),
            )
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .interceptor(self.counter.clone());
        if let Some(endpoint) = &o.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let client = Client::from_conf(builder.build());
        self.client = Some((credentials, client.clone()));
        Ok(client)
    }

    /// One poll; a bucket in another region than the configured one is
    /// followed to the region the server names, as AWS clients do (once,
    /// for the rest of the process, with a warning saying what to set).
    fn poll(&mut self) -> Result<Snapshot, Error> {
        match self.poll_once() {
            Err(Error::WrongRegion {
                expected: Some(region),
                ..
            }) if region != self.options.region => {
                tracing::warn!(
                    source = %self.options.name,
                    bucket = %self.options.bucket,
                    configured = %self.options.region,
                    region = %region,
                    "the bucket is in another region than configured: following the server; set `region: {region}` in the source"
                );
                self.options.region = region;
                self.client = None;
                self.poll_once()
            }
            other => other,
        }
    }

    fn poll_once(&mut self) -> Result<Snapshot, Error> {
        let client = self.client()?;
        let o = &self.options;
        let (listing, pages) = self.runtime.block_on(list(&client, o))?;
        let steps: Vec<(Listed, Step)> = listing
            .into_iter()
            .map(|l| {
                let step = plan(&self.known, &l, o.is_static, o.max_file_bytes);
                (l, step)
            })
            .collect();
        let wanted: Vec<Listed> = steps
            .iter()
            .filter(|(_, s)| *s == Step::Fetch)
            .map(|(l, _)| l.clone())
            .collect();
        let wanted_count = wanted.len();
        let fetched = self.runtime.block_on(fetch_all(&client, o, wanted))?;
        let (known, snapshot) = assemble(o, &self.known, steps, fetched);
        tracing::debug!(
            source = %o.name,
            pages,
            objects = known.len(),
            fetched = wanted_count,
            revision = %snapshot.revision,
            "listed bucket"
        );
        self.known = known;
        Ok(snapshot)
    }
}

impl super::Source for S3Source {
    fn name(&self) -> &str {
        &self.options.name
    }

    fn interval(&self) -> Duration {
        self.options.interval
    }

    fn read(&mut self) -> Result<Snapshot, super::Error> {
        self.poll().map_err(|e| source_error(&self.options.name, e))
    }

    fn restore(&mut self, snapshot: &Snapshot) {
        S3Source::restore(self, snapshot);
    }
}

#[cfg(test)]
mod tests;
