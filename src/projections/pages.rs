//! The pages projection: the original `pages` table plus the pipeline state of each page.
//!
//! `status` is what the last fetch found (discovered, fetched, unchanged, changed, removed,
//! blocked, failed); `stage` is the last pipeline step the page completed (discovered,
//! scraped, markdown, rendered, uploaded, live, removed).

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::PgConnection;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use uuid::Uuid;

use super::{ApplyError, Projection, StoredMessage, decode};
use crate::domain::content::ContentHash;
use crate::events::pages::{PageEvent, ScrapeFailure};
use crate::events::{Event, StreamName};
use crate::projections::visits::enum_name;

/// Applies PAGES events to `pages`.
pub struct PagesProjection;

type PgQuery<'q> = Query<'q, sqlx::Postgres, PgArguments>;

impl Projection for PagesProjection {
    fn name(&self) -> &'static str {
        "pages"
    }

    fn stream(&self) -> StreamName {
        StreamName::Pages
    }

    fn tables(&self) -> &'static [&'static str] {
        &["pages"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        msg: &'a StoredMessage,
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        async move {
            let event: Event<PageEvent> = decode(msg)?;
            let Some(page_id) = event.meta.page_id else {
                return Err(ApplyError::Skip("page event without page_id".into()));
            };
            let at = event.meta.occurred_at;
            if let PageEvent::Discovered(d) = &event.payload {
                sqlx::query(
                    "INSERT INTO pages (id, client_id, url, url_hash, status, stage, source,
                         sitemap_url, lastmod, changefreq, priority, created_at, updated_at)
                     VALUES ($1,$2,$3,$4,'discovered','discovered',$5,$6,$7,$8,$9,$10,$10)
                     ON CONFLICT (id) DO UPDATE SET
                         sitemap_url = COALESCE(EXCLUDED.sitemap_url, pages.sitemap_url),
                         lastmod = COALESCE(EXCLUDED.lastmod, pages.lastmod),
                         changefreq = COALESCE(EXCLUDED.changefreq, pages.changefreq),
                         priority = COALESCE(EXCLUDED.priority, pages.priority),
                         updated_at = EXCLUDED.updated_at",
                )
                .bind(page_id.as_uuid())
                .bind(event.meta.client_id.as_uuid())
                .bind(d.url.as_str())
                .bind(ContentHash::of(d.url.as_str().as_bytes()).as_str())
                .bind(enum_name(&d.source)?)
                .bind(&d.sitemap_url)
                .bind(&d.lastmod)
                .bind(&d.changefreq)
                .bind(&d.priority)
                .bind(at)
                .execute(conn)
                .await?;
                return Ok(());
            }
            if let Some(update) = update_for(&event.payload, page_id.as_uuid(), at)? {
                update.execute(conn).await?;
            }
            Ok(())
        }
        .boxed()
    }
}

