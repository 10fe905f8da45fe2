//! Streams as code: the JSON definitions of `streams/` (the format `nats stream add --config`
//! and `nats consumer add STREAM --config` accept), applied idempotently.
//!
//! Layout: `streams/<STREAM>/stream.json` and `streams/<STREAM>/consumers/<durable>.json`.
//! The definitions are embedded in the binary at build time; `--dir` applies another copy.
//! A definition is "unchanged" when every field the file sets already has that value on the
//! server; fields the file leaves out are the server's business.

use std::path::Path;

use async_nats::jetstream::{self, consumer, stream};
use include_dir::{Dir, include_dir};
use serde_json::Value;

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/streams");

/// A stream definition and the durable consumers on it.
#[derive(Clone, Debug)]
pub struct StreamDef {
    pub file: String,
    raw: Value,
    pub config: stream::Config,
    pub consumers: Vec<ConsumerDef>,
}

/// A durable pull consumer definition.
#[derive(Clone, Debug)]
pub struct ConsumerDef {
    pub file: String,
    raw: Value,
    pub config: consumer::pull::Config,
}

/// What applying one definition did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

/// One line of an apply report.
#[derive(Clone, Debug)]
pub struct Applied {
    /// `stream PAGES` or `consumer PAGES/markdown`.
    pub what: String,
    pub change: Change,
}

/// Loading or applying definitions failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid definition {file}: {source}")]
    Invalid {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}: {message}")]
    Layout { file: String, message: String },
    #[error("applying {what} failed: {message}")]
    Apply { what: String, message: String },
}

/// The definitions embedded in the binary.
pub fn embedded() -> Result<Vec<StreamDef>, StreamsError> {
    let mut files = Vec::new();
    collect_embedded(&EMBEDDED, &mut files);
    parse_all(files)
}

fn collect_embedded(dir: &Dir<'static>, out: &mut Vec<(String, Vec<u8>)>) {
    for file in dir.files() {
        out.push((file.path().display().to_string(), file.contents().to_vec()));
    }
    for sub in dir.dirs() {
        collect_embedded(sub, out);
    }
}

/// The definitions in a directory on disk, laid out like `streams/`.
pub fn from_dir(root: &Path) -> Result<Vec<StreamDef>, StreamsError> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| StreamsError::Read {
            path: dir.display().to_string(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).map_err(|source| StreamsError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                let rel = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string();
                files.push((rel, bytes));
            }
        }
    }
    parse_all(files)
}

fn parse_all(mut files: Vec<(String, Vec<u8>)>) -> Result<Vec<StreamDef>, StreamsError> {
    files.retain(|(name, _)| name.ends_with(".json"));
    files.sort();
    let mut streams: Vec<StreamDef> = Vec::new();
    let mut consumers: Vec<(String, ConsumerDef)> = Vec::new();
    for (file, bytes) in files {
        let parts: Vec<&str> = file.split('/').collect();
        let invalid = |source| StreamsError::Invalid {
            file: file.clone(),
            source,
        };
        let raw: Value = serde_json::from_slice(&bytes).map_err(invalid)?;
        match parts.as_slice() {
            [stream_dir, "stream.json"] => {
                let config: stream::Config =
                    serde_json::from_value(raw.clone()).map_err(invalid)?;
                if config.name != *stream_dir {
                    return Err(layout(&file, "stream name must match its folder"));
                }
                streams.push(StreamDef {
                    file,
                    raw,
                    config,
                    consumers: Vec::new(),
                });
            }
            [stream_dir, "consumers", name] => {
                let config: consumer::pull::Config =
                    serde_json::from_value(raw.clone()).map_err(invalid)?;
                let durable = config.durable_name.clone().unwrap_or_default();
                if format!("{durable}.json") != *name {
                    return Err(layout(&file, "durable_name must match the file name"));
                }
                let stream = (*stream_dir).to_owned();
                consumers.push((stream, ConsumerDef { file, raw, config }));
            }
            _ => {
                return Err(layout(
                    &file,
                    "expected <STREAM>/stream.json or <STREAM>/consumers/<durable>.json",
                ));
            }
        }
    }
    for (stream, def) in consumers {
        let target = streams
            .iter_mut()
            .find(|s| s.config.name == stream)
            .ok_or_else(|| layout(&def.file, "consumer of a stream that has no stream.json"))?;
        target.consumers.push(def);
    }
    Ok(streams)
}

