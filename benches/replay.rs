//! End to end on one machine: real NFL games through librdkafka's in-process mock cluster,
//! the engine (2 workers) and the WebSocket server to one subscriber.
//!
//! 1. Throughput: the 32 bundled games x 12 (game ids shifted) produced first into 8
//!    partitions (the mock cluster keeps only about 10k records per partition), then read at
//!    full speed; events/s from engine start to last delta.
//! 2. Latency: the bundled games replayed at 600x recorded pace while the engine runs; the
//!    Kafka record timestamp to socket write latency of every delta (HDR histogram).
//!
//! Run with: cargo bench --bench replay

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use sideline::app::App;
use sideline::config::Config;
use sideline::produce::{self, Pace};

fn copies(n: usize) -> Vec<String> {
    sideline::demo::replicate(&sideline::demo::fixture_events(), n)
}

fn setup(
    topic: &str,
    partitions: i32,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    Config,
) {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(topic, partitions, 1).unwrap();
    mock.create_topic("dead", 1, 1).unwrap();
    let mut cfg = Config::load(None).unwrap();
    cfg.kafka.brokers = mock.bootstrap_servers();
    cfg.kafka.dead_letter_topic = "dead".into();
    cfg.engine.workers = 2;
    cfg.server.ws_listen = "127.0.0.1:0".into();
    cfg.server.metrics_listen = String::new();
    cfg.server.admin_listen = String::new();
    (mock, cfg)
}

/// A subscriber reading everything on its own thread.
fn subscriber(addr: std::net::SocketAddr) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}"))
                .await
                .unwrap();
            ws.send(tokio_tungstenite::tungstenite::Message::text(
                r#"{"op":"subscribe","channel":"nfl.win_probability"}"#,
            ))
            .await
            .unwrap();
            let mut n = 0u64;
            while let Some(Ok(_)) = ws.next().await {
                n += 1;
            }
            n
        })
    })
}

/// The shipped NFL pipeline reading `topic`.
fn start(cfg: &Config, topic: &str) -> std::sync::Arc<App> {
    let text = sideline::pipeline::DEFAULT_PIPELINE.1.replace(
        "topics = [\"nfl.events\"]",
        &format!("topics = [\"{topic}\"]"),
    );
    let app = App::start(cfg).unwrap();
    app.deploy("nfl.toml", &text).unwrap();
    app
}

fn main() {
    // 1. Throughput.
    let lines = copies(12);
    let (mock, mut cfg) = setup("throughput", 8);
    let producer = produce::create_producer(
        ClientConfig::new().set("bootstrap.servers", mock.bootstrap_servers()),
    )
    .unwrap();
    produce::produce_lines(&producer, "throughput", &lines, Pace::Max, None).unwrap();
    cfg.kafka.stop_at_end = true;
    let server = start(&cfg, "throughput");
    let _sub = subscriber(server.ws_addr);
    let t0 = Instant::now();
    let stats = server.run_engine(|_| {}).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "replay (mock cluster, 2 workers, 1 subscriber): {} events, {} games",
        stats.records,
        32 * 12
    );
    println!(
        "  throughput: {:.0} events/s ({:.0} per worker), {:.2} s, {} deltas",
        stats.records as f64 / secs,
        stats.records as f64 / secs / 2.0,
        secs,
        server.hub.seq("nfl.win_probability").unwrap_or(0)
    );
    server.shutdown();

    // 2. Latency under a paced feed.
    let lines = copies(1);
    let (mock, cfg) = setup("latency", 4);
    sideline::metrics::reset_latency();
    let server = start(&cfg, "latency");
    let _sub = subscriber(server.ws_addr);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let stop = server.stop.clone();
    let brokers = mock.bootstrap_servers();
    let feeder = std::thread::spawn(move || {
        let producer = produce::create_producer(
            ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("linger.ms", "0"),
        )
        .unwrap();
        let t0 = Instant::now();
        produce::produce_lines(&producer, "latency", &lines, Pace::Speed(600.0), None).unwrap();
        stop.drain();
        (lines.len(), t0.elapsed().as_secs_f64())
    });
    server.run_engine(|_| {}).unwrap();
    let (n, secs) = feeder.join().unwrap();
    println!(
        "paced replay at 600x: {n} events over {secs:.1} s ({:.0} events/s offered)",
        n as f64 / secs
    );
    println!("  {}", sideline::metrics::latency_summary());
    server.shutdown();
}
