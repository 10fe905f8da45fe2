//! The built-in edge: serves the cached Markdown and minimal HTML of self-hosted clients'
//! pages to AI agents, by `GET /edge/{domain}/{path}` or, when the operator routes a client's
//! domain to ai-cache, by the `Host` header. The rules of what is served are
//! `domain::edge`'s (the Cloudflare Worker's too).
//!
//! - Cached page, AI agent or `Accept: text/markdown` or a `.md` path: 200 with the content,
//!   `Vary`, `Link`, `ETag` and `Last-Modified` (and 304 for a matching conditional request).
//! - Anyone else, or a page not in the built-in store: on `/edge/...` a 302 to the page on the
//!   origin; by `Host` a 404 (the origin is the operator's proxy's business, and a redirect to
//!   the same host would loop). An unknown domain is a 404 either way.
//!
//! Every request is recorded as a visit, off the response path: a bounded queue feeds a task
//! that publishes them in batches (a full queue drops visits and counts them, it never slows a
//! response).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::{ApiError, AppState};
use crate::commands::visits::{
    DomainRule, Reporter, VisitBatches, VisitInput, VisitRejection, Visits,
};
use crate::domain::bots::{Classification, Classifier, Verification};
use crate::domain::content::BlobRef;
use crate::domain::edge::{Serve, VARY, canonical_link, link_header};
use crate::domain::front_matter::FrontMatter;
use crate::domain::ids::{ClientId, PageId};
use crate::domain::kv_key::kv_key;
use crate::domain::llms::{LLMS_FULL_TXT, LLMS_TXT};
use crate::domain::policy::{self, Answer, EdgePolicy, Price};
use crate::domain::robots_txt::ROBOTS_TXT;
use crate::domain::url::NormalizedUrl;
use crate::domain::webbotauth;
use crate::events::visits::FormatServed;
use crate::infra::edge_store::{EdgeStore, Manifest, ManifestCache};
use crate::infra::key_directory::KeyDirectories;
use crate::projections::clients as clients_read;
use crate::projections::pages as pages_read;

/// How long a domain lookup (the client and its edge policy) is remembered, so a policy
/// change applies within this; and how many are (any `Host` header can be sent: the map is
/// bounded by starting over).
const DOMAIN_TTL: Duration = Duration::from_secs(5);
const DOMAINS_MAX: usize = 10_000;
/// Visits waiting to be published; beyond this they are dropped (and counted).
const QUEUE: usize = 50_000;
/// Largest batch of visits published at once, and the longest a visit waits for one.
const BATCH: usize = 1_000;
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Most bytes of content kept in memory.
const CONTENT_CACHE_BYTES: usize = 64 << 20;

/// Served content by hash. Content is addressed by its SHA-256, so a cached entry is never
/// stale; which hash a page serves now is its manifest's business ([`ManifestCache`]: in
/// memory, dropped when the bucket says the page changed).
#[derive(Default)]
struct ContentCache {
    entries: HashMap<String, Arc<[u8]>>,
    bytes: usize,
}

impl ContentCache {
    fn get(&self, hash: &str) -> Option<Arc<[u8]>> {
        self.entries.get(hash).cloned()
    }

    fn put(&mut self, hash: &str, bytes: Arc<[u8]>) {
        if bytes.len() > CONTENT_CACHE_BYTES / 8 {
            return;
        }
        if self.bytes + bytes.len() > CONTENT_CACHE_BYTES {
            // Simple and bounded: start over (hot pages come back at once).
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += bytes.len();
        self.entries.insert(hash.to_owned(), bytes);
    }
}

/// The client a domain is served for, as the edge needs it.
struct Site {
    id: uuid::Uuid,
    policy: EdgePolicy,
}

/// A domain lookup and when it was made.
type SiteLookup = (Instant, Option<Arc<Site>>);

/// The edge's state.
pub struct Edge {
    manifests: ManifestCache,
    content: Mutex<ContentCache>,
    domains: Mutex<HashMap<String, SiteLookup>>,
    queue: mpsc::Sender<(VisitInput, Classification)>,
    visits: Visits,
    directories: KeyDirectories,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Edge")
    }
}

/// Visits the edge made: their URL is on the client's domain by construction.
struct OwnDomain;

impl DomainRule for OwnDomain {
    fn check(&self, _: uuid::Uuid, _: &NormalizedUrl) -> Result<(), VisitRejection> {
        Ok(())
    }
}

