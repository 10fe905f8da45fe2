//! The YAML front matter a client may have put before its pages' Markdown (its policy's
//! `front_matter`): title, source URL, description, language and last modification, so an
//! agent that keeps the Markdown keeps where it came from. Pure; the Worker makes the same
//! bytes (`worker/src/edge.js`), both held to `tests/fixtures/front-matter-vectors.json`.
//!
//! Every value is written as a double-quoted scalar in JSON's escaping, which YAML 1.2 reads
//! as the same string (JSON is YAML), so no title can end the block or inject a key.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// What the block says; absent fields are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontMatter {
    #[serde(default)]
    pub title: Option<String>,
    pub source: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    pub last_modified: DateTime<Utc>,
}

impl FrontMatter {
    /// The block, from `---` to the blank line after the closing `---`.
    pub fn render(&self) -> String {
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
        let mut out = String::from("---\n");
        let mut field = |name: &str, value: Option<&str>| {
            if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) {
                out.push_str(&format!("{name}: {}\n", quoted(v)));
            }
        };
        field("title", self.title.as_deref());
        field("source", Some(&self.source));
        field("description", self.description.as_deref());
        field("language", self.language.as_deref());
        field(
            "last_modified",
            Some(
                &self
                    .last_modified
                    .to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
        );
        out.push_str("---\n\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Vector {
        name: String,
        input: FrontMatter,
        expected: String,
    }

    #[test]
    fn the_shared_vectors_hold() {
        let text = include_str!("../../tests/fixtures/front-matter-vectors.json");
        let vectors: Vec<Vector> = serde_json::from_str(text).expect("vectors");
        assert!(vectors.len() >= 4);
        for v in vectors {
            assert_eq!(v.input.render(), v.expected, "{}", v.name);
        }
    }

    #[test]
    fn no_value_can_end_the_block_or_add_a_key() {
        let block = FrontMatter {
            title: Some("A\n---\nsource: \"https://evil.test\"".into()),
            source: "https://example.com/a".into(),
            description: None,
            language: None,
            last_modified: DateTime::UNIX_EPOCH,
        }
        .render();
        assert_eq!(block.lines().filter(|l| *l == "---").count(), 2, "{block}");
        assert_eq!(block.matches("\nsource:").count(), 1, "{block}");
    }
}
