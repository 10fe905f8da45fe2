//! The site owner's dashboard at `/dashboard`: static files compiled into the binary (no CDN,
//! nothing fetched at run time), a plain module per the ARCHITECTURE's reasons, talking to the
//! JSON API with the user's key. Chart.js is vendored gzipped in `assets/vendor/` at the
//! version `assets/package-lock.json` pins (`scripts/vendor-assets`).

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

static INDEX: &str = include_str!("../../assets/dashboard/index.html");
static APP_JS: &str = include_str!("../../assets/dashboard/app.js");
static APP_CSS: &str = include_str!("../../assets/dashboard/app.css");
/// Chart.js, gzipped as `scripts/vendor-assets` leaves it.
static CHART_JS_GZ: &[u8] = include_bytes!("../../assets/vendor/chart.umd.min.js.gz");

/// What the dashboard's page may load and do: only its own files and the API (no inline
/// script or style, no frames of it elsewhere; the page preview is a sandboxed `srcdoc`).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; frame-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

const JS: &str = "text/javascript; charset=utf-8";

/// `/`, when its host is no client's site: the dashboard.
pub fn front_page() -> Response {
    Redirect::to("/dashboard").into_response()
}

/// `/dashboard`.
pub async fn index() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        INDEX,
    )
        .into_response()
}

/// A file of the dashboard: revalidated on each load (they change with each release).
fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// `/dashboard/app.js`.
pub async fn app_js() -> Response {
    file(JS, APP_JS)
}

/// `/dashboard/app.css`.
pub async fn app_css() -> Response {
    file("text/css; charset=utf-8", APP_CSS)
}

/// `/dashboard/chart.umd.min.js`.
pub async fn chart_js(headers: HeaderMap) -> Response {
    gzipped(&headers, CHART_JS_GZ, JS)
}

/// A vendored file kept gzipped: sent as is to clients that take gzip (every browser),
/// inflated for the others.
pub(super) fn gzipped(
    headers: &HeaderMap,
    gz: &'static [u8],
    content_type: &'static str,
) -> Response {
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let kind = HeaderValue::from_static(content_type);
    let cache = HeaderValue::from_static("public, max-age=86400");
    let vary = HeaderValue::from_static("accept-encoding");
    if gzip_ok {
        return (
            [
                (header::CONTENT_TYPE, kind),
                (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
                (header::CACHE_CONTROL, cache),
                (header::VARY, vary),
            ],
            gz,
        )
            .into_response();
    }
    let mut plain = Vec::new();
    match std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut plain) {
        Ok(_) => (
            [
                (header::CONTENT_TYPE, kind),
                (header::CACHE_CONTROL, cache),
                (header::VARY, vary),
            ],
            plain,
        )
            .into_response(),
        Err(e) => {
            super::ApiError::Internal(anyhow::anyhow!("a vendored file: {e}")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CHART_JS_GZ;

    #[test]
    fn the_vendored_chart_library_is_the_version_the_lock_file_pins() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let lock: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join("assets/package-lock.json")).expect("lock"),
        )
        .expect("json");
        let pinned = lock["packages"]["node_modules/chart.js"]["version"]
            .as_str()
            .expect("chart.js is locked");
        let mut head = vec![0u8; 64];
        std::io::Read::read_exact(&mut flate2::read::GzDecoder::new(CHART_JS_GZ), &mut head)
            .expect("gzip");
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.contains(&format!("Chart.js v{pinned}\n")),
            "assets/vendor is not Chart.js {pinned}: run scripts/vendor-assets ({head})"
        );
    }
}
