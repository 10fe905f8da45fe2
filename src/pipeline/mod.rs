//! Pipeline stages and the consumer runtime they share.
//!
//! A stage implements [`runtime::Step`]: one event in, its side effects committed (blobs
//! stored, next events published with deterministic ids), then the runtime acks. Stages: the
//! scraper (with its politeness and robots.txt parts), markdown, renderer, uploader and the
//! webhook deliverer; the scheduler asks for refreshes, the reprocessor
//! ([`reprocess::Planner`]) plans reprocessing runs.

pub mod deadletter;
pub mod edge_settings;
pub mod history;
pub mod kv_batch;
pub mod landing;
pub mod llms;
pub mod markdown;
pub mod order;
pub mod politeness;
pub mod renderer;
pub mod renderer_js;
pub mod reprocess;
pub mod robots;
pub mod runtime;
pub mod scheduler;
pub mod scraper;
pub mod uploader;
pub mod webhooks;

use crate::domain::content::{BlobRef, ContentHash};
use crate::infra::blobs::BlobStore;
use runtime::StepError;

/// The content of a blob a step's input names (`what` it is, for the error): not there is
/// [`StepError::missing`] (a replica behind its leader), an unreachable store transient.
pub(crate) async fn required_blob(
    blobs: &BlobStore,
    hash: &ContentHash,
    what: &str,
) -> Result<Vec<u8>, StepError> {
    blobs
        .get(hash)
        .await
        .map_err(StepError::transient)?
        .ok_or_else(|| StepError::missing(format!("{what} {hash} is not in the blob store")))
}

/// The reference of a stored blob a step's input names, as [`required_blob`] reads it.
pub(crate) async fn required_ref(
    blobs: &BlobStore,
    hash: &ContentHash,
    what: &str,
) -> Result<BlobRef, StepError> {
    blobs
        .stored(hash)
        .await
        .map_err(StepError::transient)?
        .ok_or_else(|| StepError::missing(format!("{what} {hash} is not in the blob store")))
}
