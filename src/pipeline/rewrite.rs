//! New pipeline definitions from deployed ones, for `promote` and `rollback`: the deployed
//! file's text with a few values changed, its comments and layout kept.
//!
//! - [`with_version`]: the same definition under another `[pipeline] version` (a rollback
//!   redeploys an earlier definition under a new version: versions only go up);
//! - [`promoted`]: the shadow model becomes the model and the model the shadow, so the two
//!   keep being compared (a formula model has no place as a shadow: it is dropped).
//!
//! The result is plain text: it is deployed like any file, through validation.

use toml_edit::{DocumentMut, Item, Value};

/// Why a definition could not be rewritten.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    /// `[model]` names no shadow model.
    #[error("[model] has no shadow model to promote")]
    NoShadow,
    /// The text is not a pipeline file (it was valid when deployed: an internal error).
    #[error("the deployed definition does not parse: {0}")]
    Parse(String),
}

/// `text` with `[pipeline] version = version`.
pub fn with_version(text: &str, version: u32) -> Result<String, RewriteError> {
    let mut doc = parse(text)?;
    set(&mut doc["pipeline"]["version"], i64::from(version));
    Ok(doc.to_string())
}

/// `text` with the shadow model as the model, the model as the shadow, and `[pipeline]
/// version = version`.
pub fn promoted(text: &str, version: u32) -> Result<String, RewriteError> {
    let mut doc = parse(text)?;
    let (Some(name), Some(ver)) = (
        string(&doc, &["model", "shadow", "name"]),
        string(&doc, &["model", "shadow", "version"]),
    ) else {
        return Err(RewriteError::NoShadow);
    };
    let old = (
        string(&doc, &["model", "name"]),
        string(&doc, &["model", "version"]),
    );
    set(&mut doc["pipeline"]["version"], i64::from(version));
    let model = &mut doc["model"];
    set(&mut model["name"], name);
    set(&mut model["version"], ver);
    match old {
        (Some(old_name), Some(old_version)) => {
            set(&mut model["shadow"]["name"], old_name);
            set(&mut model["shadow"]["version"], old_version);
        }
        // A formula: no shadow after the promotion.
        _ => {
            if let Some(t) = model.as_table_like_mut() {
                t.remove("expr");
                t.remove("shadow");
            }
        }
    }
    Ok(doc.to_string())
}

/// The string at `path`, if there is one.
fn string(doc: &DocumentMut, path: &[&str]) -> Option<String> {
    let mut item = doc.as_item();
    for key in path {
        item = item.get(key)?;
    }
    item.as_str().map(String::from)
}

fn parse(text: &str) -> Result<DocumentMut, RewriteError> {
    text.parse::<DocumentMut>()
        .map_err(|e| RewriteError::Parse(e.to_string()))
}

/// Replaces a value, keeping the comments and spacing around the old one.
fn set(item: &mut Item, new: impl Into<Value>) {
    let mut v: Value = new.into();
    if let Some(old) = item.as_value() {
        *v.decor_mut() = old.decor().clone();
    }
    *item = Item::Value(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"[pipeline]
name = "p"
version = 2   # raised on every change

[model]
name = "a"
version = "v1"
shadow = { name = "b", version = "v3" }
output = "x"
"#;

    #[test]
    fn promoting_swaps_the_models_and_keeps_the_rest() {
        let out = promoted(FILE, 3).unwrap();
        assert_eq!(
            out,
            FILE.replace("version = 2 ", "version = 3 ")
                .replace(
                    "name = \"a\"\nversion = \"v1\"",
                    "name = \"b\"\nversion = \"v3\""
                )
                .replace(
                    "{ name = \"b\", version = \"v3\" }",
                    "{ name = \"a\", version = \"v1\" }"
                )
        );
        // And back: promoting twice is where it started, two versions on.
        assert_eq!(
            promoted(&out, 4).unwrap(),
            FILE.replace("version = 2 ", "version = 4 ")
        );
    }

    #[test]
    fn a_shadow_table_and_a_formula_model() {
        let file = "[pipeline]\nversion = 1\n\n[model]\nexpr = \"sigmoid(x)\"\n\n[model.shadow]\nname = \"b\"\nversion = \"v1\"\n";
        let out = promoted(file, 2).unwrap();
        let doc: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(doc["model"]["name"].as_str(), Some("b"));
        assert_eq!(doc["model"]["version"].as_str(), Some("v1"));
        assert!(doc["model"].get("expr").is_none() && doc["model"].get("shadow").is_none());
        assert_eq!(doc["pipeline"]["version"].as_integer(), Some(2));
    }

    #[test]
    fn nothing_to_promote_without_a_shadow() {
        let file = FILE.replace("shadow = { name = \"b\", version = \"v3\" }\n", "");
        assert_eq!(promoted(&file, 3), Err(RewriteError::NoShadow));
        assert_eq!(
            with_version(&file, 7).unwrap(),
            file.replace("version = 2 ", "version = 7 ")
        );
    }
}
