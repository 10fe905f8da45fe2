//! A client's page events as Server-Sent Events: `GET /api/v1/clients/{id}/events/stream`.
//!
//! Each stream is an ordered consumer on the PAGES stream whose filter subject is built from
//! the client in the path (`pages.<type>.<client_id>.<page|*>`), so the server only ever reads
//! that client's subjects: nothing of another client is read and then filtered out here. Each
//! event's SSE `id` is its stream sequence; a client that reconnects with `Last-Event-ID`
//! continues right after it, so nothing is missed within the stream's retention and nothing
//! is sent twice (at-least-once across reconnects, in stream order). Comment lines keep idle
//! connections (and the proxies between) open. Each key holds a bounded number of streams at
//! once in a process; the streams end when the server shuts down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;
use uuid::Uuid;

use super::auth::Principal;
use super::extract::{ApiPath, ApiQuery};
use super::{ApiError, AppState};
use crate::commands::deadletters::to_chrono;
use crate::commands::event_log;
use crate::domain::client::Scope;
use crate::events::pages::PageEvent;
use crate::events::{EventFamily, StreamName};
use crate::projections::clients as clients_read;

/// The event type a stream carries when the request names none.
pub const DEFAULT_TYPE: &str = "pages.updated";

/// `?type=` asking for every page event.
const ALL_TYPES: &str = "all";

/// The open event streams of this process, by key.
#[derive(Debug)]
pub struct EventStreams {
    open: Mutex<HashMap<String, usize>>,
    max_per_key: usize,
    heartbeat: Duration,
    closing: CancellationToken,
}

impl EventStreams {
    /// At most `max_per_key` streams per key at once, a comment line every `heartbeat`.
    pub fn new(max_per_key: usize, heartbeat: Duration) -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
            max_per_key: max_per_key.max(1),
            heartbeat: heartbeat.max(Duration::from_millis(100)),
            closing: CancellationToken::new(),
        }
    }

    /// Ends every open stream (the server is shutting down; clients reconnect elsewhere).
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// A place for one more stream of `key`, given back when the place is dropped.
    fn admit(self: &Arc<Self>, key: String) -> Result<Place, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key.clone()).or_default();
        if *count >= self.max_per_key {
            return Err(ApiError::RateLimited {
                retry_after: Duration::from_secs(5),
            });
        }
        *count += 1;
        Ok(Place {
            streams: Arc::clone(self),
            key,
        })
    }
}

/// One open stream's place in [`EventStreams`].
struct Place {
    streams: Arc<EventStreams>,
    key: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Which events, from where.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// A page event type (`pages.updated`, the default; `pages.scrape_failed`, ...), or `all`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// Only this page's events.
    pub page: Option<Uuid>,
    /// Start right after this stream sequence (an event's `id`). `Last-Event-ID` wins.
    pub after: Option<u64>,
    /// Start with the events stored at or after this time (RFC 3339).
    pub since: Option<String>,
}

/// Where a stream starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    /// Events stored from now on.
    Now,
    /// Right after this stream sequence.
    After(u64),
    /// At this time.
    Since(DateTime<Utc>),
}

impl Start {
    fn of(q: &StreamQuery, headers: &HeaderMap) -> Result<Self, ApiError> {
        let invalid = |message: String| ApiError::InvalidQuery { message };
        if let Some(last) = headers.get("last-event-id") {
            let last = last
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    invalid("Last-Event-ID must be an event's id (a stream sequence)".into())
                })?;
            return Ok(Self::After(last));
        }
        match (q.after, q.since.as_deref()) {
            (Some(_), Some(_)) => Err(invalid("give `after` or `since`, not both".into())),
            (Some(after), None) => Ok(Self::After(after)),
            (None, Some(since)) => DateTime::parse_from_rfc3339(since)
                .map(|t| Self::Since(t.with_timezone(&Utc)))
                .map_err(|e| invalid(format!("since {since:?}: not an RFC 3339 time ({e})"))),
            (None, None) => Ok(Self::Now),
        }
    }

    fn deliver_policy(self) -> Result<DeliverPolicy, ApiError> {
        Ok(match self {
            Self::Now => DeliverPolicy::New,
            Self::After(seq) => DeliverPolicy::ByStartSequence {
                start_sequence: seq.saturating_add(1),
            },
            Self::Since(t) => DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
                    t.timestamp_nanos_opt().unwrap_or(i64::MAX),
                ))
                .map_err(|e| ApiError::InvalidQuery {
                    message: format!("since: {e}"),
                })?,
            },
        })
    }
}

/// The filter subject of a client's stream: only that client's subjects, one type (or all)
/// and one page (or all).
fn filter_subject(
    event_type: Option<&str>,
    client: Uuid,
    page: Option<Uuid>,
) -> Result<String, ApiError> {
    let event_type = event_type.unwrap_or(DEFAULT_TYPE);
    let type_part = if event_type == ALL_TYPES {
        "pages.*"
    } else if PageEvent::CATALOGUE.iter().any(|(t, _)| *t == event_type) {
        event_type
    } else {
        let known: Vec<&str> = PageEvent::CATALOGUE.iter().map(|(t, _)| *t).collect();
        return Err(ApiError::InvalidQuery {
            message: format!(
                "type {event_type:?}: expected `all` or a page event type ({})",
                known.join(", ")
            ),
        });
    };
    Ok(match page {
        Some(page) => format!("{type_part}.{client}.{page}"),
        None => format!("{type_part}.{client}.>"),
    })
}

fn key_of(principal: &Principal) -> String {
    match principal {
        Principal::Master => "master".into(),
        Principal::Client { key_id, .. } => key_id.to_string(),
    }
}

