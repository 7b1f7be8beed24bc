//! The hub: where the engine's deltas meet the subscribers.
//!
//! Per channel the hub holds the latest value per game (the snapshot), a bounded ring of recent
//! deltas (for resume) and its subscribers. The engine calls [`Hub::publish`] and
//! [`Hub::progress`] from a plain thread; they never block on a subscriber. Each delta is encoded
//! to its complete `delta` frame once and the bytes are shared by every queue it goes to.
//!
//! Every subscriber has a bounded queue ([`HubConfig::queue_capacity`]). When a delta does not
//! fit, the queue is dropped and the subscriber is switched to resync: its writer next sends a
//! fresh snapshot (newest value per game: the conflated state) and continues after it. Memory per
//! subscriber is therefore bounded whatever the subscriber does.
//!
//! Consistency: a snapshot is taken, and a subscriber (re)registered, under the same channel lock
//! as `publish`, so a subscriber sees the snapshot at seq N and then exactly the matching deltas
//! after N, without gap or duplicate.

mod subscriber;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub use subscriber::{EncodedDelta, Filter, Subscription, Work};
use subscriber::{Offer, Outbox, QueueState, Subscriber};

use crate::delta::Delta;
use crate::event::Sport;
use crate::ws::protocol::{self, SnapshotReason, SnapshotValue};

/// Sizes of the hub's buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// Deltas queued per subscriber before it is switched to resync.
    pub queue_capacity: usize,
    /// Deltas kept per channel so a reconnecting subscriber can resume without a snapshot.
    pub history: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            queue_capacity: 1024,
            history: 10_000,
        }
    }
}

/// A consistent view of a channel for one filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The channel seq the values are consistent with.
    pub seq: u64,
    /// Newest value per matching game, ordered by sport then game id.
    pub values: Vec<SnapshotValue>,
}

/// How a new subscription starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Start {
    /// Send this snapshot first.
    Snapshot(Snapshot, SnapshotReason),
    /// Resumed after `from`: the missed deltas are already queued; no snapshot.
    Resumed { from: u64 },
}

/// Why a subscription was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The client named a channel that does not exist (client's fault; retrying will not help
    /// until the channel is created).
    #[error("unknown channel `{0}`")]
    UnknownChannel(String),
}

/// The fan-out hub. Create with [`Hub::new`]; share the `Arc`.
#[derive(Debug)]
pub struct Hub {
    cfg: HubConfig,
    channels: RwLock<HashMap<Arc<str>, Arc<Mutex<Channel>>>>,
    next_id: AtomicU64,
    subscribers: AtomicUsize,
    max_queued: AtomicUsize,
    resyncs: AtomicU64,
}

/// One channel's state. Guarded by its own mutex.
#[derive(Debug)]
struct Channel {
    /// Seq of the last delta published (0 before any).
    seq: u64,
    /// Newest event time reported by `progress`.
    progress: Option<u64>,
    /// Latest value per game.
    values: BTreeMap<Sport, BTreeMap<String, SnapshotValue>>,
    /// The last `history` deltas, by seq.
    history: VecDeque<Arc<EncodedDelta>>,
    subscribers: Vec<Arc<Subscriber>>,
}

