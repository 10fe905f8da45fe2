//! Published address ranges of bot operators, to verify a claimed identity. Pure: the files
//! are read (and re-read when they change) by `infra::bot_ranges`.
//!
//! One file per bot or operator, named after it in lowercase (`gptbot.json`, `openai.json`,
//! `perplexitybot.txt`); a bot's own file wins over its operator's. Two formats:
//! - JSON as Google, OpenAI and Perplexity publish it:
//!   `{"prefixes": [{"ipv4Prefix": "20.171.206.0/24"}, {"ipv6Prefix": "2600:1f28:3d::/48"}]}`;
//! - text: one CIDR (or single address) per line, `#` starts a comment.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

/// The ranges of one bot or operator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeList {
    nets: Vec<IpNet>,
}

impl RangeList {
    /// Whether `ip` is inside one of the ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// How many ranges.
    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// An IPv4 address written as IPv6 (`::ffff:1.2.3.4`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Every loaded range file, by lowercase name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeBook {
    lists: HashMap<String, RangeList>,
}

/// A range file that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("range file {name}: {reason}")]
pub struct RangeError {
    pub name: String,
    pub reason: String,
}

#[derive(Deserialize)]
struct Published {
    prefixes: Vec<Prefix>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Prefix {
    ipv4_prefix: Option<String>,
    ipv6_prefix: Option<String>,
}

impl RangeBook {
    /// Builds the book from (file stem, contents) pairs.
    pub fn from_files(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, RangeError> {
        let mut lists = HashMap::new();
        for (name, text) in files {
            let list = parse(&text).map_err(|reason| RangeError {
                name: name.clone(),
                reason,
            })?;
            lists.insert(name.to_lowercase(), list);
        }
        Ok(Self { lists })
    }

    /// The ranges that apply to bot `name` of `operator`, if any are published.
    pub fn lookup(&self, name: &str, operator: Option<&str>) -> Option<&RangeList> {
        self.lists
            .get(&name.to_lowercase())
            .or_else(|| operator.and_then(|op| self.lists.get(&slug(op))))
    }

    /// The names of the loaded lists, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.lists.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// `Common Crawl` → `common-crawl`: the file name of an operator.
pub fn slug(operator: &str) -> String {
    let lower = operator.to_lowercase();
    let parts: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .collect();
    parts.join("-")
}

fn parse(text: &str) -> Result<RangeList, String> {
    let trimmed = text.trim_start();
    let raw: Vec<String> = if trimmed.starts_with('{') {
        let published: Published = serde_json::from_str(trimmed).map_err(|e| e.to_string())?;
        published
            .prefixes
            .into_iter()
            .filter_map(|p| p.ipv4_prefix.or(p.ipv6_prefix))
            .collect()
    } else {
        text.lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim())
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let nets = raw
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("{s:?} is not an address range"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RangeList { nets })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn both_formats_parse_and_mapped_addresses_count_as_ipv4() {
        let book = RangeBook::from_files([
            (
                "GPTBot".to_owned(),
                r#"{"creationTime":"2026-01-01","prefixes":[{"ipv4Prefix":"20.171.206.0/24"}]}"#
                    .to_owned(),
            ),
            (
                "common-crawl".to_owned(),
                "# CCBot\n18.97.9.168/29\n2600:1f28:365:80b0::/60 # v6\n18.97.14.80\n".to_owned(),
            ),
        ])
        .expect("book");
        let gpt = book.lookup("gptbot", Some("OpenAI")).expect("by bot name");
        assert!(gpt.contains(ip("20.171.206.200")));
        assert!(gpt.contains(ip("::ffff:20.171.206.1")));
        assert!(!gpt.contains(ip("20.171.207.1")));
        let cc = book
            .lookup("CCBot", Some("Common Crawl"))
            .expect("by operator");
        assert_eq!(cc.len(), 3);
        assert!(cc.contains(ip("18.97.9.170")) && cc.contains(ip("18.97.14.80")));
        assert!(cc.contains(ip("2600:1f28:365:80b1::9")));
        assert!(book.lookup("ClaudeBot", Some("Anthropic")).is_none());
    }

    #[test]
    fn a_bad_line_names_its_file() {
        let err = RangeBook::from_files([("x".to_owned(), "10.0.0.0/8\nnot-an-ip\n".to_owned())])
            .expect_err("bad");
        assert_eq!(err.name, "x");
        assert!(err.reason.contains("not-an-ip"), "{err}");
        assert!(RangeBook::from_files([("y".to_owned(), "{\"prefixes\": 3}".to_owned())]).is_err());
    }

    #[test]
    fn operator_slugs() {
        assert_eq!(slug("Common Crawl"), "common-crawl");
        assert_eq!(slug("OpenAI"), "openai");
        assert_eq!(slug("ByteDance (TikTok)"), "bytedance-tiktok");
    }
}
