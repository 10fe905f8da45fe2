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
//! Reprocessing: content the edge store already holds (the page's last `pages.kv_uploaded`
//! has the same hashes and store, and the page was not removed since) is not uploaded again
//! unless the run forces it. The page's run ends here with `pages.reprocessed`: `updated`
//! when `pages.updated` was published, else `unchanged` (or `skipped` for a run started here).
//!
//! Edge stores: Cloudflare Workers KV for clients with Cloudflare credentials (edge target
//! `cloudflare`, or `auto` with all three fields), keys `md:<key>` and `html:<key>`, written in
//! bulk requests batched across the client's pages ([`super::kv_batch`]); the built-in store
//! for everyone else. A Cloudflare client's content never silently goes elsewhere.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use sqlx::PgPool;

use super::history::PageHistory;
use super::kv_batch::KvBatcher;
use super::order;
use super::reprocess;
use super::runtime::{Delivery, Step, StepError, page_of};
use crate::domain::client::is_cloudflare_id;
use crate::domain::content::{BlobRef, ContentHash};
use crate::domain::ids::{ClientId, PageId};
use crate::domain::kv_key::{html_key, kv_key, markdown_key};
use crate::domain::markdown::PageMetadata;
use crate::domain::reprocess::{nothing_to_redo, output_key};
use crate::domain::url::NormalizedUrl;
use crate::events::Event;
use crate::events::clients::{ClientState, EdgeTarget};
use crate::events::envelope::now;
use crate::events::pages::{
    EdgeStore as EdgeKind, HtmlRendered, KvUploaded, PageEvent, ReprocessOutcome, Stage, Updated,
};
use crate::infra::blobs::BlobStore;
use crate::infra::cloudflare::{KvError, KvTarget, Pair, check};
use crate::infra::edge_store::{EdgeStore, Manifest};
use crate::infra::publish::{Outgoing, PublishError, Publisher};
use crate::infra::secrets::Secrets;
use crate::projections::clients::{self as clients_read, ClientRow};

/// How many times one delivery writes and publishes before it hands the message back.
const WRITE_ATTEMPTS: usize = 5;

/// How soon a message handed back after racing other uploads is tried again.
const CONFLICT_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// How a write to the edge store ended.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// Published (or nothing to publish): the store holds what the stream says.
    Published,
    /// Another upload of the page was published in between: write again.
    Raced,
}

/// The page's last upload.
#[derive(Default)]
struct LastUpload {
    /// Its stream sequence (0: none yet).
    seq: u64,
    upload: Option<KvUploaded>,
}

/// The stage.
pub struct Uploader {
    edge: EdgeStore,
    publisher: Publisher,
    history: PageHistory,
    db: PgPool,
    blobs: BlobStore,
    cloudflare: Option<Cloudflare>,
}

/// What uploading to Cloudflare needs: the batcher and the keys to decrypt client tokens.
#[derive(Clone)]
pub struct Cloudflare {
    pub batcher: KvBatcher,
    pub secrets: Arc<Secrets>,
}

impl Uploader {
    pub async fn new(
        js: &async_nats::jetstream::Context,
        db: PgPool,
        blobs: BlobStore,
        cloudflare: Option<Cloudflare>,
    ) -> Result<Self, String> {
        Ok(Self {
            edge: EdgeStore::open(js).await.map_err(|e| e.to_string())?,
            publisher: Publisher::new(js.clone()),
            history: PageHistory::open(js).await?,
            db,
            blobs,
            cloudflare,
        })
    }

    /// The client's Cloudflare namespace, its token decrypted.
    fn kv_target(&self, client: &ClientRow) -> Result<(&Cloudflare, KvTarget), StepError> {
        kv_target(self.cloudflare.as_ref(), &client.state())
    }

    /// Where the client's pages go.
    fn target(client: &ClientRow) -> EdgeKind {
        target(&client.state())
    }

