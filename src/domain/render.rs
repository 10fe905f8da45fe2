//! The renderer: minimal, valid, accessible HTML5 from a page's Markdown. Pure.
//!
//! The page has `lang`, a title, a meta description, a canonical link to the original URL and
//! `<link rel="alternate" type="text/markdown">` to the Markdown variant, and nothing else:
//! no scripts, no styles, no external assets. Raw HTML inside the Markdown is shown as text,
//! never passed through, and `javascript:` links are neutralized.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag, html};

use super::markdown::PageMetadata;

/// Changes whenever the output for the same input can change (part of the stage's key).
pub const RENDERER_VERSION: &str = "2";

/// Escapes text for an HTML attribute or text node.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn safe_url(url: CowStr<'_>) -> CowStr<'_> {
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("javascript:")
        || lower.starts_with("vbscript:")
        || lower.starts_with("data:text/html")
    {
        CowStr::Borrowed("#")
    } else {
        url
    }
}

/// The Markdown as HTML: raw HTML in it shown as text (never executed), and links and images
/// only to safe URLs.
fn body_html(markdown: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_FOOTNOTES;
    let events = Parser::new_ext(markdown, options).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Image {
            link_type,
            dest_url: safe_url(dest_url),
            title,
            id,
        }),
        other => other,
    });
    let mut body = String::with_capacity(markdown.len() * 2);
    html::push_html(&mut body, events);
    body
}

/// The HTML page for `markdown` of the page at `page_url`, served where `markdown_url` serves
/// its Markdown.
pub fn render(
    markdown: &str,
    metadata: &PageMetadata,
    page_url: &str,
    markdown_url: &str,
) -> String {
    let body = body_html(markdown);
    let title = metadata
        .title
        .clone()
        .unwrap_or_else(|| page_url.to_owned());
    let has_h1 = body.contains("<h1");
    let lang = metadata
        .language
        .as_deref()
        .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or("und");
    let mut page = String::with_capacity(body.len() + 1024);
    page.push_str("<!DOCTYPE html>\n");
    page.push_str(&format!(
        "<html lang=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n",
        escape(lang)
    ));
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    page.push_str(&format!("<title>{}</title>\n", escape(&title)));
    if let Some(d) = metadata
        .description
        .as_deref()
        .filter(|d| !d.trim().is_empty())
    {
        page.push_str(&format!(
            "<meta name=\"description\" content=\"{}\">\n",
            escape(d)
        ));
    }
    page.push_str(&format!(
        "<link rel=\"canonical\" href=\"{}\">\n",
        escape(page_url)
    ));
    page.push_str(&format!(
        "<link rel=\"alternate\" type=\"text/markdown\" href=\"{}\">\n",
        escape(markdown_url)
    ));
    page.push_str("</head>\n<body>\n<main>\n");
    if !has_h1 {
        page.push_str(&format!("<h1>{}</h1>\n", escape(&title)));
    }
    page.push_str(&body);
    page.push_str("</main>\n</body>\n</html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::quality::{html_text, markdown_text, token_f1};
    use scraper::{Html, Selector};

    fn meta() -> PageMetadata {
        PageMetadata {
            title: Some("A \"quoted\" <title>".into()),
            description: Some("What & why".into()),
            language: Some("de".into()),
            canonical_url: None,
            published_time: None,
        }
    }

    fn attr(doc: &Html, css: &str, name: &str) -> Option<String> {
        let sel = Selector::parse(css).expect("selector");
        doc.select(&sel)
            .next()
            .and_then(|e| e.value().attr(name))
            .map(str::to_owned)
    }

    #[test]
    fn the_page_has_lang_title_description_canonical_and_markdown_alternate() {
        let html = render(
            "# Heading\n\nSome *text*.",
            &meta(),
            "https://a.example/p?x=1&y=2",
            "https://a.example/p.md",
        );
        let doc = Html::parse_document(&html);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(attr(&doc, "html", "lang").as_deref(), Some("de"));
        let title = doc
            .select(&Selector::parse("title").expect("sel"))
            .next()
            .map(|t| t.text().collect::<String>());
        assert_eq!(title.as_deref(), Some("A \"quoted\" <title>"));
        assert_eq!(
            attr(&doc, "meta[name=description]", "content").as_deref(),
            Some("What & why")
        );
        assert_eq!(
            attr(&doc, "link[rel=canonical]", "href").as_deref(),
            Some("https://a.example/p?x=1&y=2")
        );
        assert_eq!(
            attr(&doc, "link[rel=alternate][type='text/markdown']", "href").as_deref(),
            Some("https://a.example/p.md")
        );
        assert_eq!(
            doc.select(&Selector::parse("main h1").expect("sel"))
                .count(),
            1,
            "one h1: the Markdown's"
        );
    }

    #[test]
    fn no_script_and_no_javascript_links_whatever_the_markdown_says() {
        let md = "Hi <script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n[click](javascript:alert(3)) ![i](JavaScript:alert(4))";
        let html = render(
            md,
            &PageMetadata::default(),
            "https://a.example/",
            "https://a.example/.md",
        );
        let doc = Html::parse_document(&html);
        assert_eq!(
            doc.select(&Selector::parse("script").expect("sel")).count(),
            0
        );
        assert!(
            !html.contains("onerror=alert") || html.contains("&lt;img"),
            "raw HTML is text: {html}"
        );
        assert!(
            !html.to_ascii_lowercase().contains("href=\"javascript:"),
            "{html}"
        );
        assert!(
            !html.to_ascii_lowercase().contains("src=\"javascript:"),
            "{html}"
        );
        assert_eq!(
            doc.select(&Selector::parse("link[rel=stylesheet], style, iframe").expect("sel"))
                .count(),
            0
        );
    }

    #[test]
    fn the_text_survives_the_round_trip() {
        let md = "# Title\n\nA paragraph with [a link](https://a.example/x).\n\n* one\n* two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\ncode here\n```\n\n> quoted";
        let html = render(
            md,
            &PageMetadata {
                title: Some("Title".into()),
                ..PageMetadata::default()
            },
            "https://a.example/",
            "https://a.example/.md",
        );
        let main = Html::parse_document(&html);
        let body_text = main
            .select(&Selector::parse("main").expect("sel"))
            .next()
            .map(|m| m.text().collect::<Vec<_>>().join(" "))
            .unwrap_or_default();
        let f1 = token_f1(&markdown_text(md), &body_text);
        assert!(f1 > 0.99, "{f1}: {body_text}");
        assert!(token_f1(&markdown_text(md), &html_text(&html)) > 0.95);
    }

    #[test]
    fn a_missing_title_or_language_still_gives_a_valid_page() {
        let html = render(
            "text",
            &PageMetadata::default(),
            "https://a.example/x",
            "https://a.example/x.md",
        );
        assert!(
            html.contains("<html lang=\"und\">")
                && html.contains("<title>https://a.example/x</title>")
        );
        assert!(!html.contains("name=\"description\""));
    }
}
