//! A client of Google's Gemini `generateContent` REST API, for Markdown generation.
//!
//! `POST {base}/models/{model}:generateContent` with the key in `x-goog-api-key`. The reply's
//! text is the concatenation of the first candidate's non-thought parts; the output is valid
//! only with `finishReason` STOP. 429 carries no Retry-After: the delay is the `RetryInfo`
//! detail's `retryDelay`, and a `quotaId` containing `PerDay` will not clear by retrying.

use std::time::Duration;

use serde_json::{Value, json};

use super::secrets::Secret;
use crate::events::pages::TokenUsage;

/// The prompt's version: part of the Markdown stage's output identity.
pub const PROMPT_VERSION: &str = "gemini-prompt-1";

const SYSTEM_PROMPT: &str = "You turn the main content of a web page into clean, faithful Markdown for AI agents. \
Keep every heading, paragraph, list, table, code block, quote, link (absolute) and image alt text of the main content; \
do not add, summarize, translate or comment. Drop navigation, ads, cookie notices and other boilerplate if any remain. \
Answer with the Markdown only.";

/// Rough input budget in characters: well under the 1,048,576-token input limit of current
/// models (about four characters a token), leaving room for the prompt.
pub const MAX_INPUT_CHARS: usize = 2_000_000;

/// A successful generation.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub text: String,
    pub tokens: TokenUsage,
}

/// Why a generation gave no usable Markdown.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GeminiError {
    #[error("gemini rate limit: retry after {0:?}")]
    RateLimited(Duration),
    #[error("gemini daily quota exhausted")]
    DailyQuota,
    #[error("gemini is overloaded (503)")]
    Overloaded,
    #[error("unknown or retired gemini model {0:?}")]
    UnknownModel(String),
    #[error("gemini blocked the content: {reason}")]
    Blocked {
        reason: String,
        tokens: Option<TokenUsage>,
    },
    #[error("gemini's answer was cut off ({reason})")]
    Truncated {
        reason: String,
        tokens: Option<TokenUsage>,
    },
    #[error("gemini answered nothing")]
    Empty,
    #[error("gemini refused the request: {0}")]
    Rejected(String),
    #[error("gemini unavailable: {0}")]
    Unavailable(String),
}

/// The client.
#[derive(Clone, Debug)]
pub struct GeminiClient {
    http: reqwest::Client,
    base: String,
    model: String,
    max_output_tokens: u32,
}

fn usage(v: &Value) -> Option<TokenUsage> {
    let u = v.get("usageMetadata")?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(TokenUsage {
        prompt: n("promptTokenCount"),
        output: n("candidatesTokenCount"),
        total: n("totalTokenCount"),
    })
}

/// `"45.8s"` → 45.8 s.
fn parse_delay(s: &str) -> Option<Duration> {
    s.trim()
        .strip_suffix('s')?
        .parse::<f64>()
        .ok()
        .filter(|d| d.is_finite() && *d >= 0.0)
        .map(Duration::from_secs_f64)
}

