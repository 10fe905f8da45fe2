//! Extractors that answer bad input in the API's JSON error shape instead of axum's plain
//! text: malformed JSON (400), a wrong or missing field (422 naming it), a body over the limit
//! (413), no JSON content type (415), a bad path id or query (400).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// `axum::Json` with JSON errors.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            let text = e.body_text();
            let detail = text
                .split_once("target type: ")
                .map_or(text.as_str(), |(_, d)| d)
                .to_owned();
            let (field, message) = field_of(&detail);
            ApiError::validation(field, message)
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::MalformedJson(format!(
            "malformed JSON: {}",
            e.body_text().rsplit(": ").next().unwrap_or("syntax error")
        )),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge
        }
        JsonRejection::BytesRejection(e) if body_timed_out(&e) => ApiError::RequestTimeout,
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// Whether reading the body failed because its deadline passed (`API_BODY_TIMEOUT_SECS`).
fn body_timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Splits serde's `path: message` (serde_path_to_error's format) into the field and the
/// message. For a missing field the path is its parent; for an unknown one, the field itself.
fn field_of(detail: &str) -> (String, String) {
    let (path, message) = match detail.split_once(": ") {
        Some((path, message)) if !path.contains(' ') => (Some(path).filter(|p| *p != "."), message),
        _ => (None, detail),
    };
    let message = message.split(", expected").next().unwrap_or(message);
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_owned();
    if let Some(rest) = message.split_once("missing field `").map(|(_, r)| r) {
        let name = rest.split('`').next().unwrap_or_default();
        let field = path.map_or(name.to_owned(), |p| format!("{p}.{name}"));
        return (field, message);
    }
    if let Some(rest) = message.split_once("unknown field `").map(|(_, r)| r) {
        let name = rest.split('`').next().unwrap_or_default();
        return (path.unwrap_or(name).to_owned(), message);
    }
    (path.unwrap_or("body").to_owned(), message)
}

/// `axum::extract::Path` with JSON errors.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                let raw = axum::extract::RawPathParams::from_request_parts(parts, state)
                    .await
                    .map(|raw| {
                        raw.iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                Err(ApiError::BadRequest(
                    bad_parameter(&raw).unwrap_or_else(|| format!("invalid path: {}", e.kind())),
                ))
            }
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}

/// Which path parameter is wrong and what it should look like: `seq` is a number, `domain`
/// a domain, every other parameter of our routes an id (a UUID).
fn bad_parameter(raw: &[(String, String)]) -> Option<String> {
    raw.iter().find_map(|(key, value)| match key.as_str() {
        "domain" => None,
        "seq" => value.parse::<u64>().is_err().then(|| {
            format!("path parameter `{key}`: {value:?} is not a number (a dead letter's id)")
        }),
        _ => value.parse::<uuid::Uuid>().is_err().then(|| {
            format!(
                "path parameter `{key}`: {value:?} is not an id; ids are UUIDs such as \
                 3f2b8c1e-8d4a-4c5e-9b7a-1c2d3e4f5a6b"
            )
        }),
    })
}

/// `axum::extract::Query` with JSON errors.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::InvalidQuery {
                message: format!(
                    "invalid query: {}",
                    e.body_text()
                        .split_once("string: ")
                        .map_or("malformed", |(_, m)| m)
                ),
            }),
            Err(other) => Err(ApiError::InvalidQuery {
                message: other.body_text(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{bad_parameter, field_of};

    #[test]
    fn a_bad_path_parameter_is_named_with_what_it_should_look_like() {
        let raw = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let id = "3f2b8c1e-8d4a-4c5e-9b7a-1c2d3e4f5a6b";
        let message = bad_parameter(&raw(&[("id", id), ("key_id", "abc")])).expect("bad");
        assert!(
            message.starts_with("path parameter `key_id`: \"abc\" is not an id; ids are UUIDs"),
            "{message}"
        );
        assert!(bad_parameter(&raw(&[("seq", "x1")])).is_some_and(|m| m.contains("not a number")));
        assert_eq!(
            bad_parameter(&raw(&[("domain", "anything"), ("seq", "7")])),
            None
        );
    }

    #[test]
    fn serde_messages_name_the_field() {
        assert_eq!(
            field_of("missing field `name` at line 1 column 2").0,
            "name"
        );
        assert_eq!(
            field_of(".: missing field `name` at line 1 column 2").0,
            "name"
        );
        assert_eq!(field_of("settings: missing field `y`").0, "settings.y");
        let unknown =
            "nmae: unknown field `nmae`, expected one of `name`, `domain` at line 1 column 8";
        assert_eq!(
            field_of(unknown),
            ("nmae".into(), "unknown field `nmae`".into())
        );
        assert_eq!(
            field_of("settings.x: unknown field `x`, expected `y`").0,
            "settings.x"
        );
        let wrong_type =
            "is_active: invalid type: string \"yes\", expected a boolean at line 1 column 20";
        assert_eq!(
            field_of(wrong_type),
            ("is_active".into(), "invalid type: string \"yes\"".into())
        );
        assert_eq!(field_of("something odd").0, "body");
    }
}