impl Edge {
    /// The edge over `store`, with its visit publisher running in the background.
    pub fn new(store: EdgeStore, visits: Visits, directories: KeyDirectories) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(publish_visits(visits.clone(), rx));
        Self {
            manifests: ManifestCache::new(store),
            domains: Mutex::new(HashMap::new()),
            content: Mutex::new(ContentCache::default()),
            queue,
            visits,
            directories,
        }
    }

    /// The client serving `domain`, remembered for a while.
    async fn client_of(
        &self,
        db: &sqlx::PgPool,
        domain: &str,
    ) -> Result<Option<Arc<Site>>, ApiError> {
        if let Some((at, client)) = self
            .domains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(domain)
            && at.elapsed() < DOMAIN_TTL
        {
            return Ok(client.clone());
        }
        let client = clients_read::find_by_domain(db, domain).await?.map(|row| {
            Arc::new(Site {
                id: row.id,
                policy: row.edge_policy.0,
            })
        });
        let mut domains = self
            .domains
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if domains.len() >= DOMAINS_MAX {
            domains.clear();
        }
        domains.insert(domain.to_owned(), (Instant::now(), client.clone()));
        Ok(client)
    }

    /// Who the visitor is: a request with a Web Bot Auth signature that verifies with a key
    /// of its agent's directory is that agent (named as the catalogue names it when known,
    /// else a bot named by its origin, whatever its user agent says); anything else keeps the
    /// user agent's classification. The agent's origin when the signature verified.
    async fn identify(
        &self,
        headers: &HeaderMap,
        visitor: Classification,
    ) -> (Classification, Option<String>) {
        // Parsed before any await: the header lookup is not `Send`.
        let parsed = {
            let header = |name: &str| -> Vec<String> {
                headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .collect()
            };
            if !webbotauth::is_signed(&header) {
                return (visitor, None);
            }
            let authority = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let request = webbotauth::Request {
                authority,
                header: &header,
            };
            webbotauth::parse(&request, Utc::now().timestamp())
        };
        let verified = match parsed {
            Ok(signature) => match self.directories.keys(&signature.directory_url()).await {
                Some(keys) => {
                    let agent = signature.agent.clone();
                    signature.verify(&keys).map(|()| agent)
                }
                None => Err(webbotauth::Refused::NoSuchKey(signature.keyid)),
            },
            Err(refused) => Err(refused),
        };
        let agent = match verified {
            Ok(agent) => agent,
            Err(refused) => {
                metrics::counter!("aicache_edge_signatures_total", "outcome" => "refused")
                    .increment(1);
                tracing::debug!(reason = %refused, "web bot auth signature not attributed");
                return (visitor, None);
            }
        };
        metrics::counter!("aicache_edge_signatures_total", "outcome" => "verified").increment(1);
        (webbotauth::attribute(visitor, &agent), Some(agent))
    }

    fn record(&self, visit: VisitInput, classification: Classification) {
        if self.queue.try_send((visit, classification)).is_err() {
            metrics::counter!("aicache_edge_visits_dropped_total").increment(1);
        }
    }
}

/// Publishes queued visits in batches until the queue closes.
async fn publish_visits(visits: Visits, mut rx: mpsc::Receiver<(VisitInput, Classification)>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = rx.recv().await;
        let Some(first) = first else { return };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(v)) => batch.push(v),
                Ok(None) | Err(_) => break,
            }
        }
        let now = Utc::now();
        let mut ready = batch
            .drain(..)
            .filter_map(|(v, classification)| {
                let client = v.client_id?;
                visits
                    .prepare_classified(
                        Reporter::Client(client),
                        v,
                        Some(classification),
                        &OwnDomain,
                        now,
                    )
                    .ok()
            })
            .collect::<Vec<_>>();
        visits.enrich(&mut ready).await;
        let ready = VisitBatches::new(ready);
        // NATS being away: retry a few times, then drop (counted) rather than grow forever.
        let mut attempt = 0;
        while let Err(e) = visits.publish(&ready).await {
            attempt += 1;
            if attempt >= 5 {
                let lost = ready.len();
                tracing::warn!(error = %e, lost, "edge visits not recorded");
                metrics::counter!("aicache_edge_visits_dropped_total").increment(lost as u64);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
        }
    }
}

/// How the request reached the edge.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `/edge/{domain}/{path}`.
    Prefixed,
    /// By the `Host` header.
    Host,
}

