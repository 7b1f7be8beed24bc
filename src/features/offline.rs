//! The from-scratch reference: a game's features at any time, recomputed by brute force from
//! its events. Deliberately naive (no state carried between times), so that it shares no logic
//! with the incremental path beyond the per-event values of [`super::assign`].

use std::collections::BTreeSet;

use super::assign::{latest_values, play_yards};
use super::{FeatureVec, Slot, PLAYS_WINDOW, POINTS_WINDOW_MS};
use crate::event::GameEvent;

/// One accepted event with its effective time and Kafka timestamp.
#[derive(Clone, Debug)]
pub struct Timed<'a> {
    pub event: &'a GameEvent,
    pub time: u64,
    pub ingest_ms: u64,
}

/// The game's features as of time `at`, from the game's accepted events in `seq` order.
pub fn features_at(events: &[Timed<'_>], at: u64) -> FeatureVec {
    let seen: Vec<&Timed<'_>> = events.iter().filter(|e| e.time <= at).collect();
    let mut v = FeatureVec::default();
    let Some(last) = seen.last() else {
        return v;
    };
    v = latest_values(last.event, last.time, last.ingest_ms);
    let (mut home, mut away) = (0i64, 0i64);
    for (i, e) in seen.iter().enumerate() {
        let (ph, pa) = match i.checked_sub(1) {
            Some(p) => (
                seen[p].event.home_score as i64,
                seen[p].event.away_score as i64,
            ),
            None => (0, 0),
        };
        if at < e.time + POINTS_WINDOW_MS {
            home += e.event.home_score as i64 - ph;
            away += e.event.away_score as i64 - pa;
        }
    }
    v.set(Slot::HomePoints5m, home);
    v.set(Slot::AwayPoints5m, away);
    let plays: Vec<i64> = seen.iter().filter_map(|e| play_yards(e.event)).collect();
    let recent = &plays[plays.len().saturating_sub(PLAYS_WINDOW)..];
    v.set(Slot::Plays10, recent.len() as i64);
    v.set(Slot::Yards10, recent.iter().sum());
    v
}

/// Every time at which the game's features change, with the features from then on.
pub fn timeline(events: &[Timed<'_>]) -> Vec<(u64, FeatureVec)> {
    let mut times = BTreeSet::new();
    for e in events {
        times.insert(e.time);
        times.insert(e.time + POINTS_WINDOW_MS);
    }
    let mut out = Vec::new();
    let mut prev = FeatureVec::default();
    for t in times {
        let v = features_at(events, t);
        if v != prev {
            out.push((t, v));
            prev = v;
        }
    }
    out
}

/// The game's timeline from raw events taken at their own event times (no lateness), as the
/// trainer and offline checks use it.
pub fn timeline_of(events: &[GameEvent]) -> Vec<(u64, FeatureVec)> {
    let timed: Vec<Timed<'_>> = events
        .iter()
        .map(|e| Timed {
            event: e,
            time: e.event_time_ms,
            ingest_ms: 0,
        })
        .collect();
    timeline(&timed)
}
