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

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use sideline::delta::{Delta, DeltaCause, FeatureChange};
use sideline::event::Sport;
use tokio_tungstenite::tungstenite::Message;

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
        "server" => server(&args),
        "client" => client(&args),
        "coordinator" => coordinator(&args),
        other => bail!("unknown --role {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Server: hub + WebSocket server + publisher.

fn server(args: &[String]) -> anyhow::Result<()> {
    let games: usize = arg(args, "--games", 100)?;
    let rate: f64 = arg(args, "--rate", 1.0)?;
    let threads: usize = arg(args, "--server-threads", 1)?;
    let queue: usize = arg(
        args,
        "--queue",
        sideline::hub::HubConfig::default().queue_capacity,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let hub = sideline::hub::Hub::new(sideline::hub::HubConfig {
        queue_capacity: queue,
        ..sideline::hub::HubConfig::default()
    });
    hub.ensure_channel(CHANNEL);
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    runtime.spawn(sideline::ws::serve(
        listener,
        Arc::clone(&hub),
        sideline::ws::WsConfig::default(),
    ));

    let mut lines = std::io::stdin().lock().lines();
    while let Some(line) = lines.next().transpose()? {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("go") => {
                let secs: f64 = words.next().unwrap_or("10").parse()?;
                let last = publish(&hub, games, rate, Duration::from_secs_f64(secs));
                let finals: Vec<String> = last.iter().map(u64::to_string).collect();
                println!(
                    "done {} {} {}",
                    hub.max_queued(),
                    hub.resyncs(),
                    finals.join(",")
                );
                std::io::stdout().flush()?;
            }
            Some("quit") | None => break,
            Some(other) => bail!("server: unknown command {other}"),
        }
    }
    Ok(())
}

/// A synthetic delta about as big as a real one (a probability and a few changed features).
fn delta(seq: u64, game: usize, event_seq: u64, published_us: u64) -> Delta {
    let game_id = game_name(game);
    let p = 0.5 + 0.4 * ((event_seq as f64) * 0.37).sin();
    Delta {
        seq,
        id: sideline::delta::delta_id(
            "nfl_win_probability",
            1,
            Sport::Nfl,
            &game_id,
            published_us / 1000,
            seq,
        ),
        pipeline: "nfl_win_probability".into(),
        version: 1,
        sport: Sport::Nfl,
        game_id,
        event_time_ms: published_us / 1000,
        event_seq,
        old: Some(p - 0.01),
        new: p,
        model_version: "nfl_wp/v1".into(),
        cause: DeltaCause::Moved,
        changed: vec![
            FeatureChange {
                feature: "published_us".into(),
                from: None,
                to: published_us as f64,
            },
            FeatureChange {
                feature: "score_diff".into(),
                from: Some(3.0),
                to: 10.0,
            },
            FeatureChange {
                feature: "seconds_remaining".into(),
                from: Some(1812.0),
                to: 1776.0,
            },
            FeatureChange {
                feature: "yards_to_goal".into(),
                from: Some(75.0),
                to: 42.0,
            },
        ],
    }
}

/// Publishes `rate` deltas/s for each of `games` games for `span`, game g's phase offset by
/// g/games of a period. Returns the last `event_seq` of every game.
fn publish(hub: &sideline::hub::Hub, games: usize, rate: f64, span: Duration) -> Vec<u64> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut due: Vec<Instant> = (0..games)
        .map(|g| start + period.mul_f64(g as f64 / games as f64))
        .collect();
    let mut last = vec![0u64; games];
    let mut seq = hub.seq(CHANNEL).unwrap_or(0);
    let mut batch = Vec::new();
    while start.elapsed() < span {
        let now = Instant::now();
        let stamp = now_us();
        for g in 0..games {
            while due[g] <= now {
                last[g] += 1;
                seq += 1;
                batch.push(delta(seq, g, last[g], stamp));
                due[g] += period;
            }
        }
        if !batch.is_empty() {
            hub.publish(CHANNEL, &batch, &[]);
            batch.clear();
        }
        let next = due.iter().min().copied().unwrap_or(now);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    last
}

// ---------------------------------------------------------------------------------------------
// Client: many subscribers in one process.

/// One subscription's view: the next `event_seq` expected per followed game.
struct Sub {
    games: Vec<(usize, u64)>,
    last_seq: u64,
    /// Deltas skipped in the middle of a game's run, or repeated/out of order.
    missing: u64,
    disorder: u64,
    resyncs: u64,
}

#[derive(Default)]
struct Shared {
    measure_from_us: AtomicU64,
    ready: AtomicUsize,
    failed: AtomicUsize,
    closed: AtomicUsize,
    received: AtomicU64,
    subs: Mutex<Vec<Arc<Mutex<Sub>>>>,
    hist: Mutex<Option<Histogram<u64>>>,
}

#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    delta: Option<DeltaView<'a>>,
    #[serde(default, borrow)]
    reason: Option<&'a str>,
}

