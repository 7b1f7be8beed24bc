//! End to end on one machine: real NFL games through librdkafka's in-process mock cluster,
//! the engine (2 workers) and the WebSocket server to one subscriber.
//!
//! 1. Throughput: the 32 bundled games x 12 (`REPLAY_COPIES`; game ids shifted, and event
//!    times by `REPLAY_SHIFT_MS` x the copy's number), or the real seasons of the file
//!    `REPLAY_EVENTS` names (x 1 by default), produced first into 8 or more partitions (one
//!    per 6,000 records: the mock cluster keeps only about 10k records per partition) of the
//!    mock cluster, or of the broker `BENCH_BROKERS` names, then read at full speed; events/s from engine start to last delta, CPU time of the workers, the
//!    publisher and the process, peak memory. Then the reading floor on the same records:
//!    as many threads as workers only reading the same partitions through the engine's reader
//!    (`KafkaReader`, same client settings), once handing records over untouched and once
//!    decoding each as the engine does; no ordering, windows, dataflow or publishing. What
//!    the engine reaches is bounded by that.
//! 2. Latency: the bundled games replayed at 600x recorded pace while the engine runs; the
//!    Kafka record timestamp to socket write latency of every delta (HDR histogram).
//! 3. Latency at fixed offered rates (1k, 10k, 100k events/s): 100 games' plays interleaved and
//!    re-timed so that event time runs at wall-clock pace at that rate (event i at i / rate s),
//!    produced at recorded pace into 4 partitions (`REPLAY_PARTITIONS`) with `linger.ms` 2
//!    (`REPLAY_LINGER_MS`), with the pipeline's `allowed-lateness` at 0 and `idle-timeout` at
//!    100 ms, so that the watermark follows the feed instead of lagging it by a second; the same
//!    latency after a first second of warm-up, and the events accepted. Against the mock
//!    cluster by default (consumers' `fetch.wait.max.ms` at 1 ms, as `sideline demo` sets it:
//!    the mock holds an empty fetch for the whole wait); against a real Kafka-compatible broker
//!    when `BENCH_BROKERS` names one (`bash .ci/broker.sh start` starts tansu on
//!    127.0.0.1:19092), with the engine's consumer defaults. `linger.ms` 0 (one record per
//!    request) is more than either broker takes at 10k records/s on this machine: the mock's
//!    fetch path is linear in the number of record batches (`rd_kafka_mock_msgset_find`).
//!
//! Run with: cargo bench --bench replay

/// The binary's allocator (`src/main.rs`), so the figures are what it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use sideline::app::App;
use sideline::config::Config;
use sideline::produce::{self, Pace};

#[path = "../tests/common/mod.rs"]
mod common;

/// The games replayed: the bundled 32, or every event of the JSON lines file `REPLAY_EVENTS`
/// names (`sideline import nfl --season-type pre,reg,post --out FILE` writes all NFL seasons:
/// 638,288 events of 3,579 games), and how many games they are.
fn source_events() -> (Vec<sideline::event::GameEvent>, usize) {
    let events = match std::env::var("REPLAY_EVENTS") {
        Ok(path) => {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .enumerate()
                .map(|(i, l)| {
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}:{}: {e}", i + 1))
                })
                .collect()
        }
        Err(_) => sideline::demo::fixture_events(),
    };
    let games = events
        .iter()
        .map(|e: &sideline::event::GameEvent| &e.game_id)
        .collect::<std::collections::HashSet<_>>()
        .len();
    (events, games)
}

