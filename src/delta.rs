//! Prediction deltas: what the engine tells subscribers when a prediction moved.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::Sport;

/// One feature that changed between the previous published prediction and this one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FeatureChange {
    pub feature: String,
    pub from: i64,
    pub to: i64,
}

/// A prediction moved for one game. Deltas on a channel are numbered by `seq` from 1 with no
/// gaps, in the order (event time, sport, game id): the same input and model give the same bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Delta {
    /// Position of this delta on its channel, from 1, without gaps.
    pub seq: u64,
    pub sport: Sport,
    pub game_id: String,
    /// Event time (ms) at which the prediction changed.
    pub event_time_ms: u64,
    /// `seq` of the game's latest event at that time.
    pub event_seq: u64,
    /// The previously published value (none for a game's first prediction).
    pub old: Option<f64>,
    /// The new value (home win probability for `win_probability`).
    pub new: f64,
    /// Version of the model that produced `new`.
    pub model_version: String,
    /// Features that differ from those behind `old`: why the value moved.
    pub changed: Vec<FeatureChange>,
}
