//! A brute-force reference for window features: the value of one feature, for one entity of one
//! game, at one time, recomputed from the game's accepted events alone. Tests check the engine's
//! incremental path (the [`GameAssigner`](super::window::GameAssigner) state machine, whose member
//! updates the dataflow's `reduce` aggregates) against it: `tests/windows_reference.rs`.
//!
//! Each window is written directly from the table of semantics in [`super::window`]'s docs and
//! each aggregate from its definition; nothing is shared with the engine but the evaluation of
//! event expressions ([`EventVars`]) and the game clock ([`game_clock_ms`]). It is meant to be
//! obviously right, not fast: O(n) per value, O(n²) over a game.
//!
//! Values come out as the engine stores them ([`F64`](super::window::F64)): `-0.0` and NaN as
//! `0.0`. Sums run in event (`seq`) order, the order the engine sums in, so the two agree to the
//! bit.

use super::plan::{Agg, Plan, Window};
use super::spec::GroupBy;
use super::window::{game_clock_ms, Entity, EventVars};
use crate::event::GameEvent;

/// What the features see of one event.
#[derive(Clone, Debug)]
struct Fact {
    /// Effective time.
    time: u64,
    /// Game clock, ms played.
    played: u64,
    /// The game's possession number after the event.
    possession: u64,
    /// Per feature: the entity whose slot the event joins and its value, when it passes the
    /// feature's filter and has the feature's group.
    joins: Vec<Option<(Entity, f64)>>,
}

/// One game's events with every feature's filter and value evaluated once, to ask for many
/// values cheaply.
#[derive(Clone, Debug)]
pub struct Evaluated<'p> {
    plan: &'p Plan,
    facts: Vec<Fact>,
}

/// A value as the engine stores it.
fn stored(x: f64) -> f64 {
    if x == 0.0 || x.is_nan() {
        0.0
    } else {
        x
    }
}

impl<'p> Evaluated<'p> {
    /// `events`: one game's accepted events in `seq` order with their effective times, which
    /// never fall (the ingest guarantees it within a game).
    pub fn new(plan: &'p Plan, events: &[(GameEvent, u64)]) -> Self {
        let mut vars = EventVars::new(plan);
        let mut score = (0, 0);
        let (mut possession, mut last_team) = (0u64, None::<&str>);
        let mut facts: Vec<Fact> = Vec::with_capacity(events.len());
        for (ev, t) in events {
            assert!(
                facts.last().is_none_or(|f| f.time <= *t),
                "effective times fall at seq {}",
                ev.seq
            );
            let strs = vars.fill(plan, ev, score);
            score = (ev.home_score, ev.away_score);
            if let Some(team) = ev.team.as_deref() {
                if last_team != Some(team) {
                    possession += 1;
                    last_team = Some(team);
                }
            }
            let joins = plan
                .features
                .iter()
                .map(|f| {
                    let passes = f
                        .filter
                        .as_ref()
                        .is_none_or(|c| c.eval(&vars.nums, &strs) != 0.0);
                    let entity = match f.group {
                        GroupBy::Game => Some(Entity::Game),
                        GroupBy::Team if ev.team.as_ref() == Some(&ev.home) => Some(Entity::Home),
                        GroupBy::Team if ev.team.as_ref() == Some(&ev.away) => Some(Entity::Away),
                        GroupBy::Team => None,
                        GroupBy::Player => ev.player.clone().map(Entity::Player),
                    };
                    let value = stored(f.value.eval(&vars.nums, &strs));
                    entity.filter(|_| passes).map(|e| (e, value))
                })
                .collect();
            facts.push(Fact {
                time: *t,
                played: game_clock_ms(ev.sport, ev.period, ev.clock_ms),
                possession,
                joins,
            });
        }
        Evaluated { plan, facts }
    }

    /// The aggregate of `feature`'s window for `entity` as of time `at`, or `None` when the
    /// window is empty or its session is closed.
    pub fn slot_value(&self, feature: usize, entity: &Entity, at: u64) -> Option<f64> {
        let f = &self.plan.features[feature];
        let seen: Vec<&Fact> = self.facts.iter().filter(|x| x.time <= at).collect();
        // The game's latest event up to `at`: its game clock and possession are E(T) and P(T).
        let latest = *seen.last()?;
        // The slot's members up to `at`, in seq order, with their values.
        let mut members: Vec<(&Fact, f64)> = seen
            .iter()
            .filter_map(|x| match &x.joins[feature] {
                Some((e, v)) if e == entity => Some((*x, *v)),
                _ => None,
            })
            .collect();
        match f.window {
            Window::Tumbling { size } => members.retain(|(x, _)| x.time / size == at / size),
            Window::Hopping { size, slide } => members.retain(|(x, _)| {
                let c = x.time.div_ceil(slide) * slide;
                c <= at && at < c + size
            }),
            Window::Sliding { size } => members.retain(|(x, _)| at < x.time + size),
            Window::Session { gap } => {
                let last = members.last()?.0.time;
                if at >= last + gap {
                    return None;
                }
                // The current session starts after the last gap of `gap` or more.
                let start = (1..members.len())
                    .rev()
                    .find(|&i| members[i].0.time - members[i - 1].0.time >= gap)
                    .unwrap_or(0);
                members.drain(..start);
            }
            Window::GameClock { size } => members.retain(|(x, _)| x.played + size > latest.played),
            Window::Events { count } => {
                let old = members.len().saturating_sub(count as usize);
                members.drain(..old);
            }
            Window::Possessions { count } => {
                members.retain(|(x, _)| x.possession + count as u64 > latest.possession)
            }
            Window::Game => {}
        }
        let values: Vec<f64> = members.iter().map(|(_, v)| *v).collect();
        aggregate(f.aggregate, f.window, &values)
    }

