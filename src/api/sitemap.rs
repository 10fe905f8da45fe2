//! `/api/v1/sitemap/...`: the original system's sitemap endpoints (preview, import, list a
//! client's pages).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Principal;
use super::clients::Paging;
use super::export::{self, FormatParam};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::pages::PageView;
use super::{ApiError, AppState};
use crate::commands::discovery::{
    ImportOptions, ImportSummary, Issue, SitemapImport, import_sitemap, on_domain,
};
use crate::domain::client::Scope;
use crate::domain::sitemap::Entry;
use crate::domain::url::NormalizedUrl;
use crate::projections::{clients as clients_read, pages as pages_read};

/// Deepest index nesting a caller may ask to follow.
const MAX_DEPTH_LIMIT: u32 = 10;
/// URLs shown by a preview.
const PREVIEW: usize = 100;

/// Body of `POST /api/v1/sitemap/parse`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParseRequest {
    /// A sitemap, sitemap index, text sitemap, or a site (`https://example.com/`).
    pub sitemap_url: String,
    /// Follow sitemap indexes (default true).
    pub recursive: Option<bool>,
    /// Index levels to follow (default 3, at most 10).
    #[schema(maximum = 10)]
    pub max_depth: Option<u32>,
}

/// One URL of a preview.
#[derive(Debug, Serialize, ToSchema)]
pub struct UrlView {
    pub loc: String,
    pub lastmod: Option<String>,
    pub priority: Option<String>,
    pub changefreq: Option<String>,
}

impl From<&Entry> for UrlView {
    fn from(e: &Entry) -> Self {
        Self {
            loc: e.loc.clone(),
            lastmod: e.lastmod.clone(),
            priority: e.priority.clone(),
            changefreq: e.changefreq.clone(),
        }
    }
}

/// `POST /api/v1/sitemap/parse` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParseResponse {
    pub sitemap_url: String,
    /// URLs found (up to the safety limit).
    pub total_urls: usize,
    /// The first 100.
    pub urls: Vec<UrlView>,
    /// More URLs than shown, or the safety limit was reached.
    pub truncated: bool,
    /// Sitemap documents read.
    pub sitemaps: Vec<String>,
    /// Sitemaps not read or not followed, and why (the first 100).
    pub errors: Vec<Issue>,
    /// Errors beyond the first 100, counted only.
    pub errors_left_out: usize,
    /// Values dropped and tags ignored (first 100).
    pub warnings: Vec<String>,
}

fn depth(max_depth: Option<u32>) -> Result<u32, ApiError> {
    let d = max_depth.unwrap_or(3);
    if d > MAX_DEPTH_LIMIT {
        return Err(ApiError::validation(
            "max_depth",
            format!("must be at most {MAX_DEPTH_LIMIT}"),
        ));
    }
    Ok(d)
}

#[utoipa::path(post, path = "/api/v1/sitemap/parse", tag = "sitemaps", request_body = ParseRequest,
    responses((status = 200, body = ParseResponse), (status = 403), (status = 422)),
    security(("api_key" = [])))]
/// Preview a sitemap without creating anything (master key, or a `write` key for its own domain).
pub async fn parse(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<ParseRequest>,
) -> Result<Json<ParseResponse>, ApiError> {
    let max_depth = depth(body.max_depth)?;
    if let Principal::Client { client_id, .. } = &principal {
        principal.require(*client_id, Scope::Write)?;
        let client = clients_read::find(&state.db, *client_id)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let url = NormalizedUrl::parse(&body.sitemap_url)
            .map_err(|e| ApiError::validation("sitemap_url", e.to_string()))?;
        on_domain(&url, &client.domain, client.allow_subdomains).map_err(ApiError::Forbidden)?;
    }
    let found = state
        .discovery
        .discover(
            &body.sitemap_url,
            body.recursive.unwrap_or(true),
            max_depth,
            &|_| {},
        )
        .await?;
    Ok(Json(ParseResponse {
        sitemap_url: body.sitemap_url,
        total_urls: found.entries.len(),
        urls: found
            .entries
            .iter()
            .take(PREVIEW)
            .map(|(e, _)| e.into())
            .collect(),
        truncated: found.truncated || found.entries.len() > PREVIEW,
        sitemaps: found.sitemaps,
        errors_left_out: found.issues_left_out,
        errors: found.issues,
        warnings: found.warnings.into_iter().take(100).collect(),
    }))
}

/// Body of `POST /api/v1/sitemap/import`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub client_id: Uuid,
    pub sitemap_url: String,
    /// Follow sitemap indexes (default true).
    pub recursive: Option<bool>,
    /// Index levels to follow (default 3, at most 10).
    #[schema(maximum = 10)]
    pub max_depth: Option<u32>,
    /// Create pages (default true); false reports what an import would do.
    pub create_pages: Option<bool>,
    /// Update the sitemap metadata of known pages (default false: they are skipped).
    pub overwrite: Option<bool>,
}

