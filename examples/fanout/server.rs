//! The server process: hub + WebSocket server + a publisher thread of synthetic deltas.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use sideline::delta::{Delta, DeltaCause, FeatureChange};
use sideline::event::Sport;

use crate::{arg, game_name, now_us, CHANNEL};

pub fn server(args: &[String]) -> anyhow::Result<()> {
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
        contributors: vec![
            sideline::delta::Contributor {
                feature: "score_diff".into(),
                by: 0.412,
            },
            sideline::delta::Contributor {
                feature: "yards_to_goal".into(),
                by: 0.101,
            },
        ],
        interval: None,
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
        for (g, (due, last)) in due.iter_mut().zip(last.iter_mut()).enumerate() {
            while *due <= now {
                *last += 1;
                seq += 1;
                batch.push(delta(seq, g, *last, stamp));
                *due += period;
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
