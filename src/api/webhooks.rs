//! `/api/v1/clients/{id}/webhooks`: endpoints that receive a client's page events (master
//! key, or the client's `write` key to change and `read` key to look), and their delivery log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Principal;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::{ApiError, AppState};
use crate::domain::client::Scope;
use crate::domain::ids::ClientId;
use crate::projections::clients::{self as read, WebhookRow};
use crate::projections::operations;

/// Body of `POST /api/v1/clients/{id}/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where to POST events (http or https; private addresses are refused).
    pub url: String,
    /// Page event types to deliver; default `["pages.updated"]`.
    #[serde(default)]
    pub events: Vec<String>,
}

/// A webhook as listed (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    pub client_id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl From<WebhookRow> for WebhookView {
    fn from(w: WebhookRow) -> Self {
        Self {
            id: w.id,
            client_id: w.client_id,
            url: w.url,
            events: w.events,
            created_at: w.created_at,
        }
    }
}

/// A new webhook: `secret` (to verify signatures) is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhookView {
    pub id: Uuid,
    pub client_id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
}

/// One delivery attempt.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DeliveryView {
    pub id: i64,
    pub event_id: Uuid,
    pub event_type: String,
    /// 1 for the first attempt of this event.
    pub attempt: i32,
    pub succeeded: bool,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub attempted_at: DateTime<Utc>,
}

/// `?limit=&before=` of the delivery log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only attempts older than this one (the last `id` of the previous page).
    pub before: Option<i64>,
}

async fn client_webhook(
    state: &AppState,
    client: Uuid,
    webhook: Uuid,
) -> Result<WebhookRow, ApiError> {
    read::webhooks(&state.db, client)
        .await?
        .into_iter()
        .find(|w| w.id == webhook)
        .ok_or_else(|| ApiError::NotFound("webhook not found".into()))
}

#[utoipa::path(post, path = "/api/v1/clients/{id}/webhooks", tag = "webhooks", params(("id" = Uuid, Path)),
    request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhookView), (status = 403), (status = 404), (status = 422), (status = 409, description = "client_inactive: the client is inactive")),
    security(("api_key" = [])))]
/// Adds a webhook (master key or `write` key). The answer's `secret` is the only time it is shown.
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<CreatedWebhookView>), ApiError> {
    principal.require(client, Scope::Write)?;
    let (created, _) = state
        .tenants
        .add_webhook(
            ClientId::from_uuid(client),
            &body.url,
            body.events,
            state.webhook_allow_private,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhookView {
            id: created.id,
            client_id: created.client_id,
            url: created.url,
            events: created.events,
            secret: created.secret.expose().to_owned(),
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/clients/{id}/webhooks", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<WebhookView>), (status = 403)),
    security(("api_key" = [])))]
/// The client's webhooks (master key or `read` key).
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client): ApiPath<Uuid>,
) -> Result<Json<Vec<WebhookView>>, ApiError> {
    principal.require(client, Scope::Read)?;
    let hooks = read::webhooks(&state.db, client).await?;
    Ok(Json(hooks.into_iter().map(Into::into).collect()))
}

#[utoipa::path(delete, path = "/api/v1/clients/{id}/webhooks/{webhook_id}", tag = "webhooks",
    params(("id" = Uuid, Path), ("webhook_id" = Uuid, Path)),
    responses((status = 200), (status = 403), (status = 404), (status = 409, description = "client_inactive: the client is inactive")),
    security(("api_key" = [])))]
/// Removes a webhook (master key or `write` key).
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((client, webhook)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require(client, Scope::Write)?;
    state
        .tenants
        .remove_webhook(ClientId::from_uuid(client), webhook)
        .await?;
    Ok(Json(
        serde_json::json!({"message": "Webhook removed", "id": webhook}),
    ))
}

#[utoipa::path(get, path = "/api/v1/clients/{id}/webhooks/{webhook_id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path), ("webhook_id" = Uuid, Path), DeliveryQuery),
    responses((status = 200, body = Vec<DeliveryView>), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// A webhook's delivery attempts, newest first (master key or `read` key).
pub async fn deliveries(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((client, webhook)): ApiPath<(Uuid, Uuid)>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    principal.require(client, Scope::Read)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::InvalidQuery {
            message: "limit must be between 1 and 1000".into(),
        });
    }
    client_webhook(&state, client, webhook).await?;
    let rows = operations::webhook_deliveries(&state.db, webhook, q.before, limit).await?;
    Ok(Json(rows))
}
