//! The scheduler: asks for pages to be fetched again when they are due (`page_next_due` in
//! the migrations: the client's refresh interval, shortened by the sitemap's changefreq within
//! bounds, or at once when the sitemap's lastmod is newer than the last fetch).
//!
//! Safe with several instances: a pass runs under a Postgres advisory lock (one instance at a
//! time), each request is published under the key `refresh:<page>:<due time>` (a repeat is
//! dropped by the stream), and a page is not asked for again until it falls due anew (the
//! projection records `last_refresh_requested_at`).

use std::time::Duration;

use async_nats::jetstream;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::domain::ids::{ClientId, PageId};
use crate::events::Event;
use crate::events::pages::{PageEvent, RefreshReason, RefreshRequested};
use crate::infra::publish::{Outgoing, Publisher};
use crate::projections::pages::due;

/// Advisory lock key of the scheduler ("schedule").
const SCHEDULER_LOCK: i64 = 0x0073_6368_6564_756c;
/// Pages requested per query.
const BATCH: i64 = 1000;

/// Runs scheduler passes every `every` until `shutdown`.
pub async fn run(
    db: PgPool,
    js: jetstream::Context,
    every: Duration,
    min_interval_secs: i64,
    shutdown: CancellationToken,
) {
    let publisher = Publisher::new(js);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match pass(&db, &publisher, min_interval_secs).await {
            Ok(None | Some(0)) => {}
            Ok(Some(n)) => tracing::info!(pages = n, "refreshes requested"),
            Err(e) => tracing::warn!(error = %e, "scheduler pass failed, next pass retries"),
        }
    }
}

/// One pass: requests every due page; returns how many were requested, or `None` when
/// another instance holds the lock (and this pass did nothing).
pub async fn pass(
    db: &PgPool,
    publisher: &Publisher,
    min_interval_secs: i64,
) -> anyhow::Result<Option<usize>> {
    let mut conn = db.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(SCHEDULER_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(None);
    }
    let result = requests(db, publisher, min_interval_secs).await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(SCHEDULER_LOCK)
        .execute(&mut *conn)
        .await?;
    result.map(Some)
}

async fn requests(
    db: &PgPool,
    publisher: &Publisher,
    min_interval_secs: i64,
) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let pages = due(db, min_interval_secs, BATCH).await?;
        if pages.is_empty() {
            return Ok(total);
        }
        let batch: Vec<_> = pages
            .iter()
            .map(|p| {
                let reason = if p.by_lastmod {
                    RefreshReason::SitemapLastmod
                } else {
                    RefreshReason::Scheduled
                };
                let page = PageId::from_uuid(p.id);
                let event = Event::new(
                    ClientId::from_uuid(p.client_id),
                    Some(page),
                    PageEvent::RefreshRequested(RefreshRequested {
                        reason,
                        reprocess: None,
                    }),
                );
                Outgoing::keyed(
                    event,
                    format!("refresh:{page}:{}", p.next_due_at.timestamp()),
                )
            })
            .collect();
        let published = publisher.publish_all(&batch).await?;
        total += published.iter().filter(|p| !p.duplicate).count();
        // Wait until the projection records the requests, so the next query does not see the
        // same pages again.
        if let Some(last) = published.iter().map(|p| p.sequence).max() {
            let seen =
                crate::projections::runtime::wait_for(db, "pages", last, Duration::from_secs(30))
                    .await?;
            anyhow::ensure!(
                seen,
                "the pages projection is not keeping up; stopping this pass"
            );
        }
        if pages.len() < BATCH as usize {
            return Ok(total);
        }
    }
}
