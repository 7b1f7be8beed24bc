//! What a hanging webhook costs the dataflow: the paced-replay latency of `benches/replay.rs`
//! (the 32 bundled NFL games at 600x recorded pace through librdkafka's in-process mock
//! cluster, the engine on 2 workers, one WebSocket subscriber) with the NFL pipeline plus a
//! `jump` detector on the prediction (threshold 0.2, window 3m), run twice:
//!
//! (a) no webhook output;
//! (b) a webhook output whose endpoint accepts the request and never answers (an axum handler
//!     that awaits forever): every attempt runs into the client timeout.
//!
//! It isolates the delivery path's effect on the delta path: the same input, pipeline and
//! subscriber, only the webhook output differs. Printed per run: the end-to-end latency
//! (Kafka record timestamp to socket write, `sideline::metrics::latency_summary`, reset
//! before each run), the deltas and alert changes published, the wall time of the run and of
//! the webhook flush that follows it (`App::run_engine_with` waits up to 30 s for deliveries),
//! and the webhook counters (`sideline_webhook_*`, from an in-process Prometheus recorder).
//! Nothing about time is asserted; the two runs must publish the same number of deltas.
//!
//! The input is deterministic (the bundled fixture, no randomness); only the backoff jitter
//! of the webhook retries is random, and it affects no printed figure but the flush time.
//!
//! Run with: cargo bench --bench alerts

/// The binary's allocator (`src/main.rs`), so the figures are what it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use sideline::alert::Alert;
use sideline::app::App;
use sideline::config::Config;
use sideline::delta::Delta;
use sideline::metrics::LatencySummary;
use sideline::pipeline::plan::Plan;
use sideline::produce::{self, Pace};
use sideline::publish::DeltaSink;

/// Environment variable holding the webhook's signing secret (not `SIDELINE_*`, which
/// `Config::load` reads as engine settings).
const SECRET_ENV: &str = "BENCH_ALERTS_WEBHOOK_SECRET";

const SWING: &str = r#"
[[detector]]
name = "swing"
kind = "jump"
on = "prediction"
threshold = 0.2
window = "3m"
"#;

/// Counts what the engine published.
#[derive(Clone, Default)]
struct Counts {
    deltas: Arc<AtomicU64>,
    alerts: Arc<AtomicU64>,
}

