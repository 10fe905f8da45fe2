//! The visits projection: the original `visits` table plus classification and verification.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::PgConnection;
use sqlx::postgres::PgArguments;

use super::{ApplyError, Projection, StoredMessage, decode, enum_name, push};
use uuid::Uuid;

use super::sql;
use crate::events::visits::{VisitEvent, VisitRecorded};
use crate::events::{Event, StreamName};

/// Applies VISITS events to `visits`.
pub struct VisitsProjection;

impl Projection for VisitsProjection {
    fn name(&self) -> &'static str {
        "visits"
    }

    fn stream(&self) -> StreamName {
        StreamName::Visits
    }

    fn tables(&self) -> &'static [&'static str] {
        &["visits"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        msg: &'a StoredMessage,
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        async move {
            let mut rows = Vec::new();
            Row::decode(msg, &mut rows)?;
            insert(conn, encode(&rows)?).await?;
            Ok(())
        }
        .boxed()
    }

    /// Visits are analytics nothing acts on, arriving by the thousand: the commit's WAL
    /// flush was an eighth of PostgreSQL's time applying them (BENCHMARKS.md).
    fn async_commit(&self) -> bool {
        true
    }

    /// A visit is a row inserted by its id, or nothing when the row is there.
    fn commutes(&self) -> bool {
        true
    }

    /// Visits arrive by the thousand: one multi-row insert per few thousand rows, the next
    /// rows decoded and encoded while PostgreSQL inserts these.
    fn apply_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        batch: &'a [&'a StoredMessage],
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>, sqlx::Error>> {
        async move {
            let mut rows = Rows::of(batch);
            let mut args = rows.next_args()?;
            while let Some(current) = args {
                let (done, next) =
                    futures::join!(insert(conn, Some(current)), async { rows.next_args() });
                done?;
                args = next?;
            }
            Ok(rows.skipped)
        }
        .boxed()
    }

    /// The rows split by their id (odd ids on `other`), so no row is written on both
    /// connections; the next rows are decoded and encoded while both inserts run, so neither
    /// connection waits for more than the other's turn.
    fn apply_batch_on_two<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        other: &'a mut PgConnection,
        batch: &'a [&'a StoredMessage],
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>, sqlx::Error>> {
        async move {
            let mut rows = Rows::of(batch);
            let mut args = rows.next_args_split()?;
            while let Some([even, odd]) = args {
                let (here, there, next) =
                    futures::join!(insert(conn, even), insert(other, odd), async {
                        rows.next_args_split()
                    });
                here?;
                there?;
                args = next?;
            }
            Ok(rows.skipped)
        }
        .boxed()
    }
}

/// The rows of a batch's events, a few thousand at a time, and the events set aside.
struct Rows<'a> {
    batch: &'a [&'a StoredMessage],
    next: usize,
    skipped: Vec<(usize, String)>,
}

impl<'a> Rows<'a> {
    fn of(batch: &'a [&'a StoredMessage]) -> Self {
        Self {
            batch,
            next: 0,
            skipped: Vec::new(),
        }
    }

    /// The rows of the next events, `max` or a few more (an event's rows stay together):
    /// bounded statements, and a batch of batch events a handful of them. `None` at the end.
    fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<Row>>, sqlx::Error> {
        let mut rows = Vec::new();
        while rows.len() < max && self.next < self.batch.len() {
            let i = self.next;
            self.next += 1;
            let before = rows.len();
            match Row::decode(self.batch[i], &mut rows) {
                Ok(()) => {}
                Err(ApplyError::Skip(reason)) => {
                    rows.truncate(before);
                    self.skipped.push((i, reason));
                }
                Err(ApplyError::Db(e)) => return Err(e),
            }
        }
        Ok((!rows.is_empty()).then_some(rows))
    }

    /// The next insert's arguments ([`INSERT_ROWS`] rows or a few more); `None` at the end.
    fn next_args(&mut self) -> Result<Option<PgArguments>, sqlx::Error> {
        match self.next_chunk(INSERT_ROWS)? {
            Some(chunk) => encode(&chunk),
            None => Ok(None),
        }
    }

    /// The next two inserts' arguments, the rows split by their id: even ids, then odd ones
    /// (either side may have none). `None` at the end.
    fn next_args_split(&mut self) -> Result<Option<[Option<PgArguments>; 2]>, sqlx::Error> {
        let Some(chunk) = self.next_chunk(2 * INSERT_ROWS)? else {
            return Ok(None);
        };
        let (odd, even): (Vec<Row>, Vec<Row>) =
            chunk.into_iter().partition(|r| r.id.as_u128() & 1 == 1);
        Ok(Some([encode(&even)?, encode(&odd)?]))
    }
}

