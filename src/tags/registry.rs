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

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::{REGISTRY_REQUESTS, RegistryRequestLabels};

/// Bodies above this are refused (a page of 1,000 tags is ~30 KiB).
const MAX_BODY: u64 = 8 * 1024 * 1024;
/// The manifest types an artifact may come as.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// At most this many `429`s are waited out per request.
const MAX_RATE_LIMITED: u32 = 3;
/// At most this many redirects (within the registry's origin) per request.
pub const MAX_REDIRECTS: u32 = 5;
/// A token is kept at most this long, whatever its `expires_in` says.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_hours(1);

/// Why a repository's tags could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registry {registry}: cannot connect: {message}")]
    Unreachable { registry: String, message: String },
    #[error("registry {registry}: timed out: {message}")]
    Timeout { registry: String, message: String },
    #[error("registry {registry}: {repository}: authentication failed (HTTP {status})")]
    AuthFailed {
        registry: String,
        repository: String,
        status: u16,
    },
    #[error("registry {registry}: repository {repository} does not exist (HTTP 404)")]
    RepositoryMissing {
        registry: String,
        repository: String,
    },
    #[error("registry {registry}: {repository}: server error (HTTP {status}{code})")]
    ServerError {
        registry: String,
        repository: String,
        status: u16,
        code: String,
    },
    #[error(
        "registry {registry}: {repository}: still rate limited after {MAX_RATE_LIMITED} waits (HTTP 429)"
    )]
    RateLimited {
        registry: String,
        repository: String,
    },
    #[error(
        "registry {registry}: the request budget of this scan is spent; {repository} keeps its last list"
    )]
    BudgetSpent {
        registry: String,
        repository: String,
    },
    #[error("registry {registry}: {repository}: page {page} of the listing failed: {error}")]
    ListingInterrupted {
        registry: String,
        repository: String,
        page: usize,
        #[source]
        error: Box<Error>,
    },
    #[error("registry {registry}: {repository}: unexpected answer: {message}")]
    BadResponse {
        registry: String,
        repository: String,
        message: String,
    },
    #[error("registry {registry}: {repository}: refused: {message}")]
    Refused {
        registry: String,
        repository: String,
        message: String,
    },
    #[error("registry {registry}: cannot read the credentials file {path}: {error}")]
    Credentials {
        registry: String,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("registry {registry}: cannot read the CA file {path}: {error}")]
    CaFile {
        registry: String,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

impl Error {
    /// The same transport failure for another repository of this scan.
    pub(crate) fn again(&self) -> Error {
        match self {
            Self::Timeout { registry, message } => Self::Timeout {
                registry: registry.clone(),
                message: message.clone(),
            },
            Self::Unreachable { registry, message } => Self::Unreachable {
                registry: registry.clone(),
                message: message.clone(),
            },
            Self::Credentials {
                registry,
                path,
                error,
            } => Self::Credentials {
                registry: registry.clone(),
                path: path.clone(),
                error: std::io::Error::new(error.kind(), error.to_string()),
            },
            other => Self::Unreachable {
                registry: String::new(),
                message: other.to_string(),
            },
        }
    }

    /// A stable reason for conditions and metric labels.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "Unreachable",
            Self::Timeout { .. } => "Timeout",
            Self::AuthFailed { .. } | Self::Credentials { .. } => "AuthFailed",
            Self::RepositoryMissing { .. } => "RepositoryMissing",
            Self::ServerError { .. } => "ServerError",
            Self::RateLimited { .. } => "RateLimited",
            Self::BudgetSpent { .. } => "BudgetSpent",
            Self::ListingInterrupted { .. } => "ListingInterrupted",
            Self::BadResponse { .. } => "BadResponse",
            Self::Refused { .. } => "Refused",
            Self::CaFile { .. } => "CaFileUnreadable",
        }
    }
}

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

/// Authorization read from the credential files for one scan.
#[derive(Clone)]
enum Secret {
    None,
    Basic(String),
    Bearer(String),
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

