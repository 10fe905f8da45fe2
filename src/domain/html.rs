//! Reading fetched HTML: decoding its charset, and the fingerprint of its main content that
//! change detection compares. Pure.
//!
//! The fingerprint is the SHA-256 of the main content's text with whitespace collapsed. The
//! main content is `<main>`, else `[role=main]`, else the only `<article>`, else `<body>`; from
//! it scripts, styles, navigation, headers, footers, asides, forms and elements whose class or
//! id names boilerplate (cookie banners, ads, sharing, related links, comments...) are left
//! out. So a timestamp in a footer, a nonce in a script or a rotating ad slot never counts as
//! a change, while any edit to the text people read does.

use std::sync::LazyLock;

use ego_tree::NodeRef;
use scraper::{ElementRef, Html, Node, Selector};

/// Decodes an HTML body: the charset from `Content-Type`, else a BOM, else a `<meta>`
/// declaration in the first 1024 bytes, else UTF-8. Returns the text and the encoding's name;
/// undecodable bytes become U+FFFD.
pub fn decode(body: &[u8], content_type: Option<&str>) -> (String, &'static str) {
    let declared = content_type
        .and_then(charset_param)
        .or_else(|| meta_charset(&body[..body.len().min(1024)]));
    // Bytes that are valid UTF-8 and not plain ASCII are UTF-8 whatever is declared: legacy
    // encodings almost never make valid multi-byte UTF-8 by chance, and pages re-encoded to
    // UTF-8 (by a CDN, a CMS, an archive) often keep their old declaration.
    let self_evident = !body.is_ascii() && std::str::from_utf8(body).is_ok();
    let encoding = encoding_rs::Encoding::for_bom(body)
        .map(|(e, _)| e)
        .or_else(|| self_evident.then_some(encoding_rs::UTF_8))
        .or_else(|| declared.and_then(|label| encoding_rs::Encoding::for_label(label.as_bytes())))
        .unwrap_or(encoding_rs::UTF_8);
    let (text, used, _) = encoding.decode(body);
    (text.into_owned(), used.name())
}

fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches(['"', '\'']).to_owned())
    })
}

/// `<meta charset="x">` or `<meta http-equiv="Content-Type" content="...; charset=x">`.
fn meta_charset(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let at = text.find("charset=")?;
    let rest = text[at + "charset=".len()..].trim_start_matches(['"', '\'', ' ']);
    let label: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        .collect();
    (!label.is_empty()).then_some(label)
}

/// Whether a `Content-Type` is HTML (or absent: many servers omit it for HTML).
pub fn is_html(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return true };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(mime.as_str(), "text/html" | "application/xhtml+xml" | "")
}

const SKIPPED_TAGS: [&str; 16] = [
    "script", "style", "noscript", "template", "iframe", "svg", "canvas", "nav", "header",
    "footer", "aside", "form", "button", "select", "dialog", "object",
];

/// Words in a class or id that mark boilerplate.
const BOILERPLATE: [&str; 18] = [
    "cookie",
    "consent",
    "banner",
    "advert",
    "ads",
    "ad-",
    "sponsor",
    "sidebar",
    "related",
    "share",
    "social",
    "comment",
    "newsletter",
    "promo",
    "popup",
    "modal",
    "breadcrumb",
    "subscribe",
];

fn is_boilerplate(el: &scraper::node::Element) -> bool {
    if SKIPPED_TAGS.contains(&el.name())
        || el.attr("hidden").is_some()
        || el.attr("aria-hidden") == Some("true")
    {
        return true;
    }
    let names = el.classes().chain(el.id()).map(str::to_ascii_lowercase);
    names.into_iter().any(|n| {
        BOILERPLATE.iter().any(|b| {
            n == *b
                || n.starts_with(&format!("{b}-"))
                || n.starts_with(&format!("{b}_"))
                || n.ends_with(&format!("-{b}"))
                || (b.ends_with('-') && n.starts_with(b))
        })
    })
}

