//! The `renderer-js` role: `pages.render_requested` in; the page run in a browser
//! (`infra::chromium`); `pages.rendered_js`, then what a fetch leaves (`landing`:
//! `pages.scraped` + `pages.content_changed`, or `pages.unchanged`) out, made from the
//! rendered document, so change detection, Markdown and minimal HTML work on it as on any
//! fetched page.
//!
//! Every request the page makes is answered here, never by the browser's own network stack:
//! the page's document is the HTML the scraper fetched (the page is fetched once, under the
//! scraper's politeness); media, trackers, sub-documents, other schemes and methods that
//! could change something are refused (`domain::render_js::judge_request`); everything else
//! goes through the guarded client (`infra::http`: public addresses only unless
//! `ALLOW_PRIVATE_NETWORKS`, `FETCH_RESOLVE` honoured) at the host's pace, shared with the
//! scraper through the `limits` bucket. Scripts and stylesheets are kept a few minutes, so
//! a site's application bundle is fetched once for many pages.
//!
//! A render ends when the network has been idle for half a second (or the client's
//! `render_wait_for` selector is there), or at the time budget: then scripts are stopped and
//! the document is taken as it is (`settled: false`). A browser that crashed or hung fails
//! the page (retried, then dead-lettered like any failure) and is replaced.
//!
//! Order: a request older than the page's last `pages.render_requested` or `pages.scraped`
//! is superseded (dropped); past that check, `landing`'s conditional publishes hold.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::browser::{
    SetDownloadBehaviorBehavior, SetDownloadBehaviorParams,
};
use chromiumoxide::cdp::browser_protocol::dom::GetOuterHtmlParams;
use chromiumoxide::cdp::browser_protocol::emulation::SetScriptExecutionDisabledParams;
use chromiumoxide::cdp::browser_protocol::fetch::{
    self, EventRequestPaused, FailRequestParams, FulfillRequestParams, HeaderEntry, RequestPattern,
    RequestStage,
};
use chromiumoxide::cdp::browser_protocol::network::ErrorReason;
use chromiumoxide::cdp::browser_protocol::page::{
    EventJavascriptDialogOpening, HandleJavaScriptDialogParams, NavigateParams,
};
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, CreateTargetParams,
};
use chromiumoxide::cdp::js_protocol::runtime::TerminateExecutionParams;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sqlx::PgPool;

use super::landing::{self, Attempt, FetchedPage, Landing, Previous};
use super::politeness::{self, HostGates};
use super::runtime::{Delivery, Step, StepError, page_of};
use crate::domain::render_js::{self, RenderJs, ResourceKind};
use crate::events::Event;
use crate::events::pages::*;
use crate::infra::blobs::BlobStore;
use crate::infra::chromium::{BrowserError, Chromium, Instance};
use crate::infra::http::{FetchError, HttpClient};
use crate::infra::limits::SharedRates;
use crate::infra::publish::Outgoing;
use crate::projections::clients as clients_read;

/// Settings of the role.
#[derive(Clone, Debug)]
pub struct RenderConfig {
    /// The longest a page renders; then it is taken as it is.
    pub timeout: Duration,
    /// Pages this process renders a minute at most.
    pub pages_per_minute: u32,
    /// Largest answer to one of a page's requests.
    pub max_resource_bytes: usize,
    /// Places among a host's fetches at once (the scraper's setting).
    pub per_host_concurrency: usize,
}

/// How long the network must be quiet for a page to be settled.
const QUIET: Duration = Duration::from_millis(500);
/// How often a render looks whether the page settled.
const POLL: Duration = Duration::from_millis(100);
/// How long past its budget a page may take before its browser is taken for hung.
const HANG_GRACE: Duration = Duration::from_secs(10);
/// How long the browser has for one housekeeping command (a context, the document).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The step.
pub struct RendererJs {
    chromium: Arc<Chromium>,
    http: HttpClient,
    gates: Arc<HostGates>,
    landing: Landing,
    db: PgPool,
    pace: governor::DefaultDirectRateLimiter,
    cache: Arc<ResourceCache>,
    config: RenderConfig,
}

