//! Read models: one module per projection, each applying its stream's events to Postgres
//! rows, plus the runtime that feeds them and stores their checkpoint in the same transaction.
//!
//! A projection's `apply` must be a pure function of the event and the rows: it takes every
//! time from the event, never from the clock, so a rebuild produces the same rows.

pub mod clients;
pub mod operations;
pub mod pages;
pub mod runtime;
pub mod sql;
pub mod verify;
pub mod visits;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use sqlx::PgConnection;

use crate::events::StreamName;

/// A message as read from a stream.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    pub seq: u64,
    pub subject: String,
    pub payload: Bytes,
}

/// Why one event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event cannot be applied (undecodable, or against the read model's rules): it is
    /// recorded in `projection_failures` and the projection moves on.
    #[error("event skipped: {0}")]
    Skip(String),
    /// The database failed; the batch is retried.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// A read model built from one stream.
pub trait Projection: Send + Sync + 'static {
    /// Stable name, the key of its checkpoint.
    fn name(&self) -> &'static str;
    /// The stream it reads.
    fn stream(&self) -> StreamName;
    /// The tables it owns: emptied before a rebuild.
    fn tables(&self) -> &'static [&'static str];
    /// Applies one event inside the batch's transaction.
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        msg: &'a StoredMessage,
    ) -> BoxFuture<'a, Result<(), ApplyError>>;

    /// Whether its batches may commit without waiting for their WAL to reach the disk
    /// (`synchronous_commit = off`). Only for a read model nothing else acts on: an OS crash
    /// can then undo its last fraction of a second of batches, rows and checkpoint together
    /// (never one without the other), and the runner applies those events again from the
    /// stream. PostgreSQL's own WAL writer flushes them meanwhile, on another core.
    fn async_commit(&self) -> bool {
        false
    }

    /// Whether its events commute and applying one twice changes nothing (visits: rows
    /// inserted by their id, never updated), so a large batch may be applied on two
    /// connections at once ([`Projection::apply_batch_on_two`]).
    fn commutes(&self) -> bool {
        false
    }

    /// Applies a large batch (`runtime::on_two_connections`) on two transactions at once,
    /// `other` committed before `conn`, and returns the events it set aside, as
    /// [`Projection::apply_batch`]. No row may be written on both connections: one waiting
    /// for the other's uncommitted row would wait for ever (the runner commits `conn` only
    /// when both are done), so the rows are split by their key. Only for projections whose
    /// events commute.
    fn apply_batch_on_two<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        other: &'a mut PgConnection,
        batch: &'a [&'a StoredMessage],
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>, sqlx::Error>> {
        let _ = other;
        self.apply_batch(conn, batch)
    }

    /// Applies a batch inside its transaction and returns the events it set aside (their
    /// index in `batch`, and why). One event at a time unless the projection knows better
    /// (visits: one multi-row insert). A database error fails the whole batch, which the
    /// runtime then retries event by event to find the culprit.
    fn apply_batch<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        batch: &'a [&'a StoredMessage],
    ) -> BoxFuture<'a, Result<Vec<(usize, String)>, sqlx::Error>> {
        Box::pin(async move {
            let mut skipped = Vec::new();
            for (i, msg) in batch.iter().enumerate() {
                match self.apply(conn, msg).await {
                    Ok(()) => {}
                    Err(ApplyError::Skip(reason)) => skipped.push((i, reason)),
                    Err(ApplyError::Db(e)) => return Err(e),
                }
            }
            Ok(skipped)
        })
    }
}

/// Every projection of ai-cache.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(clients::ClientsProjection),
        Arc::new(pages::PagesProjection),
        Arc::new(visits::VisitsProjection),
    ]
}

/// Appends `value` to `args`, the next `$n` of a statement run with `query_*_with`: for read
/// statements whose arguments are built once and shared (a filter's, then each statement's own).
pub(crate) fn push<'t, T>(
    args: &mut sqlx::postgres::PgArguments,
    value: T,
) -> Result<(), sqlx::Error>
where
    T: sqlx::Encode<'t, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    sqlx::Arguments::add(args, value).map_err(sqlx::Error::Encode)
}

/// Decodes `msg` as an event of family `E`, turning a decode error into a skip.
pub(crate) fn decode<E: crate::events::EventFamily>(
    msg: &StoredMessage,
) -> Result<crate::events::Event<E>, ApplyError> {
    crate::events::Event::<E>::from_json(&msg.payload).map_err(|e| ApplyError::Skip(e.to_string()))
}

/// The wire name of a unit enum variant (`ai_bot`), as stored in text columns.
pub(crate) fn enum_name<T: serde::Serialize>(value: &T) -> Result<String, ApplyError> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        other => Err(ApplyError::Skip(format!("not a unit enum: {other:?}"))),
    }
}
