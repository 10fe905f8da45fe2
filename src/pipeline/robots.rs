//! robots.txt, fetched with our own user agent, cached per origin (scheme, host, port) with a
//! time to live, and honoured: a 2xx is parsed (`texting_robots`), any other 4xx allows
//! everything (as the robots.txt RFC says), a 5xx or a network failure defers the host.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use texting_robots::Robot;
use tokio::sync::Mutex;
use url::Url;

use crate::infra::http::{FetchError, HttpClient};
use crate::infra::robots_store::{RobotsFile, RobotsStore};

/// What robots.txt says about one URL.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Fetch it, waiting `crawl_delay` between requests to the host, if any.
    Allowed {
        crawl_delay: Option<Duration>,
    },
    Disallowed,
    /// robots.txt could not be read (5xx, network): try again after this long.
    Deferred {
        retry_after: Duration,
        reason: String,
    },
    /// The host may not be contacted at all (a private address, say).
    Refused(FetchError),
}

#[derive(Clone)]
enum Rules {
    AllowAll,
    Parsed(Arc<Robot>),
    Deferred(String),
    Refused(FetchError),
}

/// One origin's entry. Its lock is held while robots.txt is fetched, so the many requests of
/// a host seen for the first time wait for one fetch instead of each making one.
type Slot = Arc<Mutex<Option<(Instant, Rules)>>>;

/// The cache.
pub struct RobotsCache {
    http: HttpClient,
    agent: String,
    ttl: Duration,
    entries: std::sync::Mutex<HashMap<String, Slot>>,
    /// Where what was read is shared with the roles that judge visits and serve robots.txt.
    store: Option<RobotsStore>,
}

/// How long a host is deferred after its robots.txt failed.
const DEFER: Duration = Duration::from_secs(60);
/// Largest robots.txt read (Google reads 500 KiB).
const MAX_ROBOTS_BYTES: usize = 512 * 1024;

impl RobotsCache {
    pub fn new(http: HttpClient, agent: &str, ttl: Duration) -> Self {
        Self {
            http,
            agent: agent.to_owned(),
            ttl,
            entries: std::sync::Mutex::new(HashMap::new()),
            store: None,
        }
    }

    /// Shares every file read (when it changed) through `store`.
    pub fn with_store(mut self, store: RobotsStore) -> Self {
        self.store = Some(store);
        self
    }

    /// The verdict for `url`, fetching its host's robots.txt when not cached.
    pub async fn check(&self, url: &Url) -> Verdict {
        let origin = url.origin().ascii_serialization();
        let slot: Slot = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(entries.entry(origin.clone()).or_default())
        };
        let mut entry = slot.lock().await;
        let fresh = entry.as_ref().filter(|(at, rules)| {
            let ttl = if matches!(rules, Rules::Deferred(_)) {
                DEFER
            } else {
                self.ttl
            };
            at.elapsed() < ttl
        });
        let rules = match fresh {
            Some((_, rules)) => rules.clone(),
            None => {
                let rules = self.fetch(&origin).await;
                *entry = Some((Instant::now(), rules.clone()));
                rules
            }
        };
        drop(entry);
        match rules {
            Rules::AllowAll => Verdict::Allowed { crawl_delay: None },
            Rules::Parsed(robot) if robot.allowed(url.as_str()) => Verdict::Allowed {
                crawl_delay: robot
                    .delay
                    .filter(|d| d.is_finite() && *d > 0.0)
                    .map(|d| Duration::from_secs_f32(d.min(600.0))),
            },
            Rules::Parsed(_) => Verdict::Disallowed,
            Rules::Deferred(reason) => Verdict::Deferred {
                retry_after: DEFER,
                reason,
            },
            Rules::Refused(e) => Verdict::Refused(e),
        }
    }

    async fn fetch(&self, origin: &str) -> Rules {
        let url = format!("{origin}/robots.txt");
        let response = self.http.get(&url, MAX_ROBOTS_BYTES).await;
        if let Ok(r) = &response
            && (200..500).contains(&r.status)
        {
            self.share(origin, r.status, &r.body).await;
        }
        match response {
            Ok(r) if (200..300).contains(&r.status) => match Robot::new(&self.agent, &r.body) {
                Ok(robot) => Rules::Parsed(Arc::new(robot)),
                // An unreadable file states no rule.
                Err(_) => Rules::AllowAll,
            },
            Ok(r) if (400..500).contains(&r.status) => Rules::AllowAll,
            Ok(r) => Rules::Deferred(format!("robots.txt answered HTTP {}", r.status)),
            Err(FetchError::TooLarge(_)) => Rules::AllowAll,
            Err(
                e @ (FetchError::BlockedAddress(_)
                | FetchError::Scheme(_)
                | FetchError::InvalidUrl(_)),
            ) => Rules::Refused(e),
            Err(e) => Rules::Deferred(format!("robots.txt could not be fetched: {e}")),
        }
    }

    /// Shares what `origin` answered (a 2xx's rules, a 4xx's "everything allowed"); a store
    /// that cannot be written costs the visits' compliance, never the crawl.
    async fn share(&self, origin: &str, status: u16, body: &[u8]) {
        let Some(store) = &self.store else { return };
        let file = RobotsFile {
            origin: origin.to_owned(),
            status,
            body: if (200..300).contains(&status) {
                String::from_utf8_lossy(body).into_owned()
            } else {
                String::new()
            },
            fetched_at: chrono::Utc::now(),
        };
        if let Err(e) = store.record(&file).await {
            tracing::warn!(error = %e, origin, "robots.txt not shared");
        }
    }
}