impl RendererJs {
    pub async fn new(
        js: &async_nats::jetstream::Context,
        http: HttpClient,
        db: PgPool,
        blobs: BlobStore,
        chromium: Arc<Chromium>,
        config: RenderConfig,
    ) -> Result<Self, String> {
        let per_minute = NonZeroU32::new(config.pages_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Ok(Self {
            gates: Arc::new(
                HostGates::new(config.per_host_concurrency)
                    .with_shared(SharedRates::open(js, "host").await?, http.timeout()),
            ),
            landing: Landing::new(js, db.clone(), blobs).await?,
            pace: governor::RateLimiter::direct(governor::Quota::per_minute(per_minute)),
            cache: Arc::new(ResourceCache::default()),
            chromium,
            http,
            db,
            config,
        })
    }

    /// Whether a newer fetch of the page came after this request (then this one is
    /// superseded): the page's last `pages.render_requested` is not this one, or a
    /// `pages.scraped` came after it.
    async fn superseded(
        &self,
        event: &Event<PageEvent>,
        page: crate::domain::ids::PageId,
        prev: &Previous,
    ) -> Result<bool, StepError> {
        let client = event.meta.client_id;
        let last = self
            .landing
            .history()
            .last_event("pages.render_requested", client, page)
            .await?;
        let Some((requested_seq, last)) = last else {
            return Ok(false);
        };
        if last.meta.id != event.meta.id {
            return Ok(true);
        }
        Ok(prev.scraped_seq > requested_seq)
    }
}

impl Step<PageEvent> for RendererJs {
    async fn handle(&self, event: Event<PageEvent>, delivery: &Delivery) -> Result<(), StepError> {
        let PageEvent::RenderRequested(request) = &event.payload else {
            return Err(StepError::unhandled("renderer-js", event.event_type()));
        };
        let (client, page) = (event.meta.client_id, page_of(&event)?);
        let Some(settings) = clients_read::find(&self.db, client.as_uuid())
            .await
            .map_err(StepError::transient)?
            .filter(|c| c.is_active)
        else {
            tracing::info!(client.id = %client, page.id = %page, "client gone or inactive: render dropped");
            return Ok(());
        };
        // What the stream knows of the page: whether this request is still its newest, and
        // what the render's outcome is compared with and published after.
        let prev = self.landing.previous(client, page).await?;
        if self.superseded(&event, page, &prev).await? {
            metrics::counter!("aicache_superseded_total", "stage" => "renderer-js").increment(1);
            return Ok(());
        }
        let at = Attempt {
            cause: &event,
            delivery,
            page,
            url: request.url.clone(),
            reprocess: request.reprocess.as_ref(),
            crawl: request.crawl,
            site: (settings.domain.clone(), settings.allow_subdomains),
            render_js: RenderJs::parse(&settings.render_js),
        };
        let html =
            super::required_blob(self.landing.blobs(), &request.raw.hash, "fetched HTML").await?;
        self.pace.until_ready().await;
        let job = Job {
            url: request.url.to_string(),
            html: Arc::new(html),
            wait_for: settings.render_wait_for.clone(),
            interval: politeness::interval(
                u32::try_from(settings.crawl_rate_per_minute).unwrap_or(60),
                None,
            ),
        };
        let rendered = match self.render(&job).await {
            Ok(rendered) => rendered,
            Err(e) => {
                metrics::counter!("aicache_render_pages_total", "outcome" => "failed").increment(1);
                let message = format!("rendering failed: {e}");
                return self
                    .landing
                    .failed(&at, ScrapeFailure::Transient, message, None, None)
                    .await;
            }
        };
        let links = request.crawl.is_some_and(|c| c.depth < c.max_depth);
        let parsed = landing::parse(
            rendered.html.into_bytes(),
            Some("text/html; charset=utf-8".into()),
            request.url.to_string(),
            links,
            RenderJs::Never,
        );
        let parsed = match parsed.await? {
            Ok(parsed) => parsed,
            Err(too_complex) => {
                let message = format!("the rendered page: {too_complex}: refused unparsed");
                return self
                    .landing
                    .failed(
                        &at,
                        ScrapeFailure::Permanent,
                        message,
                        Some(request.http_status),
                        None,
                    )
                    .await;
            }
        };
        let stored = self
            .landing
            .blobs()
            .put(parsed.text.as_bytes())
            .await
            .map_err(StepError::transient)?;
        let fingerprint = parsed.extracted.fingerprint();
        let duration_ms = u64::try_from(rendered.duration.as_millis()).unwrap_or(u64::MAX);
        let done = RenderedJs {
            rendered: stored,
            fingerprint: fingerprint.clone(),
            settled: rendered.settled,
            requests: rendered.requests,
            refused: rendered.refused,
            duration_ms,
        };
        let outcome = if rendered.settled {
            "settled"
        } else {
            "budget"
        };
        metrics::counter!("aicache_render_pages_total", "outcome" => outcome).increment(1);
        metrics::histogram!("aicache_render_seconds").record(rendered.duration.as_secs_f64());
        let key = format!("rendered_js:{page}:{}", event.meta.id);
        let done = Event::caused_by(&event, PageEvent::RenderedJs(done));
        self.landing
            .publish(vec![Outgoing::keyed(done, key)])
            .await?;
        let fetched = FetchedPage {
            status: request.http_status,
            // A shell's validators say nothing of what its scripts load: none are kept, so
            // the next fetch is whole and rendered again.
            etag: None,
            last_modified: None,
            text: parsed.text,
            extracted: parsed.extracted,
            fingerprint,
            duration_ms: request.duration_ms.saturating_add(duration_ms),
        };
        self.landing.land(&at, fetched, prev, &parsed.links).await
    }
}

/// One page to render.
struct Job {
    url: String,
    /// The page's document as the scraper fetched it.
    html: Arc<Vec<u8>>,
    wait_for: Option<String>,
    /// The spacing of requests to a host (the client's crawl rate).
    interval: Duration,
}

/// What the browser made of a page.
struct Rendered {
    html: String,
    settled: bool,
    requests: u32,
    refused: u32,
    duration: Duration,
}

/// The requests of one page in flight, for "the network is idle".
#[derive(Default)]
struct Traffic {
    in_flight: AtomicUsize,
    last_change: Mutex<Option<Instant>>,
    requests: AtomicU32,
    refused: AtomicU32,
    document_served: AtomicBool,
}

impl Traffic {
    fn begin(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }

