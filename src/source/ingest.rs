//! Decode, order-check and time-stamp records: the step between a transport and the dataflow.
//!
//! In: records (topic, partition, offset, Kafka timestamp, payload) in partition order.
//! Out: the accepted event with its effective time, or a [`Reject`] for the record. A game's
//! events must come from one partition (producers key by game), so the game's order state lives
//! here, with the partition's owner.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::{FxHashMap, FxHashSet};

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::LatePolicy;
use crate::event::{GameEvent, GameKey};
use crate::format::{json, Reject, RejectCode};

/// One record as a transport hands it over.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Kafka record timestamp (ms), when the broker gave one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// Where a partition stands.
#[derive(Clone, Debug)]
enum PartitionState {
    /// No event read yet: its watermark is unknown, so it holds the frontier back (until idle).
    Unstarted,
    /// Events read; `max_time` is the highest event time seen.
    Live { max_time: u64 },
}

impl PartitionState {
    /// The partition's watermark (its highest event time minus `lateness_ms`), once it has an
    /// event.
    fn watermark(&self, lateness_ms: u64) -> Option<u64> {
        match self {
            PartitionState::Unstarted => None,
            PartitionState::Live { max_time } => Some(max_time.saturating_sub(lateness_ms)),
        }
    }
}

#[derive(Clone, Debug)]
struct Partition {
    state: PartitionState,
    /// Since when the partition has been read to its end with nothing new.
    caught_up_since: Option<Instant>,
    /// Offset after the last record read.
    next_offset: i64,
}

/// What one worker's partitions say about event time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalMark {
    /// Some partition's watermark is unknown and it is not idle: nothing may advance.
    pub blocked: bool,
    /// Lowest watermark among non-idle partitions.
    pub active_min: Option<u64>,
    /// Just past the highest event time of the idle partitions: how far they may release.
    pub idle_release: Option<u64>,
    /// Lowest watermark among the partitions read to their end but not idle yet (0 for one
    /// with no event yet): the frontier may wait there for new records or the idle timeout,
    /// which reading the other partitions cannot shorten.
    pub waiting_at: Option<u64>,
}

/// Which (topic, partition) each game's events come from, shared by the workers of a process.
/// A game's state lives with its partition, so a game whose events arrive on two partitions
/// (a producer not keying by game) would be counted twice; its events from the second
/// partition are rejected instead (`partition_conflict`).
#[derive(Debug, Default)]
pub struct GameOwners(Mutex<FxHashMap<GameKey, (String, i32)>>);

impl GameOwners {
    /// Claims `game` for `(topic, partition)`; returns the owner when another one has it.
    fn claim(&self, game: &GameKey, topic: &str, partition: i32) -> Option<(String, i32)> {
        let mut owners = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let owner = owners
            .entry(game.clone())
            .or_insert_with(|| (topic.to_string(), partition));
        (owner.0 != topic || owner.1 != partition).then(|| owner.clone())
    }
}

fn game_closed(game_id: &str, at: Option<u64>) -> Reject {
    let when = at.map_or(String::new(), |t| format!(" at {t}"));
    Reject::new(
        RejectCode::GameClosed,
        format!(
            "game {game_id} ended and its state was released{when} (the pipeline's retention after its last event, and after its windows' last change)"
        ),
    )
}

fn partition_conflict(game_id: &str, topic: &str, partition: i32) -> Reject {
    Reject::new(
        RejectCode::PartitionConflict,
        format!("game {game_id} is read from {topic}/{partition}; its events must all go to one partition (key records by game)"),
    )
}

/// Where a restart takes a partition up again (from a checkpoint). Records below `below` were
/// read before the restart: of those, only the events of the games still `open` then are read
/// again, to rebuild their state, and none is dead-lettered a second time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    pub below: i64,
    /// Each open game and the offset of its first record.
    pub open: BTreeMap<GameKey, i64>,
    /// The highest event time read from the partition before the restart.
    pub max_time: Option<u64>,
    /// How long it had been read to its end then: once read to `below` with nothing new, it
    /// counts as caught up for that long already, so a restart does not restart its idle
    /// timeout (restarts in a row would otherwise hold the frontier back for good).
    pub caught_up_ms: Option<u64>,
}

