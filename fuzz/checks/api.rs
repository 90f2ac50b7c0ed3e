//! The API's path and query handling: any request target (and an
//! `Authorization` header) through the real router over a view with
//! environments. Every answer is a 2xx, 401, 404, 400 or 405; no 5xx
//! (503 only from /ready, which this view is); JSON endpoints answer JSON.
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use converge::api::{Shared, router, token_digest};
use converge::metrics::Metrics;
use converge::status::EnvStatus;
use converge::view::View;
use tower::ServiceExt;

fn status(name: &str, env_type: &str, status: &str) -> (String, Arc<EnvStatus>) {
    let doc = serde_json::json!({
        "name": name, "type": env_type, "pool": "team1", "owner": "jane@example.com",
        "source": "local", "revision": "r1", "ready": status == "Ready", "status": status,
        "expires_at": "2099-01-01T00:00:00Z", "conditions": [], "claim": null,
        "versions": {}, "last_plan": null, "inventory": [], "history": []
    });
    let env = EnvStatus::restored(&serde_json::to_vec(&doc).expect("json")).expect("a detail");
    (name.to_owned(), Arc::new(env))
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    open: axum::Router,
    authed: axum::Router,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let environments: BTreeMap<String, Arc<EnvStatus>> = [
        status("dev-team1-a", "dev", "Ready"),
        status("prod-team1-b", "prod", "Failed"),
        status("stage-x", "stage", "Pending"),
    ]
    .into_iter()
    .collect();
    let no_items: [u8; 0] = [];
    let view = View::new(Arc::new(environments), &no_items, None, &no_items, true, 3);
    let shared = |token: Option<&str>| Shared {
        view: Arc::new(ArcSwap::from_pointee(View::new(
            view.environments.clone(),
            &no_items,
            None,
            &no_items,
            true,
            3,
        ))),
        metrics: Arc::new(Metrics::new()),
        token_digest: token.map(token_digest),
        cors_origins: vec!["https://dash.example.com".to_owned()],
        ready_reason: None,
    };
    Fixture {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime"),
        open: router(shared(None)),
        authed: router(shared(Some("s3cret"))),
    }
});

/// One input: panics when a property does not hold.
pub fn check(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(2, |&b| b == b'\n');
    let target = parts.next().unwrap_or_default();
    let authorization = parts.next();
    let method = match first % 4 {
        0 | 1 => Method::GET,
        2 => Method::HEAD,
        _ => Method::OPTIONS,
    };
    let mut request = Request::builder().method(method.clone()).uri(target);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    if first & 0x10 != 0 {
        request = request
            .header("origin", "https://dash.example.com")
            .header("access-control-request-method", "GET");
    }
    // What hyper would refuse before the router never reaches it.
    let Ok(request) = request.body(Body::empty()) else {
        return;
    };
    let path = request.uri().path().to_owned();
    let fixture = &*FIXTURE;
    let app = if first & 0x20 == 0 {
        fixture.open.clone()
    } else {
        fixture.authed.clone()
    };
    let response = fixture
        .runtime
        .block_on(app.oneshot(request))
        .expect("the router is infallible");
    let code = response.status();
    assert!(
        !code.is_server_error(),
        "{method} {target:?} answered {code}",
        target = String::from_utf8_lossy(target)
    );
    assert!(
        code.is_success()
            || [
                StatusCode::BAD_REQUEST,
                StatusCode::UNAUTHORIZED,
                StatusCode::NOT_FOUND,
                StatusCode::METHOD_NOT_ALLOWED,
            ]
            .contains(&code),
        "{method} {path} answered {code}"
    );
    let json = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if method == Method::GET && (path.starts_with("/api/") || !code.is_success()) {
        assert!(
            json || code.is_success() && method != Method::GET,
            "{path} {code} is not JSON"
        );
        let body = fixture
            .runtime
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .expect("a body");
        let doc: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path} {code}: {e}"));
        if !code.is_success() {
            assert_eq!(doc["status"], code.as_u16(), "{path}");
            assert!(doc["error"].is_string(), "{path}");
        }
    }
}