    fn secret(&self) -> Secret {
        self.secret
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
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

    fn transport(&self, e: &ureq::Error) -> Error {
        let registry = self.options.host.clone();
        let timed_out = match e {
            ureq::Error::Timeout(_) => true,
            ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::TimedOut,
            _ => false,
        };
        if timed_out {
            Error::Timeout {
                registry,
                message: e.to_string(),
            }
        } else {
            Error::Unreachable {
                registry,
                message: e.to_string(),
            }
        }
    }

    fn refused(&self, repository: &str, message: String) -> Error {
        Error::Refused {
            registry: self.options.host.clone(),
            repository: repository.to_owned(),
            message,
        }
    }

    /// Lists every tag of `repository` (at most `max_tags`), every page.
    ///
    /// # Errors
    ///
    /// Any page that fails fails the listing: nothing partial is returned.
    pub fn list(&self, repository: &str) -> Result<Listing, Error> {
        let mut url = format!(
            "{}/v2/{repository}/tags/list?n={}",
            self.base,
            self.options.page_size.min(self.options.max_tags).max(1)
        );
        let scope = format!("repository:{repository}:pull");
        let mut tags = Vec::new();
        let mut page = 0;
        loop {
            page += 1;
            let interrupted = |error: Error| {
                if page == 1 {
                    error
                } else {
                    Error::ListingInterrupted {
                        registry: self.options.host.clone(),
                        repository: repository.to_owned(),
                        page,
                        error: Box::new(error),
                    }
                }
            };
            let (mut response, status) = self
                .get(&url, &scope, repository, None)
                .map_err(interrupted)?;
            let bad = |message: String| Error::BadResponse {
                registry: self.options.host.clone(),
                repository: repository.to_owned(),
                message,
            };
            match status {
                200 => {}
                401 | 403 => {
                    return Err(interrupted(Error::AuthFailed {
                        registry: self.options.host.clone(),
                        repository: repository.to_owned(),
                        status,
                    }));
                }
                404 => {
                    return Err(interrupted(Error::RepositoryMissing {
                        registry: self.options.host.clone(),
                        repository: repository.to_owned(),
                    }));
                }
                _ => {
                    let code = error_code(&read_body(&mut response).unwrap_or_default());
                    let error = if status >= 500 {
                        Error::ServerError {
                            registry: self.options.host.clone(),
                            repository: repository.to_owned(),
                            status,
                            code,
                        }
                    } else {
                        bad(format!("HTTP {status}{code}"))
                    };
                    return Err(interrupted(error));
                }
            }
            let next = next_link(header(&response, "link"), &self.base);
            let body = read_body(&mut response).map_err(|m| interrupted(bad(m)))?;
            let page_tags = parse_tags_page(&body).map_err(|m| interrupted(bad(m)))?;
            tags.extend(page_tags);
            if tags.len() >= self.options.max_tags {
                let truncated = tags.len() > self.options.max_tags || next.is_some();
                tags.truncate(self.options.max_tags);
                return Ok(Listing { tags, truncated });
            }
            match next {
                Some(Ok(n)) => url = n,
                Some(Err(m)) => return Err(interrupted(bad(m))),
                None => {
                    return Ok(Listing {
                        tags,
                        truncated: false,
                    });
                }
            }
        }
    }

    /// One GET with the auth flow, `429` waits and redirects within the
    /// registry's origin.
    fn get(
        &self,
        url: &str,
        scope: &str,
        repository: &str,
        accept: Option<&str>,
    ) -> Result<(ureq::http::Response<ureq::Body>, u16), Error> {
        let mut url = url.to_owned();
        let mut challenged = false;
        let mut limited = 0;
        let mut redirects = 0;
        loop {
            if let Some(e) = self
                .down
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
            {
                return Err(e.again());
            }
            self.spend(repository)?;
            let mut request = self.agent.get(url.as_str());
            if let Some(accept) = accept {
                request = request.header("Accept", accept);
            }
            let auth = self.authorization(scope);
            let sent_basic = auth.as_deref().is_some_and(|a| a.starts_with("Basic "));
            if let Some(auth) = &auth {
                request = request.header("Authorization", auth);
            }
            let response = match request.call() {
                Ok(r) => r,
                Err(e) => {
                    self.count("tags", "error");
                    let error = self.transport(&e);
                    *self
                        .down
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.again());
                    return Err(error);
                }
            };
            let status = response.status().as_u16();
            self.count("tags", &status.to_string());
            if status == 401 && !challenged {
                challenged = true;
                let challenge =
                    parse_challenge(header(&response, "www-authenticate").unwrap_or(""));
                if self.answer_challenge(&challenge, scope, repository, sent_basic)? {
                    continue;
                }
            }
            if status == 429 && limited < MAX_RATE_LIMITED {
                limited += 1;
                std::thread::sleep(retry_after(
                    header(&response, "retry-after"),
                    self.options.timeout,
                ));
                continue;
            }
            if status == 429 {
                return Err(Error::RateLimited {
                    registry: self.options.host.clone(),
                    repository: repository.to_owned(),
                });
            }
            if is_redirect(status) {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(
                        self.refused(repository, format!("more than {MAX_REDIRECTS} redirects"))
                    );
                }
                url = redirect_target(header(&response, "location"), &self.base)
                    .map_err(|m| self.refused(repository, m))?;
                continue;
            }
            return Ok((response, status));
        }
    }

    /// The manifest `reference` (a tag or a digest) of `repository`, at most
    /// `max` bytes, with the auth flow of [`Registry::list`].
    ///
    /// # Errors
    ///
    /// As for a listing; a body over `max` is `BadResponse`.
    pub fn manifest(&self, repository: &str, reference: &str, max: u64) -> Result<Vec<u8>, Error> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        self.fetch(&url, repository, Some(MANIFEST_TYPES), max)
    }

    /// The blob `digest` of `repository`, at most `max` bytes. The caller
    /// checks the digest.
    ///
    /// # Errors
    ///
    /// As for a listing; a body over `max` is `BadResponse`.
    pub fn blob(&self, repository: &str, digest: &str, max: u64) -> Result<Vec<u8>, Error> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        self.fetch(&url, repository, None, max)
    }

    fn fetch(
        &self,
        url: &str,
        repository: &str,
        accept: Option<&str>,
        max: u64,
    ) -> Result<Vec<u8>, Error> {
        let scope = format!("repository:{repository}:pull");
        let (mut response, status) = self.get(url, &scope, repository, accept)?;
        match status {
            200 => {}
            401 | 403 => {
                return Err(Error::AuthFailed {
                    registry: self.options.host.clone(),
                    repository: repository.to_owned(),
                    status,
                });
            }
            404 => {
                return Err(Error::RepositoryMissing {
                    registry: self.options.host.clone(),
                    repository: repository.to_owned(),
                });
            }
            _ => {
                let code = error_code(&read_body(&mut response).unwrap_or_default());
                return Err(Error::ServerError {
                    registry: self.options.host.clone(),
                    repository: repository.to_owned(),
                    status,
                    code,
                });
            }
        }
        let mut body = Vec::new();
        response
            .body_mut()
            .with_config()
            .limit(max + 1)
            .reader()
            .take(max + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.transport(&ureq::Error::Io(e)))?;
        if body.len() as u64 > max {
            return Err(Error::BadResponse {
                registry: self.options.host.clone(),
                repository: repository.to_owned(),
                message: format!("body over {max} bytes"),
            });
        }
        Ok(body)
    }

    fn authorization(&self, scope: &str) -> Option<String> {
        let tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, until)) = tokens.get(scope)
            && *until > Instant::now()
        {
            return Some(format!("Bearer {token}"));
        }
        drop(tokens);
        match self.secret() {
            Secret::Bearer(t) => Some(format!("Bearer {t}")),
            Secret::Basic(b) if self.basic.load(Ordering::Relaxed) => Some(format!("Basic {b}")),
            Secret::Basic(_) | Secret::None => None,
        }
    }

    /// Answers a `401`'s challenge; true when the request should be sent
    /// again (once per request: the caller asks at most once).
    fn answer_challenge(
        &self,
        challenge: &Challenge,
        scope: &str,
        repository: &str,
        sent_basic: bool,
    ) -> Result<bool, Error> {
        let (realm, service, wanted_scope) = match challenge {
            Challenge::Basic => {
                // Sent again with the credentials unless they were already
                // sent (concurrent listings each see the challenge once).
                let has = matches!(self.secret(), Secret::Basic(_));
                self.basic.store(true, Ordering::Relaxed);
                return Ok(has && !sent_basic);
            }
            Challenge::Other => return Ok(false),
            Challenge::Bearer {
                realm,
                service,
                scope: wanted,
            } => (realm, service, wanted.as_deref().unwrap_or(scope)),
        };
        // The realm is judged before anything is sent to it, credentials
        // or not: a realm we would not trust with them is not asked at all.
        realm_allowed(realm, self.origin.as_ref(), self.options.plain_http)
            .map_err(|m| self.refused(repository, m))?;
        self.spend(repository)?;
        let mut request = self.agent.get(realm.as_str());
        if let Some(service) = service {
            request = request.query("service", service);
        }
        request = request.query("scope", wanted_scope);
        match self.secret() {
            Secret::Basic(b) => request = request.header("Authorization", &format!("Basic {b}")),
            Secret::Bearer(t) => request = request.header("Authorization", &format!("Bearer {t}")),
            Secret::None => {}
        }
        let mut response = match request.call() {
            Ok(r) => r,
            Err(e) => {
                self.count("token", "error");
                return Err(self.transport(&e));
            }
        };
        let status = response.status().as_u16();
        self.count("token", &status.to_string());
        if status != 200 {
            return Err(Error::AuthFailed {
                registry: self.options.host.clone(),
                repository: repository.to_owned(),
                status,
            });
        }
        let bad = |message: String| Error::BadResponse {
            registry: self.options.host.clone(),
            repository: repository.to_owned(),
            message: format!("token endpoint: {message}"),
        };
        let body = read_body(&mut response).map_err(bad)?;
        let token = parse_token(&body).map_err(bad)?;
        // `lifetime` is at most an hour; a clock that cannot hold an hour
        // more is an answer we cannot keep, not a panic.
        let until = Instant::now()
            .checked_add(token.lifetime)
            .ok_or_else(|| bad("a token lifetime past the clock's range".to_owned()))?;
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(scope.to_owned(), (token.token, until));
        Ok(true)
    }
}

