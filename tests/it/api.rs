//! The API skeleton: health, errors, request ids, metrics.

use std::time::Duration;

use ai_cache::app::Role;
use serde_json::Value;

use crate::harness::{TestApp, eventually};

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let res = reqwest::get(url).await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.text().await.expect("body"))
}

#[tokio::test]
async fn health_is_200_with_every_check_ok_when_everything_is_up() {
    let app = TestApp::spawn().await;
    let api = app.api.clone().expect("api");
    let (status, _, body) = get(&format!("{api}/health")).await;
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["database"], "connected");
    assert_eq!(h["checks"]["database"]["ok"], true);
    assert_eq!(h["checks"]["nats"]["ok"], true);
    for stream in ["CLIENTS", "PAGES", "VISITS", "DEADLETTER", "OBJ_blobs"] {
        assert_eq!(h["checks"]["streams"][stream]["ok"], true, "{stream}");
    }
    assert_eq!(h["checks"]["consumers"]["PAGES/markdown"]["ok"], true);
    assert_eq!(h["checks"]["consumers"]["PAGES/markdown"]["pending"], 0);
    assert!(h["checks"]["projections"]["pages"]["lag"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_503_while_nats_is_down_and_recovers_after() {
    let mut app = TestApp::spawn().await;
    let api = app.api.clone().expect("api");
    tokio::task::block_in_place(|| app.nats.stop());
    eventually(
        Duration::from_secs(15),
        "health reports nats down",
        || async {
            let (status, _, body) = get(&format!("{api}/health")).await;
            status == 503
                && serde_json::from_str::<Value>(&body)
                    .is_ok_and(|h| h["status"] == "degraded" && h["checks"]["nats"]["ok"] == false)
        },
    )
    .await;
    tokio::task::block_in_place(|| app.nats.restart()).expect("restart");
    eventually(Duration::from_secs(20), "health is green again", || async {
        get(&format!("{api}/health")).await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_callers() {
    let app = TestApp::with_roles(&[Role::Api]).await;
    let api = app.api.clone().expect("api");
    let (_, headers, _) = get(&format!("{api}/health")).await;
    assert!(headers.get("x-request-id").is_some_and(|v| !v.is_empty()));
    let res = reqwest::Client::new()
        .get(format!("{api}/health"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("request");
    assert_eq!(
        res.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("trace-me-42")
    );
}

#[tokio::test]
async fn an_unknown_route_answers_the_json_error_shape() {
    let app = TestApp::with_roles(&[Role::Api]).await;
    let (status, headers, body) = get(&format!(
        "{}/api/v1/nothing-here",
        app.api.clone().expect("api")
    ))
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let e: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(e["error"]["code"], "not_found");
    assert!(e["error"]["message"].is_string());
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_format() {
    let app = TestApp::spawn().await;
    let api = app.api.clone().expect("api");
    // Something for the projection metrics to count.
    let publisher = ai_cache::infra::publish::Publisher::new(app.js().clone());
    let event = crate::projections::discovered(
        ai_cache::domain::ids::ClientId::new_random(),
        "https://example.com/m",
    );
    let published = publisher
        .publish(&ai_cache::infra::publish::Outgoing::unique(event))
        .await
        .expect("publish");
    app.wait_for_checkpoint("pages", published.sequence).await;
    let _ = get(&format!("{api}/health")).await;
    let (status, _, body) = get(&format!("{api}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE aicache_projection_events_total counter"),
        "{body}"
    );
    assert!(
        body.contains("aicache_consumer_pending{consumer=\"markdown\"}"),
        "{body}"
    );
}
