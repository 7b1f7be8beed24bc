//! Stage: keep each game's row of feature values, and evaluate every game whose row changed,
//! in one model pass per frontier advance.
//!
//! In: `slot_values`' facts (game keys, and slot values: the assigner's and the aggregated
//! windows'), `(fact, time, ±1)`, exchanged by game so that a game's slots meet on one worker.
//! A game whose key is retracted (released, `retention` after its end) is forgotten; what it
//! hands on for it is a [`Valued::closed`] marker, on which later stages forget it too.
//! Out: at each time a game's row changed, a [`Valued`]: the model's value and every
//! feature-context variable (window features, then derived ones). Times are processed in
//! order once the input frontier has passed them; rows of all ready times go through the
//! model together, and through the shadow model (`[model] shadow`) when there is one: its
//! value rides along in [`Valued::shadow`] for the archive. Players' slots stay out of the row.

use rustc_hash::FxHashMap;
use std::sync::Arc;

use timely::dataflow::channels::pact::ExchangeCore;

use super::batches::SmallBatches;
use super::pending::Pending;
use timely::dataflow::operators::Operator;
use timely::dataflow::Stream;

use crate::event::GameKey;
use crate::model::Predictor;
use crate::pipeline::plan::{ModelPlan, Plan};
use crate::pipeline::spec::GroupBy;
use crate::pipeline::window::{
    Entity, Fact, GameId, F64, META_AT, META_BELOW, META_CORRECTIONS, META_DROPS, META_DUPS,
    META_GAPS, META_INGEST, META_RESULT, META_SEQ,
};

/// A game's feature values: `(entity, feature, value)`, sorted.
pub type Row = Vec<(Entity, u32, F64)>;

/// A game's evaluated row at one time. Serialisable for timely's exchange between processes,
/// which uses bincode: no field may be skipped.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Valued {
    pub time: u64,
    pub game: GameKey,
    pub value: f64,
    /// The shadow model's value on the same row (`[model] shadow`), when the version has one
    /// and it scored; archived, never published.
    pub shadow: Option<f64>,
    /// The plan's feature-context variables, in `Plan::vars` order.
    pub vars: Vec<f64>,
    /// `seq` of the game's latest event.
    pub event_seq: u64,
    /// Kafka timestamp (ms) of the game's latest event, 0 when unknown.
    pub ingest_ms: u64,
    /// Effective time of the game's latest event: a change at another time comes from a
    /// window expiring, not from an event.
    pub event_at: u64,
    /// Feed health, game to date: seq numbers skipped, duplicate records, score decreases;
    /// whether a score is below its high since the last correction (0/1); corrections.
    pub health: [u64; 5],
    /// The game's result from home's side (1 win, 0 loss, 0.5 tie) once its `game_end` has
    /// been seen.
    pub result: Option<f64>,
    /// An online ensemble's member logits of the row, in member order, between scoring and
    /// re-weighting ([`super::reweight`]); empty otherwise.
    pub members: Vec<f64>,
    /// The member weights an online ensemble combined `value` with, in member order; empty
    /// for any other model.
    pub weights: Vec<f64>,
    /// Not a value: the game's state was released at `time` (`retention` after its end), and
    /// every later stage forgets it (nothing else in this record is meaningful).
    pub closed: bool,
}

impl Valued {
    /// The marker of a game released at `time`.
    pub fn closed(time: u64, game: GameKey) -> Self {
        Valued {
            time,
            game,
            value: 0.0,
            shadow: None,
            vars: Vec::new(),
            event_seq: 0,
            ingest_ms: 0,
            event_at: 0,
            health: [0; 5],
            result: None,
            members: Vec::new(),
            weights: Vec::new(),
            closed: true,
        }
    }
}

/// What turns variables into the value deltas carry.
pub enum Model {
    /// A registry model and, per input, the variable that feeds it.
    Registry {
        model: Arc<Predictor>,
        inputs: Vec<usize>,
    },
    /// A formula over the variables, rounded to 6 decimals.
    Formula(crate::pipeline::expr::Expr),
    /// A model supplied by a program embedding sideline.
    Custom(Arc<dyn Scorer>),
}

/// A model a program embedding sideline brings: one value per row of variables (in
/// `Plan::vars` order), each row's value independent of the batch it came in.
pub trait Scorer: Send + Sync + 'static {
    /// Version tag carried by every delta.
    fn version(&self) -> &str;
    fn score(&self, rows: &[Vec<f64>]) -> Result<Vec<f64>, String>;
}

