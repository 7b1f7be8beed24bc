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
//! old version is stopped. Sequence numbers run on without a gap.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::dataflow::{RuntimeId, SinkMsg, Valued};
use crate::delta::{Delta, DeltaCause, FeatureChange};
use crate::engine::Control;
use crate::event::GameKey;
use crate::hub::Hub;
use crate::pipeline::plan::Output;
use crate::pipeline::Plan;

/// Where published deltas go besides the hub: the observer (`--delta-log`, the demo's printer)
/// and Kafka outputs.
pub trait DeltaSink: Send {
    fn deltas(&mut self, plan: &Plan, deltas: &[Delta]);
}

impl<F: FnMut(&Delta) + Send> DeltaSink for F {
    fn deltas(&mut self, _plan: &Plan, deltas: &[Delta]) {
        deltas.iter().for_each(|d| self(d));
    }
}

#[derive(Clone, Debug)]
struct Published {
    value: f64,
    /// Direction of the last move: -1, 0 or 1.
    direction: f64,
    names: Arc<Vec<String>>,
    vars: Vec<f64>,
}

struct Version {
    id: RuntimeId,
    plan: Arc<Plan>,
    names: Arc<Vec<String>>,
    model_version: String,
    /// Completed through this time.
    done: Option<u64>,
    finished: bool,
}

impl Version {
    fn new(id: RuntimeId, plan: Arc<Plan>, model_version: String) -> Self {
        Version {
            id,
            names: Arc::new(plan.vars.clone()),
            plan,
            model_version,
            done: None,
            finished: false,
        }
    }
}

struct Candidate {
    version: Version,
    /// Its latest value per game, as of the times applied so far.
    state: BTreeMap<GameKey, Valued>,
    /// Completed times not applied yet.
    queue: VecDeque<(u64, Vec<Valued>)>,
}

struct PipelineOut {
    live: Version,
    candidate: Option<Candidate>,
    published: HashMap<GameKey, Published>,
    seq: u64,
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

    /// Replaces where published deltas go besides the hub.
    pub fn set_sink(&mut self, sink: Box<dyn DeltaSink>) {
        self.sink = sink;
    }

    /// Registers a started version: the pipeline's first becomes live, a later one a
    /// candidate (replacing an earlier candidate, which is stopped).
    pub fn register(&mut self, id: RuntimeId, plan: Arc<Plan>, model_version: String) {
        for o in &plan.outputs {
            if let Output::WebSocket { channel } = o {
                self.hub.ensure_channel(channel);
            }
        }
        self.owners.insert(id, plan.name.clone());
        let version = Version::new(id, plan.clone(), model_version);
        match self.pipelines.get_mut(&plan.name) {
            None => {
                self.pipelines.insert(
                    plan.name.clone(),
                    PipelineOut {
                        live: version,
                        candidate: None,
                        published: HashMap::new(),
                        seq: 0,
                    },
                );
            }
            Some(p) => {
                if let Some(old) = p.candidate.take() {
                    self.control.stop(old.version.id);
                }
                p.candidate = Some(Candidate {
                    version,
                    state: BTreeMap::new(),
                    queue: VecDeque::new(),
                });
            }
        }
    }

