//! A site's `/llms.txt` and `/llms-full.txt` (the llmstxt.org format), made from its live
//! pages. Pure and deterministic: the same pages give the same bytes, so an unchanged site
//! uploads nothing.
//!
//! `llms.txt`: an H1 with the site's name, a blockquote summary (the home page's description,
//! else a sentence naming the domain), then one H2 section per first path segment (`/blog/...`
//! is "Blog"; pages at the root are "Pages"), each a list of `- [title](markdown URL):
//! description`, shortest paths first. Each section lists at most [`SECTION_LINKS`] pages;
//! the rest of every section goes to a final `## Optional` section (the file format's name for
//! what an agent may skip), itself capped at [`OPTIONAL_LINKS`].
//!
//! `llms-full.txt`: the H1 and summary, then every live page's Markdown in the same order,
//! each under a `---` rule with its source URL, until [`FULL_MAX_BYTES`]; what does not fit is
//! named at the end.

use super::edge::markdown_url;
use super::url::NormalizedUrl;

/// The paths of the two files.
pub const LLMS_TXT: &str = "/llms.txt";
pub const LLMS_FULL_TXT: &str = "/llms-full.txt";
/// Most links of one section before the rest goes to `## Optional`.
pub const SECTION_LINKS: usize = 50;
/// Most links of `## Optional`.
pub const OPTIONAL_LINKS: usize = 1_000;
/// Largest `llms-full.txt`.
pub const FULL_MAX_BYTES: usize = 5 * 1024 * 1024;

/// A live page as the files list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlmsPage {
    pub url: NormalizedUrl,
    pub title: Option<String>,
    pub description: Option<String>,
}

impl LlmsPage {
    fn section(&self) -> String {
        let path = self.url.as_url().path();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            [first, _, ..] => title_case(first),
            _ => "Pages".to_owned(),
        }
    }

    /// Shortest paths first, then alphabetical: stable whatever order the pages came in.
    fn order_key(&self) -> (usize, String) {
        (self.url.as_url().path().len(), self.url.to_string())
    }

    fn title(&self) -> String {
        let title = self
            .title
            .as_deref()
            .map(one_line)
            .filter(|t| !t.is_empty());
        title.unwrap_or_else(|| self.url.as_url().path().to_owned())
    }
}

/// `my-blog_posts` → `My blog posts`.
fn title_case(segment: &str) -> String {
    let words = segment.replace(['-', '_'], " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Text on one line, Markdown link syntax neutralized.
fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('[', "(")
        .replace(']', ")")
}

fn header(site_name: &str, domain: &str, pages: &[LlmsPage]) -> String {
    let summary = pages
        .iter()
        .find(|p| p.url.as_url().path() == "/")
        .and_then(|p| p.description.as_deref())
        .map(one_line)
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| {
            format!("The pages of {domain}, as clean Markdown for language models and agents.")
        });
    format!("# {}\n\n> {summary}\n", one_line(site_name))
}

/// Pages sorted into their sections (sections alphabetical, "Pages" first).
fn sections(pages: &[LlmsPage]) -> Vec<(String, Vec<&LlmsPage>)> {
    let mut by_section: std::collections::BTreeMap<(bool, String), Vec<&LlmsPage>> =
        std::collections::BTreeMap::new();
    for page in pages {
        let name = page.section();
        by_section
            .entry((name != "Pages", name))
            .or_default()
            .push(page);
    }
    by_section
        .into_iter()
        .map(|((_, name), mut pages)| {
            pages.sort_by_key(|p| p.order_key());
            (name, pages)
        })
        .collect()
}

/// `/llms.txt` of the site.
pub fn llms_txt(site_name: &str, domain: &str, pages: &[LlmsPage]) -> String {
    let mut out = header(site_name, domain, pages);
    let mut optional = Vec::new();
    let link = |p: &LlmsPage| {
        let description = p
            .description
            .as_deref()
            .map(one_line)
            .filter(|d| !d.is_empty())
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        format!("- [{}]({}){description}\n", p.title(), markdown_url(&p.url))
    };
    for (name, pages) in sections(pages) {
        out.push_str(&format!("\n## {name}\n\n"));
        for page in pages.iter().take(SECTION_LINKS) {
            out.push_str(&link(page));
        }
        optional.extend(pages.into_iter().skip(SECTION_LINKS));
    }
    if !optional.is_empty() {
        out.push_str("\n## Optional\n\n");
        for page in optional.iter().take(OPTIONAL_LINKS) {
            out.push_str(&link(page));
        }
    }
    out
}

