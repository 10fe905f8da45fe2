//! Hostile input: a page the service scrapes cannot stall it.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::clients::{create_client, send};
use crate::harness::{TestApp, eventually, stream_count};
use crate::page_origin::{Page, PageOrigin, article};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_nested_too_deep_is_refused_at_once_while_others_go_live() {
    let app = TestApp::spawn().await;
    let origin = PageOrigin::start().await;
    let client = create_client(&app, "Site", "site.test").await;
    app.crawl_rate(&client, 600).await;
    // 60,000 nested divs: html5ever alone would take minutes over it.
    let levels = 60_000;
    let deep = format!("{}text{}", "<div>".repeat(levels), "</div>".repeat(levels));
    origin.set("/deep", Page::html(&deep));
    origin.set(
        "/ok",
        Page::html(&article(
            "An ordinary page with enough words to be served.",
            "0",
        )),
    );
    app.add_urls(&client, &[origin.url("/deep"), origin.url("/ok")])
        .await;
    let page = |path: &'static str| {
        let (app, client, url) = (&app, client.clone(), origin.url(path));
        async move {
            send(app.master(
                Method::GET,
                &format!("/api/v1/clients/{client}/pages/by-url?url={url}"),
            ))
            .await
            .1
        }
    };
    eventually(
        Duration::from_secs(30),
        "the ordinary page is live",
        || async { page("/ok").await["stage"] == "live" },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the deep page is refused",
        || async {
            let row = page("/deep").await;
            row["status"] == "failed"
                && row["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("more than 512 deep"))
        },
    )
    .await;
    assert_eq!(stream_count(app.js(), "DEADLETTER", None).await, 0);
}

