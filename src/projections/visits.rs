//! The visits projection: the original `visits` table plus classification and verification.

use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::PgConnection;

use super::{ApplyError, Projection, StoredMessage, decode, enum_name};
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
            insert(conn, &rows).await?;
            Ok(())
        }
        .boxed()
    }

    /// Visits arrive by the thousand: one multi-row insert per batch.
    fn apply_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        batch: &'a [&'a StoredMessage],
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>, sqlx::Error>> {
        async move {
            let mut rows = Vec::with_capacity(batch.len());
            let mut skipped = Vec::new();
            for (i, msg) in batch.iter().enumerate() {
                let before = rows.len();
                match Row::decode(msg, &mut rows) {
                    Ok(()) => {}
                    Err(ApplyError::Skip(reason)) => {
                        rows.truncate(before);
                        skipped.push((i, reason));
                    }
                    Err(ApplyError::Db(e)) => return Err(e),
                }
                // One statement per few thousand rows: bounded parameters, and a batch of
                // batch events stays a handful of statements.
                if rows.len() >= INSERT_ROWS {
                    insert(conn, &rows).await?;
                    rows.clear();
                }
            }
            insert(conn, &rows).await?;
            Ok(skipped)
        }
        .boxed()
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

/// Inserts rows; the visit's id is the row id, so a visit reported again cannot count twice
/// (nor a visit repeated within one statement: the first is kept).
async fn insert(conn: &mut PgConnection, rows: &[Row]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&Row) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
    sqlx::query(sql::visits::INSERT_VISIT)
        .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.page_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.client_id).collect::<Vec<_>>())
        .bind(col(|r| Some(r.visit.url.as_str())))
        .bind(col(|r| Some(r.visitor_type.as_str())))
        .bind(col(|r| r.visit.user_agent.as_deref()))
        .bind(col(|r| r.visit.ip_hash.as_deref()))
        .bind(col(|r| r.visit.referrer.as_deref()))
        .bind(col(|r| r.visit.bot_name.as_deref()))
        .bind(col(|r| r.visit.operator.as_deref()))
        .bind(col(|r| r.visit.category.as_deref()))
        .bind(col(|r| Some(r.verification.as_str())))
        .bind(col(|r| Some(r.format_served.as_str())))
        .bind(
            rows.iter()
                .map(|r| r.visit.status.map(i32::from))
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.visit.visited_at).collect::<Vec<_>>())
        .bind(col(|r| r.visit.charged_price.as_deref()))
        .bind(col(|r| r.visit.signature_agent.as_deref()))
        .bind(col(|r| r.robots.as_deref()))
        .execute(conn)
        .await?;
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
}

impl GroupBy {
    /// The grouping expression (a fixed list: never built from input).
    fn expr(self) -> &'static str {
        match self {
            Self::Bot => {
                "coalesce(bot_name, CASE visitor_type WHEN 'human' THEN 'human' ELSE 'unknown bot' END)"
            }
            Self::Operator => {
                "coalesce(operator, CASE visitor_type WHEN 'human' THEN 'human' ELSE 'unknown operator' END)"
            }
            Self::Category => {
                "coalesce(category, CASE visitor_type WHEN 'human' THEN 'human' ELSE 'unknown' END)"
            }
            Self::Day => "to_char(visited_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            // One page whatever the scheme and port it was asked by: named after the
            // client's page afterwards (`name_pages`).
            Self::Page => "page_key(url)",
            Self::VisitorType => "visitor_type",
            Self::Verification => "verification",
            Self::Status => "coalesce(status::text, 'unknown')",
            Self::Format => "format_served",
            Self::Hour => "to_char(visited_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:00\"Z\"')",
        }
    }

    /// Days and hours in time order; everything else busiest first.
    fn order(self) -> &'static str {
        match self {
            Self::Day | Self::Hour => "key ASC",
            _ => "visits DESC, key ASC",
        }
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
    /// Requests answered with Markdown or minimal HTML from the cache.
    pub served_from_cache: i64,
    /// Named bots' visits to paths the site's robots.txt disallows for them.
    pub robots_violations: i64,
}

