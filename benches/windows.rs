//! Isolates the feature path: decoding and order checks (`Ingest`), window assignment
//! (`GameAssigner`, which aggregates the windows that change only at events), and the
//! dataflow that keeps the time-driven windows' aggregates (`slot_values`), on one timely
//! worker, with no Kafka and no model. Synthetic games from a fixed seed.
//!
//! 1. The shipped NFL pipeline's features.
//! 2. Window update per aggregate kind: a pipeline of one game feature for every (window
//!    kind, aggregate) pair the planner accepts, over the same records; the cost of
//!    assignment and dataflow per event, decoding and order checks left out (timed apart).
//!
//! Run with: cargo bench --bench windows (`WINDOWS_ONLY=nfl` or `=aggregates` for one part)

/// The binary's allocator (`src/main.rs`), so the figures are what it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use std::collections::HashMap;

use sideline::config::LatePolicy;
use sideline::dataflow::features::slot_values;
use sideline::event::{EventKind, GameEvent, Sport};
use sideline::pipeline::plan::Plan;
use sideline::pipeline::window::{GameAssigner, Updates};
use sideline::source::ingest::{Ingest, Record};
use timely::dataflow::operators::Probe;

/// xorshift64*: a fixed-seed generator, so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn feed(games: usize, plays: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x5eed);
    let mut out = Vec::with_capacity(games * plays);
    let mut scores = vec![(0u32, 0u32); games];
    for p in 0..plays {
        for (g, score) in scores.iter_mut().enumerate() {
            let r = rng.next();
            match r % 20 {
                0 => score.0 += 7,
                1 => score.1 += 3,
                _ => {}
            }
            let mut stats = std::collections::BTreeMap::new();
            stats.insert("down".to_string(), (1 + r % 4) as f64);
            stats.insert("distance".to_string(), (1 + (r >> 8) % 15) as f64);
            stats.insert("yards_to_goal".to_string(), (1 + (r >> 16) % 99) as f64);
            stats.insert("yards_gained".to_string(), ((r >> 24) % 30) as f64 - 5.0);
            let ev = GameEvent {
                sport: Sport::Nfl,
                game_id: format!("g{g:05}"),
                seq: p as u64 + 1,
                event_time_ms: 1_000_000 + p as u64 * 20_000 + g as u64,
                period: 1 + (p * 4 / plays) as u32,
                clock_ms: 900_000 - ((p * 4) % plays) as u64 * 900_000 / plays as u64,
                kind: EventKind::Play,
                home: "HOM".into(),
                away: "AWY".into(),
                team: Some(if r & 1 == 0 { "HOM" } else { "AWY" }.into()),
                player: None,
                home_score: score.0,
                away_score: score.1,
                stats,
                odds: None,
                description: None,
            };
            out.push(serde_json::to_vec(&ev).unwrap());
        }
    }
    out
}

/// What one run over `records` took: decoding and order checks, window assignment, and the
/// whole path (both, the dataflow, and feeding it).
struct Timings {
    ingest: Duration,
    assign: Duration,
    total: Duration,
}

