//! The dataflow of one pipeline version: window members in, evaluated rows out.
//!
//! ```text
//! inputs: members, facts ±1 at times       two InputSessions per worker, times = event ms
//!   └─ slot_values                          members: reduce per (game, entity, feature), the
//!        │                                  window's aggregate at the times it changed; facts
//!        │                                  (keys, latest values) pass as they are
//!        └─ score_games                     exchanged by game: each game's row of values,
//!             │                             derived features, one batched model pass over
//!             │                             every game that changed at the completed times
//!             ├─ (online ensembles only)    game_losses → broadcast → reweight: the rows valued
//!             │                             with the weights after every game ended before
//!             │                             their time, the same on every worker ([`reweight`])
//!             ├─ detect_alerts              the detectors over each game's rows: alert changes
//!             └─ collect                    on worker 0: per completed time, its values (by
//!                                           game) and alert changes together to the sink;
//!                                           progress; finished
//! ```
//!
//! Deltas are made from these values outside the dataflow ([`crate::publish`]), where the last
//! published value of each game lives across pipeline versions.

pub mod batches;
pub mod collect;
pub mod detect;
pub mod features;
pub mod pending;
pub mod reweight;
pub mod score;

use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{ProbeHandle, Scope};

use crate::pipeline::plan::DetectorRule;
use crate::pipeline::Plan;

pub use collect::Collect;
pub use detect::DetectAlerts;
pub use reweight::{FinishedGame, FinishedGames, FoldedGames, GameLosses, KnownGames, Reweight};
pub use score::{Model, ScoreGames, Scorer, Valued};

/// Identifies one deployed pipeline version inside an engine.
pub type RuntimeId = u64;

/// What a pipeline's dataflow hands to the outside world, from worker 0, in order.
#[derive(Debug)]
pub enum SinkMsg {
    /// A completed time: every game whose values changed at `time`, sorted by game, and the
    /// detectors' alert changes at `time`, sorted by (game, detector). One message, so that
    /// a checkpoint never holds one without the other.
    Values {
        runtime: RuntimeId,
        time: u64,
        values: Vec<Valued>,
        alerts: Vec<detect::AlertChange>,
    },
    /// Every value at times up to and including `time` has been handed over.
    Progress { runtime: RuntimeId, time: u64 },
    /// The runtime's input is closed and everything has been handed over.
    Finished { runtime: RuntimeId },
    /// Alert changes judged by the wall clock (staleness), outside the dataflow's completed
    /// times: sent by the engine's input loop, not by the dataflow.
    Alerts {
        runtime: RuntimeId,
        time: u64,
        alerts: Vec<detect::AlertChange>,
    },
    /// Messages of one runtime in order, handed over at once ([`collect`]).
    Batch(Vec<SinkMsg>),
    /// An online ensemble's finished games (their per-member losses), sent before the
    /// [`SinkMsg::Progress`] of their times: what a checkpoint keeps of the weights.
    GamesFinished {
        runtime: RuntimeId,
        games: Vec<FinishedGame>,
    },
}

pub use features::FeatureInput;

/// Builds a pipeline version's dataflow in `scope`. Every worker builds it; values and progress
/// are sent from worker 0 alone, the only one that passes a `sink`. `shadow` is scored beside
/// `model` on every row (its values ride in [`Valued::shadow`]). `known` are an online
/// ensemble's games finished before a restart (from a checkpoint), or before a new version
/// took over (from the version it replaces): see [`reweight`].
pub fn build(
    scope: Scope<'_, u64>,
    plan: Arc<Plan>,
    model: Arc<Model>,
    shadow: Option<Arc<Model>>,
    runtime: RuntimeId,
    sink: Option<SyncSender<SinkMsg>>,
    known: KnownGames,
) -> (FeatureInput, ProbeHandle<u64>) {
    let (input, facts) = features::slot_values(scope, &plan);
    let probe = ProbeHandle::new();
    let online = model
        .online()
        .map(|e| (Arc::new(e.clone()), e.online().expect("online").clone()));
    let mut values = facts.inner.score_games(plan.clone(), model, shadow);
    if let Some((ensemble, spec)) = online {
        let members = ensemble.weights().len();
        // Every worker builds the same operators (timely matches them by position); only
        // worker 0 has a sink. It sees every finished game (broadcast) before its reweight,
        // and so its collect, can pass their time: the sink gets them before that time's
        // progress.
        let games_sink = sink.clone();
        let finished = values
            .clone()
            .game_losses(members)
            .broadcast()
            .inspect_core(move |event| {
                if let (Some(sink), Ok((_, games))) = (&games_sink, event) {
                    if !games.is_empty() {
                        let _ = sink.send(SinkMsg::GamesFinished {
                            runtime,
                            games: games.clone(),
                        });
                    }
                }
            });
        let known = KnownGames {
            folded: known.folded,
            games: known
                .games
                .into_iter()
                .filter(|g| g.losses.len() == members)
                .collect(),
        };
        let start = crate::model::online::OnlineWeights::new(&spec, ensemble.weights());
        values = values.reweight(finished, ensemble, start, known);
    }
    // Without a detector the dataflow runs (staleness is judged outside it), the values go
    // straight to the collecting stage: an idle detecting stage cost ~5% of a worker, and every
    // value was cloned for it.
    let dataflow_detectors = plan
        .detectors
        .iter()
        .any(|d| !matches!(d.rule, DetectorRule::Staleness { .. }));
    let alerts = if dataflow_detectors {
        values.clone().detect_alerts(plan)
    } else {
        timely::dataflow::operators::generic::operator::empty(values.scope())
    };
    values.collect(alerts, sink, runtime).probe_with(&probe);
    (input, probe)
}
