//! A producer that re-sends part of the feed changes nothing downstream, and poison records
//! mixed into the feed go to the dead-letter topic, one for one, with offset and reason, while
//! every delta stays byte-identical to the clean run's.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::TopicPartitionList;
use sideline::event::GameEvent;

/// Produces `records` (key, bytes) in order.
fn produce(brokers: &str, topic: &str, records: &[(String, Vec<u8>)]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (key, bytes) in records {
        loop {
            match p.send(BaseRecord::to(topic).key(key).payload(bytes)) {
                Ok(()) => break,
                Err((e, _)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "{e}"
                    );
                    p.poll(Duration::from_millis(10));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).unwrap();
}

fn key(ev: &GameEvent) -> String {
    format!("nfl:{}", ev.game_id)
}

/// The engine's delta log (as bytes) and stats over what is in `topic`.
fn engine_run(brokers: &str, topic: &str) -> (sideline::engine::EngineStats, Vec<u8>) {
    let cfg = config(brokers, topic, 2);
    let app = start(&cfg, &[nfl_pipeline(&[topic])]);
    let (stats, log) = run_engine(&app);
    app.shutdown();
    (stats, log_bytes(&log))
}

fn clean_records() -> Vec<(String, Vec<u8>)> {
    fixture_lines()
        .iter()
        .zip(fixture_events())
        .map(|(l, ev)| (key(&ev), l.clone().into_bytes()))
        .collect()
}

#[test]
fn resending_a_random_tenth_of_the_feed_changes_nothing() {
    let cluster = Cluster::mock(&[("clean", 4), ("resent", 4), ("resent.dead-letters", 1)]);
    let clean = clean_records();
    produce(&cluster.brokers, "clean", &clean);
    let (clean_stats, clean_log) = engine_run(&cluster.brokers, "clean");

    // After each record, with probability 1/10, one of the same game's records sent so far is
    // sent again, byte for byte (a producer retrying, or replaying part of its feed).
    let mut rng = rand::rngs::StdRng::seed_from_u64(10);
    let mut sent: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut dirty = Vec::new();
    let mut resent = 0;
    for (k, bytes) in &clean {
        dirty.push((k.clone(), bytes.clone()));
        let game = sent.entry(k.clone()).or_default();
        game.push(bytes.clone());
        if rng.random_bool(0.1) {
            let again = game[rng.random_range(0..game.len())].clone();
            dirty.push((k.clone(), again));
            resent += 1;
        }
    }
    assert!(resent > clean.len() / 20, "about a tenth re-sent: {resent}");
    produce(&cluster.brokers, "resent", &dirty);
    let (stats, log) = engine_run(&cluster.brokers, "resent");

    println!(
        "{} records, {resent} re-sent: {} redelivered, {} rejected, {} deltas",
        dirty.len(),
        stats.redelivered,
        stats.rejected,
        log.iter().filter(|b| **b == b'\n').count()
    );
    assert_eq!(stats.redelivered, resent as u64);
    assert_eq!(stats.rejected, 0, "a re-send is not a bad record");
    assert_eq!(stats.accepted, clean_stats.accepted);
    assert!(
        log == clean_log,
        "the delta log differs from the clean run's"
    );
}

/// A poison record for `ev`'s game: each kind of bad input in turn. The conflicting re-send
/// reuses the id of an event already sent with other content.
fn poison(i: usize, ev: &GameEvent, earlier: &GameEvent) -> (Vec<u8>, &'static str) {
    let good = serde_json::to_string(ev).unwrap();
    match i % 8 {
        0 => (good.as_bytes()[..good.len() / 2].to_vec(), "malformed_json"),
        1 => (
            good.replace("\"nfl\"", "\"curling\"").into_bytes(),
            "unknown_sport",
        ),
        2 => (
            format!("{{\"a\":{}1{}}}", "[".repeat(40), "]".repeat(40)).into_bytes(),
            "malformed_json",
        ),
        3 => {
            let mut e = ev.clone();
            e.seq = 5_000_000 + i as u64;
            e.player = Some("p".repeat(500));
            (serde_json::to_vec(&e).unwrap(), "invalid_value")
        }
        4 => {
            let mut e = ev.clone();
            e.seq = 5_000_000 + i as u64;
            e.description = Some("x".repeat(70_000));
            (serde_json::to_vec(&e).unwrap(), "oversized")
        }
        5 => (
            good.replace("\"home_score\"", "\"home_scor\"").into_bytes(),
            "schema_violation",
        ),
        6 => {
            let mut e = earlier.clone();
            e.description = Some("the same id, another play".into());
            (serde_json::to_vec(&e).unwrap(), "conflicting_resend")
        }
        _ => (vec![0xff, 0xfe, b'{'], "malformed_json"),
    }
}

#[test]
fn one_percent_poison_is_dead_lettered_one_for_one_and_changes_nothing_else() {
    let (topic, dlq) = ("poisoned", "poisoned.dead-letters");
    let cluster = Cluster::mock(&[("clean", 4), (topic, 4), (dlq, 1)]);
    let clean = clean_records();
    produce(&cluster.brokers, "clean", &clean);
    let (_, clean_log) = engine_run(&cluster.brokers, "clean");

    let events = fixture_events();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut last_of_game: BTreeMap<String, GameEvent> = BTreeMap::new();
    let mut dirty = Vec::new();
    let mut injected: Vec<(Vec<u8>, &'static str)> = Vec::new();
    for ((k, bytes), ev) in clean.iter().zip(&events) {
        dirty.push((k.clone(), bytes.clone()));
        let earlier = last_of_game
            .entry(k.clone())
            .or_insert_with(|| ev.clone())
            .clone();
        if rng.random_bool(0.01) {
            let bad = poison(injected.len(), ev, &earlier);
            dirty.push((k.clone(), bad.0.clone()));
            injected.push(bad);
        }
    }
    assert!(
        injected.len() >= 40,
        "about 1% poisoned: {}",
        injected.len()
    );
    produce(&cluster.brokers, topic, &dirty);
    let (stats, log) = engine_run(&cluster.brokers, topic);
    assert_eq!(stats.rejected as usize, injected.len());
    assert!(
        log == clean_log,
        "the delta log differs from the clean run's"
    );

    // Each poison record is in the dead-letter topic once, bytes unchanged, with its source
    // partition and offset and the reason.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cluster.brokers)
        .set("group.id", "poison-check")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(dlq, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut got: Vec<(Vec<u8>, String)> = Vec::new();
    let mut sources = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let mut h = BTreeMap::new();
                for header in m.headers().unwrap().iter() {
                    h.insert(
                        header.key.to_string(),
                        String::from_utf8_lossy(header.value.unwrap()).to_string(),
                    );
                }
                assert_eq!(h["sideline.topic"], topic);
                let offset: i64 = h["sideline.offset"].parse().unwrap();
                sources.insert((h["sideline.partition"].clone(), offset));
                assert!(!h["sideline.detail"].is_empty());
                got.push((
                    m.payload().unwrap_or_default().to_vec(),
                    h["sideline.reason"].clone(),
                ));
            }
            Some(Err(e)) => panic!("{e}"),
            None if got.len() >= injected.len() => break,
            None => {}
        }
    }
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, r) in &injected {
        *by_reason.entry(r).or_default() += 1;
    }
    println!(
        "{} records, {} poisoned ({by_reason:?}): {} dead letters",
        dirty.len(),
        injected.len(),
        got.len()
    );
    let mut want: Vec<(Vec<u8>, String)> = injected
        .iter()
        .map(|(b, r)| (b.clone(), r.to_string()))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got.len(), want.len(), "one dead letter per poison record");
    assert!(got == want, "dead letters differ from what was injected");
    assert_eq!(sources.len(), injected.len(), "each at its own offset");
}
