//! Training rows from GameEvent JSON lines, computed by a pipeline: one labelled row per event
//! of a game, holding the model inputs exactly as the live engine feeds them to the model.
//!
//! A game's events are taken in `seq` order up to its `game_end`, each at its own event time
//! (the engine's effective time when nothing is late). After each event, at its time (events
//! sharing a time give one row: the state subscribers see), the row is
//!
//! 1. the value of every game and team window feature, from [`reference::Evaluated`], the
//!    brute-force recomputation the dataflow's aggregates are held to, bit for bit
//!    (`tests/windows_reference.rs`);
//! 2. the variables: features' defaults, window values, then derived features, by the engine's
//!    own [`variables`];
//! 3. the model inputs: the variables the plan feeds its registry model
//!    ([`ModelPlan::Registry`]), cast to f32, as [`Model::score`](crate::dataflow::Model::score)
//!    does.
//!
//! So the trainer and the engine share the pipeline file and the code from window values on:
//! there is no train/serve skew. The label is the game's result from the home team's side: 1
//! win, 0 loss, 0.5 tie. A game without a `game_end` event has no result: it is skipped and
//! counted.
//!
//! **Season 2019 is held out.** It is the project's test season (August 2019 to February
//! 2020): the trainer refuses any input holding one of its games, rather than skip it, so it
//! can neither be trained on nor tuned against by accident. See [`season_of`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::dataflow::score::{variables, Row};
use crate::event::{EventKind, GameEvent, Sport};
use crate::pipeline::plan::{ModelPlan, Plan};
use crate::pipeline::reference;
use crate::pipeline::spec::GroupBy;
use crate::pipeline::window::{Entity, F64};

/// The held-out season.
pub const HELD_OUT_SEASON: u32 = 2019;

/// One training or evaluation row.
#[derive(Clone, Debug, PartialEq)]
pub struct LabeledRow {
    pub game_id: String,
    /// Event time of the event after which the inputs hold.
    pub time_ms: u64,
    /// The model inputs, in [`ModelInputs`] order.
    pub inputs: Vec<f32>,
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
    /// Two events of a game with the same `seq`, or an event time that goes backwards (bad
    /// input: the engine would not accept the game this way either).
    #[error("game {game_id}: event seq {seq} repeats a seq or goes back in event time")]
    Order { game_id: String, seq: u64 },
    /// The pipeline cannot give model inputs (bad input: the pipeline or the model).
    #[error("pipeline `{pipeline}`: {message}")]
    Pipeline { pipeline: String, message: String },
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
            DataError::Order { .. } => "data_bad_order",
            DataError::Pipeline { .. } => "data_bad_pipeline",
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

/// FNV-1a (64 bits) of a pipeline file's text, as 16 hex digits: what manifests and cached
/// matrices record of the pipeline they come from. Stable across builds and platforms.
pub fn pipeline_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The model inputs a pipeline computes: their names and the variables (indices into
/// `Plan::vars`) that feed them, in the model's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInputs {
    pub names: Vec<String>,
    pub vars: Vec<usize>,
}

impl ModelInputs {
    /// The inputs of the registry model the pipeline's `[model]` names, exactly as the engine
    /// feeds it ([`ModelPlan::Registry`]; the names come from that model's manifest).
    pub fn of_plan(plan: &Plan) -> Result<Self, DataError> {
        let ModelPlan::Registry { inputs, .. } = &plan.model else {
            return Err(DataError::Pipeline {
                pipeline: plan.name.clone(),
                message: "its [model] is a formula; the trainer fits a registry model \
                          (`name`, `version`) whose manifest lists the inputs"
                    .into(),
            });
        };
        Ok(ModelInputs {
            names: inputs.iter().map(|i| plan.vars[*i].clone()).collect(),
            vars: inputs.clone(),
        })
    }

