//! `/api/v1/environments` over a [`View`]: filters, pages in name order and
//! the opaque `continue` token.
//!
//! Pure: a view and a query in, a body (or an error in words) out. A page
//! is at most `limit` items ([`DEFAULT_LIMIT`] when none is given, never more
//! than [`MAX_LIMIT`]) in name order; when more items match, the body carries
//! a `continue` token that encodes the last name served, not a position, so
//! it stays valid across passes (a new view): the next page starts after
//! that name in whatever view is current then. An unfiltered page costs
//! `O(log n + limit)`: it is a range of the name-ordered map, and each item
//! is its pre-serialized JSON fragment.

use std::ops::Bound;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;

use crate::status::{EnvStatus, Item};
use crate::view::View;

/// Items on a page when the request gives no `limit` (clients of the
/// unpaged list read the first page and its `continue` token).
pub const DEFAULT_LIMIT: usize = 500;
/// The most items on one page: a larger `limit` is served as this.
pub const MAX_LIMIT: usize = 5_000;
/// What a token starts with: its format (`n`: the hex of the last name
/// served), so a token of another format is refused in words.
const TOKEN_FORMAT: char = 'n';

/// The query of `/api/v1/environments`, as given (every parameter a string,
/// so a malformed value is an error naming the parameter, not a rejection).
#[derive(Debug, Default, Deserialize)]
pub struct Query {
    #[serde(rename = "type")]
    pub env_type: Option<String>,
    pub pool: Option<String>,
    pub status: Option<String>,
    pub owner: Option<String>,
    pub service: Option<String>,
    pub version: Option<String>,
    pub expiring_before: Option<String>,
    pub q: Option<String>,
    pub limit: Option<String>,
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
}

/// A query that cannot be served, said in words (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("limit: {0:?} is not a whole number from 1 to {MAX_LIMIT}")]
    Limit(String),
    #[error("continue: {0:?} is not a token this API gave ({1}); start again without it")]
    Continue(String, &'static str),
    #[error("expiring_before: {0:?} is not an RFC 3339 time (like 2026-01-31T12:00:00Z)")]
    ExpiringBefore(String),
}

/// Which environments a list shows (every given filter must hold).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Environment type; `staging` is `stage`. Case-insensitive.
    pub env_type: Option<String>,
    pub pool: Option<String>,
    /// A status word; case-insensitive (an unknown word matches nothing).
    pub status: Option<String>,
    pub owner: Option<String>,
    /// A service the environment runs (claimed or as a dependency).
    pub service: Option<String>,
    /// A resolved tag: of `service` when given, else of any service.
    pub version: Option<String>,
    /// Expires before this time (environments without expiry never match),
    /// kept in the form items carry (`2026-01-31T12:00:00Z`).
    pub expiring_before: Option<String>,
    /// Case-insensitive substring of the name, owner, pool or source, lower-case.
    pub q: Option<String>,
}

/// Where a page starts and how long it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The last name of the page before (from the `continue` token).
    pub after: Option<String>,
    pub limit: usize,
}

impl Query {
    /// The filter and the page this query asks for; an empty parameter
    /// (`?type=`) is no filter.
    ///
    /// # Errors
    /// A `limit` that is not 1 or more, a `continue` token this API did not
    /// give, an `expiring_before` that is not a time.
    pub fn parse(self) -> Result<(Filter, Page), QueryError> {
        let given = |v: Option<String>| v.filter(|v| !v.is_empty());
        let limit = match given(self.limit) {
            None => DEFAULT_LIMIT,
            Some(l) => {
                let digits = l.trim();
                let whole = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
                if !whole || digits.bytes().all(|b| b == b'0') {
                    return Err(QueryError::Limit(l));
                }
                // Past u64, a whole number is only larger than the maximum.
                digits
                    .parse::<usize>()
                    .map_or(MAX_LIMIT, |n| n.min(MAX_LIMIT))
            }
        };
        let after = given(self.continue_token).map(decode).transpose()?;
        let expiring_before = given(self.expiring_before)
            .map(|t| {
                DateTime::parse_from_rfc3339(t.trim())
                    .map(|at| canonical(at.with_timezone(&Utc)))
                    .map_err(|_| QueryError::ExpiringBefore(t))
            })
            .transpose()?;
        let env_type = given(self.env_type).map(|t| {
            if t.eq_ignore_ascii_case("staging") {
                "stage".to_owned()
            } else {
                t
            }
        });
        let filter = Filter {
            env_type,
            pool: given(self.pool),
            status: given(self.status),
            owner: given(self.owner),
            service: given(self.service),
            version: given(self.version),
            expiring_before,
            q: given(self.q).map(|q| q.to_lowercase()),
        };
        Ok((filter, Page { after, limit }))
    }
}

