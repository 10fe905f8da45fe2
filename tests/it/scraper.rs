//! The scraper and the scheduler against a local origin: change detection, conditional GET,
//! removal, retries, limits, charsets, robots.txt, the private-address rule, two scrapers
//! sharing the work, and scheduled refreshes.

use std::sync::Arc;
use std::time::Duration;

use ai_cache::app::Role;
use ai_cache::domain::content::ContentHash;
use ai_cache::events::pages::PageEvent;
use ai_cache::events::{Event, EventFamily};
use ai_cache::infra::blobs::BlobStore;
use reqwest::Method;
use serde_json::{Value, json};

use crate::clients::{create_client, send};
use crate::harness::{Options, TestApp, eventually, eventually_ok};
use crate::page_origin::{Page, PageOrigin, article};

struct Site {
    app: TestApp,
    origin: PageOrigin,
    client: String,
}

async fn site_with(options: Options, roles: &[Role]) -> Site {
    let app = TestApp::with_options(roles, options).await;
    let origin = PageOrigin::start().await;
    let client = create_client(&app, "Site", "site.test").await;
    // Fast crawling for tests (the politeness gate still spaces requests by 100 ms).
    send(
        app.master(Method::PUT, &format!("/api/v1/clients/{}", client))
            .json(&json!({"settings": {"crawl_rate_per_minute": 600}})),
    )
    .await;
    Site {
        app,
        origin,
        client,
    }
}

async fn site() -> Site {
    site_with(
        Options::default(),
        &[Role::Api, Role::Projections, Role::Scraper],
    )
    .await
}

impl Site {
    /// Adds a page by hand (which makes the scraper fetch it); returns its id.
    async fn add(&self, path: &str) -> String {
        let url = self.origin.url(path);
        let (status, body) = send(
            self.app
                .master(
                    Method::POST,
                    &format!("/api/v1/clients/{}/pages", self.client),
                )
                .json(&json!({"urls": [url]})),
        )
        .await;
        assert_eq!(
            (status, body["summary"]["created"].as_u64()),
            (200, Some(1)),
            "{body}"
        );
        let (_, page) = send(self.app.master(
            Method::GET,
            &format!(
                "/api/v1/clients/{}/pages/by-url?url={}",
                self.client,
                enc(&url)
            ),
        ))
        .await;
        page["id"].as_str().expect("id").to_owned()
    }

    async fn page(&self, id: &str) -> Value {
        send(self.app.master(Method::GET, &format!("/api/v1/pages/{id}")))
            .await
            .1
    }

