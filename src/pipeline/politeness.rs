//! Per-host politeness: at most N fetches at once to a host, and requests spaced by the
//! host's interval (the client's crawl rate, or robots.txt's crawl-delay when longer); and a
//! failing host backed off as a host ([`HostHealth`]): after a few connection failures in a
//! row its requests are handed back without fetching until a backoff passes, so a host that
//! does not answer costs one probe per backoff, not one fetch per page.
//! The spacing is shared by every scraper process through the `limits` KV bucket
//! ([`SharedRates`], scope `host`): each turn at a host is claimed with compare-and-set, so N
//! processes together keep the host's pace; the fetches at once hold places leased in the same
//! bucket, so all processes together stay within the per-host limit of fetches at once. The
//! failure backoff is kept per process.
//!
//! Waiting never holds a stage's in-flight slot for long: a turn further away than
//! [`MAX_WAIT`] is handed back with the wait as the retry delay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::infra::limits::{Claim, Hold, Lease, Rate, SharedRates};

/// Longest a fetch waits for its turn in place; beyond, the message is handed back with a delay.
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// Connection failures in a row after which a host is backed off.
pub const FAILURES_BEFORE_BACKOFF: u32 = 3;

/// The first backoff of a failing host; each further one doubles, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Health {
    failures: u32,
    /// Backoffs so far in this run of failures.
    backoffs: u32,
    until: Option<Instant>,
}

/// Which hosts fail to answer, and until when they are left alone.
#[derive(Default)]
pub struct HostHealth {
    hosts: Mutex<HashMap<String, Health>>,
}

impl HostHealth {
    /// How long `host` is still backed off, if it is.
    pub fn backed_off(&self, host: &str) -> Option<Duration> {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let until = hosts.get(host)?.until?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// The host answered (whatever it said).
    pub fn answered(&self, host: &str) {
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(host);
    }

    /// The host could not be reached; returns the backoff it is now under, if any.
    pub fn failed(&self, host: &str) -> Option<Duration> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let health = hosts.entry(host.to_owned()).or_default();
        health.failures += 1;
        if health.failures < FAILURES_BEFORE_BACKOFF {
            return None;
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(2u32.saturating_pow(health.backoffs))
            .min(MAX_BACKOFF);
        health.backoffs += 1;
        health.until = Some(Instant::now() + backoff);
        Some(backoff)
    }
}

struct Gate {
    slots: Arc<Semaphore>,
    next: Mutex<Instant>,
    /// Where the turns promised to handed-back messages end: each one handed back is told to
    /// come back one interval after the previous, so they return at the host's pace instead
    /// of all at once.
    promised: Mutex<Instant>,
}

/// The gates of every host seen.
pub struct HostGates {
    per_host: usize,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
    shared: Option<Shared>,
}

/// The gates' state shared by every scraper process.
struct Shared {
    rates: Arc<SharedRates>,
    /// How long a place among a host's fetches is held at most (past a fetch's timeout).
    lease: Duration,
}

/// How often a fetch looks again for a free place among a host's fetches.
const SLOT_POLL: Duration = Duration::from_millis(100);

/// How soon a fetch is tried again when the shared turns cannot be read or claimed.
const SHARED_RETRY: Duration = Duration::from_secs(1);

/// A turn to fetch from a host: hold it during the request.
pub struct Turn {
    _slot: OwnedSemaphorePermit,
    _place: Option<Lease>,
}

impl HostGates {
    pub fn new(per_host: usize) -> Self {
        Self {
            per_host: per_host.max(1),
            gates: Mutex::new(HashMap::new()),
            shared: None,
        }
    }

    /// Spaces turns and bounds fetches at once through `rates` (every process) instead of
    /// this process alone; `fetch_timeout` is the longest a fetch holds its place.
    pub fn with_shared(mut self, rates: SharedRates, fetch_timeout: Duration) -> Self {
        self.shared = Some(Shared {
            rates: Arc::new(rates),
            lease: fetch_timeout + Duration::from_secs(30),
        });
        self
    }

    /// Waits for a turn at `host`, the previous one at least `interval` ago. When that would
    /// take longer than [`MAX_WAIT`], returns how long instead (the caller retries later):
    /// successive callers are told successive turns, one interval apart.
    pub async fn turn(&self, host: &str, interval: Duration) -> Result<Turn, Duration> {
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(gates.entry(host.to_owned()).or_insert_with(|| {
                Arc::new(Gate {
                    slots: Arc::new(Semaphore::new(self.per_host)),
                    next: Mutex::new(Instant::now()),
                    promised: Mutex::new(Instant::now()),
                })
            }))
        };
        let slot = tokio::time::timeout(MAX_WAIT, Arc::clone(&gate.slots).acquire_owned())
            .await
            .map_err(|_| MAX_WAIT)?
            .map_err(|_| MAX_WAIT)?;
        let mut place = None;
        let start = match &self.shared {
            Some(shared) => {
                place = Some(
                    self.place(shared, host)
                        .await
                        .map_err(|wait| gate.promise(Instant::now() + wait, interval))?,
                );
                match shared
                    .rates
                    .claim(host, Rate::spaced(interval), MAX_WAIT)
                    .await
                {
                    Claim::Granted { wait, .. } => Instant::now() + wait,
                    Claim::Refused { retry_after } => {
                        return Err(gate.promise(Instant::now() + retry_after, interval));
                    }
                    // Slower, never faster: without the shared turns, wait and try again.
                    Claim::Unknown => {
                        return Err(gate.promise(Instant::now() + SHARED_RETRY, interval));
                    }
                }
            }
            None => {
                let mut next = gate.next.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let start = (*next).max(now);
                if start - now > MAX_WAIT {
                    return Err(gate.promise(start, interval));
                }
                *next = start + interval;
                start
            }
        };
        tokio::time::sleep_until(start).await;
        Ok(Turn {
            _slot: slot,
            _place: place,
        })
    }