/// Most rows one insert statement carries.
const INSERT_ROWS: usize = 5_000;

/// One `visits` row.
struct Row {
    id: Uuid,
    page_id: Option<Uuid>,
    client_id: Uuid,
    visit: VisitRecorded,
    visitor_type: String,
    verification: String,
    format_served: String,
    robots: Option<String>,
}

impl Row {
    /// Appends the rows of one event: one visit, or a batch of them.
    fn decode(msg: &StoredMessage, rows: &mut Vec<Row>) -> Result<(), ApplyError> {
        let event: Event<VisitEvent> = decode(msg)?;
        let client_id = event.meta.client_id.as_uuid();
        match event.payload {
            VisitEvent::Recorded(visit) => rows.push(Self::new(
                event.meta.id,
                event.meta.page_id.map(|p| p.as_uuid()),
                client_id,
                visit,
            )?),
            VisitEvent::BatchRecorded(batch) => {
                for v in batch.visits {
                    rows.push(Self::new(
                        v.id,
                        Some(v.page_id.as_uuid()),
                        client_id,
                        v.visit,
                    )?);
                }
            }
        }
        Ok(())
    }

    fn new(
        id: Uuid,
        page_id: Option<Uuid>,
        client_id: Uuid,
        visit: VisitRecorded,
    ) -> Result<Self, ApplyError> {
        Ok(Self {
            id,
            page_id,
            client_id,
            visitor_type: enum_name(&visit.visitor_type)?,
            verification: enum_name(&visit.verification)?,
            format_served: enum_name(&visit.format_served)?,
            robots: visit.robots.as_ref().map(enum_name).transpose()?,
            visit,
        })
    }
}

/// The arguments of one insert of `rows`, their columns as arrays; `None` for no rows.
fn encode(rows: &[Row]) -> Result<Option<PgArguments>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(None);
    }
    let col = |f: fn(&Row) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
    let mut args = PgArguments::default();
    push(&mut args, rows.iter().map(|r| r.id).collect::<Vec<_>>())?;
    push(
        &mut args,
        rows.iter().map(|r| r.page_id).collect::<Vec<_>>(),
    )?;
    push(
        &mut args,
        rows.iter().map(|r| r.client_id).collect::<Vec<_>>(),
    )?;
    push(&mut args, col(|r| Some(r.visit.url.as_str())))?;
    push(&mut args, col(|r| Some(r.visitor_type.as_str())))?;
    push(&mut args, col(|r| r.visit.user_agent.as_deref()))?;
    push(&mut args, col(|r| r.visit.ip_hash.as_deref()))?;
    push(&mut args, col(|r| r.visit.referrer.as_deref()))?;
    push(&mut args, col(|r| r.visit.bot_name.as_deref()))?;
    push(&mut args, col(|r| r.visit.operator.as_deref()))?;
    push(&mut args, col(|r| r.visit.category.as_deref()))?;
    push(&mut args, col(|r| Some(r.verification.as_str())))?;
    push(&mut args, col(|r| Some(r.format_served.as_str())))?;
    push(
        &mut args,
        rows.iter()
            .map(|r| r.visit.status.map(i32::from))
            .collect::<Vec<_>>(),
    )?;
    push(
        &mut args,
        rows.iter().map(|r| r.visit.visited_at).collect::<Vec<_>>(),
    )?;
    push(&mut args, col(|r| r.visit.charged_price.as_deref()))?;
    push(&mut args, col(|r| r.visit.signature_agent.as_deref()))?;
    push(&mut args, col(|r| r.robots.as_deref()))?;
    push(
        &mut args,
        rows.iter()
            .map(|r| r.visit.bytes.map(|b| i64::try_from(b).unwrap_or(i64::MAX)))
            .collect::<Vec<_>>(),
    )?;
    Ok(Some(args))
}

