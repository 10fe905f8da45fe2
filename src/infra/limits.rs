//! Rates that hold for the whole deployment, not per process: a host's crawl pace, an API
//! key's requests per minute, a Cloudflare account's requests per five minutes.
//!
//! Each rate is a GCRA (the generic cell rate algorithm, as `governor` runs it in memory): its
//! whole state is one number per key, the *theoretical arrival time* (TAT) of the next unit.
//! That number lives in the JetStream KV bucket [`BUCKET`] and is moved on with
//! compare-and-set (the entry's revision), so two processes never spend the same unit. Every
//! process of a deployment shares the bucket; its clock is each process's wall clock in
//! milliseconds (keep the machines' clocks in sync with NTP, as for everything else).
//!
//! Written here rather than taken from a crate: `governor` keeps its state in process memory
//! and no maintained crate runs GCRA over a JetStream KV bucket.
//!
//! When the bucket cannot be reached (NATS down, a timeout, too much contention), a claim says
//! [`Claim::Unknown`] and the caller decides how to fall back; every caller falls back slower,
//! never faster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use sha2::{Digest, Sha256};

/// The bucket holding every shared rate's state.
pub const BUCKET: &str = "limits";

/// Attempts at compare-and-set before a claim gives up as contended.
const ATTEMPTS: usize = 16;

/// The longest a claim may take before it counts as unreachable, unless set otherwise.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(2);

/// Keys whose last revision is remembered (one round trip per claim instead of two while it
/// is still the latest); beyond this the memory is cleared.
const MAX_REMEMBERED: usize = 10_000;

/// How soon giving a place back is tried again when the bucket is busy or away.
const RELEASE_RETRY: Duration = Duration::from_millis(200);

/// A rate: one unit every `every`, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub every: Duration,
    pub burst: u32,
}

impl Rate {
    /// `n` units per `window`, all of them usable at once.
    pub fn per(n: u32, window: Duration) -> Self {
        let n = n.max(1);
        Self {
            every: window / n,
            burst: n,
        }
    }

    /// At most `n` units in any `window` (a GCRA with burst B and rate r allows B + r·W in a
    /// window W, so: a tenth of `n` at once, the rest spread over the window).
    pub fn within(n: u32, window: Duration) -> Self {
        let n = n.max(1);
        let burst = (n / 10).max(1);
        Self {
            every: window / (n - burst).max(1),
            burst,
        }
    }

    /// One unit every `interval`, never two at once (a crawl pace).
    pub fn spaced(interval: Duration) -> Self {
        Self {
            every: interval,
            burst: 1,
        }
    }
}

/// What a claim got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The unit is taken: use it after `wait`; `remaining` more could be taken now.
    Granted { wait: Duration, remaining: u32 },
    /// Not taken: the next unit is free in `retry_after`.
    Refused { retry_after: Duration },
    /// The shared state could not be read or moved on in time.
    Unknown,
}

/// One step of GCRA: the stored `tat` and `now` (ms since the epoch); a unit may wait up to
/// `max_wait` for its start. Returns the new TAT with the claim, or the refusal.
#[cfg(test)]
fn step(tat: u64, now: u64, rate: Rate, max_wait: Duration) -> Result<(u64, Claim), Claim> {
    step_up_to(tat, now, rate, max_wait, 1).map(|(next, claim, _)| (next, claim))
}

/// [`step`] for up to `n` units at once: as many as may start within `max_wait` of now (at
/// least one, or the refusal), the new TAT past the last of them, and how many were taken.
/// `wait` is the first unit's.
fn step_up_to(
    tat: u64,
    now: u64,
    rate: Rate,
    max_wait: Duration,
    n: u32,
) -> Result<(u64, Claim, u32), Claim> {
    // Rounded up: a rate is never made faster by the milliseconds it is counted in.
    let every = u64::try_from(rate.every.as_micros().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1);
    let base = tat.max(now);
    let burst_span = every * u64::from(rate.burst.saturating_sub(1));
    // A unit may start once its TAT is within the burst of now.
    let start = base.saturating_sub(burst_span).max(now);
    let wait = Duration::from_millis(start - now);
    if wait > max_wait {
        return Err(Claim::Refused { retry_after: wait });
    }
    // Unit j (from 0) starts at base + j·every - burst_span: take those within max_wait.
    let latest = now + millis(max_wait) + burst_span;
    let fit = (latest.saturating_sub(base) / every).saturating_add(1);
    let taken = u32::try_from(fit).unwrap_or(u32::MAX).clamp(1, n.max(1));
    let next = base + every * u64::from(taken);
    let room = (now + every * u64::from(rate.burst)).saturating_sub(next);
    let remaining = u32::try_from(room / every).unwrap_or(u32::MAX);
    Ok((next, Claim::Granted { wait, remaining }, taken))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// The shared rates of one kind (`scope`: `host`, `api`, `cloudflare`): cheap to share.
pub struct SharedRates {
    kv: kv::Store,
    scope: &'static str,
    timeout: Duration,
    /// The last TAT and revision this process wrote or read, per key.
    known: Mutex<HashMap<String, (u64, u64)>>,
}

impl std::fmt::Debug for SharedRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedRates({})", self.scope)
    }
}