    /// A place among the fetches from `host` of every process, waiting up to [`MAX_WAIT`]
    /// for one to be given back; else how long until trying again.
    async fn place(&self, shared: &Shared, host: &str) -> Result<Lease, Duration> {
        let max = u32::try_from(self.per_host).unwrap_or(u32::MAX);
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            match shared.rates.hold(host, max, shared.lease).await {
                Hold::Held(lease) => return Ok(lease),
                // Slower, never faster: without a place (all taken, or the shared places
                // unreadable for now), wait and look again; past the wait, try again later.
                Hold::Full | Hold::Unknown if Instant::now() + SLOT_POLL > deadline => {
                    return Err(SHARED_RETRY);
                }
                Hold::Full | Hold::Unknown => tokio::time::sleep(SLOT_POLL).await,
            }
        }
    }
}

impl Gate {
    /// A turn for a message handed back: the first free one from `earliest` that no other
    /// handed-back message was promised; returns the wait until it.
    fn promise(&self, earliest: Instant, interval: Duration) -> Duration {
        let mut promised = self.promised.lock().unwrap_or_else(|e| e.into_inner());
        let at = (*promised).max(earliest);
        *promised = at + interval;
        at.saturating_duration_since(Instant::now())
    }
}

/// The spacing of requests to a host: 60 s / crawl rate, or the crawl-delay when longer.
pub fn interval(crawl_rate_per_minute: u32, crawl_delay: Option<Duration>) -> Duration {
    let by_rate = Duration::from_secs_f64(60.0 / f64::from(crawl_rate_per_minute.max(1)));
    crawl_delay.map_or(by_rate, |d| d.max(by_rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_host_failing_in_a_row_is_backed_off_longer_each_time_until_it_answers() {
        let health = HostHealth::default();
        assert_eq!(health.failed("down.example"), None);
        assert_eq!(health.failed("down.example"), None);
        assert_eq!(health.failed("down.example"), Some(FIRST_BACKOFF));
        assert_eq!(health.backed_off("down.example"), Some(FIRST_BACKOFF));
        assert_eq!(health.backed_off("up.example"), None);
        tokio::time::advance(FIRST_BACKOFF).await;
        assert_eq!(health.backed_off("down.example"), None, "time for a probe");
        assert_eq!(health.failed("down.example"), Some(FIRST_BACKOFF * 2));
        health.answered("down.example");
        assert_eq!(health.backed_off("down.example"), None);
        assert_eq!(health.failed("down.example"), None, "a new run of failures");
    }

    #[test]
    fn the_interval_is_the_longer_of_rate_and_crawl_delay() {
        assert_eq!(interval(60, None), Duration::from_secs(1));
        assert_eq!(interval(600, None), Duration::from_millis(100));
        assert_eq!(
            interval(60, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            interval(6, Some(Duration::from_secs(5))),
            Duration::from_secs(10)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn turns_at_one_host_are_spaced_and_others_are_not_held_up() {
        let gates = HostGates::new(4);
        let started = Instant::now();
        for _ in 0..3 {
            let _turn = gates
                .turn("a.example", Duration::from_secs(2))
                .await
                .expect("turn");
        }
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(4),
            "three turns: now, +2 s, +4 s"
        );
        let before = Instant::now();
        let _other = gates
            .turn("b.example", Duration::from_secs(2))
            .await
            .expect("turn");
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn messages_handed_back_are_told_to_return_one_interval_apart() {
        let gates = HostGates::new(8);
        let interval = Duration::from_secs(5);
        let _first = gates.turn("busy.example", interval).await.expect("turn");
        // The next turn is 5 s away; each one handed back is promised a later one.
        let mut told = Vec::new();
        for _ in 0..3 {
            told.push(gates.turn("busy.example", interval).await.err());
        }
        assert_eq!(
            told,
            [5, 10, 15].map(|s| Some(Duration::from_secs(s))).to_vec()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_too_far_away_is_refused_with_the_wait() {
        let gates = HostGates::new(4);
        let _first = gates
            .turn("slow.example", Duration::from_secs(30))
            .await
            .expect("turn");
        let wait = gates
            .turn("slow.example", Duration::from_secs(30))
            .await
            .err();
        assert_eq!(
            wait,
            Some(Duration::from_secs(30)),
            "the next turn is 30 s away: more than MAX_WAIT"
        );
    }
}
