//! Webhooks: what a target may be, which events it may ask for, and the signature.
//!
//! Each delivery is signed with HMAC-SHA256 under the webhook's secret over
//! `"<timestamp>.<body>"`, where `<timestamp>` is the `X-AiCache-Timestamp` header (Unix
//! seconds) and `<body>` the exact request body; the hex digest is sent as
//! `X-AiCache-Signature: v1=<hex>`. Receivers recompute it, compare in constant time, and
//! refuse timestamps too far from their clock (replays).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use url::Url;

use super::client::FieldError;

/// Webhooks a client may have.
pub const MAX_PER_CLIENT: usize = 20;

/// Longest webhook URL.
const MAX_URL_LEN: usize = 2048;

/// The header names of a delivery.
pub mod headers {
    pub const WEBHOOK_ID: &str = "x-aicache-webhook-id";
    pub const EVENT_ID: &str = "x-aicache-event-id";
    pub const EVENT_TYPE: &str = "x-aicache-event-type";
    pub const TIMESTAMP: &str = "x-aicache-timestamp";
    pub const SIGNATURE: &str = "x-aicache-signature";
}

/// The `X-AiCache-Signature` value of `body` sent at `timestamp` under `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a webhook target's form: http(s), no credentials, a host, at most 2048 bytes.
/// Whether the host may be reached (public addresses only, unless private networks are
/// allowed) is the caller's check: it needs DNS (`infra::http::resolve_guarded`),
/// and the delivery client checks the addresses again on every connection.
pub fn parse_target(url: &str) -> Result<Url, FieldError> {
    let invalid = |message: &str| FieldError::new("url", message);
    if url.len() > MAX_URL_LEN {
        return Err(invalid("at most 2048 bytes"));
    }
    let parsed = Url::parse(url.trim()).map_err(|e| invalid(&format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("must be http or https"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("must not carry credentials"));
    }
    if parsed.host_str().is_none() {
        return Err(invalid("has no host"));
    }
    Ok(parsed)
}

/// Checks the event types a webhook asks for against `page_events` (the page events'
/// catalogue): page events only, `pages.updated` by default.
pub fn validate_events(
    events: Vec<String>,
    page_events: &[(&str, u32)],
) -> Result<Vec<String>, FieldError> {
    if events.is_empty() {
        return Ok(vec!["pages.updated".to_owned()]);
    }
    let mut out: Vec<String> = Vec::new();
    for event in events {
        if !page_events.iter().any(|(known, _)| *known == event) {
            return Err(FieldError::new(
                "events",
                format!("{event:?} is not a page event type (e.g. pages.updated)"),
            ));
        }
        if !out.contains(&event) {
            out.push(event);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_targets_are_refused() {
        for url in [
            "ftp://93.184.215.14/x",
            "https://user:pw@93.184.215.14/",
            "not a url",
        ] {
            assert!(parse_target(url).is_err(), "{url}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert!(parse_target(&long).is_err());
        assert!(parse_target("https://93.184.215.14/hook").is_ok());
    }

    const PAGE_EVENTS: &[(&str, u32)] = &[("pages.updated", 1), ("pages.removed", 1)];

    #[test]
    fn only_page_events_and_pages_updated_by_default() {
        assert_eq!(
            validate_events(vec![], PAGE_EVENTS).expect("default"),
            ["pages.updated"]
        );
        assert_eq!(
            validate_events(
                vec!["pages.removed".into(), "pages.removed".into()],
                PAGE_EVENTS
            )
            .expect("valid"),
            ["pages.removed"]
        );
        assert!(validate_events(vec!["clients.registered".into()], PAGE_EVENTS).is_err());
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Python: hmac.new(b"whsec_test", b"1700000000.{\"a\":1}", hashlib.sha256).hexdigest()
        assert_eq!(
            sign(b"whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }
}
