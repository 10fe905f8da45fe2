//! A local fake of the Cloudflare Workers KV REST API (v4 envelope, bearer token, documented
//! limits, 429 with Retry-After, unsuccessful keys), recording every request.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use serde_json::{Value, json};

#[derive(Default)]
pub struct Inner {
    pub token: String,
    /// (namespace, key) → (value, metadata)
    pub store: Mutex<HashMap<(String, String), (String, Value)>>,
    /// Pairs in each bulk write received.
    pub writes: Mutex<Vec<usize>>,
    pub rate_limit_next: AtomicU32,
    pub fail_keys_once: Mutex<HashSet<String>>,
}

pub struct FakeCloudflare {
    pub base: String,
    pub inner: Arc<Inner>,
}

fn envelope(status: StatusCode, errors: Value, result: Value) -> Response {
    let success = status.is_success();
    (
        status,
        Json(json!({"success": success, "errors": errors, "messages": [], "result": result})),
    )
        .into_response()
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    envelope(
        status,
        json!([{"code": code, "message": message}]),
        Value::Null,
    )
}

fn gate(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {}", inner.token) {
        return Some(error(StatusCode::FORBIDDEN, 10000, "Authentication error"));
    }
    if inner.rate_limit_next.load(Ordering::SeqCst) > 0 {
        inner.rate_limit_next.fetch_sub(1, Ordering::SeqCst);
        let mut res = error(
            StatusCode::TOO_MANY_REQUESTS,
            10013,
            "Rate limited. Please wait and consider throttling your request speed",
        );
        res.headers_mut()
            .insert(header::RETRY_AFTER, "1".parse().expect("header"));
        return Some(res);
    }
    None
}

async fn bulk_write(
    State(inner): State<Arc<Inner>>,
    Path((_account, ns)): Path<(String, String)>,
    headers: HeaderMap,
    Json(pairs): Json<Vec<Value>>,
) -> Response {
    if let Some(refused) = gate(&inner, &headers) {
        return refused;
    }
    if pairs.len() > 10_000 {
        return error(
            StatusCode::BAD_REQUEST,
            10005,
            "too many pairs in one request (10,000 at most)",
        );
    }
    let mut unsuccessful = Vec::new();
    let mut written = 0;
    for pair in &pairs {
        let key = pair["key"].as_str().unwrap_or_default().to_owned();
        let value = pair["value"].as_str().unwrap_or_default().to_owned();
        let metadata = pair.get("metadata").cloned().unwrap_or(Value::Null);
        if key.is_empty() || key.len() > 512 {
            return error(
                StatusCode::BAD_REQUEST,
                10019,
                "key length must be 1 to 512 bytes",
            );
        }
        if value.len() > 25 * 1024 * 1024 {
            return error(StatusCode::PAYLOAD_TOO_LARGE, 10011, "value over 25 MiB");
        }
        if serde_json::to_string(&metadata).map_or(0, |m| m.len()) > 1024 {
            return error(StatusCode::BAD_REQUEST, 10012, "metadata over 1024 bytes");
        }
        if inner.fail_keys_once.lock().expect("lock").remove(&key) {
            unsuccessful.push(key);
            continue;
        }
        inner
            .store
            .lock()
            .expect("lock")
            .insert((ns.clone(), key), (value, metadata));
        written += 1;
    }
    inner.writes.lock().expect("lock").push(pairs.len());
    envelope(
        StatusCode::OK,
        json!([]),
        json!({"successful_key_count": written, "unsuccessful_keys": unsuccessful}),
    )
}

async fn bulk_delete(
    State(inner): State<Arc<Inner>>,
    Path((_account, ns)): Path<(String, String)>,
    headers: HeaderMap,
    Json(keys): Json<Vec<String>>,
) -> Response {
    if let Some(refused) = gate(&inner, &headers) {
        return refused;
    }
    let mut store = inner.store.lock().expect("lock");
    for key in &keys {
        store.remove(&(ns.clone(), key.clone()));
    }
    envelope(
        StatusCode::OK,
        json!([]),
        json!({"successful_key_count": keys.len(), "unsuccessful_keys": []}),
    )
}

impl FakeCloudflare {
    pub async fn start(token: &str) -> Self {
        let inner = Arc::new(Inner {
            token: token.into(),
            ..Inner::default()
        });
        let app = axum::Router::new()
            .route(
                "/client/v4/accounts/{account}/storage/kv/namespaces/{ns}/bulk",
                put(bulk_write),
            )
            .route(
                "/client/v4/accounts/{account}/storage/kv/namespaces/{ns}/bulk/delete",
                post(bulk_delete),
            )
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}/client/v4", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, inner }
    }

    pub fn get(&self, ns: &str, key: &str) -> Option<(String, Value)> {
        self.inner
            .store
            .lock()
            .expect("lock")
            .get(&(ns.to_owned(), key.to_owned()))
            .cloned()
    }
}
