//! The one error type of the API: each variant has its status and stable code beside it,
//! and renders as `{"error": {"code": "snake_case_code", "message": "..."}}` (plus `field`
//! for validation errors).

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::commands::tenants::TenantError;

/// An error answered to an API caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{message}")]
    InvalidQuery { message: String },
    #[error("{0}")]
    MalformedJson(String),
    #[error("missing or invalid API key: send it in X-API-Key or Authorization: Bearer")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error(
        "the client is inactive: its pipeline is paused and its keys read but do not write (the operator can activate it)"
    )]
    ClientInactive,
    #[error("request body is larger than the limit")]
    PayloadTooLarge,
    #[error(
        "the request target is longer than {} bytes",
        super::server::MAX_URI_BYTES
    )]
    UriTooLong,
    #[error(
        "the request headers are larger than {} bytes",
        super::server::MAX_HEADER_BYTES
    )]
    HeadersTooLarge,
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("expected a JSON body (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    /// A well-formed request that cannot be carried out (an unreadable sitemap, a refused address).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("too many requests: retry after {} s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Anything unexpected: logged with its cause, answered as an opaque 500.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// Status and stable code of each variant.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::InvalidQuery { .. } => (StatusCode::BAD_REQUEST, "invalid_query"),
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::ClientInactive => (StatusCode::CONFLICT, "client_inactive"),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UriTooLong => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            Self::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
        let mut error = json!({"code": code, "message": self.to_string()});
        if let Self::Validation { field, .. } = &self {
            error["field"] = json!(field);
        }
        let mut response = (status, Json(json!({ "error": error }))).into_response();
        if let Self::RateLimited { retry_after } = &self {
            let secs = retry_after.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::Unavailable("database unavailable".into())
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> Self {
        match e {
            TenantError::Invalid(f) => Self::Validation {
                field: f.field,
                message: f.message,
            },
            TenantError::Conflict { field } => {
                Self::Conflict(format!("a client with this {field} already exists"))
            }
            TenantError::NotFound(what) => Self::NotFound(format!("{what} not found")),
            TenantError::Publish(_) | TenantError::Stream(_) => {
                tracing::warn!(error = %e, "event store unavailable");
                Self::Unavailable("event store unavailable, retry".into())
            }
            TenantError::Db(db) => db.into(),
            TenantError::Secrets(s) => Self::Internal(s.into()),
        }
    }
}

impl From<crate::commands::discovery::DiscoveryError> for ApiError {
    fn from(e: crate::commands::discovery::DiscoveryError) -> Self {
        use crate::commands::discovery::DiscoveryError;
        use crate::infra::http::FetchError;
        let code = match &e {
            DiscoveryError::Fetch {
                error: FetchError::BlockedAddress(_),
                ..
            } => "blocked_address",
            DiscoveryError::Fetch {
                error: FetchError::Scheme(_) | FetchError::InvalidUrl(_),
                ..
            } => "invalid_url",
            DiscoveryError::NoSitemap(_) => "no_sitemap",
            _ => "sitemap_unreadable",
        };
        Self::Unprocessable {
            code,
            message: e.to_string(),
        }
    }
}

impl From<crate::commands::discovery::ImportError> for ApiError {
    fn from(e: crate::commands::discovery::ImportError) -> Self {
        use crate::commands::discovery::ImportError;
        match e {
            ImportError::Publish(p) => {
                tracing::warn!(error = %p, "event store unavailable");
                Self::Unavailable("event store unavailable, retry".into())
            }
            ImportError::Db(db) => db.into(),
        }
    }
}

impl From<crate::commands::discovery::SitemapImportError> for ApiError {
    fn from(e: crate::commands::discovery::SitemapImportError) -> Self {
        use crate::commands::discovery::SitemapImportError;
        match e {
            SitemapImportError::Discovery(d) => d.into(),
            SitemapImportError::Import(i) => i.into(),
        }
    }
}

/// Completes the OpenAPI document with the errors every operation can answer, in the error
/// shape: 400 (a bad path, query or body), 401 and 429 where a key is needed, 403 and 404
/// where a client or resource is named, 408, 413, 415 and 422 where a body is read, 414 and
/// 431 (the request's size), 503 (NATS or PostgreSQL away). Responses an operation already
/// declares keep their description and get the error body when they had none.
pub fn document(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let components = openapi.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("ApiErrorBody".to_owned(), RefOr::T(error_body_schema()));
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ApiErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in openapi.paths.paths.iter_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let keyed = operation.security.is_some() || path.starts_with("/api/v1/");
            let named = path.contains('{');
            let body = operation.request_body.is_some();
            let codes: [(&str, bool, &str); 12] = [
                ("400", true, "bad request: a malformed path, query or body"),
                ("401", keyed, "no key, or an unknown one"),
                ("403", keyed, "the key may not do this"),
                ("404", named, "not found"),
                ("408", body, "the body did not arrive in time"),
                ("413", body, "the body is over the limit"),
                ("414", true, "the request target is too long"),
                ("415", body, "the body is not JSON"),
                ("422", body, "a field is invalid (its name in `field`)"),
                ("429", keyed, "over the key's rate limit (Retry-After)"),
                ("431", true, "the request headers are too large"),
                ("503", true, "NATS or PostgreSQL is unavailable"),
            ];
            let responses = &mut operation.responses.responses;
            for (code, applies, description) in codes {
                if applies {
                    responses
                        .entry(code.to_owned())
                        .or_insert_with(|| RefOr::T(error(description)));
                }
            }
            for (code, response) in responses.iter_mut() {
                let is_error = code.starts_with('4') || code.starts_with('5');
                if let RefOr::T(response) = response
                    && is_error
                    && response.content.is_empty()
                {
                    let description = if response.description.is_empty() {
                        "error".to_owned()
                    } else {
                        response.description.clone()
                    };
                    *response = error(&description);
                }
            }
        }
    }
}

/// `{"error": {"code", "message", "field"?}}`.
fn error_body_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let inner = ObjectBuilder::new()
        .property("code", ObjectBuilder::new().schema_type(Type::String))
        .required("code")
        .property("message", ObjectBuilder::new().schema_type(Type::String))
        .required("message")
        .property("field", ObjectBuilder::new().schema_type(Type::String))
        .build();
    ObjectBuilder::new()
        .property("error", inner)
        .required("error")
        .build()
        .into()
}
