//! Stage: run the pipeline's detectors over every game's evaluated rows.
//!
//! In: [`Valued`] from `score_games` (each game on one worker, exchanged by game there).
//! Out: at the time of the row that caused it, an [`AlertChange`] per alert that opened,
//! escalated, resolved or was retracted: each detector is a state machine per game
//! ([`crate::alert::detect`]), fed in event-time order once the frontier has passed the time,
//! so the alerts depend only on the input.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;

use super::pending::Pending;
use timely::dataflow::Stream;

use super::Valued;
use crate::alert::detect::{
    Cusum, CusumParams, Decision, Detector, Divergence, DivergenceParams, EwmaParams, EwmaZScore,
    Jump, JumpParams, Lifecycle, RobustParams, RobustScore,
};
use crate::alert::{AlertState, Evidence, Severity};
use crate::event::GameKey;
use crate::pipeline::plan::{DetectorPlan, DetectorRule, Plan, Watch};

/// One change in one alert's life, before it is numbered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertChange {
    pub time: u64,
    pub game: GameKey,
    /// Index of the detector in the plan.
    pub detector: u32,
    pub state: AlertState,
    pub severity: Severity,
    pub opened_at: u64,
    pub evidence: Evidence,
}

impl AlertChange {
    /// Detector `detector`'s lifecycle change `c` on `game` at event time `time`.
    fn of(time: u64, game: &GameKey, detector: usize, c: crate::alert::detect::Change) -> Self {
        AlertChange {
            time,
            game: game.clone(),
            detector: detector as u32,
            state: c.state,
            severity: c.severity,
            opened_at: c.opened_at,
            evidence: c.evidence,
        }
    }

    /// A wall-clock staleness alert of detector `detector` (whose gap is `gap`) on `game`,
    /// opened at event time `opened_at`: opening after `quiet` seconds without an event, or,
    /// when `quiet` is `None`, resolved at event time `time`.
    pub fn staleness(
        time: u64,
        game: GameKey,
        detector: u32,
        gap: std::time::Duration,
        opened_at: u64,
        quiet: Option<f64>,
    ) -> Self {
        AlertChange {
            time,
            game,
            detector,
            state: if quiet.is_some() {
                AlertState::Open
            } else {
                AlertState::Resolved
            },
            severity: crate::alert::Severity::Warning,
            opened_at,
            evidence: crate::alert::Evidence {
                value: quiet.unwrap_or(0.0),
                threshold: gap.as_secs_f64(),
                score: None,
                baseline: None,
                window: "seconds of wall-clock time without an event".into(),
            },
        }
    }
}

/// One detector on one game.
enum Machine {
    Single(Box<dyn Detector>),
    Pair(Divergence, Watch),
    /// Feed health: the game's counters when last seen (skipped, repeated, score drops).
    Health(DetectorRule, [u64; 5]),
}

fn machine(d: &DetectorPlan) -> Result<Machine, String> {
    let min = d.min_samples as u64;
    let r: Result<Machine, crate::alert::detect::InvalidParams> = match &d.rule {
        DetectorRule::Zscore { alpha, warn, crit } => EwmaZScore::new(EwmaParams {
            alpha: *alpha,
            warn: *warn,
            crit: *crit,
            min_samples: min.max(2),
        })
        .map(|x| Machine::Single(Box::new(x))),
        DetectorRule::Robust { count, warn, crit } => RobustScore::new(RobustParams {
            window: *count as usize,
            warn: *warn,
            crit: *crit,
            min_samples: (min as usize).clamp(1, *count as usize),
        })
        .map(|x| Machine::Single(Box::new(x))),
        DetectorRule::Cusum { target, k, h } => Cusum::new(CusumParams {
            target: *target,
            k: *k,
            h: *h,
            min_samples: (min as usize).max(1),
        })
        .map(|x| Machine::Single(Box::new(x))),
        DetectorRule::Jump {
            threshold,
            window_ms,
        } => Jump::new(JumpParams {
            threshold: *threshold,
            window_ms: *window_ms,
        })
        .map(|x| Machine::Single(Box::new(x))),
        DetectorRule::Divergence { threshold, against } => Divergence::new(DivergenceParams {
            threshold: *threshold,
            min_samples: min,
        })
        .map(|x| Machine::Pair(x, *against)),
        DetectorRule::Sequence | DetectorRule::Score => Ok(Machine::Health(d.rule.clone(), [0; 5])),
        // Judged by the wall clock, in the engine's runtime (`engine::runtime`), not here.
        DetectorRule::Staleness { .. } => return Err("staleness runs in the runtime".into()),
    };
    r.map_err(|e| e.to_string())
}

