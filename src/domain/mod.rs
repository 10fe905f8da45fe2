//! Pure logic: no async, no IO. Everything here is tested without a server.

pub mod bots;
pub mod client;
pub mod content;
pub mod edge;
pub mod front_matter;
pub mod html;
pub mod html_bounds;
pub mod ids;
pub mod kv_key;
pub mod links;
pub mod llms;
pub mod markdown;
pub mod netaddr;
pub mod policy;
pub mod quality;
pub mod referrers;
pub mod render;
pub mod render_js;
pub mod reprocess;
pub mod robots_txt;
pub mod sitemap;
pub mod url;
pub mod visit;
pub mod webbotauth;
pub mod webhook;

/// The ground floor stays the ground floor: domain code (its tests aside) names no other
/// layer of the crate and does no IO, so it can be read, changed and tested on its own.
#[cfg(test)]
mod tests {

    const FORBIDDEN: &[&str] = &[
        "crate::",
        "tokio",
        "async ",
        ".await",
        "std::fs",
        "std::net::Tcp",
        "std::net::Udp",
        "std::process",
        "std::env",
        "reqwest",
        "sqlx",
        "async_nats",
    ];

    #[test]
    fn domain_names_no_other_layer_and_does_no_io() {
        let lines = crate::source_lint::code_lines("domain");
        assert!(lines.len() > 500, "found the domain's code");
        let mut offences = Vec::new();
        for line in lines {
            let text = line.text.replace("crate::domain::", "");
            if let Some(word) = FORBIDDEN.iter().find(|w| text.contains(*w)) {
                offences.push(format!("{}:{}: {word}", line.path.display(), line.number));
            }
        }
        assert!(offences.is_empty(), "{offences:#?}");
    }
}