impl GeminiClient {
    /// `base` is the API root (`https://generativelanguage.googleapis.com/v1beta`); the model id
    /// is configuration (`GEMINI_MODEL`).
    pub fn new(base: &str, model: &str, timeout: Duration) -> Result<Self, GeminiError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| GeminiError::Unavailable(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            model: model.to_owned(),
            max_output_tokens: 65_536,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Markdown for a page, from the local generator's Markdown (`draft`) and its URL.
    pub async fn markdown(
        &self,
        key: &Secret,
        url: &str,
        draft: &str,
    ) -> Result<Output, GeminiError> {
        let draft: String = draft.chars().take(MAX_INPUT_CHARS).collect();
        let body = json!({
            "systemInstruction": {"parts": [{"text": SYSTEM_PROMPT}]},
            "contents": [{"role": "user", "parts": [{"text": format!("Page URL: {url}\n\nMain content:\n\n{draft}")}]}],
            "generationConfig": {"maxOutputTokens": self.max_output_tokens, "temperature": 0.0, "thinkingConfig": {"thinkingLevel": "low"}},
        });
        let url = format!("{}/models/{}:generateContent", self.base, self.model);
        let res = self
            .http
            .post(url)
            .header("x-goog-api-key", key.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| GeminiError::Unavailable(e.to_string()))?;
        let status = res.status().as_u16();
        let value: Value = res.json().await.unwrap_or(Value::Null);
        match status {
            200 => Self::read(&value),
            429 => Err(Self::rate_limit(&value)),
            503 => Err(GeminiError::Overloaded),
            404 => Err(GeminiError::UnknownModel(self.model.clone())),
            500..=599 => Err(GeminiError::Unavailable(format!("HTTP {status}"))),
            _ => Err(GeminiError::Rejected(
                value["error"]["message"]
                    .as_str()
                    .unwrap_or("no message")
                    .to_owned(),
            )),
        }
    }

    fn rate_limit(value: &Value) -> GeminiError {
        let details = value["error"]["details"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let per_day = details.iter().any(|d| {
            d["violations"].as_array().is_some_and(|vs| {
                vs.iter()
                    .any(|v| v["quotaId"].as_str().is_some_and(|q| q.contains("PerDay")))
            })
        });
        if per_day {
            return GeminiError::DailyQuota;
        }
        let delay = details
            .iter()
            .find_map(|d| d["retryDelay"].as_str().and_then(parse_delay));
        GeminiError::RateLimited(delay.unwrap_or(Duration::from_secs(60)))
    }

    fn read(value: &Value) -> Result<Output, GeminiError> {
        let tokens = usage(value);
        if let Some(reason) = value["promptFeedback"]["blockReason"].as_str() {
            return Err(GeminiError::Blocked {
                reason: reason.to_owned(),
                tokens,
            });
        }
        let candidate = &value["candidates"][0];
        let finish = candidate["finishReason"].as_str().unwrap_or("");
        let text = answer_text(candidate);
        match finish {
            "STOP" if !text.trim().is_empty() => Ok(Output {
                text,
                tokens: tokens.unwrap_or(TokenUsage {
                    prompt: 0,
                    output: 0,
                    total: 0,
                }),
            }),
            "STOP" | "" if text.trim().is_empty() => Err(GeminiError::Empty),
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => {
                Err(GeminiError::Blocked {
                    reason: finish.to_owned(),
                    tokens,
                })
            }
            other => Err(GeminiError::Truncated {
                reason: other.to_owned(),
                tokens,
            }),
        }
    }
}

/// A candidate's answer: its text parts, thoughts left out.
fn answer_text(candidate: &Value) -> String {
    candidate["content"]["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter(|p| p["thought"] != true)
                .filter_map(|p| p["text"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_read_like_google_writes_them() {
        assert_eq!(parse_delay("45.8s"), Some(Duration::from_secs_f64(45.8)));
        assert_eq!(parse_delay("0s"), Some(Duration::ZERO));
        assert_eq!(parse_delay("soon"), None);
    }

    #[test]
    fn replies_are_read_and_thoughts_skipped() {
        let ok = json!({"candidates": [{"content": {"parts": [{"text": "thinking", "thought": true}, {"text": "# Md"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}});
        assert_eq!(
            GeminiClient::read(&ok),
            Ok(Output {
                text: "# Md".into(),
                tokens: TokenUsage {
                    prompt: 10,
                    output: 5,
                    total: 15
                }
            })
        );
        let cut = json!({"candidates": [{"content": {"parts": [{"text": "# Md"}]}, "finishReason": "MAX_TOKENS"}]});
        assert!(matches!(
            GeminiClient::read(&cut),
            Err(GeminiError::Truncated { .. })
        ));
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}});
        assert!(matches!(
            GeminiClient::read(&blocked),
            Err(GeminiError::Blocked { .. })
        ));
    }

    #[test]
    fn per_day_quotas_are_told_from_per_minute_limits() {
        let per_minute = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12s"}]}});
        assert_eq!(
            GeminiClient::rate_limit(&per_minute),
            GeminiError::RateLimited(Duration::from_secs(12))
        );
        let per_day = json!({"error": {"details": [{"violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}]}, {"retryDelay": "3600s"}]}});
        assert_eq!(GeminiClient::rate_limit(&per_day), GeminiError::DailyQuota);
    }
}
