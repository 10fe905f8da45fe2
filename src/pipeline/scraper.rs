//! The scraper stage: `pages.discovered` and `pages.refresh_requested` in; the page fetched
//! politely and safely; `pages.scraped` + `pages.content_changed`, `pages.unchanged`,
//! `pages.removed` or `pages.scrape_failed` out.
//!
//! What the page was before comes from the PAGES stream itself, not from the projection, so a
//! lagging read model can never cause a wrong comparison: the last `pages.scraped` of the page
//! gives the validators for a conditional GET, the last `pages.content_changed` gives the
//! fingerprint to compare and the version to count from (direct get of the last message on
//! each subject). Output events carry deduplication keys derived from the page and its input,
//! so a redelivered request publishes nothing twice.
//!
//! Main content: each fetched page goes through the local Markdown generator once; the hash of
//! its Markdown and metadata is the fingerprint, and the Markdown travels on in
//! `pages.content_changed` (`extracted`), so the Markdown stage does not extract again and
//! change detection compares exactly what would be served.
//!
//! Order: `pages.scraped` and then `pages.content_changed` are published only if the page's
//! last fetch and change on the stream are still the ones this fetch read (conditional
//! publishes); when another fetch of the page got there first, this one is retried and
//! compared with the newer change, so page versions are unique and a slow fetch never
//! publishes older content as a newer version (nor moves the page's state back).

use crate::commands::crawl;
use crate::events::pages::CrawlRef;
use crate::projections::pages as pages_read;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use reqwest::header::{HeaderMap, HeaderValue};
use sqlx::PgPool;
use url::Url;

use super::history::PageHistory;
use super::politeness::{self, HostGates, HostHealth};
use super::robots::{RobotsCache, Verdict};
use super::runtime::{Delivery, Step, StepError, page_of};
use crate::domain::content::{BlobRef, ContentHash};
use crate::domain::ids::{ClientId, PageId};
use crate::domain::markdown::{self, GENERATOR_VERSION};
use crate::domain::reprocess::output_key;
use crate::domain::url::NormalizedUrl;
use crate::domain::{html, html_bounds};
use crate::events::Event;
use crate::events::envelope::now;
use crate::events::pages::*;
use crate::infra::blobs::BlobStore;
use crate::infra::http::{FetchError, Fetched, HttpClient};
use crate::infra::limits::SharedRates;
use crate::infra::publish::{Outgoing, PublishError, Publisher};
use crate::infra::robots_store::RobotsStore;
use crate::projections::clients as clients_read;

/// How soon a fetch whose change lost the race to another fetch of the page is tried again.
const CONFLICT_RETRY: Duration = Duration::from_millis(200);

/// Settings of the scraper.
#[derive(Clone, Debug)]
pub struct ScraperConfig {
    pub max_body_bytes: usize,
    pub per_host_concurrency: usize,
    pub robots_agent: String,
    pub robots_ttl: Duration,
}

/// The scraper step, shared by its two consumers.
pub struct Scraper {
    http: HttpClient,
    robots: RobotsCache,
    gates: HostGates,
    health: HostHealth,
    blobs: BlobStore,
    publisher: Publisher,
    history: PageHistory,
    db: PgPool,
    max_body_bytes: usize,
}

/// What the stream knows of a page.
struct Previous {
    scraped: Option<Scraped>,
    changed: Option<ContentChanged>,
    /// The stream sequences of `scraped` and `changed` (0: none): a new fetch and change are
    /// published only if these are still the page's last.
    scraped_seq: u64,
    changed_seq: u64,
}

impl Scraper {
    pub async fn new(
        js: &jetstream::Context,
        http: HttpClient,
        db: PgPool,
        blobs: BlobStore,
        config: &ScraperConfig,
    ) -> Result<Self, String> {
        let history = PageHistory::open(js).await?;
        Ok(Self {
            robots: RobotsCache::new(http.clone(), &config.robots_agent, config.robots_ttl)
                .with_store(RobotsStore::open(js).await.map_err(|e| e.to_string())?),
            gates: HostGates::new(config.per_host_concurrency)
                .with_shared(SharedRates::open(js, "host").await?, http.timeout()),
            health: HostHealth::default(),
            http,
            blobs,
            publisher: Publisher::new(js.clone()),
            history,
            db,
            max_body_bytes: config.max_body_bytes,
        })
    }

