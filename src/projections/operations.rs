//! The operations read model: reprocessing runs (`reprocess_runs`: requested by the API,
//! planned by the `reprocessor`, read by the API and the CLI) and webhook deliveries
//! (`webhook_deliveries`, written by the `webhooks` stage). Unlike the other read models these
//! rows are written by the operations themselves, not projected from a stream: they record how
//! an operation went, and a rebuild of the projections leaves them alone.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::sql;

/// A row of `reprocess_runs`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RunRow {
    pub id: Uuid,
    pub client_id: Uuid,
    pub from_stage: String,
    pub url_prefix: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub force: bool,
    /// `requested`, `planning` or `planned`.
    pub status: String,
    /// The pages the run selected, once the planner counted them.
    pub total: Option<i64>,
    /// The pages the planner sent so far.
    pub requested: i64,
    /// The last page sent (pages go in id order).
    pub cursor: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub planned_at: Option<DateTime<Utc>>,
}

/// What a run selects: a client's pages, by URL prefix and by when they were last processed.
#[derive(Clone, Copy, Debug)]
pub struct Selection<'a> {
    pub client: Uuid,
    pub url_prefix: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// One run.
pub async fn run<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as(sql::operations::RUN)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// A client's runs, newest first.
pub async fn client_runs(
    db: &PgPool,
    client: Uuid,
    limit: i64,
) -> Result<Vec<RunRow>, sqlx::Error> {
    sqlx::query_as(sql::operations::CLIENT_RUNS)
        .bind(client)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// How a run's pages ended so far, counted by outcome.
pub async fn run_outcomes(db: &PgPool, id: Uuid) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(sql::operations::RUN_OUTCOMES)
        .bind(id)
        .fetch_all(db)
        .await
}

/// How many pages `selection` holds.
pub async fn count_selected(db: &PgPool, selection: Selection<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql::operations::RUN_COUNT_PAGES)
        .bind(selection.client)
        .bind(selection.url_prefix)
        .bind(selection.since)
        .bind(selection.until)
        .fetch_one(db)
        .await
}

/// The next `limit` pages of `selection` after `cursor`, in id order.
pub async fn next_selected(
    db: &PgPool,
    selection: Selection<'_>,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(sql::operations::RUN_NEXT_PAGES)
        .bind(selection.client)
        .bind(selection.url_prefix)
        .bind(selection.since)
        .bind(selection.until)
        .bind(cursor)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// The planner starts: the run's total is known.
pub async fn run_planning(db: &PgPool, id: Uuid, total: i64) -> Result<(), sqlx::Error> {
    sqlx::query(sql::operations::RUN_PLANNING)
        .bind(id)
        .bind(total)
        .execute(db)
        .await
        .map(drop)
}

/// The planner sent `sent` more pages, the last of them `cursor`.
pub async fn run_progress(
    db: &PgPool,
    id: Uuid,
    cursor: Uuid,
    sent: usize,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql::operations::RUN_PROGRESS)
        .bind(id)
        .bind(cursor)
        .bind(i64::try_from(sent).unwrap_or(i64::MAX))
        .execute(db)
        .await
        .map(drop)
}

/// Every page of the run was sent.
pub async fn run_planned(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(sql::operations::RUN_PLANNED)
        .bind(id)
        .execute(db)
        .await
        .map(drop)
}

/// A run as it is first recorded.
#[derive(Clone, Copy, Debug)]
pub struct NewRun<'a> {
    pub id: Uuid,
    pub from_stage: &'a str,
    pub selection: Selection<'a>,
    pub force: bool,
    pub at: DateTime<Utc>,
}

/// Records a requested run.
pub async fn insert_run(db: &PgPool, run: NewRun<'_>) -> Result<(), sqlx::Error> {
    bind_run(sqlx::query(sql::operations::INSERT_RUN), run)
        .execute(db)
        .await
        .map(drop)
}

/// Records a run the planner met first (its request came from another tool than the API).
pub async fn insert_run_if_absent(db: &PgPool, run: NewRun<'_>) -> Result<(), sqlx::Error> {
    bind_run(sqlx::query(sql::operations::INSERT_RUN_IF_ABSENT), run)
        .execute(db)
        .await
        .map(drop)
}

fn bind_run<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    run: NewRun<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(run.id)
        .bind(run.selection.client)
        .bind(run.from_stage)
        .bind(run.selection.url_prefix)
        .bind(run.selection.since)
        .bind(run.selection.until)
        .bind(run.force)
        .bind(run.at)
}

/// Forgets a run whose request could not be published (nothing would plan it).
pub async fn delete_run(db: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(sql::operations::DELETE_RUN)
        .bind(id)
        .execute(db)
        .await
        .map(drop)
}

/// Whether the client exists.
pub async fn client_exists(db: &PgPool, client: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(sql::operations::CLIENT_EXISTS)
        .bind(client)
        .fetch_one(db)
        .await
}

/// One attempt to deliver an event to a webhook, as the `webhooks` stage logs it.
pub struct DeliveryAttempt<'a> {
    pub webhook: Uuid,
    pub client: Uuid,
    pub event: Uuid,
    pub event_type: &'a str,
    /// The stage's delivery of the event (1 for the first).
    pub attempt: i32,
    pub succeeded: bool,
    pub status_code: Option<i32>,
    pub error: Option<&'a str>,
    pub duration_ms: i64,
}

/// Logs a delivery attempt.
pub async fn record_delivery(db: &PgPool, a: DeliveryAttempt<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(sql::operations::INSERT_DELIVERY)
        .bind(a.webhook)
        .bind(a.client)
        .bind(a.event)
        .bind(a.event_type)
        .bind(a.attempt)
        .bind(a.succeeded)
        .bind(a.status_code)
        .bind(a.error)
        .bind(a.duration_ms)
        .execute(db)
        .await
        .map(drop)
}

/// Which of `webhooks` already got `event` (a delivery that succeeded).
pub async fn delivered_webhooks(
    db: &PgPool,
    event: Uuid,
    webhooks: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(sql::operations::DELIVERED_WEBHOOKS)
        .bind(event)
        .bind(webhooks)
        .fetch_all(db)
        .await
}

/// A webhook's delivery attempts, newest first: at most `limit`, older than `before`.
pub async fn webhook_deliveries<T>(
    db: &PgPool,
    webhook: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<T>, sqlx::Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sql::operations::WEBHOOK_DELIVERIES)
        .bind(webhook)
        .bind(before)
        .bind(limit)
        .fetch_all(db)
        .await
}
