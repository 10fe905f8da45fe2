//! A thin client of the Cloudflare Workers KV REST API (bulk write, bulk delete).
//!
//! Written on reqwest rather than the `cloudflare` crate: its bulk-write result keeps the
//! success count in an `i8` (any write of more than 127 keys fails to decode although
//! Cloudflare applied it), its bulk pairs cannot carry metadata, and its bulk delete uses the
//! legacy route (see STACK-NOTES). The wire format followed here is Cloudflare's v4 API:
//! `PUT /accounts/{account}/storage/kv/namespaces/{ns}/bulk` and `POST .../bulk/delete`, bearer
//! token, envelope `{success, errors, messages, result}`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::secrets::Secret;

/// Cloudflare's limits.
pub const MAX_KEY_BYTES: usize = 512;
pub const MAX_VALUE_BYTES: usize = 25 * 1024 * 1024;
pub const MAX_METADATA_BYTES: usize = 1024;
pub const MAX_PAIRS_PER_REQUEST: usize = 10_000;
/// Cloudflare takes requests under 100 MB; we stay well under it.
pub const MAX_REQUEST_BYTES: usize = 90 * 1024 * 1024;

/// Where a client's pages go.
#[derive(Clone, Debug)]
pub struct KvTarget {
    pub account_id: String,
    pub namespace_id: String,
    pub token: Secret,
}

/// One key to write.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pair {
    pub key: String,
    pub value: String,
    pub metadata: Value,
}

/// A KV call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KvError {
    #[error("cloudflare rate limit: retry after {0:?}")]
    RateLimited(Duration),
    #[error("cloudflare refused the credentials: {0}")]
    Unauthorized(String),
    #[error("cloudflare rejected the request: {0}")]
    Rejected(String),
    #[error("cloudflare unavailable: {0}")]
    Unavailable(String),
}

impl KvError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited(_) | Self::Unavailable(_))
    }
}

#[derive(Deserialize)]
struct Envelope {
    success: bool,
    #[serde(default)]
    errors: Vec<Value>,
    #[serde(default)]
    result: Option<BulkResult>,
}

/// What a bulk call did.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct BulkResult {
    #[serde(default)]
    pub successful_key_count: u64,
    #[serde(default)]
    pub unsuccessful_keys: Vec<String>,
}

/// Checks a pair against Cloudflare's limits before anything is sent.
pub fn check(pair: &Pair) -> Result<(), KvError> {
    if pair.key.len() > MAX_KEY_BYTES {
        return Err(KvError::Rejected(format!(
            "key of {} bytes is over {MAX_KEY_BYTES}",
            pair.key.len()
        )));
    }
    if pair.value.len() > MAX_VALUE_BYTES {
        return Err(KvError::Rejected(format!(
            "value of {} bytes is over {MAX_VALUE_BYTES}",
            pair.value.len()
        )));
    }
    let metadata = serde_json::to_string(&pair.metadata).map_or(usize::MAX, |m| m.len());
    if metadata > MAX_METADATA_BYTES {
        return Err(KvError::Rejected(format!(
            "metadata of {metadata} bytes is over {MAX_METADATA_BYTES}"
        )));
    }
    Ok(())
}

/// Splits pairs into requests within the pair-count and size limits.
pub fn chunks(pairs: &[Pair]) -> Vec<&[Pair]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, p) in pairs.iter().enumerate() {
        let size = p.key.len() + p.value.len() + 256;
        if i > start && (i - start >= MAX_PAIRS_PER_REQUEST || bytes + size > MAX_REQUEST_BYTES) {
            out.push(&pairs[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < pairs.len() {
        out.push(&pairs[start..]);
    }
    out
}

/// The client.
#[derive(Clone, Debug)]
pub struct KvClient {
    http: reqwest::Client,
    base: String,
}

impl KvClient {
    /// `base` is the API root (`https://api.cloudflare.com/client/v4`, or a test server's).
    pub fn new(base: &str, timeout: Duration) -> Result<Self, KvError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| KvError::Unavailable(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    fn url(&self, t: &KvTarget, tail: &str) -> String {
        format!(
            "{}/accounts/{}/storage/kv/namespaces/{}/{tail}",
            self.base, t.account_id, t.namespace_id
        )
    }

    /// Writes pairs (one request: call with a chunk from [`chunks`]).
    pub async fn bulk_write(
        &self,
        target: &KvTarget,
        pairs: &[Pair],
    ) -> Result<BulkResult, KvError> {
        let req = self
            .http
            .put(self.url(target, "bulk"))
            .bearer_auth(target.token.expose())
            .json(pairs);
        self.call(req).await
    }

    /// Deletes keys (one request, at most 10,000 keys).
    pub async fn bulk_delete(
        &self,
        target: &KvTarget,
        keys: &[String],
    ) -> Result<BulkResult, KvError> {
        let req = self
            .http
            .post(self.url(target, "bulk/delete"))
            .bearer_auth(target.token.expose())
            .json(keys);
        self.call(req).await
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<BulkResult, KvError> {
        let res = req
            .send()
            .await
            .map_err(|e| KvError::Unavailable(e.to_string()))?;
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = res
            .text()
            .await
            .map_err(|e| KvError::Unavailable(e.to_string()))?;
        let envelope: Option<Envelope> = serde_json::from_str(&body).ok();
        let errors = envelope
            .as_ref()
            .map(|e| serde_json::to_string(&e.errors).unwrap_or_default())
            .unwrap_or_else(|| body.chars().take(300).collect());
        match status {
            429 => Err(KvError::RateLimited(
                retry_after.unwrap_or(Duration::from_secs(60)),
            )),
            401 | 403 => Err(KvError::Unauthorized(errors)),
            500..=599 => Err(KvError::Unavailable(format!("HTTP {status}: {errors}"))),
            s if !(200..300).contains(&s) => {
                Err(KvError::Rejected(format!("HTTP {status}: {errors}")))
            }
            _ => match envelope {
                Some(Envelope {
                    success: true,
                    result,
                    ..
                }) => Ok(result.unwrap_or_default()),
                _ => Err(KvError::Rejected(format!("unsuccessful: {errors}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &str, size: usize) -> Pair {
        Pair {
            key: key.into(),
            value: "x".repeat(size),
            metadata: serde_json::json!({}),
        }
    }

    #[test]
    fn limits_are_checked_before_sending() {
        assert!(check(&pair(&"k".repeat(513), 1)).is_err());
        assert!(check(&pair("k", MAX_VALUE_BYTES + 1)).is_err());
        let big_meta = Pair {
            metadata: serde_json::json!({"x": "y".repeat(2000)}),
            ..pair("k", 1)
        };
        assert!(check(&big_meta).is_err());
        assert!(check(&pair("k", 10)).is_ok());
    }

    #[test]
    fn requests_stay_within_pair_and_size_limits() {
        let many: Vec<Pair> = (0..25_000).map(|i| pair(&i.to_string(), 1)).collect();
        let sizes: Vec<usize> = chunks(&many).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [10_000, 10_000, 5_000]);
        let big: Vec<Pair> = (0..10)
            .map(|i| pair(&i.to_string(), 20 * 1024 * 1024))
            .collect();
        assert!(
            chunks(&big)
                .iter()
                .all(|c| c.iter().map(|p| p.value.len()).sum::<usize>() < MAX_REQUEST_BYTES)
        );
        assert!(chunks(&[]).is_empty());
    }
}
