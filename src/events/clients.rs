//! Events of the CLIENTS stream: tenants and their configuration.
//!
//! Subjects: `clients.<event>.<client_id>`. Secrets are carried only as Fernet tokens
//! (`*_encrypted` fields), never in clear. All types are at version 1.

use serde::{Deserialize, Serialize};

use super::{EventFamily, StreamName};
use crate::domain::client::Scope;
/// The settings a client's events carry are domain values.
pub use crate::domain::client::{ClientSettings, EdgeTarget};

/// Every event of the CLIENTS stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ClientEvent {
    /// A client was created.
    #[serde(rename = "clients.registered")]
    Registered(ClientState),
    /// A client's configuration changed; carries the whole new state and the changed fields.
    #[serde(rename = "clients.updated")]
    Updated(ClientUpdated),
    /// A client and everything of it was deleted.
    #[serde(rename = "clients.deleted")]
    Deleted(ClientDeleted),
    /// A per-client API key was created (only its SHA-256 is kept).
    #[serde(rename = "clients.key_created")]
    KeyCreated(KeyCreated),
    /// A per-client API key was revoked.
    #[serde(rename = "clients.key_revoked")]
    KeyRevoked(KeyRevoked),
    /// An operator asked for the client's pages to go through the pipeline again.
    #[serde(rename = "clients.reprocess_requested")]
    ReprocessRequested(ReprocessRequested),
    /// A webhook endpoint was added (or its secret re-encrypted by a key rotation).
    #[serde(rename = "clients.webhook_added")]
    WebhookAdded(WebhookAdded),
    /// A webhook endpoint was removed.
    #[serde(rename = "clients.webhook_removed")]
    WebhookRemoved(WebhookRemoved),
}

impl EventFamily for ClientEvent {
    const STREAM: StreamName = StreamName::Clients;
    const CATALOGUE: &'static [(&'static str, u32)] = &[
        ("clients.registered", 1),
        ("clients.updated", 1),
        ("clients.deleted", 1),
        ("clients.key_created", 1),
        ("clients.key_revoked", 1),
        ("clients.reprocess_requested", 1),
        ("clients.webhook_added", 1),
        ("clients.webhook_removed", 1),
    ];

    fn event_type(&self) -> &'static str {
        match self {
            Self::Registered(_) => "clients.registered",
            Self::Updated(_) => "clients.updated",
            Self::Deleted(_) => "clients.deleted",
            Self::KeyCreated(_) => "clients.key_created",
            Self::KeyRevoked(_) => "clients.key_revoked",
            Self::ReprocessRequested(_) => "clients.reprocess_requested",
            Self::WebhookAdded(_) => "clients.webhook_added",
            Self::WebhookRemoved(_) => "clients.webhook_removed",
        }
    }
}

/// The whole configuration of a client, as `clients.registered` and `clients.updated` carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientState {
    pub name: String,
    pub domain: String,
    #[serde(default)]
    pub cloudflare_account_id: Option<String>,
    /// Fernet token of the Cloudflare API token.
    #[serde(default)]
    pub cloudflare_api_token_encrypted: Option<String>,
    #[serde(default)]
    pub cloudflare_kv_namespace_id: Option<String>,
    /// Fernet token of the client's own Gemini API key.
    #[serde(default)]
    pub gemini_api_key_encrypted: Option<String>,
    pub is_active: bool,
    pub settings: ClientSettings,
}

/// `clients.updated` v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientUpdated {
    pub state: ClientState,
    /// Names of the fields that changed, for readers of the history.
    pub changed: Vec<String>,
}

/// `clients.deleted` v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientDeleted {
    pub domain: String,
}

/// `clients.key_created` v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyCreated {
    pub key_id: uuid::Uuid,
    /// A label for people (`"cloudflare worker"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The first characters of the key, shown in listings (`aic_Ab3dEf12`).
    pub display_prefix: String,
    /// SHA-256 (hex) of the whole key: the only form in which it is stored.
    pub key_hash: String,
    pub scopes: Vec<Scope>,
}

/// `clients.key_revoked` v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyRevoked {
    pub key_id: uuid::Uuid,
}

/// `clients.reprocess_requested` v1: run the client's pages (those the filters select) through
/// the pipeline again from `from_stage`. The `reprocessor` role plans it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReprocessRequested {
    pub run_id: uuid::Uuid,
    pub from_stage: super::pages::Stage,
    /// Only pages whose URL starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_prefix: Option<String>,
    /// Only pages whose Markdown was last made at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only pages whose Markdown was last made before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Make every output again even when input and version did not change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// `clients.webhook_added` v1: an endpoint that receives the client's chosen page events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookAdded {
    pub webhook_id: uuid::Uuid,
    pub url: String,
    /// Page event types delivered (`pages.updated`, ...).
    pub events: Vec<String>,
    /// Fernet token of the signing secret.
    pub secret_encrypted: String,
}

/// `clients.webhook_removed` v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookRemoved {
    pub webhook_id: uuid::Uuid,
}
