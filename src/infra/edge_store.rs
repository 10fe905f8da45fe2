//! The built-in edge store, for clients without Cloudflare: a JetStream KV bucket (`KV_edge`,
//! defined in `streams/`) mapping each page's key to a manifest that points at its Markdown
//! and HTML in the blob store (KV values are capped by the NATS payload size; blobs are not).
//! NATS KV keys allow few characters, so the bucket key is the SHA-256 of the page's key.

use async_nats::jetstream::{self, kv::Store};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::content::BlobRef;

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
        let entry = self
            .kv
            .get(bucket_key(key))
            .await
            .map_err(|e| EdgeStoreError(e.to_string()))?;
        entry
            .map(|bytes| serde_json::from_slice(&bytes).map_err(|e| EdgeStoreError(e.to_string())))
            .transpose()
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

/// The same content served: a redelivered upload need not write again.
fn same_content(a: &Manifest, b: &Manifest) -> bool {
    a.markdown == b.markdown
        && a.html == b.html
        && a.source_url == b.source_url
        && a.page_version == b.page_version
}