/// One group of visits.
#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Group {
    /// The bot, operator, category, day (`YYYY-MM-DD`, UTC), hour (`YYYY-MM-DDTHH:00Z`),
    /// page, visitor type, verification, status or format served. Visits
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
    pub last_visit_at: chrono::DateTime<chrono::Utc>,
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

/// The range and page of a `stats` query.
#[derive(Clone, Copy, Debug)]
pub struct StatsQuery {
    pub client: Uuid,
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
    pub group_by: GroupBy,
    pub limit: i64,
    pub offset: i64,
}

/// Page groups (keyed by `page_key`) named after the client's pages: its URL and id, or
/// `//host/path` for what is not one of its pages.
async fn name_pages(
    db: &sqlx::PgPool,
    client: Uuid,
    groups: &mut [Group],
) -> Result<(), sqlx::Error> {
    let keys: Vec<String> = groups.iter().map(|g| g.key.clone()).collect();
    let pages: Vec<(String, Uuid, String)> = sqlx::query_as(sql::visits::PAGES_BY_KEY)
        .bind(client)
        .bind(&keys)
        .fetch_all(db)
        .await?;
    let pages: std::collections::HashMap<String, (Uuid, String)> = pages
        .into_iter()
        .map(|(key, id, url)| (key, (id, url)))
        .collect();
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

/// Visits of a client in `[from, to)`, totalled and grouped.
pub async fn stats(db: &sqlx::PgPool, q: StatsQuery) -> Result<VisitStats, sqlx::Error> {
    let totals: (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(sql::visits::TOTALS)
            .bind(q.client)
            .bind(q.from)
            .bind(q.to)
            .fetch_one(db)
            .await?;
    let (visits, ai, search, other, human, worker, verified, mismatch, cached, violations) = totals;
    // `{expr}` and `{order}` are filled from the closed set of `GroupBy`, never from input.
    let sql = sql::visits::GROUPS
        .replace("{expr}", q.group_by.expr())
        .replace("{order}", q.group_by.order());
    let rows: Vec<GroupRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(q.client)
        .bind(q.from)
        .bind(q.to)
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(db)
        .await?;
    let total_groups = match rows.first() {
        Some(r) => r.total_groups,
        // Past the last page: count the groups on their own.
        None if q.offset > 0 => {
            let sql = sql::visits::COUNT_GROUPS.replace("{expr}", q.group_by.expr());
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(q.client)
                .bind(q.from)
                .bind(q.to)
                .fetch_one(db)
                .await?
        }
        None => 0,
    };
    let mut groups: Vec<Group> = rows.into_iter().map(|r| r.group).collect();
    if q.group_by == GroupBy::Page {
        name_pages(db, q.client, &mut groups).await?;
    }
    let top = |statement| {
        sqlx::query_as::<_, TopPage>(statement)
            .bind(q.client)
            .bind(q.from)
            .bind(q.to)
            .fetch_all(db)
    };
    let top_ai_pages = top(sql::visits::TOP_AI_PAGES).await?;
    let top_ai_misses = top(sql::visits::TOP_AI_MISSES).await?;
    Ok(VisitStats {
        totals: Totals {
            visits,
            ai_visits: ai,
            search_bot_visits: search,
            other_bot_visits: other,
            human_visits: human,
            worker_proxy_visits: worker,
            ai_share: if visits == 0 {
                0.0
            } else {
                ai as f64 / visits as f64
            },
            ip_verified: verified,
            ip_mismatch: mismatch,
            served_from_cache: cached,
            robots_violations: violations,
        },
        group_by: q.group_by,
        total_groups,
        groups,
        top_ai_pages,
        top_ai_misses,
    })
}

/// A bot's visits to paths robots.txt disallows for it, over a time range.
#[derive(Clone, Debug, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RobotsViolations {
    pub bot_name: String,
    /// The bot's operator (empty when the catalogue names none).
    pub operator: String,
    pub violations: i64,
    pub first_seen: chrono::DateTime<chrono::Utc>,
    pub last_seen: chrono::DateTime<chrono::Utc>,
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
