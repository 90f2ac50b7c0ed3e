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
//! and the file carries a `write-once` [`Notice`].
//!
//! The SDK is async; the source owns a small current-thread tokio runtime and
//! blocks on it, so `read` works from plain sync code (`run --once`) and from
//! the daemon's `block_in_place`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Credentials, IdentityCache, Intercept, Region,
    RequestChecksumCalculation, ResponseChecksumValidation, RuntimeComponents, SharedHttpClient,
};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_smithy_http_client::tls;
use prometheus_client::metrics::counter::Counter;
use sha2::{Digest, Sha256};

use super::{
    Content, Notice, Provenance, Revision, Snapshot, SourceFile, SourceKind, is_claim_file,
};
use crate::config::{S3Credentials, SourceConfig};
use crate::metrics::{S3_REQUESTS, S3RequestLabels};

/// `GET`s in flight at once when many objects changed (the first poll).
const PARALLEL_GETS: usize = 16;
/// The longest a connection attempt may take, whatever `timeout` says.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Credential files are a line or two; anything bigger is a mistake.
const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// Why an s3 source could not be built or read. Messages carry the
/// endpoint, bucket, key, HTTP status and S3 error code, never the server's
/// text (it can name the key id) or a credential; causes are kept where they
/// cannot hold either (connection and TLS failures, I/O).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting cannot work (endpoint, bucket, timeout, credentials block).
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read ca_file {}: {error}", path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("ca_file {}: no PEM certificate in it", path.display())]
    CaFileEmpty { path: PathBuf },
    #[error("cannot start the s3 client's runtime: {error}")]
    Runtime {
        #[source]
        error: std::io::Error,
    },
    #[error("invalid TLS settings: {error}")]
    Tls {
        #[source]
        error: aws_smithy_http_client::HttpClientError,
    },
    /// The credentials cannot be read now (named by file or variable, never
    /// by value).
    #[error("{0}")]
    Credentials(String),
    /// The SDK could not build the request.
    #[error("{message}")]
    Request {
        message: String,
        #[source]
        error: BoxError,
    },
    #[error("{message}")]
    Timeout { message: String },
    #[error("{message}")]
    Unreachable {
        message: String,
        #[source]
        error: Option<BoxError>,
    },
    #[error("{message}")]
    AuthFailed { message: String },
    /// The server works in another region than the configured one;
    /// `expected` when it says which (the source then follows it).
    #[error("{message}")]
    WrongRegion {
        message: String,
        expected: Option<String>,
    },
    #[error("{message}")]
    BucketMissing { message: String },
    /// A 5xx, a 429, or a response that is not S3's.
    #[error("{message}")]
    ServerError { message: String },
    /// Any other 4xx.
    #[error("{message}")]
    RequestRefused { message: String },
    /// A listing page after the first failed.
    #[error("listing {location} interrupted after {pages} page(s): {cause}")]
    Interrupted {
        location: String,
        pages: usize,
        #[source]
        cause: Box<Error>,
    },
    #[error("listing {location}: page {page} is truncated but has no continuation token")]
    Truncated { location: String, page: usize },
    /// Deleted between the listing and its `GET`.
    #[error("{object} vanished between the listing and reading it")]
    Vanished { object: String },
    #[error("reading {location}: {error}")]
    Task {
        location: String,
        #[source]
        error: tokio::task::JoinError,
    },
    #[error("reading {object}: {}", crate::diagnostic::chain(.error))]
    Body {
        object: String,
        #[source]
        error: aws_sdk_s3::primitives::ByteStreamError,
    },
}

impl Error {
    /// A stable reason for conditions and metric labels.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid(_)
            | Self::CaFile { .. }
            | Self::CaFileEmpty { .. }
            | Self::Runtime { .. }
            | Self::Tls { .. }
            | Self::Credentials(_)
            | Self::Request { .. } => "SourceMisconfigured",
            Self::Timeout { .. } => "Timeout",
            Self::Unreachable { .. } | Self::Body { .. } => "Unreachable",
            Self::AuthFailed { .. } => "AuthFailed",
            Self::WrongRegion { .. } => "WrongRegion",
            Self::BucketMissing { .. } => "BucketMissing",
            Self::ServerError { .. } | Self::Task { .. } => "ServerError",
            Self::RequestRefused { .. } => "RequestRefused",
            Self::Interrupted { .. } | Self::Truncated { .. } | Self::Vanished { .. } => {
                "ListingInterrupted"
            }
        }
    }
}

/// A source error of the s3 source `name`.
fn source_error(name: &str, error: Error) -> super::Error {
    super::Error::S3 {
        source_name: name.to_owned(),
        error: Box::new(error),
    }
}

/// Everything an s3 source needs, from the config.
#[derive(Debug, Clone)]
pub struct Options {
    /// The source's configured name.
    pub name: String,
    /// `http(s)://host:port`; AWS's own endpoint for the region when `None`.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    /// `http://host/bucket/key` rather than `http://bucket.host/key`.
    pub path_style: bool,
    /// Write-once: a changed object is refused, the first version stays.
    pub is_static: bool,
    pub credentials: CredentialSources,
    /// PEM CA certificates trusted instead of the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The bound on each request and on reading each object's body.
    pub timeout: Duration,
    pub interval: Duration,
    /// Objects above this size are refused from the listing, unread.
    pub max_file_bytes: u64,
}

