//! The write side: validate a command (with `domain`), publish its events, and wait until the
//! projections show them (read-your-writes). Used by the API and the CLI alike.

pub mod crawl;
pub mod deadletters;
pub mod discovery;
pub mod event_log;
pub mod reprocess;
pub mod tenants;
pub mod visits;
