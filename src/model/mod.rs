//! Win-probability model: the probability that the home team wins, scored inline on every
//! feature change.
//!
//! # The model
//!
//! A logistic regression over the inputs its manifest names:
//!
//! ```text
//! p = sigmoid(bias + sum_i weight_i * (x_i - mean_i) / scale_i)
//! ```
//!
//! The inputs are features of a pipeline (`pipelines/nfl_win_probability.toml` for the default
//! model: its derived features carry the input names); the pipeline's `[model]` maps each input
//! to its feature by name, and the engine feeds them as f32 to
//! [`WinProbModel::score_inputs`]. The trainer ([`train`]) computes its rows from the same
//! pipeline ([`data`]), so training and serving share one definition of every input.
//!
//! It is small on purpose: it is cheap to score per feature change, and its result does not
//! depend on how rows are batched (see below).
//!
//! # Files
//!
//! A model is a directory (the default: `models/nfl_wp/v1/`, embedded in the binary by
//! [`WinProbModel::embedded`]) with two files:
//!
//! - `model.safetensors`: f32 tensors `weight` `[N]`, `bias` `[1]`, `input_mean` `[N]` and
//!   `input_scale` `[N]` (the training set's mean and standard deviation of each input).
//! - `manifest.json`: a [`Manifest`]: name, version, kind (`logistic_regression`), the input
//!   names in order (distinct; a pipeline naming the model must produce every one of them, or
//!   it does not deploy), the pipeline it was trained with, its training and evaluation
//!   seasons, its metrics and the command that made it. `sideline train` ([`train`]) writes
//!   both.
//!
//! # Scoring
//!
//! [`WinProbModel::score_inputs`] scores a whole batch in one candle tensor pass. Two
//! properties matter to the engine:
//!
//! - **Batch invariance.** A row's probability is bit-identical whatever batch it is scored
//!   in, so the engine's output is byte-identical with 1, 2 or 4 workers (whose batches
//!   differ). The pass uses only element-wise ops and a sum over the last (contiguous)
//!   dimension, which candle reduces row by row; no matmul, whose kernel may change the
//!   summation order with the batch shape. `tests/model.rs` checks this under proptest.
//! - **No thread pool.** In candle-core 0.9 on CPU, element-wise ops and reductions run on
//!   the calling thread; only matmul and convolutions go to rayon's global pool (sized by
//!   `RAYON_NUM_THREADS`, else the number of CPUs). Scoring uses neither, so it never starts
//!   that pool and never competes with the timely workers: each worker scores its own batch
//!   on its own thread. Training does not use matmul either.
//!
//! Probabilities are rounded to 6 decimals, `(p * 1e6).round() / 1e6`, so that deltas print
//! compactly and a change below 1e-6 is no change, then clamped to `[1e-6, 1 - 1e-6]`: a
//! score is never exactly 0 or 1.
//!
//! # Other kinds, ensembles, explanations
//!
//! The manifest's `kind` names one of four kinds, each a directory `<registry>/<name>/<version>/`
//! with its `manifest.json`:
//!
//! | kind | weights | module |
//! |---|---|---|
//! | `logistic_regression` | `model.safetensors` (above) | this one, [`WinProbModel`] |
//! | `mlp` | `model.safetensors`, a PyTorch `nn.Sequential`'s `state_dict` | [`mlp`] |
//! | `gbt` | `model.json`, XGBoost's `save_model` JSON | [`gbt`] |
//! | `ensemble` | none: the manifest's `ensemble` names members and weights | [`ensemble`] |
//!
//! [`Predictor`] loads any of them and scores rows of the manifest's inputs: [`Predictor::score`]
//! gives the values (the logistic regression's bit for bit as [`WinProbModel::score_inputs`]),
//! [`Predictor::score_explained`] the same values with an interval and feature attributions
//! per row ([`Scored`]; the methods are described in [`explain`]). Every kind keeps the two
//! properties above: batch invariance (the MLP's dense layers are broadcast multiplies and
//! last-dimension sums, trees and attributions are plain f64 loops) and no thread pool.
//! `examples/models/` holds reference models trained by PyTorch and XGBoost
//! (`make_reference.py`) and their outputs, which `tests/model_parity.rs` compares with.

