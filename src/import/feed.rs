//! What the multi-sport importers and the simulator share: reading input files, building
//! events, ordering a feed and writing it as JSON lines.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::event::{EventKind, GameEvent, Sport};

/// Errors of the soccer and Betfair importers. Every one is bad input, not retryable.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {detail}")]
    Data { path: PathBuf, detail: String },
}

impl FeedError {
    /// A stable code for logs and reports.
    pub fn code(&self) -> &'static str {
        match self {
            FeedError::Io { .. } => "import_io",
            FeedError::Json { .. } => "import_bad_json",
            FeedError::Data { .. } => "import_bad_data",
        }
    }

    pub(crate) fn data(path: &Path, detail: impl Into<String>) -> Self {
        FeedError::Data {
            path: path.to_owned(),
            detail: detail.into(),
        }
    }
}

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, FeedError> {
    std::fs::read(path).map_err(|source| FeedError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads a whole JSON document.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, FeedError> {
    serde_json::from_slice(&read(path)?).map_err(|source| FeedError::Json {
        path: path.to_owned(),
        source,
    })
}

/// Milliseconds since the Unix epoch of a UTC date and time.
pub fn utc_ms(year: i32, month: u32, day: u32, hour: u32, minute: u32) -> u64 {
    let days = crate::import::nfl::days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour) * 3_600 + i64::from(minute) * 60;
    u64::try_from(secs).expect("date after 1970") * 1_000
}

/// Builds one game's events: `seq` from 1, event time never falling (a time below the previous
/// event's is raised to it), and the running score.
#[derive(Clone, Debug)]
pub(crate) struct GameFeed {
    pub sport: Sport,
    pub game_id: String,
    pub home: String,
    pub away: String,
    pub home_score: u32,
    pub away_score: u32,
    last_time: u64,
    pub events: Vec<GameEvent>,
}

impl GameFeed {
    pub fn new(sport: Sport, game_id: &str, home: &str, away: &str) -> Self {
        GameFeed {
            sport,
            game_id: game_id.to_owned(),
            home: home.to_owned(),
            away: away.to_owned(),
            home_score: 0,
            away_score: 0,
            last_time: 0,
            events: Vec::new(),
        }
    }

    /// Appends an event with the current score; returns it for the optional fields.
    pub fn push(&mut self, kind: EventKind, time: u64, period: u32, clock: u64) -> &mut GameEvent {
        let time = time.max(self.last_time);
        self.last_time = time;
        self.events.push(GameEvent {
            sport: self.sport,
            game_id: self.game_id.clone(),
            seq: self.events.len() as u64 + 1,
            event_time_ms: time,
            period,
            clock_ms: clock,
            kind,
            home: self.home.clone(),
            away: self.away.clone(),
            team: None,
            player: None,
            home_score: self.home_score,
            away_score: self.away_score,
            stats: BTreeMap::new(),
            odds: None,
            description: None,
        });
        self.events.last_mut().expect("just pushed")
    }
}

/// Sets stats from `(name, value)` pairs.
pub(crate) fn set_stats(e: &mut GameEvent, stats: &[(&str, f64)]) {
    for (k, v) in stats {
        e.stats.insert((*k).to_owned(), *v);
    }
}

/// Orders events of several games as a live feed: by `(event_time_ms, game_id, seq)`.
pub fn interleave(events: &mut [GameEvent]) {
    events.sort_by(|a, b| {
        (a.event_time_ms, &a.game_id, a.seq).cmp(&(b.event_time_ms, &b.game_id, b.seq))
    });
}

/// One `serde_json::to_string(&event)` per line, as the fixtures are written.
pub fn to_jsonl(events: &[GameEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    crate::import::nfl::write_jsonl(events, &mut out).expect("writing to memory");
    out
}

/// Writes the events to `out` (`-` or absent: stdout).
pub fn write_events(events: &[GameEvent], out: Option<&Path>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    match out {
        Some(path) if path != Path::new("-") => {
            let file =
                File::create(path).with_context(|| format!("creating {}", path.display()))?;
            let mut w = BufWriter::new(file);
            w.write_all(&to_jsonl(events))
                .and_then(|()| w.flush())
                .with_context(|| format!("writing {}", path.display()))
        }
        _ => {
            let mut w = io::stdout().lock();
            w.write_all(&to_jsonl(events))
                .and_then(|()| w.flush())
                .context("writing stdout")
        }
    }
}
