//! Pages: state by id and by URL, and adding URLs by hand.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::{self, Principal};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{ApiError, AppState};
use crate::commands::discovery::{Apply, ImportMode, ImportSummary, KnownPages, Origin};
use crate::domain::client::Scope;
use crate::domain::ids::{ClientId, PageId};
use crate::domain::sitemap::Entry;
use crate::domain::url::NormalizedUrl;
use crate::projections::clients as clients_read;
use crate::projections::pages::{self as read, PageRow};

/// A page and its pipeline state.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageView {
    #[serde(flatten)]
    pub page: PageRow,
    pub has_raw_html: bool,
    pub has_markdown: bool,
    pub has_html: bool,
}

impl From<PageRow> for PageView {
    fn from(page: PageRow) -> Self {
        Self {
            has_raw_html: page.content_hash.is_some(),
            has_markdown: page.markdown_hash.is_some(),
            has_html: page.simple_html_hash.is_some(),
            page,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/pages/{id}", tag = "pages", params(("id" = Uuid, Path)),
    responses((status = 200, body = PageView), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// A page's state (master key, or its client's `read` key).
pub async fn get_one(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<PageView>, ApiError> {
    let page = visible_page(&state, &principal, id, Scope::Read).await?;
    Ok(Json(page.into()))
}

/// `?url=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ByUrl {
    /// The page URL, in any spelling that normalizes to it.
    pub url: String,
}

#[utoipa::path(get, path = "/api/v1/clients/{id}/pages/by-url", tag = "pages", params(("id" = Uuid, Path), ByUrl),
    responses((status = 200, body = PageView), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// A page's state by its URL (master key, or the client's `read` key).
pub async fn by_url(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ByUrl>,
) -> Result<Json<PageView>, ApiError> {
    principal.require(client, Scope::Read)?;
    let url = NormalizedUrl::parse(&q.url).map_err(|e| ApiError::InvalidQuery {
        message: format!("url: {e}"),
    })?;
    let id = PageId::derive(ClientId::from_uuid(client), &url);
    let page = read::find(&state.db, id.as_uuid(), state.schedule_min_secs)
        .await?
        .ok_or_else(page_not_found)?;
    Ok(Json(page.into()))
}

/// Body of `POST /api/v1/clients/{id}/pages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddPages {
    /// URLs on the client's domain (at most 10,000).
    #[schema(min_items = 1, max_items = 10000)]
    pub urls: Vec<String>,
}

/// `POST /api/v1/clients/{id}/pages` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddPagesResponse {
    pub message: String,
    pub summary: ImportSummary,
}

#[utoipa::path(post, path = "/api/v1/clients/{id}/pages", tag = "pages", params(("id" = Uuid, Path)), request_body = AddPages,
    responses((status = 200, body = AddPagesResponse), (status = 202, body = AddPagesResponse, description = "added, the pages still being applied: they are readable within seconds"), (status = 403), (status = 404), (status = 422), (status = 409, description = "client_inactive: the client is inactive")),
    security(("api_key" = [])))]
/// Add pages by URL (master key, or the client's `write` key). Known URLs are skipped.
pub async fn add(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<AddPages>,
) -> Result<(axum::http::StatusCode, Json<AddPagesResponse>), ApiError> {
    principal.require(client_id, Scope::Write)?;
    auth::require_active(&state.db, client_id).await?;
    let limit = state.discovery.limits().max_urls;
    if body.urls.is_empty() || body.urls.len() > limit {
        return Err(ApiError::validation(
            "urls",
            format!("must hold 1 to {limit} URLs"),
        ));
    }
    let client = clients_read::find(&state.db, client_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("client not found".into()))?;
    let entries: Vec<(Entry, Option<String>)> = body
        .urls
        .into_iter()
        .map(|loc| {
            (
                Entry {
                    loc,
                    ..Entry::default()
                },
                None,
            )
        })
        .collect();
    let summary = state
        .importer
        .import(
            &client,
            &entries,
            ImportMode {
                origin: Origin::Manual,
                apply: Apply::Publish,
                known: KnownPages::Keep,
                limit,
            },
        )
        .await?;
    Ok((
        super::sitemap::applied_status(summary.applied),
        Json(AddPagesResponse {
            message: format!("{} page(s) added", summary.created),
            summary,
        }),
    ))
}

/// The page, if it exists and the caller may use it with `scope`; one answer (404) for both
/// cases, so a key of another client learns nothing of the page.
async fn visible_page(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    scope: Scope,
) -> Result<PageRow, ApiError> {
    let page = read::find(&state.db, id, state.schedule_min_secs)
        .await?
        .ok_or_else(page_not_found)?;
    principal
        .require(page.client_id, scope)
        .map_err(|_| page_not_found())?;
    Ok(page)
}

fn page_not_found() -> ApiError {
    ApiError::NotFound("page not found".into())
}

/// `POST .../refresh` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshResponse {
    pub message: String,
    /// Pages asked for.
    pub requested: usize,
}

