//! The hub: where the engine's deltas and alerts meet the subscribers.
//!
//! A channel carries either prediction deltas or alert changes ([`ChannelKind`]), fixed when it
//! is created. Per channel the hub holds what snapshots are taken from (the latest value per
//! game; or the latest change of every open alert), a bounded ring of recent frames (for resume)
//! and its subscribers. The engine calls [`Hub::publish`], [`Hub::publish_alerts`] and
//! [`Hub::progress`] from a plain thread; they never block on a subscriber. Each delta or alert
//! change is encoded to its complete frame once and the bytes are shared by every queue it goes
//! to.
//!
//! Every subscriber has a bounded queue ([`HubConfig::queue_capacity`]). When a frame does not
//! fit, the queue is dropped and the subscriber is switched to resync: its writer next sends a
//! fresh snapshot and continues after it. Memory per subscriber is therefore bounded whatever the
//! subscriber does. On a delta channel the resync snapshot is the newest value per game (the
//! conflated state). On an alerts channel it is every open alert the filter matches, so a
//! subscriber that falls behind loses intermediate changes (those of alerts resolved or retracted
//! meanwhile, and those superseded by an open alert's latest change), never an open alert.
//!
//! Consistency: a snapshot is taken, and a subscriber (re)registered, under the same channel lock
//! as `publish`, so a subscriber sees the snapshot at seq N and then exactly the matching frames
//! after N, without gap or duplicate.

mod channel;
mod subscriber;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::Serialize;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use channel::{apply_alert, apply_delta, Channel, Content};
pub use subscriber::{Encoded, Filter, Subscription, Work};
use subscriber::{Offer, Outbox, QueueState, SeverityChange, Subscriber};

use crate::alert::Alert;
use crate::delta::Delta;
use crate::event::GameKey;
use crate::ws::protocol::{self, ServerMessage, SnapshotReason, SnapshotValue};

/// Sizes of the hub's buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// Deltas (or alert changes) queued per subscriber before it is switched to resync.
    pub queue_capacity: usize,
    /// Deltas (or alert changes) kept per channel so a reconnecting subscriber can resume
    /// without a snapshot.
    pub history: usize,
    /// Released games whose last value a delta channel's snapshots still hold
    /// ([`Hub::release`]); the earliest released is forgotten first.
    pub released_games: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            queue_capacity: 1024,
            history: 10_000,
            released_games: 10_000,
        }
    }
}

/// What a channel carries. Fixed when the channel is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// Prediction deltas ([`Hub::publish`]); snapshots hold the newest value per game.
    Deltas,
    /// Alert changes ([`Hub::publish_alerts`]); snapshots hold the open alerts.
    Alerts,
}

/// A consistent view of a delta channel for one filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The channel seq the values are consistent with.
    pub seq: u64,
    /// Newest value per matching game, ordered by sport then game id.
    pub values: Vec<SnapshotValue>,
}

/// A consistent view of an alerts channel for one filter.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertSnapshot {
    /// The alert seq the alerts are consistent with.
    pub seq: u64,
    /// The latest change of every matching open alert (state `open` or `escalated`), ordered by
    /// sport, game id, then alert id.
    pub alerts: Vec<Alert>,
}

/// The snapshot a subscription starts (or resyncs) with, by channel kind.
#[derive(Clone, Debug, PartialEq)]
pub enum ChannelSnapshot {
    Values(Snapshot),
    Alerts(AlertSnapshot),
}

impl ChannelSnapshot {
    /// The channel seq the snapshot is consistent with.
    pub fn seq(&self) -> u64 {
        match self {
            ChannelSnapshot::Values(s) => s.seq,
            ChannelSnapshot::Alerts(s) => s.seq,
        }
    }

    /// The `snapshot` (delta channel) or `alert_snapshot` (alerts channel) message.
    pub fn into_message(self, channel: &str, reason: SnapshotReason) -> ServerMessage {
        let channel = channel.to_owned();
        match self {
            ChannelSnapshot::Values(Snapshot { seq, values }) => ServerMessage::Snapshot {
                channel,
                seq,
                reason,
                values,
            },
            ChannelSnapshot::Alerts(AlertSnapshot { seq, alerts }) => {
                ServerMessage::AlertSnapshot {
                    channel,
                    seq,
                    reason,
                    alerts,
                }
            }
        }
    }
}

/// How a new subscription starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Start {
    /// Send this snapshot first.
    Snapshot(ChannelSnapshot, SnapshotReason),
    /// Resumed after `from`: the missed frames are already queued; no snapshot.
    Resumed { from: u64 },
}

/// Why a subscription was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The client named a channel that does not exist (client's fault; retrying will not help
    /// until the channel is created).
    #[error("unknown channel `{0}`")]
    UnknownChannel(String),
    /// The filter names severities but the channel carries deltas (client's fault; retrying
    /// will not help).
    #[error("`severities` filters alerts, and channel `{0}` carries deltas")]
    SeveritiesOnDeltas(String),
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

