//! What the network says, read by pure functions of bytes and header values
//! (fuzzed: `fuzz/checks/registry.rs`): tag pages, token answers,
//! challenges, `Link`, `Location` and `Retry-After`, and the origin a
//! credential is bound to. Numbers from the network go through checked or
//! saturating arithmetic only.

use std::collections::HashMap;
use std::time::Duration;

use super::MAX_TOKEN_LIFETIME;

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
pub(super) fn challenge_params(s: &str) -> HashMap<String, String> {
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
