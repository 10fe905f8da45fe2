//! Scoring extraction: token F1 of generated text against a reference text. Pure.

use std::collections::HashMap;

/// Lowercase alphanumeric tokens with their counts.
fn tokens(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for t in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
    {
        *counts.entry(t.to_lowercase()).or_insert(0) += 1;
    }
    counts
}

/// Token F1 (bag of words): 2PR/(P+R) over the multiset of tokens. 0 when either is empty.
pub fn token_f1(generated: &str, reference: &str) -> f64 {
    let (a, b) = (tokens(generated), tokens(reference));
    let common: usize = a
        .iter()
        .map(|(k, n)| (*n).min(b.get(k).copied().unwrap_or(0)))
        .sum();
    let (na, nb): (usize, usize) = (a.values().sum(), b.values().sum());
    if common == 0 {
        return 0.0;
    }
    let (p, r) = (common as f64 / na as f64, common as f64 / nb as f64);
    2.0 * p * r / (p + r)
}

/// The text of Markdown, without its markup.
pub fn markdown_text(md: &str) -> String {
    use pulldown_cmark::{Event, Parser};
    let mut s = String::with_capacity(md.len());
    for event in Parser::new(md) {
        match event {
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
