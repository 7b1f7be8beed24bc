//! From a version's alert changes to numbered alerts on its outputs, and what a version swap
//! changes about the alerts that are open.
//!
//! Each version keeps the alerts it has open. When a new version takes over at time `T`, an
//! alert the old version has open and the new one does not is resolved at `T` (under the old
//! version: it is the old version's alert that ends), and one the new version has open and the
//! old one does not is opened at `T` (under the new version, with the evidence it opened on).
//! Every alert a subscriber saw open therefore ends, whatever the versions' detectors, and every
//! change after the swap follows one the subscriber has seen.
//!
//! Only the dataflow's alerts are followed: those of a completed time, the same for both
//! versions. The wall-clock (staleness) alerts are each runtime's own, judged by when it read
//! a game's events (a warming version reads them all at once); the live version's are the ones
//! delivered up to the swap, the new version's after it, as before.

use super::*;
use crate::alert::AlertState;

/// The alerts a version has open, by id, each with its latest change.
#[derive(Debug, Default)]
pub(super) struct OpenAlerts(BTreeMap<String, AlertChange>);

impl OpenAlerts {
    /// Follows `changes` (in their order): opened and escalated alerts are open, resolved and
    /// retracted ones are not.
    pub(super) fn track(&mut self, plan: &Plan, changes: &[AlertChange]) {
        for c in changes {
            let Some(id) = alert_id(plan, c) else {
                continue;
            };
            match c.state {
                AlertState::Open | AlertState::Escalated => {
                    self.0.insert(id, c.clone());
                }
                AlertState::Resolved | AlertState::Retracted => {
                    self.0.remove(&id);
                }
            }
        }
    }

    /// The alerts open here and not in `other`, as changes to `state` at `time`.
    fn missing_from(&self, other: &OpenAlerts, state: AlertState, time: u64) -> Vec<AlertChange> {
        self.0
            .iter()
            .filter(|(id, _)| !other.0.contains_key(*id))
            .map(|(_, c)| AlertChange {
                time,
                state,
                ..c.clone()
            })
            .collect()
    }
}

/// An alert's stable id: (pipeline, detector, sport, game, event time it opened).
fn alert_id(plan: &Plan, c: &AlertChange) -> Option<String> {
    let d = plan.detectors.get(c.detector as usize)?;
    Some(format!(
        "{}/{}/{}/{}/{}",
        plan.name, d.name, c.game.sport, c.game.game_id, c.opened_at
    ))
}

/// The live version's alert changes, numbered and delivered to its alert outputs and the
/// observer. After a restart, those at or before the checkpoint's time were delivered before
/// it: not delivered again.
pub(super) fn deliver_alerts(
    hub: &Hub,
    p: &mut PipelineOut,
    sink: &mut dyn DeltaSink,
    changes: Vec<AlertChange>,
) {
    if changes.is_empty() {
        return;
    }
    let numbered = number_alerts(p, changes);
    emit_alerts(hub, &p.live, sink, &numbered);
}

/// The live version's wall-clock (staleness) alert changes, delivered as
/// [`deliver_alerts`] does; those it delivers are followed, so that a checkpoint keeps the
/// open ones (a restart does not recompute them).
pub(super) fn deliver_staleness(
    hub: &Hub,
    p: &mut PipelineOut,
    sink: &mut dyn DeltaSink,
    changes: Vec<AlertChange>,
) {
    let delivered = p.delivered_through;
    for c in changes
        .iter()
        .filter(|c| delivered.is_none_or(|t| c.time > t))
    {
        let Some(d) = p.live.plan.detectors.get(c.detector as usize) else {
            continue;
        };
        let open = OpenStaleness {
            game: c.game.clone(),
            detector: d.name.clone(),
            opened_at: c.opened_at,
        };
        match c.state {
            AlertState::Open | AlertState::Escalated => p.live.open_staleness.insert(open),
            AlertState::Resolved | AlertState::Retracted => p.live.open_staleness.remove(&open),
        };
    }
    deliver_alerts(hub, p, sink, changes);
}

/// The changes a swap at `time` makes, before the new version takes over: the alerts only the
/// old (live) version has open, resolved; and, to deliver once the new one is live, those
/// only the new one has open, opened.
pub(super) fn swap_changes(
    old: &Version,
    new: &Version,
    time: u64,
) -> (Vec<AlertChange>, Vec<AlertChange>) {
    (
        old.open_alerts
            .missing_from(&new.open_alerts, AlertState::Resolved, time),
        new.open_alerts
            .missing_from(&old.open_alerts, AlertState::Open, time),
    )
}

/// Numbers the live version's alert changes and gives each its stable id.
fn number_alerts(p: &mut PipelineOut, changes: Vec<AlertChange>) -> Vec<Alert> {
    let plan = &p.live.plan;
    let delivered = p.delivered_through;
    changes
        .into_iter()
        .filter(|c| delivered.is_none_or(|t| c.time > t))
        .filter_map(|c| {
            let id = alert_id(plan, &c)?;
            let d = &plan.detectors[c.detector as usize];
            p.alert_seq += 1;
            let what = match c.state {
                AlertState::Open => "opened",
                AlertState::Escalated => "escalated",
                AlertState::Resolved => "resolved",
                AlertState::Retracted => "retracted",
            };
            Some(Alert {
                seq: p.alert_seq,
                id,
                pipeline: plan.name.clone(),
                version: plan.version,
                detector: d.name.clone(),
                kind: d.rule.kind().to_string(),
                sport: c.game.sport,
                game_id: c.game.game_id.clone(),
                state: c.state,
                severity: c.severity,
                event_time_ms: c.time,
                opened_at_ms: c.opened_at,
                message: format!(
                    "{} {what} on {} {}: {}",
                    d.name,
                    c.game.sport,
                    c.game.game_id,
                    c.evidence.describe(d.rule.thresholds_score())
                ),
                evidence: c.evidence,
            })
        })
        .collect()
}

/// Delivers numbered alert changes to the version's alert outputs and the observer.
fn emit_alerts(hub: &Hub, version: &Version, sink: &mut dyn DeltaSink, alerts: &[Alert]) {
    if alerts.is_empty() {
        return;
    }
    metrics::counter!("sideline_alerts_out_total", "pipeline" => version.plan.name.clone())
        .increment(alerts.len() as u64);
    for o in &version.plan.outputs {
        match (o, version.outputs.kafka.as_ref()) {
            (Output::KafkaAlerts { topic }, Some(k)) => k.send_alerts(topic, alerts),
            (Output::WebSocketAlerts { channel }, _) => hub.publish_alerts(channel, alerts),
            _ => {}
        }
    }
    if let Some(w) = &version.outputs.webhooks {
        for a in alerts {
            w.send(a);
        }
    }
    sink.alerts(&version.plan, alerts);
}
