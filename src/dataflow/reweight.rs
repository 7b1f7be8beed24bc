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
use timely::dataflow::operators::Operator;

use super::pending::Pending;
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

/// Finished games folded into the weights they lead to: every game up to `through` (end
/// time, game), applied in that order to the manifest's weights. What a restart can no longer
/// value a row before needs no game of its own: a game's few numbers are kept only while
/// some row may still be valued before it ([`FinishedGames::fold_before`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FoldedGames {
    pub through: (u64, GameKey),
    pub state: OnlineWeights,
}

/// The finished games a version starts from: folded, then one by one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KnownGames {
    pub folded: Option<FoldedGames>,
    pub games: Vec<FinishedGame>,
}

/// An online ensemble's finished games as the publisher keeps them, for checkpoints and for
/// a new version to start from.
#[derive(Debug, Default)]
pub struct FinishedGames {
    folded: Option<FoldedGames>,
    games: BTreeMap<(u64, GameKey), Vec<f64>>,
}

impl FinishedGames {
    /// Adds games; one already known (or folded) is kept once.
    pub fn note(&mut self, games: Vec<FinishedGame>) {
        for g in games {
            let key = (g.time, g.game);
            if self.folded.as_ref().is_some_and(|f| key <= f.through) {
                continue;
            }
            self.games.entry(key).or_insert(g.losses);
        }
    }

    /// Takes up what a checkpoint or another version knew.
    pub fn note_known(&mut self, known: KnownGames) {
        if self.folded.is_none() && self.games.is_empty() {
            self.folded = known.folded;
        }
        self.note(known.games);
    }

    /// The folded state and the games ended through `done`.
    pub fn through(&self, done: Option<u64>) -> KnownGames {
        KnownGames {
            folded: self.folded.clone(),
            games: self
                .games
                .iter()
                .filter(|((t, _), _)| done.is_some_and(|d| *t <= d))
                .map(|((time, game), losses)| FinishedGame {
                    time: *time,
                    game: game.clone(),
                    losses: losses.clone(),
                })
                .collect(),
        }
    }

    /// Folds the games ended before `before`: no row that any restart values is at or before
    /// their time (the caller's bound), so they only ever count all together. `start` is the
    /// state before any game. A folded state of another ensemble definition (members, prior,
    /// eta, decay) is dropped, as [`Reweight`] ignores it.
    pub fn fold_before(&mut self, before: u64, start: OnlineWeights) {
        if self
            .folded
            .as_ref()
            .is_some_and(|f| !f.state.same_definition(&start))
        {
            tracing::warn!("folded finished games of another ensemble definition: dropped");
            self.folded = None;
        }
        if self
            .games
            .first_key_value()
            .is_none_or(|(k, _)| k.0 >= before)
        {
            return;
        }
        let (mut state, mut through) = match self.folded.take() {
            Some(f) => (f.state, Some(f.through)),
            None => (start, None),
        };
        while let Some(g) = self.games.first_entry() {
            if g.key().0 >= before {
                break;
            }
            let (key, losses) = g.remove_entry();
            state.update(&losses);
            through = Some(key);
        }
        self.folded = through.map(|through| FoldedGames { through, state });
    }

    /// Games kept one by one (not folded).
    pub fn unfolded(&self) -> usize {
        self.games.len()
    }
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
                let mut pending: Pending<Valued> = Pending::default();
                let mut games: HashMap<GameKey, GameState> = HashMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        for v in data.drain(..) {
                            pending.at(&cap, 0, v.time, Vec::new).push(v);
                        }
                    });
                    for (cap, _, mut rows) in pending.ready(|t| !frontier.less_equal(&t)) {
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
    /// games from before a restart (a checkpoint's), folded ones first, the others applied in
    /// their place in the order. A game received again (one recomputed after a restart, or
    /// one folded) is applied once.
    fn reweight(
        self,
        finished: Stream<'scope, u64, Vec<FinishedGame>>,
        ensemble: Arc<Ensemble>,
        start: OnlineWeights,
        known: KnownGames,
    ) -> Stream<'scope, u64, Vec<Valued>>;
}

