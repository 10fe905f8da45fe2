//! Visits: ingestion from the edge (the Worker) and analytics per client.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Principal;
use super::export::{self, FormatParam};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{ApiError, AppState};
use crate::commands::discovery::on_domain;
use crate::commands::visits::{
    BatchOutcome, DomainRule, MAX_BATCH, RejectCode, Reporter, VisitInput, VisitRejection, reject,
};
use crate::domain::client::Scope;
use crate::domain::url::NormalizedUrl;
use crate::projections::clients as clients_read;
use crate::projections::visits::{self as read, GroupBy, Interval, VisitStats};

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

/// `?from=&to=&bot=&operator=&category=&verified=&page_id=`: which visits an analytics
/// answer counts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VisitFilters {
    /// Start, inclusive: an RFC 3339 time, or a date (`2026-11-01`: from the start of that
    /// day, UTC); default 30 days before `to`.
    #[serde(default, deserialize_with = "start_of")]
    pub from: Option<DateTime<Utc>>,
    /// End, exclusive: an RFC 3339 time, or a date (`2026-11-30`: through the end of that
    /// day, UTC); default now.
    #[serde(default, deserialize_with = "end_of")]
    pub to: Option<DateTime<Utc>>,
    /// Only this bot, as the groups name it (`GPTBot`, `human`, `unknown bot`).
    pub bot: Option<String>,
    /// Only this operator (`OpenAI`, `human`, `unknown operator`).
    pub operator: Option<String>,
    /// Only this category (`training`, `search`, `user_fetch`, `agent`, `human`...).
    pub category: Option<String>,
    /// Only visits whose identity was verified (IP ranges, reverse DNS or a signature).
    pub verified: Option<bool>,
    /// Only visits to this page (whatever scheme and port they came by).
    pub page_id: Option<Uuid>,
}

/// A page's size: 1–1000 (default 100).
fn limit_of(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidQuery {
            message: "limit must be between 1 and 1000".into(),
        });
    }
    Ok(limit)
}

/// Longest filter value accepted (bot, operator and category names are short).
const MAX_FILTER_CHARS: usize = 200;

impl VisitFilters {
    /// The visits of `client` these filters keep, checked: the key may read the client, the
    /// client and the page exist, the range is valid.
    async fn scope(
        &self,
        state: &AppState,
        principal: &Principal,
        client: Uuid,
    ) -> Result<read::VisitScope, ApiError> {
        principal.require(client, Scope::Read)?;
        let (from, to) = range(self.from, self.to)?;
        for (name, value) in [
            ("bot", &self.bot),
            ("operator", &self.operator),
            ("category", &self.category),
        ] {
            if value
                .as_ref()
                .is_some_and(|v| v.chars().count() > MAX_FILTER_CHARS)
            {
                return Err(ApiError::InvalidQuery {
                    message: format!("{name} may be at most {MAX_FILTER_CHARS} characters"),
                });
            }
        }
        if clients_read::find(&state.db, client).await?.is_none() {
            return Err(ApiError::NotFound(format!("no client {client}")));
        }
        let page_key = match self.page_id {
            Some(page) => Some(
                read::page_key_of(&state.db, client, page)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("no page {page} of {client}")))?,
            ),
            None => None,
        };
        Ok(read::VisitScope {
            bot: self.bot.clone(),
            operator: self.operator.clone(),
            category: self.category.clone(),
            verified_only: self.verified.unwrap_or(false),
            page_key,
            ..read::VisitScope::new(client, from, to)
        })
    }
}

/// `?group_by=&limit=&offset=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// `bot` (default), `operator`, `category`, `day`, `hour`, `page`, `section`,
    /// `visitor_type`, `verification`, `status`, `format` or `referrer`.
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
    params(("id" = Uuid, Path), VisitFilters, StatsParams, FormatParam),
    responses((status = 200, description = "The stats, or their groups as CSV with `format=csv`",
            content((StatsView = "application/json"), (String = "text/csv"))),
        (status = 400), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// A client's visits over a time range: totals (with the AI share, verified identities,
/// referrals and bytes served), groups by bot, operator, category, day, hour, page, section,
/// visitor type, verification, status, format or referrer, and the pages AI agents read
/// most; narrowed by bot, operator, category, verified identity or page (master key, or the
/// client's `read` key).
pub async fn stats(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client): ApiPath<Uuid>,
    ApiQuery(filters): ApiQuery<VisitFilters>,
    ApiQuery(p): ApiQuery<StatsParams>,
    ApiQuery(format): ApiQuery<FormatParam>,
) -> Result<Response, ApiError> {
    let limit = limit_of(p.limit)?;
    let offset = p.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::InvalidQuery {
            message: "offset must not be negative".into(),
        });
    }
    let scope = filters.scope(&state, &principal, client).await?;
    let group_by = p.group_by.unwrap_or(GroupBy::Bot);
    let stats = read::stats(&state.db, &scope, group_by, (limit, offset)).await?;
    if format.csv() {
        return export::rows("visits-by.csv", &stats.groups);
    }
    Ok(Json(StatsView {
        client_id: client,
        from: scope.from,
        to: scope.to,
        limit,
        offset,
        stats,
    })
    .into_response())
}

