//! The local Markdown generator: main-content extraction (rs-trafilatura, the best-scoring
//! Rust extractor on public benchmarks) and HTML→Markdown (htmd), with links made absolute,
//! plus the page's metadata. Pure; CPU-bound (run it off the async threads).
//!
//! It is the one definition of a page's main content: the scraper runs it once per fetch and
//! its [`Generated::fingerprint`] is what change detection compares, so a page is `changed`
//! exactly when what would be served changed; the result travels to the Markdown stage
//! (`pages.content_changed`'s `extracted`), which does not extract again.
//!
//! When the extractor finds text but no structured content it falls back to that text, and
//! when it finds nothing, to the same main-content rule change detection uses
//! ([`super::html::main_text`]), so a page never yields empty Markdown without reason.

use scraper::{Html, Selector};
use serde::{Deserialize, Serialize};
use url::Url;

use super::content::ContentHash;
use super::html_bounds::TooComplex;

/// Metadata extracted alongside the Markdown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PageMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_time: Option<String>,
}

/// An estimate of how many tokens a language model reads in `markdown`: a quarter of its
/// characters, the usual rule of thumb for GPT-style tokenizers (an estimate for the
/// `x-markdown-tokens` header, not a tokenizer: shipping one per model family would cost
/// megabytes for a header agents use to budget their context).
pub fn estimate_tokens(markdown: &str) -> u32 {
    u32::try_from(markdown.chars().count().div_ceil(4)).unwrap_or(u32::MAX)
}

/// [`estimate_tokens`] when only the size in bytes is known (content stored before estimates
/// were kept): a quarter of the bytes.
pub fn estimate_tokens_of_size(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(4)).unwrap_or(u32::MAX)
}

/// Changes whenever the output for the same input can change: it is part of the Markdown
/// stage's deduplication key, so bumping it and reprocessing regenerates every page.
pub const GENERATOR_VERSION: &str = "local-6";

/// Largest HTML input handled, in bytes (larger pages are cut: extraction time and memory
/// grow with the input).
pub const MAX_INPUT_BYTES: usize = 8 * 1024 * 1024;

/// Markdown and metadata of a page.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    pub markdown: String,
    pub metadata: PageMetadata,
}

impl Generated {
    /// The fingerprint change detection compares: the Markdown and the metadata, what the
    /// page's served copy is made of.
    pub fn fingerprint(&self) -> ContentHash {
        let metadata = serde_json::to_vec(&self.metadata).unwrap_or_default();
        let mut bytes = Vec::with_capacity(self.markdown.len() + 1 + metadata.len());
        bytes.extend_from_slice(self.markdown.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&metadata);
        ContentHash::of(&bytes)
    }

    /// How much text the Markdown holds: its letters and digits (markup and whitespace do
    /// not count).
    pub fn main_text_chars(&self) -> usize {
        self.markdown
            .chars()
            .filter(|c| c.is_alphanumeric())
            .count()
    }
}

/// Tags whose content never belongs in the Markdown.
const SKIP: [&str; 8] = [
    "script", "style", "noscript", "iframe", "svg", "form", "button", "template",
];

