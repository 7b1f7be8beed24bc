//! Online re-weighting of an ensemble's members by their realised accuracy (issue 4).
//!
//! An ensemble manifest may carry an `online` object beside its members (`weighted_average`
//! and `soft_voting` only):
//!
//! ```json
//! "online": { "method": "exp_log_loss", "eta": 1.0, "half_life_games": 50 }
//! ```
//!
//! # Definition
//!
//! Each finished game `g` gives every member `i` a loss `l_ig`: the mean log loss (natural
//! log) of the member's probability at each of the game's scored rows before its `game_end`,
//! against the game's result from home's side (1 win, 0 loss, 0.5 tie). A member's
//! probability is its logit through the sigmoid, rounded and clamped as every probability
//! the engine publishes ([`super::round_probability`]), so a loss is always finite.
//!
//! Over the finished games `g_1, ..., g_n` in the order they are applied, with the decay
//! `d = 2^(-1 / half_life_games)`, member `i`'s running loss is the exponentially weighted
//! mean
//!
//! ```text
//! L_i = sum_k d^(n-k) l_i,g_k / sum_k d^(n-k)          (0 before any game)
//! ```
//!
//! and its weight is `w_i = w0_i exp(-eta L_i) / sum_j w0_j exp(-eta L_j)`, `w0` the
//! manifest's (normalised) weights. So with no finished game the ensemble is the static one;
//! a member whose recent games cost `x` nats more per row than another's ends up with
//! `exp(-eta x)` times the weight the manifest gave it, relatively. This is the exponentially
//! weighted average forecaster (Hedge) on a discounted mean loss: the mean keeps `eta`'s scale
//! independent of how many games have finished, and the half-life lets a member that
//! improves (or degrades) win back (or lose) weight.
//!
//! [`OnlineWeights::update`] keeps the two decayed sums and applies one game in O(members);
//! [`weights_from_scratch`] recomputes the definition above directly, which the tests hold
//! the incremental state to.
//!
//! # In the engine
//!
//! The order games are applied in is (end time, game): see [`crate::dataflow::reweight`],
//! which makes every worker apply the same games in that order before scoring each time.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::data::LabeledRow;
use super::explain::sigmoid;
use super::{round_probability, ModelError, Predictor};

/// How realised accuracy turns into weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnlineMethod {
    /// `w_i ∝ w0_i exp(-eta L_i)`, `L_i` an exponentially weighted mean log loss per game.
    ExpLogLoss,
}

/// The `online` object of an ensemble manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineSpec {
    pub method: OnlineMethod,
    /// Learning rate: a member whose running loss is `1 / eta` nats per row above another's
    /// has `1 / e` of the weight, relative to their manifest weights. At least 0 (0: fixed).
    pub eta: f64,
    /// After this many more finished games, a game's loss counts half. Above 0.
    pub half_life_games: f64,
}

impl OnlineSpec {
    /// Why the spec cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if !self.eta.is_finite() || self.eta < 0.0 {
            return Err(format!(
                "online `eta` must be finite and >= 0, not {}",
                self.eta
            ));
        }
        if !self.half_life_games.is_finite() || self.half_life_games <= 0.0 {
            return Err(format!(
                "online `half_life_games` must be finite and > 0, not {}",
                self.half_life_games
            ));
        }
        Ok(())
    }

    /// The factor a running sum keeps per finished game.
    pub fn decay(&self) -> f64 {
        0.5f64.powf(1.0 / self.half_life_games)
    }
}

/// The log loss of probability `p` against result `y` (1, 0 or 0.5).
fn log_loss(p: f64, y: f64) -> f64 {
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

/// One open game's per-member loss, accumulated row by row: for each member the sums of
/// `ln p` and `ln (1 - p)`, so the loss against any result is known once the result is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GameLoss {
    ln_p: Vec<f64>,
    ln_q: Vec<f64>,
    rows: u64,
}

