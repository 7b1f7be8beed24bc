//! Pushing a JSON-lines feed of [`GameEvent`]s into Kafka (`sideline produce`), for producers
//! and for the demo.
//!
//! - **Record key** `"{sport}:{game_id}"` (`"nfl:2018090600"`): librdkafka's default partitioner
//!   hashes the key, so all records of one game land on one partition, in the order they were
//!   sent. Lines are sent in file order, so a feed sorted by event time stays sorted per game.
//! - **Payload**: the original line, byte for byte (without its line ending). The line is parsed
//!   as a `GameEvent` only to get the key and the event time, and to refuse what a consumer
//!   would reject.
//! - **Record timestamp**: the wall clock (ms since the epoch) when the record is handed to the
//!   producer. Event time travels in the payload.
//! - **Invalid lines** (not a `GameEvent`) stop the run with [`ProduceError::InvalidLine`]
//!   (the lines before it are sent and flushed, none after it), unless `allow_invalid` is set: then they are sent as they are with key `"invalid"` (to
//!   exercise a consumer's dead-letter path). Blank lines are skipped.
//! - **Pace**: [`Pace::Max`] sends as fast as the producer takes records. [`Pace::Speed`]`(n)`
//!   replays at `n` times the recorded pace: before each record it waits for the gap in
//!   `event_time_ms` since the previous valid record divided by `n`, with each gap capped at
//!   [`MAX_GAP_MS`] of event time (so a quiet stretch or a gap between games waits at most
//!   `5 s / n`) and negative gaps counted as zero. Waits run on a schedule measured from the
//!   start, so they do not drift.
//! - **Back-pressure**: when librdkafka's queue is full the producer is polled (serving delivery
//!   reports) and the record is retried. At the end the producer is flushed.
//! - **Producer**: a [`BaseProducer`] with a [`DeliveryCounter`] context ([`FeedProducer`]),
//!   polled by this code (no background thread), so the delivery outcome of every record is
//!   counted in [`ProduceStats`].

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::event::GameEvent;

/// The longest event-time gap (ms) that [`Pace::Speed`] waits for, before dividing by the speed.
pub const MAX_GAP_MS: u64 = 5_000;

/// Record key of lines that are not `GameEvent`s (with `allow_invalid`).
pub const INVALID_KEY: &str = "invalid";

/// How fast to send.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as possible.
    Max,
    /// `n` times the recorded pace (gaps in `event_time_ms`, each capped at [`MAX_GAP_MS`]).
    Speed(f64),
}

/// Options of [`produce_lines_with`].
#[derive(Clone, Debug)]
pub struct ProduceOptions {
    pub pace: Pace,
    /// Send lines that are not `GameEvent`s with key [`INVALID_KEY`] instead of failing.
    pub allow_invalid: bool,
    /// How long the final flush may take.
    pub flush_timeout: Duration,
}

impl Default for ProduceOptions {
    fn default() -> Self {
        ProduceOptions {
            pace: Pace::Max,
            allow_invalid: false,
            flush_timeout: Duration::from_secs(60),
        }
    }
}

/// Counts of one [`produce_lines`] run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProduceStats {
    /// Records handed to the producer.
    pub sent: u64,
    /// Of those, lines that were not `GameEvent`s (sent with key [`INVALID_KEY`]).
    pub invalid: u64,
    /// Blank lines skipped.
    pub blank: u64,
    /// Times the producer queue was full and a record was retried.
    pub queue_full_retries: u64,
    /// Delivery reports: acknowledged by the broker.
    pub delivered: u64,
    /// Delivery reports: failed (the record is lost; see `first_failure`).
    pub failed: u64,
    /// The first delivery failure, if any.
    pub first_failure: Option<String>,
}

/// Errors of [`produce_lines`]. `InvalidLine` and `BadSpeed` are bad input (not retryable);
/// `Kafka` comes from the producer or the brokers (retrying may help).
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("line {line}: not a GameEvent: {reason}")]
    InvalidLine { line: usize, reason: String },
    #[error("speed must be a positive number, not {0}")]
    BadSpeed(f64),
    #[error("{what}: {source}")]
    Kafka {
        what: &'static str,
        source: KafkaError,
    },
}

