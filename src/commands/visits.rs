//! Recording visits: validate what the edge reports, classify the user agent, verify the
//! claimed identity against the operator's ranges, replace the IP by its HMAC, and publish
//! them as `visits.batch_recorded` events, one per client and report (or per part of a large
//! one).
//!
//! Each visit gets an id that is a function of what was reported (the Worker's own visit id
//! when it sends one, else the visit's fields): the row id of the projection, so a visit is
//! counted once forever however often it is reported. A batch event's `Nats-Msg-Id` is a
//! function of the ids in it: a report posted twice is stored once inside the stream's
//! duplicate window, and the second post is told its visits were duplicates.

use crate::domain::bots::rdns::documented_domains;
use crate::domain::webbotauth;
use crate::infra::rdns::ReverseDns;
use crate::infra::robots_store::RobotsRules;
use futures::StreamExt;
use std::collections::HashSet;
use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::bots::{Classification, Classifier, Verification, VisitorType, verify};
use crate::domain::ids::{ClientId, PageId};
use crate::domain::policy::Price;
use crate::domain::url::NormalizedUrl;
use crate::events::Event;
use crate::events::visits::{BatchedVisit, FormatServed, VisitEvent, VisitRecorded, VisitsBatch};
use crate::infra::bot_ranges::BotRanges;
use crate::infra::publish::{Outgoing, PublishError, Publisher};

/// Most visits in one batch.
pub const MAX_BATCH: usize = 1_000;
/// Longest user agent and referrer kept; longer ones are cut (a visit is never refused for it).
pub const MAX_HEADER_CHARS: usize = 1_024;
/// How far in the future a timestamp may be (clock skew between the edge and us).
pub const MAX_FUTURE: Duration = Duration::minutes(5);

/// One visit as the edge reports it.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VisitInput {
    /// The reporter's own id for the visit: a retried report (the same id and timestamp)
    /// counts once. Without one, a visit identical in every field (to the millisecond)
    /// counts once.
    #[serde(default)]
    pub id: Option<Uuid>,
    /// The client the visit belongs to: required with the master key, else the key's client.
    #[serde(default)]
    pub client_id: Option<Uuid>,
    /// The requested URL.
    pub url: String,
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The visitor's IP address; only its HMAC is stored.
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub referrer: Option<String>,
    /// When the request arrived (RFC 3339).
    pub timestamp: DateTime<Utc>,
    /// What the edge answered with: `markdown`, `html` or `origin` (passed through).
    #[serde(default)]
    pub format_served: Option<FormatServed>,
    /// The HTTP status the edge answered with.
    #[serde(default)]
    pub status: Option<u16>,
    /// The length of the body the edge answered with (bytes served).
    #[serde(default)]
    pub bytes: Option<u64>,
    /// The `CF-Worker` header of the request, present when another Cloudflare Worker made it.
    #[serde(default)]
    pub cf_worker: Option<String>,
    /// What the visitor was charged under the client's policy (`USD 0.01`).
    #[serde(default)]
    pub charged_price: Option<String>,
    /// The agent (`https://chatgpt.com`) whose Web Bot Auth signature the reporting edge
    /// verified (the Worker does, with the npm `web-bot-auth` package): the visit's
    /// verification is then `signature`. An origin (`https://host[:port]`); the reporter is
    /// the client's own edge, trusted for this as for what it served.
    #[serde(default)]
    pub signature_agent: Option<String>,
}

/// Why one visit was refused (the API's error catalogue has each as a code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// `client_id` is not the client of the key.
    ForbiddenClient,
    /// The master key reports without `client_id`.
    ClientIdRequired,
    /// The client does not exist.
    UnknownClient,
    /// The URL is not on the client's domain.
    OffDomain,
    InvalidUrl,
    InvalidTimestamp,
    InvalidStatus,
    InvalidIp,
    InvalidPrice,
    InvalidSignatureAgent,
}

