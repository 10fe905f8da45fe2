//! Commands on tenants: register, update, delete clients; create and revoke their API keys;
//! re-encrypt their secrets.
//!
//! Writes to clients are serialized by a Postgres advisory lock held from the uniqueness check
//! to the moment the projection shows the new event, so two concurrent writers (in any
//! processes) cannot both claim a name or a domain.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::client::{
    self, API_KEY_DISPLAY_LEN, API_KEY_PREFIX, FieldError, Scope, SettingsPatch,
};
use crate::domain::ids::ClientId;
use crate::domain::webhook;
use crate::events::EventFamily;
use crate::events::clients::{
    ClientDeleted, ClientEvent, ClientSettings, ClientState, ClientUpdated, KeyCreated, KeyRevoked,
    WebhookAdded, WebhookRemoved,
};
use crate::events::pages::PageEvent;
use crate::events::{Event, subjects};
use crate::infra::http::{ResolveError, resolve_guarded};
use crate::infra::publish::{Outgoing, PublishError, Publisher};
use crate::infra::secrets::{Secret, Secrets, SecretsError};
use crate::projections::clients as read;
use crate::projections::runtime::wait_for;
use crate::projections::sql;

/// Advisory lock key serializing writes to clients ("aicache" in ASCII).
const CLIENTS_LOCK: i64 = 0x0061_6963_6163_6865;
/// Longest Cloudflare id and secret accepted.
const MAX_ID_LEN: usize = 256;
const MAX_SECRET_LEN: usize = 4096;

/// A tenant command failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("a client with this {field} already exists")]
    Conflict { field: &'static str },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stream: {0}")]
    Stream(String),
}

/// A webhook target that is well formed and (unless private networks are allowed) resolves
/// only to public addresses, like the scraper's rule; the delivery client checks the
/// addresses again on every connection (DNS can change).
async fn checked_target(url: &str, allow_private: bool) -> Result<String, FieldError> {
    let parsed = webhook::parse_target(url)?;
    if !allow_private {
        let host = parsed.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = parsed.port_or_known_default().unwrap_or(443);
        resolve_guarded(host, port, false).await.map_err(|e| {
            FieldError::new(
                "url",
                match e {
                    ResolveError::Lookup(e) => format!("the host does not resolve: {e}"),
                    ResolveError::NoAddress | ResolveError::Blocked(_) => {
                        "the host resolves to a private, loopback or link-local address".to_owned()
                    }
                },
            )
        })?;
    }
    Ok(parsed.to_string())
}

/// A new webhook endpoint, with its signing secret (shown once).
#[derive(Debug)]
pub struct CreatedWebhook {
    pub id: Uuid,
    pub client_id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub secret: Secret,
}

/// Whether the projection showed the write before the answer went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Readable now.
    Visible,
    /// Recorded in the stream, not yet in the read model (the projector lags or is not running).
    Pending,
}

/// A new client as a caller describes it.
#[derive(Debug, Default)]
pub struct NewClient {
    pub name: String,
    pub domain: String,
    pub cloudflare_account_id: Option<String>,
    pub cloudflare_api_token: Option<Secret>,
    pub cloudflare_kv_namespace_id: Option<String>,
    pub gemini_api_key: Option<Secret>,
    pub is_active: Option<bool>,
    pub settings: SettingsPatch,
}

/// A change to a client: `None` leaves a field as it is; `Some(None)` clears an optional one.
#[derive(Debug, Default)]
pub struct ClientPatch {
    pub name: Option<String>,
    pub domain: Option<String>,
    pub cloudflare_account_id: Option<Option<String>>,
    pub cloudflare_api_token: Option<Option<Secret>>,
    pub cloudflare_kv_namespace_id: Option<Option<String>>,
    pub gemini_api_key: Option<Option<Secret>>,
    pub is_active: Option<bool>,
    pub settings: Option<SettingsPatch>,
}

/// What deleting a client removed.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeleteReport {
    pub pages_deleted: u64,
    /// Entries removed from the built-in edge store.
    pub edge_keys_deleted: u64,
    pub visits_deleted: u64,
    pub api_keys_deleted: u64,
    pub events_purged: u64,
}

/// A key as created: the key itself is in `key`, shown this once.
#[derive(Debug)]
pub struct CreatedKey {
    pub key: Secret,
    pub row: read::ApiKeyRow,
}

