//! One worker's share of one pipeline version: its consumer, ingest state, window assigners
//! and dataflow input.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::dataflow::{self, FeatureInput, SinkMsg};
use crate::event::GameKey;
use crate::format::RejectCode;
use crate::pipeline::window::Updates;
use crate::source::ingest::{Ingest, Replay};
use crate::source::kafka::{DeadLetters, KafkaReader, Polled};
use timely::dataflow::ProbeHandle;

use super::control::Deployment;
use super::games::Games;
use super::EngineStats;

/// Records polled per partition per round: small enough to keep the frontier moving.
const POLL_BATCH: usize = 512;

pub struct Runtime {
    pub deployment: Arc<Deployment>,
    input: FeatureInput,
    pub probe: ProbeHandle<u64>,
    reader: KafkaReader,
    ingest: Ingest,
    games: Games,
    /// Whether checkpoints are written (closed games' marks wait for one).
    checkpoints: bool,
    updates: Updates,
    /// Whether a drain began, and every partition was asked to say again where its end is.
    drain_armed: bool,
    /// Wall-clock staleness: the plan's `staleness` detectors, each game's last event, and
    /// where alert changes go (every worker judges its own games).
    staleness: Vec<(u32, Duration)>,
    live: FxHashMap<GameKey, Liveness>,
    /// Per owned partition ([`KafkaReader::owned`] order): whether it is held back, being
    /// more than `read-ahead` past the frontier; since when; and for how long in all its
    /// finished holds. Its games' silence leaves out the time it was held: their events were
    /// waiting to be read.
    held: Vec<bool>,
    held_from: Vec<Option<Instant>>,
    held_for: Vec<Duration>,
    /// The watermark above which partitions are held back, from the last step.
    read_limit: Option<u64>,
    /// How many of them are held back now (`sideline_partitions_held{pipeline,version,worker}`).
    held_gauge: metrics::Gauge,
    alerts: std::sync::mpsc::SyncSender<SinkMsg>,
    last_check: Instant,
    /// When the partitions' marks were last posted for checkpoints.
    last_mark: Option<Instant>,
    /// The consumer's error count when last looked at.
    kafka_errors: u64,
    /// Per topic, the counters each record moves.
    counters: HashMap<String, TopicCounters>,
}

/// The counters a record of one topic moves, registered once: `counter!` with labels builds
/// its key (two strings) and looks it up in the recorder's registry at every call, which
/// per record was a measurable share of reading.
struct TopicCounters {
    events_in: metrics::Counter,
    late: metrics::Counter,
    redelivered: metrics::Counter,
}

impl TopicCounters {
    /// The counters of `topic`, registered at its first record.
    fn of<'a>(
        all: &'a mut HashMap<String, TopicCounters>,
        topic: &str,
        plan: &crate::pipeline::Plan,
    ) -> &'a TopicCounters {
        if !all.contains_key(topic) {
            let (t, p) = (topic.to_string(), plan.name.clone());
            let policy = plan.time.late_policy.as_str();
            let counters = TopicCounters {
                events_in: metrics::counter!("sideline_events_in_total", "topic" => t.clone(), "pipeline" => p.clone()),
                late: metrics::counter!("sideline_events_late_total", "topic" => t.clone(), "policy" => policy, "pipeline" => p.clone()),
                redelivered: metrics::counter!("sideline_events_redelivered_total", "topic" => t.clone(), "pipeline" => p),
            };
            all.insert(t, counters);
        }
        &all[topic]
    }
}

/// How often a worker posts its partitions' marks for checkpoints.
const MARK_INTERVAL: Duration = Duration::from_millis(50);

/// A game's last event, for the wall-clock staleness detectors.
struct Liveness {
    /// Its partition, by [`KafkaReader::owned`] position, and how long the partition had been
    /// held back in all when the last event was read.
    partition: usize,
    held_before: Duration,
    wall: Instant,
    time: u64,
    ended: bool,
    /// Per staleness detector: when its open alert opened (event time), if one is open.
    open: Vec<Option<u64>>,
}

/// (game, (detector, gap), opened at, event time, opening?, wall clock of its last event)
type StaleChange = (GameKey, (u32, Duration), u64, u64, bool, Instant);

/// How often games are checked for staleness.
const STALENESS_CHECK: Duration = Duration::from_millis(100);

