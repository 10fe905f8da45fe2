//! Dead letters: messages a stage gave up on, kept on the DEADLETTER stream with the original
//! payload untouched and the context in headers, so they can be listed and re-driven.

use async_nats::HeaderMap;
use async_nats::jetstream;

use crate::events::subjects;

/// Header names carried by a dead letter.
pub mod headers {
    pub const ORIGINAL_SUBJECT: &str = "Ai-Cache-Original-Subject";
    pub const ORIGINAL_STREAM: &str = "Ai-Cache-Original-Stream";
    pub const ORIGINAL_SEQ: &str = "Ai-Cache-Original-Seq";
    pub const CONSUMER: &str = "Ai-Cache-Consumer";
    pub const ERROR: &str = "Ai-Cache-Error";
    pub const ERROR_KIND: &str = "Ai-Cache-Error-Kind";
    pub const DELIVERIES: &str = "Ai-Cache-Deliveries";
}

/// Why a message is dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterKind {
    /// The failure can never succeed (bad input, undecodable event).
    Permanent,
    /// The retry budget ran out on transient failures.
    RetriesExhausted,
}

impl DeadLetterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::RetriesExhausted => "retries_exhausted",
        }
    }
}

/// A message to dead-letter.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    pub stream: &'a str,
    pub consumer: &'a str,
    pub subject: &'a str,
    pub stream_seq: u64,
    pub deliveries: u64,
    pub kind: DeadLetterKind,
    pub error: &'a str,
    pub payload: bytes::Bytes,
}

/// Stores a dead letter and waits for the stream's acknowledgement. Deduplicated on
/// (stream, sequence, consumer): a crash between this and the term cannot make two.
pub async fn publish(js: &jetstream::Context, dl: DeadLetter<'_>) -> Result<u64, String> {
    let mut h = HeaderMap::new();
    h.insert(
        "Nats-Msg-Id",
        format!("dl:{}:{}:{}", dl.stream, dl.stream_seq, dl.consumer).as_str(),
    );
    h.insert(headers::ORIGINAL_SUBJECT, dl.subject);
    h.insert(headers::ORIGINAL_STREAM, dl.stream);
    h.insert(headers::ORIGINAL_SEQ, dl.stream_seq.to_string().as_str());
    h.insert(headers::CONSUMER, dl.consumer);
    // Header values are one line: keep the error's first 1,000 characters on one line.
    let error: String = dl
        .error
        .chars()
        .take(1000)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    h.insert(headers::ERROR, error.as_str());
    h.insert(headers::ERROR_KIND, dl.kind.as_str());
    h.insert(headers::DELIVERIES, dl.deliveries.to_string().as_str());
    let ack = js
        .publish_with_headers(subjects::dead_letter(dl.consumer), h, dl.payload)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(ack.sequence)
}
