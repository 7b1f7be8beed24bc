//! Ensembles (kind `ensemble`): several registry models scored on the same row and combined.
//!
//! # Manifest
//!
//! An ensemble has no weights file: its `manifest.json` carries an `ensemble` object,
//!
//! ```json
//! "ensemble": {
//!   "method": "stacking",
//!   "members": [
//!     { "name": "nfl_wp", "version": "v1", "weight": 0.7 },
//!     { "name": "nfl_gbt", "version": "v1", "weight": 0.5 }
//!   ],
//!   "bias": -0.1
//! }
//! ```
//!
//! `weighted_average` and `soft_voting` ensembles may also carry an `online` object, which
//! re-weights the members as games finish by their realised log loss, starting from the
//! manifest's weights: [`super::online`] defines it.
//!
//! Members are looked up in the same registry (`<registry>/<name>/<version>/`) and must be
//! single models (logistic regression, MLP, trees), not ensembles: one level keeps loading
//! free of cycles and every combination below exact. Each member's inputs must be among the
//! ensemble's `inputs` (by name); the ensemble is fed its own inputs and gives each member
//! the ones it names.
//!
//! # Methods
//!
//! With member logits `z_i`, probabilities `p_i = sigmoid(z_i)` and weights `w_i` (positive,
//! normalised to sum to 1, for the first three):
//!
//! | method | value | explained output ([`Space`]) |
//! |---|---|---|
//! | `weighted_average` | `sigmoid(sum w_i z_i)`, a weighted average of logits (logarithmic pooling) | logit |
//! | `soft_voting` | `sum w_i p_i`, a weighted average of probabilities (scikit-learn's soft vote) | probability |
//! | `hard_voting` | `sum w_i [p_i >= 0.5]`, the weighted share of members voting "home wins" | vote share |
//! | `stacking` | `sigmoid(bias + sum w_i z_i)`, a logistic meta-model over the members' logits; weights any finite number | logit |
//!
//! # Attributions
//!
//! The members' attributions (each summing to its `z_i - b_i`, baseline `b_i`) are combined
//! the way their outputs are, so the ensemble's sum to its output minus its baseline:
//!
//! - logit-space methods: `phi = sum w_i phi_i`, baseline `sum w_i b_i` (plus `bias`);
//! - soft voting: member `i`'s logit attributions are rescaled into probability space by
//!   `(p_i - sigmoid(b_i)) / (z_i - b_i)` (its slope `p_i (1 - p_i)` when `z_i = b_i`: the
//!   DeepLIFT Rescale rule through the sigmoid), then weighted; baseline `sum w_i sigmoid(b_i)`;
//! - hard voting: the same with the vote `[z >= 0]` in place of the sigmoid: a member whose
//!   vote differs from its baseline's spreads that vote over its inputs in proportion to its
//!   attributions; one whose vote does not contributes nothing.
//!
//! # Interval
//!
//! The member envelope (see [`super::explain`]): lowest to highest member probability,
//! widened to include the ensemble's value.

use serde::{Deserialize, Serialize};

use super::explain::{sigmoid, LogitExplanation, Scored, Space};
use super::online::OnlineSpec;
use super::predictor::Single;
use super::{round_probability, ModelError};

/// How an ensemble combines its members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    WeightedAverage,
    SoftVoting,
    HardVoting,
    Stacking,
}

/// A member of an ensemble, as its manifest names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRef {
    pub name: String,
    pub version: String,
    /// The member's weight (stacking: its coefficient in the meta-model).
    pub weight: f64,
}

/// The `ensemble` object of a manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleSpec {
    pub method: Method,
    pub members: Vec<MemberRef>,
    /// Stacking's intercept (logit space); absent means 0. Only for `stacking`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<f64>,
    /// Online re-weighting by realised accuracy ([`super::online`]); absent means the weights
    /// stay as given. Only for `weighted_average` and `soft_voting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<OnlineSpec>,
}

/// A loaded member.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub version: String,
    pub model: Single,
    /// Normalised weight (stacking: the coefficient as given).
    pub weight: f64,
    /// For each of the member's inputs, its index among the ensemble's inputs.
    pub picks: Vec<usize>,
}

/// A loaded ensemble.
#[derive(Clone, Debug)]
pub struct Ensemble {
    method: Method,
    members: Vec<Member>,
    bias: f64,
    inputs: usize,
    online: Option<OnlineSpec>,
}

