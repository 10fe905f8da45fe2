//! The event log, read straight from the streams (the source of truth, never a projection):
//! a page's events in order, and a one-line reading of any event for people.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::deadletters::to_chrono;
use crate::domain::ids::{ClientId, PageId};
use crate::events::pages::{GeneratorKind, PageEvent, UnchangedReason};
use crate::events::{ClientEvent, Event, EventFamily, StreamName, VisitEvent};
use crate::infra::nats::page_by_subject;

/// One stored event.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StoredEvent {
    /// Its sequence on the stream.
    pub seq: u64,
    /// When the stream stored it.
    pub stored_at: DateTime<Utc>,
    pub subject: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// One line for people: the event's key fields.
    pub summary: String,
    /// The event as on the wire (envelope and data).
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

/// One page of a page's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    pub items: Vec<StoredEvent>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// Reading history failed.
#[derive(Debug, thiserror::Error)]
#[error("reading the stream: {0}")]
pub struct HistoryError(pub String);

/// Up to `limit` events of the page after stream sequence `after`, oldest first.
pub async fn page_events(
    js: &jetstream::Context,
    client: ClientId,
    page: PageId,
    after: u64,
    limit: usize,
) -> Result<HistoryPage, HistoryError> {
    let stream = js
        .get_stream(StreamName::Pages.name())
        .await
        .map_err(|e| HistoryError(e.to_string()))?;
    let subject = format!("pages.*.{client}.{page}");
    let (items, next_after) = page_by_subject(&stream, &subject, after, limit, |msg| {
        Some(stored(
            msg.sequence,
            to_chrono(msg.time.unix_timestamp_nanos()),
            msg.subject.as_str(),
            &msg.payload,
        ))
    })
    .await
    .map_err(HistoryError)?;
    Ok(HistoryPage { items, next_after })
}

/// Reads one stored message as an event of whichever stream it is on.
pub fn stored(seq: u64, stored_at: DateTime<Utc>, subject: &str, payload: &[u8]) -> StoredEvent {
    let event: serde_json::Value = serde_json::from_slice(payload)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(payload).into()));
    let event_type = event
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("?")
        .to_owned();
    StoredEvent {
        seq,
        stored_at,
        subject: subject.to_owned(),
        summary: summary(subject, payload),
        event_type,
        event,
    }
}

/// The key fields of an event on one line (no secrets: client events show names only).
pub fn summary(subject: &str, payload: &[u8]) -> String {
    let decoded = match subject.split('.').next() {
        Some("pages") => Event::<PageEvent>::from_json(payload).map(|e| page_summary(&e.payload)),
        Some("clients") => {
            Event::<ClientEvent>::from_json(payload).map(|e| client_summary(&e.payload))
        }
        Some("visits") => Event::<VisitEvent>::from_json(payload).map(|e| match e.payload {
            VisitEvent::Recorded(v) => format!(
                "{} {} as {:?}{}",
                v.url,
                v.bot_name.as_deref().unwrap_or("unknown visitor"),
                v.format_served,
                v.status.map(|s| format!(", {s}")).unwrap_or_default()
            ),
            VisitEvent::BatchRecorded(b) => match b.visits.as_slice() {
                [only] => format!("1 visit: {}", only.visit.url),
                [first, ..] => format!("{} visits, first {}", b.visits.len(), first.visit.url),
                [] => "no visits".into(),
            },
        }),
        _ => return String::new(),
    };
    decoded.unwrap_or_else(|e| format!("undecodable: {e}"))
}

fn short(hash: &impl std::fmt::Display) -> String {
    hash.to_string().chars().take(12).collect()
}

