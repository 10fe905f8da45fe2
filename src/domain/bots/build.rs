//! Builds the bot catalogue from the public lists. Pure: `ai-cache catalogue build` reads the
//! files and writes the results.
//!
//! Inputs:
//! - ai.robots.txt's `robots.json`: AI user-agent *tokens* (`GPTBot`) with operator and a
//!   free-text function;
//! - crawler-user-agents' `crawler-user-agents.json`: regular expressions for 1,500 crawlers,
//!   tagged (`ai-crawler`, `search-engine`, `seo`, ...), with real user agents as `instances`;
//! - our `overrides.json`: names for patterns no rule can name, operator spellings, the
//!   categories of the best-known bots, and the few entries neither list has (the Worker
//!   proxy, the catch-all of unnamed bots).
//!
//! Order decides (the first matching entry wins): our extra entries; then every
//! crawler-user-agents pattern that is tagged `ai-crawler` or names an ai.robots.txt token
//! (an AI bot); then the ai.robots.txt tokens no pattern names, longest first (as words, any
//! case); then search engines; then every other crawler; then the catch-all.

use std::collections::{BTreeMap, HashSet};

use regex::Regex;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Catalogue, Entry, Source, VisitorType, category};

/// Why the catalogue cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{file} is not in the expected format: {reason}")]
    Format { file: &'static str, reason: String },
    #[error(
        "crawler-user-agents pattern {pattern:?} has no readable name: add it to overrides.json `names`"
    )]
    Unnamed { pattern: String },
}

/// The inputs, as read from disk.
#[derive(Debug)]
pub struct Inputs<'a> {
    pub robots_json: &'a str,
    pub crawler_user_agents_json: &'a str,
    pub overrides_json: &'a str,
}

