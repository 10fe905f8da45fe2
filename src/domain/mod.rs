//! Pure logic: no async, no IO. Everything here is tested without a server.

pub mod bots;
pub mod client;
pub mod content;
pub mod edge;
pub mod html;
pub mod html_bounds;
pub mod ids;
pub mod kv_key;
pub mod markdown;
pub mod netaddr;
pub mod quality;
pub mod render;
pub mod sitemap;
pub mod url;
pub mod webhook;