/// A header's value as text (`None` when absent or not visible ASCII).
fn header<'r>(response: &'r ureq::http::Response<ureq::Body>, name: &str) -> Option<&'r str> {
    response.headers().get(name)?.to_str().ok()
}

fn read_body(response: &mut ureq::http::Response<ureq::Body>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(MAX_BODY)
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    Ok(body)
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

// ---- What the network says, as pure functions (fuzzed: fuzz/checks/registry.rs).

#[derive(serde::Deserialize)]
struct TagsPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// The tags of one `tags/list` page (`{"name":…,"tags":[…]}`; `null` or no
/// `tags` is none).
///
/// # Errors
///
/// A body that is not such a JSON object, in words.
pub fn parse_tags_page(body: &[u8]) -> Result<Vec<String>, String> {
    let page: TagsPage = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(page.tags.unwrap_or_default())
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    /// Any JSON number (or `null`): a lifetime past `u64`, negative or
    /// fractional is read, not refused, and bounded below.
    #[serde(default)]
    expires_in: Option<f64>,
}

/// A bearer token and how long to keep it.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub token: String,
    /// `expires_in` (60 s when absent: Docker's default) less 10 s to renew
    /// early, and within 10 s ..= [`MAX_TOKEN_LIFETIME`].
    pub lifetime: Duration,
}