/// Inserts rows encoded by [`encode`]; the visit's id is the row id, so a visit reported
/// again cannot count twice (nor a visit repeated within one statement: the first is kept).
async fn insert(conn: &mut PgConnection, args: Option<PgArguments>) -> Result<(), sqlx::Error> {
    if let Some(args) = args {
        sqlx::query_with(sql::visits::INSERT_VISIT, args)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// How `stats` groups visits.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Bot,
    Operator,
    Category,
    Day,
    Page,
    VisitorType,
    /// How far each visit's identity was checked (`claimed`, `ip_verified`, `rdns`...).
    Verification,
    /// The HTTP status the visit was answered with (`unknown` when not reported).
    Status,
    /// What was served: `markdown`, `html` or `passthrough`.
    Format,
    /// The hour (`YYYY-MM-DDTHH:00Z`, UTC), for short ranges.
    Hour,
    /// The AI assistant (its operator) whose answer the visitor followed a link from
    /// (`Referer`), `other site` or `none`.
    Referrer,
    /// The first directory of the path (`/blog/*`; `/` for pages at the top).
    Section,
}

impl GroupBy {
    /// The grouping expression (a fixed list: never built from input).
    pub(crate) fn expr(self) -> &'static str {
        match self {
            Self::Bot => sql::visits::BOT_KEY,
            Self::Operator => sql::visits::OPERATOR_KEY,
            Self::Category => sql::visits::CATEGORY_KEY,
            Self::Day => DAY,
            // One page whatever the scheme and port it was asked by: named after the
            // client's page afterwards (`name_pages`).
            Self::Page => "page_key(url)",
            Self::VisitorType => "visitor_type",
            Self::Verification => "verification",
            Self::Status => "coalesce(status::text, 'unknown')",
            Self::Format => "format_served",
            Self::Hour => HOUR,
            Self::Referrer => sql::visits::REFERRER_KEY,
            Self::Section => sql::visits::SECTION_KEY,
        }
    }

    /// Days and hours in time order; everything else busiest first.
    fn order(self) -> &'static str {
        match self {
            Self::Day | Self::Hour => "key ASC",
            _ => "visits DESC, key ASC",
        }
    }

    /// Whether a series can be split by it (not by time, nor by page: too many).
    pub fn splits_series(self) -> bool {
        !matches!(self, Self::Day | Self::Hour | Self::Page)
    }
}

const DAY: &str = "to_char(visited_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')";
const HOUR: &str = "to_char(visited_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:00\"Z\"')";

/// Which visits an analytics query reads: one client's over `[from, to)`, narrowed by the
/// filters (each `None` or `false` keeps everything).
#[derive(Clone, Debug)]
pub struct VisitScope {
    pub client: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// A bot as the groups name it (`GPTBot`, `human`, `unknown bot`).
    pub bot: Option<String>,
    pub operator: Option<String>,
    pub category: Option<String>,
    /// Only visits whose identity was verified (IP ranges, reverse DNS or a signature).
    pub verified_only: bool,
    /// Only visits to one page (its `page_key`: any scheme and port).
    pub page_key: Option<String>,
}

impl VisitScope {
    /// All of a client's visits in `[from, to)`.
    pub fn new(client: Uuid, from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        Self {
            client,
            from,
            to,
            bot: None,
            operator: None,
            category: None,
            verified_only: false,
            page_key: None,
        }
    }

    /// `$1`–`$10` of the `filtered_visits` fragment.
    fn args(&self) -> Result<PgArguments, sqlx::Error> {
        let (hosts, operators) = crate::domain::referrers::hosts_and_operators();
        let mut args = PgArguments::default();
        push(&mut args, self.client)?;
        push(&mut args, self.from)?;
        push(&mut args, self.to)?;
        push(&mut args, self.bot.as_deref())?;
        push(&mut args, self.operator.as_deref())?;
        push(&mut args, self.category.as_deref())?;
        push(&mut args, self.verified_only)?;
        push(&mut args, self.page_key.as_deref())?;
        push(&mut args, hosts)?;
        push(&mut args, operators)?;
        Ok(args)
    }
}

