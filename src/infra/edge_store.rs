//! The built-in edge store, for clients without Cloudflare: a JetStream KV bucket (`KV_edge`,
//! defined in `streams/`) mapping each page's key to a manifest that points at its Markdown
//! and HTML in the blob store (KV values are capped by the NATS payload size; blobs are not).
//! NATS KV keys allow few characters, so the bucket key is the SHA-256 of the page's key.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv::Store};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::watched::WatchedMap;
use crate::domain::content::BlobRef;
use crate::domain::markdown::PageMetadata;

/// The bucket.
pub const BUCKET: &str = "edge";

/// What the edge serves for one page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The page's edge key (`https/example-com/page`).
    pub key: String,
    pub client_id: Uuid,
    pub page_id: Uuid,
    pub source_url: String,
    pub markdown: BlobRef,
    pub html: BlobRef,
    pub page_version: u32,
    pub updated_at: DateTime<Utc>,
    /// The Markdown's token estimate, made when it was generated (absent in manifests of
    /// Markdown generated before estimates were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown_tokens: Option<u32>,
    /// The media type of a site file that is neither a page's Markdown nor its HTML
    /// (`text/plain; charset=utf-8` for robots.txt), served for both variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The page's title, description and language, for the Markdown's front matter (absent
    /// in manifests written before they were kept, and for site files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<PageMetadata>,
}

impl Manifest {
    /// The Markdown's token estimate: the one made at generation, else one from its size.
    pub fn markdown_tokens(&self) -> u32 {
        self.markdown_tokens
            .unwrap_or_else(|| crate::domain::markdown::estimate_tokens_of_size(self.markdown.size))
    }
}

/// The store failed.
#[derive(Debug, thiserror::Error)]
#[error("edge store: {0}")]
pub struct EdgeStoreError(String);

/// Put, get and delete manifests by page key.
#[derive(Clone)]
pub struct EdgeStore {
    kv: Store,
}

fn bucket_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl EdgeStore {
    /// Opens the bucket (its stream must exist: apply the streams first).
    pub async fn open(js: &jetstream::Context) -> Result<Self, EdgeStoreError> {
        let kv = js
            .get_key_value(BUCKET)
            .await
            .map_err(|e| EdgeStoreError(e.to_string()))?;
        Ok(Self { kv })
    }

    /// Stores the manifest under its key; storing the same manifest again changes nothing.
    pub async fn put(&self, manifest: &Manifest) -> Result<(), EdgeStoreError> {
        if self
            .get(&manifest.key)
            .await?
            .as_ref()
            .is_some_and(|m| same_content(m, manifest))
        {
            return Ok(());
        }
        let bytes = serde_json::to_vec(manifest).map_err(|e| EdgeStoreError(e.to_string()))?;
        self.kv
            .put(bucket_key(&manifest.key), bytes.into())
            .await
            .map_err(|e| EdgeStoreError(e.to_string()))?;
        Ok(())
    }

    /// The manifest of a page key, if stored.
    pub async fn get(&self, key: &str) -> Result<Option<Manifest>, EdgeStoreError> {
        Ok(self.get_with_revision(key).await?.0)
    }

    /// The manifest of a page key, if stored, with the revision read (the bucket's sequence
    /// of the key's last change; 0 when it never had one).
    pub async fn get_with_revision(
        &self,
        key: &str,
    ) -> Result<(Option<Manifest>, u64), EdgeStoreError> {
        let entry = self
            .kv
            .entry(bucket_key(key))
            .await
            .map_err(|e| EdgeStoreError(e.to_string()))?;
        let Some(entry) = entry else {
            return Ok((None, 0));
        };
        if entry.operation != async_nats::jetstream::kv::Operation::Put {
            return Ok((None, entry.revision));
        }
        let manifest =
            serde_json::from_slice(&entry.value).map_err(|e| EdgeStoreError(e.to_string()))?;
        Ok((Some(manifest), entry.revision))
    }

    /// Removes a page key (nothing happens if it is absent).
    pub async fn delete(&self, key: &str) -> Result<(), EdgeStoreError> {
        if self.get(key).await?.is_none() {
            return Ok(());
        }
        self.kv
            .delete(bucket_key(key))
            .await
            .map_err(|e| EdgeStoreError(e.to_string()))
    }
}

/// Most manifests [`ManifestCache`] keeps (found or not found); beyond it starts over.
const MANIFESTS_MAX: usize = 100_000;

/// The edge store's manifests kept in memory ([`WatchedMap`]): read once, then answered from
/// memory until a watch on the bucket (every put, delete and purge, from any process) says
/// the key changed, so the next request reads the new manifest. A read is kept only if its
/// revision is at least the last the watch saw of the key (a lagging replica's answer is
/// used once, not kept).
#[derive(Clone)]
pub struct ManifestCache {
    store: EdgeStore,
    map: WatchedMap<String, Option<Arc<Manifest>>>,
}

impl ManifestCache {
    /// The cache over `store`, its watch running in the background until the process ends.
    pub fn new(store: EdgeStore) -> Self {
        let cache = Self {
            store,
            map: WatchedMap::new(MANIFESTS_MAX),
        };
        tokio::spawn(cache.clone().watch());
        cache
    }

    /// The manifest of a page key, from memory when the watch vouches for it.
    pub async fn get(&self, key: &str) -> Result<Option<Arc<Manifest>>, EdgeStoreError> {
        let bucket_key = bucket_key(key);
        let miss = match self.map.get(&bucket_key) {
            Ok(found) => {
                metrics::counter!("aicache_edge_manifest_reads_total", "from" => "memory")
                    .increment(1);
                return Ok(found);
            }
            Err(miss) => miss,
        };
        metrics::counter!("aicache_edge_manifest_reads_total", "from" => "bucket").increment(1);
        let (found, revision) = self.store.get_with_revision(key).await?;
        let found = found.map(Arc::new);
        self.map.keep(
            miss,
            bucket_key.clone(),
            found.clone(),
            &bucket_key,
            revision,
        );
        Ok(found)
    }

    /// Whether the watch is running (lookups are kept in memory only then).
    pub fn is_watching(&self) -> bool {
        self.map.is_watching()
    }

    /// How many lookups read the bucket so far.
    pub fn bucket_reads(&self) -> u64 {
        self.map.misses()
    }

    /// Follows the bucket's changes, starting again (after a pause) when the watch fails.
    async fn watch(self) {
        loop {
            match self.store.kv.watch_all().await {
                Ok(mut changes) => {
                    self.map.set_watching(true);
                    while let Some(change) = changes.next().await {
                        match change {
                            Ok(entry) => {
                                self.map.changed(entry.key.clone(), entry.revision, |k, _| {
                                    *k == entry.key
                                })
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "edge manifest watch failed");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "edge manifest watch cannot start"),
            }
            self.map.set_watching(false);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The same content served: a redelivered upload need not write again.
fn same_content(a: &Manifest, b: &Manifest) -> bool {
    a.markdown == b.markdown
        && a.html == b.html
        && a.source_url == b.source_url
        && a.page_version == b.page_version
}