/// `n` copies of the replayed games ([`source_events`]), and how many games they are. Copies
/// share their event times unless `REPLAY_SHIFT_MS` moves copy `k` that many milliseconds
/// times `k` later (a feed whose times hold one event each, rather than one per copy).
fn copies(n: usize) -> (Vec<String>, usize) {
    let shift = std::env::var("REPLAY_SHIFT_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (events, games) = source_events();
    (sideline::demo::replicate(&events, n, shift), games * n)
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
    // As `sideline demo` runs the mock: it holds a fetch that finds no new records for the
    // whole `fetch.wait.max.ms` (a broker answers when records arrive).
    cfg.kafka.consumer_options.insert(
        "fetch.wait.max.ms".into(),
        sideline::demo::MOCK_FETCH_WAIT_MS.into(),
    );
    cfg.engine.workers = std::env::var("REPLAY_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(2);
    cfg.server.ws_listen = "127.0.0.1:0".into();
    // As `sideline run` has it by default: the per-record counters cost what they cost there.
    cfg.server.metrics_listen = "127.0.0.1:0".into();
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
    start_text(cfg, topic, sideline::pipeline::DEFAULT_PIPELINE.1)
}

fn start_text(cfg: &Config, topic: &str, text: &str) -> std::sync::Arc<App> {
    let text = text.replace(
        "topics = [\"nfl.events\"]",
        &format!("topics = [\"{topic}\"]"),
    );
    let app = App::start(cfg).unwrap();
    app.deploy("nfl.toml", &text).unwrap();
    app
}

fn main() {
    // One part alone (for profiling): REPLAY_ONLY=throughput, paced, or an offered rate.
    let only = std::env::var("REPLAY_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only == part;
    if run("throughput") {
        throughput();
    }
    if run("paced") {
        paced();
    }
    at_fixed_rates(&run);
}

/// Part 1, throughput. `REPLAY_COPIES` sets the copies of the replayed games (12 of the
/// bundled games by default, 1 of a `REPLAY_EVENTS` file). Through the mock cluster, or the
/// broker `BENCH_BROKERS` names.
fn throughput() {
    let from_file = std::env::var("REPLAY_EVENTS").is_ok();
    let n_copies: usize = std::env::var("REPLAY_COPIES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(if from_file { 1 } else { 12 });
    let (lines, games) = copies(n_copies);
    // The mock keeps 5 MB per partition, about 12k of these records.
    let partitions = (lines.len() / 6_000 + 1).max(8) as i32;
    let topic = format!("throughput-{}", std::process::id());
    let (_mock, mut cfg) = setup(&topic, partitions);
    let broker = match std::env::var("BENCH_BROKERS")
        .ok()
        .filter(|b| !b.is_empty())
    {
        Some(brokers) => {
            let dead = format!("dead-{topic}");
            common::create_topics(&brokers, &[(&topic, partitions), (&dead, 1)]);
            cfg.kafka.brokers = brokers.clone();
            cfg.kafka.dead_letter_topic = dead;
            // The engine's consumer defaults: the mock's fetch wait is the mock's.
            cfg.kafka.consumer_options.clear();
            format!("broker at {brokers}")
        }
        None => "mock cluster".to_string(),
    };
    let producer =
        produce::create_producer(ClientConfig::new().set("bootstrap.servers", &cfg.kafka.brokers))
            .unwrap();
    produce::produce_lines(&producer, &topic, &lines, Pace::Max, None).unwrap();
    let produced = lines.len() as u64;
    drop(lines);
    cfg.kafka.stop_at_end = true;
    let workers = cfg.engine.workers;
    // `REPLAY_READ_AHEAD` ("1m", "1000d", ...) overrides the pipeline's `read-ahead`.
    let mut text = sideline::pipeline::DEFAULT_PIPELINE.1.to_string();
    if let Ok(ahead) = std::env::var("REPLAY_READ_AHEAD") {
        let time = "idle-timeout = \"2s\"";
        assert!(text.contains(time));
        text = text.replace(time, &format!("{time}\nread-ahead = \"{ahead}\""));
    }
    let server = start_text(&cfg, &topic, &text);
    let _sub = subscriber(server.ws_addr);
    // The peak from here on: loading and producing the input peaked higher than the engine
    // with every season's records (Linux: writing 5 to clear_refs resets VmHWM).
    let peak = match std::fs::write("/proc/self/clear_refs", "5") {
        Ok(()) => "peak during the run",
        Err(_) => "peak (input loading included)",
    };
    let (process0, rss0) = (process_cpu(), status_mib("VmRSS:"));
    let t0 = Instant::now();
    let stats = server.run_engine(|_| {}).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let process = process_cpu() - process0;
    assert_eq!(stats.records, produced, "the engine read every record once");
    println!(
        "replay ({broker}, {partitions} partitions, {workers} workers, 1 subscriber): {} events, {games} games",
        stats.records,
    );
    println!(
        "  throughput: {:.0} events/s ({:.0} per worker), {:.2} s, {} deltas",
        stats.records as f64 / secs,
        stats.records as f64 / secs / workers as f64,
        secs,
        server.hub.seq("nfl.win_probability").unwrap_or(0)
    );
    let deltas = server.hub.seq("nfl.win_probability").unwrap_or(0).max(1);
    let per = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
    println!(
        "  CPU: workers {:.2} s ({:.2} us/event), publisher {:.2} s ({:.2} us/delta), whole process {:.2} s ({:.2} us/event, the subscriber and any mock broker included)",
        stats.cpu.as_secs_f64(),
        per(stats.cpu, stats.records),
        stats.publisher_cpu.as_secs_f64(),
        per(stats.publisher_cpu, deltas),
        process.as_secs_f64(),
        per(process, stats.records),
    );
    println!(
        "  memory: RSS {rss0:.0} MiB before the run (a mock broker holds every produced record), {peak} {:.0} MiB; partition reads held back (read-ahead): {}",
        status_mib("VmHWM:"),
        stats.held
    );
    server.shutdown();
    for decode in [false, true] {
        let (events, secs, cpu) = read_floor(&cfg, &topic, partitions, workers, decode);
        assert_eq!(events, produced, "the floor read every record once");
        println!(
            "  reading floor, {workers} threads reading only{}: {:.0} events/s ({:.0} per thread), readers' CPU {:.2} us/event (librdkafka's own threads not counted, as for the workers)",
            if decode { " and decoding JSON" } else { "" },
            events as f64 / secs,
            events as f64 / secs / workers as f64,
            per(cpu, events),
        );
    }
}

/// `threads` threads, each reading its share of `topic`'s partitions (as the engine deals
/// them: partition `p` to `p % threads`) with the engine's reader from the beginning to the
/// end, handing each record over and, with `decode`, decoding it as the engine does. The
/// records read, the wall time (seconds) from the first reader's creation to the last
/// one's end, and the readers' CPU time.
fn read_floor(
    cfg: &Config,
    topic: &str,
    partitions: i32,
    threads: usize,
    decode: bool,
) -> (u64, f64, Duration) {
    use sideline::source::kafka::{KafkaReader, Polled};
    let t0 = Instant::now();
    let readers: Vec<_> = (0..threads)
        .map(|w| {
            let kafka = cfg.kafka.clone();
            let owned: Vec<(String, i32)> = (0..partitions)
                .filter(|p| *p as usize % threads == w)
                .map(|p| (topic.to_string(), p))
                .collect();
            std::thread::spawn(move || {
                let cpu0 = sideline::engine::thread_cpu();
                let reader = KafkaReader::new(&kafka, &owned, &Default::default()).unwrap();
                let held = vec![false; owned.len()];
                let mut ended = vec![false; owned.len()];
                let (mut n, mut refused) = (0u64, 0u64);
                while !ended.iter().all(|e| *e) {
                    let polled = reader.poll(512, &held, |p| match p {
                        Polled::Record(r) => {
                            n += 1;
                            if decode
                                && sideline::format::json::decode(r.payload, kafka.max_record_bytes)
                                    .is_err()
                            {
                                refused += 1;
                            }
                        }
                        Polled::End { partition, .. } => {
                            ended[owned.iter().position(|(_, q)| *q == partition).unwrap()] = true
                        }
                        Polled::Failed { .. } => {}
                    });
                    if polled == 0 {
                        // As an engine worker with nothing read parks.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                assert_eq!(refused, 0, "the fixture's records all decode");
                (n, sideline::engine::thread_cpu() - cpu0)
            })
        })
        .collect();
    let (mut events, mut cpu) = (0, Duration::ZERO);
    for r in readers {
        let (n, c) = r.join().unwrap();
        events += n;
        cpu += c;
    }
    (events, t0.elapsed().as_secs_f64(), cpu)
}

/// A `/proc/self/status` size line (`VmRSS:`, `VmHWM:` ...) in MiB (Linux; 0 elsewhere).
fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// This process's CPU time, ended threads included (Linux: utime + stime, in 10 ms ticks).
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // The fields after the command name: state is the first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// 2. Latency under a paced feed.
fn paced() {
    // The bundled games, whatever `REPLAY_EVENTS` names: at 600x a season would take hours.
    let lines = sideline::demo::replicate(&sideline::demo::fixture_events(), 1, 0);
    let (mock, cfg) = setup("latency", 4);
    sideline::metrics::reset_latency();
    let server = start(&cfg, "latency");
    let _sub = subscriber(server.ws_addr);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let feeder = feeder(
        &server,
        mock.bootstrap_servers(),
        "latency",
        lines,
        600.0,
        0,
    );
    server.run_engine(|_| {}).unwrap();
    let (n, secs) = feeder.join().unwrap();
    println!(
        "paced replay at 600x: {n} events over {secs:.1} s ({:.0} events/s offered)",
        n as f64 / secs
    );
    println!("  {}", sideline::metrics::latency_summary());
    server.shutdown();
}

/// 3. Latency at fixed offered rates (those `run` takes).
fn at_fixed_rates(run: &dyn Fn(&str) -> bool) {
    let text = sideline::pipeline::DEFAULT_PIPELINE
        .1
        .replace("allowed-lateness = \"1s\"", "allowed-lateness = \"0s\"")
        .replace("idle-timeout = \"2s\"", "idle-timeout = \"100ms\"");
    assert_ne!(text, sideline::pipeline::DEFAULT_PIPELINE.1);
    let partitions: i32 = std::env::var("REPLAY_PARTITIONS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4);
    let real = std::env::var("BENCH_BROKERS")
        .ok()
        .filter(|b| !b.is_empty());
    println!(
        "fixed offered rates ({}, 100 games, {partitions} partitions, linger.ms {}, allowed-lateness 0, idle-timeout 100 ms):",
        real.as_ref()
            .map_or("mock cluster".to_string(), |b| format!("broker at {b}")),
        linger_ms()
    );
    for (rate, secs) in [(1_000u64, 10u64), (10_000, 10), (100_000, 3)] {
        if !run(&rate.to_string()) {
            continue;
        }
        let lines = at_rate(rate, (rate * (secs + 1)) as usize);
        let topic = format!("rate{rate}-{}", std::process::id());
        let (_mock, cfg) = setup(&topic, partitions);
        let cfg = match &real {
            Some(brokers) => {
                let dead = format!("dead-{topic}");
                common::create_topics(brokers, &[(&topic, partitions), (&dead, 1)]);
                let mut cfg = cfg;
                cfg.kafka.brokers = brokers.clone();
                cfg.kafka.dead_letter_topic = dead;
                cfg.kafka.consumer_options.clear();
                cfg
            }
            None => cfg,
        };
        sideline::metrics::reset_latency();
        let server = start_text(&cfg, &topic, &text);
        let _sub = subscriber(server.ws_addr);
        std::thread::sleep(std::time::Duration::from_millis(300));
        // The first second warms up (consumer assignment, first fetches): not measured.
        let feeder = feeder(
            &server,
            cfg.kafka.brokers.clone(),
            &topic,
            lines,
            1.0,
            rate as usize,
        );
        let stats = server.run_engine(|_| {}).unwrap();
        let (n, secs) = feeder.join().unwrap();
        println!(
            "  {rate} events/s offered: {n} events measured in {secs:.1} s ({:.0}/s sent), {} of {} accepted ({} late, {} rejected)",
            n as f64 / secs,
            stats.accepted,
            n + rate as usize,
            stats.late,
            stats.rejected
        );
        println!("    {}", sideline::metrics::latency_summary());
        server.shutdown();
    }
}

/// Produces `lines` at `speed` times their recorded pace on its own thread, then drains the
/// engine. The first `warm` lines are not measured: latency is reset after them. Returns the
/// lines measured and the seconds they took.
fn feeder(
    server: &App,
    brokers: String,
    topic: &str,
    lines: Vec<String>,
    speed: f64,
    warm: usize,
) -> std::thread::JoinHandle<(usize, f64)> {
    let stop = server.stop.clone();
    let topic = topic.to_string();
    let linger = linger_ms();
    std::thread::spawn(move || {
        let producer = produce::create_producer(
            ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("linger.ms", &linger),
        )
        .unwrap();
        produce::produce_lines(&producer, &topic, &lines[..warm], Pace::Speed(speed), None)
            .unwrap();
        sideline::metrics::reset_latency();
        let t0 = Instant::now();
        produce::produce_lines(&producer, &topic, &lines[warm..], Pace::Speed(speed), None)
            .unwrap();
        stop.drain();
        (lines.len() - warm, t0.elapsed().as_secs_f64())
    })
}

/// The producers' `linger.ms`: `REPLAY_LINGER_MS`, 2 by default (librdkafka's default is 5; 0
/// sends one record per request, which neither broker here keeps up with at 10k records/s).
fn linger_ms() -> String {
    std::env::var("REPLAY_LINGER_MS").unwrap_or_else(|_| "2".into())
}

/// `n` events of 100 games in progress at a time (the bundled games, copies with shifted ids,
/// a new one starting when one ends), one play per game in turn, event `i` at `i / rate` s.
fn at_rate(rate: u64, n: usize) -> Vec<String> {
    use sideline::event::GameEvent;
    use std::collections::VecDeque;
    let fixture = sideline::demo::fixture_events();
    let copies = n / fixture.len() + 5;
    let mut games: std::collections::BTreeMap<String, Vec<GameEvent>> = Default::default();
    for k in 0..copies {
        for e in &fixture {
            let mut e = e.clone();
            e.game_id = format!("{}-{k}", e.game_id);
            games.entry(e.game_id.clone()).or_default().push(e);
        }
    }
    let mut waiting: VecDeque<VecDeque<GameEvent>> = games
        .into_values()
        .map(|mut g| {
            g.sort_by_key(|e| e.seq);
            g.into()
        })
        .collect();
    let mut live: Vec<VecDeque<GameEvent>> = waiting.drain(..100).collect();
    let mut out = Vec::with_capacity(n);
    let mut g = 0;
    while out.len() < n {
        if live[g].is_empty() {
            live[g] = waiting.pop_front().expect("enough copies");
        }
        let mut e = live[g].pop_front().expect("a game has events");
        e.event_time_ms = 1_700_000_000_000 + out.len() as u64 * 1000 / rate;
        out.push(serde_json::to_string(&e).unwrap());
        g = (g + 1) % live.len();
    }
    out
}
