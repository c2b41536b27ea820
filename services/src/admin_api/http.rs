//! What every handler shares: [`Api`] (the bus, the token rule, the back-off table, the state
//! cache), the middleware of SPEC.md §7.6 (path sanity, then the token rule) and the one helper
//! that sends a typed command to its owning service.
//!
//! Handlers hold no state of their own and cause no effects: they parse, call [`Api::call`], and
//! map the reply. The two exceptions are reads of the apps folder (the original's GET routes)
//! and the upload file of a deploy (written atomically under `runtime/uploads/`, then handed to
//! the deployer).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use broker::{Bus, BusClientError};
use bus_schema::sections::ComposePolicy;
use bus_schema::{BusError, ErrorCode, Reply, ServiceName, Topic, Verb};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::auth::{Backoff, TokenRule};
use crate::ctx::Paths;

/// The token header of the original API (header names are case-insensitive).
pub const TOKEN_HEADER: &str = "x-api-token";
/// The original's 403 body for a weak token.
pub const WEAK_TOKEN_ERROR: &str =
    "Your API token is not strong enough. Set a strong API token and restart the API";
/// How long a command may take before the API answers 503.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Deploys and imports unpack archives: they get longer.
pub const LONG_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Event streams served at once.
pub const MAX_EVENT_STREAMS: usize = 16;
/// Paths served without a token (the API description holds no secret).
pub const PUBLIC_PATHS: &[&str] = &["/openapi.json"];

/// Request counters, reported by the service's `status` command.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub unauthorized: AtomicU64,
    pub throttled: AtomicU64,
    pub weak_token_refusals: AtomicU64,
}

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    pub bus: Bus,
    pub paths: Paths,
    pub token: Arc<RwLock<TokenRule>>,
    pub backoff: Arc<Mutex<Backoff>>,
    /// Latest retained state per `service` or `service/item` (a cache of `iohub/state/#`).
    pub states: Arc<RwLock<BTreeMap<String, Value>>>,
    pub stats: Arc<Stats>,
    pub event_streams: Arc<Semaphore>,
    /// What a deployed compose may ask of the host (`IOHUBOS_ADMIN_API_COMPOSE_POLICY`).
    pub compose_policy: Arc<RwLock<ComposePolicy>>,
    /// Cancelled when the listener closes: event streams end.
    pub closing: CancellationToken,
}

/// Why a command got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl IntoResponse for Unavailable {
    fn into_response(self) -> Response {
        let mut r = ErrorBody::new(self.0).into_response(StatusCode::SERVICE_UNAVAILABLE);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        r
    }
}

/// The one JSON error body of the API (`#/components/schemas/Error` of the document):
/// `{"error"}` as the original sent it, plus what the owning service said (`detail`, its
/// messages, on `/v1`; `errors`, the structured errors, on `/v2`). Sent as `application/json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<BusError>,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: error.into(),
            ..ErrorBody::default()
        }
    }

    pub fn with_detail(mut self, detail: Vec<String>) -> ErrorBody {
        self.detail = detail;
        self
    }

    pub fn with_errors(mut self, errors: &[BusError]) -> ErrorBody {
        self.errors = errors.to_vec();
        self
    }

    pub fn into_response(self, status: StatusCode) -> Response {
        (status, Json(self)).into_response()
    }
}

/// A text answer of the original (`Deployed`, `Invalid app name`, `Unauthorized`, ...), sent
/// as `text/plain` (Express sent these as `text/html`; nothing here is HTML).
pub fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// The largest body of a request, on every route but the deploy upload (body-parser's default
/// in the original).
pub const BODY_LIMIT_BYTES: usize = 100 * 1024;

/// 413, the one answer to a body over its route's limit, whichever way it is noticed (a
/// `Content-Length` over the limit before the handler runs, or a body that grows past it while
/// an extractor reads it).
pub fn payload_too_large(limit: usize) -> Response {
    ErrorBody::new(format!("the request body is larger than {limit} bytes"))
        .into_response(StatusCode::PAYLOAD_TOO_LARGE)
}

/// An extractor's refusal of a body: 413 when it was too large, else 400 with the reason.
pub fn body_rejection(status: StatusCode, reason: String, limit: usize) -> Response {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return payload_too_large(limit);
    }
    ErrorBody::new("the request body does not parse")
        .with_detail(vec![reason])
        .into_response(StatusCode::BAD_REQUEST)
}

/// Middleware of one route: a declared `Content-Length` over `limit` is refused with 413 before
/// the handler runs, whether or not the handler reads a body (the same oversized body gets the
/// same answer on every route); the handler's extractors enforce the same limit on a body
/// without a length ([`axum::extract::DefaultBodyLimit`], set next to this layer).
pub async fn limit_body(limit: usize, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return payload_too_large(limit);
    }
    next.run(req).await
}

impl Api {
    pub fn new(bus: Bus, paths: Paths, closing: CancellationToken) -> Api {
        Api {
            bus,
            paths,
            token: Arc::default(),
            backoff: Arc::default(),
            states: Arc::default(),
            stats: Arc::default(),
            event_streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
            compose_policy: Arc::default(),
            closing,
        }
    }

    /// The cache key of a state topic.
    pub fn state_key(service: ServiceName, item: Option<&str>) -> String {
        match item {
            Some(item) => format!("{service}/{item}"),
            None => service.to_string(),
        }
    }