    /// Writes the page's Markdown and HTML to the client's Cloudflare namespace.
    async fn to_cloudflare(
        &self,
        client: &ClientRow,
        manifest: &Manifest,
    ) -> Result<(), StepError> {
        let (cf, target) = self.kv_target(client)?;
        let (markdown, html) = (
            super::required_blob(&self.blobs, &manifest.markdown.hash, "markdown").await?,
            super::required_blob(&self.blobs, &manifest.html.hash, "html").await?,
        );
        // Metadata stays under Cloudflare's 1,024 bytes: the URL is cut if it must be.
        let source: String = manifest.source_url.chars().take(400).collect();
        // The front matter's fields (the Worker adds it when the policy says so), shortened or
        // left out as far as the limit needs.
        let page = manifest.metadata.clone().unwrap_or_default();
        let cut = |s: &Option<String>, n: usize| -> Option<String> {
            s.as_deref()
                .filter(|_| n > 0)
                .map(|s| s.chars().take(n).collect())
        };
        let meta = |content_type: &str, hash: &BlobRef| {
            let mut last = serde_json::Value::Null;
            for (title, description) in [(200, 300), (120, 120), (0, 0)] {
                last = serde_json::json!({
                    "content_type": content_type, "source_url": source, "hash": hash.hash,
                    "version": manifest.page_version, "updated_at": manifest.updated_at,
                    "tokens": manifest.markdown_tokens(),
                    "title": cut(&page.title, title),
                    "description": cut(&page.description, description),
                    "language": cut(&page.language, 35),
                });
                if serde_json::to_string(&last).map_or(usize::MAX, |m| m.len())
                    <= crate::infra::cloudflare::MAX_METADATA_BYTES
                {
                    break;
                }
            }
            last
        };
        let pairs = vec![
            Pair {
                key: markdown_key(&manifest.key),
                value: String::from_utf8_lossy(&markdown).into_owned(),
                metadata: meta(
                    manifest
                        .content_type
                        .as_deref()
                        .unwrap_or("text/markdown; charset=utf-8"),
                    &manifest.markdown,
                ),
            },
            Pair {
                key: html_key(&manifest.key),
                value: String::from_utf8_lossy(&html).into_owned(),
                metadata: meta(
                    manifest
                        .content_type
                        .as_deref()
                        .unwrap_or("text/html; charset=utf-8"),
                    &manifest.html,
                ),
            },
        ];
        for pair in &pairs {
            check(pair).map_err(StepError::permanent)?;
        }
        cf.batcher
            .write(manifest.client_id, target, pairs)
            .await
            .map_err(kv_step_error)
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
        page: PageId,
        delivery: &Delivery,
    ) -> Result<(), StepError> {
        let client = event.meta.client_id;
        let Some(row) = self.client(client).await? else {
            return Ok(());
        };
        let store = Self::target(&row);
        let input = order::Input::new(
            event,
            Stage::Upload,
            rendered.page_version,
            rendered.reprocess.as_ref(),
        )?;
        // An earlier delivery may have written the store and died before publishing.
        let mut wrote = delivery.delivered > 1;
        for _ in 0..WRITE_ATTEMPTS {
            let last = self.last_upload(client, page).await?;
            let current = self
                .history
                .current_version(client, page)
                .await?
                .map_or(0, |(_, v)| v);
            let newest = current.max(last.upload.as_ref().map_or(0, |k| k.page_version));
            let superseded = newest > rendered.page_version;
            let raced = if superseded {
                input.record(newest);
                match &last.upload {
                    // What this step wrote may have replaced newer content: put back what the
                    // page's last upload says the store holds.
                    Some(k) if wrote && k.store == store => {
                        self.restore(event, &row, page, last.seq, k).await?
                    }
                    _ => Written::Published,
                }
            } else {
                wrote = true;
                self.upload_once(event, rendered, &row, page, last.seq)
                    .await?
            };
            match raced {
                Written::Raced => continue,
                Written::Published if superseded => {
                    return self.skipped(event, rendered).await.map(|_| ());
                }
                Written::Published => return Ok(()),
            }
        }
        Err(StepError::retry_after(
            "other uploads of the page kept coming in between",
            CONFLICT_RETRY,
        ))
    }

    /// Nothing of `rendered` is uploaded: its reprocessing run, if any, ends `skipped`.
    async fn skipped(
        &self,
        event: &Event<PageEvent>,
        rendered: &HtmlRendered,
    ) -> Result<Written, StepError> {
        if let Some(run) = &rendered.reprocess {
            let outcome = ReprocessOutcome::Skipped;
            reprocess::end(&self.publisher, event, run, Stage::Upload, outcome).await?;
        }
        Ok(Written::Published)
    }

    /// The page's last `pages.kv_uploaded` and its stream sequence (0: none).
    async fn last_upload(&self, client: ClientId, page: PageId) -> Result<LastUpload, StepError> {
        let last = self
            .history
            .last_as("pages.kv_uploaded", client, page, |e| match e {
                PageEvent::KvUploaded(k) => Some(k),
                _ => None,
            })
            .await?;
        Ok(
            last.map_or_else(LastUpload::default, |(seq, k)| LastUpload {
                seq,
                upload: Some(k),
            }),
        )
    }