/// `/llms-full.txt` of the site: `markdown` gives a page's Markdown (none: left out).
pub fn llms_full_txt(
    site_name: &str,
    domain: &str,
    pages: &[LlmsPage],
    mut markdown: impl FnMut(&LlmsPage) -> Option<String>,
) -> String {
    let mut out = header(site_name, domain, pages);
    let mut left_out = 0usize;
    for (_, section) in sections(pages) {
        for page in section {
            let Some(md) = markdown(page) else { continue };
            let part = format!("\n---\n\nSource: {}\n\n{}\n", page.url, md.trim_end());
            if out.len() + part.len() > FULL_MAX_BYTES {
                left_out += 1;
                continue;
            }
            out.push_str(&part);
        }
    }
    if left_out > 0 {
        out.push_str(&format!(
            "\n---\n\n{left_out} more pages did not fit; their Markdown is listed in {LLMS_TXT}.\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(url: &str, title: Option<&str>, description: Option<&str>) -> LlmsPage {
        LlmsPage {
            url: NormalizedUrl::parse(url).expect("url"),
            title: title.map(str::to_owned),
            description: description.map(str::to_owned),
        }
    }

    fn site() -> Vec<LlmsPage> {
        vec![
            page("https://ex.test/blog/second", Some("Second post"), None),
            page(
                "https://ex.test/",
                Some("Home"),
                Some("Example makes\n tools for [builders]."),
            ),
            page(
                "https://ex.test/about",
                Some("About us"),
                Some("Who we are"),
            ),
            page("https://ex.test/blog/", Some("Blog"), None),
            page("https://ex.test/blog/first", None, Some("The first one")),
            page(
                "https://ex.test/docs/api-reference/auth",
                Some("Auth"),
                None,
            ),
        ]
    }

    #[test]
    fn llms_txt_follows_the_format_in_a_stable_order() {
        let text = llms_txt("Example Inc", "ex.test", &site());
        assert_eq!(
            text,
            "# Example Inc\n\n\
             > Example makes tools for (builders).\n\n\
             ## Pages\n\n\
             - [Home](https://ex.test/index.md): Example makes tools for (builders).\n\
             - [About us](https://ex.test/about.md): Who we are\n\
             - [Blog](https://ex.test/blog/index.md)\n\n\
             ## Blog\n\n\
             - [/blog/first](https://ex.test/blog/first.md): The first one\n\
             - [Second post](https://ex.test/blog/second.md)\n\n\
             ## Docs\n\n\
             - [Auth](https://ex.test/docs/api-reference/auth.md)\n"
        );
        let mut shuffled = site();
        shuffled.reverse();
        assert_eq!(llms_txt("Example Inc", "ex.test", &shuffled), text);
    }

    #[test]
    fn the_long_tail_goes_to_optional_and_a_site_without_a_home_description_gets_a_summary() {
        let pages: Vec<LlmsPage> = (0..SECTION_LINKS + 3)
            .map(|i| page(&format!("https://ex.test/blog/p{i:03}"), None, None))
            .collect();
        let text = llms_txt("Ex", "ex.test", &pages);
        assert!(text.contains("> The pages of ex.test, as clean Markdown"));
        let (main, optional) = text.split_once("## Optional").expect("optional section");
        assert_eq!(main.matches("- [").count(), SECTION_LINKS);
        assert_eq!(optional.matches("- [").count(), 3);
        assert!(optional.contains("p052.md"));
    }

    #[test]
    fn llms_full_txt_holds_each_pages_markdown_within_its_cap() {
        let text = llms_full_txt("Ex", "ex.test", &site(), |p| {
            (p.url.as_url().path() != "/about").then(|| format!("# {}\n", p.title()))
        });
        assert!(text.starts_with("# Ex\n\n> Example makes"));
        assert_eq!(text.matches("\n---\n\nSource: ").count(), 5, "{text}");
        assert!(!text.contains("Source: https://ex.test/about"));
        let home = text.find("Source: https://ex.test/\n").expect("home");
        let blog = text
            .find("Source: https://ex.test/blog/first")
            .expect("post");
        assert!(home < blog);

        let big = "x".repeat(FULL_MAX_BYTES / 2);
        let text = llms_full_txt("Ex", "ex.test", &site(), |_| Some(big.clone()));
        assert!(text.len() <= FULL_MAX_BYTES + 200);
        assert!(
            text.ends_with("their Markdown is listed in /llms.txt.\n"),
            "{}",
            &text[text.len() - 200..]
        );
    }
}
