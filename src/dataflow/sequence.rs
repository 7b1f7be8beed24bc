//! Stage: put the deltas of all workers in one deterministic order and hand them out.
//!
//! In: [`Scored`] from every worker, exchanged to worker 0.
//! Out: nothing in the dataflow; on worker 0, once the frontier passes a time, that time's
//! deltas sorted by (sport, game id), numbered from 1 without gaps, sent to the sink, then a
//! progress message for the completed time. The order and the numbers depend only on the
//! input, never on how many workers computed it or when.

use std::collections::BTreeMap;
use std::sync::mpsc::SyncSender;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;
use timely::dataflow::Stream;

use super::{Scored, SinkMsg};
use crate::delta::{Delta, FeatureChange};
use crate::features::{Slot, FEATURE_NAMES};

pub trait SequenceDeltas<'scope> {
    fn sequence_deltas(
        self,
        sink: Option<SyncSender<SinkMsg>>,
        version: String,
    ) -> Stream<'scope, u64, Vec<()>>;
}

fn to_delta(seq: u64, s: Scored, version: &str) -> (Delta, Option<u64>) {
    let changed = match s.previous {
        None => Vec::new(),
        Some((_, old)) => FEATURE_NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| old.0[*i] != s.features.0[*i])
            .map(|(i, name)| FeatureChange {
                feature: name.to_string(),
                from: old.0[i],
                to: s.features.0[i],
            })
            .collect(),
    };
    // Latency is measured for changes an event caused, not for windows expiring later.
    let ingest = match s.features.get(Slot::EventAt) == s.time as i64 {
        true => s.features.get(Slot::IngestMs),
        false => 0,
    };
    let delta = Delta {
        seq,
        sport: s.game.sport,
        game_id: s.game.game_id,
        event_time_ms: s.time,
        event_seq: s.features.get(Slot::EventSeq).max(0) as u64,
        old: s.previous.map(|p| p.0),
        new: s.value,
        model_version: version.to_string(),
        changed,
    };
    (delta, (ingest > 0).then_some(ingest as u64))
}

impl<'scope> SequenceDeltas<'scope> for Stream<'scope, u64, Vec<Scored>> {
    fn sequence_deltas(
        self,
        sink: Option<SyncSender<SinkMsg>>,
        version: String,
    ) -> Stream<'scope, u64, Vec<()>> {
        self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &Scored| 0u64),
            "SequenceDeltas",
            move |_, _| {
                let mut pending: BTreeMap<u64, Vec<Scored>> = BTreeMap::new();
                let mut next_seq = 1u64;
                let mut progress: Option<u64> = None;
                let mut max_seen: Option<u64> = None;
                move |(input, frontier), _output| {
                    // Only worker 0 receives data (the exchange) and only it has a sink.
                    let Some(sink) = sink.as_ref() else {
                        input.for_each(|_, _| {});
                        return;
                    };
                    input.for_each(|_cap, data| {
                        for s in data.drain(..) {
                            max_seen = max_seen.max(Some(s.time));
                            pending.entry(s.time).or_default().push(s);
                        }
                    });
                    let ready: Vec<u64> = pending
                        .keys()
                        .take_while(|t| !frontier.less_equal(t))
                        .copied()
                        .collect();
                    // One message per completed time: the hub publishes (and subscribers
                    // drain) in steps no larger than one time's deltas.
                    for t in ready {
                        let mut batch = pending.remove(&t).unwrap_or_default();
                        batch.sort_by(|a, b| a.game.cmp(&b.game));
                        let mut deltas = Vec::with_capacity(batch.len());
                        let mut ingest = Vec::with_capacity(batch.len());
                        for s in batch {
                            let (d, i) = to_delta(next_seq, s, &version);
                            next_seq += 1;
                            deltas.push(d);
                            ingest.push(i);
                        }
                        metrics::counter!("sideline_deltas_out_total")
                            .increment(deltas.len() as u64);
                        let _ = sink.send(SinkMsg::Deltas {
                            deltas,
                            ingest_ms: ingest,
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
                            let _ = sink.send(SinkMsg::Progress(done));
                        }
                    }
                }
            },
        )
    }
}
