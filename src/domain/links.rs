//! The links of a page a crawl follows: `<a href>` resolved against the page (or its
//! `<base href>`), http and https only, `rel="nofollow"` left out, each once, in document
//! order, at most a given number. Pure; the caller has bounded the document already (the
//! page passed `html_bounds` when its Markdown was made).

use scraper::{Html, Selector};
use url::Url;

/// The page's followable links, absolute, at most `max`.
pub fn followable(html: &str, page: &Url, max: usize) -> Vec<Url> {
    let doc = Html::parse_document(html);
    let select = |s: &str| Selector::parse(s).expect("a valid selector");
    let base = doc
        .select(&select("base[href]"))
        .next()
        .and_then(|b| b.value().attr("href"))
        .and_then(|href| page.join(href.trim()).ok())
        .unwrap_or_else(|| page.clone());
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for a in doc.select(&select("a[href]")) {
        if out.len() >= max {
            break;
        }
        let nofollow = a.value().attr("rel").is_some_and(|rel| {
            rel.split_ascii_whitespace()
                .any(|r| r.eq_ignore_ascii_case("nofollow"))
        });
        let Some(href) = a.value().attr("href").map(str::trim) else {
            continue;
        };
        if nofollow || href.is_empty() || href.starts_with('#') {
            continue;
        }
        let Ok(mut url) = base.join(href) else {
            continue;
        };
        if !matches!(url.scheme(), "http" | "https") {
            continue;
        }
        url.set_fragment(None);
        if seen.insert(url.to_string()) {
            out.push(url);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_absolute_followable_and_once_each() {
        let page = Url::parse("https://a.example/blog/post").expect("url");
        let html = r##"<html><body>
            <a href="/about">About</a> <a href="next">Next</a> <a href="#top">Top</a>
            <a href="https://a.example/about#team">Team</a> <a href="mailto:x@a.example">Mail</a>
            <a href="javascript:void(0)">JS</a> <a href="/login" rel="nofollow">Login</a>
            <a href=" https://other.example/ ">Other</a> <a>none</a></body></html>"##;
        let got: Vec<String> = followable(html, &page, 100)
            .iter()
            .map(Url::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "https://a.example/about",
                "https://a.example/blog/next",
                "https://other.example/"
            ]
        );
        assert_eq!(followable(html, &page, 1).len(), 1, "at most max");
    }

    #[test]
    fn a_base_element_changes_what_relative_links_mean() {
        let page = Url::parse("https://a.example/x/y").expect("url");
        let html = r#"<head><base href="https://a.example/docs/"></head><a href="intro">I</a>"#;
        assert_eq!(
            followable(html, &page, 10)[0].as_str(),
            "https://a.example/docs/intro"
        );
    }
}
