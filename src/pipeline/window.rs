//! From one game's events to window members: the window assigner of a pipeline.
//!
//! In: a game's accepted events in `seq` order, each with its effective time `t` (event time,
//! or the frontier for a late event folded in). Out: updates `(slot, member, time, ±1)` to the
//! collection of window members, where a slot is (game, entity, feature). Summing the updates
//! at times `<= T` gives every slot's window content as of `T`; the dataflow then aggregates
//! each slot with a `reduce`. Semantics, per window (an event is a member of a feature's
//! slot when it passes the feature's filter and has the feature's group: `team` needs the
//! event's team to be the home or away team, `player` needs a player):
//!
//! | window | member at time T when |
//! |---|---|
//! | `tumbling` size W | `floor(t/W) == floor(T/W)` and `t <= T` |
//! | `hopping` size W, slide S | `c <= T < c + W` where `c = ceil(t/S)*S` |
//! | `sliding` size W | `t <= T < t + W` |
//! | `session` gap G | `t <= T`, no two consecutive members of the slot up to T are G or more apart, and `T < last + G` (last: the slot's latest member up to T) |
//! | `game-clock` size W | `t <= T` and `e > E(T) - W`, where `e` is the game clock (ms played, the highest seen so far in the game: a clock that runs back does not expire anything) at the member and `E(T)` at the game's latest event up to T |
//! | `events` count N | among the slot's latest N members up to T |
//! | `possessions` count N | `p > P(T) - N`, where `p` is the game's possession number at the member and `P(T)` at the latest event up to T |
//! | `game` | `t <= T` |
//!
//! A possession starts whenever an event names a team other than the last one named. Expiries
//! that depend on later events (`events`, `possessions`, `game-clock`, sessions) happen at the
//! time of the event that causes them; time-based ones are scheduled when the member enters.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::plan::{Plan, Window, EVENT_NUMBERS, EVENT_STRINGS};
use crate::event::{GameEvent, GameKey, Sport};

/// An `f64` with a total order, so it can be data in a collection. `-0.0` is stored as `0.0`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct F64(pub f64);

impl F64 {
    pub fn new(x: f64) -> Self {
        F64(if x == 0.0 || x.is_nan() { 0.0 } else { x })
    }
}

impl PartialEq for F64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for F64 {}
impl PartialOrd for F64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for F64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl std::hash::Hash for F64 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state)
    }
}

/// Whose feature: the game, one of its teams, or a player.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Entity {
    Game,
    Home,
    Away,
    Player(String),
}

/// Feature ids of the bookkeeping slots every game has: its latest event's seq, Kafka
/// timestamp and effective time.
pub const META_SEQ: u32 = u32::MAX;
pub const META_INGEST: u32 = u32::MAX - 1;
pub const META_AT: u32 = u32::MAX - 2;
/// Feed health, game to date (absent while 0): seq numbers skipped, duplicate records,
/// score decreases.
pub const META_GAPS: u32 = u32::MAX - 3;
pub const META_DUPS: u32 = u32::MAX - 4;
pub const META_DROPS: u32 = u32::MAX - 5;
/// 1 while a score is below its highest since the last correction, and the corrections seen.
pub const META_BELOW: u32 = u32::MAX - 6;
pub const META_CORRECTIONS: u32 = u32::MAX - 7;
/// The game's result from home's side, set at its first `game_end` from the final score:
/// 1 home win, 0 loss, 0.5 tie (what online ensemble re-weighting scores members against).
pub const META_RESULT: u32 = u32::MAX - 8;
/// The lowest bookkeeping id: features are numbered below it.
pub const META_MIN: u32 = META_RESULT;

/// One aggregate's key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slot {
    pub game: GameKey,
    pub entity: Entity,
    /// Index into the plan's features, or a `META_*` id.
    pub feature: u32,
}

/// One window member: an event's value (ordered by the event's seq), or a session's liveness
/// marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Member {
    Alive,
    Value { order: u64, value: F64 },
}

/// A change to the window members.
pub type Update = (Slot, Member, u64, isize);

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

