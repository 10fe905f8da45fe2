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
pub mod reprocess;
pub mod sitemap;
pub mod url;
pub mod visit;
pub mod webhook;

/// The ground floor stays the ground floor: domain code (its tests aside) names no other
/// layer of the crate and does no IO, so it can be read, changed and tested on its own.
#[cfg(test)]
mod tests {
    use std::path::Path;

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

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src/domain") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn domain_names_no_other_layer_and_does_no_io() {
        let mut paths = Vec::new();
        files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain"),
            &mut paths,
        );
        assert!(paths.len() > 10, "found the domain's files");
        let mut offences = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).expect("source");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                let line = line.replace("crate::domain::", "");
                if let Some(word) = FORBIDDEN.iter().find(|w| line.contains(*w)) {
                    offences.push(format!("{}:{}: {word}", path.display(), n + 1));
                }
            }
        }
        assert!(offences.is_empty(), "{offences:#?}");
    }
}