/// A token endpoint's answer (`token` or `access_token`, `expires_in`).
///
/// # Errors
///
/// A body that is not JSON, or no token in it.
pub fn parse_token(body: &[u8]) -> Result<Token, String> {
    let answer: TokenAnswer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let token = answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "no token in the answer".to_owned())?;
    let max = MAX_TOKEN_LIFETIME.as_secs();
    let expires_in = answer.expires_in.unwrap_or(60.0);
    // NaN and negatives fall to the floor, infinities to the cap; the cast
    // saturates, and the clamp keeps it within the bounds.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a saturating float-to-int cast, clamped right after"
    )]
    let secs = if expires_in.is_nan() {
        20
    } else {
        (expires_in as u64).clamp(20, max + 10)
    };
    Ok(Token {
        token,
        lifetime: Duration::from_secs(secs - 10),
    })
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// Another scheme, or a bearer challenge without a realm.
    Other,
}

/// Reads `Basic …` or `Bearer realm="…",service="…",scope="…"`.
#[must_use]
pub fn parse_challenge(header: &str) -> Challenge {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Challenge::Basic;
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Challenge::Other;
    }
    let mut params = challenge_params(params);
    match params.remove("realm").filter(|r| !r.is_empty()) {
        Some(realm) => Challenge::Bearer {
            realm,
            service: params.remove("service"),
            scope: params.remove("scope"),
        },
        None => Challenge::Other,
    }
}

/// How long a `429` asks to wait: `Retry-After` in seconds (1 s when absent
/// or an HTTP date), at most `cap`.
#[must_use]
pub fn retry_after(header: Option<&str>, cap: Duration) -> Duration {
    header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(cap)
}

