//! Run with: cargo run --release --example fanout -- [--subscribers 1000,10000] [--rates 1,10]
//!           [--games 100] [--seconds 20] [--warmup 5] [--server-threads 1] [--queue 1024]
//!
//! Fan-out load (issue 7, part 4): isolates the hub and the WebSocket server, with no engine.
//! For each (subscribers N, rate R) it starts three kinds of process, all this same binary:
//!
//! - a **server** (`--role server`): a `sideline::hub::Hub` and `sideline::ws::serve` on
//!   127.0.0.1 (the shipped `WsConfig`, on a tokio runtime of `--server-threads` workers, as
//!   `App` runs it; `--queue`: the hub's per-subscriber queue), and a publisher thread that publishes synthetic deltas for `--games` live
//!   games at R deltas/s per game on channel `nfl.win_probability` (phases spread over the
//!   second, batches every millisecond or so). Each delta carries its per-game number in
//!   `event_seq` and the wall-clock microsecond it was handed to `Hub::publish` in its first
//!   `changed` entry (`published_us`); its frame is about as big as a real NFL delta.
//! - **clients** (`--role client`): N WebSocket subscribers spread over several processes
//!   (at most 2,500 each, up to 8), process k bound to source address 127.0.0.(2+k) so no
//!   process nears its 20,000 open files or a source address its ephemeral ports. Each
//!   subscriber follows 1-3 games (uniform, fixed seed) with one `subscribe` and a `games`
//!   filter. It checks that the channel seq rises and that every followed game's `event_seq`
//!   runs 1, 2, 3, ... without a gap up to the last published (a resync snapshot counts as a
//!   loss), and records publish-to-receive latency in an HDR histogram.
//! - this **coordinator**: waits for every subscriber's snapshot, reads the server's RSS before
//!   the first connection and after the last snapshot (memory per subscriber = the difference /
//!   N, idle, nothing published yet), starts publishing for `--seconds` (the first `--warmup`
//!   seconds are not in the histogram), reads the CPU time of the server and the clients from
//!   /proc over that span, then collects every client's figures and merges the histograms.
//!
//! Latency is from `Hub::publish` being called to the client's task parsing the frame: the
//! hub's encode and fan-out, the session's write, loopback TCP, and the client's own
//! scheduling. On a 2-core machine the clients compete with the server for the same cores, so
//! the figures are an upper bound on what the server alone would show.

/// The binary's allocator (`src/main.rs`), so the server's figures are what it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod coordinator;
mod server;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};

const CHANNEL: &str = "nfl.win_probability";
/// Subscribers per client process at most, and client processes at most (one per source
/// address 127.0.0.2 ... 127.0.0.9).
const PER_PROCESS: usize = 2_500;
const MAX_PROCESSES: usize = 8;
/// Handshakes in flight per client process.
const CONNECTING: usize = 128;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn game_name(g: usize) -> String {
    format!("g{g:03}")
}

/// The games subscriber `id` follows: 1-3 distinct games, from a fixed seed.
fn followed(id: u64, games: usize) -> Vec<usize> {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5eed;
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let k = 1 + (next() % 3) as usize;
    let mut out: Vec<usize> = Vec::with_capacity(k);
    while out.len() < k.min(games) {
        let g = (next() % games as u64) as usize;
        if !out.contains(&g) {
            out.push(g);
        }
    }
    out
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("{name} needs a value")),
        None => Ok(default),
    }
}

fn list(args: &[String], name: &str, default: &str) -> anyhow::Result<Vec<usize>> {
    let text: String = arg(args, name, default.to_string())?;
    text.split(',')
        .map(|x| x.trim().parse().with_context(|| format!("{name}: {x}")))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match arg(&args, "--role", String::from("coordinator"))?.as_str() {
        "server" => server::server(&args),
        "client" => client::client(&args),
        "coordinator" => coordinator::coordinator(&args),
        other => bail!("unknown --role {other}"),
    }
}