/// Where one credential is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A file, trimmed.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

/// Where the key id and secret (and, from the environment only, a session
/// token) are read from. Read on every poll, so a rotated secret is used
/// without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialSources {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl CredentialSources {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`:
    /// what a source without a `credentials` block uses.
    #[must_use]
    pub fn environment() -> CredentialSources {
        CredentialSources {
            access_key_id: Secret::Env("AWS_ACCESS_KEY_ID".to_owned()),
            secret_access_key: Secret::Env("AWS_SECRET_ACCESS_KEY".to_owned()),
            session_token: Some(Secret::Env("AWS_SESSION_TOKEN".to_owned())),
        }
    }

    /// From the config's `credentials` block: one source for each value.
    pub fn from_config(c: &S3Credentials) -> Result<CredentialSources, String> {
        let one = |file: &Option<PathBuf>, env: &Option<String>, what: &str| match (file, env) {
            (Some(f), None) => Ok(Secret::File(f.clone())),
            (None, Some(e)) => Ok(Secret::Env(e.clone())),
            _ => Err(format!(
                "credentials: give exactly one of {what}_file and {what}_env"
            )),
        };
        Ok(CredentialSources {
            access_key_id: one(&c.access_key_id_file, &c.access_key_id_env, "access_key_id")?,
            secret_access_key: one(
                &c.secret_access_key_file,
                &c.secret_access_key_env,
                "secret_access_key",
            )?,
            session_token: None,
        })
    }

    /// Reads the credentials now. Errors name the file or variable, never a value.
    fn load(&self) -> Result<Credentials, String> {
        let id = read_secret(&self.access_key_id, "access key id")?;
        let secret = read_secret(&self.secret_access_key, "secret access key")?;
        let token = match &self.session_token {
            Some(Secret::Env(var)) => std::env::var(var).ok().filter(|t| !t.trim().is_empty()),
            Some(s @ Secret::File(_)) => Some(read_secret(s, "session token")?),
            None => None,
        };
        Ok(Credentials::new(id, secret, token, None, "converge"))
    }
}

fn read_secret(from: &Secret, what: &str) -> Result<String, String> {
    let value = match from {
        Secret::Env(var) => {
            std::env::var(var).map_err(|_| format!("the {what} variable {var} is not set"))?
        }
        Secret::File(path) => {
            use std::io::Read;
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_SECRET_FILE_BYTES).read_to_string(&mut text))
                .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))?;
            text
        }
    };
    let value = value.trim();
    if value.is_empty() {
        let place = match from {
            Secret::Env(var) => format!("variable {var}"),
            Secret::File(path) => format!("file {}", path.display()),
        };
        return Err(format!("the {what} {place} is empty"));
    }
    Ok(value.to_owned())
}

impl Options {
    /// The options an `s3` source config describes. Reads `ca_file` now; the
    /// credentials are read on each poll.
    pub fn from_config(
        config: &SourceConfig,
        max_file_bytes: u64,
    ) -> Result<Options, super::Error> {
        let SourceConfig::S3 {
            name,
            endpoint,
            region,
            bucket,
            prefix,
            path_style,
            is_static,
            credentials,
            ca_file,
            timeout,
            interval,
            ..
        } = config
        else {
            return Err(super::Error::NotKind {
                source_name: config.name().to_owned(),
                kind: SourceKind::S3,
            });
        };
        let fail = |error| source_error(name, error);
        let bad = |message: String| fail(Error::Invalid(message));
        if let Some(endpoint) = endpoint {
            let rest = endpoint
                .strip_prefix("http://")
                .or_else(|| endpoint.strip_prefix("https://"))
                .ok_or_else(|| bad("endpoint: must start with http:// or https://".to_owned()))?;
            if rest.split('/').next().unwrap_or_default().contains('@') {
                return Err(bad(
                    "endpoint: credentials do not belong in the URL; use credentials:".to_owned(),
                ));
            }
        }
        if bucket.is_empty() {
            return Err(bad("bucket: must not be empty".to_owned()));
        }
        if timeout.is_zero() {
            return Err(bad("timeout: must be more than 0s".to_owned()));
        }
        let credentials = match credentials {
            Some(c) => CredentialSources::from_config(c).map_err(bad)?,
            None => CredentialSources::environment(),
        };
        let ca_pem = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|error| {
                    fail(Error::CaFile {
                        path: path.clone(),
                        error,
                    })
                })?;
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    return Err(fail(Error::CaFileEmpty { path: path.clone() }));
                }
                Some(pem)
            }
            None => None,
        };
        let region = region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_owned());
        Ok(Options {
            name: name.clone(),
            endpoint: endpoint.clone(),
            region,
            bucket: bucket.clone(),
            prefix: prefix.clone(),
            path_style: *path_style,
            is_static: *is_static,
            credentials,
            ca_pem,
            timeout: *timeout,
            interval: *interval,
            max_file_bytes,
        })
    }

    /// `s3://bucket/prefix`, for messages.
    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// The endpoint as messages show it.
    fn endpoint_shown(&self) -> &str {
        self.endpoint.as_deref().unwrap_or("the AWS S3 endpoint")
    }
}

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
struct Counts {
    list: AtomicU64,
    get: AtomicU64,
}

