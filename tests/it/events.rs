//! Golden fixtures: every event type and version decodes; current versions re-encode to the
//! same JSON; old versions upcast.

use std::path::{Path, PathBuf};

use ai_cache::events::visits::{FormatServed, Verification, VisitEvent, VisitorType};
use ai_cache::events::{ClientEvent, DecodeError, Event, EventFamily, PageEvent};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events")
}

/// (type, version, file contents) of every fixture.
fn fixtures() -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let (event_type, version) = stem.rsplit_once(".v").expect("<type>.v<N>.json");
        out.push((
            event_type.to_owned(),
            version.parse().expect("version"),
            std::fs::read(&path).expect("read"),
        ));
    }
    assert!(!out.is_empty(), "no fixtures found");
    out
}

fn check_family<E: EventFamily>() {
    let all = fixtures();
    for (event_type, current) in E::CATALOGUE {
        assert!(
            all.iter().any(|(t, v, _)| t == event_type && v == current),
            "no golden fixture for {event_type} v{current}"
        );
    }
    for (event_type, version, bytes) in all
        .iter()
        .filter(|(t, _, _)| E::current_version(t).is_some())
    {
        let event = Event::<E>::from_json(bytes)
            .unwrap_or_else(|e| panic!("{event_type} v{version} does not decode: {e}"));
        assert_eq!(event.event_type(), event_type);
        if Some(*version) == E::current_version(event_type) {
            let original: Value = serde_json::from_slice(bytes).expect("json");
            let reencoded: Value =
                serde_json::from_slice(&event.to_json().expect("encode")).expect("json");
            assert_eq!(
                reencoded, original,
                "{event_type} v{version} does not re-encode to its fixture"
            );
        }
    }
}

#[test]
fn every_page_event_fixture_decodes_and_reencodes() {
    check_family::<PageEvent>();
}

#[test]
fn every_client_event_fixture_decodes_and_reencodes() {
    check_family::<ClientEvent>();
}

#[test]
fn every_visit_event_fixture_decodes_and_reencodes() {
    check_family::<VisitEvent>();
}

#[test]
fn an_original_system_visit_upcasts_to_the_current_version() {
    let bytes = std::fs::read(fixtures_dir().join("visits.recorded.v1.json")).expect("fixture");
    let event = Event::<VisitEvent>::from_json(&bytes).expect("decodes");
    let VisitEvent::Recorded(v) = event.payload else {
        panic!("a v1 visit upcasts to visits.recorded");
    };
    assert_eq!(
        v.visitor_type,
        VisitorType::Human,
        "the original's `direct` is a person"
    );
    assert_eq!(v.verification, Verification::None);
    assert_eq!(v.format_served, FormatServed::Unknown);
    assert_eq!(v.referrer.as_deref(), Some("https://www.google.com/"));
    // Re-encoding writes the current version.
    let reencoded: Value = serde_json::from_slice(&event_json(&bytes)).expect("json");
    assert_eq!(reencoded["version"], 2);
}

fn event_json(bytes: &[u8]) -> Vec<u8> {
    Event::<VisitEvent>::from_json(bytes)
        .expect("decodes")
        .to_json()
        .expect("encodes")
}

#[test]
fn a_version_from_the_future_is_refused_not_guessed() {
    let mut v: Value = serde_json::from_slice(
        &std::fs::read(fixtures_dir().join("pages.discovered.v1.json")).expect("fixture"),
    )
    .expect("json");
    v["version"] = 9.into();
    let err =
        Event::<PageEvent>::from_json(&serde_json::to_vec(&v).expect("json")).expect_err("refused");
    assert!(
        matches!(
            err,
            DecodeError::UnknownVersion {
                version: 9,
                current: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn an_event_of_another_stream_or_unknown_type_is_refused() {
    let client = std::fs::read(fixtures_dir().join("clients.deleted.v1.json")).expect("fixture");
    assert!(matches!(
        Event::<PageEvent>::from_json(&client),
        Err(DecodeError::WrongStream { .. })
    ));
    let mut v: Value = serde_json::from_slice(&client).expect("json");
    v["type"] = "clients.renamed".into();
    let err = Event::<ClientEvent>::from_json(&serde_json::to_vec(&v).expect("json"))
        .expect_err("refused");
    assert!(matches!(err, DecodeError::UnknownType(_)), "{err}");
    assert!(matches!(
        Event::<ClientEvent>::from_json(b"{not json"),
        Err(DecodeError::Json(_))
    ));
}

#[test]
fn the_catalogue_documents_every_event_type() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/EVENTS.md"))
        .expect("docs/EVENTS.md");
    let types = PageEvent::CATALOGUE
        .iter()
        .chain(ClientEvent::CATALOGUE)
        .chain(VisitEvent::CATALOGUE);
    for (event_type, version) in types {
        assert!(
            doc.contains(&format!("`{event_type}` v{version}")),
            "docs/EVENTS.md lacks `{event_type}` v{version}"
        );
    }
}
