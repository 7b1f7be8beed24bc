use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Notify;

use super::*;
use crate::alert::{AlertState, Severity};
use crate::event::Sport;
use crate::ws::protocol::ServerMessage;

fn delta(seq: u64, game: usize) -> Delta {
    Delta {
        seq,
        id: format!("test/{seq}"),
        pipeline: "test".into(),
        version: 1,
        sport: if game.is_multiple_of(2) {
            Sport::Nfl
        } else {
            Sport::Nba
        },
        game_id: format!("g{game:02}"),
        event_time_ms: 1000 + seq,
        event_seq: seq,
        old: None,
        new: (seq % 97) as f64 / 97.0,
        model_version: "m1".into(),
        cause: crate::delta::DeltaCause::Moved,
        changed: vec![],
        contributors: vec![],
        interval: None,
    }
}

fn deltas(from: u64, to: u64, games: usize) -> Vec<Delta> {
    (from..=to)
        .map(|s| delta(s, (s as usize) % games))
        .collect()
}

/// Drains a subscription like a writer would, applying snapshots and deltas.
fn drain(sub: &Subscription, state: &mut BTreeMap<(Sport, String), SnapshotValue>, last: &mut u64) {
    loop {
        match sub.take(7) {
            Work::Idle => return,
            Work::Resync => {
                let (ChannelSnapshot::Values(snap), _) = sub.resync() else {
                    panic!("not a delta snapshot")
                };
                *state = as_map(snap.values);
                *last = snap.seq;
            }
            Work::Frames { frames, .. } => {
                for d in frames {
                    let ServerMessage::Delta { delta, .. } =
                        serde_json::from_str(d.frame().as_str()).unwrap()
                    else {
                        panic!("not a delta frame")
                    };
                    assert!(delta.seq > *last, "seq {} after {}", delta.seq, last);
                    *last = delta.seq;
                    state
                        .entry((delta.sport, delta.game_id.clone()))
                        .and_modify(|v| v.apply(&delta))
                        .or_insert_with(|| SnapshotValue::from_delta(&delta));
                }
            }
        }
    }
}

/// Values keyed by game, after a trip through JSON (as a client sees them: serde_json's default
/// float parsing may differ from the original in the last bit).
fn as_map(values: Vec<SnapshotValue>) -> BTreeMap<(Sport, String), SnapshotValue> {
    let values: Vec<SnapshotValue> =
        serde_json::from_str(&serde_json::to_string(&values).unwrap()).unwrap();
    values
        .into_iter()
        .map(|v| ((v.sport, v.game_id.clone()), v))
        .collect()
}

#[test]
fn queue_overflow_switches_to_resync_and_stays_bounded() {
    let hub = Hub::new(HubConfig {
        queue_capacity: 10,
        history: 100,
        ..HubConfig::default()
    });
    hub.ensure_channel("p");
    let (sub, start) = hub
        .subscribe("p", Filter::all(), None, Arc::new(Notify::new()))
        .unwrap();
    assert!(matches!(start, Start::Snapshot(ref s, SnapshotReason::Subscribe) if s.seq() == 0));
    hub.publish("p", &deltas(1, 10, 3), &[]);
    assert_eq!(sub.queued(), 10);
    hub.publish("p", &deltas(11, 500, 3), &[]);
    assert!(matches!(sub.take(100), Work::Resync));
    assert_eq!(hub.resyncs(), 1);
    assert!(hub.max_queued() <= 10);
    let mut state = BTreeMap::new();
    let mut last = 0;
    drain(&sub, &mut state, &mut last);
    hub.publish("p", &deltas(501, 505, 3), &[]);
    drain(&sub, &mut state, &mut last);
    assert_eq!(last, 505);
    assert_eq!(state, as_map(hub.snapshot("p")));
}

#[test]
fn duplicates_are_skipped() {
    let hub = Hub::new(HubConfig::default());
    hub.publish("p", &deltas(1, 5, 2), &[]);
    hub.publish("p", &deltas(3, 6, 2), &[]);
    assert_eq!(hub.seq("p"), Some(6));
    assert_eq!(hub.snapshot_at("p").unwrap().values.len(), 2);
}

