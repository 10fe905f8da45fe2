//! The uploader stage: `pages.html_rendered` in, the page's Markdown and HTML in its client's
//! edge store, `pages.kv_uploaded` and `pages.updated` out; `pages.removed` in, the page's
//! entry deleted.
//!
//! `pages.updated` fires once per change of served content: it is published only when the
//! Markdown or HTML differs from the page's last `pages.updated` (read from the stream), under
//! the key `updated:<page>:<markdown hash>:<html hash>`, so neither a redelivery nor a
//! re-rendering of the same content publishes it twice. A rendering that is no longer the
//! page's latest is not uploaded.
//!
//! Edge stores: the built-in one. Clients whose edge target is Cloudflare get a permanent,
//! visible failure (dead letter, with the reason) until the Cloudflare Workers KV uploader
//! exists: their content is never silently put elsewhere.

use sqlx::PgPool;

use super::history::PageHistory;
use super::runtime::{Delivery, Step, StepError};
use crate::domain::content::BlobRef;
use crate::domain::ids::{ClientId, PageId};
use crate::domain::kv_key::kv_key;
use crate::events::Event;
use crate::events::envelope::now;
use crate::events::pages::{EdgeStore as EdgeKind, HtmlRendered, KvUploaded, PageEvent, Updated};
use crate::infra::edge_store::{EdgeStore, Manifest};
use crate::infra::publish::{Outgoing, Publisher};
use crate::projections::clients::{self as clients_read, ClientRow};

/// The stage.
pub struct Uploader {
    edge: EdgeStore,
    publisher: Publisher,
    history: PageHistory,
    db: PgPool,
}

impl Uploader {
    pub async fn new(js: &async_nats::jetstream::Context, db: PgPool) -> Result<Self, String> {
        Ok(Self {
            edge: EdgeStore::open(js).await.map_err(|e| e.to_string())?,
            publisher: Publisher::new(js.clone()),
            history: PageHistory::open(js).await?,
            db,
        })
    }

    /// Where the client's pages go; Cloudflare is refused for now (see the module doc).
    fn target(client: &ClientRow) -> Result<EdgeKind, StepError> {
        let has_cloudflare = client.cloudflare_account_id.is_some()
            && client.cloudflare_api_token_encrypted.is_some()
            && client.cloudflare_kv_namespace_id.is_some();
        match (client.edge_target.as_str(), has_cloudflare) {
            ("builtin", _) | ("auto", false) => Ok(EdgeKind::Builtin),
            _ => Err(StepError::permanent(
                "uploading to Cloudflare Workers KV is not available yet: set the client's edge_target to builtin to serve from the built-in edge store",
            )),
        }
    }

    async fn client(&self, client: ClientId) -> Result<Option<ClientRow>, StepError> {
        clients_read::find(&self.db, client.as_uuid())
            .await
            .map_err(StepError::transient)
    }

    async fn upload(
        &self,
        event: &Event<PageEvent>,
        rendered: &HtmlRendered,
        client: ClientId,
        page: PageId,
    ) -> Result<(), StepError> {
        let Some(row) = self.client(client).await? else {
            return Ok(());
        };
        let store = Self::target(&row)?;
        let last = |t| self.history.last(t, client, page);
        if let Some(PageEvent::HtmlRendered(latest)) = last("pages.html_rendered").await?
            && latest.html.hash != rendered.html.hash
        {
            return Ok(()); // a newer rendering exists: this one is stale
        }
        let url = self
            .history
            .url(client, page)
            .await?
            .ok_or_else(|| StepError::permanent("the page has no URL in its history"))?;
        let markdown: BlobRef = match last("pages.markdown_generated").await? {
            Some(PageEvent::MarkdownGenerated(m)) if m.markdown.hash == rendered.markdown_hash => {
                m.markdown
            }
            _ => {
                return Err(StepError::permanent(
                    "the rendered Markdown is not the page's last",
                ));
            }
        };
        let (fingerprint, scraped_at) = match (
            last("pages.content_changed").await?,
            last("pages.scraped").await?,
        ) {
            (Some(PageEvent::ContentChanged(c)), Some(PageEvent::Scraped(s))) => {
                (c.fingerprint, s.fetched_at)
            }
            _ => {
                return Err(StepError::permanent(
                    "the page has no scraped content in its history",
                ));
            }
        };
        let key = kv_key(&url);
        let manifest = Manifest {
            key: key.clone(),
            client_id: client.as_uuid(),
            page_id: page.as_uuid(),
            source_url: url.to_string(),
            markdown: markdown.clone(),
            html: rendered.html.clone(),
            page_version: rendered.page_version,
            updated_at: now(),
        };
        self.edge
            .put(&manifest)
            .await
            .map_err(StepError::transient)?;
        let (md, html) = (&markdown.hash, &rendered.html.hash);
        let uploaded = Event::caused_by(
            event,
            PageEvent::KvUploaded(KvUploaded {
                store,
                kv_key: key.clone(),
                markdown_hash: md.clone(),
                html_hash: html.clone(),
                page_version: rendered.page_version,
            }),
        );
        let mut out = vec![Outgoing::keyed(
            uploaded,
            format!("uploaded:{page}:{md}:{html}"),
        )];
        let served_before = matches!(last("pages.updated").await?, Some(PageEvent::Updated(u)) if &u.markdown_hash == md && &u.html_hash == html);
        if !served_before {
            let updated = Event::caused_by(
                event,
                PageEvent::Updated(Updated {
                    url,
                    kv_key: key,
                    markdown_hash: md.clone(),
                    html_hash: html.clone(),
                    content_fingerprint: fingerprint,
                    page_version: rendered.page_version,
                    scraped_at,
                    updated_at: manifest.updated_at,
                }),
            );
            out.push(Outgoing::keyed(
                updated,
                format!("updated:{page}:{md}:{html}"),
            ));
        }
        self.publisher
            .publish_all(&out)
            .await
            .map_err(StepError::transient)?;
        Ok(())
    }

    async fn remove(&self, client: ClientId, page: PageId) -> Result<(), StepError> {
        let Some(row) = self.client(client).await? else {
            return Ok(());
        };
        Self::target(&row)?;
        if let Some(url) = self.history.url(client, page).await? {
            self.edge
                .delete(&kv_key(&url))
                .await
                .map_err(StepError::transient)?;
        }
        Ok(())
    }
}

impl Step<PageEvent> for Uploader {
    async fn handle(&self, event: Event<PageEvent>, _delivery: &Delivery) -> Result<(), StepError> {
        let (client, Some(page)) = (event.meta.client_id, event.meta.page_id) else {
            return Err(StepError::permanent("page event without page_id"));
        };
        match &event.payload {
            PageEvent::HtmlRendered(rendered) => self.upload(&event, rendered, client, page).await,
            PageEvent::Removed(_) => self.remove(client, page).await,
            other => Err(StepError::permanent(format!(
                "the uploader does not handle {}",
                other.event_type_name()
            ))),
        }
    }
}
