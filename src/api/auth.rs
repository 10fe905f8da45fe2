//! Who is calling, and how often.
//!
//! A request carries a key in `X-API-Key` or `Authorization: Bearer`: either the master key
//! (every tenant, admin operations; compared in constant time) or a per-client key (one
//! client, the scopes it was given; looked up by its SHA-256, then kept in memory while a
//! watch on the CLIENTS stream vouches for it ([`KeyCache`]), so a revocation takes effect
//! at once). Every key has its own rate limit (GCRA); requests
//! without a valid key are limited per IP address, which also slows key guessing. The limit
//! holds for the whole deployment: every API process spends from the same shared rate in the
//! `limits` KV bucket ([`SharedRates`]), a block of units at a time (a second's worth, so a
//! busy key costs one round trip per block, and a process never holds more than a second of
//! the limit unspent; unspent units expire, spending the rate slower, never faster). When
//! that cannot be reached in time, a process falls
//! back to counting alone with its share of the limit (the limit ÷ the API processes alive at
//! the last heartbeat, [`Peers`]), so N processes together never allow more than the limit.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::commands::tenants::hash_key;
use crate::domain::client::{Scope, looks_like_client_key};
use crate::infra::limits::{Claim, Peers, Rate, SharedRates};
use crate::infra::watched::WatchedMap;
use crate::projections::clients as read;

/// The caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The operator: every tenant, every operation.
    Master,
    /// A per-client key.
    Client {
        client_id: Uuid,
        key_id: Uuid,
        scopes: Vec<Scope>,
        /// Whether its client is active: an inactive client's keys read but do not write.
        active: bool,
    },
}

impl Principal {
    /// Only the master key may do this.
    pub fn require_master(&self) -> Result<(), ApiError> {
        match self {
            Self::Master => Ok(()),
            Self::Client { .. } => Err(ApiError::Forbidden(
                "this operation needs the master key".into(),
            )),
        }
    }

    /// The master key, or a key of `client` with `scope`.
    pub fn require(&self, client: Uuid, scope: Scope) -> Result<(), ApiError> {
        match self {
            Self::Master => Ok(()),
            Self::Client { client_id, .. } if *client_id != client => Err(ApiError::Forbidden(
                "this key belongs to another client".into(),
            )),
            Self::Client { scopes, .. } if !scopes.contains(&scope) => Err(ApiError::Forbidden(
                format!("this key lacks the {} scope", scope.as_str()),
            )),
            Self::Client { active: false, .. } if scope == Scope::Write => {
                Err(ApiError::ClientInactive)
            }
            Self::Client { .. } => Ok(()),
        }
    }

    pub fn is_master(&self) -> bool {
        matches!(self, Self::Master)
    }

    /// The client of a client key.
    pub fn client_id(&self) -> Option<Uuid> {
        match self {
            Self::Master => None,
            Self::Client { client_id, .. } => Some(*client_id),
        }
    }
}

/// Who a key is.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// `master` (every client) or `client` (one client's key).
    pub kind: &'static str,
    /// The client of a client key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<Uuid>,
    /// What a client key may do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
}

#[utoipa::path(get, path = "/api/v1/me", tag = "keys",
    responses((status = 200, body = WhoAmI), (status = 401)),
    security(("api_key" = [])))]
/// Who the key is: the master key, or a client's key with its client and scopes (what the
/// dashboard asks first).
pub async fn whoami(principal: Principal) -> axum::Json<WhoAmI> {
    axum::Json(match principal {
        Principal::Master => WhoAmI {
            kind: "master",
            client_id: None,
            scopes: None,
        },
        Principal::Client {
            client_id, scopes, ..
        } => WhoAmI {
            kind: "client",
            client_id: Some(client_id),
            scopes: Some(scopes),
        },
    })
}