/// Visits of one client over a time range.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Totals {
    pub visits: i64,
    pub ai_visits: i64,
    pub search_bot_visits: i64,
    pub other_bot_visits: i64,
    pub human_visits: i64,
    pub worker_proxy_visits: i64,
    /// AI agents' share of all visits (0 when there were none).
    pub ai_share: f64,
    /// Bot visits whose IP is in the operator's published ranges.
    pub ip_verified: i64,
    /// Bot visits claiming an operator that publishes ranges, from outside them.
    pub ip_mismatch: i64,
    /// Visits whose identity was verified (IP ranges, reverse DNS or a signature); the rest
    /// only claim theirs.
    pub verified: i64,
    /// Requests answered with Markdown or minimal HTML from the cache.
    pub served_from_cache: i64,
    /// Named bots' visits to paths the site's robots.txt disallows for them.
    pub robots_violations: i64,
    /// People who came from an AI assistant's answer (`Referer`).
    pub referrals: i64,
    /// Bytes served (of the visits whose edge reported it).
    pub bytes: i64,
}

/// One group of visits.
#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Group {
    /// The bot, operator, category, day (`YYYY-MM-DD`, UTC), hour (`YYYY-MM-DDTHH:00Z`),
    /// page, visitor type, verification, status, format served, referrer or section. Visits
    /// without a bot, operator or category are `human` (people) or `unknown bot`, `unknown
    /// operator`, `unknown` (bots nobody names). A page is the client's page URL, whatever
    /// scheme and port it was asked by, or `//host/path` for what is not one of its pages.
    pub key: String,
    /// The page, for `group_by=page` groups that are one of the client's pages.
    #[sqlx(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_id: Option<Uuid>,
    pub visits: i64,
    pub ai_visits: i64,
    pub ip_verified: i64,
    pub ip_mismatch: i64,
    /// Bytes served (of the visits whose edge reported it).
    pub bytes: i64,
    pub last_visit_at: DateTime<Utc>,
}

/// A group and the number of groups in all.
#[derive(sqlx::FromRow)]
struct GroupRow {
    #[sqlx(flatten)]
    group: Group,
    total_groups: i64,
}

/// A page AI agents read (or asked for: `top_ai_misses`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TopPage {
    /// The client's page URL; for a miss `//host/path` (any scheme and port).
    pub url: String,
    /// The page (absent for a miss).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_id: Option<Uuid>,
    pub ai_visits: i64,
    pub bots: i64,
}

/// What `stats` answers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct VisitStats {
    pub totals: Totals,
    pub group_by: GroupBy,
    /// How many groups there are in all (for paging).
    pub total_groups: i64,
    pub groups: Vec<Group>,
    /// The client's pages AI agents read most (up to 10): answered below 400, counted once
    /// whatever scheme and port they were asked by.
    pub top_ai_pages: Vec<TopPage>,
    /// What AI agents asked for most that is not one of the client's pages, or was answered
    /// 400 or more (up to 10).
    pub top_ai_misses: Vec<TopPage>,
}

/// The client's pages with these keys (`page_key`): key → (id, URL).
async fn pages_by_key(
    db: &sqlx::PgPool,
    client: Uuid,
    keys: Vec<String>,
) -> Result<HashMap<String, (Uuid, String)>, sqlx::Error> {
    let pages: Vec<(String, Uuid, String)> = sqlx::query_as(sql::visits::PAGES_BY_KEY)
        .bind(client)
        .bind(keys)
        .fetch_all(db)
        .await?;
    Ok(pages
        .into_iter()
        .map(|(key, id, url)| (key, (id, url)))
        .collect())
}

/// Page groups (keyed by `page_key`) named after the client's pages: its URL and id, or
/// `//host/path` for what is not one of its pages.
async fn name_pages(
    db: &sqlx::PgPool,
    client: Uuid,
    groups: &mut [Group],
) -> Result<(), sqlx::Error> {
    let pages = pages_by_key(db, client, groups.iter().map(|g| g.key.clone()).collect()).await?;
    for group in groups {
        match pages.get(&group.key) {
            Some((id, url)) => {
                group.page_id = Some(*id);
                group.key = url.clone();
            }
            None => group.key = format!("//{}", group.key),
        }
    }
    Ok(())
}

