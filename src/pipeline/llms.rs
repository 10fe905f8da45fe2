//! Each client's `/llms.txt` and `/llms-full.txt` ([`crate::domain::llms`]), kept current in
//! its edge store by the uploader role: a consumer of `pages.updated` marks the client, and
//! every [`DEBOUNCE`] the marked clients' files are made again from the pages projection and
//! the stored Markdown. The files are stored like a page (a manifest under the URL
//! `<scheme>://<domain>/llms.txt`, the same bytes as both variants; `md:`/`html:` keys on
//! Cloudflare), so the built-in edge and the Worker serve them from where they serve pages.
//! The output is deterministic and a file is written only when its bytes change (the built-in
//! store compares; for Cloudflare this process remembers what it wrote), so an unchanged site
//! uploads nothing.
//!
//! A client whose edge policy says `robots_txt` also gets its `/robots.txt` made here: the
//! site's own file as the scraper last shared it (`KV_robots`), with the client's
//! Content-Signal ([`crate::domain::robots_txt`]); nothing is written until the scraper has
//! read the site's file, so the edge never serves a robots.txt that lost the site's rules.
//!
//! The mark is acknowledged at once: a mark lost in a crash is made good at start-up and every
//! [`FULL_PASS`], when every client's files are made again (removed pages leave the files then
//! too, as `pages.removed` does not mark).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::runtime::{Delivery, Step, StepError};
use super::uploader::Uploader;
use crate::domain::content::{BlobRef, ContentHash};
use crate::domain::ids::{ClientId, PageId};
use crate::domain::kv_key::kv_key;
use crate::domain::llms::{LLMS_FULL_TXT, LLMS_TXT, LlmsPage, llms_full_txt, llms_txt};
use crate::domain::markdown::estimate_tokens;
use crate::domain::robots_txt::{ROBOTS_TXT, served_robots_txt};
use crate::domain::url::NormalizedUrl;
use crate::events::Event;
use crate::events::envelope::now;
use crate::events::pages::PageEvent;
use crate::infra::blobs::BlobStore;
use crate::infra::edge_store::Manifest;
use crate::infra::robots_store::RobotsStore;
use crate::projections::clients as clients_read;
use crate::projections::pages as pages_read;

/// How long after a page update the files are made (updates meanwhile share one making).
pub const DEBOUNCE: Duration = Duration::from_secs(3);
/// How often every client's files are made again.
pub const FULL_PASS: Duration = Duration::from_secs(10 * 60);
/// Most pages listed.
const MAX_PAGES: i64 = 50_000;

