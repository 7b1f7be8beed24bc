//! Stage: gather the values and alert changes of all workers on worker 0, one message per
//! completed time.
//!
//! In: [`Valued`] and [`AlertChange`] from every worker, both exchanged to worker 0.
//! Out: nothing in the dataflow; on worker 0, once both inputs' frontiers pass a time, that
//! time's values sorted by game and its alert changes sorted by (game, detector) go to the sink
//! together as one [`SinkMsg::Values`], then a [`SinkMsg::Progress`] for the completed time;
//! [`SinkMsg::Finished`] once the input is closed and drained. The order depends only on the
//! input, never on how many workers computed it or when. What one activation completes goes
//! over in [`SinkMsg::Batch`]es of up to [`BATCH_TIMES`] times: with a handful of values per
//! time, a channel hand-over per time (and the publisher's wake-up of a worker blocked on it)
//! cost more than the values. The cap keeps the channel's bound a bound on times, and the
//! publisher's lock, held for a whole batch, short.
//!
//! One message per time is what makes a checkpoint consistent: the publisher handles messages
//! one at a time, so whatever it has numbered when it writes a checkpoint is every delta and
//! every alert of the times it has completed, and nothing of a later one. (Two operators, one
//! per stream, could hand over a time's values before its alerts; a checkpoint written between
//! the two said the time was done without its alerts, and a restart lost them.)

use std::collections::BTreeMap;
use std::sync::mpsc::SyncSender;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::ExchangeCore;
use timely::dataflow::operators::Operator;
use timely::dataflow::Stream;

use super::batches::SmallBatches;
use super::detect::AlertChange;
use super::{RuntimeId, SinkMsg, Valued};

/// The most completed times one [`SinkMsg::Batch`] holds.
pub const BATCH_TIMES: usize = 64;

pub trait Collect<'scope> {
    fn collect(
        self,
        alerts: Stream<'scope, u64, Vec<AlertChange>>,
        sink: Option<SyncSender<SinkMsg>>,
        runtime: RuntimeId,
    ) -> Stream<'scope, u64, Vec<()>>;
}

impl<'scope> Collect<'scope> for Stream<'scope, u64, Vec<Valued>> {
    fn collect(
        self,
        alerts: Stream<'scope, u64, Vec<AlertChange>>,
        sink: Option<SyncSender<SinkMsg>>,
        runtime: RuntimeId,
    ) -> Stream<'scope, u64, Vec<()>> {
        self.binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
            alerts,
            ExchangeCore::<SmallBatches<Valued>, _>::new_core(|_: &Valued| 0u64),
            ExchangeCore::<SmallBatches<AlertChange>, _>::new_core(|_: &AlertChange| 0u64),
            "Collect",
            move |_, _| {
                let mut pending: BTreeMap<u64, (Vec<Valued>, Vec<AlertChange>)> = BTreeMap::new();
                let mut progress: Option<u64> = None;
                let mut max_seen: Option<u64> = None;
                let mut finished = false;
                move |(values, values_frontier), (alerts, alerts_frontier), _output| {
                    // Only worker 0 receives data (the exchange) and only it has a sink.
                    let Some(sink) = sink.as_ref() else {
                        values.for_each(|_, _| {});
                        alerts.for_each(|_, _| {});
                        return;
                    };
                    values.for_each(|_cap, data| {
                        for v in data.drain(..) {
                            max_seen = max_seen.max(Some(v.time));
                            pending.entry(v.time).or_default().0.push(v);
                        }
                    });
                    alerts.for_each(|_cap, data| {
                        for a in data.drain(..) {
                            max_seen = max_seen.max(Some(a.time));
                            pending.entry(a.time).or_default().1.push(a);
                        }
                    });
                    let complete =
                        |t: &u64| !values_frontier.less_equal(t) && !alerts_frontier.less_equal(t);
                    let ready: Vec<u64> = pending.keys().copied().take_while(complete).collect();
                    let mut batch = Vec::with_capacity(ready.len().min(BATCH_TIMES) + 1);
                    for time in ready {
                        if batch.len() == BATCH_TIMES {
                            let _ = sink.send(SinkMsg::Batch(std::mem::take(&mut batch)));
                        }
                        let (mut values, mut alerts) = pending.remove(&time).unwrap_or_default();
                        values.sort_by(|a, b| a.game.cmp(&b.game));
                        alerts.sort_by(|a, b| (&a.game, a.detector).cmp(&(&b.game, b.detector)));
                        batch.push(SinkMsg::Values {
                            runtime,
                            time,
                            values,
                            alerts,
                        });
                    }
                    // Everything strictly before both frontiers is complete.
                    let first = [values_frontier, alerts_frontier]
                        .into_iter()
                        .filter_map(|f| f.frontier().first().copied())
                        .min();
                    let done = match first {
                        Some(f) => f.checked_sub(1),
                        None => max_seen,
                    };
                    if let Some(done) = done {
                        if progress.is_none_or(|p| done > p) {
                            progress = Some(done);
                            batch.push(SinkMsg::Progress {
                                runtime,
                                time: done,
                            });
                        }
                    }
                    let closed = values_frontier.is_empty() && alerts_frontier.is_empty();
                    if closed && pending.is_empty() && !finished {
                        finished = true;
                        batch.push(SinkMsg::Finished { runtime });
                    }
                    if !batch.is_empty() {
                        let _ = sink.send(SinkMsg::Batch(batch));
                    }
                }
            },
        )
    }
}
