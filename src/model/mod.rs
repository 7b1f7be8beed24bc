//! Win-probability model: the probability that the home team wins, scored inline on every
//! feature change.
//!
//! # The model
//!
//! A logistic regression over [`N_INPUTS`] inputs derived from a game's [`FeatureVec`] by
//! [`inputs`] (names in [`INPUT_NAMES`]):
//!
//! ```text
//! p = sigmoid(bias + sum_i weight_i * (x_i - mean_i) / scale_i)
//! ```
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
//!   names in order (loading fails with [`ModelError::InputsMismatch`] when they differ from
//!   [`INPUT_NAMES`], so a model can never be scored against inputs it was not trained on), the
//!   feature slots it reads, its training and evaluation seasons, its metrics and the command
//!   that made it. `sideline train` ([`train`]) writes both.
//!
//! # Scoring
//!
//! [`WinProbModel::score_batch`] scores a whole batch in one candle tensor pass. Two properties
//! matter to the engine:
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

pub mod data;
pub mod matrix;
pub mod train;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::features::{FeatureVec, Slot, FEATURE_NAMES};

/// Number of model inputs.
pub const N_INPUTS: usize = 14;

/// The model's inputs, in order. Each is computed from the features by [`inputs`]; "per sqrt
/// minute" terms are divided by the square root of the minutes left (plus 1, or plus 0.25 for
/// the lead), which makes them grow as the game runs out; "possession" terms are signed (+
/// home has the ball, - away).
pub const INPUT_NAMES: [&str; N_INPUTS] = [
    "score_diff",
    "score_diff_per_sqrt_minute",
    "time_left_fraction",
    "possession",
    "possession_per_sqrt_minute",
    "possession_field_position",
    "possession_field_position_per_sqrt_minute",
    "possession_distance",
    "possession_third_down",
    "possession_fourth_down",
    "possession_red_zone",
    "recent_points_diff",
    "possession_yards_per_play",
    "final_margin_sign",
];

/// The feature slots [`inputs`] reads (recorded in the manifest).
pub const FEATURES_READ: [Slot; 10] = [
    Slot::ScoreDiff,
    Slot::SecondsRemaining,
    Slot::Possession,
    Slot::Down,
    Slot::Distance,
    Slot::YardsToGoal,
    Slot::HomePoints5m,
    Slot::AwayPoints5m,
    Slot::Plays10,
    Slot::Yards10,
];

/// The `kind` a manifest must name.
pub const KIND: &str = "logistic_regression";

/// Seconds in regulation (NFL).
const REGULATION_SECONDS: f32 = 3600.0;

/// The model's inputs for one feature vector, in [`INPUT_NAMES`] order (unstandardised).
///
/// - `score_diff`, `score_diff_per_sqrt_minute`: the lead, and the lead over
///   `sqrt(minutes_left + 0.25)`, the spread of the points still to come (as in Stern's
///   Brownian-motion model of the final margin).
/// - `time_left_fraction`: seconds left / 3600; with the bias it lets home advantage fade.
/// - `possession`, `possession_per_sqrt_minute`: who has the ball, worth more late.
/// - `possession_field_position` (`(100 - yards_to_goal) / 100`), its per-sqrt-minute version,
///   `possession_distance` (yards to go / 10, capped at 30 yards), third and fourth down flags
///   and `possession_red_zone` (within 20 yards): the drive's prospects, all 0 when no down is
///   set (kickoffs, tries, end of half).
/// - `recent_points_diff`: home minus away points in the last 5 game minutes.
/// - `possession_yards_per_play`: yards per play over the last 10 plays (capped to -10..20).
/// - `final_margin_sign`: the sign of the lead once no time is left (the game is decided
///   unless tied).
pub fn inputs(f: &FeatureVec) -> [f32; N_INPUTS] {
    let sd = f.get(Slot::ScoreDiff) as f32;
    let seconds = f.get(Slot::SecondsRemaining).max(0) as f32;
    let pos = f.get(Slot::Possession).signum() as f32;
    let down = f.get(Slot::Down);
    let distance = f.get(Slot::Distance).clamp(0, 30) as f32;
    let ytg = f.get(Slot::YardsToGoal);
    let recent = (f.get(Slot::HomePoints5m) - f.get(Slot::AwayPoints5m)) as f32;
    let plays = f.get(Slot::Plays10);
    let yards = f.get(Slot::Yards10) as f32;

    let per_sqrt_minute = 1.0 / (seconds / 60.0 + 1.0).sqrt();
    let snap = (1..=4).contains(&down) && (1..=99).contains(&ytg);
    let field = if snap {
        (100 - ytg) as f32 / 100.0
    } else {
        0.0
    };
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let ypp = if plays > 0 {
        (yards / plays as f32).clamp(-10.0, 20.0)
    } else {
        0.0
    };
    [
        sd,
        sd / (seconds / 60.0 + 0.25).sqrt(),
        (seconds / REGULATION_SECONDS).min(1.0),
        pos,
        pos * per_sqrt_minute,
        pos * field,
        pos * field * per_sqrt_minute,
        if snap { pos * distance / 10.0 } else { 0.0 },
        pos * flag(snap && down == 3),
        pos * flag(snap && down == 4),
        pos * flag(snap && ytg <= 20),
        recent,
        pos * ypp,
        if seconds == 0.0 { sd.signum() } else { 0.0 },
    ]
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
    /// The manifest names another kind of model (bad input).
    #[error("model kind is {found:?}, this build scores only {KIND:?}")]
    Kind { found: String },
    /// The manifest's inputs are not this build's [`INPUT_NAMES`] (bad input: a model trained
    /// for another build).
    #[error(
        "model inputs differ from this build's: the manifest lists {found:?}, \
         this build computes {expected:?}"
    )]
    InputsMismatch {
        expected: Vec<String>,
        found: Vec<String>,
    },
    /// The weights file lacks a tensor or has one of the wrong shape (bad input).
    #[error("model weights: {0}")]
    Weights(String),
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
            ModelError::InputsMismatch { .. } => "model_inputs_mismatch",
            ModelError::Weights(_) => "model_weights_invalid",
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

