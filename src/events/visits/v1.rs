//! `visits.recorded` v1, frozen: the original system's `visits` row. Never edit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `visits.recorded` v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisitRecorded {
    pub url: String,
    /// `ai_bot`, `direct` or `worker_proxy`.
    pub visitor_type: Option<String>,
    pub user_agent: Option<String>,
    pub ip_hash: Option<String>,
    pub referrer: Option<String>,
    pub bot_name: Option<String>,
    pub visited_at: DateTime<Utc>,
}
