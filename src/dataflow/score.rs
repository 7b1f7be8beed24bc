//! Stage: score every game whose features changed, in one model pass per frontier advance.
//!
//! In: `count_total`'s output, `((game, features), time, ±1)`: at each time a game's features
//! changed, the old vector retracted and the new one inserted.
//! Out: at the same time, a [`Scored`] per game whose prediction moved by at least `epsilon`
//! from its last published value (or that had none). Times are processed in order once the
//! input frontier has passed them, so "last published" is well defined.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::Stream;

use crate::event::GameKey;
use crate::features::FeatureVec;

/// A model the dataflow can call: one batch in, one value per row out, each row's value
/// independent of the batch it came in.
pub trait Scorer: Send + Sync + 'static {
    /// Version tag carried by every delta.
    fn version(&self) -> &str;
    /// One value per row.
    fn score(&self, rows: &[FeatureVec]) -> Result<Vec<f64>, String>;
}

/// A prediction that moved.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scored {
    pub time: u64,
    pub game: GameKey,
    pub value: f64,
    pub features: FeatureVec,
    /// The last published value and the features behind it.
    pub previous: Option<(f64, FeatureVec)>,
}

type Input = ((GameKey, FeatureVec), u64, isize);

pub trait ScoreGames<'scope> {
    fn score_games(self, scorer: Arc<dyn Scorer>, epsilon: f64)
        -> Stream<'scope, u64, Vec<Scored>>;
}

impl<'scope> ScoreGames<'scope> for Stream<'scope, u64, Vec<Input>> {
    fn score_games(
        self,
        scorer: Arc<dyn Scorer>,
        epsilon: f64,
    ) -> Stream<'scope, u64, Vec<Scored>> {
        self.unary_frontier::<CapacityContainerBuilder<Vec<Scored>>, _, _, _>(
            Pipeline,
            "ScoreGames",
            move |_, _| {
                let mut pending: BTreeMap<u64, (Capability<u64>, Vec<Input>)> = BTreeMap::new();
                let mut published: HashMap<GameKey, (f64, FeatureVec)> = HashMap::new();
                let mut rows: Vec<FeatureVec> = Vec::new();
                let mut changed: Vec<(u64, GameKey, FeatureVec)> = Vec::new();
                move |(input, frontier), output| {
                    let port = output.output_index();
                    input.for_each(|cap, data| {
                        for (d, t, r) in data.drain(..) {
                            pending
                                .entry(t)
                                .or_insert_with(|| (cap.delayed(&t, port), Vec::new()))
                                .1
                                .push((d, t, r));
                        }
                    });
                    let ready: Vec<u64> = pending
                        .keys()
                        .take_while(|t| !frontier.less_equal(t))
                        .copied()
                        .collect();
                    if ready.is_empty() {
                        return;
                    }
                    let mut caps = Vec::with_capacity(ready.len());
                    changed.clear();
                    for t in ready {
                        let Some((cap, mut updates)) = pending.remove(&t) else {
                            continue;
                        };
                        updates.sort_by(|a, b| a.0 .0.cmp(&b.0 .0).then(b.2.cmp(&a.2)));
                        // Per game: the inserted vector is the new value; a retraction alone
                        // means the features summed to zero.
                        let mut i = 0;
                        while i < updates.len() {
                            let game = &updates[i].0 .0;
                            let mut new = FeatureVec::default();
                            let mut j = i;
                            while j < updates.len() && &updates[j].0 .0 == game {
                                if updates[j].2 > 0 {
                                    new = updates[j].0 .1;
                                }
                                j += 1;
                            }
                            changed.push((t, game.clone(), new));
                            i = j;
                        }
                        caps.push(cap);
                    }
                    rows.clear();
                    rows.extend(changed.iter().map(|c| c.2));
                    let values = match scorer.score(&rows) {
                        Ok(v) if v.len() == rows.len() => v,
                        Ok(v) => {
                            tracing::error!(rows = rows.len(), values = v.len(), "the model returned a value count that differs from the row count; these updates publish nothing");
                            metrics::counter!("sideline_scoring_errors_total").increment(1);
                            return;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, rows = rows.len(), "scoring failed; these updates publish nothing");
                            metrics::counter!("sideline_scoring_errors_total").increment(1);
                            return;
                        }
                    };
                    let mut c = 0;
                    for (k, (t, game, features)) in changed.drain(..).enumerate() {
                        while *caps[c].time() < t {
                            c += 1;
                        }
                        let value = values[k];
                        let previous = published.get(&game).copied();
                        let moved = previous.is_none_or(|(old, _)| (value - old).abs() >= epsilon);
                        if moved {
                            published.insert(game.clone(), (value, features));
                            output.session(&caps[c]).give(Scored {
                                time: t,
                                game,
                                value,
                                features,
                                previous,
                            });
                        }
                    }
                }
            },
        )
    }
}
