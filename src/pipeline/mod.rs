//! Pipeline stages and the consumer runtime they share.
//!
//! A stage implements [`runtime::Step`]: one event in, its side effects committed (blobs
//! stored, next events published with deterministic ids), then the runtime acks. The stages
//! themselves (scraper, markdown, renderer, uploader) are built on this runtime.

pub mod deadletter;
pub mod runtime;
