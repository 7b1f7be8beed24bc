//! Stage: aggregate every slot's window members.
//!
//! In: window members `(slot, member)` with ±1 at the times they enter and leave
//! ([`crate::pipeline::window`]).
//! Out: `(slot, value)` whenever a slot's aggregate changed, the old value retracted and the
//! new one inserted (nothing while a window is empty: the feature then takes its default).

use std::sync::Arc;

use differential_dataflow::VecCollection;

use crate::pipeline::aggregate::aggregate;
use crate::pipeline::plan::{Agg, Plan, Window};
use crate::pipeline::window::{Member, Slot, F64, META_MIN};

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
            f if f >= META_MIN => (Agg::Last, false),
            f => aggs[f as usize],
        };
        if let Some(v) = aggregate(agg, session, input) {
            output.push((F64::new(v), 1isize));
        }
    })
}
