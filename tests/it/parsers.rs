//! Every parser of untrusted text, fed random input: domains, URLs, sitemap documents,
//! robots.txt, user agents and HTML. Nothing may panic, and what normalizes must be stable
//! (normalizing twice changes nothing). The input mixes the characters these formats give
//! meaning to with multi-byte and control characters, which is how a slicing bug in domain
//! normalization once dropped connections. Seeded, so a failure repeats.

use ai_cache::domain::bots::Classifier;
use ai_cache::domain::client::normalize_domain;
use ai_cache::domain::url::NormalizedUrl;
use ai_cache::domain::{html, html_bounds, sitemap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Pieces random text is made of.
const PIECES: &[&str] = &[
    "a",
    "Z",
    "0",
    "9",
    "-",
    "_",
    ".",
    ":",
    "/",
    "//",
    "?",
    "#",
    "@",
    "%",
    "%C3%A9",
    "&",
    "=",
    "+",
    " ",
    "\t",
    "\n",
    "\0",
    "\u{7f}",
    "é",
    "例",
    "テスト",
    "🦀",
    "\u{200b}",
    "\u{fffd}",
    "http",
    "https://",
    "HTTP://",
    "www.",
    "xn--",
    "[",
    "]",
    "::1",
    "127.0.0.1",
    "<",
    ">",
    "</",
    "/>",
    "<div>",
    "</div>",
    "<p>",
    "<script>",
    "</script>",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "<?xml version=\"1.0\"?>",
    "<urlset>",
    "</urlset>",
    "<url>",
    "<loc>",
    "</loc>",
    "<sitemapindex>",
    "<sitemap>",
    "<lastmod>",
    "&amp;",
    "&#233;",
    "&#x1F980;",
    "&bogus;",
    "<!DOCTYPE x [<!ENTITY e \"e\">]>",
    "\"",
    "'",
    "User-agent: *",
    "Disallow: /",
    "Sitemap: ",
    "Crawl-delay: 5",
    "Mozilla/5.0",
    "GPTBot/1.2",
    "(compatible; ",
    ")",
    ";",
];

fn random_text(rng: &mut StdRng, max_pieces: usize) -> String {
    let n = rng.random_range(0..=max_pieces);
    (0..n)
        .map(|_| PIECES[rng.random_range(0..PIECES.len())])
        .collect()
}

const ROUNDS: usize = 3_000;

#[test]
fn domains_never_panic_and_normalize_to_a_fixed_point() {
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..ROUNDS {
        let input = random_text(&mut rng, 12);
        if let Ok(domain) = normalize_domain(&input) {
            assert_eq!(
                normalize_domain(&domain).as_deref(),
                Ok(domain.as_str()),
                "{input:?}"
            );
        }
    }
}

#[test]
fn urls_never_panic_and_normalize_to_a_fixed_point() {
    let mut rng = StdRng::seed_from_u64(2);
    for _ in 0..ROUNDS {
        let input = format!(
            "{}{}",
            ["https://", "http://", "", "HTTPS://Ex.COM"][rng.random_range(0..4)],
            random_text(&mut rng, 12)
        );
        if let Ok(url) = NormalizedUrl::parse(&input) {
            let again = NormalizedUrl::parse(url.as_str()).expect("a normalized URL parses");
            assert_eq!(again.as_str(), url.as_str(), "{input:?}");
        }
    }
}

#[test]
fn sitemap_documents_never_panic() {
    let mut rng = StdRng::seed_from_u64(3);
    let limits = sitemap::Limits::default();
    for _ in 0..ROUNDS / 3 {
        let body = random_text(&mut rng, 40);
        let _ = sitemap::parse(body.as_bytes(), &limits);
        // Gzip magic bytes in front of garbage.
        let mut gz = vec![0x1f, 0x8b, 0x08];
        gz.extend_from_slice(body.as_bytes());
        let _ = sitemap::parse(&gz, &limits);
    }
}

#[test]
fn robots_txt_never_panics() {
    let mut rng = StdRng::seed_from_u64(4);
    let base = url::Url::parse("https://site.test/robots.txt").expect("url");
    for _ in 0..ROUNDS {
        let text = random_text(&mut rng, 30);
        let _ = ai_cache::commands::discovery::robots_sitemaps(&text, &base);
        if let Ok(robot) = texting_robots::Robot::new("ai-cache", text.as_bytes()) {
            let _ = robot.allowed("https://site.test/a/b?c");
        }
    }
}

#[test]
fn user_agents_never_panic() {
    let mut rng = StdRng::seed_from_u64(5);
    let classifier = Classifier::shipped();
    // The catalogue's patterns are slow to match in a debug build: fewer rounds.
    for _ in 0..ROUNDS / 10 {
        let _ = classifier.classify(&random_text(&mut rng, 20));
    }
}

#[test]
fn html_never_panics_and_is_bounded_before_it_is_parsed() {
    let mut rng = StdRng::seed_from_u64(6);
    for _ in 0..ROUNDS / 3 {
        let body = random_text(&mut rng, 60);
        let content_type =
            ["text/html; charset=utf-8", "text/html; charset=bogus", ""][rng.random_range(0..3)];
        let (text, _) = html::decode(body.as_bytes(), Some(content_type));
        // What the scraper does with every page: bounded, then extracted once.
        if html_bounds::check(&text).is_ok() {
            let _ = html::main_text(&text);
            let extracted = ai_cache::domain::markdown::generate(&text, "https://example.com/");
            let _ = extracted.map(|g| g.fingerprint());
        }
    }
}
