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
    let delivered = p.delivered_through;
    let changes = changes
        .into_iter()
        .filter(|c| delivered.is_none_or(|t| c.time > t))
        .collect();
    deliver(hub, p, sink, changes);
}

/// The alert changes a swap makes ([`swap_changes`]): new, whatever their time, so never
/// taken for ones a restart recomputed (a swap can fall at a restart's checkpoint time).
pub(super) fn deliver_swap_alerts(
    hub: &Hub,
    p: &mut PipelineOut,
    sink: &mut dyn DeltaSink,
    changes: Vec<AlertChange>,
) {
    deliver(hub, p, sink, changes);
}

fn deliver(hub: &Hub, p: &mut PipelineOut, sink: &mut dyn DeltaSink, changes: Vec<AlertChange>) {
    if changes.is_empty() {
        return;
    }
    let numbered = number_alerts(p, changes);
    emit_alerts(hub, &p.live, sink, &numbered);
}

/// The live version's wall-clock (staleness) alert changes, delivered as they change what
/// subscribers have seen: an opening of an alert not open, a resolve of one open, an
/// escalation of one open; anything else is dropped. So every alert a subscriber sees opens
/// once, then changes or ends only while open, whoever judged it: a runtime, a swap, or the
/// game's next value ([`Version::resumed`]). What is open is followed for checkpoints (a
/// restart does not recompute these: they are judged by the wall clock, so none is taken for
/// one delivered before a restart).
pub(super) fn deliver_staleness(
    hub: &Hub,
    p: &mut PipelineOut,
    sink: &mut dyn DeltaSink,
    changes: Vec<AlertChange>,
) {
    let mut kept = Vec::with_capacity(changes.len());
    for c in changes {
        let Some(key) = stale_key(&p.live.plan, &c) else {
            continue;
        };
        let v = &mut p.live;
        let news = match c.state {
            // Not one that has ended: a version that judged it later would open it again.
            AlertState::Open => !v.ended_staleness.contains(&key) && v.open_staleness.insert(key),
            AlertState::Escalated => v.open_staleness.contains(&key),
            AlertState::Resolved | AlertState::Retracted => {
                v.inherited.remove(&key);
                let news = v.open_staleness.remove(&key);
                if news {
                    v.ended_staleness.insert(key);
                }
                news
            }
        };
        if news {
            kept.push(c);
        }
    }
    deliver(hub, p, sink, kept);
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
    /// The new version's changes after the swap, in the order it made them.
    pub after: Vec<AlertChange>,
}

