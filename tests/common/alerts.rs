//! Alerts in the end-to-end tests: the NFL detectors they run, and an observer that keeps
//! what the engine publishes.

use std::sync::{Arc, Mutex};

use sideline::delta::Delta;
use sideline::pipeline::plan::Plan;

/// Two detectors for the NFL pipeline whose state spans many events (a window, a moving
/// average): swings of the prediction, and shocks in the score difference.
pub const NFL_DETECTORS: &str = r#"
[[detector]]
name = "swing"
kind = "jump"
on = "prediction"
threshold = 0.2
window = "3m"

[[detector]]
name = "shock"
kind = "zscore"
on = "score_diff"
alpha = 0.2
warn = 4.0
crit = 8.0
min-samples = 20
cooldown = "5m"
"#;

/// An observer that keeps every delta and alert change the engine publishes.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<(Vec<Delta>, Vec<sideline::alert::Alert>)>>);

impl sideline::publish::DeltaSink for Capture {
    fn deltas(&mut self, _: &Plan, deltas: &[Delta]) {
        self.0.lock().unwrap().0.extend_from_slice(deltas);
    }
    fn alerts(&mut self, _: &Plan, alerts: &[sideline::alert::Alert]) {
        self.0.lock().unwrap().1.extend_from_slice(alerts);
    }
}
