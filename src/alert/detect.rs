//! The detectors' arithmetic: small, deterministic state machines fed one observation at a time,
//! in event-time order, one instance per (pipeline, detector, game).
//!
//! Two layers:
//!
//! * a **detector** turns each observation into a [`Decision`]: on (a severity, a score and
//!   [`Evidence`]), off (with evidence, for the resolve), quiet (no opinion: still warming up,
//!   or an input it ignores), or retract (the feed corrected what raised it). Value detectors
//!   implement [`Detector`]: [`EwmaZScore`], [`RobustScore`], [`Cusum`], [`Jump`]. The others
//!   have their own `observe`: [`Divergence`] (model vs market), and the feed-health checks
//!   [`SequenceGaps`] and [`ScoreMonotone`], which watch event metadata rather than values;
//! * a [`Lifecycle`] turns decisions into alert [`Change`]s, at most one per observation: open,
//!   escalate (severity rose while on), resolve (then a cool-down in event time during which a
//!   new open is suppressed), retract. Staying on at the same or a lower severity says nothing.
//!
//! Nothing here reads the wall clock: time is the event time the caller passes. Memory is bounded
//! by the parameters (a robust window, the observations within a jump window); the only
//! allocation per observation is the short window label cloned into the evidence. Non-finite
//! values are ignored (quiet, state untouched): bad input is data, not a crash. Parameters are
//! checked by each `new`, which returns [`InvalidParams`] instead of panicking.

use std::collections::VecDeque;

use super::{Evidence, Severity};

/// Stands in for an infinite score (a deviation from a spread of exactly zero), so that evidence
/// stays finite and serialisable as JSON. Scores are clamped to ±`SCORE_CAP`.
pub const SCORE_CAP: f64 = 1e9;

/// What a detector makes of one observation.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// No opinion (warming up, non-finite input): the lifecycle does not move.
    Quiet,
    /// The condition holds.
    On {
        severity: Severity,
        score: f64,
        evidence: Evidence,
    },
    /// The condition does not hold; the evidence explains a resolve.
    Off { evidence: Evidence },
    /// The feed corrected what raised the condition: an open alert should not have been raised.
    Retract { evidence: Evidence },
}

impl Decision {
    /// The severity, when on.
    pub fn severity(&self) -> Option<Severity> {
        match self {
            Decision::On { severity, .. } => Some(*severity),
            _ => None,
        }
    }

    /// On at `severity`, with the evidence's score (0 if none).
    fn on(severity: Severity, evidence: Evidence) -> Self {
        let score = evidence.score.unwrap_or(0.0);
        Decision::On {
            severity,
            score,
            evidence,
        }
    }

    /// The evidence, unless quiet.
    pub fn into_evidence(self) -> Option<Evidence> {
        match self {
            Decision::Quiet => None,
            Decision::On { evidence, .. }
            | Decision::Off { evidence }
            | Decision::Retract { evidence } => Some(evidence),
        }
    }
}

/// A detector fed one value at a time: `t` is the event time in ms, non-decreasing.
pub trait Detector {
    fn observe(&mut self, t: u64, x: f64) -> Decision;
}

/// A detector parameter out of range: the pipeline author's fault, no retry helps.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("detector `{detector}`: `{field}` {reason}")]
pub struct InvalidParams {
    pub detector: &'static str,
    pub field: &'static str,
    pub reason: &'static str,
}

const ABOVE_0: &str = "must be a number above 0";

