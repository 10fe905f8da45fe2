//! The envelope every event travels in, and its encoding on the wire.
//!
//! On the wire an event is one JSON object:
//! `{id, type, version, occurred_at, client_id, page_id?, correlation_id, causation_id?, data}`.
//! `type` is the stable name (`pages.discovered`), `version` the schema version of `data`.
//! Decoding upcasts older versions to the current one, so consumers only ever see the
//! current shape. Nothing here does IO.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::StreamName;
use crate::domain::ids::{ClientId, PageId};

/// Namespace for event ids derived from a deduplication key.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a1c_ac4e_0000_4000_8000_6576_656e_7473);

/// Why bytes could not be turned into an event. Always permanent: retrying cannot help.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed event json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("event {event_type:?} version {version} is not known (current is {current})")]
    UnknownVersion {
        event_type: String,
        version: u32,
        current: u32,
    },
    #[error("event {event_type:?} does not belong on stream {stream}")]
    WrongStream {
        event_type: String,
        stream: &'static str,
    },
    #[error("upcasting {event_type:?} from version {version} failed: {reason}")]
    Upcast {
        event_type: String,
        version: u32,
        reason: String,
    },
}

/// One family of events: all the event types of one stream, as a serde enum tagged
/// `{"type": ..., "data": ...}`.
pub trait EventFamily:
    Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Send + Sync
{
    /// The stream these events live on.
    const STREAM: StreamName;
    /// Every event type of the family with its current schema version.
    const CATALOGUE: &'static [(&'static str, u32)];

    /// The stable type name of this event, e.g. `pages.discovered`.
    fn event_type(&self) -> &'static str;

    /// Turns `data` of `event_type` at an older `version` into the current version.
    /// The default knows no older versions.
    fn upcast(event_type: &str, version: u32, data: Value) -> Result<Value, DecodeError> {
        let _ = data;
        Err(DecodeError::UnknownVersion {
            event_type: event_type.to_owned(),
            version,
            current: Self::current_version(event_type).unwrap_or_default(),
        })
    }

    /// The current schema version of `event_type`, if the family has that type.
    fn current_version(event_type: &str) -> Option<u32> {
        Self::CATALOGUE
            .iter()
            .find(|(name, _)| *name == event_type)
            .map(|(_, v)| *v)
    }
}

/// Who, what and when of an event; everything but the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub client_id: ClientId,
    pub page_id: Option<PageId>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
}

/// A decoded event of family `E`, always in its current version.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<E> {
    pub meta: Meta,
    pub payload: E,
}

/// The envelope as it is on the wire, its payload still raw JSON (borrowed from the bytes it
/// was read from, or from the payload's own encoding): events go to and from the wire without
/// an intermediate `serde_json::Value` tree, which cost a map and a string per field of every
/// event (a batch of a thousand visits is most of a projection's decoding).
#[derive(Debug, Serialize, Deserialize)]
struct WireEnvelope<'a> {
    id: Uuid,
    #[serde(rename = "type", borrow)]
    event_type: std::borrow::Cow<'a, str>,
    version: u32,
    #[serde(borrow)]
    occurred_at: std::borrow::Cow<'a, str>,
    client_id: ClientId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_id: Option<PageId>,
    correlation_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    causation_id: Option<Uuid>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// A family's own encoding of one event: `{"type": ..., "data": ...}`.
#[derive(Deserialize)]
struct Tagged<'a> {
    #[serde(rename = "type", borrow)]
    event_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

impl<E: EventFamily> Event<E> {
    /// A new event starting a new correlation (a command from outside: API, CLI, scheduler).
    pub fn new(client_id: ClientId, page_id: Option<PageId>, payload: E) -> Self {
        let id = Uuid::now_v7();
        Self {
            meta: Meta {
                id,
                occurred_at: now(),
                client_id,
                page_id,
                correlation_id: id,
                causation_id: None,
            },
            payload,
        }
    }

    /// A new event caused by `cause`: same client, page and correlation.
    pub fn caused_by<C>(cause: &Event<C>, payload: E) -> Self {
        Self {
            meta: Meta {
                id: Uuid::now_v7(),
                occurred_at: now(),
                client_id: cause.meta.client_id,
                page_id: cause.meta.page_id,
                correlation_id: cause.meta.correlation_id,
                causation_id: Some(cause.meta.id),
            },
            payload,
        }
    }

