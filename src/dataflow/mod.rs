//! The dataflow: per-game feature updates in, ordered prediction deltas out.
//!
//! ```text
//! input (game, time, FeatureVec update)      one InputSession per worker, times = event ms
//!   └─ count_total                           sum per game: the game's features, emitted only
//!        │                                   at the times they changed (exchanged by game)
//!        └─ score_games                      batched model pass over every game that changed
//!             │                              at the completed times; epsilon against the last
//!             │                              published value
//!             └─ sequence_deltas             on worker 0: order by (time, sport, game),
//!                                            number, hand to the sink; progress messages
//! ```

pub mod score;
pub mod sequence;

use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::operators::CountTotal;
use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, Scope};

use crate::delta::Delta;
use crate::event::GameKey;
use crate::features::FeatureVec;

pub use score::{ScoreGames, Scored, Scorer};
pub use sequence::SequenceDeltas;

/// What the dataflow hands to the outside world, from worker 0, in order.
#[derive(Debug)]
pub enum SinkMsg {
    /// Deltas of completed times, numbered; `ingest_ms[i]` is the Kafka timestamp of the event
    /// behind `deltas[i]`, when known.
    Deltas {
        deltas: Vec<Delta>,
        ingest_ms: Vec<Option<u64>>,
    },
    /// Every delta at event times up to and including this one has been handed over.
    Progress(u64),
}

/// The input handle a worker feeds.
pub type FeatureInput = InputSession<u64, GameKey, FeatureVec>;

/// Builds the dataflow in `scope`. Every worker builds it; deltas and progress are sent from
/// worker 0 alone, the only one that passes a `sink`.
pub fn build(
    scope: Scope<'_, u64>,
    scorer: Arc<dyn Scorer>,
    epsilon: f64,
    sink: Option<SyncSender<SinkMsg>>,
) -> (FeatureInput, ProbeHandle<u64>) {
    let (input, updates) = scope.new_collection::<GameKey, FeatureVec>();
    let probe = ProbeHandle::new();
    let version = scorer.version().to_string();
    updates
        .count_total()
        .inner
        .score_games(scorer, epsilon)
        .sequence_deltas(sink, version)
        .probe_with(&probe);
    (input, probe)
}
