//! End to end through a real Kafka-compatible broker process (tansu, started by `.ci/run` and
//! named by KAFKA_TEST_BROKERS): the fixture's games in, the same deltas out as the
//! offline computation, and the same delta log as through librdkafka's mock cluster.

mod common;

use common::*;

fn brokers() -> String {
    std::env::var("KAFKA_TEST_BROKERS")
        .expect("KAFKA_TEST_BROKERS names the broker to test against; `bash .ci/run` starts one")
}

#[test]
#[ignore = "needs a real broker: run through `bash .ci/run`, which starts one"]
fn fixture_through_a_real_broker_matches_offline_and_the_mock_cluster() {
    let brokers = brokers();
    let topic = create_feed_topic(&brokers, "nfl.real", 4);
    let lines = fixture_lines();
    produce_all(&brokers, &topic, &lines);

    let cfg = config(&brokers, &topic, 2);
    let server = start(&cfg, &[nfl_pipeline(&[&topic])]);
    let (stats, log) = run_engine(&server);
    server.shutdown();
    assert_eq!((stats.accepted as usize, stats.rejected), (lines.len(), 0));

    let mut history = std::collections::BTreeMap::new();
    for d in &log {
        history
            .entry(sideline::event::GameKey {
                sport: d.sport,
                game_id: d.game_id.clone(),
            })
            .or_insert_with(Vec::new)
            .push((d.event_time_ms, d.new));
    }
    assert_eq!(history, offline_deltas(&nfl_plan(), &fixture_events()));

    // The same bytes as through the mock cluster.
    let mock_topic = "nfl.mock";
    let cluster = Cluster::mock(&[(mock_topic, 4), ("nfl.mock.dead-letters", 1)]);
    produce_all(&cluster.brokers, mock_topic, &lines);
    let mock_cfg = config(&cluster.brokers, mock_topic, 2);
    let server = start(&mock_cfg, &[nfl_pipeline(&[mock_topic])]);
    let (_, mock_log) = run_engine(&server);
    server.shutdown();
    assert!(
        log_bytes(&log) == log_bytes(&mock_log),
        "real broker and mock cluster logs differ"
    );
}

/// A topic written in transactions ends with a commit marker the consumer never sees, so its
/// last record's offset is below the partition's end. A replay (`stop-at-end`) still ends, with
/// every record read.
#[test]
#[ignore = "needs a real broker: run through `bash .ci/run`, which starts one"]
fn a_replay_of_a_transactional_topic_ends() {
    use rdkafka::producer::Producer;
    let brokers = brokers();
    let topic = create_feed_topic(&brokers, "nfl.txn", 2);
    let lines = fixture_lines();
    let txn_id = format!("sideline-test-{topic}");
    let p = producer_with(&brokers, &[("transactional.id", txn_id.as_str())]);
    let wait = std::time::Duration::from_secs(30);
    p.init_transactions(wait).unwrap();
    for chunk in lines.chunks(1_000) {
        p.begin_transaction().unwrap();
        produce::produce_lines(&p, &topic, chunk, Pace::Max, None).unwrap();
        p.commit_transaction(wait).unwrap();
    }

    let server = start(&config(&brokers, &topic, 2), &[nfl_pipeline(&[&topic])]);
    let engine = {
        let server = server.clone();
        std::thread::spawn(move || run_engine(&server))
    };
    wait_until("the replay to end", 120, || {
        engine.is_finished().then_some(())
    });
    let (stats, log) = engine.join().expect("the engine thread does not panic");
    server.shutdown();
    assert_eq!((stats.accepted as usize, stats.rejected), (lines.len(), 0));
    assert!(!log.is_empty());
}
