//! Events of the PAGES stream: a page's way through the pipeline.
//!
//! Subjects: `pages.<event>.<client_id>.<page_id>`. Version 2 of `pages.refresh_requested`,
//! `pages.content_changed`, `pages.markdown_generated` and `pages.html_rendered` added the
//! optional `reprocess` marker (a v1 event upcasts unchanged: it was not reprocessing);
//! version 3 of `pages.content_changed` added the optional `extracted` main content (a v2
//! event upcasts unchanged: the Markdown stage extracts from the raw HTML); every other type
//! is at version 1.

pub use crate::domain::sitemap::Alternate;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use serde_json::Value;
use uuid::Uuid;

use super::{DecodeError, Event, EventFamily, StreamName};
use crate::domain::content::{BlobRef, ContentHash};
use crate::domain::ids::{ClientId, PageId};
use crate::domain::url::NormalizedUrl;
/// Value types the page events carry, defined with their rules in `domain`.
pub use crate::domain::{
    markdown::PageMetadata,
    render_js::RenderReason,
    reprocess::{ReprocessOutcome, Stage},
};

/// Every event of the PAGES stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum PageEvent {
    /// A URL entered the pipeline (sitemap import, added by hand).
    #[serde(rename = "pages.discovered")]
    Discovered(Discovered),
    /// A sitemap import with `overwrite` changed the page's sitemap metadata.
    #[serde(rename = "pages.metadata_updated")]
    MetadataUpdated(MetadataUpdated),
    /// Someone or something (scheduler, API, reprocessing) asked for the page to be fetched again.
    #[serde(rename = "pages.refresh_requested")]
    RefreshRequested(RefreshRequested),
    /// The page was fetched and needs a browser: the `renderer-js` role's input.
    #[serde(rename = "pages.render_requested")]
    RenderRequested(RenderRequested),
    /// The page was rendered in a browser; `pages.scraped` (with the rendered HTML) follows.
    #[serde(rename = "pages.rendered_js")]
    RenderedJs(RenderedJs),
    /// The page was fetched and its raw HTML stored.
    #[serde(rename = "pages.scraped")]
    Scraped(Scraped),
    /// The page was fetched (or answered 304) and its main content did not change.
    #[serde(rename = "pages.unchanged")]
    Unchanged(Unchanged),
    /// Fetching failed; `failure` says whether it will be retried.
    #[serde(rename = "pages.scrape_failed")]
    ScrapeFailed(ScrapeFailed),
    /// The page is gone (404/410 or removed by an operator); its edge copies are deleted.
    #[serde(rename = "pages.removed")]
    Removed(Removed),
    /// The main content changed: the Markdown stage's input.
    #[serde(rename = "pages.content_changed")]
    ContentChanged(ContentChanged),
    /// Markdown was generated from the main content.
    #[serde(rename = "pages.markdown_generated")]
    MarkdownGenerated(MarkdownGenerated),
    /// Minimal HTML was rendered from the Markdown.
    #[serde(rename = "pages.html_rendered")]
    HtmlRendered(HtmlRendered),
    /// Markdown and HTML were written to the edge store.
    #[serde(rename = "pages.kv_uploaded")]
    KvUploaded(KvUploaded),
    /// The served content of the page changed: the event external systems subscribe to.
    #[serde(rename = "pages.updated")]
    Updated(Updated),
    /// The page's part of a reprocessing run ended (with or without new content).
    #[serde(rename = "pages.reprocessed")]
    Reprocessed(Reprocessed),
}

impl EventFamily for PageEvent {
    const STREAM: StreamName = StreamName::Pages;
    const CATALOGUE: &'static [(&'static str, u32)] = &[
        ("pages.discovered", 1),
        ("pages.metadata_updated", 1),
        ("pages.refresh_requested", 2),
        ("pages.render_requested", 1),
        ("pages.rendered_js", 1),
        ("pages.scraped", 1),
        ("pages.unchanged", 1),
        ("pages.scrape_failed", 1),
        ("pages.removed", 1),
        ("pages.content_changed", 3),
        ("pages.markdown_generated", 2),
        ("pages.html_rendered", 2),
        ("pages.kv_uploaded", 1),
        ("pages.updated", 1),
        ("pages.reprocessed", 1),
    ];

    fn event_type(&self) -> &'static str {
        match self {
            Self::Discovered(_) => "pages.discovered",
            Self::MetadataUpdated(_) => "pages.metadata_updated",
            Self::RefreshRequested(_) => "pages.refresh_requested",
            Self::RenderRequested(_) => "pages.render_requested",
            Self::RenderedJs(_) => "pages.rendered_js",
            Self::Scraped(_) => "pages.scraped",
            Self::Unchanged(_) => "pages.unchanged",
            Self::ScrapeFailed(_) => "pages.scrape_failed",
            Self::Removed(_) => "pages.removed",
            Self::ContentChanged(_) => "pages.content_changed",
            Self::MarkdownGenerated(_) => "pages.markdown_generated",
            Self::HtmlRendered(_) => "pages.html_rendered",
            Self::KvUploaded(_) => "pages.kv_uploaded",
            Self::Updated(_) => "pages.updated",
            Self::Reprocessed(_) => "pages.reprocessed",
        }
    }

    fn upcast(event_type: &str, version: u32, data: Value) -> Result<Value, DecodeError> {
        match (event_type, version) {
            // v2 only added the optional `reprocess` marker; v3 of `pages.content_changed` only
            // the optional `extracted`.
            (
                "pages.refresh_requested"
                | "pages.content_changed"
                | "pages.markdown_generated"
                | "pages.html_rendered",
                1,
            )
            | ("pages.content_changed", 2) => Ok(data),
            _ => Err(DecodeError::UnknownVersion {
                event_type: event_type.to_owned(),
                version,
                current: Self::current_version(event_type).unwrap_or_default(),
            }),
        }
    }
}