/// A client's visits in its scope, totalled and grouped by `group_by`, `limit` groups from
/// `offset`.
pub async fn stats(
    db: &sqlx::PgPool,
    scope: &VisitScope,
    group_by: GroupBy,
    (limit, offset): (i64, i64),
) -> Result<VisitStats, sqlx::Error> {
    type TotalsRow = (
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    );
    let totals: TotalsRow = sqlx::query_as_with(sql::visits::TOTALS, scope.args()?)
        .fetch_one(db)
        .await?;
    let (visits, ai, search, other, human, worker, ip_verified, mismatch, cached, violations) = (
        totals.0, totals.1, totals.2, totals.3, totals.4, totals.5, totals.6, totals.7, totals.8,
        totals.9,
    );
    let (verified, referrals, bytes) = (totals.10, totals.11, totals.12);
    // `{expr}` and `{order}` are filled from the closed set of `GroupBy`, never from input.
    let sql = sql::visits::GROUPS
        .replace("{expr}", group_by.expr())
        .replace("{order}", group_by.order());
    let mut args = scope.args()?;
    push(&mut args, limit)?;
    push(&mut args, offset)?;
    let rows: Vec<GroupRow> = sqlx::query_as_with(sqlx::AssertSqlSafe(sql), args)
        .fetch_all(db)
        .await?;
    let total_groups = match rows.first() {
        Some(r) => r.total_groups,
        // Past the last page: count the groups on their own.
        None if offset > 0 => {
            let sql = sql::visits::COUNT_GROUPS.replace("{expr}", group_by.expr());
            sqlx::query_scalar_with(sqlx::AssertSqlSafe(sql), scope.args()?)
                .fetch_one(db)
                .await?
        }
        None => 0,
    };
    let mut groups: Vec<Group> = rows.into_iter().map(|r| r.group).collect();
    if group_by == GroupBy::Page {
        name_pages(db, scope.client, &mut groups).await?;
    }
    let top_ai_pages = sqlx::query_as_with(sql::visits::TOP_AI_PAGES, scope.args()?)
        .fetch_all(db)
        .await?;
    let top_ai_misses = sqlx::query_as_with(sql::visits::TOP_AI_MISSES, scope.args()?)
        .fetch_all(db)
        .await?;
    let share = |part: i64| {
        if visits == 0 {
            0.0
        } else {
            part as f64 / visits as f64
        }
    };
    Ok(VisitStats {
        totals: Totals {
            visits,
            ai_visits: ai,
            search_bot_visits: search,
            other_bot_visits: other,
            human_visits: human,
            worker_proxy_visits: worker,
            ai_share: share(ai),
            ip_verified,
            ip_mismatch: mismatch,
            verified,
            served_from_cache: cached,
            robots_violations: violations,
            referrals,
            bytes,
        },
        group_by,
        total_groups,
        groups,
        top_ai_pages,
        top_ai_misses,
    })
}

/// Series over time: per day, or per hour.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Day,
    Hour,
}

impl Interval {
    fn expr(self) -> &'static str {
        match self {
            Self::Day => DAY,
            Self::Hour => HOUR,
        }
    }

    /// Every bucket of `[from, to)`, named as the SQL names them.
    pub fn buckets(self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
        let (step, format) = match self {
            Self::Day => (chrono::Duration::days(1), "%Y-%m-%d"),
            Self::Hour => (chrono::Duration::hours(1), "%Y-%m-%dT%H:00Z"),
        };
        let mut at = match self {
            Self::Day => from.date_naive().and_time(chrono::NaiveTime::MIN).and_utc(),
            Self::Hour => from
                .date_naive()
                .and_hms_opt(chrono::Timelike::hour(&from), 0, 0)
                .map_or(from, |t| t.and_utc()),
        };
        let mut buckets = Vec::new();
        while at < to {
            buckets.push(at.format(format).to_string());
            at += step;
        }
        buckets
    }
}

