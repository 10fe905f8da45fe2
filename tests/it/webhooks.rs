//! Webhooks: a receiver that fails twice gets `pages.updated` on the third try, signed with
//! HMAC-SHA256 over timestamp and body; attempts are in the delivery log; secrets are shown
//! once and stored encrypted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ai_cache::infra::http::{HttpClient, HttpConfig};
use ai_cache::infra::secrets::Secrets;
use ai_cache::pipeline::runtime::{ConsumerRuntime, RuntimeOptions};
use ai_cache::pipeline::webhooks::WebhookDeliverer;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::clients::{create_client, send};
use crate::harness::{TestApp, eventually};
use crate::page_origin::PageOrigin;

/// A request as the receiver got it.
type Received = (HeaderMap, Vec<u8>);

/// A receiver answering 500 to its first `failures` requests, then 204; records them all.
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<Received>>>,
    failures: usize,
}

async fn start_receiver(failures: usize) -> (String, Receiver) {
    let receiver = Receiver {
        failures,
        ..Receiver::default()
    };
    let state = receiver.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            |axum::extract::State(r): axum::extract::State<Receiver>,
             headers: HeaderMap,
             body: axum::body::Bytes| async move {
                let mut requests = r.requests.lock().expect("lock");
                requests.push((headers, body.to_vec()));
                if requests.len() <= r.failures {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app.with_state(state)).await });
    (url, receiver)
}

/// What a receiver does to check a delivery (as documented in the README).
fn signature_is_valid(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let timestamp = header("x-aicache-timestamp");
    let Some(hex_sig) = header("x-aicache-signature")
        .strip_prefix("v1=")
        .map(String::from)
    else {
        return false;
    };
    let Ok(sent) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
    fresh && mac.verify_slice(&sent).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_twice_gets_the_signed_event_on_the_third_try() {
    let app = TestApp::with_roles(&crate::harness::PIPELINE_ROLES).await;
    // The deliverer with a short backoff, so the retries come quickly.
    let secrets = Arc::new(Secrets::new(&app.options.fernet_keys).expect("keys"));
    let http = HttpClient::new(&HttpConfig {
        allow_private_networks: true,
        ..HttpConfig::default()
    })
    .expect("http");
    let runtime = ConsumerRuntime::<ai_cache::events::PageEvent, _>::new(
        app.js().clone(),
        "webhooks",
        WebhookDeliverer::new(app.db().clone(), http, Arc::clone(&secrets)),
        RuntimeOptions {
            backoff: vec![Duration::from_millis(200)],
            ..RuntimeOptions::default()
        },
    );
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move { runtime.run(token).await });

    let (hook_url, receiver) = start_receiver(2).await;
    let client = create_client(&app, "Site", "site.test").await;
    let (status, created) = app.post_webhook(&client, &json!({"url": hook_url})).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created["events"], json!(["pages.updated"]));
    let webhook = created["id"].as_str().expect("id").to_owned();

    // Listed without its secret; stored only as a Fernet token.
    let (_, listed) = app.get_webhooks(&client).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert!(!listed.to_string().contains(&secret), "{listed}");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_encrypted FROM webhooks")
        .fetch_one(app.db())
        .await
        .expect("row");
    let stored = String::from_utf8(stored).expect("token");
    assert!(!stored.contains(&secret));
    assert_eq!(secrets.decrypt(&stored).expect("decrypts").expose(), secret);

    let origin = PageOrigin::start().await;
    app.add_urls(&client, &origin.articles(&["/doc".to_owned()]))
        .await;
    eventually(
        Duration::from_secs(30),
        "the third try gets through",
        || async { receiver.requests.lock().expect("lock").len() >= 3 },
    )
    .await;
    // Nothing more happens: the delivery is acked (the consumer holds nothing in flight).
    app.drained("PAGES", &["webhooks"]).await;
    let requests = receiver.requests.lock().expect("lock").clone();
    assert_eq!(requests.len(), 3, "two failures, one success, nothing more");
    let event_ids: Vec<&str> = requests
        .iter()
        .map(|(h, _)| h["x-aicache-event-id"].to_str().expect("id"))
        .collect();
    assert!(
        event_ids.iter().all(|id| *id == event_ids[0]),
        "the same event each time"
    );
    let (headers, body) = &requests[2];
    assert!(signature_is_valid(&secret, headers, body), "{headers:?}");
    assert!(
        !signature_is_valid("whsec_another", headers, body),
        "a signature under another secret does not pass"
    );
    let mut tampered = body.clone();
    tampered.push(b' ');
    assert!(!signature_is_valid(&secret, headers, &tampered));
    assert_eq!(headers["x-aicache-event-type"], "pages.updated");
    assert_eq!(
        headers["x-aicache-webhook-id"].to_str().expect("id"),
        webhook
    );
    let event: Value = serde_json::from_slice(body).expect("json");
    assert_eq!(event["type"], "pages.updated");
    assert_eq!(event["id"].as_str(), Some(event_ids[0]));
    assert_eq!(event["client_id"], client.as_str());

    // The delivery log, newest first.
    let (status, log) = send(app.master(
        Method::GET,
        &format!("/api/v1/clients/{client}/webhooks/{webhook}/deliveries"),
    ))
    .await;
    assert_eq!(status, 200, "{log}");
    let attempts: Vec<(i64, bool, i64)> = log
        .as_array()
        .expect("log")
        .iter()
        .map(|d| {
            (
                d["attempt"].as_i64().expect("attempt"),
                d["succeeded"].as_bool().expect("succeeded"),
                d["status_code"].as_i64().expect("status"),
            )
        })
        .collect();
    assert_eq!(attempts, [(3, true, 204), (2, false, 500), (1, false, 500)]);

    // Bad targets are refused with a clear error; removal stops deliveries.
    let (status, body) = app
        .post_webhook(&client, &json!({"url": "ftp://example.com/hook"}))
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("url")),
        "{body}"
    );
    let (status, body) = app
        .post_webhook(
            &client,
            &json!({"url": hook_url, "events": ["clients.registered"]}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("events")),
        "{body}"
    );
    let (status, _) = send(app.master(
        Method::DELETE,
        &format!("/api/v1/clients/{client}/webhooks/{webhook}"),
    ))
    .await;
    assert_eq!(status, 200);
    let (_, listed) = app.get_webhooks(&client).await;
    assert_eq!(listed, json!([]));
    stop.cancel();
}