/// The client an import was for.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientRef {
    pub id: Uuid,
    pub name: String,
    pub domain: String,
}

/// `POST /api/v1/sitemap/import` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResponse {
    pub message: String,
    pub summary: ImportSummary,
    pub client: ClientRef,
    /// Sitemap documents read.
    pub sitemaps: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/sitemap/import", tag = "sitemaps", request_body = ImportRequest,
    responses((status = 200, body = ImportResponse), (status = 202, body = ImportResponse, description = "imported, the pages still being applied: they are readable within seconds"), (status = 403), (status = 404), (status = 422), (status = 409, description = "client_inactive: the client is inactive")),
    security(("api_key" = [])))]
/// Import a sitemap's URLs as pages of a client (master key, or the client's `write` key).
pub async fn import(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<ImportRequest>,
) -> Result<(axum::http::StatusCode, Json<ImportResponse>), ApiError> {
    principal.require(body.client_id, Scope::Write)?;
    let max_depth = depth(body.max_depth)?;
    let client = clients_read::find(&state.db, body.client_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("client not found".into()))?;
    super::auth::require_active(&state.db, body.client_id).await?;
    let options = ImportOptions {
        recursive: body.recursive.unwrap_or(true),
        max_depth,
        create_pages: body.create_pages.unwrap_or(true),
        overwrite: body.overwrite.unwrap_or(false),
    };
    let SitemapImport { summary, sitemaps } = import_sitemap(
        &state.discovery,
        &state.importer,
        &client,
        &body.sitemap_url,
        options,
        &|_| {},
    )
    .await?;
    let message = import_message(&summary);
    let status = applied_status(summary.applied);
    Ok((
        status,
        Json(ImportResponse {
            message,
            summary,
            client: ClientRef {
                id: client.id,
                name: client.name,
                domain: client.domain,
            },
            sitemaps,
        }),
    ))
}

/// Filters of the page list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Default 0.
    #[param(minimum = 0)]
    pub offset: Option<i64>,
    /// Only pages whose raw HTML was (true) or was not yet (false) fetched.
    pub has_content: Option<bool>,
    /// Only pages in this status: `discovered`, `fetched`, `unchanged`, `changed`, `removed`,
    /// `blocked` or `failed`.
    pub status: Option<String>,
    /// Only pages at this stage: `discovered`, `scraped`, `markdown`, `rendered`, `uploaded`,
    /// `live` or `removed`.
    pub stage: Option<String>,
    /// Only pages whose path (and query) starts with this, e.g. `/blog/`.
    pub path: Option<String>,
    /// Only pages whose URL contains this text (any case).
    pub search: Option<String>,
    /// Only pages an AI bot read (true: answered below 400, ever) or never read (false).
    pub read_by_ai: Option<bool>,
    /// `created` (default: oldest first) or `updated` (last changed first).
    pub sort: Option<PageSort>,
}

/// The page list's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PageSort {
    Created,
    Updated,
}

/// The statuses and stages a page can be in (the page list's filters).
const STATUSES: [&str; 7] = [
    "discovered",
    "fetched",
    "unchanged",
    "changed",
    "removed",
    "blocked",
    "failed",
];
const STAGES: [&str; 7] = [
    "discovered",
    "scraped",
    "markdown",
    "rendered",
    "uploaded",
    "live",
    "removed",
];
/// Longest path prefix accepted.
const MAX_PATH_FILTER: usize = 2048;

impl PageQuery {
    /// The filters, checked: a status or stage that does not exist, or a path that is not
    /// one, is refused rather than answered with nothing.
    fn filter(&self) -> Result<pages_read::PageFilter, ApiError> {
        let invalid = |message: String| ApiError::InvalidQuery { message };
        let one_of = |name: &str, value: &Option<String>, allowed: &[&str]| match value {
            Some(v) if !allowed.contains(&v.as_str()) => Err(invalid(format!(
                "{name} must be one of {}, not {v:?}",
                allowed.join(", ")
            ))),
            _ => Ok(value.clone()),
        };
        if let Some(path) = &self.path
            && (!path.starts_with('/') || path.len() > MAX_PATH_FILTER)
        {
            return Err(invalid(format!(
                "path must start with / and be at most {MAX_PATH_FILTER} bytes"
            )));
        }
        if self
            .search
            .as_ref()
            .is_some_and(|s| s.len() > MAX_PATH_FILTER)
        {
            return Err(invalid(format!(
                "search may be at most {MAX_PATH_FILTER} bytes"
            )));
        }
        Ok(pages_read::PageFilter {
            search: self.search.clone().filter(|s| !s.is_empty()),
            read_by_ai: self.read_by_ai,
            recent_first: self.sort == Some(PageSort::Updated),
            has_content: self.has_content,
            status: one_of("status", &self.status, &STATUSES)?,
            stage: one_of("stage", &self.stage, &STAGES)?,
            path: self.path.clone(),
        })
    }
}