pub mod archive_rows;
pub mod boost;
pub mod data;
pub mod ensemble;
pub mod evaluate;
pub mod explain;
mod fit_ensemble;
pub mod fit_mlp;
pub mod gbt;
pub mod matrix;
pub mod mlp;
pub mod online;
pub mod predictor;
pub mod train;

pub use explain::{Attribution, Scored, Space};
pub use predictor::Predictor;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

/// The `kind` of a logistic regression's manifest: the only kind [`WinProbModel`] loads.
pub const KIND: &str = "logistic_regression";

/// The kinds of model a manifest can name ([`Predictor`] loads them all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// `logistic_regression`: [`WinProbModel`], weights in `model.safetensors`.
    LogisticRegression,
    /// `mlp`: [`mlp::Mlp`], a PyTorch-layout `nn.Sequential` in `model.safetensors`.
    Mlp,
    /// `gbt`: [`gbt::Gbt`], gradient-boosted trees in XGBoost's JSON format (`model.json`).
    Gbt,
    /// `ensemble`: [`ensemble::Ensemble`] of other registry models; no weights file.
    Ensemble,
}

impl ModelKind {
    /// Every kind, as manifests spell them.
    pub const ALL: [&'static str; 4] = ["logistic_regression", "mlp", "gbt", "ensemble"];

    /// The kind a manifest's `kind` names.
    pub fn parse(kind: &str) -> Result<Self, ModelError> {
        Ok(match kind {
            KIND => ModelKind::LogisticRegression,
            "mlp" => ModelKind::Mlp,
            "gbt" => ModelKind::Gbt,
            "ensemble" => ModelKind::Ensemble,
            _ => {
                return Err(ModelError::Kind {
                    found: kind.to_string(),
                    expected: Self::ALL.join(", "),
                })
            }
        })
    }

    /// The spelling in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::LogisticRegression => KIND,
            ModelKind::Mlp => "mlp",
            ModelKind::Gbt => "gbt",
            ModelKind::Ensemble => "ensemble",
        }
    }
}

/// Why a model cannot be loaded or scored.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file cannot be read (bad input: the path).
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `manifest.json` is not a valid manifest (bad input).
    #[error("invalid model manifest: {0}")]
    Manifest(#[from] serde_json::Error),
    /// The manifest names a kind of model this loader does not take (bad input).
    #[error("model kind is {found:?}, expected one of: {expected}")]
    Kind { found: String, expected: String },
    /// The manifest's input list is empty or names an input twice (bad input).
    #[error("model inputs: {0}")]
    Inputs(String),
    /// The weights file lacks a tensor or has one of the wrong shape (bad input).
    #[error("model weights: {0}")]
    Weights(String),
    /// An ensemble's members are missing, nested, or do not fit its inputs (bad input).
    #[error("ensemble members: {0}")]
    Members(String),
    /// candle failed (internal: a bug, retrying will not help).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    /// A stable code for logs and subscribers.
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::Io { .. } => "model_io",
            ModelError::Manifest(_) => "model_manifest_invalid",
            ModelError::Kind { .. } => "model_kind_unsupported",
            ModelError::Inputs(_) => "model_inputs_invalid",
            ModelError::Weights(_) => "model_weights_invalid",
            ModelError::Members(_) => "model_members_invalid",
            ModelError::Candle(_) => "model_internal",
        }
    }
}

/// Quality figures of a model on a set of labelled rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Rows scored (one per feature change of a game).
    pub rows: usize,
    /// Games the rows come from.
    pub games: usize,
    /// Mean log loss (natural log) of the model's probabilities.
    pub log_loss: f64,
    /// Mean squared error of the probabilities (Brier score).
    pub brier: f64,
    /// Log loss of the constant predictor that always says the rows' mean label (the best
    /// constant in hindsight, so a generous baseline).
    pub baseline_log_loss: f64,
    /// Brier score of that constant predictor.
    pub baseline_brier: f64,
}

