//! Crawl discovery: a client's pages found by following links from start pages (its home
//! page by default), within a depth and a page budget. A crawl is no process of its own: its
//! start pages are published as `pages.discovered` carrying the crawl (`CrawlRef`, depth 0),
//! the scraper fetches them by the client's rules (robots.txt, crawl rate) and, from the page
//! it fetched anyway, publishes the same-site links it has not seen as `pages.discovered`
//! (`source: link`, one level deeper) while the depth and the budget allow. So a crawl is just
//! more pages in the normal pipeline, resumable like it (durable consumers), and its progress
//! is counted on the pages projection.

use serde::Serialize;
use uuid::Uuid;

use super::discovery::on_domain;
use crate::domain::ids::{ClientId, PageId};
use crate::domain::url::NormalizedUrl;
use crate::events::pages::{CrawlRef, Discovered, DiscoverySource, PageEvent};
use crate::infra::publish::{Outgoing, PublishError, Publisher};
use crate::projections::clients::ClientRow;
use crate::projections::pages as pages_read;

/// Deepest a crawl may go.
pub const MAX_DEPTH: u32 = 10;
/// Most pages a crawl may find.
pub const MAX_PAGES: u32 = 50_000;
/// Most start pages.
pub const MAX_SEEDS: usize = 100;
/// Most links read from one page.
pub const MAX_LINKS_PER_PAGE: usize = 1_000;

/// What a crawl is asked to do.
#[derive(Clone, Debug)]
pub struct CrawlRequest {
    /// Start pages; none: the client's home page.
    pub seeds: Vec<String>,
    pub max_depth: u32,
    pub max_pages: u32,
}

/// A crawl started.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CrawlStarted {
    pub run_id: Uuid,
    pub seeds: Vec<String>,
    pub max_depth: u32,
    pub max_pages: u32,
}

/// Why a crawl was not started.
#[derive(Debug, thiserror::Error)]
pub enum CrawlError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn invalid(field: &'static str, message: impl Into<String>) -> CrawlError {
    CrawlError::Invalid {
        field,
        message: message.into(),
    }
}