/// `Err` with (detector, field, reason) unless `ok`.
fn check(
    ok: bool,
    (detector, field, reason): (&'static str, &'static str, &'static str),
) -> Result<(), InvalidParams> {
    match ok {
        true => Ok(()),
        false => Err(InvalidParams {
            detector,
            field,
            reason,
        }),
    }
}

fn above_0(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// `warn` and `crit` thresholds on |score|: both finite, 0 < warn <= crit.
fn check_levels(d: &'static str, warn: f64, crit: f64) -> Result<(), InvalidParams> {
    check(above_0(warn), (d, "warn", ABOVE_0))?;
    check(
        crit.is_finite() && crit >= warn,
        (d, "crit", "must be a number at least `warn`"),
    )
}

fn evidence(
    value: f64,
    threshold: f64,
    score: Option<f64>,
    baseline: Option<f64>,
    window: &str,
) -> Evidence {
    Evidence {
        value,
        threshold,
        score,
        baseline,
        window: window.to_owned(),
    }
}

/// Critical at |score| >= `crit`, Warning at >= `warn`, else off.
fn level(score: f64, warn: f64, crit: f64) -> Option<Severity> {
    match score.abs() {
        a if a >= crit => Some(Severity::Critical),
        a if a >= warn => Some(Severity::Warning),
        _ => None,
    }
}

/// `num / den`, with a zero spread read as "no deviation" (num = 0) or ±[`SCORE_CAP`].
fn capped_ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        (num / den).clamp(-SCORE_CAP, SCORE_CAP)
    } else if num == 0.0 {
        0.0
    } else {
        SCORE_CAP.copysign(num)
    }
}

/// On or off from a score and two thresholds; the evidence names the threshold crossed (on) or
/// the warning threshold it stays under (off).
fn decide(
    score: f64,
    value: f64,
    warn: f64,
    crit: f64,
    baseline: Option<f64>,
    window: &str,
) -> Decision {
    let severity = level(score, warn, crit);
    let critical = severity == Some(Severity::Critical);
    let threshold = if critical { crit } else { warn };
    let evidence = evidence(value, threshold, Some(score), baseline, window);
    match severity {
        Some(severity) => Decision::on(severity, evidence),
        None => Decision::Off { evidence },
    }
}

// ---------------------------------------------------------------------------------------------
// EWMA z-score

/// Parameters of [`EwmaZScore`].
#[derive(Clone, Debug, PartialEq)]
pub struct EwmaParams {
    /// Smoothing factor in (0, 1]: the weight of the newest observation.
    pub alpha: f64,
    /// |z| at which the condition is on (Warning), and Critical.
    pub warn: f64,
    pub crit: f64,
    /// Observations folded into the mean and variance before the first is scored (>= 2).
    pub min_samples: u64,
}

/// z-score against an exponentially weighted mean and variance.
///
/// State after the first observation `x1`: mean `x1`, variance 0; then for each `x`, with
/// `d = x - mean`: `mean += alpha d`, `var = (1 - alpha)(var + alpha d²)` (the standard
/// incremental forms; equal to the weighted mean and weighted variance about it, with weights
/// `(1-alpha)^(n-1)` for `x1` and `alpha (1-alpha)^(n-i)` for `x_i`). Each observation is scored
/// against the state **before** it, `z = (x - mean) / sqrt(var)`, then folded in, spikes
/// included. A variance of exactly 0 (a constant series) scores 0 for the same value and
/// ±[`SCORE_CAP`] for any other.
#[derive(Clone, Debug)]
pub struct EwmaZScore {
    p: EwmaParams,
    label: String,
    count: u64,
    mean: f64,
    var: f64,
}

impl EwmaZScore {
    pub fn new(p: EwmaParams) -> Result<Self, InvalidParams> {
        const D: &str = "ewma-zscore";
        let alpha_ok = p.alpha > 0.0 && p.alpha <= 1.0;
        check(alpha_ok, (D, "alpha", "must be in (0, 1]"))?;
        check_levels(D, p.warn, p.crit)?;
        check(p.min_samples >= 2, (D, "min-samples", "must be at least 2"))?;
        let label = format!("ewma alpha {}", p.alpha);
        let (count, mean, var) = (0, 0.0, 0.0);
        Ok(EwmaZScore {
            p,
            label,
            count,
            mean,
            var,
        })
    }

    /// Observations folded in so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The exponentially weighted mean, once there is an observation.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then_some(self.mean)
    }

    /// The exponentially weighted variance, once there is an observation.
    pub fn variance(&self) -> Option<f64> {
        (self.count > 0).then_some(self.var)
    }
}

