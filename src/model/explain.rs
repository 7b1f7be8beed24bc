//! What a model says about one row beside its value: an interval and feature attributions.
//!
//! # Attributions
//!
//! Every attribution method here is *additive* and *deterministic*: a row's attributions sum
//! to its [`Scored::output`] minus its [`Scored::baseline`], in the space [`Scored::space`]
//! names, and the same row gives the same explanation bit for bit whatever batch it is in
//! (plain f64 loops in a fixed order, or candle ops that are batch-invariant).
//!
//! | kind | space | baseline | method |
//! |---|---|---|---|
//! | logistic regression | logit | `bias` | exact: `w_i (x_i - mean_i) / scale_i` |
//! | MLP | logit | the net's logit at its reference input | DeepLIFT, Rescale rule |
//! | trees | margin (logit) | expected margin over the training covers | path-dependent TreeSHAP |
//! | ensemble | its combination's space | the members' baselines combined the same way | the members' attributions combined the same way |
//!
//! The per-kind modules say why each method was chosen ([`super::mlp`], [`super::gbt`],
//! [`super::ensemble`]).
//!
//! # Intervals
//!
//! A single model carries no uncertainty estimate of its own (no posterior, no quantile
//! heads), so its interval is the point `(value, value)`: honest rather than invented. An
//! ensemble's interval is the *member envelope*: from the lowest to the highest member
//! probability, widened to include the ensemble's value (stacking can leave the members'
//! range). With the two to five members an ensemble has here, a standard deviation would be a
//! poor estimate with a distribution assumed; the envelope is exact and says plainly "the
//! members disagree between a and b", which is what a consumer alerts on.

use serde::Serialize;

/// The space a row's [`Scored::output`], [`Scored::baseline`] and attributions are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Space {
    /// Log-odds of the probability (a tree ensemble's margin).
    Logit,
    /// The probability itself (soft voting).
    Probability,
    /// The weighted share of members voting for the positive class (hard voting).
    VoteShare,
}

/// What a delta needs of a row whose value it already has: [`Scored`]'s interval and
/// attributions, without scoring the row again.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribution {
    /// An ensemble's member envelope; none for a single model (its interval is the point).
    pub interval: Option<(f64, f64)>,
    /// As [`Scored::attributions`].
    pub attributions: Vec<f64>,
}

/// One row's value, interval and attributions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scored {
    /// The value [`super::Predictor::score`] gives the row, bit for bit (a probability
    /// rounded to 6 decimals, inside `[1e-6, 1 - 1e-6]`).
    pub value: f64,
    /// Low and high ends for the value, rounded the same way (see the module docs).
    pub interval: (f64, f64),
    /// The explained quantity, unrounded: the logit for most kinds (see [`Space`]).
    pub output: f64,
    /// What the output is without any input's contribution (see the module docs).
    pub baseline: f64,
    /// One per manifest input, in manifest order, summing to `output - baseline`.
    pub attributions: Vec<f64>,
    pub space: Space,
}

/// A single model's explanation of a row in logit space, before rounding: what ensembles
/// combine.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LogitExplanation {
    pub logit: f64,
    pub baseline: f64,
    pub attributions: Vec<f64>,
}

impl LogitExplanation {
    /// A single model's [`Scored`]: point interval, logit space.
    pub(crate) fn into_scored(self, value: f64) -> Scored {
        Scored {
            value,
            interval: (value, value),
            output: self.logit,
            baseline: self.baseline,
            attributions: self.attributions,
            space: Space::Logit,
        }
    }
}

/// `1 / (1 + exp(-z))` in f64.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Checks that every row has `width` values.
pub(crate) fn check_rows<R: AsRef<[f64]>>(
    rows: &[R],
    width: usize,
) -> Result<(), super::ModelError> {
    match rows.iter().position(|r| r.as_ref().len() != width) {
        Some(i) => Err(super::ModelError::Inputs(format!(
            "row {i} has {} values, the model takes {width}",
            rows[i].as_ref().len()
        ))),
        None => Ok(()),
    }
}