    async fn previous(&self, client: ClientId, page: PageId) -> Result<Previous, StepError> {
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

    async fn publish(&self, out: Vec<Outgoing<PageEvent>>) -> Result<(), StepError> {
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
    async fn failed(
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

    async fn scrape(
        &self,
        at: &Attempt<'_>,
        client: ClientId,
        crawl_rate: u32,
    ) -> Result<(), StepError> {
        let target: Url = at.url.as_url().clone();
        let host = target.host_str().unwrap_or_default().to_owned();
        let _turn = match self.admit(at, &target, &host, crawl_rate).await {
            ControlFlow::Continue(turn) => turn,
            ControlFlow::Break(ended) => return ended,
        };
        let prev = self.previous(client, at.page).await?;
        let started = Instant::now();
        // Reprocessing fetches the page whole, whatever the validators say; so does a crawl
        // (it reads the page's links).
        let conditional = if at.reprocess.is_some() || at.crawl.is_some() {
            HeaderMap::new()
        } else {
            validators(&prev)
        };
        let fetched = match self
            .http
            .get_with(at.url.as_str(), self.max_body_bytes, conditional)
            .await
        {
            Ok(f) => {
                self.health.answered(&host);
                f
            }
            Err(e) if e.is_transient() => {
                // A host that keeps failing is backed off as a host, not page by page.
                let backoff = self.health.failed(&host);
                return self
                    .failed(at, ScrapeFailure::Transient, e.to_string(), None, backoff)
                    .await;
            }
            Err(e) => {
                return self
                    .failed(at, refusal(&e), e.to_string(), None, None)
                    .await;
            }
        };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.outcome(at, fetched, prev, duration_ms).await
    }

    /// Whether the page may be fetched now: robots.txt allows it, its host is not backed off,
    /// and the host's politeness gives a turn (held until the fetch is done). Otherwise the
    /// attempt ends here, with the result given.
    async fn admit(
        &self,
        at: &Attempt<'_>,
        target: &Url,
        host: &str,
        crawl_rate: u32,
    ) -> ControlFlow<Result<(), StepError>, politeness::Turn> {
        let crawl_delay = match self.robots.check(target).await {
            Verdict::Allowed { crawl_delay } => crawl_delay,
            Verdict::Disallowed => {
                let message = "robots.txt disallows this page for ai-cache".to_owned();
                let failure = ScrapeFailure::RobotsDisallowed;
                return ControlFlow::Break(self.failed(at, failure, message, None, None).await);
            }
            Verdict::Deferred {
                retry_after,
                reason,
            } => {
                let failure = ScrapeFailure::Transient;
                let ended = self.failed(at, failure, reason, None, Some(retry_after));
                return ControlFlow::Break(ended.await);
            }
            Verdict::Refused(e) => {
                let ended = self.failed(at, refusal(&e), e.to_string(), None, None);
                return ControlFlow::Break(ended.await);
            }
        };
        if let Some(wait) = self.health.backed_off(host) {
            let message = format!(
                "{host} does not answer: backed off for {} s before it is tried again",
                wait.as_secs().max(1)
            );
            let ended = self.failed(at, ScrapeFailure::Transient, message, None, Some(wait));
            return ControlFlow::Break(ended.await);
        }
        match self
            .gates
            .turn(host, politeness::interval(crawl_rate, crawl_delay))
            .await
        {
            Ok(turn) => ControlFlow::Continue(turn),
            // Not a failure: the host's politeness budget is spent for now.
            Err(wait) => ControlFlow::Break(Err(StepError::deferred(
                format!("waiting for a turn at {host}"),
                wait,
            ))),
        }
    }

    async fn outcome(
        &self,
        at: &Attempt<'_>,
        fetched: Fetched,
        prev: Previous,
        duration_ms: u64,
    ) -> Result<(), StepError> {
        let status = fetched.status;
        let key = |kind: &str| format!("{kind}:{}:{}", at.page, at.cause.meta.id);
        match status {
            304 if prev.changed.is_some() => {
                let unchanged = Unchanged {
                    reason: UnchangedReason::NotModified,
                    http_status: 304,
                    fingerprint: prev.changed.map(|c| c.fingerprint),
                    fetched_at: now(),
                };
                let event = Event::caused_by(at.cause, PageEvent::Unchanged(unchanged));
                metrics::counter!("aicache_scraper_fetches_total", "outcome" => "not_modified")
                    .increment(1);
                self.publish(vec![Outgoing::keyed(event, key("unchanged"))])
                    .await
            }
            404 | 410 => {
                let removed = Removed {
                    http_status: Some(status),
                    reason: format!("the origin answered HTTP {status}"),
                };
                let event = Event::caused_by(at.cause, PageEvent::Removed(removed));
                metrics::counter!("aicache_scraper_fetches_total", "outcome" => "removed")
                    .increment(1);
                let mut out = vec![Outgoing::keyed(event, key("removed"))];
                out.extend(at.end_run(ReprocessOutcome::Removed));
                self.publish(out).await
            }
            429 | 500..=599 => {
                let message = format!("the origin answered HTTP {status}");
                self.failed(
                    at,
                    ScrapeFailure::Transient,
                    message,
                    Some(status),
                    retry_after(&fetched.headers),
                )
                .await
            }
            200..=299 => self.content(at, fetched, prev, duration_ms).await,
            _ => {
                let message = format!("the origin answered HTTP {status}");
                self.failed(at, ScrapeFailure::Permanent, message, Some(status), None)
                    .await
            }
        }
    }

    async fn content(
        &self,
        at: &Attempt<'_>,
        fetched: Fetched,
        prev: Previous,
        duration_ms: u64,
    ) -> Result<(), StepError> {
        let header = |name| {
            fetched
                .headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let status = fetched.status;
        if !html::is_html(content_type.as_deref()) {
            let message = format!("not HTML: {}", content_type.unwrap_or_default());
            let failure = ScrapeFailure::UnsupportedContentType;
            return self.failed(at, failure, message, Some(status), None).await;
        }
        let (etag, last_modified) = (
            header(reqwest::header::ETAG),
            header(reqwest::header::LAST_MODIFIED),
        );
        let links = at.crawl.is_some_and(|c| c.depth < c.max_depth);
        let parsed = parse(fetched.body, content_type, at.url.to_string(), links).await?;
        let (text, extracted, links) = match parsed {
            Ok(parsed) => parsed,
            Err(too_complex) => {
                let message = format!("{too_complex}: refused unparsed");
                let failure = ScrapeFailure::Permanent;
                return self.failed(at, failure, message, Some(status), None).await;
            }
        };
        let fingerprint = extracted.fingerprint();
        let same = prev
            .changed
            .as_ref()
            .is_some_and(|c| c.fingerprint == fingerprint);
        let forced = at.reprocess.is_some_and(|r| r.force);
        if same && !forced {
            self.unchanged(at, status, fingerprint).await?;
            return self.follow(at, &links).await;
        }
        let page = FetchedPage {
            status,
            etag,
            last_modified,
            text,
            extracted,
            fingerprint,
            duration_ms,
        };
        self.changed(at, page, prev, same).await?;
        self.follow(at, &links).await
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
struct FetchedPage {
    status: u16,
    etag: Option<String>,
    last_modified: Option<String>,
    /// The HTML, decoded to UTF-8.
    text: String,
    /// Its main content, as the Markdown stage would make it.
    extracted: markdown::Generated,
    /// The fingerprint of `extracted`.
    fingerprint: ContentHash,
    duration_ms: u64,
}

/// Decodes the body and extracts its main content with the local Markdown generator (the
/// one definition of main content: its fingerprint is what change detection compares, and
/// the Markdown stage uses the result rather than extracting again). CPU work on a non-Send
/// document, so off the async threads; HTML beyond the generator's bounds is refused (the
/// bound it broke).
#[allow(clippy::type_complexity)]
async fn parse(
    body: Vec<u8>,
    content_type: Option<String>,
    url: String,
    links: bool,
) -> Result<Result<(String, markdown::Generated, Vec<Url>), html_bounds::TooComplex>, StepError> {
    tokio::task::spawn_blocking(move || {
        let (text, _) = html::decode(&body, content_type.as_deref());
        let extracted = markdown::generate(&text, &url)?;
        // Links are read only for a crawl, and only from a page the generator's bounds let
        // through.
        let links = match (links, Url::parse(&url)) {
            (true, Ok(page)) => {
                crate::domain::links::followable(&text, &page, crawl::MAX_LINKS_PER_PAGE)
            }
            _ => Vec::new(),
        };
        Ok((text, extracted, links))
    })
    .await
    .map_err(StepError::transient)
}

/// One request to scrape a page: what caused it, which delivery this is, the page.
struct Attempt<'a> {
    cause: &'a Event<PageEvent>,
    delivery: &'a Delivery,
    page: PageId,
    url: NormalizedUrl,
    /// The reprocessing run that asked for the fetch.
    reprocess: Option<&'a Reprocess>,
    /// The crawl whose page this is, when a crawl's discovery asked for the fetch.
    crawl: Option<CrawlRef>,
    /// The client's domain and whether its subdomains are its site.
    site: (String, bool),
}

impl Attempt<'_> {
    /// The end of the page's run at the scraper, when a run asked for the fetch.
    fn end_run(&self, outcome: ReprocessOutcome) -> Option<Outgoing<PageEvent>> {
        self.reprocess
            .map(|run| super::reprocess::ended(self.cause, run, Stage::Scrape, outcome))
    }
}

/// `If-None-Match` / `If-Modified-Since` from the last fetch, when there is content to keep.
fn validators(prev: &Previous) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let (Some(scraped), Some(_)) = (&prev.scraped, &prev.changed) {
        let pairs = [
            (reqwest::header::IF_NONE_MATCH, &scraped.etag),
            (reqwest::header::IF_MODIFIED_SINCE, &scraped.last_modified),
        ];
        for (name, value) in pairs {
            if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(name, v);
            }
        }
    }
    headers
}

fn refusal(e: &FetchError) -> ScrapeFailure {
    match e {
        FetchError::BlockedAddress(_) => ScrapeFailure::BlockedAddress,
        _ => ScrapeFailure::Permanent,
    }
}

fn failure_label(f: ScrapeFailure) -> &'static str {
    match f {
        ScrapeFailure::Transient => "transient",
        ScrapeFailure::Permanent => "permanent",
        ScrapeFailure::RobotsDisallowed => "robots_disallowed",
        ScrapeFailure::UnsupportedContentType => "unsupported_content_type",
        ScrapeFailure::BlockedAddress => "blocked_address",
    }
}

/// `Retry-After` in seconds or as an HTTP date, capped at an hour.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let secs = match v.parse::<u64>() {
        Ok(secs) => secs,
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            u64::try_from((at.timestamp() - chrono::Utc::now().timestamp()).max(0)).ok()?
        }
    };
    Some(Duration::from_secs(secs.min(3600)))
}

