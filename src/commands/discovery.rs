//! Discovery: reading a site's sitemaps (following indexes, finding them through robots.txt)
//! and turning their URLs into pages.
//!
//! Fetching goes through the guarded [`HttpClient`]; parsing is the pure
//! [`crate::domain::sitemap`]. An import publishes `pages.discovered` for each new URL on the
//! client's domain (and `pages.metadata_updated` where `overwrite` changes a known one), then
//! waits until the pages projection shows them.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde::Serialize;
use sqlx::PgPool;
use url::Url;

use crate::domain::ids::{ClientId, PageId};
use crate::domain::sitemap::{self, Entry, Kind, Limits};
use crate::domain::url::NormalizedUrl;
use crate::events::Event;
use crate::events::pages::{Discovered, DiscoverySource, MetadataUpdated, PageEvent};
use crate::infra::http::{FetchError, HttpClient};
use crate::infra::publish::{Outgoing, PublishError, Publisher};
use crate::projections::clients::ClientRow;
use crate::projections::pages as read;
use crate::projections::runtime::wait_for;

/// Caps of one discovery run.
#[derive(Clone, Copy, Debug)]
pub struct DiscoveryLimits {
    /// Most page URLs one import takes (the original's safety limit).
    pub max_urls: usize,
    /// Most sitemap documents one run fetches, whether they can be read or not.
    pub max_sitemaps: usize,
    /// How long one whole run may take.
    pub run_timeout: Duration,
    /// Caps on each document.
    pub document: Limits,
}

impl Default for DiscoveryLimits {
    fn default() -> Self {
        Self {
            max_urls: 10_000,
            max_sitemaps: 500,
            run_timeout: Duration::from_secs(120),
            document: Limits::default(),
        }
    }
}

/// Most issues a run lists; the rest are counted (`Found::issues_left_out`).
pub const MAX_ISSUES: usize = 100;

/// A problem with one URL or one sitemap, for the summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Issue {
    pub url: String,
    pub reason: String,
}

/// What a discovery run found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Found {
    /// Page entries with the sitemap that listed each, in document order.
    pub entries: Vec<(Entry, String)>,
    /// Sitemap documents read.
    pub sitemaps: Vec<String>,
    /// Sitemaps that could not be read, links not followed, entries dropped (the first
    /// [`MAX_ISSUES`]).
    pub issues: Vec<Issue>,
    /// Issues beyond the first [`MAX_ISSUES`], counted only.
    pub issues_left_out: usize,
    /// Warnings from the documents (dropped values, unknown tags).
    pub warnings: Vec<String>,
    /// Something was left out: URLs past the limit, or sitemaps not read (the document cap,
    /// the run's deadline).
    pub truncated: bool,
}

impl Found {
    /// Notes a problem (listed while fewer than [`MAX_ISSUES`], else only counted).
    fn issue(&mut self, url: impl Into<String>, reason: impl Into<String>) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(Issue {
                url: url.into(),
                reason: reason.into(),
            });
        } else {
            self.issues_left_out += 1;
        }
    }
}

/// The start of a discovery run could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{url}: {error}")]
    Fetch { url: String, error: FetchError },
    #[error("{url}: answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {error}{}", parse_hint(url, error))]
    Parse {
        url: String,
        error: sitemap::SitemapError,
    },
    #[error(
        "no sitemap found for {0}: robots.txt names none, and neither /sitemap.xml nor /sitemap_index.xml exists"
    )]
    NoSitemap(String),
}

/// What to do instead, when a web page was given for a sitemap: the site's address finds its
/// sitemaps.
fn parse_hint(url: &str, error: &sitemap::SitemapError) -> String {
    if *error != sitemap::SitemapError::HtmlPage {
        return String::new();
    }
    let site = url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "https://example.com".into());
    format!(
        ": give the site's address ({site}/) to find its sitemaps through robots.txt and /sitemap.xml, or the sitemap's own URL"
    )
}

/// Reads sitemaps.
#[derive(Clone, Debug)]
pub struct Discovery {
    http: HttpClient,
    limits: DiscoveryLimits,
}

impl Discovery {
    pub fn new(http: HttpClient, limits: DiscoveryLimits) -> Self {
        Self { http, limits }
    }

    pub fn limits(&self) -> &DiscoveryLimits {
        &self.limits
    }

