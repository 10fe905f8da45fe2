//! The lines of the crate's own code, for tests that hold the layers to their rules (the
//! domain does no I/O, read-model SQL lives in `projections/`).

use std::path::{Path, PathBuf};

/// A line of code outside tests and comments.
pub struct CodeLine {
    pub path: PathBuf,
    pub number: usize,
    pub text: String,
}

/// Every line of the `.rs` files under `src/<under>`, before their `#[cfg(test)]` module,
/// comment lines left out.
pub fn code_lines(under: &str) -> Vec<CodeLine> {
    let mut paths = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src")
            .join(under),
        &mut paths,
    );
    let mut lines = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("source");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            if !line.trim_start().starts_with("//") {
                lines.push(CodeLine {
                    path: path.clone(),
                    number: n + 1,
                    text: line.to_owned(),
                });
            }
        }
    }
    lines
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