/// Length in seconds of an overtime period (NFL regular season 10 min, NBA 5, NHL regular
/// season 5, soccer extra time 15).
pub fn overtime_length(sport: Sport) -> u64 {
    match sport {
        Sport::Nfl => 600,
        Sport::Soccer => 900,
        Sport::Nba | Sport::Nhl => 300,
        Sport::Mlb | Sport::Cricket => 0,
    }
}

/// Length in seconds of period `period` (1-based).
fn period_length(sport: Sport, period: u32) -> u64 {
    let (periods, length) = regulation(sport);
    if period <= periods {
        length
    } else {
        overtime_length(sport)
    }
}

/// Game seconds left: the rest of this period plus the regulation periods after it; in
/// overtime, what is left of the period. Soccer's clock counts up (added time leaves 0).
pub fn seconds_remaining(sport: Sport, period: u32, clock_ms: u64) -> i64 {
    let (periods, length) = regulation(sport);
    let clock = (clock_ms / 1000) as i64;
    let in_period = match sport {
        Sport::Soccer => (period_length(sport, period) as i64 - clock).max(0),
        _ => clock,
    };
    let later = periods.saturating_sub(period) as i64 * length as i64;
    in_period + later
}

/// Game clock in ms played, for windows on it: the lengths of the periods before this one
/// (overtime periods at their own length) plus what is played of this one. Count-down sports
/// from the period length; soccer counts up; sports without a clock stay at 0.
pub fn game_clock_ms(sport: Sport, period: u32, clock_ms: u64) -> u64 {
    if matches!(sport, Sport::Mlb | Sport::Cricket) {
        return 0;
    }
    let period = period.max(1);
    let before: u64 = (1..period).map(|p| period_length(sport, p) * 1000).sum();
    let len = period_length(sport, period) * 1000;
    match sport {
        Sport::Soccer => before + clock_ms,
        _ => before + len.saturating_sub(clock_ms),
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn overtime_periods_count_at_their_own_length() {
        // NBA: 4 x 12 min, then 5-minute overtimes.
        assert_eq!(game_clock_ms(Sport::Nba, 4, 0), 48 * 60_000);
        assert_eq!(game_clock_ms(Sport::Nba, 5, 300_000), 48 * 60_000);
        assert_eq!(game_clock_ms(Sport::Nba, 5, 0), 53 * 60_000);
        // NFL: the overtime period starts at 10:00.
        assert_eq!(game_clock_ms(Sport::Nfl, 5, 600_000), 60 * 60_000);
        // Soccer counts up: the second half starts at 45:00 played.
        assert_eq!(game_clock_ms(Sport::Soccer, 2, 60_000), 46 * 60_000);
    }

    #[test]
    fn soccer_time_left_counts_down_from_the_clock_played() {
        assert_eq!(seconds_remaining(Sport::Soccer, 1, 0), 5400);
        assert_eq!(seconds_remaining(Sport::Soccer, 2, 30 * 60_000), 900);
        assert_eq!(seconds_remaining(Sport::Soccer, 2, 47 * 60_000), 0);
        assert_eq!(seconds_remaining(Sport::Nfl, 1, 900_000), 3600);
    }
}

/// Fills the event-context variables of `plan`'s expressions for `ev`.
#[derive(Clone, Debug)]
pub struct EventVars {
    pub nums: Vec<f64>,
}

impl EventVars {
    pub fn new(plan: &Plan) -> Self {
        EventVars {
            nums: vec![0.0; EVENT_NUMBERS.len() + plan.stats.len()],
        }
    }

    /// `prev` is the game's score before the event.
    pub fn fill<'e>(&mut self, plan: &Plan, ev: &'e GameEvent, prev: (u32, u32)) -> [&'e str; 6] {
        let side = match ev.team.as_deref() {
            Some(t) if t == ev.home => 1.0,
            Some(t) if t == ev.away => -1.0,
            _ => 0.0,
        };
        let (hp, ap, dp) = match &ev.odds {
            Some(o) => (o.home_price, o.away_price, o.draw_price.unwrap_or(0.0)),
            None => (0.0, 0.0, 0.0),
        };
        let inv = |p: f64| if p > 0.0 { 1.0 / p } else { 0.0 };
        let book = inv(hp) + inv(ap) + inv(dp);
        let prob = |p: f64| if book > 0.0 { inv(p) / book } else { 0.0 };
        let n = &mut self.nums;
        n[0] = ev.seq as f64;
        n[1] = ev.event_time_ms as f64;
        n[2] = ev.period as f64;
        n[3] = (ev.clock_ms / 1000) as f64;
        n[4] = ev.home_score as f64;
        n[5] = ev.away_score as f64;
        n[6] = ev.home_score as f64 - prev.0 as f64;
        n[7] = ev.away_score as f64 - prev.1 as f64;
        n[8] = (game_clock_ms(ev.sport, ev.period, ev.clock_ms) / 1000) as f64;
        n[9] = seconds_remaining(ev.sport, ev.period, ev.clock_ms) as f64;
        n[10] = side;
        n[11] = hp;
        n[12] = ap;
        n[13] = dp;
        n[14] = prob(hp);
        n[15] = prob(ap);
        n[16] = prob(dp);
        for (i, s) in plan.stats.iter().enumerate() {
            n[EVENT_NUMBERS.len() + i] = ev.stat(s);
        }
        debug_assert_eq!(EVENT_STRINGS.len(), 6);
        [
            kind_str(ev),
            ev.team.as_deref().unwrap_or(""),
            ev.player.as_deref().unwrap_or(""),
            &ev.home,
            &ev.away,
            ev.sport.as_str(),
        ]
    }
}

