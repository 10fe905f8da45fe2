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