impl PageEvent {
    /// The stable type name (for messages; `EventFamily::event_type` is the same).
    pub fn event_type_name(&self) -> &'static str {
        <Self as EventFamily>::event_type(self)
    }
}

/// Where a URL came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoverySource {
    Sitemap,
    Manual,
    /// Found as a link in a page fetched by a crawl.
    Link,
}

/// The crawl a page was discovered by (or is a start of): its links are followed while
/// `depth` is under `max_depth` and the crawl has fewer than `max_pages` pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrawlRef {
    pub run_id: uuid::Uuid,
    /// Links followed from a start page to this one (0 for a start page).
    pub depth: u32,
    pub max_depth: u32,
    pub max_pages: u32,
}

/// `pages.discovered` v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Discovered {
    pub url: NormalizedUrl,
    pub source: DiscoverySource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sitemap_url: Option<String>,
    /// Sitemap `lastmod`, as the sitemap wrote it (W3C datetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lastmod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changefreq: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// The page's translations its sitemap names (`xhtml:link` hreflang alternates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternates: Vec<Alternate>,
    /// The crawl that found the page, or started from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crawl: Option<CrawlRef>,
}

/// `pages.metadata_updated` v1: the sitemap metadata as the overwriting import read it
/// (absent values clear the stored ones).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetadataUpdated {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sitemap_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lastmod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changefreq: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternates: Vec<Alternate>,
}

impl Discovered {
    /// A URL found with nothing else known about it.
    pub fn bare(url: NormalizedUrl, source: DiscoverySource) -> Self {
        Self {
            url,
            source,
            sitemap_url: None,
            lastmod: None,
            changefreq: None,
            priority: None,
            alternates: Vec::new(),
            crawl: None,
        }
    }

    /// The `pages.discovered` event of this URL for `client`, its page id derived from both.
    pub fn into_event(self, client: ClientId) -> Event<PageEvent> {
        let page = PageId::derive(client, &self.url);
        Event::new(client, Some(page), PageEvent::Discovered(self))
    }
}

/// Why a page is to be fetched again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshReason {
    Scheduled,
    Manual,
    SitemapLastmod,
    Reprocess,
}

/// `pages.refresh_requested` v2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefreshRequested {
    pub reason: RefreshReason,
    /// Set when a reprocessing run asked for the fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprocess: Option<Reprocess>,
}

/// Marks a stage's input as part of a reprocessing run; stages pass it on to what they
/// publish, and the stage where the page's run ends publishes `pages.reprocessed`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reprocess {
    pub run_id: Uuid,
    /// The stage the run started from.
    pub from_stage: Stage,
    /// Make the output again even when the stage's input and version did not change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// `pages.reprocessed` v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reprocessed {
    pub run_id: Uuid,
    /// The stage the run started from.
    pub from_stage: Stage,
    /// The stage where the page's run ended.
    pub ended_at: Stage,
    pub outcome: ReprocessOutcome,
}

/// `pages.render_requested` v1: the scraper fetched the page and it needs a browser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RenderRequested {
    pub url: NormalizedUrl,
    pub reason: RenderReason,
    /// The fetched HTML (UTF-8): the browser is given it as the page's document, so the page
    /// itself is fetched once, by the scraper, under its politeness.
    pub raw: BlobRef,
    pub http_status: u16,
    pub fetched_at: DateTime<Utc>,
    /// The fetch's duration.
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprocess: Option<Reprocess>,
    /// The crawl the page belongs to: its links are read from the rendered page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crawl: Option<CrawlRef>,
}