    /// Writes `rendered` to the edge store and publishes `pages.kv_uploaded` (and
    /// `pages.updated` when the served content changes) if no other upload of the page was
    /// published after `last_seq`.
    async fn upload_once(
        &self,
        event: &Event<PageEvent>,
        rendered: &HtmlRendered,
        row: &ClientRow,
        page: PageId,
        last_seq: u64,
    ) -> Result<Written, StepError> {
        let client = event.meta.client_id;
        let store = Self::target(row);
        let last = |t| self.history.last(t, client, page);
        if let Some(PageEvent::HtmlRendered(latest)) = last("pages.html_rendered").await?
            && latest.page_version == rendered.page_version
            && latest.html.hash != rendered.html.hash
        {
            // A newer rendering of the same version exists (a reprocessing run): this one is
            // stale, and the newer one gets uploaded.
            return self.skipped(event, rendered).await;
        }
        let Some((markdown, markdown_tokens, metadata)) =
            self.rendered_markdown(rendered, client, page).await?
        else {
            // Newer Markdown of the same version exists: its rendering gets uploaded.
            return self.skipped(event, rendered).await;
        };
        let source = self.source(client, page).await?;
        let key = kv_key(&source.url);
        let (md, html) = (&markdown.hash, &rendered.html.hash);
        let served_before = matches!(last("pages.updated").await?, Some(PageEvent::Updated(u)) if &u.markdown_hash == md && &u.html_hash == html);
        if let Some(run) = rendered.reprocess.as_ref().filter(|r| !r.force)
            && self.holds(client, page, store, md, html).await?
        {
            let outcome = nothing_to_redo(run.from_stage, Stage::Upload);
            reprocess::end(&self.publisher, event, run, Stage::Upload, outcome).await?;
            return Ok(Written::Published);
        }
        let manifest = Manifest {
            key: key.clone(),
            client_id: client.as_uuid(),
            page_id: page.as_uuid(),
            source_url: source.url.to_string(),
            markdown: markdown.clone(),
            html: rendered.html.clone(),
            page_version: rendered.page_version,
            updated_at: now(),
            markdown_tokens,
            content_type: None,
            metadata,
        };
        self.write(row, &manifest).await?;
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
        // A run's upload is an upload of its own (forced, or to a store that lost it).
        let uploaded_key = output_key(
            rendered.reprocess.as_ref().map(|run| run.run_id),
            format!("uploaded:{page}:{md}:{html}"),
        );
        let uploaded = Outgoing::keyed(uploaded, uploaded_key).expecting(last_seq);
        if self.publish_upload(&uploaded).await? == Written::Raced {
            return Ok(Written::Raced);
        }
        self.announce(event, rendered, store, &manifest, source, served_before)
            .await?;
        Ok(Written::Published)
    }

    /// What the page's last content change says: its URL, its fingerprint, when it was
    /// fetched.
    async fn source(&self, client: ClientId, page: PageId) -> Result<Source, StepError> {
        let last = |t| self.history.last(t, client, page);
        match (
            last("pages.content_changed").await?,
            last("pages.scraped").await?,
        ) {
            (Some(PageEvent::ContentChanged(c)), Some(PageEvent::Scraped(s))) => Ok(Source {
                url: c.url,
                fingerprint: c.fingerprint,
                scraped_at: s.fetched_at,
            }),
            _ => Err(StepError::missing(
                "the page has no scraped content in its history",
            )),
        }
    }

    /// After the upload is published: `pages.updated` when the served content changed, and
    /// the end of the page's reprocessing run.
    async fn announce(
        &self,
        event: &Event<PageEvent>,
        rendered: &HtmlRendered,
        store: EdgeKind,
        manifest: &Manifest,
        source: Source,
        served_before: bool,
    ) -> Result<(), StepError> {
        let page = manifest.page_id;
        let (md, html) = (&manifest.markdown.hash, &manifest.html.hash);
        let mut out = Vec::new();
        if !served_before {
            let updated = Event::caused_by(
                event,
                PageEvent::Updated(Updated {
                    url: source.url,
                    kv_key: manifest.key.clone(),
                    markdown_hash: md.clone(),
                    html_hash: html.clone(),
                    content_fingerprint: source.fingerprint,
                    page_version: rendered.page_version,
                    scraped_at: source.scraped_at,
                    updated_at: manifest.updated_at,
                }),
            );
            out.push(Outgoing::keyed(
                updated,
                format!("updated:{page}:{md}:{html}"),
            ));
        }
        if let Some(run) = &rendered.reprocess {
            let outcome = if served_before {
                ReprocessOutcome::Unchanged
            } else {
                ReprocessOutcome::Updated
            };
            out.push(reprocess::ended(event, run, Stage::Upload, outcome));
        }
        metrics::counter!("aicache_uploads_total", "store" => store_label(store)).increment(1);
        self.publisher
            .publish_all(&out)
            .await
            .map_err(StepError::transient)
            .map(drop)
    }