impl Runtime {
    /// Builds the version's dataflow on this worker and opens its consumer.
    pub fn start(
        worker: &mut timely::worker::Worker,
        cfg: &Config,
        d: Arc<Deployment>,
        sink: Option<std::sync::mpsc::SyncSender<SinkMsg>>,
        alerts: std::sync::mpsc::SyncSender<SinkMsg>,
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
        let (plan, model, shadow, id) = (d.plan.clone(), d.model.clone(), d.shadow.clone(), d.id);
        let known = d.known_games.clone();
        let (input, probe) = worker.dataflow::<u64, _, _>(move |scope| {
            dataflow::build(scope, plan, model, shadow, id, sink, known)
        });
        let starts = owned
            .iter()
            .filter_map(|k| d.resume.get(k).map(|r| (k.clone(), r.start())))
            .collect();
        let reader = KafkaReader::new(&cfg.kafka, &owned, &starts).map_err(|e| e.to_string())?;
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
            if let Some(r) = d.resume.get(&(t.clone(), *p)) {
                ingest.resume(t, *p, r.clone());
            }
        }
        let staleness: Vec<(u32, Duration)> = d
            .plan
            .detectors
            .iter()
            .enumerate()
            .filter_map(|(i, det)| match det.rule {
                crate::pipeline::plan::DetectorRule::Staleness { gap_ms } => {
                    Some((i as u32, Duration::from_millis(gap_ms)))
                }
                _ => None,
            })
            .collect();
        // The staleness alerts open at the checkpoint, of the games this worker reads: taken
        // up, so that the game's next new event resolves each (and none opens twice).
        let mut live: FxHashMap<GameKey, Liveness> = FxHashMap::default();
        for open in &d.open_staleness {
            let detector = staleness
                .iter()
                .position(|(i, _)| d.plan.detectors[*i as usize].name == open.detector);
            let partition = owned.iter().position(|k| {
                d.resume
                    .get(k)
                    .is_some_and(|r| r.open.contains_key(&open.game))
            });
            let (Some(k), Some(partition)) = (detector, partition) else {
                continue;
            };
            let l = live.entry(open.game.clone()).or_insert_with(|| Liveness {
                partition,
                held_before: Duration::ZERO,
                wall: Instant::now(),
                time: open.opened_at,
                ended: false,
                open: vec![None; staleness.len()],
            });
            l.open[k] = Some(open.opened_at);
        }
        Ok(Runtime {
            input,
            probe,
            reader,
            ingest,
            games: Games::new(&d.plan),
            checkpoints: !cfg.engine.checkpoint_dir.is_empty(),
            updates: Updates::default(),
            drain_armed: false,
            staleness,
            live,
            held: vec![false; owned.len()],
            held_from: vec![None; owned.len()],
            held_for: vec![Duration::ZERO; owned.len()],
            read_limit: None,
            held_gauge: metrics::gauge!("sideline_partitions_held", "pipeline" => d.plan.name.clone(), "version" => d.plan.version.to_string(), "worker" => index.to_string()),
            alerts,
            last_check: Instant::now(),
            last_mark: None,
            kafka_errors: 0,
            counters: HashMap::new(),
            deployment: d,
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
        let errors = self.reader.errors();
        if errors != self.kafka_errors {
            self.kafka_errors = errors;
            for (topic, partition) in self.ingest.forget_caught_up() {
                self.reader.rearm_end(&topic, partition);
            }
        }
        let plan = &self.deployment.plan;
        let name = plan.name.as_str();
        let frontier = *self.input.time();
        let (ingest, games, updates) = (&mut self.ingest, &mut self.games, &mut self.updates);
        let counters = &mut self.counters;
        let retention = plan.time.retention.as_millis() as u64;
        // A partition more than `read-ahead` past the frontier waits: what it would hand over
        // now would only wait in the dataflow for the frontier.
        for (i, (topic, partition)) in self.reader.owned().enumerate() {
            let hold = self
                .read_limit
                .is_some_and(|limit| ingest.ahead_of(topic, partition, limit));
            match (self.held_from[i], hold) {
                (None, true) => self.held_from[i] = Some(now),
                (Some(from), false) => {
                    self.held_for[i] += now.duration_since(from);
                    self.held_from[i] = None;
                }
                _ => {}
            }
            self.held[i] = hold;
            stats.held += u64::from(hold);
        }
        self.held_gauge
            .set(self.held.iter().filter(|h| **h).count() as f64);
        let (staleness, live, held_for) = (&self.staleness, &mut self.live, &self.held_for);
        // (game, (detector, gap), opened at, time, opening?, wall clock)
        let mut stale_changes: Vec<StaleChange> = Vec::new();
        let mut forgot: Vec<(String, i32)> = Vec::new();
        let reader = &self.reader;
        let polled = reader.poll(POLL_BATCH, &self.held, |p| match p {
            Polled::Record(rec) => {
                // After a restart, records read before it are read again only for the games
                // being rebuilt, and are not dead-lettered twice.
                let replay = ingest.replay(&rec);
                if replay == Replay::Skip {
                    return;
                }
                stats.records += 1;
                let counters = TopicCounters::of(counters, rec.topic, plan);
                counters.events_in.increment(1);
                match ingest.accept(&rec, frontier) {
                    Ok(a) => {
                        stats.accepted += 1;
                        if a.late {
                            stats.late += 1;
                            counters.late.increment(1);
                        }
                        if a.event.sport == plan.sport {
                            let key = a.event.key();
                            if !staleness.is_empty() {
                                let l = live.entry(key.clone()).or_insert_with(|| Liveness {
                                    partition: reader
                                        .owned()
                                        .position(|o| o == (rec.topic, rec.partition))
                                        .unwrap_or(0),
                                    held_before: Duration::ZERO,
                                    wall: now,
                                    time: a.time,
                                    ended: false,
                                    open: vec![None; staleness.len()],
                                });
                                l.wall = now;
                                l.held_before = held_for.get(l.partition).copied().unwrap_or_default();
                                l.time = a.time;
                                l.ended |= a.event.kind == crate::event::EventKind::GameEnd;
                                // A record read again to rebuild the game after a restart
                                // is not news: only a new one ends an alert (one open at the
                                // checkpoint was taken up in `start`).
                                if replay == Replay::Fresh {
                                    for (k, open) in l.open.iter_mut().enumerate() {
                                        if let Some(opened_at) = open.take() {
                                            stale_changes.push((key.clone(), staleness[k], opened_at, a.time, false, now));
                                        }
                                    }
                                }
                            }
                            let closes = games.apply(plan, key.clone(), &a.event, a.time, a.ingest_ms, updates);
                            if closes.is_some() {
                                ingest.set_closes_at(&key, closes, retention);
                            }
                        }
                    }
                    Err(reject) => {
                        // A repeated record is feed-health news for the game's detectors.
                        if matches!(reject.code, RejectCode::Duplicate | RejectCode::Conflict) {
                            if let Ok(ev) = crate::format::json::decode(rec.payload, usize::MAX) {
                                games.note_duplicate(&ev.key(), ev.event_time_ms.max(frontier), updates);
                            }
                        }
                        if reject.code == RejectCode::Late {
                            stats.late += 1;
                            counters.late.increment(1);
                        }
                        // A re-send of an accepted event (same id, same bytes) changes nothing:
                        // the producer retried. It is counted, not dead-lettered.
                        if reject.code == RejectCode::Duplicate {
                            stats.redelivered += 1;
                            counters.redelivered.increment(1);
                            return;
                        }
                        stats.rejected += 1;
                        metrics::counter!("sideline_events_rejected_total", "topic" => rec.topic.to_string(), "reason" => reject.code.as_str(), "pipeline" => name.to_string()).increment(1);
                        tracing::debug!(pipeline = name, topic = rec.topic, partition = rec.partition, offset = rec.offset, %reject, "rejected");
                        if replay == Replay::Fresh {
                            dead.send(name, &rec, &reject);
                        } else {
                            // Its first reading was accepted or dead-lettered; refused now,
                            // the game's rebuilt state lacks it.
                            tracing::warn!(pipeline = name, topic = rec.topic, partition = rec.partition, offset = rec.offset, %reject, "a record read again for the rebuild was refused");
                        }
                    }
                }
            }
            Polled::End { topic, partition } => ingest.caught_up(topic, partition, now),
            Polled::Failed { topic, partition } => {
                if ingest.forget_caught_up_of(topic, partition) {
                    forgot.push((topic.to_string(), partition));
                }
            }
        });
        for (topic, partition) in forgot {
            self.reader.rearm_end(&topic, partition);
        }
        if !self.staleness.is_empty() && now.duration_since(self.last_check) >= STALENESS_CHECK {
            self.last_check = now;
            let mut keys: Vec<&GameKey> = self.live.keys().collect();
            keys.sort();
            for key in keys {
                let l = &self.live[key];
                // A held partition's games are not silent: their events wait to be read.
                if l.ended || self.held[l.partition] {
                    continue;
                }
                let held = self.held_for[l.partition].saturating_sub(l.held_before);
                let silence = now.duration_since(l.wall).saturating_sub(held);
                let since = now.checked_sub(silence).unwrap_or(l.wall);
                for (k, det) in self.staleness.iter().enumerate() {
                    if l.open[k].is_none() && silence >= det.1 {
                        stale_changes.push((key.clone(), *det, l.time, l.time, true, since));
                    }
                }
            }
        }
        self.emit_staleness(stale_changes, now);
        self.input.feed(&mut self.updates);
        if let Some(f) = self
            .deployment
            .board
            .post(index, Some(self.ingest.mark(now)))
        {
            if f > *self.input.time() {
                self.input.advance_to(f);
                self.close_games(stats);
                self.input.feed(&mut self.updates);
            }
        }
        self.input.flush();
        let read_ahead = self.deployment.plan.time.read_ahead.as_millis() as u64;
        self.read_limit = self
            .deployment
            .board
            .read_limit(*self.input.time(), read_ahead);
        if self
            .last_mark
            .is_none_or(|t| now.duration_since(t) >= MARK_INTERVAL)
        {
            self.post_marks(now);
        }
        polled
    }

    /// Posts the partitions' marks for checkpoints.
    fn post_marks(&mut self, now: Instant) {
        self.last_mark = Some(now);
        // Without checkpoints no checkpoint needs a closed game's mark.
        let checkpointed = match self.checkpoints {
            true => self
                .deployment
                .checkpointed
                .load(std::sync::atomic::Ordering::Relaxed),
            false => u64::MAX,
        };
        let retention = self.deployment.plan.time.retention.as_millis() as u64;
        self.ingest.forget_closed(checkpointed, retention);
        let marks = self.ingest.marks(now, *self.input.time());
        let mut posted = self
            .deployment
            .marks
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for m in marks {
            posted.insert((m.topic.clone(), m.partition), m);
        }
    }

    /// Releases this worker's state of every game whose release time the input has passed
    /// (the dataflow forgets it at that time: [`crate::pipeline::window::GameAssigner::close`]):
    /// its assigner, the session members it still had in the `reduce` (retracted at the
    /// input's time), its ingest order (later records are refused as `game_closed`), and its
    /// staleness watch. What the worker holds is bounded by the games within `retention` of
    /// their end, not by how long it has run.
    fn close_games(&mut self, stats: &mut EngineStats) {
        for key in self
            .games
            .close_until(*self.input.time(), &mut self.updates)
        {
            self.ingest.close_game(&key);
            self.live.remove(&key);
            stats.games_closed += 1;
            metrics::counter!("sideline_games_closed_total", "pipeline" => self.deployment.plan.name.clone()).increment(1);
        }
    }

    /// Whether every partition is read to its end; while `draining`, to the end it had when
    /// the drain began (records produced just before it count, even if not fetched yet).
    /// Sends staleness alert changes straight to the publisher: they are judged by the wall
    /// clock, so they are not part of the dataflow's event-time determinism.
    fn emit_staleness(&mut self, changes: Vec<StaleChange>, now: Instant) {
        for (game, (detector, gap), opened_at, time, opening, wall) in changes {
            let k = self
                .staleness
                .iter()
                .position(|d| d.0 == detector)
                .unwrap_or(0);
            if let Some(l) = self.live.get_mut(&game) {
                l.open[k] = opening.then_some(opened_at);
            }
            let quiet = opening.then(|| now.duration_since(wall).as_secs_f64());
            let change = crate::dataflow::detect::AlertChange::staleness(
                time, game, detector, gap, opened_at, quiet,
            );
            let _ = self.alerts.send(SinkMsg::Alerts {
                runtime: self.deployment.id,
                time,
                alerts: vec![change],
            });
        }
    }

    /// Whether every partition is read to its end. A drain reads what was produced before it
    /// began: an end librdkafka signalled before then may have records after it that were not
    /// fetched yet, so when the drain begins every partition is asked to say it again
    /// ([`KafkaReader::rearm_end`]: the seek also drops an end signalled before it), and only
    /// an end signalled since counts. No offset is compared: a topic written in transactions
    /// ends with a commit marker the consumer never sees, past its last record.
    pub fn caught_up(&mut self, draining: bool) -> bool {
        if draining && !self.drain_armed {
            self.drain_armed = true;
            self.ingest.forget_caught_up();
            for (topic, partition) in self.reader.owned() {
                self.reader.rearm_end(topic, partition);
            }
            return false;
        }
        self.ingest.all_caught_up()
    }

    /// Closes the input: the dataflow drains and completes once every worker has closed it.
    pub fn close(mut self, index: usize) -> ProbeHandle<u64> {
        // Where reading stopped, for the checkpoint taken once the dataflow has drained.
        self.post_marks(Instant::now());
        self.held_gauge.set(0.0);
        self.deployment.board.post(index, None);
        self.input.close();
        self.probe
    }
}