/// The `rel="next"` target of a `Link` header: same registry only.
#[must_use]
pub fn next_link(header: Option<&str>, base: &str) -> Option<Result<String, String>> {
    let target = header?.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
    })?;
    Some(within(&target, base).ok_or_else(|| {
        format!(
            "a next page on another host ({})",
            crate::source::sanitize_url(&target)
        )
    }))
}

/// Where a redirect's `Location` leads, when it stays within the registry's
/// origin (a path, or a URL starting with `base/`).
///
/// # Errors
///
/// No `Location`, or one on another host (scheme, host or port), in words.
pub fn redirect_target(location: Option<&str>, base: &str) -> Result<String, String> {
    let location = location
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| "a redirect without a Location".to_owned())?;
    within(location, base).ok_or_else(|| {
        format!(
            "a redirect to another host ({}): only the registry's own host and port are followed",
            crate::source::sanitize_url(location)
        )
    })
}

/// `target` as a URL under `base`: an absolute path (not `//host`) or a URL
/// that starts with `base/`.
fn within(target: &str, base: &str) -> Option<String> {
    if target.starts_with('/') && !target.starts_with("//") {
        Some(format!("{base}{target}"))
    } else if target
        .get(..base.len() + 1)
        .is_some_and(|head| head.eq_ignore_ascii_case(&format!("{base}/")))
    {
        Some(format!("{base}{}", &target[base.len()..]))
    } else {
        None
    }
}

/// Scheme, host and port: what a credential is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub https: bool,
    /// Lower case.
    pub host: String,
    /// The scheme's default when the URL names none.
    pub port: u16,
}

impl Origin {
    /// The origin of an `http://` or `https://` URL (`None` for anything else).
    #[must_use]
    pub fn of(url: &str) -> Option<Origin> {
        let uri: ureq::http::Uri = url.parse().ok()?;
        let https = match uri.scheme_str()? {
            s if s.eq_ignore_ascii_case("https") => true,
            s if s.eq_ignore_ascii_case("http") => false,
            _ => return None,
        };
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority.host().to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Some(Origin { https, host, port })
    }
}

/// Whether the credentials may be sent to a token `realm`: over HTTPS
/// anywhere (its certificate names whom they go to); over plain HTTP only
/// when `plain_http` allows plain HTTP and the realm is the registry's own
/// host and port (`registry`).
///
/// # Errors
///
/// Why the realm is refused, in words (the realm without credentials or query).
pub fn realm_allowed(
    realm: &str,
    registry: Option<&Origin>,
    plain_http: bool,
) -> Result<(), String> {
    let shown = crate::source::sanitize_url(realm);
    let Some(origin) = Origin::of(realm) else {
        return Err(format!(
            "a token realm that is not an http(s) URL ({shown})"
        ));
    };
    if origin.https {
        return Ok(());
    }
    if !plain_http {
        return Err(format!(
            "a token realm over plain HTTP ({shown}) while plain_http is false"
        ));
    }
    if registry != Some(&origin) {
        return Err(format!(
            "a token realm over plain HTTP on another host ({shown}): plain HTTP is used only with the registry's own host and port"
        ));
    }
    Ok(())
}

/// `, CODE` from a distribution error body (`{"errors":[{"code":…}]}`).
#[must_use]
pub fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(|c| format!(", {c}")))
        .unwrap_or_default()
}