impl RejectCode {
    pub const ALL: [RejectCode; 10] = [
        Self::ForbiddenClient,
        Self::ClientIdRequired,
        Self::UnknownClient,
        Self::OffDomain,
        Self::InvalidUrl,
        Self::InvalidTimestamp,
        Self::InvalidStatus,
        Self::InvalidIp,
        Self::InvalidPrice,
        Self::InvalidSignatureAgent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ForbiddenClient => "forbidden_client",
            Self::ClientIdRequired => "client_id_required",
            Self::UnknownClient => "unknown_client",
            Self::OffDomain => "off_domain",
            Self::InvalidUrl => "invalid_url",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::InvalidStatus => "invalid_status",
            Self::InvalidIp => "invalid_ip",
            Self::InvalidPrice => "invalid_price",
            Self::InvalidSignatureAgent => "invalid_signature_agent",
        }
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one visit was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema, thiserror::Error)]
#[error("{code}: {message}")]
pub struct VisitRejection {
    #[schema(value_type = String)]
    pub code: RejectCode,
    pub message: String,
}

pub fn reject(code: RejectCode, message: impl Into<String>) -> VisitRejection {
    VisitRejection {
        code,
        message: message.into(),
    }
}

/// The client a visit is recorded for: the key's own, or the one the master key names.
fn reporting_client(reporter: Reporter, given: Option<Uuid>) -> Result<Uuid, VisitRejection> {
    match (reporter, given) {
        (Reporter::Client(own), None) => Ok(own),
        (Reporter::Client(own), Some(given)) if given == own => Ok(own),
        (Reporter::Client(_), Some(_)) => Err(reject(
            RejectCode::ForbiddenClient,
            "client_id is not the client of this key",
        )),
        (Reporter::Master, Some(given)) => Ok(given),
        (Reporter::Master, None) => Err(reject(
            RejectCode::ClientIdRequired,
            "client_id is required with the master key",
        )),
    }
}

/// Checks the timestamp and status, and parses the IP address (if any).
fn check_fields(input: &VisitInput, now: DateTime<Utc>) -> Result<Option<IpAddr>, VisitRejection> {
    if input.timestamp > now + MAX_FUTURE {
        return Err(reject(
            RejectCode::InvalidTimestamp,
            format!("timestamp {} is in the future", input.timestamp),
        ));
    }
    if let Some(status) = input.status
        && !(100..=599).contains(&status)
    {
        return Err(reject(
            RejectCode::InvalidStatus,
            format!("status {status} is not an HTTP status"),
        ));
    }
    if let Some(price) = &input.charged_price
        && price.parse::<Price>().is_err()
    {
        return Err(reject(
            RejectCode::InvalidPrice,
            format!("charged_price {price:?} is not a price such as \"USD 0.01\""),
        ));
    }
    if let Some(agent) = &input.signature_agent
        && webbotauth::agent_origin(agent).as_deref() != Some(agent.as_str())
    {
        return Err(reject(
            RejectCode::InvalidSignatureAgent,
            format!(
                "signature_agent {agent:?} is not an agent's origin such as \"https://chatgpt.com\""
            ),
        ));
    }
    match input.ip.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => s
            .parse::<IpAddr>()
            .map(Some)
            .map_err(|_| reject(RejectCode::InvalidIp, format!("{s:?} is not an IP address"))),
        None => Ok(None),
    }
}

/// The visit's deduplication key: its id when the reporter gave one, else a hash of what
/// makes it this visit (a retried report is stored once).
fn dedup_key(
    client: Uuid,
    url: &NormalizedUrl,
    input: &VisitInput,
    user_agent: Option<&str>,
    referrer: Option<&str>,
) -> String {
    if let Some(id) = input.id {
        return format!("visit:{client}:{id}");
    }
    let mut h = Sha256::new();
    for part in [
        url.as_str(),
        user_agent.unwrap_or(""),
        input.ip.as_deref().unwrap_or(""),
        referrer.unwrap_or(""),
        &input
            .timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("visit:{client}:{}", hex::encode(h.finalize()))
}

/// A visit's id: UUIDv7's layout, with the visit's own time (to the millisecond) and the
/// rest of its bits from `dedup_key`'s hash. A retried report (the same id or fields, the
/// same time) gets the same id, so it is stored once; and the visits' primary key grows at
/// its right edge, as the visits arrive, where a hash-only id would write to a random page
/// of the index for every visit (inserting took 20-25% longer, and after each checkpoint
/// every such page is written to the WAL whole again).
fn visit_id(dedup_key: &str, at: DateTime<Utc>) -> Uuid {
    let hash = Sha256::digest(dedup_key.as_bytes());
    let mut rest = [0u8; 10];
    rest.copy_from_slice(&hash[..10]);
    // Reported times are validated; one before 1970 would not be a visit to record.
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &rest).into_uuid()
}