#[utoipa::path(get, path = "/api/v1/clients/{id}/events/stream", tag = "pages",
    params(("id" = Uuid, Path), StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume right after this event id (sent by SSE clients when they reconnect)")),
    responses(
        (status = 200, description = "Server-Sent Events: `id` the stream sequence, `event` the type, `data` the stored event as JSON (seq, stored_at, subject, type, summary, event); comment lines as heartbeats", content_type = "text/event-stream"),
        (status = 400), (status = 403), (status = 404),
        (status = 429, description = "rate_limited: the key holds its most event streams at once"),
        (status = 503)),
    security(("api_key" = [])))]
/// A client's page events as they are stored, as Server-Sent Events (master key, or the
/// client's `read` key): `pages.updated` unless `type` says otherwise, from now, from `after`
/// a sequence or `since` a time, or right after `Last-Event-ID` when a client reconnects.
pub async fn stream(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    principal.require(client, Scope::Read)?;
    let subject = filter_subject(q.event_type.as_deref(), client, q.page)?;
    let deliver_policy = Start::of(&q, &headers)?.deliver_policy()?;
    clients_read::find(&state.db, client)
        .await?
        .ok_or_else(|| ApiError::NotFound("client not found".into()))?;
    let streams = Arc::clone(&state.event_streams);
    let place = streams.admit(key_of(&principal))?;
    let messages = open(&state.nats.js, subject, deliver_policy)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot open an event stream");
            ApiError::Unavailable("event store unavailable, retry".into())
        })?;
    let events = sse_events(messages, place).take_until(streams.closing.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(streams.heartbeat)
            .text("heartbeat"),
    ))
}

/// An ordered consumer on PAGES for `subject`, from `deliver_policy`.
async fn open(
    js: &async_nats::jetstream::Context,
    subject: String,
    deliver_policy: DeliverPolicy,
) -> Result<consumer::pull::Ordered, String> {
    js.get_stream(StreamName::Pages.name())
        .await
        .map_err(|e| e.to_string())?
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: subject,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?
        .messages()
        .await
        .map_err(|e| e.to_string())
}

/// The consumer's messages as SSE events, holding `place` as long as the stream lives.
fn sse_events(
    messages: consumer::pull::Ordered,
    place: Place,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    messages
        .filter_map(move |message| {
            // The place is given back when the stream (and this closure) is dropped.
            let _place = &place;
            std::future::ready(match message {
                Ok(message) => to_sse(&message),
                Err(e) => {
                    // The ordered consumer recreates itself after a reconnect or a gap.
                    tracing::debug!(error = %e, "event stream: consumer error");
                    None
                }
            })
        })
        .map(Ok)
}

/// One stored event as an SSE event: `id` its stream sequence, `event` its type.
fn to_sse(message: &async_nats::jetstream::Message) -> Option<SseEvent> {
    let info = message.info().ok()?;
    let stored = event_log::stored(
        info.stream_sequence,
        to_chrono(info.published.unix_timestamp_nanos()),
        message.subject.as_str(),
        &message.payload,
    );
    SseEvent::default()
        .id(stored.seq.to_string())
        .event(stored.event_type.clone())
        .json_data(&stored)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: Uuid = Uuid::from_u128(0x1111_1111_1111_4111_8111_1111_1111_1111);

    #[test]
    fn a_stream_reads_only_its_clients_subjects() {
        assert_eq!(
            filter_subject(None, CLIENT, None).expect("default"),
            format!("pages.updated.{CLIENT}.>")
        );
        let page = Uuid::from_u128(7);
        assert_eq!(
            filter_subject(Some("all"), CLIENT, Some(page)).expect("all"),
            format!("pages.*.{CLIENT}.{page}")
        );
        for hostile in ["*", ">", "pages.>", "pages.updated.*", "updated", ""] {
            assert!(
                filter_subject(Some(hostile), CLIENT, None).is_err(),
                "{hostile:?} must be refused"
            );
        }
    }

    #[test]
    fn last_event_id_wins_and_bad_starts_are_refused() {
        let q = |after: Option<u64>, since: Option<&str>| StreamQuery {
            event_type: None,
            page: None,
            after,
            since: since.map(str::to_owned),
        };
        let mut resumed = HeaderMap::new();
        resumed.insert("last-event-id", "42".parse().expect("header"));
        assert_eq!(
            Start::of(&q(Some(7), None), &resumed).expect("resume"),
            Start::After(42)
        );
        let none = HeaderMap::new();
        assert_eq!(Start::of(&q(None, None), &none).expect("now"), Start::Now);
        assert!(Start::of(&q(Some(1), Some("2026-01-01T00:00:00Z")), &none).is_err());
        assert!(Start::of(&q(None, Some("yesterday")), &none).is_err());
        let mut bad = HeaderMap::new();
        bad.insert("last-event-id", "abc".parse().expect("header"));
        assert!(Start::of(&q(None, None), &bad).is_err());
        assert_eq!(
            Start::After(u64::MAX).deliver_policy().ok(),
            Some(DeliverPolicy::ByStartSequence {
                start_sequence: u64::MAX
            })
        );
    }

    #[test]
    fn a_key_holds_a_bounded_number_of_streams_and_gets_them_back() {
        let streams = Arc::new(EventStreams::new(2, Duration::from_secs(15)));
        let first = streams.admit("k".into()).expect("first");
        let _second = streams.admit("k".into()).expect("second");
        assert!(streams.admit("k".into()).is_err(), "a third is refused");
        assert!(streams.admit("other".into()).is_ok(), "other keys are not");
        drop(first);
        assert!(
            streams.admit("k".into()).is_ok(),
            "a closed stream's place is free"
        );
    }
}
