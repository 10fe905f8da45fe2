//! What a fetch of a page leaves on the stream, whoever made its HTML (the scraper from the
//! origin's answer, the `renderer-js` role from the browser's document): the page's main
//! content compared with its last `pages.content_changed`, then `pages.unchanged`, or
//! `pages.scraped` + `pages.content_changed` at the page's next version; a crawl page's new
//! same-site links; failures recorded in the page's state.
//!
//! Order: `pages.scraped` and then `pages.content_changed` are published only if the page's
//! last fetch and change on the stream are still the ones this attempt read (conditional
//! publishes); when another attempt got there first, this one is retried and compared with
//! the newer change, so page versions are unique and a slow fetch (or render) never
//! publishes older content as a newer version.

use std::time::Duration;

use async_nats::jetstream;
use sqlx::PgPool;
use url::Url;

use super::history::PageHistory;
use super::runtime::{Delivery, StepError};
use crate::commands::crawl;
use crate::domain::content::{BlobRef, ContentHash};
use crate::domain::ids::PageId;
use crate::domain::markdown::{self, GENERATOR_VERSION};
use crate::domain::render_js::RenderJs;
use crate::domain::reprocess::output_key;
use crate::domain::url::NormalizedUrl;
use crate::domain::{html, html_bounds};
use crate::events::Event;
use crate::events::envelope::now;
use crate::events::pages::*;
use crate::infra::blobs::BlobStore;
use crate::infra::publish::{Outgoing, PublishError, Publisher};
use crate::projections::pages as pages_read;

/// How soon a fetch whose change lost the race to another fetch of the page is tried again.
const CONFLICT_RETRY: Duration = Duration::from_millis(200);

/// What the stream knows of a page.
pub struct Previous {
    pub scraped: Option<Scraped>,
    pub changed: Option<ContentChanged>,
    /// The stream sequences of `scraped` and `changed` (0: none): a new fetch and change are
    /// published only if these are still the page's last.
    pub scraped_seq: u64,
    pub changed_seq: u64,
}

/// Publishes what an attempt at a page found, shared by the scraper and the renderer.
pub struct Landing {
    blobs: BlobStore,
    publisher: Publisher,
    history: PageHistory,
    db: PgPool,
}

