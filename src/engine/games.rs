//! One worker's games of one pipeline version: their window assigners, and the release of an
//! ended game's state once the input has passed `retention` after it
//! ([`GameAssigner::closes_at`]).

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use crate::event::{GameEvent, GameKey};
use crate::pipeline::window::{GameAssigner, Updates};
use crate::pipeline::Plan;

pub struct Games {
    retention_ms: u64,
    games: FxHashMap<GameKey, GameAssigner>,
    /// Ended games by the time their state can be released.
    closing: BTreeSet<(u64, GameKey)>,
}

impl Games {
    pub fn new(plan: &Plan) -> Self {
        Games {
            retention_ms: plan.time.retention.as_millis() as u64,
            games: FxHashMap::default(),
            closing: BTreeSet::new(),
        }
    }

    /// Applies an accepted event of `key` at effective time `t`; returns when the game's state
    /// will be released, once it has ended.
    pub fn apply(
        &mut self,
        plan: &Plan,
        key: GameKey,
        ev: &GameEvent,
        t: u64,
        ingest_ms: u64,
        out: &mut Updates,
    ) -> Option<u64> {
        let retention = self.retention_ms;
        let game = self
            .games
            .entry(key.clone())
            .or_insert_with(|| GameAssigner::new(plan, key.clone()));
        let before = game.closes_at(retention);
        game.apply(plan, ev, t, ingest_ms, out);
        let after = game.closes_at(retention);
        if before != after {
            if let Some(b) = before {
                self.closing.remove(&(b, key.clone()));
            }
            if let Some(a) = after {
                self.closing.insert((a, key));
            }
        }
        after
    }

    /// A repeated record of `key` (rejected as a duplicate), counted at `t`.
    pub fn note_duplicate(&mut self, key: &GameKey, t: u64, out: &mut Updates) {
        if let Some(g) = self.games.get_mut(key) {
            g.note_duplicate(t, out);
        }
    }

    /// Releases every game whose state can be released by `now` (the input's time, where its
    /// retractions go); returns their keys.
    pub fn close_until(&mut self, now: u64, out: &mut Updates) -> Vec<GameKey> {
        let mut closed = Vec::new();
        while let Some((at, _)) = self.closing.first() {
            if *at > now {
                break;
            }
            let (_, key) = self.closing.pop_first().expect("first checked");
            if let Some(game) = self.games.remove(&key) {
                game.close(now, out);
            }
            closed.push(key);
        }
        closed
    }

    /// Games held.
    pub fn len(&self) -> usize {
        self.games.len()
    }

    pub fn is_empty(&self) -> bool {
        self.games.is_empty()
    }
}