#[test]
fn resume_within_history_queues_missed_deltas() {
    let hub = Hub::new(HubConfig {
        queue_capacity: 100,
        history: 20,
        ..HubConfig::default()
    });
    hub.publish("p", &deltas(1, 50, 4), &[]);
    let filter: Filter = protocol::Filter {
        games: Some(vec!["g01".into()]),
        ..Default::default()
    }
    .into();
    let (sub, start) = hub
        .subscribe("p", filter.clone(), Some(40), Arc::new(Notify::new()))
        .unwrap();
    assert_eq!(start, Start::Resumed { from: 40 });
    match sub.take(100) {
        Work::Frames { frames, .. } => {
            let seqs: Vec<u64> = frames.iter().map(|d| d.seq()).collect();
            assert_eq!(seqs, vec![41, 45, 49]);
        }
        w => panic!("{w:?}"),
    }
    // Too old: the history starts at 31.
    let (_too_old, start) = hub
        .subscribe("p", filter.clone(), Some(20), Arc::new(Notify::new()))
        .unwrap();
    assert!(matches!(
        start,
        Start::Snapshot(ChannelSnapshot::Values(ref s), SnapshotReason::ResumeUnavailable)
            if s.seq == 50 && s.values.len() == 1
    ));
    // From the future (e.g. the server restarted without a checkpoint).
    let (_future, start) = hub
        .subscribe("p", filter.clone(), Some(60), Arc::new(Notify::new()))
        .unwrap();
    assert!(matches!(
        start,
        Start::Snapshot(_, SnapshotReason::ResumeUnavailable)
    ));
    // After a restart from a checkpoint (numbering restored), a resume from the future waits
    // for the deltas being recomputed, and gets only those after it.
    hub.restore_seq("p", 50);
    let (ahead, start) = hub
        .subscribe("p", filter, Some(53), Arc::new(Notify::new()))
        .unwrap();
    assert_eq!(start, Start::Resumed { from: 53 });
    hub.publish(
        "p",
        &(51..=58).map(|i| delta(i, 1)).collect::<Vec<_>>(),
        &[],
    );
    match ahead.take(100) {
        Work::Frames { frames, .. } => {
            let seqs: Vec<u64> = frames.iter().map(|d| d.seq()).collect();
            assert_eq!(seqs, vec![54, 55, 56, 57, 58]);
        }
        w => panic!("{w:?}"),
    }
    drop(ahead);
    assert_eq!(hub.subscriber_count(), 3);
    drop(sub);
    assert_eq!(hub.subscriber_count(), 2);
}

#[test]
fn unknown_channel_is_refused() {
    let hub = Hub::new(HubConfig::default());
    let err = hub
        .subscribe("nope", Filter::all(), None, Arc::new(Notify::new()))
        .unwrap_err();
    assert_eq!(err, SubscribeError::UnknownChannel("nope".into()));
}

#[test]
fn progress_is_coalesced_and_follows_the_queue() {
    let hub = Hub::new(HubConfig::default());
    hub.ensure_channel("p");
    let (sub, _) = hub
        .subscribe("p", Filter::all(), None, Arc::new(Notify::new()))
        .unwrap();
    hub.publish("p", &deltas(1, 3, 2), &[]);
    hub.progress("p", 10);
    hub.progress("p", 20);
    match sub.take(2) {
        Work::Frames { progress, more, .. } => assert_eq!((progress, more), (None, true)),
        w => panic!("{w:?}"),
    }
    match sub.take(2) {
        Work::Frames {
            frames,
            progress,
            more,
        } => assert_eq!((frames.len(), progress, more), (1, Some(20), false)),
        w => panic!("{w:?}"),
    }
    assert!(matches!(sub.take(2), Work::Idle));
}

/// Subscribing while another thread publishes: snapshot + queued deltas always reconstruct the
/// hub's state, with no gap or duplicate (the seq assertion in `drain`).
#[test]
fn subscribe_during_publish_is_consistent() {
    let hub = Hub::new(HubConfig {
        queue_capacity: 1_000_000,
        history: 0,
        ..HubConfig::default()
    });
    hub.ensure_channel("p");
    let publisher = {
        let hub = Arc::clone(&hub);
        std::thread::spawn(move || {
            for b in 0..1000u64 {
                hub.publish("p", &deltas(b * 10 + 1, b * 10 + 10, 7), &[]);
            }
        })
    };
    let mut subs = Vec::new();
    for _ in 0..50 {
        let (sub, start) = hub
            .subscribe("p", Filter::all(), None, Arc::new(Notify::new()))
            .unwrap();
        let Start::Snapshot(ChannelSnapshot::Values(snap), _) = start else {
            panic!()
        };
        subs.push((sub, as_map(snap.values), snap.seq));
        std::thread::yield_now();
    }
    publisher.join().unwrap();
    for (sub, mut state, mut last) in subs {
        drain(&sub, &mut state, &mut last);
        assert_eq!(last, 10_000);
        assert_eq!(state, as_map(hub.snapshot("p")));
    }
}

