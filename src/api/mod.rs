//! The HTTP API: axum routers per resource, one error type, request ids, one log line per
//! request, authentication and rate limits on `/api/v1`, and an OpenAPI document generated
//! from the same route definitions (`/api/v1/openapi.json`), so it covers every route.

pub mod auth;
pub mod clients;
pub mod dashboard;
pub mod deadletters;
pub mod docs;
pub mod edge;
pub mod error;
pub mod event_stream;
pub mod export;
pub mod extract;
pub mod health;
pub mod keys;
pub mod pages;
pub mod reprocess;
pub mod server;
pub mod sitemap;
pub mod visits;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request, Response};
use axum::routing::get;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;

use crate::commands::tenants::Tenants;
use crate::infra::nats::Nats;

/// What every handler can reach: cloned for every request, so one `Arc` to share.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services behind [`AppState`].
pub struct Services {
    pub db: PgPool,
    pub nats: Nats,
    pub tenants: Tenants,
    pub auth: Arc<auth::Auth>,
    pub max_body_bytes: usize,
    pub discovery: crate::commands::discovery::Discovery,
    pub importer: crate::commands::discovery::Importer,
    /// The scheduler's shortest refresh interval, for `next_due_at` in page state.
    pub schedule_min_secs: i64,
    /// Page contents (raw HTML, Markdown, rendered HTML).
    pub blobs: crate::infra::blobs::BlobStore,
    /// Visit recording.
    pub visits: crate::commands::visits::Visits,
    /// The built-in edge.
    pub edge: Arc<edge::Edge>,
    /// When `/health` turns degraded.
    pub health: crate::config::HealthThresholds,
    /// Reprocessing runs.
    pub reprocessing: crate::commands::reprocess::Reprocessing,
    /// Whether webhooks may target private addresses (ALLOW_PRIVATE_NETWORKS).
    pub webhook_allow_private: bool,
    /// Timeouts and the connection limit of the HTTP server.
    pub connections: server::ConnectionLimits,
    /// Open Server-Sent Event streams, bounded per key.
    pub event_streams: Arc<event_stream::EventStreams>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(title = "ai-cache", description = "Clean Markdown and minimal HTML of websites for AI crawlers, and who reads them."),
    modifiers(&SecurityAddon),
    tags((name = "clients", description = "Tenants (the original client API)"),
         (name = "keys", description = "Per-client API keys"),
         (name = "sitemaps", description = "Sitemap preview and import (the original sitemap API)"),
         (name = "pages", description = "Pages and their pipeline state"),
         (name = "visits", description = "Visit ingestion (the edge) and bot analytics"),
         (name = "webhooks", description = "Per-client webhooks for page events, and their delivery log"),
         (name = "operations", description = "Health, metrics, dead letters, reprocessing, event history")),
)]
struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "The master key or a per-client key (aic_...); `Authorization: Bearer <key>` works too",
            ))),
        );
    }
}

/// The routes and the OpenAPI document describing exactly them.
pub fn routes(state: AppState) -> (axum::Router, utoipa::openapi::OpenApi) {
    let protected = OpenApiRouter::new()
        .routes(routes!(clients::list, clients::create))
        .routes(routes!(clients::get_one, clients::update, clients::delete))
        .routes(routes!(clients::by_domain))
        .routes(routes!(keys::list, keys::create))
        .routes(routes!(keys::revoke))
        .routes(routes!(sitemap::parse))
        .routes(routes!(sitemap::import))
        .routes(routes!(sitemap::client_pages))
        .routes(routes!(pages::get_one))
        .routes(routes!(pages::by_url))
        .routes(routes!(pages::add))
        .routes(routes!(pages::convert))
        .routes(routes!(pages::start_crawl))
        .routes(routes!(pages::crawl_progress))
        .routes(routes!(pages::refresh))
        .routes(routes!(pages::refresh_client))
        .routes(routes!(pages::content))
        .routes(routes!(pages::events))
        .routes(routes!(event_stream::stream))
        .routes(routes!(reprocess::start, reprocess::list))
        .routes(routes!(reprocess::get_one))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::delete))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(visits::record_one))
        .routes(routes!(visits::stats))
        .routes(routes!(visits::series))
        .routes(routes!(visits::referrals))
        .routes(routes!(visits::list))
        .routes(routes!(auth::whoami))
        .routes(routes!(visits::robots_violations))
        .routes(routes!(deadletters::list))
        .routes(routes!(deadletters::show, deadletters::discard))
        .routes(routes!(deadletters::redrive))
        .routes(routes!(deadletters::redrive_all))
        .merge(
            // A full batch is larger than most requests.
            OpenApiRouter::new()
                .routes(routes!(visits::record_batch))
                .layer(DefaultBodyLimit::max(
                    visits::MAX_BATCH_BODY_BYTES.max(state.max_body_bytes),
                )),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(metrics))
        .merge(protected)
        .split_for_parts();
    let mut openapi = openapi;
    error::document(&mut openapi);
    let document = openapi.clone();
    let router = router
        .route(
            "/api/v1/openapi.json",
            get(move || async move { Json(document) }),
        )
        .merge(
            axum::Router::new()
                .route("/dashboard", get(dashboard::index))
                .route("/dashboard/", get(dashboard::index))
                .route("/dashboard/app.js", get(dashboard::app_js))
                .route("/dashboard/app.css", get(dashboard::app_css))
                .route("/dashboard/chart.umd.min.js", get(dashboard::chart_js))
                .route("/docs", get(docs::page))
                .route("/docs/rapidoc-min.js", get(docs::script))
                // A client's site may have pages of these names: by its Host, they are its.
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    edge::sites_first,
                )),
        )
        .route("/edge/{domain}", get(edge::by_path))
        .route("/edge/{domain}/", get(edge::by_path))
        .route("/edge/{domain}/{*path}", get(edge::by_path))
        .fallback(edge::by_host)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state);
    (router, openapi)
}

