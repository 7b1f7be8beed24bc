//! Stage: gather the values of all workers on worker 0, one message per completed time.
//!
//! In: [`Valued`] from every worker, exchanged to worker 0.
//! Out: nothing in the dataflow; on worker 0, once the frontier passes a time, that time's
//! values sorted by game go to the sink as [`SinkMsg::Values`], then a [`SinkMsg::Progress`]
//! for the completed time; [`SinkMsg::Finished`] once the input is closed and drained. The
//! order depends only on the input, never on how many workers computed it or when.

use std::collections::BTreeMap;
use std::sync::mpsc::SyncSender;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;
use timely::dataflow::Stream;

use super::detect::AlertChange;
use super::{RuntimeId, SinkMsg, Valued};

pub trait CollectValues<'scope> {
    fn collect_values(
        self,
        sink: Option<SyncSender<SinkMsg>>,
        runtime: RuntimeId,
    ) -> Stream<'scope, u64, Vec<()>>;
}

impl<'scope> CollectValues<'scope> for Stream<'scope, u64, Vec<Valued>> {
    fn collect_values(
        self,
        sink: Option<SyncSender<SinkMsg>>,
        runtime: RuntimeId,
    ) -> Stream<'scope, u64, Vec<()>> {
        self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &Valued| 0u64),
            "CollectValues",
            move |_, _| {
                let mut pending: BTreeMap<u64, Vec<Valued>> = BTreeMap::new();
                let mut progress: Option<u64> = None;
                let mut max_seen: Option<u64> = None;
                let mut finished = false;
                move |(input, frontier), _output| {
                    // Only worker 0 receives data (the exchange) and only it has a sink.
                    let Some(sink) = sink.as_ref() else {
                        input.for_each(|_, _| {});
                        return;
                    };
                    input.for_each(|_cap, data| {
                        for v in data.drain(..) {
                            max_seen = max_seen.max(Some(v.time));
                            pending.entry(v.time).or_default().push(v);
                        }
                    });
                    let ready: Vec<u64> = pending
                        .keys()
                        .take_while(|t| !frontier.less_equal(t))
                        .copied()
                        .collect();
                    for time in ready {
                        let mut values = pending.remove(&time).unwrap_or_default();
                        values.sort_by(|a, b| a.game.cmp(&b.game));
                        let _ = sink.send(SinkMsg::Values {
                            runtime,
                            time,
                            values,
                        });
                    }
                    // Everything strictly before the frontier is complete.
                    let done = match frontier.frontier().first() {
                        Some(f) => f.checked_sub(1),
                        None => max_seen,
                    };
                    if let Some(done) = done {
                        if progress.is_none_or(|p| done > p) {
                            progress = Some(done);
                            let _ = sink.send(SinkMsg::Progress {
                                runtime,
                                time: done,
                            });
                        }
                    }
                    if frontier.is_empty() && pending.is_empty() && !finished {
                        finished = true;
                        let _ = sink.send(SinkMsg::Finished { runtime });
                    }
                }
            },
        )
    }
}

pub trait CollectAlerts<'scope> {
    fn collect_alerts(
        self,
        sink: Option<SyncSender<SinkMsg>>,
        runtime: RuntimeId,
    ) -> Stream<'scope, u64, Vec<()>>;
}

impl<'scope> CollectAlerts<'scope> for Stream<'scope, u64, Vec<AlertChange>> {
    /// Alert changes of all workers on worker 0, one message per completed time that has any,
    /// sorted by (game, detector): the same for any number of workers.
    fn collect_alerts(
        self,
        sink: Option<SyncSender<SinkMsg>>,
        runtime: RuntimeId,
    ) -> Stream<'scope, u64, Vec<()>> {
        self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &AlertChange| 0u64),
            "CollectAlerts",
            move |_, _| {
                let mut pending: BTreeMap<u64, Vec<AlertChange>> = BTreeMap::new();
                move |(input, frontier), _output| {
                    let Some(sink) = sink.as_ref() else {
                        input.for_each(|_, _| {});
                        return;
                    };
                    input.for_each(|_cap, data| {
                        for a in data.drain(..) {
                            pending.entry(a.time).or_default().push(a);
                        }
                    });
                    let ready: Vec<u64> = pending
                        .keys()
                        .take_while(|t| !frontier.less_equal(t))
                        .copied()
                        .collect();
                    for time in ready {
                        let mut alerts = pending.remove(&time).unwrap_or_default();
                        alerts.sort_by(|a, b| (&a.game, a.detector).cmp(&(&b.game, b.detector)));
                        let _ = sink.send(SinkMsg::Alerts {
                            runtime,
                            time,
                            alerts,
                        });
                    }
                }
            },
        )
    }
}