// Alerts channels (issue 5).

fn alert(seq: u64, game: usize, detector: &str, state: AlertState, severity: Severity) -> Alert {
    let sport = if game.is_multiple_of(2) {
        Sport::Nfl
    } else {
        Sport::Nba
    };
    let game_id = format!("g{game:02}");
    // One alert per (game, detector) in these tests.
    let opened_at_ms = 1000 + game as u64;
    Alert {
        seq,
        id: format!("test/{detector}/{sport}/{game_id}/{opened_at_ms}"),
        pipeline: "test".into(),
        version: 1,
        detector: detector.into(),
        kind: "jump".into(),
        sport,
        game_id,
        state,
        severity,
        event_time_ms: opened_at_ms + seq,
        opened_at_ms,
        message: format!("{detector} {state:?}"),
        evidence: crate::alert::Evidence {
            value: 0.3,
            threshold: 0.2,
            score: None,
            baseline: None,
            window: "last 5 plays".into(),
        },
    }
}

fn filter(sports: Option<Vec<Sport>>, severities: Option<Vec<Severity>>) -> Filter {
    protocol::Filter {
        sports,
        games: None,
        severities,
    }
    .into()
}

fn alert_snapshot(start: Start) -> AlertSnapshot {
    match start {
        Start::Snapshot(ChannelSnapshot::Alerts(s), _) => s,
        other => panic!("expected an alert snapshot, got {other:?}"),
    }
}

/// The alerts a subscription's queue holds, decoded from their frames.
fn taken_alerts(sub: &Subscription) -> Vec<Alert> {
    match sub.take(usize::MAX) {
        Work::Idle => Vec::new(),
        Work::Frames {
            frames, progress, ..
        } => {
            assert_eq!(progress, None, "alerts channels have no progress");
            frames
                .iter()
                .map(
                    |f| match serde_json::from_str(f.frame().as_str()).unwrap() {
                        ServerMessage::Alert { alert, .. } => alert,
                        other => panic!("not an alert frame: {other:?}"),
                    },
                )
                .collect()
        }
        Work::Resync => panic!("unexpected resync"),
    }
}

fn ids(alerts: &[Alert]) -> Vec<(&str, u64)> {
    alerts.iter().map(|a| (a.id.as_str(), a.seq)).collect()
}

#[test]
fn alert_snapshot_holds_the_latest_change_of_each_open_alert() {
    use AlertState::*;
    use Severity::*;
    let hub = Hub::new(HubConfig::default());
    hub.publish_alerts(
        "a",
        &[
            alert(1, 0, "jump", Open, Warning),
            alert(2, 1, "jump", Open, Info),
            alert(3, 2, "jump", Open, Warning),
            alert(4, 0, "jump", Escalated, Critical),
            alert(5, 1, "jump", Resolved, Info),
            alert(6, 3, "jump", Open, Critical),
            alert(7, 3, "jump", Retracted, Critical),
            alert(8, 2, "ewma", Open, Info),
        ],
    );
    assert_eq!(hub.kind("a"), Some(ChannelKind::Alerts));
    assert_eq!(hub.seq("a"), Some(8));
    let snap = hub.alert_snapshot_at("a").unwrap();
    assert_eq!(snap.seq, 8);
    // Ordered by sport (nfl before nba), game id, then alert id; g01 and g03 have ended.
    assert_eq!(
        ids(&snap.alerts),
        vec![
            ("test/jump/nfl/g00/1000", 4),
            ("test/ewma/nfl/g02/1002", 8),
            ("test/jump/nfl/g02/1002", 3),
        ]
    );
    assert_eq!(snap.alerts[0].state, Escalated);
    // A delta snapshot is not what an alerts channel has.
    assert_eq!(hub.snapshot_at("a"), None);

    let wake = || Arc::new(Notify::new());
    let (_s, start) = hub
        .subscribe("a", filter(None, Some(vec![Warning])), None, wake())
        .unwrap();
    assert!(matches!(
        start,
        Start::Snapshot(_, SnapshotReason::Subscribe)
    ));
    assert_eq!(
        ids(&alert_snapshot(start).alerts),
        vec![("test/jump/nfl/g02/1002", 3)],
        "g00's alert escalated out of the set"
    );
    let (_s, start) = hub
        .subscribe(
            "a",
            filter(Some(vec![Sport::Nfl]), Some(vec![Info, Critical])),
            None,
            wake(),
        )
        .unwrap();
    assert_eq!(
        ids(&alert_snapshot(start).alerts),
        vec![("test/jump/nfl/g00/1000", 4), ("test/ewma/nfl/g02/1002", 8)]
    );
    let (_s, start) = hub
        .subscribe("a", filter(Some(vec![Sport::Nba]), None), None, wake())
        .unwrap();
    assert!(alert_snapshot(start).alerts.is_empty());
}