impl DeltaSink for Counts {
    fn deltas(&mut self, _: &Plan, deltas: &[Delta]) {
        self.deltas
            .fetch_add(deltas.len() as u64, Ordering::Relaxed);
    }
    fn alerts(&mut self, _: &Plan, alerts: &[Alert]) {
        self.alerts
            .fetch_add(alerts.len() as u64, Ordering::Relaxed);
    }
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

/// An HTTP endpoint on 127.0.0.1:0 that takes every request and never answers.
fn hanging_endpoint() -> (tokio::runtime::Runtime, std::net::SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let app = Router::new().route(
        "/hook",
        post(|| async {
            std::future::pending::<()>().await;
            StatusCode::OK
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (rt, addr)
}

/// What one run measured.
struct Run {
    deltas: u64,
    alerts: u64,
    latency: LatencySummary,
    events: usize,
    feed_secs: f64,
    run_secs: f64,
    flush_secs: f64,
    shutdown_secs: f64,
}

/// The paced replay with the swing detector and the extra `outputs` text.
fn run(topic: &str, outputs: &str) -> Run {
    let mock = MockCluster::new(1).unwrap();
    mock.create_topic(topic, 4, 1).unwrap();
    mock.create_topic("dead", 1, 1).unwrap();
    let mut cfg = Config::load(None).unwrap();
    cfg.kafka.brokers = mock.bootstrap_servers();
    cfg.kafka.dead_letter_topic = "dead".into();
    cfg.engine.workers = 2;
    cfg.server.ws_listen = "127.0.0.1:0".into();
    cfg.server.metrics_listen = String::new();
    cfg.server.admin_listen = String::new();
    let text = sideline::pipeline::DEFAULT_PIPELINE.1.replace(
        "topics = [\"nfl.events\"]",
        &format!("topics = [\"{topic}\"]"),
    );
    let text = format!("{text}\n{SWING}\n{outputs}");

    let lines = sideline::demo::replicate(&sideline::demo::fixture_events(), 1, 0);
    sideline::metrics::reset_latency();
    let app = App::start(&cfg).unwrap();
    app.deploy("nfl.toml", &text).unwrap();
    let _sub = subscriber(app.ws_addr);
    std::thread::sleep(Duration::from_millis(300));
    let stop = app.stop.clone();
    let brokers = mock.bootstrap_servers();
    let topic = topic.to_string();
    let feeder = std::thread::spawn(move || {
        let producer = produce::create_producer(
            ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("linger.ms", "0"),
        )
        .unwrap();
        let t0 = Instant::now();
        produce::produce_lines(&producer, &topic, &lines, Pace::Speed(600.0), None).unwrap();
        stop.drain();
        (lines.len(), t0.elapsed().as_secs_f64(), Instant::now())
    });
    let counts = Counts::default();
    let t0 = Instant::now();
    app.run_engine_with(Box::new(counts.clone())).unwrap();
    let run_secs = t0.elapsed().as_secs_f64();
    // Every delta has been written by now: the flush only waits for webhook deliveries.
    let latency = sideline::metrics::latency_summary();
    let (events, feed_secs, fed_at) = feeder.join().unwrap();
    let flush_secs = fed_at.elapsed().as_secs_f64();
    let t1 = Instant::now();
    app.shutdown();
    let shutdown_secs = t1.elapsed().as_secs_f64();
    Run {
        deltas: counts.deltas.load(Ordering::Relaxed),
        alerts: counts.alerts.load(Ordering::Relaxed),
        latency,
        events,
        feed_secs,
        run_secs,
        flush_secs,
        shutdown_secs,
    }
}

fn print(label: &str, r: &Run) {
    println!("{label}");
    println!(
        "  {} events over {:.1} s ({:.0} events/s offered); run {:.1} s, of which {:.1} s after the feed ended (drain and webhook flush); shutdown {:.1} s",
        r.events,
        r.feed_secs,
        r.events as f64 / r.feed_secs,
        r.run_secs,
        r.flush_secs,
        r.shutdown_secs
    );
    println!("  {} deltas, {} alert changes", r.deltas, r.alerts);
    println!("  {}", r.latency);
}

/// The `sideline_webhook_*` lines of the Prometheus text, sums and counts only.
fn webhook_counters(metrics: &PrometheusHandle) -> Vec<String> {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("sideline_webhook_") && !l.contains("quantile="))
        .map(String::from)
        .collect()
}

fn main() {
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .expect("installing the Prometheus recorder");
    // Single-threaded here: nothing else reads the environment yet.
    std::env::set_var(SECRET_ENV, "bench-secret");

    println!("paced replay at 600x, NFL pipeline + jump detector, 2 workers, 1 subscriber");
    let plain = run("alerts.plain", "");
    print("(a) no webhook", &plain);

    let (hang_rt, addr) = hanging_endpoint();
    let webhook = format!(
        "[[output]]\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\nsecret-env = \"{SECRET_ENV}\"\n"
    );
    let hanging = run("alerts.hanging", &webhook);
    print("(b) webhook endpoint that never answers", &hanging);
    let counters = webhook_counters(&metrics);
    for l in &counters {
        println!("  {l}");
    }
    let counter = |name: &str| -> u64 {
        counters
            .iter()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    let delivered = counter("sideline_webhook_delivered_total");
    let exhausted = counter("sideline_webhook_failures_total");
    let dropped = counter("sideline_webhook_dropped_total");
    println!(
        "  webhook: {} alert changes sent, {delivered} delivered, {exhausted} dead after every attempt timed out, {dropped} dropped (queue full), {} dead-lettered at shutdown",
        hanging.alerts,
        hanging.alerts.saturating_sub(delivered + exhausted + dropped)
    );
    hang_rt.shutdown_background();

    // A count, not a timing: the hanging endpoint must not change what is published.
    assert_eq!(
        plain.deltas, hanging.deltas,
        "the same deltas with and without the hanging webhook"
    );
    assert_eq!(plain.alerts, hanging.alerts);
}
