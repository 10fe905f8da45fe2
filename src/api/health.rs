//! `GET /health`: database, NATS, streams, consumer lag, projection lag and dead letters.
//! Answers 503 when the database, NATS, a stream or a consumer is missing or unreachable,
//! when a backlog passes its threshold ([`crate::config::HealthThresholds`]), or when work
//! stands still: a stage whose oldest waiting message waited longer than `max_stall_secs`
//! while it delivered nothing for as long (nobody pulls from it, or its pullers are stuck),
//! or a projection whose oldest unapplied event is older than that. Ages come from the
//! stream's own timestamps, so any process can judge every stage. `reasons` says which.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use async_nats::jetstream::consumer;
use async_nats::jetstream::stream::Stream;

use super::AppState;
use crate::events::StreamName;
use crate::infra::streams;
use crate::projections::sql;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Serialize)]
pub struct Health {
    /// `healthy` or `degraded`.
    status: &'static str,
    version: &'static str,
    /// `connected` or `unavailable` (the original system's field).
    database: &'static str,
    /// Why the service is degraded (empty when healthy).
    reasons: Vec<String>,
    checks: Checks,
}

#[derive(Serialize, Default)]
pub(super) struct Checks {
    database: Check,
    nats: Check,
    streams: BTreeMap<String, StreamCheck>,
    consumers: BTreeMap<String, ConsumerCheck>,
    projections: BTreeMap<String, ProjectionCheck>,
    dead_letters: DeadLetterCheck,
}

#[derive(Serialize, Default)]
struct DeadLetterCheck {
    /// Dead letters waiting (`/api/v1/dead-letters`).
    count: u64,
    threshold: u64,
}