fn layout(file: &str, message: &str) -> StreamsError {
    StreamsError::Layout {
        file: file.to_owned(),
        message: message.to_owned(),
    }
}

/// Streams kept on one server whatever the cluster: the shared limits move on by
/// compare-and-set, and nats-server before 2.9.21 checks a write's expected last sequence
/// outside Raft on a replicated stream, so two concurrent writes expecting the same revision
/// can both succeed (nats-io/nats-server#4320): a lost update there keeps a released place
/// taken or grants a turn twice. On one replica the check and the write are one step. The
/// state is short-lived pacing, so losing it with its server costs at most one fresh window;
/// while that server is away, claims answer "unknown" and callers go slower, never faster.
pub const SINGLE_REPLICA: &[&str] = &["KV_limits"];

/// The definitions with `replicas` copies of every stream (`NATS_STREAM_REPLICAS`): the files
/// say 1, a cluster says how many. Applied to an existing stream, JetStream scales its
/// replicas up or down in place.
///
/// Except the [`SINGLE_REPLICA`] ones.
pub fn replicated(mut defs: Vec<StreamDef>, replicas: usize) -> Vec<StreamDef> {
    let replicas = replicas.max(1);
    for def in defs
        .iter_mut()
        .filter(|d| !SINGLE_REPLICA.contains(&d.config.name.as_str()))
    {
        def.config.num_replicas = replicas;
        def.raw["num_replicas"] = Value::from(replicas);
    }
    defs
}

/// Creates or updates every stream and consumer so the server matches the definitions.
/// Running it twice reports every definition unchanged the second time.
pub async fn apply(
    js: &jetstream::Context,
    defs: &[StreamDef],
) -> Result<Vec<Applied>, StreamsError> {
    let mut report = Vec::new();
    for def in defs {
        let what = format!("stream {}", def.config.name);
        let change = apply_stream(js, def)
            .await
            .map_err(|message| StreamsError::Apply {
                what: what.clone(),
                message,
            })?;
        report.push(Applied { what, change });
        for consumer in &def.consumers {
            let durable = consumer.config.durable_name.clone().unwrap_or_default();
            let what = format!("consumer {}/{durable}", def.config.name);
            let change = apply_consumer(js, &def.config.name, consumer)
                .await
                .map_err(|message| StreamsError::Apply {
                    what: what.clone(),
                    message,
                })?;
            report.push(Applied { what, change });
        }
    }
    Ok(report)
}

