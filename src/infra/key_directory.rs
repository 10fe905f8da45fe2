//! Signed agents' key directories (`<agent>/.well-known/http-message-signatures-directory`,
//! a JWKS), fetched through the guarded HTTP client (public addresses only unless
//! `ALLOW_PRIVATE_NETWORKS`), bounded in size and time, and kept as HTTP caching says
//! (`Cache-Control: max-age`, between a minute and a day; an hour when it says nothing). A
//! directory that cannot be fetched or read is remembered as missing for a minute, so a
//! broken or hostile agent costs one fetch a minute, never one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use web_bot_auth::keyring::JSONWebKeySet;

use super::http::HttpClient;

/// Largest directory read.
const MAX_BYTES: usize = 64 * 1024;
/// Longest a fetch may take (a request waits for it the first time an agent is seen).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a directory is kept when its answer says nothing, and the bounds of what it may say.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(86_400);
/// How long a failed fetch is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// Most directories remembered (any agent URL can be sent: the map starts over past this).
const MAX_ENTRIES: usize = 1_000;

type Entry = (Instant, Option<Arc<JSONWebKeySet>>);

/// The cache of key directories.
#[derive(Clone)]
pub struct KeyDirectories {
    http: HttpClient,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl std::fmt::Debug for KeyDirectories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyDirectories")
    }
}

impl KeyDirectories {
    pub fn new(http: HttpClient) -> Self {
        Self {
            http,
            entries: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The keys published at `url`, from memory while fresh; `None` when the directory
    /// cannot be had (then the signature is not attributed).
    pub async fn keys(&self, url: &str) -> Option<Arc<JSONWebKeySet>> {
        let entries = || {
            self.entries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((until, keys)) = entries().get(url)
            && Instant::now() < *until
        {
            return keys.clone();
        }
        let (keys, ttl) = match self.fetch(url).await {
            Ok((keys, ttl)) => (Some(Arc::new(keys)), ttl),
            Err(reason) => {
                tracing::info!(directory = url, reason, "agent key directory not usable");
                (None, NEGATIVE_TTL)
            }
        };
        metrics::counter!("aicache_key_directory_fetches_total",
            "outcome" => if keys.is_some() { "ok" } else { "failed" })
        .increment(1);
        let mut map = entries();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(url.to_owned(), (Instant::now() + ttl, keys.clone()));
        keys
    }

    async fn fetch(&self, url: &str) -> Result<(JSONWebKeySet, Duration), String> {
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.http.get(url, MAX_BYTES))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        if fetched.status != 200 {
            return Err(format!("status {}", fetched.status));
        }
        let keys: JSONWebKeySet =
            serde_json::from_slice(&fetched.body).map_err(|e| format!("not a JWKS: {e}"))?;
        let ttl = fetched
            .headers
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .map_or(DEFAULT_TTL, |ttl| ttl.clamp(MIN_TTL, MAX_TTL));
        Ok((keys, ttl))
    }
}

/// `max-age` of a `Cache-Control` value; `no-store`/`no-cache` count as zero (then the
/// minimum applies: a directory is never fetched for every request).
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').map(str::trim).find_map(|d| {
        if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        d.strip_prefix("max-age=")
            .and_then(|s| s.trim_matches('"').parse::<u64>().ok())
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=\"30\""), Some(Duration::from_secs(30)));
    }
}
