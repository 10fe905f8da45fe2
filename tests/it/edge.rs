//! The built-in edge route: what AI agents, coding agents and people get, by path and by
//! `Host`, with its headers, and a visit recorded for every request.

use std::time::Duration;

use ai_cache::app::Role;
use ai_cache::infra::blobs::BlobStore;
use ai_cache::infra::edge_store::{EdgeStore, Manifest, ManifestCache};
use reqwest::Method;
use reqwest::header::{ACCEPT, HOST, IF_NONE_MATCH, USER_AGENT};

use crate::clients::create_client;
use crate::harness::{TestApp, eventually};

const GPTBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
const MARKDOWN: &str = "# A post\n\nThe clean text.\n";
const HTML: &str = "<!doctype html><title>A post</title><h1>A post</h1><p>The clean text.</p>";

/// A client for site.test with `/post` and `/` in the built-in store.
async fn app_with_cached_pages() -> (TestApp, String) {
    let app = TestApp::with_roles(&[Role::Api, Role::Projections]).await;
    let client = create_client(&app, "Site", "site.test").await;
    let blobs = BlobStore::open(app.js(), 1 << 20).await.expect("blobs");
    let store = EdgeStore::open(app.js()).await.expect("edge");
    for url in [
        "https://site.test/post",
        "https://site.test/",
        "http://site.test:8080/on-a-port",
    ] {
        let url = url.to_owned();
        let normalized = ai_cache::domain::url::NormalizedUrl::parse(&url).expect("url");
        store
            .put(&Manifest {
                markdown_tokens: None,
                content_type: None,
                metadata: None,
                key: ai_cache::domain::kv_key::kv_key(&normalized),
                client_id: client.parse().expect("uuid"),
                page_id: uuid::Uuid::new_v4(),
                source_url: url,
                markdown: blobs.put(MARKDOWN.as_bytes()).await.expect("md"),
                html: blobs.put(HTML.as_bytes()).await.expect("html"),
                page_version: 1,
                updated_at: "2026-11-20T10:00:00Z".parse().expect("time"),
            })
            .await
            .expect("manifest");
    }
    (app, client)
}

