//! Publishing events to JetStream with deduplication ids.
//!
//! Every publish carries a `Nats-Msg-Id`: the event's deduplication key where the step that
//! produced it is a pure function of its input, else the event id. Inside the stream's
//! duplicate window a second publish with the same id is dropped by the server and reported
//! as a duplicate with the first one's sequence.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};

use crate::events::{Event, EventFamily};

/// Publishing failed; always worth retrying (the server was unreachable or slow).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("encoding event failed: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("publishing to {subject} failed: {message}")]
    Nats { subject: String, message: String },
    /// A conditional publish found another event on the subject since the one expected.
    #[error("{subject} has a newer event than the one this step read")]
    Conflict { subject: String },
}

/// Where one event landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    /// The server already had a message with this id: nothing new was stored.
    pub duplicate: bool,
}

/// An event ready to publish, with its deduplication key.
#[derive(Debug)]
pub struct Outgoing<E> {
    pub event: Event<E>,
    pub dedup_key: String,
    /// Publish only if the last event on the subject is still at this stream sequence (0:
    /// none yet), else fail with [`PublishError::Conflict`]: optimistic concurrency on a
    /// page's own subject, for a step that read the page's past and acted on it.
    pub last_on_subject: Option<u64>,
}

impl<E: EventFamily> Outgoing<E> {
    /// An event deduplicated by its own id (a fresh command from outside).
    pub fn unique(event: Event<E>) -> Self {
        let dedup_key = event.meta.id.to_string();
        Self {
            event,
            dedup_key,
            last_on_subject: None,
        }
    }

    /// An event deduplicated by `key`, the identity of the step that made it; the event id
    /// is derived from the key so a rerun makes the very same event.
    pub fn keyed(event: Event<E>, key: impl Into<String>) -> Self {
        let dedup_key = key.into();
        let event = event.with_dedup_key(&dedup_key);
        Self {
            event,
            dedup_key,
            last_on_subject: None,
        }
    }

    /// Published only if the last event on its subject is still the one at `seq` (0: none).
    pub fn expecting(mut self, seq: u64) -> Self {
        self.last_on_subject = Some(seq);
        self
    }
}

/// Publishes events and awaits the stream's acknowledgement.
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
}

impl Publisher {
    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
    }

    /// Publishes one event and waits until the stream stored it.
    pub async fn publish<E: EventFamily>(
        &self,
        out: &Outgoing<E>,
    ) -> Result<Published, PublishError> {
        let (subject, ack) = self.send(out).await?;
        await_ack(subject, ack).await
    }

    /// Publishes many events with their acks in flight together (one round trip for the
    /// batch instead of one per event), then waits for all of them, in order.
    pub async fn publish_all<E: EventFamily>(
        &self,
        batch: &[Outgoing<E>],
    ) -> Result<Vec<Published>, PublishError> {
        let mut pending = Vec::with_capacity(batch.len());
        for out in batch {
            pending.push(self.send(out).await?);
        }
        let mut published = Vec::with_capacity(pending.len());
        for (subject, ack) in pending {
            published.push(await_ack(subject, ack).await?);
        }
        Ok(published)
    }

    async fn send<E: EventFamily>(
        &self,
        out: &Outgoing<E>,
    ) -> Result<(String, PublishAckFuture), PublishError> {
        let subject = out.event.subject();
        let payload = out.event.to_json()?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", out.dedup_key.as_str());
        if let Some(seq) = out.last_on_subject {
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                seq.to_string().as_str(),
            );
        }
        let ack = self
            .js
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
            .map_err(|e| PublishError::Nats {
                subject: subject.clone(),
                message: e.to_string(),
            })?;
        Ok((subject, ack))
    }
}

async fn await_ack(subject: String, ack: PublishAckFuture) -> Result<Published, PublishError> {
    use async_nats::jetstream::context::PublishErrorKind;
    let ack = ack.await.map_err(|e| match e.kind() {
        PublishErrorKind::WrongLastSequence => PublishError::Conflict {
            subject: subject.clone(),
        },
        _ => PublishError::Nats {
            subject: subject.clone(),
            message: e.to_string(),
        },
    })?;
    Ok(Published {
        sequence: ack.sequence,
        duplicate: ack.duplicate,
    })
}