impl ProduceError {
    /// A stable code for logs and reports.
    pub fn code(&self) -> &'static str {
        match self {
            ProduceError::InvalidLine { .. } => "produce_invalid_line",
            ProduceError::BadSpeed(_) => "produce_bad_speed",
            ProduceError::Kafka { .. } => "produce_kafka",
        }
    }

    /// Whether running again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProduceError::Kafka { .. })
    }
}

/// A producer context that counts delivery reports.
#[derive(Debug, Default)]
pub struct DeliveryCounter {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl DeliveryCounter {
    fn snapshot(&self) -> (u64, u64) {
        (
            self.delivered.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((err, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_failure.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| err.to_string());
            }
        }
    }
}

/// The producer [`produce_lines`] drives.
pub type FeedProducer = BaseProducer<DeliveryCounter>;

/// Creates a [`FeedProducer`] from a librdkafka configuration.
pub fn create_producer(config: &ClientConfig) -> Result<FeedProducer, ProduceError> {
    config
        .create_with_context(DeliveryCounter::default())
        .map_err(|source| ProduceError::Kafka {
            what: "creating the producer",
            source,
        })
}

/// Sends `lines` to `topic` at `pace`, refusing lines that are not `GameEvent`s.
/// See [`produce_lines_with`].
pub fn produce_lines<L: AsRef<str>>(
    producer: &FeedProducer,
    topic: &str,
    lines: &[L],
    pace: Pace,
    progress: Option<&ProgressBar>,
) -> Result<ProduceStats, ProduceError> {
    let options = ProduceOptions {
        pace,
        ..ProduceOptions::default()
    };
    produce_lines_with(producer, topic, lines, &options, progress)
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Sends `lines` to `topic` by the rules of the module page, then flushes. Progress (one tick
/// per line) goes to `progress` if given. Returns the counts, delivery reports included.
pub fn produce_lines_with<L: AsRef<str>>(
    producer: &FeedProducer,
    topic: &str,
    lines: &[L],
    options: &ProduceOptions,
    progress: Option<&ProgressBar>,
) -> Result<ProduceStats, ProduceError> {
    let speed = match options.pace {
        Pace::Max => None,
        Pace::Speed(s) if s.is_finite() && s > 0.0 => Some(s),
        Pace::Speed(s) => return Err(ProduceError::BadSpeed(s)),
    };
    let (delivered0, failed0) = producer.context().snapshot();
    let mut stats = ProduceStats::default();
    let start = Instant::now();
    let mut schedule = Duration::ZERO;
    let mut last_time: Option<u64> = None;

    for (n, line) in lines.iter().enumerate() {
        let line = line.as_ref();
        if line.trim().is_empty() {
            stats.blank += 1;
            if let Some(p) = progress {
                p.inc(1);
            }
            continue;
        }
        let (key, time) = match serde_json::from_str::<GameEvent>(line) {
            Ok(e) => (format!("{}:{}", e.sport, e.game_id), Some(e.event_time_ms)),
            Err(_) if options.allow_invalid => (INVALID_KEY.to_owned(), None),
            Err(err) => {
                // Deliver what was sent before the bad line; the error is the outcome either way.
                let _ = producer.flush(options.flush_timeout);
                return Err(ProduceError::InvalidLine {
                    line: n + 1,
                    reason: err.to_string(),
                });
            }
        };
        if let (Some(speed), Some(t)) = (speed, time) {
            if let Some(prev) = last_time {
                let gap_ms = t.saturating_sub(prev).min(MAX_GAP_MS);
                schedule += Duration::from_secs_f64(gap_ms as f64 / 1000.0 / speed);
                wait_until(producer, start + schedule);
            }
            last_time = Some(t);
        }
        send(producer, topic, &key, line, &mut stats)?;
        if key == INVALID_KEY {
            stats.invalid += 1;
        }
        producer.poll(Duration::ZERO);
        if let Some(p) = progress {
            p.inc(1);
        }
    }

    producer
        .flush(options.flush_timeout)
        .map_err(|source| ProduceError::Kafka {
            what: "flushing the producer",
            source,
        })?;
    let (delivered, failed) = producer.context().snapshot();
    stats.delivered = delivered - delivered0;
    stats.failed = failed - failed0;
    if stats.failed > 0 {
        let first = producer.context().first_failure.lock();
        stats.first_failure = first.unwrap_or_else(|e| e.into_inner()).clone();
    }
    Ok(stats)
}

/// Hands one record to the producer, polling and retrying while its queue is full.
fn send(
    producer: &FeedProducer,
    topic: &str,
    key: &str,
    line: &str,
    stats: &mut ProduceStats,
) -> Result<(), ProduceError> {
    let mut record = BaseRecord::to(topic)
        .key(key)
        .payload(line)
        .timestamp(now_ms());
    loop {
        match producer.send(record) {
            Ok(()) => {
                stats.sent += 1;
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                stats.queue_full_retries += 1;
                producer.poll(Duration::from_millis(100));
                record = back.timestamp(now_ms());
            }
            Err((source, _)) => {
                return Err(ProduceError::Kafka {
                    what: "sending a record",
                    source,
                })
            }
        }
    }
}

/// Waits until `deadline`, serving delivery reports meanwhile.
fn wait_until(producer: &FeedProducer, deadline: Instant) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        if left < Duration::from_millis(1) {
            // librdkafka's poll waits whole milliseconds: a shorter wait would spin a core
            // (at 10k records/s, every gap is 0.1 ms).
            producer.poll(Duration::ZERO);
            std::thread::sleep(left);
            return;
        }
        producer.poll(left.min(Duration::from_millis(100)));
    }
}

/// librdkafka options `sideline produce` sets itself; `-X` may not override them.
const OWNED_KEYS: [&str; 1] = ["bootstrap.servers"];

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not key=value"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("{text:?} has an empty key"));
    }
    if OWNED_KEYS.contains(&k) {
        return Err(format!("{k} is set by sideline (use --brokers)"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// `sideline produce`: send a JSON-lines feed of GameEvents to a Kafka topic.
#[derive(Clone, Debug, clap::Args)]
pub struct ProduceArgs {
    /// Kafka bootstrap servers, `host:port[,host:port...]`.
    #[arg(long, value_name = "HOSTS")]
    pub brokers: String,
    /// Topic to produce to.
    #[arg(long, default_value = "nfl.events")]
    pub topic: String,
    /// Replay at N times the recorded pace (event-time gaps, each capped at 5 s / N).
    #[arg(long, value_name = "N", conflicts_with = "max")]
    pub speed: Option<f64>,
    /// Send as fast as possible (the default).
    #[arg(long)]
    pub max: bool,
    /// Send lines that are not GameEvents, with key "invalid", instead of stopping.
    #[arg(long)]
    pub allow_invalid: bool,
    /// librdkafka producer option, repeatable (`-X linger.ms=20`). Defaults set here:
    /// enable.idempotence=true, linger.ms=5.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub config: Vec<(String, String)>,
    /// JSON-lines file of GameEvents; `-` reads stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

impl ProduceArgs {
    /// The librdkafka configuration: defaults, then `-X` options, then `--brokers`.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        for (k, v) in &self.config {
            config.set(k, v);
        }
        config.set("bootstrap.servers", &self.brokers);
        config
    }

    /// The pace these arguments describe.
    pub fn pace(&self) -> Pace {
        match (self.max, self.speed) {
            (false, Some(s)) => Pace::Speed(s),
            _ => Pace::Max,
        }
    }
}

/// Runs `sideline produce`: reads the file, sends it with a progress bar on stderr (hidden
/// when stderr is not a terminal), prints the counts, and fails if any record was not delivered.
pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut text = String::new();
    if args.file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
    } else {
        text = std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
    }
    let lines: Vec<&str> = text.lines().collect();
    let producer = create_producer(&args.client_config())?;

    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(lines.len() as u64);
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} records ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    } else {
        ProgressBar::hidden()
    };
    let options = ProduceOptions {
        pace: args.pace(),
        allow_invalid: args.allow_invalid,
        ..ProduceOptions::default()
    };
    let started = Instant::now();
    let stats = produce_lines_with(&producer, &args.topic, &lines, &options, Some(&bar))?;
    bar.finish_and_clear();
    eprintln!(
        "sent {} records to {} in {:.1} s ({} invalid, {} blank lines skipped); delivered {}, failed {}",
        stats.sent,
        args.topic,
        started.elapsed().as_secs_f64(),
        stats.invalid,
        stats.blank,
        stats.delivered,
        stats.failed
    );
    if stats.failed > 0 || stats.delivered < stats.sent {
        anyhow::bail!(
            "{} of {} records not delivered (first failure: {})",
            stats.sent - stats.delivered,
            stats.sent,
            stats.first_failure.as_deref().unwrap_or("unknown")
        );
    }
    Ok(())
}