impl SharedRates {
    /// Opens the bucket (created with the streams: `streams/KV_limits`).
    pub async fn open(js: &jetstream::Context, scope: &'static str) -> Result<Self, String> {
        let kv = js
            .get_key_value(BUCKET)
            .await
            .map_err(|e| format!("the {BUCKET} bucket: {e}"))?;
        Ok(Self {
            kv,
            scope,
            timeout: CLAIM_TIMEOUT,
            known: Mutex::new(HashMap::new()),
        })
    }

    /// Claims taking longer than `timeout` answer [`Claim::Unknown`] (default 2 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Claims one unit of `rate` for `name`, starting at most `max_wait` from now.
    pub async fn claim(&self, name: &str, rate: Rate, max_wait: Duration) -> Claim {
        self.claim_up_to(name, rate, max_wait, 1).await.0
    }

    /// Claims up to `n` units of `rate` for `name` at once (as many as may start within
    /// `max_wait`; at least one when granted), and says how many: a process that spends a
    /// rate fast takes its units in blocks, one round trip per block instead of per unit.
    pub async fn claim_up_to(
        &self,
        name: &str,
        rate: Rate,
        max_wait: Duration,
        n: u32,
    ) -> (Claim, u32) {
        // Names are hashed: any string becomes a valid, fixed-length KV key.
        let key = format!(
            "{}.{}",
            self.scope,
            hex::encode(Sha256::digest(name.as_bytes()))
        );
        let (claim, taken) =
            tokio::time::timeout(self.timeout, self.claim_key(&key, rate, max_wait, n))
                .await
                .unwrap_or((Claim::Unknown, 0));
        let outcome = match claim {
            Claim::Granted { .. } => "granted",
            Claim::Refused { .. } => "refused",
            Claim::Unknown => "unknown",
        };
        metrics::counter!("aicache_limit_claims_total", "scope" => self.scope, "outcome" => outcome)
            .increment(1);
        (claim, taken)
    }

    async fn claim_key(&self, key: &str, rate: Rate, max_wait: Duration, n: u32) -> (Claim, u32) {
        let mut known = self.remembered(key);
        for _ in 0..ATTEMPTS {
            let (tat, revision) = match known.take() {
                Some(k) => k,
                None => match self.kv.entry(key).await {
                    Ok(Some(e)) => (parse(&e.value), e.revision),
                    Ok(None) => (0, 0),
                    Err(_) => return (Claim::Unknown, 0),
                },
            };
            let (next, claim, taken) = match step_up_to(tat, now_ms(), rate, max_wait, n) {
                Ok(granted) => granted,
                Err(refused) => return (refused, 0),
            };
            let value = next.to_string().into();
            let written = if revision == 0 {
                self.kv.create(key, value).await.ok()
            } else {
                self.kv.update(key, value, revision).await.ok()
            };
            if let Some(revision) = written {
                self.remember(key, next, revision);
                return (claim, taken);
            }
            // Someone else moved it on (or what we remembered is stale): read it again.
        }
        (Claim::Unknown, 0)
    }

    fn remembered(&self, key: &str) -> Option<(u64, u64)> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.get(key).copied()
    }

    fn remember(&self, key: &str, tat: u64, revision: u64) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= MAX_REMEMBERED {
            known.clear();
        }
        known.insert(key.to_owned(), (tat, revision));
    }

    /// Puts `value` at `key` (scoped, not hashed) with compare-and-set, computed from what is
    /// there: for small shared records other than rates (the peers of [`Peers`]).
    async fn modify<F>(&self, key: &str, mut f: F) -> Option<String>
    where
        F: FnMut(Option<&str>) -> String,
    {
        let key = format!("{}.{key}", self.scope);
        for _ in 0..ATTEMPTS {
            let entry = self.kv.entry(&key).await.ok()?;
            let current = entry
                .as_ref()
                .and_then(|e| std::str::from_utf8(&e.value).ok());
            let value = f(current);
            let written = match &entry {
                Some(e) => self
                    .kv
                    .update(&key, value.clone().into(), e.revision)
                    .await
                    .ok(),
                None => self.kv.create(&key, value.clone().into()).await.ok(),
            };
            if written.is_some() {
                return Some(value);
            }
        }
        None
    }
}