/// A request that does not follow redirects.
fn raw(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    let base = app.api.as_deref().expect("api");
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .request(method, format!("{base}{path}"))
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn ai_agents_get_the_cached_version_and_everyone_else_the_origin() {
    let (app, _client) = app_with_cached_pages().await;
    let get = |path: &str, ua: &str, accept: &str| {
        raw(&app, Method::GET, path)
            .header(USER_AGENT, ua)
            .header(ACCEPT, accept)
            .send()
    };

    // A classic AI crawler asks for HTML and gets the minimal HTML, with every header.
    let res = get("/edge/site.test/post", GPTBOT, "*/*")
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&res, "vary"), "Accept, User-Agent");
    assert_eq!(
        header(&res, "link"),
        "</edge/site.test/post.md>; rel=\"alternate\"; type=\"text/markdown\""
    );
    assert_eq!(
        header(&res, "last-modified"),
        "Fri, 20 Nov 2026 10:00:00 GMT"
    );
    let etag = header(&res, "etag");
    assert!(etag.starts_with('"') && etag.len() == 66, "{etag}");
    assert_eq!(res.text().await.expect("body"), HTML);

    // The same crawler again with the ETag: 304.
    let res = raw(&app, Method::GET, "/edge/site.test/post")
        .header(USER_AGENT, GPTBOT)
        .header(IF_NONE_MATCH, &etag)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 304);

    // A coding agent (Claude Code is in the catalogue) asks for Markdown; a person may ask for the .md variant by its path.
    let res = get(
        "/edge/site.test/post",
        "claude-code/2.0",
        "text/markdown, text/html;q=0.5",
    )
    .await
    .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), "text/markdown; charset=utf-8");
    assert_eq!(res.text().await.expect("body"), MARKDOWN);
    let res = get("/edge/site.test/post.md", FIREFOX, "text/html")
        .await
        .expect("request");
    assert_eq!(
        (res.status().as_u16(), res.text().await.expect("body")),
        (200, MARKDOWN.to_owned())
    );
    let res = get("/edge/site.test/index.md", FIREFOX, "*/*")
        .await
        .expect("request");
    assert_eq!(res.status(), 200, "the home page's variant");
    let res = get("/edge/site.test", GPTBOT, "*/*")
        .await
        .expect("request");
    assert_eq!(
        (res.status().as_u16(), header(&res, "link")),
        (
            200,
            "</edge/site.test/index.md>; rel=\"alternate\"; type=\"text/markdown\"".to_owned()
        )
    );

    // HEAD: the headers without the body.
    let res = raw(&app, Method::HEAD, "/edge/site.test/post")
        .header(USER_AGENT, GPTBOT)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-length"), HTML.len().to_string());

    // A person, or a page not cached: to the origin.
    let res = get("/edge/site.test/post", FIREFOX, "text/html")
        .await
        .expect("request");
    assert_eq!(
        (res.status().as_u16(), header(&res, "location")),
        (302, "https://site.test/post".to_owned())
    );
    assert_eq!(header(&res, "vary"), "Accept, User-Agent");
    let res = get("/edge/site.test/new?x=1", GPTBOT, "*/*")
        .await
        .expect("request");
    assert_eq!(
        (res.status().as_u16(), header(&res, "location")),
        (302, "https://site.test/new?x=1".to_owned())
    );
    // Not a site of ours.
    let res = get("/edge/nobody.example/post", GPTBOT, "*/*")
        .await
        .expect("request");
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found");

    // Every request above is a visit, classified, with what was served.
    eventually(Duration::from_secs(30), "edge visits projected", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM visits")
            .fetch_one(app.db())
            .await
            .unwrap_or(0)
            == 9
    })
    .await;
    let served: Vec<(String, String, Option<i32>)> = sqlx::query_as(
        "SELECT visitor_type, format_served, status FROM visits ORDER BY visited_at",
    )
    .fetch_all(app.db())
    .await
    .expect("rows");
    let expected = [
        ("ai_bot", "html", 200),
        ("ai_bot", "html", 304),
        ("ai_bot", "markdown", 200),
        ("human", "markdown", 200),
        ("human", "markdown", 200),
        ("ai_bot", "html", 200),
        ("ai_bot", "html", 200),
        ("human", "origin", 302),
        ("ai_bot", "origin", 302),
    ];
    let got: Vec<(&str, &str, i32)> = served
        .iter()
        .map(|(t, f, s)| (t.as_str(), f.as_str(), s.unwrap_or(0)))
        .collect();
    // The unknown domain is no client's: 10 requests, 9 visits.
    assert_eq!(got, expected, "{got:?}");
}

#[tokio::test]
async fn by_host_the_domain_itself_is_served() {
    let (app, _client) = app_with_cached_pages().await;
    let res = raw(&app, Method::GET, "/post")
        .header(HOST, "site.test")
        .header(USER_AGENT, GPTBOT)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "link"),
        "</post.md>; rel=\"alternate\"; type=\"text/markdown\""
    );
    assert_eq!(res.text().await.expect("body"), HTML);
    // A site on a port, over plain HTTP, on the prefixed route.
    let res = raw(&app, Method::GET, "/edge/site.test:8080/on-a-port")
        .header(USER_AGENT, GPTBOT)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "link"),
        "</edge/site.test:8080/on-a-port.md>; rel=\"alternate\"; type=\"text/markdown\""
    );
    // By `Host` with the port: the page stored with it is found.
    let res = raw(&app, Method::GET, "/on-a-port")
        .header(HOST, "site.test:8080")
        .header(USER_AGENT, GPTBOT)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200, "the port is part of the page's URL");
    assert_eq!(res.text().await.expect("body"), HTML);
    // People get a 404 here (a redirect to the same host would loop).
    let res = raw(&app, Method::GET, "/post")
        .header(HOST, "site.test:8080")
        .header(USER_AGENT, FIREFOX)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_cached");
    // The site's own /dashboard and /docs are the site's, not ai-cache's pages of those names.
    for path in ["/dashboard", "/docs"] {
        let res = raw(&app, Method::GET, path)
            .header(HOST, "site.test")
            .header(USER_AGENT, FIREFOX)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 404, "{path}");
        let body: serde_json::Value = res.json().await.expect("json");
        assert_eq!(body["error"]["code"], "not_cached", "{path}");
        let ours = raw(&app, Method::GET, path)
            .header(HOST, "localhost")
            .send()
            .await
            .expect("request");
        assert_eq!(ours.status(), 200, "{path}");
    }
    // Another host is just an unknown route.
    let res = raw(&app, Method::GET, "/post")
        .header(HOST, "elsewhere.example")
        .header(USER_AGENT, GPTBOT)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_found");
}

