use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Notify;

use super::*;
use crate::ws::protocol::ServerMessage;

fn delta(seq: u64, game: usize) -> Delta {
    Delta {
        seq,
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
                let (snap, _) = sub.resync();
                *state = as_map(snap.values);
                *last = snap.seq;
            }
            Work::Deltas { deltas, .. } => {
                for d in deltas {
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
    });
    hub.ensure_channel("p");
    let (sub, start) = hub
        .subscribe("p", Filter::all(), None, Arc::new(Notify::new()))
        .unwrap();
    assert!(matches!(start, Start::Snapshot(ref s, SnapshotReason::Subscribe) if s.seq == 0));
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
    });
    hub.publish("p", &deltas(1, 50, 4), &[]);
    let filter: Filter = protocol::Filter {
        sports: None,
        games: Some(vec!["g01".into()]),
    }
    .into();
    let (sub, start) = hub
        .subscribe("p", filter.clone(), Some(40), Arc::new(Notify::new()))
        .unwrap();
    assert_eq!(start, Start::Resumed { from: 40 });
    match sub.take(100) {
        Work::Deltas { deltas, .. } => {
            let seqs: Vec<u64> = deltas.iter().map(|d| d.seq()).collect();
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
        Start::Snapshot(ref s, SnapshotReason::ResumeUnavailable) if s.seq == 50 && s.values.len() == 1
    ));
    // From the future (e.g. the server restarted).
    let (_future, start) = hub
        .subscribe("p", filter, Some(60), Arc::new(Notify::new()))
        .unwrap();
    assert!(matches!(
        start,
        Start::Snapshot(_, SnapshotReason::ResumeUnavailable)
    ));
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
        Work::Deltas { progress, more, .. } => assert_eq!((progress, more), (None, true)),
        w => panic!("{w:?}"),
    }
    match sub.take(2) {
        Work::Deltas {
            deltas,
            progress,
            more,
        } => assert_eq!((deltas.len(), progress, more), (1, Some(20), false)),
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
        let Start::Snapshot(snap, _) = start else {
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
