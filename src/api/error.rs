//! The one error type of the API: each variant has its status and stable code beside it,
//! and renders as `{"error": {"code": "snake_case_code", "message": "..."}}` (plus `field`
//! for validation errors).

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::commands::tenants::TenantError;
use crate::commands::visits::RejectCode;

/// Defines [`ErrorCode`] from one table: every code the API answers, its status and what it
/// means. `docs/ERRORS.md` is this table (a unit test keeps them equal).
macro_rules! error_codes {
    ($($variant:ident => $code:literal, $status:ident, $meaning:literal;)*) => {
        /// Every error code of the API, the complete catalogue.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant,)*];

            /// The stable `code` of the error body.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(Self::$variant => StatusCode::$status,)*
                }
            }

            /// What the code means, for the catalogue in the docs.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Self::$variant => $meaning,)*
                }
            }
        }
    };
}

error_codes! {
    BadRequest => "bad_request", BAD_REQUEST,
        "The path or the request is malformed (an id that is not a UUID, a bad page path).";
    InvalidQuery => "invalid_query", BAD_REQUEST, "A query parameter is missing or invalid.";
    MalformedJson => "malformed_json", BAD_REQUEST,
        "The body is not JSON, or not of the operation's shape.";
    Unauthorized => "unauthorized", UNAUTHORIZED,
        "No API key, or an unknown or revoked one (send `X-API-Key` or `Authorization: Bearer`).";
    Forbidden => "forbidden", FORBIDDEN,
        "The key may not do this: another client's resource, a scope it lacks, or a master-only operation.";
    NotFound => "not_found", NOT_FOUND,
        "What the path names does not exist: a client, page, webhook, key, reprocessing run, dead letter, a page's content not made yet, or an edge route. The message says which.";
    NotCached => "not_cached", NOT_FOUND,
        "The built-in edge route, reached by `Host`, has no cached version of the page for this visitor (let the proxy fall back to the origin).";
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED,
        "The route exists but not with this method.";
    Conflict => "conflict", CONFLICT,
        "The request conflicts with the current state: a client's name or domain already taken, a page being reprocessed, a dead letter whose consumer is gone.";
    ClientInactive => "client_inactive", CONFLICT,
        "The client is inactive: its pipeline is paused and its keys read but do not write.";
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE, "The body is larger than the limit.";
    UriTooLong => "uri_too_long", URI_TOO_LONG, "The request target is too long.";
    HeadersTooLarge => "headers_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE,
        "The request headers are too large.";
    RequestTimeout => "request_timeout", REQUEST_TIMEOUT, "The body did not arrive in time.";
    UnsupportedMediaType => "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE,
        "The body is not sent as `application/json`.";
    ValidationFailed => "validation_failed", UNPROCESSABLE_ENTITY,
        "A field is invalid; `field` names it and the message says why.";
    BlockedAddress => "blocked_address", UNPROCESSABLE_ENTITY,
        "The URL resolves to a private, loopback or link-local address (allowed only with `ALLOW_PRIVATE_NETWORKS`).";
    InvalidUrl => "invalid_url", UNPROCESSABLE_ENTITY,
        "A URL is not an http(s) URL, or cannot be normalized.";
    NoSitemap => "no_sitemap", UNPROCESSABLE_ENTITY,
        "No sitemap was found: none in robots.txt, none at `/sitemap.xml` or `/sitemap_index.xml`.";
    SitemapUnreadable => "sitemap_unreadable", UNPROCESSABLE_ENTITY,
        "The sitemap could not be fetched or read (status, size, format); the message says why.";
    ForbiddenClient => "forbidden_client", UNPROCESSABLE_ENTITY,
        "A visit's `client_id` is not the client of the key that reports it.";
    ClientIdRequired => "client_id_required", UNPROCESSABLE_ENTITY,
        "A visit reported with the master key names no `client_id`.";
    UnknownClient => "unknown_client", UNPROCESSABLE_ENTITY, "A visit names a client that does not exist.";
    OffDomain => "off_domain", UNPROCESSABLE_ENTITY,
        "A visit's URL is not on its client's domain (or its subdomains, by the client's setting).";
    InvalidTimestamp => "invalid_timestamp", UNPROCESSABLE_ENTITY, "A visit's timestamp is in the future.";
    InvalidStatus => "invalid_status", UNPROCESSABLE_ENTITY, "A visit's status is not an HTTP status (100-599).";
    InvalidIp => "invalid_ip", UNPROCESSABLE_ENTITY, "A visit's `ip` is not an IP address.";
    InvalidPrice => "invalid_price", UNPROCESSABLE_ENTITY,
        "A visit's `charged_price` is not a price such as `USD 0.01`.";
    InvalidSignatureAgent => "invalid_signature_agent", UNPROCESSABLE_ENTITY,
        "A visit's `signature_agent` is not an agent's origin such as `https://chatgpt.com`.";
    RateLimited => "rate_limited", TOO_MANY_REQUESTS,
        "Over the key's requests per minute; retry after `Retry-After` seconds.";
    ServiceUnavailable => "service_unavailable", SERVICE_UNAVAILABLE,
        "NATS or PostgreSQL is unreachable; retry.";
    InternalError => "internal_error", INTERNAL_SERVER_ERROR,
        "Anything unexpected: logged with its cause, answered without details.";
}

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
    #[error("no cached version of {0} for this visitor")]
    NotCached(String),
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
    /// A well-formed request that cannot be carried out (an unreadable sitemap, a refused
    /// address, a refused visit): `code` is one of the 422 codes of the table.
    #[error("{message}")]
    Unprocessable { code: ErrorCode, message: String },
    #[error("too many requests: retry after {} s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Anything unexpected: logged with its cause, answered as an opaque 500.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The code of each variant.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::InvalidQuery { .. } => ErrorCode::InvalidQuery,
            Self::MalformedJson(_) => ErrorCode::MalformedJson,
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::NotCached(_) => ErrorCode::NotCached,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::ClientInactive => ErrorCode::ClientInactive,
            Self::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            Self::UriTooLong => ErrorCode::UriTooLong,
            Self::HeadersTooLarge => ErrorCode::HeadersTooLarge,
            Self::RequestTimeout => ErrorCode::RequestTimeout,
            Self::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            Self::Validation { .. } => ErrorCode::ValidationFailed,
            Self::Unprocessable { code, .. } => *code,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Unavailable(_) => ErrorCode::ServiceUnavailable,
            Self::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// Status and stable code of each variant.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        let code = self.code();
        (code.status(), code.as_str())
    }

    /// A refused visit, with its code in the catalogue.
    pub fn rejected(code: RejectCode, message: String) -> Self {
        let code = match code {
            RejectCode::ForbiddenClient => ErrorCode::ForbiddenClient,
            RejectCode::ClientIdRequired => ErrorCode::ClientIdRequired,
            RejectCode::UnknownClient => ErrorCode::UnknownClient,
            RejectCode::OffDomain => ErrorCode::OffDomain,
            RejectCode::InvalidUrl => ErrorCode::InvalidUrl,
            RejectCode::InvalidTimestamp => ErrorCode::InvalidTimestamp,
            RejectCode::InvalidStatus => ErrorCode::InvalidStatus,
            RejectCode::InvalidIp => ErrorCode::InvalidIp,
            RejectCode::InvalidPrice => ErrorCode::InvalidPrice,
            RejectCode::InvalidSignatureAgent => ErrorCode::InvalidSignatureAgent,
        };
        Self::Unprocessable { code, message }
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
            } => ErrorCode::BlockedAddress,
            DiscoveryError::Fetch {
                error: FetchError::Scheme(_) | FetchError::InvalidUrl(_),
                ..
            } => ErrorCode::InvalidUrl,
            DiscoveryError::NoSitemap(_) => ErrorCode::NoSitemap,
            _ => ErrorCode::SitemapUnreadable,
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

/// The catalogue as a Markdown table, as `docs/ERRORS.md` holds it.
pub fn catalogue_markdown() -> String {
    let mut table = String::from("| code | status | meaning |\n|---|---|---|\n");
    for code in ErrorCode::ALL {
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            code.as_str(),
            code.status().as_u16(),
            code.meaning()
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }

    #[test]
    fn every_visit_rejection_is_a_422_code_of_the_same_name() {
        for reason in RejectCode::ALL {
            let error = ApiError::rejected(reason, String::new());
            assert_eq!(error.code().as_str(), reason.as_str());
            assert_eq!(error.code().status(), StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(
                serde_json::to_value(reason).expect("json"),
                json!(reason.as_str())
            );
        }
    }

    #[test]
    fn the_docs_list_every_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ERRORS.md");
        let docs = std::fs::read_to_string(path).expect("docs/ERRORS.md");
        assert!(
            docs.contains(&catalogue_markdown()),
            "docs/ERRORS.md is stale: its table must be exactly this:\n{}",
            catalogue_markdown()
        );
    }
}