/// Generates Markdown for the page at `page_url` from its HTML; refuses HTML beyond the
/// bounds of [`super::html_bounds`] before any tree is built.
pub fn generate(html: &str, page_url: &str) -> Result<Generated, TooComplex> {
    let html = truncate(html, MAX_INPUT_BYTES);
    let shape = super::html_bounds::check(html)?;
    let base = Url::parse(page_url).ok();
    let options = rs_trafilatura::Options {
        url: Some(page_url.to_owned()),
        include_links: true,
        include_images: true,
        include_tables: true,
        include_formatting: true,
        // Measured on the readability corpus (docs/EXTRACTION_QUALITY.md): the extractor's
        // precision mode keeps less boilerplate and, on small pages, skips the whole-document
        // rescue that repeated every text of the page.
        favor_precision: true,
        ..Default::default()
    };
    // The full extractor only within its budget (super::html_bounds): else the linear
    // main-content rule below.
    // What readers do not see is no content (hidden elements are left out first).
    let visible = super::html::visible_only(html);
    let extracted = shape
        .fits_extractor()
        .then(|| extract(&visible, &options))
        .flatten();
    let converter = htmd::HtmlToMarkdown::builder()
        .skip_tags(SKIP.to_vec())
        .build();
    let from_html = extracted
        .as_ref()
        .and_then(|r| {
            let taken = html_of(r)?;
            // The sections of a long document beside the one the extractor took.
            let taken = match super::html::continuing_siblings(&visible, &r.content_text) {
                Some((before, after)) => format!("{before}{taken}{after}"),
                None => taken.to_owned(),
            };
            // An index of stories: all of them, not the one list the extractor chose.
            Some(super::html::index_main(&visible, &taken).unwrap_or(taken))
        })
        .and_then(|h| {
            converter
                .convert(&super::html::without_link_blocks(&h))
                .ok()
        })
        .filter(|md| !md.trim().is_empty());
    let body = match from_html {
        Some(md) => md,
        None => {
            let text = extracted
                .as_ref()
                .map(|r| r.content_text.clone())
                .filter(|t| !t.trim().is_empty());
            paragraphs(&text.unwrap_or_else(|| super::html::main_text(html)))
        }
    };
    let mut markdown = absolutize(&body, base.as_ref());
    // Images of the main content that the extractor reported but left out of its HTML: the
    // hero image and images described in words (icons and decorations have no such alt).
    let described = |i: &&rs_trafilatura::ImageData| {
        i.is_hero
            || i.alt
                .as_deref()
                .is_some_and(|a| a.split_whitespace().count() >= 3)
    };
    for image in extracted
        .iter()
        .flat_map(|r| &r.images)
        .filter(described)
        .take(5)
    {
        let src = base
            .as_ref()
            .and_then(|b| b.join(&image.src).ok())
            .map_or(image.src.clone(), |u| u.to_string());
        if !image.src.is_empty() && !markdown.contains(&src) {
            let alt = image
                .alt
                .as_deref()
                .or(image.caption.as_deref())
                .unwrap_or("")
                .replace(['[', ']'], "");
            markdown.push_str(&format!("\n\n![{alt}]({src})"));
        }
    }
    let markdown = tidy(&markdown);
    let metadata = metadata(html, extracted.as_ref().map(|r| &r.metadata), base.as_ref());
    Ok(Generated { markdown, metadata })
}

/// The HTML of the extractor's answer, unless it has none.
fn html_of(r: &rs_trafilatura::ExtractResult) -> Option<&str> {
    r.content_html.as_deref().filter(|h| !h.trim().is_empty())
}

