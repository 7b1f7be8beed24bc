//! One subscriber of one channel: its filter and its bounded outbox.
//!
//! The outbox is a small state machine ([`QueueState`]): `Streaming` holds the matching frames
//! (deltas or alert changes) not yet taken by the writer, at most `capacity` of them; when one
//! would not fit, the queue is dropped and the state becomes `Resync`, in which nothing is queued
//! until the writer takes a fresh snapshot. Progress is a single coalesced slot (the newest event
//! time wins; delta channels only).
//!
//! Lock order: channel lock, then outbox lock. The publisher holds each outbox lock only to push
//! a batch; the writer only to pop one.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{lock, Channel, ChannelSnapshot, Hub};
use crate::alert::{Alert, Severity};
use crate::event::Sport;
use crate::ws::protocol;

/// A delta or an alert change encoded once, as a complete `delta` or `alert` frame, shared by
/// every subscriber it goes to.
#[derive(Debug)]
pub struct Encoded {
    pub(super) seq: u64,
    pub(super) sport: Sport,
    pub(super) game_id: String,
    /// For an alert change: what the severity filter looks at. `None` for a delta.
    pub(super) severity: Option<SeverityChange>,
    pub(super) ingest_ms: Option<u64>,
    pub(super) frame: Utf8Bytes,
}

/// An alert change's severity and that of the alert's previous change, if the hub saw one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SeverityChange {
    pub(super) now: Severity,
    pub(super) before: Option<Severity>,
}

impl Encoded {
    /// The channel seq: the delta's `seq` or the alert's `seq`.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The Kafka timestamp behind a delta, for the end-to-end latency metric (`None` for
    /// alerts).
    pub fn ingest_ms(&self) -> Option<u64> {
        self.ingest_ms
    }

    /// The complete `{"type":"delta",...}` or `{"type":"alert",...}` text frame; cloning it
    /// shares the bytes.
    pub fn frame(&self) -> &Utf8Bytes {
        &self.frame
    }
}

/// Which games (and alert severities) a subscriber receives (compiled from
/// [`protocol::Filter`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    sports: Option<Vec<Sport>>,
    /// Sorted and deduplicated, for binary search.
    games: Option<Vec<String>>,
    /// Sorted and deduplicated. Only allowed on alerts channels.
    severities: Option<Vec<Severity>>,
}

impl Filter {
    /// Matches every game.
    pub fn all() -> Self {
        Filter::default()
    }

    pub fn matches(&self, sport: Sport, game_id: &str) -> bool {
        self.sports.as_ref().is_none_or(|s| s.contains(&sport))
            && self
                .games
                .as_ref()
                .is_none_or(|g| g.binary_search_by(|x| x.as_str().cmp(game_id)).is_ok())
    }

    /// Whether the filter names severities (which only an alerts channel accepts).
    pub fn has_severities(&self) -> bool {
        self.severities.is_some()
    }

    /// Whether an open alert at this latest change belongs in the subscriber's snapshot.
    pub fn matches_alert(&self, alert: &Alert) -> bool {
        self.matches(alert.sport, &alert.game_id) && self.admits_severity(alert.severity)
    }

    fn admits_severity(&self, severity: Severity) -> bool {
        self.severities
            .as_ref()
            .is_none_or(|s| s.contains(&severity))
    }

    /// Whether a frame goes to the subscriber. An alert change passes the severity set when its
    /// severity is in it or its alert's previous one was: a client holding the alert learns that
    /// it left the set.
    pub(super) fn admits(&self, e: &Encoded) -> bool {
        self.matches(e.sport, &e.game_id)
            && e.severity.is_none_or(|s| {
                self.admits_severity(s.now) || s.before.is_some_and(|b| self.admits_severity(b))
            })
    }

    pub(super) fn sports(&self) -> Option<&[Sport]> {
        self.sports.as_deref()
    }

    pub(super) fn games(&self) -> Option<&[String]> {
        self.games.as_deref()
    }
}

impl From<protocol::Filter> for Filter {
    fn from(f: protocol::Filter) -> Self {
        let sports = f.sports.map(|mut s| {
            s.sort();
            s.dedup();
            s
        });
        let games = f.games.map(|mut g| {
            g.sort();
            g.dedup();
            g
        });
        let severities = f.severities.map(|mut s| {
            s.sort();
            s.dedup();
            s
        });
        Filter {
            sports,
            games,
            severities,
        }
    }
}

/// The state of a subscriber's queue.
#[derive(Debug)]
pub(super) enum QueueState {
    /// Frames after everything the subscriber has been given, in seq order, at most `capacity`.
    Streaming(VecDeque<Arc<Encoded>>),
    /// The queue overflowed and was dropped: the next thing the subscriber gets is a snapshot
    /// with `reason: "resync"`. Nothing is queued meanwhile.
    Resync,
}

#[derive(Debug)]
pub(super) struct Outbox {
    pub(super) state: QueueState,
    /// The newest progress not yet taken (coalesced).
    pub(super) progress: Option<u64>,
}

