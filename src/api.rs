//! The read-only API: axum, `GET`/`HEAD` only, served from immutable views.
//!
//! Handlers read the latest [`View`] (an `ArcSwap` load: readers never wait on
//! a pass) and mostly return bytes serialized once by the loop. Every other
//! method gets 405 with `Allow: GET, HEAD`. Optional bearer-token auth
//! (constant-time comparison; `/health` and `/ready` stay open) and TLS.
//! Requests are bounded in size and time; responses never contain secrets.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::metrics::Metrics;
use crate::view::View;

/// What the handlers share.
#[derive(Clone)]
pub struct Shared {
    pub view: Arc<ArcSwap<View>>,
    pub metrics: Arc<Metrics>,
    /// SHA-256 of the bearer token, when auth is on.
    pub token_digest: Option<[u8; 32]>,
    /// Origins a browser on another origin may read the API from (CORS);
    /// empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Said by `/ready` beside `ready` (no identities declared, say): the
    /// installation runs, but something stops it from applying any claim.
    pub ready_reason: Option<Arc<str>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("auth", &self.token_digest.is_some())
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a token, for constant-time comparison of equal-length digests.
#[must_use]
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// The router with every endpoint and layer.
pub fn router(shared: Shared) -> Router {
    let origins: Vec<HeaderValue> = shared
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/environments", get(environments))
        .route("/api/v1/environments/{name}", get(environment))
        .route("/api/v1/sources", get(sources))
        .route("/api/v1/plan", get(plan))
        .route("/api/v1/events", get(events))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/", get(page))
        .route("/environments/{name}", get(environment_page))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .layer(middleware::from_fn(read_only))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        // Outside the limits: what they answer is JSON too.
        .layer(middleware::from_fn(json_errors));
    let router = if origins.is_empty() {
        router
    } else {
        // Outermost: a preflight (OPTIONS) is answered before read_only.
        router.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::HEAD])
                .allow_headers([header::AUTHORIZATION]),
        )
    };
    router.with_state(shared)
}

/// Connections the probe listener (`api.probe_listen`) serves at once.
pub const PROBE_MAX_CONNECTIONS: usize = 16;
/// A probe connection silent this long is closed.
pub const PROBE_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The probes alone (`/health`, `/ready`; anything else is 404), for the
/// probe listener: no token, no other endpoint, the same JSON errors.
pub fn probe_router(shared: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(not_found)
        .layer(middleware::from_fn(read_only))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        .layer(middleware::from_fn(json_errors))
        .with_state(shared)
}

/// Every error is a JSON object (`error`, `status`), whoever answered: a
/// handler, an extractor's rejection (a name that is not UTF-8), the body
/// limit (413) or the timeout (408), whose own bodies are plain text.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            "the request body is too large (the API reads no body)".to_owned()
        }
        StatusCode::REQUEST_TIMEOUT => "the request took too long".to_owned(),
        _ if !text.trim().is_empty() => text.trim().to_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let mut json_response = error(status, &message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json_response.headers_mut().append(name, value.clone());
        }
    }
    json_response
}

async fn read_only(request: Request, next: Next) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return next.run(request).await;
    }
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "the API is read-only: GET and HEAD only",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

async fn auth(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let Some(expected) = shared.token_digest else {
        return next.run(request).await;
    };
    if matches!(request.uri().path(), "/health" | "/ready") {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110 §11.1).
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim_start())
        })
        .map(token_digest);
    if given.is_some_and(|g| bool::from(g.ct_eq(&expected))) {
        return next.run(request).await;
    }
    let mut response = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message, "status": status.as_u16() });
    json(
        status,
        Bytes::from(serde_json::to_vec(&body).expect("an error serializes")),
    )
}

fn json(status: StatusCode, body: Bytes) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn health() -> Response {
    json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
}

