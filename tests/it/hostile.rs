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
    send(
        app.master(Method::PUT, &format!("/api/v1/clients/{client}"))
            .json(&json!({"settings": {"crawl_rate_per_minute": 600}})),
    )
    .await;
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
    let (status, body) = send(
        app.master(Method::POST, "/api/v1/clients")
            .json(&json!({"name": "IDN", "domain": "例え.テスト"})),
    )
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
    let (status, body) = send(app.master(Method::POST, "/api/v1/visits").json(&json!({
        "client_id": client, "url": "https://site.test/p",
        "user_agent": "GPTBot\u{0}/1.2", "referrer": "https://r.test/\u{0}",
        "cf_worker": "w\u{0}", "timestamp": "2026-11-30T10:00:00Z"
    })))
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
