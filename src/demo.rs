//! `sideline demo`: the whole path on one machine with nothing installed. librdkafka's mock
//! cluster runs in-process; the bundled real NFL games are replayed into it at a chosen speed;
//! the engine and the WebSocket server run against it; each delta is printed as a line.

use std::collections::HashMap;
use std::path::PathBuf;

use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;

use crate::app::{self, App};
use crate::config::Config;
use crate::delta::Delta;
use crate::event::{GameEvent, GameKey};
use crate::produce::{self, Pace};

/// The consumers' `fetch.wait.max.ms` on the embedded mock cluster (unless configured). The mock
/// holds a fetch that finds no new records for the whole wait, even when records arrive
/// meanwhile (`rdkafka_mock_handlers.c`: "This isn't strictly correct"); a broker answers as
/// soon as they do. At the engine's 10 ms default that wait was most of the event-to-socket
/// latency (`benches/replay.rs`, 10k events/s: p50 13 ms -> 6 ms).
pub const MOCK_FETCH_WAIT_MS: &str = "1";

/// The bundled fixture: real 2018 NFL games as GameEvent JSON lines (see
/// examples/data/nfl/LICENSE.md).
pub const FIXTURE: &str = include_str!("../examples/data/nfl/games.jsonl");

/// The bundled games as events, in feed order.
pub fn fixture_events() -> Vec<GameEvent> {
    FIXTURE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("the bundled fixture is valid"))
        .collect()
}

/// `events` `copies` times over, each copy's game ids suffixed `-k` and its event times moved
/// `k * shift_ms` later, as JSON lines in feed order (event time, game, seq): more games, same
/// feed. With no shift every copy's events share their times. For tests and benchmarks.
pub fn replicate(events: &[GameEvent], copies: usize, shift_ms: u64) -> Vec<String> {
    let mut out: Vec<GameEvent> = Vec::with_capacity(events.len() * copies);
    for k in 0..copies {
        out.extend(events.iter().cloned().map(|mut e| {
            e.game_id = format!("{}-{k}", e.game_id);
            e.event_time_ms += k as u64 * shift_ms;
            e
        }));
    }
    out.sort_by(|a, b| {
        (a.event_time_ms, &a.game_id, a.seq).cmp(&(b.event_time_ms, &b.game_id, b.seq))
    });
    out.iter()
        .map(|e| serde_json::to_string(e).expect("events serialise"))
        .collect()
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Replay speed (x recorded pace); 0 = as fast as possible. Default: demo.speed.
    #[arg(long)]
    pub speed: Option<f64>,
    /// Use this Kafka cluster instead of the in-process mock cluster.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Replay this JSON-lines feed instead of the bundled games.
    #[arg(long)]
    pub feed: Option<PathBuf>,
    /// Also write every delta as a JSON line to this file.
    #[arg(long)]
    pub delta_log: Option<PathBuf>,
    /// Topic to replay the feed into (default: the first topic of the NFL pipeline).
    #[arg(long)]
    pub topic: Option<String>,
    /// Print nothing per delta.
    #[arg(long)]
    pub quiet: bool,
    /// Keep serving WebSocket subscribers after the replay, until Ctrl-C.
    #[arg(long)]
    pub linger: bool,
}