/// The HMAC-SHA256 key for IP addresses.
#[derive(Clone)]
pub struct IpHasher {
    /// The HMAC with its key already absorbed: each hash clones it rather than hashing the
    /// key's pads again (half the work of a visit's hash).
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for IpHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IpHasher(..)")
    }
}

impl IpHasher {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            keyed: <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
                .expect("HMAC takes keys of any length"),
        }
    }

    /// The raw HMAC of `data`: derives a key from another secret.
    pub fn hash_secret(&self, data: &[u8]) -> Vec<u8> {
        let mut mac = self.keyed.clone();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    /// Hex HMAC-SHA256 of the address in its canonical spelling (IPv4-mapped IPv6 as IPv4).
    pub fn hash(&self, ip: IpAddr) -> String {
        use std::io::Write;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        // The address spelled into a stack buffer (at most 39 bytes), the digest hex-encoded
        // into another: one allocation per visit, the answer's.
        let mut spelled = [0u8; 64];
        let mut cursor = std::io::Cursor::new(&mut spelled[..]);
        write!(cursor, "{ip}").expect("an address fits in 64 bytes");
        let len = usize::try_from(cursor.position()).unwrap_or(0);
        let mut mac = self.keyed.clone();
        mac.update(&spelled[..len]);
        let mut hex = [0u8; 64];
        hex::encode_to_slice(mac.finalize().into_bytes(), &mut hex)
            .expect("64 hex digits for 32 bytes");
        String::from_utf8_lossy(&hex).into_owned()
    }
}

/// Reverse DNS checks of one batch made at once.
const RDNS_AT_ONCE: usize = 16;

/// Records visits.
#[derive(Clone)]
pub struct Visits {
    publisher: Publisher,
    ranges: BotRanges,
    ip_hasher: IpHasher,
    robots: Option<RobotsRules>,
    rdns: Option<ReverseDns>,
}

/// What a batch came to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct BatchOutcome {
    /// Visits stored now.
    pub accepted: usize,
    /// Visits already stored by an earlier post of the same report.
    pub duplicates: usize,
    /// Visits refused, by their position in the batch.
    pub rejected: Vec<Rejected>,
}

/// A refused visit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Rejected {
    pub index: usize,
    #[schema(value_type = String)]
    pub code: RejectCode,
    pub message: String,
}

/// Who reports: the client of the key, or any client (the master key).
#[derive(Clone, Copy, Debug)]
pub enum Reporter {
    Client(Uuid),
    Master,
}

/// The client's domain rule, looked up by the caller.
pub trait DomainRule: Sync {
    /// Whether `url` is on `client`'s site; `Err` names why not (unknown client, off-domain).
    fn check(&self, client: Uuid, url: &NormalizedUrl) -> Result<(), VisitRejection>;
}

impl Visits {
    pub fn new(publisher: Publisher, ranges: BotRanges, ip_hasher: IpHasher) -> Self {
        Self {
            publisher,
            ranges,
            ip_hasher,
            robots: None,
            rdns: None,
        }
    }

    /// Verifies bots of operators that document it by forward-confirmed reverse DNS.
    pub fn with_rdns(mut self, rdns: ReverseDns) -> Self {
        self.rdns = Some(rdns);
        self
    }

    /// The verification level of a request at the edge, before it is answered: the ranges'
    /// verdict, else forward-confirmed reverse DNS where the operator documents it.
    pub async fn verification_at_edge(
        &self,
        classification: &Classification,
        ip: IpAddr,
    ) -> Verification {
        let level = verify(classification, Some(ip), &self.ranges.get());
        self.confirmed(classification, Some(ip), level).await
    }

    /// `level`, raised to `rdns` when reverse DNS confirms a claimed (or range-mismatched)
    /// identity.
    async fn confirmed(
        &self,
        classification: &Classification,
        ip: Option<IpAddr>,
        level: Verification,
    ) -> Verification {
        let (Some(rdns), Some(ip)) = (&self.rdns, ip) else {
            return level;
        };
        if !matches!(level, Verification::Claimed | Verification::IpMismatch) {
            return level;
        }
        match documented_domains(classification) {
            Some(domains) if rdns.confirms(ip, domains).await => Verification::Rdns,
            _ => level,
        }
    }