async fn ready(State(shared): State<Shared>) -> Response {
    if shared.view.load().ready {
        let body = match &shared.ready_reason {
            None => Bytes::from_static(br#"{"status":"ready"}"#),
            Some(reason) => {
                Bytes::from(serde_json::json!({"status": "ready", "reason": &**reason}).to_string())
            }
        };
        json(StatusCode::OK, body)
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: some source has not been read yet, or the first pass is not done",
        )
    }
}

async fn metrics(State(shared): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

/// One page of environments (`limit`, `continue`) that pass every filter;
/// a malformed parameter is a 400 that names it.
async fn environments(
    State(shared): State<Shared>,
    query: Result<Query<crate::view::list::Query>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, &rejection.body_text()),
    };
    let (filter, page) = match query.parse() {
        Ok(parsed) => parsed,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let view = shared.view.load();
    json(
        StatusCode::OK,
        crate::view::list::page(&view, &filter, &page),
    )
}

/// One environment's detail; sharded, a name another member owns is a 404
/// that names the owner.
async fn environment(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    let view = shared.view.load();
    if let Some(e) = view.environments.get(&name) {
        return json(StatusCode::OK, e.body());
    }
    missing(&view, &name)
}

/// The 404 of an environment this replica does not have; sharded, it names
/// the member whose share the name is.
fn missing(view: &View, name: &str) -> Response {
    match view
        .shard
        .as_deref()
        .and_then(|m| Some((m.me(), m.owner(name)?)))
    {
        Some((me, owner)) if owner != me => error(
            StatusCode::NOT_FOUND,
            &format!("no such environment on this replica ({me}): its shard is member {owner}'s"),
        ),
        _ => error(StatusCode::NOT_FOUND, "no such environment"),
    }
}

async fn sources(State(shared): State<Shared>) -> Response {
    json(StatusCode::OK, shared.view.load().sources.clone())
}

async fn plan(State(shared): State<Shared>) -> Response {
    json(StatusCode::OK, shared.view.load().plan.clone())
}

async fn events(State(shared): State<Shared>) -> Response {
    json(StatusCode::OK, shared.view.load().events.clone())
}

/// The `OpenAPI` document, serialized once per process.
async fn openapi() -> Response {
    static BODY: std::sync::LazyLock<Bytes> = std::sync::LazyLock::new(|| {
        Bytes::from(
            serde_json::to_vec(&crate::openapi::document()).expect("the document serializes"),
        )
    });
    json(StatusCode::OK, BODY.clone())
}

/// The status page (`?q=` searches, `?page=` pages; a malformed query is a
/// 400 like the list's).
async fn page(
    State(shared): State<Shared>,
    query: Result<Query<crate::page::Query>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, &rejection.body_text()),
    };
    let view = shared.view.load();
    html(crate::page::status_page(&view, &query, chrono::Utc::now()))
}

/// One environment's page; a name this replica does not have is the same
/// 404 as the JSON detail's.
async fn environment_page(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    let view = shared.view.load();
    match view.environments.get(&name) {
        Some(e) => html(crate::page::environment_page(&view, e, chrono::Utc::now())),
        None => missing(&view, &name),
    }
}

fn html(body: String) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Body::from(body))
        .expect("a static response builds")
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("api: invalid listen address {0:?}")]
    Listen(String),
    #[error("api: cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("api: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "api: cannot listen on {addr}: {reason}; choose another address with --listen or api.listen"
    )]
    Bind {
        addr: String,
        reason: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: String,
    pub tls: Option<crate::config::TlsConfig>,
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// Closes a connection that sends nothing (or not a whole request's
    /// headers) for this long.
    pub idle_timeout: Duration,
}

/// Admits at most `permits` connections at once: one over is closed at
/// once (queueing it would let idle clients hold the queue too), and each
/// admitted one is closed after `idle` without a byte from its client.
#[derive(Debug, Clone)]
struct Limit<A> {
    inner: A,
    permits: Arc<tokio::sync::Semaphore>,
    idle: Duration,
}

