//! ai-cache: serve clean Markdown and minimal HTML of websites to AI crawlers, through an
//! event-sourced pipeline on NATS JetStream with Postgres projections.
//!
//! See `ARCHITECTURE.md` for the map of this crate.

pub mod api;
pub mod app;
pub mod cli;
pub mod commands;
pub mod config;
pub mod domain;
pub mod events;
pub mod infra;
pub mod pipeline;
pub mod projections;
#[cfg(test)]
mod source_lint;
pub mod telemetry;