impl Resume {
    /// The offset to read the partition from.
    pub fn start(&self) -> i64 {
        self.open.values().copied().fold(self.below, i64::min)
    }
}

/// What a record is to a restarted partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// Not read before the restart.
    Fresh,
    /// Read before, of a game being rebuilt: accept it, but its reject was already a dead
    /// letter.
    Again,
    /// Read before, of a game that was over: skip it.
    Skip,
}

/// One partition's part of a checkpoint: how far it was read, and the games read so far with
/// the offset of their first record and when they ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMark {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    /// (game, offset of its first record, its end once ended, the time of its first row: 0
    /// while it is being rebuilt after a restart, its own is not known yet).
    pub games: Vec<(GameKey, i64, Option<u64>, u64)>,
    /// The highest event time read (none before the first event).
    pub max_time: Option<u64>,
    /// The earliest time a record after `next_offset` is valued at, unless late: the input's
    /// time when marked, or the partition's watermark if later.
    #[serde(default)]
    pub fresh_from: u64,
    /// For how long it had been read to its end (none: it was not).
    #[serde(default)]
    pub caught_up_ms: Option<u64>,
}

impl PartitionMark {
    /// The games a restart from a checkpoint at `done` reads again: those not over (ended
    /// `retention_ms` or more before it).
    pub fn reread(
        &self,
        done: Option<u64>,
        retention_ms: u64,
    ) -> impl Iterator<Item = &(GameKey, i64, Option<u64>, u64)> {
        self.games
            .iter()
            .filter(move |(_, _, ended, _)| match (ended, done) {
                (Some(end), Some(done)) => end.saturating_add(retention_ms) > done,
                _ => true,
            })
    }

    /// The earliest time a restart from a checkpoint at `done` values a row of this partition
    /// at: the first row of a game it reads again, or a record read anew.
    pub fn earliest_row(&self, done: Option<u64>, retention_ms: u64) -> u64 {
        self.reread(done, retention_ms)
            .map(|g| g.3)
            .fold(self.fresh_from, u64::min)
    }
}

/// Per-worker ingest state.
pub struct Ingest {
    max_record_bytes: usize,
    lateness_ms: u64,
    idle_timeout: Duration,
    policy: LatePolicy,
    partitions: BTreeMap<(String, i32), Partition>,
    /// Each game's order, and the partition its events come from.
    games: FxHashMap<GameKey, (String, i32, GameOrder)>,
    owners: Arc<GameOwners>,
    resumes: HashMap<(String, i32), Resume>,
    /// Games whose state was released ([`Ingest::close_game`]): their later records are
    /// refused. One key per game is what remains of it.
    closed: FxHashSet<GameKey>,
    /// Closed games still reported in the marks: (topic, partition, first offset, end). A game
    /// is closed once the dataflow's *input* passes `retention` after its end, while the
    /// checkpoints' `done` (what was delivered) may still be behind its last values; only a
    /// checkpoint's `done` says when a game is over ([`crate::checkpoint::PartitionCheckpoint::from_mark`]).
    /// Kept until a checkpoint taken says so ([`Ingest::forget_closed`]).
    closed_marks: FxHashMap<GameKey, ClosedMark>,
}

/// What the marks keep of a closed game ([`Ingest::close_game`]).
#[derive(Clone, Debug)]
struct ClosedMark {
    topic: String,
    partition: i32,
    first_offset: i64,
    first_time: u64,
    ended_at: Option<u64>,
}

/// An accepted record.
#[derive(Clone, Debug, PartialEq)]
pub struct Accepted {
    pub event: GameEvent,
    /// Effective time: the event time, or the frontier for a late event folded in.
    pub time: u64,
    /// Kafka timestamp (ms), 0 when unknown.
    pub ingest_ms: u64,
    /// Whether it was late and folded in at the frontier.
    pub late: bool,
}

/// Why an event cannot follow the game's previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderError {
    /// The same `seq` again, same bytes: a re-send.
    Duplicate { last_seq: u64 },
    /// The same `seq` again with different bytes.
    Conflict { seq: u64 },
    /// A `seq` below the last one.
    SequenceRegressed { last_seq: u64 },
    /// An event time below the game's previous one.
    TimeRegressed { last_time: u64 },
}

