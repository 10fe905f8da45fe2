//! Each site's robots.txt as the scraper last read it, shared with the roles that judge visits
//! and serve robots.txt: a JetStream KV bucket (`KV_robots`, defined in `streams/`) with one
//! entry per origin (`https://example.com`), written by the scraper only when what it read
//! changed. NATS KV keys allow few characters, so the bucket key is the SHA-256 of the origin.
//!
//! [`RobotsRules`] is the read side: the file of an origin kept in memory for
//! [`RULES_TTL`], and parsed once per bot token, to say whether a bot's visit was one its
//! robots.txt allows. A visit's compliance is analytics, judged when it is recorded: a file
//! that changed less than [`RULES_TTL`] ago may judge it by the previous one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv::Store};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use texting_robots::Robot;
use url::Url;

use crate::domain::visit::RobotsCompliance;

/// The bucket.
pub const BUCKET: &str = "robots";

/// What an origin's `/robots.txt` answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RobotsFile {
    /// `https://example.com` (with the port when it is not the scheme's).
    pub origin: String,
    /// The HTTP status: a 2xx has rules, a 4xx allows everything (the robots.txt RFC).
    pub status: u16,
    /// The body of a 2xx (cut at the scraper's limit), empty otherwise.
    pub body: String,
    pub fetched_at: DateTime<Utc>,
}

impl RobotsFile {
    fn same_content(&self, other: &Self) -> bool {
        self.origin == other.origin && self.status == other.status && self.body == other.body
    }
}

/// The store failed.
#[derive(Debug, thiserror::Error)]
#[error("robots store: {0}")]
pub struct RobotsStoreError(String);

fn failed(e: impl std::fmt::Display) -> RobotsStoreError {
    RobotsStoreError(e.to_string())
}

/// Put and get robots.txt files by origin.
#[derive(Clone)]
pub struct RobotsStore {
    kv: Store,
}

fn bucket_key(origin: &str) -> String {
    hex::encode(Sha256::digest(origin.as_bytes()))
}

impl RobotsStore {
    /// Opens the bucket (its stream must exist: apply the streams first).
    pub async fn open(js: &jetstream::Context) -> Result<Self, RobotsStoreError> {
        Ok(Self {
            kv: js.get_key_value(BUCKET).await.map_err(failed)?,
        })
    }

    /// Stores what an origin answered, unless the stored file says the same; whether it wrote.
    pub async fn record(&self, file: &RobotsFile) -> Result<bool, RobotsStoreError> {
        if self
            .get(&file.origin)
            .await?
            .is_some_and(|stored| stored.same_content(file))
        {
            return Ok(false);
        }
        let bytes = serde_json::to_vec(file).map_err(failed)?;
        self.kv
            .put(bucket_key(&file.origin), bytes.into())
            .await
            .map_err(failed)?;
        Ok(true)
    }

    /// The file last read from `origin`, if any.
    pub async fn get(&self, origin: &str) -> Result<Option<RobotsFile>, RobotsStoreError> {
        let Some(entry) = self.kv.entry(bucket_key(origin)).await.map_err(failed)? else {
            return Ok(None);
        };
        if entry.operation != jetstream::kv::Operation::Put {
            return Ok(None);
        }
        serde_json::from_slice(&entry.value)
            .map(Some)
            .map_err(failed)
    }
}

/// How long an origin's file is used before it is read from the store again.
pub const RULES_TTL: Duration = Duration::from_secs(30);
/// Most origins kept in memory (beyond it the map starts over).
const MAX_ORIGINS: usize = 10_000;
/// Most bot tokens parsed per origin (beyond it that origin's parses start over).
const MAX_TOKENS: usize = 256;

/// One origin in memory: its file (None: the scraper has not read one), parsed per token
/// (None: the file allows everything).
struct Known {
    read_at: Instant,
    file: Option<Arc<RobotsFile>>,
    parsed: HashMap<String, Option<Arc<Robot>>>,
}

