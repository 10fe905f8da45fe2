//! Scoring extraction: token F1 of generated text against a reference text. Pure.

use std::collections::HashMap;

/// Whether a character is written without spaces between words (Han, kana): each is a token
/// of its own, as character-level scores for Chinese and Japanese count them (a run of them
/// would be a whole clause, matched only if every character is).
fn unspaced(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF // hiragana, katakana
        | 0x3400..=0x4DBF // CJK extension A
        | 0x4E00..=0x9FFF // CJK unified ideographs
        | 0xF900..=0xFAFF // CJK compatibility ideographs
        | 0x20000..=0x2FA1F) // CJK extensions B and beyond
}

/// Lowercase alphanumeric tokens with their counts (Han and kana one character each).
fn tokens(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut count = |t: &str| {
        if !t.is_empty() {
            *counts.entry(t.to_lowercase()).or_insert(0) += 1;
        }
    };
    for run in text.split(|c: char| !c.is_alphanumeric()) {
        let mut start = 0;
        for (i, c) in run.char_indices() {
            if unspaced(c) {
                count(&run[start..i]);
                count(&run[i..i + c.len_utf8()]);
                start = i + c.len_utf8();
            }
        }
        count(&run[start..]);
    }
    counts
}

/// Precision (the share of the generated tokens the reference has), recall (the share of
/// the reference's tokens generated) and their F1, over the multisets of tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// The [`Scores`] of `generated` against `reference`: all 0 when they share no token.
pub fn token_scores(generated: &str, reference: &str) -> Scores {
    let (a, b) = (tokens(generated), tokens(reference));
    let common: usize = a
        .iter()
        .map(|(k, n)| (*n).min(b.get(k).copied().unwrap_or(0)))
        .sum();
    let (na, nb): (usize, usize) = (a.values().sum(), b.values().sum());
    if common == 0 {
        return Scores::default();
    }
    let (p, r) = (common as f64 / na as f64, common as f64 / nb as f64);
    Scores {
        precision: p,
        recall: r,
        f1: 2.0 * p * r / (p + r),
    }
}

/// Token F1 (bag of words): 2PR/(P+R) over the multiset of tokens. 0 when either is empty.
pub fn token_f1(generated: &str, reference: &str) -> f64 {
    token_scores(generated, reference).f1
}

/// The text of Markdown, without its markup.
pub fn markdown_text(md: &str) -> String {
    use pulldown_cmark::{Event, Parser};
    use pulldown_cmark::{Tag, TagEnd};
    let mut s = String::with_capacity(md.len());
    // An image's alt text is an attribute in HTML, not text: left out, as `html_text` does.
    let mut in_image = 0usize;
    for event in Parser::new(md) {
        match event {
            Event::Start(Tag::Image { .. }) => in_image += 1,
            Event::End(TagEnd::Image) => in_image = in_image.saturating_sub(1),
            Event::Text(_) | Event::Code(_) if in_image > 0 => {}
            Event::Text(t) | Event::Code(t) => {
                s.push_str(&t);
                s.push(' ');
            }
            Event::SoftBreak | Event::HardBreak => s.push(' '),
            _ => {}
        }
    }
    s
}

/// The text of an HTML document or fragment.
pub fn html_text(html: &str) -> String {
    scraper::Html::parse_document(html)
        .root_element()
        .text()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_is_one_for_the_same_words_and_drops_with_extra_or_missing_ones() {
        assert!((token_f1("The cat sat.", "the CAT, sat") - 1.0).abs() < 1e-9);
        let f = token_f1("the cat sat on the mat", "the cat sat");
        assert!((f - 2.0 * 0.5 / 1.5).abs() < 1e-9, "{f}");
        assert_eq!(token_f1("", "words"), 0.0);
    }

    #[test]
    fn han_and_kana_count_one_character_each() {
        let s = token_scores("谷歌收购了DeepMind公司", "谷歌收购DeepMind");
        assert!((s.recall - 1.0).abs() < 1e-9, "{s:?}");
        assert!((s.precision - 5.0 / 8.0).abs() < 1e-9, "{s:?}");
        assert_eq!(
            token_f1("한국어 문장", "한국어 문장"),
            1.0,
            "Hangul is spaced: words"
        );
    }

    #[test]
    fn markup_is_not_text() {
        assert_eq!(
            markdown_text("# Title\n\n[link](https://x.example) **b**")
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["Title", "link", "b"]
        );
        assert_eq!(
            html_text("<p>a <b>b</b></p>")
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}
