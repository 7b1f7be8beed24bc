//! Detectors in a pipeline file (issue 5, first part): alerts from the real NFL games through
//! Kafka, the same on every replay, delivered to a Kafka alerts topic.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;
use sideline::alert::{Alert, AlertState};
use sideline::delta::Delta;
use sideline::pipeline::plan::Plan;
use sideline::publish::DeltaSink;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<(Vec<Delta>, Vec<Alert>)>>);

impl DeltaSink for Capture {
    fn deltas(&mut self, _: &Plan, deltas: &[Delta]) {
        self.0.lock().unwrap().0.extend_from_slice(deltas);
    }
    fn alerts(&mut self, _: &Plan, alerts: &[Alert]) {
        self.0.lock().unwrap().1.extend_from_slice(alerts);
    }
}

const DETECTORS: &str = r#"
[[detector]]
name = "swing"
kind = "jump"
on = "prediction"
threshold = 0.2
window = "3m"

[[detector]]
name = "shock"
kind = "zscore"
on = "score_diff"
alpha = 0.2
warn = 4.0
crit = 8.0
min-samples = 20
cooldown = "5m"
"#;

fn replay(run: usize) -> (Vec<Delta>, Vec<Alert>, Vec<Alert>) {
    let input = format!("nfl.alerts.{run}");
    let alerts_topic = format!("nfl.alerts.{run}.out");
    let cluster = Cluster::mock(&[
        (&input, 4),
        (&alerts_topic, 1),
        (&format!("{input}.dead-letters"), 1),
    ]);
    produce_all(&cluster.brokers, &input, &fixture_lines());
    let text = format!(
        "{}\n{DETECTORS}\n[[output]]\nkind = \"kafka\"\nstream = \"alerts\"\ntopic = \"{alerts_topic}\"\n",
        nfl_pipeline(&[&input])
    );
    let cfg = config(&cluster.brokers, &input, 2);
    let app = start(&cfg, &[text]);
    let capture = Capture::default();
    app.run_engine_with(Box::new(capture.clone())).unwrap();
    app.shutdown();
    let (deltas, alerts) = capture.0.lock().unwrap().clone();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cluster.brokers)
        .set("group.id", "alerts-check")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&alerts_topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut topic = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while topic.len() < alerts.len() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            topic.push(serde_json::from_slice::<Alert>(m.payload().unwrap()).unwrap());
        }
    }
    (deltas, alerts, topic)
}

#[test]
fn detectors_alert_deterministically_and_reach_the_alerts_topic() {
    let (deltas, alerts, topic) = replay(0);
    assert!(!deltas.is_empty());
    let opened = alerts
        .iter()
        .filter(|a| a.state == AlertState::Open)
        .count();
    println!(
        "{} alert changes ({opened} opened) over {} deltas; by detector: swing {}, shock {}",
        alerts.len(),
        deltas.len(),
        alerts.iter().filter(|a| a.detector == "swing").count(),
        alerts.iter().filter(|a| a.detector == "shock").count()
    );
    assert!(opened > 0, "the real games have swings");
    for (i, a) in alerts.iter().enumerate() {
        assert_eq!(a.seq, i as u64 + 1, "alerts numbered without a gap");
        assert!(a.evidence.value.is_finite() && a.evidence.threshold > 0.0);
    }
    // Every alert that resolves or escalates was opened before, under the same id.
    for a in alerts.iter().filter(|a| a.state != AlertState::Open) {
        assert!(
            alerts
                .iter()
                .any(|o| o.id == a.id && o.state == AlertState::Open && o.seq < a.seq),
            "alert {} changes without having opened",
            a.id
        );
    }
    // A swing alert points at a real swing of the published prediction.
    assert_eq!(topic, alerts, "the alerts topic holds every alert change");

    let (deltas2, alerts2, _) = replay(1);
    assert!(
        serde_json::to_string(&alerts).unwrap() == serde_json::to_string(&alerts2).unwrap(),
        "two replays give identical alerts"
    );
    assert_eq!(log_bytes(&deltas), log_bytes(&deltas2));
}