/// What the build noticed (patterns dropped because Rust cannot compile them, ...).
#[derive(Debug, Default)]
pub struct Report {
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
struct RobotsInfo {
    #[serde(default)]
    operator: String,
    #[serde(default)]
    function: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct CrawlerPattern {
    pattern: String,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Overrides {
    /// Names of patterns the rules cannot name, by pattern.
    #[serde(default)]
    names: BTreeMap<String, String>,
    /// Operator spellings, by the spelling the lists use.
    #[serde(default)]
    operators: BTreeMap<String, Option<String>>,
    /// Field values by bot name.
    #[serde(default)]
    bots: BTreeMap<String, BotOverride>,
    /// Entries placed first.
    #[serde(default)]
    first: Vec<Entry>,
    /// Entries placed last.
    #[serde(default)]
    last: Vec<Entry>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct BotOverride {
    visitor_type: Option<VisitorType>,
    operator: Option<String>,
    category: Option<String>,
}

fn format_error(file: &'static str) -> impl Fn(serde_json::Error) -> BuildError {
    move |e| BuildError::Format {
        file,
        reason: e.to_string(),
    }
}

/// Builds the catalogue.
pub fn build(inputs: &Inputs<'_>) -> Result<(Catalogue, Report), BuildError> {
    let robots: BTreeMap<String, RobotsInfo> =
        serde_json::from_str(inputs.robots_json).map_err(format_error("robots.json"))?;
    let crawlers: Vec<CrawlerPattern> = serde_json::from_str(inputs.crawler_user_agents_json)
        .map_err(format_error("crawler-user-agents.json"))?;
    let overrides: Overrides =
        serde_json::from_str(inputs.overrides_json).map_err(format_error("overrides.json"))?;
    let builder = Builder {
        robots: &robots,
        overrides: &overrides,
    };
    let mut report = Report::default();
    let mut ai = Vec::new();
    let mut search = Vec::new();
    let mut other = Vec::new();
    let mut covered: HashSet<String> = HashSet::new();
    for crawler in &crawlers {
        let Ok(re) = Regex::new(&crawler.pattern) else {
            report.warnings.push(format!(
                "pattern {:?} does not compile in Rust: left out",
                crawler.pattern
            ));
            continue;
        };
        let (name, entry) = builder.pattern_entry(crawler, &re)?;
        covered.insert(name.to_lowercase());
        match entry.visitor_type {
            VisitorType::AiBot => ai.push(entry),
            VisitorType::SearchBot => search.push(entry),
            _ => other.push(entry),
        }
    }
    let from_tokens = builder.token_entries(covered);
    let mut entries = overrides.first.clone();
    entries.extend(ai);
    entries.extend(from_tokens);
    entries.extend(search);
    entries.extend(other);
    entries.extend(overrides.last.clone());
    Ok((
        Catalogue {
            sources: sources(inputs),
            entries,
        },
        report,
    ))
}

/// What the entries are made from.
struct Builder<'a> {
    robots: &'a BTreeMap<String, RobotsInfo>,
    overrides: &'a Overrides,
}

impl Builder<'_> {
    /// An operator's name as the catalogue spells it.
    fn operator(&self, raw: &str) -> Option<String> {
        let cleaned = clean_operator(raw);
        match self
            .overrides
            .operators
            .get(cleaned.as_deref().unwrap_or(raw))
        {
            Some(renamed) => renamed.clone(),
            None => cleaned,
        }
    }

    /// The entry of one crawler-user-agents pattern (`re` compiled), named and classified,
    /// with the name it was given before the overrides.
    fn pattern_entry(
        &self,
        crawler: &CrawlerPattern,
        re: &Regex,
    ) -> Result<(String, Entry), BuildError> {
        let tokens: Vec<&String> = self.robots.keys().filter(|t| re.is_match(t)).collect();
        let derived = self
            .overrides
            .names
            .get(&crawler.pattern)
            .cloned()
            .or_else(|| display_name(&crawler.pattern))
            .or_else(|| longest_literal(&crawler.pattern));
        // A token spelled like the derived name gives the spelling (`[cC]laude[bB]ot` is ClaudeBot).
        let token = tokens
            .iter()
            .find(|t| {
                derived
                    .as_deref()
                    .is_some_and(|d| d.eq_ignore_ascii_case(unversioned(t)))
            })
            .copied();
        let name = match (token, derived) {
            (Some(t), _) => t.clone(),
            (None, Some(d)) => d,
            (None, None) => {
                return Err(BuildError::Unnamed {
                    pattern: crawler.pattern.clone(),
                });
            }
        };
        let tagged = |t: &str| crawler.tags.iter().any(|x| x == t);
        // The token of the same name is this bot; other tokens the pattern happens to match
        // (`SemrushBot-SWA` for `SemrushBot`) are bots of their own, listed after.
        let info = token.and_then(|t| self.robots.get(t));
        let mut entry = Entry {
            name: Some(name.clone()),
            pattern: crawler.pattern.clone(),
            ignore_case: false,
            visitor_type: VisitorType::OtherBot,
            operator: info.and_then(|i| self.operator(&i.operator)),
            category: crawler.tags.first().cloned(),
        };
        if tagged("ai-crawler") || info.is_some() {
            entry.visitor_type = VisitorType::AiBot;
            entry.category = ai_category(&name, info, &crawler.tags);
        } else if tagged("search-engine") {
            entry.visitor_type = VisitorType::SearchBot;
            entry.category = Some(category::SEARCH.to_owned());
        }
        apply_override(&mut entry, self.overrides.bots.get(&name));
        Ok((name, entry))
    }

    /// Entries for the ai.robots.txt tokens no pattern covers (`covered`: lowercase names),
    /// once per spelling, longest first so that `Claude-Code` is tried before `Code`.
    fn token_entries(&self, covered: HashSet<String>) -> Vec<Entry> {
        let mut seen = covered;
        let mut tokens: Vec<(&String, &RobotsInfo)> = self
            .robots
            .iter()
            .filter(|(t, _)| seen.insert(unversioned(t).to_lowercase()))
            .collect();
        tokens.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(b.0)));
        let mut entries = Vec::new();
        for (token, info) in tokens {
            let token = unversioned(token);
            let mut entry = Entry {
                name: Some(token.to_owned()),
                pattern: format!(
                    "(?:^|[^A-Za-z0-9]){}(?:[^A-Za-z0-9]|$)",
                    regex::escape(token)
                ),
                ignore_case: true,
                visitor_type: VisitorType::AiBot,
                operator: self.operator(&info.operator),
                category: ai_category(token, Some(info), &[]),
            };
            apply_override(&mut entry, self.overrides.bots.get(token));
            entries.push(entry);
        }
        entries
    }
}

/// The inputs the catalogue was built from, each with its SHA-256.
fn sources(inputs: &Inputs<'_>) -> Vec<Source> {
    [
        ("ai-robots-txt/robots.json", inputs.robots_json),
        (
            "crawler-user-agents/crawler-user-agents.json",
            inputs.crawler_user_agents_json,
        ),
        ("catalogue/overrides.json", inputs.overrides_json),
    ]
    .into_iter()
    .map(|(name, text)| Source {
        name: name.to_owned(),
        sha256: hex::encode(Sha256::digest(text.as_bytes())),
    })
    .collect()
}

/// One expected classification, shared with the Worker's tests.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Vector {
    pub user_agent: String,
    pub visitor_type: VisitorType,
    pub bot_name: Option<String>,
    pub operator: Option<String>,
    pub category: Option<String>,
}

