//! From one game's events to updates of its [`FeatureVec`]: the window assigner.
//!
//! In: a game's accepted events in `seq` order, each with its effective time (event time, or
//! the frontier for a late event folded in). Out: `(time, update)` pairs, where summing all
//! updates at times `<= T` gives the game's features as of `T`. At most two updates per event:
//! one at its time (latest-value changes, window insertions, count-window retraction) and,
//! for a scoring event, the retraction of its points at `time + POINTS_WINDOW_MS`.

use std::collections::VecDeque;

use super::{seconds_remaining, FeatureVec, Slot, PLAYS_WINDOW, POINTS_WINDOW_MS};
use crate::event::{EventKind, GameEvent};

/// Why an event cannot follow the game's previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderError {
    /// The same `seq` again.
    Duplicate { last_seq: u64 },
    /// A `seq` below the last one.
    SequenceRegressed { last_seq: u64 },
    /// An event time below the game's previous one.
    TimeRegressed { last_time: u64 },
}

impl std::fmt::Display for OrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OrderError::Duplicate { last_seq } => write!(f, "seq {last_seq} was already accepted"),
            OrderError::SequenceRegressed { last_seq } => {
                write!(f, "seq goes backwards (last accepted seq is {last_seq})")
            }
            OrderError::TimeRegressed { last_time } => {
                write!(
                    f,
                    "event time goes backwards (game's last event time is {last_time})"
                )
            }
        }
    }
}

/// One game's window state.
#[derive(Clone, Debug, Default)]
pub struct GameWindows {
    /// The latest-value slots as last emitted.
    latest: FeatureVec,
    last_seq: Option<u64>,
    last_time: u64,
    home_score: u32,
    away_score: u32,
    /// Yards of the plays in the count window, oldest first.
    plays: VecDeque<i64>,
}

/// The slots that hold the latest event's value.
const LATEST: [Slot; 9] = [
    Slot::ScoreDiff,
    Slot::SecondsRemaining,
    Slot::Possession,
    Slot::Down,
    Slot::Distance,
    Slot::YardsToGoal,
    Slot::EventSeq,
    Slot::IngestMs,
    Slot::EventAt,
];

/// The latest-value slots an event applied at `time` sets.
pub fn latest_values(ev: &GameEvent, time: u64, ingest_ms: u64) -> FeatureVec {
    let mut v = FeatureVec::default();
    v.set(Slot::ScoreDiff, ev.home_score as i64 - ev.away_score as i64);
    v.set(
        Slot::SecondsRemaining,
        seconds_remaining(ev.sport, ev.period, ev.clock_ms),
    );
    let possession = match ev.team.as_deref() {
        Some(t) if t == ev.home => 1,
        Some(t) if t == ev.away => -1,
        _ => 0,
    };
    v.set(Slot::Possession, possession);
    v.set(Slot::Down, ev.stat("down").round() as i64);
    v.set(Slot::Distance, ev.stat("distance").round() as i64);
    v.set(Slot::YardsToGoal, ev.stat("yards_to_goal").round() as i64);
    v.set(Slot::EventSeq, ev.seq as i64);
    v.set(Slot::IngestMs, ingest_ms as i64);
    v.set(Slot::EventAt, time as i64);
    v
}

/// Yards a play counts for in the count window.
pub fn play_yards(ev: &GameEvent) -> Option<i64> {
    (ev.kind == EventKind::Play).then(|| ev.stat("yards_gained").round() as i64)
}

impl GameWindows {
    /// Whether `ev` may follow the events accepted so far.
    pub fn check(&self, ev: &GameEvent) -> Result<(), OrderError> {
        if let Some(last_seq) = self.last_seq {
            if ev.seq == last_seq {
                return Err(OrderError::Duplicate { last_seq });
            }
            if ev.seq < last_seq {
                return Err(OrderError::SequenceRegressed { last_seq });
            }
            if ev.event_time_ms < self.last_time {
                return Err(OrderError::TimeRegressed {
                    last_time: self.last_time,
                });
            }
        }
        Ok(())
    }

    /// Applies an accepted event at effective time `time` and appends its updates to `out`.
    /// The caller has checked the event with [`GameWindows::check`].
    pub fn apply(
        &mut self,
        ev: &GameEvent,
        time: u64,
        ingest_ms: u64,
        out: &mut Vec<(u64, FeatureVec)>,
    ) {
        let latest = latest_values(ev, time, ingest_ms);
        let mut now = FeatureVec::default();
        for slot in LATEST {
            now.set(slot, latest.get(slot) - self.latest.get(slot));
        }
        self.latest = latest;

        let home_points = ev.home_score as i64 - self.home_score as i64;
        let away_points = ev.away_score as i64 - self.away_score as i64;
        self.home_score = ev.home_score;
        self.away_score = ev.away_score;
        if home_points != 0 || away_points != 0 {
            now.0[Slot::HomePoints5m as usize] += home_points;
            now.0[Slot::AwayPoints5m as usize] += away_points;
            let mut expire = FeatureVec::default();
            expire.set(Slot::HomePoints5m, -home_points);
            expire.set(Slot::AwayPoints5m, -away_points);
            out.push((time + POINTS_WINDOW_MS, expire));
        }

        if let Some(yards) = play_yards(ev) {
            now.0[Slot::Plays10 as usize] += 1;
            now.0[Slot::Yards10 as usize] += yards;
            self.plays.push_back(yards);
            if self.plays.len() > PLAYS_WINDOW {
                let old = self.plays.pop_front().unwrap_or(0);
                now.0[Slot::Plays10 as usize] -= 1;
                now.0[Slot::Yards10 as usize] -= old;
            }
        }

        self.last_seq = Some(ev.seq);
        self.last_time = self.last_time.max(ev.event_time_ms);
        out.push((time, now));
    }
}