/// The element holding the page's main content.
fn main_element(doc: &Html) -> Option<ElementRef<'_>> {
    let pick = |css: &str| {
        Selector::parse(css).ok().and_then(|s| {
            let mut found = doc.select(&s);
            let first = found.next()?;
            (css != "article" || found.next().is_none()).then_some(first)
        })
    };
    pick("main")
        .or_else(|| pick("[role=main]"))
        .or_else(|| pick("article"))
        .or_else(|| pick("body"))
}

/// Whether an element is hidden from readers: the `hidden` attribute, `aria-hidden="true"`,
/// or an inline style with `display: none` or `visibility: hidden` (the rule Readability
/// applies before it scores anything).
fn is_hidden(el: &scraper::node::Element) -> bool {
    if el.attr("hidden").is_some() || el.attr("aria-hidden") == Some("true") {
        return true;
    }
    el.attr("style").is_some_and(|style| {
        let style: String = style
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        style.contains("display:none") || style.contains("visibility:hidden")
    })
}

/// The document without the elements hidden from readers ([`is_hidden`]); the document
/// itself when it has none (a quick look for their markers first: most pages are not parsed
/// twice). Call it on a document [`super::html_bounds::check`] let through.
pub fn visible_only(html: &str) -> std::borrow::Cow<'_, str> {
    let lower_has = |needle: &str| {
        html.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    if !(lower_has("hidden") || lower_has("none")) {
        return std::borrow::Cow::Borrowed(html);
    }
    let mut doc = Html::parse_document(html);
    let hidden: Vec<ego_tree::NodeId> = doc
        .tree
        .nodes()
        // `<noscript>` too: parsed as text (scripting on), it would come back escaped as
        // text when the document is written out again, and it is never content.
        .filter(
            |n| matches!(n.value(), Node::Element(el) if is_hidden(el) || el.name() == "noscript"),
        )
        .map(|n| n.id())
        .collect();
    if hidden.is_empty() {
        return std::borrow::Cow::Borrowed(html);
    }
    for id in hidden {
        if let Some(mut node) = doc.tree.get_mut(id) {
            node.detach();
        }
    }
    std::borrow::Cow::Owned(doc.html())
}

/// Blocks of a fragment that are lists of links rather than text (related stories, tag
/// clouds, link farms an extractor kept beside an article): at least [`LINK_BLOCK_MIN_LINKS`]
/// links, and at least [`LINK_BLOCK_SHARE`] of their text inside them. Readability drops such
/// blocks the same way (its link density); the fragment is kept whole when they would be most
/// of it (a page that is an index of links is what it is).
const LINK_BLOCK_MIN_LINKS: usize = 3;
const LINK_BLOCK_SHARE: f64 = 0.8;