impl Detector for EwmaZScore {
    fn observe(&mut self, _t: u64, x: f64) -> Decision {
        if !x.is_finite() {
            return Decision::Quiet;
        }
        let decision = if self.count >= self.p.min_samples {
            let z = capped_ratio(x - self.mean, self.var.sqrt());
            decide(z, x, self.p.warn, self.p.crit, Some(self.mean), &self.label)
        } else {
            Decision::Quiet
        };
        if self.count == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            let incr = self.p.alpha * d;
            self.mean += incr;
            self.var = (1.0 - self.p.alpha) * (self.var + d * incr);
        }
        self.count += 1;
        decision
    }
}

// ---------------------------------------------------------------------------------------------
// Robust (median / MAD) score

/// Parameters of [`RobustScore`].
#[derive(Clone, Debug, PartialEq)]
pub struct RobustParams {
    /// How many of the latest observations (before the scored one) form the baseline (>= 1).
    pub window: usize,
    /// |score| at which the condition is on (Warning), and Critical.
    pub warn: f64,
    pub crit: f64,
    /// Observations in the window before scoring starts, in 1..=window.
    pub min_samples: usize,
}

/// Robust z-score: `0.6745 (x - median) / MAD` over the last `window` observations before `x`
/// (for normal data MAD ≈ 0.6745 σ, so the score reads like a z-score). The median of an even
/// count is the mean of the two middle values. A MAD of exactly 0 (more than half the window
/// equal, common with integer-valued features) scores 0 when `x` is the median and
/// ±[`SCORE_CAP`] otherwise: any departure from a constant majority is flagged.
#[derive(Clone, Debug)]
pub struct RobustScore {
    p: RobustParams,
    label: String,
    window: VecDeque<f64>,
    scratch: Vec<f64>,
}

/// Median of a non-empty slice, reordering it.
fn median_in_place(v: &mut [f64]) -> f64 {
    let (mid, odd) = (v.len() / 2, v.len() % 2 == 1);
    let (lower, &mut hi, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    if odd {
        hi
    } else {
        let lo = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo + hi) / 2.0
    }
}

impl RobustScore {
    pub fn new(p: RobustParams) -> Result<Self, InvalidParams> {
        const D: &str = "robust-score";
        check(p.window >= 1, (D, "window", "must be at least 1"))?;
        check_levels(D, p.warn, p.crit)?;
        let ok = (1..=p.window).contains(&p.min_samples);
        check(ok, (D, "min-samples", "must be between 1 and `window`"))?;
        let label = format!("median/MAD of the last {} observations", p.window);
        let window = VecDeque::with_capacity(p.window);
        let scratch = Vec::with_capacity(p.window);
        Ok(RobustScore {
            p,
            label,
            window,
            scratch,
        })
    }

    /// Median and MAD of the current window, once it has an observation.
    pub fn median_mad(&mut self) -> Option<(f64, f64)> {
        if self.window.is_empty() {
            return None;
        }
        self.scratch.clear();
        self.scratch.extend(self.window.iter().copied());
        let median = median_in_place(&mut self.scratch);
        for v in &mut self.scratch {
            *v = (*v - median).abs();
        }
        Some((median, median_in_place(&mut self.scratch)))
    }
}

impl Detector for RobustScore {
    fn observe(&mut self, _t: u64, x: f64) -> Decision {
        if !x.is_finite() {
            return Decision::Quiet;
        }
        let decision = match self.median_mad() {
            Some((median, mad)) if self.window.len() >= self.p.min_samples => {
                let (score, p) = (capped_ratio(0.6745 * (x - median), mad), &self.p);
                decide(score, x, p.warn, p.crit, Some(median), &self.label)
            }
            _ => Decision::Quiet,
        };
        if self.window.len() == self.p.window {
            self.window.pop_front();
        }
        self.window.push_back(x);
        decision
    }
}