impl GameLoss {
    pub fn new(members: usize) -> Self {
        GameLoss {
            ln_p: vec![0.0; members],
            ln_q: vec![0.0; members],
            rows: 0,
        }
    }

    /// Adds a scored row: each member's logit, in member order.
    pub fn add(&mut self, logits: &[f64]) {
        for (i, z) in logits.iter().enumerate() {
            let p = round_probability(sigmoid(*z));
            self.ln_p[i] += p.ln();
            self.ln_q[i] += (1.0 - p).ln();
        }
        self.rows += 1;
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Each member's mean log loss against `result`; none for a game with no row.
    pub fn finish(&self, result: f64) -> Option<Vec<f64>> {
        if self.rows == 0 {
            return None;
        }
        let n = self.rows as f64;
        Some(
            self.ln_p
                .iter()
                .zip(&self.ln_q)
                .map(|(p, q)| -(result * p + (1.0 - result) * q) / n)
                .collect(),
        )
    }
}

/// The mean log loss of each member over rows of member logits (`[row][member]`), directly:
/// what [`GameLoss`] accumulates.
pub fn game_loss_from_scratch(rows: &[Vec<f64>], result: f64) -> Option<Vec<f64>> {
    let first = rows.first()?;
    Some(
        (0..first.len())
            .map(|i| {
                rows.iter()
                    .map(|r| log_loss(round_probability(sigmoid(r[i])), result))
                    .sum::<f64>()
                    / rows.len() as f64
            })
            .collect(),
    )
}

/// An online ensemble's member weights after the games applied so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnlineWeights {
    /// The manifest's weights, normalised.
    prior: Vec<f64>,
    eta: f64,
    decay: f64,
    /// Per member, `sum_k d^(n-k) l_ik`.
    loss: Vec<f64>,
    /// `sum_k d^(n-k)`.
    mass: f64,
    games: u64,
    /// The current weights, normalised.
    weights: Vec<f64>,
}

impl OnlineWeights {
    /// The state before any finished game: the weights are `prior`'s.
    pub fn new(spec: &OnlineSpec, prior: Vec<f64>) -> Self {
        let n = prior.len();
        let mut w = OnlineWeights {
            weights: Vec::new(),
            prior,
            eta: spec.eta,
            decay: spec.decay(),
            loss: vec![0.0; n],
            mass: 0.0,
            games: 0,
        };
        w.weights = weights_of(&w.prior, w.eta, &w.mean_losses());
        w
    }

    /// Applies one finished game's per-member losses.
    pub fn update(&mut self, losses: &[f64]) {
        debug_assert_eq!(losses.len(), self.loss.len());
        for (s, l) in self.loss.iter_mut().zip(losses) {
            *s = self.decay * *s + l;
        }
        self.mass = self.decay * self.mass + 1.0;
        self.games += 1;
        self.weights = weights_of(&self.prior, self.eta, &self.mean_losses());
    }

    /// The current normalised weights, in member order.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// Each member's running loss `L_i` (0 before any game).
    pub fn mean_losses(&self) -> Vec<f64> {
        if self.mass == 0.0 {
            return vec![0.0; self.loss.len()];
        }
        self.loss.iter().map(|s| s / self.mass).collect()
    }

    /// Finished games applied.
    pub fn games(&self) -> u64 {
        self.games
    }

    /// Whether `self` follows the same definition as `other` (members, prior, eta, decay):
    /// a state saved for one ensemble is not taken up by another.
    pub fn same_definition(&self, other: &OnlineWeights) -> bool {
        self.prior == other.prior && self.eta == other.eta && self.decay == other.decay
    }
}

/// `w0_i exp(-eta L_i)`, normalised. The smallest loss is taken off first, which changes
/// nothing after normalising but keeps the best member's factor at 1 (no underflow to 0/0).
fn weights_of(prior: &[f64], eta: f64, mean: &[f64]) -> Vec<f64> {
    let best = mean.iter().copied().fold(f64::INFINITY, f64::min);
    let raw: Vec<f64> = prior
        .iter()
        .zip(mean)
        .map(|(w0, l)| w0 * (-eta * (l - best)).exp())
        .collect();
    let total: f64 = raw.iter().sum();
    raw.into_iter().map(|w| w / total).collect()
}

