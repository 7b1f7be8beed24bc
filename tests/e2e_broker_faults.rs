//! Broker faults during a replay, on librdkafka's in-process mock cluster (3 brokers, every
//! partition replicated 3 times): 200 ms more round trip on every broker, failed fetches, and
//! the leader of two partitions down and back up while they still have records to read. The
//! engine stays up, `GET /health` and `/metrics` show the outage while it lasts and the
//! recovery after, and the delta log is byte for byte the one of a clean run.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const PARTITIONS: i32 = 4;
/// The broker taken down: leader of partitions 0 and 3 (leaders are set to 1 + p % 3).
const DOWN: i32 = 1;

/// `GET /health` on the admin endpoint: HTTP status, and the `kafka` part.
fn health(admin: &str) -> (u16, serde_json::Value) {
    let (code, body) = http_get(admin, "/health");
    let v: serde_json::Value = serde_json::from_str(&body).expect("health is JSON");
    (code, v["kafka"].clone())
}

#[test]
fn leader_down_fetch_errors_and_latency_leave_the_delta_log_unchanged() {
    let lines = fixture_lines();
    let topic = "nfl.faults";
    let dlq = "nfl.faults.dead-letters";
    let cluster = Cluster::mock_with(3, 3, &[(topic, PARTITIONS), (dlq, 1)]);
    for p in 0..PARTITIONS {
        cluster
            .mock
            .partition_leader(topic, p, Some(1 + p % 3))
            .unwrap();
    }
    // Small batches (a fetch returns whole batches), so that a fetch of at most 16 KB per
    // partition takes a few dozen records, and every request takes 200 ms more from now on:
    // the replay takes many round trips, so the faults land in the middle of it.
    produce_all_with(&cluster.brokers, topic, &lines, &[("batch.size", "4096")]);
    for b in 1..=3 {
        cluster
            .mock
            .broker_round_trip_time(b, Duration::from_millis(200))
            .unwrap();
    }
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut cfg = config(&cluster.brokers, topic, 2);
    cfg.kafka.stop_at_end = false;
    cfg.server.admin_listen = "127.0.0.1:0".into();
    cfg.server.metrics_listen = metrics_addr.clone();
    cfg.kafka
        .consumer_options
        .insert("max.partition.fetch.bytes".into(), "16384".into());
    let server = start(&cfg, &[nfl_pipeline(&[topic])]);
    let admin = server.admin_addr.expect("admin endpoint").to_string();
    let engine = {
        let server = server.clone();
        std::thread::spawn(move || run_engine(&server))
    };
    let events_in = || {
        metric_sum(
            &http_get(&metrics_addr, "/metrics").1,
            &format!("sideline_events_in_total{{topic=\"{topic}\""),
        )
    };
    wait_until("the replay to start", 120, || {
        (events_in() >= 200.0).then_some(())
    });
    wait_until("health to report every broker in use up", 60, || {
        let (code, k) = health(&admin);
        (code == 200 && k["status"] == "up").then_some(())
    });

    // Faults: failing fetches, then the leader of partitions 0 and 3 goes away.
    let errors_before = metric_sum(
        &http_get(&metrics_addr, "/metrics").1,
        "sideline_kafka_errors_total",
    );
    cluster.mock.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        ],
    );
    cluster.mock.broker_down(DOWN).unwrap();
    let read_at_fault = events_in();
    assert!(
        read_at_fault < lines.len() as f64,
        "the fault came after the whole replay was read ({read_at_fault} records): it tests nothing"
    );

    // The outage shows: health says degraded with a broker down, the gauges and the error
    // counter agree, and the engine is still running.
    let outage = wait_until("health to report the broker down", 60, || {
        let (code, k) = health(&admin);
        (k["status"] == "degraded").then_some((code, k))
    });
    assert_eq!(outage.0, 200, "degraded is still serving");
    assert!(outage.1["brokers_down"].as_u64() >= Some(1));
    assert!(
        outage.1["brokers_up"].as_u64() >= Some(1),
        "two brokers remain"
    );
    assert_eq!(
        outage.1["partitions_unavailable"], 2,
        "partitions 0 and 3 have lost their leader"
    );
    assert!(
        outage.1["last_error"]["kind"].is_string(),
        "health names the last error"
    );
    let during = http_get(&metrics_addr, "/metrics").1;
    assert!(metric(&during, "sideline_kafka_brokers_down") >= Some(1.0));
    assert_eq!(
        metric(&during, "sideline_kafka_partitions_unavailable"),
        Some(2.0)
    );
    assert!(
        metric_sum(&during, "sideline_kafka_errors_total") > errors_before,
        "the lost connection is counted in sideline_kafka_errors_total"
    );
    let rtt = metric_sum(&during, "sideline_kafka_broker_rtt_seconds{");
    assert!(
        rtt >= 0.2,
        "the added round trip shows in the rtt gauges ({rtt} s in all)"
    );
    assert!(
        !engine.is_finished(),
        "the engine stays up through the outage"
    );

    // Back up: health and gauges recover, and the engine reads the rest.
    cluster.mock.broker_up(DOWN).unwrap();
    let recovered = wait_until("health to report recovery", 60, || {
        let (code, k) = health(&admin);
        (code == 200 && k["status"] == "up").then_some(k)
    });
    wait_until("the gauges back to no broker down", 30, || {
        let body = http_get(&metrics_addr, "/metrics").1;
        (metric(&body, "sideline_kafka_brokers_down") == Some(0.0)
            && metric(&body, "sideline_kafka_partitions_unavailable") == Some(0.0))
        .then_some(())
    });
    assert_eq!(
        (
            recovered["brokers_down"].as_u64(),
            recovered["partitions_unavailable"].as_u64()
        ),
        (Some(0), Some(0))
    );
    wait_until("every record to be read", 120, || {
        (events_in() >= lines.len() as f64).then_some(())
    });
    // The failed fetches were counted by kind (NOT_LEADER_FOR_PARTITION is handled inside
    // librdkafka: a metadata refresh, no error). A fetch error comes on its partition's queue,
    // so one of a partition held back for `read-ahead` is counted when the partition is read
    // again: by the end of the records at the latest.
    for kind in ["request_timed_out", "unknown"] {
        let errors = health(&admin).1["errors"][kind].as_u64();
        assert!(errors >= Some(1), "no {kind} error counted");
    }
    server.stop.drain();
    let (stats, log) = engine.join().expect("the engine thread does not panic");
    server.shutdown();
    assert_eq!(
        (stats.accepted as usize, stats.rejected, stats.late),
        (lines.len(), 0, 0)
    );

    // A clean run: one broker, no faults.
    let clean_topic = "nfl.clean";
    let clean = Cluster::mock(&[(clean_topic, PARTITIONS), ("nfl.clean.dead-letters", 1)]);
    produce_all(&clean.brokers, clean_topic, &lines);
    let server = start(
        &config(&clean.brokers, clean_topic, 2),
        &[nfl_pipeline(&[clean_topic])],
    );
    let (_, clean_log) = run_engine(&server);
    server.shutdown();
    assert!(!clean_log.is_empty());
    assert!(
        log_bytes(&log) == log_bytes(&clean_log),
        "the delta log under broker faults differs from the clean run's ({} vs {} deltas)",
        log.len(),
        clean_log.len()
    );
}