/// `pages.rendered_js` v1: what the browser made of the page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RenderedJs {
    /// The rendered document (its DOM serialized), in the blob store.
    pub rendered: BlobRef,
    /// The fingerprint of the rendered page's main content.
    pub fingerprint: ContentHash,
    /// Whether the page settled (network idle, or the wait selector found) within the time
    /// budget; if not, the document is what it was when the budget ran out.
    pub settled: bool,
    /// Requests the page made, and how many of them were refused (address rules, trackers,
    /// media, methods).
    pub requests: u32,
    pub refused: u32,
    pub duration_ms: u64,
}

/// `pages.scraped` v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scraped {
    pub url: NormalizedUrl,
    pub http_status: u16,
    /// The raw HTML in the blob store.
    pub raw: BlobRef,
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// SHA-256 of the extracted main content: what change detection compares.
    pub fingerprint: ContentHash,
    pub fetched_at: DateTime<Utc>,
    pub duration_ms: u64,
}

/// Why a fetch led to no change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnchangedReason {
    /// The origin answered 304 to a conditional GET.
    NotModified,
    /// The main content has the fingerprint it had before.
    SameFingerprint,
}

/// `pages.unchanged` v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unchanged {
    pub reason: UnchangedReason,
    pub http_status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<ContentHash>,
    pub fetched_at: DateTime<Utc>,
}

/// The kind of a scrape failure, which decides what happens next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScrapeFailure {
    /// Network trouble, 5xx, 429: retried with backoff.
    Transient,
    /// 4xx other than 404/410/429, invalid response: not retried.
    Permanent,
    /// robots.txt disallows the page: not retried.
    RobotsDisallowed,
    /// The URL is not HTML: recorded and skipped.
    UnsupportedContentType,
    /// The host resolves to a private or internal address: refused.
    BlockedAddress,
}

/// `pages.scrape_failed` v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScrapeFailed {
    pub failure: ScrapeFailure,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// Which delivery of the request this was (1 for the first).
    pub attempt: u32,
}

/// `pages.removed` v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Removed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    pub reason: String,
}

/// `pages.content_changed` v3.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContentChanged {
    pub url: NormalizedUrl,
    pub raw: BlobRef,
    /// The fingerprint of the main content (since v3: of the local generator's Markdown and
    /// metadata, [`crate::domain::markdown::Generated::fingerprint`]).
    pub fingerprint: ContentHash,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_fingerprint: Option<ContentHash>,
    /// The page's version after this change (1 for the first content).
    pub page_version: u32,
    /// Set when a reprocessing run re-sent the page's last content change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprocess: Option<Reprocess>,
    /// The main content the scraper extracted from `raw` (v3): the Markdown stage uses it
    /// instead of extracting again when its generator version is the stage's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted: Option<Extracted>,
}

/// Main content the local generator extracted from a page's raw HTML.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Extracted {
    /// The Markdown, in the blob store.
    pub markdown: BlobRef,
    pub metadata: PageMetadata,
    pub generator_version: String,
}

/// Which generator made the Markdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeneratorKind {
    Local,
    Gemini,
}

/// Tokens a model call used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt: u64,
    pub output: u64,
    pub total: u64,
}

/// `pages.markdown_generated` v2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarkdownGenerated {
    pub markdown: BlobRef,
    /// Hash of the raw HTML this was generated from.
    pub input_hash: ContentHash,
    pub generator: GeneratorKind,
    /// Version of the local generator or of the Gemini prompt.
    pub generator_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Set when Gemini was wanted but the local result was used, with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenUsage>,
    /// An estimate of the Markdown's tokens for readers (`x-markdown-tokens` at the edge):
    /// `domain::markdown::estimate_tokens`. Absent in events written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown_tokens: Option<u32>,
    pub metadata: PageMetadata,
    pub page_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprocess: Option<Reprocess>,
}

/// `pages.html_rendered` v2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HtmlRendered {
    pub html: BlobRef,
    pub markdown_hash: ContentHash,
    pub renderer_version: String,
    pub page_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reprocess: Option<Reprocess>,
}

/// Where a client's pages are served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeStore {
    Cloudflare,
    Builtin,
}

/// `pages.kv_uploaded` v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KvUploaded {
    pub store: EdgeStore,
    /// The page's key in the edge store (e.g. `https/example-com/page`).
    pub kv_key: String,
    pub markdown_hash: ContentHash,
    pub html_hash: ContentHash,
    pub page_version: u32,
}

/// `pages.updated` v1: fires once each time the served content of a page changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Updated {
    pub url: NormalizedUrl,
    pub kv_key: String,
    pub markdown_hash: ContentHash,
    pub html_hash: ContentHash,
    /// Fingerprint of the main content the served version was made from.
    pub content_fingerprint: ContentHash,
    pub page_version: u32,
    pub scraped_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
