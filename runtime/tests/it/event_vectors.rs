//! Contract test: every event type has a vector in
//! `proto/shop/events/v1/vectors/`, and the vector is exactly what this
//! build publishes for it (decodes, and encodes back to the same JSON).

use std::path::PathBuf;

use shop_runtime::event::{KNOWN_EVENTS, canonical_json};

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto/shop/events/v1/vectors")
}

#[test]
fn every_event_type_has_a_canonical_vector() {
    for (event_type, _) in KNOWN_EVENTS {
        let name = event_type.rsplit('.').next().unwrap_or_default();
        let path = vectors_dir().join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let canonical = canonical_json(event_type, text.as_bytes())
            .expect("known type")
            .unwrap_or_else(|e| panic!("{name}.json does not decode as {event_type}: {e}"));
        let as_written: serde_json::Value = serde_json::from_str(&text).expect("vector is JSON");
        assert_eq!(
            canonical, as_written,
            "{name}.json is not in the canonical form this build publishes"
        );
    }
}

#[test]
fn every_vector_belongs_to_a_known_event_type() {
    for entry in std::fs::read_dir(vectors_dir()).expect("vectors dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            assert!(
                KNOWN_EVENTS.iter().any(|(t, _)| t.ends_with(&format!(".{name}"))),
                "{name}.json has no event type"
            );
        }
    }
}

#[test]
fn unknown_types_and_incompatible_bodies_are_refused() {
    assert!(canonical_json("shop.events.v9.OrderPlaced", b"{}").is_none());
    let wrong = canonical_json(
        "shop.events.v1.OrderCancelled",
        br#"{"reason":"ORDER_CANCEL_REASON_BORED"}"#,
    );
    assert!(matches!(wrong, Some(Err(_))));
}
