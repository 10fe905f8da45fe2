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

use super::sql;
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
            match change(&event)? {
                Change::Discovered(row) => upsert_discovered(conn, &[row]).await?,
                Change::Update(Some(update)) => {
                    update.execute(conn).await?;
                }
                Change::Update(None) => {}
            }
            Ok(())
        }
        .boxed()
    }

    /// Discoveries come by the thousand (imports): each run of them with distinct pages is one
    /// multi-row upsert. Any other event ends the run first, so every page sees its events in
    /// stream order.
    fn apply_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        batch: &'a [&'a StoredMessage],
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>, sqlx::Error>> {
        async move {
            let mut skipped = Vec::new();
            let mut run: Vec<DiscoveredRow> = Vec::new();
            let mut in_run = std::collections::HashSet::new();
            for (i, msg) in batch.iter().enumerate() {
                let event: Event<PageEvent> = match decode(msg) {
                    Ok(event) => event,
                    Err(ApplyError::Skip(reason)) => {
                        skipped.push((i, reason));
                        continue;
                    }
                    Err(ApplyError::Db(e)) => return Err(e),
                };
                match change(&event) {
                    Err(ApplyError::Skip(reason)) => skipped.push((i, reason)),
                    Err(ApplyError::Db(e)) => return Err(e),
                    Ok(Change::Discovered(row)) => {
                        if !in_run.insert(row.id) {
                            upsert_discovered(conn, &run).await?;
                            run.clear();
                            in_run = std::iter::once(row.id).collect();
                        }
                        run.push(row);
                    }
                    Ok(Change::Update(update)) => {
                        upsert_discovered(conn, &run).await?;
                        run.clear();
                        in_run.clear();
                        if let Some(update) = update {
                            update.execute(&mut *conn).await?;
                        }
                    }
                }
            }
            upsert_discovered(conn, &run).await?;
            Ok(skipped)
        }
        .boxed()
    }
}

/// What one event does to its page's row.
enum Change<'e> {
    Discovered(DiscoveredRow),
    /// The UPDATE it makes, if any.
    Update(Option<PgQuery<'e>>),
}

fn change(event: &Event<PageEvent>) -> Result<Change<'_>, ApplyError> {
    let Some(page_id) = event.meta.page_id else {
        return Err(ApplyError::Skip("page event without page_id".into()));
    };
    let at = event.meta.occurred_at;
    if let PageEvent::Discovered(d) = &event.payload {
        return Ok(Change::Discovered(DiscoveredRow {
            id: page_id.as_uuid(),
            client_id: event.meta.client_id.as_uuid(),
            url: d.url.to_string(),
            url_hash: ContentHash::of(d.url.as_str().as_bytes()).to_string(),
            source: enum_name(&d.source)?,
            sitemap_url: d.sitemap_url.clone(),
            lastmod: d.lastmod.clone(),
            changefreq: d.changefreq.clone(),
            priority: d.priority.clone(),
            at,
            lastmod_at: d
                .lastmod
                .as_deref()
                .and_then(crate::domain::sitemap::lastmod_time),
        }));
    }
    Ok(Change::Update(update_for(
        &event.payload,
        page_id.as_uuid(),
        at,
    )?))
}

/// A `pages.discovered` as the row it upserts.
struct DiscoveredRow {
    id: Uuid,
    client_id: Uuid,
    url: String,
    url_hash: String,
    source: String,
    sitemap_url: Option<String>,
    lastmod: Option<String>,
    changefreq: Option<String>,
    priority: Option<String>,
    at: DateTime<Utc>,
    lastmod_at: Option<DateTime<Utc>>,
}

