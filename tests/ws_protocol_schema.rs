//! `schemas/ws_protocol.schema.json` must be what the protocol types generate.
//! Regenerate with: `SIDELINE_BLESS=1 cargo test --test ws_protocol_schema`.

use std::path::Path;

#[test]
fn committed_schema_matches_generated() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/ws_protocol.schema.json");
    let generated = sideline::ws::protocol::schema_json();
    if std::env::var_os("SIDELINE_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write schema");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with src/ws/protocol.rs; regenerate it with:\n  \
         SIDELINE_BLESS=1 cargo test --test ws_protocol_schema",
        path.display()
    );
}
