//! What a browser finds on the API: `/` names the service and links to what there is to see,
//! `/docs` is the API documentation (RapiDoc over `/api/v1/openapi.json`), served from a copy
//! vendored in `assets/vendor/` (pinned in `assets/package-lock.json`, no CDN).

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

/// RapiDoc, gzipped as `scripts/vendor-assets` leaves it.
static RAPIDOC_GZ: &[u8] = include_bytes!("../../assets/vendor/rapidoc-min.js.gz");

/// `/` when its host is not a client's site (a site's own `/` is the edge's).
pub fn index() -> Response {
    Html(concat!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ai-cache</title>\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem}",
        "code{background:#f3f3f3;padding:0 .2em}</style></head><body>\n",
        "<h1>ai-cache is running</h1>\n",
        "<p>Clean Markdown and minimal HTML of websites for AI crawlers, and who reads them.</p>\n<ul>\n",
        "<li><a href=\"/docs\">API documentation</a> (every route, tried from the browser with an <code>X-API-Key</code>)</li>\n",
        "<li><a href=\"/api/v1/openapi.json\">OpenAPI document</a></li>\n",
        "<li><a href=\"/health\">Health</a> and <a href=\"/metrics\">metrics</a></li>\n",
        "</ul>\n<p>With <code>scripts/dev</code>, the master key is in <code>.data/master_api_key</code>; ",
        "<code>target/debug/ai-cache status</code> shows every client's pages.</p>\n",
        "</body></html>\n"
    ))
    .into_response()
}

/// `/docs`: the API documentation.
pub async fn page() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ai-cache API</title>\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<script src=\"/docs/rapidoc-min.js\"></script></head><body>\n",
        "<rapi-doc spec-url=\"/api/v1/openapi.json\" render-style=\"read\" show-header=\"false\" ",
        "allow-authentication=\"true\" api-key-name=\"X-API-Key\" api-key-location=\"header\"></rapi-doc>\n",
        "</body></html>\n"
    ))
}

/// `/docs/rapidoc-min.js`: gzipped to clients that take it (every browser), else inflated.
pub async fn script(headers: HeaderMap) -> Response {
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let js = HeaderValue::from_static("text/javascript; charset=utf-8");
    let cache = HeaderValue::from_static("public, max-age=86400");
    if gzip_ok {
        return (
            [
                (header::CONTENT_TYPE, js),
                (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
                (header::CACHE_CONTROL, cache),
                (header::VARY, HeaderValue::from_static("accept-encoding")),
            ],
            RAPIDOC_GZ,
        )
            .into_response();
    }
    let mut plain = Vec::new();
    match std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(RAPIDOC_GZ), &mut plain) {
        Ok(_) => (
            [
                (header::CONTENT_TYPE, js),
                (header::CACHE_CONTROL, cache),
                (header::VARY, HeaderValue::from_static("accept-encoding")),
            ],
            plain,
        )
            .into_response(),
        Err(e) => {
            super::ApiError::Internal(anyhow::anyhow!("the vendored RapiDoc: {e}")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RAPIDOC_GZ;

    #[test]
    fn the_vendored_viewer_is_the_version_the_lock_file_pins() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let lock: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join("assets/package-lock.json")).expect("lock"),
        )
        .expect("json");
        let pinned = lock["packages"]["node_modules/rapidoc"]["version"]
            .as_str()
            .expect("rapidoc is locked");
        let mut head = vec![0u8; 64];
        std::io::Read::read_exact(&mut flate2::read::GzDecoder::new(RAPIDOC_GZ), &mut head)
            .expect("gzip");
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with(&format!("/*! RapiDoc {pinned} ")),
            "assets/vendor is not RapiDoc {pinned}: run scripts/vendor-assets ({head})"
        );
    }
}
