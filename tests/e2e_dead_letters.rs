//! Bad input is rejected with a reason to the dead-letter topic, with its source topic,
//! partition and offset and its original bytes, and counted; every good event's output is
//! the same as without it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, Producer};

/// Bad records, each with the reason it must be rejected for and the game whose partition it
/// goes to.
fn bad_records(events: &[sideline::event::GameEvent]) -> Vec<(String, Vec<u8>, &'static str)> {
    let first = &events[0];
    let key = format!("nfl:{}", first.game_id);
    let good = serde_json::to_string(first).unwrap();
    let mut backwards = first.clone();
    backwards.seq = 0; // below the game's first seq, sent after it
    let mut oversized = first.clone();
    oversized.seq = 1_000_000;
    oversized.description = Some("x".repeat(70_000));
    vec![
        (
            key.clone(),
            b"{\"sport\": \"nfl\", \"game_id\": ".to_vec(),
            "malformed_json",
        ),
        (
            key.clone(),
            good.replace("\"nfl\"", "\"curling\"").into_bytes(),
            "unknown_sport",
        ),
        (
            key.clone(),
            good.replace(
                &format!(
                    "\"kind\":\"{}\"",
                    serde_json::to_value(first.kind).unwrap().as_str().unwrap()
                ),
                "\"kind\":\"huddle\"",
            )
            .into_bytes(),
            "unknown_kind",
        ),
        (
            key.clone(),
            good.replace(
                &format!("\"clock_ms\":{}", first.clock_ms),
                "\"clock_ms\":-1",
            )
            .into_bytes(),
            "invalid_value",
        ),
        (
            key.clone(),
            serde_json::to_vec(&backwards).unwrap(),
            "sequence_regressed",
        ),
        (key, serde_json::to_vec(&oversized).unwrap(), "oversized"),
    ]
}

#[test]
fn bad_records_go_to_dead_letters_and_change_nothing_else() {
    let events = fixture_events();
    let lines = fixture_lines();
    let bad = bad_records(&events);
    let topic = "nfl.dirty";
    let dlq = "nfl.dirty.dead-letters";
    let cluster = Cluster::mock(&[(topic, 4), (dlq, 1)]);

    // Good lines keyed by game, with the bad records interleaved after the first game's first
    // event (so "sequence_regressed" really goes backwards).
    let p: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &cluster.brokers)
        .create()
        .unwrap();
    let first_game = events[0].game_id.clone();
    let mut sent_bad = false;
    for (line, ev) in lines.iter().zip(&events) {
        let key = format!("nfl:{}", ev.game_id);
        p.send(BaseRecord::to(topic).key(&key).payload(line))
            .unwrap();
        if !sent_bad && ev.game_id == first_game {
            for (k, bytes, _) in &bad {
                p.send(BaseRecord::to(topic).key(k).payload(bytes)).unwrap();
            }
            sent_bad = true;
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(10)).unwrap();

    let cfg = config(&cluster.brokers, topic, 2);
    let server = start(&cfg, &[nfl_pipeline(&[topic])]);
    let (stats, log) = run_engine(&server);
    server.shutdown();
    assert_eq!(stats.rejected as usize, bad.len());
    assert_eq!(stats.accepted as usize, lines.len());

    // The good events' output is exactly the offline computation's.
    let mut history: BTreeMap<_, Vec<(u64, f64)>> = BTreeMap::new();
    for d in &log {
        history
            .entry(sideline::event::GameKey {
                sport: d.sport,
                game_id: d.game_id.clone(),
            })
            .or_default()
            .push((d.event_time_ms, d.new));
    }
    assert_eq!(history, offline_deltas(&nfl_plan(), &events));

    // Every bad record is in the dead-letter topic, bytes unchanged, with source and reason.
    let mut got: Vec<(Vec<u8>, String, String, String)> = Vec::new();
    for r in read_topic(&cluster.brokers, dlq, 1, bad.len()) {
        let h = &r.headers;
        assert_eq!(h["sideline.topic"], topic);
        assert!(h["sideline.partition"].parse::<i32>().unwrap() < 4);
        assert!(h["sideline.offset"].parse::<i64>().unwrap() >= 0);
        assert!(!h["sideline.detail"].is_empty());
        got.push((
            r.payload.clone(),
            h["sideline.reason"].clone(),
            h["sideline.partition"].clone(),
            h["sideline.offset"].clone(),
        ));
    }
    let mut want: Vec<(Vec<u8>, String)> = bad
        .iter()
        .map(|(_, b, r)| (b.clone(), r.to_string()))
        .collect();
    let mut have: Vec<(Vec<u8>, String)> = got
        .iter()
        .map(|(b, r, _, _)| (b.clone(), r.clone()))
        .collect();
    want.sort();
    have.sort();
    assert_eq!(have, want);
    // All came from the first game's partition, at distinct offsets.
    let parts: std::collections::BTreeSet<_> = got.iter().map(|g| g.2.clone()).collect();
    let offsets: std::collections::BTreeSet<_> = got.iter().map(|g| g.3.clone()).collect();
    assert_eq!((parts.len(), offsets.len()), (1, bad.len()));
}
