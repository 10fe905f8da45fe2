//! The bound on HTML work: a linear pre-scan that refuses documents nested too deep or with too
//! many elements, before any tree is built. Pure.
//!
//! html5ever's tree builder (under `scraper` and rs-trafilatura) walks its stack of open
//! elements for many tags, so its time grows with the square of the nesting depth: 20,000
//! nested `<div>`s take over a minute. Its tokenizer is linear, so [`check`] runs only the
//! tokenizer and keeps its own stack of open elements, with the parser's rules where they
//! matter for depth: void elements and elements whose end tag may be left out (`p`, `li`,
//! `td`...) never deepen it, a self-closing tag closes itself only inside SVG or MathML (as in
//! the parser: `<div/>` opens a `div`), and an end tag closes up to its open element. The count
//! can only be higher than the parser's depth, never lower, and the scan stops as soon as a
//! limit is passed.
//!
//! Every place that builds a tree from HTML that came from outside calls [`check`] first: the
//! scraper (before the fingerprint) and the local Markdown generator
//! ([`super::markdown::generate`], before extraction and metadata; the Markdown stage and
//! `ai-cache extract` go through it), which also takes the extractor's budget from the same
//! scan.

use std::cell::{Cell, RefCell};

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};

/// Deepest nesting accepted (Chromium's parser stops nesting at 512 too).
pub const MAX_DEPTH: usize = 512;

/// Most elements accepted in one document.
pub const MAX_ELEMENTS: usize = 250_000;

/// Why a document is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TooComplex {
    #[error("the page nests elements more than {MAX_DEPTH} deep")]
    TooDeep,
    #[error("the page has more than {MAX_ELEMENTS} elements")]
    TooManyElements,
}

/// Most elements, and most elements times depth, for which the full main-content extractor
/// runs (see [`Shape::fits_extractor`]).
pub const EXTRACTOR_MAX_ELEMENTS: usize = 20_000;
pub const EXTRACTOR_MAX_WORK: usize = 400_000;

/// What the scan found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    pub max_depth: usize,
    pub elements: usize,
}

impl Shape {
    /// Whether the full extractor (rs-trafilatura) may run on the document. Its time grows
    /// faster than the number of elements and with their depth (a development build took 3.4 s
    /// for 10,000 inline elements, 9.4 s for 20,000, 39 s for 50,000 nested 32 deep and 334 s
    /// for 50,000 nested 511 deep); beyond these bounds the Markdown comes from the linear
    /// main-content rule instead, so a huge or deep page costs bounded time. The deepest of
    /// the 130 real pages of the readability corpus nests 32 deep and the largest has under
    /// 10,000 elements: every one fits.
    pub fn fits_extractor(&self) -> bool {
        self.elements <= EXTRACTOR_MAX_ELEMENTS
            && self.elements.saturating_mul(self.max_depth.max(1)) <= EXTRACTOR_MAX_WORK
    }
}

/// Scans `html` in linear time; refuses it when it passes [`MAX_DEPTH`] or [`MAX_ELEMENTS`].
pub fn check(html: &str) -> Result<Shape, TooComplex> {
    check_with(html, MAX_DEPTH, MAX_ELEMENTS)
}

/// [`check`] with other limits.
pub fn check_with(html: &str, max_depth: usize, max_elements: usize) -> Result<Shape, TooComplex> {
    let sink = Scan {
        open: RefCell::new(Vec::new()),
        foreign: Cell::new(0),
        shape: Cell::new(Shape::default()),
        refused: Cell::new(None),
        limits: (max_depth, max_elements),
    };
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    let sink = &tokenizer.sink;
    match sink.refused.get() {
        Some(why) => Err(why),
        None => Ok(sink.shape.get()),
    }
}

struct Scan {
    /// Names of the open elements that count towards depth.
    open: RefCell<Vec<String>>,
    /// How many of them are `svg` or `math` (where `<x/>` closes itself).
    foreign: Cell<usize>,
    shape: Cell<Shape>,
    refused: Cell<Option<TooComplex>>,
    limits: (usize, usize),
}

/// Elements that never have content.
const VOID: [&str; 15] = [
    "area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param",
    "source", "track", "wbr",
];

/// Elements whose end tag may be left out: the parser closes them implicitly, so they never
/// pile up (and `html`, `head`, `body` are only ever open once).
const OPTIONAL_END: [&str; 19] = [
    "html", "head", "body", "p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "thead",
    "tbody", "tfoot", "colgroup", "caption", "rt", "rp",
];

impl Scan {
    fn start(&self, name: &str, self_closing: bool) {
        let mut shape = self.shape.get();
        shape.elements += 1;
        if shape.elements > self.limits.1 {
            self.refused.set(Some(TooComplex::TooManyElements));
        }
        let closes_itself = self_closing && self.foreign.get() > 0;
        if !(VOID.contains(&name) || OPTIONAL_END.contains(&name) || closes_itself) {
            let mut open = self.open.borrow_mut();
            open.push(name.to_owned());
            if matches!(name, "svg" | "math") {
                self.foreign.set(self.foreign.get() + 1);
            }
            shape.max_depth = shape.max_depth.max(open.len());
            if open.len() > self.limits.0 {
                self.refused.set(Some(TooComplex::TooDeep));
            }
        }
        self.shape.set(shape);
    }