/// A manifest of `url` for `client` serving `html`.
async fn manifest(app: &TestApp, client: &str, url: &str, html: &str, version: u32) -> Manifest {
    let blobs = BlobStore::open(app.js(), 1 << 20).await.expect("blobs");
    let normalized = ai_cache::domain::url::NormalizedUrl::parse(url).expect("url");
    Manifest {
        markdown_tokens: None,
        content_type: None,
        metadata: None,
        key: ai_cache::domain::kv_key::kv_key(&normalized),
        client_id: client.parse().expect("uuid"),
        page_id: uuid::Uuid::new_v4(),
        source_url: url.to_owned(),
        markdown: blobs.put(MARKDOWN.as_bytes()).await.expect("md"),
        html: blobs.put(html.as_bytes()).await.expect("html"),
        page_version: version,
        updated_at: "2026-11-21T10:00:00Z".parse().expect("time"),
    }
}

#[tokio::test]
async fn manifests_are_read_once_and_a_new_upload_replaces_them_in_memory() {
    let (app, client) = app_with_cached_pages().await;
    let store = EdgeStore::open(app.js()).await.expect("edge");
    let cache = ManifestCache::new(store.clone());
    eventually(Duration::from_secs(10), "the watch runs", || async {
        cache.is_watching()
    })
    .await;
    let key = "https/site-test/post";
    let first = cache.get(key).await.expect("get").expect("cached page");
    assert_eq!(first.page_version, 1);
    for _ in 0..5 {
        assert_eq!(cache.get(key).await.expect("get"), Some(first.clone()));
    }
    assert_eq!(cache.bucket_reads(), 1, "read once, then from memory");
    // Not found is remembered too (any path can be asked for).
    assert_eq!(cache.get("https/site-test/nope").await.expect("get"), None);
    assert_eq!(cache.get("https/site-test/nope").await.expect("get"), None);
    assert_eq!(cache.bucket_reads(), 2);

    // Another process's upload: the watch drops the entry, the next lookup reads it.
    let newer = manifest(&app, &client, "https://site.test/post", "<p>v2</p>", 2).await;
    assert_eq!(newer.key, key);
    store.put(&newer).await.expect("put");
    eventually(
        Duration::from_secs(5),
        "the new manifest is served",
        || async { cache.get(key).await.expect("get").map(|m| m.page_version) == Some(2) },
    )
    .await;
    // And a page uploaded after a miss was remembered.
    let added = manifest(&app, &client, "https://site.test/nope", "<p>new</p>", 1).await;
    store.put(&added).await.expect("put");
    eventually(Duration::from_secs(5), "the new page is found", || async {
        cache
            .get("https/site-test/nope")
            .await
            .expect("get")
            .is_some()
    })
    .await;
    store.delete(key).await.expect("delete");
    eventually(
        Duration::from_secs(5),
        "the deleted page is gone",
        || async { cache.get(key).await.expect("get").is_none() },
    )
    .await;
}

#[tokio::test]
async fn the_edge_serves_a_new_upload_as_soon_as_the_bucket_has_it() {
    let (app, client) = app_with_cached_pages().await;
    let get = || {
        raw(&app, Method::GET, "/edge/site.test/post")
            .header(USER_AGENT, GPTBOT)
            .send()
    };
    // Served twice from the first manifest (the second time from memory).
    for _ in 0..2 {
        let res = get().await.expect("request");
        assert_eq!(res.text().await.expect("body"), HTML);
    }
    let store = EdgeStore::open(app.js()).await.expect("edge");
    let started = std::time::Instant::now();
    store
        .put(&manifest(&app, &client, "https://site.test/post", "<p>v2</p>", 2).await)
        .await
        .expect("put");
    let mut stale = 0;
    loop {
        let body = get().await.expect("request").text().await.expect("body");
        if body == "<p>v2</p>" {
            break;
        }
        assert_eq!(body, HTML);
        stale += 1;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still the old page after {stale} requests"
        );
    }
    println!(
        "the new upload was served after {stale} stale answers, {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn people_are_sent_to_the_page_under_its_own_scheme() {
    let (app, client) = app_with_cached_pages().await;
    let location = |path: &'static str| {
        let app = &app;
        async move {
            let res = raw(app, Method::GET, path)
                .header(USER_AGENT, FIREFOX)
                .send()
                .await
                .expect("request");
            assert_eq!(res.status(), 302, "{path}");
            header(&res, "location")
        }
    };
    // Cached under http: a plain-http site is not sent to https.
    assert_eq!(
        location("/edge/site.test:8080/on-a-port").await,
        "http://site.test:8080/on-a-port"
    );
    // Known to the pages projection only (not cached yet), under http.
    app.add_urls(&client, &["http://site.test:8080/new".to_owned()])
        .await;
    eventually(Duration::from_secs(10), "the page is projected", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pages WHERE url LIKE '%/new'")
            .fetch_one(app.db())
            .await
            .unwrap_or(0)
            == 1
    })
    .await;
    assert_eq!(
        location("/edge/site.test:8080/new").await,
        "http://site.test:8080/new"
    );
    // Unknown anywhere: https, unless the proxy says the request came over http.
    assert_eq!(
        location("/edge/site.test/unknown").await,
        "https://site.test/unknown"
    );
}

const CLAUDEBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)";
const CHATGPT_USER: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot";

#[tokio::test]
async fn the_clients_policy_decides_what_each_bot_gets() {
    let (app, client) = app_with_cached_pages().await;
    let policy = serde_json::json!({
        "rules": [
            {"bot": "GPTBot", "action": "block", "body": "# No\n\nWrite to us.\n"},
            {"operator": "Anthropic", "category": "training", "action": "charge", "price": "USD 0.01"},
        ],
        "ai_format": "markdown",
        "content_signal": "ai-train=no, search=yes, ai-input=yes",
    });
    // An invalid policy is refused with the field at fault, and changes nothing.
    let (status, body) = app
        .put_client(
            &client,
            &serde_json::json!({"settings": {"edge": {"rules": [{"action": "charge"}]}}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["field"], "settings.edge.rules[0].price",
        "{body}"
    );
    let (status, body) = app
        .put_client(&client, &serde_json::json!({"settings": {"edge": policy}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"]["edge"]["rules"][1]["price"], "USD 0.01");

    let get =
        |path: &'static str, ua: &'static str, extra: &'static [(&'static str, &'static str)]| {
            let mut req = raw(&app, Method::GET, path).header(USER_AGENT, ua);
            for (name, value) in extra {
                req = req.header(*name, *value);
            }
            req.send()
        };
    // The edge applies the policy within its lookup cache's life.
    eventually(Duration::from_secs(15), "the policy applies", || async {
        get("/edge/site.test/post", GPTBOT, &[])
            .await
            .expect("request")
            .status()
            == 403
    })
    .await;

    // Blocked, with the rule's body, whatever variant is asked for.
    for path in ["/edge/site.test/post", "/edge/site.test/post.md"] {
        let res = get(path, GPTBOT, &[]).await.expect("request");
        assert_eq!(res.status(), 403, "{path}");
        assert_eq!(header(&res, "cache-control"), "no-store");
        assert_eq!(res.text().await.expect("body"), "# No\n\nWrite to us.\n");
    }

    // Charged: 402 with the price, the protocol's errors, then the content once paid.
    let res = get("/edge/site.test/post", CLAUDEBOT, &[])
        .await
        .expect("request");
    assert_eq!(res.status(), 402);
    assert_eq!(header(&res, "crawler-price"), "USD 0.01");
    assert_eq!(header(&res, "crawler-error"), "");
    let res = get(
        "/edge/site.test/post",
        CLAUDEBOT,
        &[("crawler-max-price", "USD 0.005")],
    )
    .await
    .expect("request");
    assert_eq!(
        (res.status().as_u16(), header(&res, "crawler-error")),
        (402, "InvalidCrawlerMaxPrice".to_owned())
    );
    let res = get(
        "/edge/site.test/post",
        CLAUDEBOT,
        &[
            ("crawler-exact-price", "USD 0.01"),
            ("crawler-max-price", "USD 1"),
        ],
    )
    .await
    .expect("request");
    assert_eq!(
        (res.status().as_u16(), header(&res, "crawler-error")),
        (400, "ConflictingPriceHeaders".to_owned())
    );
    let res = get(
        "/edge/site.test/post",
        CLAUDEBOT,
        &[("crawler-max-price", "USD 0.05")],
    )
    .await
    .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "crawler-charged"), "USD 0.01");
    assert_eq!(
        header(&res, "content-type"),
        "text/markdown; charset=utf-8",
        "ai_format"
    );
    assert_eq!(res.text().await.expect("body"), MARKDOWN);

    // An agent no rule names gets the client's format for AI agents (Markdown), with the
    // Markdown headers; noindex only at the .md URL, never at the page's own.
    let res = get(
        "/edge/site.test/post",
        CHATGPT_USER,
        &[("accept", "text/html,*/*;q=0.8")],
    )
    .await
    .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), "text/markdown; charset=utf-8");
    assert_eq!(header(&res, "vary"), "Accept, User-Agent");
    assert_eq!(
        header(&res, "content-signal"),
        "ai-train=no, search=yes, ai-input=yes"
    );
    assert_eq!(
        header(&res, "x-markdown-tokens"),
        MARKDOWN.len().div_ceil(4).to_string(),
        "estimated from the size for a manifest without an estimate"
    );
    assert_eq!(
        header(&res, "link"),
        "</edge/site.test/post.md>; rel=\"alternate\"; type=\"text/markdown\", <https://site.test/post>; rel=\"canonical\""
    );
    assert_eq!(header(&res, "x-robots-tag"), "");
    let res = get("/edge/site.test/post.md", CHATGPT_USER, &[])
        .await
        .expect("request");
    assert_eq!(header(&res, "x-robots-tag"), "noindex");
    // People still pass.
    let res = get("/edge/site.test/post", FIREFOX, &[])
        .await
        .expect("request");
    assert_eq!(res.status(), 302);

    // Each answer is a visit with what it was; the paid one records its price.
    eventually(Duration::from_secs(30), "the visits are projected", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM visits WHERE format_served IN ('blocked', 'payment_required') OR charged_price IS NOT NULL",
        )
        .fetch_one(app.db())
        .await
        .unwrap_or(0)
            >= 7
    })
    .await;
    let rows: Vec<(String, Option<i32>, Option<String>)> = sqlx::query_as(
        "SELECT format_served, status, charged_price FROM visits
           WHERE bot_name IN ('GPTBot', 'ClaudeBot') AND format_served <> 'html' ORDER BY visited_at",
    )
    .fetch_all(app.db())
    .await
    .expect("rows");
    let got: Vec<(&str, i32, Option<&str>)> = rows
        .iter()
        .map(|(f, s, p)| (f.as_str(), s.unwrap_or(0), p.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            // The first when the policy applied, then the page and its .md variant.
            ("blocked", 403, None),
            ("blocked", 403, None),
            ("blocked", 403, None),
            ("payment_required", 402, None),
            ("payment_required", 402, None),
            ("payment_required", 400, None),
            ("markdown", 200, Some("USD 0.01")),
        ],
        "{got:?}"
    );
}

