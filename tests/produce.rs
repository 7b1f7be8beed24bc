//! `sideline produce` against librdkafka's in-process mock cluster: the fixture goes into a
//! 4-partition topic and comes back byte-identical, once each, one game per partition, in order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{Message, Offset, TopicPartitionList};
use sideline::event::GameEvent;
use sideline::produce::{
    create_producer, produce_lines, produce_lines_with, Pace, ProduceError, ProduceOptions,
    INVALID_KEY,
};

const PARTITIONS: i32 = 4;

fn fixture_lines() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/nfl/games.jsonl");
    let text = std::fs::read_to_string(path).expect("fixture present");
    text.lines().map(str::to_owned).collect()
}

fn producer_for(
    cluster: &MockCluster<'_, impl rdkafka::ClientContext>,
) -> sideline::produce::FeedProducer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    create_producer(&config).expect("producer")
}

/// A consumed record: (partition, offset, key, payload).
type Record = (i32, i64, String, Vec<u8>);

/// Reads `want` records from all partitions of `topic`, from the beginning.
fn consume(bootstrap: &str, topic: &str, want: usize) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "produce-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < want && Instant::now() < deadline {
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            let msg = msg.expect("consume");
            let key = String::from_utf8(msg.key().unwrap_or_default().to_vec()).unwrap();
            out.push((
                msg.partition(),
                msg.offset(),
                key,
                msg.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    // Anything beyond `want` would be a duplicate: read a little longer to catch it.
    let linger = Instant::now() + Duration::from_millis(500);
    while Instant::now() < linger {
        if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) {
            out.push((msg.partition(), msg.offset(), String::new(), Vec::new()));
        }
    }
    out
}

#[test]
fn fixture_round_trips_through_kafka() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let topic = "nfl.events";
    cluster.create_topic(topic, PARTITIONS, 1).unwrap();
    let producer = producer_for(&cluster);
    let lines = fixture_lines();

    let stats = produce_lines(&producer, topic, &lines, Pace::Max, None).unwrap();
    assert_eq!(stats.sent, lines.len() as u64);
    assert_eq!(stats.delivered, lines.len() as u64);
    assert_eq!((stats.failed, stats.invalid), (0, 0));

    let records = consume(&cluster.bootstrap_servers(), topic, lines.len());
    assert_eq!(records.len(), lines.len(), "each line exactly once");

    // Byte-identical payloads, each line once.
    let mut want: BTreeMap<&[u8], usize> = BTreeMap::new();
    for l in &lines {
        *want.entry(l.as_bytes()).or_default() += 1;
    }
    let mut got: BTreeMap<&[u8], usize> = BTreeMap::new();
    for (_, _, _, payload) in &records {
        *got.entry(payload.as_slice()).or_default() += 1;
    }
    assert_eq!(got, want);

    // One game, one partition, in seq order by offset; key = "sport:game_id".
    let mut by_partition: BTreeMap<i32, Vec<&Record>> = BTreeMap::new();
    for r in &records {
        by_partition.entry(r.0).or_default().push(r);
    }
    let mut game_partition: BTreeMap<String, i32> = BTreeMap::new();
    for (partition, mut recs) in by_partition {
        recs.sort_by_key(|r| r.1);
        let mut last_seq: BTreeMap<String, u64> = BTreeMap::new();
        for (_, offset, key, payload) in recs {
            let e: GameEvent = serde_json::from_slice(payload).unwrap();
            assert_eq!(key, &format!("nfl:{}", e.game_id));
            let p = *game_partition.entry(e.game_id.clone()).or_insert(partition);
            assert_eq!(p, partition, "game {} on two partitions", e.game_id);
            if let Some(prev) = last_seq.insert(e.game_id.clone(), e.seq) {
                assert!(
                    e.seq > prev,
                    "game {} out of order at offset {offset}",
                    e.game_id
                );
            }
        }
    }
    assert!(game_partition.len() >= 24);
    // 32 games over 4 partitions: more than one partition is used.
    let used: std::collections::BTreeSet<i32> = game_partition.values().copied().collect();
    assert!(used.len() > 1);
}