#[test]
fn severity_filter_is_a_set_and_sends_the_change_that_leaves_it() {
    use AlertState::*;
    use Severity::*;
    let hub = Hub::new(HubConfig::default());
    hub.ensure_alert_channel("a");
    let subscribe = |severities| {
        hub.subscribe(
            "a",
            filter(None, Some(severities)),
            None,
            Arc::new(Notify::new()),
        )
        .unwrap()
        .0
    };
    let warning = subscribe(vec![Warning]);
    let critical = subscribe(vec![Critical]);
    let info_critical = subscribe(vec![Info, Critical]);
    hub.publish_alerts(
        "a",
        &[
            alert(1, 0, "jump", Open, Info),
            alert(2, 0, "jump", Escalated, Warning),
            alert(3, 0, "jump", Escalated, Critical),
            alert(4, 0, "jump", Resolved, Critical),
            alert(5, 1, "jump", Open, Warning),
            alert(6, 1, "jump", Retracted, Warning),
        ],
    );
    let seqs =
        |sub: &Subscription| -> Vec<u64> { taken_alerts(sub).iter().map(|a| a.seq).collect() };
    // Warning: its changes, and the escalation to critical that takes g00's alert out of the set.
    assert_eq!(seqs(&warning), vec![2, 3, 5, 6]);
    // Critical: not the info or warning ones; the alert appears when it escalates to critical.
    assert_eq!(seqs(&critical), vec![3, 4]);
    // Info and critical: the escalation to warning leaves the set, the next one comes back.
    assert_eq!(seqs(&info_critical), vec![1, 2, 3, 4]);
}