/// A key directory on a free local port, counting its requests; `keys` is what it serves
/// (`None`: a 500).
async fn key_directory(
    keys: Option<serde_json::Value>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&hits);
    let app = axum::Router::new().route(
        "/.well-known/http-message-signatures-directory",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let keys = keys.clone();
            async move {
                match keys {
                    Some(k) => (
                        axum::http::StatusCode::OK,
                        [(
                            "content-type",
                            "application/http-message-signatures-directory+json",
                        )],
                        k.to_string(),
                    ),
                    None => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        [("content-type", "text/plain")],
                        "down".to_owned(),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (base, hits)
}

#[tokio::test]
async fn a_web_bot_auth_signature_verified_with_the_agents_directory_is_a_verified_identity() {
    use ai_cache::domain::webbotauth::agent::{jwks, signed_headers};
    use std::sync::atomic::Ordering;
    let (app, client) = app_with_cached_pages().await;
    let secret = [42u8; 32];
    let (agent, hits) =
        key_directory(Some(serde_json::to_value(jwks(&secret)).expect("json"))).await;
    let (down, down_hits) = key_directory(None).await;
    let (status, body) = app
        .put_client(
            &client,
            &serde_json::json!({"settings": {"edge": {"rules": [
                {"verification": ["signature"], "action": "serve_markdown"}
            ]}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let get = |headers: std::collections::HashMap<String, String>| {
        let mut req = raw(&app, Method::GET, "/post")
            .header(HOST, "site.test")
            .header(USER_AGENT, FIREFOX);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        req.send()
    };
    let signed = || signed_headers(&secret, "site.test", &agent, true, 60);

    // Signed by the agent's key: verified, and the rule for verified agents serves Markdown
    // (once the policy applies); the directory is fetched once, then kept.
    eventually(
        Duration::from_secs(15),
        "the signed agent gets Markdown",
        || async { get(signed()).await.expect("request").status() == 200 },
    )
    .await;
    let res = get(signed()).await.expect("request");
    assert_eq!(header(&res, "content-type"), "text/markdown; charset=utf-8");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the directory is cached");

    // Unsigned, signed for another host, signed by a key the directory does not hold, or by
    // an agent whose directory is down: a person, who passes (404 by Host).
    let other_host = signed_headers(&secret, "elsewhere.test", &agent, true, 60);
    let wrong_key = signed_headers(&[1u8; 32], "site.test", &agent, true, 60);
    let unreachable = signed_headers(&secret, "site.test", &down, true, 60);
    for (what, headers) in [
        ("unsigned", std::collections::HashMap::new()),
        ("another host", other_host),
        ("another key", wrong_key),
        ("directory down", unreachable.clone()),
    ] {
        let res = get(headers).await.expect("request");
        assert_eq!(res.status(), 404, "{what}");
    }
    let res = get(unreachable).await.expect("request");
    assert_eq!(res.status(), 404);
    assert_eq!(
        down_hits.load(Ordering::SeqCst),
        1,
        "a failed directory is remembered, not fetched for every request"
    );

    // The visits say how far each identity was checked, and which agent signed.
    eventually(
        Duration::from_secs(30),
        "the signed visits are projected",
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM visits WHERE verification = 'signature'",
            )
            .fetch_one(app.db())
            .await
            .unwrap_or(0)
                >= 2
        },
    )
    .await;
    let agents: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT DISTINCT visitor_type, bot_name, signature_agent FROM visits WHERE verification = 'signature'",
    )
    .fetch_all(app.db())
    .await
    .expect("rows");
    assert_eq!(
        agents,
        [(
            "other_bot".to_owned(),
            Some(agent.clone()),
            Some(agent.clone())
        )],
        "a signed agent the catalogue does not know is a bot named by its origin"
    );
}

#[tokio::test]
async fn a_client_may_start_its_markdown_with_front_matter() {
    let (app, client) = app_with_cached_pages().await;
    let store = EdgeStore::open(app.js()).await.expect("edge");
    let mut page = manifest(&app, &client, "https://site.test/fm", HTML, 1).await;
    page.metadata = Some(ai_cache::domain::markdown::PageMetadata {
        title: Some("A \"quoted\" post".into()),
        description: Some("What it says.".into()),
        language: Some("en".into()),
        ..Default::default()
    });
    store.put(&page).await.expect("put");
    let md = || async {
        let res = raw(&app, Method::GET, "/edge/site.test/fm.md")
            .header(USER_AGENT, FIREFOX)
            .send()
            .await
            .expect("request");
        let etag = header(&res, "etag");
        let length = header(&res, "content-length");
        (etag, length, res.text().await.expect("body"))
    };
    let (etag, _, body) = md().await;
    assert_eq!(body, MARKDOWN, "no front matter by default");

    let (status, body) = app
        .put_client(
            &client,
            &serde_json::json!({"settings": {"edge": {"front_matter": true}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let expected = format!(
        "---\ntitle: \"A \\\"quoted\\\" post\"\nsource: \"https://site.test/fm\"\n\
         description: \"What it says.\"\nlanguage: \"en\"\n\
         last_modified: \"2026-11-21T10:00:00Z\"\n---\n\n{MARKDOWN}"
    );
    eventually(Duration::from_secs(15), "the policy applies", || async {
        md().await.2 == expected
    })
    .await;
    let (with_etag, length, _) = md().await;
    assert_eq!(length, expected.len().to_string());
    assert_ne!(with_etag, etag, "another representation, another ETag");
    // The HTML variant is untouched.
    let res = raw(&app, Method::GET, "/edge/site.test/fm")
        .header(USER_AGENT, GPTBOT)
        .send()
        .await
        .expect("request");
    assert_eq!(res.text().await.expect("body"), HTML);
}