    /// Reads the sitemap at `start` and, with `recursive`, the sitemaps its indexes list, to
    /// `max_depth` levels. `start` may also be a site (`https://example.com/`): its sitemaps are
    /// then found through robots.txt, else `/sitemap.xml` and `/sitemap_index.xml`.
    /// `progress` is told the number of URLs found after each document.
    pub async fn discover(
        &self,
        start: &str,
        recursive: bool,
        max_depth: u32,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<Found, DiscoveryError> {
        let start_url = Url::parse(start.trim()).map_err(|_| DiscoveryError::Fetch {
            url: start.to_owned(),
            error: FetchError::InvalidUrl(start.to_owned()),
        })?;
        let mut run = Run {
            found: Found::default(),
            queue: VecDeque::new(),
            seen: HashSet::new(),
            fetched: 0,
            deadline: Instant::now() + self.limits.run_timeout,
            site: site_of(&start_url),
            follow: if recursive { Some(max_depth) } else { None },
        };
        let (roots, guessed) = if is_site_root(&start_url) {
            self.find_sitemaps(&start_url, &mut run).await?
        } else {
            (vec![start_url.to_string()], false)
        };
        run.queue.extend(roots.into_iter().map(|u| (u, 0)));
        let mut root_errors = Vec::new();
        while let Some((url, depth)) = run.queue.pop_front() {
            if !run.may_fetch(&url, &self.limits) {
                continue;
            }
            let parsed = match self.read_within(&url, run.deadline).await {
                Ok(parsed) => parsed,
                // A guessed location that does not exist is no news.
                Err(DiscoveryError::Status { status: 404, .. }) if depth == 0 && guessed => {
                    continue;
                }
                Err(e) => {
                    run.found.issue(&url, e.to_string());
                    if depth == 0 {
                        root_errors.push(e);
                    }
                    continue;
                }
            };
            run.found.sitemaps.push(url.clone());
            run.found
                .warnings
                .extend(parsed.warnings.iter().map(|w| format!("{url}: {w}")));
            if let Some(error) = &parsed.error {
                run.found
                    .issue(&url, format!("{error} (entries before it were kept)"));
            }
            if parsed.kind == Kind::Index {
                run.follow_index(&url, depth, parsed.entries);
                continue;
            }
            if run.take_entries(&url, parsed, self.limits.max_urls) {
                break;
            }
            progress(run.found.entries.len());
        }
        if run.found.sitemaps.is_empty() {
            // Not one starting document could be read: that is the answer, not an empty import.
            return Err(root_errors
                .into_iter()
                .next()
                .unwrap_or_else(|| DiscoveryError::NoSitemap(start.to_owned())));
        }
        Ok(run.found)
    }

    /// [`Discovery::read`], given up at the run's deadline.
    async fn read_within(
        &self,
        url: &str,
        deadline: Instant,
    ) -> Result<sitemap::Parsed, DiscoveryError> {
        match tokio::time::timeout_at(deadline.into(), self.read(url)).await {
            Ok(result) => result,
            Err(_) => Err(DiscoveryError::Fetch {
                url: url.to_owned(),
                error: FetchError::Timeout,
            }),
        }
    }

    async fn read(&self, url: &str) -> Result<sitemap::Parsed, DiscoveryError> {
        let fetched = self
            .http
            .get(url, self.limits.document.max_body_bytes)
            .await
            .map_err(|error| DiscoveryError::Fetch {
                url: url.to_owned(),
                error,
            })?;
        if fetched.status != 200 {
            return Err(DiscoveryError::Status {
                url: url.to_owned(),
                status: fetched.status,
            });
        }
        sitemap::parse(&fetched.body, &self.limits.document).map_err(|error| {
            DiscoveryError::Parse {
                url: url.to_owned(),
                error,
            }
        })
    }

    /// The sitemaps of a site: robots.txt `Sitemap:` lines, else the usual locations (guessed:
    /// the second value is true, and a 404 there is not an error).
    async fn find_sitemaps(
        &self,
        site: &Url,
        run: &mut Run,
    ) -> Result<(Vec<String>, bool), DiscoveryError> {
        let robots = site
            .join("/robots.txt")
            .map(|u| u.to_string())
            .unwrap_or_default();
        match self.http.get(&robots, 512 * 1024).await {
            Ok(r) if r.status == 200 => {
                let listed: Vec<String> =
                    robots_sitemaps(&String::from_utf8_lossy(&r.body), &r.url)
                        .into_iter()
                        .filter(|url| run.on_site(url))
                        .collect();
                if !listed.is_empty() {
                    return Ok((listed, false));
                }
            }
            Ok(_) => {}
            Err(e @ FetchError::BlockedAddress(_)) => {
                return Err(DiscoveryError::Fetch {
                    url: robots,
                    error: e,
                });
            }
            Err(e) => run.found.issue(robots, e.to_string()),
        }
        let guesses = ["/sitemap.xml", "/sitemap_index.xml"]
            .iter()
            .filter_map(|p| site.join(p).ok())
            .map(|u| u.to_string())
            .collect();
        Ok((guesses, true))
    }
}

/// One discovery run: what it found, what is left to read, and its budget.
struct Run {
    found: Found,
    queue: VecDeque<(String, u32)>,
    seen: HashSet<String>,
    /// Documents fetched (or tried), read or not.
    fetched: usize,
    deadline: Instant,
    /// The site's host without `www.`: sitemaps elsewhere are not fetched.
    site: String,
    /// How deep to follow indexes (`None`: not at all).
    follow: Option<u32>,
}

impl Run {
    /// Whether `url` may be fetched now; if not, says why. Counts it as fetched if so.
    fn may_fetch(&mut self, url: &str, limits: &DiscoveryLimits) -> bool {
        if !self.seen.insert(dedup_key(url)) {
            self.found.issue(
                url,
                "already read in this run (a cycle or a duplicate): skipped",
            );
            return false;
        }
        let reason = if self.fetched >= limits.max_sitemaps {
            format!("more than {} sitemaps: not read", limits.max_sitemaps)
        } else if Instant::now() >= self.deadline {
            format!(
                "the run took longer than {} s: not read",
                limits.run_timeout.as_secs()
            )
        } else {
            self.fetched += 1;
            return true;
        };
        self.found.issue(url, reason);
        self.found.truncated = true;
        false
    }