#[utoipa::path(post, path = "/api/v1/pages/{id}/refresh", tag = "pages", params(("id" = Uuid, Path)),
    responses((status = 202, body = RefreshResponse), (status = 403), (status = 404), (status = 409)),
    security(("api_key" = [])))]
/// Fetch a page again now (master key, or its client's `write` key).
pub async fn refresh(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(axum::http::StatusCode, Json<RefreshResponse>), ApiError> {
    let page = visible_page(&state, &principal, id, Scope::Write).await?;
    auth::require_active(&state.db, page.client_id).await?;
    if page.status == "removed" {
        return Err(ApiError::Conflict(
            "the page was removed; add it again to fetch it".into(),
        ));
    }
    let requested = request_refresh(&state, page.client_id, &[page.id]).await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(RefreshResponse {
            message: "refresh requested".into(),
            requested,
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/clients/{id}/refresh", tag = "pages", params(("id" = Uuid, Path)),
    responses((status = 202, body = RefreshResponse), (status = 403), (status = 404), (status = 409, description = "client_inactive: the client is inactive")),
    security(("api_key" = [])))]
/// Fetch every page of a client again now (master key, or the client's `write` key).
pub async fn refresh_client(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client_id): ApiPath<Uuid>,
) -> Result<(axum::http::StatusCode, Json<RefreshResponse>), ApiError> {
    principal.require(client_id, Scope::Write)?;
    clients_read::find(&state.db, client_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("client not found".into()))?;
    auth::require_active(&state.db, client_id).await?;
    let pages = read::refreshable(&state.db, client_id).await?;
    let requested = request_refresh(&state, client_id, &pages).await?;
    let message = format!("refresh requested for {requested} page(s)");
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(RefreshResponse { message, requested }),
    ))
}

async fn request_refresh(
    state: &AppState,
    client: Uuid,
    pages: &[Uuid],
) -> Result<usize, ApiError> {
    use crate::events::Event;
    use crate::events::pages::{PageEvent, RefreshReason, RefreshRequested};
    use crate::infra::publish::{Outgoing, Publisher};
    let publisher = Publisher::new(state.nats.js.clone());
    for chunk in pages.chunks(500) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|p| {
                let payload = PageEvent::RefreshRequested(RefreshRequested {
                    reason: RefreshReason::Manual,
                    reprocess: None,
                });
                Outgoing::unique(Event::new(
                    ClientId::from_uuid(client),
                    Some(PageId::from_uuid(*p)),
                    payload,
                ))
            })
            .collect();
        publisher.publish_all(&batch).await.map_err(|e| {
            tracing::warn!(error = %e, "event store unavailable");
            ApiError::Unavailable("event store unavailable, retry".into())
        })?;
    }
    Ok(pages.len())
}

/// `?format=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContentQuery {
    /// `markdown` (default), `html` (the minimal HTML) or `raw` (the fetched HTML, as UTF-8).
    pub format: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/pages/{id}/content", tag = "pages", params(("id" = Uuid, Path), ContentQuery),
    responses((status = 200, description = "the content", content_type = "text/markdown"), (status = 400), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// A page's Markdown, minimal HTML or raw HTML (master key, or its client's `read` key).
pub async fn content(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ContentQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let page = visible_page(&state, &principal, id, Scope::Read).await?;
    let format = q.format.as_deref().unwrap_or("markdown");
    let (hash, content_type) = match format {
        "markdown" => (&page.markdown_hash, "text/markdown; charset=utf-8"),
        "html" => (&page.simple_html_hash, "text/html; charset=utf-8"),
        "raw" => (&page.content_hash, "text/html; charset=utf-8"),
        other => {
            return Err(ApiError::InvalidQuery {
                message: format!("format {other:?}: expected markdown, html or raw"),
            });
        }
    };
    let hash = hash
        .as_deref()
        .ok_or_else(|| ApiError::NotFound(format!("the page has no {format} content yet")))?;
    let hash = crate::domain::content::ContentHash::parse(hash)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let bytes = state
        .blobs
        .get(&hash)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .ok_or_else(|| {
            ApiError::NotFound(format!("the page's {format} content is no longer stored"))
        })?;
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], bytes).into_response())
}

/// `?after=&limit=` of a page's history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only events after this stream sequence (the previous page's `next_after`).
    #[serde(default)]
    pub after: u64,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/pages/{id}/events", tag = "pages", params(("id" = Uuid, Path), HistoryQuery),
    responses((status = 200, body = crate::commands::event_log::HistoryPage), (status = 404), (status = 503)),
    security(("api_key" = [])))]
/// A page's event history, oldest first, read from the PAGES stream (master key, or its
/// client's `read` key).
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<crate::commands::event_log::HistoryPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidQuery {
            message: "limit must be between 1 and 1000".into(),
        });
    }
    let page = visible_page(&state, &principal, id, Scope::Read).await?;
    let history = crate::commands::event_log::page_events(
        &state.nats.js,
        ClientId::from_uuid(page.client_id),
        PageId::from_uuid(page.id),
        q.after,
        limit,
    )
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(history))
}
