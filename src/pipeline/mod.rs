//! Pipeline definitions: what data engineers write in `pipelines/*.toml`.
//!
//! A file goes through two phases before anything runs: [`spec`] mirrors the TOML (every value
//! with its place in the file), [`plan`] checks its meaning and resolves every name, so that
//! each error reaches the user as `file:line:column` with what was expected ([`diag`]). A plan
//! then drives the engine: [`window`] assigns a game's events to window members, the dataflow
//! aggregates them ([`aggregate`]), derived features and the model are evaluated from the
//! resulting row ([`expr`]), and [`reference`](mod@reference) recomputes everything from scratch for tests.

pub mod aggregate;
pub mod diag;
pub mod expr;
pub mod plan;
pub mod reference;
pub mod rewrite;
pub mod spec;
pub mod window;

use std::path::{Path, PathBuf};

pub use diag::{Diagnostic, Invalid};
pub use plan::{ModelCatalog, Plan};

/// The pipeline `sideline demo` and `sideline run` deploy when no pipeline directory is given.
pub const DEFAULT_PIPELINE: (&str, &str) = (
    "pipelines/nfl_win_probability.toml",
    include_str!("../../pipelines/nfl_win_probability.toml"),
);

/// Models looked up in a registry directory (`<dir>/<name>/<version>/`), falling back to the
/// models compiled into the binary.
#[derive(Clone, Debug)]
pub struct Registry {
    pub dir: Option<PathBuf>,
}

impl Registry {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Registry { dir }
    }

    /// Loads a model: from the directory when it holds it, else the embedded one.
    pub fn load(
        &self,
        name: &str,
        version: &str,
    ) -> Result<crate::model::Predictor, crate::model::ModelError> {
        crate::model::Predictor::load(self.dir.as_deref(), name, version)
    }
}

impl ModelCatalog for Registry {
    fn inputs(&self, name: &str, version: &str) -> Result<Vec<String>, String> {
        self.load(name, version)
            .map(|m| m.inputs().to_vec())
            .map_err(|e| e.to_string())
    }
}

/// Reads and validates a pipeline file.
pub fn load(path: &Path, models: &dyn ModelCatalog) -> Result<Plan, Invalid> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Invalid(vec![Diagnostic {
            file: file.clone(),
            line: 1,
            column: 1,
            message: format!("cannot read the file: {e}"),
            hint: None,
        }])
    })?;
    plan::plan(&file, &text, models)
}

/// Every `*.toml` file of a directory, sorted by name.
pub fn files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}
