//! What the edge answers a request with, defined once (the Cloudflare Worker follows the same
//! rules and is tested against the same vectors, `tests/fixtures/edge-vectors.json`). Pure.
//!
//! - A request for the Markdown variant of a page (`/post.md` for `/post`, `/index.md` for `/`,
//!   `/blog/index.md` for `/blog/`) gets the Markdown, whoever asks.
//! - Otherwise a request whose `Accept` names `text/markdown` (coding agents send it) gets the
//!   Markdown, and a known AI agent gets the minimal HTML (classic AI crawlers ask for HTML).
//! - Everyone else passes: the Worker hands the request to the origin untouched; the built-in
//!   edge route redirects to the origin page (or answers 404 when reached by `Host`).
//!
//! Every answer varies by `Accept` and `User-Agent`, and links to the Markdown variant.

use serde::{Deserialize, Serialize};

use super::bots::Classification;

/// The suffix of a Markdown variant.
pub const MARKDOWN_SUFFIX: &str = ".md";

/// The `Vary` header of every edge answer.
pub const VARY: &str = "Accept, User-Agent";

/// What to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Serve {
    Markdown,
    Html,
    /// Not for the cache: the origin answers.
    Pass,
}

/// A request as the edge sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub serve: Serve,
    /// The page path to look up (the variant suffix removed).
    pub page_path: String,
    /// Whether the Markdown variant was asked for by its path.
    pub explicit_markdown: bool,
}

/// The path of a page's Markdown variant.
pub fn markdown_path(page_path: &str) -> String {
    if page_path.ends_with('/') {
        format!("{page_path}index{MARKDOWN_SUFFIX}")
    } else {
        format!("{page_path}{MARKDOWN_SUFFIX}")
    }
}

/// The page path a Markdown variant path stands for, if it is one.
pub fn page_of_markdown_path(path: &str) -> Option<String> {
    let stem = path.strip_suffix(MARKDOWN_SUFFIX)?;
    if let Some(dir) = stem.strip_suffix("/index") {
        return Some(format!("{dir}/"));
    }
    (!stem.is_empty() && !stem.ends_with('/')).then(|| stem.to_owned())
}

/// Whether `Accept` asks for Markdown (`text/markdown` with a non-zero quality).
pub fn accepts_markdown(accept: &str) -> bool {
    accept.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        media.eq_ignore_ascii_case("text/markdown")
            && !parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            })
    })
}

/// Decides what a request gets. `path` is the request path without the query.
pub fn decide(path: &str, accept: &str, visitor: &Classification) -> Decision {
    if let Some(page_path) = page_of_markdown_path(path) {
        return Decision {
            serve: Serve::Markdown,
            page_path,
            explicit_markdown: true,
        };
    }
    let serve = if accepts_markdown(accept) {
        Serve::Markdown
    } else if visitor.is_ai() {
        Serve::Html
    } else {
        Serve::Pass
    };
    Decision {
        serve,
        page_path: path.to_owned(),
        explicit_markdown: false,
    }
}

/// The `Link` header pointing at the Markdown variant of `page_path` (with `prefix` before
/// it, e.g. `/edge/example.com` on the built-in route).
pub fn link_header(prefix: &str, page_path: &str, query: Option<&str>) -> String {
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!(
        "<{prefix}{}{query}>; rel=\"alternate\"; type=\"text/markdown\"",
        markdown_path(page_path)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::bots::Classifier;

    #[derive(Deserialize)]
    struct Vector {
        path: String,
        user_agent: String,
        accept: String,
        serve: Serve,
        page_path: String,
        link: String,
    }

    /// The vectors the Worker is tested against too.
    #[test]
    fn the_shared_edge_vectors_hold() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/edge-vectors.json");
        let vectors: Vec<Vector> =
            serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
        assert!(vectors.len() >= 10);
        for v in vectors {
            let visitor = Classifier::shipped().classify(&v.user_agent);
            let d = decide(&v.path, &v.accept, &visitor);
            assert_eq!(d.serve, v.serve, "{} {} {}", v.path, v.user_agent, v.accept);
            assert_eq!(d.page_path, v.page_path, "{}", v.path);
            assert_eq!(link_header("", &d.page_path, None), v.link, "{}", v.path);
        }
    }

    #[test]
    fn markdown_paths_round_trip() {
        for page in ["/", "/a", "/blog/", "/blog/post", "/a.b"] {
            assert_eq!(
                page_of_markdown_path(&markdown_path(page)).as_deref(),
                Some(page)
            );
        }
        assert_eq!(page_of_markdown_path("/a.html"), None);
        assert_eq!(page_of_markdown_path(".md"), None);
    }

    #[test]
    fn accept_headers() {
        assert!(accepts_markdown("text/markdown"));
        assert!(accepts_markdown("text/html;q=0.9, Text/Markdown;q=1"));
        assert!(!accepts_markdown("text/markdown;q=0"));
        assert!(!accepts_markdown("text/html,*/*;q=0.8"));
        assert!(!accepts_markdown(""));
    }
}
