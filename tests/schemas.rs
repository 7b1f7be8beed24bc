//! The committed JSON Schemas in `schemas/` must be what the Rust types generate, so
//! producers, subscribers and editors never validate against a stale contract.
//! Regenerate with: `cargo run -- schema --write schemas`.

use std::path::Path;

#[test]
fn committed_schemas_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let stale: Vec<&str> = sideline::cli::schemas()
        .into_iter()
        .filter(|(name, generated)| {
            std::fs::read_to_string(dir.join(name)).unwrap_or_default() != *generated
        })
        .map(|(name, _)| name)
        .collect();
    assert!(
        stale.is_empty(),
        "{stale:?} in schemas/ are out of date with the Rust types; regenerate with:\n  cargo run -- schema --write schemas"
    );
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

/// The pipeline schema is what editors check pipeline files with: every shipped pipeline must
/// pass it, and a misspelt key or an unknown enum value must not.
#[test]
fn shipped_pipelines_satisfy_the_pipeline_schema_and_typos_do_not() {
    let schema: serde_json::Value =
        serde_json::from_str(&sideline::pipeline::spec::schema_json()).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let load = |p: &Path| -> serde_json::Value {
        toml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    for f in sideline::pipeline::files_in(&root.join("pipelines")).unwrap() {
        let mut problems = Vec::new();
        conforms(&load(&f), &schema, &schema, "", &mut problems);
        assert!(problems.is_empty(), "{}: {problems:?}", f.display());
    }
    let invalid = root.join("tests/pipelines/invalid");
    for (file, expected) in [
        ("unknown_key.toml", "/feature/0: unknown key `valeu`"),
        ("unknown_sport.toml", "/pipeline/sport: `nlf` is not one of"),
        (
            "unknown_window_kind.toml",
            "/feature/1/window/kind: `slidng`",
        ),
        ("missing_output.toml", ": missing `output`"),
    ] {
        let mut problems = Vec::new();
        conforms(
            &load(&invalid.join(file)),
            &schema,
            &schema,
            "",
            &mut problems,
        );
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{file}: {problems:?}"
        );
    }
}

/// A small JSON Schema check: `$ref`, objects (properties, required, additionalProperties),
/// arrays, `enum`, `oneOf` of `const`s. Enough for the pipeline schema's shape.
fn conforms(
    v: &serde_json::Value,
    s: &serde_json::Value,
    root: &serde_json::Value,
    at: &str,
    problems: &mut Vec<String>,
) {
    if let Some(r) = s["$ref"].as_str() {
        let name = r.trim_start_matches("#/$defs/");
        return conforms(v, &root["$defs"][name], root, at, problems);
    }
    if let Some(values) = s["enum"].as_array() {
        if !values.contains(v) {
            problems.push(format!(
                "{at}: `{}` is not one of {values:?}",
                v.as_str().unwrap_or("?")
            ));
        }
    }
    if let Some(alts) = s["oneOf"].as_array() {
        if !alts.iter().any(|a| a.get("const") == Some(v)) {
            problems.push(format!("{at}: `{v}` is not one of the listed values"));
        }
    }
    match v {
        serde_json::Value::Object(map) => {
            let props = s["properties"].as_object();
            for (k, x) in map {
                match props.and_then(|p| p.get(k)) {
                    Some(ps) => conforms(x, ps, root, &format!("{at}/{k}"), problems),
                    None if s["additionalProperties"] == false => {
                        problems.push(format!("{at}: unknown key `{k}`"))
                    }
                    None => {}
                }
            }
            for r in s["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap();
                if !map.contains_key(r) {
                    problems.push(format!("{at}: missing `{r}`"));
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                conforms(x, &s["items"], root, &format!("{at}/{i}"), problems);
            }
        }
        _ => {}
    }
}