/// `realm="…",service="…",scope="…"` as a map (quoted values may hold commas).
fn challenge_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_owned());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Standard base64 with padding (for the basic auth header).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_encode_as_base64() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("ci:s3cret!", "Y2k6czNjcmV0IQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn bearer_challenges_are_read_with_quoted_commas() {
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
    }

    #[test]
    fn token_lifetimes_from_the_network_are_bounded_and_never_overflow() {
        for (body, secs) in [
            (r#"{"token":"t"}"#, 50),
            (r#"{"token":"t","expires_in":null}"#, 50),
            (r#"{"token":"t","expires_in":300}"#, 290),
            (r#"{"token":"t","expires_in":0}"#, 10),
            (r#"{"token":"t","expires_in":-5}"#, 10),
            (r#"{"token":"t","expires_in":12.9}"#, 10),
            (r#"{"token":"t","expires_in":18446744073709551615}"#, 3600),
            (r#"{"access_token":"t","expires_in":1e300}"#, 3600),
        ] {
            let token = parse_token(body.as_bytes()).expect(body);
            assert_eq!(token.lifetime, Duration::from_secs(secs), "{body}");
            assert!(Instant::now().checked_add(token.lifetime).is_some());
        }
        assert!(parse_token(br#"{"token":""}"#).is_err());
        assert!(parse_token(b"[]").is_err());
    }

    #[test]
    fn credentials_go_to_https_realms_and_plain_http_only_on_the_registry_itself() {
        let plain = Origin::of("http://127.0.0.1:5000");
        let tls = Origin::of("https://registry.example");
        for (realm, registry, plain_http, ok) in [
            ("https://auth.example/token", &tls, false, true),
            ("https://127.0.0.1:5001/token", &plain, true, true),
            ("http://127.0.0.1:5000/token", &plain, true, true),
            ("HTTP://127.0.0.1:5000/token", &plain, true, true),
            ("http://127.0.0.1:5001/token", &plain, true, false),
            ("http://127.0.0.2:5000/token", &plain, true, false),
            ("http://registry.example/token", &tls, false, false),
            ("http://registry.example:443/token", &tls, true, false),
            ("http://user:pw@127.0.0.1:5000/token", &plain, true, false),
            ("ftp://127.0.0.1:5000/token", &plain, true, false),
            ("/token", &plain, true, false),
            ("", &plain, true, false),
        ] {
            assert_eq!(
                realm_allowed(realm, registry.as_ref(), plain_http).is_ok(),
                ok,
                "{realm} plain_http={plain_http}"
            );
        }
        let refused =
            realm_allowed("http://u:pw@h:1/t?secret=1", plain.as_ref(), true).expect_err("refused");
        assert!(
            !refused.contains("pw") && !refused.contains("secret"),
            "{refused}"
        );
    }

    #[test]
    fn redirects_are_followed_within_the_registry_origin_only() {
        let base = "http://127.0.0.1:5000";
        for (location, want) in [
            (
                Some("/v2/a/tags/list?n=2"),
                Some("http://127.0.0.1:5000/v2/a/tags/list?n=2"),
            ),
            (
                Some("http://127.0.0.1:5000/v2/b"),
                Some("http://127.0.0.1:5000/v2/b"),
            ),
            (Some("//127.0.0.2:5000/v2/b"), None),
            (Some("http://127.0.0.2:5000/v2/b"), None),
            (Some("http://127.0.0.1:50001/v2/b"), None),
            (Some("http://127.0.0.1:5000@evil/v2/b"), None),
            (Some("https://127.0.0.1:5000/v2/b"), None),
            (Some("v2/b"), None),
            (Some(""), None),
            (None, None),
        ] {
            assert_eq!(
                redirect_target(location, base).ok().as_deref(),
                want,
                "{location:?}"
            );
        }
    }

    #[test]
    fn next_pages_stay_on_the_registry() {
        let base = "http://127.0.0.1:5000";
        let link = |h: &str| next_link(Some(h), base);
        assert_eq!(
            link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#),
            Some(Ok(
                "http://127.0.0.1:5000/v2/a/tags/list?n=2&last=b".to_owned()
            ))
        );
        assert!(matches!(
            link(r#"<http://127.0.0.2:5000/v2/a/tags/list>; rel="next""#),
            Some(Err(_))
        ));
        assert_eq!(link(r#"</v2/a/tags/list>; rel="prev""#), None);
        assert_eq!(next_link(None, base), None);
    }

    #[test]
    fn retry_after_is_capped_by_the_timeout() {
        let cap = Duration::from_secs(3);
        assert_eq!(retry_after(Some("18446744073709551615"), cap), cap);
        assert_eq!(retry_after(Some("2"), cap), Duration::from_secs(2));
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT"), cap),
            Duration::from_secs(1)
        );
        assert_eq!(retry_after(None, cap), Duration::from_secs(1));
    }

    #[test]
    fn challenges_name_their_scheme() {
        assert_eq!(parse_challenge("Basic realm=\"x\""), Challenge::Basic);
        assert_eq!(parse_challenge("Bearer service=\"x\""), Challenge::Other);
        assert_eq!(parse_challenge("Negotiate"), Challenge::Other);
        assert_eq!(
            parse_challenge("bearer realm=\"https://a/t\",scope=\"s\""),
            Challenge::Bearer {
                realm: "https://a/t".to_owned(),
                service: None,
                scope: Some("s".to_owned()),
            }
        );
    }
}