impl export::Row for read::Group {
    const HEADER: &'static [&'static str] = &[
        "key",
        "page_id",
        "visits",
        "ai_visits",
        "ip_verified",
        "ip_mismatch",
        "bytes",
        "last_visit_at",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.key.clone(),
            export::opt(self.page_id),
            self.visits.to_string(),
            self.ai_visits.to_string(),
            self.ip_verified.to_string(),
            self.ip_mismatch.to_string(),
            self.bytes.to_string(),
            self.last_visit_at.to_rfc3339(),
        ]
    }
}

/// `?interval=&split=&lines=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// `day` (default) or `hour` (ranges of up to 31 days).
    pub interval: Option<Interval>,
    /// What the lines are: `category` (default), `bot`, `operator`, `section`,
    /// `visitor_type`, `verification`, `status`, `format` or `referrer`.
    pub split: Option<GroupBy>,
    /// Most lines, 1–20 (default 8): past it, the rest are summed as `other`.
    #[param(minimum = 1, maximum = 20)]
    pub lines: Option<usize>,
}

/// Longest range of an hourly series.
const MAX_HOURLY_DAYS: i64 = 31;

/// A client's visits over time.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesView {
    pub client_id: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub split: GroupBy,
    #[serde(flatten)]
    pub series: read::Series,
}

#[utoipa::path(get, path = "/api/v1/clients/{id}/visits/series", tag = "visits",
    params(("id" = Uuid, Path), VisitFilters, SeriesParams, FormatParam),
    responses((status = 200, description = "Visits per day or hour, one line per key; as CSV with `format=csv` (a row per bucket, a column per line)",
            content((SeriesView = "application/json"), (String = "text/csv"))),
        (status = 400), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// A client's visits per day or hour, split in lines by category, bot, operator, section,
/// format, status, verification or referrer (what the dashboard's charts draw), narrowed by
/// the same filters as the stats (master key, or the client's `read` key).
pub async fn series(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client): ApiPath<Uuid>,
    ApiQuery(filters): ApiQuery<VisitFilters>,
    ApiQuery(p): ApiQuery<SeriesParams>,
    ApiQuery(format): ApiQuery<FormatParam>,
) -> Result<Response, ApiError> {
    let invalid = |message: String| ApiError::InvalidQuery { message };
    let split = p.split.unwrap_or(GroupBy::Category);
    if !split.splits_series() {
        return Err(invalid(
            "split may not be day, hour or page: use group_by=page of the stats for pages".into(),
        ));
    }
    let lines = p.lines.unwrap_or(8);
    if !(1..=20).contains(&lines) {
        return Err(invalid("lines must be between 1 and 20".into()));
    }
    let scope = filters.scope(&state, &principal, client).await?;
    let interval = p.interval.unwrap_or(Interval::Day);
    if interval == Interval::Hour && scope.to - scope.from > Duration::days(MAX_HOURLY_DAYS) {
        return Err(invalid(format!(
            "an hourly series covers at most {MAX_HOURLY_DAYS} days"
        )));
    }
    let series = read::series(&state.db, &scope, interval, split, lines).await?;
    if format.csv() {
        return series_csv("visits-over-time.csv", &series);
    }
    Ok(Json(SeriesView {
        client_id: client,
        from: scope.from,
        to: scope.to,
        split,
        series,
    })
    .into_response())
}

/// A series as CSV: a row per bucket, a column per line.
fn series_csv(filename: &str, series: &read::Series) -> Result<Response, ApiError> {
    let mut header = vec!["bucket"];
    header.extend(series.series.iter().map(|l| l.key.as_str()));
    let rows = series.buckets.iter().enumerate().map(|(i, bucket)| {
        let mut row = vec![bucket.clone()];
        row.extend(series.series.iter().map(|l| l.values[i].to_string()));
        row
    });
    export::table(filename, &header, rows)
}

/// What AI assistants send back to a client's site.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReferralsView {
    pub client_id: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    #[serde(flatten)]
    pub referrals: read::Referrals,
}