/// Counts every HTTP attempt the SDK transmits, per source and operation.
#[derive(Debug, Clone)]
struct RequestCounter {
    counts: Arc<Counts>,
    list_metric: Counter,
    get_metric: Counter,
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

/// One object as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    key: String,
    /// Without quotes; `None` when the server gave none (fetched every poll).
    etag: Option<String>,
    size: u64,
    last_modified: Option<String>,
}

/// The version of one key the source serves.
#[derive(Debug, Clone)]
struct Served {
    etag: Option<String>,
    /// Its last-modified time (RFC 3339): a PUT of the same bytes with other
    /// metadata keeps the `ETag` but changes this.
    modified: Option<String>,
    /// Without a notice (a refusal's notice is added per snapshot).
    file: SourceFile,
}

/// What one poll does with one listed claim object.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Unchanged: serve the bytes read before.
    Keep,
    /// New or changed: `GET` it.
    Fetch,
    /// Larger than the cap: refuse it unread.
    TooLarge,
    /// Changed in a write-once bucket: serve the first version, with a notice.
    Refuse,
}

/// Decides, per listed object, what this poll does (pure).
fn plan(
    known: &BTreeMap<String, Served>,
    listed: &Listed,
    is_static: bool,
    max_file_bytes: u64,
) -> Step {
    match known.get(&listed.key) {
        Some(served)
            if listed.etag.is_some()
                && served.etag == listed.etag
                && same_time(served.modified.as_deref(), listed.last_modified.as_deref()) =>
        {
            Step::Keep
        }
        // The same bytes uploaded again (other metadata): read again, so the
        // policies judge the metadata as it is now, in either direction.
        Some(served) if listed.etag.is_some() && served.etag == listed.etag => Step::Fetch,
        // Without an ETag a write-once bucket cannot tell a change: keep.
        Some(_) if is_static && listed.etag.is_none() => Step::Keep,
        Some(_) if is_static => Step::Refuse,
        _ if listed.size > max_file_bytes => Step::TooLarge,
        _ => Step::Fetch,
    }
}

/// Whether two last-modified times are the same second (a listing and a
/// `GET` give them at different precisions); unknown on either side is the
/// same.
fn same_time(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.get(..19) == b.get(..19),
        _ => true,
    }
}

/// One object read by `GET`.
#[derive(Debug)]
struct Fetched {
    etag: Option<String>,
    last_modified: Option<String>,
    metadata: BTreeMap<String, String>,
    content: Content,
}

/// An S3 bucket (prefix) as a [`Source`](super::Source).
pub struct S3Source {
    options: Options,
    /// Drives the SDK.
    runtime: crate::blocking::Runtime,
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
            crate::blocking::Runtime::new().map_err(|error| fail(Error::Runtime { error }))?;
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

/// Lists every claim object under the prefix, every page, or fails as a whole.
async fn list(client: &Client, o: &Options) -> Result<(Vec<Listed>, usize), Error> {
    let mut out: BTreeMap<String, Listed> = BTreeMap::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(&o.bucket)
            .prefix(&o.prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| {
                let failure = classify(e, o, "listing");
                if pages == 0 {
                    failure
                } else {
                    Error::Interrupted {
                        location: o.location(),
                        pages,
                        cause: Box::new(failure),
                    }
                }
            })?;
        pages += 1;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            if !is_claim_key(&o.prefix, key) {
                continue;
            }
            out.insert(
                key.to_owned(),
                Listed {
                    key: key.to_owned(),
                    etag: object.e_tag().map(unquote),
                    size: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                    last_modified: object.last_modified().and_then(rfc3339),
                },
            );
        }
        if page.is_truncated() == Some(true) {
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                return Err(Error::Truncated {
                    location: o.location(),
                    page: pages,
                });
            }
        } else {
            return Ok((out.into_values().collect(), pages));
        }
    }
}

/// A key converge reads as a claim: a claim suffix, no hidden segment (as the
/// dir source skips `.git` and editor files), not a folder marker.
fn is_claim_key(prefix: &str, key: &str) -> bool {
    let rel = key.strip_prefix(prefix).unwrap_or(key);
    !key.ends_with('/')
        && is_claim_file(key)
        && !rel.split('/').any(|segment| segment.starts_with('.'))
}