/// One line of a series: visits per bucket.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct SeriesLine {
    /// What the line counts (a bot, a category...; `other` for the rest).
    pub key: String,
    pub total: i64,
    /// One per bucket, in their order.
    pub values: Vec<i64>,
}

/// Visits over time, split in lines.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Series {
    pub interval: Interval,
    /// The buckets' names: days (`YYYY-MM-DD`) or hours (`YYYY-MM-DDTHH:00Z`), UTC.
    pub buckets: Vec<String>,
    /// Busiest first; past `lines`, the rest are summed in one `other` line.
    pub series: Vec<SeriesLine>,
}

/// Rows `(bucket, key, visits)` as lines over `buckets`: the `lines - 1` busiest keys, and
/// the rest summed as `other` (when there are more than `lines`).
fn into_series(
    interval: Interval,
    buckets: Vec<String>,
    rows: Vec<(String, String, i64)>,
    lines: usize,
) -> Series {
    let index: HashMap<&str, usize> = buckets
        .iter()
        .enumerate()
        .map(|(i, b)| (b.as_str(), i))
        .collect();
    let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
    for (bucket, key, visits) in rows {
        if let Some(&i) = index.get(bucket.as_str()) {
            by_key.entry(key).or_insert_with(|| vec![0; buckets.len()])[i] += visits;
        }
    }
    let mut series: Vec<SeriesLine> = by_key
        .into_iter()
        .map(|(key, values)| SeriesLine {
            total: values.iter().sum(),
            key,
            values,
        })
        .collect();
    series.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.key.cmp(&b.key)));
    if series.len() > lines.max(1) {
        let rest = series.split_off(lines.max(1) - 1);
        let mut other = SeriesLine {
            key: "other".into(),
            total: 0,
            values: vec![0; buckets.len()],
        };
        for line in rest {
            other.total += line.total;
            for (sum, v) in other.values.iter_mut().zip(line.values) {
                *sum += v;
            }
        }
        series.push(other);
    }
    Series {
        interval,
        buckets,
        series,
    }
}

/// A client's visits in its scope per day or hour, split by `split` in up to `lines` lines.
pub async fn series(
    db: &sqlx::PgPool,
    scope: &VisitScope,
    interval: Interval,
    split: GroupBy,
    lines: usize,
) -> Result<Series, sqlx::Error> {
    // Both filled from closed sets, never from input.
    let sql = sql::visits::SERIES
        .replace("{bucket}", interval.expr())
        .replace("{expr}", split.expr());
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as_with(sqlx::AssertSqlSafe(sql), scope.args()?)
            .fetch_all(db)
            .await?;
    Ok(into_series(
        interval,
        interval.buckets(scope.from, scope.to),
        rows,
        lines,
    ))
}

/// An operator's crawls and the people its assistant referred.
#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OperatorReferrals {
    pub operator: String,
    /// Its AI bots' requests, except those a person triggered (`user_fetch`, `agent`).
    pub crawls: i64,
    /// Visits of people who followed a link from its assistant.
    pub referrals: i64,
    /// Crawls per referral (as Cloudflare Radar reports it); absent without referrals.
    #[sqlx(skip)]
    pub crawl_to_refer: Option<f64>,
}

/// What AI assistants send back.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Referrals {
    pub total_referrals: i64,
    pub total_crawls: i64,
    /// Per operator, most referrals first.
    pub operators: Vec<OperatorReferrals>,
    /// Referrals per day and operator.
    pub per_day: Series,
}

/// A client's referrals from AI assistants and its crawl-to-refer ratio per operator.
pub async fn referrals(db: &sqlx::PgPool, scope: &VisitScope) -> Result<Referrals, sqlx::Error> {
    let mut operators: Vec<OperatorReferrals> =
        sqlx::query_as_with(sql::visits::REFERRALS, scope.args()?)
            .fetch_all(db)
            .await?;
    for o in &mut operators {
        o.crawl_to_refer = (o.referrals > 0).then(|| o.crawls as f64 / o.referrals as f64);
    }
    let rows = sqlx::query_as_with(sql::visits::REFERRALS_PER_DAY, scope.args()?)
        .fetch_all(db)
        .await?;
    Ok(Referrals {
        total_referrals: operators.iter().map(|o| o.referrals).sum(),
        total_crawls: operators.iter().map(|o| o.crawls).sum(),
        operators,
        per_day: into_series(
            Interval::Day,
            Interval::Day.buckets(scope.from, scope.to),
            rows,
            12,
        ),
    })
}

