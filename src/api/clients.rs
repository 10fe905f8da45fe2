//! `/api/v1/clients`: the original system's client API, event-sourced.
//! Writes answer once the clients projection shows them (201/200), or 202 if it lags.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Principal;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{ApiError, AppState};
use crate::commands::tenants::{ClientPatch, DeleteReport, NewClient, Visibility};
use crate::domain::client::{Scope, SettingsPatch, normalize_domain};
use crate::domain::ids::ClientId;
use crate::domain::policy::EdgePolicy;
use crate::infra::secrets::Secret;
use crate::projections::clients::{self as read, ClientRow};

/// Body of `POST /api/v1/clients`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    /// Unique name.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Unique domain, e.g. `example.com` (lowercased, IDN to punycode).
    #[schema(min_length = 1, max_length = 253)]
    pub domain: String,
    pub cloudflare_account_id: Option<String>,
    /// Stored encrypted; never returned unless `include_secrets=true` with the master key.
    pub cloudflare_api_token: Option<String>,
    pub cloudflare_kv_namespace_id: Option<String>,
    /// The client's own Gemini key (optional); stored encrypted.
    pub gemini_api_key: Option<String>,
    /// Default true.
    pub is_active: Option<bool>,
    #[serde(default)]
    pub settings: SettingsPatch,
}

/// Body of `PUT /api/v1/clients/{id}`: any subset of fields; `null` clears an optional one.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateClient {
    pub name: Option<String>,
    pub domain: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub cloudflare_account_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub cloudflare_api_token: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub cloudflare_kv_namespace_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub gemini_api_key: Option<Option<String>>,
    pub is_active: Option<bool>,
    pub settings: Option<SettingsPatch>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A client's pipeline settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsView {
    pub refresh_interval_secs: u64,
    pub crawl_rate_per_minute: u32,
    pub use_gemini: bool,
    /// `auto`, `cloudflare` or `builtin`.
    pub edge_target: String,
    pub allow_subdomains: bool,
    /// What the edge serves to whom.
    pub edge: EdgePolicy,
    /// `never`, `auto` or `always`: whether pages go through a browser before extraction.
    pub render_js: String,
    /// The CSS selector a rendered page is complete with.
    pub render_wait_for: Option<String>,
}

/// A client as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientView {
    pub id: Uuid,
    pub name: String,
    pub domain: String,
    pub cloudflare_account_id: Option<String>,
    pub cloudflare_kv_namespace_id: Option<String>,
    pub has_cloudflare_token: bool,
    pub has_gemini_key: bool,
    pub is_active: bool,
    pub settings: SettingsView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Only with `include_secrets=true` and the master key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloudflare_api_token: Option<String>,
    /// Only with `include_secrets=true` and the master key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gemini_api_key: Option<String>,
}

impl ClientView {
    pub(crate) fn from_row(row: &ClientRow) -> Self {
        let state = row.state();
        Self {
            id: row.id,
            name: row.name.clone(),
            domain: row.domain.clone(),
            cloudflare_account_id: row.cloudflare_account_id.clone(),
            cloudflare_kv_namespace_id: row.cloudflare_kv_namespace_id.clone(),
            has_cloudflare_token: row.cloudflare_api_token_encrypted.is_some(),
            has_gemini_key: row.gemini_api_key_encrypted.is_some(),
            is_active: row.is_active,
            settings: SettingsView {
                refresh_interval_secs: state.settings.refresh_interval_secs,
                crawl_rate_per_minute: state.settings.crawl_rate_per_minute,
                use_gemini: state.settings.use_gemini,
                edge_target: row.edge_target.clone(),
                allow_subdomains: state.settings.allow_subdomains,
                edge: state.settings.edge,
                render_js: row.render_js.clone(),
                render_wait_for: row.render_wait_for.clone(),
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
            cloudflare_api_token: None,
            gemini_api_key: None,
        }
    }

    fn with_secrets(mut self, row: &ClientRow, state: &AppState) -> Result<Self, ApiError> {
        let open = |token: &Option<Vec<u8>>| -> Result<Option<String>, ApiError> {
            token
                .as_ref()
                .map(|t| {
                    state
                        .tenants
                        .secrets()
                        .decrypt(&String::from_utf8_lossy(t))
                        .map(|s| s.expose().to_owned())
                })
                .transpose()
                .map_err(|e| ApiError::Internal(e.into()))
        };
        self.cloudflare_api_token = open(&row.cloudflare_api_token_encrypted)?;
        self.gemini_api_key = open(&row.gemini_api_key_encrypted)?;
        Ok(self)
    }
}

/// `GET /api/v1/clients` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientList {
    pub clients: Vec<ClientView>,
    /// Clients in this answer.
    pub count: usize,
    /// Clients in all.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// Pagination of lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Default 0.
    #[param(minimum = 0)]
    pub offset: Option<i64>,
}

