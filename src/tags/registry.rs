//! A small OCI distribution client: tag lists only (`GET /v2/<name>/tags/list`).
//!
//! Blocking, on `ureq` (converge's HTTP client stack already: rustls with
//! aws-lc-rs, `ca_file` replacing the system roots). It follows `Link:
//! <…>; rel="next"` pages (the `n`/`last` parameters the server puts there),
//! answers a `WWW-Authenticate: Bearer realm,service,scope` challenge at the
//! token endpoint (with the basic credentials when configured) and a `Basic`
//! challenge with them, keeps tokens until they expire, waits out a `429`'s
//! `Retry-After` (at most the request timeout, at most 3 times), spends at
//! most `budget` requests per scan, and reads at most `max_tags` tags per
//! repository. Every request is counted in
//! `converge_registry_requests_total{registry,op,status}`. Messages carry the
//! status and the registry's error code, never a credential.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::{REGISTRY_REQUESTS, RegistryRequestLabels};

/// Bodies above this are refused (a page of 1,000 tags is ~30 KiB).
const MAX_BODY: u64 = 8 * 1024 * 1024;
/// At most this many `429`s are waited out per request.
const MAX_RATE_LIMITED: u32 = 3;

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
    base: String,
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

#[derive(serde::Deserialize)]
struct TagsPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
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
            .user_agent(concat!("converge/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &options.ca_file {
            let pem = std::fs::read(ca).map_err(|error| Error::CaFile {
                registry: options.host.clone(),
                path: ca.clone(),
                error,
            })?;
            config = config.tls_config(crate::client::trusting(&pem));
        }
        let scheme = if options.plain_http { "http" } else { "https" };
        Ok(Registry {
            base: format!("{scheme}://{}", options.host),
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
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|error| Error::Credentials {
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
            let (mut response, status) = self.get(&url, &scope, repository).map_err(interrupted)?;
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
                    let code = error_code(&mut response);
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
            let next = next_link(&response, &self.base);
            let body = read_body(&mut response).map_err(|m| interrupted(bad(m)))?;
            let parsed: TagsPage =
                serde_json::from_slice(&body).map_err(|e| interrupted(bad(e.to_string())))?;
            tags.extend(parsed.tags.unwrap_or_default());
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

    /// One GET with the auth flow and `429` waits.
    fn get(
        &self,
        url: &str,
        scope: &str,
        repository: &str,
    ) -> Result<(ureq::http::Response<ureq::Body>, u16), Error> {
        let mut challenged = false;
        let mut limited = 0;
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
            let mut request = self.agent.get(url);
            if let Some(auth) = self.authorization(scope) {
                request = request.header("Authorization", &auth);
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
                let header = response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                if self.answer_challenge(&header, scope, repository)? {
                    continue;
                }
            }
            if status == 429 && limited < MAX_RATE_LIMITED {
                limited += 1;
                let wait = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(Duration::from_secs(1), Duration::from_secs)
                    .min(self.options.timeout);
                std::thread::sleep(wait);
                continue;
            }
            if status == 429 {
                return Err(Error::RateLimited {
                    registry: self.options.host.clone(),
                    repository: repository.to_owned(),
                });
            }
            return Ok((response, status));
        }
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

    /// Answers a `401`'s challenge; true when the request should be sent again.
    fn answer_challenge(&self, header: &str, scope: &str, repository: &str) -> Result<bool, Error> {
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let has = matches!(self.secret(), Secret::Basic(_));
            let first = !self.basic.swap(true, Ordering::Relaxed);
            return Ok(has && first);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Ok(false);
        }
        let params = challenge_params(params);
        let Some(realm) = params.get("realm") else {
            return Ok(false);
        };
        let mut query: Vec<(String, String)> = Vec::new();
        if let Some(service) = params.get("service") {
            query.push(("service".to_owned(), service.clone()));
        }
        let wanted_scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| scope.to_owned());
        query.push(("scope".to_owned(), wanted_scope));
        self.spend(repository)?;
        let mut request = self.agent.get(realm.as_str());
        for (k, v) in &query {
            request = request.query(k, v);
        }
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
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("no token in the answer".to_owned()))?;
        // Docker's default lifetime is 60 s; renew 10 s early.
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(60).max(20) - 10);
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(scope.to_owned(), (token, Instant::now() + lifetime));
        Ok(true)
    }
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

/// `, CODE` from a distribution error body (`{"errors":[{"code":…}]}`).
fn error_code(response: &mut ureq::http::Response<ureq::Body>) -> String {
    let Ok(body) = read_body(response) else {
        return String::new();
    };
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(|c| format!(", {c}")))
        .unwrap_or_default()
}

/// The `rel="next"` target of a `Link` header: same registry only.
fn next_link(
    response: &ureq::http::Response<ureq::Body>,
    base: &str,
) -> Option<Result<String, String>> {
    let header = response.headers().get("link")?.to_str().ok()?;
    let target = header.split(',').find_map(|part| {
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
    Some(if target.starts_with('/') {
        Ok(format!("{base}{target}"))
    } else if target.starts_with(&format!("{base}/")) {
        Ok(target)
    } else {
        Err(format!(
            "a next page on another host ({})",
            crate::source::sanitize_url(&target)
        ))
    })
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
}
