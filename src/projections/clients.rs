//! The clients projection: the original `clients` table plus per-client settings, and
//! `api_keys` (hashes only).

use crate::domain::render_js::RenderJs;
use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::PgConnection;

use super::sql;
use super::{ApplyError, Projection, StoredMessage, decode};
use crate::domain::policy::EdgePolicy;
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
        &["clients", "api_keys", "webhooks"]
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
                    let id = event.meta.client_id.as_uuid();
                    sqlx::query(sql::clients::DELETE_CLIENT_KEYS)
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(sql::clients::DELETE_CLIENT_WEBHOOKS)
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query(sql::clients::DELETE_CLIENT)
                        .bind(id)
                        .execute(conn)
                        .await?;
                    Ok(())
                }
                ClientEvent::KeyCreated(k) => {
                    let scopes: Vec<&str> = k.scopes.iter().map(|s| s.as_str()).collect();
                    sqlx::query(sql::clients::INSERT_KEY)
                        .bind(k.key_id)
                        .bind(event.meta.client_id.as_uuid())
                        .bind(&k.name)
                        .bind(&k.display_prefix)
                        .bind(&k.key_hash)
                        .bind(&scopes)
                        .bind(event.meta.occurred_at)
                        .execute(conn)
                        .await?;
                    Ok(())
                }
                // Planned by the reprocessor; nothing to show here.
                ClientEvent::ReprocessRequested(_) => Ok(()),
                ClientEvent::WebhookAdded(w) => {
                    sqlx::query(sql::clients::UPSERT_WEBHOOK)
                        .bind(w.webhook_id)
                        .bind(event.meta.client_id.as_uuid())
                        .bind(&w.url)
                        .bind(&w.events)
                        .bind(w.secret_encrypted.as_bytes())
                        .bind(event.meta.occurred_at)
                        .execute(conn)
                        .await?;
                    Ok(())
                }
                ClientEvent::WebhookRemoved(w) => {
                    sqlx::query(sql::clients::DELETE_WEBHOOK)
                        .bind(w.webhook_id)
                        .bind(event.meta.client_id.as_uuid())
                        .execute(conn)
                        .await?;
                    Ok(())
                }
                ClientEvent::KeyRevoked(k) => {
                    sqlx::query(sql::clients::REVOKE_KEY)
                        .bind(k.key_id)
                        .bind(event.meta.client_id.as_uuid())
                        .bind(event.meta.occurred_at)
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
    sqlx::query(sql::clients::UPSERT_CLIENT)
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
        .bind(sqlx::types::Json(&s.edge))
        .bind(s.render_js.as_str())
        .bind(&s.render_wait_for)
        .execute(conn)
        .await?;
    Ok(())
}

/// A row of `clients`, as the API and the write side read it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ClientRow {
    pub id: uuid::Uuid,
    pub name: String,
    pub domain: String,
    pub cloudflare_account_id: Option<String>,
    pub cloudflare_api_token_encrypted: Option<Vec<u8>>,
    pub cloudflare_kv_namespace_id: Option<String>,
    pub gemini_api_key_encrypted: Option<Vec<u8>>,
    pub is_active: bool,
    pub refresh_interval_secs: i64,
    pub crawl_rate_per_minute: i32,
    pub use_gemini: bool,
    pub edge_target: String,
    pub allow_subdomains: bool,
    pub edge_policy: sqlx::types::Json<EdgePolicy>,
    pub render_js: String,
    pub render_wait_for: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl ClientRow {
    /// The client's state as the events carry it (tokens stay encrypted).
    pub fn state(&self) -> ClientState {
        let token =
            |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
        ClientState {
            name: self.name.clone(),
            domain: self.domain.clone(),
            cloudflare_account_id: self.cloudflare_account_id.clone(),
            cloudflare_api_token_encrypted: token(&self.cloudflare_api_token_encrypted),
            cloudflare_kv_namespace_id: self.cloudflare_kv_namespace_id.clone(),
            gemini_api_key_encrypted: token(&self.gemini_api_key_encrypted),
            is_active: self.is_active,
            settings: crate::events::clients::ClientSettings {
                refresh_interval_secs: u64::try_from(self.refresh_interval_secs)
                    .unwrap_or_default(),
                crawl_rate_per_minute: u32::try_from(self.crawl_rate_per_minute)
                    .unwrap_or_default(),
                use_gemini: self.use_gemini,
                edge_target: match self.edge_target.as_str() {
                    "cloudflare" => EdgeTarget::Cloudflare,
                    "builtin" => EdgeTarget::Builtin,
                    _ => EdgeTarget::Auto,
                },
                allow_subdomains: self.allow_subdomains,
                edge: self.edge_policy.0.clone(),
                render_js: RenderJs::parse(&self.render_js),
                render_wait_for: self.render_wait_for.clone(),
            },
        }
    }
}

