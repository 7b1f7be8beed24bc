//! One worker's share of one pipeline version: its consumer, ingest state, window assigners
//! and dataflow input.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::dataflow::{self, MemberInput, SinkMsg};
use crate::event::GameKey;
use crate::format::RejectCode;
use crate::pipeline::window::{GameAssigner, Update};
use crate::source::ingest::Ingest;
use crate::source::kafka::{DeadLetters, KafkaReader, Polled};
use timely::dataflow::ProbeHandle;

use super::control::Deployment;
use super::EngineStats;

/// Records polled per partition per round: small enough to keep the frontier moving.
const POLL_BATCH: usize = 512;

pub struct Runtime {
    pub deployment: Arc<Deployment>,
    input: MemberInput,
    pub probe: ProbeHandle<u64>,
    reader: KafkaReader,
    ingest: Ingest,
    games: HashMap<GameKey, GameAssigner>,
    updates: Vec<Update>,
    /// Where the partitions ended when a drain began.
    drain_targets: Option<HashMap<(String, i32), i64>>,
}

impl Runtime {
    /// Builds the version's dataflow on this worker and opens its consumer.
    pub fn start(
        worker: &mut timely::worker::Worker,
        cfg: &Config,
        d: Arc<Deployment>,
        sink: Option<std::sync::mpsc::SyncSender<SinkMsg>>,
    ) -> Result<Runtime, String> {
        let index = worker.index();
        let peers = worker.peers();
        let owned: Vec<(String, i32)> = d
            .partitions
            .iter()
            .enumerate()
            .filter(|(i, _)| i % peers == index)
            .map(|(_, p)| p.clone())
            .collect();
        // Built first, so that every worker has it even if this one fails next.
        let (plan, model, id) = (d.plan.clone(), d.model.clone(), d.id);
        let (input, probe) = worker
            .dataflow::<u64, _, _>(move |scope| dataflow::build(scope, plan, model, id, sink));
        let reader = KafkaReader::new(&cfg.kafka, &owned).map_err(|e| e.to_string())?;
        let time = &d.plan.time;
        let mut ingest = Ingest::new(
            cfg.kafka.max_record_bytes,
            time.allowed_lateness,
            time.idle_timeout,
            time.late_policy,
        )
        .with_owners(d.owners.clone());
        for (t, p) in &owned {
            ingest.add_partition(t, *p);
        }
        Ok(Runtime {
            deployment: d,
            input,
            probe,
            reader,
            ingest,
            games: HashMap::new(),
            updates: Vec::new(),
            drain_targets: None,
        })
    }

    /// Reads what is there, feeds the dataflow, and advances time. Returns the records read.
    pub fn step(
        &mut self,
        index: usize,
        now: Instant,
        dead: &DeadLetters,
        stats: &mut EngineStats,
    ) -> usize {
        let plan = &self.deployment.plan;
        let name = plan.name.as_str();
        let frontier = *self.input.time();
        let (ingest, games, updates) = (&mut self.ingest, &mut self.games, &mut self.updates);
        let policy = plan.time.late_policy.as_str();
        let polled = self.reader.poll(POLL_BATCH, |p| match p {
            Polled::Record(rec) => {
                stats.records += 1;
                metrics::counter!("sideline_events_in_total", "topic" => rec.topic.to_string(), "pipeline" => name.to_string()).increment(1);
                match ingest.accept(&rec, frontier) {
                    Ok(a) => {
                        stats.accepted += 1;
                        if a.late {
                            stats.late += 1;
                            metrics::counter!("sideline_events_late_total", "topic" => rec.topic.to_string(), "policy" => policy, "pipeline" => name.to_string()).increment(1);
                        }
                        if a.event.sport == plan.sport {
                            let key = a.event.key();
                            games
                                .entry(key.clone())
                                .or_insert_with(|| GameAssigner::new(plan, key))
                                .apply(plan, &a.event, a.time, a.ingest_ms, updates);
                        }
                    }
                    Err(reject) => {
                        stats.rejected += 1;
                        // A repeated record is feed-health news for the game's detectors.
                        if reject.code == RejectCode::Duplicate {
                            if let Ok(ev) = crate::format::json::decode(rec.payload, usize::MAX) {
                                if let Some(g) = games.get_mut(&ev.key()) {
                                    g.note_duplicate(ev.seq, ev.event_time_ms.max(frontier), updates);
                                }
                            }
                        }
                        if reject.code == RejectCode::Late {
                            stats.late += 1;
                            metrics::counter!("sideline_events_late_total", "topic" => rec.topic.to_string(), "policy" => policy, "pipeline" => name.to_string()).increment(1);
                        }
                        metrics::counter!("sideline_events_rejected_total", "topic" => rec.topic.to_string(), "reason" => reject.code.as_str(), "pipeline" => name.to_string()).increment(1);
                        tracing::debug!(pipeline = name, topic = rec.topic, partition = rec.partition, offset = rec.offset, %reject, "rejected");
                        dead.send(name, &rec, &reject);
                    }
                }
            }
            Polled::End { topic, partition } => ingest.caught_up(topic, partition, now),
        });
        for (slot, member, time, diff) in self.updates.drain(..) {
            self.input.update_at((slot, member), time, diff);
        }
        if let Some(f) = self
            .deployment
            .board
            .post(index, Some(self.ingest.mark(now)))
        {
            if f > *self.input.time() {
                self.input.advance_to(f);
            }
        }
        self.input.flush();
        polled
    }

    /// Whether every partition is read to its end; while `draining`, to the end it had when
    /// the drain began (records produced just before it count, even if not fetched yet).
    pub fn caught_up(&mut self, draining: bool) -> bool {
        if !draining {
            return self.ingest.all_caught_up();
        }
        let targets =
            self.drain_targets
                .get_or_insert_with(|| match self.reader.high_watermarks() {
                    Ok(w) => w.into_iter().collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, "no high watermarks: draining to the ends seen");
                        HashMap::new()
                    }
                });
        self.ingest.reached(targets)
    }

    /// Closes the input: the dataflow drains and completes once every worker has closed it.
    pub fn close(self, index: usize) -> ProbeHandle<u64> {
        self.deployment.board.post(index, None);
        self.input.close();
        self.probe
    }
}
