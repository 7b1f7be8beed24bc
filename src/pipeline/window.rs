//! From one game's events to window members and facts: the window assigner of a pipeline.
//!
//! In: a game's accepted events in `seq` order, each with its effective time `t` (event time,
//! or the frontier for a late event folded in). Out ([`Updates`]):
//!
//! - for windows that also change with time (`tumbling`, `hopping`, `sliding`, `session`),
//!   updates `(slot, member, time, ±1)` to the collection of window members, where a slot is
//!   (game, entity, feature), scheduled when the member enters; summing them at times `<= T`
//!   gives the slot's window content as of `T`, which the dataflow aggregates with a `reduce`;
//! - for windows that change only at the game's events (`events`, `possessions`, `game-clock`,
//!   `game`), whose members the assigner holds anyway, the aggregate itself, as a [`Fact`]
//!   retracted and re-inserted when it changes; likewise the bookkeeping slots (latest seq,
//!   times, feed health, result) and the game's key, once.
//!
//! Semantics, per window (an event is a member of a feature's slot when it passes the
//! feature's filter and has the feature's group: `team` needs the event's team to be the home
//! or away team, `player` needs a player):
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
//!
//! An ended game's state is released `retention` after its last event
//! ([`GameAssigner::closes_at`], [`GameAssigner::close`]).

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

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

/// A game inside the dataflow: a 64-bit hash of its [`GameKey`] ([`game_id`]), so that keys
/// are copied, compared and exchanged as one word. The key itself travels once per game
/// ([`Fact::Game`]) to the scoring stage, which labels its output with it and reports two keys
/// that share an id.
pub type GameId = u64;

/// The dataflow's id of `key`: the same in every worker and run of a build.
pub fn game_id(key: &GameKey) -> GameId {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// One aggregate's key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slot {
    pub game: GameId,
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

/// What reaches the scoring stage besides the aggregated windows, straight from the assigner:
/// values it knows without a window's history, and game keys.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Fact {
    /// A game's key, present from its first event on.
    Game(GameId, GameKey),
    /// A slot's value: a bookkeeping slot; a window that changes only at the game's events
    /// (`events`, `possessions`, `game-clock`, `game`), aggregated by the assigner; or, after
    /// the dataflow's `reduce`, a window that also changes with time (`tumbling`, `hopping`,
    /// `sliding`, `session`).
    Value(Slot, F64),
}

impl Fact {
    pub fn game(&self) -> GameId {
        match self {
            Fact::Game(id, _) => *id,
            Fact::Value(slot, _) => slot.game,
        }
    }
}

/// A change to the facts.
pub type FactUpdate = (Fact, u64, isize);

/// What an assigner appends to: window members for the dataflow's `reduce`, facts for the
/// scoring stage.
#[derive(Clone, Debug, Default)]
pub struct Updates {
    pub members: Vec<Update>,
    pub facts: Vec<FactUpdate>,
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

/// Per-slot state of the windows whose expiry depends on later events. The assigner
/// aggregates the fact windows' members itself (all but sessions); sessions' members are kept
/// to retract them when the next session starts.
#[derive(Clone, Debug)]
enum SlotState {
    /// `events`: the latest members, oldest first.
    Events(VecDeque<Member>),
    /// `possessions`: members with their possession number.
    Possessions(VecDeque<(u64, Member)>),
    /// `game-clock`: members with the game clock (ms played) they came at.
    GameClock(VecDeque<(u64, Member)>),
    /// `game`: every member.
    Game(Vec<Member>),
    /// `session`: the current session's members and its latest time.
    Session { last: u64, members: Vec<Member> },
}

impl SlotState {
    fn push(&mut self, at: u64, m: Member) {
        if let SlotState::Possessions(q) | SlotState::GameClock(q) = self {
            q.push_back((at, m));
        }
    }