    fn touch(&self) {
        *self.last_change.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// How long no request has been in flight.
    fn quiet_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        self.last_change
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(Duration::MAX, |at| at.elapsed())
    }
}

impl RendererJs {
    /// Renders a page in the browser; a browser that hung is replaced.
    async fn render(&self, job: &Job) -> Result<Rendered, BrowserError> {
        let lease = self.chromium.lease().await?;
        let started = Instant::now();
        let deadline = started + self.config.timeout;
        let outcome = tokio::time::timeout(
            self.config.timeout + HANG_GRACE,
            self.render_in(&lease.instance, job, deadline),
        )
        .await;
        let result = match outcome {
            Err(_) => {
                self.chromium
                    .retire(&lease.instance, "a page did not end within its budget");
                Err(BrowserError::Protocol(
                    "the browser did not answer within the page's time budget".into(),
                ))
            }
            Ok(Err(e)) if lease.instance.is_dead() => Err(BrowserError::Protocol(format!(
                "the browser exited during the render ({e})"
            ))),
            Ok(result) => result,
        };
        self.chromium.check_memory(&lease.instance);
        result.map(|(html, settled, traffic)| Rendered {
            html,
            settled,
            requests: traffic.requests.load(Ordering::Relaxed),
            refused: traffic.refused.load(Ordering::Relaxed),
            duration: started.elapsed(),
        })
    }

    /// In a fresh browser context, thrown away after.
    async fn render_in(
        &self,
        instance: &Instance,
        job: &Job,
        deadline: Instant,
    ) -> Result<(String, bool, Arc<Traffic>), BrowserError> {
        let browser = instance.browser()?;
        let context =
            within(browser.create_browser_context(CreateBrowserContextParams::default())).await?;
        let result = self.render_page(instance, &context, job, deadline).await;
        let _ =
            tokio::time::timeout(COMMAND_TIMEOUT, browser.dispose_browser_context(context)).await;
        result
    }

