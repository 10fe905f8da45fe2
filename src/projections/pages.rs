//! The pages projection: the original `pages` table plus the pipeline state of each page.
//!
//! `status` is what the last fetch found (discovered, fetched, unchanged, changed, removed,
//! blocked, failed); `stage` is the last pipeline step the page completed (discovered,
//! scraped, markdown, rendered, uploaded, live, removed).

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::sql;
use super::{ApplyError, Projection, StoredMessage, decode, enum_name};
use crate::domain::content::ContentHash;
use crate::events::pages::{PageEvent, ScrapeFailure};
use crate::events::{Event, StreamName};

/// Applies PAGES events to `pages`.
pub struct PagesProjection;

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
            let mut round = Round::default();
            if let Some((_, change)) = change(&event)? {
                round.add(change);
            }
            round.apply(conn).await?;
            Ok(())
        }
        .boxed()
    }

    /// A batch's events are applied in rounds: the n-th event of each page goes into round n,
    /// so a round holds at most one event per page and every page still sees its events in
    /// stream order (events of different pages touch different rows: they commute). Each
    /// round is one statement per kind of event, so a batch costs a handful of round trips,
    /// not one per event.
    fn apply_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        batch: &'a [&'a StoredMessage],
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>, sqlx::Error>> {
        async move {
            let mut skipped = Vec::new();
            let mut rounds: Vec<Round> = Vec::new();
            let mut seen: HashMap<Uuid, usize> = HashMap::new();
            for (i, msg) in batch.iter().enumerate() {
                let change = decode(msg).and_then(|event| change(&event));
                match change {
                    Err(ApplyError::Skip(reason)) => skipped.push((i, reason)),
                    Err(ApplyError::Db(e)) => return Err(e),
                    Ok(None) => {}
                    Ok(Some((page, change))) => {
                        let n = seen.entry(page).or_default();
                        if rounds.len() == *n {
                            rounds.push(Round::default());
                        }
                        rounds[*n].add(change);
                        *n += 1;
                    }
                }
            }
            for round in rounds {
                round.apply(conn).await?;
            }
            Ok(skipped)
        }
        .boxed()
    }
}

/// What one event does to its page's row.
enum Change {
    Discovered(Box<DiscoveredRow>),
    /// The statement that applies this kind of event, and the event's record for it.
    Update(&'static str, serde_json::Value),
}

/// Events of distinct pages, applied together: one upsert for the discoveries, one statement
/// per other kind of event.
#[derive(Default)]
struct Round {
    discovered: Vec<DiscoveredRow>,
    updates: Vec<(&'static str, Vec<serde_json::Value>)>,
}

impl Round {
    fn add(&mut self, change: Change) {
        match change {
            Change::Discovered(row) => self.discovered.push(*row),
            Change::Update(statement, record) => {
                match self.updates.iter_mut().find(|(s, _)| *s == statement) {
                    Some((_, records)) => records.push(record),
                    None => self.updates.push((statement, vec![record])),
                }
            }
        }
    }