/// What [`Subscriber::offer`] did.
pub(super) enum Offer {
    Nothing,
    Queued,
    /// The queue overflowed and the subscriber now needs a resync.
    Overflowed,
}

/// A subscriber as the hub sees it: shared between the channel and the [`Subscription`].
#[derive(Debug)]
pub(super) struct Subscriber {
    pub(super) id: u64,
    pub(super) filter: Filter,
    pub(super) capacity: usize,
    /// Frames up to this seq are not for it: it resumed from a seq the channel had not reached
    /// yet (an engine recomputing after a restart renumbers the same deltas the same way).
    pub(super) skip_through: u64,
    pub(super) outbox: Mutex<Outbox>,
    pub(super) wake: Arc<Notify>,
}

impl Subscriber {
    /// Queues the frames of `batch` that match the filter. Returns the queue length after, via
    /// `high_water`, and whether the queue overflowed.
    pub(super) fn offer(&self, batch: &[Arc<Encoded>], high_water: &mut usize) -> Offer {
        let mut outbox = lock(&self.outbox);
        let QueueState::Streaming(queue) = &mut outbox.state else {
            return Offer::Nothing;
        };
        let before = queue.len();
        for d in batch {
            if d.seq <= self.skip_through || !self.filter.admits(d) {
                continue;
            }
            if queue.len() >= self.capacity {
                *high_water = (*high_water).max(queue.len());
                outbox.state = QueueState::Resync;
                drop(outbox);
                self.wake.notify_one();
                return Offer::Overflowed;
            }
            queue.push_back(Arc::clone(d));
        }
        *high_water = (*high_water).max(queue.len());
        if queue.len() > before {
            drop(outbox);
            self.wake.notify_one();
            Offer::Queued
        } else {
            Offer::Nothing
        }
    }

    pub(super) fn set_progress(&self, event_time_ms: u64) {
        let mut outbox = lock(&self.outbox);
        outbox.progress = Some(
            outbox
                .progress
                .map_or(event_time_ms, |p| p.max(event_time_ms)),
        );
        drop(outbox);
        self.wake.notify_one();
    }
}

/// What a writer should send next for one subscription (see [`Subscription::take`]).
#[derive(Debug)]
pub enum Work {
    /// Nothing pending.
    Idle,
    /// Frames (deltas or alert changes) in seq order, then (if the queue is now empty) the
    /// newest pending progress.
    Frames {
        frames: Vec<Arc<Encoded>>,
        progress: Option<u64>,
        /// More frames are queued: call `take` again.
        more: bool,
    },
    /// The queue overflowed: call [`Subscription::resync`] and send its snapshot.
    Resync,
}

/// A registered subscriber, owned by the connection. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    pub(super) hub: Arc<Hub>,
    pub(super) channel_name: Arc<str>,
    pub(super) channel: Arc<Mutex<Channel>>,
    pub(super) subscriber: Arc<Subscriber>,
}

impl Subscription {
    pub fn channel(&self) -> &str {
        &self.channel_name
    }

    /// Takes up to `max` queued frames (and the pending progress once the queue is drained).
    pub fn take(&self, max: usize) -> Work {
        let mut outbox = lock(&self.subscriber.outbox);
        let Outbox { state, progress } = &mut *outbox;
        match state {
            QueueState::Resync => Work::Resync,
            QueueState::Streaming(queue) => {
                let n = queue.len().min(max);
                let frames: Vec<_> = queue.drain(..n).collect();
                let more = !queue.is_empty();
                let progress = if more { None } else { progress.take() };
                if frames.is_empty() && progress.is_none() {
                    Work::Idle
                } else {
                    Work::Frames {
                        frames,
                        progress,
                        more,
                    }
                }
            }
        }
    }

    /// Leaves `Resync`: takes a snapshot for the subscriber's filter under the channel lock (the
    /// newest value per game, or every open alert) and restarts the queue empty, so the frames
    /// queued next are exactly those after the snapshot's seq. Returns the snapshot and the
    /// pending progress, to send after it.
    pub fn resync(&self) -> (ChannelSnapshot, Option<u64>) {
        let channel = lock(&self.channel);
        let snapshot = channel.snapshot(&self.subscriber.filter);
        let mut outbox = lock(&self.subscriber.outbox);
        outbox.state = QueueState::Streaming(VecDeque::new());
        let progress = outbox.progress.take();
        (snapshot, progress)
    }

    /// Frames currently queued (for tests and diagnostics).
    pub fn queued(&self) -> usize {
        match &lock(&self.subscriber.outbox).state {
            QueueState::Streaming(q) => q.len(),
            QueueState::Resync => 0,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut channel = lock(&self.channel);
        if channel.remove(self.subscriber.id) {
            self.hub.subscribers.fetch_sub(1, Ordering::Relaxed);
            metrics::gauge!("sideline_ws_subscribers").decrement(1.0);
        }
    }
}