impl Step<PageEvent> for Scraper {
    async fn handle(&self, event: Event<PageEvent>, delivery: &Delivery) -> Result<(), StepError> {
        let (client, page) = (event.meta.client_id, page_of(&event)?);
        let url = match &event.payload {
            PageEvent::Discovered(d) => d.url.clone(),
            PageEvent::RefreshRequested(_) => match self.history.url(client, page).await? {
                Some(url) => url,
                None => {
                    return Err(StepError::permanent(
                        "refresh requested for a page that was never discovered",
                    ));
                }
            },
            other => return Err(StepError::unhandled("scraper", other.event_type_name())),
        };
        let settings = clients_read::find(&self.db, client.as_uuid())
            .await
            .map_err(StepError::transient)?;
        let Some(settings) = settings else {
            // The client was deleted: nothing to do.
            tracing::info!(client.id = %client, page.id = %page, "client gone: request dropped");
            return Ok(());
        };
        if !settings.is_active {
            tracing::info!(client.id = %client, page.id = %page, "client inactive: request dropped");
            return Ok(());
        }
        let rate = u32::try_from(settings.crawl_rate_per_minute).unwrap_or(60);
        let reprocess = match &event.payload {
            PageEvent::RefreshRequested(r) => r.reprocess.as_ref(),
            _ => None,
        };
        let crawl = match &event.payload {
            PageEvent::Discovered(d) => d.crawl,
            _ => None,
        };
        let attempt = Attempt {
            cause: &event,
            delivery,
            page,
            url,
            reprocess,
            crawl,
            site: (settings.domain.clone(), settings.allow_subdomains),
        };
        self.scrape(&attempt, client, rate).await
    }
}