/// The model's inputs (`inputs`, variable indices) of every row, row-major in one buffer.
fn pick<R: AsRef<[f64]>>(inputs: &[usize], rows: &[R]) -> Vec<f64> {
    let mut flat = Vec::with_capacity(rows.len() * inputs.len());
    for r in rows {
        flat.extend(inputs.iter().map(|i| r.as_ref()[*i]));
    }
    flat
}

/// [`pick`]'s buffer as rows.
fn chunks<'a>(flat: &'a [f64], inputs: &[usize]) -> Vec<&'a [f64]> {
    flat.chunks_exact(inputs.len().max(1)).collect()
}

impl Model {
    /// Values of `rows` (each a full variable vector), in one pass. A registry model's inputs
    /// are picked into one buffer: no allocation per row (a custom scorer gets owned rows).
    pub fn score<R: AsRef<[f64]>>(&self, rows: &[R]) -> Result<Vec<f64>, String> {
        match self {
            Model::Registry { model, inputs } => {
                let flat = pick(inputs, rows);
                model
                    .score(&chunks(&flat, inputs))
                    .map_err(|e| e.to_string())
            }
            Model::Formula(e) => Ok(rows
                .iter()
                .map(|r| (e.eval(r.as_ref(), &[]) * 1e6).round() / 1e6)
                .collect()),
            Model::Custom(s) => {
                let owned: Vec<Vec<f64>> = rows.iter().map(|r| r.as_ref().to_vec()).collect();
                s.score(&owned)
            }
        }
    }

    /// The registry model's interval and attributions of each row (full variable vectors),
    /// an online ensemble's members combined with `weights` (those the row was valued with;
    /// empty for the manifest's), with the inputs' names; `None` for a model that does not
    /// explain itself (a formula, a custom scorer).
    pub fn attribute(
        &self,
        rows: &[&[f64]],
        weights: &[f64],
    ) -> Option<(Vec<crate::model::Attribution>, &[String])> {
        let Model::Registry { model, inputs } = self else {
            return None;
        };
        let flat = pick(inputs, rows);
        let weights = (!weights.is_empty()).then_some(weights);
        match model.attribute(&chunks(&flat, inputs), weights) {
            Ok(explained) => Some((explained, model.inputs())),
            Err(e) => {
                tracing::warn!(error = %e, "explaining a prediction failed");
                None
            }
        }
    }

    /// The ensemble, when the model is one that re-weights its members online.
    pub fn online(&self) -> Option<&crate::model::ensemble::Ensemble> {
        match self {
            Model::Registry { model, .. } => model.ensemble().filter(|e| e.online().is_some()),
            _ => None,
        }
    }

    /// An online ensemble's state before any finished game (its manifest's weights).
    pub fn online_start(&self) -> Option<crate::model::online::OnlineWeights> {
        let e = self.online()?;
        Some(crate::model::online::OnlineWeights::new(
            e.online()?,
            e.weights(),
        ))
    }

    /// An online ensemble's values of `rows` with its manifest's weights, and each row's
    /// member logits (`[row][member]`), in one pass per member.
    fn score_members<R: AsRef<[f64]>>(
        &self,
        ensemble: &crate::model::ensemble::Ensemble,
        rows: &[R],
    ) -> Result<(Vec<f64>, Vec<Vec<f64>>), String> {
        let Model::Registry { model, inputs } = self else {
            return Err("only a registry model re-weights online".into());
        };
        let flat = pick(inputs, rows);
        let picked = chunks(&flat, inputs);
        let logits = model
            .member_logits(&picked)
            .map_err(|e| e.to_string())?
            .ok_or("not an ensemble")?;
        let weights = ensemble.weights();
        let per_row: Vec<Vec<f64>> = (0..rows.len())
            .map(|r| logits.iter().map(|m| m[r]).collect())
            .collect();
        let values = per_row
            .iter()
            .map(|z| ensemble.value_with(&weights, z))
            .collect();
        Ok((values, per_row))
    }

    /// A version tag for deltas: `name/version` of a registry model, `formula` otherwise.
    pub fn version(&self) -> String {
        match self {
            Model::Registry { model, .. } => model.version().to_string(),
            Model::Formula(_) => "formula".into(),
            Model::Custom(s) => s.version().to_string(),
        }
    }