/// A place among the holders of a shared limit on things at once (fetches from a host).
#[derive(Debug)]
pub enum Hold {
    /// Held until the [`Lease`] is dropped (or its time to live passes, if its process dies).
    Held(Lease),
    /// Every place is taken.
    Full,
    /// The shared state could not be read or moved on in time.
    Unknown,
}

/// A held place: given back when dropped.
pub struct Lease {
    rates: Arc<SharedRates>,
    key: String,
    holder: String,
    /// Past this the place is free anyway: giving it back is not tried longer.
    ttl: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({})", self.key)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (rates, key, holder, ttl) = (
            Arc::clone(&self.rates),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.holder),
            self.ttl,
        );
        // Giving back is a network call; a place not given back expires with its lease.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // Tried again while the bucket is busy or away, up to the lease's own end.
                let give_back = async {
                    while rates
                        .modify(&key, |current| {
                            let mut holders = holders(current, now_ms());
                            holders.remove(&holder);
                            serde_json::to_string(&holders).unwrap_or_default()
                        })
                        .await
                        .is_none()
                    {
                        tokio::time::sleep(RELEASE_RETRY).await;
                    }
                };
                let _ = tokio::time::timeout(ttl, give_back).await;
            });
        }
    }
}

/// The live holders in a record of holder → expiry (ms since the epoch).
fn holders(record: Option<&str>, now: u64) -> HashMap<String, u64> {
    let mut holders: HashMap<String, u64> = record
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default();
    holders.retain(|_, expires| *expires > now);
    holders
}

impl SharedRates {
    /// Takes one of `max` places of `name` for at most `ttl` (longer than the work it
    /// guards: a process that dies holding it frees it when it expires).
    pub async fn hold(self: &Arc<Self>, name: &str, max: u32, ttl: Duration) -> Hold {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let key = format!("slots.{}", hex::encode(Sha256::digest(name.as_bytes())));
        let holder = format!(
            "{}-{}",
            process_id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut took = false;
        let written = tokio::time::timeout(
            self.timeout,
            self.modify(&key, |current| {
                let now = now_ms();
                let mut live = holders(current, now);
                took = live.len() < usize::try_from(max).unwrap_or(usize::MAX);
                if took {
                    live.insert(holder.clone(), now + millis(ttl));
                }
                serde_json::to_string(&live).unwrap_or_default()
            }),
        )
        .await;
        match written {
            Ok(Some(_)) if took => Hold::Held(Lease {
                rates: Arc::clone(self),
                key,
                holder,
                ttl,
            }),
            Ok(Some(_)) => Hold::Full,
            _ => Hold::Unknown,
        }
    }
}

/// This process's name among holders and peers.
fn process_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().simple().to_string())
}

