//! From evaluated values to numbered deltas, per pipeline, across its versions.
//!
//! In: [`SinkMsg`]s of every running pipeline version, in order per version.
//! Out: deltas to the pipeline's outputs (hub channels, Kafka topics) and to an observer.
//!
//! Per pipeline one version is *live*: its values become deltas when they moved at least
//! `epsilon` from the last published value (`epsilon + hysteresis` against the direction of
//! the last move). A newly deployed version is a *candidate*: it runs beside the live one,
//! reading its topics from the beginning, and its values are kept, not published. Once it has
//! completed every time the live version has, it takes over at that time `T`: each game whose
//! value differs gets a delta (cause `version`) from the old version's published value to the
//! new version's value as of `T`, the candidate's values after `T` follow as usual, and the
//! old version is stopped. Sequence numbers run on without a gap. Alerts open in one version
//! and not the other end or open at `T` (`publish/alerts.rs`). The swap: `publish/swap.rs`.

use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use crate::alert::Alert;
use crate::checkpoint::{Checkpoint, OpenStaleness, PartitionCheckpoint, PipelineCheckpoint};
use crate::dataflow::detect::AlertChange;
use crate::dataflow::{FinishedGame, FinishedGames, KnownGames, Model, RuntimeId, SinkMsg, Valued};
use crate::delta::{Delta, DeltaCause, FeatureChange};
use crate::engine::Control;
use crate::event::GameKey;
use crate::hub::Hub;
use crate::output::KafkaOutput;
use crate::pipeline::plan::Output;
use crate::pipeline::Plan;

mod alerts;
mod deltas;
mod outputs;
mod swap;
use alerts::{deliver_alerts, deliver_staleness, OpenAlerts, StaleOpen};
use deltas::{delta, number};
pub use outputs::VersionOutputs;
use swap::Candidate;

/// Where published deltas go besides the hub: the observer (`--delta-log`, the demo's printer)
/// and Kafka outputs.
pub trait DeltaSink: Send {
    fn deltas(&mut self, plan: &Plan, deltas: &[Delta]);
    /// The pipeline's numbered alert changes.
    fn alerts(&mut self, _plan: &Plan, _alerts: &[Alert]) {}
}

impl<F: FnMut(&Delta) + Send> DeltaSink for F {
    fn deltas(&mut self, _plan: &Plan, deltas: &[Delta]) {
        deltas.iter().for_each(self);
    }
}

#[derive(Clone, Debug)]
struct Published {
    value: f64,
    /// Direction of the last move: -1, 0 or 1.
    direction: f64,
    names: Arc<[Arc<str>]>,
    vars: Vec<f64>,
    event_seq: u64,
    /// An online ensemble's member weights behind `value` (empty for other models).
    weights: Vec<f64>,
    /// The model's attributions of `vars`, once a delta has computed them (with the
    /// manifest's weights only: an online ensemble's next row is explained with its own).
    attributions: Option<Vec<f64>>,
    /// The time of the game's first published value (its first row).
    first_time: u64,
}

/// One running version of a pipeline and what it has published (or, for a candidate, would
/// have published had it run alone).
struct Version {
    id: RuntimeId,
    plan: Arc<Plan>,
    names: Arc<[Arc<str>]>,
    model_version: String,
    /// The model, to explain what it published.
    model: Arc<Model>,
    /// Completed through this time.
    done: Option<u64>,
    finished: bool,
    published: FxHashMap<GameKey, Published>,
    /// Games of `published` that were released, earliest first: at most `keep_released` of
    /// them are held.
    released: VecDeque<GameKey>,
    keep_released: usize,
    /// Released since the hub was last told (the live version's are passed on).
    newly_released: Vec<GameKey>,
    outputs: VersionOutputs,
    /// An online ensemble's finished games: the checkpoint's.
    games: FinishedGames,
    /// The alerts it has open (for a candidate, as of the live version's time).
    open_alerts: OpenAlerts,
    /// The wall-clock (staleness) alerts it delivered open, for checkpoints.
    open_staleness: BTreeSet<OpenStaleness>,
    /// Those of `open_staleness` it took over from the version before it at a swap, before
    /// its own runtime judged them (each as its resolving change, its time to be set): see
    /// [`alerts::StaleOpen::swap`].
    inherited: BTreeMap<OpenStaleness, AlertChange>,
    /// The wall-clock alerts it (or a version before it) delivered ended, until their game is
    /// released: none opens again.
    ended_staleness: BTreeSet<OpenStaleness>,
}