impl StaleOpen {
    /// Follows `changes` (in their order).
    pub(super) fn track(&mut self, plan: &Plan, changes: Vec<AlertChange>) {
        for c in changes {
            let Some(key) = stale_key(plan, &c) else {
                continue;
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

    /// A swap at `time` from `old` to the version these are of (its plan `plan`; `reads` the
    /// games it has valued), which also made `pending` (its changes not followed yet). A change is before the swap by its time,
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
        reads: impl Fn(&GameKey) -> bool,
        pending: VecDeque<(u64, Vec<AlertChange>)>,
        time: u64,
    ) -> StaleSwap {
        // An alert's changes stay in order: once one is after the swap, so are the rest (a
        // late event can resolve at a time before the alert's opening).
        let mut after = Vec::new();
        let mut later: BTreeSet<OpenStaleness> = BTreeSet::new();
        for (t, changes) in pending {
            for c in changes {
                let Some(key) = stale_key(plan, &c) else {
                    continue;
                };
                if t > time || later.contains(&key) {
                    later.insert(key);
                    after.push(c);
                } else {
                    self.track(plan, vec![c]);
                }
            }
        }
        let (mut ended, mut inherited) = (Vec::new(), BTreeMap::new());
        for k in old
            .open_staleness
            .iter()
            .filter(|k| !self.0.contains_key(*k))
        {
            // Never before it opened (the swap's time can be: the slowest partition holds it).
            // Inherited only by a version that reads the game (it has valued it): another
            // would never end it.
            let at = time.max(k.opened_at);
            match resolving(plan, k, at).filter(|_| reads(&k.game)) {
                Some(c) => {
                    inherited.insert(k.clone(), c);
                }
                None => ended.extend(resolving(&old.plan, k, at)),
            }
        }
        let raised = self
            .0
            .iter()
            .filter(|(k, _)| !old.open_staleness.contains(*k))
            .map(|(_, c)| AlertChange { time, ..c.clone() })
            .collect();
        StaleSwap {
            ended,
            inherited,
            raised,
            after,
        }
    }
}

/// A wall-clock alert change's key under `plan`.
fn stale_key(plan: &Plan, c: &AlertChange) -> Option<OpenStaleness> {
    let d = plan.detectors.get(c.detector as usize)?;
    Some(OpenStaleness {
        game: c.game.clone(),
        detector: d.name.clone(),
        opened_at: c.opened_at,
    })
}

/// The change that resolves the open wall-clock alert `k` at `time`, under `plan`, if `plan`
/// has a staleness detector of its name.
pub(super) fn resolving(plan: &Plan, k: &OpenStaleness, time: u64) -> Option<AlertChange> {
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
    /// The inherited wall-clock alerts (see [`StaleOpen::swap`]) whose game has a value caused
    /// by an event after the alert's last one (not by a window expiring), or was released: its
    /// feed resumed, so each ends at that time.
    pub(super) fn resumed(&mut self, values: &[Valued]) -> Vec<AlertChange> {
        if self.inherited.is_empty() {
            return Vec::new();
        }
        let mut ended = Vec::new();
        for v in values {
            let keys: Vec<OpenStaleness> = self
                .inherited
                .keys()
                .filter(|k| k.game == v.game && (v.closed || v.event_at > k.opened_at))
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
    changes
        .into_iter()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Alert;
    use crate::checkpoint::PipelineCheckpoint;
    use crate::engine::Control;
    use crate::event::Sport;
    use crate::hub::HubConfig;
    use crate::pipeline::Registry;

    struct Alerts(Arc<Mutex<Vec<Alert>>>);

    impl DeltaSink for Alerts {
        fn deltas(&mut self, _: &Plan, _: &[crate::delta::Delta]) {}
        fn alerts(&mut self, _: &Plan, alerts: &[Alert]) {
            self.0.lock().unwrap().extend_from_slice(alerts);
        }
    }

    /// The shipped NFL pipeline at `version`, with a staleness detector named `detector`.
    fn plan(version: u32, detector: &str) -> Arc<Plan> {
        let text = format!(
            "{}\n[[detector]]\nname = \"{detector}\"\nkind = \"staleness\"\ngap = \"1s\"\n",
            crate::pipeline::DEFAULT_PIPELINE
                .1
                .replace("version = 1", &format!("version = {version}"))
        );
        Arc::new(crate::pipeline::plan::plan("nfl.toml", &text, &Registry::new(None)).unwrap())
    }

    fn game() -> GameKey {
        GameKey {
            sport: Sport::Nfl,
            game_id: "g".into(),
        }
    }

    /// Detector 0's staleness alert on the game, opened at its last event `opened_at`:
    /// opening (at that time) or resolved at `time`.
    fn stale(plan: &Plan, opened_at: u64, resolved_at: Option<u64>) -> AlertChange {
        let detector = plan.detectors.len() as u32 - 1;
        let gap = std::time::Duration::from_secs(1);
        match resolved_at {
            None => AlertChange::staleness(opened_at, game(), detector, gap, opened_at, Some(2.0)),
            Some(t) => AlertChange::staleness(t, game(), detector, gap, opened_at, None),
        }
    }

    /// The game's value at `time`, caused by an event at `event_at`.
    fn value(plan: &Plan, time: u64, event_at: u64) -> Valued {
        let mut v = Valued::closed(time, game());
        v.closed = false;
        v.event_at = event_at;
        v.value = 0.5;
        v.vars = vec![0.0; plan.vars.len()];
        v
    }

    /// Version 1 live with `live` delivered and its time at 500; version 2 registered, then
    /// `candidate` from it (a swap follows as soon as it has completed time 500).
    fn run(v2: Arc<Plan>, live: Vec<SinkMsg>, candidate: Vec<SinkMsg>) -> Vec<Alert> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hub = Hub::new(HubConfig::default());
        let publisher = Publisher::new(hub, Control::new(1), Box::new(Alerts(seen.clone())));
        let mut p = publisher.lock().unwrap();
        let registry = Registry::new(None);
        for (id, plan) in [(1, plan(1, "stale")), (2, v2)] {
            let model = Arc::new(Model::for_plan(&plan, &registry).unwrap());
            p.register(id, plan, model, VersionOutputs::default());
            let msgs = if id == 1 { &live } else { &candidate };
            for m in msgs {
                p.handle(copy(m));
            }
        }
        assert!(p.settled("nfl_win_probability"), "version 2 took over");
        drop(p);
        let alerts = seen.lock().unwrap().clone();
        alerts
    }

    /// `SinkMsg` is not `Clone` (it is moved to the publisher): the kinds these tests send.
    fn copy(m: &SinkMsg) -> SinkMsg {
        match m {
            SinkMsg::Alerts {
                runtime,
                time,
                alerts,
            } => SinkMsg::Alerts {
                runtime: *runtime,
                time: *time,
                alerts: alerts.clone(),
            },
            SinkMsg::Values {
                runtime,
                time,
                values,
                alerts,
            } => SinkMsg::Values {
                runtime: *runtime,
                time: *time,
                values: values.clone(),
                alerts: alerts.clone(),
            },
            SinkMsg::Progress { runtime, time } => SinkMsg::Progress {
                runtime: *runtime,
                time: *time,
            },
            _ => unreachable!("not sent here"),
        }
    }

    /// Version 2's value of the game at `time`, from an event then: it reads the game.
    fn valued(plan: &Plan, time: u64) -> SinkMsg {
        SinkMsg::Values {
            runtime: 2,
            time,
            values: vec![value(plan, time, time)],
            alerts: Vec::new(),
        }
    }

    fn progress(runtime: RuntimeId, time: u64) -> SinkMsg {
        SinkMsg::Progress { runtime, time }
    }

    fn alerts_msg(runtime: RuntimeId, change: AlertChange) -> SinkMsg {
        SinkMsg::Alerts {
            runtime,
            time: change.time,
            alerts: vec![change],
        }
    }

    /// Each alert's states, in delivery order.
    fn lives(alerts: &[Alert]) -> BTreeMap<String, Vec<(AlertState, u32, u64)>> {
        let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for a in alerts {
            out.entry(a.id.clone())
                .or_default()
                .push((a.state, a.version, a.event_time_ms));
        }
        out
    }

    /// The alert opened after the swap's time; version 2 judged it too, after that time, and
    /// saw the game resume at 650, a time its values reach after the swap. The alert opens
    /// once and ends once.
    #[test]
    fn an_alert_both_versions_judged_after_the_swap_time_ends_once() {
        let (v1, v2) = (plan(1, "stale"), plan(2, "stale"));
        let live = vec![alerts_msg(1, stale(&v1, 600, None)), progress(1, 500)];
        let candidate = vec![
            alerts_msg(2, stale(&v2, 600, None)),
            alerts_msg(2, stale(&v2, 600, Some(650))),
            SinkMsg::Values {
                runtime: 2,
                time: 650,
                values: vec![value(&v2, 650, 650)],
                alerts: Vec::new(),
            },
            progress(2, 650),
        ];
        let got = lives(&run(plan(2, "stale"), live, candidate));
        let states: Vec<Vec<AlertState>> = got
            .values()
            .map(|l| l.iter().map(|s| s.0).collect())
            .collect();
        assert_eq!(
            states,
            vec![vec![AlertState::Open, AlertState::Resolved]],
            "{got:?}"
        );
    }

    /// An inherited alert (version 2 had not judged the game when it took over) outlives a
    /// value from a window expiring (time 700, its event still the one at 600), and ends at
    /// the game's next event (800), under version 2.
    #[test]
    fn an_inherited_alert_ends_at_the_next_event_not_at_a_window_expiry() {
        let (v1, v2) = (plan(1, "stale"), plan(2, "stale"));
        let live = vec![alerts_msg(1, stale(&v1, 400, None)), progress(1, 500)];
        let candidate = vec![
            valued(&v2, 300),
            progress(2, 500),
            SinkMsg::Values {
                runtime: 2,
                time: 700,
                values: vec![value(&v2, 700, 400)],
                alerts: Vec::new(),
            },
            SinkMsg::Values {
                runtime: 2,
                time: 800,
                values: vec![value(&v2, 800, 800)],
                alerts: Vec::new(),
            },
            progress(2, 800),
        ];
        let got = lives(&run(plan(2, "stale"), live, candidate));
        let life: Vec<(AlertState, u32, u64)> = got.into_values().next().unwrap();
        assert_eq!(
            life,
            vec![(AlertState::Open, 1, 400), (AlertState::Resolved, 2, 800)]
        );
    }

    /// An inherited alert version 2 then judges itself: its opening is not delivered again,
    /// and its resolve (its input loop reads the event at 800 before the dataflow values it)
    /// ends the alert, once.
    #[test]
    fn an_inherited_alert_the_new_version_judges_opens_once_and_ends_once() {
        let (v1, v2) = (plan(1, "stale"), plan(2, "stale"));
        let live = vec![alerts_msg(1, stale(&v1, 400, None)), progress(1, 500)];
        let candidate = vec![
            valued(&v2, 300),
            progress(2, 500),
            alerts_msg(2, stale(&v2, 400, None)),
            alerts_msg(2, stale(&v2, 400, Some(800))),
            SinkMsg::Values {
                runtime: 2,
                time: 800,
                values: vec![value(&v2, 800, 800)],
                alerts: Vec::new(),
            },
            progress(2, 800),
        ];
        let got = lives(&run(plan(2, "stale"), live, candidate));
        let life: Vec<(AlertState, u32, u64)> = got.into_values().next().unwrap();
        assert_eq!(
            life,
            vec![(AlertState::Open, 1, 400), (AlertState::Resolved, 2, 800)]
        );
    }

    /// Version 2 has no detector of the name: the alert ends at the swap, under version 1, not
    /// before it opened (the swap's time, 500, is before the alert's last event, 600).
    #[test]
    fn an_alert_of_a_detector_the_new_version_lacks_ends_at_the_swap() {
        let v1 = plan(1, "stale");
        let live = vec![alerts_msg(1, stale(&v1, 600, None)), progress(1, 500)];
        let v2 = plan(2, "quiet");
        let candidate = vec![valued(&v2, 300), progress(2, 500)];
        let got = lives(&run(plan(2, "quiet"), live, candidate));
        let life: Vec<(AlertState, u32, u64)> = got.into_values().next().unwrap();
        assert_eq!(
            life,
            vec![(AlertState::Open, 1, 600), (AlertState::Resolved, 1, 600)]
        );
    }

    /// Version 1 ended the alert after the swap's time (the game resumed at 700), before the
    /// swap; version 2 had it open at that time. It does not open again.
    #[test]
    fn an_alert_the_old_version_ended_after_the_swap_time_does_not_open_again() {
        let (v1, v2) = (plan(1, "stale"), plan(2, "stale"));
        let live = vec![
            alerts_msg(1, stale(&v1, 400, None)),
            progress(1, 500),
            alerts_msg(1, stale(&v1, 400, Some(700))),
        ];
        let candidate = vec![
            valued(&v2, 300),
            alerts_msg(2, stale(&v2, 400, None)),
            alerts_msg(2, stale(&v2, 400, Some(700))),
            progress(2, 500),
        ];
        let got = lives(&run(plan(2, "stale"), live, candidate));
        let life: Vec<(AlertState, u32, u64)> = got.into_values().next().unwrap();
        assert_eq!(
            life,
            vec![(AlertState::Open, 1, 400), (AlertState::Resolved, 1, 700)]
        );
    }

    /// Version 2 reads another topic and never valued the game: it would never end the
    /// alert, so the alert ends at the swap, as version 1's.
    #[test]
    fn an_alert_on_a_game_the_new_version_does_not_read_ends_at_the_swap() {
        let v1 = plan(1, "stale");
        let live = vec![alerts_msg(1, stale(&v1, 400, None)), progress(1, 500)];
        let candidate = vec![progress(2, 500)];
        let mut elsewhere = (*plan(2, "stale")).clone();
        elsewhere.topics = vec!["nfl.other".into()];
        let got = lives(&run(Arc::new(elsewhere), live, candidate));
        let life: Vec<(AlertState, u32, u64)> = got.into_values().next().unwrap();
        assert_eq!(
            life,
            vec![(AlertState::Open, 1, 400), (AlertState::Resolved, 1, 500)]
        );
    }

    /// Version 2 opened an alert after the swap's time and resolved it at a late event's
    /// time before the swap's: its changes stay together, so it opens and ends.
    #[test]
    fn an_alert_resolved_at_a_late_events_time_still_ends() {
        let v2 = plan(2, "stale");
        let live = vec![progress(1, 500)];
        let candidate = vec![
            valued(&v2, 300),
            alerts_msg(2, stale(&v2, 600, None)),
            alerts_msg(2, stale(&v2, 600, Some(450))),
            progress(2, 500),
        ];
        let got = lives(&run(plan(2, "stale"), live, candidate));
        let life: Vec<(AlertState, u32, u64)> = got.into_values().next().unwrap();
        assert_eq!(
            life,
            vec![(AlertState::Open, 2, 600), (AlertState::Resolved, 2, 450)]
        );
    }

    /// After a restart, an alert open at the checkpoint ends at a recomputed value from an
    /// event after it (read before the restart, its resolve lost with it).
    #[test]
    fn an_alert_open_at_a_restart_ends_at_a_recomputed_value_after_it() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let publisher = Publisher::new(
            Hub::new(HubConfig::default()),
            Control::new(1),
            Box::new(Alerts(seen.clone())),
        );
        let mut p = publisher.lock().unwrap();
        let v1 = plan(1, "stale");
        let model = Arc::new(Model::for_plan(&v1, &Registry::new(None)).unwrap());
        p.register(1, v1.clone(), model, VersionOutputs::default());
        let key = OpenStaleness {
            game: game(),
            detector: "stale".into(),
            opened_at: 400,
        };
        p.resume(
            "nfl_win_probability",
            &PipelineCheckpoint {
                version: 1,
                source: 0,
                done: Some(500),
                seq: 10,
                alert_seq: 1,
                partitions: Vec::new(),
                definition: None,
                finished_games: Vec::new(),
                folded_games: None,
                open_staleness: vec![key],
            },
        );
        for (time, event_at) in [(450, 400), (800, 800)] {
            p.handle(SinkMsg::Values {
                runtime: 1,
                time,
                values: vec![value(&v1, time, event_at)],
                alerts: Vec::new(),
            });
        }
        // The workers' take-up resolves it too, at the game's next fresh event: not again.
        p.handle(alerts_msg(1, stale(&v1, 400, Some(900))));
        drop(p);
        let got: Vec<(AlertState, u64, u64)> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|a| (a.state, a.seq, a.event_time_ms))
            .collect();
        assert_eq!(got, vec![(AlertState::Resolved, 2, 800)]);
    }
}