fn kind_str(ev: &GameEvent) -> &'static str {
    use crate::event::EventKind::*;
    match ev.kind {
        GameStart => "game_start",
        Play => "play",
        Timeout => "timeout",
        PeriodEnd => "period_end",
        GameEnd => "game_end",
        Clock => "clock",
        Odds => "odds",
        Correction => "correction",
    }
}

/// Per-slot state of the windows whose expiry depends on later events.
#[derive(Clone, Debug)]
enum SlotState {
    /// `events`: the latest members, oldest first.
    Events(VecDeque<Member>),
    /// `possessions`: members with their possession number.
    Possessions(VecDeque<(u64, Member)>),
    /// `game-clock`: members with the game clock (ms played) they came at.
    GameClock(VecDeque<(u64, Member)>),
    /// `session`: the current session's members and its latest time.
    Session { last: u64, members: Vec<Member> },
}

/// One game's window state for one pipeline.
#[derive(Clone, Debug)]
pub struct GameAssigner {
    key: GameKey,
    home_score: u32,
    away_score: u32,
    possession: u64,
    last_team: Option<String>,
    clock_ms: u64,
    meta: Option<[Member; 3]>,
    last_seq: Option<u64>,
    /// Seq numbers skipped, duplicates, score decreases, below the high (0/1), corrections.
    health: [u64; 5],
    /// The highest scores since the last correction.
    high: (u32, u32),
    /// Whether the game's first `game_end` (and so its result) has been seen.
    ended: bool,
    slots: HashMap<(u32, Entity), SlotState>,
    vars: EventVars,
}

fn retract(out: &mut Vec<Update>, slot: &Slot, m: Member, t: u64) {
    out.push((slot.clone(), m, t, -1));
}

impl GameAssigner {
    pub fn new(plan: &Plan, key: GameKey) -> Self {
        GameAssigner {
            key,
            home_score: 0,
            away_score: 0,
            possession: 0,
            last_team: None,
            clock_ms: 0,
            meta: None,
            last_seq: None,
            health: [0; 5],
            high: (0, 0),
            ended: false,
            slots: HashMap::new(),
            vars: EventVars::new(plan),
        }
    }

    fn slot(&self, feature: u32, entity: Entity) -> Slot {
        Slot {
            game: self.key.clone(),
            entity,
            feature,
        }
    }

