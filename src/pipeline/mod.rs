//! Pipeline stages and the consumer runtime they share.
//!
//! A stage implements [`runtime::Step`]: one event in, its side effects committed (blobs
//! stored, next events published with deterministic ids), then the runtime acks. Stages so
//! far: the scraper (with its politeness and robots.txt parts) and the scheduler; the
//! markdown, renderer and uploader stages are built on the same runtime.

pub mod deadletter;
pub mod history;
pub mod kv_batch;
pub mod markdown;
pub mod politeness;
pub mod renderer;
pub mod robots;
pub mod runtime;
pub mod scheduler;
pub mod scraper;
pub mod uploader;
