//! The routes: metrics, health checks, the dashboard page and the admin API.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use midge_broker::admin::{Admin, AdminError};

/// The dashboard page, served at `/`.
const DASHBOARD: &str = include_str!("../assets/dashboard.html");

/// Items per page when a request does not say.
const DEFAULT_LIMIT: usize = 100;
/// The most items one page holds.
const MAX_LIMIT: usize = midge_broker::admin::MAX_PAGE;

/// The peer of the connection a request came on, put in each request's extensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// What the handlers share.
pub(crate) struct AppState {
    pub(crate) admin: Admin,
    /// SHA-256 of the token: compared in constant time, and of one length whatever the
    /// token's, so that neither its bytes nor its length leak through timing.
    pub(crate) token: Option<[u8; 32]>,
    pub(crate) allow_remote: bool,
    pub(crate) metrics: crate::metrics::MetricsCache,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("token", &self.token.map(|_| "<redacted>"))
            .field("allow_remote", &self.allow_remote)
            .finish_non_exhaustive()
    }
}

pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// An error answer: its status and `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }

    fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }

    fn bad_request(what: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<AdminError> for ApiError {
    fn from(err: AdminError) -> Self {
        Self::bad_request(err.to_string())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(err: QueryRejection) -> Self {
        Self::bad_request(err.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(err: PathRejection) -> Self {
        Self::new(err.status(), err.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(err: BytesRejection) -> Self {
        Self::new(err.status(), err.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .route("/broker", get(broker))
        .route("/clients", get(clients))
        .route("/clients/{id}", get(client))
        .route("/clients/{id}/kick", post(kick))
        .route("/kick", post(kick_by_query))
        .route("/retained", get(retained).delete(delete_retained))
        .route("/subscriptions", get(subscriptions))
        .route("/publish", post(publish))
        .route("/bridges", get(bridges))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .nest("/api/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this endpoint does not answer that method",
    )
}

/// The admin API's gate: a configured token, a loopback peer (unless remote clients are
/// allowed), and `Authorization: Bearer <token>`.
async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.token else {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "the admin API is off: set [http] token or token_file",
        )
        .into_response();
    };
    let loopback = request
        .extensions()
        .get::<Peer>()
        .is_some_and(|peer| peer.0.ip().is_loopback() || is_mapped_loopback(peer.0));
    if !loopback && !state.allow_remote {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "the admin API answers this machine only: set [http] api_allow_remote = true to open it to the network",
        )
        .into_response();
    }
    let given = bearer(request.headers()).map(digest);
    let matches = given.is_some_and(|given| bool::from(given.ct_eq(expected)));
    if !matches {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            if given.is_none() {
                "this endpoint needs an Authorization: Bearer header with the API token"
            } else {
                "wrong API token"
            },
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    next.run(request).await
}

/// An IPv4 loopback peer seen on a dual-stack IPv6 socket (`::ffff:127.0.0.1`).
fn is_mapped_loopback(peer: SocketAddr) -> bool {
    match peer {
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some_and(|ip| ip.is_loopback()),
        SocketAddr::V4(_) => false,
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // The page's own inline script and style, and requests to this origin: nothing
            // else runs, loads or frames it.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                 base-uri 'none'; form-action 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        DASHBOARD,
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.text(&state.admin).await {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            tracing::error!(%err, "cannot render the metrics");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot render the metrics",
            )
            .into_response()
        }
    }
}

async fn health() -> &'static str {
    "ok"
}

async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    if state.admin.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn broker(State(state): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({
        "info": state.admin.info(),
        "stats": state.admin.stats(),
        "bridges": state.admin.bridges(),
    }))
    .into_response()
}

/// `GET /api/v1/bridges`: each bridge, whether it is connected, and its counters.
async fn bridges(State(state): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({ "bridges": state.admin.bridges() })).into_response()
}

/// `?after=…&limit=…`, and `filter` where a list may be filtered.
#[derive(Debug, Deserialize)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
    filter: Option<String>,
}

impl Page {
    fn limit(&self) -> ApiResult<usize> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(limit @ 1..=MAX_LIMIT) => Ok(limit),
            Some(_) => Err(ApiError::bad_request(format!(
                "limit must be from 1 to {MAX_LIMIT}"
            ))),
        }
    }
}

async fn clients(
    State(state): State<Arc<AppState>>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(page) = page?;
    let limit = page.limit()?;
    Ok(Json(state.admin.clients(page.after.as_deref(), limit)?).into_response())
}

