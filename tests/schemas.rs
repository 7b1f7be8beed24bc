//! The committed JSON Schemas in `schemas/` must be what the Rust types generate, so
//! producers, subscribers and editors never validate against a stale contract.
//! Regenerate with: `cargo run -- schema --write schemas`.

use std::path::Path;

#[test]
fn committed_schemas_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    for (name, generated) in sideline::cli::schemas() {
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            committed == generated,
            "schemas/{name} is out of date with the Rust types; regenerate with:\n  cargo run -- schema --write schemas"
        );
    }
}

#[test]
fn every_fixture_event_validates_against_the_event_schema_shape() {
    // The schema names every field a GameEvent may carry; the fixture uses no other.
    let schema: serde_json::Value = serde_json::from_str(&sideline::event::schema_json()).unwrap();
    let props = schema["properties"].as_object().unwrap();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let fixture = include_str!("../examples/data/nfl/games.jsonl");
    for line in fixture.lines() {
        let ev: serde_json::Value = serde_json::from_str(line).unwrap();
        let obj = ev.as_object().unwrap();
        for k in obj.keys() {
            assert!(props.contains_key(k), "field {k} is not in the schema");
        }
        for r in &required {
            assert!(obj.contains_key(*r), "required field {r} missing in {line}");
        }
    }
}