#[test]
fn alert_resume_within_history_and_duplicates() {
    use AlertState::*;
    use Severity::*;
    let hub = Hub::new(HubConfig {
        queue_capacity: 100,
        history: 4,
        ..HubConfig::default()
    });
    let all: Vec<Alert> = (1..=8)
        .map(|s| {
            let state = if s % 2 == 1 { Open } else { Resolved };
            alert(s, (s as usize - 1) / 2, "jump", state, Warning)
        })
        .collect();
    hub.publish_alerts("a", &all[..6]);
    // A repeat of 5 and 6 (e.g. a publisher retry) is skipped; 7 and 8 are new.
    hub.publish_alerts("a", &all[4..]);
    assert_eq!(hub.seq("a"), Some(8));
    assert!(hub.open_alerts("a").is_empty());

    let (sub, start) = hub
        .subscribe("a", Filter::all(), Some(5), Arc::new(Notify::new()))
        .unwrap();
    assert_eq!(start, Start::Resumed { from: 5 });
    assert_eq!(
        taken_alerts(&sub).iter().map(|a| a.seq).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
    // The history (4) starts at 5: resuming after 3 would miss 4.
    let (_old, start) = hub
        .subscribe("a", Filter::all(), Some(3), Arc::new(Notify::new()))
        .unwrap();
    assert!(matches!(
        start,
        Start::Snapshot(ChannelSnapshot::Alerts(ref s), SnapshotReason::ResumeUnavailable)
            if s.seq == 8 && s.alerts.is_empty()
    ));
}

#[test]
fn channel_kinds_do_not_mix() {
    use AlertState::*;
    use Severity::*;
    let hub = Hub::new(HubConfig::default());
    hub.publish("d", &deltas(1, 3, 2), &[]);
    hub.publish_alerts("a", &[alert(1, 0, "jump", Open, Critical)]);
    // Published to the other kind: dropped.
    hub.publish_alerts("d", &[alert(1, 0, "jump", Open, Critical)]);
    hub.publish("a", &deltas(2, 3, 2), &[]);
    hub.progress("a", 99);
    assert_eq!((hub.seq("d"), hub.seq("a")), (Some(3), Some(1)));
    assert_eq!(hub.kind("d"), Some(ChannelKind::Deltas));
    assert!(hub.open_alerts("d").is_empty());
    assert_eq!(hub.open_alerts("a").len(), 1);

    let wake = || Arc::new(Notify::new());
    let err = hub
        .subscribe("d", filter(None, Some(vec![Critical])), None, wake())
        .unwrap_err();
    assert_eq!(err, SubscribeError::SeveritiesOnDeltas("d".into()));
    // No progress on an alerts channel, even when the engine reports some.
    let (sub, _) = hub.subscribe("a", Filter::all(), None, wake()).unwrap();
    hub.progress("a", 100);
    assert!(matches!(sub.take(10), Work::Idle));
}

#[test]
fn alert_queue_overflow_resyncs_with_every_open_alert() {
    use AlertState::*;
    use Severity::*;
    let hub = Hub::new(HubConfig {
        queue_capacity: 3,
        history: 100,
        ..HubConfig::default()
    });
    hub.ensure_alert_channel("a");
    let (sub, _) = hub
        .subscribe(
            "a",
            filter(None, Some(vec![Critical])),
            None,
            Arc::new(Notify::new()),
        )
        .unwrap();
    // Ten games open at critical, then the even ones resolve: 15 changes, over capacity 3.
    let mut changes: Vec<Alert> = (0..10)
        .map(|g| alert(g as u64 + 1, g, "jump", Open, Critical))
        .collect();
    changes.extend((0..5).map(|i| alert(11 + i as u64, 2 * i, "jump", Resolved, Critical)));
    hub.publish_alerts("a", &changes);
    assert!(matches!(sub.take(10), Work::Resync));
    assert_eq!(hub.resyncs(), 1);
    assert!(hub.max_queued() <= 3);
    let (ChannelSnapshot::Alerts(snap), progress) = sub.resync() else {
        panic!("not an alert snapshot")
    };
    assert_eq!(progress, None);
    assert_eq!(snap.seq, 15);
    let mut games: Vec<&str> = snap.alerts.iter().map(|a| a.game_id.as_str()).collect();
    games.sort();
    assert_eq!(games, vec!["g01", "g03", "g05", "g07", "g09"]);
    // And the changes after it follow.
    hub.publish_alerts("a", &[alert(16, 1, "jump", Resolved, Critical)]);
    assert_eq!(
        ids(&taken_alerts(&sub)),
        vec![("test/jump/nba/g01/1001", 16)]
    );
}

/// A client's alerts, kept by the protocol's rule: the latest change received per alert, while
/// it is open or escalated and its severity is in the filter's set.
#[derive(Default)]
struct AlertMirror {
    alerts: BTreeMap<String, Alert>,
    last: u64,
    resyncs: usize,
}

impl AlertMirror {
    fn reset(&mut self, snap: AlertSnapshot) {
        assert!(
            snap.seq >= self.last,
            "snapshot {} after {}",
            snap.seq,
            self.last
        );
        self.alerts = snap.alerts.into_iter().map(|a| (a.id.clone(), a)).collect();
        self.last = snap.seq;
    }

    fn apply(&mut self, a: Alert, filter: &Filter) {
        assert!(a.seq > self.last, "alert {} after {}", a.seq, self.last);
        self.last = a.seq;
        if matches!(a.state, AlertState::Open | AlertState::Escalated) && filter.matches_alert(&a) {
            self.alerts.insert(a.id.clone(), a);
        } else {
            self.alerts.remove(&a.id);
        }
    }

    /// Takes up to `max` frames (or a resync) from the subscription, like a slow writer.
    /// Returns false when there was nothing to take.
    fn take(&mut self, sub: &Subscription, max: usize, filter: &Filter) -> bool {
        match sub.take(max) {
            Work::Idle => return false,
            Work::Resync => {
                let (ChannelSnapshot::Alerts(snap), _) = sub.resync() else {
                    panic!("not an alert snapshot")
                };
                self.resyncs += 1;
                self.reset(snap);
            }
            Work::Frames { frames, .. } => {
                for f in frames {
                    let ServerMessage::Alert { alert, .. } =
                        serde_json::from_str(f.frame().as_str()).unwrap()
                    else {
                        panic!("not an alert frame")
                    };
                    self.apply(alert, filter);
                }
            }
        }
        true
    }
}

/// Random alert lifecycles: per (game, detector), open at some severity, escalate (severity
/// only rises), resolve or retract; a later open is a new alert.
fn lifecycles(ops: &[(usize, usize, u8, u8)]) -> Vec<Alert> {
    use AlertState::*;
    let severities = [Severity::Info, Severity::Warning, Severity::Critical];
    let mut open: BTreeMap<(usize, usize), (u64, Severity)> = BTreeMap::new();
    let mut out: Vec<Alert> = Vec::new();
    for (i, &(game, det, action, sev)) in ops.iter().enumerate() {
        let seq = out.len() as u64 + 1;
        let detector = ["jump", "ewma"][det];
        let (state, severity, opened_at) = match open.get(&(game, det)).copied() {
            None => {
                let s = severities[sev as usize % 3];
                open.insert((game, det), (i as u64, s));
                (Open, s, i as u64)
            }
            Some((opened_at, was)) => match action % 3 {
                0 if was < Severity::Critical => {
                    let s = severities[(sev as usize % 3).max(was as usize + 1)];
                    open.insert((game, det), (opened_at, s));
                    (Escalated, s, opened_at)
                }
                0 => continue,
                1 => {
                    open.remove(&(game, det));
                    (Resolved, was, opened_at)
                }
                _ => {
                    open.remove(&(game, det));
                    (Retracted, was, opened_at)
                }
            },
        };
        let mut a = alert(seq, game, detector, state, severity);
        a.opened_at_ms = opened_at;
        a.id = format!("test/{detector}/{}/{}/{opened_at}", a.sport, a.game_id);
        out.push(a);
    }
    out
}

/// The open alerts a filter selects, recomputed from every change published.
fn open_from_scratch(all: &[Alert], filter: &Filter) -> BTreeMap<String, Alert> {
    let mut latest: BTreeMap<String, Alert> = BTreeMap::new();
    for a in all {
        latest.insert(a.id.clone(), a.clone());
    }
    latest
        .into_iter()
        .filter(|(_, a)| {
            matches!(a.state, AlertState::Open | AlertState::Escalated) && filter.matches_alert(a)
        })
        .collect()
}

proptest::proptest! {
    /// Whatever the interleaving of publishing and a slow reader (overflows, resyncs), a
    /// subscriber's alerts equal the open alerts its filter selects, recomputed from scratch:
    /// it never misses an open alert, nor holds one that ended.
    #[test]
    fn a_slow_subscriber_never_loses_an_open_alert(
        ops in proptest::collection::vec((0usize..4, 0usize..2, 0u8..3, 0u8..3), 1..200),
        batches in proptest::collection::vec((1usize..12, 0usize..6), 1..40),
        capacity in 1usize..8,
        sports in proptest::option::of(proptest::sample::subsequence(vec![Sport::Nfl, Sport::Nba], 1..=2)),
        severities in proptest::option::of(proptest::sample::subsequence(
            vec![Severity::Info, Severity::Warning, Severity::Critical], 1..=3)),
    ) {
        let all = lifecycles(&ops);
        let hub = Hub::new(HubConfig {
            queue_capacity: capacity,
            history: 16,
            ..HubConfig::default()
        });
        hub.ensure_alert_channel("a");
        let filter = filter(sports, severities);
        let (sub, start) = hub
            .subscribe("a", filter.clone(), None, Arc::new(Notify::new()))
            .unwrap();
        let mut mirror = AlertMirror::default();
        mirror.reset(alert_snapshot(start));
        let mut published = 0;
        for &(n, reads) in batches.iter().cycle() {
            if published == all.len() {
                break;
            }
            let to = (published + n).min(all.len());
            hub.publish_alerts("a", &all[published..to]);
            published = to;
            mirror.take(&sub, reads, &filter);
        }
        while mirror.take(&sub, 5, &filter) {}
        proptest::prop_assert_eq!(&mirror.alerts, &open_from_scratch(&all, &filter));
        // A late subscriber's snapshot is the same set.
        let (_late, start) = hub
            .subscribe("a", filter.clone(), None, Arc::new(Notify::new()))
            .unwrap();
        let late: BTreeMap<String, Alert> = alert_snapshot(start)
            .alerts
            .into_iter()
            .map(|a| (a.id.clone(), a))
            .collect();
        proptest::prop_assert_eq!(&late, &mirror.alerts);
    }
}

/// The frames a subscription holds now (after its start), by seq.
fn taken_seqs(sub: &Subscription) -> Vec<u64> {
    let mut out = Vec::new();
    loop {
        match sub.take(1000) {
            Work::Frames { frames, .. } => out.extend(frames.iter().map(|f| f.seq())),
            Work::Idle => return out,
            _ => {}
        }
    }
}

#[test]
fn fan_out_reaches_exactly_the_subscribers_of_each_game() {
    let hub = Hub::new(HubConfig::default());
    hub.ensure_channel("p");
    let games = |ids: &[&str]| -> Filter {
        protocol::Filter {
            games: Some(ids.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
        .into()
    };
    let subscribe = |f: Filter| {
        hub.subscribe("p", f, None, Arc::new(Notify::new()))
            .unwrap()
            .0
    };
    let (one, two, both, all) = (
        subscribe(games(&["g01"])),
        subscribe(games(&["g02"])),
        subscribe(games(&["g01", "g02"])),
        subscribe(Filter::all()),
    );
    for s in [&one, &two, &both, &all] {
        let _ = s.take(1000); // the snapshot
    }
    // Delta s is about game s mod 4: g01 has seqs 1, 5, 9; g02 has 2, 6, 10.
    hub.publish("p", &deltas(1, 10, 4), &[]);
    assert_eq!(taken_seqs(&one), vec![1, 5, 9]);
    assert_eq!(taken_seqs(&two), vec![2, 6, 10]);
    assert_eq!(
        taken_seqs(&both),
        vec![1, 2, 5, 6, 9, 10],
        "once each, in order"
    );
    assert_eq!(taken_seqs(&all), (1..=10).collect::<Vec<_>>());
    // A subscriber gone is gone from the index too.
    drop(both);
    assert_eq!(hub.subscriber_count(), 3);
    hub.publish("p", &deltas(11, 14, 4), &[]);
    assert_eq!(taken_seqs(&one), vec![13]);
    assert_eq!(taken_seqs(&two), vec![14]);
    assert_eq!(taken_seqs(&all), vec![11, 12, 13, 14]);
}

fn game(g: usize) -> GameKey {
    let d = delta(1, g);
    GameKey {
        sport: d.sport,
        game_id: d.game_id,
    }
}

fn snapshot_games(hub: &Hub) -> Vec<String> {
    let mut ids: Vec<String> = hub.snapshot("p").into_iter().map(|v| v.game_id).collect();
    ids.sort();
    ids
}

/// Snapshots hold every open game and the latest `released_games` released ones: memory
/// follows the games in progress, not how long the channel has run.
#[test]
fn snapshots_forget_the_earliest_released_games_beyond_the_bound() {
    let hub = Hub::new(HubConfig {
        released_games: 2,
        ..HubConfig::default()
    });
    hub.ensure_channel("p");
    hub.publish("p", &deltas(1, 5, 5), &[]);
    assert_eq!(snapshot_games(&hub), ["g00", "g01", "g02", "g03", "g04"]);
    hub.release("p", &[game(0), game(1)]);
    assert_eq!(
        snapshot_games(&hub).len(),
        5,
        "two released games are within the bound"
    );
    // Released again (a new version taking over re-sends its releases): nothing changes.
    hub.release("p", &[game(1), game(0)]);
    assert_eq!(snapshot_games(&hub).len(), 5);
    // A game without a value is not held, so not counted.
    hub.release("p", &[game(9)]);
    assert_eq!(snapshot_games(&hub).len(), 5);
    hub.release("p", &[game(3)]);
    assert_eq!(snapshot_games(&hub), ["g01", "g02", "g03", "g04"]);
    hub.release("p", &[game(2), game(4)]);
    assert_eq!(snapshot_games(&hub), ["g02", "g04"]);
    // The numbering and the history are untouched: a resume still gets the missed frames.
    assert_eq!(hub.seq("p"), Some(5));
}
