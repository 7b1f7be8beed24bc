//! The directory importer and the `sideline import nfl` command.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{import_game, score_correction, GameDoc, ImportError, ScheduleEntry, SeasonType};
use crate::event::GameEvent;

#[derive(Deserialize)]
struct ScheduleFile {
    games: Vec<(String, ScheduleEntry)>,
}

/// Reads `schedule.json` (`{"games": [[eid, {...}], ...]}`) into a map by eid.
pub fn load_schedule(path: &Path) -> Result<BTreeMap<String, ScheduleEntry>, ImportError> {
    let text = std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.to_owned(),
        source,
    })?;
    let file: ScheduleFile =
        serde_json::from_slice(&text).map_err(|source| ImportError::Schedule {
            path: path.to_owned(),
            source,
        })?;
    Ok(file.games.into_iter().collect())
}

/// Which games to import. `None` means no filter.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub seasons: Option<BTreeSet<u32>>,
    /// Season types to keep; empty keeps all.
    pub season_types: BTreeSet<SeasonType>,
    pub weeks: Option<BTreeSet<u32>>,
    pub games: Option<BTreeSet<String>>,
    /// At most this many games (the first ones by eid, after the other filters).
    pub limit: Option<usize>,
}

impl Selection {
    fn keeps(&self, s: &ScheduleEntry) -> bool {
        self.seasons.as_ref().is_none_or(|x| x.contains(&s.season))
            && (self.season_types.is_empty() || self.season_types.contains(&s.season_type))
            && self.weeks.as_ref().is_none_or(|x| x.contains(&s.week))
            && self.games.as_ref().is_none_or(|x| x.contains(&s.eid))
    }
}

/// A game whose rebuilt final differed from the official one (`(home, away)` pairs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScoreCorrection {
    pub game_id: String,
    pub rebuilt: (u32, u32),
    pub official: (u32, u32),
}

/// What a directory import did.
#[derive(Clone, Debug, Default)]
pub struct ImportReport {
    /// Games converted.
    pub games: usize,
    /// Events written.
    pub events: usize,
    /// Selected files that could not be read or parsed (eid and reason), skipped.
    pub unreadable: Vec<(String, String)>,
    /// Files whose eid is not in schedule.json, skipped.
    pub not_in_schedule: Vec<String>,
    /// Games whose final score had to be corrected at `game_end`.
    pub corrections: Vec<ScoreCorrection>,
}

impl ImportReport {
    /// Share of imported games whose rebuilt final matched the official one.
    pub fn match_rate(&self) -> f64 {
        if self.games == 0 {
            return 1.0;
        }
        1.0 - self.corrections.len() as f64 / self.games as f64
    }
}

fn read_game(path: &Path) -> Result<GameDoc, ImportError> {
    let io_err = |source| ImportError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
    } else {
        io::BufReader::new(file)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
    }
    GameDoc::from_slice(&bytes).map_err(|source| ImportError::Document {
        path: path.to_owned(),
        source,
    })
}