    /// A fact window's aggregate over its members (in seq order), `None` while it is empty.
    fn aggregate(&self, agg: super::plan::Agg) -> Option<f64> {
        use super::aggregate::aggregate;
        match self {
            SlotState::Events(q) => aggregate(agg, false, q.iter().map(|m| (m, 1))),
            SlotState::Possessions(q) | SlotState::GameClock(q) => {
                aggregate(agg, false, q.iter().map(|(_, m)| (m, 1)))
            }
            SlotState::Game(members) => aggregate(agg, false, members.iter().map(|m| (m, 1))),
            SlotState::Session { .. } => None,
        }
    }
}

/// One game's window state for one pipeline.
#[derive(Clone, Debug)]
pub struct GameAssigner {
    key: GameKey,
    id: GameId,
    home_score: u32,
    away_score: u32,
    possession: u64,
    last_team: Option<String>,
    clock_ms: u64,
    last_seq: Option<u64>,
    /// Seq numbers skipped, duplicates, score decreases, below the high (0/1), corrections.
    health: [u64; 5],
    /// The highest scores since the last correction.
    high: (u32, u32),
    /// Whether the game's first `game_end` (and so its result) has been seen.
    ended: bool,
    /// Whether the game's key has been sent ([`Fact::Game`]).
    named: bool,
    /// Effective time of the latest event, and the latest time a member is scheduled to leave
    /// its window at: the game's state can change until then.
    last_time: u64,
    horizon: u64,
    /// The time the game's key is retracted at ([`Self::closes_at`] when last computed).
    scheduled: Option<u64>,
    slots: FxHashMap<(u32, Entity), SlotState>,
    /// The current value of every fact slot that has one.
    facts: FxHashMap<(u32, Entity), F64>,
    /// Scratch: the fact windows an event changed.
    touched: Vec<(u32, Entity)>,
    vars: EventVars,
}

fn retract(out: &mut Vec<Update>, slot: &Slot, m: Member, t: u64) {
    out.push((slot.clone(), m, t, -1));
}

impl GameAssigner {
    pub fn new(plan: &Plan, key: GameKey) -> Self {
        GameAssigner {
            id: game_id(&key),
            key,
            home_score: 0,
            away_score: 0,
            possession: 0,
            last_team: None,
            clock_ms: 0,
            last_seq: None,
            health: [0; 5],
            high: (0, 0),
            ended: false,
            named: false,
            last_time: 0,
            horizon: 0,
            scheduled: None,
            slots: FxHashMap::default(),
            facts: FxHashMap::default(),
            touched: Vec::new(),
            vars: EventVars::new(plan),
        }
    }

    fn slot(&self, feature: u32, entity: Entity) -> Slot {
        Slot {
            game: self.id,
            entity,
            feature,
        }
    }

    /// Sets a fact slot to `value` at `t` (`None`: no value, the feature's default applies):
    /// its old value retracted, the new one inserted; nothing when it is unchanged.
    fn set(&mut self, feature: u32, entity: Entity, value: Option<f64>, t: u64, out: &mut Updates) {
        let value = value.map(F64::new);
        let key = (feature, entity);
        let old = match value {
            Some(v) => self.facts.insert(key.clone(), v),
            None => self.facts.remove(&key),
        };
        if old == value {
            return;
        }
        let slot = self.slot(key.0, key.1);
        if let Some(old) = old {
            out.facts.push((Fact::Value(slot.clone(), old), t, -1));
        }
        if let Some(v) = value {
            out.facts.push((Fact::Value(slot, v), t, 1));
        }
    }

    /// Moves a feed-health counter to `value` at `t` (the slot is absent while 0).
    fn health(&mut self, k: usize, value: u64, t: u64, out: &mut Updates) {
        if self.health[k] == value {
            return;
        }
        let feature = [
            META_GAPS,
            META_DUPS,
            META_DROPS,
            META_BELOW,
            META_CORRECTIONS,
        ][k];
        self.set(feature, Entity::Game, Some(value as f64), t, out);
        self.health[k] = value;
    }

    /// When the game's state can be released: once it has ended, `retention` after its latest
    /// event, and after its last scheduled window change (a change at the release time itself
    /// would go unpublished: the scoring stage forgets the game then). `None` while it is on.
    pub fn closes_at(&self, retention_ms: u64) -> Option<u64> {
        self.ended.then(|| {
            self.last_time
                .saturating_add(retention_ms)
                .max(self.horizon.saturating_add(1))
        })
    }

    /// Keeps the game's key retraction at [`Self::closes_at`]: scheduled when the game ends,
    /// moved (the old one cancelled) when a later event moves it. The scoring stage forgets the
    /// game at that time, the same in every run, whenever the engine gets to release it.
    fn schedule_close(&mut self, plan: &Plan, out: &mut Updates) {
        let at = self.closes_at(plan.time.retention.as_millis() as u64);
        if at == self.scheduled {
            return;
        }
        if let Some(old) = self.scheduled {
            out.facts
                .push((Fact::Game(self.id, self.key.clone()), old, 1));
        }
        if let Some(at) = at {
            out.facts
                .push((Fact::Game(self.id, self.key.clone()), at, -1));
        }
        self.scheduled = at;
    }

    /// Releases the game's state at `t` (at or after [`Self::closes_at`], where its key's
    /// retraction is already scheduled): the window members it still holds in the dataflow's
    /// `reduce` are retracted. Its facts are not kept by the dataflow (only the scoring stage
    /// holds them, and it forgets the game with its key).
    pub fn close(self, t: u64, out: &mut Updates) {
        // Sessions' members leave only when the next session starts; time-driven windows'
        // members have left by the horizon.
        for ((feature, entity), state) in self.slots {
            if let SlotState::Session { members, .. } = state {
                let slot = Slot {
                    game: self.id,
                    entity,
                    feature,
                };
                for m in members {
                    retract(&mut out.members, &slot, m, t);
                }
            }
        }
    }