    /// The model a plan names, loaded from `registry`.
    pub fn for_plan(
        plan: &Plan,
        registry: &crate::pipeline::Registry,
    ) -> Result<Model, crate::model::ModelError> {
        Ok(match &plan.model {
            ModelPlan::Registry {
                name,
                version,
                inputs,
            } => Model::Registry {
                model: Arc::new(registry.load(name, version)?),
                inputs: inputs.clone(),
            },
            ModelPlan::Formula { expr } => Model::Formula(expr.clone()),
        })
    }

    /// The shadow model a plan names (`[model] shadow`), loaded from `registry`; `None` when
    /// it names none.
    pub fn shadow_for_plan(
        plan: &Plan,
        registry: &crate::pipeline::Registry,
    ) -> Result<Option<Model>, crate::model::ModelError> {
        let Some(s) = &plan.shadow else {
            return Ok(None);
        };
        Ok(Some(Model::Registry {
            model: Arc::new(registry.load(&s.name, &s.version)?),
            inputs: s.inputs.clone(),
        }))
    }
}

/// A game's variables from its row: defaults, then the row's values, then derived features;
/// and its bookkeeping values (latest event's seq, Kafka timestamp, effective time).
pub fn variables(plan: &Plan, row: &Row) -> (Vec<f64>, [u64; 8]) {
    let mut slots = Slots::new(plan);
    for (entity, feature, value) in row {
        slots.update(plan, entity, *feature, *value, true);
    }
    slots.finish(plan)
}

/// A game's slots as its row's variables: each slot's value where it has one, its feature's
/// default where it has none; the bookkeeping values (0 where absent) and the result. Kept
/// per game and updated in place, so a changed row costs its changed slots, not its all.
#[derive(Clone, Debug)]
struct Slots {
    vars: Vec<f64>,
    meta: [u64; 8],
    result: Option<F64>,
}

impl Slots {
    fn new(plan: &Plan) -> Slots {
        let mut vars = vec![0.0; plan.vars.len()];
        for f in &plan.features {
            if let Some(v) = f.var {
                vars[v] = f.default;
                if f.group == GroupBy::Team {
                    vars[v + 1] = f.default;
                }
            }
        }
        Slots {
            vars,
            meta: [0; 8],
            result: None,
        }
    }

    /// A slot's value arrives (`insert`) or leaves. A leaving value the slot no longer holds
    /// (it was replaced first) changes nothing.
    fn update(&mut self, plan: &Plan, entity: &Entity, feature: u32, value: F64, insert: bool) {
        let meta = match feature {
            META_SEQ => 0,
            META_INGEST => 1,
            META_AT => 2,
            META_GAPS => 3,
            META_DUPS => 4,
            META_DROPS => 5,
            META_BELOW => 6,
            META_CORRECTIONS => 7,
            META_RESULT => {
                if insert {
                    self.result = Some(value);
                } else if self.result == Some(value) {
                    self.result = None;
                }
                return;
            }
            f => {
                let Some((base, default)) = plan
                    .features
                    .get(f as usize)
                    .and_then(|f| f.var.map(|v| (v, f.default)))
                else {
                    return;
                };
                let at = match entity {
                    Entity::Away => base + 1,
                    _ => base,
                };
                if insert {
                    self.vars[at] = value.0;
                } else if F64(self.vars[at]) == value {
                    self.vars[at] = default;
                }
                return;
            }
        };
        let v = value.0 as u64;
        if insert {
            self.meta[meta] = v;
        } else if self.meta[meta] == v {
            self.meta[meta] = 0;
        }
    }

    /// The row's variables, derived features computed, and its bookkeeping values.
    fn finish(&self, plan: &Plan) -> (Vec<f64>, [u64; 8]) {
        let mut vars = self.vars.clone();
        for d in &plan.derived {
            vars[d.var] = d.expr.eval(&vars, &[]);
        }
        for v in vars.iter_mut() {
            // One zero, so equal rows serialise equally.
            if *v == 0.0 {
                *v = 0.0;
            }
        }
        (vars, self.meta)
    }
}

type Input = (Fact, u64, isize);

/// A game whose row changed at a time: its variables, bookkeeping values and result.
type Changed = (u64, GameKey, Vec<f64>, [u64; 8], Option<f64>);

/// One game's state on the worker that scores it: its key (once its [`Fact::Game`] came) and
/// its slots' current values.
struct GameRow {
    key: Option<GameKey>,
    slots: Slots,
}

pub trait ScoreGames<'scope> {
    /// Scores every changed row with `model`, and with `shadow` when given.
    fn score_games(
        self,
        plan: Arc<Plan>,
        model: Arc<Model>,
        shadow: Option<Arc<Model>>,
    ) -> Stream<'scope, u64, Vec<Valued>>;
}

