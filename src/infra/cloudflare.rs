//! The Cloudflare Workers KV client: bulk writes and bulk deletes, within Cloudflare's limits
//! and the account's request budget.
//!
//! Built on the `cloudflare` crate: its `Environment` (API root), `Credentials` (the bearer
//! token's headers), its `EndpointSpec` trait (method, path, body, URL of a call) and its
//! envelope types (`ApiSuccess`, `ApiErrors`). Two of its KV endpoints are wrong for us, so
//! this module defines corrected ones ([`WriteBulk`], [`DeleteBulk`], each saying why). Calls
//! are sent by this module's reqwest client rather than the crate's `Client::request`,
//! because that one drops the response's headers, and a 429's `Retry-After` is what tells us
//! when Cloudflare takes requests again.
//!
//! Cloudflare allows 1,200 API requests per five minutes per account (a 429 then blocks the
//! account for five minutes). Every uploader process spends from one shared budget per
//! account ([`SharedRates`], scope `cloudflare`), so together they stay within it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use cloudflare::framework::Environment;
use cloudflare::framework::auth::Credentials;
use cloudflare::framework::endpoint::spec::EndpointSpec;
use cloudflare::framework::endpoint::{Method, RequestBody};
use cloudflare::framework::response::{ApiErrors, ApiResult, ApiSuccess};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::limits::{Claim, Rate, SharedRates};
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

/// What a bulk call did (the crate's `WorkersKvBulkResult` keeps the count in an `i8`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct BulkResult {
    #[serde(default)]
    pub successful_key_count: u64,
    #[serde(default)]
    pub unsuccessful_keys: Vec<String>,
}

/// A bulk call's `result`, which may be `null`.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct BulkOutcome(Option<BulkResult>);

impl ApiResult for BulkOutcome {}

/// `PUT accounts/{account}/storage/kv/namespaces/{ns}/bulk`. Replaces the crate's `WriteBulk`,
/// whose pairs cannot carry `metadata` (we store each page's metadata with its key) and whose
/// result decodes the success count into an `i8` (a write of more than 127 keys is reported
/// as failed although Cloudflare applied it).
#[derive(Debug)]
pub struct WriteBulk<'a> {
    pub target: &'a KvTarget,
    pub pairs: &'a [Pair],
}

/// `POST accounts/{account}/storage/kv/namespaces/{ns}/bulk/delete`. Replaces the crate's
/// `DeleteBulk`, which sends `DELETE .../bulk`, the legacy route, and decodes its result into
/// the same `i8` count.
#[derive(Debug)]
pub struct DeleteBulk<'a> {
    pub target: &'a KvTarget,
    pub keys: &'a [String],
}

fn namespace_path(t: &KvTarget) -> String {
    format!(
        "accounts/{}/storage/kv/namespaces/{}",
        t.account_id, t.namespace_id
    )
}

fn json_body<T: Serialize + ?Sized>(value: &T) -> Option<RequestBody<'_>> {
    serde_json::to_string(value).ok().map(RequestBody::Json)
}

impl EndpointSpec for WriteBulk<'_> {
    type JsonResponse = BulkOutcome;
    type ResponseType = ApiSuccess<BulkOutcome>;

    fn method(&self) -> Method {
        Method::PUT
    }
    fn path(&self) -> String {
        format!("{}/bulk", namespace_path(self.target))
    }
    fn body(&self) -> Option<RequestBody<'_>> {
        json_body(self.pairs)
    }
    fn content_type(&self) -> Option<Cow<'static, str>> {
        // The default serializes the body once more only to learn it is JSON.
        Some(Cow::Borrowed("application/json"))
    }
}

