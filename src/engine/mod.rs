//! The engine: timely workers running any number of pipeline versions, each reading its Kafka
//! partitions (split across the workers) into its own dataflow, until stopped (or, in replay
//! mode, until every partition is read to its end). Versions are started and stopped while it
//! runs ([`control`]).

pub mod control;
pub mod games;
pub mod runtime;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::ProbeHandle;

use crate::config::Config;
use crate::dataflow::SinkMsg;
use crate::source::kafka::{DeadLetters, SourceError};

pub use control::{Command, Control, Deployment};
use runtime::Runtime;

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
    /// Re-sends of accepted events (same id, same bytes), skipped.
    pub redelivered: u64,
    /// Games whose state was released, `retention` after their end.
    pub games_closed: u64,
    /// Partition reads skipped because the partition was more than `read-ahead` past the
    /// frontier (one per partition per worker step).
    pub held: u64,
    /// CPU time of the worker threads (Linux; zero elsewhere).
    pub cpu: Duration,
    /// CPU time of the thread that turns their values into deltas and alerts (set by
    /// [`crate::app::App::run_engine`]).
    pub publisher_cpu: Duration,
}

/// The CPU time of the calling thread so far: the scheduler's own count, in nanoseconds, from
/// `/proc/thread-self/schedstat` (Linux); zero where there is none.
pub fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
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
    /// Stop now: what is complete has been delivered; nothing more is read or computed (a
    /// restart from a checkpoint recomputes the rest).
    pub fn stop(&self) {
        self.0.store(STOP, Ordering::Relaxed);
    }
    /// Stop once every partition has been read to its end (the feed is complete).
    pub fn drain(&self) {
        let _ = self
            .0
            .compare_exchange(RUN, DRAIN, Ordering::Relaxed, Ordering::Relaxed);
    }
    /// Whether a drain was asked for.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed) == DRAIN
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

/// Runs the engine on this thread until `stop` says so (in drain mode, once every running
/// pipeline version has read its partitions to their end), applying `control`'s commands as
/// they come. Values go to `sink`.
pub fn run(
    cfg: &Config,
    control: Arc<Control>,
    sink: SyncSender<SinkMsg>,
    stop: Arc<StopSignal>,
) -> Result<EngineStats, EngineError> {
    let workers = cfg.engine.workers;
    if cfg.kafka.stop_at_end {
        stop.drain();
    }
    let dead = Arc::new(DeadLetters::new(&cfg.kafka)?);
    let cfg = Arc::new(cfg.clone());
    let dead_flush = dead.clone();
    // Set when any worker fails: the others stop instead of waiting forever on its progress.
    let abort = Arc::new(AtomicBool::new(false));
    let cause: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let cause2 = cause.clone();
    tracing::info!(workers, "engine starting");

    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let run = catch_unwind(AssertUnwindSafe(|| {
            let index = worker.index();
            let mut runtimes: Vec<Runtime> = Vec::new();
            let mut closing: Vec<ProbeHandle<u64>> = Vec::new();
            let mut applied = 0usize;
            let mut stats = EngineStats::default();
            loop {
                let now = Instant::now();
                for cmd in control.since(applied) {
                    applied += 1;
                    match cmd {
                        Command::Start(d) => {
                            let sink_here = (index == 0).then(|| sink.clone());
                            let alerts = sink.clone();
                            let sink = sink_here;
                            tracing::info!(
                                pipeline = d.plan.name,
                                version = d.plan.version,
                                runtime = d.id,
                                "starting pipeline version"
                            );
                            runtimes.push(Runtime::start(worker, &cfg, d, sink, alerts.clone())?);
                        }
                        Command::Stop(id) => {
                            if let Some(i) = runtimes.iter().position(|r| r.deployment.id == id) {
                                tracing::info!(runtime = id, "stopping pipeline version");
                                closing.push(runtimes.remove(i).close(index));
                            }
                        }
                    }
                }
                let mut polled = 0;
                for rt in runtimes.iter_mut() {
                    polled += rt.step(index, now, &dead, &mut stats);
                }
                closing.retain(|p| !p.done());
                if abort.load(Ordering::Relaxed) {
                    return Err("stopped: another worker failed".to_string());
                }
                let draining = stop.is_draining();
                let caught_up = runtimes.iter_mut().all(|r| r.caught_up(draining));
                if stop.finished(caught_up) {
                    break;
                }
                let park = if polled == 0 {
                    Some(Duration::from_millis(1))
                } else {
                    Some(Duration::ZERO)
                };
                worker.step_or_park(park);
            }
            if stop.is_stopped() {
                // Stopped (Ctrl-C, SIGTERM): what is complete was delivered; nothing else is
                // computed. Closing the inputs would complete every future time at once and
                // publish window expiries that never happened; a restart from the last
                // checkpoint recomputes what was read but not complete.
                drop(runtimes);
                drop(closing);
                for id in worker.installed_dataflows() {
                    worker.drop_dataflow(id);
                }
                stats.cpu = thread_cpu();
                return Ok(stats);
            }
            closing.extend(runtimes.drain(..).map(|r| r.close(index)));
            while closing.iter().any(|p| !p.done()) {
                if abort.load(Ordering::Relaxed) {
                    return Err("stopped: another worker failed".to_string());
                }
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            stats.cpu = thread_cpu();
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
            // Timely steps a worker until its dataflows complete once this closure returns;
            // after a failure they never will (inputs still open, a peer gone): drop them.
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
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
                total.redelivered += s.redelivered;
                total.games_closed += s.games_closed;
                total.held += s.held;
                total.cpu += s.cpu;
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