/// The segments of `/edge/{domain}[/{*path}]`.
#[derive(serde::Deserialize)]
pub struct EdgePath {
    domain: String,
    /// The page path without its leading `/`; absent for the home page.
    #[serde(default)]
    path: String,
}

/// `GET /edge/{domain}/{path}`, and `/edge/{domain}` or `/edge/{domain}/` for the home page.
pub async fn by_path(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(EdgePath { domain, path }): Path<EdgePath>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(
        &state,
        Mode::Prefixed,
        &domain,
        &format!("/{path}"),
        uri.query(),
        peer,
        &method,
        &headers,
    )
    .await
}

/// `host[:port]` → `host`.
fn without_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// In front of the service's own browser pages (`/dashboard`, `/docs`): a request whose
/// `Host` is a client's site is the site's (its own `/dashboard` page, say), answered by the
/// edge as any other path of it; the others reach the page.
pub async fn sites_first(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| without_port(&h.to_ascii_lowercase()).to_owned())
        .unwrap_or_default();
    if host.is_empty() || state.edge.client_of(&state.db, &host).await?.is_none() {
        return Ok(next.run(request).await);
    }
    let (parts, _) = request.into_parts();
    by_host(
        State(state),
        ConnectInfo(peer),
        parts.method,
        parts.uri,
        parts.headers,
    )
    .await
}