/// `GET`s the wanted objects, [`PARALLEL_GETS`] at a time; any failure fails all.
async fn fetch_all(
    client: &Client,
    o: &Options,
    wanted: Vec<Listed>,
) -> Result<HashMap<String, Fetched>, Error> {
    let mut out = HashMap::with_capacity(wanted.len());
    let mut tasks = tokio::task::JoinSet::new();
    let mut wanted = wanted.into_iter();
    loop {
        while tasks.len() < PARALLEL_GETS {
            let Some(listed) = wanted.next() else { break };
            let (client, o) = (client.clone(), o.clone());
            tasks.spawn(async move {
                let fetched = get(&client, &o, &listed).await?;
                Ok::<_, Error>((listed.key, fetched))
            });
        }
        match tasks.join_next().await {
            None => return Ok(out),
            Some(Ok(Ok((key, fetched)))) => {
                out.insert(key, fetched);
            }
            Some(Ok(Err(failure))) => return Err(failure),
            Some(Err(error)) => {
                return Err(Error::Task {
                    location: o.location(),
                    error,
                });
            }
        }
    }
}

/// One `GetObject`: bytes (up to the cap), `ETag`, last-modified, metadata.
async fn get(client: &Client, o: &Options, listed: &Listed) -> Result<Fetched, Error> {
    let what = format!("s3://{}/{}", o.bucket, listed.key);
    let output = client
        .get_object()
        .bucket(&o.bucket)
        .key(&listed.key)
        .send()
        .await
        .map_err(|e| {
            if e.as_service_error()
                .is_some_and(GetObjectError::is_no_such_key)
            {
                // Deleted between the listing and the GET: this listing is
                // already stale; the next poll lists again.
                Error::Vanished {
                    object: what.clone(),
                }
            } else {
                classify(e, o, "reading")
            }
        })?;
    let etag = output.e_tag().map(unquote);
    let last_modified = output.last_modified().and_then(rfc3339);
    let metadata: BTreeMap<String, String> = output
        .metadata()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let limit = o.max_file_bytes;
    let size = output.content_length().and_then(|n| u64::try_from(n).ok());
    let content = if let Some(size) = size.filter(|s| *s > limit) {
        Content::TooLarge { size, limit }
    } else {
        let mut body = output.body;
        let mut bytes = Vec::with_capacity(usize::try_from(size.unwrap_or(0)).unwrap_or(0));
        let read = async {
            while let Some(chunk) = body.try_next().await? {
                bytes.extend_from_slice(&chunk);
                if bytes.len() as u64 > limit {
                    return Ok(false);
                }
            }
            Ok::<_, aws_sdk_s3::primitives::ByteStreamError>(true)
        };
        match tokio::time::timeout(o.timeout, read).await {
            Err(_) => {
                return Err(Error::Timeout {
                    message: format!("reading {what} timed out after {:?}", o.timeout),
                });
            }
            Ok(Err(error)) => {
                return Err(Error::Body {
                    object: what,
                    error,
                });
            }
            Ok(Ok(false)) => Content::TooLarge {
                size: size.unwrap_or(bytes.len() as u64),
                limit,
            },
            Ok(Ok(true)) => Content::Bytes(bytes.into()),
        }
    };
    Ok(Fetched {
        etag,
        last_modified,
        metadata,
        content,
    })
}

/// The error an SDK error means, classified by its variant, HTTP status and
/// S3 error code, with a credential-free message.
fn classify<E>(e: SdkError<E, HttpResponse>, o: &Options, doing: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let at = o.location();
    let endpoint = o.endpoint_shown();
    let timeout = || Error::Timeout {
        message: format!("{doing} {at} at {endpoint} timed out after {:?}", o.timeout),
    };
    match e {
        SdkError::TimeoutError(_) => timeout(),
        SdkError::DispatchFailure(d) if d.is_timeout() => timeout(),
        SdkError::DispatchFailure(d) => {
            let detail = d.as_connector_error().map_or_else(
                || "dispatch failure".to_owned(),
                |c| crate::diagnostic::chain(c),
            );
            Error::Unreachable {
                message: format!("cannot reach {endpoint} ({doing} {at}): {detail}"),
                error: SdkError::<E, HttpResponse>::DispatchFailure(d)
                    .into_source()
                    .ok(),
            }
        }
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let code = s.err().code().unwrap_or("no error code").to_owned();
            let described = format!("HTTP {status} {code}");
            if code == "AuthorizationHeaderMalformed"
                || code == "IllegalLocationConstraintException"
            {
                // As AWS clients do: the bucket's region header, else the
                // error's <Region> element (AWS and Garage send it), else
                // AWS's words in the message.
                let expected = s
                    .raw()
                    .headers()
                    .get("x-amz-bucket-region")
                    .and_then(plain_region)
                    .or_else(|| s.raw().body().bytes().and_then(region_element))
                    .or_else(|| s.err().message().and_then(expected_region));
                let message = match &expected {
                    Some(region) => format!(
                        "{doing} {at}: {endpoint} expects region {region}, not {}: set `region: {region}` ({described})",
                        o.region
                    ),
                    None => format!(
                        "{doing} {at}: {endpoint} works in another region than {} and does not say which: set `region:` to the server's (Garage: its s3_region) ({described})",
                        o.region
                    ),
                };
                return Error::WrongRegion { message, expected };
            }
            match (status, code.as_str()) {
                (_, "NoSuchBucket") => Error::BucketMissing {
                    message: format!(
                        "bucket {} does not exist at {endpoint} ({described})",
                        o.bucket
                    ),
                },
                (401 | 403, _)
                | (
                    _,
                    "AccessDenied"
                    | "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "InvalidToken"
                    | "ExpiredToken",
                ) => Error::AuthFailed {
                    message: format!(
                        "{doing} {at}: access denied at {endpoint} ({described}); check the credentials and the bucket's grants"
                    ),
                },
                (429 | 500..=599, _) | (_, "SlowDown" | "InternalError" | "ServiceUnavailable") => {
                    Error::ServerError {
                        message: format!("{doing} {at}: {endpoint} failed ({described})"),
                    }
                }
                _ => Error::RequestRefused {
                    message: format!("{doing} {at}: {endpoint} refused the request ({described})"),
                },
            }
        }
        SdkError::ResponseError(r) => {
            response_error(SdkError::<E, HttpResponse>::ResponseError(r), o, doing)
        }
        e @ SdkError::ConstructionFailure(_) => {
            let message = format!(
                "{doing} {at}: cannot build the request: {}",
                crate::diagnostic::chain(&e)
            );
            match e.into_source() {
                Ok(error) => Error::Request { message, error },
                Err(_) => Error::Invalid(message),
            }
        }
        e => Error::Unreachable {
            message: format!(
                "{doing} {at} at {endpoint}: {}",
                crate::diagnostic::chain(&e)
            ),
            error: None,
        },
    }
}