fn parse(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// How long a process counts as a peer after its last heartbeat.
const PEER_TTL_MS: u64 = 30_000;

/// The processes of one kind (API servers, uploaders) alive now, each heartbeating into one
/// shared record: what a process divides a shared rate by when it must fall back to counting
/// alone (each of N processes then takes 1/N, so together they stay within the rate).
pub struct Peers {
    rates: Arc<SharedRates>,
    me: String,
    count: std::sync::atomic::AtomicU32,
}

impl Peers {
    pub fn new(rates: Arc<SharedRates>) -> Self {
        Self {
            rates,
            me: process_id().to_owned(),
            count: std::sync::atomic::AtomicU32::new(1),
        }
    }

    /// Processes alive at the last heartbeat, this one included (1 before the first).
    pub fn count(&self) -> u32 {
        self.count.load(std::sync::atomic::Ordering::Relaxed).max(1)
    }

    /// Records this process as alive (and forgets the ones gone quiet); returns the count.
    /// Call every few seconds; when the record cannot be reached the last count stands.
    pub async fn heartbeat(&self) -> u32 {
        let now = now_ms();
        let written = self
            .rates
            .modify("peers", |current| {
                let mut seen: HashMap<String, u64> = current
                    .and_then(|c| serde_json::from_str(c).ok())
                    .unwrap_or_default();
                seen.retain(|_, at| now.saturating_sub(*at) < PEER_TTL_MS);
                seen.insert(self.me.clone(), now);
                serde_json::to_string(&seen).unwrap_or_default()
            })
            .await;
        if let Some(record) = written {
            let n = serde_json::from_str::<HashMap<String, u64>>(&record)
                .map_or(1, |seen| u32::try_from(seen.len()).unwrap_or(u32::MAX));
            self.count
                .store(n.max(1), std::sync::atomic::Ordering::Relaxed);
        }
        self.count()
    }

    /// Leaves the record (on a clean shutdown), so the others' share grows back at once.
    pub async fn leave(&self) {
        self.rates
            .modify("peers", |current| {
                let mut seen: HashMap<String, u64> = current
                    .and_then(|c| serde_json::from_str(c).ok())
                    .unwrap_or_default();
                seen.remove(&self.me);
                serde_json::to_string(&seen).unwrap_or_default()
            })
            .await;
    }

    /// How often to call [`Peers::heartbeat`].
    pub const EVERY: Duration = Duration::from_secs(10);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn granted(r: Result<(u64, Claim), Claim>) -> (u64, Duration, u32) {
        match r {
            Ok((tat, Claim::Granted { wait, remaining })) => (tat, wait, remaining),
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    #[test]
    fn a_burst_is_spent_then_refused_until_a_unit_frees() {
        let rate = Rate::per(3, MIN);
        let now = 1_000_000;
        let (tat, wait, left) = granted(step(0, now, rate, Duration::ZERO));
        assert_eq!((wait, left), (Duration::ZERO, 2));
        let (tat, _, left) = granted(step(tat, now, rate, Duration::ZERO));
        assert_eq!(left, 1);
        let (tat, _, left) = granted(step(tat, now, rate, Duration::ZERO));
        assert_eq!(left, 0);
        assert_eq!(
            step(tat, now, rate, Duration::ZERO),
            Err(Claim::Refused {
                retry_after: Duration::from_secs(20)
            }),
            "one unit frees every 20 s"
        );
        let (_, wait, left) = granted(step(tat, now + 20_000, rate, Duration::ZERO));
        assert_eq!((wait, left), (Duration::ZERO, 0));
    }

    #[test]
    fn a_spaced_rate_schedules_each_unit_one_interval_after_the_last() {
        let rate = Rate::spaced(Duration::from_secs(1));
        let max_wait = Duration::from_secs(2);
        let now = 5_000_000;
        let (tat, wait, _) = granted(step(0, now, rate, max_wait));
        assert_eq!(wait, Duration::ZERO);
        let (tat, wait, _) = granted(step(tat, now, rate, max_wait));
        assert_eq!(wait, Duration::from_secs(1));
        let (tat, wait, _) = granted(step(tat, now, rate, max_wait));
        assert_eq!(wait, Duration::from_secs(2));
        assert_eq!(
            step(tat, now, rate, max_wait),
            Err(Claim::Refused {
                retry_after: Duration::from_secs(3)
            })
        );
    }

    #[test]
    fn within_a_window_never_allows_more_than_n() {
        let rate = Rate::within(1_200, 5 * MIN);
        let (mut tat, mut now, mut granted) = (0, 1_000_000_u64, 0);
        // Claim as fast as allowed for one window: never more than 1,200.
        while now < 1_000_000 + 300_000 {
            match step(tat, now, rate, Duration::ZERO) {
                Ok((next, _)) => (tat, granted) = (next, granted + 1),
                Err(_) => now += 50,
            }
        }
        assert!((1_190..=1_200).contains(&granted), "{granted}");
    }

    #[test]
    fn a_block_takes_what_the_burst_has_and_counts_as_that_many_units() {
        let rate = Rate::per(10, MIN);
        let now = 1_000_000;
        // 4 of the 10 at once, then the other 6 (asked for 8), then none.
        let (tat, claim, taken) = step_up_to(0, now, rate, Duration::ZERO, 4).expect("granted");
        assert_eq!(taken, 4);
        assert_eq!(
            claim,
            Claim::Granted {
                wait: Duration::ZERO,
                remaining: 6
            }
        );
        let (tat, claim, taken) = step_up_to(tat, now, rate, Duration::ZERO, 8).expect("granted");
        assert_eq!(taken, 6);
        assert_eq!(
            claim,
            Claim::Granted {
                wait: Duration::ZERO,
                remaining: 0
            }
        );
        assert!(step_up_to(tat, now, rate, Duration::ZERO, 8).is_err());
        // The same as ten claims of one unit.
        let mut one_by_one = 0;
        for _ in 0..10 {
            one_by_one = granted(step(one_by_one, now, rate, Duration::ZERO)).0;
        }
        assert_eq!(tat, one_by_one);
    }

    #[test]
    fn an_old_state_counts_as_a_full_bucket() {
        let rate = Rate::per(1_200, 5 * MIN);
        let (_, wait, left) = granted(step(10, 99_000_000, rate, Duration::ZERO));
        assert_eq!((wait, left), (Duration::ZERO, 1_199));
    }
}