/// The weights after `games` (each one's per-member losses, in the order applied), straight
/// from the definition in the module docs.
pub fn weights_from_scratch(spec: &OnlineSpec, prior: &[f64], games: &[Vec<f64>]) -> Vec<f64> {
    let total: f64 = prior.iter().sum();
    let prior: Vec<f64> = prior.iter().map(|w| w / total).collect();
    if games.is_empty() {
        return weights_of(&prior, spec.eta, &vec![0.0; prior.len()]);
    }
    let n = games.len();
    let factor = |k: usize| spec.decay().powi((n - 1 - k) as i32);
    let mass: f64 = (0..n).map(factor).sum();
    let mean: Vec<f64> = (0..prior.len())
        .map(|i| {
            games
                .iter()
                .enumerate()
                .map(|(k, g)| factor(k) * g[i])
                .sum::<f64>()
                / mass
        })
        .collect();
    weights_of(&prior, spec.eta, &mean)
}

/// What [`replay`] measures: each row's probability from the ensemble with its manifest's
/// weights and re-weighted online, each member's, and the weights at the end.
#[derive(Clone, Debug)]
pub struct Replay {
    /// Per row, in the input's order.
    pub fixed: Vec<f64>,
    pub online: Vec<f64>,
    /// `[member][row]`.
    pub members: Vec<Vec<f64>>,
    pub games: u64,
    pub final_weights: Vec<f64>,
}