/// Starts a crawl of `client`'s site.
pub async fn start(
    publisher: &Publisher,
    db: &sqlx::PgPool,
    client: &ClientRow,
    request: CrawlRequest,
) -> Result<CrawlStarted, CrawlError> {
    if !(1..=MAX_DEPTH).contains(&request.max_depth) {
        return Err(invalid("max_depth", format!("must be 1 to {MAX_DEPTH}")));
    }
    if !(1..=MAX_PAGES).contains(&request.max_pages) {
        return Err(invalid("max_pages", format!("must be 1 to {MAX_PAGES}")));
    }
    if request.seeds.len() > MAX_SEEDS {
        return Err(invalid("urls", format!("at most {MAX_SEEDS} start pages")));
    }
    let client_id = ClientId::from_uuid(client.id);
    let seeds = match request.seeds.is_empty() {
        false => request.seeds,
        true => vec![home_page(db, client).await?],
    };
    let mut urls = Vec::with_capacity(seeds.len());
    for seed in &seeds {
        let url =
            NormalizedUrl::parse(seed).map_err(|e| invalid("urls", format!("{seed}: {e}")))?;
        on_domain(&url, &client.domain, client.allow_subdomains)
            .map_err(|message| invalid("urls", message))?;
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    urls.truncate(usize::try_from(request.max_pages).unwrap_or(usize::MAX));
    let run_id = Uuid::now_v7();
    let crawl = CrawlRef {
        run_id,
        depth: 0,
        max_depth: request.max_depth,
        max_pages: request.max_pages,
    };
    let out: Vec<Outgoing<PageEvent>> = urls
        .iter()
        .map(|url| {
            let page = PageId::derive(client_id, url);
            let discovered = Discovered {
                crawl: Some(crawl),
                ..Discovered::bare(url.clone(), DiscoverySource::Manual)
            };
            // A start page already known is fetched again for its links: its own key.
            Outgoing::keyed(
                discovered.into_event(client_id),
                format!("crawl:{run_id}:{page}"),
            )
        })
        .collect();
    publisher.publish_all(&out).await?;
    Ok(CrawlStarted {
        run_id,
        seeds: urls.iter().map(ToString::to_string).collect(),
        max_depth: request.max_depth,
        max_pages: request.max_pages,
    })
}

/// The client's home page: the one it has (under the scheme its pages use), else https.
async fn home_page(db: &sqlx::PgPool, client: &ClientRow) -> Result<String, CrawlError> {
    let client_id = ClientId::from_uuid(client.id);
    let candidates: Vec<(String, Uuid)> = ["https", "http"]
        .iter()
        .filter_map(|scheme| {
            let url = NormalizedUrl::parse(&format!("{scheme}://{}/", client.domain)).ok()?;
            let id = PageId::derive(client_id, &url).as_uuid();
            Some((url.to_string(), id))
        })
        .collect();
    let ids: Vec<Uuid> = candidates.iter().map(|(_, id)| *id).collect();
    let known = pages_read::url_of_any(db, client.id, &ids).await?;
    Ok(known.unwrap_or_else(|| candidates[0].0.clone()))
}

/// The pages a crawl page's links name on the site (`site`: its domain and whether
/// subdomains count), each once, the page itself left out, in document order.
pub fn same_site_pages(
    client: ClientId,
    page: PageId,
    site: (&str, bool),
    links: &[url::Url],
) -> Vec<(PageId, NormalizedUrl)> {
    let mut seen = std::collections::HashSet::new();
    links
        .iter()
        .filter_map(|link| NormalizedUrl::parse(link.as_str()).ok())
        .filter(|url| on_domain(url, site.0, site.1).is_ok())
        .map(|url| (PageId::derive(client, &url), url))
        .filter(|(id, _)| *id != page && seen.insert(*id))
        .collect()
}

/// The pages to publish among a crawl page's [`same_site_pages`]: the new ones (`known`:
/// which exist), while the depth and the budget allow (`crawl_pages`: how many the crawl
/// has). Pure, so the rule is tested on its own.
pub fn next_pages(
    crawl: CrawlRef,
    candidates: Vec<(PageId, NormalizedUrl)>,
    known: &dyn Fn(&PageId) -> bool,
    crawl_pages: i64,
) -> Vec<(PageId, Discovered)> {
    if crawl.depth >= crawl.max_depth {
        return Vec::new();
    }
    let room = usize::try_from((i64::from(crawl.max_pages) - crawl_pages).max(0)).unwrap_or(0);
    let next = CrawlRef {
        depth: crawl.depth + 1,
        ..crawl
    };
    candidates
        .into_iter()
        .filter(|(id, _)| !known(id))
        .take(room)
        .map(|(id, url)| {
            let discovered = Discovered {
                crawl: Some(next),
                ..Discovered::bare(url, DiscoverySource::Link)
            };
            (id, discovered)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_become_pages_once_on_the_site_within_depth_and_budget() {
        let client = ClientId::from_uuid(Uuid::from_u128(1));
        let url = |s: &str| url::Url::parse(s).expect("url");
        let home = NormalizedUrl::parse("https://a.example/").expect("url");
        let page = PageId::derive(client, &home);
        let crawl = CrawlRef {
            run_id: Uuid::from_u128(9),
            depth: 0,
            max_depth: 2,
            max_pages: 4,
        };
        let known_url = NormalizedUrl::parse("https://a.example/known").expect("url");
        let known_id = PageId::derive(client, &known_url);
        let links = [
            url("https://a.example/"),
            url("https://a.example/a"),
            url("https://a.example/a/"),
            url("https://A.example/a"),
            url("https://b.a.example/sub"),
            url("https://other.example/x"),
            url("https://a.example/known"),
            url("https://a.example/b"),
            url("https://a.example/c"),
        ];
        let known = |id: &PageId| *id == known_id;
        let next = |crawl, site, crawl_pages| {
            let candidates = same_site_pages(client, page, site, &links);
            next_pages(crawl, candidates, &known, crawl_pages)
        };
        let got = next(crawl, ("a.example", false), 1);
        let urls: Vec<String> = got.iter().map(|(_, d)| d.url.to_string()).collect();
        assert_eq!(
            urls,
            [
                "https://a.example/a",
                "https://a.example/a/",
                "https://a.example/b"
            ],
            "the page itself, repeats, other hosts and known pages are left out; 3 fit the budget of 4"
        );
        assert!(got.iter().all(
            |(_, d)| d.source == DiscoverySource::Link && d.crawl.is_some_and(|c| c.depth == 1)
        ));
        let subdomains = next(crawl, ("a.example", true), 0);
        assert!(
            subdomains
                .iter()
                .any(|(_, d)| d.url.as_str() == "https://b.a.example/sub")
        );
        let deepest = CrawlRef { depth: 2, ..crawl };
        assert!(next(deepest, ("a.example", false), 0).is_empty());
        assert!(next(crawl, ("a.example", false), 4).is_empty());
    }
}
