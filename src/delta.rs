//! Prediction deltas: what the engine tells subscribers when a prediction moved.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::Sport;

/// One feature that changed between the previous published prediction and this one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FeatureChange {
    // Shared with the publisher's list of names: a delta may name every feature.
    pub feature: Arc<str>,
    /// The value behind the previous published prediction (absent: the feature is new in this
    /// pipeline version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<f64>,
    pub to: f64,
}

/// A model input's part in a change of prediction: how much its attribution moved between the
/// previous published prediction and this one, in the model's explanation space (the logit for
/// most models: positive pushes the value up).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Contributor {
    pub feature: Arc<str>,
    pub by: f64,
}

/// Why a delta was published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeltaCause {
    /// The prediction moved by at least the pipeline's epsilon (or is the game's first).
    Moved,
    /// A new pipeline version took over: its value replaces the old version's.
    Version,
}

/// A delta's stable id (see [`Delta::id`]).
pub fn delta_id(
    pipeline: &str,
    version: u32,
    sport: Sport,
    game_id: &str,
    time: u64,
    seq: u64,
) -> String {
    format!("{pipeline}/{version}/{sport}/{game_id}/{time}/{seq}")
}

/// A prediction moved for one game. Deltas of a pipeline are numbered by `seq` from 1 with no
/// gaps, in the order (event time, sport, game id), across its versions: the same input and
/// pipeline give the same bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Delta {
    /// Position of this delta in its pipeline's stream, from 1, without gaps.
    pub seq: u64,
    /// Stable identity: `pipeline/version/sport/game_id/event_time_ms/seq`. A restarted engine
    /// gives a delta it sends again the same id, so any consumer can drop repeats by it.
    pub id: String,
    /// The pipeline and its version (the `[pipeline]` name and version of its file).
    pub pipeline: String,
    pub version: u32,
    pub sport: Sport,
    pub game_id: String,
    /// Event time (ms) at which the prediction changed.
    pub event_time_ms: u64,
    /// `seq` of the game's latest event at that time.
    pub event_seq: u64,
    /// The previously published value (none for a game's first prediction).
    pub old: Option<f64>,
    /// The new value (for example the home win probability).
    pub new: f64,
    /// The model that produced `new`: `name/version` of a registry model, or `formula`.
    pub model_version: String,
    pub cause: DeltaCause,
    /// Features that differ from those behind `old`: why the value moved.
    pub changed: Vec<FeatureChange>,
    /// The model inputs that moved the prediction most (at most 3, largest first, by the
    /// change in their attribution); absent for models that do not explain themselves
    /// (formulas) and for a game's first prediction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contributors: Vec<Contributor>,
    /// For an ensemble: the lowest and highest of its members' values (their disagreement);
    /// absent for a single model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<(f64, f64)>,
}
