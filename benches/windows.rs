//! Isolates the feature path of the shipped NFL pipeline: decoding and order checks
//! (`Ingest`), window assignment (`GameAssigner`), and the differential reduce that keeps
//! every window's aggregate (`aggregate_slots`), on one
//! timely worker, with no Kafka and no model. Synthetic games from a fixed seed.
//!
//! Run with: cargo bench --bench windows

/// The binary's allocator (`src/main.rs`), so the figures are what it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use std::collections::HashMap;

use sideline::config::LatePolicy;
use sideline::dataflow::features::slot_values;
use sideline::event::{EventKind, GameEvent, Sport};
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

fn main() {
    let (games, plays) = (500, 180);
    let records = feed(games, plays);
    let n = records.len();
    let plan = sideline::pipeline::plan::plan(
        "nfl.toml",
        sideline::pipeline::DEFAULT_PIPELINE.1,
        &sideline::pipeline::Registry::new(None),
    )
    .unwrap();
    let t0 = Instant::now();
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
        let mut decode = Duration::ZERO;
        let start = Instant::now();
        for (i, payload) in records.iter().enumerate() {
            let d0 = Instant::now();
            let rec = Record {
                topic: "bench",
                partition: 0,
                offset: i as i64,
                timestamp_ms: None,
                key: None,
                payload,
            };
            let a = ingest.accept(&rec, *input.time()).unwrap();
            let key = a.event.key();
            games_state
                .entry(key.clone())
                .or_insert_with(|| GameAssigner::new(&plan, key))
                .apply(&plan, &a.event, a.time, a.ingest_ms, &mut updates);
            decode += d0.elapsed();
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
        let total = start.elapsed();
        println!(
            "windows (NFL pipeline: {} features): {n} events, {games} games, 1 worker",
            plan.features.len()
        );
        println!(
            "  decode + order check + window assignment: {:>10.0} events/s",
            n as f64 / decode.as_secs_f64()
        );
        println!(
            "  whole path incl. the reduce:              {:>10.0} events/s ({:.1} ms)",
            n as f64 / total.as_secs_f64(),
            total.as_secs_f64() * 1e3
        );
    })
    .unwrap();
    println!("  wall: {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
}