impl std::fmt::Display for OrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrderError::Duplicate { last_seq } => write!(f, "seq {last_seq} was already accepted"),
            OrderError::Conflict { seq } => write!(
                f,
                "seq {seq} was already accepted with different content: two events claim one id"
            ),
            OrderError::SequenceRegressed { last_seq } => {
                write!(f, "seq goes backwards (last accepted seq is {last_seq})")
            }
            OrderError::TimeRegressed { last_time } => write!(
                f,
                "event time goes backwards (game's last event time is {last_time})"
            ),
        }
    }
}

/// A game's accepted events: `seq` rises strictly, event time never falls, and each accepted
/// `seq` keeps a fingerprint of its record's bytes, so that a re-send of any earlier event is
/// told from a conflicting one. An event's id is (game, seq).
#[derive(Clone, Debug, Default)]
pub struct GameOrder {
    last: Option<(u64, u64)>,
    seen: rustc_hash::FxHashMap<u64, u64>,
    /// Offset of the game's first accepted record, and, once it has ended, the event time of
    /// its latest event (its `game_end` or a later correction).
    pub first_offset: i64,
    pub ended_at: Option<u64>,
    /// The event time of the game's first accepted record: a restart that reads the game
    /// again values its rows from there or later.
    pub first_time: u64,
    /// When the ended game's state is released ([`Ingest::set_closes_at`]): an event at or
    /// after it is refused.
    pub closes_at: Option<u64>,
}

/// A fingerprint of bytes kept in checkpoints (a pipeline file's text): FNV-1a, stable across
/// runs and builds.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A record's fingerprint, to tell a re-send (the same bytes) from a conflicting one: FxHash,
/// 16 bytes a step, where FNV-1a's byte-at-a-time chain cost ~0.5 us per 400-byte record.
/// Held in memory only: after a restart the records read again are fingerprinted again.
fn record_fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(bytes);
    h.finish()
}

impl GameOrder {
    /// Whether `ev`, whose record has fingerprint `fp`, may follow the events accepted so far.
    pub fn check(&self, ev: &GameEvent, fp: u64) -> Result<(), OrderError> {
        if let Some(seen) = self.seen.get(&ev.seq) {
            return Err(match *seen == fp {
                true => OrderError::Duplicate { last_seq: ev.seq },
                false => OrderError::Conflict { seq: ev.seq },
            });
        }
        if let Some((last_seq, last_time)) = self.last {
            if ev.seq < last_seq {
                return Err(OrderError::SequenceRegressed { last_seq });
            }
            if ev.event_time_ms < last_time {
                return Err(OrderError::TimeRegressed { last_time });
            }
        }
        Ok(())
    }

    pub fn accept(&mut self, ev: &GameEvent, fp: u64) {
        let time = self.last.map_or(0, |l| l.1).max(ev.event_time_ms);
        self.last = Some((ev.seq, time));
        self.seen.insert(ev.seq, fp);
        // Once ended, the time of its latest event: a correction after `game_end` moves the
        // game's release (and so when a checkpoint counts it over) with it.
        if ev.kind == crate::event::EventKind::GameEnd || self.ended_at.is_some() {
            self.ended_at = Some(time);
        }
    }
}

impl Ingest {
    pub fn new(
        max_record_bytes: usize,
        lateness: Duration,
        idle_timeout: Duration,
        policy: LatePolicy,
    ) -> Self {
        Ingest {
            max_record_bytes,
            lateness_ms: lateness.as_millis() as u64,
            idle_timeout,
            policy,
            partitions: BTreeMap::new(),
            games: FxHashMap::default(),
            owners: Arc::default(),
            resumes: HashMap::new(),
            closed: FxHashSet::default(),
            closed_marks: FxHashMap::default(),
        }
    }

    /// Takes a partition up where a checkpoint left it. One with no game to rebuild has its
    /// watermark back at once, so it does not hold the frontier until it goes idle; one with
    /// games to rebuild gets it from their events again.
    pub fn resume(&mut self, topic: &str, partition: i32, resume: Resume) {
        if let (true, Some(max_time)) = (resume.open.is_empty(), resume.max_time) {
            if let Some(p) = self.partitions.get_mut(&(topic.to_string(), partition)) {
                p.state = PartitionState::Live { max_time };
            }
        }
        self.resumes.insert((topic.to_string(), partition), resume);
    }

