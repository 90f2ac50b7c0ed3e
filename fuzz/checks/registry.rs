//! The registry client's reading of what a registry answers
//! (`converge::tags::registry`): the input's first four lines are the
//! `WWW-Authenticate`, `Link`, `Retry-After` and `Location` header values,
//! the rest is a body read both as a tag page and as a token answer. Nothing
//! panics; a token's lifetime is within its bounds and fits the clock; a
//! realm is trusted with credentials only over HTTPS, or over plain HTTP on
//! the registry's own host and port with `plain_http`; a next page and a
//! redirect stay on the registry; a `429`'s wait is at most the cap.
use std::time::{Duration, Instant};

use converge::tags::registry::{
    Challenge, MAX_TOKEN_LIFETIME, Origin, error_code, next_link, parse_challenge, parse_tags_page,
    parse_token, realm_allowed, redirect_target, retry_after,
};

const BASE: &str = "http://127.0.0.1:5000";

/// One input: panics when a property does not hold.
pub fn check(data: &[u8]) {
    let mut parts = data.splitn(5, |b| *b == b'\n');
    let mut next_line = || {
        parts
            .next()
            .and_then(|l| std::str::from_utf8(l).ok())
            .map(|l| l.trim_end_matches('\r'))
    };
    let (authenticate, link, wait, location) = (next_line(), next_line(), next_line(), next_line());
    let body = parts.next().unwrap_or_default();

    let registry = Origin::of(BASE);
    assert!(registry.is_some());
    if let Challenge::Bearer { realm, .. } = parse_challenge(authenticate.unwrap_or_default()) {
        assert!(!realm.is_empty());
        for plain_http in [false, true] {
            if realm_allowed(&realm, registry.as_ref(), plain_http).is_ok() {
                let origin = Origin::of(&realm).expect("an allowed realm is a URL");
                assert!(
                    origin.https || (plain_http && Some(&origin) == registry.as_ref()),
                    "{realm:?} allowed with plain_http={plain_http}"
                );
            }
        }
    }
    if let Some(Ok(next)) = next_link(link, BASE) {
        assert!(next.starts_with(&format!("{BASE}/")), "{next:?}");
        assert_eq!(Origin::of(&next).as_ref(), registry.as_ref(), "{next:?}");
    }
    let cap = Duration::from_secs(3);
    assert!(retry_after(wait, cap) <= cap);
    if let Ok(target) = redirect_target(location, BASE) {
        assert!(target.starts_with(&format!("{BASE}/")), "{target:?}");
    }

    if let Ok(tags) = parse_tags_page(body) {
        assert!(tags.len() <= body.len());
    }
    if let Ok(token) = parse_token(body) {
        assert!(!token.token.is_empty());
        assert!(token.lifetime >= Duration::from_secs(10));
        assert!(token.lifetime <= MAX_TOKEN_LIFETIME);
        assert!(Instant::now().checked_add(token.lifetime).is_some());
    }
    let _ = error_code(body);
}