/// A client's pages by status and by stage.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct PageCounts {
    pub by_status: std::collections::BTreeMap<String, i64>,
    pub by_stage: std::collections::BTreeMap<String, i64>,
}

/// `GET /api/v1/sitemap/client/{client_id}/pages` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageList {
    pub client_id: Uuid,
    pub client_name: String,
    /// The pages the filters keep.
    pub total_pages: i64,
    /// All the client's pages by status and by stage (whatever the filters).
    pub counts: PageCounts,
    pub pages: Vec<PageView>,
    pub limit: i64,
    pub offset: i64,
}

#[utoipa::path(get, path = "/api/v1/sitemap/client/{client_id}/pages", tag = "sitemaps", params(("client_id" = Uuid, Path), PageQuery, FormatParam),
    responses((status = 200, description = "The pages; as CSV with `format=csv`",
            content((PageList = "application/json"), (String = "text/csv"))),
        (status = 400), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// List a client's pages, filtered by status, stage, path prefix, URL text, fetched content
/// or whether an AI bot ever read them, with the client's page counts by status and stage
/// (master key, or the client's `read` key).
pub async fn client_pages(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageQuery>,
    ApiQuery(format): ApiQuery<FormatParam>,
) -> Result<Response, ApiError> {
    principal.require(client_id, Scope::Read)?;
    let (limit, offset) = Paging {
        limit: q.limit,
        offset: q.offset,
    }
    .resolve()?;
    let client = clients_read::find(&state.db, client_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("client not found".into()))?;
    let filter = q.filter()?;
    let (rows, total) = pages_read::list_for_client(
        &state.db,
        client_id,
        &filter,
        (limit, offset),
        state.schedule_min_secs,
    )
    .await?;
    if format.csv() {
        return export::rows("pages.csv", &rows);
    }
    let mut counts = PageCounts::default();
    for c in pages_read::counts_by_status_and_stage(&state.db, Some(client_id)).await? {
        *counts.by_status.entry(c.status).or_default() += c.pages;
        *counts.by_stage.entry(c.stage).or_default() += c.pages;
    }
    Ok(Json(PageList {
        client_id,
        client_name: client.name,
        total_pages: total,
        counts,
        pages: rows.into_iter().map(PageView::from).collect(),
        limit,
        offset,
    })
    .into_response())
}

impl export::Row for pages_read::PageRow {
    const HEADER: &'static [&'static str] = &[
        "url",
        "id",
        "status",
        "stage",
        "title",
        "last_http_status",
        "last_error",
        "content_size",
        "last_scraped_at",
        "last_changed_at",
        "last_updated_at",
        "next_due_at",
        "version",
        "created_at",
    ];

    fn cells(&self) -> Vec<String> {
        let time =
            |t: Option<chrono::DateTime<chrono::Utc>>| export::opt(t.map(|t| t.to_rfc3339()));
        vec![
            self.url.clone(),
            self.id.to_string(),
            self.status.clone(),
            self.stage.clone(),
            export::opt(self.title.as_ref()),
            export::opt(self.last_http_status),
            export::opt(self.last_error.as_ref()),
            export::opt(self.content_size),
            time(self.last_scraped_at),
            time(self.last_changed_at),
            time(self.last_updated_at),
            time(self.next_due_at),
            self.version.to_string(),
            self.created_at.to_rfc3339(),
        ]
    }
}

/// What an import did, in one line: "Sitemap imported successfully" when every URL was taken
/// (the original contract's words), else how many were and why the others were not.
fn import_message(summary: &crate::commands::discovery::ImportSummary) -> String {
    let taken = summary.total_urls - summary.errors;
    let mut message = if summary.errors == 0 {
        "Sitemap imported successfully".to_owned()
    } else {
        let why = summary
            .error_details
            .first()
            .map(|issue| format!(" (the first: {})", issue.reason))
            .unwrap_or_default();
        format!(
            "{taken} of {} URLs imported, {} refused{why}",
            summary.total_urls, summary.errors
        )
    };
    if summary.truncated {
        message.push_str(&format!(
            "; stopped at the safety limit of {} URLs",
            summary.limit
        ));
    }
    if !summary.applied {
        message.push_str("; the pages are still being applied (readable within seconds)");
    }
    message
}

/// 200 when the pages are readable, 202 while the projection is still applying them.
pub(super) fn applied_status(applied: bool) -> axum::http::StatusCode {
    if applied {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::ACCEPTED
    }
}