/// `records` (`games` games, round-robin) through ingest, the assigners and the dataflow of
/// `plan` on one worker, the input advanced after every round of plays.
fn run(plan: &Plan, records: &[Vec<u8>], games: usize) -> Timings {
    let plan = plan.clone();
    let records = records.to_vec();
    timely::execute(timely::Config::thread(), move |worker| {
        let plan2 = plan.clone();
        let (mut input, probe) = worker.dataflow::<u64, _, _>(move |scope| {
            let (input, values) = slot_values(scope, &plan2);
            let probe = timely::dataflow::ProbeHandle::new();
            values.inner.probe_with(&probe);
            (input, probe)
        });
        let mut games_state: HashMap<sideline::event::GameKey, GameAssigner> = HashMap::new();
        let mut ingest = Ingest::new(
            1 << 16,
            Duration::ZERO,
            Duration::from_secs(1),
            LatePolicy::DeadLetter,
        );
        let mut updates = Updates::default();
        let (mut ingest_time, mut assign_time) = (Duration::ZERO, Duration::ZERO);
        let start = Instant::now();
        for (i, payload) in records.iter().enumerate() {
            let t0 = Instant::now();
            let rec = Record {
                topic: "bench",
                partition: 0,
                offset: i as i64,
                timestamp_ms: None,
                key: None,
                payload,
            };
            let a = ingest.accept(&rec, *input.time()).unwrap();
            let t1 = Instant::now();
            let key = a.event.key();
            games_state
                .entry(key.clone())
                .or_insert_with(|| GameAssigner::new(&plan, key))
                .apply(&plan, &a.event, a.time, a.ingest_ms, &mut updates);
            let t2 = Instant::now();
            ingest_time += t1 - t0;
            assign_time += t2 - t1;
            input.feed(&mut updates);
            // Advance once per round of plays: every game changed at that time is one batch.
            if (i + 1) % games == 0 {
                let t = 1_000_000 + ((i + 1) / games) as u64 * 20_000;
                input.advance_to(t);
                input.flush();
                while probe.less_than(input.time()) {
                    worker.step();
                }
            }
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
        Timings {
            ingest: ingest_time,
            assign: assign_time,
            total: start.elapsed(),
        }
    })
    .unwrap()
    .join()
    .into_iter()
    .next()
    .expect("one worker")
    .expect("the worker ran")
}

fn main() {
    let (games, plays) = (500, 180);
    let records = feed(games, plays);
    let n = records.len();
    let only = std::env::var("WINDOWS_ONLY").unwrap_or_default();
    if only.is_empty() || only == "nfl" {
        let plan = sideline::pipeline::plan::plan(
            "nfl.toml",
            sideline::pipeline::DEFAULT_PIPELINE.1,
            &sideline::pipeline::Registry::new(None),
        )
        .unwrap();
        let t = run(&plan, &records, games);
        println!(
            "windows (NFL pipeline: {} features): {n} events, {games} games, 1 worker",
            plan.features.len()
        );
        println!(
            "  decode + order check + window assignment: {:>10.0} events/s",
            n as f64 / (t.ingest + t.assign).as_secs_f64()
        );
        println!(
            "  whole path incl. the reduce:              {:>10.0} events/s ({:.1} ms)",
            n as f64 / t.total.as_secs_f64(),
            t.total.as_secs_f64() * 1e3
        );
    }
    if only.is_empty() || only == "aggregates" {
        aggregates(&records, games);
    }
}

/// Window kinds, each with the parameters it takes (5 minutes, 10 events, 3 possessions; the
/// feed has a play every 20 s of event time).
const WINDOWS: [(&str, &str); 8] = [
    ("tumbling", r#"{ kind = "tumbling", size = "5m" }"#),
    (
        "hopping",
        r#"{ kind = "hopping", size = "5m", slide = "1m" }"#,
    ),
    ("sliding", r#"{ kind = "sliding", size = "5m" }"#),
    ("session", r#"{ kind = "session", gap = "2m" }"#),
    ("game-clock", r#"{ kind = "game-clock", size = "5m" }"#),
    ("events", r#"{ kind = "events", count = 10 }"#),
    ("possessions", r#"{ kind = "possessions", count = 3 }"#),
    ("game", r#"{ kind = "game" }"#),
];

const AGGREGATES: [&str; 11] = [
    "count", "sum", "mean", "min", "max", "first", "last", "stddev", "distinct", "ewma", "rate",
];

/// Part 2: per (window, aggregate), ns per event of assignment plus dataflow.
fn aggregates(records: &[Vec<u8>], games: usize) {
    let n = records.len();
    println!(
        "window update per aggregate kind: one game feature (value stats.yards_gained), {n} events, {games} games, 1 worker; ns/event of window assignment + dataflow (decoding and order checks, timed apart, left out)"
    );
    print!("  {:<12}", "");
    for a in AGGREGATES {
        print!("{a:>9}");
    }
    println!();
    let mut refused = Vec::new();
    for (kind, window) in WINDOWS {
        print!("  {kind:<12}");
        for aggregate in AGGREGATES {
            let value = match aggregate {
                "count" | "rate" => "",
                _ => "value = \"stats.yards_gained\"\n",
            };
            let alpha = if aggregate == "ewma" {
                "alpha = 0.5\n"
            } else {
                ""
            };
            let text = format!(
                "[pipeline]\nname = \"bench\"\nversion = 1\nsport = \"nfl\"\n\
                 [source]\ntopics = [\"t\"]\n\
                 [[feature]]\nname = \"f\"\n{value}window = {window}\naggregate = \"{aggregate}\"\n{alpha}\
                 [model]\nexpr = \"f\"\n\
                 [[output]]\nkind = \"websocket\"\nchannel = \"c\"\n"
            );
            match sideline::pipeline::plan::plan(
                "bench.toml",
                &text,
                &sideline::pipeline::Registry::new(None),
            ) {
                Ok(plan) => {
                    let t = run(&plan, records, games);
                    let window_ns = (t.total - t.ingest).as_secs_f64() * 1e9 / n as f64;
                    print!("{window_ns:>9.0}");
                }
                Err(e) => {
                    print!("{:>9}", "-");
                    refused.push(format!(
                        "{kind}/{aggregate}: {}",
                        e.to_string().lines().next().unwrap_or("")
                    ));
                }
            }
        }
        println!();
    }
    for r in refused {
        println!("  refused: {r}");
    }
}