// ---------------------------------------------------------------------------------------------
// CUSUM

/// Parameters of [`Cusum`]. `k` and `h` are in the units of the values (textbook: k = σ/2,
/// h = 4σ to 5σ).
#[derive(Clone, Debug, PartialEq)]
pub struct CusumParams {
    /// The in-control mean; `None`: learned as the mean of the first `min_samples` observations.
    pub target: Option<f64>,
    /// Slack: drifts smaller than `k` per observation are not accumulated (>= 0).
    pub k: f64,
    /// Decision threshold: Warning at a sum >= h, Critical at >= 2h (> 0).
    pub h: f64,
    /// Observations used to learn the target (>= 1 when `target` is `None`; else unused).
    pub min_samples: usize,
}

/// Where a [`Cusum`] is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CusumPhase {
    /// Learning the target: the sum and count of the observations so far (quiet meanwhile).
    Learning { sum: f64, n: usize },
    /// Accumulating the upper and lower sums `(S+, S-)` around `target`.
    Watching { target: f64, sums: (f64, f64) },
}

/// Two-sided tabular CUSUM: `S+ = max(0, S+ + x - target - k)`,
/// `S- = max(0, S- + target - x - k)`; on when `max(S+, S-) >= h` (Critical at 2h); the score
/// is `S+`, or `-S-` when the lower sum is the larger. A target not given is learned once, as
/// the mean of the first `min_samples` observations (quiet meanwhile), then kept.
///
/// **Reset after signal** (the textbook choice): the observation that signals is on, and both
/// sums restart from 0, so the next observation is normally off (a resolve): CUSUM reports a
/// change point, not a state. A shift that persists signals again every `≈ h / (shift - k)`
/// observations; the lifecycle's cool-down absorbs that churn.
#[derive(Clone, Debug)]
pub struct Cusum {
    p: CusumParams,
    label: String,
    phase: CusumPhase,
}

impl Cusum {
    pub fn new(p: CusumParams) -> Result<Self, InvalidParams> {
        const D: &str = "cusum";
        let finite = p.target.is_none_or(f64::is_finite);
        check(finite, (D, "target", "must be a finite number"))?;
        let k_ok = p.k.is_finite() && p.k >= 0.0;
        check(k_ok, (D, "k", "must be a number at least 0"))?;
        check(above_0(p.h), (D, "h", ABOVE_0))?;
        let n_ok = p.target.is_some() || p.min_samples >= 1;
        check(n_ok, (D, "min-samples", "must be at least 1"))?;
        let (k, h, n) = (p.k, p.h, p.min_samples);
        let (label, phase) = match p.target {
            Some(target) => (format!("cusum k {k} h {h}"), watch(target)),
            None => {
                let label = format!("cusum k {k} h {h}, target from {n} observations");
                (label, CusumPhase::Learning { sum: 0.0, n: 0 })
            }
        };
        Ok(Cusum { p, label, phase })
    }

    pub fn phase(&self) -> CusumPhase {
        self.phase
    }
}

fn watch(target: f64) -> CusumPhase {
    CusumPhase::Watching {
        target,
        sums: (0.0, 0.0),
    }
}

impl Detector for Cusum {
    fn observe(&mut self, _t: u64, x: f64) -> Decision {
        if !x.is_finite() {
            return Decision::Quiet;
        }
        let (target, (upper, lower)) = match self.phase {
            CusumPhase::Learning { sum, n } => {
                let (sum, n) = (sum + x, n + 1);
                self.phase = match n >= self.p.min_samples {
                    true => watch(sum / n as f64),
                    false => CusumPhase::Learning { sum, n },
                };
                return Decision::Quiet;
            }
            CusumPhase::Watching { target, sums } => (target, sums),
        };
        let upper = (upper + x - target - self.p.k).max(0.0);
        let lower = (lower + target - x - self.p.k).max(0.0);
        let score = if upper >= lower { upper } else { -lower };
        let h = self.p.h;
        let decision = decide(score, x, h, 2.0 * h, Some(target), &self.label);
        let sums = if decision.severity().is_some() {
            (0.0, 0.0)
        } else {
            (upper, lower)
        };
        self.phase = CusumPhase::Watching { target, sums };
        decision
    }
}