#[derive(serde::Deserialize)]
struct DeltaView<'a> {
    seq: u64,
    #[serde(borrow)]
    game_id: &'a str,
    event_seq: u64,
    #[serde(borrow)]
    changed: Vec<ChangeView<'a>>,
}

#[derive(serde::Deserialize)]
struct ChangeView<'a> {
    #[serde(borrow)]
    feature: &'a str,
    to: f64,
}

fn client(args: &[String]) -> anyhow::Result<()> {
    let addr: SocketAddr = arg(args, "--addr", "127.0.0.1:9480".parse()?)?;
    let source: Ipv4Addr = arg(args, "--source", Ipv4Addr::new(127, 0, 0, 2))?;
    let count: usize = arg(args, "--count", 100)?;
    let first: u64 = arg(args, "--first-id", 0)?;
    let games: usize = arg(args, "--games", 100)?;
    let shared = Arc::new(Shared {
        hist: Mutex::new(Some(Histogram::new_with_bounds(1, 60_000_000, 3)?)),
        measure_from_us: AtomicU64::new(u64::MAX),
        ..Shared::default()
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    for i in 0..count as u64 {
        let followed = followed(first + i, games);
        let (shared, gate) = (Arc::clone(&shared), Arc::clone(&gate));
        runtime.spawn(async move {
            let mut ready = false;
            let end = subscriber(addr, source, followed, &shared, gate, &mut ready).await;
            if ready {
                shared.closed.fetch_add(1, Ordering::Relaxed);
            } else {
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = end {
                eprintln!("subscriber: {e:#}");
            }
        });
    }
    // The runtime runs on its own thread; this one talks to the coordinator.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let rt = std::thread::spawn(move || runtime.block_on(async { stop_rx.await.ok() }));
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < count {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "ready {} {}",
        shared.ready.load(Ordering::Relaxed),
        shared.failed.load(Ordering::Relaxed)
    );
    std::io::stdout().flush()?;

    let mut lines = std::io::stdin().lock().lines();
    while let Some(line) = lines.next().transpose()? {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("measure") => {
                let from: u64 = words.next().unwrap_or("0").parse()?;
                shared.measure_from_us.store(from, Ordering::Relaxed);
            }
            Some("pending") => {
                let finals = parse_finals(words.next())?;
                println!("pending {}", pending(&shared, &finals));
                std::io::stdout().flush()?;
            }
            Some("stop") => report(&shared, &parse_finals(words.next())?)?,
            Some("quit") | None => break,
            Some(other) => bail!("client: unknown command {other}"),
        }
    }
    let _ = stop_tx.send(());
    let _ = rt.join();
    Ok(())
}

fn parse_finals(word: Option<&str>) -> anyhow::Result<Vec<u64>> {
    Ok(word
        .unwrap_or("")
        .split(',')
        .filter(|x| !x.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?)
}

/// Deltas published for the followed games and not received yet, over all subscriptions.
fn pending(shared: &Shared, finals: &[u64]) -> u64 {
    shared
        .subs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|sub| {
            let s = sub.lock().unwrap_or_else(|e| e.into_inner());
            s.games
                .iter()
                .map(|(g, next)| {
                    finals
                        .get(*g)
                        .map_or(0, |last| (last + 1).saturating_sub(*next))
                })
                .sum::<u64>()
        })
        .sum()
}

/// Prints `result received subs_with_loss missing disorder resyncs closed hist expected` where
/// `hist` is `value:count` pairs and `expected` the deltas published for the games followed.
fn report(shared: &Shared, finals: &[u64]) -> anyhow::Result<()> {
    let (mut lossy, mut missing, mut disorder, mut resyncs) = (0u64, 0u64, 0u64, 0u64);
    let mut expected = 0u64;
    for sub in shared.subs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let s = sub.lock().unwrap_or_else(|e| e.into_inner());
        expected += s
            .games
            .iter()
            .map(|(g, _)| finals.get(*g).copied().unwrap_or(0))
            .sum::<u64>();
        let tail: u64 = s
            .games
            .iter()
            .map(|(g, next)| {
                finals
                    .get(*g)
                    .map_or(0, |last| (last + 1).saturating_sub(*next))
            })
            .sum();
        if s.missing + tail + s.resyncs > 0 {
            lossy += 1;
        }
        missing += s.missing + tail;
        disorder += s.disorder;
        resyncs += s.resyncs;
    }
    let hist = shared
        .hist
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(|| anyhow!("stop twice"))?;
    let pairs: Vec<String> = hist
        .iter_recorded()
        .map(|v| format!("{}:{}", v.value_iterated_to(), v.count_at_value()))
        .collect();
    println!(
        "result {} {lossy} {missing} {disorder} {resyncs} {} {} {expected}",
        shared.received.load(Ordering::Relaxed),
        shared.closed.load(Ordering::Relaxed),
        if pairs.is_empty() {
            "-".to_string()
        } else {
            pairs.join(",")
        }
    );
    std::io::stdout().flush()?;
    Ok(())
}

async fn subscriber(
    addr: SocketAddr,
    source: Ipv4Addr,
    games: Vec<usize>,
    shared: &Shared,
    gate: Arc<tokio::sync::Semaphore>,
    ready: &mut bool,
) -> anyhow::Result<()> {
    let permit = gate.acquire_owned().await?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let tcp = socket.connect(addr).await.context("connect")?;
    tcp.set_nodelay(true)?;
    let cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(format!("ws://{addr}/"), tcp, Some(cfg))
            .await
            .context("handshake")?;
    let names: Vec<String> = games.iter().map(|g| game_name(*g)).collect();
    let subscribe = serde_json::json!({
        "op": "subscribe", "channel": CHANNEL, "filter": {"games": names}
    });
    ws.send(Message::text(subscribe.to_string())).await?;
    let sub = Arc::new(Mutex::new(Sub {
        games: games.iter().map(|g| (*g, 1)).collect(),
        last_seq: 0,
        missing: 0,
        disorder: 0,
        resyncs: 0,
    }));
    shared
        .subs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::clone(&sub));
    let mut permit = Some(permit);
    while let Some(msg) = ws.next().await {
        let text = match msg? {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        let received_us = now_us();
        let frame: Frame = serde_json::from_str(text.as_str())?;
        match frame.kind {
            "delta" => {
                let d = frame.delta.ok_or_else(|| anyhow!("delta without delta"))?;
                shared.received.fetch_add(1, Ordering::Relaxed);
                let published = d
                    .changed
                    .iter()
                    .find(|c| c.feature == "published_us")
                    .map_or(0, |c| c.to as u64);
                if published >= shared.measure_from_us.load(Ordering::Relaxed) {
                    if let Some(h) = shared
                        .hist
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_mut()
                    {
                        let _ = h.record(received_us.saturating_sub(published).max(1));
                    }
                }
                let mut s = sub.lock().unwrap_or_else(|e| e.into_inner());
                if d.seq <= s.last_seq {
                    s.disorder += 1;
                }
                s.last_seq = d.seq;
                let game: usize = d.game_id[1..].parse()?;
                let Sub {
                    games,
                    missing,
                    disorder,
                    ..
                } = &mut *s;
                match games.iter_mut().find(|(g, _)| *g == game) {
                    Some((_, next)) if d.event_seq == *next => *next += 1,
                    Some((_, next)) if d.event_seq > *next => {
                        *missing += d.event_seq - *next;
                        *next = d.event_seq + 1;
                    }
                    _ => *disorder += 1,
                }
            }
            "snapshot" => {
                if frame.reason == Some("subscribe") {
                    if permit.take().is_some() {
                        *ready = true;
                        shared.ready.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    sub.lock().unwrap_or_else(|e| e.into_inner()).resyncs += 1;
                }
            }
            "error" => bail!("server error: {text}"),
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Coordinator.

struct Proc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    fn spawn(args: &[String]) -> anyhow::Result<Proc> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        Ok(Proc {
            child,
            stdin,
            stdout,
        })
    }

    fn send(&mut self, line: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// The next line starting with `word`, split into words after it.
    fn expect(&mut self, word: &str) -> anyhow::Result<Vec<String>> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("child exited before `{word}`");
            }
            let mut words = line.split_whitespace();
            if words.next() == Some(word) {
                return Ok(words.map(str::to_string).collect());
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident set of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time of a process (USER_HZ is 100 on Linux).
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

struct Figures {
    subscribers: usize,
    rate: usize,
    connected: usize,
    failed: usize,
    kib_per_sub: f64,
    offered_per_s: f64,
    delivered_per_s: f64,
    /// How long publishing took (longer than asked when the publisher fell behind).
    span: f64,
    /// How long after publishing ended the last frame arrived (0.2 s resolution).
    drain: f64,
    hist: Histogram<u64>,
    lossy: u64,
    missing: u64,
    disorder: u64,
    server_cpu: f64,
    client_cpu: f64,
    max_queued: String,
    resyncs: String,
}

fn scenario(
    subscribers: usize,
    rate: usize,
    games: usize,
    seconds: f64,
    warmup: f64,
    threads: usize,
    queue: usize,
) -> anyhow::Result<Figures> {
    let mut server = Proc::spawn(&[
        "--role".into(),
        "server".into(),
        "--games".into(),
        games.to_string(),
        "--rate".into(),
        rate.to_string(),
        "--server-threads".into(),
        threads.to_string(),
        "--queue".into(),
        queue.to_string(),
    ])?;
    let addr = server.expect("listening")?.join("");
    std::thread::sleep(Duration::from_millis(200));
    let rss0 = rss_kib(server.pid());

    let processes = subscribers.div_ceil(PER_PROCESS).clamp(2, MAX_PROCESSES);
    let mut clients = Vec::new();
    let mut first = 0usize;
    for k in 0..processes {
        let count = subscribers / processes + usize::from(k < subscribers % processes);
        clients.push(Proc::spawn(&[
            "--role".into(),
            "client".into(),
            "--addr".into(),
            addr.clone(),
            "--source".into(),
            format!("127.0.0.{}", 2 + k),
            "--count".into(),
            count.to_string(),
            "--first-id".into(),
            first.to_string(),
            "--games".into(),
            games.to_string(),
        ])?);
        first += count;
    }
    let (mut connected, mut failed) = (0, 0);
    for c in clients.iter_mut() {
        let w = c.expect("ready")?;
        connected += w.first().map_or(0, |x| x.parse().unwrap_or(0));
        failed += w.get(1).map_or(0, |x| x.parse().unwrap_or(0));
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss1 = rss_kib(server.pid());

    let from = now_us() + (warmup * 1e6) as u64;
    for c in clients.iter_mut() {
        c.send(&format!("measure {from}"))?;
    }
    let cpu0 = (
        cpu(server.pid()),
        clients.iter().map(|c| cpu(c.pid())).sum::<Duration>(),
    );
    let t0 = Instant::now();
    server.send(&format!("go {}", warmup + seconds))?;
    let done = server.expect("done")?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu1 = (
        cpu(server.pid()),
        clients.iter().map(|c| cpu(c.pid())).sum::<Duration>(),
    );
    let finals = done.get(2).cloned().unwrap_or_default();
    // Let the last frames arrive (what is still missing after 60 s counts as lost).
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(60) {
        let mut left = 0u64;
        for c in clients.iter_mut() {
            c.send(&format!("pending {finals}"))?;
            left += c
                .expect("pending")?
                .first()
                .map_or(0, |x| x.parse().unwrap_or(0));
        }
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let drain = drain.elapsed().as_secs_f64();

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut received, mut lossy, mut missing, mut disorder) = (0u64, 0u64, 0u64, 0u64);
    let mut expected = 0u64;
    for c in clients.iter_mut() {
        c.send(&format!("stop {finals}"))?;
        let w = c.expect("result")?;
        let n = |i: usize| w.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        received += n(0);
        lossy += n(1);
        missing += n(2);
        disorder += n(3);
        expected += n(7);
        if let Some(pairs) = w.get(6).filter(|p| *p != "-") {
            for pair in pairs.split(',') {
                if let Some((v, c)) = pair.split_once(':') {
                    hist.record_n(v.parse()?, c.parse()?)?;
                }
            }
        }
    }
    Ok(Figures {
        subscribers,
        rate,
        connected,
        failed,
        kib_per_sub: rss1.saturating_sub(rss0) as f64 / connected.max(1) as f64,
        offered_per_s: expected as f64 / (warmup + seconds),
        delivered_per_s: received as f64 / wall,
        span: wall,
        drain,
        hist,
        lossy,
        missing,
        disorder,
        server_cpu: (cpu1.0 - cpu0.0).as_secs_f64() / wall,
        client_cpu: (cpu1.1 - cpu0.1).as_secs_f64() / wall,
        max_queued: done.first().cloned().unwrap_or_default(),
        resyncs: done.get(1).cloned().unwrap_or_default(),
    })
}

fn coordinator(args: &[String]) -> anyhow::Result<()> {
    let subscribers = list(args, "--subscribers", "1000,10000")?;
    let rates = list(args, "--rates", "1,10")?;
    let games: usize = arg(args, "--games", 100)?;
    let seconds: f64 = arg(args, "--seconds", 20.0)?;
    let warmup: f64 = arg(args, "--warmup", 5.0)?;
    let threads: usize = arg(args, "--server-threads", 1)?;
    let queue: usize = arg(
        args,
        "--queue",
        sideline::hub::HubConfig::default().queue_capacity,
    )?;
    println!(
        "fanout: hub + WebSocket server alone (synthetic deltas, no engine), {games} games, \
         each subscriber following 1-3 of them; {seconds} s measured after {warmup} s warm-up; \
         server runtime {threads} thread(s); {} cores shared by server and clients",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>6} {:>5} {:>7} {:>9} {:>9} {:>6} {:>7} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>10} {:>7}",
        "subs",
        "rate",
        "conn",
        "offered/s",
        "deliv/s",
        "span s",
        "drain s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "KiB/sub",
        "srv cpu",
        "client cpu",
        "lost"
    );
    let mut rows: HashMap<(usize, usize), Figures> = HashMap::new();
    for &n in &subscribers {
        for &rate in &rates {
            let f = scenario(n, rate, games, seconds, warmup, threads, queue)
                .with_context(|| format!("{n} subscribers at {rate}/s"))?;
            let q = |x: f64| f.hist.value_at_quantile(x) as f64 / 1e3;
            println!(
                "{:>6} {:>5} {:>7} {:>9.0} {:>9.0} {:>6.1} {:>7.1} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>8.1} {:>7.0}% {:>9.0}% {:>7}",
                f.subscribers,
                f.rate,
                f.connected,
                f.offered_per_s,
                f.delivered_per_s,
                f.span,
                f.drain,
                q(0.5),
                q(0.99),
                q(0.999),
                f.hist.max() as f64 / 1e3,
                f.kib_per_sub,
                f.server_cpu * 100.0,
                f.client_cpu * 100.0,
                f.missing,
            );
            if f.failed > 0 || f.lossy > 0 || f.disorder > 0 {
                println!(
                    "       {} subscribers failed to connect; {} subscriptions lost deltas \
                     ({} missing); {} out of order; hub resyncs {}, max queued {}",
                    f.failed, f.lossy, f.missing, f.disorder, f.resyncs, f.max_queued
                );
            }
            rows.insert((n, rate), f);
        }
    }
    println!(
        "rate: deltas/s per game (a subscriber gets rate x 1-3); offered/s: frames the subscribers \
         should get per second; deliv/s: frames received / publishing span (span: longer than \
         asked when the publisher fell behind); drain s: from the end of publishing to the last \
         frame received; latency: Hub::publish called -> frame parsed by the client; \
         KiB/sub: server RSS after all snapshots minus before the first connection, / subscribers; \
         cpu: % of one core over the publishing span; lost: deltas a subscriber never got (within 60 s)"
    );
    println!(
        "bare tokio-tungstenite harness (DEPENDENCIES.md / brief): 10k x 1 msg/s p99 4.3 ms; \
         10k x 10 msg/s p99 39 ms; ~10 KB per connection"
    );
    Ok(())
}
