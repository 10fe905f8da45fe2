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

use super::{ApplyError, Projection, StoredMessage, decode, enum_name};
use crate::domain::content::ContentHash;
use crate::events::pages::{PageEvent, ScrapeFailure};
use crate::events::{Event, StreamName};

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
                         sitemap_url, lastmod, changefreq, priority, created_at, updated_at, lastmod_at)
                     VALUES ($1,$2,$3,$4,'discovered','discovered',$5,$6,$7,$8,$9,$10,$10,$11)
                     ON CONFLICT (id) DO UPDATE SET
                         sitemap_url = COALESCE(EXCLUDED.sitemap_url, pages.sitemap_url),
                         lastmod = COALESCE(EXCLUDED.lastmod, pages.lastmod),
                         lastmod_at = COALESCE(EXCLUDED.lastmod_at, pages.lastmod_at),
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
                .bind(d.lastmod.as_deref().and_then(crate::domain::sitemap::lastmod_time))
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
        PageEvent::Discovered(_) => return Ok(None),
        PageEvent::Reprocessed(r) => query(
            "UPDATE pages SET reprocess_run_id = $3, reprocess_outcome = $4, reprocessed_at = $2
             WHERE id = $1",
        )
        .bind(r.run_id)
        .bind(r.outcome.as_str()),
        PageEvent::RefreshRequested(_) => {
            query("UPDATE pages SET last_refresh_requested_at = $2 WHERE id = $1")
        }
        PageEvent::MetadataUpdated(m) => query(
            "UPDATE pages SET sitemap_url = COALESCE($3, sitemap_url), lastmod = $4,
                 changefreq = $5, priority = $6, lastmod_at = $7, updated_at = $2
             WHERE id = $1",
        )
        .bind(&m.sitemap_url)
        .bind(&m.lastmod)
        .bind(&m.changefreq)
        .bind(&m.priority)
        .bind(
            m.lastmod
                .as_deref()
                .and_then(crate::domain::sitemap::lastmod_time),
        ),
        PageEvent::Scraped(s) => query(
            "UPDATE pages SET status = 'fetched', stage = 'scraped', content_hash = $3,
                 content_size = $4, etag = $5, last_modified = $6, last_http_status = $7,
                 last_scraped_at = $8, last_attempt_at = $8, last_fetch_ms = $9,
                 last_error = NULL, last_error_kind = NULL, updated_at = $2
             WHERE id = $1",
        )
        .bind(s.raw.hash.as_str())
        .bind(i64::try_from(s.raw.size).unwrap_or(i64::MAX))
        .bind(&s.etag)
        .bind(&s.last_modified)
        .bind(i32::from(s.http_status))
        .bind(s.fetched_at)
        .bind(i32::try_from(s.duration_ms).unwrap_or(i32::MAX)),
        PageEvent::Unchanged(u) => query(
            "UPDATE pages SET status = 'unchanged', last_http_status = $3, last_scraped_at = $4,
                 last_attempt_at = $4, last_error = NULL, last_error_kind = NULL, updated_at = $2
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
                     last_http_status = COALESCE($6, last_http_status), last_attempt_at = $2,
                     updated_at = $2
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
                 last_attempt_at = $2, updated_at = $2
             WHERE id = $1",
        )
        .bind(r.http_status.map(i32::from))
        .bind(&r.reason),
        // A change re-sent by a reprocessing run (same version and fingerprint) is not a new
        // change: what the last fetch found and when the content last changed stay. A change
        // older than the page's version (replayed late) changes nothing.
        PageEvent::ContentChanged(c) => query(
            "UPDATE pages SET
                 status = CASE WHEN version = $5 AND fingerprint = $4 THEN status ELSE 'changed' END,
                 last_changed_at = CASE WHEN version = $5 AND fingerprint = $4
                     THEN last_changed_at ELSE $2 END,
                 content_hash = $3, fingerprint = $4, version = $5, updated_at = $2
             WHERE id = $1 AND (fingerprint IS NULL OR version <= $5)",
        )
        .bind(c.raw.hash.as_str())
        .bind(c.fingerprint.as_str())
        .bind(version(c.page_version)),
        // The steps after a change apply only to the page's current version, and the same
        // output again (a redelivery past the duplicate window) never moves the page back.
        PageEvent::MarkdownGenerated(m) => query(
            "UPDATE pages SET
                 stage = CASE WHEN markdown_hash = $3 AND stage IN ('rendered', 'uploaded', 'live')
                     THEN stage ELSE 'markdown' END,
                 markdown_hash = $3, generator = $4,
                 generator_version = $5, title = $6, description = $7, language = $8,
                 canonical_url = $9, last_processed_at = $2, updated_at = $2
             WHERE id = $1 AND version <= $10",
        )
        .bind(m.markdown.hash.as_str())
        .bind(enum_name(&m.generator)?)
        .bind(&m.generator_version)
        .bind(&m.metadata.title)
        .bind(&m.metadata.description)
        .bind(&m.metadata.language)
        .bind(&m.metadata.canonical_url)
        .bind(version(m.page_version)),
        PageEvent::HtmlRendered(h) => query(
            "UPDATE pages SET
                 stage = CASE WHEN simple_html_hash = $3 AND stage IN ('uploaded', 'live')
                     THEN stage ELSE 'rendered' END,
                 simple_html_hash = $3, renderer_version = $4, updated_at = $2
             WHERE id = $1 AND version <= $5",
        )
        .bind(h.html.hash.as_str())
        .bind(&h.renderer_version)
        .bind(version(h.page_version)),
        PageEvent::KvUploaded(k) => query(
            "UPDATE pages SET
                 stage = CASE WHEN stage = 'live' AND markdown_hash = $5 AND simple_html_hash = $6
                     THEN stage ELSE 'uploaded' END,
                 kv_key = $3, edge_store = $4, kv_uploaded_at = $2, updated_at = $2
             WHERE id = $1 AND version <= $7",
        )
        .bind(&k.kv_key)
        .bind(enum_name(&k.store)?)
        .bind(k.markdown_hash.as_str())
        .bind(k.html_hash.as_str())
        .bind(version(k.page_version)),
        PageEvent::Updated(u) => query(
            "UPDATE pages SET stage = 'live', last_updated_at = $3, updated_at = $2
             WHERE id = $1 AND version <= $4",
        )
        .bind(u.updated_at)
        .bind(version(u.page_version)),
    };
    Ok(Some(q))
}

