//! A local fake of Gemini's `generateContent` REST API, following its documented replies:
//! candidates with parts and finishReason, usageMetadata, promptFeedback blocks, and errors
//! `{error: {code, message, status, details}}` (429 RESOURCE_EXHAUSTED with QuotaFailure and
//! RetryInfo details, 503 UNAVAILABLE, 404 NOT_FOUND, 400 for a bad key).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// What the next call answers (an empty queue answers `Ok`).
#[derive(Clone, Debug)]
pub enum Mode {
    Ok,
    MaxTokens,
    Safety,
    RateLimit,
    PerDay,
    Overloaded,
}

#[derive(Default)]
pub struct Inner {
    pub key: String,
    pub modes: Mutex<VecDeque<Mode>>,
    pub calls: Mutex<Vec<(Instant, Value)>>,
}

pub struct FakeGemini {
    pub base: String,
    pub inner: Arc<Inner>,
}

fn usage() -> Value {
    json!({"promptTokenCount": 120, "candidatesTokenCount": 30, "totalTokenCount": 150})
}

fn error(status: StatusCode, message: &str, details: Value) -> Response {
    let status_text = match status.as_u16() {
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        404 => "NOT_FOUND",
        _ => "INVALID_ARGUMENT",
    };
    (status, Json(json!({"error": {"code": status.as_u16(), "message": message, "status": status_text, "details": details}}))).into_response()
}

fn quota(quota_id: &str, delay: &str) -> Value {
    json!([
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": quota_id}]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
    ])
}

async fn generate(
    State(inner): State<Arc<Inner>>,
    Path(call): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    inner
        .calls
        .lock()
        .expect("lock")
        .push((Instant::now(), body.clone()));
    if headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) != Some(inner.key.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "API key not valid. Please pass a valid API key.",
            json!([]),
        );
    }
    let Some(model) = call.strip_suffix(":generateContent") else {
        return error(StatusCode::NOT_FOUND, "method not found", json!([]));
    };
    if model != "known-model" {
        return error(
            StatusCode::NOT_FOUND,
            &format!("models/{model} is not found for API version v1beta"),
            json!([]),
        );
    }
    let thinking = &body["generationConfig"]["thinkingConfig"];
    if thinking.get("thinkingLevel").is_some() && thinking.get("thinkingBudget").is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "thinkingBudget and thinkingLevel cannot both be set",
            json!([]),
        );
    }
    let input = body["contents"][0]["parts"][0]["text"]
        .as_str()
        .unwrap_or_default();
    let mode = inner
        .modes
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(Mode::Ok);
    let candidate = |text: &str, finish: &str| {
        Json(json!({"candidates": [{"content": {"parts": [{"text": "reasoning", "thought": true}, {"text": text}], "role": "model"}, "finishReason": finish}], "usageMetadata": usage()})).into_response()
    };
    match mode {
        Mode::Ok => candidate(
            &format!(
                "# From Gemini\n\nRewritten ({} characters of input).\n",
                input.len()
            ),
            "STOP",
        ),
        Mode::MaxTokens => candidate("# From Gemini\n\nCut o", "MAX_TOKENS"),
        Mode::Safety => {
            Json(json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage()}))
                .into_response()
        }
        Mode::RateLimit => error(
            StatusCode::TOO_MANY_REQUESTS,
            "Resource has been exhausted (e.g. check quota).",
            quota("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "1s"),
        ),
        Mode::PerDay => error(
            StatusCode::TOO_MANY_REQUESTS,
            "You exceeded your current quota.",
            quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "3600s"),
        ),
        Mode::Overloaded => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The model is overloaded. Please try again later.",
            json!([]),
        ),
    }
}

impl FakeGemini {
    pub async fn start(key: &str) -> Self {
        let inner = Arc::new(Inner {
            key: key.into(),
            ..Inner::default()
        });
        let app = axum::Router::new()
            .route("/v1beta/models/{call}", post(generate))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}/v1beta", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, inner }
    }

    pub fn queue(&self, modes: &[Mode]) {
        self.inner
            .modes
            .lock()
            .expect("lock")
            .extend(modes.iter().cloned());
    }
}
