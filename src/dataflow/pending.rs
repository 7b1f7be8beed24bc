//! Records an operator holds until their time is complete, under one capability.
//!
//! An operator that kept one capability per pending time made timely's progress tracking
//! sort every one of them whenever any changed (`MutableAntichain::rebuild`,
//! `ChangeBatch::compact`): with event-time milliseconds as times, thousands are pending while
//! the frontier waits for a slow partition, and those sorts were ~12% of a worker in the
//! replay with shifted times. Times are totally ordered, so one capability at the earliest
//! pending time covers them all; a time's own capability is made from it only when its
//! records are handed on.

use std::collections::BTreeMap;

use timely::dataflow::operators::{Capability, InputCapability};

/// Pending records by time, and the one capability (at or before the earliest time) that
/// lets the operator send at any of them.
pub struct Pending<D> {
    /// Every time but the open one, each once. Times come out of order across an exchange's
    /// sources (a deque kept in order spent ~10% of a worker moving entries to insert
    /// between them); a `BTreeMap` search per record had been ~9% of the scoring stage, so
    /// the map is touched only when the time changes.
    by_time: BTreeMap<u64, Vec<D>>,
    /// The time the last records came at, and its records: an event's updates come
    /// together, at its time.
    open: Option<(u64, Vec<D>)>,
    held: Option<Capability<u64>>,
}

impl<D> Default for Pending<D> {
    fn default() -> Self {
        Pending {
            by_time: BTreeMap::new(),
            open: None,
            held: None,
        }
    }
}

impl<D> Pending<D> {
    /// The records waiting at `time`, which `cap` (the input's capability for output `port`)
    /// covers; `fresh` makes a time's buffer the first time it is seen.
    pub fn at(
        &mut self,
        cap: &InputCapability<u64>,
        port: usize,
        time: u64,
        fresh: impl FnOnce() -> Vec<D>,
    ) -> &mut Vec<D> {
        if self.held.as_ref().is_none_or(|h| time < *h.time()) {
            self.held = Some(cap.delayed(&time, port));
        }
        if self.open.as_ref().is_none_or(|(t, _)| *t != time) {
            self.close();
            let records = self.by_time.remove(&time).unwrap_or_else(fresh);
            self.open = Some((time, records));
        }
        &mut self.open.as_mut().expect("opened above").1
    }

    /// Files the open time's records with the others.
    fn close(&mut self) {
        if let Some((t, records)) = self.open.take() {
            // The open time was taken out of the map when opened, so it is not there.
            self.by_time.insert(t, records);
        }
    }

    /// Takes the times that are `complete` (the input frontier has passed them), in order,
    /// each with a capability at it.
    pub fn ready(&mut self, complete: impl Fn(u64) -> bool) -> Vec<(Capability<u64>, u64, Vec<D>)> {
        self.close();
        let Some(held) = &self.held else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(entry) = self.by_time.first_entry() {
            let t = *entry.key();
            if !complete(t) {
                break;
            }
            out.push((held.delayed(&t), t, entry.remove()));
        }
        match self.by_time.keys().next() {
            Some(first) => {
                if let Some(h) = self.held.as_mut() {
                    h.downgrade(first);
                }
            }
            None => self.held = None,
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::{Input, Operator, Probe};
    use timely::dataflow::ProbeHandle;

    /// Records at times out of order, over rounds the worker runs between, come out at their
    /// own times, in time order, each time once and only once the frontier has passed it.
    #[test]
    fn records_come_out_at_their_times_in_order_once_complete() {
        // (input time, records' times): every record at or after its round's input time.
        // Time 6 gets records in two rounds before it completes; after round 4 nothing is
        // pending (the capability is dropped), and round 5 starts afresh.
        let rounds: Vec<(u64, Vec<u64>)> = vec![
            (5, vec![6, 7, 5, 6]),
            (6, vec![8, 6]),
            (8, vec![8, 9]),
            (9, vec![9]),
            (12, vec![13, 12]),
        ];
        let fed = rounds.clone();
        let emitted = timely::execute_directly(move |worker| {
            let emitted = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let seen = emitted.clone();
            let probe = ProbeHandle::new();
            let mut input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<(u64, usize)>>();
                let out = stream
                    .unary_frontier::<CapacityContainerBuilder<Vec<(u64, usize)>>, _, _, _>(
                        Pipeline,
                        "Pending",
                        |_, _| {
                            let mut pending: Pending<(u64, usize)> = Pending::default();
                            move |(input, frontier), output| {
                                let port = output.output_index();
                                input.for_each(|cap, data| {
                                    for r in data.drain(..) {
                                        pending.at(&cap, port, r.0, Vec::new).push(r);
                                    }
                                });
                                for (cap, t, records) in pending.ready(|t| !frontier.less_equal(&t))
                                {
                                    assert_eq!(*cap.time(), t);
                                    seen.borrow_mut().push((t, records.clone()));
                                    output.session(&cap).give_iterator(records.into_iter());
                                }
                            }
                        },
                    );
                out.probe_with(&probe);
                input
            });
            let mut n = 0;
            for (at, times) in fed {
                input.advance_to(at);
                for t in times {
                    input.send((t, n));
                    n += 1;
                }
                // Let the worker pass every time before this round's.
                input.advance_to(at + 1);
                worker.step_while(|| probe.less_than(&(at + 1)));
            }
            input.close();
            while worker.step() {}
            emitted.take()
        });
        let times: Vec<u64> = emitted.iter().map(|(t, _)| *t).collect();
        // Strictly: a time comes out once, all its records together.
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "each time once, in order: {times:?}"
        );
        let mut got: Vec<(u64, usize)> = Vec::new();
        for (t, data) in emitted {
            assert!(
                data.iter().all(|r| r.0 == t),
                "at its own time: {t} {data:?}"
            );
            got.extend(data);
        }
        let mut want: Vec<(u64, usize)> = rounds
            .into_iter()
            .flat_map(|(_, times)| times)
            .enumerate()
            .map(|(n, t)| (t, n))
            .collect();
        // By time, and within a time in arrival order.
        want.sort();
        assert_eq!(got, want);
    }
}