    /// [`Self::slot_value`], or the feature's default.
    pub fn feature_value(&self, feature: usize, entity: &Entity, at: u64) -> f64 {
        self.slot_value(feature, entity, at)
            .unwrap_or(self.plan.features[feature].default)
    }

    /// The entities that ever have a member in `feature`'s windows; every other entity's value
    /// is always `None`.
    pub fn entities(&self, feature: usize) -> Vec<Entity> {
        let mut out: Vec<Entity> = self
            .facts
            .iter()
            .filter_map(|x| x.joins[feature].as_ref().map(|(e, _)| e.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every time at which `feature`'s value can change, sorted: event times (members enter,
    /// count and game-clock windows move), and the ends of time windows and sessions.
    pub fn feature_times(&self, feature: usize) -> Vec<u64> {
        let mut times = Vec::new();
        for x in &self.facts {
            times.push(x.time);
            match self.plan.features[feature].window {
                Window::Tumbling { size } => times.push((x.time / size + 1) * size),
                Window::Hopping { size, slide } => {
                    let c = x.time.div_ceil(slide) * slide;
                    times.extend([c, c + size]);
                }
                Window::Sliding { size } => times.push(x.time + size),
                Window::Session { gap } => times.push(x.time + gap),
                _ => {}
            }
        }
        times.sort_unstable();
        times.dedup();
        times
    }

    /// Every time at which any feature's value can change, sorted.
    pub fn candidate_times(&self) -> Vec<u64> {
        let mut times: Vec<u64> = (0..self.plan.features.len())
            .flat_map(|f| self.feature_times(f))
            .collect();
        times.sort_unstable();
        times.dedup();
        times
    }
}

/// `agg` of a window's values (in seq order), `None` when there are none.
fn aggregate(agg: Agg, window: Window, values: &[f64]) -> Option<f64> {
    let (first, last) = (*values.first()?, *values.last()?);
    let n = values.len() as f64;
    let sum = values.iter().fold(0.0, |a, v| a + v);
    let mean = sum / n;
    Some(stored(match agg {
        Agg::Count => n,
        Agg::Sum => sum,
        Agg::Mean => mean,
        Agg::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
        Agg::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Agg::First => first,
        Agg::Last => last,
        Agg::Stddev => (values.iter().fold(0.0, |a, v| a + (v - mean) * (v - mean)) / n).sqrt(),
        Agg::Distinct => {
            let mut bits: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
            bits.sort_unstable();
            bits.dedup();
            bits.len() as f64
        }
        Agg::Ewma { alpha } => values[1..]
            .iter()
            .fold(first, |a, v| alpha * v + (1.0 - alpha) * a),
        Agg::Rate { .. } => sum / (window.length_ms()? as f64 / 60_000.0),
    }))
}

/// `feature`'s aggregate for `entity` at time `at`, from one game's accepted events with their
/// effective times (in seq order); `None` when the window is empty or its session is closed.
pub fn slot_value(
    plan: &Plan,
    feature: usize,
    entity: &Entity,
    events: &[(GameEvent, u64)],
    at: u64,
) -> Option<f64> {
    Evaluated::new(plan, events).slot_value(feature, entity, at)
}

/// [`slot_value`], or the feature's default.
pub fn feature_value(
    plan: &Plan,
    feature: usize,
    entity: &Entity,
    events: &[(GameEvent, u64)],
    at: u64,
) -> f64 {
    Evaluated::new(plan, events).feature_value(feature, entity, at)
}

/// Every time at which any slot of the game can change, sorted.
pub fn candidate_times(plan: &Plan, events: &[(GameEvent, u64)]) -> Vec<u64> {
    Evaluated::new(plan, events).candidate_times()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Sport};
    use crate::pipeline::plan::{plan, ModelCatalog};

    struct NoModels;
    impl ModelCatalog for NoModels {
        fn inputs(&self, _: &str, _: &str) -> Result<Vec<String>, String> {
            Err("no registry in these tests".into())
        }
    }

    /// A plan of one feature: `value` summed over `window`, per `group`.
    fn sum_plan(group: &str, window: &str) -> Plan {
        let text = format!(
            r#"
[pipeline]
name = "reference"
version = 1
sport = "nfl"
[source]
topics = ["t"]
[[feature]]
name = "f"
group-by = "{group}"
value = "stats.x"
window = {window}
aggregate = "sum"
default = -1
[model]
expr = "0"
[[output]]
kind = "websocket"
channel = "c"
"#
        );
        plan("test.toml", &text, &NoModels).unwrap_or_else(|e| panic!("{e}"))
    }

    /// An NFL event at time `t` with `played` ms of game clock gone, by `team`, worth `x`.
    fn ev(seq: u64, t: u64, played: u64, team: Option<&str>, x: f64) -> (GameEvent, u64) {
        let ev = GameEvent {
            sport: Sport::Nfl,
            game_id: "g".into(),
            seq,
            event_time_ms: t,
            period: (played / 900_000) as u32 + 1,
            clock_ms: 900_000 - played % 900_000,
            kind: EventKind::Play,
            home: "HOM".into(),
            away: "AWY".into(),
            team: team.map(str::to_string),
            player: None,
            home_score: 0,
            away_score: 0,
            stats: [("x".to_string(), x)].into_iter().collect(),
            odds: None,
            description: None,
        };
        (ev, t)
    }

    #[test]
    fn a_session_closes_after_the_gap_and_a_new_one_starts_empty() {
        let p = sum_plan("game", r#"{ kind = "session", gap = "10s" }"#);
        let evs = [
            ev(1, 0, 0, None, 1.0),
            ev(2, 5_000, 0, None, 2.0),
            ev(3, 20_000, 0, None, 4.0),
        ];
        let at = |t| slot_value(&p, 0, &Entity::Game, &evs, t);
        assert_eq!(at(4_999), Some(1.0));
        assert_eq!(at(14_999), Some(3.0));
        assert_eq!(at(15_000), None);
        assert_eq!(feature_value(&p, 0, &Entity::Game, &evs, 15_000), -1.0);
        assert_eq!(at(20_000), Some(4.0));
        assert_eq!(at(29_999), Some(4.0));
        assert_eq!(at(30_000), None);
        let times = candidate_times(&p, &evs);
        assert_eq!(times, [0, 5_000, 10_000, 15_000, 20_000, 30_000]);
    }

    #[test]
    fn a_game_clock_window_does_not_expire_during_a_stoppage() {
        let p = sum_plan("game", r#"{ kind = "game-clock", size = "60s" }"#);
        let evs = [
            ev(1, 0, 0, None, 1.0),
            ev(2, 10_000, 30_000, None, 2.0),
            // 490 s of event time with the clock stopped: nothing leaves.
            ev(3, 500_000, 30_000, None, 4.0),
            // The clock moves to 65 s: the member at 0 s leaves, the one at 30 s stays.
            ev(4, 510_000, 65_000, None, 8.0),
        ];
        let at = |t| slot_value(&p, 0, &Entity::Game, &evs, t);
        assert_eq!(at(499_999), Some(3.0));
        assert_eq!(at(500_000), Some(7.0));
        assert_eq!(at(510_000), Some(14.0));
        assert_eq!(at(1_000_000_000), Some(14.0));
    }

    #[test]
    fn a_possessions_window_keeps_the_latest_possessions_of_the_game() {
        let p = sum_plan("game", r#"{ kind = "possessions", count = 2 }"#);
        let evs = [
            ev(1, 0, 0, Some("HOM"), 1.0),      // possession 1
            ev(2, 1_000, 0, Some("HOM"), 2.0),  // 1
            ev(3, 2_000, 0, Some("AWY"), 4.0),  // 2
            ev(4, 3_000, 0, None, 8.0),         // still 2
            ev(5, 4_000, 0, Some("HOM"), 16.0), // 3
        ];
        let at = |t| slot_value(&p, 0, &Entity::Game, &evs, t);
        assert_eq!(at(3_000), Some(15.0));
        assert_eq!(at(4_000), Some(28.0));
        // Per team: the away team's member still counts at possession 3 (2 > 3 - 2).
        let p = sum_plan("team", r#"{ kind = "possessions", count = 2 }"#);
        assert_eq!(slot_value(&p, 0, &Entity::Home, &evs, 4_000), Some(16.0));
        assert_eq!(slot_value(&p, 0, &Entity::Away, &evs, 4_000), Some(4.0));
        assert_eq!(slot_value(&p, 0, &Entity::Game, &evs, 4_000), None);
    }

    #[test]
    fn a_hopping_member_enters_at_the_next_boundary() {
        let p = sum_plan(
            "game",
            r#"{ kind = "hopping", size = "10s", slide = "4s" }"#,
        );
        let evs = [ev(1, 1_000, 0, None, 1.0), ev(2, 4_000, 0, None, 2.0)];
        let at = |t| slot_value(&p, 0, &Entity::Game, &evs, t);
        // Both enter at 4 s; both leave at 14 s.
        assert_eq!(at(3_999), None);
        assert_eq!(at(4_000), Some(3.0));
        assert_eq!(at(13_999), Some(3.0));
        assert_eq!(at(14_000), None);
    }
}
