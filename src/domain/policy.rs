//! What each visitor gets from the edge, per client: an ordered list of rules matched against
//! who the visitor is (bot, operator, category, kind, verification level), the first match
//! deciding the action; a default rule for everyone no rule matches. Pure, and evaluated the
//! same way by the Cloudflare Worker (`worker/src/policy.js`): both are tested against
//! `tests/fixtures/policy-vectors.json`.
//!
//! Actions:
//! - `auto` (the default's default, the behaviour before policies existed): known AI agents
//!   get the client's `ai_format` (minimal HTML unless set to Markdown), everyone else passes.
//! - `serve_markdown`, `serve_html`: the cached variant.
//! - `pass`: the origin answers, untouched.
//! - `block`: 403 with the rule's body (plain text, or Markdown when Markdown was asked for).
//! - `charge`: Cloudflare's pay-per-crawl header protocol. A request without a price header
//!   gets 402 with `crawler-price`; a retry carrying `crawler-exact-price` equal to the price,
//!   or `crawler-max-price` at or above it, gets the content with `crawler-charged` (and the
//!   visit records the price). Malformed, conflicting or too-low offers get the protocol's
//!   `crawler-error` codes. Settlement (who pays whom) is out of scope: ai-cache records what
//!   was charged, it moves no money.
//!
//! Whatever the action, asking for Markdown explicitly (the `.md` variant, or
//! `Accept: text/markdown`) gets Markdown, unless the rule blocks or charges: those hold for
//! every variant of a page.

use serde::{Deserialize, Serialize};

use super::bots::Classification;
use super::client::FieldError;
use super::edge::{Serve, accepts_markdown, page_of_markdown_path};
use super::visit::{Verification, VisitorType};

/// Most rules a client may have.
pub const MAX_RULES: usize = 100;
/// Longest bot, operator or category name in a rule.
pub const MAX_NAME_LEN: usize = 100;
/// Longest body of a `block` rule.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Longest `Content-Signal` value.
pub const MAX_CONTENT_SIGNAL_LEN: usize = 256;

/// The body of a `block` answer when its rule names none.
pub const DEFAULT_BLOCK_BODY: &str =
    "Access to this content by automated agents is not allowed by the site owner.\n";

/// A client's edge policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgePolicy {
    /// Tried in order; the first whose conditions all hold decides.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// What a request no rule matches gets (its conditions must be empty).
    #[serde(default)]
    pub default: Rule,
    /// What known AI agents get under `auto` when they do not ask for Markdown.
    #[serde(default)]
    #[schema(value_type = String)]
    pub ai_format: Format,
    /// The `Content-Signal` header sent with cached content (`ai-train=no, search=yes,
    /// ai-input=yes`); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_signal: Option<String>,
    /// Whether the edge answers `/robots.txt` itself: the site's own file, as the scraper last
    /// read it, with the `content_signal` in its `User-agent: *` group
    /// ([`super::robots_txt`]). Off: robots.txt goes to the origin.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub robots_txt: bool,
    /// Whether pages' Markdown starts with YAML front matter (title, source URL, description,
    /// language, last modification: [`super::front_matter`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub front_matter: bool,
}

/// The variant served to known AI agents that do not ask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Html,
    Markdown,
}

/// What a rule does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    Auto,
    ServeMarkdown,
    ServeHtml,
    Pass,
    Block,
    Charge,
}

