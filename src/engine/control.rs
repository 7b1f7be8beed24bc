//! How a running engine is told to start and stop pipeline versions.
//!
//! Commands are appended to one shared list; every worker applies them in the same order at
//! its next step, so all workers build (and retire) the same dataflows in the same order, as
//! timely requires. A started version gets its own Kafka consumer per worker, reading its
//! topics from the beginning: that is how a new version is warmed from Kafka while the old one
//! keeps serving.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::dataflow::{Model, RuntimeId};
use crate::pipeline::Plan;
use crate::source::frontier::FrontierBoard;
use crate::source::ingest::{GameOwners, PartitionMark, Resume};

/// Where a version starts from: per partition, where a checkpoint left it (absent: from the
/// beginning), and an online ensemble's games finished before (see [`crate::dataflow::reweight`]).
#[derive(Debug, Default)]
pub struct Resumed {
    pub partitions: BTreeMap<(String, i32), Resume>,
    pub known_games: crate::dataflow::KnownGames,
    /// The staleness alerts open at the checkpoint.
    pub open_staleness: Vec<crate::checkpoint::OpenStaleness>,
}

/// One pipeline version to run: the plan, its model (and shadow model), and what its workers
/// share.
pub struct Deployment {
    pub id: RuntimeId,
    pub plan: Arc<Plan>,
    pub model: Arc<Model>,
    /// Scored beside `model` on every row, archived only (`[model] shadow`).
    pub shadow: Option<Arc<Model>>,
    /// Every (topic, partition) of the plan's topics; worker `i` of `n` reads those at indexes
    /// `i mod n`.
    pub partitions: Vec<(String, i32)>,
    pub board: Arc<FrontierBoard>,
    pub owners: Arc<GameOwners>,
    /// Where each partition takes up again after a restart (empty on a fresh start).
    pub resume: BTreeMap<(String, i32), Resume>,
    /// An online ensemble's games finished before this version started (a checkpoint's, or
    /// the replaced version's): they weigh its members from the start.
    pub known_games: crate::dataflow::KnownGames,
    /// The staleness alerts open when the checkpoint it resumes from was taken: the workers
    /// reading their games take them up ([`crate::engine::runtime::Runtime::start`]).
    pub open_staleness: Vec<crate::checkpoint::OpenStaleness>,
    /// Each partition's read position and games, posted by the worker reading it, for
    /// checkpoints.
    pub marks: Mutex<BTreeMap<(String, i32), PartitionMark>>,
    /// The `done` of the latest checkpoint taken of this version (0: none yet). Checkpoints'
    /// `done` never falls, so a closed game over by then is over in every later checkpoint
    /// too, and its workers may drop it from their marks ([`crate::source::ingest::Ingest::forget_closed`]).
    pub checkpointed: AtomicU64,
}

#[derive(Clone)]
pub enum Command {
    Start(Arc<Deployment>),
    Stop(RuntimeId),
}

/// The command list, shared by the workers and whoever deploys.
pub struct Control {
    workers: usize,
    next_id: AtomicU64,
    commands: Mutex<Vec<Command>>,
    running: Mutex<BTreeMap<RuntimeId, Arc<Deployment>>>,
}

impl Control {
    pub fn new(workers: usize) -> Arc<Control> {
        Arc::new(Control {
            workers,
            next_id: AtomicU64::new(1),
            commands: Mutex::new(Vec::new()),
            running: Mutex::new(BTreeMap::new()),
        })
    }

    /// A fresh runtime id, for [`Control::start_with_id`].
    pub fn reserve_id(&self) -> RuntimeId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts a pipeline version (without a shadow model).
    pub fn start(
        &self,
        plan: Arc<Plan>,
        model: Arc<Model>,
        partitions: Vec<(String, i32)>,
    ) -> Arc<Deployment> {
        self.start_with_id(self.reserve_id(), plan, model, partitions)
    }

    /// Starts a pipeline version under an id from [`Control::reserve_id`].
    pub fn start_with_id(
        &self,
        id: RuntimeId,
        plan: Arc<Plan>,
        model: Arc<Model>,
        partitions: Vec<(String, i32)>,
    ) -> Arc<Deployment> {
        self.start_resumed(id, plan, model, None, partitions, Resumed::default())
    }

    /// Starts a pipeline version, scoring `shadow` beside `model`, that takes its partitions up
    /// where a checkpoint left them (nothing resumed: from the beginning).
    pub fn start_resumed(
        &self,
        id: RuntimeId,
        plan: Arc<Plan>,
        model: Arc<Model>,
        shadow: Option<Arc<Model>>,
        partitions: Vec<(String, i32)>,
        resumed: Resumed,
    ) -> Arc<Deployment> {
        let Resumed {
            partitions: resume,
            known_games,
            open_staleness,
        } = resumed;
        let d = Arc::new(Deployment {
            id,
            plan,
            model,
            shadow,
            partitions,
            board: Arc::new(FrontierBoard::new(self.workers)),
            owners: Arc::default(),
            resume,
            known_games,
            open_staleness,
            marks: Mutex::default(),
            checkpointed: AtomicU64::new(0),
        });
        lock(&self.running).insert(d.id, d.clone());
        lock(&self.commands).push(Command::Start(d.clone()));
        d
    }

    /// A running version's deployment.
    pub fn deployment(&self, id: RuntimeId) -> Option<Arc<Deployment>> {
        lock(&self.running).get(&id).cloned()
    }

    /// Stops a pipeline version: its workers close its input and drop its consumers.
    pub fn stop(&self, id: RuntimeId) {
        if lock(&self.running).remove(&id).is_some() {
            lock(&self.commands).push(Command::Stop(id));
        }
    }

    /// Commands from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Command> {
        lock(&self.commands)
            .get(from..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// The versions running (or starting).
    pub fn running(&self) -> Vec<Arc<Deployment>> {
        lock(&self.running).values().cloned().collect()
    }

    pub fn get(&self, id: RuntimeId) -> Option<Arc<Deployment>> {
        lock(&self.running).get(&id).cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
