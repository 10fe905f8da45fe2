//! What a visit is made of: who made the request, how far their identity was checked, and
//! what the edge answered with. Pure values.

use serde::{Deserialize, Serialize};

/// What kind of visitor made a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VisitorType {
    AiBot,
    SearchBot,
    OtherBot,
    Human,
    WorkerProxy,
}

/// How far a bot's claimed identity was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// Not a bot, or not checked.
    None,
    /// The user agent says so; nothing else was checked.
    Claimed,
    /// The IP is in the operator's published ranges.
    IpVerified,
    /// The operator publishes ranges and the IP is outside them.
    IpMismatch,
    /// The IP's reverse DNS name is in a domain the operator documents for its crawlers, and
    /// that name resolves back to the IP (forward-confirmed reverse DNS).
    Rdns,
    /// The request carried a Web Bot Auth signature that verified with a key of its agent's
    /// key directory (the visit names the agent).
    Signature,
}

/// What the site's robots.txt (as the scraper last read it) says of a bot's visit to a path,
/// for the bot's own token (its catalogue name: `GPTBot`, `ClaudeBot`...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RobotsCompliance {
    Allowed,
    /// The bot read a path robots.txt disallows for it.
    Disallowed,
}

/// What the edge answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FormatServed {
    Markdown,
    Html,
    /// Passed through to the origin.
    Origin,
    /// Refused by the client's policy (403).
    Blocked,
    /// Asked to pay under the client's policy (402, or 400 for an unusable offer).
    PaymentRequired,
    /// Not known (imported history).
    Unknown,
}