impl Landing {
    pub async fn new(
        js: &jetstream::Context,
        db: PgPool,
        blobs: BlobStore,
    ) -> Result<Self, String> {
        Ok(Self {
            history: PageHistory::open(js).await?,
            publisher: Publisher::new(js.clone()),
            blobs,
            db,
        })
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    pub fn history(&self) -> &PageHistory {
        &self.history
    }

    /// The page's last fetch and change, read from its stream (never from the read model).
    pub async fn previous(
        &self,
        client: crate::domain::ids::ClientId,
        page: PageId,
    ) -> Result<Previous, StepError> {
        let scraped = self
            .history
            .last_as("pages.scraped", client, page, |e| match e {
                PageEvent::Scraped(s) => Some(s),
                _ => None,
            })
            .await?;
        let changed = self
            .history
            .last_as("pages.content_changed", client, page, |e| match e {
                PageEvent::ContentChanged(c) => Some(c),
                _ => None,
            })
            .await?;
        Ok(Previous {
            scraped_seq: scraped.as_ref().map_or(0, |(seq, _)| *seq),
            changed_seq: changed.as_ref().map_or(0, |(seq, _)| *seq),
            scraped: scraped.map(|(_, s)| s),
            changed: changed.map(|(_, c)| c),
        })
    }

    pub async fn publish(&self, out: Vec<Outgoing<PageEvent>>) -> Result<(), StepError> {
        match self.publisher.publish_all(&out).await {
            Ok(_) => Ok(()),
            // Another fetch of the page published its change first: this fetch may be older,
            // so it is compared again with the page's new last change (fetching again).
            Err(e @ PublishError::Conflict { .. }) => {
                Err(StepError::retry_after(e, CONFLICT_RETRY))
            }
            Err(e) => Err(StepError::transient(e)),
        }
    }

    /// Records a failure in the page's state; the runtime decides about retries.
    pub async fn failed(
        &self,
        at: &Attempt<'_>,
        failure: ScrapeFailure,
        message: String,
        http_status: Option<u16>,
        retry_after: Option<Duration>,
    ) -> Result<(), StepError> {
        let event = Event::caused_by(
            at.cause,
            PageEvent::ScrapeFailed(ScrapeFailed {
                failure,
                message: message.clone(),
                http_status,
                retry_after_secs: retry_after.map(|d| d.as_secs()),
                attempt: u32::try_from(at.delivery.delivered).unwrap_or(u32::MAX),
            }),
        );
        let key = format!(
            "failed:{}:{}:{}",
            at.page, at.cause.meta.id, at.delivery.delivered
        );
        let mut out = vec![Outgoing::keyed(event, key)];
        if failure != ScrapeFailure::Transient {
            out.extend(at.end_run(ReprocessOutcome::Failed));
        }
        self.publish(out).await?;
        metrics::counter!("aicache_scraper_fetches_total", "outcome" => failure_label(failure))
            .increment(1);
        match failure {
            ScrapeFailure::Transient => Err(match retry_after {
                Some(d) => StepError::retry_after(message, d),
                None => StepError::transient(message),
            }),
            // Recorded in the page's state; nothing to retry.
            _ => Ok(()),
        }
    }

    /// A page fetched (or rendered) and parsed: compared with the page's last change, then
    /// published as unchanged or as its next version; a crawl page's links followed.
    pub async fn land(
        &self,
        at: &Attempt<'_>,
        page: FetchedPage,
        prev: Previous,
        links: &[Url],
    ) -> Result<(), StepError> {
        let same = prev
            .changed
            .as_ref()
            .is_some_and(|c| c.fingerprint == page.fingerprint);
        let forced = at.reprocess.is_some_and(|r| r.force);
        if same && !forced {
            self.unchanged(at, page.status, page.fingerprint).await?;
        } else {
            self.changed(at, page, prev, same).await?;
        }
        self.follow(at, links).await
    }

    /// For a page fetched by a crawl: its same-site links not yet known become pages of the
    /// crawl, one level deeper, while the crawl's depth and budget allow
    /// ([`crawl::next_pages`]). The budget is counted on the projection, so pages fetched at
    /// the same moment may take a crawl a few pages past it.
    async fn follow(&self, at: &Attempt<'_>, links: &[Url]) -> Result<(), StepError> {
        let Some(crawl) = at.crawl else {
            return Ok(());
        };
        if links.is_empty() {
            return Ok(());
        }
        let client = at.cause.meta.client_id;
        let candidates = crawl::same_site_pages(client, at.page, (&at.site.0, at.site.1), links);
        if candidates.is_empty() {
            return Ok(());
        }
        let ids: Vec<uuid::Uuid> = candidates.iter().map(|(id, _)| id.as_uuid()).collect();
        let known = pages_read::sitemap_metadata(&self.db, &ids)
            .await
            .map_err(StepError::transient)?;
        let count = pages_read::crawl_pages(&self.db, client.as_uuid(), crawl.run_id)
            .await
            .map_err(StepError::transient)?;
        let next = crawl::next_pages(
            crawl,
            candidates,
            &|id| known.contains_key(&id.as_uuid()),
            count,
        );
        metrics::counter!("aicache_crawl_pages_found_total").increment(next.len() as u64);
        let out = next
            .into_iter()
            .map(|(id, d)| Outgoing::keyed(d.into_event(client), format!("discovered:{id}")))
            .collect();
        self.publish(out).await
    }

    /// The fetched page is the one we have (same main content).
    async fn unchanged(
        &self,
        at: &Attempt<'_>,
        status: u16,
        fingerprint: ContentHash,
    ) -> Result<(), StepError> {
        let unchanged = Unchanged {
            reason: UnchangedReason::SameFingerprint,
            http_status: status,
            fingerprint: Some(fingerprint),
            fetched_at: now(),
        };
        let event = Event::caused_by(at.cause, PageEvent::Unchanged(unchanged));
        metrics::counter!("aicache_scraper_fetches_total", "outcome" => "unchanged").increment(1);
        let key = format!("unchanged:{}:{}", at.page, at.cause.meta.id);
        let mut out = vec![Outgoing::keyed(event, key)];
        out.extend(at.end_run(ReprocessOutcome::Unchanged));
        self.publish(out).await
    }

    /// New content (or the same again, for a forced run): stored, then `pages.scraped` and
    /// `pages.content_changed` at the page's next version.
    async fn changed(
        &self,
        at: &Attempt<'_>,
        fetched: FetchedPage,
        prev: Previous,
        same: bool,
    ) -> Result<(), StepError> {
        let (page, fetched_at) = (at.page, now());
        let fingerprint = fetched.fingerprint;
        let raw: BlobRef = self
            .blobs
            .put(fetched.text.as_bytes())
            .await
            .map_err(StepError::transient)?;
        let extracted = Extracted {
            markdown: self
                .blobs
                .put(fetched.extracted.markdown.as_bytes())
                .await
                .map_err(StepError::transient)?,
            metadata: fetched.extracted.metadata,
            generator_version: GENERATOR_VERSION.to_owned(),
        };
        // A forced run over the same content makes it again at the same page version.
        let version = match &prev.changed {
            Some(c) if same => c.page_version,
            Some(c) => c.page_version + 1,
            None => 1,
        };
        let scraped = Event::caused_by(
            at.cause,
            PageEvent::Scraped(Scraped {
                url: at.url.clone(),
                http_status: fetched.status,
                raw: raw.clone(),
                // The stored HTML is UTF-8 whatever the origin sent.
                content_type: "text/html; charset=utf-8".into(),
                etag: fetched.etag,
                last_modified: fetched.last_modified,
                fingerprint: fingerprint.clone(),
                fetched_at,
                duration_ms: fetched.duration_ms,
            }),
        );
        let changed = Event::caused_by(
            &scraped,
            PageEvent::ContentChanged(ContentChanged {
                url: at.url.clone(),
                raw,
                fingerprint: fingerprint.clone(),
                previous_fingerprint: prev.changed.map(|c| c.fingerprint),
                page_version: version,
                reprocess: at.reprocess.cloned(),
                extracted: Some(extracted),
            }),
        );
        let changed_key = output_key(
            at.reprocess.map(|run| run.run_id),
            format!("changed:{page}:{version}:{fingerprint}"),
        );
        metrics::counter!("aicache_scraper_fetches_total", "outcome" => "changed").increment(1);
        // One after the other, each only if the page's last of its kind is still the one
        // read: a fetch that lost the race leaves nothing behind (see the module's doc).
        let scraped_key = format!("scraped:{page}:{}:{fingerprint}", at.cause.meta.id);
        self.publish(vec![
            Outgoing::keyed(scraped, scraped_key).expecting(prev.scraped_seq),
        ])
        .await?;
        self.publish(vec![
            Outgoing::keyed(changed, changed_key).expecting(prev.changed_seq),
        ])
        .await
    }
}

/// A page fetched and parsed, ready to be stored.
pub struct FetchedPage {
    pub status: u16,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The HTML, decoded to UTF-8.
    pub text: String,
    /// Its main content, as the Markdown stage would make it.
    pub extracted: markdown::Generated,
    /// The fingerprint of `extracted`.
    pub fingerprint: ContentHash,
    pub duration_ms: u64,
}

/// A fetched page, decoded and read.
pub struct Parsed {
    /// The HTML, decoded to UTF-8.
    pub text: String,
    pub extracted: markdown::Generated,
    /// A crawl page's links (none when the page goes to the browser: they are read from the
    /// rendered page).
    pub links: Vec<Url>,
    /// Why the page needs a browser, when it does.
    pub render: Option<RenderReason>,
}

/// Decodes the body and extracts its main content with the local Markdown generator (the
/// one definition of main content: its fingerprint is what change detection compares, and
/// the Markdown stage uses the result rather than extracting again), and decides whether the
/// page needs a browser (`render_js`). CPU work on a non-Send document, so off the async
/// threads; HTML beyond the generator's bounds is refused (the bound it broke).
pub async fn parse(
    body: Vec<u8>,
    content_type: Option<String>,
    url: String,
    links: bool,
    render_js: RenderJs,
) -> Result<Result<Parsed, html_bounds::TooComplex>, StepError> {
    tokio::task::spawn_blocking(move || {
        let (text, _) = html::decode(&body, content_type.as_deref());
        let extracted = markdown::generate(&text, &url)?;
        let render =
            crate::domain::render_js::decide(render_js, &text, extracted.main_text_chars());
        // Links are read only for a crawl, and only from a page the generator's bounds let
        // through.
        let links = match (links && render.is_none(), Url::parse(&url)) {
            (true, Ok(page)) => {
                crate::domain::links::followable(&text, &page, crawl::MAX_LINKS_PER_PAGE)
            }
            _ => Vec::new(),
        };
        Ok(Parsed {
            text,
            extracted,
            links,
            render,
        })
    })
    .await
    .map_err(StepError::transient)
}

/// One attempt at a page (a fetch, or its render): what caused it, which delivery this is, the page.
pub struct Attempt<'a> {
    pub cause: &'a Event<PageEvent>,
    pub delivery: &'a Delivery,
    pub page: PageId,
    pub url: NormalizedUrl,
    /// The reprocessing run that asked for the fetch.
    pub reprocess: Option<&'a Reprocess>,
    /// The crawl whose page this is, when a crawl's discovery asked for the fetch.
    pub crawl: Option<CrawlRef>,
    /// The client's domain and whether its subdomains are its site.
    pub site: (String, bool),
    /// The client's `render_js` setting.
    pub render_js: RenderJs,
}

impl Attempt<'_> {
    /// The end of the page's run at the scraper, when a run asked for the fetch.
    pub fn end_run(&self, outcome: ReprocessOutcome) -> Option<Outgoing<PageEvent>> {
        self.reprocess
            .map(|run| super::reprocess::ended(self.cause, run, Stage::Scrape, outcome))
    }
}

pub fn failure_label(f: ScrapeFailure) -> &'static str {
    match f {
        ScrapeFailure::Transient => "transient",
        ScrapeFailure::Permanent => "permanent",
        ScrapeFailure::RobotsDisallowed => "robots_disallowed",
        ScrapeFailure::UnsupportedContentType => "unsupported_content_type",
        ScrapeFailure::BlockedAddress => "blocked_address",
    }
}