/// Upserts discovered pages (distinct ids) in one statement.
async fn upsert_discovered(
    conn: &mut PgConnection,
    rows: &[DiscoveredRow],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&DiscoveredRow) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
    sqlx::query(sql::pages::UPSERT_DISCOVERED_MANY)
        .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.client_id).collect::<Vec<_>>())
        .bind(col(|r| Some(r.url.as_str())))
        .bind(col(|r| Some(r.url_hash.as_str())))
        .bind(col(|r| Some(r.source.as_str())))
        .bind(col(|r| r.sitemap_url.as_deref()))
        .bind(col(|r| r.lastmod.as_deref()))
        .bind(col(|r| r.changefreq.as_deref()))
        .bind(col(|r| r.priority.as_deref()))
        .bind(rows.iter().map(|r| r.at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.lastmod_at).collect::<Vec<_>>())
        .execute(conn)
        .await?;
    Ok(())
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
        PageEvent::Reprocessed(r) => query(sql::pages::ON_REPROCESSED)
            .bind(r.run_id)
            .bind(r.outcome.as_str()),
        PageEvent::RefreshRequested(_) => query(sql::pages::ON_REFRESH_REQUESTED),
        PageEvent::MetadataUpdated(m) => query(sql::pages::ON_METADATA_UPDATED)
            .bind(&m.sitemap_url)
            .bind(&m.lastmod)
            .bind(&m.changefreq)
            .bind(&m.priority)
            .bind(
                m.lastmod
                    .as_deref()
                    .and_then(crate::domain::sitemap::lastmod_time),
            ),
        PageEvent::Scraped(s) => query(sql::pages::ON_SCRAPED)
            .bind(s.raw.hash.as_str())
            .bind(i64::try_from(s.raw.size).unwrap_or(i64::MAX))
            .bind(&s.etag)
            .bind(&s.last_modified)
            .bind(i32::from(s.http_status))
            .bind(s.fetched_at)
            .bind(i32::try_from(s.duration_ms).unwrap_or(i32::MAX)),
        PageEvent::Unchanged(u) => query(sql::pages::ON_UNCHANGED)
            .bind(i32::from(u.http_status))
            .bind(u.fetched_at),
        PageEvent::ScrapeFailed(f) => {
            let status = if f.failure == ScrapeFailure::RobotsDisallowed {
                "blocked"
            } else {
                "failed"
            };
            query(sql::pages::ON_SCRAPE_FAILED)
                .bind(status)
                .bind(&f.message)
                .bind(enum_name(&f.failure)?)
                .bind(f.http_status.map(i32::from))
        }
        PageEvent::Removed(r) => query(sql::pages::ON_REMOVED)
            .bind(r.http_status.map(i32::from))
            .bind(&r.reason),
        // A change re-sent by a reprocessing run (same version and fingerprint) is not a new
        // change: what the last fetch found and when the content last changed stay. A change
        // older than the page's version (replayed late) changes nothing.
        PageEvent::ContentChanged(c) => query(sql::pages::ON_CONTENT_CHANGED)
            .bind(c.raw.hash.as_str())
            .bind(c.fingerprint.as_str())
            .bind(version(c.page_version)),
        // The steps after a change apply only to the page's current version, and the same
        // output again (a redelivery past the duplicate window) never moves the page back.
        PageEvent::MarkdownGenerated(m) => query(sql::pages::ON_MARKDOWN_GENERATED)
            .bind(m.markdown.hash.as_str())
            .bind(enum_name(&m.generator)?)
            .bind(&m.generator_version)
            .bind(&m.metadata.title)
            .bind(&m.metadata.description)
            .bind(&m.metadata.language)
            .bind(&m.metadata.canonical_url)
            .bind(version(m.page_version)),
        PageEvent::HtmlRendered(h) => query(sql::pages::ON_HTML_RENDERED)
            .bind(h.html.hash.as_str())
            .bind(&h.renderer_version)
            .bind(version(h.page_version)),
        PageEvent::KvUploaded(k) => query(sql::pages::ON_KV_UPLOADED)
            .bind(&k.kv_key)
            .bind(enum_name(&k.store)?)
            .bind(k.markdown_hash.as_str())
            .bind(k.html_hash.as_str())
            .bind(version(k.page_version)),
        PageEvent::Updated(u) => query(sql::pages::ON_UPDATED)
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
        let rows: Vec<SitemapMetadata> = sqlx::query_as(sql::pages::SITEMAP_METADATA)
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

/// The page with this id; `min_interval_secs` is the scheduler's shortest refresh interval.
pub async fn find(
    db: &sqlx::PgPool,
    id: Uuid,
    min_interval_secs: i64,
) -> Result<Option<PageRow>, sqlx::Error> {
    sqlx::query_as(sql::pages::FIND)
        .bind(min_interval_secs)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// A page of a client's pages, oldest first, with the total; `has_content` filters on whether
/// raw HTML was fetched.
/// How many pages are in one status and stage, for one client.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct StatusCount {
    pub client_id: Uuid,
    pub status: String,
    pub stage: String,
    pub pages: i64,
}

/// Pages by client, status and stage (one client, or all).
pub async fn counts_by_status_and_stage(
    db: &sqlx::PgPool,
    client: Option<Uuid>,
) -> Result<Vec<StatusCount>, sqlx::Error> {
    sqlx::query_as(sql::pages::COUNTS_BY_STATUS_AND_STAGE)
        .bind(client)
        .fetch_all(db)
        .await
}

pub async fn list_for_client(
    db: &sqlx::PgPool,
    client: Uuid,
    has_content: Option<bool>,
    limit: i64,
    offset: i64,
    min_interval_secs: i64,
) -> Result<(Vec<PageRow>, i64), sqlx::Error> {
    let rows = sqlx::query_as(sql::pages::LIST_FOR_CLIENT)
        .bind(min_interval_secs)
        .bind(client)
        .bind(has_content)
        .bind(limit)
        .bind(offset)
        .fetch_all(db)
        .await?;
    let total = sqlx::query_scalar(sql::pages::COUNT_FOR_CLIENT)
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
    sqlx::query_as(sql::pages::DUE)
        .bind(min_interval_secs)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// The ids of a client's pages that can be refreshed (not removed).
pub async fn refreshable(db: &sqlx::PgPool, client: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(sql::pages::REFRESHABLE)
        .bind(client)
        .fetch_all(db)
        .await
}