    /// The Markdown `rendered` was made from, or `None` when the page has newer Markdown of
    /// the same version (a reprocessing run made it after this rendering). Markdown of an
    /// older version published late does not count: it was superseded.
    async fn rendered_markdown(
        &self,
        rendered: &HtmlRendered,
        client: ClientId,
        page: PageId,
    ) -> Result<Option<(BlobRef, Option<u32>, Option<PageMetadata>)>, StepError> {
        match self
            .history
            .last("pages.markdown_generated", client, page)
            .await?
        {
            Some(PageEvent::MarkdownGenerated(m)) if m.markdown.hash == rendered.markdown_hash => {
                return Ok(Some((m.markdown, m.markdown_tokens, Some(m.metadata))));
            }
            Some(PageEvent::MarkdownGenerated(m)) if m.page_version >= rendered.page_version => {
                return Ok(None);
            }
            _ => {}
        }
        super::required_ref(&self.blobs, &rendered.markdown_hash, "markdown")
            .await
            .map(|blob| Some((blob, None, None)))
    }

    /// Writes the page's last upload `k` (at `seq`) to the store again and publishes it again,
    /// if nothing else was uploaded since: after a stale write, the store holds what the
    /// stream says it holds.
    async fn restore(
        &self,
        event: &Event<PageEvent>,
        row: &ClientRow,
        page: PageId,
        seq: u64,
        k: &KvUploaded,
    ) -> Result<Written, StepError> {
        let client = event.meta.client_id;
        let url = self
            .history
            .url(client, page)
            .await?
            .ok_or_else(|| StepError::missing("the page has no URL in its history"))?;
        let manifest = Manifest {
            key: k.kv_key.clone(),
            client_id: client.as_uuid(),
            page_id: page.as_uuid(),
            source_url: url.to_string(),
            markdown: super::required_ref(&self.blobs, &k.markdown_hash, "markdown").await?,
            html: super::required_ref(&self.blobs, &k.html_hash, "html").await?,
            page_version: k.page_version,
            updated_at: now(),
            markdown_tokens: None,
            content_type: None,
            metadata: None,
        };
        self.write(row, &manifest).await?;
        tracing::warn!(client.id = %client, page.id = %page, version = k.page_version, "a stale upload was undone: the page's last upload written again");
        let again = Event::caused_by(event, PageEvent::KvUploaded(k.clone()));
        let again = Outgoing::keyed(again, format!("restored:{page}:{seq}")).expecting(seq);
        self.publish_upload(&again).await
    }

    /// Writes a manifest to the client's edge store.
    pub(super) async fn write(
        &self,
        row: &ClientRow,
        manifest: &Manifest,
    ) -> Result<(), StepError> {
        let store = Self::target(row);
        let written = match store {
            EdgeKind::Builtin => self.edge.put(manifest).await.map_err(StepError::transient),
            EdgeKind::Cloudflare => self.to_cloudflare(row, manifest).await,
        };
        if written.is_err() {
            metrics::counter!("aicache_upload_errors_total", "store" => store_label(store))
                .increment(1);
        }
        written
    }

    /// Publishes a conditional `pages.kv_uploaded`: `Raced` when another upload of the page
    /// was published first, or when this very publish was already made (a duplicate says
    /// nothing of what happened since).
    async fn publish_upload(&self, out: &Outgoing<PageEvent>) -> Result<Written, StepError> {
        match self.publisher.publish(out).await {
            Ok(p) if p.duplicate && out.dedup_key.starts_with("restored:") => Ok(Written::Raced),
            Ok(_) => Ok(Written::Published),
            Err(PublishError::Conflict { .. }) => Ok(Written::Raced),
            Err(e) => Err(StepError::transient(e)),
        }
    }

