//! Turns the read side's SQL (`projections/*.sql`, one file per read model) into constants:
//! `crate::projections::sql::<model>::<NAME>`. Each statement in a file starts with a
//! `-- name: <snake_case>` line; the comment lines right after it are its documentation.
//! `{other_name}` inside a statement is replaced by the statement (fragment) of that name in
//! the same file, so column lists are written once. Other `{...}` stay for the code to fill
//! in (a closed set of expressions, never input).
//!
//! Written here rather than with a crate: sqlx's `query_file!` needs a database (or its
//! offline cache) at build time and takes one statement per file, and the named-query crates
//! (include-sql and its kin) target other drivers. This is a split on a marker line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

struct Statement {
    doc: Vec<String>,
    sql: String,
}

fn parse(path: &Path) -> BTreeMap<String, Statement> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut statements: BTreeMap<String, Statement> = BTreeMap::new();
    let mut current: Option<(String, Statement)> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- name:") {
            if let Some((name, statement)) = current.take() {
                statements.insert(name, statement);
            }
            let name = name.trim().to_owned();
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}: {name:?} is not a snake_case name",
                path.display()
            );
            assert!(
                !statements.contains_key(&name),
                "{}: {name} twice",
                path.display()
            );
            current = Some((
                name,
                Statement {
                    doc: Vec::new(),
                    sql: String::new(),
                },
            ));
            continue;
        }
        let Some((_, statement)) = current.as_mut() else {
            continue; // the file's header
        };
        match line.strip_prefix("--") {
            Some(doc) if statement.sql.is_empty() => statement.doc.push(doc.trim().to_owned()),
            _ => {
                statement.sql.push_str(line);
                statement.sql.push('\n');
            }
        }
    }
    if let Some((name, statement)) = current {
        statements.insert(name, statement);
    }
    for statement in statements.values_mut() {
        statement.sql = statement
            .sql
            .trim()
            .trim_end_matches(';')
            .trim_end()
            .to_owned();
    }
    statements
}

/// Replaces `{name}` by the fragment of that name, until none is left.
fn expand(sql: &str, fragments: &BTreeMap<String, Statement>, depth: usize) -> String {
    assert!(depth < 8, "fragments include each other in a loop");
    let mut out = sql.to_owned();
    for (name, fragment) in fragments {
        let marker = format!("{{{name}}}");
        if out.contains(&marker) {
            out = out.replace(&marker, &expand(&fragment.sql, fragments, depth + 1));
        }
    }
    out
}

fn main() {
    let dir = Path::new("projections");
    println!("cargo::rerun-if-changed=projections");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("projections/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let mut out = String::new();
    for path in files {
        let model = path.file_stem().and_then(|s| s.to_str()).expect("name");
        let statements = parse(&path);
        let _ = writeln!(out, "/// The statements of `projections/{model}.sql`.");
        let _ = writeln!(out, "pub mod {model} {{");
        for (name, statement) in &statements {
            for doc in &statement.doc {
                let _ = writeln!(out, "    /// {doc}");
            }
            let sql = expand(&statement.sql, &statements, 0);
            let _ = writeln!(
                out,
                "    pub const {}: &str = {sql:?};",
                name.to_ascii_uppercase()
            );
        }
        let _ = writeln!(out, "}}");
    }
    let target = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("projections_sql.rs");
    std::fs::write(target, out).expect("write");
}
