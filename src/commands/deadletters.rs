//! Dead letters: list, show, re-drive and discard the messages stages gave up on.
//!
//! A dead letter is a message on the DEADLETTER stream (`deadletter.<consumer>`): the original
//! payload untouched, the context in headers ([`crate::pipeline::deadletter::headers`]). Its
//! stream sequence is its id. Re-driving hands the payload to the consumer that gave up, on
//! `redrive.<consumer>` (stream REDRIVE), then deletes the dead letter: the stage handles it
//! again under its usual policy, and a new failure makes a new dead letter. The publish is
//! deduplicated on the dead letter's id, so a re-drive interrupted between publish and delete
//! can be repeated without a second copy.

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::events::StreamName;
use crate::infra::nats::page_by_subject;
use crate::pipeline::deadletter::Origin;
use crate::pipeline::deadletter::headers;
use crate::pipeline::runtime::{copy_to_redrive, has_redrive_consumer, redrive_consumer};

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("no dead letter {0}")]
    NotFound(u64),
    #[error("consumer {0:?} has no re-drive consumer ({1}); apply the stream definitions")]
    NoRedriveConsumer(String, String),
    #[error("NATS: {0}")]
    Nats(String),
}

/// A dead letter as operators see it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// Its id: the sequence on the DEADLETTER stream.
    pub seq: u64,
    /// The stage consumer that gave up (`markdown`, `uploader`, ...).
    pub consumer: String,
    /// `permanent` or `retries_exhausted`.
    pub kind: String,
    pub error: String,
    /// Deliveries the stage made before giving up.
    pub deliveries: u64,
    pub original_stream: String,
    pub original_subject: String,
    pub original_seq: u64,
    /// From the original event's envelope, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_id: Option<Uuid>,
    pub dead_lettered_at: DateTime<Utc>,
    /// The original event (wire JSON; a string when it was not JSON). Only in `show`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub event: Option<serde_json::Value>,
}

/// One page of dead letters.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub items: Vec<DeadLetterView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
    /// Dead letters waiting in all (whatever the filter).
    pub total: u64,
}

/// Which dead letters.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub consumer: Option<String>,
    pub client_id: Option<Uuid>,
}

impl Filter {
    fn matches(&self, dl: &DeadLetterView) -> bool {
        self.consumer.as_deref().is_none_or(|c| c == dl.consumer)
            && self.client_id.is_none_or(|c| dl.client_id == Some(c))
    }

    fn subject(&self) -> String {
        match &self.consumer {
            Some(c) => crate::events::subjects::dead_letter(c),
            None => "deadletter.>".to_owned(),
        }
    }
}

/// The dead-letter operations.
#[derive(Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
}