    /// What is checked after validation, with lookups: reverse DNS for bots whose operator
    /// documents it ([`Visits::with_rdns`]), then robots.txt compliance.
    pub async fn enrich(&self, ready: &mut [ReadyVisit]) {
        if self.rdns.is_some() {
            // One lookup per address at a time, a few addresses at once.
            let mut checks = Vec::with_capacity(ready.len());
            for r in ready.iter() {
                let v = &r.visit.visit;
                let classification = Classification {
                    visitor_type: v.visitor_type,
                    bot_name: v.bot_name.clone(),
                    operator: v.operator.clone(),
                    category: v.category.clone(),
                };
                let (ip, level) = (r.ip, v.verification);
                checks.push(async move { self.confirmed(&classification, ip, level).await });
            }
            let levels: Vec<Verification> = futures::stream::iter(checks)
                .buffered(RDNS_AT_ONCE)
                .collect()
                .await;
            for (r, level) in ready.iter_mut().zip(levels) {
                r.visit.visit.verification = level;
            }
        }
        self.judge_robots(ready).await;
    }

    /// Judges named bots' visits against their sites' robots.txt files.
    pub fn with_robots(mut self, robots: RobotsRules) -> Self {
        self.robots = Some(robots);
        self
    }

    /// Sets each named bot's visit's robots.txt compliance (left unknown without rules, or
    /// when the site's file has not been read).
    async fn judge_robots(&self, ready: &mut [ReadyVisit]) {
        let Some(robots) = &self.robots else { return };
        for r in ready {
            let visit = &mut r.visit.visit;
            let Some(token) = visit.bot_name.as_deref() else {
                continue;
            };
            let Ok(url) = url::Url::parse(&visit.url) else {
                continue;
            };
            visit.robots = robots.compliance(&url, token).await;
        }
    }

    /// How far `classification`'s claimed identity holds for a request from `ip` (the edge
    /// needs it before answering: policy rules may require a level).
    pub fn verification(
        &self,
        classification: &Classification,
        ip: Option<IpAddr>,
    ) -> Verification {
        verify(classification, ip, &self.ranges.get())
    }

    /// Turns one reported visit into its event.
    pub fn prepare(
        &self,
        reporter: Reporter,
        input: VisitInput,
        rule: &dyn DomainRule,
        now: DateTime<Utc>,
    ) -> Result<ReadyVisit, VisitRejection> {
        self.prepare_classified(reporter, input, None, rule, now)
    }

    /// [`Visits::prepare`] for a visit whose user agent the caller may have classified already
    /// (the built-in edge does, to decide what to serve); `None` classifies it here.
    pub fn prepare_classified(
        &self,
        reporter: Reporter,
        input: VisitInput,
        classified: Option<Classification>,
        rule: &dyn DomainRule,
        now: DateTime<Utc>,
    ) -> Result<ReadyVisit, VisitRejection> {
        let client = reporting_client(reporter, input.client_id)?;
        let url = NormalizedUrl::parse(&input.url)
            .map_err(|e| reject(RejectCode::InvalidUrl, format!("url: {e}")))?;
        rule.check(client, &url)?;
        let ip = check_fields(&input, now)?;
        let user_agent = input.user_agent.as_deref().map(cut);
        let referrer = input
            .referrer
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(cut);
        let mut classification = classified
            .unwrap_or_else(|| Classifier::shipped().classify(user_agent.as_deref().unwrap_or("")));
        if let Some(agent) = &input.signature_agent {
            classification = webbotauth::attribute(classification, agent);
        }
        if input.cf_worker.is_some() {
            classification.visitor_type = VisitorType::WorkerProxy;
        }
        let verification = match &input.signature_agent {
            Some(_) => Verification::Signature,
            None => verify(&classification, ip, &self.ranges.get()),
        };
        let client_id = ClientId::from_uuid(client);
        let dedup = dedup_key(
            client,
            &url,
            &input,
            user_agent.as_deref(),
            referrer.as_deref(),
        );
        Ok(ReadyVisit {
            ip,
            client: client_id,
            visit: BatchedVisit {
                id: visit_id(&dedup, input.timestamp),
                page_id: PageId::derive(client_id, &url),
                visit: VisitRecorded {
                    url: url.to_string(),
                    visitor_type: classification.visitor_type,
                    bot_name: classification.bot_name,
                    operator: classification.operator,
                    category: classification.category,
                    verification,
                    user_agent,
                    referrer,
                    ip_hash: ip.map(|ip| self.ip_hasher.hash(ip)),
                    format_served: input.format_served.unwrap_or(FormatServed::Unknown),
                    status: input.status,
                    bytes: input.bytes,
                    visited_at: input.timestamp,
                    charged_price: input
                        .charged_price
                        .and_then(|p| p.parse::<Price>().ok())
                        .map(|p| p.to_string()),
                    signature_agent: input.signature_agent,
                    robots: None,
                },
            },
        })
    }

