//! The visits projection: the original `visits` table plus classification and verification.

use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::PgConnection;

use super::{ApplyError, Projection, StoredMessage, decode, enum_name};
use crate::events::visits::VisitEvent;
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
            let event: Event<VisitEvent> = decode(msg)?;
            let VisitEvent::Recorded(v) = &event.payload;
            // The event id is the row id: a redelivered event cannot count twice.
            sqlx::query(
                "INSERT INTO visits (id, page_id, client_id, url, visitor_type, user_agent,
                     ip_hash, referrer, bot_name, operator, category, verification,
                     format_served, status, visited_at)
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(event.meta.id)
            .bind(event.meta.page_id.map(|p| p.as_uuid()))
            .bind(event.meta.client_id.as_uuid())
            .bind(&v.url)
            .bind(enum_name(&v.visitor_type)?)
            .bind(&v.user_agent)
            .bind(&v.ip_hash)
            .bind(&v.referrer)
            .bind(&v.bot_name)
            .bind(&v.operator)
            .bind(&v.category)
            .bind(enum_name(&v.verification)?)
            .bind(enum_name(&v.format_served)?)
            .bind(v.status.map(i32::from))
            .bind(v.visited_at)
            .execute(conn)
            .await?;
            Ok(())
        }
        .boxed()
    }
}