    async fn apply(self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        upsert_discovered(conn, &self.discovered).await?;
        for (statement, records) in self.updates {
            sqlx::query(statement)
                .bind(sqlx::types::Json(records))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

/// The page an event is about and what it does to its row (`None`: nothing).
fn change(event: &Event<PageEvent>) -> Result<Option<(Uuid, Change)>, ApplyError> {
    let Some(page_id) = event.meta.page_id else {
        return Err(ApplyError::Skip("page event without page_id".into()));
    };
    let page = page_id.as_uuid();
    let at = event.meta.occurred_at;
    if let PageEvent::Discovered(d) = &event.payload {
        let row = DiscoveredRow {
            id: page,
            client_id: event.meta.client_id.as_uuid(),
            url: d.url.to_string(),
            url_hash: ContentHash::of(d.url.as_str().as_bytes()).to_string(),
            source: enum_name(&d.source)?,
            sitemap_url: d.sitemap_url.clone(),
            lastmod: d.lastmod.clone(),
            changefreq: d.changefreq.clone(),
            priority: d.priority.clone(),
            alternates: (!d.alternates.is_empty())
                .then(|| serde_json::to_value(&d.alternates).unwrap_or_default()),
            crawl_run: d.crawl.map(|c| c.run_id),
            crawl_depth: d.crawl.map(|c| i32::try_from(c.depth).unwrap_or(i32::MAX)),
            at,
            lastmod_at: d
                .lastmod
                .as_deref()
                .and_then(crate::domain::sitemap::lastmod_time),
        };
        return Ok(Some((page, Change::Discovered(Box::new(row)))));
    }
    Ok(update_for(&event.payload, page, at)?
        .map(|(statement, record)| (page, Change::Update(statement, record))))
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
    alternates: Option<serde_json::Value>,
    crawl_run: Option<Uuid>,
    crawl_depth: Option<i32>,
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
        .bind(
            rows.iter()
                .map(|r| r.alternates.clone())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.crawl_run).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.crawl_depth).collect::<Vec<_>>())
        .execute(conn)
        .await?;
    Ok(())
}

/// A time as the statements' records carry it: cut to the microsecond, as PostgreSQL keeps
/// it and as sqlx binds a time (so rows are the same whichever way they were written).
fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The statement an event's kind is applied with, and the event's record for it (the
/// fields of the statement's record definition in `projections/pages.sql`). `None` for
/// events that change no column.
fn update_for(
    event: &PageEvent,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<(&'static str, serde_json::Value)>, ApplyError> {
    let at = time(at);
    let update = match event {
        // A render's request and result change no column: `pages.scraped` follows the render
        // with what the page's row shows.
        PageEvent::Discovered(_) | PageEvent::RenderRequested(_) | PageEvent::RenderedJs(_) => {
            return Ok(None);
        }
        PageEvent::Reprocessed(r) => (
            sql::pages::ON_REPROCESSED,
            json!({"id": id, "at": at, "run_id": r.run_id, "outcome": r.outcome.as_str()}),
        ),
        PageEvent::RefreshRequested(_) => (
            sql::pages::ON_REFRESH_REQUESTED,
            json!({"id": id, "at": at}),
        ),
        PageEvent::MetadataUpdated(m) => (
            sql::pages::ON_METADATA_UPDATED,
            json!({
                "id": id, "at": at, "sitemap_url": m.sitemap_url, "lastmod": m.lastmod,
                "changefreq": m.changefreq, "priority": m.priority,
                "lastmod_at": m.lastmod.as_deref()
                    .and_then(crate::domain::sitemap::lastmod_time).map(time),
                "alternates": (!m.alternates.is_empty()).then_some(&m.alternates),
            }),
        ),
        PageEvent::Scraped(s) => (
            sql::pages::ON_SCRAPED,
            json!({
                "id": id, "at": at, "content_hash": s.raw.hash.as_str(),
                "content_size": i64::try_from(s.raw.size).unwrap_or(i64::MAX),
                "etag": s.etag, "last_modified": s.last_modified,
                "http_status": s.http_status, "fetched_at": time(s.fetched_at),
                "fetch_ms": i32::try_from(s.duration_ms).unwrap_or(i32::MAX),
            }),
        ),
        PageEvent::Unchanged(u) => (
            sql::pages::ON_UNCHANGED,
            json!({
                "id": id, "at": at, "http_status": u.http_status,
                "fetched_at": time(u.fetched_at),
            }),
        ),
        PageEvent::ScrapeFailed(f) => {
            let status = if f.failure == ScrapeFailure::RobotsDisallowed {
                "blocked"
            } else {
                "failed"
            };
            (
                sql::pages::ON_SCRAPE_FAILED,
                json!({
                    "id": id, "at": at, "status": status, "error": f.message,
                    "kind": enum_name(&f.failure)?, "http_status": f.http_status,
                }),
            )
        }
        PageEvent::Removed(r) => (
            sql::pages::ON_REMOVED,
            json!({"id": id, "at": at, "http_status": r.http_status, "reason": r.reason}),
        ),
        // A change re-sent by a reprocessing run (same version and fingerprint) is not a new
        // change: what the last fetch found and when the content last changed stay. A change
        // older than the page's version (replayed late) changes nothing.
        PageEvent::ContentChanged(c) => (
            sql::pages::ON_CONTENT_CHANGED,
            json!({
                "id": id, "at": at, "content_hash": c.raw.hash.as_str(),
                "fingerprint": c.fingerprint.as_str(), "version": version(c.page_version),
            }),
        ),
        // The steps after a change apply only to the page's current version, and the same
        // output again (a redelivery past the duplicate window) never moves the page back.
        PageEvent::MarkdownGenerated(m) => (
            sql::pages::ON_MARKDOWN_GENERATED,
            json!({
                "id": id, "at": at, "markdown_hash": m.markdown.hash.as_str(),
                "generator": enum_name(&m.generator)?,
                "generator_version": m.generator_version, "title": m.metadata.title,
                "description": m.metadata.description, "language": m.metadata.language,
                "canonical_url": m.metadata.canonical_url, "version": version(m.page_version),
            }),
        ),
        PageEvent::HtmlRendered(h) => (
            sql::pages::ON_HTML_RENDERED,
            json!({
                "id": id, "at": at, "html_hash": h.html.hash.as_str(),
                "renderer_version": h.renderer_version, "version": version(h.page_version),
            }),
        ),
        PageEvent::KvUploaded(k) => (
            sql::pages::ON_KV_UPLOADED,
            json!({
                "id": id, "at": at, "kv_key": k.kv_key, "store": enum_name(&k.store)?,
                "markdown_hash": k.markdown_hash.as_str(), "html_hash": k.html_hash.as_str(),
                "version": version(k.page_version),
            }),
        ),
        PageEvent::Updated(u) => (
            sql::pages::ON_UPDATED,
            json!({
                "id": id, "at": at, "updated_at": time(u.updated_at),
                "version": version(u.page_version),
            }),
        ),
    };
    Ok(Some(update))
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
    pub alternates: Option<sqlx::types::Json<Vec<crate::domain::sitemap::Alternate>>>,
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
            || self.alternates.as_ref().map_or(&[][..], |a| &a.0[..]) != &entry.alternates[..]
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
    /// The page's translations its sitemap names (hreflang alternates).
    #[schema(value_type = Option<Vec<crate::domain::sitemap::Alternate>>)]
    pub alternates: Option<sqlx::types::Json<Vec<crate::domain::sitemap::Alternate>>>,
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

/// A live page as `/llms.txt` lists it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LlmsRow {
    pub url: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub markdown_hash: Option<String>,
}

/// `client`'s pages that went live and were not removed since (at most `limit`).
pub async fn llms_pages(
    db: &sqlx::PgPool,
    client: Uuid,
    limit: i64,
) -> Result<Vec<LlmsRow>, sqlx::Error> {
    sqlx::query_as(sql::pages::LLMS_PAGES)
        .bind(client)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// The URL of the first of `ids` that is one of `client`'s pages.
pub async fn url_of_any(
    db: &sqlx::PgPool,
    client: Uuid,
    ids: &[Uuid],
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(sql::pages::URL_OF_ANY)
        .bind(client)
        .bind(ids)
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

/// Which of a client's pages a list shows (each filter skipped when `None`).
#[derive(Clone, Debug, Default)]
pub struct PageFilter {
    /// Whether raw HTML was fetched.
    pub has_content: Option<bool>,
    pub status: Option<String>,
    pub stage: Option<String>,
    /// A prefix of the URL's path (and query), e.g. `/blog/`.
    pub path: Option<String>,
    /// Text the URL contains (any case).
    pub search: Option<String>,
    /// Whether an AI bot ever read the page.
    pub read_by_ai: Option<bool>,
    /// Last changed first (else oldest first).
    pub recent_first: bool,
}

impl PageFilter {
    /// `$1`–`$8` of `list_for_client` and `count_for_client`: the shortest refresh interval,
    /// the client, then the filters of `page_filters`.
    fn args(
        &self,
        min_interval_secs: i64,
        client: Uuid,
    ) -> Result<sqlx::postgres::PgArguments, sqlx::Error> {
        let mut args = sqlx::postgres::PgArguments::default();
        super::push(&mut args, min_interval_secs)?;
        super::push(&mut args, client)?;
        super::push(&mut args, self.has_content)?;
        super::push(&mut args, self.status.as_deref())?;
        super::push(&mut args, self.stage.as_deref())?;
        super::push(&mut args, self.path.as_deref())?;
        super::push(&mut args, self.search_pattern())?;
        super::push(&mut args, self.read_by_ai)?;
        Ok(args)
    }

    /// `search` as a LIKE pattern: its `%`, `_` and `\` match themselves.
    fn search_pattern(&self) -> Option<String> {
        self.search.as_ref().map(|text| {
            let escaped = text
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        })
    }
}

/// A page of a client's pages that `filter` keeps, oldest first, and how many it keeps.
pub async fn list_for_client(
    db: &sqlx::PgPool,
    client: Uuid,
    filter: &PageFilter,
    (limit, offset): (i64, i64),
    min_interval_secs: i64,
) -> Result<(Vec<PageRow>, i64), sqlx::Error> {
    let mut args = filter.args(min_interval_secs, client)?;
    super::push(&mut args, limit)?;
    super::push(&mut args, offset)?;
    super::push(&mut args, filter.recent_first)?;
    let rows = sqlx::query_as_with(sql::pages::LIST_FOR_CLIENT, args)
        .fetch_all(db)
        .await?;
    let total = sqlx::query_scalar_with(
        sql::pages::COUNT_FOR_CLIENT,
        filter.args(min_interval_secs, client)?,
    )
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

/// How many pages a crawl has.
pub async fn crawl_pages(db: &sqlx::PgPool, client: Uuid, run: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql::pages::CRAWL_PAGES)
        .bind(client)
        .bind(run)
        .fetch_one(db)
        .await
}

/// Where a crawl stands.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct CrawlProgress {
    /// Pages the crawl found or started from.
    pub pages: i64,
    /// Of them, fetched at least once.
    pub fetched: i64,
    /// Live at the edge.
    pub live: i64,
    /// Removed, blocked by robots.txt or failed.
    pub failed: i64,
    /// The most links followed from a start page so far.
    pub deepest: i32,
}

/// The progress of a crawl of `client`.
pub async fn crawl_progress(
    db: &sqlx::PgPool,
    client: Uuid,
    run: Uuid,
) -> Result<CrawlProgress, sqlx::Error> {
    sqlx::query_as(sql::pages::CRAWL_PROGRESS)
        .bind(client)
        .bind(run)
        .fetch_one(db)
        .await
}