    async fn render_page(
        &self,
        instance: &Instance,
        context: &chromiumoxide::cdp::browser_protocol::browser::BrowserContextId,
        job: &Job,
        deadline: Instant,
    ) -> Result<(String, bool, Arc<Traffic>), BrowserError> {
        let browser = instance.browser()?;
        let target = CreateTargetParams::builder()
            .url("about:blank")
            .browser_context_id(context.clone())
            .build()
            .map_err(BrowserError::Protocol)?;
        let page = within(browser.new_page(target)).await?;
        let deny = SetDownloadBehaviorParams::builder()
            .behavior(SetDownloadBehaviorBehavior::Deny)
            .browser_context_id(context.clone())
            .build()
            .map_err(BrowserError::Protocol)?;
        within(browser.execute(deny)).await?;
        let paused = within(page.event_listener::<EventRequestPaused>()).await?;
        let dialogs = within(page.event_listener::<EventJavascriptDialogOpening>()).await?;
        let every = RequestPattern::builder()
            .url_pattern("*")
            .request_stage(RequestStage::Request)
            .build();
        within(page.execute(fetch::EnableParams::builder().pattern(every).build())).await?;
        let traffic = Arc::new(Traffic::default());
        let answering = tokio::spawn(answer_requests(
            paused,
            page.clone(),
            Arc::new(Answerer {
                http: self.http.clone(),
                gates: Arc::clone(&self.gates),
                cache: Arc::clone(&self.cache),
                traffic: Arc::clone(&traffic),
                url: job.url.clone(),
                html: Arc::clone(&job.html),
                interval: job.interval,
                deadline,
                max_bytes: self.config.max_resource_bytes,
            }),
        ));
        let dismissing = tokio::spawn(dismiss_dialogs(dialogs, page.clone()));
        let result = async {
            within(page.execute(NavigateParams::new(job.url.clone()))).await?;
            let settled = settle(&page, &traffic, job.wait_for.as_deref(), deadline).await;
            if !settled {
                // Cut at the budget: scripts stop where they are, the document is taken.
                let _ = tokio::time::timeout(
                    COMMAND_TIMEOUT,
                    page.execute(TerminateExecutionParams::default()),
                )
                .await;
                let _ = tokio::time::timeout(
                    COMMAND_TIMEOUT,
                    page.execute(SetScriptExecutionDisabledParams::new(true)),
                )
                .await;
            }
            let html = document(&page).await?;
            Ok((html, settled, Arc::clone(&traffic)))
        }
        .await;
        answering.abort();
        dismissing.abort();
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, page.close()).await;
        result
    }
}

/// A browser command, bounded in time and its error made ours.
async fn within<T>(
    command: impl std::future::Future<Output = chromiumoxide::Result<T>>,
) -> Result<T, BrowserError> {
    tokio::time::timeout(COMMAND_TIMEOUT, command)
        .await
        .map_err(|_| BrowserError::Protocol("the browser did not answer".into()))?
        .map_err(|e| BrowserError::Protocol(e.to_string()))
}