/// A time as items carry it (`expires_at`): UTC, whole seconds, `Z`.
fn canonical(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The token that continues after `name`.
#[must_use]
pub fn encode(name: &str) -> String {
    format!("{TOKEN_FORMAT}{}", crate::hex::encode(name.as_bytes()))
}

/// The name a token continues after. Any token of the format is a position
/// (bytes that are not UTF-8 are read as U+FFFD: still a place in the order).
fn decode(token: String) -> Result<String, QueryError> {
    let Some(hex) = token.strip_prefix(TOKEN_FORMAT) else {
        return Err(QueryError::Continue(token, "an unknown format"));
    };
    let pairs = hex.as_bytes().chunks(2);
    let bytes: Option<Vec<u8>> = if hex.is_empty() || hex.len() % 2 == 1 {
        None
    } else {
        pairs
            .map(|p| {
                let digit = |b: u8| match b {
                    b'0'..=b'9' => Some(b - b'0'),
                    b'a'..=b'f' => Some(b - b'a' + 10),
                    _ => None,
                };
                Some(digit(p[0])? << 4 | digit(p[1])?)
            })
            .collect()
    };
    match bytes {
        Some(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        None => Err(QueryError::Continue(token, "not a position in the list")),
    }
}

/// Whether `hay` contains `needle` (already lower-case), ignoring case;
/// no allocation for ASCII text.
#[must_use]
pub fn contains_ci(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if hay.is_ascii() && needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle.as_bytes());
        return h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    hay.to_lowercase().contains(needle)
}

impl Filter {
    /// Whether no filter is given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether an environment passes every given filter.
    #[must_use]
    pub fn matches(&self, env: &EnvStatus) -> bool {
        let item = &env.item;
        let eq = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(have))
        };
        eq(&self.env_type, &item.env_type)
            && eq(&self.pool, &item.pool)
            && eq(&self.status, item.status.as_str())
            && eq(&self.owner, &item.owner)
            && self.runs(env)
            && self.expiring_before.as_deref().is_none_or(|before| {
                item.expires_at
                    .as_deref()
                    .is_some_and(|at| expires_before(at, before))
            })
            && self.q.as_deref().is_none_or(|q| text_matches(item, q))
    }

    /// The `service` and `version` filters: the service is resolved (at
    /// that tag, when both are given), or some service is at that tag.
    fn runs(&self, env: &EnvStatus) -> bool {
        match (self.service.as_deref(), self.version.as_deref()) {
            (None, None) => true,
            (Some(s), v) => env
                .versions()
                .get(s)
                .is_some_and(|r| v.is_none_or(|v| r.tag == v)),
            (None, Some(v)) => env.versions().values().any(|r| r.tag == v),
        }
    }
}

/// `q`: the name, owner, pool or source contain it.
fn text_matches(item: &Item, q: &str) -> bool {
    [
        Some(item.name.as_str()),
        Some(item.owner.as_str()),
        Some(item.pool.as_str()),
        item.source.as_deref(),
    ]
    .into_iter()
    .flatten()
    .any(|f| contains_ci(f, q))
}

/// Whether an item's `expires_at` is before `before` (canonical form); a
/// time in another form is parsed.
fn expires_before(at: &str, before: &str) -> bool {
    if at.len() == before.len() && at.ends_with('Z') {
        return at < before;
    }
    DateTime::parse_from_rfc3339(at)
        .is_ok_and(|at| canonical(at.with_timezone(&Utc)).as_str() < before)
}