// ---------------------------------------------------------------------------------------------
// Jump

/// Parameters of [`Jump`].
#[derive(Clone, Debug, PartialEq)]
pub struct JumpParams {
    /// Swing at which the condition is on (Warning); Critical at twice it (> 0).
    pub threshold: f64,
    /// The earlier observations compared with: those at event times in `[t - window_ms, t]`.
    pub window_ms: u64,
}

/// A swing: the larger of `x - min` and `max - x` over the earlier observations within
/// `window_ms` of `x` (inclusive; the current one excluded). The score is signed (`x - min` up,
/// `x - max` down) and the baseline is that extreme. With nothing earlier in the window, off.
/// The condition stays on while the window still spans the swing. Min and max are kept in
/// monotonic queues (amortised O(1)); an event time earlier than the last is read as the last.
#[derive(Clone, Debug)]
pub struct Jump {
    p: JumpParams,
    label: String,
    last_t: u64,
    /// (t, x) with increasing x: the front is the window's minimum.
    mins: VecDeque<(u64, f64)>,
    /// (t, x) with decreasing x: the front is the window's maximum.
    maxs: VecDeque<(u64, f64)>,
}

impl Jump {
    pub fn new(p: JumpParams) -> Result<Self, InvalidParams> {
        check(above_0(p.threshold), ("jump", "threshold", ABOVE_0))?;
        let label = format!("last {} ms", p.window_ms);
        let (mins, maxs) = (VecDeque::new(), VecDeque::new());
        Ok(Jump {
            p,
            label,
            last_t: 0,
            mins,
            maxs,
        })
    }
}

impl Detector for Jump {
    fn observe(&mut self, t: u64, x: f64) -> Decision {
        if !x.is_finite() {
            return Decision::Quiet;
        }
        let t = t.max(self.last_t);
        self.last_t = t;
        let from = t.saturating_sub(self.p.window_ms);
        for q in [&mut self.mins, &mut self.maxs] {
            while q.front().is_some_and(|&(at, _)| at < from) {
                q.pop_front();
            }
        }
        let thr = self.p.threshold;
        let decision = match (self.mins.front(), self.maxs.front()) {
            (Some(&(_, lo)), Some(&(_, hi))) => {
                let (up, down) = (x - lo, x - hi);
                let (score, extreme) = if up.abs() >= down.abs() {
                    (up, lo)
                } else {
                    (down, hi)
                };
                decide(score, x, thr, 2.0 * thr, Some(extreme), &self.label)
            }
            _ => Decision::Off {
                evidence: evidence(x, thr, None, None, &self.label),
            },
        };
        while self.mins.back().is_some_and(|&(_, v)| v >= x) {
            self.mins.pop_back();
        }
        self.mins.push_back((t, x));
        while self.maxs.back().is_some_and(|&(_, v)| v <= x) {
            self.maxs.pop_back();
        }
        self.maxs.push_back((t, x));
        decision
    }
}

// ---------------------------------------------------------------------------------------------
// Divergence

/// Parameters of [`Divergence`].
#[derive(Clone, Debug, PartialEq)]
pub struct DivergenceParams {
    /// |p - q| at which the condition is on (Warning); Critical at twice it (> 0).
    pub threshold: f64,
    /// Pairs seen, this one included, before judging (0 and 1: from the first).
    pub min_samples: u64,
}

/// Model probability `p` against market probability `q`: score `p - q`, baseline `q`.
#[derive(Clone, Debug)]
pub struct Divergence {
    p: DivergenceParams,
    seen: u64,
}

impl Divergence {
    pub fn new(p: DivergenceParams) -> Result<Self, InvalidParams> {
        check(above_0(p.threshold), ("divergence", "threshold", ABOVE_0))?;
        Ok(Divergence { p, seen: 0 })
    }