impl Version {
    fn new(
        id: RuntimeId,
        plan: Arc<Plan>,
        model: Arc<Model>,
        outputs: VersionOutputs,
        keep_released: usize,
    ) -> Self {
        Version {
            id,
            names: plan.vars.iter().map(|n| Arc::from(n.as_str())).collect(),
            plan,
            model_version: model.version(),
            model,
            done: None,
            finished: false,
            published: FxHashMap::default(),
            released: VecDeque::new(),
            keep_released,
            newly_released: Vec::new(),
            outputs,
            games: FinishedGames::default(),
            open_alerts: OpenAlerts::default(),
            open_staleness: BTreeSet::new(),
            inherited: BTreeMap::new(),
            ended_staleness: BTreeSet::new(),
        }
    }

    fn note_games(&mut self, games: Vec<FinishedGame>) {
        self.games.note(games);
    }

    /// The finished games through `done`.
    fn games_through(&self, done: Option<u64>) -> KnownGames {
        self.games.through(done)
    }

    /// Folds the finished games no restart from a checkpoint taken now, and no new version
    /// taking over, could value a row before: those that ended before `done`, before each of
    /// the version's partitions' `earliest_row` (the first row of every game a restart reads
    /// again, and the time the records it reads anew are valued at, at least), and before the
    /// first row of every game it holds.
    fn fold_games(&mut self, control: &Control) {
        let Some(done) = self.done else {
            return;
        };
        let Some(d) = control.deployment(self.id) else {
            return;
        };
        let marks = d.marks.lock().unwrap_or_else(|e| e.into_inner());
        // A partition not marked yet is read from its beginning by a restart.
        if marks.len() < d.partitions.len() {
            return;
        }
        let retention = self.plan.time.retention.as_millis() as u64;
        let restart = marks
            .values()
            .map(|m| m.earliest_row(Some(done), retention))
            .fold(done, u64::min);
        drop(marks);
        // A new version taking over recomputes every game from the topics and is compared
        // with this one on each game it still holds (released ones included): their rows
        // keep their exact weights too.
        let before = self
            .published
            .values()
            .map(|p| p.first_time)
            .fold(restart, u64::min);
        // Games from a checkpoint of another model are kept as they are: this one folds none.
        if let Some(start) = self.model.online_start() {
            self.games.fold_before(before, start);
        }
    }

    /// Applies one completed time's values: the ones worth publishing, each with what was
    /// published before it, in order. The version's published state moves on.
    fn decide(&mut self, values: Vec<Valued>) -> Vec<(Valued, Option<Published>)> {
        let rule = self.plan.delta;
        let mut out = Vec::new();
        for v in values {
            if v.closed {
                self.ended_staleness.retain(|k| k.game != v.game);
                // Released `retention` after its end. What it published is kept for the
                // latest `keep_released` released games, as the hub keeps their snapshot
                // entries: a new version taking over compares against it.
                if self.published.contains_key(&v.game) {
                    self.released.push_back(v.game.clone());
                    self.newly_released.push(v.game);
                    while self.released.len() > self.keep_released {
                        let forgotten = self.released.pop_front().expect("over the bound");
                        self.published.remove(&forgotten);
                    }
                }
                continue;
            }
            let previous = self.published.get(&v.game);
            let publish = match previous {
                None => true,
                Some(prev) => {
                    let step = v.value - prev.value;
                    let against = prev.direction != 0.0 && step.signum() != prev.direction;
                    let needed = rule.epsilon + if against { rule.hysteresis } else { 0.0 };
                    step != 0.0 && step.abs() >= needed
                }
            };
            if publish {
                let direction = previous.map_or(0.0, |p| (v.value - p.value).signum());
                let first_time = previous.map_or(v.time, |p| p.first_time);
                // What it replaces is the delta's previous row: moved out, not copied.
                let previous = self.published.insert(
                    v.game.clone(),
                    Published {
                        value: v.value,
                        direction,
                        names: self.names.clone(),
                        vars: v.vars.clone(),
                        event_seq: v.event_seq,
                        weights: v.weights.clone(),
                        attributions: None,
                        first_time,
                    },
                );
                out.push((v, previous));
            }
        }
        out
    }
}

