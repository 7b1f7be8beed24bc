//! The coordinator: starts the server and client processes per scenario, reads their RSS and
//! CPU from /proc, merges their figures and prints the table.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use hdrhistogram::Histogram;

use crate::{arg, list, now_us, MAX_PROCESSES, PER_PROCESS};

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

pub fn coordinator(args: &[String]) -> anyhow::Result<()> {
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