pub fn run(args: DemoArgs, mut cfg: Config) -> anyhow::Result<()> {
    let feed = match &args.feed {
        Some(p) => std::fs::read_to_string(p)?,
        None => FIXTURE.to_string(),
    };
    let lines: Vec<String> = feed
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    let events: Vec<GameEvent> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let registry = app::registry(&cfg);
    let plans = app::configured_plans(&cfg, &registry)?;
    let topic = match &args.topic {
        Some(t) => t.clone(),
        None => plans
            .iter()
            .find(|p| p.sport == crate::event::Sport::Nfl)
            .or(plans.first())
            .and_then(|p| p.topics.first().cloned())
            .ok_or_else(|| anyhow::anyhow!("no pipeline deployed"))?,
    };
    let channels: Vec<String> = plans
        .iter()
        .flat_map(|p| p.outputs.iter())
        .filter_map(|o| match o {
            crate::pipeline::plan::Output::WebSocket { channel } => Some(channel.clone()),
            _ => None,
        })
        .collect();

    // Keep the mock cluster alive for the whole run: dropping it stops its brokers.
    let _mock = match args.brokers.clone() {
        Some(b) => {
            cfg.kafka.brokers = b;
            None
        }
        None => {
            let mock = MockCluster::new(1)?;
            let mut topics: Vec<&String> = plans.iter().flat_map(|p| p.topics.iter()).collect();
            topics.push(&topic);
            topics.sort();
            topics.dedup();
            for t in topics {
                mock.create_topic(t, cfg.demo.partitions, 1)?;
            }
            mock.create_topic(&cfg.kafka.dead_letter_topic, 1, 1)?;
            cfg.kafka.brokers = mock.bootstrap_servers();
            if !cfg.kafka.options.contains_key("fetch.wait.max.ms") {
                cfg.kafka
                    .consumer_options
                    .entry("fetch.wait.max.ms".into())
                    .or_insert_with(|| MOCK_FETCH_WAIT_MS.into());
            }
            Some(mock)
        }
    };
    let speed = args.speed.unwrap_or(cfg.demo.speed);
    let pace = if speed > 0.0 {
        Pace::Speed(speed)
    } else {
        Pace::Max
    };

    let server = App::start(&cfg)?;
    server.deploy_configured()?;
    let games: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.game_id.as_str()).collect();
    println!(
        "sideline demo: {} events of {} real NFL games, replayed at {}",
        events.len(),
        games.len(),
        if speed > 0.0 {
            format!("{speed}x recorded pace")
        } else {
            "full speed".into()
        }
    );
    println!("  kafka:     {} (topic {topic})", cfg.kafka.brokers);
    println!(
        "  websocket: ws://{}   send {{\"op\":\"subscribe\",\"channel\":\"{}\"}}",
        server.ws_addr,
        channels.first().map_or("", String::as_str)
    );
    if let Some(a) = server.admin_addr {
        println!("  admin:     http://{a}/pipelines   (sideline deploy FILE)");
    }
    if !cfg.server.metrics_listen.is_empty() {
        println!("  metrics:   http://{}/metrics", cfg.server.metrics_listen);
    }
    println!();

    let producer = produce::create_producer(
        ClientConfig::new()
            .set("bootstrap.servers", &cfg.kafka.brokers)
            .set("linger.ms", "1"),
    )?;
    let stop = server.stop.clone();
    let feeder = std::thread::Builder::new()
        .name("sideline-demo-feed".into())
        .spawn(move || {
            let r = produce::produce_lines(&producer, &topic, &lines, pace, None);
            // The feed is complete: stop once the engine has read it all.
            stop.drain();
            r
        })?;

    let printer = printer(&events, args.quiet);
    let mut log = match &args.delta_log {
        Some(p) => Some(app::delta_logger(p)?),
        None => None,
    };
    let on_delta = move |d: &Delta| {
        if let Some(l) = log.as_mut() {
            l(d);
        }
        printer(d);
    };
    let stats = server.run_engine(on_delta)?;
    let produced = feeder
        .join()
        .map_err(|_| anyhow::anyhow!("feed thread panicked"))??;
    println!();
    println!(
        "replayed {} records: {} accepted, {} rejected, {} late; {} deltas published",
        stats.records,
        stats.accepted,
        stats.rejected,
        stats.late,
        channels
            .iter()
            .filter_map(|c| server.hub.seq(c))
            .sum::<u64>()
    );
    let _ = produced;
    println!("{}", crate::metrics::latency_summary());
    if args.linger {
        println!("serving ws://{} until Ctrl-C", server.ws_addr);
        let stop = server.stop.clone();
        while !stop.is_stopped() {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    server.shutdown();
    Ok(())
}

/// A readable line per delta, with the play that caused it.
fn printer(events: &[GameEvent], quiet: bool) -> impl Fn(&Delta) + Send + 'static {
    let mut by_id: HashMap<(GameKey, u64), (String, String)> = HashMap::new();
    for e in events {
        let desc = e
            .description
            .clone()
            .unwrap_or_else(|| format!("{:?}", e.kind));
        let clock = format!(
            "Q{} {:02}:{:02}",
            e.period,
            e.clock_ms / 60_000,
            (e.clock_ms / 1000) % 60
        );
        by_id.insert(
            (e.key(), e.seq),
            (format!("{}@{} {clock}", e.away, e.home), desc),
        );
    }
    move |d: &Delta| {
        if quiet {
            return;
        }
        let key = GameKey {
            sport: d.sport,
            game_id: d.game_id.clone(),
        };
        let (head, desc) = by_id.get(&(key, d.event_seq)).cloned().unwrap_or_default();
        let old = d.old.map_or("  -  ".to_string(), |o| format!("{o:.3}"));
        let mut why: Vec<String> = d
            .changed
            .iter()
            .filter(|c| &*c.feature != "seconds_remaining")
            .map(|c| match c.from {
                Some(from) => format!("{} {}→{}", c.feature, short(from), short(c.to)),
                None => format!("{} {}", c.feature, short(c.to)),
            })
            .collect();
        why.truncate(3);
        let mut desc = desc;
        if desc.len() > 70 {
            let cut = (0..=70)
                .rev()
                .find(|i| desc.is_char_boundary(*i))
                .unwrap_or(0);
            desc.truncate(cut);
            desc.push('…');
        }
        println!(
            "#{:<6} {} {:<20} home win {old} → {:.3}  [{}]  {desc}",
            d.seq,
            d.game_id,
            head,
            d.new,
            why.join(", ")
        );
    }
}

/// A feature value as people read it: integers without decimals, others with 3.
fn short(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x}")
    } else {
        format!("{x:.3}")
    }
}
