//! Nothing lost, nothing twice: the `sideline` binary is killed with SIGKILL at 20 random
//! points (two of them a SIGTERM instead, three with the checkpoint damaged before the restart)
//! while the fixture's games are being produced at full speed, and restarted each time on the
//! same checkpoint directory. A WebSocket subscriber that reconnects with the last seq
//! it saw must end with exactly the delta log of one uninterrupted run: same seqs, same bytes.
//! The detectors' alert changes, written to a Kafka topic, must be that run's too, by seq.
//!
//! Through librdkafka's mock cluster (in this process; the engine is another process talking
//! Kafka's protocol to it) and, `#[ignore]`d, through the real broker process `.ci/run` starts.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use sideline::ws::protocol::ServerMessage;
use tokio_tungstenite::tungstenite::{self, Message};

const PARTITIONS: i32 = 4;
const KILLS: usize = 20;
/// Chunks the feed is produced in; a kill falls after a random chunk.
const CHUNKS: usize = 60;

/// One engine process and the WebSocket address it printed.
struct Engine {
    child: Child,
    addr: SocketAddr,
}

/// Starts the engine; its log goes to `log`.
fn spawn(config: &Path, log: &Path) -> Engine {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sideline"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("RUST_LOG", "warn,sideline::publish=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("sideline starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("WebSocket on ws://").nth(1) {
                let addr = rest.split(';').next().unwrap().trim().to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(a) => a.parse().unwrap(),
        Err(_) => {
            let _ = child.kill();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let status = child.wait();
            panic!("sideline did not print its WebSocket address within 60 s (or exited: {status:?}); its log:\n{text}");
        }
    };
    Engine { child, addr }
}

/// What the subscriber saw: every delta in order, and any break in the stream.
#[derive(Default)]
struct Seen {
    deltas: Vec<String>,
    /// When each delta arrived.
    arrivals: Vec<Instant>,
    last_seq: u64,
    /// Deltas that did not follow the previous one's seq, snapshots after a resume, ...
    faults: Vec<String>,
    /// Subscriptions acknowledged (one per connection).
    subscribed: usize,
}

/// A subscriber that follows the channel across restarts: it connects to whichever address
/// `target` holds, resumes from the last seq it saw, and records what it gets.
fn subscriber(
    target: Arc<Mutex<Option<SocketAddr>>>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Some(addr) = *target.lock().unwrap() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let Ok(stream) = std::net::TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let Ok((mut ws, _)) = tungstenite::client(format!("ws://{addr}"), stream) else {
            continue;
        };
        let last = seen.lock().unwrap().last_seq;
        let subscribe = match last {
            0 => format!(r#"{{"op":"subscribe","channel":"{CHANNEL}"}}"#),
            n => format!(r#"{{"op":"subscribe","channel":"{CHANNEL}","resume_from":{n}}}"#),
        };
        if ws.send(Message::text(subscribe)).is_err() {
            continue;
        }
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let msg = match ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if *target.lock().unwrap() != Some(addr) {
                        break; // that engine was killed; follow the new one
                    }
                    continue;
                }
                Err(_) => break,
            };
            let m: ServerMessage = serde_json::from_str(msg.as_str()).unwrap();
            let mut s = seen.lock().unwrap();
            match m {
                ServerMessage::Subscribed { .. } => s.subscribed += 1,
                ServerMessage::Snapshot { .. } if s.last_seq > 0 => {
                    let f = format!("a snapshot instead of a resume after seq {}", s.last_seq);
                    s.faults.push(f);
                }
                ServerMessage::Delta { delta, .. } => {
                    if delta.seq != s.last_seq + 1 {
                        let f = format!("seq {} after {}", delta.seq, s.last_seq);
                        s.faults.push(f);
                    }
                    s.last_seq = delta.seq;
                    s.deltas.push(serde_json::to_string(&delta).unwrap());
                    s.arrivals.push(Instant::now());
                }
                _ => {}
            }
        }
    }
}