    /// Send `verb` with `body` to `service` and wait for its reply. A service that never
    /// published its state is not running in this daemon: 503 at once instead of a timeout.
    pub async fn call(
        &self,
        service: ServiceName,
        verb: Verb,
        body: Value,
        timeout: Duration,
    ) -> Result<Reply, Unavailable> {
        let known = read(&self.states).contains_key(&Api::state_key(service, None));
        if !known {
            return Err(Unavailable(format!(
                "the {service} service is not running in this iohubd (no {} published); \
                 `{verb}` cannot be served",
                Topic::state(service)
            )));
        }
        match self.bus.request(service, verb, body, timeout).await {
            Ok(reply) => Ok(reply),
            Err(BusClientError::Timeout(..)) => Err(Unavailable(format!(
                "the {service} service did not answer `{verb}` within {} s \
                 (it may not implement it in this build)",
                timeout.as_secs()
            ))),
            Err(e) => Err(Unavailable(format!("bus: {e}"))),
        }
    }
}

/// Read a lock, ignoring poisoning (no user code runs under these locks).
pub fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

pub fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The messages of a reply's errors, for the `detail` of an error body.
pub fn detail(errors: &[BusError]) -> Vec<String> {
    errors.iter().map(|e| e.to_string()).collect()
}

/// The HTTP status of a refused command (the first error decides).
pub fn status_of(errors: &[BusError]) -> StatusCode {
    match errors.first().map(|e| e.code) {
        Some(ErrorCode::UnknownVariable | ErrorCode::NotFound) => StatusCode::NOT_FOUND,
        Some(ErrorCode::Unauthorized) => StatusCode::FORBIDDEN,
        Some(ErrorCode::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
        Some(ErrorCode::Timeout) => StatusCode::GATEWAY_TIMEOUT,
        Some(ErrorCode::Io | ErrorCode::Panic | ErrorCode::Internal) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

/// A v2 error body: a summary and every problem.
pub fn v2_error(status: StatusCode, message: impl Into<String>, errors: &[BusError]) -> Response {
    ErrorBody::new(message)
        .with_errors(errors)
        .into_response(status)
}

/// Whether `path` percent-decodes to UTF-8 the way `decodeURIComponent` accepts.
pub fn path_decodes(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) => out.push(b),
                None => return false,
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).is_ok()
}

/// The middleware of every request, in the original's order: path sanity (400), then the token
/// rule: a locked-out client gets 429 with `Retry-After` before anything is checked; a weak
/// token 403 with the reason; a missing or wrong `X-API-Token` 401 (a wrong one counts as a
/// failure towards the back-off, a missing one does not).
pub async fn guard(
    State(api): State<Api>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    api.stats.requests.fetch_add(1, Ordering::Relaxed);
    if !path_decodes(req.uri().path()) {
        return text(StatusCode::BAD_REQUEST, "Bad Request");
    }
    if PUBLIC_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let ip = peer.ip();
    let now = tokio::time::Instant::now();
    if let Some(wait) = lock(&api.backoff).locked(ip, now) {
        api.stats.throttled.fetch_add(1, Ordering::Relaxed);
        return throttled(wait);
    }
    let presented = req.headers().get(TOKEN_HEADER);
    let (weakness, matches) = {
        let rule = read(&api.token);
        let bytes = presented.map(|v| v.as_bytes()).unwrap_or_default();
        (rule.weakness.clone(), rule.matches(bytes))
    };
    if let Some(reason) = weakness {
        api.stats
            .weak_token_refusals
            .fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::FORBIDDEN,
            Json(json!({
                "error": WEAK_TOKEN_ERROR,
                "reason": reason,
                "hint": "set IOHUBOS_ADMIN_API_AUTH_TOKEN to at least 32 characters with a \
                         lowercase letter, an uppercase letter, a digit and a symbol; \
                         iohubd applies it without a restart",
            })),
        )
            .into_response();
    }
    if !matches {
        api.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        // Only a presented token is a guess: a request without one (a browser, a health
        // check, schemathesis's missing-header check) is refused but does not lock the
        // address out.
        if presented.is_none() {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
        let lockout = lock(&api.backoff).fail(ip, now);
        if let Some(wait) = lockout {
            tracing::warn!(client = %ip, wait_secs = wait.as_secs(), "admin API: repeated bad tokens; client throttled");
        }
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    lock(&api.backoff).succeed(ip);
    next.run(req).await
}

fn throttled(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut r = ErrorBody::new(format!(
        "too many failed attempts from this address; retry in {secs} s"
    ))
    .into_response(StatusCode::TOO_MANY_REQUESTS);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The 404 of a path no route serves: `Not Found` below `/v1` and `/v2` like the original;
/// elsewhere the text of Express's default page (`Cannot GET /path`), as text, not HTML.
pub async fn not_found(req: Request) -> Response {
    let path = req.uri().path();
    if path == "/v1" || path.starts_with("/v1/") || path.starts_with("/v2/") {
        return text(StatusCode::NOT_FOUND, "Not Found");
    }
    text(
        StatusCode::NOT_FOUND,
        format!("Cannot {} {path}", req.method()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_like_decode_uri_component() {
        assert!(path_decodes("/v1/app/a%20b"));
        assert!(path_decodes("/v1/app/%C3%A9"));
        assert!(!path_decodes("/v1/app/%"));
        assert!(!path_decodes("/v1/app/%zz"));
        assert!(!path_decodes("/v1/app/%C3"));
    }

    #[test]
    fn refusals_map_to_http_statuses() {
        let e = |code| vec![BusError::new(code, "x")];
        assert_eq!(
            status_of(&e(ErrorCode::UnknownVariable)),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status_of(&e(ErrorCode::InvalidValue)),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(&e(ErrorCode::Io)),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(status_of(&[]), StatusCode::BAD_REQUEST);
    }
}