    /// Whether `url` is on the site being read: its host or a subdomain of it (`www.` aside).
    /// Sitemaps may list sitemaps anywhere, so this keeps a run from sending requests to
    /// third parties.
    fn on_site(&mut self, url: &str) -> bool {
        let host = Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        let inside = host.as_deref().is_some_and(|h| {
            let h = h.strip_prefix("www.").unwrap_or(h);
            h == self.site || h.ends_with(&format!(".{}", self.site))
        });
        if !inside {
            self.found.issue(
                url,
                format!("not on {} or its subdomains: not followed", self.site),
            );
        }
        inside
    }

    /// Queues the sitemaps an index lists, as far as the run follows them.
    fn follow_index(&mut self, index: &str, depth: u32, children: Vec<Entry>) {
        for child in children {
            let Some(url) = resolve(index, &child.loc) else {
                self.found.issue(child.loc, "not an http(s) URL");
                continue;
            };
            let follow = self.follow;
            match follow {
                None => self.found.issue(
                    url,
                    "listed by a sitemap index: not followed (recursive is false)",
                ),
                Some(max) if depth >= max => self
                    .found
                    .issue(url, format!("deeper than max_depth {max}: not followed")),
                Some(_) if !self.on_site(&url) => {}
                Some(_) => self.queue.push_back((url, depth + 1)),
            }
        }
    }

    /// Keeps a urlset's entries up to the URL limit; true when the limit ends the run.
    fn take_entries(&mut self, sitemap: &str, parsed: sitemap::Parsed, max_urls: usize) -> bool {
        for entry in parsed.entries {
            if self.found.entries.len() >= max_urls {
                self.found.truncated = true;
                break;
            }
            self.found.entries.push((entry, sitemap.to_owned()));
        }
        self.found.truncated |= parsed.truncated;
        if self.found.entries.len() >= max_urls {
            self.found.truncated |= !self.queue.is_empty();
            return true;
        }
        false
    }
}

/// The site a run reads: the start's host without `www.`.
fn site_of(start: &Url) -> String {
    let host = start.host_str().unwrap_or_default().to_ascii_lowercase();
    host.strip_prefix("www.").unwrap_or(&host).to_owned()
}

/// `https://example.com` or `https://example.com/`: a site rather than a sitemap.
fn is_site_root(url: &Url) -> bool {
    matches!(url.path(), "" | "/") && url.query().is_none()
}

/// `Sitemap:` lines of a robots.txt (case-insensitive), resolved against its URL.
pub fn robots_sitemaps(robots: &str, base: &Url) -> Vec<String> {
    robots
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("").trim();
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case("sitemap")
                .then(|| value.trim())
        })
        .filter(|v| !v.is_empty())
        .filter_map(|v| base.join(v).ok().map(|u| u.to_string()))
        .collect()
}