/// The extractor's answer, with HTML whenever it can give one. On article-like pages whose
/// main element it finds short, the extractor merges the text of the page's best-scoring
/// sections instead and answers with text only: no heading, link or list survives, and the
/// merge takes in whatever scores (a stream of recommended stories beside an article). Such
/// an answer is asked again with the profile that keeps to one element (the extractor's
/// `Category` profile: the article profile without merging); the sections beside that element
/// that continue it are added afterwards by [`super::html::continuing_siblings`], with their
/// HTML. The text-only answer stands when the second one has no HTML either.
fn extract(
    visible: &str,
    options: &rs_trafilatura::Options,
) -> Option<rs_trafilatura::ExtractResult> {
    let first = rs_trafilatura::extract_with_options(visible, options).ok()?;
    if html_of(&first).is_some() || first.content_text.trim().is_empty() {
        return Some(first);
    }
    let one_element = rs_trafilatura::Options {
        page_type: Some(rs_trafilatura::page_type::PageType::Category),
        ..options.clone()
    };
    match rs_trafilatura::extract_with_options(visible, &one_element) {
        Ok(second) if html_of(&second).is_some() => Some(rs_trafilatura::ExtractResult {
            // What the page is was the first answer's finding, not the profile asked for.
            metadata: first.metadata,
            ..second
        }),
        _ => Some(first),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Plain text as Markdown paragraphs (special characters escaped).
fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .flat_map(|block| block.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| rs_trafilatura::markdown::escape_markdown(l, false))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Makes the targets of `](...)` links and images absolute against `base`.
fn absolutize(md: &str, base: Option<&Url>) -> String {
    let Some(base) = base else {
        return md.to_owned();
    };
    let mut out = String::with_capacity(md.len() + 64);
    let mut rest = md;
    while let Some(at) = rest.find("](") {
        out.push_str(&rest[..at + 2]);
        rest = &rest[at + 2..];
        let end = rest.find([')', ' ', '\n']).unwrap_or(rest.len());
        let (target, tail) = rest.split_at(end);
        let target = target.trim_start_matches('<').trim_end_matches('>');
        match base.join(target) {
            Ok(abs) if !target.is_empty() && !target.starts_with("mailto:") => {
                out.push_str(abs.as_str())
            }
            _ => out.push_str(target),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// At most one blank line in a row, no trailing blank lines.
fn tidy(md: &str) -> String {
    let mut out = String::with_capacity(md.len());
    let mut blank = 0;
    for line in md.lines() {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        let line = line.trim_end_matches(|c: char| c.is_whitespace() && c != ' ');
        if line.trim_start().starts_with('|') {
            // Table rows come padded to column width: the padding carries nothing.
            out.push_str(&line.split_whitespace().collect::<Vec<_>>().join(" "));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    let trimmed = out.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}\n")
    }
}

/// The page's title. The extractor's (often the `<h1>`) unless `og:title` or `<title>`, cleaned
/// of the site's name, says more of the same thing: an `<h1>` "Getting started" under the title
/// "Getting started with ai-cache | Docs" becomes "Getting started with ai-cache".
fn choose_title(
    found: Option<String>,
    h1: Option<String>,
    fuller: [Option<String>; 2],
    site_name: Option<&str>,
) -> Option<String> {
    let fuller: Vec<String> = fuller
        .into_iter()
        .flatten()
        .map(|t| without_site_name(&t, site_name))
        .filter(|t| !t.is_empty())
        .collect();
    let short = found.clone().or(h1);
    if let Some(short) = &short {
        let lower = short.to_lowercase();
        if let Some(full) = fuller
            .iter()
            .find(|f| f.len() > short.len() && f.to_lowercase().contains(&lower))
        {
            return Some(full.clone());
        }
    }
    found.or_else(|| fuller.into_iter().next())
}

/// `Title | Site`, `Site - Title`... → `Title`: the part that is the site's name (`og:site_name`)
/// goes; without one, a last part shorter than the rest is taken for it.
fn without_site_name(title: &str, site_name: Option<&str>) -> String {
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    for sep in [" | ", " - ", " – ", " — ", " · ", " :: ", " » "] {
        let Some((head, tail)) = title.rsplit_once(sep) else {
            continue;
        };
        let is_site =
            |part: &str| site_name.is_some_and(|s| part.trim().eq_ignore_ascii_case(s.trim()));
        if is_site(tail) {
            return head.trim().to_owned();
        }
        if let Some((first, rest)) = title.split_once(sep)
            && is_site(first)
        {
            return rest.trim().to_owned();
        }
        if site_name.is_none() && tail.len() < head.len() {
            return head.trim().to_owned();
        }
    }
    title
}

fn metadata(
    html: &str,
    found: Option<&rs_trafilatura::Metadata>,
    base: Option<&Url>,
) -> PageMetadata {
    let doc = Html::parse_document(truncate(html, 512 * 1024));
    let attr = |css: &str, name: &str| -> Option<String> {
        let sel = Selector::parse(css).ok()?;
        doc.select(&sel)
            .find_map(|e| e.value().attr(name))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let text = |css: &str| -> Option<String> {
        let sel = Selector::parse(css).ok()?;
        doc.select(&sel)
            .next()
            .map(|e| {
                e.text()
                    .collect::<String>()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|v| !v.is_empty())
    };
    let canonical = attr("link[rel=canonical]", "href").and_then(|h| match base {
        Some(b) => b.join(&h).ok().map(|u| u.to_string()),
        None => Some(h),
    });
    PageMetadata {
        title: choose_title(
            found.and_then(|m| m.title.clone()),
            text("h1"),
            [attr("meta[property='og:title']", "content"), text("title")],
            attr("meta[property='og:site_name']", "content").as_deref(),
        ),
        description: found
            .and_then(|m| m.description.clone())
            .or_else(|| attr("meta[name=description]", "content"))
            .or_else(|| attr("meta[property='og:description']", "content")),
        language: attr("html", "lang").or_else(|| found.and_then(|m| m.language.clone())),
        canonical_url: canonical,
        published_time: attr("meta[property='article:published_time']", "content")
            .or_else(|| found.and_then(|m| m.date).map(|d| d.to_rfc3339())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_title_is_the_fuller_one_when_the_h1_is_only_part_of_it() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            choose_title(
                s("Getting started"),
                s("Getting started"),
                [None, s("Getting started with ai-cache | Docs")],
                None
            ),
            s("Getting started with ai-cache")
        );
        assert_eq!(
            choose_title(
                s("Pricing"),
                None,
                [s("Example Inc - Pricing plans for teams"), None],
                Some("Example Inc")
            ),
            s("Pricing plans for teams"),
            "the site's name first, then the title"
        );
        assert_eq!(
            choose_title(s("A short post"), None, [s("Blog | Example"), None], None),
            s("A short post"),
            "a title that does not contain the h1 says something else: the h1 stays"
        );
        assert_eq!(
            choose_title(None, None, [None, s("Only a title — Site")], Some("Site")),
            s("Only a title")
        );
        assert_eq!(choose_title(None, None, [None, None], None), None);
    }

    fn page(main: &str, footer: &str, script: &str) -> String {
        format!(
            r#"<html><head><title>T</title><script>var nonce="{script}";</script></head><body>
            <nav><a href="/">Home</a> <a href="/about">About us</a></nav><main><h1>Title</h1>
            <p>{main} It goes on for a while, as articles do, so that the extractor sees a
            real paragraph of prose rather than a fragment.</p>
            <p>A second paragraph of the same article, with more words in it than a menu has.</p></main>
            <footer>Generated at {footer}</footer></body></html>"#
        )
    }

    fn fingerprint(html: &str) -> ContentHash {
        generate(html, "https://example.com/a")
            .expect("generated")
            .fingerprint()
    }

    #[test]
    fn boilerplate_changes_do_not_change_the_fingerprint() {
        let a = fingerprint(&page("The article text.", "10:00:01", "abc"));
        let b = fingerprint(&page("The article text.", "23:59:59", "xyz"));
        assert_eq!(a, b);
    }

    #[test]
    fn a_change_to_the_main_text_or_the_title_changes_the_fingerprint() {
        let a = fingerprint(&page("The article text.", "1", "a"));
        assert_ne!(a, fingerprint(&page("The article text, edited.", "1", "a")));
        let retitled =
            page("The article text.", "1", "a").replace("<title>T</title>", "<title>U</title>");
        assert_ne!(a, fingerprint(&retitled));
    }

    const PAGE: &str = r#"<!doctype html><html lang="en-GB"><head><title>Fallback title</title>
        <meta name="description" content="What it says">
        <link rel="canonical" href="/articles/1">
        <meta property="article:published_time" content="2026-11-01T09:00:00Z"></head>
        <body><nav><a href="/">Home</a><a href="/about">About</a></nav>
        <main><article><h1>The article</h1>
        <p>First paragraph with <a href="/other">a relative link</a> and <strong>bold</strong> text,
        long enough to count as real content for an extractor that scores paragraphs.</p>
        <h2>A section</h2><ul><li>one item</li><li>two items</li></ul>
        <pre><code>let x = 1;</code></pre>
        <table><tr><th>Name</th><th>Value</th></tr><tr><td>a</td><td>1</td></tr></table>
        <blockquote><p>A quoted sentence that matters to the story.</p></blockquote>
        <p><img src="/img/photo.jpg" alt="A photo of the thing"></p>
        <p>A closing paragraph that also carries enough words to look like prose to the scorer.</p>
        </article></main><footer>© 2026 Example, rendered at 10:00</footer>
        <script>track()</script></body></html>"#;

    /// An article beside a long stream of recommended stories: the extractor's own answer is
    /// a text-only merge of both (checked first, so the test cannot pass by the extractor
    /// changing its mind); the Markdown is the article alone, with its structure.
    #[test]
    fn a_text_only_merge_gives_way_to_the_article_with_its_html() {
        let article: String = (0..8)
            .map(|i| format!("<p>The committee met on Tuesday and paragraph {i} of the report explains, in plain and careful words, what the town decided about its old bridge, why it took so long, and who will pay.</p>"))
            .collect();
        let stream: String = (0..14)
            .map(|i| format!("<li class=\"story\"><h3><a href=\"/s/{i}\">Story number {i} that readers also liked</a></h3><p>A summary of story {i}: it is about something else entirely, told at some length so that it reads like a paragraph, with commas, clauses, and a closing thought.</p><p>Good Morning America</p></li>"))
            .collect();
        let html = format!(
            "<html><head><title>The bridge</title></head><body><div id=\"page\"><article>\
             <h1>The bridge</h1>{article}</article><section id=\"stream\"><h2>Recommended for You</h2>\
             <ul>{stream}</ul></section></div></body></html>"
        );
        let options = rs_trafilatura::Options {
            favor_precision: true,
            include_links: true,
            ..Default::default()
        };
        let merged = rs_trafilatura::extract_with_options(&html, &options).expect("extracted");
        assert!(merged.content_html.is_none() && merged.content_text.contains("Story number 3"));

        let md = generate(&html, "https://example.com/bridge")
            .expect("generated")
            .markdown;
        assert!(md.contains("paragraph 7 of the report"), "{md}");
        assert!(!md.contains("Story number"), "{md}");
        assert!(
            md.contains("\n\nThe committee met"),
            "paragraphs kept apart: {md}"
        );
    }

    #[test]
    fn structure_is_kept_and_boilerplate_left_out() {
        let g = generate(PAGE, "https://example.com/articles/1?utm=x").expect("within bounds");
        let md = &g.markdown;
        assert!(md.contains("# The article"), "{md}");
        assert!(md.contains("## A section"), "{md}");
        assert!(md.contains("one item") && md.contains("two items"), "{md}");
        assert!(md.contains("let x = 1;"), "{md}");
        assert!(md.contains("**bold**"), "{md}");
        assert!(md.contains("> A quoted sentence"), "{md}");
        assert!(
            !md.contains("track()") && !md.contains("rendered at"),
            "{md}"
        );
        assert!(!md.contains("About"), "navigation is left out: {md}");
    }

    #[test]
    fn links_and_images_are_absolute() {
        let md = generate(PAGE, "https://example.com/articles/1")
            .expect("within bounds")
            .markdown;
        assert!(md.contains("(https://example.com/other)"), "{md}");
        assert!(md.contains("https://example.com/img/photo.jpg"), "{md}");
        assert!(
            md.contains("A photo of the thing"),
            "alt text is kept: {md}"
        );
    }

    #[test]
    fn metadata_is_extracted() {
        let m = generate(PAGE, "https://example.com/articles/1")
            .expect("within bounds")
            .metadata;
        assert_eq!(m.description.as_deref(), Some("What it says"));
        assert_eq!(m.language.as_deref(), Some("en-GB"));
        assert_eq!(
            m.canonical_url.as_deref(),
            Some("https://example.com/articles/1")
        );
        assert_eq!(m.published_time.as_deref(), Some("2026-11-01T09:00:00Z"));
        assert!(m.title.is_some());
    }

    #[test]
    fn empty_or_odd_input_gives_markdown_without_panicking() {
        assert_eq!(
            generate("", "https://example.com/")
                .expect("within bounds")
                .markdown,
            ""
        );
        let g = generate("<p>only text</p>", "not a url").expect("within bounds");
        assert!(g.markdown.contains("only text"), "{}", g.markdown);
    }

    #[test]
    fn relative_targets_are_joined_and_others_kept() {
        let base = Url::parse("https://a.example/x/y").expect("url");
        assert_eq!(
            absolutize("[a](../b) [m](mailto:x@y.z) ![i](/i.png)", Some(&base)),
            "[a](https://a.example/b) [m](mailto:x@y.z) ![i](https://a.example/i.png)"
        );
    }
}