/// A feed-health verdict from the change of the game's counters since its previous row.
///
/// `score` stays on while a score is below its high since the last correction (the feed went
/// backwards and has not recovered); a correction retracts it (it should not have been raised:
/// the feed has fixed the data), recovering without one resolves it.
fn health(rule: &DetectorRule, prev: &[u64; 5], now: &[u64; 5]) -> Decision {
    let new = |k: usize| now[k].saturating_sub(prev[k]);
    if matches!(rule, DetectorRule::Score) && new(4) > 0 {
        return Decision::Retract {
            evidence: Evidence {
                value: now[4] as f64,
                threshold: 1.0,
                score: None,
                baseline: None,
                window: "a correction event fixed the score".into(),
            },
        };
    }
    let (severity, value, what) = match rule {
        DetectorRule::Sequence if new(0) > 0 => (Severity::Warning, new(0), "seq numbers skipped"),
        DetectorRule::Sequence if new(1) > 0 => (Severity::Info, new(1), "records repeated"),
        DetectorRule::Score if now[3] > 0 => (
            Severity::Critical,
            new(2).max(1),
            "score below its high since the last correction",
        ),
        _ => {
            return Decision::Off {
                evidence: Evidence {
                    value: 0.0,
                    threshold: 1.0,
                    score: None,
                    baseline: None,
                    window: "since the game's previous event".into(),
                },
            }
        }
    };
    Decision::On {
        severity,
        score: value as f64,
        evidence: Evidence {
            value: value as f64,
            threshold: 1.0,
            score: Some(value as f64),
            baseline: None,
            window: format!("{what} since the game's previous event"),
        },
    }
}

fn read(v: &Valued, w: Watch) -> f64 {
    match w {
        Watch::Prediction => v.value,
        Watch::Var(i) => v.vars.get(i).copied().unwrap_or(f64::NAN),
    }
}

pub trait DetectAlerts<'scope> {
    fn detect_alerts(self, plan: Arc<Plan>) -> Stream<'scope, u64, Vec<AlertChange>>;
}

impl<'scope> DetectAlerts<'scope> for Stream<'scope, u64, Vec<Valued>> {
    fn detect_alerts(self, plan: Arc<Plan>) -> Stream<'scope, u64, Vec<AlertChange>> {
        self.unary_frontier::<CapacityContainerBuilder<Vec<AlertChange>>, _, _, _>(
            Pipeline,
            "DetectAlerts",
            move |_, _| {
                let mut pending: Pending<Valued> = Pending::default();
                let mut machines: HashMap<(GameKey, usize), (Machine, Lifecycle)> = HashMap::new();
                move |(input, frontier), output| {
                    let port = output.output_index();
                    input.for_each(|cap, data| {
                        for v in data.drain(..) {
                            pending.at(&cap, port, v.time, Vec::new).push(v);
                        }
                    });
                    for (cap, t, mut values) in pending.ready(|t| !frontier.less_equal(&t)) {
                        values.sort_by(|a, b| a.game.cmp(&b.game));
                        let mut session = output.session(&cap);
                        for v in &values {
                            if v.closed {
                                // Released: its detectors' state goes with it, and an alert
                                // still open is resolved (nothing would ever resolve it).
                                for i in 0..plan.detectors.len() {
                                    let key = (v.game.clone(), i);
                                    let Some((_, mut life)) = machines.remove(&key) else {
                                        continue;
                                    };
                                    if let Some(c) = life.release(t) {
                                        session.give(AlertChange::of(t, &v.game, i, c));
                                    }
                                }
                                continue;
                            }
                            for (i, d) in plan.detectors.iter().enumerate() {
                                if matches!(d.rule, DetectorRule::Staleness { .. }) {
                                    continue;
                                }
                                let key = (v.game.clone(), i);
                                if !machines.contains_key(&key) {
                                    match machine(d) {
                                        Ok(m) => {
                                            machines.insert(
                                                key.clone(),
                                                (m, Lifecycle::new(d.cooldown_ms)),
                                            );
                                        }
                                        Err(e) => {
                                            tracing::error!(detector = d.name, error = %e, "detector not built");
                                            continue;
                                        }
                                    }
                                }
                                let Some((m, life)) = machines.get_mut(&key) else {
                                    continue;
                                };
                                let x = read(v, d.on);
                                let decision: Decision = match m {
                                    Machine::Single(det) => det.observe(t, x),
                                    Machine::Pair(det, against) => {
                                        det.observe(t, x, read(v, *against))
                                    }
                                    Machine::Health(rule, prev) => {
                                        let d = health(rule, prev, &v.health);
                                        *prev = v.health;
                                        d
                                    }
                                };
                                if let Some(c) = life.step(t, decision) {
                                    session.give(AlertChange::of(t, &v.game, i, c));
                                }
                            }
                        }
                    }
                }
            },
        )
    }
}