fn resolve(base: &str, loc: &str) -> Option<String> {
    let url = Url::parse(base).ok()?.join(loc.trim()).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}

fn dedup_key(url: &str) -> String {
    NormalizedUrl::parse(url).map_or_else(|_| url.to_owned(), |u| u.to_string())
}

/// The summary of an import, in the original API's shape plus the reasons.
#[derive(Clone, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ImportSummary {
    /// URLs considered (after the safety limit).
    pub total_urls: usize,
    pub created: usize,
    /// Already known (and not overwritten), or listed twice.
    pub skipped: usize,
    pub updated: usize,
    pub errors: usize,
    /// The safety limit stopped the import.
    pub truncated: bool,
    /// The safety limit in force.
    pub limit: usize,
    /// Why URLs were refused and which sitemaps failed (first 100).
    pub error_details: Vec<Issue>,
    /// Details beyond the first 100, counted only.
    pub error_details_left_out: usize,
    /// Whether the pages projection showed every page before the answer (read-your-writes);
    /// false when it was still applying them at WRITE_TIMEOUT_SECS (the API then answers 202).
    #[serde(skip)]
    pub applied: bool,
}

/// Failures of an import after discovery.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Where imported URLs came from.
#[derive(Clone, Copy, Debug)]
pub enum Origin {
    Sitemap,
    Manual,
}

/// Turns URLs into pages of one client.
#[derive(Clone)]
pub struct Importer {
    db: PgPool,
    publisher: Publisher,
    timeout: Duration,
}

/// Most events published with their acks in flight together.
const PUBLISH_BATCH: usize = 500;
/// Most error details returned.
const MAX_DETAILS: usize = 100;

impl Importer {
    pub fn new(db: PgPool, js: jetstream::Context, timeout: Duration) -> Self {
        Self {
            db,
            publisher: Publisher::new(js),
            timeout,
        }
    }

    /// Imports `entries` (each with the sitemap that listed it, if any) into `client`'s pages.
    pub async fn import(
        &self,
        client: &ClientRow,
        entries: &[(Entry, Option<String>)],
        mode: ImportMode,
    ) -> Result<ImportSummary, ImportError> {
        let mut summary = ImportSummary {
            limit: mode.limit,
            ..ImportSummary::default()
        };
        let accepted = accept(client, entries, mode.limit, &mut summary);
        let ids: Vec<_> = accepted.iter().map(|a| a.page.as_uuid()).collect();
        let known = read::sitemap_metadata(&self.db, &ids).await?;
        let client_id = ClientId::from_uuid(client.id);
        let mut outgoing = Vec::new();
        for page in accepted {
            let meta = known.get(&page.page.as_uuid());
            match (meta, mode.known) {
                (None, _) => {
                    summary.created += 1;
                    outgoing.push(page.discovered(client_id, mode.origin));
                }
                (Some(meta), KnownPages::UpdateMetadata)
                    if meta.differs(page.entry, page.sitemap_url) =>
                {
                    summary.updated += 1;
                    outgoing.push(page.metadata_updated(client_id));
                }
                (Some(_), _) => summary.skipped += 1,
            }
        }
        if mode.apply == Apply::DryRun {
            // The summary says what an import would do, nothing is published.
            return Ok(summary);
        }
        let mut last = None;
        for batch in outgoing.chunks_mut(PUBLISH_BATCH) {
            let published = self.publisher.publish_all(batch).await?;
            last = published.iter().map(|p| p.sequence).max().or(last);
        }
        summary.applied = match last {
            Some(seq) => wait_for(&self.db, "pages", seq, self.timeout).await?,
            None => true,
        };
        Ok(summary)
    }
}

