//! The read side's SQL, from `projections/*.sql` (one file per read model), as constants
//! made at build time by `build.rs`: `sql::<model>::<NAME>`.

include!(concat!(env!("OUT_DIR"), "/projections_sql.rs"));

/// Every statement on a read model is in `projections/`: no Rust source outside tests names a
/// read model's table in a statement. What stays in code is not about read models:
/// transaction control, advisory locks, the health ping, a rebuild's scratch schema.
#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    const READ_MODELS: &[&str] = &[
        "pages",
        "clients",
        "api_keys",
        "webhooks",
        "webhook_deliveries",
        "reprocess_runs",
        "visits",
        "projection_checkpoints",
        "projection_failures",
    ];

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn no_read_model_statement_is_written_in_rust() {
        let statement = regex::Regex::new(&format!(
            r"(?i)\b(FROM|INTO|UPDATE|JOIN)\s+(public\.)?({})\b",
            READ_MODELS.join("|")
        ))
        .expect("regex");
        let mut paths = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut paths,
        );
        let mut offences = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).expect("source");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                if !line.trim_start().starts_with("//") && statement.is_match(line) {
                    offences.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(
            offences.is_empty(),
            "SQL outside projections/: {offences:#?}"
        );
    }

    #[test]
    fn fragments_are_expanded() {
        assert!(!super::pages::FIND.contains("{page_columns}"));
        assert!(super::pages::FIND.contains("p.last_refresh_requested_at"));
        assert!(
            super::visits::GROUPS.contains("{expr}"),
            "left for the code"
        );
    }
}
