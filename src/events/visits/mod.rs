//! Events of the VISITS stream: every request the edge served or passed through.
//!
//! Visits are published in batches, one `visits.batch_recorded` per report (or per part of
//! one) on `visits.batch_recorded.<client_id>`: a visit costs one message per batch, not one
//! each. `visits.recorded` (one visit, `visits.recorded.<client_id>[.<page_id>]`) is what
//! earlier versions published and what imported history holds: it stays readable. Its
//! version 1 is the original system's `visits` row, upcast on read.

pub mod v1;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{DecodeError, EventFamily, StreamName};
use crate::domain::ids::PageId;
/// Value types a visit carries, defined in `domain`.
pub use crate::domain::visit::{FormatServed, RobotsCompliance, Verification, VisitorType};

/// Every event of the VISITS stream.
// One visit inline against a batch's vector: an event is decoded, applied and dropped one at a
// time, so the size difference costs nothing, and boxing would cost an allocation per visit.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum VisitEvent {
    /// A visit to a client's page, classified (as earlier versions published them).
    #[serde(rename = "visits.recorded")]
    Recorded(VisitRecorded),
    /// Visits to a client's pages, classified, reported together.
    #[serde(rename = "visits.batch_recorded")]
    BatchRecorded(VisitsBatch),
}

impl EventFamily for VisitEvent {
    const STREAM: StreamName = StreamName::Visits;
    const CATALOGUE: &'static [(&'static str, u32)] =
        &[("visits.recorded", 2), ("visits.batch_recorded", 1)];

    fn event_type(&self) -> &'static str {
        match self {
            Self::Recorded(_) => "visits.recorded",
            Self::BatchRecorded(_) => "visits.batch_recorded",
        }
    }

    fn upcast(event_type: &str, version: u32, data: Value) -> Result<Value, DecodeError> {
        let fail = |reason: String| DecodeError::Upcast {
            event_type: event_type.to_owned(),
            version,
            reason,
        };
        match (event_type, version) {
            ("visits.recorded", 1) => {
                let old: v1::VisitRecorded =
                    serde_json::from_value(data).map_err(|e| fail(e.to_string()))?;
                serde_json::to_value(VisitRecorded::from(old)).map_err(|e| fail(e.to_string()))
            }
            _ => Err(DecodeError::UnknownVersion {
                event_type: event_type.to_owned(),
                version,
                current: Self::current_version(event_type).unwrap_or_default(),
            }),
        }
    }
}

/// `visits.recorded` v2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisitRecorded {
    pub url: String,
    pub visitor_type: VisitorType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub verification: Verification,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
    /// HMAC-SHA256 of the client IP; the raw IP is never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_hash: Option<String>,
    pub format_served: FormatServed,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The length of the body the edge answered with, when it reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    pub visited_at: DateTime<Utc>,
    /// What the visitor was charged under the client's `charge` rule (`USD 0.01`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged_price: Option<String>,
    /// The agent whose Web Bot Auth signature verified (`https://chatgpt.com`), when
    /// `verification` is `signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_agent: Option<String>,
    /// For a named bot's visit: whether the site's robots.txt (as the scraper last read it)
    /// allows that bot the path; absent when not judged (people, unnamed bots, no file read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robots: Option<RobotsCompliance>,
}

/// `visits.batch_recorded` v1: visits of one client, in the order they were reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisitsBatch {
    pub visits: Vec<BatchedVisit>,
}

/// One visit of a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchedVisit {
    /// The visit's own id, a function of what was reported (the same id a `visits.recorded`
    /// of it would have had): the projection stores each id once, however often it comes.
    pub id: Uuid,
    /// The page the visit's URL names, whether or not the page is known.
    pub page_id: PageId,
    pub visit: VisitRecorded,
}

impl From<v1::VisitRecorded> for VisitRecorded {
    fn from(old: v1::VisitRecorded) -> Self {
        // The original system knew three visitor types; "direct" meant a person.
        let visitor_type = match old.visitor_type.as_deref() {
            Some("ai_bot") => VisitorType::AiBot,
            Some("worker_proxy") => VisitorType::WorkerProxy,
            _ if old.bot_name.is_some() => VisitorType::OtherBot,
            _ => VisitorType::Human,
        };
        let verification = if old.bot_name.is_some() {
            Verification::Claimed
        } else {
            Verification::None
        };
        Self {
            url: old.url,
            visitor_type,
            bot_name: old.bot_name,
            operator: None,
            category: None,
            verification,
            user_agent: old.user_agent,
            referrer: old.referrer,
            ip_hash: old.ip_hash,
            format_served: FormatServed::Unknown,
            status: None,
            bytes: None,
            visited_at: old.visited_at,
            charged_price: None,
            signature_agent: None,
            robots: None,
        }
    }
}