    /// What `rec` is to its partition's restart. A skipped record only moves the partition's
    /// read position.
    pub fn replay(&mut self, rec: &Record<'_>) -> Replay {
        let Some(r) = self.resumes.get(&(rec.topic.to_string(), rec.partition)) else {
            return Replay::Fresh;
        };
        if rec.offset >= r.below {
            return Replay::Fresh;
        }
        let key = json::decode(rec.payload, self.max_record_bytes)
            .ok()
            .map(|ev| ev.key());
        if key.as_ref().is_some_and(|k| r.open.contains_key(k)) {
            return Replay::Again;
        }
        // A game read before the restart and not open then was over: its later records are
        // refused as before the restart.
        if let Some(k) = key {
            self.closed.insert(k);
        }
        if let Some(p) = self
            .partitions
            .get_mut(&(rec.topic.to_string(), rec.partition))
        {
            p.caught_up_since = None;
            p.next_offset = p.next_offset.max(rec.offset + 1);
        }
        Replay::Skip
    }

    /// Each partition's read position and games, for a checkpoint. A partition still being
    /// rebuilt reports its restart's position and open games, so a checkpoint taken during a
    /// rebuild loses neither.
    pub fn marks(&self, now: Instant, frontier: u64) -> Vec<PartitionMark> {
        let mut marks: BTreeMap<(String, i32), PartitionMark> = self
            .partitions
            .iter()
            .map(|((t, p), part)| {
                let mut m = PartitionMark {
                    topic: t.clone(),
                    partition: *p,
                    next_offset: part.next_offset,
                    games: Vec::new(),
                    max_time: match part.state {
                        PartitionState::Unstarted => None,
                        PartitionState::Live { max_time } => Some(max_time),
                    },
                    fresh_from: part
                        .state
                        .watermark(self.lateness_ms)
                        .map_or(frontier, |w| w.max(frontier)),
                    caught_up_ms: part
                        .caught_up_since
                        .map(|s| now.duration_since(s).as_millis() as u64),
                };
                if let Some(r) = self.resumes.get(&(t.clone(), *p)) {
                    m.next_offset = m.next_offset.max(r.below);
                    m.max_time = m.max_time.max(r.max_time);
                    m.games.extend(
                        r.open
                            .iter()
                            .filter(|(k, _)| {
                                !self.games.contains_key(*k) && !self.closed.contains(*k)
                            })
                            .map(|(k, o)| (k.clone(), *o, None, 0)),
                    );
                }
                ((t.clone(), *p), m)
            })
            .collect();
        for (key, (t, p, order)) in &self.games {
            if order.last.is_none() {
                continue;
            }
            if let Some(m) = marks.get_mut(&(t.clone(), *p)) {
                m.games.push((
                    key.clone(),
                    order.first_offset,
                    order.ended_at,
                    order.first_time,
                ));
            }
        }
        for (key, c) in &self.closed_marks {
            if let Some(m) = marks.get_mut(&(c.topic.clone(), c.partition)) {
                m.games
                    .push((key.clone(), c.first_offset, c.ended_at, c.first_time));
            }
        }
        let mut out: Vec<PartitionMark> = marks.into_values().collect();
        for m in &mut out {
            m.games.sort();
        }
        out
    }

    /// The time an ended game's state is released at (its last event + `retention`, or later
    /// when a window is scheduled to change later): from then on its events are refused as
    /// [`RejectCode::GameClosed`], whether or not the state is gone yet, so which events count
    /// does not depend on when the frontier moves. Its end in the checkpoint marks becomes
    /// `at - retention`, so that a checkpoint counts it over exactly when it is released.
    pub fn set_closes_at(&mut self, key: &GameKey, at: Option<u64>, retention_ms: u64) {
        if let Some((_, _, order)) = self.games.get_mut(key) {
            order.closes_at = at;
            if let Some(at) = at {
                order.ended_at = Some(at.saturating_sub(retention_ms));
            }
        }
    }

