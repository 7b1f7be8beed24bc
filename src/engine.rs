//! The engine: Kafka partitions split across timely workers, each feeding its share of the
//! dataflow, until stopped (or, in replay mode, until every partition is read to its end).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::dataflow::{self, Scorer, SinkMsg};
use crate::source::frontier::FrontierBoard;
use crate::source::ingest::{GameOwners, Ingest};
use crate::source::kafka::{self, DeadLetters, KafkaReader, Polled, SourceError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("worker failed: {0}")]
    Worker(String),
}

/// What the workers did, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub records: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub late: u64,
}

/// When the engine stops.
#[derive(Debug, Default)]
pub struct StopSignal(AtomicU8);

const RUN: u8 = 0;
const DRAIN: u8 = 1;
const STOP: u8 = 2;

impl StopSignal {
    pub fn new() -> Arc<Self> {
        Arc::new(StopSignal(AtomicU8::new(RUN)))
    }
    /// Stop now: what was read is processed, nothing more is read.
    pub fn stop(&self) {
        self.0.store(STOP, Ordering::Relaxed);
    }
    /// Stop once every partition has been read to its end (the feed is complete).
    pub fn drain(&self) {
        let _ = self
            .0
            .compare_exchange(RUN, DRAIN, Ordering::Relaxed, Ordering::Relaxed);
    }
    /// Whether an immediate stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed) == STOP
    }
    fn finished(&self, caught_up: bool) -> bool {
        match self.0.load(Ordering::Relaxed) {
            RUN => false,
            DRAIN => caught_up,
            _ => true,
        }
    }
}

/// Records polled per partition per round: small enough to keep the frontier moving.
const POLL_BATCH: usize = 512;

/// Runs the engine on this thread until `stop` says so (with `kafka.stop-at-end`, once every
/// partition has been read to its end), then hands every remaining delta to `sink`.
pub fn run(
    cfg: &Config,
    scorer: Arc<dyn Scorer>,
    sink: SyncSender<SinkMsg>,
    stop: Arc<StopSignal>,
) -> Result<EngineStats, EngineError> {
    let workers = cfg.engine.workers;
    if cfg.kafka.stop_at_end {
        stop.drain();
    }
    let parts = Arc::new(kafka::partitions(&cfg.kafka)?);
    let dead = Arc::new(DeadLetters::new(&cfg.kafka)?);
    let board = Arc::new(FrontierBoard::new(workers));
    let owners = Arc::new(GameOwners::default());
    let cfg = Arc::new(cfg.clone());
    let dead_flush = dead.clone();
    // Set when any worker fails: the others stop instead of waiting forever on its progress.
    let abort = Arc::new(AtomicBool::new(false));
    let cause: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let cause2 = cause.clone();
    tracing::info!(workers, partitions = parts.len(), topics = ?cfg.kafka.topics, "engine starting");

    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let run = catch_unwind(AssertUnwindSafe(|| {
        let index = worker.index();
        let peers = worker.peers();
        let owned: Vec<(String, i32)> = parts
            .iter()
            .enumerate()
            .filter(|(i, _)| i % peers == index)
            .map(|(_, p)| p.clone())
            .collect();
        // Built first, so that every worker has it even if this one fails next.
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let sink = (index == 0).then(|| sink.clone());
            dataflow::build(scope, scorer.clone(), cfg.model.epsilon, sink)
        });
        let reader = KafkaReader::new(&cfg.kafka, &owned).map_err(|e| e.to_string())?;
        let mut ingest = Ingest::new(
            cfg.kafka.max_record_bytes,
            cfg.time.allowed_lateness,
            cfg.time.idle_timeout,
            cfg.time.late_policy,
        )
        .with_owners(owners.clone());
        for (t, p) in &owned {
            ingest.add_partition(t, *p);
        }
        let mut stats = EngineStats::default();
        let mut updates = Vec::new();
        let policy = cfg.time.late_policy.as_str();
        loop {
            let now = Instant::now();
            let frontier = *input.time();
            let polled = reader.poll(POLL_BATCH, |p| match p {
                Polled::Record(rec) => {
                    stats.records += 1;
                    let topic = rec.topic.to_string();
                    metrics::counter!("sideline_events_in_total", "topic" => topic.clone()).increment(1);
                    match ingest.accept(&rec, frontier, &mut updates) {
                        Ok(a) => {
                            stats.accepted += 1;
                            if a.late {
                                stats.late += 1;
                                metrics::counter!("sideline_events_late_total", "topic" => topic, "policy" => policy).increment(1);
                            }
                        }
                        Err(reject) => {
                            stats.rejected += 1;
                            if reject.code == crate::format::RejectCode::Late {
                                stats.late += 1;
                                metrics::counter!("sideline_events_late_total", "topic" => topic.clone(), "policy" => policy).increment(1);
                            }
                            metrics::counter!("sideline_events_rejected_total", "topic" => topic, "reason" => reject.code.as_str()).increment(1);
                            tracing::debug!(topic = rec.topic, partition = rec.partition, offset = rec.offset, %reject, "rejected");
                            dead.send(&rec, &reject);
                        }
                    }
                }
                Polled::End { topic, partition } => ingest.caught_up(topic, partition, now),
            });
            for (game, time, update) in updates.drain(..) {
                input.update_at(game, time, update);
            }
            if abort.load(Ordering::Relaxed) {
                return Err("stopped: another worker failed".to_string());
            }
            if stop.finished(ingest.all_caught_up()) {
                board.post(index, None);
                break;
            }
            if let Some(f) = board.post(index, Some(ingest.mark(now))) {
                if f > *input.time() {
                    input.advance_to(f);
                }
            }
            input.flush();
            let park = if polled == 0 { Some(Duration::from_millis(1)) } else { Some(Duration::ZERO) };
            worker.step_or_park(park);
        }
        input.close();
        while !probe.done() {
            if abort.load(Ordering::Relaxed) {
                return Err("stopped: another worker failed".to_string());
            }
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        Ok::<EngineStats, String>(stats)
        }));
        let result = match run {
            Ok(r) => r,
            Err(panic) => Err(format!(
                "worker panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            )),
        };
        if let Err(e) = &result {
            if !abort.swap(true, Ordering::Relaxed) {
                tracing::error!(error = %e, "engine worker failed; stopping the others");
                if let Ok(mut c) = cause2.lock() {
                    c.get_or_insert_with(|| e.clone());
                }
            }
        }
        result
    })
    .map_err(EngineError::Worker)?;

    let mut total = EngineStats::default();
    let mut failures = Vec::new();
    for r in guards.join() {
        match r.and_then(|x| x) {
            Ok(s) => {
                total.records += s.records;
                total.accepted += s.accepted;
                total.rejected += s.rejected;
                total.late += s.late;
            }
            Err(e) => failures.push(e),
        }
    }
    dead_flush.flush();
    // Report the cause, not the workers that stopped (or broke) because of it.
    let cause = cause.lock().ok().and_then(|c| c.clone());
    match (cause, failures.into_iter().next()) {
        (Some(e), _) | (None, Some(e)) => Err(EngineError::Worker(e)),
        (None, None) => Ok(total),
    }
}
