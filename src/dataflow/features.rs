//! Stage: the dataflow's inputs, and every slot's value.
//!
//! In: from each worker's assigners ([`crate::pipeline::window`]), window members `(slot,
//! member)` with ±1 at the times they enter and leave, and facts: game keys and the values the
//! assigner keeps itself (bookkeeping, latest-event features), ±1 at the times they change.
//! Out: facts, the aggregated windows among them: `(slot, value)` whenever a slot's value
//! changed, the old value retracted and the new one inserted (nothing while a window is empty:
//! the feature then takes its default).
//!
//! Only windows with a history go through the `reduce`; a fact costs the scoring stage two
//! updates when it changes and nothing when it does not.

use std::sync::Arc;

use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::VecCollection;
use timely::dataflow::Scope;

use crate::pipeline::aggregate::aggregate;
use crate::pipeline::plan::{Agg, Plan, Window};
use crate::pipeline::window::{Fact, Member, Slot, Updates, F64};

/// One worker's inputs of a pipeline version's dataflow.
pub struct FeatureInput {
    members: InputSession<u64, (Slot, Member), isize>,
    facts: InputSession<u64, Fact, isize>,
}

impl FeatureInput {
    /// Hands `updates` (drained) to the dataflow.
    pub fn feed(&mut self, updates: &mut Updates) {
        for (slot, member, time, diff) in updates.members.drain(..) {
            self.members.update_at((slot, member), time, diff);
        }
        for (fact, time, diff) in updates.facts.drain(..) {
            self.facts.update_at(fact, time, diff);
        }
    }

    /// The time updates can still be fed at.
    pub fn time(&self) -> &u64 {
        self.members.time()
    }

    pub fn advance_to(&mut self, time: u64) {
        self.members.advance_to(time);
        self.facts.advance_to(time);
    }

    pub fn flush(&mut self) {
        self.members.flush();
        self.facts.flush();
    }

    pub fn close(self) {
        self.members.close();
        self.facts.close();
    }
}

/// The inputs, and every slot's value as facts: the facts fed, and the windows' aggregates.
pub fn slot_values<'scope>(
    scope: Scope<'scope, u64>,
    plan: &Plan,
) -> (FeatureInput, VecCollection<'scope, u64, Fact>) {
    let (members_in, members) = scope.new_collection::<(Slot, Member), isize>();
    let (facts_in, facts) = scope.new_collection::<Fact, isize>();
    let values = aggregate_slots(members, plan)
        .map(|(slot, value)| Fact::Value(slot, value))
        .concat(facts);
    let input = FeatureInput {
        members: members_in,
        facts: facts_in,
    };
    (input, values)
}

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
        let (agg, session) = aggs[slot.feature as usize];
        if let Some(v) = aggregate(agg, session, input.iter().map(|(m, c)| (*m, *c))) {
            output.push((F64::new(v), 1isize));
        }
    })
}