    /// Removes a pipeline: every version of it stops; its channels keep their last values.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(p) = self.pipelines.remove(name) else {
            return false;
        };
        self.control.stop(p.live.id);
        if let Some(c) = p.candidate {
            self.control.stop(c.version.id);
        }
        true
    }

    /// The live version of each pipeline, and the candidate's version if one is warming up.
    pub fn pipelines(&self) -> Vec<(Arc<Plan>, Option<u32>)> {
        self.pipelines
            .values()
            .map(|p| {
                (
                    p.live.plan.clone(),
                    p.candidate.as_ref().map(|c| c.version.plan.version),
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

    /// Whether every live version has finished (its input closed and drained).
    pub fn all_finished(&self) -> bool {
        self.pipelines.values().all(|p| p.live.finished)
    }

    pub fn handle(&mut self, msg: SinkMsg) {
        let runtime = match &msg {
            SinkMsg::Values { runtime, .. }
            | SinkMsg::Progress { runtime, .. }
            | SinkMsg::Finished { runtime } => *runtime,
        };
        let Some(name) = self.owners.get(&runtime).cloned() else {
            return;
        };
        let Some(p) = self.pipelines.get_mut(&name) else {
            return;
        };
        let is_live = p.live.id == runtime;
        let is_candidate = p
            .candidate
            .as_ref()
            .is_some_and(|c| c.version.id == runtime);
        match msg {
            SinkMsg::Values { time, values, .. } if is_live => {
                let deltas = moved(p, time, &values);
                emit(&self.hub, self.sink.as_mut(), &p.live.plan, &deltas);
            }
            SinkMsg::Values { time, values, .. } if is_candidate => {
                if let Some(c) = p.candidate.as_mut() {
                    c.queue.push_back((time, values));
                }
            }
            SinkMsg::Progress { time, .. } if is_live => {
                p.live.done = Some(time);
                progress(&self.hub, &p.live.plan, time);
            }
            SinkMsg::Progress { time, .. } if is_candidate => {
                if let Some(c) = p.candidate.as_mut() {
                    c.version.done = Some(time);
                }
            }
            SinkMsg::Finished { .. } if is_live => p.live.finished = true,
            SinkMsg::Finished { .. } if is_candidate => {
                if let Some(c) = p.candidate.as_mut() {
                    c.version.finished = true;
                }
            }
            _ => {}
        }
        self.try_swap(&name);
    }

    /// Hands the pipeline over to its candidate once the candidate has caught up.
    fn try_swap(&mut self, name: &str) {
        let Some(p) = self.pipelines.get_mut(name) else {
            return;
        };
        let Some(c) = p.candidate.as_ref() else {
            return;
        };
        let live_done = p.live.done.unwrap_or(0);
        let ready = match c.version.done {
            Some(d) => d >= live_done || c.version.finished,
            None => c.version.finished,
        };
        if !ready {
            return;
        }
        let mut c = p.candidate.take().expect("checked above");
        let candidate_done = c.version.done;
        // The candidate's state as of the live version's last completed time.
        while c.queue.front().is_some_and(|(t, _)| *t <= live_done) {
            let (_, values) = c.queue.pop_front().expect("front checked");
            for v in values {
                c.state.insert(v.game.clone(), v);
            }
        }
        let old = std::mem::replace(&mut p.live, c.version);
        let mut deltas = Vec::new();
        for (game, v) in &c.state {
            let previous = p.published.get(game);
            if previous.is_some_and(|prev| prev.value == v.value) {
                // Same value: only the features behind it are taken over.
                let prev = p.published.get_mut(game).expect("checked");
                prev.names = p.live.names.clone();
                prev.vars = v.vars.clone();
                continue;
            }
            p.seq += 1;
            let d = delta(
                p.seq,
                &p.live,
                live_done.max(v.time),
                v,
                previous,
                DeltaCause::Version,
            );
            deltas.push((d, None));
            publish_state(p, game, v);
        }
        tracing::info!(
            pipeline = name,
            from = old.plan.version,
            to = p.live.plan.version,
            at = live_done,
            changed = deltas.len(),
            "new pipeline version is live"
        );
        emit(&self.hub, self.sink.as_mut(), &p.live.plan, &deltas);
        self.control.stop(old.id);
        self.owners.remove(&old.id);
        // What the new version completed beyond the swap follows as usual.
        let p = self.pipelines.get_mut(name).expect("present");
        p.live.done = Some(live_done);
        while let Some((time, values)) = c.queue.pop_front() {
            let deltas = moved(p, time, &values);
            emit(&self.hub, self.sink.as_mut(), &p.live.plan, &deltas);
        }
        if let Some(done) = candidate_done {
            if done > live_done {
                p.live.done = Some(done);
                progress(&self.hub, &p.live.plan, done);
            }
        }
    }
}

fn publish_state(p: &mut PipelineOut, game: &GameKey, v: &Valued) {
    let direction = match p.published.get(game) {
        Some(prev) => (v.value - prev.value).signum(),
        None => 0.0,
    };
    p.published.insert(
        game.clone(),
        Published {
            value: v.value,
            direction,
            names: p.live.names.clone(),
            vars: v.vars.clone(),
        },
    );
}

/// The live version's deltas for one completed time, each with the Kafka timestamp of the
/// event that caused it (none for a window expiring later).
fn moved(p: &mut PipelineOut, time: u64, values: &[Valued]) -> Vec<(Delta, Option<u64>)> {
    let delta_plan = p.live.plan.delta;
    let mut out = Vec::new();
    for v in values {
        let previous = p.published.get(&v.game);
        let publish = match previous {
            None => true,
            Some(prev) => {
                let step = v.value - prev.value;
                let against = prev.direction != 0.0 && step.signum() != prev.direction;
                let needed = delta_plan.epsilon + if against { delta_plan.hysteresis } else { 0.0 };
                step != 0.0 && step.abs() >= needed
            }
        };
        if publish {
            p.seq += 1;
            let ingest = (v.event_at == time && v.ingest_ms > 0).then_some(v.ingest_ms);
            out.push((
                delta(p.seq, &p.live, time, v, previous, DeltaCause::Moved),
                ingest,
            ));
            let game = v.game.clone();
            publish_state(p, &game, v);
        }
    }
    out
}

fn delta(
    seq: u64,
    live: &Version,
    time: u64,
    v: &Valued,
    previous: Option<&Published>,
    cause: DeltaCause,
) -> Delta {
    let changed = match previous {
        None => Vec::new(),
        Some(prev) => live
            .names
            .iter()
            .zip(&v.vars)
            .filter_map(|(name, to)| {
                let from = prev
                    .names
                    .iter()
                    .position(|n| n == name)
                    .map(|i| prev.vars[i]);
                (from != Some(*to)).then(|| FeatureChange {
                    feature: name.clone(),
                    from,
                    to: *to,
                })
            })
            .collect(),
    };
    Delta {
        seq,
        pipeline: live.plan.name.clone(),
        version: live.plan.version,
        sport: v.game.sport,
        game_id: v.game.game_id.clone(),
        event_time_ms: time,
        event_seq: v.event_seq,
        old: previous.map(|p| p.value),
        new: v.value,
        model_version: live.model_version.clone(),
        cause,
        changed,
    }
}

fn emit(hub: &Hub, sink: &mut dyn DeltaSink, plan: &Plan, deltas: &[(Delta, Option<u64>)]) {
    if deltas.is_empty() {
        return;
    }
    let (deltas, ingest): (Vec<Delta>, Vec<Option<u64>>) = deltas.iter().cloned().unzip();
    metrics::counter!("sideline_deltas_out_total", "pipeline" => plan.name.clone())
        .increment(deltas.len() as u64);
    for o in &plan.outputs {
        if let Output::WebSocket { channel } = o {
            hub.publish(channel, &deltas, &ingest);
        }
    }
    sink.deltas(plan, &deltas);
}

fn progress(hub: &Hub, plan: &Plan, time: u64) {
    for o in &plan.outputs {
        if let Output::WebSocket { channel } = o {
            hub.progress(channel, time);
        }
    }
}