/// Locks a mutex, carrying on past poisoning: the guarded state is kept consistent at every
/// unlock point, so a panic elsewhere does not make it unusable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Channel {
    fn new() -> Self {
        Channel {
            seq: 0,
            progress: None,
            values: BTreeMap::new(),
            history: VecDeque::new(),
            subscribers: Vec::new(),
        }
    }

    fn snapshot(&self, filter: &Filter) -> Snapshot {
        let mut values = Vec::new();
        let sports: Vec<&BTreeMap<String, SnapshotValue>> = match filter.sports() {
            Some(sports) => sports.iter().filter_map(|s| self.values.get(s)).collect(),
            None => self.values.values().collect(),
        };
        for games in sports {
            match filter.games() {
                Some(ids) => values.extend(ids.iter().filter_map(|id| games.get(id)).cloned()),
                None => values.extend(games.values().cloned()),
            }
        }
        Snapshot {
            seq: self.seq,
            values,
        }
    }

    fn apply(&mut self, d: &Delta) {
        let games = self.values.entry(d.sport).or_default();
        match games.get_mut(d.game_id.as_str()) {
            Some(v) => v.apply(d),
            None => {
                games.insert(d.game_id.clone(), SnapshotValue::from_delta(d));
            }
        }
    }
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Arc<Hub> {
        Arc::new(Hub {
            cfg: HubConfig {
                queue_capacity: cfg.queue_capacity.max(1),
                history: cfg.history,
            },
            channels: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            subscribers: AtomicUsize::new(0),
            max_queued: AtomicUsize::new(0),
            resyncs: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    fn channel(&self, name: &str) -> Option<Arc<Mutex<Channel>>> {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        channels.get(name).cloned()
    }

    fn channel_or_create(&self, name: &str) -> Arc<Mutex<Channel>> {
        if let Some(c) = self.channel(name) {
            return c;
        }
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            channels
                .entry(Arc::from(name))
                .or_insert_with(|| Arc::new(Mutex::new(Channel::new()))),
        )
    }

    /// Creates the channel if it does not exist, so that clients can subscribe before the first
    /// delta is published.
    pub fn ensure_channel(&self, channel: &str) {
        self.channel_or_create(channel);
    }

    /// Channel names, sorted.
    pub fn channels(&self) -> Vec<String> {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = channels.keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    /// Publishes deltas on a channel (created on first use). Deltas carry their seq, assigned by
    /// the engine without gaps; a delta whose seq is not above the channel's last is a duplicate
    /// and is skipped. `ingest_ms[i]` is the Kafka timestamp behind `deltas[i]` (missing entries
    /// count as unknown), used only for the latency metric. Never blocks on a subscriber.
    pub fn publish(&self, channel: &str, deltas: &[Delta], ingest_ms: &[Option<u64>]) {
        if deltas.is_empty() {
            return;
        }
        let cell = self.channel_or_create(channel);
        // Encode outside the lock: once per delta, whatever the number of subscribers.
        let prefix = protocol::delta_frame_prefix(channel);
        let encoded: Vec<Arc<EncodedDelta>> = deltas
            .iter()
            .enumerate()
            .map(|(i, d)| {
                Arc::new(encode_delta(
                    &prefix,
                    d,
                    ingest_ms.get(i).copied().flatten(),
                ))
            })
            .collect();

        let mut ch = lock(&cell);
        let mut fresh = Vec::with_capacity(encoded.len());
        for (d, e) in deltas.iter().zip(&encoded) {
            if d.seq <= ch.seq {
                tracing::warn!(
                    channel,
                    seq = d.seq,
                    last = ch.seq,
                    "duplicate delta skipped"
                );
                metrics::counter!("sideline_hub_duplicate_deltas_total").increment(1);
                continue;
            }
            if d.seq != ch.seq + 1 {
                tracing::warn!(channel, seq = d.seq, last = ch.seq, "gap in delta seq");
            }
            ch.seq = d.seq;
            ch.apply(d);
            if self.cfg.history > 0 {
                if ch.history.len() == self.cfg.history {
                    ch.history.pop_front();
                }
                ch.history.push_back(Arc::clone(e));
            }
            fresh.push(Arc::clone(e));
        }
        if fresh.is_empty() {
            return;
        }
        let mut high_water = 0;
        let mut overflowed = 0u64;
        for sub in &ch.subscribers {
            if let Offer::Overflowed = sub.offer(&fresh, &mut high_water) {
                overflowed += 1;
            }
        }
        drop(ch);
        self.max_queued.fetch_max(high_water, Ordering::Relaxed);
        if overflowed > 0 {
            self.resyncs.fetch_add(overflowed, Ordering::Relaxed);
            metrics::counter!("sideline_ws_resyncs_total").increment(overflowed);
        }
    }

    /// Everything up to event time `event_time_ms` has been published on the channel.
    pub fn progress(&self, channel: &str, event_time_ms: u64) {
        let cell = self.channel_or_create(channel);
        let mut ch = lock(&cell);
        ch.progress = Some(ch.progress.map_or(event_time_ms, |p| p.max(event_time_ms)));
        for sub in &ch.subscribers {
            sub.set_progress(event_time_ms);
        }
    }

    /// Registers a subscriber. With `resume_from = Some(n)` and the history holding every delta
    /// after `n`, the matching ones are queued and no snapshot is needed (provided they fit in
    /// the queue); otherwise the subscription starts with a snapshot. `wake` is notified whenever
    /// the subscription has something to send.
    pub fn subscribe(
        self: &Arc<Self>,
        channel: &str,
        filter: Filter,
        resume_from: Option<u64>,
        wake: Arc<Notify>,
    ) -> Result<(Subscription, Start), SubscribeError> {
        let cell = self
            .channel(channel)
            .ok_or_else(|| SubscribeError::UnknownChannel(channel.to_owned()))?;
        let channel_name: Arc<str> = Arc::from(channel);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let capacity = self.cfg.queue_capacity;

        let mut ch = lock(&cell);
        let mut start = None;
        let mut queue = VecDeque::new();
        let mut reason = SnapshotReason::Subscribe;
        if let Some(n) = resume_from {
            let covered =
                n == ch.seq || (n < ch.seq && ch.history.front().is_some_and(|f| f.seq <= n + 1));
            let missed = ch.history.partition_point(|e| e.seq <= n);
            let matching = ch
                .history
                .range(missed..)
                .filter(|e| filter.matches(e.sport, &e.game_id));
            if covered && matching.clone().count() <= capacity {
                queue.extend(matching.cloned());
                start = Some(Start::Resumed { from: n });
            } else {
                reason = SnapshotReason::ResumeUnavailable;
            }
        }
        let start = start.unwrap_or_else(|| Start::Snapshot(ch.snapshot(&filter), reason));
        self.max_queued.fetch_max(queue.len(), Ordering::Relaxed);
        let subscriber = Arc::new(Subscriber {
            id,
            filter,
            capacity,
            outbox: Mutex::new(Outbox {
                state: QueueState::Streaming(queue),
                progress: ch.progress,
            }),
            wake,
        });
        ch.subscribers.push(Arc::clone(&subscriber));
        drop(ch);
        subscriber.wake.notify_one();

        self.subscribers.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("sideline_ws_subscribers").increment(1.0);
        let sub = Subscription {
            hub: Arc::clone(self),
            channel_name,
            channel: cell,
            subscriber,
        };
        Ok((sub, start))
    }

    /// Subscriptions currently registered, over all channels.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Current value of every game on the channel (empty for an unknown channel).
    pub fn snapshot(&self, channel: &str) -> Vec<SnapshotValue> {
        self.snapshot_at(channel)
            .map(|s| s.values)
            .unwrap_or_default()
    }

    /// Current values with the seq they are consistent with (`None` for an unknown channel).
    pub fn snapshot_at(&self, channel: &str) -> Option<Snapshot> {
        let cell = self.channel(channel)?;
        let ch = lock(&cell);
        Some(ch.snapshot(&Filter::all()))
    }

    /// Seq of the last delta published on the channel.
    pub fn seq(&self, channel: &str) -> Option<u64> {
        self.channel(channel).map(|c| lock(&c).seq)
    }

    /// The longest any subscriber queue has been since the hub was created. Never exceeds
    /// [`HubConfig::queue_capacity`].
    pub fn max_queued(&self) -> usize {
        self.max_queued.load(Ordering::Relaxed)
    }

    /// How many times a subscriber queue overflowed and was switched to resync.
    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }
}

fn encode_delta(prefix: &str, d: &Delta, ingest_ms: Option<u64>) -> EncodedDelta {
    let mut buf = Vec::with_capacity(prefix.len() + 192 + 48 * d.changed.len());
    buf.extend_from_slice(prefix.as_bytes());
    // Writing a `Delta` into a Vec cannot fail (non-finite floats become null).
    if let Err(e) = serde_json::to_writer(&mut buf, d) {
        tracing::error!(error = %e, seq = d.seq, "encoding a delta failed");
    }
    buf.push(b'}');
    let frame = String::from_utf8(buf)
        .map(Utf8Bytes::from)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "delta JSON is not UTF-8");
            Utf8Bytes::from_static("{}")
        });
    EncodedDelta {
        seq: d.seq,
        sport: d.sport,
        game_id: d.game_id.clone(),
        ingest_ms,
        frame,
    }
}

#[cfg(test)]
mod tests;
