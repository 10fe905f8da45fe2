//! Verified rebuilds: a projection rebuilt from its stream into a scratch schema and compared,
//! row for row, with the live one at the same stream position, without touching the live
//! tables.
//!
//! The scratch schema holds copies of the projection's tables (`CREATE TABLE ... (LIKE ...)`)
//! and its own checkpoint table; the rebuild runs on a pool whose `search_path` is that schema
//! alone, so the projection's unqualified SQL cannot reach a live table. Rows are compared
//! with `EXCEPT ALL` both ways inside one repeatable-read snapshot of the live side, taken
//! when the live checkpoint equals the rebuilt one. The schema is dropped afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::Projection;
use super::runtime::{ProjectionRunner, RunnerError};
use super::sql;

/// Tables every projection's runner writes besides its own.
const RUNTIME_TABLES: [&str; 2] = ["projection_checkpoints", "projection_failures"];

/// How long to wait for the live projection to reach the rebuilt position.
const LIVE_WAIT: Duration = Duration::from_secs(30);

/// What a verified rebuild found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub projection: &'static str,
    /// The stream position both sides were compared at.
    pub position: u64,
    /// How long the rebuild and comparison took.
    pub seconds: f64,
    pub tables: Vec<TableComparison>,
}

/// One table of the comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableComparison {
    pub table: &'static str,
    pub rows: i64,
    /// Live rows the rebuild does not have.
    pub only_live: i64,
    /// Rebuilt rows the live table does not have.
    pub only_rebuilt: i64,
}

impl Verification {
    /// Whether the rebuild produced exactly the live rows.
    pub fn equal(&self) -> bool {
        self.tables
            .iter()
            .all(|t| t.only_live == 0 && t.only_rebuilt == 0)
    }
}

/// Why a verification could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error("the live projection {0} stays behind the stream: is the projections role running?")]
    LiveBehind(&'static str),
}

/// Rebuilds `projection` from its stream into a scratch schema and compares it with the live
/// tables. `progress` gets (position, stream end) after each batch.
pub async fn verify(
    db: &PgPool,
    js: &jetstream::Context,
    projection: Arc<dyn Projection>,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<Verification, VerifyError> {
    let schema = format!("aicache_verify_{}", uuid::Uuid::new_v4().simple());
    create_scratch(db, &schema, projection.as_ref()).await?;
    let result = verify_in(db, js, projection, &schema, progress).await;
    // Always dropped, whatever happened.
    let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(db).await {
        tracing::warn!(schema, error = %e, "could not drop the scratch schema");
    }
    result
}

async fn create_scratch(
    db: &PgPool,
    schema: &str,
    projection: &dyn Projection,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    // Names come from the projection's constant table list and a generated uuid.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut *tx)
        .await?;
    for table in projection.tables().iter().chain(RUNTIME_TABLES.iter()) {
        let sql = format!("CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

async fn verify_in(
    db: &PgPool,
    js: &jetstream::Context,
    projection: Arc<dyn Projection>,
    schema: &str,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<Verification, VerifyError> {
    let name = projection.name();
    let options = (*db.connect_options())
        .clone()
        .options([("search_path", schema)]);
    let scratch = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await?;
    let runner = ProjectionRunner::new(Arc::clone(&projection), scratch.clone(), js.clone())
        .with_batch(super::runtime::REBUILD_BATCH);
    let started = Instant::now();
    let mut position = runner.catch_up(progress).await?;
    // Compare at one position: catch up with the live side until both stand at the same
    // sequence inside the live snapshot.
    for _ in 0..10 {
        let reached = super::runtime::wait_for(db, name, position, LIVE_WAIT).await?;
        if !reached {
            return Err(VerifyError::LiveBehind(name));
        }
        let mut tx = db.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let live: i64 = sqlx::query_scalar(sql::runtime::LIVE_CHECKPOINT)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if u64::try_from(live).unwrap_or(0) == position {
            let mut tables = Vec::new();
            for &table in projection.tables() {
                tables.push(compare(&mut tx, schema, table).await?);
            }
            tx.commit().await?;
            scratch.close().await;
            return Ok(Verification {
                projection: name,
                position,
                seconds: started.elapsed().as_secs_f64(),
                tables,
            });
        }
        tx.rollback().await?;
        // The live side moved on: follow it.
        position = runner.catch_up(progress).await?;
    }
    Err(VerifyError::LiveBehind(name))
}

async fn compare(
    tx: &mut sqlx::PgConnection,
    schema: &str,
    table: &'static str,
) -> Result<TableComparison, sqlx::Error> {
    let rows = count(tx, format!("SELECT count(*) FROM public.{table}")).await?;
    let only_live = count(
        tx,
        format!(
            "SELECT count(*) FROM (SELECT * FROM public.{table} EXCEPT ALL SELECT * FROM {schema}.{table}) d"
        ),
    )
    .await?;
    let only_rebuilt = count(
        tx,
        format!(
            "SELECT count(*) FROM (SELECT * FROM {schema}.{table} EXCEPT ALL SELECT * FROM public.{table}) d"
        ),
    )
    .await?;
    Ok(TableComparison {
        table,
        rows,
        only_live,
        only_rebuilt,
    })
}

/// Runs a `SELECT count(*)` built from constant table names.
async fn count(conn: &mut sqlx::PgConnection, sql: String) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(conn)
        .await
}
