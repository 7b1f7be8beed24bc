use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Notify;

use super::*;
use crate::alert::{AlertState, Severity};
use crate::event::Sport;
use crate::ws::protocol::ServerMessage;

mod alerts;

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
    let index = |hub: &Hub| {
        let ch = hub.channel("p").unwrap();
        let ch = lock(&ch);
        let mut by_game: Vec<(String, usize)> = ch
            .by_game
            .iter()
            .map(|(g, subs)| (g.clone(), subs.len()))
            .collect();
        by_game.sort();
        (by_game, ch.any_game.len(), ch.subscribers.len())
    };
    assert_eq!(
        index(&hub),
        (vec![("g01".into(), 1), ("g02".into(), 1)], 1, 3)
    );
    drop(one);
    drop(all);
    assert_eq!(
        index(&hub),
        (vec![("g02".into(), 1)], 0, 1),
        "a game nobody follows leaves the index"
    );
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