/// Waits until the page is settled (the selector is there, or the document is loaded and the
/// network quiet), or the deadline; says whether it settled.
async fn settle(page: &Page, traffic: &Traffic, wait_for: Option<&str>, deadline: Instant) -> bool {
    let probe = match wait_for {
        Some(selector) => format!(
            "document.querySelector({}) !== null",
            serde_json::Value::String(selector.to_owned())
        ),
        None => "document.readyState === 'complete'".to_owned(),
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
        if wait_for.is_none() && traffic.quiet_for() < QUIET {
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = tokio::time::timeout(left, page.evaluate(probe.as_str())).await;
        if let Ok(Ok(result)) = answer
            && result.into_value::<bool>().unwrap_or(false)
        {
            return true;
        }
    }
}

/// The document as it is now, serialized (without running any script).
async fn document(page: &Page) -> Result<String, BrowserError> {
    let root = within(page.get_document()).await?;
    let outer = GetOuterHtmlParams::builder().node_id(root.node_id).build();
    Ok(within(page.execute(outer)).await?.result.outer_html)
}

async fn dismiss_dialogs(
    mut dialogs: chromiumoxide::listeners::EventStream<EventJavascriptDialogOpening>,
    page: Page,
) {
    while dialogs.next().await.is_some() {
        let _ = page.execute(HandleJavaScriptDialogParams::new(false)).await;
    }
}

/// Answers a page's requests.
struct Answerer {
    http: HttpClient,
    gates: Arc<HostGates>,
    cache: Arc<ResourceCache>,
    traffic: Arc<Traffic>,
    url: String,
    html: Arc<Vec<u8>>,
    interval: Duration,
    deadline: Instant,
    max_bytes: usize,
}

async fn answer_requests(
    mut paused: chromiumoxide::listeners::EventStream<EventRequestPaused>,
    page: Page,
    answerer: Arc<Answerer>,
) {
    let mut answering = tokio::task::JoinSet::new();
    while let Some(event) = paused.next().await {
        let (page, answerer) = (page.clone(), Arc::clone(&answerer));
        answerer.traffic.begin();
        answering.spawn(async move {
            let answer = answerer.answer(&event).await;
            let id = event.request_id.clone();
            let _ = match answer {
                Answer::Fulfil {
                    status,
                    headers,
                    body,
                } => {
                    let mut fulfil = FulfillRequestParams::builder()
                        .request_id(id)
                        .response_code(i64::from(status))
                        .response_headers(headers)
                        .body(BASE64.encode(&*body));
                    if status == 200 {
                        fulfil = fulfil.response_phrase("OK");
                    }
                    match fulfil.build() {
                        Ok(params) => page.execute(params).await.map(|_| ()),
                        Err(_) => Ok(()),
                    }
                }
                Answer::Fail(reason) => page
                    .execute(FailRequestParams::new(id, reason))
                    .await
                    .map(|_| ()),
            };
            answerer.traffic.end();
        });
        // Finished answers are collected as new requests come.
        while answering.try_join_next().is_some() {}
    }
}

/// How a request is answered.
enum Answer {
    Fulfil {
        status: u16,
        headers: Vec<HeaderEntry>,
        body: Arc<Vec<u8>>,
    },
    Fail(ErrorReason),
}

impl Answerer {
    async fn answer(&self, event: &EventRequestPaused) -> Answer {
        let request = &event.request;
        let kind = ResourceKind::from_protocol(event.resource_type.as_ref());
        let Ok(url) = url::Url::parse(&request.url) else {
            return self.refuse();
        };
        if kind == ResourceKind::Document {
            let mut page = url.clone();
            page.set_fragment(None);
            if page.as_str() == self.url
                && !self.traffic.document_served.swap(true, Ordering::Relaxed)
            {
                return Answer::Fulfil {
                    status: 200,
                    headers: vec![HeaderEntry::new("content-type", "text/html; charset=utf-8")],
                    body: Arc::clone(&self.html),
                };
            }
            // Frames and navigations away: not the page's text.
            return self.refuse();
        }
        if render_js::judge_request(kind, &request.method, &url).is_err() {
            return self.refuse();
        }
        let cacheable = request.method == "GET"
            && matches!(kind, ResourceKind::Script | ResourceKind::Stylesheet);
        if cacheable && let Some(hit) = self.cache.get(url.as_str()) {
            return hit;
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        let left = self.deadline.saturating_duration_since(Instant::now());
        let turn = match tokio::time::timeout(left, self.gates.turn(&host, self.interval)).await {
            Ok(Ok(turn)) => turn,
            // No turn at the host before the page's budget ends.
            _ => return Answer::Fail(ErrorReason::TimedOut),
        };
        let method =
            reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let fetched = self
            .http
            .request(
                method,
                url.as_str(),
                forwarded(request.headers.inner()),
                post_body(request),
                self.max_bytes,
            )
            .await;
        drop(turn);
        match fetched {
            Ok(fetched) => {
                let answer = Answer::Fulfil {
                    status: fetched.status,
                    headers: answered(&fetched.headers),
                    body: Arc::new(fetched.body),
                };
                if cacheable && fetched.status == 200 {
                    self.cache.put(url.as_str(), &answer);
                }
                answer
            }
            Err(FetchError::BlockedAddress(_) | FetchError::Scheme(_)) => self.refuse(),
            Err(FetchError::Timeout) => Answer::Fail(ErrorReason::TimedOut),
            Err(_) => Answer::Fail(ErrorReason::Failed),
        }
    }

    fn refuse(&self) -> Answer {
        self.traffic.refused.fetch_add(1, Ordering::Relaxed);
        Answer::Fail(ErrorReason::BlockedByClient)
    }
}

/// The request headers passed on: not the browser's identity, cookies, encodings or
/// connection headers (the guarded client sets its own).
fn forwarded(headers: &serde_json::Value) -> HeaderMap {
    const DROPPED: [&str; 10] = [
        "host",
        "cookie",
        "user-agent",
        "accept-encoding",
        "connection",
        "content-length",
        "keep-alive",
        "te",
        "upgrade",
        "transfer-encoding",
    ];
    let mut map = HeaderMap::new();
    let Some(object) = headers.as_object() else {
        return map;
    };
    for (name, value) in object {
        let lower = name.to_ascii_lowercase();
        if DROPPED.contains(&lower.as_str())
            || lower.starts_with("proxy-")
            || lower.starts_with("sec-")
        {
            continue;
        }
        if let (Ok(name), Some(Ok(value))) = (
            HeaderName::from_bytes(lower.as_bytes()),
            value.as_str().map(HeaderValue::from_str),
        ) {
            map.insert(name, value);
        }
    }
    map
}

/// The answer's headers given to the browser: not cookies, lengths or encodings (the body
/// is given whole and as received).
fn answered(headers: &HeaderMap) -> Vec<HeaderEntry> {
    const DROPPED: [&str; 8] = [
        "set-cookie",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "strict-transport-security",
        "alt-svc",
    ];
    headers
        .iter()
        .filter(|(name, _)| !DROPPED.contains(&name.as_str()))
        .filter_map(|(name, value)| Some(HeaderEntry::new(name.as_str(), value.to_str().ok()?)))
        .collect()
}

/// A POST's body, from the protocol's base64 entries.
fn post_body(request: &chromiumoxide::cdp::browser_protocol::network::Request) -> Option<Vec<u8>> {
    let entries = request.post_data_entries.as_ref()?;
    let mut body = Vec::new();
    for entry in entries {
        if let Some(bytes) = &entry.bytes
            && let Ok(decoded) = BASE64.decode(bytes.as_ref() as &str)
        {
            body.extend_from_slice(&decoded);
        }
    }
    Some(body)
}

/// Scripts and stylesheets answered recently, by URL: a site's bundle is fetched once for
/// its pages rather than once per page. Bounded in bytes (oldest out first) and in age.
#[derive(Default)]
struct ResourceCache {
    inner: Mutex<CacheInner>,
}

/// An answer kept: when, its status, headers and body.
type Cached = (Instant, u16, Vec<HeaderEntry>, Arc<Vec<u8>>);

#[derive(Default)]
struct CacheInner {
    entries: HashMap<String, Cached>,
    order: VecDeque<String>,
    bytes: usize,
}

/// How long a script or stylesheet is kept.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// The most bytes kept.
const CACHE_BYTES: usize = 32 << 20;

impl ResourceCache {
    fn get(&self, url: &str) -> Option<Answer> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (at, status, headers, body) = inner.entries.get(url)?;
        (at.elapsed() < CACHE_TTL).then(|| Answer::Fulfil {
            status: *status,
            headers: headers.clone(),
            body: Arc::clone(body),
        })
    }

    fn put(&self, url: &str, answer: &Answer) {
        let Answer::Fulfil {
            status,
            headers,
            body,
        } = answer
        else {
            return;
        };
        if body.len() > CACHE_BYTES / 4 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, _, old)) = inner.entries.remove(url) {
            inner.bytes -= old.len();
            inner.order.retain(|u| u != url);
        }
        while inner.bytes + body.len() > CACHE_BYTES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some((_, _, _, old)) = inner.entries.remove(&oldest) {
                inner.bytes -= old.len();
            }
        }
        inner.bytes += body.len();
        inner.order.push_back(url.to_owned());
        inner.entries.insert(
            url.to_owned(),
            (Instant::now(), *status, headers.clone(), Arc::clone(body)),
        );
    }
}