impl Paging {
    pub fn resolve(&self) -> Result<(i64, i64), ApiError> {
        let limit = self.limit.unwrap_or(100);
        let offset = self.offset.unwrap_or(0);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::InvalidQuery {
                message: "limit must be between 1 and 1000".into(),
            });
        }
        if offset < 0 {
            return Err(ApiError::InvalidQuery {
                message: "offset must not be negative".into(),
            });
        }
        Ok((limit, offset))
    }
}

/// `?include_secrets=true`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SecretsQuery {
    /// Include the decrypted secrets (master key only).
    #[serde(default)]
    pub include_secrets: bool,
}

/// `DELETE /api/v1/clients/{id}` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub message: String,
    pub id: Uuid,
    pub deleted: DeleteReport,
    /// What deleting does not remove, and why.
    pub not_deleted: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/clients", tag = "clients", params(Paging),
    responses((status = 200, body = ClientList), (status = 401), (status = 403)),
    security(("api_key" = [])))]
/// List clients (master key).
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<Json<ClientList>, ApiError> {
    principal.require_master()?;
    let (limit, offset) = paging.resolve()?;
    let (rows, total) = read::list(&state.db, limit, offset).await?;
    let clients: Vec<ClientView> = rows.iter().map(ClientView::from_row).collect();
    Ok(Json(ClientList {
        count: clients.len(),
        clients,
        total,
        limit,
        offset,
    }))
}

#[utoipa::path(post, path = "/api/v1/clients", tag = "clients", request_body = CreateClient,
    responses((status = 201, body = ClientView), (status = 202, description = "recorded, not yet readable"),
        (status = 409), (status = 422)),
    security(("api_key" = [])))]
/// Create a client (master key).
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateClient>,
) -> Result<Response, ApiError> {
    principal.require_master()?;
    let new = NewClient {
        name: body.name,
        domain: body.domain,
        cloudflare_account_id: body.cloudflare_account_id,
        cloudflare_api_token: body.cloudflare_api_token.map(Secret::new),
        cloudflare_kv_namespace_id: body.cloudflare_kv_namespace_id,
        gemini_api_key: body.gemini_api_key.map(Secret::new),
        is_active: body.is_active,
        settings: body.settings,
    };
    let (id, visibility) = state.tenants.register(new).await?;
    let mut res = written(&state, id.as_uuid(), visibility, StatusCode::CREATED).await?;
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/clients/{id}")) {
        res.headers_mut().insert(header::LOCATION, location);
    }
    Ok(res)
}