    /// Whether the edge store already holds exactly this content for the page.
    async fn holds(
        &self,
        client: ClientId,
        page: PageId,
        store: EdgeKind,
        md: &crate::domain::content::ContentHash,
        html: &crate::domain::content::ContentHash,
    ) -> Result<bool, StepError> {
        let uploaded = self
            .history
            .last_event("pages.kv_uploaded", client, page)
            .await?;
        let Some((
            seq,
            Event {
                payload: PageEvent::KvUploaded(k),
                ..
            },
        )) = uploaded
        else {
            return Ok(false);
        };
        let removed_since = self
            .history
            .last_event("pages.removed", client, page)
            .await?
            .is_some_and(|(removed, _)| removed > seq);
        Ok(!removed_since && k.store == store && &k.markdown_hash == md && &k.html_hash == html)
    }

    async fn remove(&self, client: ClientId, page: PageId) -> Result<(), StepError> {
        let Some(row) = self.client(client).await? else {
            return Ok(());
        };
        let Some(url) = self.history.url(client, page).await? else {
            return Ok(());
        };
        let key = kv_key(&url);
        match Self::target(&row) {
            EdgeKind::Builtin => self.edge.delete(&key).await.map_err(StepError::transient),
            EdgeKind::Cloudflare => {
                let (cf, target) = self.kv_target(&row)?;
                let keys = vec![markdown_key(&key), html_key(&key)];
                cf.batcher
                    .delete(client.as_uuid(), target, keys)
                    .await
                    .map_err(kv_step_error)
            }
        }
    }
}

fn store_label(store: EdgeKind) -> &'static str {
    match store {
        EdgeKind::Builtin => "builtin",
        EdgeKind::Cloudflare => "cloudflare",
    }
}

pub(super) fn kv_step_error(e: KvError) -> StepError {
    match e {
        // Waiting for the account's request budget (ours or Cloudflare's 429) is not a
        // failure: deferred, never dead-lettered for waiting.
        KvError::RateLimited(wait) => {
            StepError::deferred("waiting for the Cloudflare account's request budget", wait)
        }
        e if e.is_transient() => StepError::transient(e),
        e => StepError::permanent(e),
    }
}

/// What a page's last content change says about it.
struct Source {
    url: NormalizedUrl,
    fingerprint: ContentHash,
    scraped_at: DateTime<Utc>,
}

impl Step<PageEvent> for Uploader {
    async fn handle(&self, event: Event<PageEvent>, delivery: &Delivery) -> Result<(), StepError> {
        let (client, page) = (event.meta.client_id, page_of(&event)?);
        match &event.payload {
            PageEvent::HtmlRendered(rendered) => {
                self.upload(&event, rendered, page, delivery).await
            }
            PageEvent::Removed(_) => self.remove(client, page).await,
            other => Err(StepError::unhandled("uploader", other.event_type_name())),
        }
    }
}

/// The client's Cloudflare namespace, its token decrypted.
pub(super) fn kv_target<'c>(
    cloudflare: Option<&'c Cloudflare>,
    client: &ClientState,
) -> Result<(&'c Cloudflare, KvTarget), StepError> {
    let cf = cloudflare.ok_or_else(|| {
        StepError::permanent("no Fernet key is configured to decrypt the client's Cloudflare token")
    })?;
    let token = client
        .cloudflare_api_token_encrypted
        .as_ref()
        .ok_or_else(|| StepError::permanent("the client has no Cloudflare token"))?;
    let token = cf.secrets.decrypt(token).map_err(StepError::permanent)?;
    let target = KvTarget {
        account_id: client.cloudflare_account_id.clone().unwrap_or_default(),
        namespace_id: client
            .cloudflare_kv_namespace_id
            .clone()
            .unwrap_or_default(),
        token,
    };
    // Ids stored before they were validated never reach the API's path unchecked.
    if !(is_cloudflare_id(&target.account_id) && is_cloudflare_id(&target.namespace_id)) {
        return Err(StepError::permanent(
            "the client's Cloudflare account or namespace id is not a Cloudflare id",
        ));
    }
    Ok((cf, target))
}

/// Where a client's pages go: Cloudflare KV when it asks for it, or by default when it has
/// all three Cloudflare fields; the built-in store otherwise.
pub(super) fn target(client: &ClientState) -> EdgeKind {
    let has_cloudflare = client.cloudflare_account_id.is_some()
        && client.cloudflare_api_token_encrypted.is_some()
        && client.cloudflare_kv_namespace_id.is_some();
    match (client.settings.edge_target, has_cloudflare) {
        (EdgeTarget::Builtin, _) | (EdgeTarget::Auto, false) => EdgeKind::Builtin,
        _ => EdgeKind::Cloudflare,
    }
}
