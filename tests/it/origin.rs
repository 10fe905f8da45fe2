//! A local origin site for tests: serves the go-sitemap-parser fixtures (with their `HOST`
//! placeholder replaced by this origin's `site.test:<port>`, gzipped files re-gzipped), and
//! hostile documents made on the fly.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;

/// Which robots.txt the origin serves (a folder of the fixtures), or none.
#[derive(Clone, Copy, Debug)]
pub enum Robots {
    Variant(&'static str),
    None,
}

struct Site {
    host: String,
    robots: Robots,
    fixtures: PathBuf,
}

/// A running origin.
pub struct Origin {
    pub port: u16,
}

impl Origin {
    pub async fn start(robots: Robots) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let site = Arc::new(Site {
            host: format!("site.test:{port}"),
            robots,
            fixtures: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/sitemaps/go-sitemap-parser/test"),
        });
        let app = axum::Router::new().fallback(serve).with_state(site);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { port }
    }

    /// `http://site.test:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://site.test:{}{path}", self.port)
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

fn urlset(host: &str, range: std::ops::Range<usize>) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">"#,
    );
    for i in range {
        s.push_str(&format!(
            "<url><loc>http://{host}/p/{i}</loc><lastmod>2026-01-01</lastmod></url>"
        ));
    }
    s.push_str("</urlset>");
    s
}

fn index(locs: &[String]) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">"#,
    );
    for loc in locs {
        s.push_str(&format!("<sitemap><loc>{loc}</loc></sitemap>"));
    }
    s.push_str("</sitemapindex>");
    s
}

async fn serve(State(site): State<Arc<Site>>, uri: Uri) -> Response {
    let host = &site.host;
    let path = uri.path();
    match path {
        "/robots.txt" => match site.robots {
            Robots::Variant(dir) => match std::fs::read_to_string(site.fixtures.join(dir).join("robots.txt")) {
                Ok(text) => text.replace("HOST", host).into_response(),
                Err(_) => StatusCode::NOT_FOUND.into_response(),
            },
            Robots::None => StatusCode::NOT_FOUND.into_response(),
        },
        // Made-up documents for the hostile and limit cases.
        "/self-index.xml" => xml(index(&[format!("http://{host}/self-index.xml"), format!("http://{host}/sitemap-01.xml")])),
        "/big-60k.xml" => xml(urlset(host, 0..60_000)),
        "/index-50k.xml" => xml(index(&(0..5).map(|i| format!("http://{host}/part-{i}.xml")).collect::<Vec<_>>())),
        "/bomb.xml.gz" => {
            let mut gz = GzEncoder::new(Vec::new(), Compression::best());
            gz.write_all(&vec![b' '; 64 * 1024 * 1024]).expect("gzip");
            gz.finish().expect("gzip").into_response()
        }
        "/endless.xml" => {
            let chunks = futures::stream::repeat_with(|| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 64 * 1024])));
            Response::new(Body::from_stream(chunks))
        }
        "/laughs.xml" => xml(r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">]><urlset><url><loc>&lol2;</loc></url></urlset>"#.to_owned()),
        "/xxe.xml" => xml(r#"<?xml version="1.0"?><!DOCTYPE u [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><urlset><url><loc>http://site.test/&xxe;</loc></url></urlset>"#.to_owned()),
        "/mixed.xml" => xml(format!(
            r#"<urlset><url><loc>http://{host}/good-1</loc></url><url><loc>http://{host}/good-2</loc></url>
            <url><loc>http://{host}/good-1#again</loc></url><url><loc>https://other.example/off</loc></url>
            <url><loc>http://www.site.test/sub</loc></url><url><loc>http://10.0.0.1/private</loc></url>
            <url><loc>not a url</loc></url><url><loc>ftp://{host}/file</loc></url><url><loc>javascript:alert(1)</loc></url></urlset>"#
        )),
        "/sitemap-01-changed.xml" => xml(format!(
            r#"<urlset><url><loc>http://{host}/page-01</loc><lastmod>2026-06-01</lastmod><changefreq>daily</changefreq><priority>0.9</priority></url></urlset>"#
        )),
        "/redirect-to-loopback.xml" => {
            (StatusCode::FOUND, [(header::LOCATION, format!("http://127.0.0.1:{}/sitemap-01.xml", host.rsplit(':').next().unwrap_or("80")))]).into_response()
        }
        _ => {
            if let Some(n) = path.strip_prefix("/chain-").and_then(|p| p.strip_suffix(".xml")).and_then(|n| n.parse::<usize>().ok()) {
                return xml(index(&[format!("http://{host}/chain-{}.xml", n + 1)]));
            }
            if let Some(n) = path.strip_prefix("/part-").and_then(|p| p.strip_suffix(".xml")).and_then(|n| n.parse::<usize>().ok()) {
                return xml(urlset(host, n * 10_000..(n + 1) * 10_000));
            }
            fixture(&site, path)
        }
    }
}

/// A fixture file with `HOST` replaced (inside the gzip for `.gz` files).
fn fixture(site: &Site, path: &str) -> Response {
    let name = path.trim_start_matches('/');
    if name.contains("..") || name.contains('/') {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(bytes) = std::fs::read(site.fixtures.join(name)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = if name.ends_with(".gz") {
        let mut plain = Vec::new();
        let readable = std::io::Read::read_to_end(
            &mut flate2::read::MultiGzDecoder::new(&bytes[..]),
            &mut plain,
        )
        .is_ok();
        if readable && !plain.is_empty() {
            gzip(
                String::from_utf8_lossy(&plain)
                    .replace("HOST", &site.host)
                    .as_bytes(),
            )
        } else {
            bytes // corrupted or empty archives are served as they are
        }
    } else {
        String::from_utf8_lossy(&bytes)
            .replace("HOST", &site.host)
            .into_bytes()
    };
    body.into_response()
}