/// Work that sets `client`'s pipeline going (pages added, imports, refreshes, reprocessing)
/// needs an active client, whoever asks: an inactive client's pipeline is paused.
pub async fn require_active(db: &sqlx::PgPool, client: Uuid) -> Result<(), ApiError> {
    match read::is_active(db, client).await? {
        Some(false) => Err(ApiError::ClientInactive),
        _ => Ok(()),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// How long a request waits for the shared rate before counting alone.
const SHARED_TIMEOUT: Duration = Duration::from_millis(250);

/// Most units of a bucket's shared rate claimed at once: a busy key costs one round trip to
/// the `limits` bucket per block rather than per request.
const BLOCK_MAX: u32 = 100;

/// How long claimed units stay usable; unspent ones are then dropped (the rate is spent
/// slower, never faster).
const BLOCK_TTL: Duration = Duration::from_secs(1);

/// The deployment-wide limit, and this process's share for when it cannot be reached.
struct Shared {
    rates: Arc<SharedRates>,
    peers: Arc<Peers>,
    /// The limiter used when the shared rate cannot be reached, with the processes it was
    /// made for: a 1/N share of the limit.
    fallback: RwLock<(u32, Arc<Limiter>)>,
    /// Units each bucket has claimed from the shared rate and not spent yet.
    blocks: std::sync::Mutex<HashMap<String, Arc<Slot>>>,
}

/// A bucket's claimed units. A request spends one under a short lock and goes on; only the
/// requests that find the block empty queue behind the one claim in flight (instead of
/// racing it). Before, every request of a key queued on one async lock, block or no block:
/// a busy key's requests woke each other one by one.
#[derive(Default)]
struct Slot {
    block: std::sync::Mutex<Block>,
    claiming: tokio::sync::Mutex<()>,
}

impl Slot {
    fn block(&self) -> std::sync::MutexGuard<'_, Block> {
        self.block.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a bucket's block says about the next request.
#[derive(Debug, PartialEq)]
enum BlockNext {
    /// Spent from the block: what is left.
    Spent(u32),
    /// The shared rate refused a moment ago: wait this long.
    Refused(Duration),
    /// The shared rate could not be reached a moment ago: count alone.
    Alone,
    /// The block is spent: claim another.
    Claim,
}

/// Units claimed from a bucket's shared rate, spent by this process.
#[derive(Default)]
struct Block {
    units: u32,
    /// What the shared rate had left when the block was claimed.
    remaining: u32,
    until: Option<std::time::Instant>,
    /// Until then the shared rate refuses (nothing frees before its answer's wait).
    refused_until: Option<std::time::Instant>,
    /// Until then the shared rate is taken as unreachable: the requests behind a failed
    /// claim count alone at once instead of each waiting for a claim of its own in turn.
    unknown_until: Option<std::time::Instant>,
}

/// How long a bucket counts alone after its shared rate could not be reached.
const UNKNOWN_FOR: Duration = Duration::from_secs(1);

impl Block {
    /// Spends one unit if there is one (what is left, in the block and beyond it), else says
    /// what to do.
    fn next(&mut self) -> BlockNext {
        let now = std::time::Instant::now();
        if self.until.is_some_and(|t| t > now) && self.units > 0 {
            self.units -= 1;
            return BlockNext::Spent(self.remaining.saturating_add(self.units));
        }
        if let Some(until) = self.refused_until.filter(|t| *t > now) {
            return BlockNext::Refused(until - now);
        }
        if self.unknown_until.is_some_and(|t| t > now) {
            return BlockNext::Alone;
        }
        BlockNext::Claim
    }
}

/// Keys and limits.
pub struct Auth {
    master_hash: [u8; 32],
    limiter: Arc<Limiter>,
    per_minute: u32,
    shared: Option<Shared>,
    keys: Option<KeyCache>,
}

/// Most resolved client keys kept in memory.
const KEYS_MAX: usize = 100_000;

/// Client keys resolved before, kept in memory while a watch on the CLIENTS stream drops a
/// client's keys at any event of that client (a key revoked, the client deactivated, updated
/// or deleted), from any process. Used only while this process is connected to NATS (a
/// disconnected one cannot hear of a revocation), and emptied when it reconnects; the API's
/// own revocations drop the keys before answering ([`Auth::forget_client`]).
struct KeyCache {
    /// Principals by key hash, from their client's events.
    map: WatchedMap<String, Principal, Uuid>,
    nats: async_nats::Client,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth(limit {}/min)", self.per_minute)
    }
}

impl Auth {
    /// `master_key` is hashed at once; `per_minute` requests per key (and per IP without one).
    pub fn new(master_key: &str, per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        Self {
            master_hash: Sha256::digest(master_key.as_bytes()).into(),
            limiter: limiter(per_minute),
            per_minute,
            shared: None,
            keys: None,
        }
    }

    /// Keeps resolved client keys in memory, watched as [`KeyCache`] says.
    pub fn with_key_cache(mut self, nats: &crate::infra::nats::Nats) -> Self {
        let map = WatchedMap::new(KEYS_MAX);
        tokio::spawn(watch_clients(
            map.clone(),
            nats.js.clone(),
            nats.reconnects(),
        ));
        self.keys = Some(KeyCache {
            map,
            nats: nats.client.clone(),
        });
        self
    }

    /// Drops what is kept of `client`'s keys (after the API revoked one, or changed or
    /// deleted the client: the watch would too, a moment later).
    pub fn forget_client(&self, client: Uuid) {
        if let Some(keys) = &self.keys {
            keys.map.forget(|_, p| p.client_id() == Some(client));
        }
    }

    /// Spends from the deployment-wide rate in `rates` (scope `api`) instead of counting in
    /// this process alone; registers this process among the API processes every
    /// [`Peers::EVERY`] while the `Auth` lives.
    pub fn with_shared(mut self, rates: SharedRates) -> Self {
        let rates = Arc::new(rates.with_timeout(SHARED_TIMEOUT));
        let peers = Arc::new(Peers::new(Arc::clone(&rates)));
        tokio::spawn(heartbeat(Arc::downgrade(&peers)));
        self.shared = Some(Shared {
            rates,
            peers,
            fallback: RwLock::new((1, Arc::clone(&self.limiter))),
            blocks: std::sync::Mutex::default(),
        });
        self
    }

    fn is_master(&self, presented: &str) -> bool {
        // Hashing first makes the comparison independent of the presented key's length.
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(presented.ct_eq(&self.master_hash))
    }

    async fn resolve(
        &self,
        db: &sqlx::PgPool,
        presented: &str,
    ) -> Result<Option<Principal>, ApiError> {
        if self.is_master(presented) {
            return Ok(Some(Principal::Master));
        }
        if !looks_like_client_key(presented) {
            return Ok(None);
        }
        let hash = hash_key(presented);
        let keys = self
            .keys
            .as_ref()
            .filter(|k| k.nats.connection_state() == async_nats::connection::State::Connected);
        let miss = match keys.map(|k| k.map.get(&hash)) {
            Some(Ok(principal)) => return Ok(Some(principal)),
            Some(Err(miss)) => Some(miss),
            None => None,
        };
        let Some(row) = read::find_live_key_by_hash(db, &hash).await? else {
            return Ok(None);
        };
        let scopes = row.scopes.iter().filter_map(|s| Scope::parse(s)).collect();
        let principal = Principal::Client {
            client_id: row.client_id,
            key_id: row.id,
            scopes,
            active: row.client_active,
        };
        if let (Some(keys), Some(miss)) = (keys, miss) {
            let read_at = u64::try_from(row.clients_checkpoint).unwrap_or(0);
            keys.map
                .keep(miss, hash, principal.clone(), &row.client_id, read_at);
        }
        Ok(Some(principal))
    }

    /// Spends one request of `bucket`: remaining requests, or how long to wait. From the
    /// shared rate, a block of units at a time (a second's worth, at most [`BLOCK_MAX`]).
    async fn spend(&self, bucket: &str) -> Result<u32, Duration> {
        let Some(shared) = &self.shared else {
            return check(&self.limiter, bucket);
        };
        let slot = {
            let mut blocks = shared.blocks.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(blocks.entry(bucket.to_owned()).or_default())
        };
        // The block's lock is let go before anything else is locked (`fallback` may write
        // the fallback limiter, which `forget_idle` holds while it looks at the blocks).
        let decided = |slot: &Slot| {
            let next = slot.block().next();
            match next {
                BlockNext::Spent(remaining) => Some(Ok(remaining)),
                BlockNext::Refused(wait) => Some(Err(wait)),
                BlockNext::Alone => Some(check(&self.fallback(shared), bucket)),
                BlockNext::Claim => None,
            }
        };
        if let Some(decided) = decided(&slot) {
            return decided;
        }
        let _claiming = slot.claiming.lock().await;
        // The claim this request waited for may have filled the block.
        if let Some(decided) = decided(&slot) {
            return decided;
        }
        let rate = Rate::per(self.per_minute, Duration::from_secs(60));
        let size = (self.per_minute / 60).clamp(1, BLOCK_MAX);
        let claim = shared
            .rates
            .claim_up_to(bucket, rate, Duration::ZERO, size)
            .await;
        let mut block = slot.block();
        match claim {
            (Claim::Granted { remaining, .. }, taken) => {
                *block = Block {
                    units: taken.saturating_sub(1),
                    remaining,
                    until: Some(std::time::Instant::now() + BLOCK_TTL),
                    ..Block::default()
                };
                Ok(remaining.saturating_add(block.units))
            }
            (Claim::Refused { retry_after }, _) => {
                block.refused_until = Some(std::time::Instant::now() + retry_after);
                Err(retry_after)
            }
            (Claim::Unknown, _) => {
                block.unknown_until = Some(std::time::Instant::now() + UNKNOWN_FOR);
                drop(block);
                check(&self.fallback(shared), bucket)
            }
        }
    }

    /// This process's share of the limit: the limit ÷ the API processes alive.
    fn fallback(&self, shared: &Shared) -> Arc<Limiter> {
        let peers = shared.peers.count();
        {
            let current = shared.fallback.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == peers {
                return Arc::clone(&current.1);
            }
        }
        let share = limiter((self.per_minute / peers).max(1));
        *shared.fallback.write().unwrap_or_else(|e| e.into_inner()) = (peers, Arc::clone(&share));
        share
    }

    /// Forgets buckets that are full again and spent blocks (bounded memory with many keys
    /// and addresses).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        if let Some(shared) = &self.shared {
            let fallback = shared.fallback.read().unwrap_or_else(|e| e.into_inner());
            fallback.1.retain_recent();
            let now = std::time::Instant::now();
            let mut blocks = shared.blocks.lock().unwrap_or_else(|e| e.into_inner());
            // A slot being claimed for is in use: keep it; an idle one past its time holds
            // nothing.
            blocks.retain(|_, slot| {
                slot.claiming.try_lock().is_err() || {
                    let b = slot.block();
                    [b.until, b.refused_until, b.unknown_until]
                        .iter()
                        .any(|t| t.is_some_and(|t| t > now))
                }
            });
        }
    }

    fn headers(&self, headers: &mut HeaderMap, remaining: u32) {
        // Time until the bucket is full again: each spent request refills in 60/limit s.
        let spent = self.per_minute.saturating_sub(remaining);
        let reset = (u64::from(spent) * 60).div_ceil(u64::from(self.per_minute));
        for (name, value) in [
            ("x-ratelimit-limit", self.per_minute.to_string()),
            ("x-ratelimit-remaining", remaining.to_string()),
            ("x-ratelimit-reset", reset.to_string()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }
}

fn limiter(per_minute: u32) -> Arc<Limiter> {
    let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
    Arc::new(RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>())
}

/// Spends one request of `bucket` in a process-local limiter.
fn check(limiter: &Limiter, bucket: &str) -> Result<u32, Duration> {
    match limiter.check_key(&bucket.to_owned()) {
        Ok(snapshot) => Ok(snapshot.remaining_burst_capacity()),
        Err(not_until) => Err(not_until.wait_time_from(limiter.clock().now())),
    }
}

/// Follows the CLIENTS stream from now on, dropping a client's kept keys at each of its
/// events; starts over (from an empty map) when the consumer fails or NATS reconnects.
async fn watch_clients(
    map: WatchedMap<String, Principal, Uuid>,
    js: async_nats::jetstream::Context,
    mut reconnects: tokio::sync::watch::Receiver<u64>,
) {
    use async_nats::jetstream::consumer;
    use futures::StreamExt;
    loop {
        let stream = js
            .get_stream(crate::events::StreamName::Clients.name())
            .await;
        let messages = match stream {
            Ok(stream) => {
                let config = consumer::pull::OrderedConfig {
                    deliver_policy: consumer::DeliverPolicy::New,
                    ..Default::default()
                };
                match stream.create_consumer(config).await {
                    Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        // Where the stream is now, read after the consumer exists: earlier changes are not
        // delivered one by one, so a read is kept only if its projection had applied them.
        let floor = match messages {
            Ok(_) => {
                crate::infra::nats::last_sequence(&js, crate::events::StreamName::Clients.name())
                    .await
            }
            Err(ref e) => Err(e.clone()),
        };
        match messages.and_then(|m| floor.map(|f| (m, f))) {
            Ok((mut messages, floor)) => {
                map.watching_from(floor);
                loop {
                    tokio::select! {
                        message = messages.next() => {
                            let Some(Ok(message)) = message else { break };
                            let Ok(info) = message.info() else { break };
                            // `clients.<event>.<client_id>`: that client's keys go.
                            let client = message.subject.rsplit('.').next().and_then(|id| id.parse::<Uuid>().ok());
                            match client {
                                Some(client) => map.changed(client, info.stream_sequence, |_, p| {
                                    p.client_id() == Some(client)
                                }),
                                // Not a client's event: nothing read before it is kept.
                                None => map.watching_from(info.stream_sequence),
                            }
                        }
                        changed = reconnects.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch the CLIENTS stream for key changes"),
        }
        map.set_watching(false);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Keeps this process in the count of API processes while `peers` lives.
async fn heartbeat(peers: Weak<Peers>) {
    loop {
        let Some(alive) = peers.upgrade() else { return };
        let n = alive.heartbeat().await;
        metrics::gauge!("aicache_api_processes").set(f64::from(n));
        drop(alive);
        tokio::time::sleep(Peers::EVERY).await;
    }
}

/// The key a request presents, from `X-API-Key` or `Authorization: Bearer`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Middleware for `/api/v1`: authenticates, rate-limits, and records the principal.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let auth: &Arc<Auth> = &state.auth;
    let ip: Option<IpAddr> = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let principal = match presented_key(req.headers()) {
        Some(key) if !key.is_empty() => match auth.resolve(&state.db, key).await {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        },
        _ => None,
    };
    let bucket = match &principal {
        Some(Principal::Master) => "master".to_owned(),
        Some(Principal::Client { key_id, .. }) => format!("key:{key_id}"),
        None => format!(
            "ip:{}",
            ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
        ),
    };
    let remaining = match auth.spend(&bucket).await {
        Ok(remaining) => remaining,
        Err(wait) => {
            let mut res = ApiError::RateLimited { retry_after: wait }.into_response();
            auth.headers(res.headers_mut(), 0);
            return res;
        }
    };
    let mut res = match principal {
        Some(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        None => ApiError::Unauthorized.into_response(),
    };
    auth.headers(res.headers_mut(), remaining);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_from_either_header() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer  abc "));
        assert_eq!(presented_key(&h), Some("abc"));
        h.insert("x-api-key", HeaderValue::from_static("xyz"));
        assert_eq!(presented_key(&h), Some("xyz"));
        let mut basic = HeaderMap::new();
        basic.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&basic), None);
    }

    #[test]
    fn only_the_exact_master_key_is_the_master() {
        let auth = Auth::new("s3cret-master", 10);
        assert!(auth.is_master("s3cret-master"));
        assert!(!auth.is_master("s3cret-maste"));
        assert!(!auth.is_master(""));
    }

    #[test]
    fn scopes_and_tenants_are_enforced() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let reader = Principal::Client {
            client_id: a,
            key_id: Uuid::new_v4(),
            scopes: vec![Scope::Read],
            active: true,
        };
        assert!(reader.require(a, Scope::Read).is_ok());
        assert!(reader.require(a, Scope::Write).is_err());
        assert!(reader.require(b, Scope::Read).is_err());
        assert!(reader.require_master().is_err());
        assert!(Principal::Master.require(b, Scope::Write).is_ok());
    }

    #[test]
    fn a_block_is_spent_unit_by_unit_until_it_runs_out_or_expires() {
        let now = std::time::Instant::now();
        let mut block = Block {
            units: 2,
            remaining: 10,
            until: Some(now + Duration::from_secs(60)),
            ..Block::default()
        };
        assert_eq!(
            block.next(),
            BlockNext::Spent(11),
            "one left here, ten in the shared rate"
        );
        assert_eq!(block.next(), BlockNext::Spent(10));
        assert_eq!(block.next(), BlockNext::Claim, "spent: claim again");
        let mut expired = Block {
            units: 5,
            until: Some(now),
            ..Block::default()
        };
        assert_eq!(expired.next(), BlockNext::Claim, "unspent units expire");
        assert_eq!(Block::default().next(), BlockNext::Claim);
        let mut refused = Block {
            refused_until: Some(now + Duration::from_secs(5)),
            ..Block::default()
        };
        assert!(matches!(refused.next(), BlockNext::Refused(w) if w <= Duration::from_secs(5)));
        let mut unknown = Block {
            unknown_until: Some(now + Duration::from_secs(5)),
            ..Block::default()
        };
        assert_eq!(unknown.next(), BlockNext::Alone, "counts alone for a while");
    }

    #[tokio::test]
    async fn the_limit_runs_out_and_reports_a_wait() {
        let auth = Auth::new("m", 3);
        assert_eq!(auth.spend("k").await, Ok(2));
        assert_eq!(auth.spend("k").await, Ok(1));
        assert_eq!(auth.spend("k").await, Ok(0));
        let wait = auth.spend("k").await.expect_err("limited");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert_eq!(auth.spend("other").await, Ok(2), "buckets are per key");
    }
}
