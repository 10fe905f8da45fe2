//! The renderer stage: `pages.markdown_generated` in, `pages.html_rendered` out, under the key
//! `rendered:<page>:<markdown hash>:<renderer version>`.
//!
//! Order: Markdown made from an older version than the page's current one is superseded and
//! dropped ([`super::order`]).
//!
//! Reprocessing: Markdown the page's last rendering was made from, by this renderer version,
//! is not rendered again (unless the run forces it); the page's run ends here, `skipped` when
//! the run started at this stage, else `unchanged` (the Markdown came out the same).

use super::history::PageHistory;
use super::order;
use super::reprocess;
use super::runtime::{Delivery, Step, StepError};
use crate::domain::edge::markdown_url;
use crate::domain::render::{self, RENDERER_VERSION};
use crate::domain::reprocess::{nothing_to_redo, output_key};
use crate::events::Event;
use crate::events::pages::{HtmlRendered, PageEvent, Stage};
use crate::infra::blobs::BlobStore;
use crate::infra::publish::{Outgoing, Publisher};

/// The stage.
pub struct RendererStage {
    blobs: BlobStore,
    publisher: Publisher,
    history: PageHistory,
}

impl RendererStage {
    pub async fn new(
        js: &async_nats::jetstream::Context,
        blobs: BlobStore,
    ) -> Result<Self, String> {
        Ok(Self {
            blobs,
            publisher: Publisher::new(js.clone()),
            history: PageHistory::open(js).await?,
        })
    }
}

impl Step<PageEvent> for RendererStage {
    async fn handle(&self, event: Event<PageEvent>, _delivery: &Delivery) -> Result<(), StepError> {
        let PageEvent::MarkdownGenerated(generated) = &event.payload else {
            return Err(StepError::unhandled("renderer", event.event_type()));
        };
        let input = order::Input::new(
            &event,
            Stage::Render,
            generated.page_version,
            generated.reprocess.as_ref(),
        )?;
        let page = input.page;
        if input.superseded(&self.history, &self.publisher).await? {
            return Ok(());
        }
        if let Some(run) = generated.reprocess.as_ref().filter(|r| !r.force) {
            let last = self
                .history
                .last("pages.html_rendered", event.meta.client_id, page)
                .await?;
            if let Some(PageEvent::HtmlRendered(h)) = last
                && h.markdown_hash == generated.markdown.hash
                && h.renderer_version == RENDERER_VERSION
            {
                let outcome = nothing_to_redo(run.from_stage, Stage::Render);
                return reprocess::end(&self.publisher, &event, run, Stage::Render, outcome).await;
            }
        }
        let markdown =
            super::required_blob(&self.blobs, &generated.markdown.hash, "markdown").await?;
        let url = self
            .history
            .url(event.meta.client_id, page)
            .await?
            .ok_or_else(|| StepError::missing("the page has no URL in its history"))?;
        // The Markdown variant's own URL, the one the edge's `Link` header names too.
        let html = render::render(
            &String::from_utf8_lossy(&markdown),
            &generated.metadata,
            url.as_str(),
            &markdown_url(&url),
        );
        let blob = self
            .blobs
            .put(html.as_bytes())
            .await
            .map_err(StepError::transient)?;
        let key = output_key(
            generated.reprocess.as_ref().map(|run| run.run_id),
            format!(
                "rendered:{page}:{}:{RENDERER_VERSION}",
                generated.markdown.hash
            ),
        );
        let out = Event::caused_by(
            &event,
            PageEvent::HtmlRendered(HtmlRendered {
                html: blob,
                markdown_hash: generated.markdown.hash.clone(),
                renderer_version: RENDERER_VERSION.to_owned(),
                page_version: generated.page_version,
                reprocess: generated.reprocess.clone(),
            }),
        );
        self.publisher
            .publish(&Outgoing::keyed(out, key))
            .await
            .map_err(StepError::transient)?;
        Ok(())
    }
}