/// A rule: conditions (all optional, all must hold) and an action with its parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The bot's name as the catalogue spells it (`GPTBot`), compared without case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot: Option<String>,
    /// The bot's operator (`OpenAI`), compared without case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The bot's category: `training`, `search`, `user_fetch`, `agent` (AI bots), or a tag of
    /// other bots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// `ai_bot`, `search_bot`, `other_bot`, `human` or `worker_proxy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub visitor_type: Option<VisitorType>,
    /// The verification levels the rule applies to (`ip_verified`, `claimed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub verification: Option<Vec<Verification>>,
    /// `auto`, `serve_markdown`, `serve_html`, `pass`, `block` or `charge`.
    #[serde(default)]
    #[schema(value_type = String)]
    pub action: Action,
    /// The price of a `charge` rule, `USD 0.01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub price: Option<Price>,
    /// The body of a `block` answer (plain text or Markdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl Rule {
    fn has_conditions(&self) -> bool {
        self.bot.is_some()
            || self.operator.is_some()
            || self.category.is_some()
            || self.visitor_type.is_some()
            || self.verification.is_some()
    }

    fn matches(&self, visitor: &Classification, verification: Verification) -> bool {
        let same = |want: &Option<String>, have: &Option<String>| match want {
            None => true,
            Some(w) => have.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(w)),
        };
        same(&self.bot, &visitor.bot_name)
            && same(&self.operator, &visitor.operator)
            && self
                .category
                .as_deref()
                .is_none_or(|c| visitor.category.as_deref() == Some(c))
            && self.visitor_type.is_none_or(|t| t == visitor.visitor_type)
            && self
                .verification
                .as_ref()
                .is_none_or(|levels| levels.contains(&verification))
    }

    fn validate(&self, field: &str) -> Result<(), FieldError> {
        let err = |name: &str, message: &str| FieldError::new(format!("{field}.{name}"), message);
        for (name, value) in [
            ("bot", &self.bot),
            ("operator", &self.operator),
            ("category", &self.category),
        ] {
            if let Some(v) = value
                && (v.trim().is_empty()
                    || v.len() > MAX_NAME_LEN
                    || v.chars().any(char::is_control))
            {
                return Err(err(
                    name,
                    &format!("must be 1 to {MAX_NAME_LEN} printable characters"),
                ));
            }
        }
        if self.verification.as_ref().is_some_and(Vec::is_empty) {
            return Err(err(
                "verification",
                "must name at least one level (leave it out to match any)",
            ));
        }
        match (self.action, &self.price) {
            (Action::Charge, None) => {
                return Err(err(
                    "price",
                    "a charge rule needs a price such as \"USD 0.01\"",
                ));
            }
            (Action::Charge, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err(err("price", "only a charge rule has a price")),
        }
        match (self.action, &self.body) {
            (Action::Block, Some(b)) if b.len() > MAX_BODY_BYTES => Err(err(
                "body",
                &format!("must be at most {MAX_BODY_BYTES} bytes"),
            )),
            (Action::Block, _) | (_, None) => Ok(()),
            (_, Some(_)) => Err(err("body", "only a block rule has a body")),
        }
    }
}

impl EdgePolicy {
    /// Whether this is the default policy (left out of events, which then read as before).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks what serde cannot: bounds, and parameters that only some actions take.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.rules.len() > MAX_RULES {
            return Err(FieldError::new(
                "settings.edge.rules",
                format!("at most {MAX_RULES} rules"),
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(&format!("settings.edge.rules[{i}]"))?;
        }
        if self.default.has_conditions() {
            return Err(FieldError::new(
                "settings.edge.default",
                "the default rule applies to everyone: it takes an action, no conditions",
            ));
        }
        self.default.validate("settings.edge.default")?;
        if let Some(signal) = &self.content_signal
            && (signal.len() > MAX_CONTENT_SIGNAL_LEN
                || !signal.bytes().all(|b| b == b' ' || b.is_ascii_graphic()))
        {
            return Err(FieldError::new(
                "settings.edge.content_signal",
                format!(
                    "must be at most {MAX_CONTENT_SIGNAL_LEN} printable ASCII characters, such as \"ai-train=no, search=yes, ai-input=yes\""
                ),
            ));
        }
        Ok(())
    }

    /// The rule deciding for this visitor: the first that matches, else the default.
    pub fn rule_for(&self, visitor: &Classification, verification: Verification) -> &Rule {
        self.rules
            .iter()
            .find(|r| r.matches(visitor, verification))
            .unwrap_or(&self.default)
    }
}

