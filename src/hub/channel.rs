//! One channel's state: its numbered log of recent frames (for resume), what its snapshots are
//! taken from (the newest value per game, or the open alerts), and its subscribers indexed
//! for fan-out.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::subscriber::{Encoded, Filter, Subscriber};
use super::{AlertSnapshot, ChannelKind, ChannelSnapshot, Snapshot};
use crate::alert::{Alert, AlertState, Severity};
use crate::delta::Delta;
use crate::event::Sport;
use crate::ws::protocol::SnapshotValue;

/// Values keyed by sport, then game id.
pub(super) type ByGame<T> = BTreeMap<Sport, BTreeMap<String, T>>;

/// One channel's state. Guarded by its own mutex.
#[derive(Debug)]
pub(super) struct Channel {
    pub(super) log: Log,
    pub(super) content: Content,
    pub(super) subscribers: Vec<Arc<Subscriber>>,
    /// The same subscribers indexed for fan-out: those following named games, by game id,
    /// and those following every game. A frame is offered only to the ones that may want it.
    pub(super) by_game: HashMap<String, Vec<Arc<Subscriber>>>,
    pub(super) any_game: Vec<Arc<Subscriber>>,
}

impl Channel {
    pub(super) fn add(&mut self, sub: &Arc<Subscriber>) {
        self.subscribers.push(Arc::clone(sub));
        match sub.filter.games() {
            Some(games) => {
                for g in games {
                    self.by_game
                        .entry(g.clone())
                        .or_default()
                        .push(Arc::clone(sub));
                }
            }
            None => self.any_game.push(Arc::clone(sub)),
        }
    }

    /// Removes a subscriber; whether it was there.
    ///
    /// Only the index entries of its own games are touched: scanning every game's list under
    /// the channel's lock made each removal cost all the subscriptions, and 10,000
    /// subscribers leaving at once held up publishing for every other one.
    pub(super) fn remove(&mut self, id: u64) -> bool {
        let Some(at) = self.subscribers.iter().position(|s| s.id == id) else {
            return false;
        };
        let sub = self.subscribers.remove(at);
        match sub.filter.games() {
            Some(games) => {
                for g in games {
                    if let Some(subs) = self.by_game.get_mut(g) {
                        subs.retain(|s| s.id != id);
                        if subs.is_empty() {
                            self.by_game.remove(g);
                        }
                    }
                }
            }
            None => self.any_game.retain(|s| s.id != id),
        }
        true
    }
}

/// A channel's numbered frames: the last seq and the most recent frames, for resume.
#[derive(Debug)]
pub(super) struct Log {
    /// Seq of the last frame published (0 before any).
    pub(super) seq: u64,
    /// The last `capacity` frames, by seq.
    pub(super) history: VecDeque<Arc<Encoded>>,
    pub(super) capacity: usize,
    /// Numbering restored from a checkpoint: the engine is recomputing deltas it numbered the
    /// same way before a restart, so a resume from beyond `seq` waits for them.
    pub(super) restored: bool,
}

/// What a channel carries, with the state its snapshots are taken from.
#[derive(Debug)]
pub(super) enum Content {
    Deltas {
        /// Newest event time reported by `progress`.
        progress: Option<u64>,
        /// Latest value per game.
        values: ByGame<SnapshotValue>,
        /// Games of `values` that were released, earliest first, and the same as a set.
        released: VecDeque<(Sport, String)>,
        released_set: HashSet<(Sport, String)>,
    },
    Alerts {
        /// The latest change of every open alert, by alert id within its game. An alert leaves
        /// when it is resolved or retracted.
        open: ByGame<BTreeMap<String, Alert>>,
    },
}

impl Log {
    /// Whether a frame numbered `seq` is new. One not above the last is a duplicate: counted
    /// and skipped. A gap is logged and accepted.
    pub(super) fn advance(&mut self, channel: &str, kind: ChannelKind, seq: u64) -> bool {
        if seq <= self.seq {
            tracing::warn!(channel, ?kind, seq, last = self.seq, "duplicate skipped");
            match kind {
                ChannelKind::Deltas => {
                    metrics::counter!("sideline_hub_duplicate_deltas_total").increment(1)
                }
                ChannelKind::Alerts => {
                    metrics::counter!("sideline_hub_duplicate_alerts_total").increment(1)
                }
            }
            return false;
        }
        if seq != self.seq + 1 {
            tracing::warn!(channel, ?kind, seq, last = self.seq, "gap in seq");
        }
        self.seq = seq;
        true
    }

    pub(super) fn remember(&mut self, e: &Arc<Encoded>) {
        if self.capacity == 0 {
            return;
        }
        if self.history.len() == self.capacity {
            self.history.pop_front();
        }
        self.history.push_back(Arc::clone(e));
    }

