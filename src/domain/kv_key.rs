//! The edge store key of a page, defined once (the Cloudflare Worker is tested against the
//! vectors in `tests/fixtures/kv-keys.json`). Pure.
//!
//! `<scheme>/<host with dots as dashes>[:<port>]<path>[?<query>]` of the normalized URL, as in
//! the original system's example `https/example-com/page`. A key longer than
//! [`MAX_BASE_LEN`] bytes keeps its first bytes and ends with `~` and the SHA-256 of the
//! whole key, so every key is unique, deterministic and short enough for Cloudflare (512 bytes)
//! with a variant prefix (`html:`, `md:`).

use sha2::{Digest, Sha256};

use super::url::NormalizedUrl;

/// Longest base key, in bytes (variant prefixes take at most 5 more; Cloudflare allows 512).
pub const MAX_BASE_LEN: usize = 500;

/// The base key of a page.
pub fn kv_key(url: &NormalizedUrl) -> String {
    let u = url.as_url();
    let host = u.host_str().unwrap_or_default().replace('.', "-");
    let mut key = format!("{}/{host}", u.scheme());
    if let Some(port) = u.port() {
        key.push_str(&format!(":{port}"));
    }
    key.push_str(u.path());
    if let Some(q) = u.query() {
        key.push('?');
        key.push_str(q);
    }
    if key.len() <= MAX_BASE_LEN {
        return key;
    }
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    let mut cut = MAX_BASE_LEN - 1 - digest.len();
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{digest}", &key[..cut])
}

/// The key of the HTML variant.
pub fn html_key(base: &str) -> String {
    format!("html:{base}")
}

/// The key of the Markdown variant.
pub fn markdown_key(base: &str) -> String {
    format!("md:{base}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> String {
        kv_key(&NormalizedUrl::parse(s).expect("url"))
    }

    #[test]
    fn the_originals_example_holds() {
        assert_eq!(key("https://example.com/page"), "https/example-com/page");
    }

    #[test]
    fn every_url_gets_a_key_of_at_most_512_bytes_with_its_prefix() {
        let long = format!(
            "https://example.com/{}?q={}",
            "seg/".repeat(200),
            "é".repeat(300)
        );
        let k = key(&long);
        assert!(
            k.len() <= MAX_BASE_LEN && html_key(&k).len() <= 512,
            "{}",
            k.len()
        );
        assert_ne!(key(&format!("{long}x")), k, "long keys stay distinct");
        assert_eq!(key(&long), k, "and deterministic");
    }

    #[test]
    fn spellings_of_one_url_share_a_key_and_different_urls_do_not() {
        assert_eq!(
            key("HTTPS://Example.com:443/a#x"),
            key("https://example.com/a")
        );
        assert_ne!(key("https://example.com/a"), key("http://example.com/a"));
        assert_ne!(key("https://example.com/a/"), key("https://example.com/a"));
        assert_ne!(
            key("https://example.com/a?x=1"),
            key("https://example.com/a")
        );
        assert_eq!(key("http://example.com:8080/"), "http/example-com:8080/");
    }

    #[test]
    fn the_published_vectors_match() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kv-keys.json");
        let vectors: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(path).expect("vectors")).expect("json");
        assert!(vectors.len() >= 10);
        for v in vectors {
            let (url, want) = (
                v["url"].as_str().expect("url"),
                v["key"].as_str().expect("key"),
            );
            assert_eq!(key(url), want, "{url}");
        }
    }
}