    pub fn observe(&mut self, _t: u64, p: f64, q: f64) -> Decision {
        if !(p.is_finite() && q.is_finite()) {
            return Decision::Quiet;
        }
        self.seen += 1;
        if self.seen < self.p.min_samples {
            return Decision::Quiet;
        }
        let thr = self.p.threshold;
        decide(p - q, p, thr, 2.0 * thr, Some(q), "model vs market")
    }
}

// ---------------------------------------------------------------------------------------------
// Feed health

/// Per-game sequence numbers: after `last`, `seq == last + 1` is off; `seq > last + 1` is a gap
/// (Warning; value and score: how many are missing; baseline: `last`); `seq == last` is a
/// duplicate and `seq < last` a step back (both Info; value `seq`, baseline `last`; `last` stays).
/// The first sequence number seen is off.
#[derive(Clone, Debug, Default)]
pub struct SequenceGaps {
    last: Option<u64>,
}

impl SequenceGaps {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn observe(&mut self, _t: u64, seq: u64) -> Decision {
        const W: &str = "sequence numbers";
        let Some(last) = self.last else {
            self.last = Some(seq);
            return Decision::Off {
                evidence: evidence(seq as f64, 1.0, None, None, W),
            };
        };
        let base = Some(last as f64);
        if seq <= last {
            let w = if seq == last {
                "duplicate sequence number"
            } else {
                "sequence went back"
            };
            return Decision::on(
                Severity::Info,
                evidence(seq as f64, 1.0, Some(0.0), base, w),
            );
        }
        self.last = Some(seq);
        let missing = (seq - last - 1) as f64;
        if missing == 0.0 {
            return Decision::Off {
                evidence: evidence(seq as f64, 1.0, None, base, W),
            };
        }
        let evidence = evidence(
            missing,
            1.0,
            Some(missing),
            base,
            "missing sequence numbers",
        );
        Decision::on(Severity::Warning, evidence)
    }
}

/// Per-game score: on (Critical) while either side is below the highest score it reached since
/// the last correction, i.e. a score went down without the feed saying it corrected itself. The
/// evidence is the side with the larger drop (home on a tie): value its score, baseline and
/// threshold its high, score the (negative) drop. A correction event ([`Self::observe_correction`])
/// resets the highs to the corrected score and asks the lifecycle to retract an open alert.
#[derive(Clone, Debug, Default)]
pub struct ScoreMonotone {
    high: Option<(u32, u32)>,
}

impl ScoreMonotone {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn observe(&mut self, _t: u64, home: u32, away: u32) -> Decision {
        let (hh, ha) = self.high.unwrap_or((home, away));
        self.high = Some((hh.max(home), ha.max(away)));
        let (drop_h, drop_a) = (hh.saturating_sub(home), ha.saturating_sub(away));
        let (value, high, drop) = if drop_h >= drop_a {
            (home, hh, drop_h)
        } else {
            (away, ha, drop_a)
        };
        let (high, score) = (high as f64, -(drop as f64));
        let evidence = evidence(
            value as f64,
            high,
            Some(score),
            Some(high),
            "score since correction",
        );
        match drop {
            0 => Decision::Off { evidence },
            _ => Decision::on(Severity::Critical, evidence),
        }
    }

    /// A feed correction setting the score to (`home`, `away`): the new highs, and a retract.
    pub fn observe_correction(&mut self, _t: u64, home: u32, away: u32) -> Decision {
        let (hh, ha) = self.high.unwrap_or((home, away));
        self.high = Some((home, away));
        let (corrected, high) = (home as f64 + away as f64, hh as f64 + ha as f64);
        let evidence = evidence(corrected, high, None, Some(high), "corrected total score");
        Decision::Retract { evidence }
    }
}

mod lifecycle;
pub use lifecycle::{Change, Lifecycle, Phase};

#[cfg(test)]
mod tests;