/// `fragment` without its blocks of links (see [`LINK_BLOCK_SHARE`]); itself when it has none.
pub fn without_link_blocks(fragment: &str) -> std::borrow::Cow<'_, str> {
    let mut doc = Html::parse_fragment(fragment);
    // Text, text inside links and links under each node, children before parents.
    let mut sums: std::collections::HashMap<ego_tree::NodeId, (usize, usize, usize)> =
        std::collections::HashMap::new();
    let order: Vec<NodeRef<'_, Node>> = doc.tree.root().descendants().collect();
    for node in order.iter().rev() {
        let mut sum = match node.value() {
            Node::Text(t) => (t.trim().chars().count(), 0, 0),
            _ => (0, 0, 0),
        };
        for child in node.children() {
            let (text, linked, links) = sums.get(&child.id()).copied().unwrap_or_default();
            sum = (sum.0 + text, sum.1 + linked, sum.2 + links);
        }
        if let Node::Element(el) = node.value()
            && el.name() == "a"
        {
            sum = (sum.0, sum.0, sum.2 + 1);
        }
        sums.insert(node.id(), sum);
    }
    let total = sums.get(&doc.tree.root().id()).map_or(0, |s| s.0);
    let blocks: Vec<ego_tree::NodeId> = order
        .iter()
        .filter(|n| {
            matches!(n.value(), Node::Element(el)
                if matches!(el.name(), "ul" | "ol" | "dl" | "div" | "section" | "aside" | "nav" | "table"))
        })
        .filter(|n| {
            let (text, linked, links) = sums.get(&n.id()).copied().unwrap_or_default();
            links >= LINK_BLOCK_MIN_LINKS
                && text > 0
                && linked as f64 >= LINK_BLOCK_SHARE * text as f64
        })
        .map(|n| n.id())
        .collect();
    let dropped: usize = blocks
        .iter()
        .filter(|id| {
            // Outermost blocks only: an inner one is counted with its outer one.
            !doc.tree
                .get(**id)
                .is_some_and(|n| n.ancestors().any(|a| blocks.contains(&a.id())))
        })
        .map(|id| sums.get(id).map_or(0, |s| s.0))
        .sum();
    if blocks.is_empty() || dropped * 2 > total {
        return std::borrow::Cow::Borrowed(fragment);
    }
    for id in blocks {
        if let Some(mut node) = doc.tree.get_mut(id) {
            node.detach();
        }
    }
    std::borrow::Cow::Owned(doc.root_element().inner_html())
}

/// Least text a sibling of the taken element needs to be added: a sentence (the steps of a
/// how-to, each a line or two under its own heading, are such siblings).
const SIBLING_MIN_CHARS: usize = 60;

/// The parts of the document that continue what an extractor took (`extracted_text`): the
/// siblings of the element it took that are of the same kind (same tag and class, as the
/// sections of a long document are), each with a sentence of text of its own
/// ([`SIBLING_MIN_CHARS`]) and few links. Readability adds
/// such siblings of its top candidate the same way. Returns the HTML of those before and of
/// those after it, in document order; none when the element cannot be found.
///
/// Linear in the document: one pass writes its text, words separated by single spaces, and
/// notes where each element's text starts and ends in it; the taken element is the deepest
/// whose text holds the last place the first paragraph taken starts (a summary of it may come
/// first), grown to about the size of what was taken.
pub fn continuing_siblings(document: &str, extracted_text: &str) -> Option<(String, String)> {
    let wanted = extracted_text.split_whitespace().count();
    if wanted < 40 {
        return None;
    }
    let probe = extracted_text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|l| l.len() >= 12)?[..12]
        .join(" ");
    let doc = Html::parse_document(document);
    // The document's text, and each element's [start, end) in it (in words and bytes).
    let mut text = String::new();
    let mut words_before: Vec<(usize, usize)> = Vec::new(); // (byte offset, words so far)
    let mut spans: std::collections::HashMap<ego_tree::NodeId, (usize, usize)> =
        std::collections::HashMap::new();
    let mut words = 0usize;
    for edge in doc.tree.root().traverse() {
        match edge {
            ego_tree::iter::Edge::Open(node) => match node.value() {
                Node::Text(t) => {
                    for word in t.split_whitespace() {
                        if !text.is_empty() {
                            text.push(' ');
                        }
                        words_before.push((text.len(), words));
                        text.push_str(word);
                        words += 1;
                    }
                }
                Node::Element(_) => {
                    spans.insert(node.id(), (text.len(), text.len()));
                }
                _ => {}
            },
            ego_tree::iter::Edge::Close(node) => {
                if let Some(span) = spans.get_mut(&node.id()) {
                    span.1 = text.len();
                }
            }
        }
    }
    let at = text.rfind(&probe)?;
    let end = at + probe.len();
    let words_at = |offset: usize| match words_before.binary_search_by_key(&offset, |w| w.0) {
        Ok(i) => words_before[i].1,
        Err(i) => i,
    };
    let word_count = |span: (usize, usize)| words_at(span.1) - words_at(span.0);
    // The deepest element holding the probe: the holder with the shortest text.
    let mut taken = doc
        .tree
        .nodes()
        .filter_map(ElementRef::wrap)
        .filter(|e| spans.get(&e.id()).is_some_and(|s| s.0 <= at && end <= s.1))
        .min_by_key(|e| spans.get(&e.id()).map_or(usize::MAX, |s| s.1 - s.0))?;
    // Up to the element as large as what was taken.
    while let Some(parent) = taken.parent().and_then(ElementRef::wrap) {
        let size = spans
            .get(&parent.id())
            .map_or(usize::MAX, |s| word_count(*s));
        if size * 2 > wanted * 3 {
            break;
        }
        taken = parent;
    }
    let class = taken
        .value()
        .attr("class")
        .filter(|c| !c.trim().is_empty())?;
    let links = Selector::parse("a").ok()?;
    let chars = |e: ElementRef<'_>| spans.get(&e.id()).map_or(0, |s| s.1 - s.0);
    let kin = |e: &ElementRef<'_>| {
        if e.value().name() != taken.value().name() || e.value().attr("class") != Some(class) {
            return false;
        }
        let linked: usize = e.select(&links).map(chars).sum();
        chars(*e) >= SIBLING_MIN_CHARS && (linked as f64) < 0.25 * chars(*e) as f64
    };
    let (mut before, mut after) = (String::new(), String::new());
    for sibling in taken
        .prev_siblings()
        .filter_map(ElementRef::wrap)
        .filter(|e| kin(e))
    {
        before.insert_str(0, &sibling.html());
    }
    for sibling in taken
        .next_siblings()
        .filter_map(ElementRef::wrap)
        .filter(|e| kin(e))
    {
        after.push_str(&sibling.html());
    }
    (!before.is_empty() || !after.is_empty()).then_some((before, after))
}