    /// A record repeated a seq already accepted (it was rejected as a duplicate): counted at
    /// `t`, or at the game's latest event if that is later (a resend carries an old event
    /// time; a count must not move back in time, nor past the game's release), for the
    /// feed-health detectors.
    pub fn note_duplicate(&mut self, t: u64, out: &mut Updates) {
        let t = t.max(self.last_time);
        if self.scheduled.is_some_and(|at| t >= at) {
            return;
        }
        let dups = self.health[1] + 1;
        self.health(1, dups, t, out);
    }

    /// Applies an accepted event at effective time `t`, appending its updates to `out`.
    pub fn apply(
        &mut self,
        plan: &Plan,
        ev: &GameEvent,
        t: u64,
        ingest_ms: u64,
        out: &mut Updates,
    ) {
        self.last_time = self.last_time.max(t);
        if !self.named {
            self.named = true;
            out.facts
                .push((Fact::Game(self.id, self.key.clone()), t, 1));
        }
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
        // Fact windows whose members changed at this event: their aggregates are set after.
        let mut touched = std::mem::take(&mut self.touched);
        for ((f, entity), state) in self.slots.iter_mut() {
            let expired = match (state, plan.features[*f as usize].window) {
                (SlotState::Possessions(q), Window::Possessions { count }) => {
                    let before = q.len();
                    q.retain(|(p, _)| p + (count as u64) > possession);
                    q.len() != before
                }
                (SlotState::GameClock(q), Window::GameClock { size }) => {
                    let before = q.len();
                    q.retain(|(e, _)| e + size > now_clock);
                    q.len() != before
                }
                _ => false,
            };
            if expired {
                touched.push((*f, entity.clone()));
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
            let out = &mut out.members;
            match f.window {
                Window::Tumbling { size } => {
                    let end = (t / size + 1).saturating_mul(size);
                    out.push((slot.clone(), m, t, 1));
                    retract(out, &slot, m, end);
                    self.horizon = self.horizon.max(end);
                }
                Window::Hopping { size, slide } => {
                    let c = t.div_ceil(slide).saturating_mul(slide);
                    out.push((slot.clone(), m, c, 1));
                    retract(out, &slot, m, c.saturating_add(size));
                    self.horizon = self.horizon.max(c.saturating_add(size));
                }
                Window::Sliding { size } => {
                    out.push((slot.clone(), m, t, 1));
                    retract(out, &slot, m, t.saturating_add(size));
                    self.horizon = self.horizon.max(t.saturating_add(size));
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
                        self.horizon = self.horizon.max(t.saturating_add(gap));
                    }
                }
                Window::Events { count } => {
                    let state = self
                        .slots
                        .entry((i as u32, entity.clone()))
                        .or_insert_with(|| SlotState::Events(VecDeque::new()));
                    if let SlotState::Events(q) = state {
                        q.push_back(m);
                        while q.len() > count as usize {
                            q.pop_front();
                        }
                    }
                    touched.push((i as u32, entity));
                }
                Window::Possessions { .. } => {
                    self.slots
                        .entry((i as u32, entity.clone()))
                        .or_insert_with(|| SlotState::Possessions(VecDeque::new()))
                        .push(possession, m);
                    touched.push((i as u32, entity));
                }
                Window::GameClock { .. } => {
                    self.slots
                        .entry((i as u32, entity.clone()))
                        .or_insert_with(|| SlotState::GameClock(VecDeque::new()))
                        .push(now_clock, m);
                    touched.push((i as u32, entity));
                }
                Window::Game => {
                    let state = self
                        .slots
                        .entry((i as u32, entity.clone()))
                        .or_insert_with(|| SlotState::Game(Vec::new()));
                    if let SlotState::Game(members) = state {
                        members.push(m);
                    }
                    touched.push((i as u32, entity));
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for (f, entity) in touched.drain(..) {
            let agg = plan.features[f as usize].aggregate;
            let value = self
                .slots
                .get(&(f, entity.clone()))
                .and_then(|state| state.aggregate(agg));
            self.set(f, entity, value, t, out);
        }
        self.touched = touched;

        // Bookkeeping: the game's latest event.
        self.set(META_SEQ, Entity::Game, Some(ev.seq as f64), t, out);
        self.set(META_INGEST, Entity::Game, Some(ingest_ms as f64), t, out);
        self.set(META_AT, Entity::Game, Some(t as f64), t, out);
        if ev.kind == crate::event::EventKind::GameEnd && !self.ended {
            self.ended = true;
            self.set(META_RESULT, Entity::Game, Some(ev.home_result()), t, out);
        }
        if skipped > 0 {
            let gaps = self.health[0] + skipped;
            self.health(0, gaps, t, out);
        }
        if dropped {
            let drops = self.health[2] + 1;
            self.health(2, drops, t, out);
        }
        self.health(3, below, t, out);
        if correction {
            let corrections = self.health[4] + 1;
            self.health(4, corrections, t, out);
        }
        self.schedule_close(plan, out);
    }
}