#[utoipa::path(get, path = "/api/v1/clients/{id}/visits/referrals", tag = "visits",
    params(("id" = Uuid, Path), VisitFilters, FormatParam),
    responses((status = 200, description = "Referrals and crawls per operator; the operators' table as CSV with `format=csv`",
            content((ReferralsView = "application/json"), (String = "text/csv"))),
        (status = 400), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// What AI assistants send back: people who followed a link from ChatGPT, Perplexity,
/// Claude, Gemini, Copilot... (their `Referer`, matched against the catalogue's list), per
/// operator and per day, and each operator's **crawl-to-refer ratio**: its AI bots' crawls
/// (requests a person did not trigger) per referred visit (master key, or the client's
/// `read` key).
pub async fn referrals(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client): ApiPath<Uuid>,
    ApiQuery(filters): ApiQuery<VisitFilters>,
    ApiQuery(format): ApiQuery<FormatParam>,
) -> Result<Response, ApiError> {
    let scope = filters.scope(&state, &principal, client).await?;
    let referrals = read::referrals(&state.db, &scope).await?;
    if format.csv() {
        return export::rows("referrals.csv", &referrals.operators);
    }
    Ok(Json(ReferralsView {
        client_id: client,
        from: scope.from,
        to: scope.to,
        referrals,
    })
    .into_response())
}

impl export::Row for read::OperatorReferrals {
    const HEADER: &'static [&'static str] = &["operator", "crawls", "referrals", "crawl_to_refer"];

    fn cells(&self) -> Vec<String> {
        vec![
            self.operator.clone(),
            self.crawls.to_string(),
            self.referrals.to_string(),
            export::opt(self.crawl_to_refer.map(|r| format!("{r:.1}"))),
        ]
    }
}

/// `?limit=&after=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VisitListParams {
    /// Visits per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Where to go on from: the `next` of the previous page.
    pub after: Option<String>,
}

/// A page of a client's visits, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct VisitList {
    pub client_id: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub visits: Vec<read::VisitView>,
    /// The `after` of the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/clients/{id}/visits", tag = "visits",
    params(("id" = Uuid, Path), VisitFilters, VisitListParams, FormatParam),
    responses((status = 200, description = "Visits, newest first; as CSV with `format=csv`",
            content((VisitList = "application/json"), (String = "text/csv"))),
        (status = 400), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// A client's individual visits, newest first, paged by `after` (stable while visits
/// arrive), narrowed by the same filters as the stats (master key, or the client's `read`
/// key).
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client): ApiPath<Uuid>,
    ApiQuery(filters): ApiQuery<VisitFilters>,
    ApiQuery(p): ApiQuery<VisitListParams>,
    ApiQuery(format): ApiQuery<FormatParam>,
) -> Result<Response, ApiError> {
    let limit = limit_of(p.limit)?;
    let after = match p.after.as_deref() {
        Some(text) => {
            Some(
                read::VisitCursor::decode(text).ok_or_else(|| ApiError::InvalidQuery {
                    message: "after is not a cursor this list gave (use its next)".into(),
                })?,
            )
        }
        None => None,
    };
    let scope = filters.scope(&state, &principal, client).await?;
    let (visits, next) = read::list(&state.db, &scope, after, limit).await?;
    if format.csv() {
        return export::rows("visits.csv", &visits);
    }
    Ok(Json(VisitList {
        client_id: client,
        from: scope.from,
        to: scope.to,
        visits,
        next: next.map(|c| c.encode()),
    })
    .into_response())
}

impl export::Row for read::VisitView {
    const HEADER: &'static [&'static str] = &[
        "visited_at",
        "url",
        "page_id",
        "visitor_type",
        "bot_name",
        "operator",
        "category",
        "verification",
        "format_served",
        "status",
        "bytes",
        "referrer",
        "referred_by",
        "user_agent",
        "robots",
        "id",
    ];

    fn cells(&self) -> Vec<String> {
        vec![
            self.visited_at.to_rfc3339(),
            self.url.clone(),
            export::opt(self.page_id),
            self.visitor_type.clone(),
            export::opt(self.bot_name.as_ref()),
            export::opt(self.operator.as_ref()),
            export::opt(self.category.as_ref()),
            self.verification.clone(),
            self.format_served.clone(),
            export::opt(self.status),
            export::opt(self.bytes),
            export::opt(self.referrer.as_ref()),
            export::opt(self.referred_by.as_ref()),
            export::opt(self.user_agent.as_ref()),
            export::opt(self.robots.as_ref()),
            self.id.to_string(),
        ]
    }
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
