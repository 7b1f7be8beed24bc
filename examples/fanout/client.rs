//! A client process: many subscribers on one current-thread runtime, one source address.

use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

use crate::{arg, followed, game_name, now_us, CHANNEL, CONNECTING};

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

pub fn client(args: &[String]) -> anyhow::Result<()> {
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
