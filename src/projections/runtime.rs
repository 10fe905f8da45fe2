//! Feeds a projection from its stream: an ordered consumer starting after the checkpoint,
//! events applied in batches, each batch and the new checkpoint in one transaction.
//!
//! Several runners of the same projection (other processes, or a rebuild beside a live
//! runner) are safe: each batch locks the checkpoint row and is applied only if the
//! checkpoint is where the runner left it; otherwise the runner resumes from the checkpoint.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::{FutureExt, StreamExt};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::sql;
use super::{ApplyError, Projection, StoredMessage};

/// Largest number of events applied in one transaction.
pub const DEFAULT_BATCH: usize = 500;

/// Largest batch of a rebuild: it reads a backlog, not a trickle, so fewer and larger
/// transactions (one commit, one fsync each) cost less per event.
pub const REBUILD_BATCH: usize = 2_000;

/// How long a runner waits for more events before applying a partial batch.
const BATCH_LINGER: Duration = Duration::from_millis(5);

/// A runner stopped for a reason other than shutdown.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("projection {name}: {message}")]
    Nats { name: &'static str, message: String },
    #[error("projection {name}: database: {source}")]
    Db {
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

/// Runs one projection.
pub struct ProjectionRunner {
    projection: Arc<dyn Projection>,
    db: PgPool,
    js: jetstream::Context,
    batch: usize,
    position: watch::Sender<u64>,
    /// Batches applied ([`ProjectionRunner::batches_applied`]).
    applied: std::sync::atomic::AtomicU64,
    /// Batches applied on two connections ([`ProjectionRunner::batches_on_two`]).
    on_two: std::sync::atomic::AtomicU64,
    /// Changes when the NATS client reconnects (see [`ProjectionRunner::on_reconnect`]).
    reconnects: Option<watch::Receiver<u64>>,
}

/// What the runner waits on between retries.
struct Waits<'a> {
    shutdown: &'a CancellationToken,
    retry: &'a mut Backoff,
    reconnects: &'a mut Option<watch::Receiver<u64>>,
}

/// Why following a consumer ended.
enum Followed {
    /// Open a new consumer from the position (reading the stream's end again first).
    Reopen,
    /// Shutdown, or caught up.
    Stop,
}

/// How applying a batch ended, retries included.
enum Applied {
    /// Applied: the new position.
    Done(u64),
    /// The checkpoint was elsewhere: resume from it.
    Moved(u64),
    /// Shutdown came first.
    Stopped,
}

enum BatchOutcome {
    Applied(u64),
    /// The checkpoint is not where this runner left it: resume from there.
    Moved(u64),
}

impl ProjectionRunner {
    pub fn new(projection: Arc<dyn Projection>, db: PgPool, js: jetstream::Context) -> Self {
        Self {
            projection,
            db,
            js,
            batch: DEFAULT_BATCH,
            position: watch::Sender::new(0),
            applied: std::sync::atomic::AtomicU64::new(0),
            on_two: std::sync::atomic::AtomicU64::new(0),
            reconnects: None,
        }
    }

    /// How many batches of new events this runner applied.
    pub fn batches_applied(&self) -> u64 {
        self.applied.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many batches this runner applied on two connections.
    pub fn batches_on_two(&self) -> u64 {
        self.on_two.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reopens the consumer as soon as `reconnects` changes (the NATS client reconnected):
    /// a restarted server has lost the runner's ephemeral consumer.
    pub fn on_reconnect(mut self, reconnects: watch::Receiver<u64>) -> Self {
        self.reconnects = Some(reconnects);
        self
    }

    /// Sets the largest batch applied in one transaction.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The last applied stream sequence, updated after each committed batch.
    pub fn position(&self) -> watch::Receiver<u64> {
        self.position.subscribe()
    }

    /// Applies events until `shutdown`; survives NATS and Postgres outages by retrying.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), RunnerError> {
        self.run_until(shutdown, None).await.map(|_| ())
    }

    /// Applies events until nothing is left in the stream after the checkpoint; returns the
    /// final checkpoint. `progress` is called after each batch with (checkpoint, stream end).
    pub async fn catch_up(
        &self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<u64, RunnerError> {
        self.run_until(CancellationToken::new(), Some(progress))
            .await
    }

    async fn run_until(
        &self,
        shutdown: CancellationToken,
        catch_up: Option<&(dyn Fn(u64, u64) + Send + Sync)>,
    ) -> Result<u64, RunnerError> {
        let name = self.projection.name();
        let mut reconnects = self.reconnects.clone();
        let mut position = self.load_checkpoint().await?;
        let mut retry = Backoff::default();
        'consumer: loop {
            if shutdown.is_cancelled() {
                return Ok(position);
            }
            let end = match self.stream_end().await {
                Ok(end) => end,
                Err(message) if catch_up.is_some() => {
                    return Err(RunnerError::Nats { name, message });
                }
                Err(message) => {
                    tracing::warn!(projection = name, error = %message, "stream unavailable, retrying");
                    retry.wait(&shutdown, &mut reconnects).await;
                    continue;
                }
            };
            if let Some(progress) = catch_up {
                progress(position, end);
                if position >= end {
                    return Ok(position);
                }
            }
            let mut messages = match self.open(position).await {
                Ok(messages) => messages,
                Err(message) => {
                    tracing::warn!(projection = name, error = %message, "cannot open consumer, retrying");
                    retry.wait(&shutdown, &mut reconnects).await;
                    continue;
                }
            };
            let mut waits = Waits {
                shutdown: &shutdown,
                retry: &mut retry,
                reconnects: &mut reconnects,
            };
            match self
                .follow(&mut messages, &mut position, catch_up, &mut waits)
                .await
            {
                Followed::Reopen => continue 'consumer,
                Followed::Stop => return Ok(position),
            }
        }
    }

    /// Applies batches from `messages`, advancing `position`, until the consumer must be
    /// opened again (a reconnect, an error, a moved checkpoint, idle in catch-up mode) or the
    /// runner stops (shutdown, or caught up).
    async fn follow(
        &self,
        messages: &mut consumer::pull::Ordered,
        position: &mut u64,
        catch_up: Option<&(dyn Fn(u64, u64) + Send + Sync)>,
        waits: &mut Waits<'_>,
    ) -> Followed {
        let name = self.projection.name();
        let idle = if catch_up.is_some() {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(3600)
        };
        loop {
            let batch = tokio::select! {
                _ = waits.shutdown.cancelled() => return Followed::Stop,
                _ = reconnected(waits.reconnects) => {
                    // A restarted server lost our ephemeral consumer: open a new one now
                    // rather than after the client misses its heartbeats.
                    tracing::info!(projection = name, "nats reconnected, reopening the consumer");
                    return Followed::Reopen;
                }
                batch = next_batch(messages, self.batch, idle) => batch,
            };
            let (batch, last_pending) = match batch {
                Ok(Some(b)) => b,
                // Idle: in catch-up mode, check again whether anything is left.
                Ok(None) => return Followed::Reopen,
                Err(message) => {
                    tracing::warn!(projection = name, error = %message, "consumer failed, reopening");
                    waits.retry.wait(waits.shutdown, waits.reconnects).await;
                    return Followed::Reopen;
                }
            };
            match self.apply_retrying(*position, &batch, waits).await {
                Applied::Done(p) => *position = p,
                Applied::Moved(p) => {
                    *position = p;
                    return Followed::Reopen;
                }
                Applied::Stopped => return Followed::Stop,
            }
            if let Some(progress) = catch_up {
                let end = self.stream_end().await.unwrap_or(*position);
                progress(*position, end);
                if last_pending == 0 {
                    return Followed::Stop;
                }
            }
        }
    }

    /// Applies `batch` at `position`, retrying (with backoff) until it is applied, the
    /// checkpoint turns out to have moved (another runner, a rebuild), or shutdown.
    async fn apply_retrying(
        &self,
        position: u64,
        batch: &[StoredMessage],
        waits: &mut Waits<'_>,
    ) -> Applied {
        let name = self.projection.name();
        loop {
            match self.apply_batch(position, batch).await {
                Ok(BatchOutcome::Applied(p)) => {
                    self.position.send_replace(p);
                    *waits.retry = Backoff::default();
                    return Applied::Done(p);
                }
                Ok(BatchOutcome::Moved(p)) => {
                    tracing::info!(
                        projection = name,
                        from = position,
                        to = p,
                        "checkpoint moved, resuming from it"
                    );
                    self.position.send_replace(p);
                    return Applied::Moved(p);
                }
                Err(e) => {
                    tracing::warn!(projection = name, error = %e, "applying batch failed, retrying");
                    waits.retry.wait(waits.shutdown, waits.reconnects).await;
                    if waits.shutdown.is_cancelled() {
                        return Applied::Stopped;
                    }
                }
            }
        }
    }

    async fn load_checkpoint(&self) -> Result<u64, RunnerError> {
        let name = self.projection.name();
        sqlx::query(sql::runtime::ENSURE_CHECKPOINT)
            .bind(name)
            .execute(&self.db)
            .await
            .map_err(|source| RunnerError::Db { name, source })?;
        let seq: i64 = sqlx::query_scalar(sql::runtime::CHECKPOINT)
            .bind(name)
            .fetch_one(&self.db)
            .await
            .map_err(|source| RunnerError::Db { name, source })?;
        let seq = u64::try_from(seq).unwrap_or(0);
        self.position.send_replace(seq);
        Ok(seq)
    }

    async fn stream_end(&self) -> Result<u64, String> {
        crate::infra::nats::last_sequence(&self.js, self.projection.stream().name()).await
    }

    async fn open(&self, position: u64) -> Result<consumer::pull::Ordered, String> {
        let stream = self
            .js
            .get_stream(self.projection.stream().name())
            .await
            .map_err(|e| e.to_string())?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: position + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        consumer.messages().await.map_err(|e| e.to_string())
    }

    async fn apply_batch(
        &self,
        expected: u64,
        batch: &[StoredMessage],
    ) -> Result<BatchOutcome, sqlx::Error> {
        let name = self.projection.name();
        let mut tx = self.begin().await?;
        let current: i64 = sqlx::query_scalar(sql::runtime::CHECKPOINT_FOR_UPDATE)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        let current = u64::try_from(current).unwrap_or(0);
        if current != expected {
            return Ok(BatchOutcome::Moved(current));
        }
        let fresh: Vec<&StoredMessage> = batch.iter().filter(|m| m.seq > current).collect();
        let Some(last) = fresh.last().map(|m| m.seq) else {
            return Ok(BatchOutcome::Applied(current));
        };
        let started = std::time::Instant::now();
        let other = if on_two_connections(self.projection.as_ref(), &fresh) {
            self.second_transaction().await
        } else {
            None
        };
        let applied = match other {
            Some(other) => self.apply_on_two(&mut tx, other, &fresh).await,
            None => self.apply_all(&mut tx, &fresh, false).await,
        };
        match applied {
            Ok(()) => {}
            Err(e) if is_data_error(&e) => {
                // One event breaks a rule of the table: apply one by one, setting it aside.
                tx.rollback().await?;
                tx = self.begin().await?;
                sqlx::query(sql::runtime::LOCK_CHECKPOINT)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                self.apply_all(&mut tx, &fresh, true).await?;
            }
            Err(e) => return Err(e),
        }
        sqlx::query(sql::runtime::ADVANCE_CHECKPOINT)
            .bind(name)
            .bind(i64::try_from(last).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.applied
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("aicache_projection_events_total", "projection" => name)
            .increment(fresh.len() as u64);
        metrics::histogram!("aicache_projection_batch_seconds", "projection" => name)
            .record(started.elapsed().as_secs_f64());
        metrics::gauge!("aicache_projection_position", "projection" => name).set(last as f64);
        Ok(BatchOutcome::Applied(last))
    }

    /// Applies `batch` on `tx` and a transaction of its own at once: two PostgreSQL
    /// backends, two cores, for a projection whose events commute
    /// ([`Projection::apply_batch_on_two`]). The second transaction commits first; `tx`
    /// holds the checkpoint's lock all along, so no other runner or rebuild applies or
    /// empties anything meanwhile, and the checkpoint moves only after both. Rows committed
    /// before a failure are applied again, as nothing, by the retry. The events set aside
    /// are recorded in `tx`.
    async fn apply_on_two(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        mut other: Transaction<'static, Postgres>,
        batch: &[&StoredMessage],
    ) -> Result<(), sqlx::Error> {
        let skipped = self
            .projection
            .apply_batch_on_two(tx, &mut other, batch)
            .await?;
        other.commit().await?;
        self.on_two
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (i, reason) in skipped {
            self.record_failure(tx, batch[i], &reason).await?;
        }
        Ok(())
    }

    /// A second transaction for a batch, if the pool has a connection to spare at once (an
    /// idle one, or room for a new one within [`SECOND_CONNECTION_WAIT`]): the batch never
    /// waits for a connection others need, and with none it is applied on one.
    async fn second_transaction(&self) -> Option<Transaction<'static, Postgres>> {
        let max = self.db.options().get_max_connections();
        if self.db.num_idle() == 0 && self.db.size() >= max {
            return None;
        }
        tokio::time::timeout(SECOND_CONNECTION_WAIT, self.begin())
            .await
            .ok()?
            .ok()
    }

    /// A batch's transaction.
    async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        if self.projection.async_commit() {
            sqlx::query(sql::runtime::ASYNC_COMMIT)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// Applies events: as one batch, or with `isolate` each in a savepoint so a failing one is
    /// recorded and skipped instead of failing the batch.
    async fn apply_all(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        batch: &[&StoredMessage],
        isolate: bool,
    ) -> Result<(), sqlx::Error> {
        if !isolate {
            let skipped = self.projection.apply_batch(tx, batch).await?;
            for (i, reason) in skipped {
                self.record_failure(tx, batch[i], &reason).await?;
            }
            return Ok(());
        }
        for msg in batch {
            sqlx::query("SAVEPOINT event").execute(&mut **tx).await?;
            let result = self.projection.apply(tx, msg).await;
            let failure = match result {
                Ok(()) => None,
                Err(ApplyError::Skip(reason)) => Some(reason),
                Err(ApplyError::Db(e)) if is_data_error(&e) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT event")
                        .execute(&mut **tx)
                        .await?;
                    Some(e.to_string())
                }
                Err(ApplyError::Db(e)) => return Err(e),
            };
            if let Some(reason) = failure {
                self.record_failure(tx, msg, &reason).await?;
            }
        }
        Ok(())
    }

    async fn record_failure(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        msg: &StoredMessage,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        let name = self.projection.name();
        tracing::error!(projection = name, nats.seq = msg.seq, subject = %msg.subject, error = reason, "event not applied");
        metrics::counter!("aicache_projection_failures_total", "projection" => name).increment(1);
        sqlx::query(sql::runtime::RECORD_FAILURE)
            .bind(name)
            .bind(i64::try_from(msg.seq).unwrap_or(i64::MAX))
            .bind(&msg.subject)
            .bind(reason)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// Least payload of a batch applied on two connections: below it, a second transaction's
/// round trips cost more than the second core saves (a live trickle of visits stays on one).
pub const TWO_CONNECTIONS_MIN_BYTES: usize = 256 * 1024;

/// Longest wait for a batch's second connection before it is applied on one.
const SECOND_CONNECTION_WAIT: Duration = Duration::from_millis(250);

/// Whether `batch` is applied on two connections (when the pool has one to spare): a
/// projection whose events commute, and a batch of two events or more and at least
/// [`TWO_CONNECTIONS_MIN_BYTES`].
pub fn on_two_connections(projection: &dyn Projection, batch: &[&StoredMessage]) -> bool {
    projection.commutes()
        && batch.len() >= 2
        && batch.iter().map(|m| m.payload.len()).sum::<usize>() >= TWO_CONNECTIONS_MIN_BYTES
}

/// Integrity and data errors (SQLSTATE classes 22 and 23) come from the event, not from the
/// database being unwell: retrying cannot fix them.
fn is_data_error(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

/// Resolves when the NATS client reconnected; never without a reconnect signal.
async fn reconnected(reconnects: &mut Option<watch::Receiver<u64>>) {
    let Some(rx) = reconnects else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits for the first message (up to `idle`), then takes whatever else arrives within a few
/// milliseconds, up to `max`. Returns the batch and the number of messages still pending
/// after its last one, or `None` when idle.
async fn next_batch(
    messages: &mut consumer::pull::Ordered,
    max: usize,
    idle: Duration,
) -> Result<Option<(Vec<StoredMessage>, u64)>, String> {
    let mut batch = Vec::new();
    let mut pending = 0;
    let first = match tokio::time::timeout(idle, messages.next()).await {
        Err(_) => return Ok(None),
        Ok(None) => return Err("consumer closed".into()),
        Ok(Some(msg)) => msg.map_err(|e| e.to_string())?,
    };
    push(&mut batch, &mut pending, first)?;
    while batch.len() < max {
        // Messages the client holds already are taken without waiting (the server counts
        // them as delivered, not pending: a backlog the client had fetched ahead was applied
        // an event or two at a time); more are waited for, briefly, while the server says
        // some are pending.
        let next = if pending > 0 {
            tokio::time::timeout(BATCH_LINGER, messages.next())
                .await
                .ok()
        } else {
            messages.next().now_or_never()
        };
        match next {
            Some(Some(Ok(msg))) => push(&mut batch, &mut pending, msg)?,
            Some(Some(Err(e))) => return Err(e.to_string()),
            Some(None) | None => break,
        }
    }
    Ok(Some((batch, pending)))
}

fn push(
    batch: &mut Vec<StoredMessage>,
    pending: &mut u64,
    msg: jetstream::Message,
) -> Result<(), String> {
    let info = msg.info().map_err(|e| e.to_string())?;
    *pending = info.pending;
    batch.push(StoredMessage {
        seq: info.stream_sequence,
        subject: msg.subject.to_string(),
        payload: msg.payload.clone(),
    });
    Ok(())
}

/// Exponential backoff between retries, 100 ms doubling up to 10 s.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// Sleeps the next delay; a reconnect of the NATS client ends the wait (and the backoff)
    /// at once, so an outage's long delays do not outlast the outage.
    async fn wait(
        &mut self,
        shutdown: &CancellationToken,
        reconnects: &mut Option<watch::Receiver<u64>>,
    ) {
        let delay =
            Duration::from_millis(100 * 2u64.pow(self.attempt.min(7))).min(Duration::from_secs(10));
        self.attempt += 1;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = reconnected(reconnects) => self.attempt = 0,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Empties a projection's tables and sets its checkpoint to 0, in one transaction. Live
/// runners notice the moved checkpoint and start over from the beginning.
pub async fn reset(db: &PgPool, projection: &dyn Projection) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query(sql::runtime::RESET_CHECKPOINT)
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    sqlx::query(sql::runtime::LOCK_CHECKPOINT_FOR_RESET)
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    for table in projection.tables() {
        // Table names come from the projection's own constant list, never from input.
        let sql = format!("TRUNCATE {table}");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(sql::runtime::CLEAR_FAILURES)
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Rebuilds a projection from sequence 1: empties it, then applies its whole stream.
/// `progress` is called with (checkpoint, stream end) after each batch. Returns the final
/// checkpoint.
pub async fn rebuild(
    db: &PgPool,
    js: &jetstream::Context,
    projection: Arc<dyn Projection>,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<u64, RunnerError> {
    let name = projection.name();
    reset(db, projection.as_ref())
        .await
        .map_err(|source| RunnerError::Db { name, source })?;
    ProjectionRunner::new(projection, db.clone(), js.clone())
        .with_batch(REBUILD_BATCH)
        .catch_up(progress)
        .await
}

/// Waits until projection `name` has applied stream sequence `seq` (read-your-writes).
/// Returns `false` if it has not within `timeout`.
pub async fn wait_for(
    db: &PgPool,
    name: &str,
    seq: u64,
    timeout: Duration,
) -> Result<bool, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let target = i64::try_from(seq).unwrap_or(i64::MAX);
    loop {
        let at: Option<i64> = sqlx::query_scalar(sql::runtime::CHECKPOINT_IF_ANY)
            .bind(name)
            .fetch_optional(db)
            .await?;
        if at.is_some_and(|at| at >= target) {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
