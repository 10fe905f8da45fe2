//! Integration tests: one binary, real nats-server and PostgreSQL started by the harness.

mod api;
mod backbone;
mod dev;
mod events;
mod harness;
mod projections;
mod runtime;
