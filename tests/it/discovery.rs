//! Sitemap import and preview end to end against a local origin: robots.txt discovery,
//! indexes, gzip, fallbacks, hostile documents, limits, the domain and private-address rules.

use ai_cache::app::Role;
use ai_cache::commands::discovery::{Discovery, DiscoveryError, DiscoveryLimits};
use ai_cache::infra::http::{FetchError, HttpClient, HttpConfig};
use reqwest::Method;
use serde_json::{Value, json};

use crate::clients::{create_client, send};
use crate::harness::{Options, TestApp, stream_count};
use crate::origin::{Origin, Robots};

async fn setup(robots: Robots) -> (TestApp, Origin, String) {
    let app = TestApp::with_roles(&[Role::Api, Role::Projections]).await;
    let origin = Origin::start(robots).await;
    let client = create_client(&app, "Site", "site.test").await;
    (app, origin, client)
}

async fn import(app: &TestApp, client: &str, url: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"client_id": client, "sitemap_url": url});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    app.import_sitemap(&body).await
}

fn summary(body: &Value) -> (u64, u64, u64, u64, u64) {
    let s = &body["summary"];
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {body}"));
    (
        n("total_urls"),
        n("created"),
        n("skipped"),
        n("updated"),
        n("errors"),
    )
}

