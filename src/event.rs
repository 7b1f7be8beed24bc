//! The sport-neutral event model: what a producer writes to a Kafka topic, one JSON object per
//! record. `schemas/game_event.schema.json` is generated from these types (`sideline schema`).

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The sports sideline knows. A record naming another sport is rejected (`unknown_sport`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Sport {
    Nfl,
    Soccer,
    Nba,
    Nhl,
    Mlb,
    Cricket,
}

impl Sport {
    pub fn as_str(self) -> &'static str {
        match self {
            Sport::Nfl => "nfl",
            Sport::Soccer => "soccer",
            Sport::Nba => "nba",
            Sport::Nhl => "nhl",
            Sport::Mlb => "mlb",
            Sport::Cricket => "cricket",
        }
    }
}

impl fmt::Display for Sport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened. A record naming another kind is rejected (`unknown_kind`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The game is on: teams known, score 0-0, clock at the start of period 1.
    GameStart,
    /// A play (NFL: a snap, kickoff, punt, field goal or extra point; scoring plays included,
    /// with the score after the play in `home_score`/`away_score`).
    Play,
    /// A timeout, or another stoppage that changes no score.
    Timeout,
    /// The end of a period (quarter, half, inning, ...).
    PeriodEnd,
    /// The final whistle: `home_score`/`away_score` are the final score.
    GameEnd,
    /// A clock-only update (the game clock moved, nothing else did).
    Clock,
    /// A market quote; the quote is in `odds`.
    Odds,
    /// A correction: the feed fixes earlier data; `home_score`/`away_score` are the corrected
    /// score (which may be lower than the last one reported).
    Correction,
}

/// A bookmaker's or exchange's prices for the match result, as decimal odds (2.5 = evens + 150%).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OddsQuote {
    /// Who quoted the prices (a bookmaker or exchange name).
    pub source: String,
    /// Decimal price for a home win.
    pub home_price: f64,
    /// Decimal price for an away win.
    pub away_price: f64,
    /// Decimal price for a draw, where the sport has draws.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draw_price: Option<f64>,
}

/// One fact about one game. The identity of an event is (`sport`, `game_id`, `seq`); within a game
/// `seq` rises strictly and `event_time_ms` never falls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GameEvent {
    pub sport: Sport,
    /// The game's id, unique within the sport (NFL: GameCenter eid such as `2018090600`).
    pub game_id: String,
    /// Per-game sequence number, strictly increasing within the game.
    pub seq: u64,
    /// Event time in milliseconds since the Unix epoch. Windows and watermarks run on it.
    pub event_time_ms: u64,
    /// Period (quarter, half, inning); overtime periods continue the count (NFL OT = 5).
    pub period: u32,
    /// Game clock in milliseconds, by sport: NFL, NBA and NHL count **down** (ms left in the
    /// period); soccer counts **up** (ms played in the period, added time included); MLB and
    /// cricket have no game clock (always 0).
    pub clock_ms: u64,
    pub kind: EventKind,
    /// Home team code.
    pub home: String,
    /// Away team code.
    pub away: String,
    /// The team the event belongs to (NFL: the team in possession).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The main player of the event, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player: Option<String>,
    /// Home score after the event.
    pub home_score: u32,
    /// Away score after the event.
    pub away_score: u32,
    /// Sport-specific numbers. NFL: `down`, `distance` (yards to go), `yards_to_goal` (from the
    /// line of scrimmage to the defending end zone), `yards_gained`. Other sports: the module
    /// pages of `import::soccer`, `import::betfair` (cricket) and `simulate::{nba,nhl,mlb}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stats: BTreeMap<String, f64>,
    /// A market quote, on `odds` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub odds: Option<OddsQuote>,
    /// Free text from the feed, for people reading deltas (NFL: the play description).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The key every per-game state hangs on.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct GameKey {
    pub sport: Sport,
    pub game_id: String,
}

impl GameEvent {
    /// The game's result from the home team's side by this event's score: 1 ahead, 0
    /// behind, 0.5 level (a game's label, from its `game_end`).
    pub fn home_result(&self) -> f64 {
        match self.home_score.cmp(&self.away_score) {
            std::cmp::Ordering::Greater => 1.0,
            std::cmp::Ordering::Less => 0.0,
            std::cmp::Ordering::Equal => 0.5,
        }
    }

    pub fn key(&self) -> GameKey {
        GameKey {
            sport: self.sport,
            game_id: self.game_id.clone(),
        }
    }

    /// A stat by name, 0 when absent.
    pub fn stat(&self, name: &str) -> f64 {
        self.stats.get(name).copied().unwrap_or(0.0)
    }
}

/// The JSON Schema of [`GameEvent`], as committed in `schemas/game_event.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(GameEvent);
    let mut text = serde_json::to_string_pretty(&schema).expect("schema serialises");
    text.push('\n');
    text
}
