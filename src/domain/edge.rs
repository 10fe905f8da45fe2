//! What the edge answers a request with, defined once (the Cloudflare Worker follows the same
//! rules and is tested against the same vectors, `tests/fixtures/edge-vectors.json`). Pure.
//!
//! The variants of a page: its Markdown variant's path (`/post.md` for `/post`, `/index.md`
//! for `/`, `/blog/index.md` for `/blog/`), `Accept` negotiation, and the headers every cached
//! answer carries. Who gets which variant is the client's policy ([`super::policy`]); under the
//! default policy (the vectors below):
//! - the Markdown variant's path, or an `Accept` naming `text/markdown`, gets the Markdown;
//! - a known AI agent gets the minimal HTML (classic AI crawlers ask for HTML);
//! - everyone else passes: the Worker hands the request to the origin untouched; the built-in
//!   edge route redirects to the origin page (or answers 404 when reached by `Host`).
//!
//! Every answer varies by `Accept` and `User-Agent`, and links to the Markdown variant.

use serde::{Deserialize, Serialize};

use super::url::NormalizedUrl;

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

/// The `Link` header pointing at the Markdown variant of `page_path` (with `prefix` before
/// it, e.g. `/edge/example.com` on the built-in route).
pub fn link_header(prefix: &str, page_path: &str, query: Option<&str>) -> String {
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!(
        "<{prefix}{}{query}>; rel=\"alternate\"; type=\"text/markdown\"",
        markdown_path(page_path)
    )
}

/// The absolute URL of `page`'s Markdown variant (its query kept): what the rendered HTML's
/// `<link rel="alternate" type="text/markdown">` names, the same path as the `Link` header.
pub fn markdown_url(page: &NormalizedUrl) -> String {
    let mut url = page.as_url().clone();
    url.set_path(&markdown_path(url.path()));
    url.to_string()
}

/// The `Link` value naming `page_url` as the canonical page (sent with its Markdown copy).
pub fn canonical_link(page_url: &str) -> String {
    format!("<{page_url}>; rel=\"canonical\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::bots::Classifier;
    use crate::domain::policy::{Answer, EdgePolicy, Request, decide};
    use crate::domain::visit::Verification;

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
            let request = Request {
                path: &v.path,
                accept: &v.accept,
                visitor: &visitor,
                verification: Verification::Claimed,
                exact_price: None,
                max_price: None,
            };
            let d = decide(&EdgePolicy::default(), &request);
            let serve = match d.answer {
                Answer::Serve { serve, .. } => serve,
                _ => Serve::Pass,
            };
            assert_eq!(serve, v.serve, "{} {} {}", v.path, v.user_agent, v.accept);
            assert_eq!(d.page_path, v.page_path, "{}", v.path);
            assert_eq!(link_header("", &d.page_path, None), v.link, "{}", v.path);
        }
    }

    #[test]
    fn the_markdown_url_is_the_link_headers_path_on_the_page_origin() {
        let url = |u: &str| markdown_url(&NormalizedUrl::parse(u).expect("url"));
        assert_eq!(url("https://site.test/"), "https://site.test/index.md");
        assert_eq!(
            url("http://site.test:8080/blog/"),
            "http://site.test:8080/blog/index.md"
        );
        assert_eq!(
            url("https://site.test/post?page=2"),
            "https://site.test/post.md?page=2"
        );
        for page in ["/", "/blog/", "/post"] {
            let absolute = url(&format!("https://site.test{page}"));
            let header = link_header("", page, None);
            let path = absolute.trim_start_matches("https://site.test");
            assert!(
                header.starts_with(&format!("<{path}>")),
                "{header} vs {absolute}"
            );
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
