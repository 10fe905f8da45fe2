//! Reprocessing runs: `POST|GET /api/v1/clients/{id}/reprocess`, `GET /api/v1/reprocess/{run}`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Principal;
use super::extract::{ApiJson, ApiPath};
use super::{ApiError, AppState};
use crate::commands::reprocess::{ReprocessError, RunSpec, RunView};
use crate::domain::client::Scope;
use crate::events::pages::Stage;

impl From<ReprocessError> for ApiError {
    fn from(e: ReprocessError) -> Self {
        match e {
            ReprocessError::Invalid { field, message } => Self::validation(field, message),
            ReprocessError::UnknownClient(_) => Self::NotFound("client not found".into()),
            ReprocessError::Publish(_) => Self::Unavailable(e.to_string()),
            ReprocessError::Db(e) => e.into(),
        }
    }
}

/// Body of `POST /api/v1/clients/{id}/reprocess`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReprocessRequest {
    /// The first stage to run again: `scrape` (fetch again), `markdown` (e.g. after an
    /// extractor or prompt change), `render` (after a template change) or `upload`.
    pub from_stage: Stage,
    /// Only pages whose URL starts with this.
    pub url_prefix: Option<String>,
    /// Only pages whose Markdown was last made at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only pages whose Markdown was last made before this time.
    pub until: Option<DateTime<Utc>>,
    /// Make every output again even where input and version did not change (default false).
    #[serde(default)]
    pub force: bool,
}

#[utoipa::path(post, path = "/api/v1/clients/{id}/reprocess", tag = "operations", params(("id" = Uuid, Path)),
    request_body = ReprocessRequest,
    responses((status = 202, body = RunView, description = "run requested; follow it at /api/v1/reprocess/{run}"),
              (status = 403), (status = 404), (status = 422), (status = 409, description = "client_inactive: the client is inactive")),
    security(("api_key" = [])))]
/// Runs the client's pages through the pipeline again from a stage (master key, or the
/// client's `write` key).
pub async fn start(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ReprocessRequest>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    principal.require(client, Scope::Write)?;
    super::auth::require_active(&state.db, client).await?;
    let spec = RunSpec {
        from_stage: body.from_stage,
        url_prefix: body.url_prefix.filter(|p| !p.is_empty()),
        since: body.since,
        until: body.until,
        force: body.force,
    };
    let run = state.reprocessing.request(client, spec).await?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}

#[utoipa::path(get, path = "/api/v1/clients/{id}/reprocess", tag = "operations", params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<RunView>), (status = 403)),
    security(("api_key" = [])))]
/// The client's last 100 reprocessing runs, newest first (master key, or a `read` key).
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(client): ApiPath<Uuid>,
) -> Result<Json<Vec<RunView>>, ApiError> {
    principal.require(client, Scope::Read)?;
    Ok(Json(state.reprocessing.list(client, 100).await?))
}

#[utoipa::path(get, path = "/api/v1/reprocess/{run}", tag = "operations", params(("run" = Uuid, Path)),
    responses((status = 200, body = RunView), (status = 404)),
    security(("api_key" = [])))]
/// One run and its progress (master key, or its client's `read` key).
pub async fn get_one(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(run): ApiPath<Uuid>,
) -> Result<Json<RunView>, ApiError> {
    let not_found = || ApiError::NotFound("reprocessing run not found".into());
    let view = state.reprocessing.get(run).await?.ok_or_else(not_found)?;
    principal
        .require(view.client_id, Scope::Read)
        .map_err(|_| not_found())?;
    Ok(Json(view))
}