/// A response that could not be read: cut (reset, closed short) is the
/// network's fault and `Unreachable`; malformed is the server's.
fn response_error<E>(e: SdkError<E, HttpResponse>, o: &Options, doing: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (at, endpoint) = (o.location(), o.endpoint_shown());
    if broke(&e) {
        Error::Unreachable {
            message: format!(
                "{doing} {at}: the connection to {endpoint} broke during the response: {}",
                crate::diagnostic::chain(&e)
            ),
            error: e.into_source().ok(),
        }
    } else {
        Error::ServerError {
            message: format!("{doing} {at}: {endpoint} sent a response that is not S3's"),
        }
    }
}

/// Whether a transport error (HTTP or I/O) is among the causes: the
/// response was cut, not malformed.
fn broke(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(cause) = next {
        if cause.is::<hyper::Error>() || cause.is::<std::io::Error>() {
            return true;
        }
        next = cause.source();
    }
    false
}

/// A region name as servers send it: letters, digits, `-` and `_` only
/// (nothing else of the server's text is ever taken).
fn plain_region(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    .then(|| s.to_owned())
}

/// The `<Region>` element of an S3 error body.
fn region_element(body: &[u8]) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    let (_, rest) = body.split_once("<Region>")?;
    let (region, _) = rest.split_once("</Region>")?;
    plain_region(region)
}

/// The region a server's refusal names as expected, as AWS words it ("the
/// region 'us-east-1' is wrong; expecting 'eu-west-1'"): only that quoted
/// word is taken from the server's text, which can also name the key id.
fn expected_region(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("expecting '")?;
    let (region, _) = rest.split_once('\'')?;
    region
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        .then(|| region.to_owned())
}

/// Builds the new listing and the snapshot from this poll's steps (pure).
fn assemble(
    o: &Options,
    known: &BTreeMap<String, Served>,
    steps: Vec<(Listed, Step)>,
    mut fetched: HashMap<String, Fetched>,
) -> (BTreeMap<String, Served>, Snapshot) {
    let mut next = BTreeMap::new();
    let mut files = Vec::with_capacity(steps.len());
    let mut revision = Sha256::new();
    for (listed, step) in steps {
        let served = match step {
            Step::Keep | Step::Refuse => known.get(&listed.key).cloned(),
            Step::TooLarge => Some(Served {
                etag: listed.etag.clone(),
                modified: listed.last_modified.clone(),
                file: object_file(
                    o,
                    &listed.key,
                    Content::TooLarge {
                        size: listed.size,
                        limit: o.max_file_bytes,
                    },
                    listed.etag.as_deref(),
                    listed.last_modified.clone(),
                    BTreeMap::new(),
                ),
            }),
            Step::Fetch => fetched.remove(&listed.key).map(|f| Served {
                file: object_file(
                    o,
                    &listed.key,
                    f.content,
                    f.etag.as_deref(),
                    f.last_modified.or_else(|| listed.last_modified.clone()),
                    f.metadata,
                ),
                etag: f.etag,
                modified: listed.last_modified.clone(),
            }),
        };
        let Some(served) = served else { continue };
        let mut file = served.file.clone();
        revision.update(listed.key.as_bytes());
        revision.update([0]);
        revision.update(served.etag.as_deref().unwrap_or_default().as_bytes());
        revision.update([0]);
        revision.update(
            served
                .modified
                .as_deref()
                .and_then(|m| m.get(..19))
                .unwrap_or_default()
                .as_bytes(),
        );
        if step == Step::Refuse {
            let seen = listed.etag.as_deref().unwrap_or("unknown");
            let first = served.etag.as_deref().unwrap_or("unknown");
            revision.update([0]);
            revision.update(seen.as_bytes());
            file.notice = Some(Notice {
                rule: "write-once".to_owned(),
                message: format!(
                    "s3://{}/{} is in a write-once (static) bucket: its new version (ETag {seen}) is refused; the first version (ETag {first}) stays in force",
                    o.bucket, listed.key
                ),
            });
        }
        revision.update([b'\n']);
        files.push(file);
        next.insert(listed.key, served);
    }
    let snapshot = Snapshot {
        source: o.name.clone(),
        kind: SourceKind::S3,
        is_static: o.is_static,
        revision: Revision(format!(
            "sha256:{}",
            crate::hex::encode(&revision.finalize())
        )),
        files,
    };
    (next, snapshot)
}

