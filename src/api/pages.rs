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
    let summary = add_by_hand(&state, &client, body.urls, limit).await?;
    Ok((
        super::sitemap::applied_status(summary.applied),
        Json(AddPagesResponse {
            message: format!("{} page(s) added", summary.created),
            summary,
        }),
    ))
}

/// Adds `urls` as pages of `client`, as given by hand (known ones are left as they are).
async fn add_by_hand(
    state: &AppState,
    client: &clients_read::ClientRow,
    urls: Vec<String>,
    limit: usize,
) -> Result<ImportSummary, ApiError> {
    let entries: Vec<(Entry, Option<String>)> = urls
        .into_iter()
        .map(|loc| {
            let entry = Entry {
                loc,
                ..Entry::default()
            };
            (entry, None)
        })
        .collect();
    let mode = ImportMode {
        origin: Origin::Manual,
        apply: Apply::Publish,
        known: KnownPages::Keep,
        limit,
    };
    Ok(state.importer.import(client, &entries, mode).await?)
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
    let bytes = stored(&state, hash).await?.ok_or_else(|| {
        ApiError::NotFound(format!("the page's {format} content is no longer stored"))
    })?;
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], bytes).into_response())
}

/// A page's content by the hash its row names, if still in the blob store.
async fn stored(state: &AppState, hash: &str) -> Result<Option<Vec<u8>>, ApiError> {
    let hash = crate::domain::content::ContentHash::parse(hash)
        .map_err(|e| ApiError::Internal(e.into()))?;
    state
        .blobs
        .get(&hash)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))
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

/// Body of `POST /api/v1/clients/{id}/pages/convert`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Convert {
    /// A URL on the client's domain.
    pub url: String,
    /// How old a cached conversion may be, in seconds (default: the client's refresh
    /// interval); an older one is fetched again.
    #[schema(minimum = 0)]
    pub max_age_secs: Option<u64>,
    /// How long to wait for a fetch, in seconds, 0 to 60 (default 30): past it the answer is
    /// 202 with the page id, to read later.
    #[schema(minimum = 0, maximum = 60)]
    pub wait_secs: Option<u64>,
}

/// A conversion: the page's Markdown and metadata when ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct Converted {
    pub page_id: Uuid,
    pub url: String,
    /// `ready` (the Markdown is here) or `pending` (still in the pipeline: ask again, or read
    /// the page).
    pub state: String,
    /// Whether the answer came from the cache, without a fetch.
    pub cached: bool,
    pub markdown: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub language: Option<String>,
    /// When the page was last fetched.
    pub last_scraped_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Longest wait a conversion may ask for.
const MAX_CONVERT_WAIT_SECS: u64 = 60;

#[utoipa::path(post, path = "/api/v1/clients/{id}/pages/convert", tag = "pages", params(("id" = Uuid, Path)), request_body = Convert,
    responses((status = 200, body = Converted, description = "the Markdown: from the cache if fresh enough, else just fetched"),
        (status = 202, body = Converted, description = "still in the pipeline after `wait_secs`: ask again, or read the page"),
        (status = 403), (status = 404), (status = 409, description = "the page could not be fetched (removed, blocked by robots.txt, failed), or the client is inactive"),
        (status = 422)),
    security(("api_key" = [])))]
/// A page's Markdown on demand (master key, or the client's `write` key): the cached
/// conversion when it is fresh enough, else the page goes through the pipeline (robots.txt,
/// politeness, change detection: the same rules as every page) and the answer waits for it.
pub async fn convert(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Convert>,
) -> Result<(axum::http::StatusCode, Json<Converted>), ApiError> {
    use axum::http::StatusCode;
    principal.require(client_id, Scope::Write)?;
    let wait = body.wait_secs.unwrap_or(30);
    if wait > MAX_CONVERT_WAIT_SECS {
        return Err(ApiError::validation(
            "wait_secs",
            format!("must be at most {MAX_CONVERT_WAIT_SECS}"),
        ));
    }
    let client = clients_read::find(&state.db, client_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("client not found".into()))?;
    auth::require_active(&state.db, client_id).await?;
    let url =
        NormalizedUrl::parse(&body.url).map_err(|e| ApiError::validation("url", e.to_string()))?;
    let page_id = PageId::derive(ClientId::from_uuid(client_id), &url).as_uuid();
    let max_age = body.max_age_secs.map_or(client.refresh_interval_secs, |s| {
        i64::try_from(s).unwrap_or(i64::MAX)
    });
    let asked_at = chrono::Utc::now();
    let known = read::find(&state.db, page_id, state.schedule_min_secs).await?;
    if let Some(page) = &known
        && page.status != "removed"
        && page.markdown_hash.is_some()
        && page
            .last_scraped_at
            .is_some_and(|t| asked_at - t <= chrono::Duration::seconds(max_age))
    {
        return Ok((StatusCode::OK, Json(converted(&state, page, true).await?)));
    }
    match &known {
        // Known and not fresh enough (or removed): fetch it again.
        Some(page) => {
            request_refresh(&state, client_id, &[page.id]).await?;
        }
        // New: adding it starts its fetch, by the same rules as any page of the client's.
        None => {
            let summary = add_by_hand(&state, &client, vec![url.to_string()], 1).await?;
            if let Some(issue) = summary.error_details.first() {
                return Err(ApiError::validation("url", issue.reason.clone()));
            }
        }
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait);
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        if let Some(page) = read::find(&state.db, page_id, state.schedule_min_secs).await? {
            match conversion_state(&page, asked_at) {
                ConversionState::Ready => {
                    return Ok((StatusCode::OK, Json(converted(&state, &page, false).await?)));
                }
                ConversionState::Failed(why) => return Err(ApiError::Conflict(why)),
                ConversionState::Pending => {}
            }
        }
        if tokio::time::Instant::now() + pause > deadline {
            break;
        }
        // The projection is read again until the fetch shows in it: a point read, at most
        // a few a second.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(500));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Converted {
            page_id,
            url: url.to_string(),
            state: "pending".into(),
            cached: false,
            markdown: None,
            title: None,
            description: None,
            language: None,
            last_scraped_at: None,
        }),
    ))
}

