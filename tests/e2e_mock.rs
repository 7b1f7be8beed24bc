//! End to end through Kafka (librdkafka's mock cluster, in-process) with real WebSocket
//! clients: the fixture's real NFL games in, prediction deltas out.

mod common;

use common::*;
use sideline::ws::protocol::ServerMessage;

const SUBSCRIBE: &str = r#"{"op":"subscribe","id":"s1","channel":"nfl.win_probability"}"#;

fn got_snapshot(ms: &[ServerMessage]) -> bool {
    ms.iter()
        .any(|m| matches!(m, ServerMessage::Snapshot { .. }))
}

/// For every fixture game, snapshot + deltas over a real socket equal the offline computation
/// from the event file; the delta log is byte-identical across runs and across 1, 2 and 4
/// workers.
#[test]
fn deltas_match_offline_and_are_deterministic_across_runs_and_workers() {
    let events = fixture_events();
    let lines = fixture_lines();
    let expected = offline_deltas(&nfl_plan(), &events);
    assert!(expected.len() >= 20, "the fixture has at least 20 games");
    let mut logs: Vec<(usize, Vec<u8>)> = Vec::new();
    for (run, workers) in [1usize, 2, 2, 4].into_iter().enumerate() {
        let topic = format!("nfl.e2e.{run}");
        let cluster = Cluster::mock(&[(&topic, 4), (&format!("{topic}.dead-letters"), 1)]);
        produce_all(&cluster.brokers, &topic, &lines);
        let mut cfg = config(&cluster.brokers, &topic, workers);
        // Room for the whole replay: the reading client shares the 2 cores with an engine
        // replaying at full speed, and was at times starved past the default bound of 1,024
        // (resynchronised, so it missed deltas). Bounded queues are the next test's subject.
        cfg.server.queue_capacity = 1 << 16;
        let server = start(&cfg, &[nfl_pipeline(&[&topic])]);
        let client = Client::connect(server.ws_addr, SUBSCRIBE);
        client.wait_for("the first snapshot", got_snapshot);

        let (stats, log) = run_engine(&server);
        assert_eq!((stats.accepted as usize, stats.rejected), (lines.len(), 0));
        let last = log.last().expect("some deltas").seq;
        assert_no_gap(&log, last);
        client.wait_for_seq(last);

        let (history, current, ws_deltas) = apply(&client.messages());
        assert_eq!(ws_deltas, log, "the subscriber saw exactly the delta log");
        assert_eq!(
            history, expected,
            "run {run} ({workers} workers) differs from the offline computation"
        );
        for (game, values) in &expected {
            assert_eq!(current.get(game).copied(), values.last().map(|v| v.1));
        }

        // A subscriber arriving after the replay starts from a snapshot of the same values.
        let late = Client::connect(server.ws_addr, SUBSCRIBE);
        late.wait_for("a snapshot", got_snapshot);
        let (_, late_values, _) = apply(&late.messages());
        assert_eq!(late_values, current);

        logs.push((workers, log_bytes(&log)));
        drop((client, late));
        server.shutdown();
    }
    for (workers, bytes) in &logs[1..] {
        assert!(
            bytes == &logs[0].1,
            "the delta log with {workers} workers differs from 1 worker's"
        );
    }
}

/// A subscriber that stops reading while the games replay at full speed is held to its queue
/// bound and resynchronised; the other subscriber gets every delta, in order.
#[test]
fn a_stuck_subscriber_is_bounded_and_catches_up_with_the_newest_values() {
    // 12 x 32 games: about 50k deltas, 25 MB, far more than the stuck socket and its queue
    // absorb. The queue is 8,192 deltas: the reader, a test thread on the same 2 cores as an
    // engine replaying at ~100k events/s, fell more than 1,024 behind under CI load.
    let lines = fixture_copies(12);
    let topic = "nfl.slow";
    let cluster = Cluster::mock(&[(topic, 8), ("nfl.slow.dead-letters", 1)]);
    produce_all(&cluster.brokers, topic, &lines);
    let mut cfg = config(&cluster.brokers, topic, 2);
    cfg.server.queue_capacity = 8_192;
    let server = start(&cfg, &[nfl_pipeline(&[topic])]);

    let stuck = StuckClient::connect(server.ws_addr, SUBSCRIBE);
    let reader = Client::connect(server.ws_addr, SUBSCRIBE);
    reader.wait_for("the first snapshot", got_snapshot);

    let (_, log) = run_engine(&server);
    let last = log.last().unwrap().seq;
    reader.wait_for_seq(last);
    let (_, reader_values, reader_deltas) = apply(&reader.messages());
    assert_no_gap(&reader_deltas, last);

    assert!(
        server.hub.max_queued() <= cfg.server.queue_capacity,
        "a subscriber's queue reached {} (bound {})",
        server.hub.max_queued(),
        cfg.server.queue_capacity
    );
    assert!(
        server.hub.resyncs() >= 1,
        "the stuck subscriber was conflated"
    );

    // Reading again, it ends with the newest value of every game.
    let messages = stuck.read_until_seq(last);
    let (_, stuck_values, _) = apply(&messages);
    assert!(messages.iter().any(|m| matches!(
        m,
        ServerMessage::Snapshot {
            reason: sideline::ws::protocol::SnapshotReason::Resync,
            ..
        }
    )));
    assert_eq!(stuck_values, reader_values);
    let hub_values: std::collections::BTreeMap<_, _> = server
        .hub
        .snapshot(CHANNEL)
        .into_iter()
        .map(|v| {
            (
                sideline::event::GameKey {
                    sport: v.sport,
                    game_id: v.game_id,
                },
                v.value,
            )
        })
        .collect();
    assert_eq!(stuck_values, hub_values);
    server.shutdown();
}