/// A price in a currency, as pay-per-crawl writes it: `USD 0.01`. Compared exactly, in
/// millionths (parsed by hand: a three-letter code and a decimal with at most six places is
/// all the protocol uses, and the Worker must parse it identically).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Price {
    currency: String,
    micros: u64,
}

/// A price header or setting that is not `CUR 0.00`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a price is a currency code and an amount, such as \"USD 0.01\" (at most 6 decimals)")]
pub struct BadPrice;

impl std::str::FromStr for Price {
    type Err = BadPrice;

    fn from_str(s: &str) -> Result<Self, BadPrice> {
        let (currency, amount) = s.trim().split_once(' ').ok_or(BadPrice)?;
        let amount = amount.trim();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(BadPrice);
        }
        let (units, fraction) = amount.split_once('.').unwrap_or((amount, ""));
        let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if units.is_empty()
            || units.len() > 9
            || !digits(units)
            || fraction.len() > 6
            || !digits(fraction)
            || (amount.contains('.') && fraction.is_empty())
        {
            return Err(BadPrice);
        }
        let units: u64 = units.parse().map_err(|_| BadPrice)?;
        let fraction: u64 = format!("{fraction:0<6}").parse().map_err(|_| BadPrice)?;
        Ok(Self {
            currency: currency.to_owned(),
            micros: units * 1_000_000 + fraction,
        })
    }
}

impl TryFrom<String> for Price {
    type Error = BadPrice;

    fn try_from(s: String) -> Result<Self, BadPrice> {
        s.parse()
    }
}

impl From<Price> for String {
    fn from(p: Price) -> String {
        p.to_string()
    }
}

/// `USD 0.01`: at least two decimals, trailing zeros beyond them dropped.
impl std::fmt::Display for Price {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fraction = format!("{:06}", self.micros % 1_000_000);
        let fraction = fraction.trim_end_matches('0');
        write!(
            f,
            "{} {}.{fraction:0<2}",
            self.currency,
            self.micros / 1_000_000
        )
    }
}

/// A request as the policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The request path, without the query.
    pub path: &'a str,
    pub accept: &'a str,
    pub visitor: &'a Classification,
    pub verification: Verification,
    /// The `crawler-exact-price` header, if sent.
    pub exact_price: Option<&'a str>,
    /// The `crawler-max-price` header, if sent.
    pub max_price: Option<&'a str>,
}

/// What the edge answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The cached variant (the origin's answer when the page is not cached); `charged` when a
    /// charge rule's price was accepted.
    Serve {
        serve: Serve,
        charged: Option<Price>,
    },
    /// The origin, untouched.
    Pass,
    /// 403 with this body.
    Block { body: String, markdown: bool },
    /// 402 (or 400 for an unusable offer) with `crawler-price` and, for a refused offer, a
    /// `crawler-error` code.
    PaymentRequired {
        status: u16,
        price: Price,
        error: Option<&'static str>,
    },
}

/// The policy's answer to a request, and the page path it is about (the `.md` suffix removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub answer: Answer,
    pub page_path: String,
    /// Whether the Markdown variant was asked for by its path.
    pub explicit_markdown: bool,
}

/// Decides what `request` gets under `policy`.
pub fn decide(policy: &EdgePolicy, request: &Request<'_>) -> Decision {
    let (page_path, explicit_markdown) = match page_of_markdown_path(request.path) {
        Some(page) => (page, true),
        None => (request.path.to_owned(), false),
    };
    let asks_markdown = explicit_markdown || accepts_markdown(request.accept);
    let rule = policy.rule_for(request.visitor, request.verification);
    let serve = |serve| Answer::Serve {
        serve,
        charged: None,
    };
    let asked_or = |otherwise: Answer| {
        if asks_markdown {
            serve(Serve::Markdown)
        } else {
            otherwise
        }
    };
    let ai_format = match policy.ai_format {
        Format::Html => Serve::Html,
        Format::Markdown => Serve::Markdown,
    };
    let answer = match rule.action {
        Action::Auto if request.visitor.is_ai() => asked_or(serve(ai_format)),
        Action::Auto | Action::Pass => asked_or(Answer::Pass),
        Action::ServeMarkdown => serve(Serve::Markdown),
        Action::ServeHtml => asked_or(serve(Serve::Html)),
        Action::Block => Answer::Block {
            body: rule
                .body
                .clone()
                .unwrap_or_else(|| DEFAULT_BLOCK_BODY.to_owned()),
            markdown: asks_markdown,
        },
        Action::Charge => match &rule.price {
            Some(price) => {
                let served = if asks_markdown {
                    Serve::Markdown
                } else {
                    ai_format
                };
                charge(price, request, served)
            }
            // Validation refuses a charge without a price; were one stored, refuse access
            // rather than give the content away.
            None => Answer::Block {
                body: DEFAULT_BLOCK_BODY.to_owned(),
                markdown: asks_markdown,
            },
        },
    };
    Decision {
        answer,
        page_path,
        explicit_markdown,
    }
}