/// The whole API with its layers.
pub fn router(state: AppState) -> axum::Router {
    routes(state)
        .0
        .layer(axum::middleware::from_fn(json_newline))
        .layer(axum::middleware::from_fn(log_request))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<Body>| {
                    let id = req
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    tracing::info_span!("request", id = %id)
                })
                .on_request(())
                .on_response(()),
        )
        .layer(axum::middleware::from_fn(server::limit_sizes))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Requests slower than this are logged whatever their answer.
const SLOW_REQUEST: std::time::Duration = std::time::Duration::from_secs(1);

/// Every request is counted and timed in the metrics (`aicache_http_requests_total` and
/// `aicache_http_request_duration_seconds`, by method and status class), and logged in the
/// request's span (its id) with its method, path, status and time: at INFO when it needs a
/// look (an error answer, a slow one, or a change: any method but GET and HEAD), at DEBUG
/// otherwise. A line per successful read cost the page reads and the edge a fifth of their
/// throughput in the bench (BENCHMARKS.md); the metrics say how many there were and how
/// long they took, and `RUST_LOG=ai_cache::api=debug` shows each again.
async fn log_request(request: Request<Body>, next: axum::middleware::Next) -> Response<Body> {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    let method_label: &'static str = match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "other",
    };
    metrics::counter!("aicache_http_requests_total", "method" => method_label, "status" => class)
        .increment(1);
    metrics::histogram!("aicache_http_request_duration_seconds", "method" => method_label)
        .record(elapsed.as_secs_f64());
    let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let read = method == axum::http::Method::GET || method == axum::http::Method::HEAD;
    if status >= 400 || elapsed >= SLOW_REQUEST || !read {
        tracing::info!(status, duration_ms, "{method} {path}");
    } else {
        tracing::debug!(status, duration_ms, "{method} {path}");
    }
    response
}

/// JSON answers end with a newline, so `curl` leaves the prompt on a line of its own.
async fn json_newline(request: Request<Body>, next: axum::middleware::Next) -> Response<Body> {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    use axum::response::IntoResponse;
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Our JSON bodies are in memory already (bounded lists); this only appends to them.
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            let mut text = Vec::with_capacity(bytes.len() + 1);
            text.extend_from_slice(&bytes);
            text.push(b'\n');
            parts.headers.remove(CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(text))
        }
        Err(e) => ApiError::Internal(anyhow::anyhow!("reading a JSON answer: {e}")).into_response(),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
/// Prometheus metrics. The backlog gauges (consumer pending, projection lag, dead letters)
/// are read at each scrape.
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> String {
    health::observe(&state).await;
    crate::telemetry::metrics().render()
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Serves the API on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = state.connections;
    let auth = Arc::clone(&state.auth);
    let sweeper = shutdown.clone();
    let streams = Arc::clone(&state.event_streams);
    let closing = shutdown.clone();
    // Event streams never end by themselves: end them when shutting down, so the graceful
    // shutdown does not wait for them.
    tokio::spawn(async move {
        closing.cancelled().await;
        streams.close();
    });
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = sweeper.cancelled() => return,
                _ = every.tick() => auth.forget_idle(),
            }
        }
    });
    server::serve(listener, router(state), limits, shutdown).await
}