    /// Forgets a game's order (its accepted seqs and their fingerprints); its later records
    /// are refused as [`RejectCode::GameClosed`]. It stays in the marks (its first offset and
    /// end) until [`Ingest::forget_closed`]: the input has passed `retention` after its end,
    /// but its last values may not be delivered yet, and a checkpoint taken before they are
    /// must still have a restart read it again.
    pub fn close_game(&mut self, key: &GameKey) {
        if let Some((t, p, order)) = self.games.remove(key) {
            if order.last.is_some() {
                self.closed_marks.insert(
                    key.clone(),
                    ClosedMark {
                        topic: t,
                        partition: p,
                        first_offset: order.first_offset,
                        first_time: order.first_time,
                        ended_at: order.ended_at,
                    },
                );
            }
        }
        self.closed.insert(key.clone());
    }

    /// Drops from the marks the closed games a checkpoint with `done` already counts as over
    /// (ended `retention_ms` or more before it): every later checkpoint does too.
    pub fn forget_closed(&mut self, done: u64, retention_ms: u64) {
        self.closed_marks.retain(|_, c| {
            c.ended_at
                .is_none_or(|end| end.saturating_add(retention_ms) > done)
        });
    }

    /// Shares the game-to-partition registry with the other workers of the process.
    pub fn with_owners(mut self, owners: Arc<GameOwners>) -> Self {
        self.owners = owners;
        self
    }

    /// Registers a partition this worker reads.
    pub fn add_partition(&mut self, topic: &str, partition: i32) {
        self.partitions.insert(
            (topic.to_string(), partition),
            Partition {
                state: PartitionState::Unstarted,
                caught_up_since: None,
                next_offset: 0,
            },
        );
    }

    /// Handles one record. An event is late when it is older than its partition's watermark or
    /// than `frontier`, the dataflow input's current time.
    pub fn accept(&mut self, rec: &Record<'_>, frontier: u64) -> Result<Accepted, Reject> {
        let part = self
            .partitions
            .entry((rec.topic.to_string(), rec.partition))
            .or_insert(Partition {
                state: PartitionState::Unstarted,
                caught_up_since: None,
                next_offset: 0,
            });
        part.caught_up_since = None;
        part.next_offset = part.next_offset.max(rec.offset + 1);
        let event = json::decode(rec.payload, self.max_record_bytes)?;
        let key = event.key();
        if self.closed.contains(&key) {
            return Err(game_closed(&event.game_id, None));
        }
        let (topic, partition) = (rec.topic, rec.partition);
        if !self.games.contains_key(&key) {
            if let Some((t, p)) = self.owners.claim(&key, topic, partition) {
                return Err(partition_conflict(&event.game_id, &t, p));
            }
            self.games.insert(
                key.clone(),
                (topic.to_string(), partition, GameOrder::default()),
            );
        }
        let (owner_topic, owner_partition, game) =
            self.games.get_mut(&key).expect("inserted above");
        if *owner_topic != topic || *owner_partition != partition {
            return Err(partition_conflict(
                &event.game_id,
                owner_topic,
                *owner_partition,
            ));
        }
        let fp = record_fingerprint(rec.payload);
        game.check(&event, fp).map_err(|e| {
            let code = match e {
                OrderError::Duplicate { .. } => RejectCode::Duplicate,
                OrderError::Conflict { .. } => RejectCode::Conflict,
                OrderError::SequenceRegressed { .. } => RejectCode::SequenceRegressed,
                OrderError::TimeRegressed { .. } => RejectCode::TimeRegressed,
            };
            Reject::new(code, format!("game {}: {e}", event.game_id))
        })?;
        // Late against the event's own partition (max event time read there minus the allowed
        // lateness), which depends only on the partition's order; and, for a partition that
        // was idle and lost its hold, against the frontier itself.
        let own = part.state.watermark(self.lateness_ms).unwrap_or(0);
        let floor = own.max(frontier);
        let late = event.event_time_ms < floor;
        if late && self.policy == LatePolicy::DeadLetter {
            return Err(Reject::new(
                RejectCode::Late,
                format!(
                    "event time {} is behind the watermark {floor} (allowed lateness {} ms)",
                    event.event_time_ms, self.lateness_ms
                ),
            ));
        }
        let time = event.event_time_ms.max(floor);
        if let Some(closes) = game.closes_at.filter(|c| time >= *c) {
            return Err(game_closed(&event.game_id, Some(closes)));
        }
        let ingest_ms = rec.timestamp_ms.unwrap_or(0).max(0) as u64;
        if game.last.is_none() {
            game.first_offset = rec.offset;
            // Its event time, not `time`: after a restart a late first record may be
            // valued below the floor it met before.
            game.first_time = event.event_time_ms;
        }
        game.accept(&event, fp);
        part.state = match part.state {
            PartitionState::Unstarted => PartitionState::Live {
                max_time: event.event_time_ms,
            },
            PartitionState::Live { max_time } => PartitionState::Live {
                max_time: max_time.max(event.event_time_ms),
            },
        };
        Ok(Accepted {
            event,
            time,
            ingest_ms,
            late,
        })
    }