    /// The frames after `n` that `filter` admits, if the history still holds all of them and
    /// they fit in `capacity`.
    pub(super) fn resume(
        &self,
        n: u64,
        filter: &Filter,
        capacity: usize,
    ) -> Option<VecDeque<Arc<Encoded>>> {
        let covered =
            n == self.seq || (n < self.seq && self.history.front().is_some_and(|f| f.seq <= n + 1));
        if !covered {
            return None;
        }
        let missed = self.history.partition_point(|e| e.seq <= n);
        let matching = self.history.range(missed..).filter(|e| filter.admits(e));
        (matching.clone().count() <= capacity).then(|| matching.cloned().collect())
    }
}

/// The entries of `by_game` the filter's sports and games select, ordered by sport then game id.
pub(super) fn selected<'a, T>(by_game: &'a ByGame<T>, filter: &Filter) -> Vec<&'a T> {
    let mut out = Vec::new();
    let sports: Vec<&BTreeMap<String, T>> = match filter.sports() {
        Some(sports) => sports.iter().filter_map(|s| by_game.get(s)).collect(),
        None => by_game.values().collect(),
    };
    for games in sports {
        match filter.games() {
            Some(ids) => out.extend(ids.iter().filter_map(|id| games.get(id))),
            None => out.extend(games.values()),
        }
    }
    out
}

impl Content {
    pub(super) fn new(kind: ChannelKind) -> Self {
        match kind {
            ChannelKind::Deltas => Content::Deltas {
                progress: None,
                values: BTreeMap::new(),
                released: VecDeque::new(),
                released_set: HashSet::new(),
            },
            ChannelKind::Alerts => Content::Alerts {
                open: BTreeMap::new(),
            },
        }
    }

    pub(super) fn kind(&self) -> ChannelKind {
        match self {
            Content::Deltas { .. } => ChannelKind::Deltas,
            Content::Alerts { .. } => ChannelKind::Alerts,
        }
    }

    pub(super) fn progress(&self) -> Option<u64> {
        match self {
            Content::Deltas { progress, .. } => *progress,
            Content::Alerts { .. } => None,
        }
    }
}

/// Moves a game's value forward to `d`.
pub(super) fn apply_delta(values: &mut ByGame<SnapshotValue>, d: &Delta) {
    let games = values.entry(d.sport).or_default();
    match games.get_mut(d.game_id.as_str()) {
        Some(v) => v.apply(d),
        None => {
            games.insert(d.game_id.clone(), SnapshotValue::from_delta(d));
        }
    }
}

/// Records an alert change among the open alerts (an open or escalation replaces, a resolve or
/// retraction removes). Returns the severity of the alert's previous change, if it was open.
pub(super) fn apply_alert(
    open: &mut ByGame<BTreeMap<String, Alert>>,
    a: &Alert,
) -> Option<Severity> {
    let previous = match a.state {
        AlertState::Open | AlertState::Escalated => open
            .entry(a.sport)
            .or_default()
            .entry(a.game_id.clone())
            .or_default()
            .insert(a.id.clone(), a.clone()),
        AlertState::Resolved | AlertState::Retracted => {
            let games = open.get_mut(&a.sport)?;
            let alerts = games.get_mut(a.game_id.as_str())?;
            let previous = alerts.remove(&a.id);
            if alerts.is_empty() {
                games.remove(a.game_id.as_str());
                if games.is_empty() {
                    open.remove(&a.sport);
                }
            }
            previous
        }
    };
    previous.map(|p| p.severity)
}

impl Channel {
    pub(super) fn new(kind: ChannelKind, history: usize) -> Self {
        Channel {
            log: Log {
                seq: 0,
                history: VecDeque::new(),
                capacity: history,
                restored: false,
            },
            content: Content::new(kind),
            subscribers: Vec::new(),
            by_game: HashMap::new(),
            any_game: Vec::new(),
        }
    }

    pub(super) fn snapshot(&self, filter: &Filter) -> ChannelSnapshot {
        let seq = self.log.seq;
        match &self.content {
            Content::Deltas { values, .. } => ChannelSnapshot::Values(Snapshot {
                seq,
                values: selected(values, filter).into_iter().cloned().collect(),
            }),
            Content::Alerts { open } => ChannelSnapshot::Alerts(AlertSnapshot {
                seq,
                alerts: selected(open, filter)
                    .into_iter()
                    .flat_map(BTreeMap::values)
                    .filter(|a| filter.matches_alert(a))
                    .cloned()
                    .collect(),
            }),
        }
    }
}