/// The fallback of the whole router: a request for a client's domain (by `Host`) is an edge
/// request; anything else is an unknown route.
pub async fn by_host(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // `Host` keeps its port: a site served on one has its pages stored with it.
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let host = without_port(&authority);
    let is_edge = !host.is_empty()
        && matches!(method, Method::GET | Method::HEAD)
        && state.edge.client_of(&state.db, host).await?.is_some();
    if !is_edge {
        // The service's own front page, for people who open the API in a browser.
        if uri.path() == "/" && matches!(method, Method::GET | Method::HEAD) {
            return Ok(super::dashboard::front_page());
        }
        return Err(ApiError::NotFound("no such route".into()));
    }
    serve(
        &state,
        Mode::Host,
        &authority,
        uri.path(),
        uri.query(),
        peer,
        &method,
        &headers,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    state: &AppState,
    mode: Mode,
    domain: &str,
    path: &str,
    query: Option<&str>,
    peer: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    // The domain may carry a port (a site served on one): pages are stored with it.
    let authority = domain.trim_end_matches('.').to_ascii_lowercase();
    let host = without_port(&authority);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let Some(site) = state.edge.client_of(&state.db, host).await? else {
        return Err(ApiError::NotFound(format!(
            "{host} is not a site served here"
        )));
    };
    let user_agent = header("user-agent");
    let ip = client_ip(peer, headers);
    let (visitor, signature_agent) = state
        .edge
        .identify(headers, Classifier::shipped().classify(user_agent))
        .await;
    let verification = match signature_agent {
        Some(_) => Verification::Signature,
        None => state.edge.visits.verification_at_edge(&visitor, ip).await,
    };
    let record = |url: &NormalizedUrl, response: &Response, format, charged: Option<Price>| {
        state.edge.record(
            VisitInput {
                id: None,
                client_id: Some(site.id),
                url: url.to_string(),
                user_agent: Some(user_agent.to_owned()),
                ip: Some(ip.to_string()),
                referrer: Some(header("referer").to_owned()).filter(|r| !r.is_empty()),
                timestamp: Utc::now(),
                format_served: Some(format),
                status: Some(response.status().as_u16()),
                bytes: axum::body::HttpBody::size_hint(response.body()).exact(),
                cf_worker: Some(header("cf-worker").to_owned()).filter(|w| !w.is_empty()),
                charged_price: charged.map(|p| p.to_string()),
                signature_agent: signature_agent.clone(),
            },
            visitor.clone(),
        );
        metrics::histogram!("aicache_edge_request_seconds").record(started.elapsed().as_secs_f64());
    };
    // The site's llms.txt files are public: everyone gets them, whatever the policy; so is
    // its robots.txt when the client lets ai-cache serve it (else it goes to the origin).
    if path == LLMS_TXT || path == LLMS_FULL_TXT || (path == ROBOTS_TXT && site.policy.robots_txt) {
        let file = |scheme: &str| {
            NormalizedUrl::parse(&format!("{scheme}://{authority}{path}"))
                .map_err(|_| ApiError::BadRequest(format!("{authority} is not a valid host")))
        };
        let (first, second) = match header("x-forwarded-proto") {
            "http" => ("http", "https"),
            _ => ("https", "http"),
        };
        if let (url, Some(manifest)) = cached(state, [file(first)?, file(second)?]).await? {
            let variant = Variant {
                markdown: true,
                at_markdown_path: false,
                link: None,
                content_signal: site.policy.content_signal.as_deref(),
                charged: None,
                front_matter: false,
            };
            let (response, format) = content(state, &manifest, &variant, method, headers).await?;
            record(&url, &response, format, None);
            return Ok(response);
        }
    }
    let offer = |name| Some(header(name)).filter(|v| !v.is_empty());
    let mut decision = policy::decide(
        &site.policy,
        &policy::Request {
            path,
            accept: header("accept"),
            visitor: &visitor,
            verification,
            exact_price: offer("crawler-exact-price"),
            max_price: offer("crawler-max-price"),
        },
    );
    // robots.txt is never a page: unless served above, it is the origin's, for everyone.
    if path == ROBOTS_TXT {
        decision.answer = policy::Answer::Pass;
    }
    // Pages are stored under the scheme they were imported with: the forwarded one first.
    let schemes = match header("x-forwarded-proto") {
        "http" => ["http", "https"],
        _ => ["https", "http"],
    };
    let page_url = |scheme: &str, p: &str| {
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        NormalizedUrl::parse(&format!("{scheme}://{authority}{p}{query}"))
            .map_err(|_| ApiError::BadRequest(format!("{path} is not a valid page path")))
    };
    let candidates = || -> Result<[NormalizedUrl; 2], ApiError> {
        Ok([
            page_url(schemes[0], &decision.page_path)?,
            page_url(schemes[1], &decision.page_path)?,
        ])
    };
    let prefix = match mode {
        Mode::Prefixed => format!("/edge/{authority}"),
        Mode::Host => String::new(),
    };
    let link = link_header(&prefix, &decision.page_path, query);
    let mut charged_price = None;
    let (url, response, format) = match decision.answer {
        Answer::Block { body, markdown } => {
            let [first, _] = candidates()?;
            (
                first,
                refusal(StatusCode::FORBIDDEN, &body, markdown, &[])?,
                FormatServed::Blocked,
            )
        }
        Answer::PaymentRequired {
            status,
            price,
            error,
        } => {
            let [first, _] = candidates()?;
            let status = StatusCode::from_u16(status).map_err(|e| ApiError::Internal(e.into()))?;
            let body = format!(
                "This content costs {price} under the site's pay-per-crawl terms: retry with crawler-exact-price or crawler-max-price.\n"
            );
            let price = price.to_string();
            let mut extra = vec![("crawler-price", price.as_str())];
            extra.extend(error.map(|e| ("crawler-error", e)));
            (
                first,
                refusal(status, &body, false, &extra)?,
                FormatServed::PaymentRequired,
            )
        }
        Answer::Pass => {
            let url = own_url(state, site.id, candidates()?).await?;
            (url.clone(), origin(mode, path, url)?, FormatServed::Origin)
        }
        Answer::Serve { serve, charged } => match cached(state, candidates()?).await? {
            (url, Some(manifest)) => {
                let variant = Variant {
                    markdown: serve == Serve::Markdown,
                    at_markdown_path: decision.explicit_markdown,
                    link: Some(&link),
                    content_signal: site.policy.content_signal.as_deref(),
                    charged: charged.as_ref(),
                    front_matter: site.policy.front_matter,
                };
                let (response, format) =
                    content(state, &manifest, &variant, method, headers).await?;
                charged_price = charged.filter(|_| response.status() == StatusCode::OK);
                (url, response, format)
            }
            (url, None) => {
                let url = match mode {
                    Mode::Prefixed => own_url(state, site.id, candidates()?).await?,
                    Mode::Host => url,
                };
                (url.clone(), origin(mode, path, url)?, FormatServed::Origin)
            }
        },
    };
    record(&url, &response, format, charged_price);
    Ok(response)
}

/// A 403 or 402 of the policy: its text as plain text (or Markdown when Markdown was asked
/// for), never cached by shared caches.
fn refusal(
    status: StatusCode,
    body: &str,
    markdown: bool,
    extra: &[(&'static str, &str)],
) -> Result<Response, ApiError> {
    let content_type = if markdown {
        "text/markdown; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::VARY, VARY)
        .header(header::CACHE_CONTROL, "no-store");
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Body::from(body.to_owned()))
        .map_err(|e| ApiError::Internal(e.into()))
}

/// The first of `candidates` (the page under each scheme) the edge store holds, with its
/// manifest; the first candidate when none is held.
async fn cached(
    state: &AppState,
    candidates: [NormalizedUrl; 2],
) -> Result<(NormalizedUrl, Option<Arc<Manifest>>), ApiError> {
    let [first, second] = candidates;
    for candidate in [first.clone(), second] {
        let found = state
            .edge
            .manifests
            .get(&kv_key(&candidate))
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        if found.is_some() {
            return Ok((candidate, found));
        }
    }
    Ok((first, None))
}

/// The page's own URL among `candidates` (its scheme as the client's pages have it): the one
/// the edge store holds, else the one the pages projection knows, else the first.
async fn own_url(
    state: &AppState,
    client: uuid::Uuid,
    candidates: [NormalizedUrl; 2],
) -> Result<NormalizedUrl, ApiError> {
    let (held, manifest) = cached(state, candidates.clone()).await?;
    if manifest.is_some() {
        return Ok(held);
    }
    let [a, b] = candidates;
    let client_id = ClientId::from_uuid(client);
    let ids = [&a, &b].map(|u| PageId::derive(client_id, u).as_uuid());
    let known = pages_read::url_of_any(&state.db, client, &ids).await?;
    Ok(match known {
        Some(url) if url == b.as_str() => b,
        _ => a,
    })
}

/// The answer when nothing cached is served: a redirect to the page on the origin under
/// `/edge/...`, or `not_cached` by `Host` (a redirect to the same host would loop).
fn origin(mode: Mode, path: &str, page: NormalizedUrl) -> Result<Response, ApiError> {
    let mut response = match mode {
        Mode::Prefixed => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, page.as_str())
            .body(Body::empty())
            .map_err(|e| ApiError::Internal(e.into()))?,
        Mode::Host => {
            axum::response::IntoResponse::into_response(ApiError::NotCached(path.to_owned()))
        }
    };
    let h = response.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static(VARY));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Which variant of a cached page an answer carries, and what goes with it.
struct Variant<'a> {
    markdown: bool,
    /// Served at the `.md` path (not at the page's own URL).
    at_markdown_path: bool,
    /// The `Link` to the Markdown variant (none for a file that is not a page).
    link: Option<&'a str>,
    content_signal: Option<&'a str>,
    charged: Option<&'a Price>,
    /// Whether a page's Markdown starts with its front matter (the client's policy).
    front_matter: bool,
}

/// The cached variant, or 304 when the caller has it.
///
/// Markdown answers also carry `x-markdown-tokens`, and a `canonical` link to the page so the
/// copy never competes with it in search; at the `.md` path (a URL of its own) also
/// `X-Robots-Tag: noindex`. Never at the page's own URL: that would de-index the page itself
/// for a search engine a rule serves Markdown to.
async fn content(
    state: &AppState,
    manifest: &Manifest,
    variant: &Variant<'_>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(Response, FormatServed), ApiError> {
    let (blob, content_type, format) = if variant.markdown {
        (
            &manifest.markdown,
            "text/markdown; charset=utf-8",
            FormatServed::Markdown,
        )
    } else {
        (
            &manifest.html,
            "text/html; charset=utf-8",
            FormatServed::Html,
        )
    };
    // A site file (robots.txt) says its own type.
    let content_type = manifest.content_type.as_deref().unwrap_or(content_type);
    let page_markdown = variant.markdown && manifest.content_type.is_none();
    let front = (page_markdown && variant.front_matter).then(|| {
        let meta = manifest.metadata.clone().unwrap_or_default();
        FrontMatter {
            title: meta.title,
            source: manifest.source_url.clone(),
            description: meta.description,
            language: meta.language,
            last_modified: manifest.updated_at,
        }
        .render()
    });
    // The same content with and without front matter is two representations.
    let etag = match front {
        Some(_) => format!("\"{}-fm\"", blob.hash.as_str()),
        None => format!("\"{}\"", blob.hash.as_str()),
    };
    let last_modified = http_date(manifest.updated_at);
    let not_modified = caller_has(headers, &etag, manifest.updated_at);
    let mut builder = Response::builder()
        .header(header::VARY, VARY)
        .header(header::ETAG, &etag)
        .header(header::LAST_MODIFIED, &last_modified)
        .header(header::CACHE_CONTROL, "public, max-age=300")
        .header("x-ai-cache", "hit");
    if page_markdown {
        if let Some(link) = variant.link {
            builder = builder.header(
                header::LINK,
                format!("{link}, {}", canonical_link(&manifest.source_url)),
            );
        }
        let tokens = manifest.markdown_tokens()
            + front
                .as_deref()
                .map_or(0, crate::domain::markdown::estimate_tokens);
        builder = builder.header("x-markdown-tokens", tokens);
        if variant.at_markdown_path {
            builder = builder.header("x-robots-tag", "noindex");
        }
    } else if let Some(link) = variant.link {
        builder = builder.header(header::LINK, link);
    }
    if let Some(signal) = variant.content_signal {
        builder = builder.header("content-signal", signal);
    }
    if not_modified {
        let response = builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(|e| ApiError::Internal(e.into()))?;
        return Ok((response, format));
    }
    let mut bytes = blob_bytes(state, blob).await?;
    if let Some(front) = front {
        let mut with = front.into_bytes();
        with.extend_from_slice(&bytes);
        bytes = with.into();
    }
    let length = bytes.len();
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes::Bytes::from_owner(bytes))
    };
    if let Some(price) = variant.charged {
        builder = builder.header("crawler-charged", price.to_string());
    }
    let response = builder
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).map_err(|e| ApiError::Internal(e.into()))?,
        )
        .header(header::CONTENT_LENGTH, length)
        .body(body)
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((response, format))
}

