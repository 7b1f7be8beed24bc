//! [`Predictor`]: any registry model (logistic regression, MLP, trees, ensemble) behind one
//! API, what the engine scores with.
//!
//! ```no_run
//! # use sideline::model::Predictor;
//! # use std::path::Path;
//! let model = Predictor::load(Some(Path::new("models")), "nfl_wp", "v1")?;
//! let rows = vec![vec![0.0; model.inputs().len()]];
//! let values = model.score(&rows)?; // cheap: no attribution work
//! let explained = model.score_explained(&rows)?; // same values, plus interval and attributions
//! assert_eq!(values[0], explained[0].value);
//! # Ok::<(), sideline::model::ModelError>(())
//! ```
//!
//! Rows are the manifest's inputs, in its order, as f64 (`NaN` = missing, which only trees
//! handle). Every kind keeps the two properties of the [`super`] docs: a row's value and
//! explanation are bit-identical whatever batch it is in, and nothing starts a thread pool. A
//! loaded `Predictor` is immutable (`Send + Sync`): share it in an `Arc` and swap the `Arc` to
//! change models.

use std::path::{Path, PathBuf};

use super::ensemble::Ensemble;
use super::explain::{check_rows, sigmoid, Attribution, LogitExplanation, Scored};
use super::gbt::Gbt;
use super::mlp::Mlp;
use super::{
    read_file, round_probability, Manifest, ModelError, ModelKind, WinProbModel, MANIFEST_FILE,
    WEIGHTS_FILE,
};

/// The trees' file in a `gbt` model directory.
pub const TREES_FILE: &str = "model.json";

/// A single (non-ensemble) model.
#[derive(Clone, Debug)]
pub(crate) enum Single {
    Logistic(Box<WinProbModel>),
    Mlp(Mlp),
    Gbt(Gbt),
}

impl Single {
    /// Unrounded logits of `rows`. The logistic regression's are computed in f64 from its f32
    /// weights (the inputs cast to f32 first, as the engine feeds them).
    pub(crate) fn logits<R: AsRef<[f64]>>(&self, rows: &[R]) -> Result<Vec<f64>, ModelError> {
        match self {
            Single::Logistic(m) => Ok(rows.iter().map(|r| linear_logit(m, r.as_ref())).collect()),
            Single::Mlp(m) => m.logits(rows),
            Single::Gbt(m) => Ok(m.logits(rows)),
        }
    }

    /// Logits, baselines and attributions of `rows`.
    pub(crate) fn explain<R: AsRef<[f64]>>(
        &self,
        rows: &[R],
    ) -> Result<Vec<LogitExplanation>, ModelError> {
        match self {
            Single::Logistic(m) => Ok(rows
                .iter()
                .map(|r| {
                    let (logit, attributions) = linear_terms(m, r.as_ref());
                    LogitExplanation {
                        logit,
                        baseline: m.weights().bias as f64,
                        attributions,
                    }
                })
                .collect()),
            Single::Mlp(m) => m.explain(rows),
            Single::Gbt(m) => Ok(m.explain(rows)),
        }
    }

    /// Rounded probabilities. The logistic regression's go through
    /// [`WinProbModel::score_inputs`], bit for bit what the engine has always scored.
    fn score<R: AsRef<[f64]>>(&self, rows: &[R]) -> Result<Vec<f64>, ModelError> {
        match self {
            Single::Logistic(m) => {
                let flat = rows
                    .iter()
                    .flat_map(|r| r.as_ref().iter().map(|v| *v as f32))
                    .collect();
                m.score_inputs(flat, rows.len())
            }
            _ => Ok(self
                .logits(rows)?
                .into_iter()
                .map(|z| round_probability(sigmoid(z)))
                .collect()),
        }
    }
}

/// A logistic regression's logit and exact attributions of one row, in f64:
/// `w_i (x_i - mean_i) / scale_i`, summed after `bias`.
fn linear_terms(m: &WinProbModel, row: &[f64]) -> (f64, Vec<f64>) {
    let terms: Vec<f64> = (0..m.weights().weight.len())
        .map(|i| linear_term(m, row, i))
        .collect();
    (m.weights().bias as f64 + terms.iter().sum::<f64>(), terms)
}

