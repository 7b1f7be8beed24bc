//! Training and evaluation rows from the feature archive (`[[output]] kind = "archive"`,
//! [`crate::archive`]): the features the live engine computed, as it computed them, labelled
//! with the games' results.
//!
//! The archive holds no results: they are not known while a game's rows are written. They come
//! from the feed itself, the `game_end` events of GameEvent JSON lines (`--results`): 1 home
//! win, 0 home loss, 0.5 tie, as [`super::data`] labels. A game's rows are kept up to its
//! `game_end` time (later rows are windows expiring after the game); a game without a result
//! is skipped and counted. The inputs are the archived feature columns of the model's inputs,
//! cast to f32 as the engine casts them for the model ([`ModelInputs::pick`]).
//!
//! Only files of the pipeline being trained are read (schema metadata `sideline.pipeline`),
//! and of those only the ones written by the same pipeline text (`sideline.pipeline_hash`):
//! files of another version (before a redeploy, a promotion, a rollback) may hold other
//! features, so they are skipped and counted, and it is an error only when no file matches.
//! A (game, time) archived twice (rows written again after a restart from a checkpoint) is
//! taken once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, UInt64Type};

use super::data::{guard_season, pipeline_hash, DataError, LabeledRow, ModelInputs, RowSet};
use crate::event::{EventKind, GameEvent};
use crate::pipeline::Plan;

/// A game's result: its `game_end` event time and the home side's label.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GameResult {
    pub end_ms: u64,
    pub label: f64,
}

/// The results of the games of GameEvent JSON lines, by game id, from their `game_end` events.
pub fn results_from_jsonl(path: &Path) -> Result<BTreeMap<String, GameResult>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut results = BTreeMap::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        // Only a game_end can be one; the others need no parsing.
        if !line.contains("game_end") {
            continue;
        }
        let ev: GameEvent = serde_json::from_str(&line).map_err(|source| DataError::Json {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
        if ev.kind != EventKind::GameEnd {
            continue;
        }
        guard_season(&ev.game_id)?;
        let label = ev.home_result();
        results.insert(
            ev.game_id,
            GameResult {
                end_ms: ev.event_time_ms,
                label,
            },
        );
    }
    Ok(results)
}

/// The labelled rows of `plan`'s archive files in `dir`.
pub fn rows_from_archive(
    dir: &Path,
    plan: &Plan,
    inputs: &ModelInputs,
    results: &BTreeMap<String, GameResult>,
) -> Result<RowSet, DataError> {
    let bad = |path: &Path, message: String| DataError::Arrow {
        path: path.to_path_buf(),
        message,
    };
    let files = crate::archive::files(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let hash = pipeline_hash(&plan.source);
    let mut rows = Vec::new();
    let mut unfinished = BTreeSet::new();
    let mut read = 0;
    let mut other_versions = Vec::new();
    let mut seen = BTreeSet::new();
    for path in &files {
        let file = std::fs::File::open(path).map_err(|source| DataError::Io {
            path: path.clone(),
            source,
        })?;
        let reader = arrow_ipc::reader::FileReader::try_new_buffered(file, None)
            .map_err(|e| bad(path, e.to_string()))?;
        let schema = reader.schema();
        let meta = |k: &str| schema.metadata().get(k).cloned().unwrap_or_default();
        if meta("sideline.pipeline") != plan.name {
            continue;
        }
        if meta("sideline.pipeline_hash") != hash {
            other_versions.push(format!(
                "{} (version {}, text hash {})",
                path.display(),
                meta("sideline.pipeline_version"),
                meta("sideline.pipeline_hash")
            ));
            continue;
        }
        read += 1;
        for batch in reader {
            let batch = batch.map_err(|e| bad(path, e.to_string()))?;
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| bad(path, format!("column `{name}` is missing")))
            };
            let games = column("game_id")?.as_string::<i32>();
            let times = column("event_time_ms")?.as_primitive::<UInt64Type>();
            let features = inputs
                .names
                .iter()
                .map(|n| {
                    column(n)?
                        .as_primitive_opt::<Float64Type>()
                        .ok_or_else(|| bad(path, format!("column `{n}` is not Float64")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            for i in 0..batch.num_rows() {
                let game_id = games.value(i);
                guard_season(game_id)?;
                let Some(result) = results.get(game_id) else {
                    unfinished.insert(game_id.to_string());
                    continue;
                };
                let time_ms = times.value(i);
                if time_ms > result.end_ms || !seen.insert((game_id.to_string(), time_ms)) {
                    continue;
                }
                rows.push(LabeledRow {
                    game_id: game_id.to_string(),
                    time_ms,
                    inputs: features.iter().map(|c| c.value(i) as f32).collect(),
                    label: result.label,
                });
            }
        }
    }
    if read == 0 {
        return Err(bad(
            dir,
            format!(
                "no archive file of pipeline `{}` with this text (hash {hash}) here{}",
                plan.name,
                match other_versions.is_empty() {
                    true => String::new(),
                    false => format!(
                        "; files of other texts of it: {} (train with the pipeline file that \
                         wrote them, or replay the games through this one)",
                        other_versions.join(", ")
                    ),
                }
            ),
        ));
    }
    if !other_versions.is_empty() {
        tracing::warn!(
            skipped = other_versions.len(),
            files = other_versions.join(", "),
            "archive files of other texts of the pipeline skipped"
        );
    }
    Ok(RowSet::new(rows, unfinished.len()))
}

/// [`rows_from_archive`] labelled by the results of the events in `results`.
pub fn load(
    dir: &Path,
    results: &Path,
    plan: &Plan,
    inputs: &ModelInputs,
) -> anyhow::Result<RowSet> {
    use anyhow::Context;
    let results = results_from_jsonl(results)
        .with_context(|| format!("reading results from {}", results.display()))?;
    rows_from_archive(dir, plan, inputs, &results)
        .with_context(|| format!("reading the archive {}", dir.display()))
}
