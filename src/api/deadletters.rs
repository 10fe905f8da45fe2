//! `/api/v1/dead-letters`: messages the stages gave up on (master key only): list, show,
//! re-drive one or all, discard.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Principal;
use super::extract::{ApiPath, ApiQuery};
use super::{ApiError, AppState};
use crate::commands::deadletters::{
    DeadLetterError, DeadLetterPage, DeadLetterView, DeadLetters, Filter,
};

/// Largest page of dead letters.
const MAX_LIMIT: usize = 1000;

impl From<DeadLetterError> for ApiError {
    fn from(e: DeadLetterError) -> Self {
        match e {
            DeadLetterError::NotFound(_) => Self::NotFound(e.to_string()),
            DeadLetterError::NoRedriveConsumer(..) => Self::Conflict(e.to_string()),
            DeadLetterError::Nats(_) => Self::Unavailable(e.to_string()),
        }
    }
}

/// Which dead letters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only those of this stage consumer (`markdown`, `uploader`, ...).
    pub consumer: Option<String>,
    /// Only those of this client's events.
    pub client_id: Option<Uuid>,
    /// Only those after this dead letter (the previous page's `next_after`).
    #[serde(default)]
    pub after: u64,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// Which dead letters to re-drive.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RedriveQuery {
    pub consumer: Option<String>,
    pub client_id: Option<Uuid>,
}

/// What a bulk re-drive did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Redriven {
    /// The re-driven dead letters' ids.
    pub redriven: Vec<u64>,
}

/// The filter of a listing or re-drive; a consumer name goes into a NATS subject, so it must
/// look like one (`markdown`, `scraper-discovered`...).
fn filter(consumer: Option<String>, client_id: Option<uuid::Uuid>) -> Result<Filter, ApiError> {
    let valid = |c: &str| {
        !c.is_empty()
            && c.len() <= 64
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if let Some(c) = consumer.as_deref().filter(|c| !valid(c)) {
        return Err(ApiError::InvalidQuery {
            message: format!(
                "consumer: {c:?} is not a stage consumer name (letters, digits, '-' and '_', such as markdown)"
            ),
        });
    }
    Ok(Filter {
        consumer,
        client_id,
    })
}

fn dead_letters(state: &AppState) -> DeadLetters {
    DeadLetters::new(state.nats.js.clone())
}

#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "operations", params(ListQuery),
    responses((status = 200, body = DeadLetterPage), (status = 403)),
    security(("api_key" = [])))]
/// Dead letters, oldest first (master key).
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    principal.require_master()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery {
            message: format!("limit must be between 1 and {MAX_LIMIT}"),
        });
    }
    let filter = filter(q.consumer, q.client_id)?;
    Ok(Json(
        dead_letters(&state).list(&filter, q.after, limit).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/dead-letters/{seq}", tag = "operations", params(("seq" = u64, Path)),
    responses((status = 200, body = DeadLetterView), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// One dead letter with its original event (master key).
pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(seq): ApiPath<u64>,
) -> Result<Json<DeadLetterView>, ApiError> {
    principal.require_master()?;
    Ok(Json(dead_letters(&state).show(seq).await?))
}

#[utoipa::path(delete, path = "/api/v1/dead-letters/{seq}", tag = "operations", params(("seq" = u64, Path)),
    responses((status = 200, body = DeadLetterView), (status = 403), (status = 404)),
    security(("api_key" = [])))]
/// Discards a dead letter: it is not handled again (master key).
pub async fn discard(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(seq): ApiPath<u64>,
) -> Result<Json<DeadLetterView>, ApiError> {
    principal.require_master()?;
    Ok(Json(dead_letters(&state).discard(seq).await?))
}

#[utoipa::path(post, path = "/api/v1/dead-letters/{seq}/redrive", tag = "operations", params(("seq" = u64, Path)),
    responses((status = 200, body = DeadLetterView, description = "handed back to its stage"),
              (status = 403), (status = 404), (status = 409, description = "the stage has no re-drive consumer")),
    security(("api_key" = [])))]
/// Hands a dead letter back to the stage that gave up on it (master key).
pub async fn redrive(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(seq): ApiPath<u64>,
) -> Result<Json<DeadLetterView>, ApiError> {
    principal.require_master()?;
    Ok(Json(dead_letters(&state).redrive(seq).await?))
}

#[utoipa::path(post, path = "/api/v1/dead-letters/redrive", tag = "operations", params(RedriveQuery),
    responses((status = 200, body = Redriven), (status = 403), (status = 409)),
    security(("api_key" = [])))]
/// Re-drives every dead letter (or those of one consumer or client) (master key).
pub async fn redrive_all(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<RedriveQuery>,
) -> Result<Json<Redriven>, ApiError> {
    principal.require_master()?;
    let filter = filter(q.consumer, q.client_id)?;
    let redriven = dead_letters(&state).redrive_all(&filter).await?;
    Ok(Json(Redriven { redriven }))
}