/// The model's figures on its training and evaluation sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestMetrics {
    pub train: Metrics,
    pub eval: Option<Metrics>,
}

/// How the weights were fitted. Each field is optional: a model trained elsewhere (PyTorch,
/// XGBoost) says what applies to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// The program that fitted the model when not sideline, e.g. `torch 2.5.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    /// Full-batch epochs (Adam for sideline's logistic regression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Learning rate (XGBoost's `eta` for trees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Trees fitted (gradient boosting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trees: Option<usize>,
    /// Maximum tree depth (gradient boosting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<usize>,
    /// Random seed of the fit, when it draws anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Games read from the training events that had no `game_end` (skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_games: Option<usize>,
}

/// `manifest.json`: what a model directory holds and how it was made.
///
/// Fields a logistic regression trained by `sideline train` always has are plain; the others
/// are optional and left out of the file when absent, so the default model's manifest is
/// unchanged byte for byte.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Model name, e.g. `nfl_wp`.
    pub name: String,
    /// Model version, e.g. `v1`.
    pub version: String,
    /// One of [`ModelKind::ALL`]: `logistic_regression`, `mlp`, `gbt`, `ensemble`.
    pub kind: String,
    /// What the model predicts.
    pub output: String,
    /// Input names, in the order of the weights (of the trees' feature indices for `gbt`; of
    /// the rows an ensemble is given, each member picking its own inputs by name): features of
    /// the pipeline (derived features or window features, team ones as `name.home` /
    /// `name.away`).
    pub inputs: Vec<String>,
    /// The pipeline whose features the model was trained on (absent for a model trained
    /// outside sideline on other data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineRef>,
    /// Seasons of the training games (the training range of a model trained on sport data).
    #[serde(default)]
    pub train_seasons: Vec<u32>,
    /// Seasons of the evaluation games.
    #[serde(default)]
    pub eval_seasons: Vec<u32>,
    /// The training data in words when it is not seasons of a sport (e.g. synthetic, seeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_data: Option<String>,
    /// The evaluation data in words when it is not seasons of a sport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<ManifestMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<Training>,
    /// The command that made the model.
    pub created_by: String,
    /// An ensemble's members and how it combines them (kind `ensemble` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<ensemble::EnsembleSpec>,
}

impl Manifest {
    /// Checks that the input list is non-empty and names no input twice.
    pub fn check_inputs(&self) -> Result<(), ModelError> {
        if self.inputs.is_empty() {
            return Err(ModelError::Inputs("the manifest lists no inputs".into()));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.inputs.iter().find(|i| !seen.insert(i.as_str())) {
            return Err(ModelError::Inputs(format!(
                "the manifest lists input `{dup}` twice"
            )));
        }
        Ok(())
    }
}

/// A pipeline file, as a manifest or a cached matrix records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineRef {
    /// `[pipeline] name`.
    pub name: String,
    /// `[pipeline] version`.
    pub version: u32,
    /// FNV-1a 64 of the file's text ([`data::pipeline_hash`]).
    pub hash: String,
}

impl PipelineRef {
    /// The reference of a planned pipeline.
    pub fn of_plan(plan: &crate::pipeline::Plan) -> Self {
        PipelineRef {
            name: plan.name.clone(),
            version: plan.version,
            hash: data::pipeline_hash(&plan.source),
        }
    }
}

/// Standardisation and weights, as f32 vectors (the safetensors content).
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    pub weight: Vec<f32>,
    pub bias: f32,
    pub input_mean: Vec<f32>,
    pub input_scale: Vec<f32>,
}