    /// Validates and publishes a batch; refused visits are reported, the others stored.
    pub async fn record(
        &self,
        reporter: Reporter,
        inputs: Vec<VisitInput>,
        rule: &dyn DomainRule,
    ) -> Result<BatchOutcome, PublishError> {
        let now = Utc::now();
        let mut outcome = BatchOutcome::default();
        let mut ready = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.into_iter().enumerate() {
            match self.prepare(reporter, input, rule, now) {
                Ok(out) => ready.push(out),
                Err(e) => outcome.rejected.push(Rejected {
                    index,
                    code: e.code,
                    message: e.message,
                }),
            }
        }
        self.enrich(&mut ready).await;
        let batches = VisitBatches::new(ready);
        let duplicates = self.publish(&batches).await?;
        outcome.duplicates = duplicates.iter().filter(|d| **d).count();
        outcome.accepted = duplicates.len() - outcome.duplicates;
        metrics::counter!("aicache_visits_rejected_total").increment(outcome.rejected.len() as u64);
        Ok(outcome)
    }

    /// Publishes visits in their batch events; returns, for each visit in the order given,
    /// whether it was a duplicate (repeated in the report, or its event already stored).
    /// Publishing the same batches again is safe.
    pub async fn publish(&self, batches: &VisitBatches) -> Result<Vec<bool>, PublishError> {
        let published = self.publisher.publish_all(&batches.events).await?;
        let mut duplicate = batches.repeated.clone();
        for (members, published) in batches.members.iter().zip(published) {
            if published.duplicate {
                for &i in members {
                    duplicate[i] = true;
                }
            }
        }
        let accepted = duplicate.iter().filter(|d| !**d).count();
        metrics::counter!("aicache_visits_recorded_total").increment(accepted as u64);
        Ok(duplicate)
    }
}

/// A valid visit with its id, ready to publish.
#[derive(Clone, Debug)]
pub struct ReadyVisit {
    client: ClientId,
    visit: BatchedVisit,
    /// The visitor's address (only its HMAC travels), for checks made after validation.
    ip: Option<IpAddr>,
}

/// Most bytes of one `visits.batch_recorded` event (estimated from above, see
/// [`encoded_len`]): a larger report is published as several events. Well under NATS's
/// default 1 MiB payload and the VISITS stream's own message limit.
pub const MAX_BATCH_EVENT_BYTES: usize = 256 * 1024;

/// Bytes a visit adds to a batch event beside its strings: keys, ids, enums, the time and the
/// IP's HMAC (about 450 in practice).
const VISIT_OVERHEAD_BYTES: usize = 640;

/// Visits grouped into the events that carry them: one per client, split by size.
#[derive(Debug)]
pub struct VisitBatches {
    events: Vec<Outgoing<VisitEvent>>,
    /// The visits (their index in the input) each event carries.
    members: Vec<Vec<usize>>,
    /// Visits repeated within the input (the same id seen before): not published again.
    repeated: Vec<bool>,
}

impl VisitBatches {
    pub fn new(ready: Vec<ReadyVisit>) -> Self {
        let mut repeated = vec![false; ready.len()];
        let mut seen = HashSet::with_capacity(ready.len());
        let mut by_client: Vec<(ClientId, Vec<(usize, BatchedVisit)>)> = Vec::new();
        for (i, r) in ready.into_iter().enumerate() {
            if !seen.insert(r.visit.id) {
                repeated[i] = true;
                continue;
            }
            match by_client.iter_mut().find(|(c, _)| *c == r.client) {
                Some((_, visits)) => visits.push((i, r.visit)),
                None => by_client.push((r.client, vec![(i, r.visit)])),
            }
        }
        let mut batches = Self {
            events: Vec::new(),
            members: Vec::new(),
            repeated,
        };
        for (client, visits) in by_client {
            let mut part = Vec::new();
            let mut bytes = 0;
            for (i, visit) in visits {
                let len = encoded_len(&visit);
                if !part.is_empty() && bytes + len > MAX_BATCH_EVENT_BYTES {
                    batches.push(client, std::mem::take(&mut part));
                    bytes = 0;
                }
                bytes += len;
                part.push((i, visit));
            }
            batches.push(client, part);
        }
        batches
    }