/// How the weights were fitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// Full-batch Adam epochs.
    pub epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Games read from the training events that had no `game_end` (skipped).
    pub skipped_games: usize,
}

/// `manifest.json`: what a weights file is and how it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Model name, e.g. `nfl_wp`.
    pub name: String,
    /// Model version, e.g. `v1`.
    pub version: String,
    /// Always [`KIND`].
    pub kind: String,
    /// What the model predicts.
    pub output: String,
    /// Input names, in the order of the weights; must equal [`INPUT_NAMES`].
    pub inputs: Vec<String>,
    /// Feature slots the inputs are computed from (names from [`FEATURE_NAMES`]).
    pub features: Vec<String>,
    /// Seasons of the training games.
    pub train_seasons: Vec<u32>,
    /// Seasons of the evaluation games.
    pub eval_seasons: Vec<u32>,
    pub metrics: ManifestMetrics,
    pub training: Training,
    /// The command that made the model.
    pub created_by: String,
}

/// The names of [`FEATURES_READ`].
pub fn features_read_names() -> Vec<String> {
    FEATURES_READ
        .iter()
        .map(|s| FEATURE_NAMES[*s as usize].to_string())
        .collect()
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

const MANIFEST_FILE: &str = "manifest.json";
const WEIGHTS_FILE: &str = "model.safetensors";

impl WinProbModel {
    /// Builds a model from a manifest and weights, checking that they fit this build.
    pub fn new(manifest: Manifest, weights: Weights) -> Result<Self, ModelError> {
        if manifest.kind != KIND {
            return Err(ModelError::Kind {
                found: manifest.kind.clone(),
            });
        }
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
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| ModelError::Io { path, source })
        };
        Self::from_bytes(&read(MANIFEST_FILE)?, &read(WEIGHTS_FILE)?)
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

    /// Home-win probabilities of a batch of feature vectors, in one tensor pass, rounded to 6
    /// decimals and clamped to `[1e-6, 1 - 1e-6]`. A row's result does not depend on the
    /// batch it is in (see the module docs).
    pub fn score_batch(&self, rows: &[FeatureVec]) -> Result<Vec<f64>, ModelError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let flat: Vec<f32> = rows.iter().flat_map(inputs).collect();
        let x = Tensor::from_vec(flat, (rows.len(), N_INPUTS), &Device::Cpu)?;
        let p = self.probabilities(&x)?.to_vec1::<f32>()?;
        Ok(p.into_iter().map(|p| round_probability(p as f64)).collect())
    }

    /// Probabilities of raw inputs, `rows` rows of the manifest's inputs each (row-major), in
    /// one tensor pass, rounded like [`WinProbModel::score_batch`].
    pub fn score_inputs(&self, inputs: Vec<f32>, rows: usize) -> Result<Vec<f64>, ModelError> {
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
