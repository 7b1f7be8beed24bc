//! Memory against running time (issue 7: "memory bounded by what the windows hold, not by how
//! long the engine has run"). The NFL pipeline's whole dataflow on one worker (assigners,
//! windows, facts, scoring with `nfl_wp/v1`, detectors, values to a drained sink) fed the 32
//! bundled games again and again, each round 12 days of event time later with new game ids:
//! a season's worth of games in event-time order, as a live engine would see them. Every 1,024
//! events the input advances to the latest event time and ended games are released the way the
//! engine's workers release them (`engine::games::Games`).
//!
//! Printed: games held and the process's resident memory after each round, with the shipped
//! retention (6 h) and with a retention nothing reaches (what the engine did before games were
//! released). RSS includes what the allocator keeps, so read the trend, not the bytes.
//!
//! Run with: cargo bench --bench memory [-- ROUNDS]   (default 16 rounds = 94k events)

/// The binary's allocator (`src/main.rs`), so the figures are what it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::Duration;

use sideline::dataflow::{self, Model, SinkMsg};
use sideline::engine::games::Games;
use sideline::event::GameEvent;
use sideline::pipeline::window::Updates;
use sideline::pipeline::Registry;

const BATCH: usize = 1024;
/// Event time between two rounds: the fixture spans 11 days.
const ROUND_MS: u64 = 12 * 24 * 3600 * 1000;

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn run(label: &str, retention: Duration, rounds: usize, fixture: &[GameEvent]) {
    let mut plan = sideline::pipeline::plan::plan(
        "nfl_win_probability.toml",
        sideline::pipeline::DEFAULT_PIPELINE.1,
        &Registry::new(None),
    )
    .expect("the shipped pipeline compiles");
    plan.time.retention = retention;
    let plan = Arc::new(plan);
    let model = Arc::new(Model::for_plan(&plan, &Registry::new(None)).expect("model loads"));
    let fixture = fixture.to_vec();
    let label = label.to_string();
    timely::execute_directly(move |worker| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<SinkMsg>(1 << 16);
        let drain = std::thread::spawn(move || rx.iter().count());
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            dataflow::build(
                scope,
                plan.clone(),
                model.clone(),
                None,
                0,
                Some(tx),
                Default::default(),
            )
        });
        let mut games = Games::new(&plan);
        let mut updates = Updates::default();
        let mut fed = 0usize;
        println!("  {label}");
        println!(
            "    {:>6} {:>9} {:>11} {:>9}",
            "round", "events", "games held", "RSS MiB"
        );
        for round in 0..rounds {
            for ev in &fixture {
                let mut ev = ev.clone();
                ev.game_id = format!("{}-{round}", ev.game_id);
                ev.event_time_ms += round as u64 * ROUND_MS;
                let t = ev.event_time_ms;
                if t > *input.time() && fed.is_multiple_of(BATCH) {
                    input.advance_to(t);
                    games.close_until(t, &mut updates);
                }
                games.apply(&plan, ev.key(), &ev, t.max(*input.time()), 0, &mut updates);
                input.feed(&mut updates);
                fed += 1;
                if fed.is_multiple_of(BATCH) {
                    input.flush();
                    worker.step_while(|| probe.less_than(input.time()));
                }
            }
            if (round + 1).is_power_of_two() || round + 1 == rounds {
                println!(
                    "    {:>6} {:>9} {:>11} {:>9.1}",
                    round + 1,
                    fed,
                    games.len(),
                    rss_mib()
                );
            }
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
        drop(probe);
        drop(drain);
    });
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(16);
    let mut fixture: Vec<GameEvent> = sideline::demo::fixture_events();
    fixture.sort_by(|a, b| {
        (a.event_time_ms, &a.game_id, a.seq).cmp(&(b.event_time_ms, &b.game_id, b.seq))
    });
    // Each retention in its own process, so that one's allocator pages don't count in the
    // other's figures.
    match std::env::var("MEMORY_BENCH_RETENTION_H")
        .ok()
        .and_then(|h| h.parse::<u64>().ok())
    {
        Some(hours) => {
            let label = match hours {
                6 => "retention 6h (shipped): ended games released",
                _ => "retention 100000h: nothing released (the engine before release)",
            };
            run(label, Duration::from_secs(hours * 3600), rounds, &fixture);
        }
        None => {
            println!(
                "memory: the NFL pipeline's dataflow, 1 worker, {rounds} rounds of the {} bundled \
                 events (32 games; rounds 12 days of event time apart)",
                fixture.len()
            );
            for hours in [6u64, 100_000] {
                let status = std::process::Command::new(std::env::current_exe().expect("exe"))
                    .arg(rounds.to_string())
                    .env("MEMORY_BENCH_RETENTION_H", hours.to_string())
                    .status()
                    .expect("the bench runs itself");
                assert!(status.success());
            }
        }
    }
}
