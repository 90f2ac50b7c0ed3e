//! A small OCI distribution client: tag lists only (`GET /v2/<name>/tags/list`).
//!
//! Blocking, on `ureq` (converge's HTTP client stack already: rustls with
//! aws-lc-rs, `ca_file` replacing the system roots). It follows `Link:
//! <…>; rel="next"` pages (the `n`/`last` parameters the server puts there),
//! answers a `WWW-Authenticate: Bearer realm,service,scope` challenge at the
//! token endpoint (with the basic credentials when configured) and a `Basic`
//! challenge with them, keeps tokens until they expire (at most
//! [`MAX_TOKEN_LIFETIME`]), waits out a `429`'s `Retry-After` (at most the
//! request timeout, at most 3 times), spends at most `budget` requests per
//! scan, and reads at most `max_tags` tags per repository. Every request is
//! counted in `converge_registry_requests_total{registry,op,status}`.
//! Messages carry the status and the registry's error code, never a
//! credential.
//!
//! Credentials go only where they belong: to the registry's own origin
//! (scheme, host and port), and to a token realm over HTTPS; a realm over
//! plain HTTP is used only with `plain_http` and only on the registry's own
//! host and port ([`realm_allowed`]). Redirects are followed by this client,
//! not by `ureq`: within the registry's origin only, at most
//! [`MAX_REDIRECTS`] times; a redirect to another host is refused
//! ([`Error::Refused`]), so nothing from another host is ever used as tags.
//!
//! Everything read from the network goes through pure functions of bytes and
//! header values ([`parse_tags_page`], [`parse_token`], [`parse_challenge`],
//! [`next_link`], [`retry_after`], [`redirect_target`], [`realm_allowed`]),
//! fuzzed by `fuzz/fuzz_targets/registry.rs`; numbers from the network go
//! through checked or saturating arithmetic only.

mod auth;
mod error;
mod list;
mod request;
mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::{REGISTRY_REQUESTS, RegistryRequestLabels};

pub use error::Error;
pub use wire::{
    Challenge, Origin, Token, error_code, next_link, parse_challenge, parse_tags_page, parse_token,
    realm_allowed, redirect_target, retry_after,
};

use auth::{Secret, base64};

/// At most this many `429`s are waited out per request.
const MAX_RATE_LIMITED: u32 = 3;
/// At most this many redirects (within the registry's origin) per request.
pub const MAX_REDIRECTS: u32 = 5;
/// A token is kept at most this long, whatever its `expires_in` says.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_hours(1);

/// Where credentials come from (read on every scan, so rotation needs no restart).
#[derive(Debug, Clone)]
pub enum Credentials {
    None,
    /// A user name and a password file: basic auth, and at a token endpoint.
    Basic {
        username: String,
        password_file: PathBuf,
    },
    /// A token file, sent as `Authorization: Bearer`.
    Token {
        token_file: PathBuf,
    },
}

/// How to reach one registry.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host[:port]`.
    pub host: String,
    pub plain_http: bool,
    pub credentials: Credentials,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub max_tags: usize,
    pub page_size: usize,
}

/// One repository's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub tags: Vec<String>,
    /// More tags exist than `max_tags`.
    pub truncated: bool,
}

/// A client of one registry, shared by the scan's worker threads.
pub struct Registry {
    options: Options,
    /// `scheme://host[:port]`, what every request URL starts with.
    base: String,
    /// The registry's origin, what credentials may be sent to.
    origin: Option<Origin>,
    agent: ureq::Agent,
    /// Bearer tokens by scope, until they expire.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// The registry asked for basic auth: send it up front from now on.
    basic: AtomicBool,
    /// Requests left in this scan.
    budget: AtomicU32,
    /// The registry did not answer in this scan: the rest of the scan does
    /// not wait for it again (a black-holed registry costs one timeout).
    down: Mutex<Option<Error>>,
    secret: Mutex<Secret>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("host", &self.options.host)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A client; the CA file is read here.
    ///
    /// # Errors
    ///
    /// An unreadable CA file.
    pub fn new(options: Options) -> Result<Registry, Error> {
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(options.timeout))
            .timeout_connect(Some(options.timeout.min(Duration::from_secs(5))))
            .http_status_as_error(false)
            // Redirects are this client's to judge (`redirect_target`).
            .max_redirects(0)
            .user_agent(concat!("converge/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &options.ca_file {
            let pem = std::fs::read(ca).map_err(|error| Error::CaFile {
                registry: options.host.clone(),
                path: ca.clone(),
                error,
            })?;
            config = config.tls_config(crate::status_client::trusting(&pem));
        }
        let scheme = if options.plain_http { "http" } else { "https" };
        let base = format!("{scheme}://{}", options.host);
        Ok(Registry {
            origin: Origin::of(&base),
            base,
            agent: config.build().into(),
            options,
            tokens: Mutex::new(HashMap::new()),
            basic: AtomicBool::new(false),
            budget: AtomicU32::new(0),
            down: Mutex::new(None),
            secret: Mutex::new(Secret::None),
        })
    }

    /// The registry as metric labels and messages name it.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.options.host
    }

    /// Starts a scan: `budget` requests, credentials read again.
    ///
    /// # Errors
    ///
    /// An unreadable credentials file.
    pub fn begin_scan(&self, budget: u32) -> Result<(), Error> {
        self.budget.store(budget, Ordering::Relaxed);
        *self
            .down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let read = |path: &PathBuf| {
            crate::secret_file::read(path).map_err(|error| Error::Credentials {
                registry: self.options.host.clone(),
                path: path.clone(),
                error,
            })
        };
        let secret = match &self.options.credentials {
            Credentials::None => Secret::None,
            Credentials::Basic {
                username,
                password_file,
            } => {
                let pair = format!("{username}:{}", read(password_file)?);
                Secret::Basic(base64(pair.as_bytes()))
            }
            Credentials::Token { token_file } => Secret::Bearer(read(token_file)?),
        };
        *self
            .secret
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = secret;
        Ok(())
    }

    fn count(&self, op: &str, status: &str) {
        REGISTRY_REQUESTS
            .get_or_create(&RegistryRequestLabels {
                registry: self.options.host.clone(),
                op: op.to_owned(),
                status: status.to_owned(),
            })
            .inc();
    }

    fn spend(&self, repository: &str) -> Result<(), Error> {
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .map(|_| ())
            .map_err(|_| Error::BudgetSpent {
                registry: self.options.host.clone(),
                repository: repository.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests;
