//! Why an s3 source failed: the [`Error`] with a stable reason per variant,
//! and the classification of SDK errors by variant, HTTP status and S3 error
//! code (never by message text), with credential-free messages.

use std::path::PathBuf;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};

use super::Options;

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
pub(super) fn source_error(name: &str, error: Error) -> crate::source::Error {
    crate::source::Error::S3 {
        source_name: name.to_owned(),
        error: Box::new(error),
    }
}

/// The error an SDK error means, classified by its variant, HTTP status and
/// S3 error code, with a credential-free message.
pub(super) fn classify<E>(e: SdkError<E, HttpResponse>, o: &Options, doing: &str) -> Error
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
                        "{doing} {at}: access denied at {endpoint} ({described}); check the credentials ({}) and the bucket's grants",
                        o.credentials.shown()
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
pub(super) fn response_error<E>(e: SdkError<E, HttpResponse>, o: &Options, doing: &str) -> Error
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
pub(super) fn broke(e: &(dyn std::error::Error + 'static)) -> bool {
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
pub(super) fn plain_region(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    .then(|| s.to_owned())
}

/// The `<Region>` element of an S3 error body.
pub(super) fn region_element(body: &[u8]) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    let (_, rest) = body.split_once("<Region>")?;
    let (region, _) = rest.split_once("</Region>")?;
    plain_region(region)
}

/// The region a server's refusal names as expected, as AWS words it ("the
/// region 'us-east-1' is wrong; expecting 'eu-west-1'"): only that quoted
/// word is taken from the server's text, which can also name the key id.
pub(super) fn expected_region(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("expecting '")?;
    let (region, _) = rest.split_once('\'')?;
    region
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        .then(|| region.to_owned())
}