/// [`linear_terms`]' logit alone, bit for bit, without allocating.
fn linear_logit(m: &WinProbModel, row: &[f64]) -> f64 {
    let n = m.weights().weight.len();
    m.weights().bias as f64 + (0..n).map(|i| linear_term(m, row, i)).sum::<f64>()
}

/// Input `i`'s term of a logistic regression's logit.
fn linear_term(m: &WinProbModel, row: &[f64], i: usize) -> f64 {
    let w = m.weights();
    w.weight[i] as f64 * ((row[i] as f32) as f64 - w.input_mean[i] as f64) / w.input_scale[i] as f64
}

#[derive(Clone, Debug)]
enum Body {
    Single(Single),
    Ensemble(Ensemble),
}

/// A loaded model of any kind, ready to score and explain.
#[derive(Clone, Debug)]
pub struct Predictor {
    manifest: Manifest,
    version: String,
    kind: ModelKind,
    body: Body,
}

impl From<WinProbModel> for Predictor {
    fn from(m: WinProbModel) -> Self {
        Predictor {
            manifest: m.manifest().clone(),
            version: m.version().to_string(),
            kind: ModelKind::LogisticRegression,
            body: Body::Single(Single::Logistic(Box::new(m))),
        }
    }
}

impl Predictor {
    /// Loads `name/version` from the registry directory `registry`
    /// (`<registry>/<name>/<version>/`), falling back to the embedded default for `nfl_wp/v1`
    /// as [`crate::pipeline::Registry::load`] does. An ensemble's members come from the same
    /// registry.
    pub fn load(registry: Option<&Path>, name: &str, version: &str) -> Result<Self, ModelError> {
        if let Some(dir) = registry {
            let path = dir.join(name).join(version);
            if path.is_dir() {
                return Self::load_dir(&path, Some(dir));
            }
        }
        if (name, version) == ("nfl_wp", "v1") {
            return Ok(WinProbModel::embedded().into());
        }
        Err(ModelError::Io {
            path: registry
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("models"))
                .join(name)
                .join(version),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such model"),
        })
    }

    /// Loads the model in `dir`. An ensemble's members are looked up in `registry`, by
    /// default the directory two levels up (`dir` being `<registry>/<name>/<version>`).
    pub fn load_dir(dir: &Path, registry: Option<&Path>) -> Result<Self, ModelError> {
        let manifest: Manifest = serde_json::from_slice(&read_file(dir, MANIFEST_FILE)?)?;
        let kind = ModelKind::parse(&manifest.kind)?;
        manifest.check_inputs()?;
        if (kind == ModelKind::Ensemble) != manifest.ensemble.is_some() {
            return Err(ModelError::Members(format!(
                "kind {} {} an `ensemble` object",
                manifest.kind,
                if kind == ModelKind::Ensemble {
                    "needs"
                } else {
                    "must not have"
                }
            )));
        }
        let body = match kind {
            ModelKind::LogisticRegression => {
                return Ok(WinProbModel::load(dir)?.into());
            }
            ModelKind::Mlp => Body::Single(Single::Mlp(Mlp::from_safetensors(
                &read_file(dir, WEIGHTS_FILE)?,
                manifest.inputs.len(),
            )?)),
            ModelKind::Gbt => Body::Single(Single::Gbt(Gbt::from_xgboost_json(
                &read_file(dir, TREES_FILE)?,
                &manifest.inputs,
            )?)),
            ModelKind::Ensemble => {
                let spec = manifest.ensemble.as_ref().expect("checked above");
                let parent = dir.parent().and_then(Path::parent);
                let registry = registry.or(parent);
                let mut members = Vec::new();
                for m in &spec.members {
                    let member = Self::load(registry, &m.name, &m.version)?;
                    let Body::Single(single) = member.body else {
                        return Err(ModelError::Members(format!(
                            "member {} is an ensemble: members must be single models",
                            member.version
                        )));
                    };
                    members.push((member.version, single, member.manifest.inputs));
                }
                Body::Ensemble(Ensemble::new(spec, &manifest.inputs, members)?)
            }
        };
        Ok(Predictor {
            version: format!("{}/{}", manifest.name, manifest.version),
            manifest,
            kind,
            body,
        })
    }

    /// `name/version`, what deltas name as their model.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// The input names a row holds, in order.
    pub fn inputs(&self) -> &[String] {
        &self.manifest.inputs
    }

    /// The ensemble, when this is one (its method and members).
    pub fn ensemble(&self) -> Option<&Ensemble> {
        match &self.body {
            Body::Ensemble(e) => Some(e),
            Body::Single(_) => None,
        }
    }

    /// Probabilities of `rows`, rounded to 6 decimals inside `[1e-6, 1 - 1e-6]` (a hard vote's
    /// vote share likewise), with no attribution work: the engine's per-batch path. For a
    /// logistic regression, bit for bit [`WinProbModel::score_inputs`] of the rows cast to f32.
    pub fn score<R: AsRef<[f64]>>(&self, rows: &[R]) -> Result<Vec<f64>, ModelError> {
        check_rows(rows, self.manifest.inputs.len())?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        match &self.body {
            Body::Single(s) => s.score(rows),
            Body::Ensemble(e) => e.score(rows),
        }
    }

    /// [`Self::score`]'s values with an interval and attributions per row (see
    /// [`super::explain`] for the methods).
    pub fn score_explained<R: AsRef<[f64]>>(&self, rows: &[R]) -> Result<Vec<Scored>, ModelError> {
        check_rows(rows, self.manifest.inputs.len())?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        match &self.body {
            Body::Single(s) => {
                let values = s.score(rows)?;
                Ok(s.explain(rows)?
                    .into_iter()
                    .zip(values)
                    .map(|(e, v)| e.into_scored(v))
                    .collect())
            }
            Body::Ensemble(e) => e.score_explained(rows, None),
        }
    }

    /// [`Self::score_explained`] of an ensemble whose members are combined with `weights`
    /// (one per member, in manifest order) in place of the manifest's: what an online
    /// ensemble published with its weights at the time. A single model ignores `weights`.
    pub fn score_explained_with<R: AsRef<[f64]>>(
        &self,
        rows: &[R],
        weights: &[f64],
    ) -> Result<Vec<Scored>, ModelError> {
        match &self.body {
            Body::Ensemble(e) => {
                check_rows(rows, self.manifest.inputs.len())?;
                if rows.is_empty() {
                    return Ok(Vec::new());
                }
                e.score_explained(rows, Some(weights))
            }
            Body::Single(_) => self.score_explained(rows),
        }
    }

    /// [`Self::score_explained_with`]'s intervals and attributions alone (`weights` as there;
    /// `None` for the manifest's). A single model's rows are not scored: its interval is the
    /// point, and its value costs a tensor pass the attributions do not need.
    pub fn attribute<R: AsRef<[f64]>>(
        &self,
        rows: &[R],
        weights: Option<&[f64]>,
    ) -> Result<Vec<Attribution>, ModelError> {
        check_rows(rows, self.manifest.inputs.len())?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        Ok(match &self.body {
            Body::Single(s) => s
                .explain(rows)?
                .into_iter()
                .map(|e| Attribution {
                    interval: None,
                    attributions: e.attributions,
                })
                .collect(),
            Body::Ensemble(e) => e
                .score_explained(rows, weights)?
                .into_iter()
                .map(|s| Attribution {
                    interval: Some(s.interval),
                    attributions: s.attributions,
                })
                .collect(),
        })
    }

    /// Each member's unrounded logit of `rows`, `[member][row]`, for an ensemble; none for a
    /// single model. What an online ensemble is combined from and re-weighted by.
    pub fn member_logits<R: AsRef<[f64]>>(
        &self,
        rows: &[R],
    ) -> Result<Option<Vec<Vec<f64>>>, ModelError> {
        check_rows(rows, self.manifest.inputs.len())?;
        match &self.body {
            Body::Ensemble(e) => e.logits(rows).map(Some),
            Body::Single(_) => Ok(None),
        }
    }

    /// Unrounded outputs of `rows` in the model's explained space (logits for single models;
    /// see [`super::Space`] for ensembles), in f64. For parity checks and training.
    pub fn outputs<R: AsRef<[f64]>>(&self, rows: &[R]) -> Result<Vec<f64>, ModelError> {
        check_rows(rows, self.manifest.inputs.len())?;
        match &self.body {
            Body::Single(s) => s.logits(rows),
            Body::Ensemble(e) => Ok(e.outputs(rows)?.0),
        }
    }
}