/// Where a page asked for at `asked_at` stands.
enum ConversionState {
    Ready,
    Pending,
    Failed(String),
}

fn conversion_state(page: &PageRow, asked_at: chrono::DateTime<chrono::Utc>) -> ConversionState {
    // The fetch asked for has not been made yet.
    if page.last_attempt_at.is_none_or(|t| t < asked_at) {
        return ConversionState::Pending;
    }
    match page.status.as_str() {
        "removed" | "blocked" | "failed" => ConversionState::Failed(format!(
            "the page could not be fetched ({}): {}",
            page.status,
            page.last_error.as_deref().unwrap_or("no detail")
        )),
        // The same content as the cached conversion.
        "unchanged" if page.markdown_hash.is_some() => ConversionState::Ready,
        // New content: ready once its Markdown is made.
        _ if page.markdown_hash.is_some()
            && page.last_processed_at.is_some_and(|t| t >= asked_at) =>
        {
            ConversionState::Ready
        }
        _ => ConversionState::Pending,
    }
}

async fn converted(state: &AppState, page: &PageRow, cached: bool) -> Result<Converted, ApiError> {
    let markdown = match page.markdown_hash.as_deref() {
        Some(hash) => stored(state, hash)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
        None => None,
    };
    Ok(Converted {
        page_id: page.id,
        url: page.url.clone(),
        state: "ready".into(),
        cached,
        markdown,
        title: page.title.clone(),
        description: page.description.clone(),
        language: page.language.clone(),
        last_scraped_at: page.last_scraped_at,
    })
}

/// Body of `POST /api/v1/clients/{id}/crawl`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartCrawl {
    /// Start pages on the client's domain (default: its home page), at most 100.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Links followed from a start page, 1 to 10 (default 3).
    #[schema(minimum = 1, maximum = 10)]
    pub max_depth: Option<u32>,
    /// Most pages the crawl finds, start pages included, 1 to 50,000 (default 500).
    #[schema(minimum = 1, maximum = 50000)]
    pub max_pages: Option<u32>,
}

#[utoipa::path(post, path = "/api/v1/clients/{id}/crawl", tag = "pages", params(("id" = Uuid, Path)), request_body = StartCrawl,
    responses((status = 202, body = crate::commands::crawl::CrawlStarted, description = "started: its pages go through the pipeline; follow it at /crawls/{run_id}"),
        (status = 403), (status = 404), (status = 409, description = "client_inactive"), (status = 422)),
    security(("api_key" = [])))]
/// Discover a site's pages by following its links (master key, or the client's `write`
/// key): from the start pages, same-site links of every page the scraper fetches become
/// pages (`source: link`) within the depth and page budget, fetched by the client's rules
/// (robots.txt, crawl rate) like every page.
pub async fn start_crawl(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<StartCrawl>,
) -> Result<
    (
        axum::http::StatusCode,
        Json<crate::commands::crawl::CrawlStarted>,
    ),
    ApiError,
> {
    use crate::commands::crawl::{self, CrawlError, CrawlRequest};
    principal.require(client_id, Scope::Write)?;
    let client = clients_read::find(&state.db, client_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("client not found".into()))?;
    auth::require_active(&state.db, client_id).await?;
    let request = CrawlRequest {
        seeds: body.urls,
        max_depth: body.max_depth.unwrap_or(3),
        max_pages: body.max_pages.unwrap_or(500),
    };
    let publisher = crate::infra::publish::Publisher::new(state.nats.js.clone());
    let started = crawl::start(&publisher, &state.db, &client, request)
        .await
        .map_err(|e| match e {
            CrawlError::Invalid { field, message } => ApiError::validation(field, message),
            CrawlError::Publish(e) => ApiError::Unavailable(e.to_string()),
            CrawlError::Db(e) => e.into(),
        })?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(started)))
}

/// A crawl's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct CrawlView {
    pub client_id: Uuid,
    pub run_id: Uuid,
    #[serde(flatten)]
    pub progress: read::CrawlProgress,
}

#[utoipa::path(get, path = "/api/v1/clients/{id}/crawls/{run_id}", tag = "pages", params(("id" = Uuid, Path), ("run_id" = Uuid, Path)),
    responses((status = 200, body = CrawlView), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// Where a crawl stands: its pages, how many were fetched, are live, could not be fetched,
/// and the deepest it went (master key, or the client's `read` key).
pub async fn crawl_progress(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((client_id, run_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<CrawlView>, ApiError> {
    principal.require(client_id, Scope::Read)?;
    let progress = read::crawl_progress(&state.db, client_id, run_id).await?;
    if progress.pages == 0 {
        return Err(ApiError::NotFound(format!("no crawl {run_id}")));
    }
    Ok(Json(CrawlView {
        client_id,
        run_id,
        progress,
    }))
}