impl EndpointSpec for DeleteBulk<'_> {
    type JsonResponse = BulkOutcome;
    type ResponseType = ApiSuccess<BulkOutcome>;

    fn method(&self) -> Method {
        Method::POST
    }
    fn path(&self) -> String {
        format!("{}/bulk/delete", namespace_path(self.target))
    }
    fn body(&self) -> Option<RequestBody<'_>> {
        json_body(self.keys)
    }
    fn content_type(&self) -> Option<Cow<'static, str>> {
        Some(Cow::Borrowed("application/json"))
    }
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

/// The account's request budget, shared by every process.
struct Budget {
    rates: SharedRates,
    rate: Rate,
}

/// The client.
#[derive(Clone)]
pub struct KvClient {
    http: reqwest::Client,
    environment: Arc<Environment>,
    budget: Option<Arc<Budget>>,
}

impl std::fmt::Debug for KvClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KvClient({})", Url::from(&*self.environment))
    }
}

/// Cloudflare's own API root.
pub const PRODUCTION: &str = "https://api.cloudflare.com/client/v4";

/// Cloudflare's request limit per account: 1,200 requests per five minutes.
pub const ACCOUNT_WINDOW: Duration = Duration::from_secs(300);

/// How long a call waits in place for the account's budget before handing the work back.
const MAX_BUDGET_WAIT: Duration = Duration::from_secs(10);

impl KvClient {
    /// `base` is the API root (`https://api.cloudflare.com/client/v4`, or a test server's).
    pub fn new(base: &str, timeout: Duration) -> Result<Self, KvError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| KvError::Unavailable(e.to_string()))?;
        Ok(Self {
            http,
            environment: Arc::new(environment(base)?),
            budget: None,
        })
    }

    /// Spends at most `per_window` requests per account per five minutes, counted in
    /// `rates` (scope `cloudflare`) by every process sharing it.
    pub fn with_budget(mut self, rates: SharedRates, per_window: u32) -> Self {
        self.budget = Some(Arc::new(Budget {
            rates,
            rate: Rate::within(per_window, ACCOUNT_WINDOW),
        }));
        self
    }

    /// Writes pairs (one request: call with a chunk from [`chunks`]).
    pub async fn bulk_write(
        &self,
        target: &KvTarget,
        pairs: &[Pair],
    ) -> Result<BulkResult, KvError> {
        self.call(target, &WriteBulk { target, pairs }).await
    }

    /// Deletes keys (one request, at most 10,000 keys).
    pub async fn bulk_delete(
        &self,
        target: &KvTarget,
        keys: &[String],
    ) -> Result<BulkResult, KvError> {
        self.call(target, &DeleteBulk { target, keys }).await
    }

    /// Waits for a request of the account's budget, or says how long until there is one.
    async fn spend(&self, account: &str) -> Result<(), KvError> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        match budget
            .rates
            .claim(account, budget.rate, MAX_BUDGET_WAIT)
            .await
        {
            Claim::Granted { wait, .. } => {
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Claim::Refused { retry_after } => Err(KvError::RateLimited(retry_after)),
            // Slower, never faster: without the shared budget, nothing is sent.
            Claim::Unknown => Err(KvError::RateLimited(Duration::from_secs(1))),
        }
    }

    /// Sends `endpoint` the way the crate's client builds it, and decodes its envelope.
    async fn call<E>(&self, target: &KvTarget, endpoint: &E) -> Result<BulkResult, KvError>
    where
        E: EndpointSpec<JsonResponse = BulkOutcome>,
    {
        self.spend(&target.account_id).await?;
        let credentials = Credentials::UserAuthToken {
            token: target.token.expose().to_owned(),
        };
        let mut req = self
            .http
            .request(endpoint.method(), endpoint.url(&self.environment));
        for (name, value) in credentials.headers() {
            req = req.header(name, value);
        }
        if let Some(content_type) = endpoint.content_type() {
            req = req.header(reqwest::header::CONTENT_TYPE, content_type.as_ref());
        }
        req = match endpoint.body() {
            Some(RequestBody::Json(json)) => req.body(json),
            Some(RequestBody::Raw(bytes)) => req.body(bytes),
            Some(RequestBody::MultiPart(_)) | None => req,
        };
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
            .bytes()
            .await
            .map_err(|e| KvError::Unavailable(e.to_string()))?;
        decode(status, retry_after, &body)
    }
}