/// The UPDATE an event makes, parameters bound: `$1` the page id, `$2` the event time, then
/// the statement's own. `None` for events that change no column.
fn update_for(
    event: &PageEvent,
    page_id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<PgQuery<'_>>, ApplyError> {
    let query = |sql| sqlx::query(sql).bind(page_id).bind(at);
    let q = match event {
        PageEvent::Discovered(_) | PageEvent::RefreshRequested(_) => return Ok(None),
        PageEvent::MetadataUpdated(m) => query(
            "UPDATE pages SET sitemap_url = COALESCE($3, sitemap_url), lastmod = $4,
                 changefreq = $5, priority = $6, updated_at = $2
             WHERE id = $1",
        )
        .bind(&m.sitemap_url)
        .bind(&m.lastmod)
        .bind(&m.changefreq)
        .bind(&m.priority),
        PageEvent::Scraped(s) => query(
            "UPDATE pages SET status = 'fetched', stage = 'scraped', content_hash = $3,
                 content_size = $4, etag = $5, last_modified = $6, last_http_status = $7,
                 last_scraped_at = $8, last_error = NULL, last_error_kind = NULL, updated_at = $2
             WHERE id = $1",
        )
        .bind(s.raw.hash.as_str())
        .bind(i64::try_from(s.raw.size).unwrap_or(i64::MAX))
        .bind(&s.etag)
        .bind(&s.last_modified)
        .bind(i32::from(s.http_status))
        .bind(s.fetched_at),
        PageEvent::Unchanged(u) => query(
            "UPDATE pages SET status = 'unchanged', last_http_status = $3, last_scraped_at = $4,
                 last_error = NULL, last_error_kind = NULL, updated_at = $2
             WHERE id = $1",
        )
        .bind(i32::from(u.http_status))
        .bind(u.fetched_at),
        PageEvent::ScrapeFailed(f) => {
            let status = if f.failure == ScrapeFailure::RobotsDisallowed {
                "blocked"
            } else {
                "failed"
            };
            query(
                "UPDATE pages SET status = $3, last_error = $4, last_error_kind = $5,
                     last_http_status = COALESCE($6, last_http_status), updated_at = $2
                 WHERE id = $1",
            )
            .bind(status)
            .bind(&f.message)
            .bind(enum_name(&f.failure)?)
            .bind(f.http_status.map(i32::from))
        }
        PageEvent::Removed(r) => query(
            "UPDATE pages SET status = 'removed', stage = 'removed',
                 last_http_status = COALESCE($3, last_http_status), last_error = $4,
                 updated_at = $2
             WHERE id = $1",
        )
        .bind(r.http_status.map(i32::from))
        .bind(&r.reason),
        PageEvent::ContentChanged(c) => query(
            "UPDATE pages SET status = 'changed', content_hash = $3, fingerprint = $4,
                 version = $5, last_changed_at = $2, updated_at = $2
             WHERE id = $1",
        )
        .bind(c.raw.hash.as_str())
        .bind(c.fingerprint.as_str())
        .bind(i32::try_from(c.page_version).unwrap_or(i32::MAX)),
        PageEvent::MarkdownGenerated(m) => query(
            "UPDATE pages SET stage = 'markdown', markdown_hash = $3, generator = $4,
                 generator_version = $5, title = $6, description = $7, language = $8,
                 canonical_url = $9, last_processed_at = $2, updated_at = $2
             WHERE id = $1",
        )
        .bind(m.markdown.hash.as_str())
        .bind(enum_name(&m.generator)?)
        .bind(&m.generator_version)
        .bind(&m.metadata.title)
        .bind(&m.metadata.description)
        .bind(&m.metadata.language)
        .bind(&m.metadata.canonical_url),
        PageEvent::HtmlRendered(h) => query(
            "UPDATE pages SET stage = 'rendered', simple_html_hash = $3, renderer_version = $4,
                 updated_at = $2
             WHERE id = $1",
        )
        .bind(h.html.hash.as_str())
        .bind(&h.renderer_version),
        PageEvent::KvUploaded(k) => query(
            "UPDATE pages SET stage = 'uploaded', kv_key = $3, edge_store = $4,
                 kv_uploaded_at = $2, updated_at = $2
             WHERE id = $1",
        )
        .bind(&k.kv_key)
        .bind(enum_name(&k.store)?),
        PageEvent::Updated(u) => query(
            "UPDATE pages SET stage = 'live', last_updated_at = $3, updated_at = $2
             WHERE id = $1",
        )
        .bind(u.updated_at),
    };
    Ok(Some(q))
}

/// A page's sitemap metadata, to tell what an overwriting import changes.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct SitemapMetadata {
    pub id: Uuid,
    pub sitemap_url: Option<String>,
    pub lastmod: Option<String>,
    pub changefreq: Option<String>,
    pub priority: Option<String>,
}