/// The files' maker.
pub struct LlmsFiles {
    db: PgPool,
    blobs: BlobStore,
    uploader: Arc<Uploader>,
    robots: RobotsStore,
    dirty: Mutex<HashSet<Uuid>>,
    /// What this process last wrote, by client and path (Cloudflare has no cheap compare).
    written: Mutex<HashMap<(Uuid, &'static str), ContentHash>>,
}

impl LlmsFiles {
    pub fn new(
        db: PgPool,
        blobs: BlobStore,
        uploader: Arc<Uploader>,
        robots: RobotsStore,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            blobs,
            uploader,
            robots,
            dirty: Mutex::new(HashSet::new()),
            written: Mutex::new(HashMap::new()),
        })
    }

    /// Has `client`'s files made at the next tick.
    pub fn mark(&self, client: Uuid) {
        self.dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(client);
    }

    /// Makes the marked clients' files every [`DEBOUNCE`], and everyone's at start and every
    /// [`FULL_PASS`], until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut full = tokio::time::interval(FULL_PASS);
        let mut tick = tokio::time::interval(DEBOUNCE);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = full.tick() => {
                    if let Err(e) = self.mark_everyone().await {
                        tracing::warn!(error = %e, "llms.txt: listing the clients failed");
                    }
                }
                _ = tick.tick() => {}
            }
            let clients: Vec<Uuid> = self
                .dirty
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .drain()
                .collect();
            for client in clients {
                if let Err(e) = self.make(client).await {
                    tracing::warn!(client.id = %client, error = %e, "llms.txt not made: retried");
                    self.mark(client);
                }
            }
        }
    }

    async fn mark_everyone(&self) -> Result<(), sqlx::Error> {
        let mut offset = 0;
        loop {
            let (rows, total) = clients_read::list(&self.db, 1000, offset).await?;
            for row in &rows {
                self.mark(row.id);
            }
            offset += rows.len() as i64;
            if rows.is_empty() || offset >= total {
                return Ok(());
            }
        }
    }

    /// Makes and stores one client's files.
    pub async fn make(&self, client: Uuid) -> Result<(), StepError> {
        let Some(row) = clients_read::find(&self.db, client)
            .await
            .map_err(StepError::transient)?
        else {
            return Ok(());
        };
        let rows = pages_read::llms_pages(&self.db, client, MAX_PAGES)
            .await
            .map_err(StepError::transient)?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut pages = Vec::with_capacity(rows.len());
        let mut hashes = HashMap::new();
        for r in rows {
            let Ok(url) = NormalizedUrl::parse(&r.url) else {
                continue;
            };
            if let Some(hash) = r.markdown_hash.and_then(|h| ContentHash::parse(&h).ok()) {
                hashes.insert(url.to_string(), hash);
            }
            pages.push(LlmsPage {
                url,
                title: r.title,
                description: r.description,
            });
        }
        // The files live at the site's root, under the scheme its pages have.
        let root = pages
            .iter()
            .find(|p| p.url.as_url().path() == "/")
            .unwrap_or(&pages[0])
            .url
            .clone();
        let index = llms_txt(&row.name, &row.domain, &pages);
        let mut markdown = HashMap::new();
        for (url, hash) in &hashes {
            if let Some(bytes) = self.blobs.get(hash).await.map_err(StepError::transient)? {
                markdown.insert(url.clone(), String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        let full = llms_full_txt(&row.name, &row.domain, &pages, |p| {
            markdown.get(p.url.as_str()).cloned()
        });
        for (path, text) in [(LLMS_TXT, index), (LLMS_FULL_TXT, full)] {
            self.store(&row, &root, path, &text, None).await?;
        }
        let policy = &row.edge_policy.0;
        if policy.robots_txt {
            let origin = root.as_url().origin().ascii_serialization();
            let file = self
                .robots
                .get(&origin)
                .await
                .map_err(StepError::transient)?;
            if let Some(file) = file {
                let own = (200..300)
                    .contains(&file.status)
                    .then_some(file.body.as_str());
                let text = served_robots_txt(own, policy.content_signal.as_deref());
                let plain = Some("text/plain; charset=utf-8");
                self.store(&row, &root, ROBOTS_TXT, &text, plain).await?;
            }
        }
        Ok(())
    }

    async fn store(
        &self,
        row: &clients_read::ClientRow,
        root: &NormalizedUrl,
        path: &'static str,
        text: &str,
        content_type: Option<&str>,
    ) -> Result<(), StepError> {
        let hash = ContentHash::of(text.as_bytes());
        let key = (row.id, path);
        if self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            == Some(&hash)
        {
            return Ok(());
        }
        let mut url = root.as_url().clone();
        url.set_path(path);
        url.set_query(None);
        let url = NormalizedUrl::parse(url.as_str()).map_err(StepError::permanent)?;
        let blob: BlobRef = self
            .blobs
            .put(text.as_bytes())
            .await
            .map_err(StepError::transient)?;
        let manifest = Manifest {
            key: kv_key(&url),
            client_id: row.id,
            page_id: PageId::derive(ClientId::from_uuid(row.id), &url).as_uuid(),
            source_url: url.to_string(),
            markdown: blob.clone(),
            html: blob,
            page_version: 1,
            updated_at: now(),
            markdown_tokens: Some(estimate_tokens(text)),
            content_type: content_type.map(str::to_owned),
            metadata: None,
        };
        self.uploader.write(row, &manifest).await?;
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, hash);
        metrics::counter!("aicache_llms_files_written_total").increment(1);
        Ok(())
    }
}

impl Step<PageEvent> for LlmsFiles {
    async fn handle(&self, event: Event<PageEvent>, _: &Delivery) -> Result<(), StepError> {
        if let PageEvent::Updated(_) = event.payload {
            self.mark(event.meta.client_id.as_uuid());
        }
        Ok(())
    }
}