/// Waits until no delta has arrived for `quiet` (and at least `at_least` arrived).
fn wait_quiet(seen: &Mutex<Seen>, at_least: usize, quiet: Duration) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = (usize::MAX, Instant::now());
    loop {
        let n = seen.lock().unwrap().deltas.len();
        if n != last.0 {
            last = (n, Instant::now());
        } else if n >= at_least && last.1.elapsed() >= quiet {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "deltas still arriving (or too few: {n} of {at_least}) after 180 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_config(dir: &Path, brokers: &str, topic: &str) -> std::path::PathBuf {
    let pipelines = dir.join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    // Deltas and the detectors' alerts also go to Kafka topics, checked after the run.
    // Partitions never go idle: idleness is judged by the wall clock, and the restarts pause
    // the feed, so an idle timeout would let the two runs release times differently (the
    // pause-then-burst limit in the README), which is not what this test measures.
    let pipeline = nfl_pipeline(&[topic]).replace("idle-timeout = \"2s\"", "idle-timeout = \"1h\"");
    assert!(pipeline.contains("idle-timeout = \"1h\""));
    let file = format!(
        "{pipeline}\n{NFL_DETECTORS}\n[[output]]\nkind = \"kafka\"\ntopic = \"{topic}.deltas\"\n\n\
         [[output]]\nkind = \"kafka\"\nstream = \"alerts\"\ntopic = \"{topic}.alerts\"\n"
    );
    std::fs::write(pipelines.join("nfl.toml"), file).unwrap();
    let config = dir.join("sideline.toml");
    // Two workers: the restarts race each worker's consumer start against the other's
    // marks. (This test caught records fetched between a consumer's `assign` and its
    // partition queues' split being dropped; the diagnostics below, on a difference, say
    // which restart it follows, which games differ and what was dead-lettered.)
    std::fs::write(
        &config,
        format!(
            r#"[engine]
workers = 2
pipelines = "{}"
checkpoint-dir = "{}"
checkpoint-interval-ms = 100
[kafka]
brokers = "{brokers}"
dead-letter-topic = "{topic}.dead-letters"
[server]
ws-listen = "127.0.0.1:0"
metrics-listen = ""
admin-listen = ""
"#,
            pipelines.display(),
            dir.join("checkpoints").display()
        ),
    )
    .unwrap();
    config
}

/// Produces the fixture in `CHUNKS` chunks with short random pauses (well under the
/// pipeline's 2 s idle timeout, so no partition idles differently from one run to another),
/// calling `between(i)` after chunk `i`.
fn produce_chunks(brokers: &str, topic: &str, rng: &mut impl Rng, mut between: impl FnMut(usize)) {
    let lines = fixture_lines();
    let p = producer(brokers);
    let size = lines.len().div_ceil(CHUNKS);
    for (i, chunk) in lines.chunks(size).enumerate() {
        produce::produce_lines(&p, topic, chunk, Pace::Max, None).unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(20..120)));
        between(i);
    }
}

/// How a restart is prepared: the engine SIGKILLed and the checkpoint left as it is or
/// damaged, or the engine stopped by SIGTERM.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Damage {
    None,
    Truncate,
    FlipByte,
    Term,
}

/// One restart: when, what the subscriber had, when it was back, and the damage done first.
struct Restart {
    at: Instant,
    had: u64,
    back: Duration,
    damage: Damage,
    log: std::path::PathBuf,
}

fn damage(file: &Path, how: Damage) {
    let mut bytes = std::fs::read(file).expect("a checkpoint was written before the kill");
    match how {
        Damage::None | Damage::Term => return,
        Damage::Truncate => bytes.truncate(bytes.len() * 2 / 3),
        Damage::FlipByte => {
            let i = bytes.len() - 3;
            bytes[i] ^= 0x20;
        }
    }
    std::fs::write(file, bytes).unwrap();
}

