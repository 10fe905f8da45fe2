//! The uploader's consumer of the CLIENTS stream: a Cloudflare client's edge policy goes to its
//! KV namespace under [`policy_key`] (one per domain, so one namespace and one Worker can serve
//! many clients' sites), where the Worker reads it (the built-in edge reads the
//! clients projection instead). `clients.registered` and `clients.updated` carry the client's
//! whole state, so each writes the policy as of that event; the consumer takes one message at a
//! time (`max_ack_pending` 1), in stream order, so an older state is never written over a newer
//! one. Other client events, and clients on the built-in store, are acknowledged untouched.

use std::sync::Arc;

use super::llms::LlmsFiles;
use super::runtime::{Delivery, Step, StepError};
use super::uploader::{Cloudflare, kv_step_error, kv_target, target};
use crate::events::Event;
use crate::events::clients::ClientEvent;
use crate::events::pages::EdgeStore as EdgeKind;
use crate::infra::cloudflare::{Pair, check};

/// The KV key of the edge policy of the client of `domain` (`worker/src/index.js` reads it).
pub fn policy_key(domain: &str) -> String {
    format!("settings:edge:{domain}")
}

/// The step.
pub struct EdgeSettings {
    cloudflare: Option<Cloudflare>,
    files: Option<Arc<LlmsFiles>>,
}

impl EdgeSettings {
    pub fn new(cloudflare: Option<Cloudflare>) -> Self {
        Self {
            cloudflare,
            files: None,
        }
    }

    /// Has the client's site files (llms.txt, robots.txt) made again when its settings change
    /// (its robots.txt follows its policy).
    pub fn with_site_files(mut self, files: Arc<LlmsFiles>) -> Self {
        self.files = Some(files);
        self
    }
}

impl Step<ClientEvent> for EdgeSettings {
    async fn handle(&self, event: Event<ClientEvent>, _: &Delivery) -> Result<(), StepError> {
        let state = match &event.payload {
            ClientEvent::Registered(state) => state,
            ClientEvent::Updated(updated) => &updated.state,
            _ => return Ok(()),
        };
        if let Some(files) = &self.files {
            files.mark(event.meta.client_id.as_uuid());
        }
        if target(state) != EdgeKind::Cloudflare {
            return Ok(());
        }
        let (cf, kv) = kv_target(self.cloudflare.as_ref(), state)?;
        let pair = Pair {
            key: policy_key(&state.domain),
            value: serde_json::to_string(&state.settings.edge).map_err(StepError::permanent)?,
            metadata: serde_json::json!({ "updated_at": event.meta.occurred_at }),
        };
        check(&pair).map_err(StepError::permanent)?;
        cf.batcher
            .write(event.meta.client_id.as_uuid(), kv, vec![pair])
            .await
            .map_err(kv_step_error)
    }
}
