//! The scraper stage: `pages.discovered` and `pages.refresh_requested` in; the page fetched
//! politely and safely; `pages.scraped` + `pages.content_changed`, `pages.unchanged`,
//! `pages.removed`, `pages.scrape_failed` or, for a page that needs a browser,
//! `pages.render_requested` out.
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
//! change detection compares exactly what would be served. What is published, and the order
//! rules that keep a slow fetch from winning over a newer one, are `landing`'s.
//!
//! JavaScript: for a client with `render_js` on, the fetched page is judged
//! (`domain::render_js::decide`); a page that needs a browser is stored as fetched and handed
//! to the `renderer-js` role (`pages.render_requested`, with the reason), which lands it.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use reqwest::header::{HeaderMap, HeaderValue};
use sqlx::PgPool;
use url::Url;

use super::landing::{self, Attempt, FetchedPage, Landing, Previous};
use super::politeness::{self, HostGates, HostHealth};
use super::robots::{RobotsCache, Verdict};
use super::runtime::{Delivery, Step, StepError, page_of};
use crate::domain::html;
use crate::domain::ids::ClientId;
use crate::domain::render_js::{self, RenderJs};
use crate::events::Event;
use crate::events::envelope::now;
use crate::events::pages::*;
use crate::infra::blobs::BlobStore;
use crate::infra::http::{FetchError, Fetched, HttpClient};
use crate::infra::limits::SharedRates;
use crate::infra::publish::Outgoing;
use crate::infra::robots_store::RobotsStore;
use crate::projections::clients as clients_read;

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
    landing: Landing,
    db: PgPool,
    max_body_bytes: usize,
}

impl Scraper {
    pub async fn new(
        js: &jetstream::Context,
        http: HttpClient,
        db: PgPool,
        blobs: BlobStore,
        config: &ScraperConfig,
    ) -> Result<Self, String> {
        Ok(Self {
            robots: RobotsCache::new(http.clone(), &config.robots_agent, config.robots_ttl)
                .with_store(RobotsStore::open(js).await.map_err(|e| e.to_string())?),
            gates: HostGates::new(config.per_host_concurrency)
                .with_shared(SharedRates::open(js, "host").await?, http.timeout()),
            health: HostHealth::default(),
            http,
            landing: Landing::new(js, db.clone(), blobs).await?,
            db,
            max_body_bytes: config.max_body_bytes,
        })
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
        let prev = self.landing.previous(client, at.page).await?;
        let started = Instant::now();
        // Reprocessing fetches the page whole, whatever the validators say; so does a crawl
        // (it reads the page's links), and so does a client that renders (a shell's validators
        // say nothing of what its scripts load).
        let conditional =
            if at.reprocess.is_some() || at.crawl.is_some() || !at.render_js.is_never() {
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
                    .landing
                    .failed(at, ScrapeFailure::Transient, e.to_string(), None, backoff)
                    .await;
            }
            Err(e) => {
                return self
                    .landing
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
                return ControlFlow::Break(
                    self.landing.failed(at, failure, message, None, None).await,
                );
            }
            Verdict::Deferred {
                retry_after,
                reason,
            } => {
                let failure = ScrapeFailure::Transient;
                let ended = self
                    .landing
                    .failed(at, failure, reason, None, Some(retry_after));
                return ControlFlow::Break(ended.await);
            }
            Verdict::Refused(e) => {
                let ended = self
                    .landing
                    .failed(at, refusal(&e), e.to_string(), None, None);
                return ControlFlow::Break(ended.await);
            }
        };
        if let Some(wait) = self.health.backed_off(host) {
            let message = format!(
                "{host} does not answer: backed off for {} s before it is tried again",
                wait.as_secs().max(1)
            );
            let ended =
                self.landing
                    .failed(at, ScrapeFailure::Transient, message, None, Some(wait));
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
                self.landing
                    .publish(vec![Outgoing::keyed(event, key("unchanged"))])
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
                self.landing.publish(out).await
            }
            429 | 500..=599 => {
                let message = format!("the origin answered HTTP {status}");
                self.landing
                    .failed(
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
                self.landing
                    .failed(at, ScrapeFailure::Permanent, message, Some(status), None)
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
            return self
                .landing
                .failed(at, failure, message, Some(status), None)
                .await;
        }
        let (etag, last_modified) = (
            header(reqwest::header::ETAG),
            header(reqwest::header::LAST_MODIFIED),
        );
        let links = at.crawl.is_some_and(|c| c.depth < c.max_depth);
        let parsed = landing::parse(
            fetched.body,
            content_type,
            at.url.to_string(),
            links,
            at.render_js,
        );
        let parsed = match parsed.await? {
            Ok(parsed) => parsed,
            Err(too_complex) => {
                let message = format!("{too_complex}: refused unparsed");
                let failure = ScrapeFailure::Permanent;
                return self
                    .landing
                    .failed(at, failure, message, Some(status), None)
                    .await;
            }
        };
        if let Some(reason) = parsed.render {
            return self
                .request_render(at, parsed.text, status, reason, duration_ms)
                .await;
        }
        let page = FetchedPage {
            status,
            etag,
            last_modified,
            fingerprint: parsed.extracted.fingerprint(),
            text: parsed.text,
            extracted: parsed.extracted,
            duration_ms,
        };
        self.landing.land(at, page, prev, &parsed.links).await
    }

    /// The page needs a browser: stored as fetched and handed to the `renderer-js` role,
    /// which lands it (its links too, read from the rendered page).
    async fn request_render(
        &self,
        at: &Attempt<'_>,
        text: String,
        status: u16,
        reason: render_js::RenderReason,
        duration_ms: u64,
    ) -> Result<(), StepError> {
        let raw = self
            .landing
            .blobs()
            .put(text.as_bytes())
            .await
            .map_err(StepError::transient)?;
        let requested = RenderRequested {
            url: at.url.clone(),
            reason,
            raw,
            http_status: status,
            fetched_at: now(),
            duration_ms,
            reprocess: at.reprocess.cloned(),
            crawl: at.crawl,
        };
        let event = Event::caused_by(at.cause, PageEvent::RenderRequested(requested));
        let key = format!("render:{}:{}", at.page, at.cause.meta.id);
        metrics::counter!("aicache_scraper_fetches_total", "outcome" => "render_requested")
            .increment(1);
        self.landing
            .publish(vec![Outgoing::keyed(event, key)])
            .await
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
            PageEvent::RefreshRequested(_) => match self.landing.history().url(client, page).await?
            {
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
            render_js: RenderJs::parse(&settings.render_js),
        };
        self.scrape(&attempt, client, rate).await
    }
}