    fn push(&mut self, client: ClientId, part: Vec<(usize, BatchedVisit)>) {
        let mut ids = Sha256::new();
        let mut members = Vec::with_capacity(part.len());
        let mut visits = Vec::with_capacity(part.len());
        for (i, visit) in part {
            ids.update(visit.id.as_bytes());
            members.push(i);
            visits.push(visit);
        }
        let key = format!("visits:{client}:{}", hex::encode(ids.finalize()));
        let event = Event::new(
            client,
            None,
            VisitEvent::BatchRecorded(VisitsBatch { visits }),
        );
        self.events.push(Outgoing::keyed(event, key));
        self.members.push(members);
    }

    /// How many visits were given.
    pub fn len(&self) -> usize {
        self.repeated.len()
    }

    pub fn is_empty(&self) -> bool {
        self.repeated.is_empty()
    }

    /// How many events carry the visits.
    pub fn events(&self) -> usize {
        self.events.len()
    }
}

/// An upper bound of the bytes `visit` takes in its event's JSON: its strings as JSON escapes
/// them, plus [`VISIT_OVERHEAD_BYTES`]. Cheaper than encoding each visit twice.
fn encoded_len(visit: &BatchedVisit) -> usize {
    let v = &visit.visit;
    let escaped = |s: &str| -> usize {
        s.bytes()
            .map(|b| match b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
                0..=0x1f => 6,
                _ => 1,
            })
            .sum()
    };
    [
        Some(v.url.as_str()),
        v.bot_name.as_deref(),
        v.operator.as_deref(),
        v.category.as_deref(),
        v.user_agent.as_deref(),
        v.referrer.as_deref(),
    ]
    .into_iter()
    .flatten()
    .map(escaped)
    .sum::<usize>()
        + VISIT_OVERHEAD_BYTES
}

