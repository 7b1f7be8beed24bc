//! Per-game features, kept incrementally in differential dataflow.
//!
//! Every feature of a game is one slot of a [`FeatureVec`], and a `FeatureVec` is an abelian
//! group under slot-wise addition. That makes every window an ordinary differential update:
//!
//! * a *latest value* (score difference, possession, down, ...) is maintained by adding
//!   `new - old` at the event's time;
//! * a *time window* of width W (points in the last 5 game minutes) inserts the event's
//!   contribution at `t` and retracts it at `t + W`;
//! * a *count window* (yards over the last 10 plays) inserts a play at its time and retracts
//!   it at the time of the play that pushes it out.
//!
//! [`assign::GameWindows`] turns one game's events into those updates; the dataflow
//! (`crate::dataflow`) sums them per game with `count_total`, at O(1) per update, and emits a
//! game's vector only at the times it changed. [`offline`] recomputes the same vectors from
//! scratch, by brute force: the reference the tests and the trainer use.

pub mod assign;
pub mod offline;

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Semigroup};
use serde::{Deserialize, Serialize};

use crate::event::Sport;

/// Width of the points window: 5 minutes of event time (= 5 game minutes under the NFL import
/// rule, where event time runs with the game clock).
pub const POINTS_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Length of the play-count window.
pub const PLAYS_WINDOW: usize = 10;

/// The slots of a [`FeatureVec`]. The model reads the feature slots; the meta slots travel with
/// them so deltas can say which event they follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Slot {
    /// Home score minus away score.
    ScoreDiff,
    /// Game seconds left in regulation (overtime: in the period).
    SecondsRemaining,
    /// +1 home has the ball, -1 away, 0 nobody.
    Possession,
    /// Down at the next snap (0 when not applicable).
    Down,
    /// Yards to go at the next snap.
    Distance,
    /// Yards from the line of scrimmage to the end zone the possessing team attacks.
    YardsToGoal,
    /// Points scored by the home team in the last 5 game minutes.
    HomePoints5m,
    /// Points scored by the away team in the last 5 game minutes.
    AwayPoints5m,
    /// Plays counted in the last-10-plays window.
    Plays10,
    /// Yards gained over the last 10 plays.
    Yards10,
    /// Meta: `seq` of the game's latest event.
    EventSeq,
    /// Meta: Kafka timestamp (ms) of the game's latest event; 0 offline.
    IngestMs,
    /// Meta: the (effective) time of the game's latest event: a change at another time comes
    /// from a window expiring, not from an event.
    EventAt,
}

/// Number of slots.
pub const SLOTS: usize = 13;
/// Number of leading slots that are model features (the rest are meta).
pub const FEATURE_SLOTS: usize = 10;

/// Names of the feature slots, in order: the names model manifests and deltas use.
pub const FEATURE_NAMES: [&str; FEATURE_SLOTS] = [
    "score_diff",
    "seconds_remaining",
    "possession",
    "down",
    "distance",
    "yards_to_goal",
    "home_points_5m",
    "away_points_5m",
    "plays_10",
    "yards_10",
];

/// A game's features, or an update to them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct FeatureVec(pub [i64; SLOTS]);

impl FeatureVec {
    pub fn get(&self, slot: Slot) -> i64 {
        self.0[slot as usize]
    }

    pub fn set(&mut self, slot: Slot, value: i64) {
        self.0[slot as usize] = value;
    }

    pub fn with(slot: Slot, value: i64) -> Self {
        let mut v = FeatureVec::default();
        v.set(slot, value);
        v
    }

    /// `self - other`, slot-wise.
    pub fn minus(&self, other: &FeatureVec) -> FeatureVec {
        let mut out = *self;
        for (o, b) in out.0.iter_mut().zip(other.0.iter()) {
            *o -= b;
        }
        out
    }

    /// The model features, without the meta slots.
    pub fn features(&self) -> &[i64] {
        &self.0[..FEATURE_SLOTS]
    }
}

impl IsZero for FeatureVec {
    fn is_zero(&self) -> bool {
        self.0.iter().all(|x| *x == 0)
    }
}

impl Semigroup for FeatureVec {
    fn plus_equals(&mut self, rhs: &Self) {
        for (a, b) in self.0.iter_mut().zip(rhs.0.iter()) {
            *a += b;
        }
    }
}

impl Monoid for FeatureVec {
    fn zero() -> Self {
        FeatureVec::default()
    }
}

impl Abelian for FeatureVec {
    fn negate(&mut self) {
        for a in self.0.iter_mut() {
            *a = -*a;
        }
    }
}

/// Regulation periods and their length in seconds, per sport (for `seconds_remaining`).
pub fn regulation(sport: Sport) -> (u32, u64) {
    match sport {
        Sport::Nfl => (4, 900),
        Sport::Soccer => (2, 2700),
        Sport::Nba => (4, 720),
        Sport::Nhl => (3, 1200),
        Sport::Mlb | Sport::Cricket => (0, 0),
    }
}

/// Game seconds left: the rest of this period plus the regulation periods after it; in
/// overtime, what is left of the period.
pub fn seconds_remaining(sport: Sport, period: u32, clock_ms: u64) -> i64 {
    let (periods, length) = regulation(sport);
    let in_period = (clock_ms / 1000) as i64;
    let later = periods.saturating_sub(period) as i64 * length as i64;
    in_period + later
}
