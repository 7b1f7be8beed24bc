//! A pipeline's `kafka` output (issue 3): every delta, as the same JSON subscribers get, one
//! record per delta keyed by game, with the pipeline and seq in headers.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::TopicPartitionList;
use sideline::delta::Delta;

#[test]
fn the_kafka_output_carries_every_delta_keyed_by_game() {
    let (input, output) = ("nfl.out.in", "nfl.out.deltas");
    let cluster = Cluster::mock(&[(input, 3), (output, 2), ("nfl.out.in.dead-letters", 1)]);
    let lines = fixture_lines()[..1500].to_vec();
    produce_all(&cluster.brokers, input, &lines);
    let text = format!(
        "{}\n[[output]]\nkind = \"kafka\"\ntopic = \"{output}\"\n",
        nfl_pipeline(&[input])
    );
    let cfg = config(&cluster.brokers, input, 2);
    let app = start(&cfg, &[text]);
    let (_, log) = run_engine(&app);
    app.shutdown();
    assert!(log.len() > 100);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cluster.brokers)
        .set("group.id", "output-check")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset(output, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut got: Vec<Delta> = Vec::new();
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while got.len() < log.len() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let d: Delta = serde_json::from_slice(m.payload().unwrap()).unwrap();
            assert_eq!(m.key(), Some(d.game_id.as_bytes()), "keyed by game");
            let headers: BTreeMap<String, String> = m
                .headers()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value.unwrap()).to_string(),
                    )
                })
                .collect();
            assert_eq!(headers["sideline.pipeline"], "nfl_win_probability");
            assert_eq!(headers["sideline.seq"], d.seq.to_string());
            // A game's deltas all on one partition, in order.
            let p = *partition_of
                .entry(d.game_id.clone())
                .or_insert(m.partition());
            assert_eq!(p, m.partition(), "game {} moved partition", d.game_id);
            got.push(d);
        }
    }
    got.sort_by_key(|d| d.seq);
    assert_eq!(got.len(), log.len(), "every delta reached the topic");
    assert!(got == log, "the topic holds exactly the delta log");
}