/// At most [`MAX_HEADER_CHARS`] characters.
/// A header value as stored: at most [`MAX_HEADER_CHARS`], without NUL characters (which
/// PostgreSQL text cannot hold: a visit accepted with one would never be stored).
fn cut(s: &str) -> String {
    // Nearly every value is short and clean: copied as it is.
    if s.len() <= MAX_HEADER_CHARS && !s.contains('\0') {
        return s.to_owned();
    }
    s.chars()
        .filter(|c| *c != '\0')
        .take(MAX_HEADER_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visit_ids_are_the_same_for_a_retried_report_and_ordered_by_the_visit_time() {
        let at = |ms: i64| DateTime::from_timestamp_millis(ms).expect("time");
        let t = 1_796_326_680_123;
        let id = visit_id("visit:c:a", at(t));
        assert_eq!(id, visit_id("visit:c:a", at(t)));
        assert_ne!(id, visit_id("visit:c:b", at(t)));
        assert_ne!(id, visit_id("visit:c:a", at(t + 1)));
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().expect("a time").to_unix();
        assert_eq!((secs, nanos), (1_796_326_680, 123_000_000));
        // The primary key's order is the visits' order, whatever their hashes.
        let ids: Vec<Uuid> = (0..100)
            .map(|i| visit_id(&format!("visit:c:{}", 100 - i), at(t + i)))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn header_values_lose_nul_characters_and_are_cut() {
        assert_eq!(cut("Mozilla\0/5.0\0"), "Mozilla/5.0");
        assert_eq!(cut(&"a".repeat(5_000)).len(), MAX_HEADER_CHARS);
    }

    #[test]
    fn ip_hashes_are_keyed_and_canonical() {
        let a = IpHasher::new(b"secret-a");
        let b = IpHasher::new(b"secret-b");
        let ip: IpAddr = "203.0.113.7".parse().expect("ip");
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().expect("ip");
        assert_eq!(a.hash(ip), a.hash(mapped));
        assert_ne!(a.hash(ip), b.hash(ip));
        assert_eq!(a.hash(ip).len(), 64);
        assert!(!a.hash(ip).contains("203"));
        // Hex HMAC-SHA256 of the address's spelling, the same in every version (a visitor's
        // hash is compared across them); known answers from Python's `hmac`.
        let v4: IpAddr = "192.0.2.1".parse().expect("ip");
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(
            a.hash(v4),
            "534651414471c85820425a5b0e51cdf1858589064db8c57604f93dd100411da4"
        );
        assert_eq!(
            a.hash(v6),
            "83a6d7c7087fe405deaf58b4773bd0244d70adb9e6759aea38150ba62f18050b"
        );
    }

    /// A visit whose strings are as long as accepted and as costly to escape as possible.
    fn worst_visit(n: u128, client: ClientId) -> ReadyVisit {
        let nasty = |c: char| -> String { std::iter::repeat_n(c, MAX_HEADER_CHARS).collect() };
        let url = NormalizedUrl::parse(&format!("https://site.test/{n}/{}", "a".repeat(1800)))
            .expect("url");
        ReadyVisit {
            ip: None,
            client,
            visit: BatchedVisit {
                id: Uuid::from_u128(n),
                page_id: PageId::derive(client, &url),
                visit: VisitRecorded {
                    bytes: Some(u64::MAX),
                    charged_price: None,
                    signature_agent: None,
                    robots: Some(crate::events::visits::RobotsCompliance::Disallowed),
                    url: url.to_string(),
                    visitor_type: crate::domain::bots::VisitorType::OtherBot,
                    bot_name: Some(nasty('"')),
                    operator: Some(nasty('\\')),
                    category: Some(nasty('\u{1}')),
                    verification: crate::events::visits::Verification::IpMismatch,
                    user_agent: Some(nasty('\u{1f}')),
                    referrer: Some(nasty('\n')),
                    ip_hash: Some("f".repeat(64)),
                    format_served: FormatServed::Unknown,
                    status: Some(599),
                    visited_at: Utc::now(),
                },
            },
        }
    }

    #[test]
    fn a_visits_estimated_size_is_never_below_its_encoded_size() {
        let client = ClientId::new_random();
        let worst = worst_visit(1, client);
        let encoded = serde_json::to_vec(&worst.visit).expect("json").len();
        assert!(encoded > 20_000, "{encoded}");
        assert!(encoded_len(&worst.visit) >= encoded);
        let mut plain = worst_visit(2, client);
        plain.visit.visit.bot_name = None;
        plain.visit.visit.operator = None;
        plain.visit.visit.category = None;
        plain.visit.visit.user_agent = Some("GPTBot/1.2".into());
        plain.visit.visit.referrer = None;
        let encoded = serde_json::to_vec(&plain.visit).expect("json").len();
        assert!(encoded_len(&plain.visit) >= encoded);
    }

    #[test]
    fn batches_stay_under_the_event_size_and_keep_each_visit_once() {
        let (a, b) = (ClientId::new_random(), ClientId::new_random());
        let mut ready: Vec<ReadyVisit> = (0..60)
            .map(|n| worst_visit(n, if n % 2 == 0 { a } else { b }))
            .collect();
        ready.push(worst_visit(4, a));
        let batches = VisitBatches::new(ready);
        assert_eq!(batches.len(), 61);
        assert_eq!(batches.repeated.iter().filter(|r| **r).count(), 1);
        assert!(batches.repeated[60]);
        assert!(batches.events() > 2, "{} events", batches.events());
        let mut carried: Vec<usize> = batches.members.concat();
        carried.sort_unstable();
        assert_eq!(carried, (0..60).collect::<Vec<_>>());
        for out in &batches.events {
            let bytes = out.event.to_json().expect("json").len();
            assert!(bytes <= MAX_BATCH_EVENT_BYTES, "{bytes} bytes");
            let VisitEvent::BatchRecorded(batch) = &out.event.payload else {
                panic!("not a batch");
            };
            let client = out.event.meta.client_id;
            assert!(batch.visits.iter().all(|v| {
                let url = NormalizedUrl::parse(&v.visit.url).expect("url");
                v.page_id == PageId::derive(client, &url)
            }));
        }
        // The same visits give the same events: a report posted again is a duplicate.
        let again = VisitBatches::new(
            (0..60)
                .map(|n| worst_visit(n, if n % 2 == 0 { a } else { b }))
                .collect(),
        );
        let keys = |b: &VisitBatches| {
            b.events
                .iter()
                .map(|e| e.dedup_key.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&batches), keys(&again));
    }
}