/// The client with this id.
pub async fn find<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: uuid::Uuid,
) -> Result<Option<ClientRow>, sqlx::Error> {
    sqlx::query_as(sql::clients::FIND)
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The client with this (normalized) domain.
pub async fn find_by_domain(
    db: &sqlx::PgPool,
    domain: &str,
) -> Result<Option<ClientRow>, sqlx::Error> {
    sqlx::query_as(sql::clients::FIND_BY_DOMAIN)
        .bind(domain)
        .fetch_optional(db)
        .await
}

/// A page of clients, oldest first, and the total count.
pub async fn list(
    db: &sqlx::PgPool,
    limit: i64,
    offset: i64,
) -> Result<(Vec<ClientRow>, i64), sqlx::Error> {
    let rows = sqlx::query_as(sql::clients::LIST)
        .bind(limit)
        .bind(offset)
        .fetch_all(db)
        .await?;
    let total = sqlx::query_scalar(sql::clients::COUNT_CLIENTS)
        .fetch_one(db)
        .await?;
    Ok((rows, total))
}

/// Which unique field (`name` or `domain`) another client already uses, if any.
pub async fn conflicting_field<'e>(
    db: impl sqlx::PgExecutor<'e>,
    name: &str,
    domain: &str,
    except: Option<uuid::Uuid>,
) -> Result<Option<&'static str>, sqlx::Error> {
    let taken: Option<(bool, bool)> = sqlx::query_as(sql::clients::CONFLICTING_FIELD)
        .bind(name)
        .bind(domain)
        .bind(except)
        .fetch_optional(db)
        .await?;
    Ok(taken.map(|(name_taken, _)| if name_taken { "name" } else { "domain" }))
}

/// A row of `api_keys` (never the key, only its hash and display prefix).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: uuid::Uuid,
    pub client_id: uuid::Uuid,
    pub name: Option<String>,
    pub display_prefix: String,
    pub scopes: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// An unrevoked key as authentication reads it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LiveKey {
    pub id: uuid::Uuid,
    pub client_id: uuid::Uuid,
    pub scopes: Vec<String>,
    /// Whether its client is active (false when the client is gone).
    pub client_active: bool,
    /// The CLIENTS stream sequence the projection had applied when this was read.
    pub clients_checkpoint: i64,
}

/// A client's keys, newest first, revoked ones included.
pub async fn list_keys(
    db: &sqlx::PgPool,
    client: uuid::Uuid,
) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(sql::clients::LIST_KEYS)
        .bind(client)
        .fetch_all(db)
        .await
}

/// One key of a client.
pub async fn find_key(
    db: &sqlx::PgPool,
    client: uuid::Uuid,
    key: uuid::Uuid,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(sql::clients::FIND_KEY)
        .bind(client)
        .bind(key)
        .fetch_optional(db)
        .await
}

/// The live (not revoked) key with this SHA-256.
pub async fn find_live_key_by_hash(
    db: &sqlx::PgPool,
    key_hash: &str,
) -> Result<Option<LiveKey>, sqlx::Error> {
    sqlx::query_as(sql::clients::FIND_LIVE_KEY_BY_HASH)
        .bind(key_hash)
        .fetch_optional(db)
        .await
}

/// Whether the client is active (`None`: no such client).
pub async fn is_active(db: &sqlx::PgPool, client: uuid::Uuid) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar(sql::clients::IS_ACTIVE)
        .bind(client)
        .fetch_optional(db)
        .await
}

/// A webhook endpoint as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: uuid::Uuid,
    pub client_id: uuid::Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub secret_encrypted: Vec<u8>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A client's webhooks, oldest first.
pub async fn webhooks(
    db: &sqlx::PgPool,
    client: uuid::Uuid,
) -> Result<Vec<WebhookRow>, sqlx::Error> {
    sqlx::query_as(sql::clients::CLIENT_WEBHOOKS)
        .bind(client)
        .fetch_all(db)
        .await
}

/// Every webhook of every client (key rotation).
pub async fn all_webhooks(db: &sqlx::PgPool) -> Result<Vec<WebhookRow>, sqlx::Error> {
    sqlx::query_as(sql::clients::ALL_WEBHOOKS)
        .fetch_all(db)
        .await
}
