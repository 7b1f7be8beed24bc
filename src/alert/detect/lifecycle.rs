//! An alert's life: open, escalate, resolve (also when its game is released), retract, with
//! de-duplication and a cool-down, in event time.

use super::Decision;
use crate::alert::{AlertState, Evidence, Severity};

/// Where one alert stream (one detector on one game) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing open.
    Idle,
    /// An alert is open since `opened_at`, at `severity` (the highest reached).
    Active { opened_at: u64, severity: Severity },
    /// Resolved; a new open is suppressed before event time `until`.
    Cooling { until: u64 },
}

/// One change in an alert's life, for the engine to number and deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub state: AlertState,
    /// On open and escalate, the new severity; on resolve and retract, the alert's last one.
    pub severity: Severity,
    /// Event time the alert opened (with the detector and game, the alert's stable id).
    pub opened_at: u64,
    pub evidence: Evidence,
}

/// Turns decisions into [`Change`]s: opens, escalations, resolves and retractions, with
/// de-duplication and a cool-down after a resolve, all in event time.
#[derive(Clone, Debug, PartialEq)]
pub struct Lifecycle {
    cooldown_ms: u64,
    phase: Phase,
    /// The evidence of the open alert's last change, for a resolve at the game's release.
    evidence: Option<Evidence>,
}

impl Lifecycle {
    /// `cooldown_ms`: after a resolve at `t`, a decision that is on before `t + cooldown_ms`
    /// opens nothing (0: no cool-down).
    pub fn new(cooldown_ms: u64) -> Self {
        let phase = Phase::Idle;
        Lifecycle {
            cooldown_ms,
            phase,
            evidence: None,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Applies the decision taken at event time `t`.
    ///
    /// * idle, on: **open** at `t`;
    /// * active, on at a higher severity: **escalate**; at the same or a lower one: nothing;
    /// * active, off: **resolve**, then cool down until `t + cooldown_ms`;
    /// * active, retract: **retract**, back to idle with no cool-down (it should not have been
    ///   raised, so nothing was really resolved);
    /// * cooling, on before the cool-down ends: nothing (suppressed);
    /// * quiet, or anything else: nothing.
    pub fn step(&mut self, t: u64, decision: Decision) -> Option<Change> {
        use AlertState::{Escalated, Open, Resolved, Retracted};
        let (state, severity) = match (self.phase, &decision) {
            (Phase::Idle, Decision::On { severity, .. }) => (Open, *severity),
            (Phase::Cooling { until }, Decision::On { severity, .. }) if t >= until => {
                (Open, *severity)
            }
            (Phase::Active { severity: was, .. }, Decision::On { severity, .. })
                if *severity > was =>
            {
                (Escalated, *severity)
            }
            (Phase::Active { severity, .. }, Decision::Off { .. }) => (Resolved, severity),
            (Phase::Active { severity, .. }, Decision::Retract { .. }) => (Retracted, severity),
            _ => return None,
        };
        let opened_at = match self.phase {
            Phase::Active { opened_at, .. } => opened_at,
            _ => t,
        };
        self.phase = match state {
            Open | Escalated => Phase::Active {
                opened_at,
                severity,
            },
            Resolved => Phase::Cooling {
                until: t.saturating_add(self.cooldown_ms),
            },
            Retracted => Phase::Idle,
        };
        let evidence = decision.into_evidence()?;
        self.evidence = matches!(state, Open | Escalated).then(|| evidence.clone());
        Some(Change {
            state,
            severity,
            opened_at,
            evidence,
        })
    }

    /// The game was released (`retention` after its end, at event time `t`): its detectors see
    /// nothing more of it, so an open alert is **resolved** now, at its severity, with the
    /// evidence of its last change and a window that says why. Nothing when none is open.
    pub fn release(&mut self, t: u64) -> Option<Change> {
        let Phase::Active {
            opened_at,
            severity,
        } = self.phase
        else {
            return None;
        };
        self.phase = Phase::Cooling {
            until: t.saturating_add(self.cooldown_ms),
        };
        let mut evidence = self.evidence.take()?;
        evidence.window = format!("{}; resolved as the game was released", evidence.window);
        Some(Change {
            state: AlertState::Resolved,
            severity,
            opened_at,
            evidence,
        })
    }
}