/// Least teasers (an `<article>` or `<li>` headed by a linked heading) that make what an
/// extractor took an index of stories rather than a text.
const INDEX_MIN_TEASERS: usize = 3;

/// The elements that may be teasers, and the links of headings that make them one.
static TEASER_ITEMS: LazyLock<Selector> =
    LazyLock::new(|| Selector::parse("article, li").expect("a valid selector"));
static LINKED_HEADING: LazyLock<Selector> = LazyLock::new(|| {
    Selector::parse("h1 a, h2 a, h3 a, h4 a, h5 a, h6 a").expect("a valid selector")
});

/// Characters of text under `e`, each text node trimmed.
fn text_chars(e: ElementRef<'_>) -> usize {
    e.text().map(|t| t.trim().chars().count()).sum()
}

/// Teasers under `root` (see [`INDEX_MIN_TEASERS`]) and the characters of text inside them.
fn teasers(root: ElementRef<'_>) -> (usize, usize) {
    let is_teaser = |e: &ElementRef<'_>| e.select(&LINKED_HEADING).next().is_some();
    root.select(&TEASER_ITEMS)
        .filter(is_teaser)
        // Innermost only: a list item holding a list of teasers is not one itself.
        .filter(|item| {
            !item
                .select(&TEASER_ITEMS)
                .any(|inner| inner.id() != item.id() && is_teaser(&inner))
        })
        .fold((0, 0), |(n, chars), item| (n + 1, chars + text_chars(item)))
}