/// A loaded win-probability model, ready to score.
#[derive(Clone, Debug)]
pub struct WinProbModel {
    manifest: Manifest,
    weights: Weights,
    version: String,
    /// `weight` `[N]`.
    weight: Tensor,
    /// `bias` `[1]`.
    bias: Tensor,
    /// `input_mean` `[N]`.
    mean: Tensor,
    /// `1 / input_scale` `[N]`.
    inv_scale: Tensor,
}

pub(crate) const MANIFEST_FILE: &str = "manifest.json";
pub(crate) const WEIGHTS_FILE: &str = "model.safetensors";

/// Reads `dir/name`.
pub(crate) fn read_file(dir: &Path, name: &str) -> Result<Vec<u8>, ModelError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|source| ModelError::Io { path, source })
}

impl WinProbModel {
    /// Builds a model from a manifest and weights, checking that they fit this build.
    pub fn new(manifest: Manifest, weights: Weights) -> Result<Self, ModelError> {
        if manifest.kind != KIND {
            return Err(ModelError::Kind {
                found: manifest.kind.clone(),
                expected: KIND.to_string(),
            });
        }
        manifest.check_inputs()?;
        let n = manifest.inputs.len();
        for (name, v) in [
            ("weight", &weights.weight),
            ("input_mean", &weights.input_mean),
            ("input_scale", &weights.input_scale),
        ] {
            if v.len() != n {
                return Err(ModelError::Weights(format!(
                    "`{name}` has {} values, expected {n} (one per manifest input)",
                    v.len()
                )));
            }
        }
        let finite = |x: &f32| x.is_finite();
        if !(weights.weight.iter().all(finite)
            && weights.bias.is_finite()
            && weights.input_mean.iter().all(finite)
            && weights
                .input_scale
                .iter()
                .all(|s| s.is_finite() && *s > 0.0))
        {
            return Err(ModelError::Weights(
                "weights must be finite and scales positive".into(),
            ));
        }
        let dev = Device::Cpu;
        let inv: Vec<f32> = weights.input_scale.iter().map(|s| 1.0 / s).collect();
        Ok(WinProbModel {
            version: format!("{}/{}", manifest.name, manifest.version),
            weight: Tensor::from_slice(&weights.weight, n, &dev)?,
            bias: Tensor::from_slice(&[weights.bias], 1, &dev)?,
            mean: Tensor::from_slice(&weights.input_mean, n, &dev)?,
            inv_scale: Tensor::from_slice(&inv, n, &dev)?,
            manifest,
            weights,
        })
    }

