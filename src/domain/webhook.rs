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
use crate::events::EventFamily;
use crate::events::pages::PageEvent;

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

/// Checks a webhook target: http(s), no credentials, and (unless private networks are
/// allowed) a host that resolves only to public addresses, like the scraper's rule. The
/// delivery client checks the addresses again on every connection (DNS can change).
pub async fn validate_target(url: &str, allow_private: bool) -> Result<String, FieldError> {
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
    let host = parsed
        .host_str()
        .ok_or_else(|| invalid("has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if !allow_private {
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| invalid(&format!("the host does not resolve: {e}")))?
            .collect();
        if addrs.is_empty() || addrs.iter().any(|a| !super::netaddr::is_public(a.ip())) {
            return Err(invalid(
                "the host resolves to a private, loopback or link-local address",
            ));
        }
    }
    Ok(parsed.to_string())
}

/// Checks the event types a webhook asks for: page events only, `pages.updated` by default.
pub fn validate_events(events: Vec<String>) -> Result<Vec<String>, FieldError> {
    if events.is_empty() {
        return Ok(vec!["pages.updated".to_owned()]);
    }
    let mut out: Vec<String> = Vec::new();
    for event in events {
        if PageEvent::current_version(&event).is_none() {
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

    #[tokio::test]
    async fn private_and_odd_targets_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/hook",
            "http://10.1.2.3/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost/hook",
        ] {
            assert!(validate_target(url, false).await.is_err(), "{url}");
            assert!(validate_target(url, true).await.is_ok(), "{url}");
        }
        for url in [
            "ftp://93.184.215.14/x",
            "https://user:pw@93.184.215.14/",
            "not a url",
        ] {
            assert!(validate_target(url, true).await.is_err(), "{url}");
        }
        assert!(
            validate_target("https://93.184.215.14/hook", false)
                .await
                .is_ok()
        );
    }

    #[test]
    fn only_page_events_and_pages_updated_by_default() {
        assert_eq!(validate_events(vec![]).expect("default"), ["pages.updated"]);
        assert_eq!(
            validate_events(vec!["pages.removed".into(), "pages.removed".into()]).expect("valid"),
            ["pages.removed"]
        );
        assert!(validate_events(vec!["clients.registered".into()]).is_err());
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