/// Emptied per-time buffers kept for reuse, and the largest kept (in updates): enough for
/// the times that complete at once (hundreds when a held frontier moves), without holding on
/// to a burst's memory (at most ~4.5 MiB). A fresh buffer starts with room for one event's
/// updates, about 14 with the NFL pipeline.
const SPARE_BUFFERS: usize = 256;
const SPARE_CAPACITY: usize = 256;
const FRESH_CAPACITY: usize = 16;

impl<'scope> ScoreGames<'scope> for Stream<'scope, u64, Vec<Input>> {
    fn score_games(
        self,
        plan: Arc<Plan>,
        model: Arc<Model>,
        shadow: Option<Arc<Model>>,
    ) -> Stream<'scope, u64, Vec<Valued>> {
        self.unary_frontier::<SmallBatches<Valued>, _, _, _>(
            ExchangeCore::<SmallBatches<Input>, _>::new_core(|(fact, _, _): &Input| fact.game()),
            "ScoreGames",
            move |_, _| {
                let mut pending: Pending<Input> = Pending::default();
                let mut rows: FxHashMap<GameId, GameRow> = FxHashMap::default();
                // Emptied buffers of completed times, reused by the next ones: most times
                // hold a handful of updates, and a fresh buffer per time grew (and faulted
                // in new pages) at every one (~6% of a worker in the replay profile).
                let mut spare: Vec<Vec<Input>> = Vec::new();
                move |(input, frontier), output| {
                    let port = output.output_index();
                    input.for_each(|cap, data| {
                        for u in data.drain(..) {
                            if matches!(&u.0, Fact::Value(slot, _) if matches!(slot.entity, Entity::Player(_)))
                            {
                                continue;
                            }
                            let fresh = || Vec::with_capacity(FRESH_CAPACITY);
                            pending
                                .at(&cap, port, u.1, || spare.pop().unwrap_or_else(fresh))
                                .push(u);
                        }
                    });
                    let ready = pending.ready(|t| !frontier.less_equal(&t));
                    if ready.is_empty() {
                        return;
                    }
                    let mut caps = Vec::with_capacity(ready.len());
                    let mut changed: Vec<Changed> = Vec::new();
                    for (cap, t, mut updates) in ready {
                        // Each touched game, in order (within a game, the order is made
                        // below, so an unstable sort leaves the outcome deterministic).
                        updates.sort_unstable_by_key(|(fact, _, _)| fact.game());
                        let mut i = 0;
                        while i < updates.len() {
                            let id = updates[i].0.game();
                            let end = i + updates[i..]
                                .iter()
                                .position(|u| u.0.game() != id)
                                .unwrap_or(updates.len() - i);
                            // Consolidated: a slot can move twice at one time (two events at
                            // one effective time), and only the net change counts.
                            let mut game_updates: Vec<(&Fact, isize)> =
                                updates[i..end].iter().map(|(f, _, d)| (f, *d)).collect();
                            i = end;
                            game_updates.sort_unstable_by(|a, b| a.0.cmp(b.0));
                            game_updates.dedup_by(|later, first| {
                                let same = later.0 == first.0;
                                if same {
                                    first.1 += later.1;
                                }
                                same
                            });
                            game_updates.retain(|(_, d)| *d != 0);
                            // Retractions before insertions: a slot's old value leaves, its
                            // new one arrives.
                            game_updates.sort_by_key(|(_, d)| *d);
                            // The key's net change: +1 its first event, -1 its release (a
                            // release moved by a later event cancels out).
                            let mut key_diff = 0isize;
                            let mut key: Option<&GameKey> = None;
                            for (fact, diff) in &game_updates {
                                if let Fact::Game(_, k) = fact {
                                    key_diff += diff;
                                    key = Some(k);
                                }
                            }
                            if key_diff < 0 {
                                // Released: forgotten, and every later stage told.
                                if let Some(GameRow { key: Some(k), .. }) = rows.remove(&id) {
                                    output.session_with_builder(&cap).give(Valued::closed(t, k));
                                }
                                continue;
                            }
                            let inserts = game_updates
                                .iter()
                                .any(|(f, d)| matches!(f, Fact::Value(..)) && *d > 0);
                            if key_diff == 0 && !inserts && !rows.contains_key(&id) {
                                // A released game's last window retractions.
                                continue;
                            }
                            let row = rows.entry(id).or_insert_with(|| GameRow {
                                key: None,
                                slots: Slots::new(&plan),
                            });
                            if let (1.., Some(key)) = (key_diff, key) {
                                match &row.key {
                                    Some(k) if k != key => {
                                        tracing::error!(game = ?k, other = ?key, id, "two games share a dataflow id; the second one's values mix with the first's");
                                        metrics::counter!("sideline_game_id_collisions_total").increment(1);
                                    }
                                    _ => row.key = Some(key.clone()),
                                }
                            }
                            let mut touched = false;
                            for (fact, diff) in &game_updates {
                                let Fact::Value(slot, value) = fact else {
                                    continue;
                                };
                                touched = true;
                                let insert = *diff > 0;
                                row.slots.update(&plan, &slot.entity, slot.feature, *value, insert);
                            }
                            if !touched {
                                continue;
                            }
                            let Some(game) = row.key.clone() else {
                                tracing::error!(id, "values of a game whose key never came; not scored");
                                continue;
                            };
                            let (vars, meta) = row.slots.finish(&plan);
                            let result = row.slots.result.map(|v| v.0);
                            changed.push((t, game, vars, meta, result));
                        }
                        caps.push(cap);
                        if spare.len() < SPARE_BUFFERS && updates.capacity() <= SPARE_CAPACITY {
                            updates.clear();
                            spare.push(updates);
                        }
                    }
                    let batch: Vec<&[f64]> = changed.iter().map(|c| c.2.as_slice()).collect();
                    let scored = match model.online() {
                        Some(ensemble) => model
                            .score_members(ensemble, &batch)
                            .map(|(v, m)| (v, Some(m))),
                        None => model.score(&batch).map(|v| (v, None)),
                    };
                    let (values, mut members) = match scored {
                        Ok((v, m)) if v.len() == batch.len() => {
                            (v, m.map(Vec::into_iter))
                        }
                        Ok((v, _)) => {
                            tracing::error!(rows = batch.len(), values = v.len(), "the model returned a value count that differs from the row count; these updates publish nothing");
                            metrics::counter!("sideline_scoring_errors_total").increment(1);
                            return;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, rows = batch.len(), "scoring failed; these updates publish nothing");
                            metrics::counter!("sideline_scoring_errors_total").increment(1);
                            return;
                        }
                    };
                    // The shadow's failure costs the archive its shadow values, never the
                    // published ones.
                    let shadows = match shadow.as_ref().map(|s| s.score(&batch)) {
                        None => Vec::new(),
                        Some(Ok(v)) if v.len() == batch.len() => v,
                        Some(other) => {
                            let error = other.err().unwrap_or_else(|| "wrong value count".into());
                            tracing::error!(error, rows = batch.len(), "shadow scoring failed; these rows archive no shadow value");
                            metrics::counter!("sideline_shadow_scoring_errors_total").increment(1);
                            Vec::new()
                        }
                    };
                    let mut c = 0;
                    for (i, ((t, game, vars, meta, result), value)) in
                        changed.into_iter().zip(values).enumerate()
                    {
                        while *caps[c].time() < t {
                            c += 1;
                        }
                        output.session_with_builder(&caps[c]).give(Valued {
                            time: t,
                            game,
                            value,
                            shadow: shadows.get(i).copied(),
                            vars,
                            event_seq: meta[0],
                            ingest_ms: meta[1],
                            event_at: meta[2],
                            health: [meta[3], meta[4], meta[5], meta[6], meta[7]],
                            result,
                            members: members
                                .as_mut()
                                .and_then(Iterator::next)
                                .unwrap_or_default(),
                            weights: Vec::new(),
                            closed: false,
                        });
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timely exchanges records between processes in bincode, which cannot skip fields: a
    /// value with every optional part absent must come back as it went.
    #[test]
    fn a_value_round_trips_through_bincode() {
        let game = GameKey {
            sport: crate::event::Sport::Nfl,
            game_id: "g".into(),
        };
        let plain = Valued {
            vars: vec![1.5, -2.0],
            value: 0.25,
            ..Valued::closed(7, game.clone())
        };
        let plain = Valued {
            closed: false,
            ..plain
        };
        let full = Valued {
            shadow: Some(0.5),
            result: Some(1.0),
            members: vec![0.1],
            weights: vec![1.0],
            ..plain.clone()
        };
        for v in [plain, full, Valued::closed(9, game)] {
            let bytes = bincode::serialize(&v).unwrap();
            let back: Valued = bincode::deserialize(&bytes).unwrap();
            assert_eq!(back, v);
        }
    }
}