#[test]
fn invalid_lines_fail_unless_allowed() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let topic = "nfl.dead-letters";
    cluster.create_topic(topic, PARTITIONS, 1).unwrap();
    let producer = producer_for(&cluster);
    let mut lines: Vec<String> = fixture_lines().into_iter().take(5).collect();
    lines.insert(2, "{\"sport\": \"nfl\", \"not\": \"an event\"}".to_owned());
    lines.insert(4, String::new());
    lines.push("garbage".to_owned());

    match produce_lines(&producer, topic, &lines, Pace::Max, None) {
        Err(err @ ProduceError::InvalidLine { line: 3, .. }) => {
            assert_eq!(err.code(), "produce_invalid_line");
            assert!(!err.is_retryable());
        }
        other => panic!("expected an invalid-line error, got {other:?}"),
    }
    // The two lines before the bad one were sent (and flushed), none after it.

    let options = ProduceOptions {
        pace: Pace::Speed(1000.0),
        allow_invalid: true,
        ..ProduceOptions::default()
    };
    let stats = produce_lines_with(&producer, topic, &lines, &options, None).unwrap();
    assert_eq!((stats.sent, stats.invalid, stats.blank), (7, 2, 1));
    assert_eq!(stats.delivered, 7);

    let records = consume(&cluster.bootstrap_servers(), topic, 9);
    assert_eq!(records.len(), 9);
    let invalid: Vec<&[u8]> = records
        .iter()
        .filter(|r| r.2 == INVALID_KEY)
        .map(|r| r.3.as_slice())
        .collect();
    assert_eq!(invalid.len(), 2);
    assert!(invalid.contains(&b"garbage".as_slice()));
}

#[test]
fn bad_speed_is_refused() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let producer = producer_for(&cluster);
    let lines = fixture_lines();
    for speed in [0.0, -2.0, f64::NAN] {
        let err = produce_lines(&producer, "t", &lines[..2], Pace::Speed(speed), None).unwrap_err();
        assert_eq!(err.code(), "produce_bad_speed");
    }
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: sideline::produce::ProduceArgs,
}

#[test]
fn command_line() {
    use clap::Parser;
    let cli = Cli::try_parse_from([
        "produce",
        "--brokers",
        "127.0.0.1:9092",
        "--speed",
        "60",
        "-X",
        "linger.ms=20",
        "-X",
        "acks=all",
        "feed.jsonl",
    ])
    .unwrap();
    let args = cli.args;
    assert_eq!(args.topic, "nfl.events");
    assert_eq!(args.pace(), Pace::Speed(60.0));
    let config = args.client_config();
    assert_eq!(config.get("linger.ms"), Some("20"));
    assert_eq!(config.get("acks"), Some("all"));
    assert_eq!(config.get("enable.idempotence"), Some("true"));
    assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:9092"));

    let cli = Cli::try_parse_from(["produce", "--brokers", "b:1", "-"]).unwrap();
    assert_eq!(cli.args.pace(), Pace::Max);
    // The engine owns bootstrap.servers; --speed and --max exclude each other; brokers required.
    let refused = [
        vec![
            "produce",
            "--brokers",
            "b:1",
            "-X",
            "bootstrap.servers=x:1",
            "-",
        ],
        vec!["produce", "--brokers", "b:1", "--speed", "2", "--max", "-"],
        vec!["produce", "-"],
        vec!["produce", "--brokers", "b:1", "-X", "novalue", "-"],
    ];
    for argv in refused {
        assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?}");
    }
}

#[test]
fn run_sends_a_file() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let topic = "nfl.run";
    cluster.create_topic(topic, PARTITIONS, 1).unwrap();
    let lines: Vec<String> = fixture_lines().into_iter().take(10).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), lines.join("\n") + "\n").unwrap();
    let args = sideline::produce::ProduceArgs {
        brokers: cluster.bootstrap_servers(),
        topic: topic.to_owned(),
        speed: None,
        max: true,
        allow_invalid: false,
        config: vec![],
        file: file.path().to_owned(),
    };
    sideline::produce::run(args).unwrap();
    let records = consume(&cluster.bootstrap_servers(), topic, lines.len());
    assert_eq!(records.len(), lines.len());
}