impl<'scope> Reweight<'scope> for Stream<'scope, u64, Vec<Valued>> {
    fn reweight(
        self,
        finished: Stream<'scope, u64, Vec<FinishedGame>>,
        ensemble: Arc<Ensemble>,
        start: OnlineWeights,
        known: KnownGames,
    ) -> Stream<'scope, u64, Vec<Valued>> {
        let (mut state, mut applied) = match known.folded {
            Some(f) if f.state.same_definition(&start) => (f.state, Some(f.through)),
            Some(_) => {
                tracing::warn!("folded finished games of another ensemble definition: ignored");
                (start, None)
            }
            None => (start, None),
        };
        self.binary_frontier::<_, CapacityContainerBuilder<Vec<Valued>>, _, _, _, _>(
            finished,
            Pipeline,
            Pipeline,
            "Reweight",
            move |_, _| {
                let mut pending: Pending<Valued> = Pending::default();
                let mut games: BTreeMap<(u64, GameKey), Vec<f64>> = BTreeMap::new();
                let note = |games: &mut BTreeMap<(u64, GameKey), Vec<f64>>,
                            applied: &Option<(u64, GameKey)>,
                            g: FinishedGame| {
                    let key = (g.time, g.game);
                    if applied.as_ref().is_none_or(|a| key > *a) {
                        games.entry(key).or_insert(g.losses);
                    }
                };
                for g in known.games {
                    note(&mut games, &applied, g);
                }
                move |(rows_in, rows_frontier), (games_in, games_frontier), output| {
                    rows_in.for_each(|cap, data| {
                        for v in data.drain(..) {
                            pending.at(&cap, 0, v.time, Vec::new).push(v);
                        }
                    });
                    games_in.for_each(|_, data| {
                        for g in data.drain(..) {
                            note(&mut games, &applied, g);
                        }
                    });
                    let complete =
                        |t: u64| !rows_frontier.less_equal(&t) && !games_frontier.less_equal(&t);
                    for (cap, t, rows) in pending.ready(complete) {
                        // Every game ended before `t`, in (time, game) order.
                        while let Some(g) = games.first_entry() {
                            if g.key().0 >= t {
                                break;
                            }
                            let (key, losses) = g.remove_entry();
                            state.update(&losses);
                            applied = Some(key);
                        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::online::{weights_from_scratch, OnlineMethod, OnlineSpec};

    fn game(time: u64, id: &str, losses: [f64; 2]) -> FinishedGame {
        FinishedGame {
            time,
            game: GameKey {
                sport: crate::event::Sport::Nfl,
                game_id: id.into(),
            },
            losses: losses.to_vec(),
        }
    }

    /// Folded games count once, in (end time, game) order, as the definition says; a folded
    /// game received again is not kept again, and the later ones stay one by one.
    #[test]
    fn folding_keeps_the_order_and_counts_each_game_once() {
        let spec = OnlineSpec {
            method: OnlineMethod::ExpLogLoss,
            eta: 2.0,
            half_life_games: 3.0,
        };
        let prior = vec![0.6, 0.4];
        let start = || OnlineWeights::new(&spec, prior.clone());
        let all = vec![
            game(10, "b", [0.2, 0.9]),
            game(10, "a", [0.7, 0.1]),
            game(20, "c", [0.3, 0.3]),
            game(30, "d", [0.9, 0.2]),
        ];
        let mut kept = FinishedGames::default();
        kept.note(all.clone());
        kept.fold_before(10, start());
        assert_eq!(
            kept.through(Some(30)).folded,
            None,
            "nothing ended before 10"
        );
        kept.fold_before(25, start());
        assert_eq!(kept.unfolded(), 1);
        kept.note(vec![all[0].clone(), all[2].clone()]);
        assert_eq!(kept.unfolded(), 1, "folded games are not kept again");

        let known = kept.through(Some(30));
        let folded = known.folded.expect("three games folded");
        assert_eq!(folded.through, (20, all[2].game.clone()));
        assert_eq!(folded.state.games(), 3);
        // (10, "a") before (10, "b").
        let order = [
            all[1].losses.clone(),
            all[0].losses.clone(),
            all[2].losses.clone(),
        ];
        let expect = weights_from_scratch(&spec, &prior, &order);
        for (w, e) in folded.state.weights().iter().zip(&expect) {
            assert!(
                (w - e).abs() < 1e-12,
                "{:?} vs {expect:?}",
                folded.state.weights()
            );
        }
        assert_eq!(known.games, vec![all[3].clone()]);
        assert_eq!(
            kept.through(Some(29)).games,
            vec![],
            "through a time before its end"
        );
    }
}
