//! The Markdown stage: `pages.content_changed` in, `pages.markdown_generated` out.
//!
//! The raw HTML comes from the blob store, the local generator
//! ([`crate::domain::markdown`]) makes the Markdown (off the async threads), the Markdown goes
//! to the blob store, and the event is published under the key
//! `markdown:<page>:<input hash>:<generator version>`: a redelivery publishes nothing new, and
//! a new generator version regenerates.

use super::runtime::{Delivery, Step, StepError};
use crate::domain::markdown::{self, GENERATOR_VERSION};
use crate::events::Event;
use crate::events::pages::{GeneratorKind, MarkdownGenerated, PageEvent};
use crate::infra::blobs::BlobStore;
use crate::infra::publish::{Outgoing, Publisher};

/// The stage.
pub struct MarkdownStage {
    blobs: BlobStore,
    publisher: Publisher,
}

impl MarkdownStage {
    pub fn new(js: &async_nats::jetstream::Context, blobs: BlobStore) -> Self {
        Self {
            blobs,
            publisher: Publisher::new(js.clone()),
        }
    }
}

impl Step<PageEvent> for MarkdownStage {
    async fn handle(&self, event: Event<PageEvent>, _delivery: &Delivery) -> Result<(), StepError> {
        let PageEvent::ContentChanged(changed) = &event.payload else {
            return Err(StepError::permanent(format!(
                "the markdown stage does not handle {}",
                event.event_type()
            )));
        };
        let page = event
            .meta
            .page_id
            .ok_or_else(|| StepError::permanent("page event without page_id"))?;
        let raw = self
            .blobs
            .get(&changed.raw.hash)
            .await
            .map_err(StepError::transient)?
            .ok_or_else(|| {
                StepError::permanent(format!(
                    "raw HTML {} is not in the blob store",
                    changed.raw.hash
                ))
            })?;
        let url = changed.url.to_string();
        let generated = tokio::task::spawn_blocking(move || {
            markdown::generate(&String::from_utf8_lossy(&raw), &url)
        })
        .await
        .map_err(StepError::transient)?;
        if generated.markdown.trim().is_empty() {
            return Err(StepError::permanent("no main content found in the page"));
        }
        let blob = self
            .blobs
            .put(generated.markdown.as_bytes())
            .await
            .map_err(StepError::transient)?;
        let key = format!("markdown:{page}:{}:{GENERATOR_VERSION}", changed.raw.hash);
        let out = Event::caused_by(
            &event,
            PageEvent::MarkdownGenerated(MarkdownGenerated {
                markdown: blob,
                input_hash: changed.raw.hash.clone(),
                generator: GeneratorKind::Local,
                generator_version: GENERATOR_VERSION.to_owned(),
                model: None,
                fallback_reason: None,
                tokens: None,
                metadata: generated.metadata,
                page_version: changed.page_version,
            }),
        );
        self.publisher
            .publish(&Outgoing::keyed(out, key))
            .await
            .map_err(StepError::transient)?;
        Ok(())
    }
}