#[utoipa::path(get, path = "/api/v1/clients/{id}", tag = "clients", params(("id" = Uuid, Path), SecretsQuery),
    responses((status = 200, body = ClientView), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// Read a client (master key, or the client's `read` key).
pub async fn get_one(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<SecretsQuery>,
) -> Result<Json<ClientView>, ApiError> {
    principal.require(id, Scope::Read)?;
    if q.include_secrets {
        principal.require_master()?;
    }
    let row = read::find(&state.db, id)
        .await?
        .ok_or_else(client_not_found)?;
    let view = ClientView::from_row(&row);
    Ok(Json(if q.include_secrets {
        view.with_secrets(&row, &state)?
    } else {
        view
    }))
}

#[utoipa::path(get, path = "/api/v1/clients/by-domain/{domain}", tag = "clients", params(("domain" = String, Path), SecretsQuery),
    responses((status = 200, body = ClientView), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// Read a client by its domain (master key, or the client's `read` key).
pub async fn by_domain(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(domain): ApiPath<String>,
    ApiQuery(q): ApiQuery<SecretsQuery>,
) -> Result<Json<ClientView>, ApiError> {
    if q.include_secrets {
        principal.require_master()?;
    }
    let domain = normalize_domain(&domain)
        .map_err(|e| ApiError::NotFound(format!("no client for {domain:?}: {}", e.message)))?;
    let row = read::find_by_domain(&state.db, &domain)
        .await?
        .ok_or_else(client_not_found)?;
    principal
        .require(row.id, Scope::Read)
        .map_err(|_| client_not_found())?;
    let view = ClientView::from_row(&row);
    Ok(Json(if q.include_secrets {
        view.with_secrets(&row, &state)?
    } else {
        view
    }))
}

#[utoipa::path(put, path = "/api/v1/clients/{id}", tag = "clients", params(("id" = Uuid, Path)), request_body = UpdateClient,
    responses((status = 200, body = ClientView), (status = 202), (status = 403), (status = 404), (status = 409), (status = 422)),
    security(("api_key" = [])))]
/// Change a client (master key, or the client's `write` key; `is_active` and names need the master key).
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateClient>,
) -> Result<Response, ApiError> {
    principal.require(id, Scope::Write)?;
    if body.name.is_some() || body.domain.is_some() || body.is_active.is_some() {
        // What the operator decides about a tenant stays the operator's.
        principal.require_master()?;
    }
    let patch = ClientPatch {
        name: body.name,
        domain: body.domain,
        cloudflare_account_id: body.cloudflare_account_id,
        cloudflare_api_token: body.cloudflare_api_token.map(|v| v.map(Secret::new)),
        cloudflare_kv_namespace_id: body.cloudflare_kv_namespace_id,
        gemini_api_key: body.gemini_api_key.map(|v| v.map(Secret::new)),
        is_active: body.is_active,
        settings: body.settings,
    };
    let visibility = state.tenants.update(ClientId::from_uuid(id), patch).await?;
    state.auth.forget_client(id);
    written(&state, id, visibility, StatusCode::OK).await
}

#[utoipa::path(delete, path = "/api/v1/clients/{id}", tag = "clients", params(("id" = Uuid, Path)),
    responses((status = 200, body = Deleted), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// Delete a client and everything of it (master key). Cannot be undone.
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Deleted>, ApiError> {
    principal.require_master()?;
    let deleted = state.tenants.delete(ClientId::from_uuid(id)).await?;
    state.auth.forget_client(id);
    Ok(Json(Deleted {
        message: "Client deleted: its pages, visits, API keys, events and built-in edge store entries are gone".into(),
        id,
        deleted,
        not_deleted: vec![
            "blobs (raw HTML, Markdown, HTML) are content-addressed and may be shared with other clients; they stay in the blob store".into(),
            "keys ai-cache wrote to the client's own Cloudflare Workers KV namespace stay there: delete them (or the namespace) in Cloudflare".into(),
        ],
    }))
}

fn client_not_found() -> ApiError {
    ApiError::NotFound("client not found".into())
}

/// The answer to a write: the client as the projection shows it, or 202 if it lags.
async fn written(
    state: &AppState,
    id: Uuid,
    visibility: Visibility,
    status: StatusCode,
) -> Result<Response, ApiError> {
    if visibility == Visibility::Pending {
        let body = serde_json::json!({"message": "accepted: recorded, not yet readable", "id": id});
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }
    let row = read::find(&state.db, id)
        .await?
        .ok_or_else(client_not_found)?;
    Ok((status, Json(ClientView::from_row(&row))).into_response())
}