/// A page version as the `version` column holds it.
fn version(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
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
    pub lastmod_at: Option<DateTime<Utc>>,
    /// Last fetch attempt, whatever its outcome.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// Duration of the last successful fetch.
    pub last_fetch_ms: Option<i32>,
    pub last_refresh_requested_at: Option<DateTime<Utc>>,
    /// When the scheduler asks for the page again (none before its first fetch, or once removed).
    pub next_due_at: Option<DateTime<Utc>>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const PAGE_COLUMNS: &str = "p.id, p.client_id, p.url, p.url_hash, p.status, p.stage, p.source,
    p.sitemap_url, p.lastmod, p.changefreq, p.priority, p.content_hash, p.content_size,
    p.fingerprint, p.last_http_status, p.last_error, p.last_error_kind, p.markdown_hash,
    p.generator, p.title, p.description, p.language, p.simple_html_hash, p.kv_key, p.edge_store,
    p.last_scraped_at, p.last_changed_at, p.last_processed_at, p.kv_uploaded_at,
    p.last_updated_at, p.lastmod_at, p.last_attempt_at, p.last_fetch_ms,
    p.last_refresh_requested_at, p.version, p.created_at, p.updated_at";

/// `next_due_at`, computed from the page and its client (`$1` is the shortest interval).
const NEXT_DUE: &str = "CASE WHEN p.status = 'removed' OR NOT COALESCE(c.is_active, false) THEN NULL ELSE
    page_next_due(p.last_scraped_at, p.last_attempt_at, p.lastmod_at, p.changefreq, c.refresh_interval_secs, $1) END";

/// The page with this id; `min_interval_secs` is the scheduler's shortest refresh interval.
pub async fn find(
    db: &sqlx::PgPool,
    id: Uuid,
    min_interval_secs: i64,
) -> Result<Option<PageRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PAGE_COLUMNS}, {NEXT_DUE} AS next_due_at
         FROM pages p LEFT JOIN clients c ON c.id = p.client_id WHERE p.id = $2"
    )))
    .bind(min_interval_secs)
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
    min_interval_secs: i64,
) -> Result<(Vec<PageRow>, i64), sqlx::Error> {
    let filter = "p.client_id = $2 AND ($3::bool IS NULL OR (p.content_hash IS NOT NULL) = $3)";
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {PAGE_COLUMNS}, {NEXT_DUE} AS next_due_at
         FROM pages p LEFT JOIN clients c ON c.id = p.client_id
         WHERE {filter} ORDER BY p.created_at, p.id LIMIT $4 OFFSET $5"
    )))
    .bind(min_interval_secs)
    .bind(client)
    .bind(has_content)
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await?;
    let total = sqlx::query_scalar(
        "SELECT count(*) FROM pages p WHERE p.client_id = $1 AND ($2::bool IS NULL OR (p.content_hash IS NOT NULL) = $2)",
    )
    .bind(client)
    .bind(has_content)
    .fetch_one(db)
    .await?;
    Ok((rows, total))
}

/// A page due for a refresh.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DuePage {
    pub id: Uuid,
    pub client_id: Uuid,
    pub next_due_at: DateTime<Utc>,
    /// The sitemap's lastmod is newer than the last fetch.
    pub by_lastmod: bool,
}

/// Up to `limit` pages due now whose refresh has not been asked for since they fell due,
/// most overdue first. Removed pages and inactive clients are left alone.
pub async fn due(
    db: &sqlx::PgPool,
    min_interval_secs: i64,
    limit: i64,
) -> Result<Vec<DuePage>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, client_id, next_due_at, by_lastmod FROM (
             SELECT p.id, p.client_id, p.last_refresh_requested_at,
                    {NEXT_DUE} AS next_due_at,
                    COALESCE(p.lastmod_at > p.last_scraped_at AND p.lastmod_at <= now(), false) AS by_lastmod
             FROM pages p JOIN clients c ON c.id = p.client_id
             WHERE c.is_active AND p.status <> 'removed'
         ) d
         WHERE next_due_at <= now()
           AND (last_refresh_requested_at IS NULL OR last_refresh_requested_at < next_due_at)
         ORDER BY next_due_at
         LIMIT $2"
    )))
    .bind(min_interval_secs)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The ids of a client's pages that can be refreshed (not removed).
pub async fn refreshable(db: &sqlx::PgPool, client: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM pages WHERE client_id = $1 AND status <> 'removed' ORDER BY created_at, id",
    )
    .bind(client)
    .fetch_all(db)
    .await
}
