//! Prometheus `/metrics` serves the engine's counters: events in and rejected per topic and
//! reason, deltas out, and WebSocket subscribers; the values match what the run did.

mod common;

use common::*;

fn scrape(addr: &str) -> String {
    http_get(addr, "/metrics").1
}

fn value(body: &str, series: &str) -> Option<f64> {
    metric(body, series)
}

#[test]
fn metrics_count_what_the_engine_did() {
    let topic = "nfl.metrics";
    let cluster = Cluster::mock(&[(topic, 2), ("nfl.metrics.dead-letters", 1)]);
    let mut lines = fixture_lines();
    lines.truncate(600);
    produce_all(&cluster.brokers, topic, &lines);
    let bad = produce::create_producer(
        rdkafka::config::ClientConfig::new().set("bootstrap.servers", &cluster.brokers),
    )
    .unwrap();
    sideline::produce::produce_lines_with(
        &bad,
        topic,
        &["{broken", "{\"also\": \"broken\"}"],
        &sideline::produce::ProduceOptions {
            allow_invalid: true,
            ..Default::default()
        },
        None,
    )
    .unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = config(&cluster.brokers, topic, 2);
    cfg.server.metrics_listen = format!("127.0.0.1:{port}");
    let server = start(&cfg, &[nfl_pipeline(&[topic])]);
    let client = Client::connect(
        server.ws_addr,
        r#"{"op":"subscribe","channel":"nfl.win_probability"}"#,
    );
    client.wait_for("a snapshot", |ms| !ms.is_empty());
    let (stats, log) = run_engine(&server);
    let body = scrape(&cfg.server.metrics_listen);

    let t = format!("topic=\"{topic}\"");
    let pl = "pipeline=\"nfl_win_probability\"";
    assert_eq!(
        value(&body, &format!("sideline_events_in_total{{{t},{pl}}}")),
        Some(stats.records as f64),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            &format!("sideline_events_rejected_total{{{t},reason=\"malformed_json\",{pl}}}")
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            &format!("sideline_events_rejected_total{{{t},reason=\"schema_violation\",{pl}}}")
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(&body, &format!("sideline_deltas_out_total{{{pl}}}")),
        Some(log.len() as f64),
        "{body}"
    );
    assert_eq!(value(&body, "sideline_ws_subscribers"), Some(1.0), "{body}");
    assert!(body.contains("sideline_e2e_latency_seconds"), "{body}");
    // Read to the end, nothing is held back any more (one series per worker).
    let held = "sideline_partitions_held{";
    assert_eq!(body.matches(held).count(), 2, "{body}");
    assert_eq!(metric_sum(&body, held), 0.0, "{body}");
    server.shutdown();
}
