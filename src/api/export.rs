//! CSV variants of the analytics and list answers (`?format=csv`): every table the dashboard
//! shows can be downloaded as a spreadsheet.
//!
//! Cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, carriage
//! return first) are prefixed with `'`: user agents, referrers and URLs come from visitors,
//! and a hostile one must not become a formula in the site owner's spreadsheet (OWASP's CSV
//! injection advice).

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::ApiError;

/// `?format=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FormatParam {
    /// `json` (default) or `csv` (a download of the answer's table).
    pub format: Option<Format>,
}

/// What an answer is written as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Json,
    Csv,
}

impl FormatParam {
    pub fn csv(&self) -> bool {
        self.format == Some(Format::Csv)
    }
}

/// A table: a header and rows of cells.
pub trait Row {
    const HEADER: &'static [&'static str];
    fn cells(&self) -> Vec<String>;
}

/// A cell a spreadsheet reads as text, whatever it starts with.
fn defused(cell: String) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell,
    }
}

/// `header` and `rows` as a CSV download named `filename`.
pub fn table(
    filename: &str,
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> Result<Response, ApiError> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let internal = |e: csv::Error| ApiError::Internal(anyhow::anyhow!("writing CSV: {e}"));
    out.write_record(header).map_err(internal)?;
    for row in rows {
        out.write_record(row.into_iter().map(defused))
            .map_err(internal)?;
    }
    let body = out
        .into_inner()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("writing CSV: {e}")))?;
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("{filename}: {e}")))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// Rows of one kind as a CSV download.
pub fn rows<'a, R: Row + 'a>(
    filename: &str,
    rows: impl IntoIterator<Item = &'a R>,
) -> Result<Response, ApiError> {
    table(filename, R::HEADER, rows.into_iter().map(Row::cells))
}

/// An optional value as a cell (empty when absent).
pub fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_defused_and_the_rest_kept() {
        assert_eq!(defused("=HYPERLINK(\"x\")".into()), "'=HYPERLINK(\"x\")");
        assert_eq!(defused("+1".into()), "'+1");
        assert_eq!(defused("@SUM(A1)".into()), "'@SUM(A1)");
        assert_eq!(defused("GPTBot".into()), "GPTBot");
        assert_eq!(defused(String::new()), "");
    }

    #[tokio::test]
    async fn a_table_is_quoted_csv_with_a_header() {
        let response = table(
            "t.csv",
            &["key", "visits"],
            [vec!["a,\"b\"".to_owned(), "3".to_owned()]],
        )
        .expect("csv");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/csv; charset=utf-8"
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        assert_eq!(&body[..], b"key,visits\n\"a,\"\"b\"\"\",3\n");
    }
}