#[tokio::test]
async fn a_site_is_imported_through_robots_txt_and_its_sitemap_index() {
    let (app, origin, client) = setup(Robots::Variant("robots-with-sitemapindex")).await;
    let (status, body) = import(&app, &client, &origin.url("/"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(summary(&body), (6, 6, 0, 0, 0), "{body}");
    assert_eq!(body["message"], "Sitemap imported successfully");
    assert_eq!(body["client"]["domain"], "site.test");
    assert_eq!(
        body["sitemaps"].as_array().map(Vec::len),
        Some(4),
        "the index and its three sitemaps"
    );
    assert_eq!(
        stream_count(app.js(), "PAGES", Some("pages.discovered.>")).await,
        6,
        "one pages.discovered per new URL"
    );

    let (status, pages) = send(app.master(
        Method::GET,
        &format!("/api/v1/sitemap/client/{client}/pages?limit=100&offset=0&has_content=false"),
    ))
    .await;
    assert_eq!(status, 200, "{pages}");
    assert_eq!(pages["total_pages"], 6);
    assert_eq!(pages["client_name"], "Site");
    let first = &pages["pages"][0];
    assert_eq!(first["has_raw_html"], false);
    assert_eq!(first["status"], "discovered");
    assert_eq!(first["version"], 1);
    assert!(first["last_scraped_at"].is_null());
    let (_, with_content) = send(app.master(
        Method::GET,
        &format!("/api/v1/sitemap/client/{client}/pages?has_content=true"),
    ))
    .await;
    assert_eq!(with_content["total_pages"], 0);
    let (_, paged) = send(app.master(
        Method::GET,
        &format!("/api/v1/sitemap/client/{client}/pages?limit=4&offset=4"),
    ))
    .await;
    assert_eq!(paged["pages"].as_array().map(Vec::len), Some(2));

    // Importing again creates nothing: every page is known.
    let (_, again) = import(&app, &client, &origin.url("/"), json!({})).await;
    assert_eq!(summary(&again), (6, 0, 6, 0, 0));
    assert_eq!(
        stream_count(app.js(), "PAGES", Some("pages.discovered.>")).await,
        6
    );
}

#[tokio::test]
async fn gzipped_indexes_plain_fallbacks_and_missing_sitemaps() {
    let (app, origin, client) = setup(Robots::Variant("robots-with-sitemapindex-gz")).await;
    let (status, body) = import(&app, &client, &origin.url("/"), json!({})).await;
    assert_eq!((status, summary(&body).1), (200, 6), "{body}");

    // No robots.txt and no sitemap at the usual places: a clear 422.
    let (app, origin, client) = setup(Robots::Variant("robots-without-sitemap")).await;
    let (status, body) = import(&app, &client, &origin.url("/"), json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("no_sitemap")),
        "{body}"
    );
    let _ = origin;
    // robots.txt names a sitemap that does not exist.
    let (app2, origin2, client2) = setup(Robots::Variant("robots-with-invalid-sitemap")).await;
    let (status, body) = import(&app2, &client2, &origin2.url("/"), json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("sitemap_unreadable")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("404")),
        "{body}"
    );
    // An index whose sitemap is missing: the import goes on and says what failed.
    let (status, body) = import(
        &app,
        &client,
        &origin.url("/sitemapindex-with-invalid-sitemap.xml"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["summary"]["error_details"]
            .to_string()
            .contains("invalid.xml"),
        "{body}"
    );
}

#[tokio::test]
async fn off_domain_private_and_invalid_urls_are_errors_with_reasons_and_the_rest_is_imported() {
    let (app, origin, client) = setup(Robots::None).await;
    let (status, body) = import(&app, &client, &origin.url("/mixed.xml"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    // 9 entries: 2 good, 1 duplicate of a good one (fragment), 6 refused.
    assert_eq!(summary(&body), (9, 2, 1, 0, 6), "{body}");
    let details = body["summary"]["error_details"].to_string();
    for reason in [
        "not the client's domain",
        "subdomain of site.test",
        "unsupported scheme",
        "invalid url",
    ] {
        assert!(details.contains(reason), "{reason} in {details}");
    }
    // With subdomains allowed, www.site.test is accepted.
    let (status, _) = app
        .put_client(&client, &json!({"settings": {"allow_subdomains": true}}))
        .await;
    assert_eq!(status, 200);
    let (_, body) = import(&app, &client, &origin.url("/mixed.xml"), json!({})).await;
    assert_eq!(
        summary(&body).1,
        1,
        "the subdomain page is created now: {body}"
    );
}

#[tokio::test]
async fn overwrite_updates_changed_metadata_and_create_pages_false_is_a_dry_run() {
    let (app, origin, client) = setup(Robots::None).await;
    let (_, body) = import(
        &app,
        &client,
        &origin.url("/sitemap-01.xml"),
        json!({"create_pages": false}),
    )
    .await;
    assert_eq!(summary(&body), (1, 1, 0, 0, 0), "{body}");
    assert_eq!(
        stream_count(app.js(), "PAGES", None).await,
        0,
        "a dry run publishes nothing"
    );
    import(&app, &client, &origin.url("/sitemap-01.xml"), json!({})).await;
    let (_, body) = import(
        &app,
        &client,
        &origin.url("/sitemap-01-changed.xml"),
        json!({}),
    )
    .await;
    assert_eq!(
        summary(&body),
        (1, 0, 1, 0, 0),
        "without overwrite a known page is skipped"
    );
    let (_, body) = import(
        &app,
        &client,
        &origin.url("/sitemap-01-changed.xml"),
        json!({"overwrite": true}),
    )
    .await;
    assert_eq!(summary(&body), (1, 0, 0, 1, 0), "{body}");
    let (_, page) = send(app.master(
        Method::GET,
        &format!(
            "/api/v1/clients/{client}/pages/by-url?url={}",
            origin.url("/page-01")
        ),
    ))
    .await;
    assert_eq!(
        (page["lastmod"].as_str(), page["priority"].as_str()),
        (Some("2026-06-01"), Some("0.9")),
        "{page}"
    );
    let (_, body) = import(
        &app,
        &client,
        &origin.url("/sitemap-01-changed.xml"),
        json!({"overwrite": true}),
    )
    .await;
    assert_eq!(
        summary(&body),
        (1, 0, 1, 0, 0),
        "nothing changed the second time"
    );
    assert_eq!(
        stream_count(app.js(), "PAGES", Some("pages.metadata_updated.>")).await,
        1
    );
}

#[tokio::test]
async fn hostile_sitemaps_get_a_clear_422_and_nothing_is_created() {
    let (app, origin, client) = setup(Robots::None).await;
    for (path, code, text) in [
        ("/laughs.xml", "sitemap_unreadable", "DTD"),
        ("/xxe.xml", "sitemap_unreadable", "DTD"),
        (
            "/bomb.xml.gz",
            "sitemap_unreadable",
            "inflates to more than",
        ),
        ("/endless.xml", "sitemap_unreadable", "larger than"),
        ("/corrupted.gz", "sitemap_unreadable", "gzip"),
        ("/sitemap-empty.xml", "sitemap_unreadable", "empty"),
        ("/nope.xml", "sitemap_unreadable", "404"),
    ] {
        let (status, body) = import(&app, &client, &origin.url(path), json!({})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some(code)),
            "{path}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(text)),
            "{path}: {body}"
        );
    }
    let (status, body) = import(&app, &client, "ftp://site.test/sitemap.xml", json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_url")),
        "{body}"
    );
    assert_eq!(stream_count(app.js(), "PAGES", None).await, 0);
}

#[tokio::test]
async fn cycles_and_deep_chains_stop_and_say_why() {
    let (app, origin, client) = setup(Robots::None).await;
    let (status, body) = import(&app, &client, &origin.url("/self-index.xml"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        summary(&body).1,
        1,
        "the index's real sitemap is read once: {body}"
    );
    assert!(
        body["summary"]["error_details"]
            .to_string()
            .contains("already read"),
        "{body}"
    );

    let (status, body) = import(
        &app,
        &client,
        &origin.url("/chain-0.xml"),
        json!({"max_depth": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["sitemaps"].as_array().map(Vec::len),
        Some(3),
        "depths 0, 1 and 2: {body}"
    );
    assert!(
        body["summary"]["error_details"]
            .to_string()
            .contains("deeper than max_depth 2"),
        "{body}"
    );
    let (status, body) = import(
        &app,
        &client,
        &origin.url("/chain-0.xml"),
        json!({"max_depth": 11}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("max_depth")),
        "{body}"
    );
    let (_, body) = import(
        &app,
        &client,
        &origin.url("/sitemapindex-1.xml"),
        json!({"recursive": false}),
    )
    .await;
    assert_eq!(
        summary(&body).0,
        0,
        "an index is not followed without recursive: {body}"
    );
}

#[tokio::test]
async fn a_50000_url_index_stops_at_the_safety_limit_with_a_correct_summary() {
    let (app, origin, client) = setup(Robots::None).await;
    let (status, body) = import(&app, &client, &origin.url("/index-50k.xml"), json!({})).await;
    // 202 when the projection was still applying the 10,000 pages at WRITE_TIMEOUT_SECS.
    assert!(matches!(status, 200 | 202), "{body}");
    if status == 202 {
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m
                    .ends_with("; the pages are still being applied (readable within seconds)")),
            "{body}"
        );
        app.caught_up("pages", "PAGES").await;
    }
    assert_eq!(
        summary(&body),
        (10_000, 10_000, 0, 0, 0),
        "{}",
        body["summary"]
    );
    assert_eq!(body["summary"]["truncated"], true);
    assert_eq!(body["summary"]["limit"], 10_000);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("safety limit"))
    );
    let (_, pages) = send(app.master(
        Method::GET,
        &format!("/api/v1/sitemap/client/{client}/pages?limit=1"),
    ))
    .await;
    assert_eq!(
        pages["total_pages"], 10_000,
        "every created page is readable once the answer is 200 (or caught up after a 202)"
    );
    // One 60,000-URL document: read up to the limit, not beyond.
    let (_, body) = import(
        &app,
        &client,
        &origin.url("/big-60k.xml"),
        json!({"create_pages": false}),
    )
    .await;
    assert_eq!(
        (summary(&body).0, body["summary"]["truncated"].as_bool()),
        (10_000, Some(true))
    );
}

#[tokio::test]
async fn the_preview_shows_the_first_100_urls_and_creates_nothing() {
    let (app, origin, _) = setup(Robots::Variant("robots-with-sitemapindex")).await;
    let (status, body) = app
        .parse_sitemap(
            &json!({"sitemap_url": origin.url("/sitemapindex-1.xml"), "recursive": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["total_urls"].as_u64(), body["truncated"].as_bool()),
        (Some(6), Some(false))
    );
    assert_eq!(
        body["urls"][0],
        json!({"loc": origin.url("/page-01"), "lastmod": "2024-02-12T12:34:56+01:00", "priority": "0.5", "changefreq": "always"})
    );
    let (_, big) = app
        .parse_sitemap(&json!({"sitemap_url": origin.url("/big-60k.xml")}))
        .await;
    assert_eq!(
        (
            big["urls"].as_array().map(Vec::len),
            big["truncated"].as_bool()
        ),
        (Some(100), Some(true))
    );
    assert_eq!(stream_count(app.js(), "PAGES", None).await, 0);
}

#[tokio::test]
async fn urls_are_added_by_hand_and_pages_are_found_by_id_and_by_url() {
    let (app, origin, client) = setup(Robots::None).await;
    let urls = json!({"urls": [origin.url("/a"), origin.url("/b?x=1#frag"), origin.url("/a"), "https://elsewhere.example/", "nonsense"]});
    let (status, body) = app.post_pages(&client, &urls).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(summary(&body), (5, 2, 1, 0, 2), "{body}");
    let (status, page) = send(app.master(
        Method::GET,
        &format!(
            "/api/v1/clients/{client}/pages/by-url?url={}",
            urlencode(&origin.url("/b?x=1"))
        ),
    ))
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["source"], "manual");
    let (status, same) = send(app.master(
        Method::GET,
        &format!("/api/v1/pages/{}", page["id"].as_str().expect("id")),
    ))
    .await;
    assert_eq!((status, &same["url"]), (200, &page["url"]));
    let (status, _) = send(app.master(
        Method::GET,
        &format!(
            "/api/v1/clients/{client}/pages/by-url?url={}",
            urlencode(&origin.url("/never"))
        ),
    ))
    .await;
    assert_eq!(status, 404);
    let (status, body) = app.post_pages(&client, &json!({"urls": []})).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("urls"))
    );
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn client_keys_reach_only_their_own_pages_and_imports() {
    let (app, origin, a) = setup(Robots::None).await;
    let b = create_client(&app, "Other", "other.test").await;
    let b_url = origin.url("/page-01").replace("site.test", "other.test");
    let (status, _) = app.post_pages(&b, &json!({"urls": [b_url]})).await;
    assert_eq!(status, 200);
    let (_, key) = app
        .post_key(&a, &json!({"scopes": ["read", "write"]}))
        .await;
    let key = key["key"].as_str().expect("key").to_owned();
    let (_, b_pages) =
        send(app.master(Method::GET, &format!("/api/v1/sitemap/client/{b}/pages"))).await;
    let b_page = b_pages["pages"][0]["id"]
        .as_str()
        .expect("a page of B")
        .to_owned();
    let with_key = |m: Method, p: String| app.request(m, &p).header("X-API-Key", &key);
    let refused = [
        with_key(Method::GET, format!("/api/v1/sitemap/client/{b}/pages")),
        with_key(Method::GET, format!("/api/v1/pages/{b_page}")),
        with_key(Method::GET, format!("/api/v1/clients/{b}/pages/by-url?url={}", urlencode(&b_url))),
        with_key(Method::POST, format!("/api/v1/clients/{b}/pages")).json(&json!({"urls": ["http://other.test/x"]})),
        with_key(Method::POST, "/api/v1/sitemap/import".into()).json(&json!({"client_id": b, "sitemap_url": origin.url("/sitemap-01.xml")})),
        with_key(Method::POST, format!("/api/v1/pages/{b_page}/refresh")),
        with_key(Method::POST, format!("/api/v1/clients/{b}/refresh")),
        with_key(Method::GET, format!("/api/v1/pages/{b_page}/content?format=raw")),
        with_key(Method::POST, "/api/v1/sitemap/parse".into()).json(&json!({"sitemap_url": origin.url("/sitemap-01.xml").replace("site.test", "other.test")})),
    ];
    for req in refused {
        let (status, body) = send(req).await;
        assert!(matches!(status, 403 | 404), "{status}: {body}");
        assert!(!body.to_string().contains("page-01"), "{body}");
    }
    let (status, _) = send(
        with_key(Method::POST, "/api/v1/sitemap/import".into())
            .json(&json!({"client_id": a, "sitemap_url": origin.url("/sitemap-01.xml")})),
    )
    .await;
    assert_eq!(status, 200, "its own import works");
    let (status, _) = send(with_key(
        Method::GET,
        format!("/api/v1/sitemap/client/{a}/pages"),
    ))
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn without_private_networks_internal_addresses_are_refused_before_and_after_redirects() {
    let app = TestApp::with_options(
        &[Role::Api, Role::Projections],
        Options {
            allow_private_networks: false,
            ..Options::default()
        },
    )
    .await;
    let origin = Origin::start(Robots::None).await;
    let client = create_client(&app, "Site", "site.test").await;
    let (status, body) = import(
        &app,
        &client,
        &format!("http://127.0.0.1:{}/sitemap-01.xml", origin.port),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("blocked_address")),
        "{body}"
    );
    // site.test is pinned to 127.0.0.1 by configuration, but its redirect to a loopback
    // address is checked like any other hop.
    let (status, body) = import(
        &app,
        &client,
        &origin.url("/redirect-to-loopback.xml"),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("blocked_address")),
        "{body}"
    );

    // A name that resolves to loopback through DNS is refused by the resolver.
    let http = HttpClient::new(&HttpConfig::default()).expect("client");
    let err = http
        .get(
            &format!("http://localhost:{}/sitemap-01.xml", origin.port),
            1024,
        )
        .await
        .expect_err("refused");
    assert_eq!(err, FetchError::BlockedAddress("localhost".into()));
    let discovery = Discovery::new(http, DiscoveryLimits::default());
    let err = discovery
        .discover(
            &format!("http://localhost:{}/", origin.port),
            true,
            3,
            &|_| {},
        )
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            DiscoveryError::Fetch {
                error: FetchError::BlockedAddress(_),
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_feed_is_imported_like_a_sitemap_and_hreflang_alternates_stay_with_their_page() {
    let app = TestApp::with_roles(&[Role::Api, Role::Projections]).await;
    let origin = crate::page_origin::PageOrigin::start().await;
    let client = create_client(&app, "Site", "site.test").await;
    let page = |path: &str| origin.url(path);
    origin.set(
        "/feed.xml",
        crate::page_origin::Page::html(&format!(
            r#"<?xml version="1.0"?><rss version="2.0"><channel><title>Blog</title><link>{}</link>
            <item><title>One</title><link>{}</link><pubDate>Sun, 06 Jul 2014 12:56:00 GMT</pubDate></item>
            <item><title>Two</title><link>{}</link></item></channel></rss>"#,
            page("/"),
            page("/one"),
            page("/two")
        )),
    );
    origin.set(
        "/sitemap.xml",
        crate::page_origin::Page::html(&format!(
            r#"<sm:urlset xmlns:sm="http://www.sitemaps.org/schemas/sitemap/0.9" xmlns:xhtml="http://www.w3.org/1999/xhtml">
            <sm:url><sm:loc>{}</sm:loc><xhtml:link rel="alternate" hreflang="de" href="{}"/></sm:url></sm:urlset>"#,
            page("/en/"),
            page("/de/")
        )),
    );
    let (status, body) = import(&app, &client, &page("/feed.xml"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(summary(&body), (2, 2, 0, 0, 0), "{body}");
    let (status, body) = import(&app, &client, &page("/sitemap.xml"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(summary(&body).1, 1, "{body}");

    let by_url = |url: String| {
        let app = &app;
        let client = client.clone();
        async move {
            let (status, body) = send(app.master(
                Method::GET,
                &format!("/api/v1/clients/{client}/pages/by-url?url={url}"),
            ))
            .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let one = by_url(page("/one")).await;
    assert_eq!(one["lastmod"], "2014-07-06T12:56:00Z", "{one}");
    assert_eq!(one["source"], "sitemap");
    let en = by_url(page("/en/")).await;
    assert_eq!(
        en["alternates"],
        json!([{"hreflang": "de", "href": page("/de/")}]),
        "{en}"
    );

    // An overwriting import with other alternates replaces them.
    origin.set(
        "/sitemap.xml",
        crate::page_origin::Page::html(&format!(
            r#"<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" xmlns:xhtml="http://www.w3.org/1999/xhtml">
            <url><loc>{}</loc><xhtml:link rel="alternate" hreflang="fr" href="{}"/></url></urlset>"#,
            page("/en/"),
            page("/fr/")
        )),
    );
    let (status, body) = import(
        &app,
        &client,
        &page("/sitemap.xml"),
        json!({"overwrite": true}),
    )
    .await;
    assert_eq!((status, summary(&body).3), (200, 1), "{body}");
    let en = by_url(page("/en/")).await;
    assert_eq!(
        en["alternates"],
        json!([{"hreflang": "fr", "href": page("/fr/")}]),
        "{en}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_follows_same_site_links_within_its_depth_by_the_scrapers_own_fetches() {
    use crate::page_origin::{Page, PageOrigin};
    let app = TestApp::with_options(&crate::harness::PIPELINE_ROLES, Default::default()).await;
    let origin = PageOrigin::start().await;
    origin.robots("User-agent: *\nDisallow: /private\n");
    let client = create_client(&app, "Site", "site.test").await;
    app.crawl_rate(&client, 600).await;
    let linking = |title: &str, links: &[&str]| {
        let anchors: String = links
            .iter()
            .map(|l| format!("<li><a href=\"{l}\">{l}</a></li>"))
            .collect();
        Page::html(&format!(
            "<html><head><title>{title}</title></head><body><main><h1>{title}</h1><p>The page \
             {title}, with enough words in it to be the main content of an article page.</p>\
             <ul>{anchors}</ul></main></body></html>"
        ))
    };
    origin.set(
        "/",
        linking(
            "Home",
            &["/a", "b", "/private/x", "https://elsewhere.test/", "#top"],
        ),
    );
    origin.set("/a", linking("A", &["/a1", "/a2"]));
    origin.set("/b", linking("B", &["/"]));
    origin.set("/a1", linking("A1", &["/a11"]));
    origin.set("/a2", linking("A2", &[]));
    origin.set("/a11", linking("A11", &[]));

    let (status, started) = send(
        app.master(Method::POST, &format!("/api/v1/clients/{client}/crawl"))
            .json(&json!({"urls": [origin.url("/")], "max_depth": 2})),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let run = started["run_id"].as_str().expect("run").to_owned();
    let progress = || async {
        send(app.master(
            Method::GET,
            &format!("/api/v1/clients/{client}/crawls/{run}"),
        ))
        .await
        .1
    };
    crate::harness::eventually(
        std::time::Duration::from_secs(60),
        "the crawl is done",
        || async {
            let p = progress().await;
            p["pages"] == 6 && p["fetched"] == 6
        },
    )
    .await;
    let p = progress().await;
    assert_eq!(
        (p["deepest"].as_i64(), p["failed"].as_i64()),
        (Some(2), Some(1)),
        "{p}"
    );

    let (_, pages) = send(app.master(
        Method::GET,
        &format!("/api/v1/sitemap/client/{client}/pages?limit=100"),
    ))
    .await;
    let mut found: Vec<(String, String)> = pages["pages"]
        .as_array()
        .expect("pages")
        .iter()
        .map(|p| {
            (
                p["url"].as_str().expect("url").replace(&origin.url(""), ""),
                p["source"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("/", "manual"),
            ("/a", "link"),
            ("/a1", "link"),
            ("/a2", "link"),
            ("/b", "link"),
            ("/private/x", "link"),
        ]
        .map(|(u, s)| (u.to_owned(), s.to_owned())),
        "other hosts and fragments are not followed; /a11 is deeper than 2"
    );
    assert!(origin.hits("/a11").is_empty());
    assert!(
        origin.hits("/private/x").is_empty(),
        "robots.txt holds for crawled pages"
    );
    assert_eq!(
        origin.hits("/").len(),
        1,
        "links are read from the fetch the page had anyway"
    );
    assert_eq!(
        stream_count(app.js(), "PAGES", Some("pages.discovered.>")).await,
        6,
        "each page discovered once"
    );

    // Bad requests are refused with the field at fault.
    for (body, field) in [
        (json!({"max_depth": 0}), "max_depth"),
        (json!({"max_pages": 50001}), "max_pages"),
        (json!({"urls": ["https://elsewhere.test/"]}), "urls"),
    ] {
        let (status, answer) = send(
            app.master(Method::POST, &format!("/api/v1/clients/{client}/crawl"))
                .json(&body),
        )
        .await;
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (422, Some(field)),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn the_page_list_filters_by_status_stage_and_path_and_counts_the_clients_pages() {
    let app = TestApp::with_roles(&[Role::Api, Role::Projections]).await;
    let client = create_client(&app, "Site", "site.test").await;
    let urls: Vec<String> = ["/blog/a", "/blog/b?page=2", "/about", "/blogroll"]
        .iter()
        .map(|p| format!("https://site.test{p}"))
        .collect();
    app.add_urls(&client, &urls).await;
    let list = |query: &str| {
        let app = &app;
        let path = format!("/api/v1/sitemap/client/{client}/pages?{query}");
        async move { send(app.master(Method::GET, &path)).await }
    };
    let urls_of = |body: &Value| -> Vec<String> {
        body["pages"]
            .as_array()
            .expect("pages")
            .iter()
            .map(|p| p["url"].as_str().expect("url").to_owned())
            .collect()
    };

    let (status, blog) = list("path=/blog/").await;
    assert_eq!(status, 200, "{blog}");
    assert_eq!(blog["total_pages"], 2);
    assert_eq!(
        urls_of(&blog),
        [
            "https://site.test/blog/a",
            "https://site.test/blog/b?page=2"
        ]
    );
    // Every page of the client, counted by status and stage, whatever the filters.
    assert_eq!(blog["counts"]["by_status"], json!({"discovered": 4}));
    assert_eq!(blog["counts"]["by_stage"], json!({"discovered": 4}));
    let (_, prefix) = list("path=/blog").await;
    assert_eq!(prefix["total_pages"], 3, "/blogroll starts with /blog too");
    let (_, discovered) = list("status=discovered&stage=discovered&limit=1").await;
    assert_eq!(
        (
            discovered["total_pages"].as_i64(),
            urls_of(&discovered).len()
        ),
        (Some(4), 1)
    );
    let (_, failed) = list("status=failed").await;
    assert_eq!(failed["total_pages"], 0);
    assert_eq!(urls_of(&failed), Vec::<String>::new());

    for bad in ["status=lost", "stage=somewhere", "path=blog"] {
        let (status, body) = list(bad).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}: {body}"
        );
    }
}