    fn end(&self, name: &str) {
        let mut open = self.open.borrow_mut();
        if let Some(at) = open.iter().rposition(|n| n == name) {
            for closed in open.drain(at..) {
                if matches!(closed.as_str(), "svg" | "math") {
                    self.foreign.set(self.foreign.get().saturating_sub(1));
                }
            }
        }
    }
}

impl TokenSink for Scan {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let Token::TagToken(tag) = token else {
            return TokenSinkResult::Continue;
        };
        if self.refused.get().is_some() {
            // Nothing after this changes the verdict: the rest is read as plain text (the
            // tokenizer takes that answer only at a start tag).
            return match tag.kind {
                TagKind::StartTag => TokenSinkResult::Plaintext,
                TagKind::EndTag => TokenSinkResult::Continue,
            };
        }
        let name: &str = &tag.name;
        match tag.kind {
            TagKind::EndTag => {
                self.end(name);
                TokenSinkResult::Continue
            }
            TagKind::StartTag => {
                self.start(name, tag.self_closing);
                // The tokenizer needs to be told where text is raw, as the parser would.
                match name {
                    "script" => TokenSinkResult::RawData(RawKind::ScriptData),
                    "style" | "xmp" | "iframe" | "noembed" | "noframes" => {
                        TokenSinkResult::RawData(RawKind::Rawtext)
                    }
                    "textarea" | "title" => TokenSinkResult::RawData(RawKind::Rcdata),
                    "plaintext" => TokenSinkResult::Plaintext,
                    _ => TokenSinkResult::Continue,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        format!("{}text{}", "<div>".repeat(n), "</div>".repeat(n))
    }

    #[test]
    fn ordinary_pages_pass_with_their_depth_counted() {
        let shape = check(
            "<!doctype html><html><head><title>T</title><script>if (a<b) { x('<div>'); }</script>\
             </head><body><main><div><p>one<p>two<ul><li>a<li>b</ul><img src=x><br></div>\
             <svg><path d='M0'/><circle/></svg></main></body></html>",
        )
        .expect("an ordinary page");
        assert_eq!(
            shape.max_depth, 3,
            "main > div > ul; p, li and path never nest"
        );
    }

    #[test]
    fn deep_nesting_is_refused_at_any_size() {
        for n in [5_000, 10_000, 20_000, 40_000, 500_000] {
            assert_eq!(check(&nested(n)), Err(TooComplex::TooDeep), "{n} levels");
        }
        assert!(check(&nested(MAX_DEPTH)).is_ok());
    }

    #[test]
    fn tags_that_never_nest_do_not_count() {
        let flat = format!("{}{}", "<p>x".repeat(20_000), "<li>y<br>".repeat(20_000));
        assert!(check(&flat).is_ok());
        // `<div/>` opens a div in HTML: it nests.
        assert_eq!(check(&"<div/>".repeat(1_000)), Err(TooComplex::TooDeep));
        // Inside SVG a self-closing tag closes itself.
        let svg = format!("<svg>{}</svg>", "<path/>".repeat(1_000));
        assert!(check(&svg).is_ok());
    }

    #[test]
    fn closing_tags_close_what_they_name_and_above() {
        let unclosed_inner = "<section><div><span></section>".repeat(1_000);
        assert!(check(&unclosed_inner).is_ok());
        let stray = format!("{}{}", "</div>".repeat(1_000), nested(10));
        assert_eq!(check(&stray).map(|s| s.max_depth), Ok(10));
    }

    #[test]
    fn text_in_scripts_and_styles_is_not_markup() {
        let script = format!("<script>{}</script><p>x", "<div>".repeat(10_000));
        assert!(check(&script).is_ok());
        let style = format!("<style>{}</style>", "<div>".repeat(10_000));
        assert!(check(&style).is_ok());
    }

    #[test]
    fn too_many_elements_are_refused() {
        assert_eq!(
            check_with(&"<br>".repeat(101), 512, 100),
            Err(TooComplex::TooManyElements)
        );
    }
}

#[cfg(test)]
pub(crate) mod corpus {
    /// Every real page of the readability test corpus (beside the checkout, as the shared
    /// data is laid out), with its path; empty (and said) where the corpus is not there.
    pub(crate) fn pages() -> Vec<(std::path::PathBuf, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data/readability-test-pages/test-pages");
        let Ok(cases) = std::fs::read_dir(&dir) else {
            eprintln!("skipped: no corpus at {}", dir.display());
            return Vec::new();
        };
        cases
            .flatten()
            .filter_map(|case| {
                let html = std::fs::read_to_string(case.path().join("source.html")).ok()?;
                Some((case.path(), html))
            })
            .collect()
    }

    /// Every real page passes the bound.
    #[test]
    fn real_pages_pass() {
        let (mut deepest, mut most) = (0, 0);
        for (path, html) in pages() {
            let shape = super::check(&html).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            deepest = deepest.max(shape.max_depth);
            if !shape.fits_extractor() {
                println!("over the extractor's budget: {path:?} {shape:?}");
            }
            most = most.max(shape.elements);
        }
        println!("deepest real page: {deepest}, most elements: {most}");
    }
}
