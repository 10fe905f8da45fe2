//! A controllable origin site for the scraper tests: each path answers what the test set
//! (status, body, headers, an ETag honoured by conditional GETs, delays, endless bodies,
//! redirects), robots.txt is settable, and every request is logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// What a path answers.
#[derive(Clone, Debug)]
pub enum Page {
    Html {
        body: Vec<u8>,
        content_type: String,
        etag: Option<String>,
    },
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    Slow(Duration),
    Endless,
    Redirect(String),
    /// Says it was asked (`asked`), waits for `release`, then answers as the inner page.
    Held {
        asked: Arc<tokio::sync::Notify>,
        release: Arc<tokio::sync::Notify>,
        page: Box<Page>,
    },
}

impl Page {
    pub fn html(body: &str) -> Self {
        Self::Html {
            body: body.as_bytes().to_vec(),
            content_type: "text/html; charset=utf-8".into(),
            etag: None,
        }
    }

    pub fn with_etag(body: &str, etag: &str) -> Self {
        Self::Html {
            body: body.as_bytes().to_vec(),
            content_type: "text/html".into(),
            etag: Some(etag.into()),
        }
    }
}

/// An article page whose main text is `main` and whose footer says `footer`.
pub fn article(main: &str, footer: &str) -> String {
    format!(
        "<html><head><title>T</title><script>var t={footer:?};</script></head><body><nav>Menu</nav><main><h1>Title</h1><p>{main}</p></main><footer>Rendered {footer}</footer></body></html>"
    )
}

#[derive(Default)]
struct Inner {
    pages: HashMap<String, Page>,
    robots: Option<String>,
    log: Vec<(String, Instant, HeaderMap)>,
    in_flight: usize,
    most_in_flight: usize,
}

/// A request being answered: counted while it lives.
struct InFlight(Arc<Mutex<Inner>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.0.lock() {
            inner.in_flight -= 1;
        }
    }
}

/// A running origin.
#[derive(Clone)]
pub struct PageOrigin {
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
}

impl PageOrigin {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(Arc::clone(&inner));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { port, inner }
    }

    /// `http://site.test:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://site.test:{}{path}", self.port)
    }

    pub fn set(&self, path: &str, page: Page) {
        self.inner
            .lock()
            .expect("lock")
            .pages
            .insert(path.to_owned(), page);
    }

    /// Serves an article at each path, its text naming the path; returns their URLs.
    pub fn articles(&self, paths: &[String]) -> Vec<String> {
        for p in paths {
            self.set(
                p,
                Page::html(&article(
                    &format!("The text of {p}, long enough to be the main content of the page."),
                    "0",
                )),
            );
        }
        paths.iter().map(|p| self.url(p)).collect()
    }

    pub fn robots(&self, text: &str) {
        self.inner.lock().expect("lock").robots = Some(text.to_owned());
    }

    /// The most requests (robots.txt aside) it was answering at once.
    pub fn most_at_once(&self) -> usize {
        self.inner.lock().expect("lock").most_in_flight
    }

    /// Requests made for `path` (robots.txt requests are logged as `/robots.txt`).
    pub fn hits(&self, path: &str) -> Vec<(Instant, HeaderMap)> {
        self.inner
            .lock()
            .expect("lock")
            .log
            .iter()
            .filter(|(p, ..)| p == path)
            .map(|(_, t, h)| (*t, h.clone()))
            .collect()
    }
}

async fn serve(State(inner): State<Arc<Mutex<Inner>>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri
        .path_and_query()
        .map_or(uri.path().to_owned(), |p| p.as_str().to_owned());
    let (mut page, robots) = {
        let mut inner = inner.lock().expect("lock");
        inner
            .log
            .push((path.clone(), Instant::now(), headers.clone()));
        if path != "/robots.txt" {
            inner.in_flight += 1;
            inner.most_in_flight = inner.most_in_flight.max(inner.in_flight);
        }
        (inner.pages.get(&path).cloned(), inner.robots.clone())
    };
    let _flight = (path != "/robots.txt").then(|| InFlight(Arc::clone(&inner)));
    if let Some(Page::Held {
        asked,
        release,
        page: inner,
    }) = page
    {
        asked.notify_one();
        release.notified().await;
        page = Some(*inner);
    }
    if path == "/robots.txt" {
        return match robots {
            Some(text) => text.into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        };
    }
    match page {
        None => StatusCode::NOT_FOUND.into_response(),
        Some(Page::Html {
            body,
            content_type,
            etag,
        }) => {
            let matches = etag.as_deref().is_some_and(|e| {
                headers
                    .get(header::IF_NONE_MATCH)
                    .and_then(|v| v.to_str().ok())
                    == Some(e)
            });
            if matches {
                return StatusCode::NOT_MODIFIED.into_response();
            }
            let mut res = ([(header::CONTENT_TYPE, content_type)], body).into_response();
            if let Some(e) = etag.and_then(|e| e.parse().ok()) {
                res.headers_mut().insert(header::ETAG, e);
            }
            res
        }
        Some(Page::Status {
            status,
            retry_after,
        }) => {
            let mut res = StatusCode::from_u16(status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                .into_response();
            if let Some(secs) = retry_after.and_then(|s| s.to_string().parse().ok()) {
                res.headers_mut().insert(header::RETRY_AFTER, secs);
            }
            res
        }
        Some(Page::Slow(d)) => {
            tokio::time::sleep(d).await;
            "<html><body><main>late</main></body></html>".into_response()
        }
        Some(Page::Endless) => {
            let chunks = futures::stream::repeat_with(|| {
                Ok::<_, std::io::Error>(Bytes::from(vec![b'a'; 64 * 1024]))
            });
            (
                [(header::CONTENT_TYPE, "text/html")],
                Body::from_stream(chunks),
            )
                .into_response()
        }
        Some(Page::Redirect(to)) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
        Some(Page::Held { .. }) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