    /// Moves a feed-health counter to `value` at `t` (the slot is absent while 0).
    fn health(&mut self, k: usize, value: u64, order: u64, t: u64, out: &mut Vec<Update>) {
        let old = self.health[k];
        if old == value {
            return;
        }
        let slot = self.slot(
            [
                META_GAPS,
                META_DUPS,
                META_DROPS,
                META_BELOW,
                META_CORRECTIONS,
            ][k],
            Entity::Game,
        );
        if old > 0 {
            let m = Member::Value {
                order: 0,
                value: F64::new(old as f64),
            };
            retract(out, &slot, m, t);
        }
        let _ = order;
        out.push((
            slot,
            Member::Value {
                order: 0,
                value: F64::new(value as f64),
            },
            t,
            1,
        ));
        self.health[k] = value;
    }

    /// A record repeated a seq already accepted (it was rejected as a duplicate): counted at
    /// `t` for the feed-health detectors.
    pub fn note_duplicate(&mut self, seq: u64, t: u64, out: &mut Vec<Update>) {
        let dups = self.health[1] + 1;
        self.health(1, dups, seq, t, out);
    }

    /// Applies an accepted event at effective time `t`, appending its updates to `out`.
    pub fn apply(
        &mut self,
        plan: &Plan,
        ev: &GameEvent,
        t: u64,
        ingest_ms: u64,
        out: &mut Vec<Update>,
    ) {
        let strs = self.vars.fill(plan, ev, (self.home_score, self.away_score));
        let correction = ev.kind == crate::event::EventKind::Correction;
        let dropped =
            !correction && (ev.home_score < self.home_score || ev.away_score < self.away_score);
        if correction {
            self.high = (ev.home_score, ev.away_score);
        } else {
            self.high = (
                self.high.0.max(ev.home_score),
                self.high.1.max(ev.away_score),
            );
        }
        let below = u64::from(ev.home_score < self.high.0 || ev.away_score < self.high.1);
        let skipped = self
            .last_seq
            .map_or(0, |last| ev.seq.saturating_sub(last + 1));
        self.last_seq = Some(ev.seq);
        self.home_score = ev.home_score;
        self.away_score = ev.away_score;

        // Game-level clocks move first: they expire members of earlier events.
        if let Some(team) = ev.team.as_deref() {
            if self.last_team.as_deref() != Some(team) {
                self.possession += 1;
                self.last_team = Some(team.to_string());
            }
        }
        let clock = game_clock_ms(ev.sport, ev.period, ev.clock_ms);
        self.clock_ms = self.clock_ms.max(clock);
        let (possession, now_clock) = (self.possession, self.clock_ms);
        let key = self.key.clone();
        for ((f, entity), state) in self.slots.iter_mut() {
            let slot = Slot {
                game: key.clone(),
                entity: entity.clone(),
                feature: *f,
            };
            match (state, plan.features[*f as usize].window) {
                (SlotState::Possessions(q), Window::Possessions { count }) => {
                    while q
                        .front()
                        .is_some_and(|(p, _)| p + (count as u64) <= possession)
                    {
                        let (_, m) = q.pop_front().expect("front checked");
                        retract(out, &slot, m, t);
                    }
                }
                (SlotState::GameClock(q), Window::GameClock { size }) => {
                    while q.front().is_some_and(|(e, _)| e + size <= now_clock) {
                        let (_, m) = q.pop_front().expect("front checked");
                        retract(out, &slot, m, t);
                    }
                }
                _ => {}
            }
        }

        for (i, f) in plan.features.iter().enumerate() {
            if let Some(filter) = &f.filter {
                if filter.eval(&self.vars.nums, &strs) == 0.0 {
                    continue;
                }
            }
            let entity = match f.group {
                super::spec::GroupBy::Game => Entity::Game,
                super::spec::GroupBy::Team => match ev.team.as_deref() {
                    Some(x) if x == ev.home => Entity::Home,
                    Some(x) if x == ev.away => Entity::Away,
                    _ => continue,
                },
                super::spec::GroupBy::Player => match &ev.player {
                    Some(p) => Entity::Player(p.clone()),
                    None => continue,
                },
            };
            let value = F64::new(f.value.eval(&self.vars.nums, &strs));
            let m = Member::Value {
                order: ev.seq,
                value,
            };
            let slot = self.slot(i as u32, entity.clone());
            match f.window {
                Window::Tumbling { size } => {
                    out.push((slot.clone(), m, t, 1));
                    retract(out, &slot, m, (t / size + 1).saturating_mul(size));
                }
                Window::Hopping { size, slide } => {
                    let c = t.div_ceil(slide).saturating_mul(slide);
                    out.push((slot.clone(), m, c, 1));
                    retract(out, &slot, m, c.saturating_add(size));
                }
                Window::Sliding { size } => {
                    out.push((slot.clone(), m, t, 1));
                    retract(out, &slot, m, t.saturating_add(size));
                }
                Window::Game => out.push((slot, m, t, 1)),
                Window::Events { count } => {
                    let state = self
                        .slots
                        .entry((i as u32, entity))
                        .or_insert_with(|| SlotState::Events(VecDeque::new()));
                    if let SlotState::Events(q) = state {
                        out.push((slot.clone(), m, t, 1));
                        q.push_back(m);
                        while q.len() > count as usize {
                            let old = q.pop_front().expect("non-empty");
                            retract(out, &slot, old, t);
                        }
                    }
                }
                Window::Possessions { .. } => {
                    let state = self
                        .slots
                        .entry((i as u32, entity))
                        .or_insert_with(|| SlotState::Possessions(VecDeque::new()));
                    if let SlotState::Possessions(q) = state {
                        out.push((slot, m, t, 1));
                        q.push_back((possession, m));
                    }
                }
                Window::GameClock { .. } => {
                    let state = self
                        .slots
                        .entry((i as u32, entity))
                        .or_insert_with(|| SlotState::GameClock(VecDeque::new()));
                    if let SlotState::GameClock(q) = state {
                        out.push((slot, m, t, 1));
                        q.push_back((now_clock, m));
                    }
                }
                Window::Session { gap } => {
                    let state = self.slots.entry((i as u32, entity)).or_insert_with(|| {
                        SlotState::Session {
                            last: t,
                            members: Vec::new(),
                        }
                    });
                    if let SlotState::Session { last, members } = state {
                        if t >= last.saturating_add(gap) {
                            for old in members.drain(..) {
                                retract(out, &slot, old, t);
                            }
                        }
                        *last = t;
                        members.push(m);
                        out.push((slot.clone(), m, t, 1));
                        out.push((slot.clone(), Member::Alive, t, 1));
                        retract(out, &slot, Member::Alive, t.saturating_add(gap));
                    }
                }
            }
        }

        // Bookkeeping: the game's latest event.
        let meta = [
            Member::Value {
                order: ev.seq,
                value: F64::new(ev.seq as f64),
            },
            Member::Value {
                order: ev.seq,
                value: F64::new(ingest_ms as f64),
            },
            Member::Value {
                order: ev.seq,
                value: F64::new(t as f64),
            },
        ];
        for (k, id) in [META_SEQ, META_INGEST, META_AT].into_iter().enumerate() {
            let slot = self.slot(id, Entity::Game);
            if let Some(old) = self.meta {
                retract(out, &slot, old[k], t);
            }
            out.push((slot, meta[k], t, 1));
        }
        self.meta = Some(meta);
        if ev.kind == crate::event::EventKind::GameEnd && !self.ended {
            self.ended = true;
            let result = ev.home_result();
            let m = Member::Value {
                order: ev.seq,
                value: F64::new(result),
            };
            out.push((self.slot(META_RESULT, Entity::Game), m, t, 1));
        }
        if skipped > 0 {
            let gaps = self.health[0] + skipped;
            self.health(0, gaps, ev.seq, t, out);
        }
        if dropped {
            let drops = self.health[2] + 1;
            self.health(2, drops, ev.seq, t, out);
        }
        self.health(3, below, ev.seq, t, out);
        if correction {
            let corrections = self.health[4] + 1;
            self.health(4, corrections, ev.seq, t, out);
        }
    }
}
