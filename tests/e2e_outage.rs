//! A broker outage after everything was read, on librdkafka's in-process mock cluster: every
//! partition forgets it was read to its end, and one with nothing new must hear it again from
//! the broker. Its own binary: the metrics recorder and the Kafka health state are
//! process-wide, and `tests/e2e_broker_faults.rs` watches both.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use sideline::delta::Delta;

/// After the broker was out of reach, no partition counts as read to its end until the broker
/// says so again, and librdkafka says so once per end offset. A partition with nothing new
/// must still hear it again: else it never goes idle, holds the frontier at its last event (a
/// game fed on another partition gets no delta), and a drain never ends.
#[test]
fn after_an_outage_a_quiet_partition_goes_idle_again_and_a_drain_ends() {
    let lines = fixture_lines();
    let topic = "nfl.outage";
    let cluster = Cluster::mock(&[(topic, 2), ("nfl.outage.dead-letters", 1)]);
    produce_all(&cluster.brokers, topic, &lines);
    // One game again under another id, a day after the fixture's last event: it lands on one
    // partition after the outage, and the other has nothing new.
    let events = fixture_events();
    let last = events.iter().map(|e| e.event_time_ms).max().unwrap();
    let first = events.iter().map(|e| e.event_time_ms).min().unwrap();
    let later: Vec<String> = events
        .iter()
        .filter(|e| e.game_id == events[0].game_id)
        .map(|e| {
            let mut e = e.clone();
            e.game_id = format!("{}-later", e.game_id);
            e.event_time_ms += last - first + 86_400_000;
            serde_json::to_string(&e).unwrap()
        })
        .collect();
    let later_game = format!("{}-later", events[0].game_id);

    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut cfg = config(&cluster.brokers, topic, 2);
    cfg.kafka.stop_at_end = false;
    cfg.server.admin_listen = "127.0.0.1:0".into();
    cfg.server.metrics_listen = metrics_addr.clone();
    let server = start(&cfg, &[nfl_pipeline(&[topic])]);
    let admin = server.admin_addr.expect("admin endpoint").to_string();
    let log: Arc<Mutex<Vec<Delta>>> = Arc::default();
    let engine = {
        let (server, log) = (server.clone(), log.clone());
        std::thread::spawn(move || {
            server
                .run_engine(move |d| log.lock().unwrap().push(d.clone()))
                .unwrap()
        })
    };
    let body = || http_get(&metrics_addr, "/metrics").1;
    let events_in = || {
        metric_sum(
            &body(),
            &format!("sideline_events_in_total{{topic=\"{topic}\""),
        )
    };
    wait_until("every record to be read", 120, || {
        (events_in() >= lines.len() as f64).then_some(())
    });

    let errors_before = metric_sum(&body(), "sideline_kafka_errors_total");
    cluster.mock.broker_down(1).unwrap();
    wait_until("the lost broker to be counted", 60, || {
        (metric_sum(&body(), "sideline_kafka_errors_total") > errors_before).then_some(())
    });
    cluster.mock.broker_up(1).unwrap();
    wait_until("health to report recovery", 60, || {
        let (code, body) = http_get(&admin, "/health");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        (code == 200 && v["kafka"]["status"] == "up").then_some(())
    });

    produce_all(&cluster.brokers, topic, &later);
    wait_until(
        "the later game's deltas (the frontier moved on)",
        60,
        || {
            let log = log.lock().unwrap();
            log.iter().any(|d| d.game_id == later_game).then_some(())
        },
    );
    server.stop.drain();
    wait_until("the drain to end", 60, || {
        engine.is_finished().then_some(())
    });
    let stats = engine.join().expect("the engine thread does not panic");
    server.shutdown();
    assert_eq!(
        (stats.accepted as usize, stats.rejected, stats.late),
        (lines.len() + later.len(), 0, 0)
    );

    // The same records without an outage give the same deltas.
    let clean_topic = "nfl.no-outage";
    let clean = Cluster::mock(&[(clean_topic, 2), ("nfl.no-outage.dead-letters", 1)]);
    produce_all(&clean.brokers, clean_topic, &lines);
    produce_all(&clean.brokers, clean_topic, &later);
    let server = start(
        &config(&clean.brokers, clean_topic, 2),
        &[nfl_pipeline(&[clean_topic])],
    );
    let (_, clean_log) = run_engine(&server);
    server.shutdown();
    let log = log.lock().unwrap();
    assert!(
        log_bytes(&log) == log_bytes(&clean_log),
        "the delta log across the outage differs from the clean run's ({} vs {} deltas)",
        log.len(),
        clean_log.len()
    );
}