fn page_summary(event: &PageEvent) -> String {
    match event {
        PageEvent::Discovered(d) => format!("{} from {:?}", d.url, d.source).to_lowercase(),
        PageEvent::MetadataUpdated(m) => format!(
            "lastmod {}, changefreq {}",
            m.lastmod.as_deref().unwrap_or("-"),
            m.changefreq.as_deref().unwrap_or("-")
        ),
        PageEvent::RefreshRequested(r) => {
            let run = r
                .reprocess
                .as_ref()
                .map(|p| format!(" (run {})", p.run_id))
                .unwrap_or_default();
            format!("reason {:?}{run}", r.reason).to_lowercase()
        }
        PageEvent::RenderRequested(r) => format!(
            "HTTP {}, {} bytes: needs a browser ({})",
            r.http_status,
            r.raw.size,
            r.reason.describe()
        ),
        PageEvent::RenderedJs(r) => format!(
            "rendered in {} ms{}, {} requests ({} refused), {} bytes, fingerprint {}",
            r.duration_ms,
            if r.settled {
                ""
            } else {
                " (did not settle: cut at the time budget)"
            },
            r.requests,
            r.refused,
            r.rendered.size,
            short(&r.fingerprint)
        ),
        PageEvent::Scraped(s) => format!(
            "HTTP {}, {} bytes in {} ms, fingerprint {}",
            s.http_status,
            s.raw.size,
            s.duration_ms,
            short(&s.fingerprint)
        ),
        PageEvent::Unchanged(u) => {
            let why = match u.reason {
                UnchangedReason::NotModified => "not modified",
                UnchangedReason::SameFingerprint => "same main content",
            };
            format!("unchanged: {why} (HTTP {})", u.http_status)
        }
        PageEvent::ScrapeFailed(f) => format!(
            "{} failure on attempt {}: {}",
            wire(&f.failure),
            f.attempt,
            f.message
        ),
        PageEvent::Removed(r) => format!(
            "{}{}",
            r.reason,
            r.http_status
                .map(|s| format!(" (HTTP {s})"))
                .unwrap_or_default()
        ),
        PageEvent::ContentChanged(c) => format!(
            "version {}, fingerprint {}{}",
            c.page_version,
            short(&c.fingerprint),
            reprocess_note(c.reprocess.as_ref())
        ),
        PageEvent::MarkdownGenerated(m) => format!(
            "{} bytes generated {} ({}){}{}{}",
            m.markdown.size,
            match m.generator {
                GeneratorKind::Local => "locally",
                GeneratorKind::Gemini => "by Gemini",
            },
            m.generator_version,
            m.fallback_reason
                .as_deref()
                .map(|r| format!(", fell back: {r}"))
                .unwrap_or_default(),
            m.tokens
                .map(|t| format!(", {} tokens", t.total))
                .unwrap_or_default(),
            reprocess_note(m.reprocess.as_ref())
        ),
        PageEvent::HtmlRendered(h) => format!(
            "{} bytes by renderer {}{}",
            h.html.size,
            h.renderer_version,
            reprocess_note(h.reprocess.as_ref())
        ),
        PageEvent::KvUploaded(k) => format!("{:?} key {}", k.store, k.kv_key).to_lowercase(),
        PageEvent::Updated(u) => format!(
            "version {}, markdown {}, html {}",
            u.page_version,
            short(&u.markdown_hash),
            short(&u.html_hash)
        ),
        PageEvent::Reprocessed(r) => format!(
            "run {} from {}: {}",
            r.run_id,
            r.from_stage.as_str(),
            r.outcome.as_str()
        ),
    }
}

/// A value as it is spelled on the wire (`transient`, `robots_disallowed`, ...).
fn wire(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s.replace('_', " "),
        _ => "unknown".into(),
    }
}

fn reprocess_note(reprocess: Option<&crate::events::pages::Reprocess>) -> String {
    reprocess
        .map(|r| format!(" (reprocessing, run {})", r.run_id))
        .unwrap_or_default()
}

fn client_summary(event: &ClientEvent) -> String {
    match event {
        ClientEvent::Registered(c) => format!("{} ({})", c.name, c.domain),
        ClientEvent::Updated(_) => "settings or credentials changed".to_owned(),
        ClientEvent::Deleted(_) => "deleted".to_owned(),
        ClientEvent::KeyCreated(_) => "API key created".to_owned(),
        ClientEvent::KeyRevoked(_) => "API key revoked".to_owned(),
        ClientEvent::WebhookAdded(w) => format!("webhook {} for {}", w.url, w.events.join(", ")),
        ClientEvent::WebhookRemoved(w) => format!("webhook {} removed", w.webhook_id),
        ClientEvent::ReprocessRequested(r) => format!(
            "reprocess run {} from {}{}{}",
            r.run_id,
            r.from_stage.as_str(),
            r.url_prefix
                .as_deref()
                .map(|p| format!(", URLs starting {p}"))
                .unwrap_or_default(),
            if r.force { ", forced" } else { "" }
        ),
    }
}

/// Whether `event_type` names an event of any stream.
pub fn known_type(event_type: &str) -> bool {
    [
        PageEvent::CATALOGUE,
        ClientEvent::CATALOGUE,
        VisitEvent::CATALOGUE,
    ]
    .iter()
    .any(|c| c.iter().any(|(name, _)| *name == event_type))
}

/// Every event type, for error messages.
pub fn all_types() -> Vec<&'static str> {
    [
        PageEvent::CATALOGUE,
        ClientEvent::CATALOGUE,
        VisitEvent::CATALOGUE,
    ]
    .iter()
    .flat_map(|c| c.iter().map(|(name, _)| *name))
    .collect()
}

/// The client and page a subject names (`<stream>.<event>.<client>[.<page>]`).
pub fn subject_ids(subject: &str) -> (Option<Uuid>, Option<Uuid>) {
    let mut tokens = subject.split('.').skip(2);
    (
        tokens.next().and_then(|t| t.parse().ok()),
        tokens.next().and_then(|t| t.parse().ok()),
    )
}

#[cfg(test)]
mod tests {
    use super::summary;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/events")
            .join(name);
        std::fs::read(path).expect("fixture")
    }

    #[test]
    fn summaries_read_as_sentences_not_as_debug_output() {
        let unchanged = summary("pages.unchanged.c.p", &fixture("pages.unchanged.v1.json"));
        assert!(unchanged.starts_with("unchanged: "), "{unchanged}");
        assert!(!unchanged.contains("Fingerprint") && !unchanged.contains("NotModified"));
        let generated = summary(
            "pages.markdown_generated.c.p",
            &fixture("pages.markdown_generated.v2.json"),
        );
        assert!(
            generated.contains("generated locally (")
                || generated.contains("generated by Gemini ("),
            "{generated}"
        );
        let failed = summary(
            "pages.scrape_failed.c.p",
            &fixture("pages.scrape_failed.v1.json"),
        );
        assert!(failed.contains(" failure on attempt "), "{failed}");
        assert!(
            failed.chars().next().is_some_and(char::is_lowercase),
            "{failed}"
        );
    }
}