async fn client(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Path(id) = id?;
    match state.admin.client(&id) {
        Some(detail) => Ok(Json(detail).into_response()),
        None => Err(ApiError::not_found(format!(
            "no client {id:?} is connected"
        ))),
    }
}

/// `POST /api/v1/kick?client_id=ID`: the client id in the query, for ids a path cannot carry
/// through a browser (`.` and `..`, which URL resolution removes).
async fn kick_by_query(
    State(state): State<Arc<AppState>>,
    query: Result<Query<KickQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(KickQuery { client_id }) = query?;
    kick_client(&state, &client_id)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KickQuery {
    client_id: String,
}

async fn kick(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let Path(id) = id?;
    kick_client(&state, &id)
}

fn kick_client(state: &AppState, id: &str) -> ApiResult<StatusCode> {
    if state.admin.kick(id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no client {id:?} is connected"
        )))
    }
}

async fn retained(
    State(state): State<Arc<AppState>>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(page) = page?;
    let limit = page.limit()?;
    let topics = state
        .admin
        .retained(page.filter.as_deref(), page.after.as_deref(), limit)?;
    Ok(Json(topics).into_response())
}

#[derive(Debug, Deserialize)]
struct TopicQuery {
    topic: String,
}

async fn delete_retained(
    State(state): State<Arc<AppState>>,
    query: Result<Query<TopicQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let Query(TopicQuery { topic }) = query?;
    if state.admin.delete_retained(&topic)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no retained message on {topic:?}"
        )))
    }
}

async fn subscriptions(
    State(state): State<Arc<AppState>>,
    page: Result<Query<Page>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(page) = page?;
    let limit = page.limit()?;
    let subscriptions =
        state
            .admin
            .subscriptions(page.filter.as_deref(), page.after.as_deref(), limit)?;
    Ok(Json(subscriptions).into_response())
}

/// `POST /api/v1/publish`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    topic: String,
    payload: String,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
}

async fn publish(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body?;
    let request: PublishRequest = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad_request(format!("invalid request body: {err}")))?;
    let sessions = state.admin.publish(
        &request.topic,
        Bytes::from(request.payload),
        request.qos,
        request.retain,
    )?;
    Ok(Json(serde_json::json!({ "sessions": sessions })).into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use axum::body::Body;
    use tower_service::Service;

    use super::*;

    const TOKEN: &str = "a-token";

    /// The API's answer to `GET /api/v1/broker` with the token from `peer` (none: no peer
    /// known).
    async fn status_from(router: &mut Router, peer: Option<&str>) -> StatusCode {
        let mut request = Request::builder()
            .uri("/api/v1/broker")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        if let Some(peer) = peer {
            request.extensions_mut().insert(Peer(peer.parse().unwrap()));
        }
        router.call(request).await.unwrap().status()
    }

    /// The loopback rule on the peer's address alone, without a network: IPv4 and IPv6
    /// loopback, and IPv4 loopback seen on a dual-stack socket, are this machine.
    #[tokio::test]
    async fn the_api_answers_loopback_peers_only_unless_allowed() {
        let broker = midge_broker::Broker::builder()
            .bind("127.0.0.1:0".parse().unwrap())
            .start()
            .await
            .unwrap();
        for allow_remote in [false, true] {
            let state = Arc::new(AppState {
                admin: broker.admin(),
                token: Some(digest(TOKEN)),
                allow_remote,
                metrics: crate::metrics::MetricsCache::new(
                    Duration::from_secs(1),
                    Arc::new(AtomicU64::new(0)),
                ),
            });
            let mut router = router(state, 1024);
            let remote = if allow_remote {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            for (peer, expected) in [
                (Some("127.0.0.1:40000"), StatusCode::OK),
                (Some("127.1.2.3:40000"), StatusCode::OK),
                (Some("[::1]:40000"), StatusCode::OK),
                (Some("[::ffff:127.0.0.1]:40000"), StatusCode::OK),
                (Some("10.0.0.1:40000"), remote),
                (Some("[::ffff:10.0.0.1]:40000"), remote),
                (Some("[2001:db8::1]:40000"), remote),
                (Some("[::]:40000"), remote),
                (None, remote),
            ] {
                assert_eq!(
                    status_from(&mut router, peer).await,
                    expected,
                    "from {peer:?}, api_allow_remote = {allow_remote}"
                );
            }
        }
        broker.shutdown().await;
    }
}
