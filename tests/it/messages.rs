//! The messages a new user meets in the first hour say what happened and what to do; each is
//! pinned here word for word where its words matter.

use ai_cache::app::Role;
use ai_cache::infra::http::{FetchError, HttpClient, HttpConfig};
use reqwest::Method;
use serde_json::json;

use crate::clients::{create_client, send};
use crate::harness::TestApp;
use crate::page_origin::{Page, PageOrigin};

/// A urlset of `paths` on `host`.
fn urlset(host: &str, paths: &[&str]) -> String {
    let urls: String = paths
        .iter()
        .map(|p| format!("<url><loc>http://{host}{p}</loc></url>"))
        .collect();
    format!(
        r#"<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>"#
    )
}

#[tokio::test]
async fn sitemap_and_request_mistakes_say_what_happened_and_what_to_do() {
    let app = TestApp::with_roles(&[Role::Api, Role::Projections]).await;
    let origin = PageOrigin::start().await;
    let client = create_client(&app, "Site", "site.test").await;
    let import = |url: String| {
        let body = json!({"client_id": client, "sitemap_url": url});
        let app = &app;
        async move { app.import_sitemap(&body).await }
    };

    // Another domain's sitemap: no longer "imported successfully".
    let other = urlset("elsewhere.test", &["/a", "/b", "/c", "/d"]);
    origin.set("/other-sitemap.xml", Page::html(&other));
    let (status, body) = import(origin.url("/other-sitemap.xml")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["message"],
        "0 of 4 URLs imported, 4 refused (the first: elsewhere.test is not the client's domain site.test)"
    );

    // A web page given as a sitemap: said to be one, with the way to find the sitemaps.
    origin.set(
        "/blog",
        Page::html("<!DOCTYPE html>\n<html><body><p>Our blog</p></body></html>"),
    );
    let (status, body) = import(origin.url("/blog")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "sitemap_unreadable");
    let site = origin.url("");
    assert_eq!(
        body["error"]["message"],
        format!(
            "{}: this is an HTML page, not a sitemap: give the site's address ({site}/) to find its sitemaps through robots.txt and /sitemap.xml, or the sitemap's own URL",
            origin.url("/blog")
        )
    );

    // A malformed id: which parameter, and what an id looks like.
    let (status, body) = app.get_page("abc").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "path parameter `id`: \"abc\" is not an id; ids are UUIDs such as 3f2b8c1e-8d4a-4c5e-9b7a-1c2d3e4f5a6b"
    );

    // Dates alone are days: `from` their start, `to` their end.
    let stats = |query: &str| {
        app.master(
            Method::GET,
            &format!("/api/v1/clients/{client}/visits/stats?{query}"),
        )
    };
    let (status, body) = send(stats("from=2026-11-01&to=2026-11-30")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["from"], "2026-11-01T00:00:00Z");
    assert_eq!(
        body["to"], "2026-12-01T00:00:00Z",
        "through the end of the 30th"
    );
    let (status, body) = send(stats("from=yesterday")).await;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains(
            "\"yesterday\" is neither a date (2026-11-30) nor an RFC 3339 time (2026-11-30T12:00:00Z)"
        ),
        "{message}"
    );

    // JSON answers end with a newline (curl leaves the prompt on its own line).
    let text = app
        .master(Method::GET, "/api/v1/clients")
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert!(text.ends_with("}\n") && !text.ends_with("\n\n"), "{text:?}");

    // `localhost` as a domain: why not, and how to serve a local site.
    let (status, body) = app
        .post_client(&json!({"name": "Local", "domain": "localhost"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "domain");
    assert_eq!(
        body["error"]["message"],
        "domain: must be a public domain name with a dot, such as example.com; for a site on this machine, use a test name such as mysite.test and point it at the machine with FETCH_RESOLVE=mysite.test=127.0.0.1"
    );
}

#[tokio::test]
async fn fetch_failures_name_their_cause_and_the_way_out() {
    let guarded = HttpClient::new(&HttpConfig::default()).expect("client");
    let refused = guarded
        .get("http://127.0.0.1:9/", 1024)
        .await
        .expect_err("private");
    assert!(matches!(refused, FetchError::BlockedAddress(_)));
    assert!(
        refused.to_string().contains(
            "set ALLOW_PRIVATE_NETWORKS=true, or FETCH_RESOLVE=<test host>=<its address>"
        ),
        "{refused}"
    );

    // A typo in a host name (`.invalid` never resolves).
    let typo = guarded
        .get("http://exmaple-no-such-host.invalid/", 1024)
        .await
        .expect_err("no such host");
    assert!(
        matches!(&typo, FetchError::Dns { host, .. } if host == "exmaple-no-such-host.invalid"),
        "{typo:?}"
    );
    assert!(
        typo.to_string()
            .starts_with("exmaple-no-such-host.invalid does not resolve (DNS: ")
            && typo.to_string().ends_with("): check the host name"),
        "{typo}"
    );

    // Nobody listening: the cause, not "error sending request".
    let open = HttpClient::new(&HttpConfig {
        allow_private_networks: true,
        ..HttpConfig::default()
    })
    .expect("client");
    let port = ai_cache::infra::localstack::free_port().expect("port");
    let down = open
        .get(&format!("http://127.0.0.1:{port}/"), 1024)
        .await
        .expect_err("nobody listens");
    assert!(
        down.to_string().starts_with("cannot connect: ")
            && down
                .to_string()
                .to_lowercase()
                .contains("connection refused"),
        "{down}"
    );
}

#[tokio::test]
async fn a_browser_finds_a_front_page_and_the_api_documentation() {
    let app = TestApp::with_roles(&[Role::Api]).await;
    let page = |path: &str| app.request(Method::GET, path).send();
    let front = page("/").await.expect("front page");
    assert_eq!(front.status(), 200);
    let front = front.text().await.expect("html");
    assert!(
        front.contains("<a href=\"/docs\">API documentation</a>"),
        "{front}"
    );

    let docs = page("/docs")
        .await
        .expect("docs")
        .text()
        .await
        .expect("html");
    assert!(docs.contains("spec-url=\"/api/v1/openapi.json\""), "{docs}");
    assert!(
        docs.contains("<script src=\"/docs/rapidoc-min.js\">"),
        "{docs}"
    );
    // The viewer comes from us, not from a CDN; reqwest here does not ask for gzip.
    let script = page("/docs/rapidoc-min.js").await.expect("script");
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let js = script.text().await.expect("js");
    assert!(js.starts_with("/*! RapiDoc "), "{}", &js[..60]);
    assert!(!docs.contains("://"), "no outside address in the page");

    // A site's own `/` stays the edge's: an unknown path still answers 404 as JSON.
    let (status, body) = send(app.request(Method::GET, "/no-such-page")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
}
