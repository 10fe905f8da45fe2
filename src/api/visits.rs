//! Visits: ingestion from the edge (the Worker) and analytics per client.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Principal;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{ApiError, AppState};
use crate::commands::discovery::on_domain;
use crate::commands::visits::{
    BatchOutcome, DomainRule, MAX_BATCH, RejectCode, Reporter, VisitInput, VisitRejection, reject,
};
use crate::domain::client::Scope;
use crate::domain::url::NormalizedUrl;
use crate::projections::clients as clients_read;
use crate::projections::visits::{self as read, GroupBy, StatsQuery, VisitStats};

/// Largest body of a batch (1,000 visits with long user agents and referrers).
pub const MAX_BATCH_BODY_BYTES: usize = 4 << 20;

/// A batch of visits.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VisitBatch {
    /// Up to 1,000 visits.
    pub visits: Vec<VisitInput>,
}

/// Where each client's visits may point: its domain (and subdomains, by its setting).
struct Domains(HashMap<Uuid, (String, bool)>);

impl DomainRule for Domains {
    fn check(&self, client: Uuid, url: &NormalizedUrl) -> Result<(), VisitRejection> {
        let (domain, subdomains) = self
            .0
            .get(&client)
            .ok_or_else(|| reject(RejectCode::UnknownClient, format!("no client {client}")))?;
        on_domain(url, domain, *subdomains)
            .map_err(|message| reject(RejectCode::OffDomain, message))
    }
}

/// The reporter behind the key: an `ingest` key of one client, or the master key.
fn reporter(principal: &Principal) -> Result<Reporter, ApiError> {
    match principal {
        Principal::Master => Ok(Reporter::Master),
        Principal::Client { client_id, .. } => {
            principal.require(*client_id, Scope::Ingest)?;
            Ok(Reporter::Client(*client_id))
        }
    }
}

/// The domain rules of the clients a batch names.
async fn domains(
    state: &AppState,
    reporter: Reporter,
    visits: &[VisitInput],
) -> Result<Domains, ApiError> {
    let mut ids: Vec<Uuid> = visits.iter().filter_map(|v| v.client_id).collect();
    if let Reporter::Client(own) = reporter {
        ids.push(own);
    }
    ids.sort_unstable();
    ids.dedup();
    let mut map = HashMap::with_capacity(ids.len());
    for id in ids {
        if let Some(row) = clients_read::find(&state.db, id).await? {
            map.insert(id, (row.domain, row.allow_subdomains));
        }
    }
    Ok(Domains(map))
}

async fn record(
    state: &AppState,
    principal: &Principal,
    visits: Vec<VisitInput>,
) -> Result<BatchOutcome, ApiError> {
    let reporter = reporter(principal)?;
    let rule = domains(state, reporter, &visits).await?;
    state
        .visits
        .record(reporter, visits, &rule)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

#[utoipa::path(post, path = "/api/v1/visits", tag = "visits", request_body = VisitInput,
    responses((status = 202, body = BatchOutcome, description = "Recorded (or already recorded: `duplicates` is 1)"),
        (status = 403), (status = 422, description = "The visit is invalid (code says why)"),
        (status = 503, description = "The event stream is unreachable: retry")),
    security(("api_key" = [])))]
/// Records one visit (an `ingest` key of its client, or the master key with `client_id`).
pub async fn record_one(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(visit): ApiJson<VisitInput>,
) -> Result<(StatusCode, Json<BatchOutcome>), ApiError> {
    let outcome = record(&state, &principal, vec![visit]).await?;
    if let Some(r) = outcome.rejected.first() {
        return Err(ApiError::rejected(r.code, r.message.clone()));
    }
    Ok((StatusCode::ACCEPTED, Json(outcome)))
}

#[utoipa::path(post, path = "/api/v1/visits/batch", tag = "visits", request_body = VisitBatch,
    responses((status = 200, body = BatchOutcome, description = "Valid visits recorded; invalid ones listed by index, not recorded (do not resend them)"),
        (status = 403), (status = 422, description = "More than 1,000 visits"),
        (status = 503, description = "The event stream is unreachable: nothing was lost by answering this, resend the batch")),
    security(("api_key" = [])))]
/// Records up to 1,000 visits at once (the Worker's way). Resending a batch is safe: each
/// visit counts once.
pub async fn record_batch(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(batch): ApiJson<VisitBatch>,
) -> Result<Json<BatchOutcome>, ApiError> {
    if batch.visits.len() > MAX_BATCH {
        return Err(ApiError::validation(
            "visits",
            format!(
                "{} visits: at most {MAX_BATCH} per batch",
                batch.visits.len()
            ),
        ));
    }
    Ok(Json(record(&state, &principal, batch.visits).await?))
}

