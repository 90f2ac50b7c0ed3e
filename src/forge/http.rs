//! The forges' one HTTP client: blocking `ureq`, the token read from its file
//! on every request, every request counted, errors classified by status.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;

use super::Error;
use crate::config::ForgeKind;
use crate::metrics::{FORGE_REQUESTS, ForgeRequestLabels};

/// The largest answer read (a page of 100 pull requests is well below).
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// One request a forge implementation makes.
pub struct Call<'a> {
    /// What it does, in words and as the metrics' `op` label
    /// (`list_pulls`, `set_status`, …).
    pub op: &'static str,
    /// The permission it needs, as the forge names it.
    pub permission: &'static str,
    pub method: &'static str,
    /// The path under the API's base URL, query included.
    pub path: String,
    pub body: Option<serde_json::Value>,
    /// `If-None-Match`.
    pub etag: Option<&'a str>,
    /// A `404` means "none" (a commit no pull request merged), not an
    /// unknown repository.
    pub missing_ok: bool,
}

impl<'a> Call<'a> {
    pub fn get(op: &'static str, permission: &'static str, path: String) -> Call<'a> {
        Call {
            op,
            permission,
            method: "GET",
            path,
            body: None,
            etag: None,
            missing_ok: false,
        }
    }

    pub fn send(
        op: &'static str,
        permission: &'static str,
        method: &'static str,
        path: String,
        body: serde_json::Value,
    ) -> Call<'a> {
        Call {
            op,
            permission,
            method,
            path,
            body: Some(body),
            etag: None,
            missing_ok: false,
        }
    }
}

/// A successful answer (2xx or `304`).
pub struct Answer {
    pub status: u16,
    pub etag: Option<String>,
    /// `Link` (GitHub's and Gitea's pages).
    pub link: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json<T: DeserializeOwned>(
        &self,
        forge: ForgeKind,
        op: &'static str,
    ) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Malformed {
            forge: forge.as_str().to_owned(),
            call: op,
            message: e.to_string(),
        })
    }
}

/// The client of one forge API for one repository.
pub struct Http {
    pub kind: ForgeKind,
    base: String,
    token_file: PathBuf,
    pub repository: String,
    agent: ureq::Agent,
    /// Until when the forge asked us not to ask (a rate limit).
    blocked_until: Mutex<Option<Instant>>,
}

impl Http {
    pub fn new(
        kind: ForgeKind,
        base: &str,
        token_file: &Path,
        timeout: Duration,
        repository: &str,
    ) -> Result<Http, Error> {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .http_status_as_error(false)
            // A redirect would carry the token elsewhere: never followed.
            .max_redirects(0)
            .user_agent(concat!("converge/", env!("CARGO_PKG_VERSION")));
        Ok(Http {
            kind,
            base: base.trim_end_matches('/').to_owned(),
            token_file: token_file.to_owned(),
            repository: repository.to_owned(),
            agent: config.build().into(),
            blocked_until: Mutex::new(None),
        })
    }

    fn forge(&self) -> String {
        self.kind.as_str().to_owned()
    }

