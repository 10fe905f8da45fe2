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
    /// On a re-driven message: the dead letter it came from.
    pub const REDRIVEN_FROM: &str = "Ai-Cache-Redriven-From";
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

/// Where a dead-lettered message first came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub stream: String,
    pub subject: String,
    pub seq: u64,
}

impl Origin {
    /// The origin a message carries in its headers (a re-driven dead letter), else the
    /// message itself.
    pub fn of(headers: Option<&HeaderMap>, stream: &str, subject: &str, seq: u64) -> Self {
        let header = |name| {
            headers
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        match (
            header(headers::ORIGINAL_STREAM),
            header(headers::ORIGINAL_SUBJECT),
            header(headers::ORIGINAL_SEQ).and_then(|s| s.parse().ok()),
        ) {
            (Some(stream), Some(subject), Some(seq)) => Self {
                stream,
                subject,
                seq,
            },
            _ => Self {
                stream: stream.to_owned(),
                subject: subject.to_owned(),
                seq,
            },
        }
    }

    /// Writes the origin into `h`, where [`Origin::of`] finds it again.
    pub fn insert_into(&self, h: &mut HeaderMap) {
        h.insert(headers::ORIGINAL_SUBJECT, self.subject.as_str());
        h.insert(headers::ORIGINAL_STREAM, self.stream.as_str());
        h.insert(headers::ORIGINAL_SEQ, self.seq.to_string().as_str());
    }
}

/// A message to dead-letter.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    /// The fact the stage gave up on.
    pub origin: Origin,
    /// The message actually delivered (the origin, or its re-driven copy): the dead
    /// letter's identity.
    pub source: (&'a str, u64),
    pub consumer: &'a str,
    pub deliveries: u64,
    pub kind: DeadLetterKind,
    pub error: &'a str,
    pub payload: bytes::Bytes,
}

/// Stores a dead letter and waits for the stream's acknowledgement. Deduplicated on the
/// delivered message (stream, sequence) and consumer: a crash between this and the term
/// cannot make two, and a re-driven copy failing again makes a new one.
pub async fn publish(js: &jetstream::Context, dl: DeadLetter<'_>) -> Result<u64, String> {
    let mut h = HeaderMap::new();
    h.insert(
        "Nats-Msg-Id",
        format!("dl:{}:{}:{}", dl.source.0, dl.source.1, dl.consumer).as_str(),
    );
    dl.origin.insert_into(&mut h);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_written_into_headers_is_read_back_over_the_copy_it_travels_on() {
        let first = Origin::of(None, "PAGES", "pages.discovered.a", 7);
        let mut h = HeaderMap::new();
        first.insert_into(&mut h);
        assert_eq!(Origin::of(Some(&h), "REDRIVE", "redrive.x", 3), first);
        assert_eq!(
            Origin::of(Some(&HeaderMap::new()), "REDRIVE", "redrive.x", 3).seq,
            3,
            "without headers the message is its own origin"
        );
    }
}