/// One visit, as the visit list shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct VisitView {
    pub id: Uuid,
    pub visited_at: DateTime<Utc>,
    pub url: String,
    #[serde(skip)]
    key: String,
    /// The client's page it asked for (any scheme and port), if it is one.
    #[sqlx(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_id: Option<Uuid>,
    pub visitor_type: String,
    pub bot_name: Option<String>,
    pub operator: Option<String>,
    pub category: Option<String>,
    pub verification: String,
    pub format_served: String,
    pub status: Option<i32>,
    pub bytes: Option<i64>,
    pub referrer: Option<String>,
    /// The AI assistant's operator, when the referrer is one.
    pub referred_by: Option<String>,
    pub user_agent: Option<String>,
    pub robots: Option<String>,
    pub signature_agent: Option<String>,
    pub charged_price: Option<String>,
}

/// Where a visit list goes on from: the last visit shown.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VisitCursor {
    pub visited_at: DateTime<Utc>,
    pub id: Uuid,
}

impl VisitCursor {
    /// `<RFC 3339 time>_<id>`.
    pub fn encode(&self) -> String {
        format!(
            "{}_{}",
            self.visited_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            self.id
        )
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (at, id) = text.rsplit_once('_')?;
        Some(Self {
            visited_at: DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc),
            id: id.parse().ok()?,
        })
    }
}

/// Up to `limit` of a client's visits in its scope, newest first, after `after`; and the
/// cursor of the next page when there may be one.
pub async fn list(
    db: &sqlx::PgPool,
    scope: &VisitScope,
    after: Option<VisitCursor>,
    limit: i64,
) -> Result<(Vec<VisitView>, Option<VisitCursor>), sqlx::Error> {
    let mut args = scope.args()?;
    push(&mut args, after.map(|c| c.visited_at))?;
    push(&mut args, after.map(|c| c.id))?;
    push(&mut args, limit)?;
    let mut visits: Vec<VisitView> = sqlx::query_as_with(sql::visits::LIST, args)
        .fetch_all(db)
        .await?;
    let mut keys: Vec<String> = visits.iter().map(|v| v.key.clone()).collect();
    keys.sort_unstable();
    keys.dedup();
    let pages = pages_by_key(db, scope.client, keys).await?;
    for v in &mut visits {
        v.page_id = pages.get(&v.key).map(|(id, _)| *id);
    }
    let next = (visits.len() as i64 == limit)
        .then(|| visits.last())
        .flatten()
        .map(|v| VisitCursor {
            visited_at: v.visited_at,
            id: v.id,
        });
    Ok((visits, next))
}

/// A bot's visits to paths robots.txt disallows for it, over a time range.
#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RobotsViolations {
    pub bot_name: String,
    /// The bot's operator (empty when the catalogue names none).
    pub operator: String,
    pub violations: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The URLs it read against the rules, most read first.
    #[sqlx(json)]
    #[schema(value_type = Vec<ViolatedUrl>)]
    pub urls: Vec<ViolatedUrl>,
}

/// A URL read against robots.txt, and how often.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ViolatedUrl {
    pub url: String,
    pub visits: i64,
}

/// Most URLs listed per bot.
pub const VIOLATED_URLS: i64 = 20;

/// The robots.txt violations of a client in `[from, to)`, per bot, most first.
pub async fn robots_violations(
    db: &sqlx::PgPool,
    client: Uuid,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<RobotsViolations>, sqlx::Error> {
    sqlx::query_as(sql::visits::ROBOTS_VIOLATIONS)
        .bind(client)
        .bind(from)
        .bind(to)
        .bind(VIOLATED_URLS)
        .fetch_all(db)
        .await
}

/// The `page_key` of a client's page, if it has that page.
pub async fn page_key_of(
    db: &sqlx::PgPool,
    client: Uuid,
    page: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(sql::visits::PAGE_KEY_OF)
        .bind(client)
        .bind(page)
        .fetch_optional(db)
        .await
}
