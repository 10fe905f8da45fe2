//! The read side's SQL, from `projections/*.sql` (one file per read model), as constants
//! made at build time by `build.rs`: `sql::<model>::<NAME>`.

include!(concat!(env!("OUT_DIR"), "/projections_sql.rs"));

/// Every statement on a read model is in `projections/`: no Rust source outside tests names a
/// read model's table in a statement. What stays in code is not about read models:
/// transaction control, advisory locks, the health ping, a rebuild's scratch schema.
#[cfg(test)]
mod tests {

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

    #[test]
    fn no_read_model_statement_is_written_in_rust() {
        let statement = regex::Regex::new(&format!(
            r"(?i)\b(FROM|INTO|UPDATE|JOIN)\s+(public\.)?({})\b",
            READ_MODELS.join("|")
        ))
        .expect("regex");
        let mut offences = Vec::new();
        for line in crate::source_lint::code_lines("") {
            if statement.is_match(&line.text) {
                let (path, n) = (line.path.display(), line.number);
                offences.push(format!("{path}:{n}: {}", line.text.trim()));
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