#[derive(Serialize, Default)]
struct Check {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct StreamCheck {
    ok: bool,
    messages: u64,
    last_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct ConsumerCheck {
    ok: bool,
    /// Messages not yet delivered to the consumer.
    pending: u64,
    /// Delivered, not yet acknowledged.
    ack_pending: u64,
    redelivered: u64,
    /// Pull requests waiting for messages: 0 while nobody pulls (or every puller is busy).
    waiting_pulls: u64,
    /// Seconds the oldest message not yet delivered has been waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    oldest_waiting_secs: Option<u64>,
    /// Seconds since the consumer last delivered or had a message acknowledged.
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl ConsumerCheck {
    fn unavailable(error: String) -> Self {
        Self {
            ok: false,
            pending: 0,
            ack_pending: 0,
            redelivered: 0,
            waiting_pulls: 0,
            oldest_waiting_secs: None,
            idle_secs: None,
            error: Some(error),
        }
    }

    /// Why the stage stands still, if it does: work has waited past `limit` and nothing was
    /// delivered or acknowledged for as long.
    fn stalled(&self, limit: u64) -> Option<String> {
        let waited = self.oldest_waiting_secs.filter(|w| *w > limit)?;
        if self.idle_secs.is_some_and(|idle| idle <= limit) {
            return None;
        }
        let who = if self.waiting_pulls == 0 {
            "no process is pulling from it"
        } else {
            "its pullers take nothing"
        };
        Some(format!(
            "{} messages waiting, the oldest for {waited} s, nothing delivered for over {limit} s: {who}",
            self.pending
        ))
    }
}

#[derive(Serialize)]
struct ProjectionCheck {
    checkpoint: u64,
    /// Stream sequences after the checkpoint (an upper bound: purged messages count too).
    lag: u64,
    /// Seconds since the oldest event not yet applied was stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    oldest_unapplied_secs: Option<u64>,
}

#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "every check ok"), (status = 503, description = "degraded")))]
/// Database, NATS, streams, consumer backlog and projection lag.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let checks = observe(&state).await;
    let limits = &state.health;
    let mut reasons = Vec::new();
    if !checks.database.ok {
        reasons.push("database unavailable".to_owned());
    }
    if !checks.nats.ok {
        reasons.push("NATS unavailable".to_owned());
    }
    if checks.nats.ok && checks.streams.is_empty() {
        reasons.push("stream definitions unreadable".to_owned());
    }
    for (name, stream) in &checks.streams {
        if !stream.ok {
            reasons.push(format!("stream {name} unavailable"));
        }
    }
    for (name, consumer) in &checks.consumers {
        if !consumer.ok {
            reasons.push(format!("consumer {name} unavailable"));
        } else if let Some(why) = consumer.stalled(limits.max_stall_secs) {
            reasons.push(format!("consumer {name} stands still: {why}"));
        } else if consumer.pending > limits.max_consumer_pending {
            reasons.push(format!(
                "consumer {name} has {} messages waiting (threshold {})",
                consumer.pending, limits.max_consumer_pending
            ));
        }
    }
    for (name, projection) in &checks.projections {
        if projection.lag > limits.max_projection_lag {
            reasons.push(format!(
                "projection {name} is {} events behind (threshold {})",
                projection.lag, limits.max_projection_lag
            ));
        } else if let Some(age) = projection
            .oldest_unapplied_secs
            .filter(|age| *age > limits.max_stall_secs)
        {
            reasons.push(format!(
                "projection {name} stopped applying: {} events behind, the oldest stored {age} s ago (threshold {} s)",
                projection.lag, limits.max_stall_secs
            ));
        }
    }
    if checks.dead_letters.count > limits.max_dead_letters {
        reasons.push(format!(
            "{} dead letters waiting (threshold {})",
            checks.dead_letters.count, limits.max_dead_letters
        ));
    }
    let healthy = reasons.is_empty();
    let body = Health {
        status: if healthy { "healthy" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        database: if checks.database.ok {
            "connected"
        } else {
            "unavailable"
        },
        reasons,
        checks,
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Reads every check and sets the backlog gauges of `/metrics` on the way.
pub(super) async fn observe(state: &AppState) -> Checks {
    let mut checks = Checks::default();
    let started = Instant::now();
    checks.database =
        match tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&state.db)).await
        {
            Ok(Ok(_)) => Check {
                ok: true,
                latency_ms: Some(started.elapsed().as_millis() as u64),
                error: None,
            },
            Ok(Err(e)) => failed(e.to_string()),
            Err(_) => failed("timed out".into()),
        };
    checks.nats = if state.nats.is_connected() {
        Check {
            ok: true,
            ..Check::default()
        }
    } else {
        failed("not connected".into())
    };
    let mut handles = BTreeMap::new();
    if checks.nats.ok {
        check_streams(state, &mut checks, &mut handles).await;
    }
    if checks.database.ok {
        check_projections(state, &mut checks, &handles).await;
    }
    checks.dead_letters.threshold = state.health.max_dead_letters;
    metrics::gauge!("aicache_dead_letters").set(checks.dead_letters.count as f64);
    checks
}

/// Runs a NATS request with the check timeout, its error as text.
async fn within_timeout<T, E: std::fmt::Display>(
    request: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, request).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

fn failed(error: String) -> Check {
    Check {
        ok: false,
        latency_ms: None,
        error: Some(error),
    }
}

async fn check_streams(
    state: &AppState,
    checks: &mut Checks,
    handles: &mut BTreeMap<String, Stream>,
) {
    // The definitions are compiled in: parse them once.
    static DEFS: OnceLock<Result<Vec<streams::StreamDef>, String>> = OnceLock::new();
    let defs = match DEFS.get_or_init(|| streams::embedded().map_err(|e| e.to_string())) {
        Ok(defs) => defs,
        Err(e) => {
            checks.nats.error = Some(e.clone());
            return;
        }
    };
    for def in defs {
        let name = def.config.name.clone();
        // `get_stream` fetches the stream's info; the consumers reuse the same handle.
        let stream = within_timeout(state.nats.js.get_stream(&name)).await;
        let check = match &stream {
            Ok(stream) => {
                let s = &stream.cached_info().state;
                if name == crate::events::StreamName::DeadLetter.name() {
                    checks.dead_letters.count = s.messages;
                }
                StreamCheck {
                    ok: true,
                    messages: s.messages,
                    last_seq: s.last_sequence,
                    error: None,
                }
            }
            Err(e) => StreamCheck {
                ok: false,
                messages: 0,
                last_seq: 0,
                error: Some(e.clone()),
            },
        };
        checks.streams.insert(name.clone(), check);
        for consumer in &def.consumers {
            let durable = consumer.config.durable_name.clone().unwrap_or_default();
            let info = match &stream {
                Ok(stream) => within_timeout(stream.consumer_info(&durable)).await,
                Err(_) => Err("stream unavailable".to_owned()),
            };
            let check = match (&info, &stream) {
                (Ok(info), Ok(stream)) => consumer_check(stream, info).await,
                (Err(e), _) | (_, Err(e)) => ConsumerCheck::unavailable(e.to_owned()),
            };
            metrics::gauge!("aicache_consumer_pending", "consumer" => durable.clone())
                .set(check.pending as f64);
            metrics::gauge!("aicache_consumer_ack_pending", "consumer" => durable.clone())
                .set(check.ack_pending as f64);
            checks.consumers.insert(format!("{name}/{durable}"), check);
        }
        if let Ok(stream) = stream {
            handles.insert(name, stream);
        }
    }
}

/// A consumer's backlog and activity: how much waits, for how long, and when it last moved.
async fn consumer_check(stream: &Stream, i: &consumer::Info) -> ConsumerCheck {
    let oldest = if i.num_pending > 0 {
        let filter = i.config.filter_subject.clone();
        oldest_after(stream, &filter, i.delivered.stream_sequence).await
    } else {
        None
    };
    let last_active = [i.delivered.last_active, i.ack_floor.last_active]
        .into_iter()
        .flatten()
        .map(|t| t.unix_timestamp())
        .max()
        .unwrap_or(i.created.unix_timestamp());
    ConsumerCheck {
        ok: true,
        pending: i.num_pending,
        ack_pending: i.num_ack_pending as u64,
        redelivered: i.num_redelivered as u64,
        waiting_pulls: i.num_waiting as u64,
        oldest_waiting_secs: oldest,
        idle_secs: Some(seconds_since(last_active)),
        error: None,
    }
}

/// Seconds from the Unix time `then` to now (0 for the future).
fn seconds_since(then: i64) -> u64 {
    u64::try_from(chrono::Utc::now().timestamp().saturating_sub(then)).unwrap_or(0)
}

/// How long ago the first message on `subject` (all when empty) after `seq` was stored.
async fn oldest_after(stream: &Stream, subject: &str, seq: u64) -> Option<u64> {
    let subject = if subject.is_empty() { ">" } else { subject };
    let next = within_timeout(stream.direct_get_next_for_subject(subject, Some(seq + 1)))
        .await
        .ok()?;
    Some(seconds_since(next.time.unix_timestamp()))
}

async fn check_projections(
    state: &AppState,
    checks: &mut Checks,
    handles: &BTreeMap<String, Stream>,
) {
    let rows: Vec<(String, i64)> = match sqlx::query_as(sql::runtime::ALL_CHECKPOINTS)
        .fetch_all(&state.db)
        .await
    {
        Ok(rows) => rows,
        Err(_) => return,
    };
    for projection in crate::projections::all() {
        let checkpoint = rows
            .iter()
            .find(|(n, _)| n == projection.name())
            .map_or(0, |(_, s)| u64::try_from(*s).unwrap_or(0));
        let stream: StreamName = projection.stream();
        let end = handles
            .get(stream.name())
            .map_or(checkpoint, |s| s.cached_info().state.last_sequence);
        let lag = end.saturating_sub(checkpoint);
        metrics::gauge!("aicache_projection_lag", "projection" => projection.name())
            .set(lag as f64);
        let oldest_unapplied_secs = match handles.get(stream.name()) {
            Some(handle) if lag > 0 => oldest_after(handle, "", checkpoint).await,
            _ => None,
        };
        checks.projections.insert(
            projection.name().to_owned(),
            ProjectionCheck {
                checkpoint,
                lag,
                oldest_unapplied_secs,
            },
        );
    }
}