    /// The transport lost sight of the broker: no partition is known to be read to its end
    /// (or idle) until the transport says so again. Otherwise, after an outage, the partitions
    /// fetched first would carry the frontier past the records of those fetched later, which
    /// would all be late.
    ///
    /// Returns the partitions that were read to their end: the transport must be asked to say
    /// so again even when nothing new comes (see `KafkaReader::rearm_end`).
    pub fn forget_caught_up(&mut self) -> Vec<(String, i32)> {
        let mut forgot = Vec::new();
        for (k, p) in &mut self.partitions {
            if p.caught_up_since.take().is_some() {
                forgot.push(k.clone());
            }
        }
        forgot
    }

    /// A fetch of the partition failed: as [`Ingest::forget_caught_up`], for that partition.
    /// Returns whether it was read to its end.
    pub fn forget_caught_up_of(&mut self, topic: &str, partition: i32) -> bool {
        self.partitions
            .get_mut(&(topic.to_string(), partition))
            .is_some_and(|p| p.caught_up_since.take().is_some())
    }

    /// The transport read the partition to its end.
    pub fn caught_up(&mut self, topic: &str, partition: i32, now: Instant) {
        let key = (topic.to_string(), partition);
        if let Some(p) = self.partitions.get_mut(&key) {
            // Caught up before a restart and nothing new since: since then.
            let since = self
                .resumes
                .get(&key)
                .filter(|r| p.next_offset <= r.below)
                .and_then(|r| r.caught_up_ms)
                .and_then(|ms| now.checked_sub(Duration::from_millis(ms)));
            p.caught_up_since.get_or_insert(since.unwrap_or(now));
        }
    }

    /// Whether every partition is read to its end.
    pub fn all_caught_up(&self) -> bool {
        self.partitions
            .values()
            .all(|p| p.caught_up_since.is_some())
    }

    /// Whether the partition's watermark is past `limit` while it still has records to read.
    /// One read to its end is never held back: it could not tell new records from none, and
    /// would go idle with them unread.
    pub fn ahead_of(&self, topic: &str, partition: i32, limit: u64) -> bool {
        self.partitions
            .get(&(topic.to_string(), partition))
            .is_some_and(|p| {
                p.caught_up_since.is_none()
                    && p.state
                        .watermark(self.lateness_ms)
                        .is_some_and(|w| w > limit)
            })
    }

    /// This worker's view of event time at wall time `now`.
    pub fn mark(&self, now: Instant) -> LocalMark {
        let mut mark = LocalMark::default();
        for p in self.partitions.values() {
            let idle = p
                .caught_up_since
                .is_some_and(|s| now.duration_since(s) >= self.idle_timeout);
            if p.caught_up_since.is_some() && !idle {
                let at = p.state.watermark(self.lateness_ms).unwrap_or(0);
                mark.waiting_at = Some(mark.waiting_at.map_or(at, |m| m.min(at)));
            }
            match p.state {
                PartitionState::Unstarted => mark.blocked |= !idle,
                PartitionState::Live { max_time } if idle => {
                    let release = max_time + 1;
                    mark.idle_release = Some(mark.idle_release.map_or(release, |m| m.max(release)));
                }
                PartitionState::Live { max_time } => {
                    let wm = max_time.saturating_sub(self.lateness_ms);
                    mark.active_min = Some(mark.active_min.map_or(wm, |m| m.min(wm)));
                }
            }
        }
        mark
    }
}

#[cfg(test)]
mod tests;