impl SitemapMetadata {
    /// Whether `entry` (listed by `sitemap_url`) says something else.
    pub fn differs(
        &self,
        entry: &crate::domain::sitemap::Entry,
        sitemap_url: Option<&str>,
    ) -> bool {
        self.lastmod != entry.lastmod
            || self.changefreq != entry.changefreq
            || self.priority != entry.priority
            || (sitemap_url.is_some() && self.sitemap_url.as_deref() != sitemap_url)
    }
}

/// The sitemap metadata of those of `ids` that are known pages.
pub async fn sitemap_metadata(
    db: &sqlx::PgPool,
    ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, SitemapMetadata>, sqlx::Error> {
    let mut known = std::collections::HashMap::new();
    for chunk in ids.chunks(5000) {
        let rows: Vec<SitemapMetadata> = sqlx::query_as(
            "SELECT id, sitemap_url, lastmod, changefreq, priority FROM pages WHERE id = ANY($1)",
        )
        .bind(chunk)
        .fetch_all(db)
        .await?;
        known.extend(rows.into_iter().map(|r| (r.id, r)));
    }
    Ok(known)
}

/// A row of `pages`, as the API reads it.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct PageRow {
    pub id: Uuid,
    pub client_id: Uuid,
    pub url: String,
    pub url_hash: String,
    /// What the last fetch found: discovered, fetched, unchanged, changed, removed, blocked, failed.
    pub status: String,
    /// The last pipeline step completed: discovered, scraped, markdown, rendered, uploaded, live, removed.
    pub stage: String,
    pub source: Option<String>,
    pub sitemap_url: Option<String>,
    pub lastmod: Option<String>,
    pub changefreq: Option<String>,
    pub priority: Option<String>,
    /// SHA-256 of the raw HTML.
    pub content_hash: Option<String>,
    pub content_size: Option<i64>,
    pub fingerprint: Option<String>,
    pub last_http_status: Option<i32>,
    pub last_error: Option<String>,
    pub last_error_kind: Option<String>,
    pub markdown_hash: Option<String>,
    pub generator: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub language: Option<String>,
    pub simple_html_hash: Option<String>,
    pub kv_key: Option<String>,
    pub edge_store: Option<String>,
    pub last_scraped_at: Option<DateTime<Utc>>,
    pub last_changed_at: Option<DateTime<Utc>>,
    pub last_processed_at: Option<DateTime<Utc>>,
    pub kv_uploaded_at: Option<DateTime<Utc>>,
    pub last_updated_at: Option<DateTime<Utc>>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const PAGE_COLUMNS: &str =
    "id, client_id, url, url_hash, status, stage, source, sitemap_url, lastmod,
    changefreq, priority, content_hash, content_size, fingerprint, last_http_status, last_error,
    last_error_kind, markdown_hash, generator, title, description, language, simple_html_hash,
    kv_key, edge_store, last_scraped_at, last_changed_at, last_processed_at, kv_uploaded_at,
    last_updated_at, version, created_at, updated_at";

/// The page with this id.
pub async fn find(db: &sqlx::PgPool, id: Uuid) -> Result<Option<PageRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PAGE_COLUMNS} FROM pages WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A page of a client's pages, oldest first, with the total; `has_content` filters on whether
/// raw HTML was fetched.
pub async fn list_for_client(
    db: &sqlx::PgPool,
    client: Uuid,
    has_content: Option<bool>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<PageRow>, i64), sqlx::Error> {
    let filter = "client_id = $1 AND ($2::bool IS NULL OR (content_hash IS NOT NULL) = $2)";
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PAGE_COLUMNS} FROM pages WHERE {filter} ORDER BY created_at, id LIMIT $3 OFFSET $4"
    )))
    .bind(client)
    .bind(has_content)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM pages WHERE {filter}"
    )))
    .bind(client)
    .bind(has_content)
    .fetch_one(db)
    .await?;
    Ok((rows, total))
}