impl<A, I, S> axum_server::accept::Accept<I, S> for Limit<A>
where
    A: axum_server::accept::Accept<Limited<I>, S> + Clone + Send + 'static,
    A::Future: Send,
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = std::io::Result<(Self::Stream, Self::Service)>> + Send,
        >,
    >;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let permit = self.permits.clone().try_acquire_owned();
        let inner = self.inner.clone();
        let idle = self.idle;
        Box::pin(async move {
            let Ok(permit) = permit else {
                return Err(std::io::Error::other("too many connections"));
            };
            let limited = Limited {
                inner: stream,
                _permit: permit,
                idle,
                deadline: Box::pin(tokio::time::sleep(idle)),
            };
            inner.accept(limited, service).await
        })
    }
}

/// A connection holding its permit, closed when its client is idle.
struct Limited<I> {
    inner: I,
    _permit: tokio::sync::OwnedSemaphorePermit,
    idle: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Limited<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client sent nothing for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Limited<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises the soft limit of open files to the hard limit; returns the limit.
fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if limit.maximum.is_some()
        && limit.current != limit.maximum
        && setrlimit(Resource::Nofile, raised).is_ok()
    {
        return limit.maximum.unwrap_or(u64::MAX);
    }
    limit.current.unwrap_or(u64::MAX)
}

/// File descriptors kept for the sources, the target and the state store
/// whatever the API's load.
const RESERVED_FDS: u64 = 256;

/// A running server: its address and a handle to stop it gracefully.
#[derive(Debug)]
pub struct Server {
    pub addr: std::net::SocketAddr,
    handle: axum_server::Handle<std::net::SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Stops accepting, lets in-flight requests finish (at most 5 s), waits.
    pub async fn shutdown(self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        let _ = self.task.await;
    }
}

/// Binds and starts serving `router`; returns once it listens.
pub async fn serve(router: Router, options: &ServeOptions) -> Result<Server, ServeError> {
    let addr: std::net::SocketAddr = options
        .listen
        .parse()
        .map_err(|_| ServeError::Listen(options.listen.clone()))?;
    let handle = axum_server::Handle::new();
    let service = router.into_make_service();
    let fds = raise_fd_limit();
    // Every connection is a descriptor: the API gets what the reserve leaves.
    let fitting = usize::try_from(fds.saturating_sub(RESERVED_FDS) / 2).unwrap_or(usize::MAX);
    let max = options.max_connections.min(fitting).max(1);
    if max < options.max_connections {
        tracing::warn!(
            max,
            fds,
            "api.max_connections lowered to fit the open-files limit"
        );
    }
    let limit = Limit {
        inner: axum_server::accept::DefaultAcceptor::new(),
        permits: Arc::new(tokio::sync::Semaphore::new(max)),
        idle: options.idle_timeout,
    };
    let task = match &options.tls {
        None => {
            let mut server = axum_server::bind(addr)
                .handle(handle.clone())
                .acceptor(limit);
            server
                .http_builder()
                .http1()
                .header_read_timeout(Some(options.idle_timeout));
            tokio::spawn(async move { server.serve(service).await })
        }
        Some(tls) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|source| ServeError::Read {
                    path: p.display().to_string(),
                    source,
                })
            };
            let (cert, key) = (read(&tls.cert_file)?, read(&tls.key_file)?);
            let config = axum_server::tls_rustls::RustlsConfig::from_pem(cert, key).await?;
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config).acceptor(limit);
            let mut server = axum_server::bind(addr)
                .handle(handle.clone())
                .acceptor(acceptor);
            server
                .http_builder()
                .http1()
                .header_read_timeout(Some(options.idle_timeout));
            tokio::spawn(async move { server.serve(service).await })
        }
    };
    match handle.listening().await {
        Some(addr) => Ok(Server { addr, handle, task }),
        None => match task.await {
            Ok(Err(e)) => Err(ServeError::Bind {
                addr: addr.to_string(),
                reason: match e.kind() {
                    std::io::ErrorKind::AddrInUse => "the address is in use".to_owned(),
                    std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                    _ => e.to_string(),
                },
                source: e,
            }),
            _ => Err(ServeError::Listen(options.listen.clone())),
        },
    }
}
