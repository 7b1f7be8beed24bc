//! Stages of an online ensemble ([`crate::model::online`]): each finished game's per-member
//! loss, and the re-weighted values.
//!
//! ```text
//! score_games ──► game_losses ──► broadcast ──┐      at the game_end's time t_g: (t_g, game, losses)
//!      │          (per game, on its worker)   ▼
//!      └────────────────────────────────► reweight ──► collect
//!        (member logits per row, pipelined)   every worker: before the rows at t, the losses
//!                                             of every game ended at a time < t, in
//!                                             (time, game) order
//! ```
//!
//! # Why every worker computes the same weights
//!
//! A game's loss depends only on its member logits at its own rows (not on any weight), so it
//! is computed where the game's rows are, with no cycle in the dataflow: the weights are
//! applied downstream of scoring, in `reweight`, which every worker runs on its own games'
//! rows. The losses are broadcast, so each worker receives all of them. `reweight` only values
//! the rows at time `t` once both of its inputs' frontiers have passed `t`: by then every loss
//! of a game ended at or before `t` has arrived (a loss is produced at its game's end time,
//! downstream of the same input), so the set of games applied before `t` (those ended at
//! times `< t`) is complete, and it is applied in the fixed order (end time, game). The
//! state is the same on every worker at every time, whatever the number of workers, and
//! values are byte-identical across 1, 2 or 4 workers. A game ended at `t` changes no value at
//! `t` itself: its own final row is valued before its result counts.
//!
//! The game's loss counts its rows *before* the one at its `game_end` (the predictions made
//! while the result was unknown); rows after (window expiries) count for nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::Stream;

use super::Valued;
use crate::event::GameKey;
use crate::model::ensemble::Ensemble;
use crate::model::online::{GameLoss, OnlineWeights};

/// A finished game's per-member loss, at its end time.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FinishedGame {
    pub time: u64,
    pub game: GameKey,
    pub losses: Vec<f64>,
}

/// Where one game stands for its loss.
enum GameState {
    /// Rows before the `game_end`, accumulating.
    Open(GameLoss),
    /// Its loss has been sent (or it had no row to score): later rows count for nothing.
    Finished,
}

pub trait GameLosses<'scope> {
    /// In: a worker's valued rows of an online ensemble (member logits set).
    /// Out: at each game's `game_end` time, its [`FinishedGame`]. Rows are taken in time
    /// order once the frontier has passed them; a game's rows are all on one worker.
    fn game_losses(self, members: usize) -> Stream<'scope, u64, Vec<FinishedGame>>;
}

impl<'scope> GameLosses<'scope> for Stream<'scope, u64, Vec<Valued>> {
    fn game_losses(self, members: usize) -> Stream<'scope, u64, Vec<FinishedGame>> {
        self.unary_frontier::<CapacityContainerBuilder<Vec<FinishedGame>>, _, _, _>(
            Pipeline,
            "GameLosses",
            move |_, _| {
                let mut pending: BTreeMap<u64, (Capability<u64>, Vec<Valued>)> = BTreeMap::new();
                let mut games: HashMap<GameKey, GameState> = HashMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        for v in data.drain(..) {
                            pending
                                .entry(v.time)
                                .or_insert_with(|| (cap.delayed(&v.time, 0), Vec::new()))
                                .1
                                .push(v);
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (cap, mut rows) = entry.remove();
                        rows.sort_by(|a, b| a.game.cmp(&b.game));
                        let mut session = output.session(&cap);
                        for v in rows {
                            if v.closed {
                                games.remove(&v.game);
                                continue;
                            }
                            let state = games
                                .entry(v.game.clone())
                                .or_insert_with(|| GameState::Open(GameLoss::new(members)));
                            let GameState::Open(loss) = state else {
                                continue;
                            };
                            match v.result {
                                None => loss.add(&v.members),
                                Some(result) => {
                                    if let Some(losses) = loss.finish(result) {
                                        session.give(FinishedGame {
                                            time: v.time,
                                            game: v.game,
                                            losses,
                                        });
                                    }
                                    *state = GameState::Finished;
                                }
                            }
                        }
                    }
                }
            },
        )
    }
}

pub trait Reweight<'scope> {
    /// In: a worker's valued rows of an online ensemble (member logits set), and every
    /// worker's finished games (broadcast).
    /// Out: the same rows, valued with the weights after every game that ended before their
    /// time (`weights` set), at the same times.
    ///
    /// `start` is the state before any game (the manifest's weights); `known` are finished
    /// games from before a restart (a checkpoint's), applied in their place in the order. A
    /// game received again (one recomputed after a restart) is applied once.
    fn reweight(
        self,
        finished: Stream<'scope, u64, Vec<FinishedGame>>,
        ensemble: Arc<Ensemble>,
        start: OnlineWeights,
        known: Vec<FinishedGame>,
    ) -> Stream<'scope, u64, Vec<Valued>>;
}

impl<'scope> Reweight<'scope> for Stream<'scope, u64, Vec<Valued>> {
    fn reweight(
        self,
        finished: Stream<'scope, u64, Vec<FinishedGame>>,
        ensemble: Arc<Ensemble>,
        start: OnlineWeights,
        known: Vec<FinishedGame>,
    ) -> Stream<'scope, u64, Vec<Valued>> {
        self.binary_frontier::<_, CapacityContainerBuilder<Vec<Valued>>, _, _, _, _>(
            finished,
            Pipeline,
            Pipeline,
            "Reweight",
            move |_, _| {
                let mut pending: BTreeMap<u64, (Capability<u64>, Vec<Valued>)> = BTreeMap::new();
                let mut games: BTreeMap<(u64, GameKey), Vec<f64>> = known
                    .into_iter()
                    .map(|g| ((g.time, g.game), g.losses))
                    .collect();
                let mut state = start;
                move |(rows_in, rows_frontier), (games_in, games_frontier), output| {
                    rows_in.for_each(|cap, data| {
                        for v in data.drain(..) {
                            pending
                                .entry(v.time)
                                .or_insert_with(|| (cap.delayed(&v.time, 0), Vec::new()))
                                .1
                                .push(v);
                        }
                    });
                    games_in.for_each(|_, data| {
                        for g in data.drain(..) {
                            games.entry((g.time, g.game)).or_insert(g.losses);
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        let t = *entry.key();
                        if rows_frontier.less_equal(&t) || games_frontier.less_equal(&t) {
                            break;
                        }
                        // Every game ended before `t`, in (time, game) order.
                        while let Some(g) = games.first_entry() {
                            if g.key().0 >= t {
                                break;
                            }
                            state.update(&g.remove());
                        }
                        let (cap, rows) = entry.remove();
                        let weights = state.weights();
                        let mut session = output.session(&cap);
                        for mut v in rows {
                            if v.closed {
                                session.give(v);
                                continue;
                            }
                            v.value = ensemble.value_with(weights, &v.members);
                            v.weights = weights.to_vec();
                            v.members = Vec::new();
                            session.give(v);
                        }
                    }
                }
            },
        )
    }
}
