//! Webhook deliveries: the `webhooks` consumer (deliver policy `new`: a deployment that adds
//! it does not replay history) reads every page event and POSTs those a
//! client's webhooks asked for (occurred after the webhook was added), signed (see
//! [`crate::domain::webhook`]). Every attempt is logged in `webhook_deliveries`; an endpoint
//! that already took an event is not sent it again when the message is redelivered for
//! another endpoint. A failed delivery (non-2xx, timeout, refused address) fails the message
//! transiently: the runtime retries it with backoff, and after the consumer's `max_deliver`
//! it becomes a dead letter that can be re-driven.

use std::sync::Arc;
use std::time::Instant;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use sqlx::PgPool;

use super::runtime::{Delivery, Step, StepError};
use crate::domain::webhook::{headers, sign};
use crate::events::{Event, PageEvent};
use crate::infra::http::HttpClient;
use crate::infra::secrets::Secrets;
use crate::projections::clients::{self as read, WebhookRow};
use crate::projections::operations::{self, DeliveryAttempt};

/// Bytes of an endpoint's answer kept in the log.
const ANSWER_LOGGED: usize = 500;

/// The stage.
pub struct WebhookDeliverer {
    db: PgPool,
    http: HttpClient,
    secrets: Arc<Secrets>,
}

impl WebhookDeliverer {
    pub fn new(db: PgPool, http: HttpClient, secrets: Arc<Secrets>) -> Self {
        Self { db, http, secrets }
    }

    /// Sends the event to one endpoint and logs the attempt; `Err` says why it failed.
    async fn deliver(
        &self,
        hook: &WebhookRow,
        event: &Event<PageEvent>,
        body: &[u8],
        attempt: u64,
    ) -> Result<(), String> {
        let secret = self
            .secrets
            .decrypt(&String::from_utf8_lossy(&hook.secret_encrypted))
            .map_err(|e| format!("the webhook's secret cannot be decrypted: {e}"))?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(secret.expose().as_bytes(), timestamp, body);
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        set(headers::WEBHOOK_ID, hook.id.to_string());
        set(headers::EVENT_ID, event.meta.id.to_string());
        set(headers::EVENT_TYPE, event.event_type().to_owned());
        set(headers::TIMESTAMP, timestamp.to_string());
        set(headers::SIGNATURE, signature);
        let started = Instant::now();
        let result = self
            .http
            .post(&hook.url, h, body.to_vec(), ANSWER_LOGGED)
            .await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (succeeded, status, error) = match &result {
            Ok((status, _)) if (200..300).contains(status) => (true, Some(*status), None),
            Ok((status, answer)) => (
                false,
                Some(*status),
                Some(format!("HTTP {status}: {answer}")),
            ),
            Err(e) => (false, None, Some(e.to_string())),
        };
        let attempt = DeliveryAttempt {
            webhook: hook.id,
            client: hook.client_id,
            event: event.meta.id,
            event_type: event.event_type(),
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            succeeded,
            status_code: status.map(i32::from),
            error: error.as_deref(),
            duration_ms,
        };
        operations::record_delivery(&self.db, attempt)
            .await
            .map_err(|e| format!("logging the delivery: {e}"))?;
        metrics::counter!("aicache_webhook_deliveries_total", "outcome" => if succeeded { "ok" } else { "failed" })
            .increment(1);
        match error {
            None => Ok(()),
            Some(e) => Err(format!("webhook {} ({}): {e}", hook.id, hook.url)),
        }
    }
}

impl Step<PageEvent> for WebhookDeliverer {
    async fn handle(&self, event: Event<PageEvent>, delivery: &Delivery) -> Result<(), StepError> {
        let event_type = event.event_type();
        let hooks: Vec<WebhookRow> = read::webhooks(&self.db, event.meta.client_id.as_uuid())
            .await
            .map_err(StepError::transient)?
            .into_iter()
            .filter(|h| {
                h.events.iter().any(|e| e == event_type) && event.meta.occurred_at >= h.created_at
            })
            .collect();
        if hooks.is_empty() {
            return Ok(());
        }
        let ids: Vec<uuid::Uuid> = hooks.iter().map(|h| h.id).collect();
        let done = operations::delivered_webhooks(&self.db, event.meta.id, &ids)
            .await
            .map_err(StepError::transient)?;
        let body = event.to_json().map_err(StepError::permanent)?;
        let attempts = hooks
            .iter()
            .filter(|h| !done.contains(&h.id))
            .map(|h| self.deliver(h, &event, &body, delivery.delivered));
        let failures: Vec<String> = futures::future::join_all(attempts)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(StepError::transient(failures.join("; ")))
        }
    }
}
