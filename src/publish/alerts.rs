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
//! The dataflow's alerts are those of a completed time, the same for both versions. The
//! wall-clock (staleness) alerts are each runtime's own, judged by when it read a game's
//! events (a warming version reads them all at once): they are compared at the swap too, and
//! one the old version has open stays open under the new version when the new version has a
//! detector of its name ([`StaleOpen::swap`]).

use super::*;
use crate::alert::AlertState;
use crate::pipeline::plan::DetectorRule;

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
    let mut kept = Vec::with_capacity(changes.len());
    for c in changes {
        // Recomputed after a restart: delivered (and followed) before it.
        if delivered.is_some_and(|t| c.time <= t) {
            continue;
        }
        let Some(d) = p.live.plan.detectors.get(c.detector as usize) else {
            continue;
        };
        let open = OpenStaleness {
            game: c.game.clone(),
            detector: d.name.clone(),
            opened_at: c.opened_at,
        };
        match c.state {
            // The new version's own opening of an alert it inherited at a swap: open already.
            AlertState::Open if p.live.inherited.remove(&open).is_some() => continue,
            AlertState::Open | AlertState::Escalated => p.live.open_staleness.insert(open),
            AlertState::Resolved | AlertState::Retracted => p.live.open_staleness.remove(&open),
        };
        kept.push(c);
    }
    deliver_alerts(hub, p, sink, kept);
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

/// A version's open wall-clock (staleness) alerts, each with its latest change.
#[derive(Debug, Default)]
pub(super) struct StaleOpen(BTreeMap<OpenStaleness, AlertChange>);

/// What a swap changes about the wall-clock alerts.
pub(super) struct StaleSwap {
    /// The old version's open ones of a detector the new version lacks, resolved at the swap.
    pub ended: Vec<AlertChange>,
    /// The old version's open ones the new version does not have open but judges by a
    /// detector of the same name, each as its resolving change under the new version: they
    /// stay open, as the new version's (see [`StaleOpen::swap`]).
    pub inherited: BTreeMap<OpenStaleness, AlertChange>,
    /// The new version's open ones the old one did not have open, opened at the swap.
    pub raised: Vec<AlertChange>,
    /// What the new version has open once it takes over.
    pub open: BTreeSet<OpenStaleness>,
    /// The new version's changes after the swap, in the order it made them.
    pub after: Vec<AlertChange>,
}

impl StaleOpen {
    /// Follows `changes` (in their order).
    pub(super) fn track(&mut self, plan: &Plan, changes: Vec<AlertChange>) {
        for c in changes {
            let Some(d) = plan.detectors.get(c.detector as usize) else {
                continue;
            };
            let key = OpenStaleness {
                game: c.game.clone(),
                detector: d.name.clone(),
                opened_at: c.opened_at,
            };
            match c.state {
                AlertState::Open | AlertState::Escalated => {
                    self.0.insert(key, c);
                }
                AlertState::Resolved | AlertState::Retracted => {
                    self.0.remove(&key);
                }
            }
        }
    }

    /// A swap at `time` from `old` to the version these are of (its plan `plan`), which also
    /// made `pending` (its changes not followed yet). A change is before the swap by its time,
    /// as the dataflow's are: an alert opens at its game's last event time and ends at a later
    /// event's, so one opened after the swap also ends after it.
    ///
    /// Both versions read the same events, so an alert open in both (same detector name,
    /// game and last event) has the same id and stays open: the new version ends it. One open
    /// in the old version alone stays open too when the new version has a staleness detector
    /// of its name: the new version has most likely not judged the game yet (it read the
    /// backlog less than a gap ago), and ending it now would only have the new version open
    /// it again. It is inherited: the new version's own opening of it is not delivered again,
    /// and it ends with the new version's resolving change or the game's next value
    /// ([`Version::resumed`]). Only the old version's alerts of a detector the new one lacks
    /// end at the swap.
    pub(super) fn swap(
        mut self,
        old: &Version,
        plan: &Plan,
        pending: VecDeque<(u64, Vec<AlertChange>)>,
        time: u64,
    ) -> StaleSwap {
        let mut after = Vec::new();
        for (t, changes) in pending {
            if t > time {
                after.extend(changes);
            } else {
                self.track(plan, changes);
            }
        }
        let (mut ended, mut inherited) = (Vec::new(), BTreeMap::new());
        for k in old
            .open_staleness
            .iter()
            .filter(|k| !self.0.contains_key(*k))
        {
            if let Some(c) = resolving(plan, k, time) {
                inherited.insert(k.clone(), c);
            } else {
                ended.extend(resolving(&old.plan, k, time));
            }
        }
        let raised = self
            .0
            .iter()
            .filter(|(k, _)| !old.open_staleness.contains(*k))
            .map(|(_, c)| AlertChange { time, ..c.clone() })
            .collect();
        let mut open: BTreeSet<OpenStaleness> = self.0.into_keys().collect();
        open.extend(inherited.keys().cloned());
        StaleSwap {
            ended,
            inherited,
            raised,
            open,
            after,
        }
    }
}

/// The change that resolves the open wall-clock alert `k` at `time`, under `plan`, if `plan`
/// has a staleness detector of its name.
fn resolving(plan: &Plan, k: &OpenStaleness, time: u64) -> Option<AlertChange> {
    let (i, d) = plan
        .detectors
        .iter()
        .enumerate()
        .find(|(_, d)| d.name == k.detector)?;
    let DetectorRule::Staleness { gap_ms } = d.rule else {
        return None;
    };
    let gap = std::time::Duration::from_millis(gap_ms);
    Some(AlertChange::staleness(
        time,
        k.game.clone(),
        i as u32,
        gap,
        k.opened_at,
        None,
    ))
}

impl Version {
    /// The inherited wall-clock alerts (see [`StaleOpen::swap`]) whose game has a value after
    /// the alert's last event, or was released: its feed resumed, so each ends at that time.
    pub(super) fn resumed(&mut self, values: &[Valued]) -> Vec<AlertChange> {
        if self.inherited.is_empty() {
            return Vec::new();
        }
        let mut ended = Vec::new();
        for v in values {
            let keys: Vec<OpenStaleness> = self
                .inherited
                .keys()
                .filter(|k| k.game == v.game && (v.closed || v.time > k.opened_at))
                .cloned()
                .collect();
            for k in keys {
                let c = self.inherited.remove(&k).expect("listed above");
                ended.push(AlertChange { time: v.time, ..c });
            }
        }
        ended
    }
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