    /// Loads `manifest.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        Self::from_bytes(
            &read_file(dir, MANIFEST_FILE)?,
            &read_file(dir, WEIGHTS_FILE)?,
        )
    }

    /// Builds a model from the contents of `manifest.json` and `model.safetensors`.
    pub fn from_bytes(manifest: &[u8], weights: &[u8]) -> Result<Self, ModelError> {
        let manifest: Manifest = serde_json::from_slice(manifest)?;
        let tensors = candle_core::safetensors::load_buffer(weights, &Device::Cpu)
            .map_err(|e| ModelError::Weights(e.to_string()))?;
        let get = |name: &str| -> Result<Vec<f32>, ModelError> {
            let t = tensors
                .get(name)
                .ok_or_else(|| ModelError::Weights(format!("tensor `{name}` is missing")))?;
            if t.rank() != 1 {
                return Err(ModelError::Weights(format!(
                    "tensor `{name}` has shape {:?}, expected one dimension",
                    t.dims()
                )));
            }
            Ok(t.to_dtype(DType::F32)?.to_vec1::<f32>()?)
        };
        let bias = get("bias")?;
        let [bias] = bias[..] else {
            return Err(ModelError::Weights(format!(
                "tensor `bias` has {} values, expected 1",
                bias.len()
            )));
        };
        let weights = Weights {
            weight: get("weight")?,
            bias,
            input_mean: get("input_mean")?,
            input_scale: get("input_scale")?,
        };
        Self::new(manifest, weights)
    }

    /// The default model, `models/nfl_wp/v1/`, compiled into the binary.
    ///
    /// # Panics
    /// If the embedded files are invalid: a build defect that `tests/model.rs` catches.
    pub fn embedded() -> Self {
        Self::from_bytes(
            include_bytes!("../../models/nfl_wp/v1/manifest.json"),
            include_bytes!("../../models/nfl_wp/v1/model.safetensors"),
        )
        .expect("the embedded model models/nfl_wp/v1 is valid")
    }

    /// `name/version`, e.g. `nfl_wp/v1`: what deltas name as their model.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// Writes `manifest.json` (pretty, with a final newline) and `model.safetensors` to `dir`,
    /// creating it.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let io = |path: PathBuf| move |source| ModelError::Io { path, source };
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
        let mut text = serde_json::to_string_pretty(&self.manifest)?;
        text.push('\n');
        let path = dir.join(MANIFEST_FILE);
        std::fs::write(&path, text).map_err(io(path.clone()))?;
        let tensors: HashMap<&str, Tensor> = [
            ("weight", self.weight.clone()),
            ("bias", self.bias.clone()),
            ("input_mean", self.mean.clone()),
            (
                "input_scale",
                Tensor::from_slice(
                    &self.weights.input_scale,
                    self.manifest.inputs.len(),
                    &Device::Cpu,
                )?,
            ),
        ]
        .into_iter()
        .collect();
        candle_core::safetensors::save(&tensors, dir.join(WEIGHTS_FILE))?;
        Ok(())
    }

    /// Home-win probabilities of `rows` rows of the manifest's inputs (row-major, f32), in one
    /// tensor pass, rounded to 6 decimals and clamped to `[1e-6, 1 - 1e-6]`. A row's result
    /// does not depend on the batch it is in (see the module docs).
    pub fn score_inputs(&self, inputs: Vec<f32>, rows: usize) -> Result<Vec<f64>, ModelError> {
        let n = self.manifest.inputs.len();
        if inputs.len() != rows * n {
            return Err(ModelError::Inputs(format!(
                "{} values for {rows} rows of {n} inputs",
                inputs.len()
            )));
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        let x = Tensor::from_vec(inputs, (rows, self.manifest.inputs.len()), &Device::Cpu)?;
        let p = self.probabilities(&x)?.to_vec1::<f32>()?;
        Ok(p.into_iter().map(|p| round_probability(p as f64)).collect())
    }

    /// Unrounded probabilities `[n]` of raw inputs `[n, N]` (f32).
    fn probabilities(&self, x: &Tensor) -> Result<Tensor, ModelError> {
        let z = logits(x, &self.mean, &self.inv_scale, &self.weight, &self.bias)?;
        Ok(sigmoid(&z)?)
    }
}

/// `(x - mean) * inv_scale . weight + bias`, row by row: `[n, N]` to `[n]`. Element-wise ops
/// and a last-dimension sum only (batch invariance; see the module docs). Shared with training.
pub(crate) fn logits(
    x: &Tensor,
    mean: &Tensor,
    inv_scale: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
) -> candle_core::Result<Tensor> {
    let standard = x.broadcast_sub(mean)?.broadcast_mul(inv_scale)?;
    standardised_logits(&standard, weight, bias)
}

/// `x . weight + bias` for standardised inputs `[n, N]`.
pub(crate) fn standardised_logits(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
) -> candle_core::Result<Tensor> {
    x.broadcast_mul(weight)?.sum(1)?.broadcast_add(bias)
}

/// `1 / (1 + exp(-z))` (candle-core has no sigmoid of its own).
pub(crate) fn sigmoid(z: &Tensor) -> candle_core::Result<Tensor> {
    z.neg()?.exp()?.affine(1.0, 1.0)?.recip()
}

/// Rounds a probability to 6 decimals and keeps it inside `[1e-6, 1 - 1e-6]`.
pub fn round_probability(p: f64) -> f64 {
    ((p * 1e6).round() / 1e6).clamp(1e-6, 1.0 - 1e-6)
}
