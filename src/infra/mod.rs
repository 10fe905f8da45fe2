//! Connections to the outside: NATS/JetStream (streams as code, publishing, blobs),
//! Postgres, and the local stack of servers `ai-cache dev` and the tests start.

pub mod blobs;
pub mod bot_ranges;
pub mod chromium;
pub mod cloudflare;
pub mod db;
pub mod edge_store;
pub mod gemini;
pub mod http;
pub mod key_directory;
pub mod limits;
pub mod localstack;
pub mod nats;
pub mod nats_auth;
pub mod publish;
pub mod rdns;
pub mod robots_store;
pub mod secrets;
pub mod streams;
pub mod watched;