/// When what the extractor took (`fragment`) is an index, a list of story teasers, the page
/// is an index too, and its content is every teaser of its main element (`<main>`, else the
/// `[role=main]` element), not the one list the extractor chose: the main element's HTML
/// without its boilerplate. Readability takes the whole of such a page's main the same way.
/// None when the fragment is not an index or the main element holds no more than it.
pub fn index_main(document: &str, fragment: &str) -> Option<String> {
    let taken = Html::parse_fragment(fragment);
    let total = text_chars(taken.root_element());
    let (n, chars) = teasers(taken.root_element());
    if n < INDEX_MIN_TEASERS || chars * 2 < total {
        return None;
    }
    let mut doc = Html::parse_document(document);
    let main = ["main", "[role=main]"].iter().find_map(|css| {
        let selector = Selector::parse(css).ok()?;
        let mut found = doc.select(&selector);
        let first = found.next()?;
        found.next().is_none().then_some(first)
    })?;
    // The first story's title (an extractor may join the words of neighbouring elements
    // elsewhere, never inside a link).
    let probe = taken
        .select(&LINKED_HEADING)
        .map(|a| {
            a.text()
                .flat_map(str::split_whitespace)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .find(|t| !t.is_empty())?;
    if !element_text(main).contains(&probe) || teasers(main).0 <= n {
        return None;
    }
    let main_id = main.id();
    let boilerplate: Vec<ego_tree::NodeId> = main
        .descendants()
        .filter(|d| matches!(d.value(), Node::Element(el) if is_boilerplate(el)))
        .map(|d| d.id())
        .collect();
    for id in boilerplate {
        if let Some(mut node) = doc.tree.get_mut(id) {
            node.detach();
        }
    }
    doc.tree
        .get(main_id)
        .and_then(ElementRef::wrap)
        .map(|main| main.inner_html())
}

/// The text of the main content, whitespace collapsed, boilerplate left out.
pub fn main_text(html: &str) -> String {
    let doc = Html::parse_document(html);
    let Some(root) = main_element(&doc) else {
        return String::new();
    };
    element_text(root)
}

fn element_text(root: ElementRef<'_>) -> String {
    let mut words: Vec<&str> = Vec::new();
    let mut stack: Vec<NodeRef<'_, Node>> = root.children().collect();
    stack.reverse();
    while let Some(node) = stack.pop() {
        match node.value() {
            Node::Text(t) => words.extend(t.split_whitespace()),
            Node::Element(el) if !is_boilerplate(el) => {
                let mut children: Vec<_> = node.children().collect();
                children.reverse();
                stack.extend(children);
            }
            _ => {}
        }
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_sections_of_the_taken_one_are_found_in_document_order() {
        let section = |n: usize| {
            format!(
                "<div class=\"section\"><h2>Part {n}</h2><p>{}</p></div>",
                format!("Section {n} explains one more step of the procedure in plain words. ")
                    .repeat(6)
            )
        };
        let doc = format!(
            "<html><body><nav class=\"section\"><a href=\"/\">Home</a></nav><div id=\"doc\">{}{}{}\
             <div class=\"related\"><p>{}</p></div></div></body></html>",
            section(1),
            section(2),
            section(3),
            "Unrelated words about something else entirely. ".repeat(10)
        );
        // The extractor took the second section.
        let taken = format!(
            "Part 2\n\n{}",
            "Section 2 explains one more step of the procedure in plain words. ".repeat(6)
        );
        let (before, after) = continuing_siblings(&doc, &taken).expect("siblings");
        assert!(
            before.contains("Part 1") && !before.contains("Part 2"),
            "{before}"
        );
        assert!(
            after.contains("Part 3") && !after.contains("Unrelated"),
            "{after}"
        );
        assert!(
            !before.contains("Home"),
            "a nav is not a section of the text"
        );
        // Text that is nowhere in the document, or too short to place: nothing is added.
        assert_eq!(
            continuing_siblings(&doc, &"Words found nowhere at all in it. ".repeat(10)),
            None
        );
        assert_eq!(continuing_siblings(&doc, "Part 2"), None);
    }

    #[test]
    fn short_steps_of_a_how_to_are_siblings_and_a_line_without_a_sentence_is_not() {
        let step = |n: usize, text: &str| {
            format!("<div class=\"step\"><h3>Step {n}</h3><p>{text}</p></div>")
        };
        let doc = format!(
            "<html><body><div id=\"how\">{}{}{}{}{}{}</div></body></html>",
            step(
                1,
                &"Measure the pot and cut the foam to fit inside it, leaving room. ".repeat(6)
            ),
            step(
                2,
                "Insert the plant into the hole you cut, roots first, gently."
            ),
            step(3, "Share"),
            step(
                4,
                "Place the glass over the foam; it may push some moss down."
            ),
            step(
                5,
                "Pull the moss back up with tweezers, or add more where it is thin."
            ),
            step(
                6,
                "Set the finished terrarium where it gets light but no direct sun."
            ),
        );
        let taken = format!(
            "Step 1\n\n{}",
            "Measure the pot and cut the foam to fit inside it, leaving room. ".repeat(6)
        );
        let (before, after) = continuing_siblings(&doc, &taken).expect("siblings");
        assert_eq!(before, "");
        assert!(
            after.contains("Step 2") && after.contains("Step 6"),
            "{after}"
        );
        assert!(!after.contains("Step 3"), "a word is not a step: {after}");
    }

    fn teaser(n: usize) -> String {
        format!(
            "<li><article><h2><a href=\"/story/{n}\">Story {n} of the day</a></h2>\
             <p>What story {n} tells, in one sentence of summary.</p></article></li>"
        )
    }

    #[test]
    fn an_index_the_extractor_took_part_of_is_the_main_element_without_boilerplate() {
        let list = |range: std::ops::Range<usize>| -> String { range.map(teaser).collect() };
        let doc = format!(
            "<html><body><nav><a href=\"/\">Home</a></nav><main><section><h2>Highlights</h2>\
             <ol>{}</ol></section><section><h2>Opinion</h2><ol>{}</ol></section>\
             <div class=\"share-tools\"><a href=\"/s\">Share</a></div></main>\
             <footer>Footer</footer></body></html>",
            list(0..3),
            list(3..6)
        );
        let taken = format!("<ol>{}</ol>", list(0..3));
        let index = index_main(&doc, &taken).expect("the main element");
        for n in 0..6 {
            assert!(index.contains(&format!("Story {n} of the day")), "{index}");
        }
        assert!(index.contains("Opinion"), "{index}");
        assert!(
            !index.contains("Share") && !index.contains("Home") && !index.contains("Footer"),
            "{index}"
        );
        // Two teasers are no index; all of them taken already leaves nothing to add; an
        // article is not an index; a page without one main element has nothing to offer.
        assert_eq!(index_main(&doc, &format!("<ol>{}</ol>", list(0..2))), None);
        assert_eq!(
            index_main(&doc, &format!("<div>{}</div>", list(0..6))),
            None
        );
        let article = format!(
            "<article><h1>Title</h1><p>{}</p>{}</article>",
            "Words. ".repeat(200),
            list(0..3)
        );
        assert_eq!(index_main(&doc, &article), None);
        let no_main = doc.replace("<main>", "<div>").replace("</main>", "</div>");
        assert_eq!(index_main(&no_main, &taken), None);
    }

    #[test]
    fn lists_of_links_are_dropped_and_text_with_links_kept() {
        let article = "<p>The article says a great deal, with <a href=\"/a\">one link</a> in it, \
            and more words than any list beside it.</p>";
        let related = "<ul><li><a href=\"/1\">Story one</a></li><li><a href=\"/2\">Story two</a></li>\
            <li><a href=\"/3\">Story three</a></li></ul>";
        let kept = without_link_blocks(&format!("{article}{related}")).into_owned();
        assert!(kept.contains("The article says"), "{kept}");
        assert!(kept.contains("one link"), "{kept}");
        assert!(!kept.contains("Story two"), "{kept}");
        // Two links are not a list of links; text beside links is not one either.
        let short = "<p>Words words words words words words.</p><ul><li><a href=\"/1\">One</a></li>\
            <li><a href=\"/2\">Two</a></li></ul>";
        assert_eq!(without_link_blocks(short), short);
        let annotated = format!(
            "{article}<ul>{}</ul>",
            "<li><a href=\"/x\">A source</a>: a long description of the source in words</li>"
                .repeat(3)
        );
        assert_eq!(without_link_blocks(&annotated), annotated);
        // A page that is an index of links stays whole.
        assert_eq!(without_link_blocks(related), related);
    }

    #[test]
    fn hidden_elements_and_noscript_are_left_out_and_plain_pages_are_not_parsed_again() {
        let page = r#"<html><body><p>Shown</p><p hidden>Gone 1</p><div aria-hidden="true">Gone 2</div>
            <span style="display: none">Gone 3</span><p style="VISIBILITY:hidden">Gone 4</p>
            <noscript><img src="x.png"></noscript><p aria-hidden="false">Shown too</p></body></html>"#;
        let visible = visible_only(page);
        assert!(matches!(visible, std::borrow::Cow::Owned(_)));
        assert!(
            visible.contains("Shown") && visible.contains("Shown too"),
            "{visible}"
        );
        for gone in ["Gone", "noscript", "x.png"] {
            assert!(!visible.contains(gone), "{gone}: {visible}");
        }
        let plain = "<html><body><p>Nothing to hide</p></body></html>";
        assert!(matches!(visible_only(plain), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn valid_utf8_is_utf8_whatever_the_page_declares() {
        let page = "<meta charset=\"gb2312\"><p>谷歌收购</p>".as_bytes();
        assert_eq!(
            decode(page, None),
            (
                "<meta charset=\"gb2312\"><p>谷歌收购</p>".to_owned(),
                "UTF-8"
            )
        );
        let gbk = encoding_rs::GBK
            .encode("<meta charset=\"gb2312\"><p>谷歌收购</p>")
            .0;
        assert_eq!(
            decode(&gbk, None).0,
            "<meta charset=\"gb2312\"><p>谷歌收购</p>"
        );
    }

    fn page(main: &str, footer: &str, script: &str) -> String {
        format!(
            r#"<html><head><title>T</title><script>var nonce="{script}";</script></head><body>
            <nav><a href="/">Home</a></nav><main><h1>Title</h1><p>{main}</p>
            <div class="ad-slot">Buy {script}</div><div id="cookie-banner">We use cookies</div></main>
            <footer>Generated at {footer}</footer></body></html>"#
        )
    }

    #[test]
    fn main_text_keeps_the_content_and_drops_the_rest() {
        assert_eq!(
            main_text(&page("Hello   world.", "x", "y")),
            "Title Hello world."
        );
        let no_main = "<html><body><header>Site</header><article><p>Only this</p></article><aside>More</aside></body></html>";
        assert_eq!(main_text(no_main), "Only this");
        let two_articles =
            "<body><article>A</article><article>B</article><footer>F</footer></body>";
        assert_eq!(main_text(two_articles), "A B");
    }

    #[test]
    fn charsets_come_from_the_header_the_bom_or_a_meta_tag() {
        let latin1 = b"<html><body>caf\xe9</body></html>";
        assert_eq!(
            decode(latin1, Some("text/html; charset=ISO-8859-1")).0,
            "<html><body>café</body></html>"
        );
        let meta =
            b"<html><head><meta charset=\"windows-1252\"></head><body>\x93quoted\x94</body></html>";
        let (text, name) = decode(meta, Some("text/html"));
        assert!(text.contains("\u{201c}quoted\u{201d}"), "{text}");
        assert_eq!(name, "windows-1252");
        let http_equiv =
            b"<meta http-equiv='Content-Type' content='text/html; charset=iso-8859-15'>\xa4";
        assert!(decode(http_equiv, None).0.ends_with('€'));
        assert_eq!(
            decode("plain ü".as_bytes(), None),
            ("plain ü".to_owned(), "UTF-8")
        );
        assert_eq!(
            decode(b"\xef\xbb\xbfbom", Some("text/html; charset=latin1")).0,
            "bom"
        );
    }

    #[test]
    fn html_content_types() {
        assert!(is_html(Some("text/html; charset=utf-8")));
        assert!(is_html(Some("application/xhtml+xml")));
        assert!(is_html(None));
        assert!(!is_html(Some("application/pdf")));
        assert!(!is_html(Some("image/png")));
    }
}