/// How an import treats what it finds.
#[derive(Clone, Copy, Debug)]
pub struct ImportMode {
    pub origin: Origin,
    pub apply: Apply,
    pub known: KnownPages,
    /// Most URLs read (the rest is reported as truncated).
    pub limit: usize,
}

/// Whether an import publishes its pages or only says what it would do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Apply {
    Publish,
    DryRun,
}

impl Apply {
    /// `create_pages` of the original API: publish when true.
    pub fn publish_if(create_pages: bool) -> Self {
        if create_pages {
            Self::Publish
        } else {
            Self::DryRun
        }
    }
}

/// What an import does with pages the client already has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnownPages {
    /// Left as they are (counted as skipped).
    Keep,
    /// Their sitemap metadata is replaced where the entry says otherwise (`overwrite`).
    UpdateMetadata,
}

impl KnownPages {
    /// `overwrite` of the original API.
    pub fn overwrite_if(overwrite: bool) -> Self {
        if overwrite {
            Self::UpdateMetadata
        } else {
            Self::Keep
        }
    }
}

/// An entry accepted for import: a URL of the client's, seen once.
struct Accepted<'a> {
    page: PageId,
    url: NormalizedUrl,
    entry: &'a Entry,
    sitemap_url: Option<&'a str>,
}

impl Accepted<'_> {
    /// `pages.discovered` for a page the client does not have.
    fn discovered(self, client: ClientId, origin: Origin) -> Outgoing<PageEvent> {
        let source = match origin {
            Origin::Sitemap => DiscoverySource::Sitemap,
            Origin::Manual => DiscoverySource::Manual,
        };
        let discovered = Discovered {
            sitemap_url: self.sitemap_url.map(str::to_owned),
            lastmod: self.entry.lastmod.clone(),
            changefreq: self.entry.changefreq.clone(),
            priority: self.entry.priority.clone(),
            alternates: self.entry.alternates.clone(),
            ..Discovered::bare(self.url, source)
        };
        Outgoing::keyed(
            discovered.into_event(client),
            format!("discovered:{}", self.page),
        )
    }

    /// `pages.metadata_updated` for a known page whose sitemap metadata changed.
    fn metadata_updated(self, client: ClientId) -> Outgoing<PageEvent> {
        let update = MetadataUpdated {
            sitemap_url: self.sitemap_url.map(str::to_owned),
            lastmod: self.entry.lastmod.clone(),
            changefreq: self.entry.changefreq.clone(),
            priority: self.entry.priority.clone(),
            alternates: self.entry.alternates.clone(),
        };
        let key = format!(
            "metadata:{}:{}",
            self.page,
            crate::domain::content::ContentHash::of(format!("{update:?}").as_bytes())
        );
        Outgoing::keyed(
            Event::new(client, Some(self.page), PageEvent::MetadataUpdated(update)),
            key,
        )
    }
}

/// The entries that name a page of the client's, each page once, at most `limit` read;
/// the others are counted (and the refused described) in `summary`.
fn accept<'a>(
    client: &ClientRow,
    entries: &'a [(Entry, Option<String>)],
    limit: usize,
    summary: &mut ImportSummary,
) -> Vec<Accepted<'a>> {
    let client_id = ClientId::from_uuid(client.id);
    let mut accepted = Vec::new();
    let mut seen = HashSet::new();
    for (entry, sitemap_url) in entries {
        if summary.total_urls >= limit {
            summary.truncated = true;
            break;
        }
        summary.total_urls += 1;
        let url = match NormalizedUrl::parse(&entry.loc) {
            Ok(url) => url,
            Err(e) => {
                refuse(summary, &entry.loc, e.to_string());
                continue;
            }
        };
        if let Err(reason) = on_domain(&url, &client.domain, client.allow_subdomains) {
            refuse(summary, &entry.loc, reason);
            continue;
        }
        let page = PageId::derive(client_id, &url);
        if !seen.insert(page) {
            summary.skipped += 1;
            continue;
        }
        accepted.push(Accepted {
            page,
            url,
            entry,
            sitemap_url: sitemap_url.as_deref(),
        });
    }
    accepted
}

fn refuse(summary: &mut ImportSummary, url: &str, reason: String) {
    summary.errors += 1;
    if summary.error_details.len() < MAX_DETAILS {
        summary.error_details.push(Issue {
            url: url.to_owned(),
            reason,
        });
    } else {
        summary.error_details_left_out += 1;
    }
}

