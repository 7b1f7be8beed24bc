//! Stage: aggregate every slot's window members, then gather each game's row of features.
//!
//! In: window members `(slot, member)` with ±1 at the times they enter and leave
//! ([`crate::pipeline::window`]).
//! Out: `aggregate_slots`: `(slot, value)` whenever a slot's aggregate changed (nothing while a
//! window is empty: the feature then takes its default). `game_rows`: `(game, row)`, the sorted
//! game and team values of a game (players' slots stay out), whenever any of them changed.

use std::sync::Arc;

use differential_dataflow::VecCollection;

use crate::event::GameKey;
use crate::pipeline::aggregate::aggregate;
use crate::pipeline::plan::{Agg, Plan, Window};
use crate::pipeline::window::{Entity, Member, Slot, F64, META_AT};

/// A game's feature values: `(entity, feature, value)`, sorted.
pub type Row = Vec<(Entity, u32, F64)>;

/// Each slot's aggregate, maintained by a differential `reduce` over its members.
pub fn aggregate_slots<'scope>(
    members: VecCollection<'scope, u64, (Slot, Member)>,
    plan: &Plan,
) -> VecCollection<'scope, u64, (Slot, F64)> {
    let aggs: Arc<Vec<(Agg, bool)>> = Arc::new(
        plan.features
            .iter()
            .map(|f| (f.aggregate, matches!(f.window, Window::Session { .. })))
            .collect(),
    );
    members.reduce_named("AggregateSlots", move |slot: &Slot, input, output| {
        let (agg, session) = match slot.feature {
            f if f >= META_AT => (Agg::Last, false),
            f => aggs[f as usize],
        };
        if let Some(v) = aggregate(agg, session, input) {
            output.push((F64::new(v), 1isize));
        }
    })
}

/// Each game's row of game and team features.
pub fn game_rows<'scope>(
    values: VecCollection<'scope, u64, (Slot, F64)>,
) -> VecCollection<'scope, u64, (GameKey, Row)> {
    values
        .filter(|(slot, _)| !matches!(slot.entity, Entity::Player(_)))
        .map(|(slot, v)| (slot.game, (slot.entity, slot.feature, v)))
        .reduce_named("GameRows", |_game: &GameKey, input, output| {
            let row: Row = input.iter().map(|(x, _)| (*x).clone()).collect();
            output.push((row, 1isize));
        })
}