/// The pay-per-crawl exchange for a page costing `price`.
fn charge(price: &Price, request: &Request<'_>, served: Serve) -> Answer {
    let refuse = |status, error| Answer::PaymentRequired {
        status,
        price: price.clone(),
        error,
    };
    let offer = match (request.exact_price, request.max_price) {
        (None, None) => return refuse(402, None),
        (Some(_), Some(_)) => return refuse(400, Some("ConflictingPriceHeaders")),
        (Some(exact), None) => exact.parse::<Price>().map(|p| (p, true)),
        (None, Some(max)) => max.parse::<Price>().map(|p| (p, false)),
    };
    match offer {
        Err(BadPrice) => refuse(400, Some("InvalidCrawlerPriceValue")),
        Ok((offer, true)) if offer != *price => refuse(402, Some("InvalidCrawlerExactPrice")),
        Ok((offer, false)) if offer.currency != price.currency || offer.micros < price.micros => {
            refuse(402, Some("InvalidCrawlerMaxPrice"))
        }
        Ok(_) => Answer::Serve {
            serve: served,
            charged: Some(price.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::bots::Classifier;

    #[derive(Deserialize)]
    struct Vectors {
        cases: Vec<Case>,
    }

    #[derive(Deserialize)]
    struct Case {
        name: String,
        policy: EdgePolicy,
        path: String,
        user_agent: String,
        #[serde(default)]
        accept: String,
        #[serde(default = "claimed")]
        verification: Verification,
        #[serde(default)]
        exact_price: Option<String>,
        #[serde(default)]
        max_price: Option<String>,
        expect: Expect,
    }

    fn claimed() -> Verification {
        Verification::Claimed
    }

    /// The answer, flattened as the Worker's test reads it too.
    #[derive(Deserialize, Debug, PartialEq)]
    struct Expect {
        /// `markdown`, `html`, `pass`, `block` or `payment`.
        answer: String,
        page_path: String,
        #[serde(default)]
        status: Option<u16>,
        #[serde(default)]
        price: Option<String>,
        #[serde(default)]
        charged: Option<String>,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        body: Option<String>,
    }

    fn flatten(d: &Decision) -> Expect {
        let mut e = Expect {
            answer: String::new(),
            page_path: d.page_path.clone(),
            status: None,
            price: None,
            charged: None,
            error: None,
            body: None,
        };
        match &d.answer {
            Answer::Serve { serve, charged } => {
                e.answer = match serve {
                    Serve::Markdown => "markdown",
                    Serve::Html => "html",
                    Serve::Pass => "pass",
                }
                .into();
                e.charged = charged.as_ref().map(Price::to_string);
            }
            Answer::Pass => e.answer = "pass".into(),
            Answer::Block { body, .. } => {
                e.answer = "block".into();
                e.status = Some(403);
                e.body = Some(body.clone());
            }
            Answer::PaymentRequired {
                status,
                price,
                error,
            } => {
                e.answer = "payment".into();
                e.status = Some(*status);
                e.price = Some(price.to_string());
                e.error = error.map(str::to_owned);
            }
        }
        e
    }

    /// The vectors the Worker is tested against too.
    #[test]
    fn the_shared_policy_vectors_hold() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/policy-vectors.json");
        let vectors: Vectors =
            serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
        assert!(vectors.cases.len() >= 20);
        for case in vectors.cases {
            case.policy.validate().expect(&case.name);
            let visitor = Classifier::shipped().classify(&case.user_agent);
            let request = Request {
                path: &case.path,
                accept: &case.accept,
                visitor: &visitor,
                verification: case.verification,
                exact_price: case.exact_price.as_deref(),
                max_price: case.max_price.as_deref(),
            };
            let got = flatten(&decide(&case.policy, &request));
            let mut want = case.expect;
            if want.answer == "block" && want.body.is_none() {
                want.body = Some(DEFAULT_BLOCK_BODY.to_owned());
            }
            assert_eq!(got, want, "{}", case.name);
        }
    }

    #[test]
    fn prices_parse_compare_and_print_canonically() {
        let p: Price = "USD 0.01".parse().expect("price");
        assert_eq!(p.micros, 10_000);
        assert_eq!(p.to_string(), "USD 0.01");
        assert_eq!(
            "USD 1".parse::<Price>().expect("whole").to_string(),
            "USD 1.00"
        );
        assert_eq!(
            "EUR 0.015000".parse::<Price>().expect("six").to_string(),
            "EUR 0.015"
        );
        for bad in [
            "",
            "USD",
            "0.01",
            "usd 0.01",
            "USD -1",
            "USD 1.",
            "USD .5",
            "USD 0.0000001",
            "USD 1e3",
            "USDX 1",
            "USD 1,00",
            "USD 9999999999",
        ] {
            assert_eq!(bad.parse::<Price>(), Err(BadPrice), "{bad:?}");
        }
        let json: Result<Rule, _> =
            serde_json::from_str(r#"{"action": "charge", "price": "1 dollar"}"#);
        assert!(json.is_err());
    }

    #[test]
    fn policies_are_validated_with_the_field_at_fault() {
        let rule = |json: &str| serde_json::from_str::<Rule>(json).expect("rule");
        let with = |rules: Vec<Rule>| EdgePolicy {
            rules,
            ..EdgePolicy::default()
        };
        let field = |p: EdgePolicy| p.validate().expect_err("invalid").field;
        assert_eq!(
            field(with(vec![rule(r#"{"bot": "GPTBot", "action": "charge"}"#)])),
            "settings.edge.rules[0].price"
        );
        assert_eq!(
            field(with(vec![
                rule(r#"{"action": "pass"}"#),
                rule(r#"{"action": "pass", "price": "USD 1"}"#)
            ])),
            "settings.edge.rules[1].price"
        );
        assert_eq!(
            field(with(vec![rule(
                r#"{"action": "serve_html", "body": "no"}"#
            )])),
            "settings.edge.rules[0].body"
        );
        assert_eq!(
            field(with(vec![rule(r#"{"bot": " ", "action": "block"}"#)])),
            "settings.edge.rules[0].bot"
        );
        assert_eq!(
            field(with(vec![rule(
                r#"{"verification": [], "action": "block"}"#
            )])),
            "settings.edge.rules[0].verification"
        );
        assert_eq!(
            field(with(vec![rule(r#"{"action": "block"}"#); MAX_RULES + 1])),
            "settings.edge.rules"
        );
        assert_eq!(
            field(EdgePolicy {
                default: rule(r#"{"bot": "GPTBot", "action": "block"}"#),
                ..EdgePolicy::default()
            }),
            "settings.edge.default"
        );
        assert_eq!(
            field(EdgePolicy {
                content_signal: Some("ai-train=no\r\nx: y".into()),
                ..EdgePolicy::default()
            }),
            "settings.edge.content_signal"
        );
        assert!(
            serde_json::from_str::<Rule>(r#"{"bots": "GPTBot", "action": "block"}"#).is_err(),
            "a misspelt condition is refused, not ignored (it would match everyone)"
        );
        EdgePolicy::default()
            .validate()
            .expect("the default is valid");
    }
}
