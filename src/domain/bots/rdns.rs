//! Forward-confirmed reverse DNS: which operators document it as the way to verify their
//! crawlers, and the host names their addresses resolve to. Pure: the lookups are
//! `infra::rdns`.
//!
//! A visit is verified at level `rdns` when its address's PTR name ends in one of its
//! operator's documented domains and that name resolves back to the address. Only operators
//! that document the check are listed (their crawler-verification pages):
//! - Google: `googlebot.com`, `google.com`, `googleusercontent.com` (its crawlers and
//!   user-triggered fetchers);
//! - Microsoft (Bingbot): `search.msn.com`;
//! - Apple (Applebot): `applebot.apple.com`;
//! - Yandex: `yandex.ru`, `yandex.net`, `yandex.com`;
//! - Baidu (Baiduspider): `baidu.com`, `baidu.jp`;
//! - Amazon (Amazonbot): `crawl.amazonbot.amazon`;
//! - Huawei (PetalBot): `petalsearch.com`.

use super::Classification;

/// One operator's documented domains, and how its bots are recognised (by operator, or by a
/// bot name prefix where the catalogue names no operator).
struct Documented {
    operator: &'static str,
    bot_prefixes: &'static [&'static str],
    domains: &'static [&'static str],
}

const DOCUMENTED: &[Documented] = &[
    Documented {
        operator: "Google",
        bot_prefixes: &[
            "googlebot",
            "google-",
            "googleother",
            "storebot-google",
            "adsbot-google",
            "mediapartners-google",
            "apis-google",
            "feedfetcher-google",
        ],
        domains: &["googlebot.com", "google.com", "googleusercontent.com"],
    },
    Documented {
        operator: "Microsoft",
        bot_prefixes: &["bingbot", "bingpreview", "msnbot", "adidxbot"],
        domains: &["search.msn.com"],
    },
    Documented {
        operator: "Apple",
        bot_prefixes: &["applebot"],
        domains: &["applebot.apple.com"],
    },
    Documented {
        operator: "Yandex",
        bot_prefixes: &["yandex"],
        domains: &["yandex.ru", "yandex.net", "yandex.com"],
    },
    Documented {
        operator: "Baidu",
        bot_prefixes: &["baiduspider"],
        domains: &["baidu.com", "baidu.jp"],
    },
    Documented {
        operator: "Amazon",
        bot_prefixes: &["amazonbot"],
        domains: &["crawl.amazonbot.amazon"],
    },
    Documented {
        operator: "Huawei",
        bot_prefixes: &["petalbot"],
        domains: &["petalsearch.com"],
    },
];

/// The domains whose hosts may carry this bot's requests, when its operator documents
/// reverse DNS verification.
pub fn documented_domains(c: &Classification) -> Option<&'static [&'static str]> {
    if !c.is_bot() {
        return None;
    }
    let name = c
        .bot_name
        .as_deref()
        .unwrap_or_default()
        .to_ascii_lowercase();
    DOCUMENTED
        .iter()
        .find(|d| {
            c.operator
                .as_deref()
                .is_some_and(|o| o.eq_ignore_ascii_case(d.operator))
                || (!name.is_empty() && d.bot_prefixes.iter().any(|p| name.starts_with(p)))
        })
        .map(|d| d.domains)
}

/// Whether `host` (a PTR name, with or without its final dot) is one of `domains` or under one.
pub fn host_in(host: &str, domains: &[&str]) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    domains
        .iter()
        .any(|d| host == *d || host.strip_suffix(d).is_some_and(|rest| rest.ends_with('.')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::bots::Classifier;

    fn domains(ua: &str) -> Option<&'static [&'static str]> {
        documented_domains(&Classifier::shipped().classify(ua))
    }

    #[test]
    fn the_operators_that_document_it_are_known_by_their_bots() {
        let google =
            domains("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
        assert_eq!(
            google,
            Some(&["googlebot.com", "google.com", "googleusercontent.com"][..])
        );
        assert_eq!(
            domains("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"),
            Some(&["search.msn.com"][..])
        );
        assert_eq!(
            domains(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)"
            ),
            Some(&["applebot.apple.com"][..])
        );
        assert_eq!(
            domains(
                "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"
            ),
            None,
            "OpenAI publishes ranges, not reverse DNS"
        );
        assert_eq!(
            domains("Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"),
            None
        );
    }

    #[test]
    fn a_host_is_in_a_domain_only_at_a_label_boundary() {
        let google = ["googlebot.com", "google.com"];
        assert!(host_in("crawl-66-249-66-1.googlebot.com.", &google));
        assert!(host_in(
            "rate-limited-proxy-66-249-90-77.google.com",
            &google
        ));
        assert!(host_in("GoogleBot.com", &google));
        assert!(!host_in("evilgooglebot.com", &google));
        assert!(!host_in("googlebot.com.evil.test", &google));
        assert!(!host_in("", &google));
    }
}
