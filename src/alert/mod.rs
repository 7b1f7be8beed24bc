//! Anomaly alerts: detectors declared in pipeline files watch features, predictions and feed
//! health; an alert has a lifecycle (open, escalate, resolve, retract) and is delivered to the
//! WebSocket `alerts` channel, a Kafka topic and webhooks.
//!
//! * [`detect`]: the detectors' arithmetic, as small state machines fed one observation at a
//!   time (EWMA z-score, robust median/MAD score, CUSUM, jump, divergence).
//! * [`webhook`]: HTTP delivery with signatures, idempotency keys, retries and dead letters,
//!   never blocking the dataflow.

pub mod detect;
pub mod webhook;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::event::Sport;

/// How bad.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// Where an alert is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition started.
    Open,
    /// Still on, and worse: its severity rose.
    Escalated,
    /// The condition ended.
    Resolved,
    /// The feed corrected what raised it: it should not have been raised.
    Retracted,
}

/// What a detector saw: enough to judge the alert without the engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Evidence {
    /// The observed value (a feature, a prediction, a gap, ...).
    pub value: f64,
    /// The threshold crossed (or fallen back under, on resolve): by the score's magnitude for
    /// the statistical detectors (`zscore`, `robust`, `cusum`, `jump`, `divergence`), by the
    /// value for the others.
    pub threshold: f64,
    /// The detector's score (z-score, CUSUM sum, |delta p|, ...), where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The baseline the value is compared with (a mean, a median, the market), where any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// The window or horizon, in words ("ewma alpha 0.1", "last 5 plays", "30 s wall").
    pub window: String,
}

impl Evidence {
    /// What was compared with the threshold, in words: the score (with the value and the
    /// baseline it came from) when `by_score`, the value otherwise.
    pub fn describe(&self, by_score: bool) -> String {
        match self.score.filter(|_| by_score) {
            Some(score) => {
                let baseline = self
                    .baseline
                    .map(|b| format!(", baseline {b:.4}"))
                    .unwrap_or_default();
                format!(
                    "score {score:.4} against threshold ±{:.4} (value {:.4}{baseline})",
                    self.threshold, self.value
                )
            }
            None => format!(
                "value {:.4} against threshold {:.4}",
                self.value, self.threshold
            ),
        }
    }
}

/// One change in an alert's life. `id` is stable across the changes of one alert and across
/// replays of the same input: (pipeline, detector, sport, game, event time it opened).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Alert {
    /// Position in the pipeline's alert stream, from 1, without gaps.
    pub seq: u64,
    pub id: String,
    pub pipeline: String,
    pub version: u32,
    pub detector: String,
    pub kind: String,
    pub sport: Sport,
    pub game_id: String,
    pub state: AlertState,
    pub severity: Severity,
    /// Event time of this change; `opened_at_ms` of the alert's opening.
    pub event_time_ms: u64,
    pub opened_at_ms: u64,
    pub message: String,
    pub evidence: Evidence,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_what_crossed_the_threshold() {
        let jump = Evidence {
            value: 0.4793,
            threshold: 0.1,
            score: Some(-0.1192),
            baseline: Some(0.5985),
            window: "last 180000 ms".into(),
        };
        assert_eq!(
            jump.describe(true),
            "score -0.1192 against threshold ±0.1000 (value 0.4793, baseline 0.5985)"
        );
        // The feed's score detector: the value fell under the threshold (its high).
        assert_eq!(
            jump.describe(false),
            "value 0.4793 against threshold 0.1000"
        );
        let stale = Evidence {
            score: None,
            baseline: None,
            ..jump
        };
        assert_eq!(
            stale.describe(true),
            "value 0.4793 against threshold 0.1000"
        );
    }
}
