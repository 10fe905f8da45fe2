//! On-demand conversion: a URL of the client's gets its Markdown through the pipeline, at
//! once when cached and fresh, else after the fetch it waits for (or 202 past the wait).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::clients::{create_client, create_key, send};
use crate::harness::{Options, PIPELINE_ROLES, TestApp, eventually};
use crate::page_origin::PageOrigin;

async fn convert(app: &TestApp, client: &str, key: &str, body: Value) -> (u16, Value) {
    send(
        app.request(
            Method::POST,
            &format!("/api/v1/clients/{client}/pages/convert"),
        )
        .header("X-API-Key", key)
        .json(&body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_is_converted_through_the_pipeline_and_then_answered_from_the_cache() {
    let app = TestApp::with_options(&PIPELINE_ROLES, Options::default()).await;
    let origin = PageOrigin::start().await;
    let client = create_client(&app, "Site", "site.test").await;
    app.crawl_rate(&client, 600).await;
    let (_, key) = create_key(&app, &client, &["write"]).await;
    let url = origin.articles(&["/guide".to_owned()]).remove(0);

    let (status, first) = convert(&app, &client, &key, json!({"url": url})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (first["state"].as_str(), first["cached"].as_bool()),
        (Some("ready"), Some(false))
    );
    assert!(
        first["markdown"]
            .as_str()
            .is_some_and(|m| m.contains("The text of /guide")),
        "{first}"
    );
    assert_eq!(first["url"], url.as_str());
    let fetches = origin.hits("/guide").len();

    // Fresh enough: from the cache, no fetch.
    let (status, again) = convert(&app, &client, &key, json!({"url": url})).await;
    assert_eq!(
        (status, again["cached"].as_bool()),
        (200, Some(true)),
        "{again}"
    );
    assert_eq!(again["markdown"], first["markdown"]);
    assert_eq!(origin.hits("/guide").len(), fetches);

    // Too old for the caller: fetched again (unchanged content is ready as it is).
    let (status, refetched) =
        convert(&app, &client, &key, json!({"url": url, "max_age_secs": 0})).await;
    assert_eq!(
        (status, refetched["cached"].as_bool()),
        (200, Some(false)),
        "{refetched}"
    );
    assert_eq!(origin.hits("/guide").len(), fetches + 1);

    // Not waiting: 202 with the page, which the pipeline finishes anyway.
    let other = origin.articles(&["/later".to_owned()]).remove(0);
    let (status, pending) =
        convert(&app, &client, &key, json!({"url": other, "wait_secs": 0})).await;
    assert_eq!(
        (status, pending["state"].as_str()),
        (202, Some("pending")),
        "{pending}"
    );
    let page = pending["page_id"].as_str().expect("page id").to_owned();
    eventually(Duration::from_secs(30), "the page is converted", || async {
        let (_, p) = send(app.master(Method::GET, &format!("/api/v1/pages/{page}"))).await;
        p["has_markdown"] == true
    })
    .await;

    // A page the origin does not have: a clear conflict, not a wait.
    let (status, gone) = convert(&app, &client, &key, json!({"url": origin.url("/gone")})).await;
    assert_eq!(status, 409, "{gone}");
    assert_eq!(gone["error"]["code"], "conflict");

    // Off the client's domain, or a wait too long: refused with the field at fault.
    let (status, off) = convert(
        &app,
        &client,
        &key,
        json!({"url": "https://elsewhere.test/x"}),
    )
    .await;
    assert_eq!(
        (status, off["error"]["field"].as_str()),
        (422, Some("url")),
        "{off}"
    );
    let (status, long) = convert(&app, &client, &key, json!({"url": url, "wait_secs": 61})).await;
    assert_eq!(
        (status, long["error"]["field"].as_str()),
        (422, Some("wait_secs")),
        "{long}"
    );
    // A read key may not start fetches.
    let (_, read_key) = create_key(&app, &client, &["read"]).await;
    let (status, _) = convert(&app, &client, &read_key, json!({"url": url})).await;
    assert_eq!(status, 403);
}