/// Whether `url` belongs to the client's `domain` (or a subdomain, when allowed).
pub fn on_domain(url: &NormalizedUrl, domain: &str, allow_subdomains: bool) -> Result<(), String> {
    let host = url.host();
    if host == domain
        || (allow_subdomains
            && host
                .strip_suffix(domain)
                .is_some_and(|rest| rest.ends_with('.')))
    {
        return Ok(());
    }
    Err(
        if host
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
        {
            format!(
                "{host} is a subdomain of {domain}: enable the client's allow_subdomains setting to accept it"
            )
        } else {
            format!("{host} is not the client's domain {domain}")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robots_txt_sitemap_lines_are_found_case_insensitively_and_resolved() {
        let base = Url::parse("https://a.example/robots.txt").expect("url");
        let robots = "User-agent: *\nDisallow: /\nSitemap: https://a.example/s1.xml\nsitemap:/s2.xml # relative\nSITEMAP :  \n";
        assert_eq!(
            robots_sitemaps(robots, &base),
            ["https://a.example/s1.xml", "https://a.example/s2.xml"]
        );
    }

    #[test]
    fn only_the_clients_domain_and_its_subdomains_by_setting_are_accepted() {
        let url = |s: &str| NormalizedUrl::parse(s).expect("url");
        assert!(on_domain(&url("https://example.com/a"), "example.com", false).is_ok());
        assert!(on_domain(&url("https://www.example.com/a"), "example.com", false).is_err());
        assert!(on_domain(&url("https://www.example.com/a"), "example.com", true).is_ok());
        assert!(on_domain(&url("https://notexample.com/a"), "example.com", true).is_err());
        assert!(on_domain(&url("https://example.com.evil.net/a"), "example.com", true).is_err());
    }

    #[test]
    fn a_site_root_is_told_from_a_sitemap_url() {
        assert!(is_site_root(&Url::parse("https://a.example").expect("url")));
        assert!(is_site_root(
            &Url::parse("https://a.example/").expect("url")
        ));
        assert!(!is_site_root(
            &Url::parse("https://a.example/sitemap.xml").expect("url")
        ));
    }
}

/// The outcome of reading a sitemap and importing it.
#[derive(Clone, Debug)]
pub struct SitemapImport {
    pub summary: ImportSummary,
    /// Sitemap documents read.
    pub sitemaps: Vec<String>,
}

/// What an import of a sitemap asks for.
#[derive(Clone, Copy, Debug)]
pub struct ImportOptions {
    pub recursive: bool,
    pub max_depth: u32,
    pub create_pages: bool,
    pub overwrite: bool,
}

/// Reads the sitemap at `url` (following indexes as asked) and imports its URLs as pages of
/// `client`; the summary also carries the discovery's truncation and the sitemaps it could not
/// read. `progress` is told the URLs found so far.
pub async fn import_sitemap(
    discovery: &Discovery,
    importer: &Importer,
    client: &ClientRow,
    url: &str,
    options: ImportOptions,
    progress: &(dyn Fn(usize) + Send + Sync),
) -> Result<SitemapImport, SitemapImportError> {
    let found = discovery
        .discover(url, options.recursive, options.max_depth, progress)
        .await?;
    let entries: Vec<(Entry, Option<String>)> = found
        .entries
        .into_iter()
        .map(|(e, s)| (e, Some(s)))
        .collect();
    let limit = discovery.limits().max_urls;
    let mut summary = importer
        .import(
            client,
            &entries,
            ImportMode {
                origin: Origin::Sitemap,
                apply: Apply::publish_if(options.create_pages),
                known: KnownPages::overwrite_if(options.overwrite),
                limit,
            },
        )
        .await?;
    summary.truncated |= found.truncated;
    summary.error_details_left_out += found.issues_left_out;
    for issue in found.issues {
        if summary.error_details.len() < MAX_DETAILS {
            summary.error_details.push(issue);
        } else {
            summary.error_details_left_out += 1;
        }
    }
    Ok(SitemapImport {
        summary,
        sitemaps: found.sitemaps,
    })
}

/// Reading or importing a sitemap failed.
#[derive(Debug, thiserror::Error)]
pub enum SitemapImportError {
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Import(#[from] ImportError),
}