    /// Waits until the page's state satisfies `pred`.
    async fn wait(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            last = self.page(id).await;
            if pred(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("page {id} never became {what}: {last}");
    }

    async fn refresh(&self, id: &str) {
        let (status, body) = send(
            self.app
                .master(Method::POST, &format!("/api/v1/pages/{id}/refresh")),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }

    /// The page's events, in order, as (type, data).
    async fn events(&self, id: &str) -> Vec<(String, Value)> {
        let stream = self.app.js().get_stream("PAGES").await.expect("stream");
        let mut out = Vec::new();
        for seq in 1..=self.app.last_seq("PAGES").await {
            let Ok(msg) = stream.get_raw_message(seq).await else {
                continue;
            };
            if msg.subject.ends_with(id) {
                let event = Event::<PageEvent>::from_json(&msg.payload).expect("event");
                let v = serde_json::to_value(&event.payload).expect("json");
                out.push((event.payload.event_type().to_owned(), v["data"].clone()));
            }
        }
        out
    }

    async fn types(&self, id: &str) -> Vec<String> {
        self.events(id).await.into_iter().map(|(t, _)| t).collect()
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn status_is(s: &'static str) -> impl Fn(&Value) -> bool {
    move |p| p["status"] == s
}

#[tokio::test]
async fn a_page_is_fetched_and_only_real_content_changes_count() {
    let s = site().await;
    s.origin
        .set("/a", Page::html(&article("First version.", "10:00")));
    let id = s.add("/a").await;
    let page = s.wait(&id, "changed", status_is("changed")).await;
    assert_eq!(
        (page["version"].as_i64(), page["last_http_status"].as_i64()),
        (Some(1), Some(200)),
        "{page}"
    );
    assert!(
        page["last_fetch_ms"].is_i64()
            && page["last_scraped_at"].is_string()
            && page["next_due_at"].is_string(),
        "{page}"
    );
    assert_eq!(page["has_raw_html"], true);
    assert_eq!(
        s.types(&id).await,
        ["pages.discovered", "pages.scraped", "pages.content_changed"]
    );

    // Only the footer's timestamp and a script changed: not a change.
    s.origin
        .set("/a", Page::html(&article("First version.", "23:59")));
    s.refresh(&id).await;
    s.wait(&id, "unchanged", status_is("unchanged")).await;
    let events = s.events(&id).await;
    assert_eq!(
        events
            .last()
            .map(|(t, d)| (t.as_str(), d["reason"].as_str())),
        Some(("pages.unchanged", Some("same_fingerprint")))
    );

    // The main text changed: version 2, with the fingerprint it replaces.
    s.origin
        .set("/a", Page::html(&article("Second version.", "00:01")));
    s.refresh(&id).await;
    let page = s
        .wait(&id, "version 2", |p| {
            p["version"] == 2 && p["status"] == "changed"
        })
        .await;
    let events = s.events(&id).await;
    let changed: Vec<&Value> = events
        .iter()
        .filter(|(t, _)| t == "pages.content_changed")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(changed.len(), 2);
    assert_eq!(
        changed[1]["previous_fingerprint"],
        changed[0]["fingerprint"]
    );
    // The raw HTML is in the blob store under its hash.
    let blobs = BlobStore::open(s.app.js(), 1 << 24).await.expect("blobs");
    let hash = ContentHash::parse(page["content_hash"].as_str().expect("hash")).expect("hash");
    let raw = blobs.get(&hash).await.expect("get").expect("stored");
    assert!(String::from_utf8_lossy(&raw).contains("Second version."));
    assert_eq!(s.origin.hits("/a").len(), 3);
}

#[tokio::test]
async fn a_conditional_get_answered_304_is_unchanged() {
    let s = site().await;
    s.origin
        .set("/e", Page::with_etag(&article("Tagged.", "x"), "\"v1\""));
    let id = s.add("/e").await;
    s.wait(&id, "changed", status_is("changed")).await;
    s.refresh(&id).await;
    let page = s.wait(&id, "unchanged", status_is("unchanged")).await;
    assert_eq!(page["last_http_status"], 304);
    let hits = s.origin.hits("/e");
    assert_eq!(hits.len(), 2);
    assert!(hits[0].1.get("if-none-match").is_none());
    assert_eq!(
        hits[1].1.get("if-none-match").and_then(|v| v.to_str().ok()),
        Some("\"v1\"")
    );
    assert_eq!(
        s.events(&id).await.last().map(|(_, d)| d["reason"].clone()),
        Some(json!("not_modified"))
    );
}

#[tokio::test]
async fn pages_answering_404_or_410_are_removed() {
    let s = site().await;
    s.origin.set(
        "/gone",
        Page::Status {
            status: 410,
            retry_after: None,
        },
    );
    let missing = s.add("/never-there").await;
    let gone = s.add("/gone").await;
    for id in [&missing, &gone] {
        s.wait(id, "removed", status_is("removed")).await;
    }
    assert_eq!(s.page(&gone).await["last_http_status"], 410);
    let (status, _) = send(
        s.app
            .master(Method::POST, &format!("/api/v1/pages/{gone}/refresh")),
    )
    .await;
    assert_eq!(status, 409, "a removed page is not refreshed");
}

#[tokio::test]
async fn a_server_error_is_retried_with_backoff_and_retry_after_is_honoured() {
    let s = site().await;
    s.origin.set(
        "/flaky",
        Page::Status {
            status: 500,
            retry_after: None,
        },
    );
    s.origin.set(
        "/busy",
        Page::Status {
            status: 503,
            retry_after: Some(2),
        },
    );
    let flaky = s.add("/flaky").await;
    let busy = s.add("/busy").await;
    let page = s.wait(&flaky, "failed", status_is("failed")).await;
    assert_eq!(
        (
            page["last_http_status"].as_i64(),
            page["last_error_kind"].as_str()
        ),
        (Some(500), Some("transient"))
    );
    s.wait(&busy, "failed", status_is("failed")).await;
    let failed = s
        .events(&busy)
        .await
        .into_iter()
        .find(|(t, _)| t == "pages.scrape_failed")
        .expect("recorded");
    assert_eq!(
        (
            failed.1["retry_after_secs"].as_u64(),
            failed.1["attempt"].as_u64()
        ),
        (Some(2), Some(1))
    );
    // The origin recovers: the retries complete the pages.
    s.origin.set("/flaky", Page::html(&article("Back.", "1")));
    s.origin
        .set("/busy", Page::html(&article("Back too.", "1")));
    s.wait(&flaky, "changed", status_is("changed")).await;
    s.wait(&busy, "changed", status_is("changed")).await;
    let hits = s.origin.hits("/busy");
    assert!(
        hits[1].0 - hits[0].0 >= Duration::from_secs(2),
        "Retry-After: 2 was honoured: {:?}",
        hits[1].0 - hits[0].0
    );
}

#[tokio::test]
async fn oversized_endless_looping_non_html_and_odd_charset_pages() {
    let s = site().await;
    s.origin.set(
        "/huge",
        Page::html(&format!(
            "<html><body><main>{}</main></body></html>",
            "x".repeat(2 * 1024 * 1024)
        )),
    );
    s.origin.set("/endless", Page::Endless);
    s.origin.set("/loop", Page::Redirect("/loop".into()));
    s.origin.set(
        "/doc.pdf",
        Page::Html {
            body: b"%PDF-1.7".to_vec(),
            content_type: "application/pdf".into(),
            etag: None,
        },
    );
    s.origin.set(
        "/latin1",
        Page::Html {
            body: b"<html><body><main>Caf\xe9 cr\xe8me</main></body></html>".to_vec(),
            content_type: "text/html; charset=ISO-8859-1".into(),
            etag: None,
        },
    );
    let mut ids = Vec::new();
    for path in ["/huge", "/endless", "/loop", "/doc.pdf", "/latin1"] {
        ids.push((path, s.add(path).await));
    }
    for (path, id) in &ids[..3] {
        let page = s.wait(id, "failed", status_is("failed")).await;
        assert_eq!(page["last_error_kind"], "permanent", "{path}: {page}");
    }
    assert!(
        s.page(&ids[0].1).await["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than"))
    );
    assert!(
        s.page(&ids[2].1).await["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("redirect"))
    );
    let pdf = s.wait(&ids[3].1, "failed", status_is("failed")).await;
    assert_eq!(pdf["last_error_kind"], "unsupported_content_type");
    let latin1 = s.wait(&ids[4].1, "changed", status_is("changed")).await;
    let blobs = BlobStore::open(s.app.js(), 1 << 24).await.expect("blobs");
    let raw = blobs
        .get(&ContentHash::parse(latin1["content_hash"].as_str().expect("hash")).expect("hash"))
        .await
        .expect("get")
        .expect("stored");
    assert!(
        String::from_utf8(raw)
            .expect("stored as UTF-8")
            .contains("Café crème")
    );
    // Permanent failures are not retried: the scraper holds nothing more to fetch.
    s.app
        .drained("PAGES", &["scraper-discovered", "scraper-refresh"])
        .await;
    assert_eq!(s.origin.hits("/huge").len(), 1);
    assert_eq!(s.origin.hits("/doc.pdf").len(), 1);
}

#[tokio::test]
async fn a_slow_origin_times_out_as_a_transient_failure() {
    let s = site_with(
        Options {
            fetch_timeout_secs: 1,
            ..Options::default()
        },
        &[Role::Api, Role::Projections, Role::Scraper],
    )
    .await;
    s.origin.set("/slow", Page::Slow(Duration::from_secs(3)));
    let id = s.add("/slow").await;
    let page = s.wait(&id, "failed", status_is("failed")).await;
    assert_eq!(
        (
            page["last_error_kind"].as_str(),
            page["last_error"].as_str()
        ),
        (Some("transient"), Some("timed out"))
    );
}

#[tokio::test]
async fn robots_txt_is_honoured_disallow_and_crawl_delay() {
    let s = site().await;
    s.origin.robots("User-agent: *\nCrawl-delay: 1\nDisallow: /private\n\nUser-agent: SomeOtherBot\nDisallow: /\n");
    for p in ["/private/x", "/pub/1", "/pub/2"] {
        s.origin.set(p, Page::html(&article(p, "0")));
    }
    let private = s.add("/private/x").await;
    let one = s.add("/pub/1").await;
    let two = s.add("/pub/2").await;
    let page = s.wait(&private, "blocked", status_is("blocked")).await;
    assert_eq!(page["last_error_kind"], "robots_disallowed");
    s.wait(&one, "changed", status_is("changed")).await;
    s.wait(&two, "changed", status_is("changed")).await;
    assert!(s.origin.hits("/private/x").is_empty(), "never fetched");
    let (a, b) = (s.origin.hits("/pub/1")[0].0, s.origin.hits("/pub/2")[0].0);
    let gap = if a > b { a - b } else { b - a };
    // Requests start 1 s apart; the origin sees arrivals, and the first one may have spent
    // tens of milliseconds more on its connection. Without the crawl-delay they would be
    // 100 ms apart (600 requests a minute).
    assert!(
        gap >= Duration::from_millis(800),
        "crawl-delay 1 s between requests to the host: {gap:?}"
    );
    assert_eq!(
        s.origin.hits("/robots.txt").len(),
        1,
        "robots.txt is cached per host"
    );
    let user_agent = s.origin.hits("/robots.txt")[0]
        .1
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert!(
        user_agent.is_some_and(|ua| ua.starts_with("ai-cache/")),
        "fetched with our own agent"
    );
}

#[tokio::test]
async fn private_addresses_are_refused_directly_and_after_a_redirect() {
    let s = site_with(
        Options {
            allow_private_networks: false,
            ..Options::default()
        },
        &[Role::Api, Role::Projections, Role::Scraper],
    )
    .await;
    s.origin.set(
        "/to-loopback",
        Page::Redirect(format!("http://127.0.0.1:{}/a", s.origin.port)),
    );
    let id = s.add("/to-loopback").await;
    let page = s.wait(&id, "failed", status_is("failed")).await;
    assert_eq!(page["last_error_kind"], "blocked_address", "{page}");
    // A discovered URL at a loopback address (as a bad import could make) is refused too.
    let client: ai_cache::domain::ids::ClientId = s.client.parse().expect("id");
    let event =
        crate::projections::discovered(client, &format!("http://127.0.0.1:{}/a", s.origin.port));
    let page_id = event.meta.page_id.expect("page").to_string();
    ai_cache::infra::publish::Publisher::new(s.app.js().clone())
        .publish(&ai_cache::infra::publish::Outgoing::unique(event))
        .await
        .expect("publish");
    let page = s.wait(&page_id, "failed", status_is("failed")).await;
    assert_eq!(page["last_error_kind"], "blocked_address");
    assert!(s.origin.hits("/a").is_empty());
}

#[tokio::test]
async fn two_scrapers_share_the_consumers_and_fetch_each_page_once() {
    let s = site().await;
    // A second scraper, as another process would run it, on the same consumers.
    let config = ai_cache::pipeline::scraper::ScraperConfig {
        max_body_bytes: 1 << 20,
        per_host_concurrency: 4,
        robots_agent: "ai-cache".into(),
        robots_ttl: Duration::from_secs(60),
    };
    let http =
        ai_cache::infra::http::HttpClient::new(&s.app.options.fetch_config().http()).expect("http");
    let blobs = BlobStore::open(s.app.js(), 1 << 24).await.expect("blobs");
    let second = Arc::new(
        ai_cache::pipeline::scraper::Scraper::new(
            s.app.js(),
            http,
            s.app.db().clone(),
            blobs,
            &config,
        )
        .await
        .expect("scraper"),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    for durable in ["scraper-discovered", "scraper-refresh"] {
        let rt = ai_cache::pipeline::runtime::ConsumerRuntime::<PageEvent, _>::new(
            s.app.js().clone(),
            durable,
            Arc::clone(&second),
            Default::default(),
        );
        let stop = stop.clone();
        tokio::spawn(async move { rt.run(stop).await });
    }
    let paths: Vec<String> = (0..20).map(|i| format!("/many/{i}")).collect();
    for p in &paths {
        s.origin.set(p, Page::html(&article(p, "0")));
    }
    let urls: Vec<String> = paths.iter().map(|p| s.origin.url(p)).collect();
    let (status, _) = send(
        s.app
            .master(Method::POST, &format!("/api/v1/clients/{}/pages", s.client))
            .json(&json!({"urls": urls})),
    )
    .await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(30), "every page is fetched", || async {
        let (_, list) = send(s.app.master(
            Method::GET,
            &format!("/api/v1/sitemap/client/{}/pages?has_content=true", s.client),
        ))
        .await;
        list["total_pages"] == 20
    })
    .await;
    stop.cancel();
    for p in &paths {
        assert_eq!(s.origin.hits(p).len(), 1, "{p} fetched once");
    }
}

#[tokio::test]
async fn the_scheduler_refreshes_due_pages_once_even_with_several_instances() {
    let s = site_with(
        Options::default(),
        &[Role::Api, Role::Projections, Role::Scraper, Role::Scheduler],
    )
    .await;
    s.origin.set("/due", Page::html(&article("Due.", "0")));
    let id = s.add("/due").await;
    s.wait(&id, "changed", status_is("changed")).await;
    assert_eq!(s.origin.hits("/due").len(), 1, "not due yet: no refresh");
    // Two days pass for this page (the read model's clock is moved back; no event changes).
    sqlx::query("UPDATE pages SET last_scraped_at = last_scraped_at - interval '2 days', last_attempt_at = last_attempt_at - interval '2 days' WHERE id = $1::uuid")
        .bind(&id)
        .execute(s.app.db())
        .await
        .expect("age the page");
    // Two more scheduler instances race the running one.
    let publisher = ai_cache::infra::publish::Publisher::new(s.app.js().clone());
    let (a, b) = tokio::join!(
        ai_cache::pipeline::scheduler::pass(s.app.db(), &publisher, 3600),
        ai_cache::pipeline::scheduler::pass(s.app.db(), &publisher, 3600)
    );
    a.expect("pass");
    b.expect("pass");
    s.wait(&id, "fetched again", |p| p["status"] == "unchanged")
        .await;
    // Two more passes (that get the lock: the running instance may hold it) find nothing due.
    for _ in 0..2 {
        let requested = eventually_ok(Duration::from_secs(10), || async {
            ai_cache::pipeline::scheduler::pass(s.app.db(), &publisher, 3600)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "the running instance holds the lock".to_owned())
        })
        .await;
        assert_eq!(requested, 0, "nothing due after the fetch");
    }
    s.app
        .drained("PAGES", &["scraper-discovered", "scraper-refresh"])
        .await;
    let refreshes: Vec<Value> = s
        .events(&id)
        .await
        .into_iter()
        .filter(|(t, _)| t == "pages.refresh_requested")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        refreshes,
        [json!({"reason": "scheduled"})],
        "one refresh for one due time"
    );
    assert_eq!(s.origin.hits("/due").len(), 2);
    let page = s.page(&id).await;
    let next: chrono::DateTime<chrono::Utc> = page["next_due_at"]
        .as_str()
        .expect("due")
        .parse()
        .expect("time");
    assert!(
        next > chrono::Utc::now() + chrono::Duration::hours(23),
        "next due a day after this fetch: {next}"
    );
}

#[tokio::test]
async fn a_newer_sitemap_lastmod_makes_a_page_due() {
    let s = site_with(
        Options::default(),
        &[Role::Api, Role::Projections, Role::Scraper, Role::Scheduler],
    )
    .await;
    s.origin.set("/news", Page::html(&article("News.", "0")));
    let id = s.add("/news").await;
    s.wait(&id, "changed", status_is("changed")).await;
    // The sitemap now says the page changed after our fetch (to the second, as sitemaps do:
    // the second after the fetch's, which the scheduler takes once the clock has reached it).
    let fetched: chrono::DateTime<chrono::Utc> = s.page(&id).await["last_scraped_at"]
        .as_str()
        .expect("fetched")
        .parse()
        .expect("time");
    let lastmod =
        (fetched + chrono::Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let client: ai_cache::domain::ids::ClientId = s.client.parse().expect("id");
    let page: ai_cache::domain::ids::PageId = id.parse().expect("id");
    let update = ai_cache::events::pages::MetadataUpdated {
        sitemap_url: None,
        lastmod: Some(lastmod),
        changefreq: None,
        priority: None,
        alternates: Vec::new(),
    };
    let event = Event::new(client, Some(page), PageEvent::MetadataUpdated(update));
    ai_cache::infra::publish::Publisher::new(s.app.js().clone())
        .publish(&ai_cache::infra::publish::Outgoing::unique(event))
        .await
        .expect("publish");
    eventually(
        Duration::from_secs(15),
        "a refresh because of the lastmod",
        || async {
            s.events(&id)
                .await
                .iter()
                .any(|(t, d)| t == "pages.refresh_requested" && d["reason"] == "sitemap_lastmod")
        },
    )
    .await;
    s.wait(&id, "fetched again", status_is("unchanged")).await;
}

#[tokio::test]
async fn a_clients_pages_are_refreshed_on_request() {
    let s = site().await;
    for p in ["/r/1", "/r/2", "/r/3"] {
        s.origin.set(p, Page::html(&article(p, "0")));
    }
    let mut ids = Vec::new();
    for p in ["/r/1", "/r/2", "/r/3"] {
        ids.push(s.add(p).await);
    }
    for id in &ids {
        s.wait(id, "changed", status_is("changed")).await;
    }
    let (status, body) = send(s.app.master(
        Method::POST,
        &format!("/api/v1/clients/{}/refresh", s.client),
    ))
    .await;
    assert_eq!(
        (status, body["requested"].as_u64()),
        (202, Some(3)),
        "{body}"
    );
    for id in &ids {
        s.wait(id, "fetched again", status_is("unchanged")).await;
    }
}
