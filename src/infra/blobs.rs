//! The content-addressed blob store: large content (raw HTML, Markdown, rendered HTML) kept
//! out of events, on a JetStream object store (`OBJ_blobs`, defined in `streams/`).
//!
//! Keys are SHA-256 hex digests of the content, so a put is idempotent and a get can verify
//! what it read. The bucket's stream is created from its definition rather than by
//! `create_object_store`, so it is applied like every other stream.
//!
//! Reads of blobs that fit one chunk (every page's content, by far) take a shortcut: the
//! object's metadata names its chunk subject, and the chunk is read with one direct get
//! instead of the object store's ordered consumer (created and deleted per read: most of the
//! server's work in the pipeline). Larger blobs are read through the object store. The
//! content is verified against its hash either way.

use async_nats::jetstream::{self, object_store::ObjectStore};
use tokio::io::AsyncReadExt;

use crate::domain::content::{BlobRef, ContentHash};

/// The object store bucket holding blobs.
pub const BUCKET: &str = "blobs";

/// A blob store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
    #[error("blob of {size} bytes is larger than the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
    #[error("blob {0} is corrupt: its content does not hash to its key")]
    Corrupt(ContentHash),
}

/// Put and get content by its SHA-256.
#[derive(Clone)]
pub struct BlobStore {
    store: ObjectStore,
    /// The bucket's stream, for direct gets of single-chunk blobs.
    stream: jetstream::stream::Stream,
    max_size: u64,
}

impl BlobStore {
    /// Opens the bucket (its stream must exist: apply the streams first).
    pub async fn open(js: &jetstream::Context, max_size: u64) -> Result<Self, BlobError> {
        let store = js
            .get_object_store(BUCKET)
            .await
            .map_err(|e| BlobError::Unavailable(e.to_string()))?;
        let stream = js
            .get_stream(format!("OBJ_{BUCKET}"))
            .await
            .map_err(|e| BlobError::Unavailable(e.to_string()))?;
        Ok(Self {
            store,
            stream,
            max_size,
        })
    }

    /// Stores `bytes` under their hash; storing the same content again does nothing.
    pub async fn put(&self, bytes: &[u8]) -> Result<BlobRef, BlobError> {
        let blob = BlobRef::of(bytes);
        if blob.size > self.max_size {
            return Err(BlobError::TooLarge {
                size: blob.size,
                limit: self.max_size,
            });
        }
        if self.exists(&blob.hash).await? {
            return Ok(blob);
        }
        let mut reader = bytes;
        self.store
            .put(blob.hash.as_str(), &mut reader)
            .await
            .map_err(|e| BlobError::Unavailable(e.to_string()))?;
        Ok(blob)
    }

    /// Whether a blob with this hash is stored.
    pub async fn exists(&self, hash: &ContentHash) -> Result<bool, BlobError> {
        Ok(self.stored(hash).await?.is_some())
    }

    /// The reference (hash and size) of a stored blob, read from its metadata.
    pub async fn stored(&self, hash: &ContentHash) -> Result<Option<BlobRef>, BlobError> {
        use async_nats::jetstream::object_store::InfoErrorKind;
        match self.store.info(hash.as_str()).await {
            Ok(info) if info.deleted => Ok(None),
            Ok(info) => Ok(Some(BlobRef {
                hash: hash.clone(),
                size: info.size as u64,
            })),
            Err(e) if e.kind() == InfoErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlobError::Unavailable(e.to_string())),
        }
    }

    /// Reads the blob with this hash, verifying its content; `None` if there is none.
    pub async fn get(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, BlobError> {
        use async_nats::jetstream::object_store::InfoErrorKind;
        let info = match self.store.info(hash.as_str()).await {
            Ok(info) if info.deleted => return Ok(None),
            Ok(info) => info,
            Err(e) if e.kind() == InfoErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BlobError::Unavailable(e.to_string())),
        };
        let size = info.size as u64;
        if size > self.max_size {
            return Err(BlobError::TooLarge {
                size,
                limit: self.max_size,
            });
        }
        let linked = info.options.as_ref().is_some_and(|o| o.link.is_some());
        let bytes = match info.chunks {
            0 if !linked => Vec::new(),
            1 if !linked => self.chunk(&info.nuid).await?,
            _ => match self.read_object(hash).await? {
                Some(bytes) => bytes,
                None => return Ok(None),
            },
        };
        if ContentHash::of(&bytes) != *hash {
            return Err(BlobError::Corrupt(hash.clone()));
        }
        Ok(Some(bytes))
    }

    /// The only chunk of an object, by one direct get of the last message on its chunk
    /// subject (`$O.<bucket>.C.<nuid>`, the object store's layout).
    async fn chunk(&self, nuid: &str) -> Result<Vec<u8>, BlobError> {
        let subject = format!("$O.{BUCKET}.C.{nuid}");
        let message = self
            .stream
            .direct_get_last_for_subject(subject)
            .await
            .map_err(|e| BlobError::Unavailable(e.to_string()))?;
        Ok(message.payload.to_vec())
    }

    /// The whole object, through the object store (several chunks, or a link).
    async fn read_object(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, BlobError> {
        use async_nats::jetstream::object_store::GetErrorKind;
        let mut object = match self.store.get(hash.as_str()).await {
            Ok(object) => object,
            Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BlobError::Unavailable(e.to_string())),
        };
        let size = object.info().size as u64;
        if size > self.max_size {
            return Err(BlobError::TooLarge {
                size,
                limit: self.max_size,
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| BlobError::Unavailable(e.to_string()))?;
        Ok(Some(bytes))
    }
}