struct PipelineOut {
    live: Version,
    candidate: Option<Candidate>,
    seq: u64,
    /// Last alert number.
    alert_seq: u64,
    /// After a restart: deltas and alerts at or before this time were delivered before it.
    /// The live version's values up to it only rebuild its published state.
    delivered_through: Option<u64>,
    /// When the restart began, until the live version is back at `delivered_through`.
    rebuilding_since: Option<std::time::Instant>,
}

/// The publishing state of every pipeline of an engine.
pub struct Publisher {
    hub: Arc<Hub>,
    control: Arc<Control>,
    pipelines: BTreeMap<String, PipelineOut>,
    /// Which pipeline each runtime belongs to.
    owners: HashMap<RuntimeId, String>,
    sink: Box<dyn DeltaSink>,
}

/// Shared between the engine's sink thread and whoever deploys.
pub type SharedPublisher = Arc<Mutex<Publisher>>;

impl Publisher {
    pub fn new(hub: Arc<Hub>, control: Arc<Control>, sink: Box<dyn DeltaSink>) -> SharedPublisher {
        Arc::new(Mutex::new(Publisher {
            hub,
            control,
            pipelines: BTreeMap::new(),
            owners: HashMap::new(),
            sink,
        }))
    }

    /// Waits for the Kafka output's writes and the webhooks' deliveries (at most 30 s each).
    pub fn flush(&self) {
        for p in self.pipelines.values() {
            p.live.outputs.flush();
        }
    }

    /// Replaces where published deltas go besides the hub.
    pub fn set_sink(&mut self, sink: Box<dyn DeltaSink>) {
        self.sink = sink;
    }