    /// Inputs by name: each must be one of the pipeline's variables (a window or derived
    /// feature, team features as `name.home` / `name.away`).
    pub fn by_name(plan: &Plan, names: &[String]) -> Result<Self, DataError> {
        let vars = names
            .iter()
            .map(|n| {
                plan.vars
                    .iter()
                    .position(|v| v == n)
                    .ok_or_else(|| DataError::Pipeline {
                        pipeline: plan.name.clone(),
                        message: format!(
                            "the model reads `{n}`, which the pipeline does not produce"
                        ),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(ModelInputs {
            names: names.to_vec(),
            vars,
        })
    }

    /// The inputs out of a row of variables, as the engine casts them.
    pub fn pick(&self, vars: &[f64]) -> Vec<f32> {
        self.vars.iter().map(|i| vars[*i] as f32).collect()
    }
}

/// The game and team window features of one game as of `at`, as the engine's row holds them.
pub fn row_at(evaluated: &reference::Evaluated<'_>, plan: &Plan, at: u64) -> Row {
    let mut row: Row = Vec::new();
    for (i, f) in plan.features.iter().enumerate() {
        let entities: &[Entity] = match f.group {
            GroupBy::Game => &[Entity::Game],
            GroupBy::Team => &[Entity::Home, Entity::Away],
            GroupBy::Player => &[],
        };
        for e in entities {
            if let Some(v) = evaluated.slot_value(i, e, at) {
                row.push((e.clone(), i as u32, F64::new(v)));
            }
        }
    }
    row.sort();
    row
}

/// One game's variables (in `Plan::vars` order) after each of its events, at the event's time:
/// `(time, variables)`, one per distinct event time. `events`: the game's events in `seq`
/// order, taken at their event times.
pub fn game_variables(
    plan: &Plan,
    events: &[GameEvent],
) -> Result<Vec<(u64, Vec<f64>)>, DataError> {
    for w in events.windows(2) {
        if w[1].seq <= w[0].seq || w[1].event_time_ms < w[0].event_time_ms {
            return Err(DataError::Order {
                game_id: w[1].game_id.clone(),
                seq: w[1].seq,
            });
        }
    }
    let timed: Vec<(GameEvent, u64)> = events
        .iter()
        .map(|e| (e.clone(), e.event_time_ms))
        .collect();
    let evaluated = reference::Evaluated::new(plan, &timed);
    let mut times: Vec<u64> = events.iter().map(|e| e.event_time_ms).collect();
    times.dedup();
    Ok(times
        .into_iter()
        .map(|t| (t, variables(plan, &row_at(&evaluated, plan, t)).0))
        .collect())
}

/// One game's labelled rows, or `None` when it has no `game_end`.
pub fn game_rows(
    plan: &Plan,
    inputs: &ModelInputs,
    events: &[GameEvent],
) -> Result<Option<Vec<LabeledRow>>, DataError> {
    let Some(end) = events.iter().find(|e| e.kind == EventKind::GameEnd) else {
        return Ok(None);
    };
    let label = end.home_result();
    let upto: Vec<GameEvent> = events
        .iter()
        .take_while(|e| e.seq <= end.seq)
        .cloned()
        .collect();
    let rows = game_variables(plan, &upto)?
        .into_iter()
        .map(|(time_ms, vars)| LabeledRow {
            game_id: end.game_id.clone(),
            time_ms,
            inputs: inputs.pick(&vars),
            label,
        })
        .collect();
    Ok(Some(rows))
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

/// A range of seasons, `2009-2015` or `2016`, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeasonRange {
    pub from: u32,
    pub to: u32,
}

impl SeasonRange {
    pub fn contains(&self, season: u32) -> bool {
        (self.from..=self.to).contains(&season)
    }
}

impl std::str::FromStr for SeasonRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (from, to) = s.split_once('-').unwrap_or((s, s));
        let year = |y: &str| {
            y.trim().parse::<u32>().map_err(|_| {
                format!("`{s}`: expected a season like 2016 or a range like 2009-2015")
            })
        };
        let (from, to) = (year(from)?, year(to)?);
        if from > to {
            return Err(format!("`{s}`: the range ends before it starts"));
        }
        Ok(SeasonRange { from, to })
    }
}

impl RowSet {
    /// The rows of the games of `range`'s seasons.
    pub fn only(self, range: &SeasonRange) -> RowSet {
        let keep = |r: &LabeledRow| season_of(&r.game_id).is_some_and(|s| range.contains(s));
        RowSet::new(
            self.rows.into_iter().filter(keep).collect(),
            self.skipped_games,
        )
    }

    /// `rows`, counting their games.
    pub fn new(rows: Vec<LabeledRow>, skipped_games: usize) -> RowSet {
        let games = rows
            .iter()
            .map(|r| r.game_id.as_str())
            .collect::<BTreeSet<_>>()
            .len();
        RowSet {
            rows,
            games,
            skipped_games,
        }
    }

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

/// Rows of all games in `games`.
pub fn rows_of_games(
    plan: &Plan,
    inputs: &ModelInputs,
    games: &BTreeMap<String, Vec<GameEvent>>,
) -> Result<RowSet, DataError> {
    let mut set = RowSet::default();
    for (game_id, events) in games {
        guard_season(game_id)?;
        match game_rows(plan, inputs, events)? {
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
pub fn rows_from_jsonl(
    plan: &Plan,
    inputs: &ModelInputs,
    path: &Path,
) -> Result<RowSet, DataError> {
    rows_of_games(plan, inputs, &read_games(path)?)
}