/// One page of the list as the API serves it:
/// `{"shard"?: …, "items": […], "continue"?: "…"}`; `continue` is there
/// only when another environment matches after the page.
#[must_use]
pub fn page(view: &View, filter: &Filter, page: &Page) -> Bytes {
    let from = page
        .after
        .as_deref()
        .map_or(Bound::Unbounded, Bound::Excluded);
    let mut matching = view
        .environments
        .range::<str, _>((from, Bound::Unbounded))
        .map(|(_, e)| e)
        .filter(|e| filter.matches(e));
    let items: Vec<&std::sync::Arc<EnvStatus>> = matching.by_ref().take(page.limit).collect();
    let more = items.len() == page.limit && matching.next().is_some();
    let size: usize = items.iter().map(|e| e.item_json.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 128);
    body.push(b'{');
    if let Some(m) = &view.shard {
        body.extend_from_slice(b"\"shard\":");
        serde_json::to_writer(&mut body, &crate::view::shard_json(m)).expect("a shard serializes");
        body.push(b',');
    }
    body.extend_from_slice(b"\"items\":[");
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&e.item_json);
    }
    body.push(b']');
    if more && let Some(last) = items.last() {
        body.extend_from_slice(b",\"continue\":");
        serde_json::to_writer(&mut body, &encode(&last.item.name)).expect("a string serializes");
    }
    body.push(b'}');
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query as axum reads it: every parameter by name.
    fn query(pairs: &[(&str, &str)]) -> Result<(Filter, Page), QueryError> {
        let mut q = Query::default();
        for (k, v) in pairs {
            let slot = match *k {
                "type" => &mut q.env_type,
                "pool" => &mut q.pool,
                "status" => &mut q.status,
                "owner" => &mut q.owner,
                "service" => &mut q.service,
                "version" => &mut q.version,
                "expiring_before" => &mut q.expiring_before,
                "q" => &mut q.q,
                "limit" => &mut q.limit,
                "continue" => &mut q.continue_token,
                other => panic!("no parameter {other}"),
            };
            *slot = Some((*v).to_owned());
        }
        q.parse()
    }

    #[test]
    fn a_token_is_the_last_name_and_reads_back() {
        let t = encode("dev-team1-x");
        assert!(!t.contains("dev-team1-x"), "opaque: {t}");
        let (_, page) = query(&[("continue", &t)]).expect("valid");
        assert_eq!(page.after.as_deref(), Some("dev-team1-x"));
        assert_eq!(page.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn bad_tokens_limits_and_times_are_refused_in_words() {
        let err = query(&[("continue", "!!!")]).expect_err("another format");
        assert!(
            err.to_string()
                .starts_with("continue: \"!!!\" is not a token this API gave (an unknown format)"),
            "{err}"
        );
        for bad in ["n", "n4", "n4G", "nAB", "n 4"] {
            let err = query(&[("continue", bad)]).expect_err(bad);
            assert!(
                err.to_string().contains("not a position in the list"),
                "{err}"
            );
        }
        let (_, page) = query(&[("continue", "nff61")]).expect("any hex is a position");
        assert_eq!(page.after.as_deref(), Some("\u{fffd}a"));
        for bad in ["0", "-1", "ten", "1.5"] {
            let err = query(&[("limit", bad)]).expect_err(bad);
            assert_eq!(err, QueryError::Limit(bad.to_owned()));
            assert!(err.to_string().contains("from 1 to 5000"), "{err}");
        }
        let err = query(&[("expiring_before", "tomorrow")]).expect_err("time");
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }

    #[test]
    fn a_large_limit_is_served_as_the_maximum_and_empty_parameters_are_no_filter() {
        let (filter, page) = query(&[("limit", "1000000"), ("type", ""), ("q", "")]).expect("ok");
        assert_eq!(page.limit, MAX_LIMIT);
        let (_, page) = query(&[("limit", "100000000000000000000000000000")]).expect("ok");
        assert_eq!(page.limit, MAX_LIMIT);
        assert!(filter.is_empty());
        let (filter, _) = query(&[("type", "Staging"), ("q", "TEAM")]).expect("ok");
        assert_eq!(filter.env_type.as_deref(), Some("stage"));
        assert_eq!(filter.q.as_deref(), Some("team"));
    }

    #[test]
    fn expiry_compares_times_in_any_offset() {
        let (filter, _) = query(&[("expiring_before", "2026-01-02T01:00:00+01:00")]).expect("ok");
        let before = filter.expiring_before.expect("given");
        assert_eq!(before, "2026-01-02T00:00:00Z");
        assert!(expires_before("2026-01-01T23:59:59Z", &before));
        assert!(!expires_before("2026-01-02T00:00:00Z", &before));
        assert!(expires_before("2026-01-02T00:30:00+01:00", &before));
        assert!(!expires_before("not a time", &before));
    }

    #[test]
    fn the_search_ignores_case_without_allocating_for_ascii() {
        assert!(contains_ci("Dev-TEAM1-x", "team1"));
        assert!(!contains_ci("dev", "devx"));
        assert!(contains_ci("ÄBC", "äb"));
        assert!(contains_ci("anything", ""));
    }
}
