//! The registry client's pure functions, by table.

use std::time::{Duration, Instant};

use super::auth::base64;
use super::wire::challenge_params;
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