    /// Registers a started version: the pipeline's first becomes live, a later one a
    /// candidate (replacing an earlier candidate, which is stopped).
    pub fn register(
        &mut self,
        id: RuntimeId,
        plan: Arc<Plan>,
        model: Arc<Model>,
        outputs: VersionOutputs,
    ) {
        for o in &plan.outputs {
            match o {
                Output::WebSocket { channel } => self.hub.ensure_channel(channel),
                Output::WebSocketAlerts { channel } => self.hub.ensure_alert_channel(channel),
                _ => {}
            }
        }
        self.owners.insert(id, plan.name.clone());
        let keep = self.hub.released_games();
        let version = Version::new(id, plan.clone(), model, outputs, keep);
        match self.pipelines.get_mut(&plan.name) {
            None => {
                // A channel may already hold deltas (the pipeline was removed and deployed
                // again): numbering goes on from there, or the hub would drop them as repeats.
                let seq = plan
                    .outputs
                    .iter()
                    .filter_map(|o| match o {
                        Output::WebSocket { channel } => self.hub.seq(channel),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                let alert_seq = plan
                    .outputs
                    .iter()
                    .filter_map(|o| match o {
                        Output::WebSocketAlerts { channel } => self.hub.seq(channel),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                self.pipelines.insert(
                    plan.name.clone(),
                    PipelineOut {
                        live: version,
                        candidate: None,
                        seq,
                        alert_seq,
                        delivered_through: None,
                        rebuilding_since: None,
                    },
                );
            }
            Some(p) => {
                if let Some(old) = p.candidate.take() {
                    self.control.stop(old.version.id);
                    old.version.outputs.retire();
                }
                p.candidate = Some(Candidate {
                    version,
                    queue: VecDeque::new(),
                    alerts: VecDeque::new(),
                    stale_open: StaleOpen::default(),
                });
            }
        }
    }

    /// Takes a newly registered pipeline up where a checkpoint left it: numbering goes on from
    /// the checkpoint's, and what its live version recomputes at or before the checkpoint's
    /// time is not delivered again.
    pub fn resume(&mut self, name: &str, cp: &PipelineCheckpoint) {
        let Some(p) = self.pipelines.get_mut(name) else {
            return;
        };
        p.seq = p.seq.max(cp.seq);
        p.alert_seq = p.alert_seq.max(cp.alert_seq);
        p.delivered_through = cp.done;
        p.live.games.note_known(KnownGames {
            folded: cp.folded_games.clone(),
            games: cp.finished_games.clone(),
        });
        p.live.open_staleness = cp.open_staleness.iter().cloned().collect();
        // Each may end at a recomputed value: the game's event that ends it may have been
        // read before the restart, its resolve not delivered (the workers' take-up ends one
        // only at a record read afresh).
        let plan = &p.live.plan;
        p.live.inherited = cp
            .open_staleness
            .iter()
            .filter_map(|k| Some((k.clone(), alerts::resolving(plan, k, k.opened_at)?)))
            .collect();
        p.rebuilding_since = cp.done.map(|_| std::time::Instant::now());
        for o in &p.live.plan.outputs {
            match o {
                Output::WebSocket { channel } => self.hub.restore_seq(channel, cp.seq),
                Output::WebSocketAlerts { channel } => self.hub.restore_seq(channel, cp.alert_seq),
                _ => {}
            }
        }
    }

    /// The online ensemble's finished games the live version of `name` knows, for a new
    /// version that runs the same model (`model_version`) to start from; none otherwise.
    pub fn finished_games(&self, name: &str, model_version: &str) -> KnownGames {
        match self.pipelines.get(name) {
            Some(p) if p.live.model_version == model_version => p.live.games_through(p.live.done),
            _ => KnownGames::default(),
        }
    }

    /// Hands a new version of `name` (live or warming) the finished games it starts from, so
    /// that its checkpoints hold them too.
    pub fn seed_games(&mut self, name: &str, id: RuntimeId, games: KnownGames) {
        let Some(p) = self.pipelines.get_mut(name) else {
            return;
        };
        if p.live.id == id {
            p.live.games.note_known(games);
        } else if let Some(c) = p.candidate.as_mut().filter(|c| c.version.id == id) {
            c.version.games.note_known(games);
        }
    }

    /// Commits the live versions' Kafka output transactions: what they wrote so far becomes
    /// visible to `read_committed` consumers. Called with the checkpoint taken just before, and
    /// the checkpoint is written only if every commit succeeded.
    pub fn commit_outputs(&self) -> Result<(), String> {
        for (name, p) in &self.pipelines {
            if let Some(k) = &p.live.outputs.kafka {
                k.commit().map_err(|e| format!("pipeline {name}: {e}"))?;
            }
        }
        Ok(())
    }

    /// Folds each version's finished games that no restart can value a row before (see
    /// [`FinishedGames::fold_before`]): what an online ensemble keeps is bounded by the games
    /// within reach of a restart, not by how long the engine has run.
    pub fn fold_finished_games(&mut self) {
        for p in self.pipelines.values_mut() {
            p.live.fold_games(&self.control);
            if let Some(c) = p.candidate.as_mut() {
                c.version.fold_games(&self.control);
            }
        }
    }

    /// What a restart needs to go on from here: per pipeline, its live version's completed
    /// time, numbering, and each partition's read position and open games.
    pub fn checkpoint(&self) -> Checkpoint {
        let mut cp = Checkpoint::default();
        for (name, p) in &self.pipelines {
            let Some(d) = self.control.deployment(p.live.id) else {
                continue;
            };
            let retention = p.live.plan.time.retention.as_millis() as u64;
            // Never behind what a restart already had: until the live version has recomputed
            // past it, the restart's own checkpoint still holds.
            let done = p.live.done.max(p.delivered_through);
            let marks = d.marks.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(done) = done {
                d.checkpointed
                    .fetch_max(done, std::sync::atomic::Ordering::Relaxed);
            }
            let known = p.live.games_through(done);
            cp.pipelines.insert(
                name.clone(),
                PipelineCheckpoint {
                    version: p.live.plan.version,
                    source: crate::source::ingest::fingerprint(p.live.plan.source.as_bytes()),
                    done,
                    seq: p.seq,
                    alert_seq: p.alert_seq,
                    partitions: marks
                        .values()
                        .map(|m| PartitionCheckpoint::from_mark(m, done, retention))
                        .collect(),
                    definition: Some(p.live.plan.source.clone()),
                    finished_games: known.games,
                    folded_games: known.folded,
                    open_staleness: p.live.open_staleness.iter().cloned().collect(),
                },
            );
        }
        cp
    }

    /// Removes a pipeline: every version of it stops; its channels keep their last values.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(p) = self.pipelines.remove(name) else {
            return false;
        };
        self.control.stop(p.live.id);
        p.live.outputs.retire();
        if let Some(c) = p.candidate {
            self.control.stop(c.version.id);
            c.version.outputs.retire();
        }
        true
    }

    /// The live version of each pipeline, and the candidate if one is warming up.
    pub fn pipelines(&self) -> Vec<(Arc<Plan>, Option<Arc<Plan>>)> {
        self.pipelines
            .values()
            .map(|p| {
                (
                    p.live.plan.clone(),
                    p.candidate.as_ref().map(|c| c.version.plan.clone()),
                )
            })
            .collect()
    }

    /// Whether the pipeline's latest deployed version is live (no candidate warming up).
    pub fn settled(&self, name: &str) -> bool {
        self.pipelines
            .get(name)
            .is_some_and(|p| p.candidate.is_none())
    }

    pub fn handle(&mut self, msg: SinkMsg) {
        let msg = match msg {
            SinkMsg::Batch(msgs) => {
                for m in msgs {
                    self.handle(m);
                }
                return;
            }
            other => other,
        };
        let runtime = match &msg {
            SinkMsg::Batch(_) => return,
            SinkMsg::Values { runtime, .. }
            | SinkMsg::Progress { runtime, .. }
            | SinkMsg::Alerts { runtime, .. }
            | SinkMsg::GamesFinished { runtime, .. }
            | SinkMsg::Finished { runtime } => *runtime,
        };
        let Some(name) = self.owners.get(&runtime).cloned() else {
            return;
        };
        let Some(p) = self.pipelines.get_mut(&name) else {
            return;
        };
        if p.live.id == runtime {
            if let (Some(since), Some(through)) = (p.rebuilding_since, p.delivered_through) {
                let done = match &msg {
                    SinkMsg::Values { time, .. } | SinkMsg::Progress { time, .. } => Some(*time),
                    _ => None,
                };
                if done.is_some_and(|d| d >= through) {
                    let ms = since.elapsed().as_millis() as u64;
                    tracing::info!(
                        pipeline = name,
                        rebuilt_ms = ms,
                        "rebuilt to the checkpoint"
                    );
                    metrics::gauge!("sideline_recovery_seconds", "pipeline" => name.clone())
                        .set(ms as f64 / 1000.0);
                    p.rebuilding_since = None;
                }
            }
            match msg {
                SinkMsg::Values {
                    time,
                    values,
                    alerts,
                    ..
                } => {
                    // Values of a time come once it is complete: so is everything before it.
                    p.live.done = p.live.done.max(Some(time));
                    // Recomputed after a restart: archived before it.
                    if p.delivered_through.is_none_or(|t| time > t) {
                        p.live.outputs.archive(&values, &p.live.model_version);
                    }
                    let resumed = p.live.resumed(&values);
                    let deltas = number(p, time, DeltaCause::Moved, values);
                    emit(
                        &self.hub,
                        p.live.outputs.kafka.as_ref(),
                        self.sink.as_mut(),
                        &p.live.plan,
                        &deltas,
                    );
                    release(&self.hub, &mut p.live);
                    p.live.open_alerts.track(&p.live.plan, &alerts);
                    deliver_alerts(&self.hub, p, self.sink.as_mut(), alerts);
                    deliver_staleness(&self.hub, p, self.sink.as_mut(), resumed);
                }
                SinkMsg::Progress { time, .. } => {
                    p.live.done = p.live.done.max(Some(time));
                    progress(&self.hub, &p.live.plan, time);
                }
                SinkMsg::Finished { .. } => p.live.finished = true,
                SinkMsg::GamesFinished { games, .. } => p.live.note_games(games),
                SinkMsg::Alerts { alerts, .. } => {
                    deliver_staleness(&self.hub, p, self.sink.as_mut(), alerts)
                }
                // Taken apart on arrival.
                SinkMsg::Batch(_) => {}
            }
        } else if let Some(c) = p.candidate.as_mut().filter(|c| c.version.id == runtime) {
            match msg {
                SinkMsg::Values {
                    time,
                    values,
                    alerts,
                    ..
                } => c.queue.push_back((time, values, alerts)),
                SinkMsg::Progress { time, .. } => c.version.done = Some(time),
                SinkMsg::Finished { .. } => c.version.finished = true,
                SinkMsg::GamesFinished { games, .. } => c.version.note_games(games),
                // Kept until the swap: those after it are delivered then.
                SinkMsg::Alerts { time, alerts, .. } => c.alerts.push_back((time, alerts)),
                SinkMsg::Batch(_) => {}
            }
            // Silently catch up with the live version, so the queues stay short: up to the
            // live version's time, the live version's alerts are the ones delivered.
            let live_done = p.live.done.unwrap_or(0);
            c.catch_up(live_done);
            // The hub hears of its releases if it takes over (all of them then).
            c.version.newly_released.clear();
        }
        self.try_swap(&name);
    }
}

/// Tells the version's delta channels the games it released since they were last told.
fn release(hub: &Hub, version: &mut Version) {
    if version.newly_released.is_empty() {
        return;
    }
    let games = std::mem::take(&mut version.newly_released);
    for o in &version.plan.outputs {
        if let Output::WebSocket { channel } = o {
            hub.release(channel, &games);
        }
    }
}

/// Numbered deltas, each with the Kafka timestamp of the event that caused it (none for a
/// window expiring later or a version taking over).
#[derive(Default)]
struct Numbered {
    deltas: Vec<Delta>,
    ingest: Vec<Option<u64>>,
}

fn emit(
    hub: &Hub,
    kafka: Option<&KafkaOutput>,
    sink: &mut dyn DeltaSink,
    plan: &Plan,
    numbered: &Numbered,
) {
    let Numbered { deltas, ingest } = numbered;
    if deltas.is_empty() {
        return;
    }
    metrics::counter!("sideline_deltas_out_total", "pipeline" => plan.name.clone())
        .increment(deltas.len() as u64);
    for o in &plan.outputs {
        match o {
            Output::WebSocket { channel } => hub.publish(channel, deltas, ingest),
            Output::Kafka { topic } => match kafka {
                Some(k) => k.send(topic, deltas),
                None => tracing::error!(topic, "no Kafka output producer"),
            },
            Output::KafkaAlerts { .. }
            | Output::Webhook { .. }
            | Output::WebSocketAlerts { .. }
            | Output::Archive { .. } => {}
        }
    }
    sink.deltas(plan, deltas);
}

fn progress(hub: &Hub, plan: &Plan, time: u64) {
    for o in &plan.outputs {
        if let Output::WebSocket { channel } = o {
            hub.progress(channel, time);
        }
    }
}