/// A file read from (or refused in) the bucket, named `s3://bucket/key`.
///
/// Its digest covers the bytes and the object's identity (`ETag`,
/// last-modified, metadata): equal digests still mean equal bytes, and a
/// re-upload of the same bytes with other metadata is authorized again.
fn object_file(
    o: &Options,
    key: &str,
    content: Content,
    etag: Option<&str>,
    last_modified: Option<String>,
    metadata: BTreeMap<String, String>,
) -> SourceFile {
    let mut file = SourceFile::new(format!("s3://{}/{key}", o.bucket), content);
    let mut digest = Sha256::new();
    digest.update(b"converge-s3-object\0");
    digest.update(file.digest);
    digest.update(etag.unwrap_or_default().as_bytes());
    digest.update([0]);
    digest.update(last_modified.as_deref().unwrap_or_default().as_bytes());
    for (k, v) in &metadata {
        digest.update([0]);
        digest.update(k.as_bytes());
        digest.update([b'=']);
        digest.update(v.as_bytes());
    }
    file.digest = digest.finalize().into();
    file.provenance = Some(Arc::new(Provenance::S3 {
        bucket: o.bucket.clone(),
        key: key.to_owned(),
        etag: etag.unwrap_or_default().to_owned(),
        last_modified,
        metadata,
    }));
    file
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

fn rfc3339(t: &aws_sdk_s3::primitives::DateTime) -> Option<String> {
    t.fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(is_static: bool) -> Options {
        Options {
            name: "bucket".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            region: "garage".into(),
            bucket: "environments".into(),
            prefix: String::new(),
            path_style: true,
            is_static,
            credentials: CredentialSources::environment(),
            ca_pem: None,
            timeout: Duration::from_secs(1),
            interval: Duration::from_secs(10),
            max_file_bytes: 100,
        }
    }

    fn listed(key: &str, etag: &str, size: u64) -> Listed {
        Listed {
            key: key.into(),
            etag: Some(etag.into()),
            size,
            last_modified: Some("2024-01-15T10:30:00Z".into()),
        }
    }

    fn fetched(body: &str, etag: &str) -> Fetched {
        Fetched {
            etag: Some(etag.into()),
            last_modified: Some("2024-01-15T10:30:00Z".into()),
            metadata: BTreeMap::from([("uploader".into(), "ci".into())]),
            content: Content::Bytes(body.as_bytes().to_vec().into()),
        }
    }

    /// One poll over `listing`, with `bodies` as what a GET would return.
    fn poll(
        o: &Options,
        known: &BTreeMap<String, Served>,
        listing: Vec<Listed>,
        bodies: &[(&str, &str, &str)],
    ) -> (BTreeMap<String, Served>, Snapshot, Vec<String>) {
        let steps: Vec<(Listed, Step)> = listing
            .into_iter()
            .map(|l| {
                let s = plan(known, &l, o.is_static, o.max_file_bytes);
                (l, s)
            })
            .collect();
        let gets: Vec<String> = steps
            .iter()
            .filter(|(_, s)| *s == Step::Fetch)
            .map(|(l, _)| l.key.clone())
            .collect();
        let fetched = bodies
            .iter()
            .filter(|(k, _, _)| gets.iter().any(|g| g == k))
            .map(|(k, body, etag)| ((*k).to_owned(), fetched(body, etag)))
            .collect();
        let (known, snap) = assemble(o, known, steps, fetched);
        (known, snap, gets)
    }

    fn body(f: &SourceFile) -> &str {
        match &f.content {
            Content::Bytes(b) => std::str::from_utf8(b).expect("utf-8"),
            other => panic!("not bytes: {other:?}"),
        }
    }

    #[test]
    fn the_expected_region_is_taken_from_aws_words_only() {
        assert_eq!(
            expected_region("The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            expected_region("unexpected scope: 20261130/us-east-1/s3/aws4_request"),
            None
        );
        assert_eq!(
            region_element(
                b"<Error><Code>AuthorizationHeaderMalformed</Code><Region>garage</Region></Error>"
            )
            .as_deref(),
            Some("garage")
        );
        assert_eq!(region_element(b"<Error><Region>a b</Region></Error>"), None);
        assert_eq!(region_element(b"<Error><Region></Region></Error>"), None);
        assert_eq!(plain_region(" eu-west-1 ").as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn only_new_and_changed_objects_are_fetched_and_removed_keys_drop_their_files() {
        let o = options(false);
        let (known, first, gets) = poll(
            &o,
            &BTreeMap::new(),
            vec![listed("a.yaml", "e1", 3), listed("b.yaml", "e2", 3)],
            &[("a.yaml", "a-1", "e1"), ("b.yaml", "b-1", "e2")],
        );
        assert_eq!(gets, ["a.yaml", "b.yaml"]);
        assert_eq!(first.files[0].path, "s3://environments/a.yaml");
        let (known, idle, gets) = poll(
            &o,
            &known,
            vec![listed("a.yaml", "e1", 3), listed("b.yaml", "e2", 3)],
            &[],
        );
        assert!(gets.is_empty(), "an idle poll fetches nothing");
        assert_eq!(idle.revision, first.revision);
        assert_eq!(idle.files, first.files);
        let (_, changed, gets) = poll(
            &o,
            &known,
            vec![listed("a.yaml", "e3", 3)],
            &[("a.yaml", "a-2", "e3")],
        );
        assert_eq!(gets, ["a.yaml"]);
        assert_ne!(changed.revision, first.revision);
        assert_eq!(changed.files.len(), 1, "b.yaml was removed");
        assert_eq!(body(&changed.files[0]), "a-2");
        let Some(Provenance::S3 { etag, metadata, .. }) = changed.files[0].provenance.as_deref()
        else {
            panic!("s3 provenance")
        };
        assert_eq!((etag.as_str(), metadata["uploader"].as_str()), ("e3", "ci"));
    }

    #[test]
    fn objects_over_the_cap_are_refused_from_the_listing_without_a_get() {
        let o = options(false);
        let (_, snap, gets) = poll(
            &o,
            &BTreeMap::new(),
            vec![listed("big.yaml", "e", 101)],
            &[],
        );
        assert!(gets.is_empty());
        assert_eq!(
            snap.files[0].content,
            Content::TooLarge {
                size: 101,
                limit: 100
            }
        );
    }

    #[test]
    fn a_static_bucket_keeps_the_first_version_of_a_changed_object_with_a_notice() {
        let o = options(true);
        let (known, _, _) = poll(
            &o,
            &BTreeMap::new(),
            vec![listed("prod.yaml", "first", 3)],
            &[("prod.yaml", "v1", "first")],
        );
        let (known, snap, gets) = poll(
            &o,
            &known,
            vec![listed("prod.yaml", "second", 3), listed("new.yaml", "n", 3)],
            &[("new.yaml", "new", "n")],
        );
        assert_eq!(gets, ["new.yaml"], "the changed object is not even fetched");
        let refused = snap
            .files
            .iter()
            .find(|f| f.path.ends_with("prod.yaml"))
            .expect("still served");
        assert_eq!(body(refused), "v1");
        let notice = refused.notice.as_ref().expect("a notice");
        assert_eq!(notice.rule, "write-once");
        assert!(
            notice.message.contains("second") && notice.message.contains("first"),
            "{}",
            notice.message
        );
        assert!(
            snap.files
                .iter()
                .any(|f| f.path.ends_with("new.yaml") && f.notice.is_none()),
            "a new key is accepted"
        );
        assert!(known["prod.yaml"].file.notice.is_none());
        assert_eq!(known["prod.yaml"].etag.as_deref(), Some("first"));
        // Still refused on the next poll, with the same revision.
        let (_, again, gets) = poll(
            &o,
            &known,
            vec![listed("prod.yaml", "second", 3), listed("new.yaml", "n", 3)],
            &[],
        );
        assert!(gets.is_empty());
        assert_eq!(again.revision, snap.revision);
    }

    #[test]
    fn the_digest_covers_bytes_and_object_identity() {
        let o = options(false);
        let a = object_file(
            &o,
            "a.yaml",
            Content::Bytes(b"x".to_vec().into()),
            Some("e1"),
            None,
            BTreeMap::new(),
        );
        let b = object_file(
            &o,
            "a.yaml",
            Content::Bytes(b"x".to_vec().into()),
            Some("e1"),
            None,
            BTreeMap::from([("uploader".into(), "someone".into())]),
        );
        let c = object_file(
            &o,
            "a.yaml",
            Content::Bytes(b"x".to_vec().into()),
            Some("e1"),
            None,
            BTreeMap::new(),
        );
        assert_ne!(a.digest, b.digest, "other metadata is authorized again");
        assert_eq!(a.digest, c.digest);
    }

    #[test]
    fn claim_keys_are_filtered_by_suffix_and_hidden_segments() {
        for (key, want) in [
            ("team1/dev-x.yaml", true),
            ("dev-x.JSON", true),
            ("a.yml", true),
            ("README.md", false),
            ("folder/", false),
            (".git/x.yaml", false),
            ("team1/.dev-x.yaml.swp", false),
            ("team1/.hidden.yaml", false),
        ] {
            assert_eq!(is_claim_key("", key), want, "{key}");
        }
        assert!(
            is_claim_key(".configs/", ".configs/a.yaml"),
            "the prefix itself may be hidden"
        );
    }

    fn s3_config(extra: &str) -> Result<Options, Box<dyn std::error::Error>> {
        let text =
            format!("sources:\n  - name: b\n    kind: s3\n    bucket: environments\n{extra}");
        let config = crate::config::Config::parse(&text)?;
        Ok(Options::from_config(&config.sources[0], 10)?)
    }

    #[test]
    fn config_mistakes_are_refused_at_start() {
        for (extra, want) in [
            ("    endpoint: 127.0.0.1:9000\n", "http:// or https://"),
            (
                "    endpoint: http://key:secret@127.0.0.1:9000\n",
                "do not belong in the URL",
            ),
            (
                "    credentials:\n      access_key_id_file: id\n",
                "secret_access_key_file and secret_access_key_env",
            ),
            (
                "    credentials:\n      access_key_id_file: id\n      access_key_id_env: ID\n      secret_access_key_env: S\n",
                "access_key_id_file and access_key_id_env",
            ),
            ("    ca_file: /nonexistent/ca.pem\n", "cannot read ca_file"),
            ("    timeout: 0s\n", "more than 0s"),
            ("    credentials:\n      token: x\n", "token"),
        ] {
            let err = s3_config(extra).expect_err(extra).to_string();
            assert!(err.contains(want), "{extra}: {err}");
        }
        let ok = s3_config(
            "    endpoint: https://minio.example:9000\n    region: eu-west-1\n    prefix: team1/\n    path_style: true\n    static: true\n    timeout: 5s\n    interval: 10s\n    credentials:\n      access_key_id_env: KEY\n      secret_access_key_file: /run/secrets/s3\n",
        )
        .expect("valid");
        assert_eq!(
            ok.credentials,
            CredentialSources {
                access_key_id: Secret::Env("KEY".into()),
                secret_access_key: Secret::File("/run/secrets/s3".into()),
                session_token: None,
            }
        );
        assert!(ok.is_static && ok.path_style);
        assert_eq!(
            (ok.region.as_str(), ok.prefix.as_str()),
            ("eu-west-1", "team1/")
        );
    }

    /// A source for `endpoint` whose credentials come from files in `dir`.
    fn local_source(dir: &std::path::Path, endpoint: String) -> S3Source {
        std::fs::write(dir.join("id"), "GKTEST").expect("write");
        std::fs::write(dir.join("secret"), "not-a-real-secret").expect("write");
        let mut o = options(false);
        o.endpoint = Some(endpoint);
        o.credentials = CredentialSources {
            access_key_id: Secret::File(dir.join("id")),
            secret_access_key: Secret::File(dir.join("secret")),
            session_token: None,
        };
        S3Source::new(o).expect("source builds")
    }

    #[test]
    fn a_refused_connection_is_unreachable_and_keeps_its_cause() {
        use crate::source::Source as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut s = local_source(dir.path(), format!("http://127.0.0.1:{port}"));
        let err = s.read().expect_err("nothing listens");
        assert_eq!(err.reason(), "Unreachable", "{err}");
        let crate::source::Error::S3 { error, .. } = &err else {
            panic!("an s3 error: {err}");
        };
        assert!(
            matches!(**error, Error::Unreachable { error: Some(_), .. }),
            "the connector error is kept: {error:?}"
        );
        assert!(!err.to_string().contains("not-a-real-secret"), "{err}");
    }

    #[test]
    fn a_server_that_never_answers_is_a_timeout() {
        use crate::source::Source as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let held = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            std::thread::sleep(Duration::from_secs(5));
            drop(stream);
        });
        let mut s = local_source(dir.path(), format!("http://127.0.0.1:{port}"));
        let err = s.read().expect_err("no answer");
        assert_eq!(err.reason(), "Timeout", "{err}");
        drop(held);
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").expect("write");
        let err = s3_config(&format!("    ca_file: {}\n", path.display()))
            .expect_err("refused")
            .to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn secret_files_are_trimmed_and_errors_never_show_a_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = dir.path().join("id");
        let secret = dir.path().join("secret");
        std::fs::write(&id, "GK0123\n").expect("write");
        std::fs::write(&secret, "  \n").expect("write");
        assert_eq!(
            read_secret(&Secret::File(id.clone()), "access key id").as_deref(),
            Ok("GK0123")
        );
        let err = read_secret(&Secret::File(secret), "secret access key").expect_err("empty");
        assert!(err.contains("is empty"), "{err}");
        let err = read_secret(
            &Secret::Env("CONVERGE_TEST_SURELY_UNSET_VARIABLE".into()),
            "secret access key",
        )
        .expect_err("unset");
        assert!(
            err.contains("CONVERGE_TEST_SURELY_UNSET_VARIABLE is not set"),
            "{err}"
        );
    }
}