/// The classifier's answers for every real user agent of the lists (each crawler's
/// `instances`, and the browsers), plus the blank user agent: the test vectors both the
/// Rust classifier and the Worker's are held to.
pub fn vectors(
    classifier: &super::Classifier,
    crawler_user_agents_json: &str,
    browsers_json: &str,
    more_bots_json: &str,
) -> Result<Vec<Vector>, BuildError> {
    #[derive(Deserialize)]
    struct WithInstances {
        #[serde(default)]
        instances: Vec<String>,
    }
    let crawlers: Vec<WithInstances> = serde_json::from_str(crawler_user_agents_json)
        .map_err(format_error("crawler-user-agents.json"))?;
    let browsers: Vec<String> =
        serde_json::from_str(browsers_json).map_err(format_error("browsers index.json"))?;
    let more_bots: Vec<String> =
        serde_json::from_str(more_bots_json).map_err(format_error("the bot corpus"))?;
    let mut seen = HashSet::new();
    let agents = crawlers
        .into_iter()
        .flat_map(|c| c.instances)
        .chain(browsers)
        .chain(more_bots)
        .chain([String::new()])
        .filter(|ua| seen.insert(ua.clone()));
    Ok(agents
        .map(|ua| {
            let c = classifier.classify(&ua);
            Vector {
                user_agent: ua,
                visitor_type: c.visitor_type,
                bot_name: c.bot_name,
                operator: c.operator,
                category: c.category,
            }
        })
        .collect())
}

fn apply_override(entry: &mut Entry, over: Option<&BotOverride>) {
    let Some(over) = over else { return };
    if let Some(t) = over.visitor_type {
        entry.visitor_type = t;
    }
    if over.operator.is_some() {
        entry.operator.clone_from(&over.operator);
    }
    if over.category.is_some() {
        entry.category.clone_from(&over.category);
    }
}

/// `[OpenAI](https://openai.com)` → `OpenAI`; "Unclear at this time." → none; a sentence
/// ("Kagi that fetches web content ...") → its subject.
fn clean_operator(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let text = match (raw.strip_prefix('['), raw.find("](")) {
        (Some(rest), Some(end)) => rest[..end - 1].to_owned(),
        _ => raw.to_owned(),
    };
    let lower = text.to_lowercase();
    if text.is_empty()
        || lower.starts_with("unclear")
        || lower == "unknown"
        || lower.starts_with("http")
        || lower.starts_with("anyone")
    {
        return None;
    }
    let mut subject = text.as_str();
    for cut in [", ", " that ", " (", ". ", " to ", " used "] {
        if let Some(i) = subject.find(cut) {
            subject = &subject[..i];
        }
    }
    Some(subject.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The category of an AI bot from its name, its ai.robots.txt function and its tags.
fn ai_category(name: &str, info: Option<&RobotsInfo>, tags: &[String]) -> Option<String> {
    let name_l = name.to_lowercase();
    // The function says what the bot is for; the description (without its links, which
    // often point at knownagents.com) only helps to tell training crawlers.
    let function = info.map(|i| i.function.to_lowercase()).unwrap_or_default();
    let description = info
        .map(|i| {
            i.description
                .split_whitespace()
                .filter(|w| !w.contains("://"))
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        })
        .unwrap_or_default();
    let has = |words: &[&str]| words.iter().any(|w| function.contains(w));
    let tagged = |t: &str| tags.iter().any(|x| x == t);
    let c = if name_l.ends_with("-user")
        || name_l.ends_with("user") && !name_l.ends_with("buser")
        || has(&[
            "ai assistants",
            "user-initiated",
            "on behalf of",
            "user queries",
        ]) {
        category::USER_FETCH
    } else if (name_l.contains("agent") && !name_l.contains("externalagent"))
        || tagged("browser-automation")
        || has(&["agents", "takes action"])
    {
        category::AGENT
    } else if name_l.contains("search") || tagged("search-engine") || has(&["search"]) {
        category::SEARCH
    } else if [
        "train",
        "llm",
        "language model",
        "dataset",
        "machine learning",
        "scrape",
        "scraping",
        "ai data",
    ]
    .iter()
    .any(|w| function.contains(w) || description.contains(w))
    {
        category::TRAINING
    } else {
        return None;
    };
    Some(c.to_owned())
}

/// A readable name for a pattern: `PerplexityBot\/` → `PerplexityBot`, `[cC]laude[bB]ot` →
/// `ClaudeBot`, `S[eE][mM]rushBot` → `SEMrushBot` (overrides fix the rare misspelling).
/// None when the pattern is too irregular to read.
fn display_name(pattern: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) if e.is_ascii_punctuation() => out.push(e),
                _ => return None,
            },
            '[' => {
                let mut class = String::new();
                for k in chars.by_ref() {
                    if k == ']' {
                        break;
                    }
                    class.push(k);
                }
                let pick = class
                    .chars()
                    .find(char::is_ascii_uppercase)
                    .or_else(|| class.chars().next())?;
                if class.contains('-') || class.starts_with('^') {
                    return None;
                }
                out.push(pick);
            }
            '^' | '$' => {}
            '(' | ')' | '|' | '*' | '+' | '?' | '{' | '}' => return None,
            c => out.push(c),
        }
    }
    let name = out.trim().trim_end_matches(['/', ' ', '.', ';']).to_owned();
    (!name.is_empty()).then_some(name)
}