    /// The request, answered: `None` for a `404` the call allows.
    #[allow(
        clippy::too_many_lines,
        reason = "one request: the rate-limit gate, the token, the send, the classification"
    )]
    pub fn call(&self, call: &Call<'_>) -> Result<Option<Answer>, Error> {
        {
            let mut blocked = self
                .blocked_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match *blocked {
                Some(until) if until > Instant::now() => {
                    return Err(Error::RateLimited {
                        forge: self.forge(),
                        call: call.op,
                        status: 429,
                        wait: until - Instant::now(),
                    });
                }
                Some(_) => *blocked = None,
                None => {}
            }
        }
        let token = crate::secret_file::read(&self.token_file).map_err(|error| Error::Token {
            forge: self.forge(),
            path: self.token_file.clone(),
            error,
        })?;
        let url = format!("{}{}", self.base, call.path);
        let (auth_name, auth_value) = match self.kind {
            ForgeKind::Gitea => ("Authorization", format!("token {token}")),
            ForgeKind::Github => ("Authorization", format!("Bearer {token}")),
            ForgeKind::Gitlab => ("PRIVATE-TOKEN", token),
        };
        let result = match &call.body {
            None => {
                let mut r = match call.method {
                    "DELETE" => self.agent.delete(&url).header(auth_name, &auth_value),
                    _ => self.agent.get(&url).header(auth_name, &auth_value),
                };
                r = r.header("Accept", "application/json");
                if let Some(etag) = call.etag {
                    r = r.header("If-None-Match", etag);
                }
                r.call()
            }
            Some(body) => {
                let r = match call.method {
                    "PATCH" => self.agent.patch(&url),
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.post(&url),
                };
                r.header(auth_name, &auth_value)
                    .header("Accept", "application/json")
                    .header("Content-Type", "application/json")
                    .send(body.to_string())
            }
        };
        let count = |status: String| {
            FORGE_REQUESTS
                .get_or_create(&ForgeRequestLabels {
                    forge: self.forge(),
                    op: call.op.to_owned(),
                    status,
                })
                .inc();
        };
        let mut response = match result {
            Ok(r) => r,
            Err(e) => {
                count("error".to_owned());
                return Err(Error::Unreachable {
                    forge: self.forge(),
                    call: call.op,
                    message: crate::diagnostic::chain(&e),
                });
            }
        };
        let status = response.status().as_u16();
        count(status.to_string());
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = header("etag");
        let link = header("link");
        let retry_after = header("retry-after");
        let reset = header("x-ratelimit-reset").or_else(|| header("ratelimit-reset"));
        let remaining = header("x-ratelimit-remaining").or_else(|| header("ratelimit-remaining"));
        let mut body = Vec::new();
        let read = response
            .body_mut()
            .as_reader()
            .take(MAX_BODY)
            .read_to_end(&mut body);
        if let Err(e) = read {
            return Err(Error::Unreachable {
                forge: self.forge(),
                call: call.op,
                message: format!("the answer was cut: {e}"),
            });
        }
        if (200..300).contains(&status) || status == 304 {
            return Ok(Some(Answer {
                status,
                etag,
                link,
                body,
            }));
        }
        let message = error_message(&body);
        let rate_limited = status == 429
            || (status == 403 && (remaining.as_deref() == Some("0") || retry_after.is_some()));
        if rate_limited {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let wait = retry_wait(retry_after.as_deref(), reset.as_deref(), now);
            *self
                .blocked_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Instant::now().checked_add(wait);
            return Err(Error::RateLimited {
                forge: self.forge(),
                call: call.op,
                status,
                wait,
            });
        }
        Err(match status {
            404 if call.missing_ok => return Ok(None),
            401 => Error::Unauthorized {
                forge: self.forge(),
                call: call.op,
                message,
            },
            403 => Error::Permission {
                forge: self.forge(),
                call: call.op,
                permission: call.permission,
                repository: self.repository.clone(),
                status,
                message,
            },
            404 => Error::NotFound {
                forge: self.forge(),
                call: call.op,
                repository: self.repository.clone(),
            },
            _ => Error::Status {
                forge: self.forge(),
                call: call.op,
                status,
                message,
            },
        })
    }

    /// The request's JSON answer (`None`: a `404` the call allows).
    pub fn json<T: DeserializeOwned>(&self, call: &Call<'_>) -> Result<Option<T>, Error> {
        match self.call(call)? {
            Some(answer) => answer.json(self.kind, call.op).map(Some),
            None => Ok(None),
        }
    }

    /// Like [`Http::json`] for a call that has no "none".
    pub fn must<T: DeserializeOwned>(&self, call: &Call<'_>) -> Result<T, Error> {
        self.json(call)?.ok_or_else(|| Error::NotFound {
            forge: self.forge(),
            call: call.op,
            repository: self.repository.clone(),
        })
    }

    /// Every page of a listing (`page=1..`, `limit`/`per_page` in the path
    /// already), at most `max_pages`.
    pub fn pages<T: DeserializeOwned>(
        &self,
        call: &Call<'_>,
        max_pages: u32,
    ) -> Result<Vec<T>, Error> {
        self.pages_from(call, 1, max_pages)
    }

    /// Like [`Http::pages`], from page `first` (the caller read the ones
    /// before: a listing whose first page was a conditional request).
    pub fn pages_from<T: DeserializeOwned>(
        &self,
        call: &Call<'_>,
        first: u32,
        max_pages: u32,
    ) -> Result<Vec<T>, Error> {
        let mut out = Vec::new();
        for page in first..=max_pages {
            let sep = if call.path.contains('?') { '&' } else { '?' };
            let paged = Call {
                path: format!("{}{sep}page={page}", call.path),
                etag: None,
                body: None,
                ..*call
            };
            let Some(answer) = self.call(&paged)? else {
                break;
            };
            let items: Vec<T> = answer.json(self.kind, call.op)?;
            let more = answer
                .link
                .as_deref()
                .is_some_and(|l| l.contains("rel=\"next\""));
            let empty = items.is_empty();
            out.extend(items);
            if !more || empty {
                break;
            }
        }
        Ok(out)
    }
}

/// The forge's error message: its JSON `message` (or `error`), else the
/// start of the text.
fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in ["message", "error", "error_description"] {
            if let Some(m) = v.get(key).and_then(serde_json::Value::as_str) {
                return super::truncate(m, 300);
            }
        }
    }
    super::truncate(String::from_utf8_lossy(body).trim(), 300)
}

/// How long a rate limit asks to wait: `Retry-After` (seconds), else until
/// `X-RateLimit-Reset` / `RateLimit-Reset` (unix seconds), else a minute;
/// between 1 s and an hour.
#[must_use]
pub fn retry_wait(retry_after: Option<&str>, reset: Option<&str>, now_unix: u64) -> Duration {
    let secs = retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or_else(|| {
            reset
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|at| at.saturating_sub(now_unix))
        })
        .unwrap_or(60);
    Duration::from_secs(secs.clamp(1, 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_are_honoured_from_either_header_and_bounded() {
        assert_eq!(retry_wait(Some("30"), None, 0), Duration::from_secs(30));
        assert_eq!(
            retry_wait(None, Some("1000120"), 1_000_000),
            Duration::from_mins(2)
        );
        assert_eq!(
            retry_wait(Some("30"), Some("1000120"), 1_000_000).as_secs(),
            30
        );
        assert_eq!(retry_wait(None, None, 0), Duration::from_mins(1));
        assert_eq!(retry_wait(Some("999999"), None, 0), Duration::from_hours(1));
        assert_eq!(retry_wait(None, Some("5"), 10), Duration::from_secs(1));
    }

    #[test]
    fn error_messages_come_from_the_json_or_the_text() {
        assert_eq!(
            error_message(br#"{"message":"token does not have at least one of required scope(s): [write:repository]"}"#),
            "token does not have at least one of required scope(s): [write:repository]"
        );
        assert_eq!(error_message(b"  plain\n"), "plain");
    }
}
