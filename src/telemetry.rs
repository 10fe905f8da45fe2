//! Logs (`tracing`) and metrics (`metrics`, rendered in Prometheus format on `/metrics`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the log subscriber; `RUST_LOG` filters (default `default_level`: `info` for the
/// services, `warn` for the command-line tools, whose output is their answer). Colours only
/// on a terminal.
///
/// Lines are formatted where they happen and written by a thread of their own, through a
/// buffer flushed whenever no line is waiting: a request never waits on a write to stderr,
/// and a burst of requests is a few large writes, not a write (and a wake-up of whatever
/// reads the logs) per line. Writing them one by one from the request itself cost the API a
/// third of its page reads and the edge a third of its requests in the bench
/// (BENCHMARKS.md). Nothing is dropped: a full queue (100,000 lines) makes the logging
/// request wait. Keep the guard until the end: dropping it writes what is left.
pub fn init_logging(
    format: LogFormat,
    default_level: &str,
) -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(100_000)
        .thread_name("ai-cache-logs")
        .finish(std::io::BufWriter::with_capacity(
            64 << 10,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    // A second install (tests) is not an error worth reporting.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    guard
}

/// The process-wide metrics recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0])
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed; ours then simply stays empty.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Every `aicache_*` name in `text`.
    fn names(text: &str) -> BTreeSet<String> {
        let re = regex::Regex::new(r"aicache_[a-z_]+").expect("regex");
        re.find_iter(text).map(|m| m.as_str().to_owned()).collect()
    }

    fn sources(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).expect("src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).expect("read"));
            }
        }
    }

    #[test]
    fn the_grafana_dashboard_graphs_every_metric_we_export_and_no_other() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dashboard: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("deploy/grafana/ai-cache.json")).expect("read"),
        )
        .expect("the dashboard is JSON");
        let mut code = String::new();
        sources(&root.join("src"), &mut code);
        let metric = regex::Regex::new(r#"(?:counter|gauge|histogram)!\(\s*"(aicache_[a-z_]+)""#)
            .expect("regex");
        let exported: BTreeSet<String> = metric
            .captures_iter(&code)
            .map(|c| c[1].to_owned())
            .collect();
        let mut ids = BTreeSet::new();
        let mut graphed = BTreeSet::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            assert!(
                ids.insert(panel["id"].as_u64().expect("id")),
                "ids are unique"
            );
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("expr");
                graphed.extend(names(expr).into_iter().map(|n| {
                    // Histograms are queried through their buckets.
                    n.strip_suffix("_bucket").map_or(n.clone(), str::to_owned)
                }));
            }
        }
        assert_eq!(
            graphed, exported,
            "the dashboard's metrics (left) and the code's (right) differ"
        );
    }
}