    /// Makes the event id a function of `dedup_key`, the key it is published under
    /// (`Nats-Msg-Id`): a step that runs twice then produces the very same event.
    pub fn with_dedup_key(mut self, dedup_key: &str) -> Self {
        self.meta.id = id_for_key(dedup_key);
        if self.meta.causation_id.is_none() {
            self.meta.correlation_id = self.meta.id;
        }
        self
    }

    /// The stable type name of the payload.
    pub fn event_type(&self) -> &'static str {
        self.payload.event_type()
    }

    /// The subject the event is published on: `<type>.<client_id>[.<page_id>]`,
    /// e.g. `pages.content_changed.<client_id>.<page_id>`.
    pub fn subject(&self) -> String {
        super::subjects::event_subject(self.event_type(), self.meta.client_id, self.meta.page_id)
    }

    /// Encodes the event as its wire JSON, at the current schema version.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let tagged = serde_json::to_vec(&self.payload)?;
        let Tagged { event_type, data } = serde_json::from_slice(&tagged)?;
        let version = E::current_version(&event_type).unwrap_or(1);
        let wire = WireEnvelope {
            id: self.meta.id,
            event_type,
            version,
            occurred_at: self
                .meta
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::Micros, true)
                .into(),
            client_id: self.meta.client_id,
            page_id: self.meta.page_id,
            correlation_id: self.meta.correlation_id,
            causation_id: self.meta.causation_id,
            data,
        };
        serde_json::to_vec(&wire)
    }

    /// Decodes wire JSON, upcasting an older schema version to the current one.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        let wire: WireEnvelope<'_> = serde_json::from_slice(bytes)?;
        let current = E::current_version(&wire.event_type).ok_or_else(|| {
            if wire.event_type.split('.').next() == Some(E::STREAM.subject_prefix()) {
                DecodeError::UnknownType(wire.event_type.to_string())
            } else {
                DecodeError::WrongStream {
                    event_type: wire.event_type.to_string(),
                    stream: E::STREAM.name(),
                }
            }
        })?;
        let upcast;
        let data = if wire.version == current {
            wire.data.get()
        } else if wire.version < current && wire.version > 0 {
            let old: Value = serde_json::from_str(wire.data.get())?;
            upcast = E::upcast(&wire.event_type, wire.version, old)?.to_string();
            upcast.as_str()
        } else {
            return Err(DecodeError::UnknownVersion {
                event_type: wire.event_type.to_string(),
                version: wire.version,
                current,
            });
        };
        let occurred_at = DateTime::parse_from_rfc3339(&wire.occurred_at)
            .map_err(|e| DecodeError::Upcast {
                event_type: wire.event_type.to_string(),
                version: wire.version,
                reason: format!("occurred_at: {e}"),
            })?
            .with_timezone(&Utc);
        // The family's own encoding, `{"type": ..., "data": ...}`, put together from the
        // raw parts (the type first, so the payload is read in one pass).
        let mut tagged = Vec::with_capacity(data.len() + wire.event_type.len() + 24);
        tagged.extend_from_slice(b"{\"type\":");
        serde_json::to_writer(&mut tagged, &wire.event_type)?;
        tagged.extend_from_slice(b",\"data\":");
        tagged.extend_from_slice(data.as_bytes());
        tagged.push(b'}');
        let payload = serde_json::from_slice(&tagged)?;
        Ok(Self {
            meta: Meta {
                id: wire.id,
                occurred_at,
                client_id: wire.client_id,
                page_id: wire.page_id,
                correlation_id: wire.correlation_id,
                causation_id: wire.causation_id,
            },
            payload,
        })
    }
}

/// The id of what is published under `dedup_key`: a function of the key, so a step that runs
/// again names its output the same way.
pub fn id_for_key(dedup_key: &str) -> Uuid {
    Uuid::new_v5(&EVENT_ID_NAMESPACE, dedup_key.as_bytes())
}

/// Current time truncated to microseconds, the precision events (and Postgres) keep, so
/// an event decodes to exactly what was encoded.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}