/// Deltas numbered exactly 1..=last, in order.
fn assert_no_gap(deltas: &[sideline::delta::Delta], last: u64) {
    let first_gap = deltas
        .iter()
        .enumerate()
        .find(|(i, d)| d.seq != *i as u64 + 1);
    assert!(
        first_gap.is_none() && deltas.len() as u64 == last,
        "deltas are not 1..={last}: {} received, first out of place: {:?}",
        deltas.len(),
        first_gap.map(|(i, d)| (i, d.seq))
    );
}

/// Games spread over two topics (and their partitions) give the same deltas as one topic.
#[test]
fn two_topics_give_the_same_deltas_as_one() {
    let events = fixture_events();
    let lines = fixture_lines();
    let cluster = Cluster::mock(&[("nfl.a", 3), ("nfl.b", 2), ("nfl.two.dead-letters", 1)]);
    let even = |e: &sideline::event::GameEvent| e.game_id.ends_with(['0', '2', '4', '6', '8']);
    let pick = |want: bool| -> Vec<String> {
        lines
            .iter()
            .zip(&events)
            .filter(|(_, e)| even(e) == want)
            .map(|(l, _)| l.clone())
            .collect()
    };
    let (a, b) = (pick(true), pick(false));
    assert!(!a.is_empty() && !b.is_empty());
    produce_all(&cluster.brokers, "nfl.a", &a);
    produce_all(&cluster.brokers, "nfl.b", &b);
    let mut cfg = config(&cluster.brokers, "nfl.a", 2);
    cfg.kafka.dead_letter_topic = "nfl.two.dead-letters".into();
    let server = start(&cfg, &[nfl_pipeline(&["nfl.a", "nfl.b"])]);
    let (stats, log) = run_engine(&server);
    server.shutdown();
    assert_eq!(stats.accepted as usize, lines.len());
    let (history, _, _) = apply(
        &log.iter()
            .map(|d| ServerMessage::Delta {
                channel: CHANNEL.into(),
                delta: d.clone(),
            })
            .collect::<Vec<_>>(),
    );
    assert_eq!(history, offline_deltas(&nfl_plan(), &events));
}

/// A partition whose log no longer starts at offset 0 (the mock cluster keeps 5 MB of one,
/// dropping the oldest records) is read from where it starts now: the engine starts
/// partitions at offset 0, not at librdkafka's logical "beginning" (which waits 500 ms for the
/// partition's leader), and `auto.offset.reset = earliest` must move it to the log's start.
#[test]
fn a_partition_trimmed_at_its_start_is_read_from_where_it_starts_now() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topic = "nfl.trimmed";
    let cluster = Cluster::mock(&[(topic, 1), (&format!("{topic}.dead-letters"), 1)]);
    let lines = fixture_copies(3);
    produce_all(&cluster.brokers, topic, &lines);
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &cluster.brokers)
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, std::time::Duration::from_secs(10))
        .unwrap();
    assert_eq!(high as usize, lines.len());
    assert!(low > 0, "the mock trimmed the partition's start");

    let cfg = config(&cluster.brokers, topic, 1);
    let server = start(&cfg, &[nfl_pipeline(&[topic])]);
    let (stats, log) = run_engine(&server);
    assert_eq!(
        stats.records,
        (high - low) as u64,
        "every record it holds, once"
    );
    assert!(!log.is_empty());
    server.shutdown();
}
