//! `[time] read-ahead`: a partition more than that far past the frontier waits while the
//! partition holding the frontier back still has records, so a backlog does not wait in
//! memory whole. Holding back changes no delta, and never waits for an idle timeout: the
//! runs below keep their partitions from ever going idle (`idle-timeout = "1h"`), so a
//! partition read to its end that held the others back would stop the run for an hour.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Runs the fixture through 4 partitions with this `read-ahead`; the stats and the delta log.
fn run(read_ahead: &str, workers: usize) -> (sideline::engine::EngineStats, Vec<u8>) {
    let topic = format!("nfl.ahead.{}.{workers}", read_ahead.replace(' ', ""));
    let dead = format!("{topic}.dead-letters");
    let cluster = Cluster::mock(&[(&topic, 4), (&dead, 1)]);
    let lines = fixture_lines();
    produce_all(&cluster.brokers, &topic, &lines);
    let text = nfl_pipeline(&[&topic]);
    let idle = "idle-timeout = \"2s\"";
    assert!(
        text.contains(idle),
        "the shipped pipeline sets its idle timeout"
    );
    let text = text.replace(
        idle,
        &format!("idle-timeout = \"1h\"\nread-ahead = \"{read_ahead}\""),
    );
    let app = start(&config(&cluster.brokers, &topic, workers), &[text]);
    let (tx, rx) = mpsc::channel();
    let runner = app.clone();
    std::thread::spawn(move || {
        let _ = tx.send(run_engine(&runner));
    });
    let (stats, log) = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("read-ahead {read_ahead:?}: the replay did not finish in 2 minutes (waiting for a partition's idle timeout?)"));
    app.shutdown();
    assert_eq!(
        (stats.accepted as usize, stats.rejected, stats.late),
        (lines.len(), 0, 0)
    );
    (stats, log_bytes(&log))
}

#[test]
fn holding_partitions_back_changes_no_delta_and_never_waits_for_idle() {
    // 1,000,000 days past the frontier is past any of the fixture's event times, even with
    // the frontier still at 0 before every partition has an event.
    let (free, free_log) = run("1000000d", 2);
    assert_eq!(free.held, 0, "nothing is a million days ahead");
    assert!(!free_log.is_empty());
    for (ahead, workers) in [("1m", 2), ("0s", 1), ("0s", 2)] {
        let (held, log) = run(ahead, workers);
        assert!(
            held.held > 0,
            "read-ahead {ahead:?}, {workers} workers: no partition was ever held back"
        );
        assert!(
            log == free_log,
            "read-ahead {ahead:?}, {workers} workers: the delta log differs ({} vs {} bytes)",
            log.len(),
            free_log.len()
        );
    }
}

/// A partition held back is not a stalled feed: its games' staleness is judged from when it
/// is read again. Game B's events are 10 days (event time) ahead of game A's, on another
/// partition: once B's first records are read, B waits while A's partition, read in small
/// fetches 200 ms apart, still has records (seconds). With a 1 s staleness gap, B would go
/// stale while held, if held partitions counted.
#[test]
fn a_held_partition_s_games_do_not_go_stale() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use sideline::alert::AlertState;

    let topic = "nfl.ahead.stale";
    let cluster = Cluster::mock(&[(topic, 2), ("nfl.ahead.stale.dead-letters", 1)]);
    let events = fixture_events();
    let first = events[0].game_id.clone();
    let second = events
        .iter()
        .map(|e| e.game_id.clone())
        .find(|g| *g != first)
        .expect("two games");
    const TEN_DAYS_MS: u64 = 10 * 86_400_000;
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &cluster.brokers)
        .set("batch.size", "4096")
        .create()
        .unwrap();
    let mut produced = [0usize; 2];
    for (partition, game, shift) in [(0, &first, 0), (1, &second, TEN_DAYS_MS)] {
        for e in events.iter().filter(|e| e.game_id == *game) {
            let mut e = e.clone();
            e.event_time_ms += shift;
            let line = serde_json::to_string(&e).unwrap();
            producer
                .send(
                    BaseRecord::to(topic)
                        .partition(partition)
                        .key(game.as_str())
                        .payload(&line),
                )
                .unwrap();
            produced[partition as usize] += 1;
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    // Every fetch takes 200 ms more and returns about 4 KB a partition: A's partition takes
    // seconds to read.
    cluster
        .mock
        .broker_round_trip_time(1, Duration::from_millis(200))
        .unwrap();
    let text = format!(
        "{}\n[[detector]]\nname = \"stale\"\nkind = \"staleness\"\ngap = \"1s\"\n",
        nfl_pipeline(&[topic]).replace(
            "idle-timeout = \"2s\"",
            "idle-timeout = \"1h\"\nread-ahead = \"1m\""
        )
    );
    let mut cfg = config(&cluster.brokers, topic, 1);
    cfg.kafka
        .consumer_options
        .insert("max.partition.fetch.bytes".into(), "4096".into());
    let app = start(&cfg, &[text]);
    let capture = Capture::default();
    let started = std::time::Instant::now();
    let stats = app.run_engine_with(Box::new(capture.clone())).unwrap();
    let took = started.elapsed();
    app.shutdown();
    let alerts = capture.0.lock().unwrap().1.clone();
    assert_eq!(stats.accepted as usize, produced.iter().sum::<usize>());
    assert!(stats.held > 0, "game B's partition was never held back");
    assert!(
        took > Duration::from_secs(2),
        "the replay took {took:?}: too short for a 1 s gap to say anything"
    );
    let opened: Vec<&str> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Open)
        .map(|a| a.game_id.as_str())
        .collect();
    assert!(
        opened.is_empty(),
        "games went stale while their partition was held back: {opened:?}"
    );
}