/// Judges visits against the sites' robots.txt files; cheap to clone.
#[derive(Clone)]
pub struct RobotsRules {
    store: RobotsStore,
    known: Arc<Mutex<HashMap<String, Known>>>,
}

impl RobotsRules {
    pub fn new(store: RobotsStore) -> Self {
        Self {
            store,
            known: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// What `url`'s robots.txt says of `token` reading it; `None` when no file is known for
    /// its origin (the scraper has not read one, or the store cannot be read now).
    pub async fn compliance(&self, url: &Url, token: &str) -> Option<RobotsCompliance> {
        let origin = url.origin().ascii_serialization();
        let fresh = {
            let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            known
                .get(&origin)
                .is_some_and(|k| k.read_at.elapsed() < RULES_TTL)
        };
        if !fresh {
            let file = match self.store.get(&origin).await {
                Ok(file) => file.map(Arc::new),
                Err(e) => {
                    tracing::debug!(error = %e, origin, "robots.txt not read: compliance unknown");
                    return None;
                }
            };
            let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
            if known.len() >= MAX_ORIGINS {
                known.clear();
            }
            known.insert(
                origin.clone(),
                Known {
                    read_at: Instant::now(),
                    file,
                    parsed: HashMap::new(),
                },
            );
        }
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = known.get_mut(&origin)?;
        let file = entry.file.clone()?;
        if entry.parsed.len() >= MAX_TOKENS {
            entry.parsed.clear();
        }
        let robot = entry
            .parsed
            .entry(token.to_owned())
            .or_insert_with(|| parse(&file, token))
            .clone();
        Some(judge(robot.as_deref(), url))
    }
}

/// The rules of `file` for `token`; `None` allows everything (a 4xx, an unreadable file).
fn parse(file: &RobotsFile, token: &str) -> Option<Arc<Robot>> {
    if !(200..300).contains(&file.status) {
        return None;
    }
    Robot::new(token, file.body.as_bytes()).ok().map(Arc::new)
}

fn judge(robot: Option<&Robot>, url: &Url) -> RobotsCompliance {
    match robot {
        Some(robot) if !robot.allowed(url.as_str()) => RobotsCompliance::Disallowed,
        _ => RobotsCompliance::Allowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(status: u16, body: &str) -> RobotsFile {
        RobotsFile {
            origin: "https://example.com".into(),
            status,
            body: body.into(),
            fetched_at: Utc::now(),
        }
    }

    fn verdict(f: &RobotsFile, token: &str, path: &str) -> RobotsCompliance {
        let url = Url::parse(&format!("https://example.com{path}")).expect("url");
        judge(parse(f, token).as_deref(), &url)
    }

    #[test]
    fn each_bot_is_judged_by_its_own_group() {
        let f = file(
            200,
            "User-agent: GPTBot\nDisallow: /\n\nUser-agent: ClaudeBot\nDisallow: /private/\n\n\
             User-agent: *\nAllow: /\n",
        );
        use RobotsCompliance::*;
        assert_eq!(verdict(&f, "GPTBot", "/blog/a"), Disallowed);
        assert_eq!(verdict(&f, "ClaudeBot", "/blog/a"), Allowed);
        assert_eq!(verdict(&f, "ClaudeBot", "/private/x"), Disallowed);
        assert_eq!(
            verdict(&f, "PerplexityBot", "/private/x"),
            Allowed,
            "the * group"
        );
        assert_eq!(
            verdict(&f, "GPTBot", "/robots.txt"),
            Allowed,
            "robots.txt itself is always allowed"
        );
    }

    #[test]
    fn a_4xx_or_an_unreadable_file_allows_everything() {
        assert_eq!(
            verdict(&file(404, ""), "GPTBot", "/x"),
            RobotsCompliance::Allowed
        );
        assert_eq!(
            verdict(&file(200, "\u{0}\u{0}garbage"), "GPTBot", "/x"),
            RobotsCompliance::Allowed
        );
    }
}