impl Ensemble {
    /// Checks `spec` against the loaded `members` (in the spec's order, each with its input
    /// names) and the ensemble's `inputs`.
    pub(crate) fn new(
        spec: &EnsembleSpec,
        inputs: &[String],
        members: Vec<(String, Single, Vec<String>)>,
    ) -> Result<Self, ModelError> {
        let bad = |m: String| ModelError::Members(m);
        if members.is_empty() {
            return Err(bad("an ensemble needs at least one member".into()));
        }
        let averaging = spec.method != Method::Stacking;
        if spec.bias.is_some() && averaging {
            return Err(bad(format!(
                "`bias` is for stacking, not {:?}",
                spec.method
            )));
        }
        if let Some(online) = &spec.online {
            if !matches!(spec.method, Method::WeightedAverage | Method::SoftVoting) {
                return Err(bad(format!(
                    "`online` re-weighting is for weighted_average and soft_voting, not {:?}",
                    spec.method
                )));
            }
            online.check().map_err(bad)?;
        }
        let bias = spec.bias.unwrap_or(0.0);
        let weights: Vec<f64> = spec.members.iter().map(|m| m.weight).collect();
        if !bias.is_finite()
            || weights
                .iter()
                .any(|w| !w.is_finite() || (averaging && *w <= 0.0))
        {
            return Err(bad(if averaging {
                "weights must be finite and positive".into()
            } else {
                "weights and bias must be finite".into()
            }));
        }
        let total: f64 = if averaging { weights.iter().sum() } else { 1.0 };
        let members = members
            .into_iter()
            .zip(&weights)
            .map(|((version, model, names), w)| {
                let picks = names
                    .iter()
                    .map(|n| {
                        inputs.iter().position(|i| i == n).ok_or_else(|| {
                            bad(format!(
                                "member {version} takes input `{n}`, which the ensemble's \
                                 inputs do not list"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Member {
                    version,
                    model,
                    weight: w / total,
                    picks,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Ensemble {
            method: spec.method,
            members,
            bias,
            inputs: inputs.len(),
            online: spec.online.clone(),
        })
    }

    pub fn method(&self) -> Method {
        self.method
    }

    /// The online re-weighting, when the manifest asks for it.
    pub fn online(&self) -> Option<&OnlineSpec> {
        self.online.as_ref()
    }

    /// The members' weights as loaded (normalised, except stacking's), in manifest order:
    /// what every row is combined with unless other weights are given.
    pub fn weights(&self) -> Vec<f64> {
        self.members.iter().map(|m| m.weight).collect()
    }

    /// The value of one row from its member logits (in member order), combined with
    /// `weights` (one per member, in member order) in place of the manifest's.
    pub fn value_with(&self, weights: &[f64], logits: &[f64]) -> f64 {
        self.value(self.combine_with(weights, logits.iter().copied()))
    }

    /// `name/version` of each member, in manifest order.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.version.as_str())
    }

    /// Each member's rows: the ensemble rows' columns it takes, row-major in one buffer (no
    /// allocation per row).
    fn member_rows<R: AsRef<[f64]>>(&self, m: &Member, rows: &[R]) -> Vec<f64> {
        let mut flat = Vec::with_capacity(rows.len() * m.picks.len());
        for r in rows {
            flat.extend(m.picks.iter().map(|i| r.as_ref()[*i]));
        }
        flat
    }

    /// The combination of one row's member logits with `weights`, in the method's space.
    fn combine_with(&self, weights: &[f64], z: impl Iterator<Item = f64>) -> f64 {
        let w = weights.iter().copied();
        match self.method {
            Method::WeightedAverage => w.zip(z).map(|(w, z)| w * z).sum(),
            Method::Stacking => self.bias + w.zip(z).map(|(w, z)| w * z).sum::<f64>(),
            Method::SoftVoting => w.zip(z).map(|(w, z)| w * sigmoid(z)).sum(),
            Method::HardVoting => w.zip(z).map(|(w, z)| w * vote(z)).sum(),
        }
    }

    /// The space of [`Self::combine`]'s result.
    fn space(&self) -> Space {
        match self.method {
            Method::WeightedAverage | Method::Stacking => Space::Logit,
            Method::SoftVoting => Space::Probability,
            Method::HardVoting => Space::VoteShare,
        }
    }

    /// The value of a combined output.
    fn value(&self, output: f64) -> f64 {
        round_probability(match self.space() {
            Space::Logit => sigmoid(output),
            Space::Probability | Space::VoteShare => output,
        })
    }

    /// Member logits, `[member][row]`.
    pub(crate) fn logits<R: AsRef<[f64]>>(&self, rows: &[R]) -> Result<Vec<Vec<f64>>, ModelError> {
        self.members
            .iter()
            .map(|m| {
                let flat = self.member_rows(m, rows);
                let rows: Vec<&[f64]> = flat.chunks_exact(m.picks.len()).collect();
                m.model.logits(&rows)
            })
            .collect()
    }

    /// Unrounded combined outputs and member logits of `rows`.
    pub(crate) fn outputs<R: AsRef<[f64]>>(
        &self,
        rows: &[R],
    ) -> Result<(Vec<f64>, Vec<Vec<f64>>), ModelError> {
        let z = self.logits(rows)?;
        let w = self.weights();
        let out = (0..rows.len())
            .map(|r| self.combine_with(&w, z.iter().map(|m| m[r])))
            .collect();
        Ok((out, z))
    }

    /// Values of `rows`: no attribution work.
    pub(crate) fn score<R: AsRef<[f64]>>(&self, rows: &[R]) -> Result<Vec<f64>, ModelError> {
        let (out, _) = self.outputs(rows)?;
        Ok(out.into_iter().map(|o| self.value(o)).collect())
    }

    /// Values, envelopes and combined attributions of `rows`, with `weights` (one per member,
    /// in member order) in place of the manifest's when given: an online ensemble's current
    /// weights, with which the attributions still sum to the output minus the baseline.
    pub(crate) fn score_explained<R: AsRef<[f64]>>(
        &self,
        rows: &[R],
        weights: Option<&[f64]>,
    ) -> Result<Vec<Scored>, ModelError> {
        let loaded = self.weights();
        let weights = weights.unwrap_or(&loaded);
        if weights.len() != self.members.len() {
            return Err(ModelError::Members(format!(
                "{} weights for {} members",
                weights.len(),
                self.members.len()
            )));
        }
        let explained: Vec<Vec<LogitExplanation>> = self
            .members
            .iter()
            .map(|m| {
                let flat = self.member_rows(m, rows);
                let rows: Vec<&[f64]> = flat.chunks_exact(m.picks.len()).collect();
                m.model.explain(&rows)
            })
            .collect::<Result<_, _>>()?;
        Ok((0..rows.len())
            .map(|r| {
                let output = self.combine_with(weights, explained.iter().map(|m| m[r].logit));
                let value = self.value(output);
                let mut baseline = if self.method == Method::Stacking {
                    self.bias
                } else {
                    0.0
                };
                let mut attributions = vec![0.0; self.inputs];
                let (mut lo, mut hi) = (value, value);
                for ((m, e), w) in self.members.iter().zip(&explained).zip(weights) {
                    let e = &e[r];
                    let p = round_probability(sigmoid(e.logit));
                    lo = lo.min(p);
                    hi = hi.max(p);
                    // The member's weight times the slope that carries its logit
                    // attributions into the ensemble's space.
                    let (base, slope) = match self.method {
                        Method::WeightedAverage | Method::Stacking => (e.baseline, 1.0),
                        Method::SoftVoting => (
                            sigmoid(e.baseline),
                            rescale(e.logit, e.baseline, sigmoid, |z| {
                                let p = sigmoid(z);
                                p * (1.0 - p)
                            }),
                        ),
                        Method::HardVoting => (
                            vote(e.baseline),
                            rescale(e.logit, e.baseline, vote, |_| 0.0),
                        ),
                    };
                    baseline += w * base;
                    for (j, phi) in m.picks.iter().zip(&e.attributions) {
                        attributions[*j] += w * slope * phi;
                    }
                }
                Scored {
                    value,
                    interval: (lo, hi),
                    output,
                    baseline,
                    attributions,
                    space: self.space(),
                }
            })
            .collect())
    }
}

/// A member's vote for the positive class: its probability is at least one half.
fn vote(z: f64) -> f64 {
    if z >= 0.0 {
        1.0
    } else {
        0.0
    }
}

/// `(f(z) - f(b)) / (z - b)`, or `slope(z)` when `z` and `b` (nearly) coincide.
fn rescale(z: f64, b: f64, f: impl Fn(f64) -> f64, slope: impl Fn(f64) -> f64) -> f64 {
    if (z - b).abs() < 1e-12 {
        slope(z)
    } else {
        (f(z) - f(b)) / (z - b)
    }
}