async fn apply_stream(js: &jetstream::Context, def: &StreamDef) -> Result<Change, String> {
    match js.get_stream(&def.config.name).await {
        Ok(mut existing) => {
            let info = existing.info().await.map_err(|e| e.to_string())?;
            let current = serde_json::to_value(&info.config).map_err(|e| e.to_string())?;
            if subset_matches(&def.raw, &current) {
                return Ok(Change::Unchanged);
            }
            js.update_stream(def.config.clone())
                .await
                .map_err(|e| e.to_string())?;
            Ok(Change::Updated)
        }
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref err)
                    if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            js.create_stream(def.config.clone())
                .await
                .map_err(|e| e.to_string())?;
            Ok(Change::Created)
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn apply_consumer(
    js: &jetstream::Context,
    stream: &str,
    def: &ConsumerDef,
) -> Result<Change, String> {
    let stream = js.get_stream(stream).await.map_err(|e| e.to_string())?;
    let durable = def.config.durable_name.clone().unwrap_or_default();
    match stream.consumer_info(&durable).await {
        Ok(info) => {
            let current = serde_json::to_value(&info.config).map_err(|e| e.to_string())?;
            if subset_matches(&def.raw, &current) {
                return Ok(Change::Unchanged);
            }
            // nats-server 2.9 has no separate update call: creating a durable that exists
            // updates its editable fields (and refuses to change the others).
            stream
                .create_consumer(def.config.clone())
                .await
                .map_err(|e| e.to_string())?;
            Ok(Change::Updated)
        }
        Err(_) => {
            stream
                .create_consumer(def.config.clone())
                .await
                .map_err(|e| e.to_string())?;
            Ok(Change::Created)
        }
    }
}

/// Whether every field of `wanted` has the same value in `current`. Objects compare
/// field by field (recursively); everything else compares whole.
fn subset_matches(wanted: &Value, current: &Value) -> bool {
    match (wanted, current) {
        (Value::Object(w), Value::Object(c)) => w.iter().all(|(key, value)| {
            c.get(key)
                .is_some_and(|current| subset_matches(value, current))
                || (is_zero_like(value) && c.get(key).is_none())
        }),
        (Value::Number(w), Value::Number(c)) => w.as_f64() == c.as_f64(),
        _ => wanted == current,
    }
}

/// The client leaves zero, false and empty values out when it serializes a config.
fn is_zero_like(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_definitions_parse_and_every_consumer_has_a_stream() {
        let defs = embedded().expect("definitions parse");
        let names: Vec<&str> = defs.iter().map(|d| d.config.name.as_str()).collect();
        for wanted in ["CLIENTS", "PAGES", "VISITS", "DEADLETTER", "OBJ_blobs"] {
            assert!(
                names.contains(&wanted),
                "missing stream {wanted}: {names:?}"
            );
        }
    }

    #[test]
    fn a_cluster_replicates_every_stream_but_the_compare_and_set_ones() {
        let defs = replicated(embedded().expect("definitions parse"), 3);
        for def in &defs {
            let name = def.config.name.as_str();
            let wanted = if SINGLE_REPLICA.contains(&name) { 1 } else { 3 };
            assert_eq!(def.config.num_replicas, wanted, "{name}");
            assert_eq!(def.raw["num_replicas"], wanted, "{name}");
        }
        assert!(defs.iter().any(|d| d.config.name == "KV_limits"));
    }

    #[test]
    fn consumers_use_a_single_filter_subject_and_explicit_acks() {
        // nats-server 2.9 ignores `filter_subjects` and would deliver every subject.
        for def in embedded().expect("definitions parse") {
            for c in &def.consumers {
                assert!(
                    !c.raw
                        .as_object()
                        .is_some_and(|o| o.contains_key("filter_subjects")),
                    "{}",
                    c.file
                );
                assert!(
                    !c.config.filter_subject.is_empty(),
                    "{} has no filter_subject",
                    c.file
                );
                assert_eq!(
                    c.config.ack_policy,
                    consumer::AckPolicy::Explicit,
                    "{}",
                    c.file
                );
                assert!(c.config.max_deliver > 1, "{} needs a retry budget", c.file);
                if !c.config.backoff.is_empty() {
                    assert!(
                        c.config.max_deliver > c.config.backoff.len() as i64,
                        "{}",
                        c.file
                    );
                }
            }
        }
    }

    #[test]
    fn a_definition_matches_a_server_config_that_has_more_fields() {
        let wanted = serde_json::json!({"name": "S", "max_age": 0, "subjects": ["a.>"]});
        let current = serde_json::json!({"name": "S", "subjects": ["a.>"], "max_msgs": -1});
        assert!(subset_matches(&wanted, &current));
        let changed = serde_json::json!({"name": "S", "subjects": ["b.>"]});
        assert!(!subset_matches(&wanted, &changed));
    }
}
