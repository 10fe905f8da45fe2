//! Per-host politeness: at most N fetches at once to a host, and requests spaced by the
//! host's interval (the client's crawl rate, or robots.txt's crawl-delay when longer).
//! Kept per process: several scraper processes each keep their own spacing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Longest a fetch waits for its turn in place; beyond, the message is handed back with a delay.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

struct Gate {
    slots: Arc<Semaphore>,
    next: Mutex<Instant>,
}

/// The gates of every host seen.
pub struct HostGates {
    per_host: usize,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

/// A turn to fetch from a host: hold it during the request.
pub struct Turn {
    _slot: OwnedSemaphorePermit,
}

impl HostGates {
    pub fn new(per_host: usize) -> Self {
        Self {
            per_host: per_host.max(1),
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a turn at `host`, the previous one at least `interval` ago. When that would
    /// take longer than [`MAX_WAIT`], returns how long instead (the caller retries later).
    pub async fn turn(&self, host: &str, interval: Duration) -> Result<Turn, Duration> {
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(gates.entry(host.to_owned()).or_insert_with(|| {
                Arc::new(Gate {
                    slots: Arc::new(Semaphore::new(self.per_host)),
                    next: Mutex::new(Instant::now()),
                })
            }))
        };
        let slot = tokio::time::timeout(MAX_WAIT, Arc::clone(&gate.slots).acquire_owned())
            .await
            .map_err(|_| MAX_WAIT)?
            .map_err(|_| MAX_WAIT)?;
        let start = {
            let mut next = gate.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = (*next).max(now);
            if start - now > MAX_WAIT {
                return Err(start - now);
            }
            *next = start + interval;
            start
        };
        tokio::time::sleep_until(start).await;
        Ok(Turn { _slot: slot })
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