/// Scores labelled rows (a game's rows in time order, as the trainer writes them) with an
/// ensemble re-weighted online by `spec` the way the engine does ([`crate::dataflow::reweight`]),
/// offline: rows in (time, game) order; a game ends at its last row, whose label is its
/// result; its loss counts its rows before that one, and it is applied, in (end time, game)
/// order, before the rows of any later time. The same [`GameLoss`], [`OnlineWeights`] and
/// ensemble combination as the engine; the rows are the trainer's (one per event) where the
/// engine also scores window expiries.
pub fn replay(
    model: &Predictor,
    spec: &OnlineSpec,
    rows: &[LabeledRow],
) -> Result<Replay, ModelError> {
    let ensemble = model
        .ensemble()
        .ok_or_else(|| ModelError::Members(format!("{} is not an ensemble", model.version())))?;
    let inputs: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.inputs.iter().map(|x| f64::from(*x)).collect())
        .collect();
    let logits = model
        .member_logits(&inputs)?
        .expect("an ensemble has member logits");
    let prior = ensemble.weights();
    let z = |i: usize| -> Vec<f64> { logits.iter().map(|m| m[i]).collect() };
    let mut ends: HashMap<&str, u64> = HashMap::new();
    for r in rows {
        let e = ends.entry(r.game_id.as_str()).or_insert(r.time_ms);
        *e = (*e).max(r.time_ms);
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|a, b| {
        (rows[*a].time_ms, &rows[*a].game_id).cmp(&(rows[*b].time_ms, &rows[*b].game_id))
    });
    let mut state = OnlineWeights::new(spec, prior.clone());
    let mut open: HashMap<&str, GameLoss> = HashMap::new();
    let mut finished: BTreeMap<(u64, &str), Vec<f64>> = BTreeMap::new();
    let mut online = vec![0.0; rows.len()];
    for i in order {
        let r = &rows[i];
        while let Some(g) = finished.first_entry() {
            if g.key().0 >= r.time_ms {
                break;
            }
            state.update(&g.remove());
        }
        let zi = z(i);
        online[i] = ensemble.value_with(state.weights(), &zi);
        let end = ends[r.game_id.as_str()];
        let game = open
            .entry(r.game_id.as_str())
            .or_insert_with(|| GameLoss::new(prior.len()));
        if r.time_ms < end {
            game.add(&zi);
        } else if let Some(losses) = game.finish(r.label) {
            finished.insert((end, r.game_id.as_str()), losses);
        }
    }
    Ok(Replay {
        fixed: (0..rows.len())
            .map(|i| ensemble.value_with(&prior, &z(i)))
            .collect(),
        online,
        members: logits
            .iter()
            .map(|m| m.iter().map(|z| round_probability(sigmoid(*z))).collect())
            .collect(),
        games: state.games(),
        final_weights: state.weights().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(eta: f64, half_life_games: f64) -> OnlineSpec {
        OnlineSpec {
            method: OnlineMethod::ExpLogLoss,
            eta,
            half_life_games,
        }
    }

    #[test]
    fn no_game_keeps_the_prior_and_a_worse_member_loses_weight() {
        let s = spec(1.0, 10.0);
        let mut w = OnlineWeights::new(&s, vec![0.25, 0.75]);
        assert_eq!(w.weights(), &[0.25, 0.75]);
        for _ in 0..20 {
            w.update(&[0.4, 2.0]);
        }
        // L = (0.4, 2.0) exactly: weights ∝ (0.25, 0.75 e^-1.6).
        let expect = 0.25 / (0.25 + 0.75 * (-1.6f64).exp());
        assert!((w.weights()[0] - expect).abs() < 1e-12, "{:?}", w.weights());
        assert!((w.mean_losses()[1] - 2.0).abs() < 1e-12);
        assert_eq!(w.games(), 20);
    }

    #[test]
    fn half_life_counts_an_older_game_half() {
        let s = spec(1.0, 1.0);
        let mut w = OnlineWeights::new(&s, vec![1.0]);
        w.update(&[3.0]);
        w.update(&[0.0]);
        // (0.5 * 3 + 1 * 0) / 1.5
        assert!((w.mean_losses()[0] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn game_loss_of_a_tie_and_of_no_rows() {
        let mut g = GameLoss::new(1);
        assert_eq!(g.finish(1.0), None);
        g.add(&[0.0]);
        let l = g.finish(0.5).unwrap()[0];
        assert!((l - std::f64::consts::LN_2).abs() < 1e-12);
    }

    proptest! {
        /// Issue 4 item 6: the incremental weights equal a from-scratch recomputation.
        #[test]
        fn incremental_weights_equal_from_scratch(
            eta in 0.0f64..5.0,
            half_life in 0.5f64..200.0,
            prior in proptest::collection::vec(0.01f64..10.0, 1..5),
            games in proptest::collection::vec(proptest::collection::vec(0.0f64..14.0, 5), 0..60),
        ) {
            let s = spec(eta, half_life);
            let total: f64 = prior.iter().sum();
            let mut w = OnlineWeights::new(&s, prior.iter().map(|w| w / total).collect());
            let games: Vec<Vec<f64>> =
                games.into_iter().map(|g| g[..prior.len()].to_vec()).collect();
            for (k, g) in games.iter().enumerate() {
                w.update(g);
                let expect = weights_from_scratch(&s, &prior, &games[..=k]);
                for (a, b) in w.weights().iter().zip(&expect) {
                    prop_assert!((a - b).abs() <= 1e-9,
                        "after {} games: {:?} vs {:?}", k + 1, w.weights(), expect);
                }
                prop_assert!((w.weights().iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }

        /// The running per-game loss equals the mean of the rows' log losses.
        #[test]
        fn game_loss_equals_from_scratch(
            rows in proptest::collection::vec(proptest::collection::vec(-20.0f64..20.0, 3), 1..40),
            result in prop_oneof![Just(0.0), Just(0.5), Just(1.0)],
        ) {
            let mut g = GameLoss::new(3);
            for r in &rows {
                g.add(r);
            }
            let a = g.finish(result).unwrap();
            let b = game_loss_from_scratch(&rows, result).unwrap();
            for (a, b) in a.iter().zip(&b) {
                prop_assert!((a - b).abs() < 1e-9, "{a} vs {b}");
            }
        }
    }
}