/// One run: the engine started on a fresh checkpoint directory, the feed produced, the engine
/// killed after the chunks in `kills` (each after a random delay), the checkpoint damaged as
/// said, and the engine restarted at once. Returns what the subscriber saw, the restarts, and
/// the last checkpoint.
fn run(
    brokers: &str,
    topic: &str,
    kills: &[(usize, Damage)],
    seed: u64,
) -> (Seen, Vec<Restart>, sideline::checkpoint::Checkpoint) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), brokers, topic);
    let target = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (t, s, st) = (target.clone(), seen.clone(), stop.clone());
        std::thread::spawn(move || subscriber(t, s, st))
    };
    let mut engine = spawn(&config, &dir.path().join("engine-0.log"));
    *target.lock().unwrap() = Some(engine.addr);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut restarts = Vec::new();
    let mut kill_rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let checkpoint = dir.path().join("checkpoints").join("checkpoint");
    produce_chunks(brokers, topic, &mut rng, |i| {
        for (_, how) in kills.iter().filter(|k| k.0 == i) {
            std::thread::sleep(Duration::from_millis(kill_rng.random_range(0..150)));
            if *how == Damage::Term {
                let pid = engine.child.id().to_string();
                let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
                assert!(sent.success());
                let status = engine.child.wait().unwrap();
                assert!(status.success(), "SIGTERM: a clean exit, not {status}");
            } else {
                engine.child.kill().unwrap(); // SIGKILL
                engine.child.wait().unwrap();
            }
            damage(&checkpoint, *how);
            let (had, subscribed) = {
                let s = seen.lock().unwrap();
                (s.last_seq, s.subscribed)
            };
            let at = Instant::now();
            let log = dir
                .path()
                .join(format!("engine-{}.log", restarts.len() + 1));
            engine = spawn(&config, &log);
            *target.lock().unwrap() = Some(engine.addr);
            let deadline = at + Duration::from_secs(60);
            while seen.lock().unwrap().subscribed == subscribed {
                assert!(
                    Instant::now() < deadline,
                    "the subscriber could not resubscribe"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            restarts.push(Restart {
                at,
                had,
                back: at.elapsed(),
                damage: *how,
                log,
            });
        }
    });
    // Everything produced: idle partitions release the last times (2 s idle timeout).
    wait_quiet(&seen, 1, Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let _ = engine.child.kill();
    let _ = engine.child.wait();
    let last = sideline::checkpoint::read(&checkpoint).expect("the last checkpoint reads");
    for r in &mut restarts {
        r.log = {
            // Keep the logs' text beyond the temporary directory.
            let text = std::fs::read_to_string(&r.log).unwrap_or_default();
            let kept = std::env::temp_dir().join(format!(
                "sideline-recovery-{}-{}",
                std::process::id(),
                r.log.file_name().unwrap().to_string_lossy()
            ));
            std::fs::write(&kept, text).unwrap();
            kept
        };
    }
    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    (seen, restarts, last)
}

fn kills_and_restarts_lose_and_duplicate_nothing(brokers: &str, topics: (&str, &str)) {
    let seed = 0x51de_11e5;
    let (clean, _, _) = run(brokers, topics.0, &[], seed);
    assert!(clean.faults.is_empty(), "clean run: {:?}", clean.faults);
    assert!(clean.deltas.len() > 100, "the fixture yields deltas");

    // 20 kills after random chunks (not the first: a checkpoint exists by then); before three
    // of the restarts the checkpoint is damaged, and the previous one must be used.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut kills: Vec<(usize, Damage)> = (0..KILLS)
        .map(|_| (rng.random_range(2..CHUNKS - 1), Damage::None))
        .collect();
    kills.sort_by_key(|k| k.0);
    kills[5].1 = Damage::Truncate;
    kills[9].1 = Damage::FlipByte;
    kills[14].1 = Damage::Truncate;
    kills[3].1 = Damage::Term;
    kills[17].1 = Damage::Term;
    let (killed, restarts, last) = run(brokers, topics.1, &kills, seed);

    println!("restart  checkpoint  resubscribed  rebuilt  first new delta");
    for (i, r) in restarts.iter().enumerate() {
        let first_new = killed
            .deltas
            .iter()
            .zip(&killed.arrivals)
            .skip(r.had as usize)
            .map(|(_, t)| t.duration_since(r.at))
            .next()
            .map_or("-".to_string(), |d| format!("{} ms", d.as_millis()));
        // The engine logs how long it took to recompute up to its checkpoint.
        let log = std::fs::read_to_string(&r.log).unwrap_or_default();
        let rebuilt = log
            .split("rebuilt_ms")
            .nth(1)
            .map(|rest| rest.trim_start_matches(|c: char| !c.is_ascii_digit()))
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .map_or("-".to_string(), |ms| format!("{ms} ms"));
        println!(
            "{:>7}  {:>10}  {:>9} ms  {rebuilt:>7}  {first_new:>15}",
            i + 1,
            format!("{:?}", r.damage).to_lowercase(),
            r.back.as_millis()
        );
    }
    assert_eq!(restarts.len(), KILLS);
    // Each damaged checkpoint was refused, with its reason, and the previous one used.
    let damaged = [Damage::Truncate, Damage::FlipByte];
    for r in restarts.iter().filter(|r| damaged.contains(&r.damage)) {
        let log = std::fs::read_to_string(&r.log).unwrap();
        let want = match r.damage {
            Damage::Truncate => "truncated",
            _ => "corrupt",
        };
        assert!(
            log.contains("checkpoint refused") && log.contains(want),
            "restart with a {:?} checkpoint: no refusal naming `{want}` in its log",
            r.damage
        );
        assert!(
            log.contains("using the previous checkpoint"),
            "{:?}",
            r.damage
        );
    }
    assert!(
        killed.faults.is_empty(),
        "gaps or duplicates: {:?}",
        &killed.faults[..killed.faults.len().min(5)]
    );
    let lost = clean.deltas.len().saturating_sub(killed.deltas.len());
    let extra = killed.deltas.len().saturating_sub(clean.deltas.len());
    println!(
        "{} deltas in the clean run, {} through {KILLS} kills: {lost} lost, {extra} duplicated",
        clean.deltas.len(),
        killed.deltas.len()
    );
    let first_diff = clean
        .deltas
        .iter()
        .zip(&killed.deltas)
        .position(|(a, b)| a != b);
    if let Some(i) = first_diff {
        let ids = |log: &[String]| -> std::collections::BTreeSet<String> {
            log.iter()
                .map(|d| {
                    let v: serde_json::Value = serde_json::from_str(d).unwrap();
                    format!("{} {} {}", v["game_id"], v["event_time_ms"], v["new"])
                })
                .collect()
        };
        let (c, k) = (ids(&clean.deltas), ids(&killed.deltas));
        let only_clean: Vec<_> = c.difference(&k).take(5).collect();
        let only_killed: Vec<_> = k.difference(&c).take(5).collect();
        let dead = |topic: &str| -> Vec<String> {
            read_topic(brokers, &format!("{topic}.dead-letters"), 1, 0)
                .iter()
                .map(|r| {
                    String::from_utf8_lossy(&r.payload)
                        .chars()
                        .take(300)
                        .collect()
                })
                .collect()
        };
        let (dead_clean, dead_killed) = (dead(topics.0), dead(topics.1));
        let before = restarts
            .iter()
            .enumerate()
            .rfind(|(_, r)| r.had as usize <= i)
            .map(|(k, r)| {
                format!(
                    "restart {} ({:?}, subscriber had {})",
                    k + 1,
                    r.damage,
                    r.had
                )
            });
        eprintln!("first difference after {before:?}");
        for (k, r) in restarts.iter().enumerate() {
            let log = std::fs::read_to_string(&r.log).unwrap_or_default();
            for line in log
                .lines()
                .filter(|l| l.contains("resum") || l.contains("checkpoint") || l.contains("rebuil"))
            {
                eprintln!(
                    "restart {}: {}",
                    k + 1,
                    line.chars().take(400).collect::<String>()
                );
            }
        }
        panic!(
            "the delta logs differ at index {i} ({} positions differ); dead letters: clean \
             {dead_clean:?}, killed {dead_killed:?}; only in the clean run: \
             {only_clean:?}; only in the killed run: {only_killed:?}\n clean  {}\n killed {}",
            clean
                .deltas
                .iter()
                .zip(&killed.deltas)
                .filter(|(a, b)| a != b)
                .count(),
            clean.deltas[i],
            killed.deltas[i]
        );
    }
    assert_eq!((lost, extra), (0, 0));
    for r in &restarts {
        let _ = std::fs::remove_file(&r.log);
    }

    // The Kafka output: deltas written after a checkpoint and before a kill are written again
    // after the restart (the broker here does not hide aborted transactions), with the same
    // ids; by id, the topic holds the clean run's deltas exactly.
    let output = format!("{}.deltas", topics.1);
    let records = read_topic(brokers, &output, PARTITIONS, killed.deltas.len());
    let mut by_id: BTreeMap<String, String> = BTreeMap::new();
    let mut repeats = 0;
    for r in &records {
        let id = r.headers["sideline.id"].clone();
        let json = String::from_utf8(r.payload.clone()).unwrap();
        if let Some(before) = by_id.insert(id.clone(), json.clone()) {
            repeats += 1;
            assert_eq!(before, json, "two records with id {id} differ");
        }
    }
    println!(
        "Kafka output: {} records, {repeats} repeats of an id, {} distinct deltas",
        records.len(),
        by_id.len()
    );
    let mut want: Vec<(u64, String)> = clean
        .deltas
        .iter()
        .map(|d| {
            let v: sideline::delta::Delta = serde_json::from_str(d).unwrap();
            (v.seq, d.clone())
        })
        .collect();
    want.sort();
    let mut have: Vec<(u64, String)> = by_id
        .values()
        .map(|d| {
            let v: sideline::delta::Delta = serde_json::from_str(d).unwrap();
            (v.seq, serde_json::to_string(&v).unwrap())
        })
        .collect();
    have.sort();
    assert_eq!(
        have.len(),
        want.len(),
        "distinct deltas in the Kafka output"
    );
    assert!(
        have == want,
        "the Kafka output, by id, differs from the clean run"
    );
    // The alerts: by seq, the killed run's topic holds the clean run's alert changes exactly
    // (repeats after a restart are the same record again).
    let alerts = |topic: &str| -> BTreeMap<u64, String> {
        let mut by_seq = BTreeMap::new();
        for r in read_topic(brokers, &format!("{topic}.alerts"), PARTITIONS, 1) {
            let seq: u64 = r.headers["sideline.seq"].parse().unwrap();
            let json = String::from_utf8(r.payload).unwrap();
            if let Some(before) = by_seq.insert(seq, json.clone()) {
                assert_eq!(
                    before, json,
                    "{topic}: two alert records with seq {seq} differ"
                );
            }
        }
        by_seq
    };
    let (clean_alerts, killed_alerts) = (alerts(topics.0), alerts(topics.1));
    println!(
        "alerts: {} in the clean run, {} through {KILLS} kills",
        clean_alerts.len(),
        killed_alerts.len()
    );
    assert!(clean_alerts.len() > 10, "the detectors fire on the fixture");
    let want: Vec<u64> = (1..=clean_alerts.len() as u64).collect();
    assert_eq!(
        clean_alerts.keys().copied().collect::<Vec<_>>(),
        want,
        "clean run: alert seqs 1..n"
    );
    if let Some((seq, json)) = clean_alerts
        .iter()
        .find(|(seq, json)| killed_alerts.get(seq) != Some(*json))
    {
        panic!(
            "alert {seq} differs after the kills\n clean  {json}\n killed {:?}",
            killed_alerts.get(seq)
        );
    }
    assert_eq!(
        killed_alerts.len(),
        clean_alerts.len(),
        "alerts after the kills"
    );
    // The last checkpoint covers everything delivered.
    let cp = &last.pipelines["nfl_win_probability"];
    assert_eq!(cp.seq, killed.last_seq, "the last checkpoint's seq");
    assert!(cp.done.is_some());
}

#[test]
fn sigkill_at_20_points_through_the_mock_cluster() {
    let cluster = Cluster::mock(&[
        ("clean", PARTITIONS),
        ("killed", PARTITIONS),
        ("clean.deltas", PARTITIONS),
        ("killed.deltas", PARTITIONS),
        ("clean.alerts", PARTITIONS),
        ("killed.alerts", PARTITIONS),
        ("clean.dead-letters", 1),
        ("killed.dead-letters", 1),
    ]);
    kills_and_restarts_lose_and_duplicate_nothing(&cluster.brokers, ("clean", "killed"));
}

#[test]
#[ignore = "needs a real broker: run through `bash .ci/run`, which starts one"]
fn sigkill_at_20_points_through_the_real_broker() {
    let brokers = std::env::var("KAFKA_TEST_BROKERS")
        .expect("KAFKA_TEST_BROKERS names the broker to test against; `bash .ci/run` starts one");
    let run = run_id();
    let (clean, killed) = (
        format!("recovery.clean.{run}"),
        format!("recovery.killed.{run}"),
    );
    let dead = (
        format!("{clean}.dead-letters"),
        format!("{killed}.dead-letters"),
    );
    let outputs = (format!("{clean}.deltas"), format!("{killed}.deltas"));
    let alerts = (format!("{clean}.alerts"), format!("{killed}.alerts"));
    create_topics(
        &brokers,
        &[
            (&clean, PARTITIONS),
            (&killed, PARTITIONS),
            (&outputs.0, PARTITIONS),
            (&outputs.1, PARTITIONS),
            (&alerts.0, PARTITIONS),
            (&alerts.1, PARTITIONS),
            (&dead.0, 1),
            (&dead.1, 1),
        ],
    );
    kills_and_restarts_lose_and_duplicate_nothing(&brokers, (&clean, &killed));
}
