//! `/api/v1/clients/{id}/keys`: per-client API keys (master key only). A key is shown once,
//! when it is created; afterwards only its display prefix.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Principal;
use super::extract::{ApiJson, ApiPath};
use super::{ApiError, AppState};
use crate::domain::client::Scope;
use crate::domain::ids::ClientId;
use crate::projections::clients::{self as read, ApiKeyRow};

/// Body of `POST /api/v1/clients/{id}/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// `read`, `write`, `ingest` (at least one).
    #[schema(min_items = 1)]
    pub scopes: Vec<Scope>,
    /// A label for people.
    pub name: Option<String>,
}

/// A key as listed (never the key itself).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: Uuid,
    pub client_id: Uuid,
    pub name: Option<String>,
    pub display_prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRow> for KeyView {
    fn from(r: ApiKeyRow) -> Self {
        Self {
            id: r.id,
            client_id: r.client_id,
            name: r.name,
            display_prefix: r.display_prefix,
            scopes: r.scopes,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

/// A new key: `key` is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKeyView {
    pub key: String,
    #[serde(flatten)]
    pub info: KeyView,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
    pub count: usize,
}

#[utoipa::path(post, path = "/api/v1/clients/{id}/keys", tag = "keys", params(("id" = Uuid, Path)), request_body = CreateKey,
    responses((status = 201, body = CreatedKeyView), (status = 403), (status = 404), (status = 422)),
    security(("api_key" = [])))]
/// Create a key for a client (master key). The answer's `key` is the only time it is shown.
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKeyView>), ApiError> {
    principal.require_master()?;
    let (created, _) = state
        .tenants
        .create_key(ClientId::from_uuid(id), &body.scopes, body.name)
        .await?;
    let view = CreatedKeyView {
        key: created.key.expose().to_owned(),
        info: created.row.into(),
    };
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/api/v1/clients/{id}/keys", tag = "keys", params(("id" = Uuid, Path)),
    responses((status = 200, body = KeyList), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// List a client's keys, revoked ones included (master key).
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<KeyList>, ApiError> {
    principal.require_master()?;
    read::find(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("client not found".into()))?;
    let keys: Vec<KeyView> = read::list_keys(&state.db, id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(KeyList {
        count: keys.len(),
        keys,
    }))
}

#[utoipa::path(delete, path = "/api/v1/clients/{id}/keys/{key_id}", tag = "keys", params(("id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses((status = 200), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// Revoke a key (master key); it is refused from the moment this answers.
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, key_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_master()?;
    state
        .tenants
        .revoke_key(ClientId::from_uuid(id), key_id)
        .await?;
    state.auth.forget_client(id);
    Ok(Json(
        serde_json::json!({"message": "Key revoked", "id": key_id}),
    ))
}