/// The tenant commands.
#[derive(Clone)]
pub struct Tenants {
    db: PgPool,
    js: jetstream::Context,
    publisher: Publisher,
    secrets: Arc<Secrets>,
    timeout: Duration,
}

impl Tenants {
    pub fn new(
        db: PgPool,
        js: jetstream::Context,
        secrets: Arc<Secrets>,
        timeout: Duration,
    ) -> Self {
        Self {
            publisher: Publisher::new(js.clone()),
            db,
            js,
            secrets,
            timeout,
        }
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Registers a client; answers once the projection shows it (or `Pending` after the timeout).
    pub async fn register(&self, new: NewClient) -> Result<(ClientId, Visibility), TenantError> {
        let state = ClientState {
            name: client::validate_name(&new.name)?,
            domain: client::normalize_domain(&new.domain)?,
            cloudflare_account_id: client::cloudflare_id(
                "cloudflare_account_id",
                new.cloudflare_account_id.as_deref(),
                MAX_ID_LEN,
            )?,
            cloudflare_api_token_encrypted: self
                .seal("cloudflare_api_token", new.cloudflare_api_token)?,
            cloudflare_kv_namespace_id: client::cloudflare_id(
                "cloudflare_kv_namespace_id",
                new.cloudflare_kv_namespace_id.as_deref(),
                MAX_ID_LEN,
            )?,
            gemini_api_key_encrypted: self.seal("gemini_api_key", new.gemini_api_key)?,
            is_active: new.is_active.unwrap_or(true),
            settings: new.settings.apply(&ClientSettings::default())?,
        };
        check_edge(&state)?;
        let id = ClientId::new_random();
        let mut tx = self.db.begin().await?;
        lock(&mut tx).await?;
        if let Some(field) =
            read::conflicting_field(&mut *tx, &state.name, &state.domain, None).await?
        {
            return Err(TenantError::Conflict { field });
        }
        let event = Event::new(id, None, ClientEvent::Registered(state));
        let visibility = self.publish_and_wait(event).await?;
        tx.commit().await?;
        Ok((id, visibility))
    }

    /// Applies `patch` to client `id`. A patch that changes nothing publishes nothing.
    pub async fn update(
        &self,
        id: ClientId,
        patch: ClientPatch,
    ) -> Result<Visibility, TenantError> {
        let mut tx = self.db.begin().await?;
        lock(&mut tx).await?;
        let current = read::find(&mut *tx, id.as_uuid())
            .await?
            .ok_or(TenantError::NotFound("client"))?;
        let old = current.state();
        let mut new = old.clone();
        if let Some(name) = &patch.name {
            new.name = client::validate_name(name)?;
        }
        if let Some(domain) = &patch.domain {
            new.domain = client::normalize_domain(domain)?;
        }
        if let Some(v) = &patch.cloudflare_account_id {
            new.cloudflare_account_id =
                client::cloudflare_id("cloudflare_account_id", v.as_deref(), MAX_ID_LEN)?;
        }
        if let Some(v) = &patch.cloudflare_kv_namespace_id {
            new.cloudflare_kv_namespace_id =
                client::cloudflare_id("cloudflare_kv_namespace_id", v.as_deref(), MAX_ID_LEN)?;
        }
        let mut changed = Vec::new();
        if let Some(v) = patch.cloudflare_api_token {
            new.cloudflare_api_token_encrypted = self.seal("cloudflare_api_token", v)?;
            changed.push("cloudflare_api_token".to_owned());
        }
        if let Some(v) = patch.gemini_api_key {
            new.gemini_api_key_encrypted = self.seal("gemini_api_key", v)?;
            changed.push("gemini_api_key".to_owned());
        }
        if let Some(active) = patch.is_active {
            new.is_active = active;
        }
        if let Some(settings) = &patch.settings {
            new.settings = settings.apply(&old.settings)?;
        }
        check_edge(&new)?;
        changed.extend(changed_fields(&old, &new));
        if changed.is_empty() {
            return Ok(Visibility::Visible);
        }
        if let Some(field) =
            read::conflicting_field(&mut *tx, &new.name, &new.domain, Some(id.as_uuid())).await?
        {
            return Err(TenantError::Conflict { field });
        }
        let event = Event::new(
            id,
            None,
            ClientEvent::Updated(ClientUpdated {
                state: new,
                changed,
            }),
        );
        let visibility = self.publish_and_wait(event).await?;
        tx.commit().await?;
        Ok(visibility)
    }

    /// Deletes a client and everything of it: its rows in every projection and its events in
    /// every stream (purged by subject). Blobs are content-addressed and may be shared, so
    /// they stay (README, "Deleting a client").
    pub async fn delete(&self, id: ClientId) -> Result<DeleteReport, TenantError> {
        let mut tx = self.db.begin().await?;
        lock(&mut tx).await?;
        let current = read::find(&mut *tx, id.as_uuid())
            .await?
            .ok_or(TenantError::NotFound("client"))?;
        let keys: i64 = sqlx::query_scalar(sql::clients::COUNT_CLIENT_KEYS)
            .bind(id.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
        // The client's pages, for their edge store entries (before their rows go).
        let urls: Vec<String> = sqlx::query_scalar(sql::clients::CLIENT_PAGE_URLS)
            .bind(id.as_uuid())
            .fetch_all(&mut *tx)
            .await?;
        let event = Event::new(
            id,
            None,
            ClientEvent::Deleted(ClientDeleted {
                domain: current.domain,
            }),
        );
        // The projection must apply the deletion before the client's events are purged.
        self.publish_and_wait(event).await?;
        let mut purged = self.purge_pages_and_visits(id).await?;
        let edge_keys_deleted = self.delete_edge_entries(&urls).await?;
        let pages = sqlx::query(sql::clients::DELETE_CLIENT_PAGES)
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await?;
        let visits = sqlx::query(sql::clients::DELETE_CLIENT_VISITS)
            .bind(id.as_uuid())
            .execute(&mut *tx)
            .await?;
        purged += self
            .purge("CLIENTS", &subjects::client_on_stream("clients", id, false))
            .await?;
        tx.commit().await?;
        Ok(DeleteReport {
            pages_deleted: pages.rows_affected(),
            edge_keys_deleted,
            visits_deleted: visits.rows_affected(),
            api_keys_deleted: u64::try_from(keys).unwrap_or_default(),
            events_purged: purged,
        })
    }

    /// Purges a deleted client's page and visit events, then waits until the projections
    /// have applied every batch they read before the purge (so no row comes back).
    async fn purge_pages_and_visits(&self, id: ClientId) -> Result<u64, TenantError> {
        let mut purged = 0;
        for (stream, filter) in [
            ("PAGES", subjects::client_on_stream("pages", id, true)),
            ("VISITS", subjects::client_on_stream("visits", id, false)),
            ("VISITS", subjects::client_on_stream("visits", id, true)),
        ] {
            purged += self.purge(stream, &filter).await?;
        }
        for (projection, stream) in [("pages", "PAGES"), ("visits", "VISITS")] {
            let end = self.stream_end(stream).await?;
            wait_for(&self.db, projection, end, self.timeout).await?;
        }
        Ok(purged)
    }

    /// Deletes the built-in edge store's entries of these page URLs; returns how many were
    /// there.
    async fn delete_edge_entries(&self, urls: &[String]) -> Result<u64, TenantError> {
        let stream_error = |e: &dyn std::fmt::Display| TenantError::Stream(e.to_string());
        let edge = crate::infra::edge_store::EdgeStore::open(&self.js)
            .await
            .map_err(|e| stream_error(&e))?;
        let mut deleted = 0;
        for url in urls
            .iter()
            .filter_map(|u| crate::domain::url::NormalizedUrl::parse(u).ok())
        {
            let key = crate::domain::kv_key::kv_key(&url);
            if edge
                .get(&key)
                .await
                .map_err(|e| stream_error(&e))?
                .is_some()
            {
                edge.delete(&key).await.map_err(|e| stream_error(&e))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Creates a key for client `id`; the key is returned this once and stored only as SHA-256.
    pub async fn create_key(
        &self,
        id: ClientId,
        scopes: &[Scope],
        name: Option<String>,
    ) -> Result<(CreatedKey, Visibility), TenantError> {
        let scopes = client::validate_scopes(scopes)?;
        let name = client::optional_text("name", name.as_deref(), client::MAX_NAME_LEN)?;
        read::find(&self.db, id.as_uuid())
            .await?
            .ok_or(TenantError::NotFound("client"))?;
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        let key = format!(
            "{API_KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
        );
        let key_id = Uuid::new_v4();
        let created = KeyCreated {
            key_id,
            name,
            display_prefix: key[..API_KEY_DISPLAY_LEN].to_owned(),
            key_hash: hash_key(&key),
            scopes,
        };
        let event = Event::new(id, None, ClientEvent::KeyCreated(created.clone()));
        let visibility = self.publish_and_wait(event).await?;
        let row = read::ApiKeyRow {
            id: key_id,
            client_id: id.as_uuid(),
            name: created.name,
            display_prefix: created.display_prefix,
            scopes: created
                .scopes
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            created_at: crate::events::envelope::now(),
            revoked_at: None,
        };
        Ok((
            CreatedKey {
                key: Secret::new(key),
                row,
            },
            visibility,
        ))
    }

    /// Revokes a key; once this returns `Visible`, the key is refused.
    pub async fn revoke_key(&self, id: ClientId, key_id: Uuid) -> Result<Visibility, TenantError> {
        let key = read::find_key(&self.db, id.as_uuid(), key_id)
            .await?
            .ok_or(TenantError::NotFound("key"))?;
        if key.revoked_at.is_some() {
            return Ok(Visibility::Visible);
        }
        self.publish_and_wait(Event::new(
            id,
            None,
            ClientEvent::KeyRevoked(KeyRevoked { key_id }),
        ))
        .await
    }

    /// Re-encrypts every stored secret with the first Fernet key, through `clients.updated`
    /// events. Returns how many clients changed.
    pub async fn rotate_secrets(&self) -> Result<usize, TenantError> {
        self.rotate_secrets_with(&|_, _| {}).await
    }

    /// [`Tenants::rotate_secrets`], telling `progress` (done, total) after each client and
    /// webhook.
    pub async fn rotate_secrets_with(
        &self,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> Result<usize, TenantError> {
        let mut tx = self.db.begin().await?;
        lock(&mut tx).await?;
        let (rows, _) = read::list(&self.db, i64::MAX, 0).await?;
        let hooks = read::all_webhooks(&self.db).await?;
        let total = rows.len() + hooks.len();
        let mut done = 0;
        let mut changed = 0;
        for row in rows {
            done += 1;
            progress(done, total);
            let old = row.state();
            let mut new = old.clone();
            let mut fields = Vec::new();
            if let Some(t) = self.rekey(old.cloudflare_api_token_encrypted.as_deref())? {
                new.cloudflare_api_token_encrypted = Some(t);
                fields.push("cloudflare_api_token".to_owned());
            }
            if let Some(t) = self.rekey(old.gemini_api_key_encrypted.as_deref())? {
                new.gemini_api_key_encrypted = Some(t);
                fields.push("gemini_api_key".to_owned());
            }
            if fields.is_empty() {
                continue;
            }
            let id = ClientId::from_uuid(row.id);
            self.publish_and_wait(Event::new(
                id,
                None,
                ClientEvent::Updated(ClientUpdated {
                    state: new,
                    changed: fields,
                }),
            ))
            .await?;
            changed += 1;
        }
        for hook in hooks {
            done += 1;
            progress(done, total);
            let token = String::from_utf8_lossy(&hook.secret_encrypted).into_owned();
            let Some(sealed) = self.rekey(Some(&token))? else {
                continue;
            };
            let event = Event::new(
                ClientId::from_uuid(hook.client_id),
                None,
                ClientEvent::WebhookAdded(WebhookAdded {
                    webhook_id: hook.id,
                    url: hook.url,
                    events: hook.events,
                    secret_encrypted: sealed,
                }),
            );
            self.publish_and_wait(event).await?;
            changed += 1;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Adds a webhook endpoint to a client; its signing secret is returned this once.
    pub async fn add_webhook(
        &self,
        id: ClientId,
        url: &str,
        events: Vec<String>,
        allow_private: bool,
    ) -> Result<(CreatedWebhook, Visibility), TenantError> {
        let url = checked_target(url, allow_private).await?;
        let events = webhook::validate_events(events, PageEvent::CATALOGUE)?;
        read::find(&self.db, id.as_uuid())
            .await?
            .ok_or(TenantError::NotFound("client"))?;
        if read::webhooks(&self.db, id.as_uuid()).await?.len() >= webhook::MAX_PER_CLIENT {
            return Err(FieldError::new(
                "url",
                format!("a client has at most {} webhooks", webhook::MAX_PER_CLIENT),
            )
            .into());
        }
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        let secret = Secret::new(format!(
            "whsec_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
        ));
        let webhook_id = Uuid::new_v4();
        let added = WebhookAdded {
            webhook_id,
            url: url.clone(),
            events: events.clone(),
            secret_encrypted: self.secrets.encrypt(&secret),
        };
        let visibility = self
            .publish_and_wait(Event::new(id, None, ClientEvent::WebhookAdded(added)))
            .await?;
        Ok((
            CreatedWebhook {
                id: webhook_id,
                client_id: id.as_uuid(),
                url,
                events,
                secret,
            },
            visibility,
        ))
    }

    /// Removes a client's webhook endpoint.
    pub async fn remove_webhook(
        &self,
        id: ClientId,
        webhook: Uuid,
    ) -> Result<Visibility, TenantError> {
        let known = read::webhooks(&self.db, id.as_uuid())
            .await?
            .iter()
            .any(|w| w.id == webhook);
        if !known {
            return Err(TenantError::NotFound("webhook"));
        }
        self.publish_and_wait(Event::new(
            id,
            None,
            ClientEvent::WebhookRemoved(WebhookRemoved {
                webhook_id: webhook,
            }),
        ))
        .await
    }

    fn rekey(&self, token: Option<&str>) -> Result<Option<String>, TenantError> {
        match token {
            Some(t) => Ok(self.secrets.reencrypt(t)?),
            None => Ok(None),
        }
    }

    fn seal(&self, field: &str, secret: Option<Secret>) -> Result<Option<String>, TenantError> {
        let Some(secret) = secret.filter(|s| !s.expose().trim().is_empty()) else {
            return Ok(None);
        };
        if secret.expose().len() > MAX_SECRET_LEN {
            return Err(
                FieldError::new(field, format!("must be at most {MAX_SECRET_LEN} bytes")).into(),
            );
        }
        Ok(Some(
            self.secrets.encrypt(&Secret::new(secret.expose().trim())),
        ))
    }

    async fn publish_and_wait(&self, event: Event<ClientEvent>) -> Result<Visibility, TenantError> {
        let published = self.publisher.publish(&Outgoing::unique(event)).await?;
        let visible = wait_for(&self.db, "clients", published.sequence, self.timeout).await?;
        Ok(if visible {
            Visibility::Visible
        } else {
            Visibility::Pending
        })
    }

    async fn purge(&self, stream: &str, filter: &str) -> Result<u64, TenantError> {
        let stream = self
            .js
            .get_stream(stream)
            .await
            .map_err(|e| TenantError::Stream(e.to_string()))?;
        let purged = stream
            .purge()
            .filter(filter)
            .await
            .map_err(|e| TenantError::Stream(e.to_string()))?;
        Ok(purged.purged)
    }

    async fn stream_end(&self, stream: &str) -> Result<u64, TenantError> {
        crate::infra::nats::last_sequence(&self.js, stream)
            .await
            .map_err(TenantError::Stream)
    }
}

/// SHA-256 (hex) of an API key: the form it is stored and looked up in.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

async fn lock(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CLIENTS_LOCK)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn check_edge(state: &ClientState) -> Result<(), FieldError> {
    client::check_edge_target(
        state.settings.edge_target,
        state.cloudflare_account_id.is_some(),
        state.cloudflare_api_token_encrypted.is_some(),
        state.cloudflare_kv_namespace_id.is_some(),
    )
}

/// Names of the non-secret fields that differ (secrets are reported by the caller, which
/// knows whether they were given: two encryptions of one value never compare equal).
fn changed_fields(old: &ClientState, new: &ClientState) -> Vec<String> {
    let mut changed = Vec::new();
    let mut check = |name: &str, differs: bool| {
        if differs {
            changed.push(name.to_owned());
        }
    };
    check("name", old.name != new.name);
    check("domain", old.domain != new.domain);
    check(
        "cloudflare_account_id",
        old.cloudflare_account_id != new.cloudflare_account_id,
    );
    check(
        "cloudflare_kv_namespace_id",
        old.cloudflare_kv_namespace_id != new.cloudflare_kv_namespace_id,
    );
    check("is_active", old.is_active != new.is_active);
    check("settings", old.settings != new.settings);
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn private_targets_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/hook",
            "http://10.1.2.3/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost/hook",
        ] {
            assert!(checked_target(url, false).await.is_err(), "{url}");
            assert!(checked_target(url, true).await.is_ok(), "{url}");
        }
        assert!(checked_target("ftp://93.184.215.14/x", true).await.is_err());
        assert!(
            checked_target("https://93.184.215.14/hook", false)
                .await
                .is_ok()
        );
    }
}