/// A token without the version some lists append: `MistralAI-User/1.0` → `MistralAI-User`.
fn unversioned(token: &str) -> &str {
    match token.rfind(['/', ' ']) {
        Some(i) if token[i + 1..].starts_with(|c: char| c.is_ascii_digit()) => &token[..i],
        _ => token,
    }
}

/// The longest run of plain name characters in an irregular pattern:
/// `AdsBot-Google([^-]|$)` → `AdsBot-Google`.
fn longest_literal(pattern: &str) -> Option<String> {
    let mut best = "";
    for run in pattern.split(|c: char| !(c.is_ascii_alphanumeric() || "-_ ".contains(c))) {
        let run = run.trim();
        if run.len() > best.len() {
            best = run;
        }
    }
    (best.len() >= 3).then(|| best.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_are_read_from_links_and_sentences() {
        assert_eq!(
            clean_operator("[OpenAI](https://openai.com)").as_deref(),
            Some("OpenAI")
        );
        assert_eq!(clean_operator("Unclear at this time."), None);
        assert_eq!(
            clean_operator("Kagi that fetches web content to answer user queries").as_deref(),
            Some("Kagi")
        );
        assert_eq!(
            clean_operator("Ai2, a non-profit AI research institute").as_deref(),
            Some("Ai2")
        );
        assert_eq!(clean_operator("https://brightdata.com/brightbot"), None);
    }

    #[test]
    fn pattern_names() {
        assert_eq!(
            display_name("PerplexityBot\\/").as_deref(),
            Some("PerplexityBot")
        );
        assert_eq!(
            display_name("[cC]laude[bB]ot").as_deref(),
            Some("ClaudeBot")
        );
        assert_eq!(display_name("bigsur\\.ai").as_deref(), Some("bigsur.ai"));
        assert_eq!(
            display_name("^Mozilla\\/5\\.0$").as_deref(),
            Some("Mozilla/5.0")
        );
        assert_eq!(display_name("Spider[\\s\\S]*spider"), None);
        assert_eq!(display_name("a|b"), None);
        assert_eq!(
            longest_literal("AdsBot-Google([^-]|$)").as_deref(),
            Some("AdsBot-Google")
        );
        assert_eq!(longest_literal("(a|b)+"), None);
    }

    #[test]
    fn categories_follow_names_and_functions() {
        let info = |f: &str| RobotsInfo {
            operator: String::new(),
            function: f.to_owned(),
            description: String::new(),
        };
        let cat = |n: &str, f: &str| ai_category(n, Some(&info(f)), &[]);
        assert_eq!(
            cat("ChatGPT-User", "AI Assistants").as_deref(),
            Some("user_fetch")
        );
        assert_eq!(cat("Cursor", "AI Coding Agents").as_deref(), Some("agent"));
        assert_eq!(
            cat("OAI-SearchBot", "Search result generation.").as_deref(),
            Some("search")
        );
        assert_eq!(
            cat("GPTBot", "Scrapes data to train OpenAI's products.").as_deref(),
            Some("training")
        );
        assert_eq!(cat("Mystery", "Unclear at this time."), None);
    }

    /// The shipped catalogue is what the build makes of the copies of the lists in
    /// `catalogue/sources` and our overrides: nobody edited bots.json by hand.
    #[test]
    fn the_shipped_catalogue_is_the_build_of_its_sources() {
        let (built, report) = build(&Inputs {
            robots_json: include_str!("../../../catalogue/sources/ai-robots-txt/robots.json"),
            crawler_user_agents_json: include_str!(
                "../../../catalogue/sources/crawler-user-agents/crawler-user-agents.json"
            ),
            overrides_json: include_str!("../../../catalogue/overrides.json"),
        })
        .expect("build");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let shipped: Catalogue = serde_json::from_str(super::super::CATALOGUE_JSON).expect("json");
        assert!(
            built == shipped,
            "catalogue/bots.json is stale: run `ai-cache catalogue build`"
        );
    }
}
