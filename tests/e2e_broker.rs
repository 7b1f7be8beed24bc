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
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let topic = format!("nfl.real.{run}");
    let dlq = format!("{topic}.dead-letters");
    create_topics(&brokers, &[(&topic, 4), (&dlq, 1)]);
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