/// `?from=&to=&group_by=&limit=&offset=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// Start, inclusive: an RFC 3339 time, or a date (`2026-11-01`: from the start of that
    /// day, UTC); default 30 days before `to`.
    #[serde(default, deserialize_with = "start_of")]
    pub from: Option<DateTime<Utc>>,
    /// End, exclusive: an RFC 3339 time, or a date (`2026-11-30`: through the end of that
    /// day, UTC); default now.
    #[serde(default, deserialize_with = "end_of")]
    pub to: Option<DateTime<Utc>>,
    /// `bot` (default), `operator`, `category`, `day`, `hour`, `page`, `visitor_type`,
    /// `verification`, `status` or `format`.
    pub group_by: Option<GroupBy>,
    /// Groups per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// A time, or a date standing for its first moment (`next_day`: the first moment after it).
fn moment(text: &str, next_day: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        format!(
            "{text:?} is neither a date (2026-11-30) nor an RFC 3339 time (2026-11-30T12:00:00Z)"
        )
    })?;
    let date = if next_day {
        date.succ_opt().ok_or("the date is out of range")?
    } else {
        date
    };
    Ok(date.and_time(chrono::NaiveTime::MIN).and_utc())
}

fn start_of<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| moment(&t, false).map_err(serde::de::Error::custom))
        .transpose()
}

fn end_of<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| moment(&t, true).map_err(serde::de::Error::custom))
        .transpose()
}

/// Longest range one stats query covers.
const MAX_RANGE_DAYS: i64 = 366;

/// `[from, to)` of a query: `to` defaults to now, `from` to 30 days before it; at most
/// [`MAX_RANGE_DAYS`].
fn range(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let invalid = |message: String| ApiError::InvalidQuery { message };
    let to = to.unwrap_or_else(Utc::now);
    let from = from.unwrap_or(to - Duration::days(30));
    if from >= to {
        return Err(invalid("from must be before to".into()));
    }
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(invalid(format!(
            "the range may cover at most {MAX_RANGE_DAYS} days"
        )));
    }
    Ok((from, to))
}

/// The stats of a client, with the range they cover.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsView {
    pub client_id: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub limit: i64,
    pub offset: i64,
    #[serde(flatten)]
    pub stats: VisitStats,
}

#[utoipa::path(get, path = "/api/v1/clients/{id}/visits/stats", tag = "visits",
    params(("id" = Uuid, Path), StatsParams),
    responses((status = 200, body = StatsView), (status = 400), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// A client's visits over a time range: totals (with the AI share), groups by bot, operator,
/// category, day, page or visitor type, and the pages AI agents read most (master key, or
/// the client's `read` key).
pub async fn stats(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client): ApiPath<Uuid>,
    ApiQuery(p): ApiQuery<StatsParams>,
) -> Result<Json<StatsView>, ApiError> {
    principal.require(client, Scope::Read)?;
    let invalid = |message: String| ApiError::InvalidQuery { message };
    let (from, to) = range(p.from, p.to)?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(invalid("limit must be between 1 and 1000".into()));
    }
    let offset = p.offset.unwrap_or(0);
    if offset < 0 {
        return Err(invalid("offset must not be negative".into()));
    }
    if clients_read::find(&state.db, client).await?.is_none() {
        return Err(ApiError::NotFound(format!("no client {client}")));
    }
    let stats = read::stats(
        &state.db,
        StatsQuery {
            client,
            from,
            to,
            group_by: p.group_by.unwrap_or(GroupBy::Bot),
            limit,
            offset,
        },
    )
    .await?;
    Ok(Json(StatsView {
        client_id: client,
        from,
        to,
        limit,
        offset,
        stats,
    }))
}

/// `?from=&to=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// Start, inclusive: an RFC 3339 time or a date; default 30 days before `to`.
    #[serde(default, deserialize_with = "start_of")]
    pub from: Option<DateTime<Utc>>,
    /// End, exclusive: an RFC 3339 time or a date (through its end); default now.
    #[serde(default, deserialize_with = "end_of")]
    pub to: Option<DateTime<Utc>>,
}

/// A client's robots.txt violations over a time range.
#[derive(Debug, Serialize, ToSchema)]
pub struct RobotsViolationsView {
    pub client_id: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Per bot, most violations first.
    pub bots: Vec<read::RobotsViolations>,
}

#[utoipa::path(get, path = "/api/v1/clients/{id}/visits/robots-violations", tag = "visits",
    params(("id" = Uuid, Path), RangeParams),
    responses((status = 200, body = RobotsViolationsView), (status = 400), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// The named bots that read paths the site's robots.txt disallows for them: per bot, how
/// often, the first and last time, and the URLs read most (master key, or the client's
/// `read` key). Judged when each visit is recorded, against robots.txt as the scraper last
/// read it; visits of sites whose robots.txt was never read are not judged.
pub async fn robots_violations(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client): ApiPath<Uuid>,
    ApiQuery(p): ApiQuery<RangeParams>,
) -> Result<Json<RobotsViolationsView>, ApiError> {
    principal.require(client, Scope::Read)?;
    let (from, to) = range(p.from, p.to)?;
    if clients_read::find(&state.db, client).await?.is_none() {
        return Err(ApiError::NotFound(format!("no client {client}")));
    }
    let bots = read::robots_violations(&state.db, client, from, to).await?;
    Ok(Json(RobotsViolationsView {
        client_id: client,
        from,
        to,
        bots,
    }))
}
