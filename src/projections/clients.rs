//! The clients projection: the original `clients` table plus per-client settings.

use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::PgConnection;

use super::{ApplyError, Projection, StoredMessage, decode};
use crate::events::clients::{ClientEvent, ClientState, EdgeTarget};
use crate::events::{Event, StreamName};

/// Applies CLIENTS events to `clients`.
pub struct ClientsProjection;

impl Projection for ClientsProjection {
    fn name(&self) -> &'static str {
        "clients"
    }

    fn stream(&self) -> StreamName {
        StreamName::Clients
    }

    fn tables(&self) -> &'static [&'static str] {
        &["clients"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        msg: &'a StoredMessage,
    ) -> BoxFuture<'a, Result<(), ApplyError>> {
        async move {
            let event: Event<ClientEvent> = decode(msg)?;
            match &event.payload {
                ClientEvent::Registered(state) => upsert(conn, &event, state).await,
                ClientEvent::Updated(update) => upsert(conn, &event, &update.state).await,
                ClientEvent::Deleted(_) => {
                    sqlx::query("DELETE FROM clients WHERE id = $1")
                        .bind(event.meta.client_id.as_uuid())
                        .execute(conn)
                        .await?;
                    Ok(())
                }
            }
        }
        .boxed()
    }
}

fn edge_target_name(target: EdgeTarget) -> &'static str {
    match target {
        EdgeTarget::Auto => "auto",
        EdgeTarget::Cloudflare => "cloudflare",
        EdgeTarget::Builtin => "builtin",
    }
}

async fn upsert(
    conn: &mut PgConnection,
    event: &Event<ClientEvent>,
    state: &ClientState,
) -> Result<(), ApplyError> {
    let s = &state.settings;
    sqlx::query(
        "INSERT INTO clients (id, name, domain, cloudflare_account_id,
             cloudflare_api_token_encrypted, cloudflare_kv_namespace_id, gemini_api_key_encrypted,
             is_active, refresh_interval_secs, crawl_rate_per_minute, use_gemini, edge_target,
             allow_subdomains, created_at, updated_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$14)
         ON CONFLICT (id) DO UPDATE SET
             name = EXCLUDED.name, domain = EXCLUDED.domain,
             cloudflare_account_id = EXCLUDED.cloudflare_account_id,
             cloudflare_api_token_encrypted = EXCLUDED.cloudflare_api_token_encrypted,
             cloudflare_kv_namespace_id = EXCLUDED.cloudflare_kv_namespace_id,
             gemini_api_key_encrypted = EXCLUDED.gemini_api_key_encrypted,
             is_active = EXCLUDED.is_active,
             refresh_interval_secs = EXCLUDED.refresh_interval_secs,
             crawl_rate_per_minute = EXCLUDED.crawl_rate_per_minute,
             use_gemini = EXCLUDED.use_gemini, edge_target = EXCLUDED.edge_target,
             allow_subdomains = EXCLUDED.allow_subdomains,
             updated_at = EXCLUDED.updated_at",
    )
    .bind(event.meta.client_id.as_uuid())
    .bind(&state.name)
    .bind(&state.domain)
    .bind(&state.cloudflare_account_id)
    .bind(
        state
            .cloudflare_api_token_encrypted
            .as_ref()
            .map(String::as_bytes),
    )
    .bind(&state.cloudflare_kv_namespace_id)
    .bind(
        state
            .gemini_api_key_encrypted
            .as_ref()
            .map(String::as_bytes),
    )
    .bind(state.is_active)
    .bind(i64::try_from(s.refresh_interval_secs).unwrap_or(i64::MAX))
    .bind(i32::try_from(s.crawl_rate_per_minute).unwrap_or(i32::MAX))
    .bind(s.use_gemini)
    .bind(edge_target_name(s.edge_target))
    .bind(s.allow_subdomains)
    .bind(event.meta.occurred_at)
    .execute(conn)
    .await?;
    Ok(())
}