impl DeadLetters {
    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
    }

    async fn stream(&self) -> Result<jetstream::stream::Stream, DeadLetterError> {
        self.js
            .get_stream(StreamName::DeadLetter.name())
            .await
            .map_err(|e| DeadLetterError::Nats(e.to_string()))
    }

    /// Up to `limit` dead letters after sequence `after`, oldest first.
    pub async fn list(
        &self,
        filter: &Filter,
        after: u64,
        limit: usize,
    ) -> Result<DeadLetterPage, DeadLetterError> {
        let stream = self.stream().await?;
        let total = stream.cached_info().state.messages;
        let (items, next_after) =
            page_by_subject(&stream, &filter.subject(), after, limit, |msg| {
                Some(view(msg, false)).filter(|dl| filter.matches(dl))
            })
            .await
            .map_err(DeadLetterError::Nats)?;
        Ok(DeadLetterPage {
            items,
            next_after,
            total,
        })
    }

    async fn raw(&self, seq: u64) -> Result<jetstream::message::StreamMessage, DeadLetterError> {
        // Stream sequences start at 1: the server refuses 0 as a malformed request.
        if seq == 0 {
            return Err(DeadLetterError::NotFound(seq));
        }
        match self.stream().await?.direct_get(seq).await {
            Ok(msg) => Ok(msg),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
                Err(DeadLetterError::NotFound(seq))
            }
            Err(e) => Err(DeadLetterError::Nats(e.to_string())),
        }
    }

    /// One dead letter with its original event.
    pub async fn show(&self, seq: u64) -> Result<DeadLetterView, DeadLetterError> {
        Ok(view(&self.raw(seq).await?, true))
    }

    /// Hands one dead letter back to its consumer and removes it.
    pub async fn redrive(&self, seq: u64) -> Result<DeadLetterView, DeadLetterError> {
        let msg = self.raw(seq).await?;
        let dl = view(&msg, false);
        if !has_redrive_consumer(&self.js, &dl.consumer)
            .await
            .map_err(DeadLetterError::Nats)?
        {
            let durable = redrive_consumer(&dl.consumer);
            return Err(DeadLetterError::NoRedriveConsumer(dl.consumer, durable));
        }
        let origin = Origin::of(
            None,
            &dl.original_stream,
            &dl.original_subject,
            dl.original_seq,
        );
        copy_to_redrive(
            &self.js,
            &dl.consumer,
            &format!("redrive:{seq}"),
            &origin,
            &[(headers::REDRIVEN_FROM, &seq.to_string())],
            msg.payload.clone(),
        )
        .await
        .map_err(DeadLetterError::Nats)?;
        self.delete(seq).await?;
        tracing::info!(
            deadletter.seq = seq,
            consumer = %dl.consumer,
            "dead letter re-driven"
        );
        Ok(dl)
    }

    /// Re-drives every dead letter the filter selects; returns those re-driven.
    pub async fn redrive_all(&self, filter: &Filter) -> Result<Vec<u64>, DeadLetterError> {
        let mut done = Vec::new();
        let mut after = 0;
        loop {
            let page = self.list(filter, after, 500).await?;
            for dl in &page.items {
                self.redrive(dl.seq).await?;
                done.push(dl.seq);
            }
            match page.next_after {
                Some(next) => after = next,
                None => return Ok(done),
            }
        }
    }

    /// Removes a dead letter without handling it again.
    pub async fn discard(&self, seq: u64) -> Result<DeadLetterView, DeadLetterError> {
        let dl = view(&self.raw(seq).await?, false);
        self.delete(seq).await?;
        tracing::info!(deadletter.seq = seq, consumer = %dl.consumer, "dead letter discarded");
        Ok(dl)
    }

    async fn delete(&self, seq: u64) -> Result<(), DeadLetterError> {
        match self.stream().await?.delete_message(seq).await {
            Ok(_) => Ok(()),
            Err(e) => Err(DeadLetterError::Nats(e.to_string())),
        }
    }
}

/// Reads a dead letter's headers and the envelope of its payload.
fn view(msg: &jetstream::message::StreamMessage, with_event: bool) -> DeadLetterView {
    let header = |name| {
        msg.headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    let number = |name| header(name).parse().unwrap_or(0);
    let event: Option<serde_json::Value> = serde_json::from_slice(&msg.payload).ok();
    let field = |name: &str| {
        event
            .as_ref()
            .and_then(|e| e.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let uuid = |name: &str| field(name).and_then(|s| s.parse().ok());
    let consumer = match header(headers::CONSUMER) {
        c if c.is_empty() => msg
            .subject
            .strip_prefix("deadletter.")
            .unwrap_or_default()
            .to_owned(),
        c => c,
    };
    DeadLetterView {
        seq: msg.sequence,
        consumer,
        kind: header(headers::ERROR_KIND),
        error: header(headers::ERROR),
        deliveries: number(headers::DELIVERIES),
        original_stream: header(headers::ORIGINAL_STREAM),
        original_subject: header(headers::ORIGINAL_SUBJECT),
        original_seq: number(headers::ORIGINAL_SEQ),
        event_type: field("type"),
        client_id: uuid("client_id"),
        page_id: uuid("page_id"),
        dead_lettered_at: to_chrono(msg.time.unix_timestamp_nanos()),
        event: with_event.then(|| {
            event.clone().unwrap_or_else(|| {
                serde_json::Value::String(String::from_utf8_lossy(&msg.payload).into_owned())
            })
        }),
    }
}

/// A NATS message time (nanoseconds since the epoch) as chrono's.
pub(crate) fn to_chrono(unix_nanos: i128) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(i64::try_from(unix_nanos).unwrap_or(i64::MAX))
}
