//! The real broker process killed and started again in the middle of a feed: tansu on S3
//! storage (a local moto server), which keeps the topics across the restart. Started by
//! `bash .ci/broker.sh start-s3 PORT` (as `.ci/run` does) and named by KAFKA_TEST_S3_BROKERS;
//! the test kills and restarts it with the same script.
//!
//! The first part of the fixture is produced and read; the broker is killed (SIGKILL); health
//! says Kafka is down while the engine keeps running; the broker starts again on the same
//! storage; the rest is produced. The engine reconnects, reads it all, and its delta log is
//! byte for byte the one of a clean run.
//!
//! The pipeline's partitions never go idle here (`idle-timeout = "1h"`): the test waits for
//! the broker to come back before producing the rest, and a pause longer than the idle
//! timeout followed by a burst of older events across partitions makes some of them late
//! whatever the broker does (see the README, "Fault tolerance against the broker"). That
//! would measure the idle rule, not the restart.

mod common;

use std::process::Command;

use common::*;

fn brokers() -> String {
    std::env::var("KAFKA_TEST_S3_BROKERS").expect(
        "KAFKA_TEST_S3_BROKERS names the S3-backed broker; `bash .ci/run` starts one with \
         `bash .ci/broker.sh start-s3 PORT`",
    )
}

/// Runs `.ci/broker.sh` with `args`; it must succeed.
fn broker_script(args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/broker.sh");
    let status = Command::new("bash")
        .arg(script)
        .args(args)
        .status()
        .expect("bash runs");
    assert!(status.success(), "bash .ci/broker.sh {args:?} failed");
}

/// `GET /health` on the admin endpoint: HTTP status, and the `kafka` part.
fn health(admin: &str) -> (u16, serde_json::Value) {
    let (code, body) = http_get(admin, "/health");
    let v: serde_json::Value = serde_json::from_str(&body).expect("health is JSON");
    (code, v["kafka"].clone())
}

/// The NFL pipeline on `topic`, with partitions that never go idle (see the module docs).
fn pipeline(topic: &str) -> String {
    let text = nfl_pipeline(&[topic]);
    let out = text.replace("idle-timeout = \"2s\"", "idle-timeout = \"1h\"");
    assert_ne!(
        out, text,
        "the shipped pipeline sets its idle timeout as expected"
    );
    out
}

/// Where to cut the feed: the widest gap in event time in its middle third, so that every
/// event after the cut is later than every event before it.
fn split(events: &[sideline::event::GameEvent]) -> usize {
    let n = events.len();
    let cut = (n / 3..2 * n / 3)
        .max_by_key(|&i| events[i].event_time_ms - events[i - 1].event_time_ms)
        .unwrap();
    assert!(
        events[cut].event_time_ms > events[cut - 1].event_time_ms + 1,
        "the fixture has a gap in event time to cut at"
    );
    cut
}

#[test]
#[ignore = "needs the S3-backed tansu broker: run through `bash .ci/run`, which starts one"]
fn engine_rides_out_a_broker_restart_with_persistent_storage() {
    let brokers = brokers();
    let port = brokers.rsplit(':').next().unwrap().to_string();
    let topic = create_feed_topic(&brokers, "nfl.restart", 4);
    let lines = fixture_lines();
    let cut = split(&fixture_events());
    produce_all(&brokers, &topic, &lines[..cut]);

    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut cfg = config(&brokers, &topic, 2);
    cfg.kafka.stop_at_end = false;
    cfg.server.admin_listen = "127.0.0.1:0".into();
    cfg.server.metrics_listen = metrics_addr.clone();
    let server = start(&cfg, &[pipeline(&topic)]);
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
    wait_until("the first part to be read", 120, || {
        (events_in() >= cut as f64).then_some(())
    });
    wait_until("health to report the broker up", 60, || {
        (health(&admin).1["status"] == "up").then_some(())
    });

    // Kill the broker: Kafka is down, the engine is not.
    broker_script(&["kill-s3"]);
    let (code, k) = wait_until("health to report Kafka down", 60, || {
        let (code, k) = health(&admin);
        (k["status"] == "down").then_some((code, k))
    });
    assert_eq!(code, 503, "health answers 503 while no broker is reachable");
    assert_eq!(k["brokers_up"], 0);
    assert!(
        k["last_error"]["kind"].is_string(),
        "health names the error"
    );
    let during = http_get(&metrics_addr, "/metrics").1;
    assert_eq!(metric(&during, "sideline_kafka_brokers_up"), Some(0.0));
    assert!(metric(&during, "sideline_kafka_brokers_down") >= Some(1.0));
    assert!(metric_sum(&during, "sideline_kafka_errors_total") >= 1.0);
    assert!(
        !engine.is_finished(),
        "the engine stays up while the broker is gone"
    );

    // Start it again on the same storage, then the rest of the feed.
    broker_script(&["start-s3", &port]);
    wait_until("health to report the broker back", 120, || {
        let (code, k) = health(&admin);
        (code == 200 && k["status"] == "up").then_some(())
    });
    // The gauges are set when a client reports its statistics (every second each), so they
    // follow health by up to a report.
    wait_until("the gauge back to no broker down", 30, || {
        let body = http_get(&metrics_addr, "/metrics").1;
        (metric(&body, "sideline_kafka_brokers_down") == Some(0.0)).then_some(())
    });
    produce_all(&brokers, &topic, &lines[cut..]);
    wait_until("the whole feed to be read", 180, || {
        (events_in() >= lines.len() as f64).then_some(())
    });
    server.stop.drain();
    let (stats, log) = engine.join().expect("the engine thread does not panic");
    server.shutdown();
    assert_eq!(
        (stats.accepted as usize, stats.rejected, stats.late),
        (lines.len(), 0, 0)
    );

    // A clean run of the whole feed, same pipeline (librdkafka's mock cluster, which tests/e2e_broker.rs
    // shows gives the same log as this broker).
    let clean_topic = "nfl.clean";
    let clean = Cluster::mock(&[(clean_topic, 4), ("nfl.clean.dead-letters", 1)]);
    produce_all(&clean.brokers, clean_topic, &lines);
    let server = start(
        &config(&clean.brokers, clean_topic, 2),
        &[pipeline(clean_topic)],
    );
    let (_, clean_log) = run_engine(&server);
    server.shutdown();
    assert!(!clean_log.is_empty());
    assert!(
        log_bytes(&log) == log_bytes(&clean_log),
        "the delta log across the broker restart differs from the clean run's ({} vs {} deltas)",
        log.len(),
        clean_log.len()
    );
}
