//! Training rows from GameEvent JSON lines: one labelled row per feature change of a game.
//!
//! Rows are the game's [`timeline_of`] (exactly the vectors the live engine computes, so there
//! is no train/serve skew), from the first event up to and including `game_end`. The label is
//! the game's result from the home team's side: 1 win, 0 loss, 0.5 tie. A game without a
//! `game_end` event has no result: it is skipped and counted.
//!
//! **Season 2019 is held out.** It is the project's test season (August 2019 to February
//! 2020): the trainer refuses any input holding one of its games, rather than skip it, so it
//! can neither be trained on nor tuned against by accident. See [`season_of`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::event::{EventKind, GameEvent, Sport};
use crate::features::offline::timeline_of;
use crate::features::{FeatureVec, FEATURE_SLOTS};

/// The held-out season.
pub const HELD_OUT_SEASON: u32 = 2019;

/// One training or evaluation row. The meta slots of `features` are cleared (0).
#[derive(Clone, Debug, PartialEq)]
pub struct LabeledRow {
    pub game_id: String,
    /// Event time from which the features hold.
    pub time_ms: u64,
    pub features: FeatureVec,
    /// 1 home win, 0 home loss, 0.5 tie.
    pub label: f64,
}

/// Why training data cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line is not a GameEvent (bad input).
    #[error("{path}:{line}: not a GameEvent: {source}")]
    Json {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
    /// An event of another sport (bad input: the trainer fits the NFL model).
    #[error("game {game_id}: sport {sport} (the trainer reads NFL events only)")]
    Sport { game_id: String, sport: Sport },
    /// A game of the held-out season (bad input: refused on purpose).
    #[error(
        "game {game_id} belongs to season {HELD_OUT_SEASON}, the held-out test season: \
         it must never be trained or tuned on (import only seasons 2009-2018)"
    )]
    HeldOutSeason { game_id: String },
    /// An Arrow file of the wrong shape (bad input) or an Arrow failure.
    #[error("arrow file {path}: {message}")]
    Arrow { path: PathBuf, message: String },
}

impl DataError {
    /// A stable code for logs.
    pub fn code(&self) -> &'static str {
        match self {
            DataError::Io { .. } => "data_io",
            DataError::Json { .. } => "data_bad_event",
            DataError::Sport { .. } => "data_wrong_sport",
            DataError::HeldOutSeason { .. } => "data_held_out_season",
            DataError::Arrow { .. } => "data_bad_arrow",
        }
    }
}

/// The NFL season of a GameCenter eid (`YYYYMMDDgg`): games from March to December belong to
/// that year's season, January and February games to the previous one. `None` when the id
/// does not start with a date.
pub fn season_of(game_id: &str) -> Option<u32> {
    let digits = game_id.get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: u32 = digits[..4].parse().ok()?;
    let month: u32 = digits[4..6].parse().ok()?;
    match month {
        1 | 2 => Some(year - 1),
        3..=12 => Some(year),
        _ => None,
    }
}

/// Refuses a game of the held-out season.
pub fn guard_season(game_id: &str) -> Result<(), DataError> {
    if season_of(game_id) == Some(HELD_OUT_SEASON) {
        return Err(DataError::HeldOutSeason {
            game_id: game_id.to_string(),
        });
    }
    Ok(())
}

/// Rows of a set of games, with what was skipped.
#[derive(Clone, Debug, Default)]
pub struct RowSet {
    pub rows: Vec<LabeledRow>,
    /// Games that produced rows.
    pub games: usize,
    /// Games without a `game_end` event.
    pub skipped_games: usize,
}

impl RowSet {
    /// The distinct seasons of the rows' games.
    pub fn seasons(&self) -> Vec<u32> {
        let set: BTreeSet<u32> = self
            .rows
            .iter()
            .filter_map(|r| season_of(&r.game_id))
            .collect();
        set.into_iter().collect()
    }
}

/// Reads GameEvent JSON lines (games may be interleaved), refusing held-out-season games
/// as soon as one is seen, and returns the events grouped by game, each in `seq` order.
pub fn read_games(path: &Path) -> Result<BTreeMap<String, Vec<GameEvent>>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut games: BTreeMap<String, Vec<GameEvent>> = BTreeMap::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let ev: GameEvent = serde_json::from_str(&line).map_err(|source| DataError::Json {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
        guard_season(&ev.game_id)?;
        if ev.sport != Sport::Nfl {
            return Err(DataError::Sport {
                game_id: ev.game_id,
                sport: ev.sport,
            });
        }
        games.entry(ev.game_id.clone()).or_default().push(ev);
    }
    for events in games.values_mut() {
        events.sort_by_key(|e| e.seq);
    }
    Ok(games)
}

/// One game's labelled rows, or `None` when it has no `game_end`.
pub fn game_rows(events: &[GameEvent]) -> Option<Vec<LabeledRow>> {
    let end = events.iter().find(|e| e.kind == EventKind::GameEnd)?;
    let label = match end.home_score.cmp(&end.away_score) {
        std::cmp::Ordering::Greater => 1.0,
        std::cmp::Ordering::Less => 0.0,
        std::cmp::Ordering::Equal => 0.5,
    };
    let upto: Vec<GameEvent> = events
        .iter()
        .take_while(|e| e.seq <= end.seq)
        .cloned()
        .collect();
    let rows = timeline_of(&upto)
        .into_iter()
        .filter(|(t, _)| *t <= end.event_time_ms)
        .map(|(time_ms, mut features)| {
            features.0[FEATURE_SLOTS..].fill(0);
            LabeledRow {
                game_id: end.game_id.clone(),
                time_ms,
                features,
                label,
            }
        })
        .collect();
    Some(rows)
}

/// Rows of all games in `games`.
pub fn rows_of_games(games: &BTreeMap<String, Vec<GameEvent>>) -> Result<RowSet, DataError> {
    let mut set = RowSet::default();
    for (game_id, events) in games {
        guard_season(game_id)?;
        match game_rows(events) {
            Some(rows) => {
                set.games += 1;
                set.rows.extend(rows);
            }
            None => set.skipped_games += 1,
        }
    }
    Ok(set)
}

/// Rows of a GameEvent JSON lines file.
pub fn rows_from_jsonl(path: &Path) -> Result<RowSet, DataError> {
    rows_of_games(&read_games(path)?)
}
