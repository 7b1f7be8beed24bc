//! Alerts channels (issue 5): snapshots of the open alerts, severity filters, resume,
//! overflow, and random lifecycles against a from-scratch mirror.

use super::*;

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