/// Whether the caller's conditional headers name this version: `If-None-Match` (strong or
/// weak, or `*`) when sent, else `If-Modified-Since`.
fn caller_has(headers: &HeaderMap, etag: &str, updated_at: DateTime<Utc>) -> bool {
    match headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        Some(tags) => tags.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        }),
        None => headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
            .is_some_and(|since| updated_at.timestamp() <= since.timestamp()),
    }
}

/// A blob's bytes, from the in-memory cache or the blob store (then cached).
async fn blob_bytes(state: &AppState, blob: &BlobRef) -> Result<Arc<[u8]>, ApiError> {
    let cache = || {
        state
            .edge
            .content
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let cached = cache().get(blob.hash.as_str());
    if let Some(bytes) = cached {
        return Ok(bytes);
    }
    let bytes: Arc<[u8]> = state
        .blobs
        .get(&blob.hash)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .ok_or_else(|| {
            ApiError::Unavailable(format!("{} is not in the blob store", blob.hash.as_str()))
        })?
        .into();
    cache().put(blob.hash.as_str(), Arc::clone(&bytes));
    Ok(bytes)
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// The visitor's address: the peer, or the first `X-Forwarded-For` hop when the peer is a
/// proxy on a private or loopback address (the operator's own reverse proxy).
fn client_ip(peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let peer_ip = peer.ip();
    if crate::domain::netaddr::is_public(peer_ip) {
        return peer_ip;
    }
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|ip| ip.trim().parse().ok())
        .unwrap_or(peer_ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_cache_stays_within_its_bound() {
        let mut cache = ContentCache::default();
        let chunk: Arc<[u8]> = vec![0u8; CONTENT_CACHE_BYTES / 10].into();
        for i in 0..25 {
            cache.put(&format!("h{i}"), Arc::clone(&chunk));
            assert!(cache.bytes <= CONTENT_CACHE_BYTES);
        }
        assert!(cache.get("h24").is_some(), "the latest is kept");
        let huge: Arc<[u8]> = vec![0u8; CONTENT_CACHE_BYTES / 4].into();
        cache.put("huge", huge);
        assert!(cache.get("huge").is_none(), "too large to keep");
    }

    #[test]
    fn http_dates_are_imf_fixdate() {
        let at = DateTime::parse_from_rfc3339("1994-11-06T08:49:37Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(http_date(at), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_local_proxy() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.0.0.1"),
        );
        let local: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let public: SocketAddr = "8.8.8.8:5000".parse().expect("addr");
        assert_eq!(client_ip(local, &headers).to_string(), "203.0.113.9");
        assert_eq!(client_ip(public, &headers).to_string(), "8.8.8.8");
    }
}
