//! Isolates delta encoding: the golden delta logs of every shipped pipeline
//! (`tests/golden/*/expected.jsonl`, what the engine publishes for the bundled games of each
//! sport) encoded to JSON (`serde_json::to_vec`, what each frame carries), and published into a
//! hub with no subscriber (`Hub::publish`: the frame encoded once per delta, the channel's
//! resume history and snapshot kept), in the publisher's batches of 64. Fan-out to sockets is
//! the `fanout` example's.
//!
//! Run with: cargo bench --bench deltas

/// The binary's allocator (`src/main.rs`), so the figures are what it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

use sideline::delta::Delta;
use sideline::hub::{Hub, HubConfig};

/// Rounds over each log; the median round is reported.
const ROUNDS: usize = 11;
/// Deltas per `Hub::publish` call.
const BATCH: usize = 64;

const LOGS: [(&str, &str); 6] = [
    (
        "nfl_win_probability",
        include_str!("../tests/golden/nfl_win_probability/expected.jsonl"),
    ),
    (
        "soccer_match_result",
        include_str!("../tests/golden/soccer_match_result/expected.jsonl"),
    ),
    (
        "nba_win_probability",
        include_str!("../tests/golden/nba_win_probability/expected.jsonl"),
    ),
    (
        "nhl_win_probability",
        include_str!("../tests/golden/nhl_win_probability/expected.jsonl"),
    ),
    (
        "mlb_win_probability",
        include_str!("../tests/golden/mlb_win_probability/expected.jsonl"),
    ),
    (
        "cricket_odds",
        include_str!("../tests/golden/cricket_odds/expected.jsonl"),
    ),
];

/// The median over `ROUNDS` of `f`'s seconds.
fn median(mut f: impl FnMut()) -> f64 {
    let mut secs: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(f64::total_cmp);
    secs[ROUNDS / 2]
}

fn main() {
    println!(
        "deltas: golden delta logs, median of {ROUNDS} rounds; ns per delta to JSON, and published (batches of {BATCH}) into a hub with no subscriber"
    );
    for (name, log) in LOGS {
        let deltas: Vec<Delta> = log
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("a golden delta"))
            .collect();
        let n = deltas.len();
        let bytes: usize = deltas
            .iter()
            .map(|d| serde_json::to_vec(d).unwrap().len())
            .sum();
        let encode = median(|| {
            for d in &deltas {
                std::hint::black_box(serde_json::to_vec(d).unwrap());
            }
        });
        let ingest = vec![None; BATCH];
        let publish = median(|| {
            let hub = Hub::new(HubConfig::default());
            for chunk in deltas.chunks(BATCH) {
                hub.publish("c", chunk, &ingest[..chunk.len()]);
            }
            assert_eq!(hub.seq("c"), deltas.last().map(|d| d.seq));
        });
        println!(
            "  {name:<22} {n:>6} deltas, {:>4.0} bytes on average: to JSON {:>5.0} ns/delta ({:.0} MB/s), published {:>5.0} ns/delta",
            bytes as f64 / n as f64,
            encode * 1e9 / n as f64,
            bytes as f64 / encode / 1e6,
            publish * 1e9 / n as f64,
        );
    }
}
