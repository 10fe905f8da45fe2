//! Which AI assistants refer people to a site: the hosts of their apps
//! (`catalogue/referrers.json`, maintained by hand), matched against a visit's `Referer` host
//! (lower case, without `www.`, as the `url_host` SQL function reads it). Pure.

use std::sync::LazyLock;

use serde::Deserialize;

/// The list as shipped.
static REFERRERS_JSON: &str = include_str!("../../catalogue/referrers.json");

/// One assistant's host.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Referrer {
    /// Lower case, without `www.`.
    pub host: String,
    /// The assistant people used (`ChatGPT`).
    pub assistant: String,
    /// Its operator, spelled as the bot catalogue spells it (`OpenAI`).
    pub operator: String,
}

#[derive(Deserialize)]
struct File {
    referrers: Vec<Referrer>,
}

static REFERRERS: LazyLock<Vec<Referrer>> = LazyLock::new(|| {
    // The file is compiled in and checked by a test: it cannot fail at run time.
    #[allow(clippy::expect_used)]
    let file: File = serde_json::from_str(REFERRERS_JSON).expect("catalogue/referrers.json");
    file.referrers
});

/// Every assistant host.
pub fn all() -> &'static [Referrer] {
    &REFERRERS
}

/// The hosts and their operators as two parallel lists (what the analytics queries bind).
pub fn hosts_and_operators() -> (Vec<&'static str>, Vec<&'static str>) {
    all()
        .iter()
        .map(|r| (r.host.as_str(), r.operator.as_str()))
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_reads_and_each_host_is_normal_and_listed_once() {
        let mut hosts: Vec<&str> = all().iter().map(|r| r.host.as_str()).collect();
        assert!(hosts.len() >= 10, "{hosts:?}");
        for r in all() {
            assert_eq!(r.host, r.host.to_ascii_lowercase(), "{r:?}");
            assert!(!r.host.starts_with("www."), "{r:?}: url_host drops www.");
            assert!(!r.operator.is_empty() && !r.assistant.is_empty(), "{r:?}");
        }
        hosts.sort_unstable();
        let before = hosts.len();
        hosts.dedup();
        assert_eq!(before, hosts.len(), "a host is listed twice");
    }

    #[test]
    fn operators_that_run_crawlers_are_spelled_as_the_bot_catalogue_spells_them() {
        let catalogue: crate::domain::bots::Catalogue =
            serde_json::from_str(crate::domain::bots::CATALOGUE_JSON).expect("catalogue");
        let crawling: std::collections::BTreeSet<&str> = catalogue
            .entries
            .iter()
            .filter_map(|e| e.operator.as_deref())
            .collect();
        for name in [
            "OpenAI",
            "Perplexity",
            "Anthropic",
            "Google",
            "Mistral AI",
            "Meta",
        ] {
            assert!(crawling.contains(name), "{name} is not in bots.json");
            assert!(
                all().iter().any(|r| r.operator == name),
                "{name} refers nobody"
            );
        }
    }
}
