//! Pipeline stages and the consumer runtime they share.
//!
//! A stage implements [`runtime::Step`]: one event in, its side effects committed (blobs
//! stored, next events published with deterministic ids), then the runtime acks. Stages: the
//! scraper (with its politeness and robots.txt parts), markdown, renderer, uploader and the
//! webhook deliverer; the scheduler asks for refreshes, the reprocessor
//! ([`reprocess::Planner`]) plans reprocessing runs.

pub mod deadletter;
pub mod history;
pub mod kv_batch;
pub mod markdown;
pub mod order;
pub mod politeness;
pub mod renderer;
pub mod reprocess;
pub mod robots;
pub mod runtime;
pub mod scheduler;
pub mod scraper;
pub mod uploader;
pub mod webhooks;