/// Imports the selected games of `data_dir` (holding `schedule.json` and `gamecenter-json/`).
/// Returns all events sorted by `(event_time_ms, game_id, seq)`: an interleaved live feed.
/// Unreadable files are skipped with a warning and listed in the report.
pub fn import_dir(
    data_dir: &Path,
    selection: &Selection,
) -> Result<(Vec<GameEvent>, ImportReport), ImportError> {
    let schedule = load_schedule(&data_dir.join("schedule.json"))?;
    let games_dir = data_dir.join("gamecenter-json");
    let listing = std::fs::read_dir(&games_dir).map_err(|source| ImportError::Io {
        path: games_dir.clone(),
        source,
    })?;
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for entry in listing {
        let entry = entry.map_err(|source| ImportError::Io {
            path: games_dir.clone(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(eid) = name
            .strip_suffix(".json.gz")
            .or_else(|| name.strip_suffix(".json"))
        {
            files.insert(eid.to_owned(), entry.path());
        }
    }

    let mut report = ImportReport::default();
    let mut selected = Vec::new();
    for (eid, path) in &files {
        match schedule.get(eid) {
            Some(s) if selection.keeps(s) => selected.push((s, path)),
            Some(_) => {}
            None => {
                tracing::warn!(game = %eid, "not in schedule.json; skipped");
                report.not_in_schedule.push(eid.clone());
            }
        }
    }
    if let Some(limit) = selection.limit {
        selected.truncate(limit);
    }

    let mut events = Vec::new();
    for (sched, path) in selected {
        let doc = match read_game(path) {
            Ok(doc) => doc,
            Err(e) => {
                tracing::warn!(game = %sched.eid, error = %e, code = e.code(), "unreadable; skipped");
                report.unreadable.push((sched.eid.clone(), e.to_string()));
                continue;
            }
        };
        let game = import_game(&doc, sched)?;
        if let Some((rebuilt, official)) = score_correction(&game) {
            report.corrections.push(ScoreCorrection {
                game_id: sched.eid.clone(),
                rebuilt,
                official,
            });
        }
        report.games += 1;
        events.extend(game);
    }
    events.sort_by(|a, b| {
        (a.event_time_ms, &a.game_id, a.seq).cmp(&(b.event_time_ms, &b.game_id, b.seq))
    });
    report.events = events.len();
    Ok((events, report))
}

/// Writes one `serde_json::to_string(&event)` per line.
pub fn write_jsonl<W: Write>(events: &[GameEvent], mut out: W) -> io::Result<()> {
    for e in events {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Parses `2017,2018`, `2009-2016` or a mix (`2009-2012,2015`) into a set of numbers.
pub fn parse_number_list(text: &str) -> Result<BTreeSet<u32>, String> {
    let mut out = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{s:?} is not a number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("empty range {part:?}"));
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(num(part)?);
            }
        }
    }
    if out.is_empty() {
        return Err("empty list".to_owned());
    }
    Ok(out)
}

/// `sideline import nfl`: GameCenter JSON to GameEvent JSON lines.
#[derive(Clone, Debug, clap::Args)]
pub struct ImportNflArgs {
    /// The unpacked nflgame data (`schedule.json`, `gamecenter-json/`); see
    /// `examples/data/fetch_nfl.sh`.
    #[arg(long, value_name = "DIR", default_value = "data/nflgame")]
    pub data: PathBuf,
    /// Seasons to import, as a list and/or ranges: `2017,2018`, `2009-2016`. Default: all.
    #[arg(long, value_name = "LIST", value_parser = parse_number_list)]
    pub seasons: Option<BTreeSet<u32>>,
    /// Season types to import.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "reg,post")]
    pub season_type: Vec<SeasonType>,
    /// Weeks to import (schedule.json's `week`), as a list and/or ranges. Default: all.
    #[arg(long, value_name = "LIST", value_parser = parse_number_list)]
    pub weeks: Option<BTreeSet<u32>>,
    /// Only these games (GameCenter eids), comma-separated.
    #[arg(long, value_name = "EID,...", value_delimiter = ',')]
    pub games: Option<Vec<String>>,
    /// At most N games (the first by eid after the other filters).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Output file; `-` or absent: stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

impl ImportNflArgs {
    /// The game selection these arguments describe.
    pub fn selection(&self) -> Selection {
        Selection {
            seasons: self.seasons.clone(),
            season_types: self.season_type.iter().copied().collect(),
            weeks: self.weeks.clone(),
            games: self.games.as_ref().map(|g| g.iter().cloned().collect()),
            limit: self.limit,
        }
    }
}

/// Runs `sideline import nfl`: writes the events, then a summary (games, events, skipped
/// files, score match rate) on stderr.
pub fn run(args: ImportNflArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let (events, report) = import_dir(&args.data, &args.selection())
        .with_context(|| format!("importing {}", args.data.display()))?;
    match args.out.as_deref() {
        Some(path) if path != Path::new("-") => {
            let file =
                File::create(path).with_context(|| format!("creating {}", path.display()))?;
            write_jsonl(&events, BufWriter::new(file))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        _ => write_jsonl(&events, BufWriter::new(io::stdout().lock())).context("writing stdout")?,
    }
    eprintln!(
        "imported {} games, {} events; skipped {} unreadable, {} not in schedule",
        report.games,
        report.events,
        report.unreadable.len(),
        report.not_in_schedule.len()
    );
    eprintln!(
        "rebuilt final score matches the official one in {}/{} games ({:.2}%)",
        report.games - report.corrections.len(),
        report.games,
        100.0 * report.match_rate()
    );
    for c in &report.corrections {
        eprintln!(
            "  {}: rebuilt {}-{}, official {}-{} (home-away); corrected at game_end",
            c.game_id, c.rebuilt.0, c.rebuilt.1, c.official.0, c.official.1
        );
    }
    Ok(())
}
