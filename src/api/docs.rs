//! The API's documentation for browsers: `/docs` (RapiDoc over `/api/v1/openapi.json`), served from a copy
//! vendored in `assets/vendor/` (pinned in `assets/package-lock.json`, no CDN).

use axum::http::HeaderMap;
use axum::response::{Html, Response};

/// RapiDoc, gzipped as `scripts/vendor-assets` leaves it.
static RAPIDOC_GZ: &[u8] = include_bytes!("../../assets/vendor/rapidoc-min.js.gz");

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

/// `/docs/rapidoc-min.js`.
pub async fn script(headers: HeaderMap) -> Response {
    super::dashboard::gzipped(&headers, RAPIDOC_GZ, "text/javascript; charset=utf-8")
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