/// The crate's environment for `base`, checked first (the crate unwraps a bad URL).
fn environment(base: &str) -> Result<Environment, KvError> {
    let base = base.trim().trim_end_matches('/');
    if base == PRODUCTION {
        return Ok(Environment::Production);
    }
    // A custom root needs its trailing slash, or joining a path drops its last segment.
    let root = format!("{base}/");
    match Url::parse(&root) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
            Ok(Environment::Custom(root))
        }
        _ => Err(KvError::Rejected(format!(
            "the Cloudflare API root {base:?} is not an http(s) URL"
        ))),
    }
}

/// A reply: the envelope's result on success, else the error its status and errors say.
fn decode(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Result<BulkResult, KvError> {
    #[derive(Deserialize)]
    struct Success {
        success: bool,
    }
    let errors = || match serde_json::from_slice::<ApiErrors>(body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(body).chars().take(300).collect(),
    };
    match status {
        429 => Err(KvError::RateLimited(retry_after.unwrap_or(ACCOUNT_WINDOW))),
        401 | 403 => Err(KvError::Unauthorized(errors())),
        500..=599 => Err(KvError::Unavailable(format!("HTTP {status}: {}", errors()))),
        s if !(200..300).contains(&s) => {
            Err(KvError::Rejected(format!("HTTP {status}: {}", errors())))
        }
        _ => match serde_json::from_slice::<Success>(body) {
            Ok(Success { success: true }) => {
                serde_json::from_slice::<ApiSuccess<BulkOutcome>>(body)
                    .map(|s| s.result.0.unwrap_or_default())
                    .map_err(|e| KvError::Rejected(format!("an unreadable result: {e}")))
            }
            _ => Err(KvError::Rejected(format!("unsuccessful: {}", errors()))),
        },
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
    fn envelopes_are_decoded_into_results_and_errors() {
        let ok = br#"{"success":true,"errors":[],"messages":[],"result":{"successful_key_count":300,"unsuccessful_keys":["a"]}}"#;
        assert_eq!(
            decode(200, None, ok),
            Ok(BulkResult {
                successful_key_count: 300,
                unsuccessful_keys: vec!["a".into()]
            })
        );
        let null = br#"{"success":true,"errors":[],"messages":[],"result":null}"#;
        assert_eq!(decode(200, None, null), Ok(BulkResult::default()));
        let refused = br#"{"success":false,"errors":[{"code":10013,"message":"slow down"}],"messages":[],"result":null}"#;
        assert_eq!(
            decode(200, None, refused),
            Err(KvError::Rejected("unsuccessful: 10013: slow down".into()))
        );
        assert_eq!(
            decode(429, None, refused),
            Err(KvError::RateLimited(ACCOUNT_WINDOW)),
            "without Retry-After, Cloudflare's documented five-minute block"
        );
        assert_eq!(
            decode(403, None, refused),
            Err(KvError::Unauthorized("10013: slow down".into()))
        );
        assert!(matches!(
            decode(502, None, b"<html>bad gateway</html>"),
            Err(KvError::Unavailable(m)) if m.contains("bad gateway")
        ));
    }

    #[test]
    fn the_api_root_keeps_its_path_when_joined() {
        let env = environment("http://127.0.0.1:9/client/v4").expect("root");
        let t = KvTarget {
            account_id: "a".into(),
            namespace_id: "n".into(),
            token: Secret::new("t"),
        };
        let url = WriteBulk {
            target: &t,
            pairs: &[],
        }
        .url(&env);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/client/v4/accounts/a/storage/kv/namespaces/n/bulk"
        );
        assert!(matches!(
            environment("https://api.cloudflare.com/client/v4/"),
            Ok(Environment::Production)
        ));
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
