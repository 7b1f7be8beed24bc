//! Isolates record decoding: the bundled NFL fixture's records (real plays, descriptions
//! included), each decoded and validated as the engine decodes a Kafka record
//! (`format::json::decode`), against serde_json parsing the same bytes into nothing
//! (`IgnoredAny`: the parser alone, no fields kept, no strings allocated, no checks).
//!
//! Run with: cargo bench --bench decode

/// The binary's allocator (`src/main.rs`), so the figures are what it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Instant;

/// Rounds over the fixture; the median round is reported.
const ROUNDS: usize = 21;

fn main() {
    let lines = sideline::demo::replicate(&sideline::demo::fixture_events(), 1, 0);
    let bytes: usize = lines.iter().map(String::len).sum();
    println!(
        "decode: {} records of the bundled NFL fixture, {:.0} bytes on average, median of {ROUNDS} rounds",
        lines.len(),
        bytes as f64 / lines.len() as f64
    );
    let report = |what: &str, f: &dyn Fn(&[u8]) -> bool| {
        let mut rounds: Vec<f64> = (0..ROUNDS)
            .map(|_| {
                let t0 = Instant::now();
                let ok = lines.iter().filter(|l| f(l.as_bytes())).count();
                let secs = t0.elapsed().as_secs_f64();
                assert_eq!(ok, lines.len(), "every fixture record decodes");
                secs
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        let secs = rounds[ROUNDS / 2];
        println!(
            "  {what}: {:.0} ns/record, {:.0} records/s, {:.0} MB/s",
            secs * 1e9 / lines.len() as f64,
            lines.len() as f64 / secs,
            bytes as f64 / secs / 1e6
        );
    };
    report("engine decode (parse, fields, checks)", &|b| {
        sideline::format::json::decode(b, 1 << 20).is_ok()
    });
    report("serde_json parse only (IgnoredAny)", &|b| {
        serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
    });
}
