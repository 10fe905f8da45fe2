//! Integration tests: one binary, real nats-server and PostgreSQL started by the harness.

mod access;
mod api;
mod backbone;
mod cli;
mod clients;
mod cloudflare;
mod cloudflare_fake;
mod deadletters;
mod dev;
mod discovery;
mod edge;
mod end_to_end;
mod events;
mod gemini;
mod gemini_fake;
mod harness;
mod origin;
mod page_origin;
mod projections;
mod reprocess;
mod runtime;
mod scraper;
mod sitemap_corpus;
mod stages;
mod visits;
mod webhooks;