/// `(status, error code)` of a response (`None` when the body is not the error shape).
async fn answer(req: reqwest::RequestBuilder) -> (u16, Option<String>) {
    let (status, body) = send(req).await;
    (status, body["error"]["code"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_text_gets_a_clear_error_never_a_dropped_connection_or_a_5xx() {
    let app =
        TestApp::with_roles(&[ai_cache::app::Role::Api, ai_cache::app::Role::Projections]).await;
    // Multi-byte characters where the domain's scheme is looked for.
    for domain in ["aaaaaa%C3%A9", "%C3%A9", "h%C3%A9tp:"] {
        let (status, _) =
            answer(app.master(Method::GET, &format!("/api/v1/clients/by-domain/{domain}"))).await;
        assert!(matches!(status, 400 | 404), "{domain}: {status}");
    }
    let (status, body) = app
        .post_client(&json!({"name": "IDN", "domain": "例え.テスト"}))
        .await;
    assert_eq!(
        (status, body["domain"].as_str()),
        (201, Some("xn--r8jz45g.xn--zckzah")),
        "{body}"
    );
    let client = body["id"].as_str().expect("id").to_owned();

    // Cloudflare ids go into Cloudflare's API path: `../` and `?` cannot.
    for id in ["../../accounts", "abc?x=1", "a/b"] {
        let (status, code) = answer(
            app.master(Method::PUT, &format!("/api/v1/clients/{client}"))
                .json(&json!({"cloudflare_account_id": id})),
        )
        .await;
        assert!(
            matches!(status, 400 | 422) && code.is_some(),
            "{id}: {status} {code:?}"
        );
    }

    // NUL cannot be stored by PostgreSQL: refused before anything is accepted.
    let (status, code) = answer(
        app.master(Method::POST, &format!("/api/v1/clients/{client}/reprocess"))
            .json(&json!({"from_stage": "markdown", "url_prefix": "https://x\u{0}"})),
    )
    .await;
    assert!(
        matches!(status, 400 | 422) && code.is_some(),
        "{status} {code:?}"
    );

    // A consumer filter is a subject token: anything else is the caller's mistake.
    for consumer in ["", "%20", "a%22b", "a%2Fb", "a.b", "%3E"] {
        let (status, code) = answer(app.master(
            Method::GET,
            &format!("/api/v1/dead-letters?consumer={consumer}"),
        ))
        .await;
        assert_eq!(
            (status, code.as_deref()),
            (400, Some("invalid_query")),
            "{consumer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visit_with_nul_in_its_headers_is_stored_not_lost() {
    let app =
        TestApp::with_roles(&[ai_cache::app::Role::Api, ai_cache::app::Role::Projections]).await;
    let client = create_client(&app, "Site", "site.test").await;
    let (status, body) = app
        .post_visit(&json!({
            "client_id": client, "url": "https://site.test/p",
            "user_agent": "GPTBot\u{0}/1.2", "referrer": "https://r.test/\u{0}",
            "cf_worker": "w\u{0}", "timestamp": "2026-11-30T10:00:00Z"
        }))
        .await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(1)),
        "{body}"
    );
    app.caught_up("visits", "VISITS").await;
    let stored: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT user_agent, referrer FROM visits")
            .fetch_all(app.db())
            .await
            .expect("visits");
    assert_eq!(
        stored,
        vec![(Some("GPTBot/1.2".into()), Some("https://r.test/".into()))]
    );
    let failures: i64 = sqlx::query_scalar("SELECT count(*) FROM projection_failures")
        .fetch_one(app.db())
        .await
        .expect("failures");
    assert_eq!(failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_on_time_while_health_answers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let options = crate::harness::Options {
        header_timeout_secs: 1,
        body_timeout_secs: 1,
        ..Default::default()
    };
    let app = TestApp::with_options(&[ai_cache::app::Role::Api], options).await;
    let addr = app
        .api
        .as_deref()
        .expect("api")
        .trim_start_matches("http://")
        .to_owned();
    let partial_body = format!(
        "POST /api/v1/visits HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"url\":",
        crate::harness::MASTER_KEY
    );
    let mut sockets = Vec::new();
    for i in 0..300 {
        let mut socket = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        match i % 3 {
            0 => {}
            1 => socket
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write"),
            _ => socket
                .write_all(partial_body.as_bytes())
                .await
                .expect("write"),
        }
        sockets.push(socket);
    }
    let (status, body) = app.health().await;
    assert_eq!(status, 200, "{body}");
    for (i, mut socket) in sockets.into_iter().enumerate() {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("connection {i} is still open"))
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        if i % 3 == 2 {
            assert!(
                answer.starts_with("HTTP/1.1 408") && answer.contains("request_timeout"),
                "{answer}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_targets_and_headers_get_the_json_error_shape() {
    let app = TestApp::with_roles(&[ai_cache::app::Role::Api]).await;
    let long = format!("/api/v1/clients/{}", "a".repeat(20_000));
    let (status, code) = answer(app.master(Method::GET, &long)).await;
    assert_eq!((status, code.as_deref()), (414, Some("uri_too_long")));
    let (status, code) = answer(
        app.master(Method::GET, "/api/v1/clients")
            .header("X-Padding", "p".repeat(40_000)),
    )
    .await;
    assert_eq!((status, code.as_deref()), (431, Some("headers_too_large")));
}

/// A sitemap index on the test origin listing `children` (absolute URLs).
fn index(children: &[String]) -> Page {
    let items: String = children
        .iter()
        .map(|c| format!("<sitemap><loc>{c}</loc></sitemap>"))
        .collect();
    Page::Html {
        body: format!(
            r#"<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{items}</sitemapindex>"#
        )
        .into_bytes(),
        content_type: "application/xml".into(),
        etag: None,
    }
}

async fn preview(app: &TestApp, url: &str) -> serde_json::Value {
    let (status, body) = app.parse_sitemap(&json!({"sitemap_url": url})).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_child_sitemaps_count_toward_the_cap_and_errors_are_capped() {
    // The harness allows 100 sitemap documents a run.
    let app =
        TestApp::with_roles(&[ai_cache::app::Role::Api, ai_cache::app::Role::Projections]).await;
    let origin = PageOrigin::start().await;
    let children: Vec<String> = (0..1_000)
        .map(|i| origin.url(&format!("/missing-{i}.xml")))
        .collect();
    origin.set("/index.xml", index(&children));
    let body = preview(&app, &origin.url("/index.xml")).await;
    let fetched = (0..1_000)
        .filter(|i| !origin.hits(&format!("/missing-{i}.xml")).is_empty())
        .count();
    assert_eq!(
        fetched, 99,
        "the index and 99 children make the 100 documents"
    );
    assert_eq!(body["truncated"], true, "{body}");
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(100));
    assert_eq!(body["errors_left_out"], 900);

    // The same rules and report for an import.
    let client = create_client(&app, "S", "site.test").await;
    let (status, body) = app
        .import_sitemap(&json!({"client_id": client, "sitemap_url": origin.url("/index.xml")}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["truncated"], true, "{body}");
    assert_eq!(body["summary"]["error_details_left_out"], 900, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_sitemaps_on_other_hosts_are_not_fetched() {
    let app = TestApp::with_roles(&[ai_cache::app::Role::Api]).await;
    let origin = PageOrigin::start().await;
    let urlset = Page::Html {
        body: format!(
            r#"<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{}</loc></url></urlset>"#,
            origin.url("/a")
        )
        .into_bytes(),
        content_type: "application/xml".into(),
        etag: None,
    };
    origin.set("/own.xml", urlset.clone());
    origin.set("/theirs.xml", urlset);
    let elsewhere = origin.url("/theirs.xml").replace("site.test", "other.test");
    origin.set(
        "/index.xml",
        index(&[origin.url("/own.xml"), elsewhere.clone()]),
    );
    let body = preview(&app, &origin.url("/index.xml")).await;
    assert_eq!(body["total_urls"], 1, "{body}");
    assert!(
        origin.hits("/theirs.xml").is_empty(),
        "no request to the other host"
    );
    let reasons = body["errors"].to_string();
    assert!(reasons.contains("not on site.test"), "{reasons}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sitemap_run_stops_at_its_deadline() {
    let options = crate::harness::Options {
        sitemap_run_timeout_secs: 1,
        ..Default::default()
    };
    let app = TestApp::with_options(&[ai_cache::app::Role::Api], options).await;
    let origin = PageOrigin::start().await;
    let children: Vec<String> = (0..20)
        .map(|i| origin.url(&format!("/slow-{i}.xml")))
        .collect();
    for i in 0..20 {
        origin.set(
            &format!("/slow-{i}.xml"),
            Page::Slow(Duration::from_secs(3)),
        );
    }
    origin.set("/index.xml", index(&children));
    let body = preview(&app, &origin.url("/index.xml")).await;
    let asked = (0..20)
        .filter(|i| !origin.hits(&format!("/slow-{i}.xml")).is_empty())
        .count();
    assert_eq!(
        asked, 1,
        "the deadline passed during the first slow child: {body}"
    );
    assert_eq!(body["truncated"], true, "{body}");
    assert!(
        body["errors"].to_string().contains("longer than 1 s"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_thousands_of_failing_pages_does_not_hold_up_another() {
    let options = crate::harness::Options {
        local_hosts: vec!["site.test".into(), "dead.test".into()],
        ..Default::default()
    };
    let app = TestApp::with_options(&ai_cache::app::Role::ALL, options).await;
    let origin = PageOrigin::start().await;
    // Client A: 3,000 pages on a host where nothing listens.
    let a = create_client(&app, "A", "dead.test").await;
    let dead: Vec<String> = (0..3_000)
        .map(|i| format!("http://dead.test:1/p/{i}"))
        .collect();
    for chunk in dead.chunks(500) {
        app.add_urls(&a, chunk).await;
    }
    // Client B: one page, added after all of A's.
    let b = create_client(&app, "B", "site.test").await;
    origin.set(
        "/b",
        Page::html(&article(
            "Client B's page, with enough words to be served.",
            "0",
        )),
    );
    app.add_urls(&b, &[origin.url("/b")]).await;
    eventually(Duration::from_secs(30), "B's page is live", || async {
        let (_, row) = send(app.master(
            Method::GET,
            &format!("/api/v1/clients/{b}/pages/by-url?url={}", origin.url("/b")),
        ))
        .await;
        row["stage"] == "live"
    })
    .await;
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pages WHERE client_id = $1::uuid AND stage <> 'live'",
    )
    .bind(&a)
    .fetch_one(app.db())
    .await
    .expect("count");
    assert_eq!(
        waiting, 3_000,
        "A's backlog is still there, waiting for its host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_a_long_polite_crawl_does_not_hold_up_another() {
    let app = TestApp::spawn().await;
    let origin = PageOrigin::start().await;
    // Client A: 400 pages at one page a second (the politeness of its host).
    let a = create_client(&app, "A", "site.test").await;
    app.crawl_rate(&a, 60).await;
    let paths: Vec<String> = (0..400).map(|i| format!("/a/{i}")).collect();
    let urls = origin.articles(&paths);
    app.add_urls(&a, &urls).await;
    // Client B: one page on its own host, added after all of A's.
    let b = create_client(&app, "B", "other.test").await;
    origin.set(
        "/b",
        Page::html(&article(
            "Client B's page, with enough words to be served.",
            "0",
        )),
    );
    let b_url = origin.url("/b").replace("site.test", "other.test");
    app.add_urls(&b, std::slice::from_ref(&b_url)).await;
    eventually(Duration::from_secs(30), "B's page is live", || async {
        let (_, row) = send(app.master(
            Method::GET,
            &format!("/api/v1/clients/{b}/pages/by-url?url={b_url}"),
        ))
        .await;
        row["stage"] == "live"
    })
    .await;
    let fetched = (0..400)
        .filter(|i| !origin.hits(&format!("/a/{i}")).is_empty())
        .count();
    assert!(
        fetched < 100,
        "A's crawl keeps its pace meanwhile: {fetched} fetched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_client_is_paused_and_its_keys_read_but_do_not_write() {
    let app =
        TestApp::with_roles(&[ai_cache::app::Role::Api, ai_cache::app::Role::Projections]).await;
    let client = create_client(&app, "Paused", "site.test").await;
    let (status, key) = app
        .post_key(&client, &json!({"scopes": ["read", "write"], "name": "k"}))
        .await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().expect("key").to_owned();
    let with_key =
        |method: Method, path: String| app.request(method, &path).header("X-API-Key", key.as_str());
    let (status, body) = app.put_client(&client, &json!({"is_active": false})).await;
    assert_eq!(status, 200, "{body}");
    let add = json!({"urls": ["http://site.test/a"]});
    // Reading still works; writing does not, and nothing starts the paused pipeline.
    let (status, _) = send(with_key(Method::GET, format!("/api/v1/clients/{client}"))).await;
    assert_eq!(status, 200);
    for request in [
        with_key(Method::POST, format!("/api/v1/clients/{client}/pages")).json(&add),
        with_key(Method::PUT, format!("/api/v1/clients/{client}"))
            .json(&json!({"settings": {"crawl_rate_per_minute": 30}})),
        app.master(Method::POST, &format!("/api/v1/clients/{client}/pages"))
            .json(&add),
        app.master(Method::POST, &format!("/api/v1/clients/{client}/refresh")),
        app.master(Method::POST, &format!("/api/v1/clients/{client}/reprocess"))
            .json(&json!({"from_stage": "markdown"})),
    ] {
        assert_eq!(
            answer(request).await,
            (409, Some("client_inactive".to_owned()))
        );
    }
    // The operator activates it again: the key writes again.
    let (status, _) = app.put_client(&client, &json!({"is_active": true})).await;
    assert_eq!(status, 200);
    let (status, body) =
        send(with_key(Method::POST, format!("/api/v1/clients/{client}/pages")).json(&add)).await;
    assert_eq!(status, 200, "{body}");
}