/// Locks a mutex, carrying on past poisoning: the guarded state is kept consistent at every
/// unlock point, so a panic elsewhere does not make it unusable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Arc<Hub> {
        Arc::new(Hub {
            cfg: HubConfig {
                queue_capacity: cfg.queue_capacity.max(1),
                ..cfg
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

    /// The channel, created as `kind` if it does not exist. An existing channel keeps its kind.
    fn channel_or_create(&self, name: &str, kind: ChannelKind) -> Arc<Mutex<Channel>> {
        if let Some(c) = self.channel(name) {
            return c;
        }
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            channels
                .entry(Arc::from(name))
                .or_insert_with(|| Arc::new(Mutex::new(Channel::new(kind, self.cfg.history)))),
        )
    }

    /// Sets where a channel's numbering stands after a restart: its next frame is `seq + 1`.
    /// The history starts there, so a resume from an earlier seq gets a snapshot.
    pub fn restore_seq(&self, channel: &str, seq: u64) {
        if let Some(cell) = self.channel(channel) {
            let mut ch = lock(&cell);
            ch.log.restored = true;
            if ch.log.seq < seq {
                ch.log.seq = seq;
                ch.log.history.clear();
            }
        }
    }

    /// Creates a delta channel if the channel does not exist, so that clients can subscribe
    /// before the first delta is published.
    pub fn ensure_channel(&self, channel: &str) {
        self.channel_or_create(channel, ChannelKind::Deltas);
    }

    /// Creates an alerts channel if the channel does not exist, so that clients can subscribe
    /// before the first alert is published.
    pub fn ensure_alert_channel(&self, channel: &str) {
        self.channel_or_create(channel, ChannelKind::Alerts);
    }

    /// Channel names, sorted.
    pub fn channels(&self) -> Vec<String> {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = channels.keys().map(|k| k.to_string()).collect();
        names.sort();
        names
    }

    /// What the channel carries (`None` for an unknown channel).
    pub fn kind(&self, channel: &str) -> Option<ChannelKind> {
        self.channel(channel).map(|c| lock(&c).content.kind())
    }

    /// Publishes deltas on a channel (created as a delta channel on first use). Deltas carry
    /// their seq, assigned by the engine without gaps; a delta whose seq is not above the
    /// channel's last is a duplicate and is skipped. `ingest_ms[i]` is the Kafka timestamp
    /// behind `deltas[i]` (missing entries count as unknown), used only for the latency metric.
    /// Deltas for an alerts channel are dropped (logged and counted). Never blocks on a
    /// subscriber.
    pub fn publish(&self, channel: &str, deltas: &[Delta], ingest_ms: &[Option<u64>]) {
        if deltas.is_empty() {
            return;
        }
        let cell = self.channel_or_create(channel, ChannelKind::Deltas);
        // Encode outside the lock: once per delta, whatever the number of subscribers.
        let prefix = protocol::delta_frame_prefix(channel);
        let encoded: Vec<Arc<Encoded>> = deltas
            .iter()
            .enumerate()
            .map(|(i, d)| {
                Arc::new(Encoded {
                    seq: d.seq,
                    sport: d.sport,
                    game_id: d.game_id.clone(),
                    severity: None,
                    ingest_ms: ingest_ms.get(i).copied().flatten(),
                    frame: encode_frame(&prefix, d, d.seq, delta_size_hint(d)),
                })
            })
            .collect();

        let mut guard = lock(&cell);
        let Channel { log, content, .. } = &mut *guard;
        let Content::Deltas { values, .. } = content else {
            return wrong_kind(channel, ChannelKind::Deltas, deltas.len());
        };
        let mut fresh = Vec::with_capacity(encoded.len());
        for (d, e) in deltas.iter().zip(encoded) {
            if log.advance(channel, ChannelKind::Deltas, d.seq) {
                apply_delta(values, d);
                log.remember(&e);
                fresh.push(e);
            }
        }
        self.fan_out(guard, &fresh);
    }

    /// Publishes alert changes on a channel (created as an alerts channel on first use). Alerts
    /// are numbered by `alert.seq`, assigned by the publisher without gaps per channel; one whose
    /// seq is not above the channel's last is a duplicate and is skipped. The channel keeps the
    /// latest change of every open alert for snapshots and the last
    /// [`HubConfig::history`] changes for resume. Alerts for a delta channel are dropped (logged
    /// and counted). Never blocks on a subscriber.
    pub fn publish_alerts(&self, channel: &str, alerts: &[Alert]) {
        if alerts.is_empty() {
            return;
        }
        let cell = self.channel_or_create(channel, ChannelKind::Alerts);
        // Encode outside the lock; the severity filter's input needs the open set, inside it.
        let prefix = protocol::alert_frame_prefix(channel);
        let frames: Vec<Utf8Bytes> = alerts
            .iter()
            .map(|a| encode_frame(&prefix, a, a.seq, 384 + a.message.len()))
            .collect();

        let mut guard = lock(&cell);
        let Channel { log, content, .. } = &mut *guard;
        let Content::Alerts { open } = content else {
            return wrong_kind(channel, ChannelKind::Alerts, alerts.len());
        };
        let mut fresh = Vec::with_capacity(alerts.len());
        for (a, frame) in alerts.iter().zip(frames) {
            if !log.advance(channel, ChannelKind::Alerts, a.seq) {
                continue;
            }
            let before = apply_alert(open, a);
            let e = Arc::new(Encoded {
                seq: a.seq,
                sport: a.sport,
                game_id: a.game_id.clone(),
                severity: Some(SeverityChange {
                    now: a.severity,
                    before,
                }),
                ingest_ms: None,
                frame,
            });
            log.remember(&e);
            fresh.push(e);
        }
        self.fan_out(guard, &fresh);
    }

    /// Offers freshly published frames to every subscriber of the channel, then unlocks it.
    fn fan_out(&self, ch: MutexGuard<'_, Channel>, fresh: &[Arc<Encoded>]) {
        if fresh.is_empty() {
            return;
        }
        let mut high_water = 0;
        let mut overflowed = 0u64;
        // Only the subscribers of the batch's games and those of every game: with thousands
        // of subscribers each following a few games, offering every frame to every one of
        // them was most of the publisher's time.
        let mut targets: Vec<&Arc<Subscriber>> = ch.any_game.iter().collect();
        if !ch.by_game.is_empty() {
            let mut games: Vec<&str> = fresh.iter().map(|e| e.game_id.as_str()).collect();
            games.sort_unstable();
            games.dedup();
            let mut named: Vec<&Arc<Subscriber>> = games
                .into_iter()
                .flat_map(|g| ch.by_game.get(g).into_iter().flatten())
                .collect();
            // A subscriber of several of the batch's games is offered the batch once.
            named.sort_unstable_by_key(|s| s.id);
            named.dedup_by_key(|s| s.id);
            targets.extend(named);
        }
        for sub in targets {
            if let Offer::Overflowed = sub.offer(fresh, &mut high_water) {
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

    /// Marks `games` released (ended, and `retention` past) on a delta channel: snapshots hold
    /// the last value of at most [`HubConfig::released_games`] of them, forgetting the earliest
    /// released first. A game without a value, or already released, is skipped. Subscribers
    /// are told nothing: their last delta of the game was its final value.
    pub fn release(&self, channel: &str, games: &[GameKey]) {
        let Some(cell) = self.channel(channel) else {
            return;
        };
        let mut ch = lock(&cell);
        let Content::Deltas {
            values,
            released,
            released_set,
            ..
        } = &mut ch.content
        else {
            return;
        };
        for g in games {
            let key = (g.sport, g.game_id.clone());
            let held = values
                .get(&g.sport)
                .is_some_and(|v| v.contains_key(&g.game_id));
            if held && released_set.insert(key.clone()) {
                released.push_back(key);
            }
        }
        while released.len() > self.cfg.released_games {
            let (sport, id) = released.pop_front().expect("longer than the bound");
            released_set.remove(&(sport, id.clone()));
            if let Some(games) = values.get_mut(&sport) {
                games.remove(&id);
                if games.is_empty() {
                    values.remove(&sport);
                }
            }
        }
    }

    /// Everything up to event time `event_time_ms` has been published on the delta channel
    /// (created on first use). Alerts channels have no progress: ignored for them.
    pub fn progress(&self, channel: &str, event_time_ms: u64) {
        let cell = self.channel_or_create(channel, ChannelKind::Deltas);
        let mut ch = lock(&cell);
        let Content::Deltas { progress, .. } = &mut ch.content else {
            return;
        };
        *progress = Some(progress.map_or(event_time_ms, |p| p.max(event_time_ms)));
        for sub in &ch.subscribers {
            sub.set_progress(event_time_ms);
        }
    }

    /// Registers a subscriber. With `resume_from = Some(n)` and the history holding every frame
    /// after `n`, the matching ones are queued and no snapshot is needed (provided they fit in
    /// the queue); otherwise the subscription starts with a snapshot. `wake` is notified whenever
    /// the subscription has something to send. A filter with severities is refused on a delta
    /// channel.
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
        if filter.has_severities() && ch.content.kind() == ChannelKind::Deltas {
            return Err(SubscribeError::SeveritiesOnDeltas(channel.to_owned()));
        }
        // After a restart from a checkpoint, a resume from beyond the channel's last seq waits
        // for it: the engine recomputes the deltas it had delivered and numbers them as before.
        // Otherwise such a resume gets a snapshot.
        let ahead = resume_from
            .filter(|n| ch.log.restored && *n > ch.log.seq)
            .unwrap_or(0);
        let (start, queue) = match resume_from.map(|n| (n, ch.log.resume(n, &filter, capacity))) {
            Some((n, _)) if n == ahead => (Start::Resumed { from: n }, VecDeque::new()),
            Some((n, Some(queue))) => (Start::Resumed { from: n }, queue),
            Some((_, None)) => (
                Start::Snapshot(ch.snapshot(&filter), SnapshotReason::ResumeUnavailable),
                VecDeque::new(),
            ),
            None => (
                Start::Snapshot(ch.snapshot(&filter), SnapshotReason::Subscribe),
                VecDeque::new(),
            ),
        };
        self.max_queued.fetch_max(queue.len(), Ordering::Relaxed);
        let subscriber = Arc::new(Subscriber {
            id,
            filter,
            capacity,
            skip_through: ahead,
            outbox: Mutex::new(Outbox {
                state: QueueState::Streaming(queue),
                progress: ch.content.progress(),
            }),
            wake,
        });
        ch.add(&subscriber);
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

    /// Current value of every game on a delta channel (empty for an unknown or alerts channel).
    pub fn snapshot(&self, channel: &str) -> Vec<SnapshotValue> {
        self.snapshot_at(channel)
            .map(|s| s.values)
            .unwrap_or_default()
    }

    /// Current values with the seq they are consistent with (`None` for an unknown channel or
    /// an alerts channel).
    pub fn snapshot_at(&self, channel: &str) -> Option<Snapshot> {
        let cell = self.channel(channel)?;
        let ch = lock(&cell);
        match ch.snapshot(&Filter::all()) {
            ChannelSnapshot::Values(s) => Some(s),
            ChannelSnapshot::Alerts(_) => None,
        }
    }

    /// The latest change of every open alert on an alerts channel (empty for an unknown or
    /// delta channel).
    pub fn open_alerts(&self, channel: &str) -> Vec<Alert> {
        self.alert_snapshot_at(channel)
            .map(|s| s.alerts)
            .unwrap_or_default()
    }

    /// The open alerts with the seq they are consistent with (`None` for an unknown channel or
    /// a delta channel).
    pub fn alert_snapshot_at(&self, channel: &str) -> Option<AlertSnapshot> {
        let cell = self.channel(channel)?;
        let ch = lock(&cell);
        match ch.snapshot(&Filter::all()) {
            ChannelSnapshot::Alerts(s) => Some(s),
            ChannelSnapshot::Values(_) => None,
        }
    }

    /// Released games whose last value a delta channel keeps ([`HubConfig::released_games`]).
    pub fn released_games(&self) -> usize {
        self.cfg.released_games
    }

    /// Seq of the last delta (or alert change) published on the channel.
    pub fn seq(&self, channel: &str) -> Option<u64> {
        self.channel(channel).map(|c| lock(&c).log.seq)
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

/// Logs and counts what was published to a channel of the other kind: a wiring bug (one channel
/// name used for deltas and alerts), not a client's doing.
fn wrong_kind(channel: &str, published: ChannelKind, n: usize) {
    tracing::error!(
        channel,
        ?published,
        n,
        "published to a channel of the other kind; dropped"
    );
    metrics::counter!("sideline_hub_wrong_channel_kind_total").increment(n as u64);
}

/// Room for a delta's JSON: the golden logs' deltas take 70-105 bytes per changed feature or
/// contributor (the names are long) over ~200 for the rest. A hint of 48 per changed feature
/// alone made the buffer grow twice for most NFL deltas (1,357 bytes on average), copying.
fn delta_size_hint(d: &Delta) -> usize {
    256 + 96 * (d.changed.len() + d.contributors.len())
}

/// A complete frame: `prefix`, `value`'s JSON and the closing brace. `size_hint` is the expected
/// JSON length.
fn encode_frame<T: Serialize>(prefix: &str, value: &T, seq: u64, size_hint: usize) -> Utf8Bytes {
    let mut buf = Vec::with_capacity(prefix.len() + size_hint);
    buf.extend_from_slice(prefix.as_bytes());
    // Writing a `Delta` or an `Alert` into a Vec cannot fail (non-finite floats become null).
    if let Err(e) = serde_json::to_writer(&mut buf, value) {
        tracing::error!(error = %e, seq, "encoding a frame failed");
    }
    buf.push(b'}');
    String::from_utf8(buf)
        .map(Utf8Bytes::from)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "frame JSON is not UTF-8");
            Utf8Bytes::from_static("{}")
        })
}

#[cfg(test)]
mod tests;
