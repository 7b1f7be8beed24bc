//! The feature archive: `[[output]] kind = "archive"` writes every value a pipeline computes,
//! with the features behind it, to rolling Arrow IPC files. Replaying past seasons through a
//! pipeline with an archive yields a training set holding exactly what the live engine
//! computes, not a re-implementation of it.
//!
//! One row per (game, completed time) whose value the live version computed, published as a
//! delta or not, in the order the engine completes them (event time, then sport and game id).
//! Columns:
//!
//! | column | type | |
//! |---|---|---|
//! | `sport`, `game_id` | Utf8 | the game |
//! | `event_time_ms` | UInt64 | the completed event time |
//! | `event_seq` | UInt64 | `seq` of the game's latest event at that time |
//! | `value` | Float64 | the model's value (for example the home win probability) |
//! | `model_version` | Utf8 | the model that computed it |
//! | `shadow_value` | Float64, null when the shadow failed to score | only with a shadow model (`[model] shadow`): its value on the same row |
//! | one per feature, named as in the pipeline (`name.home`, `name.away` for team features) | Float64 | |
//!
//! The schema's metadata names the pipeline (`sideline.pipeline`, `sideline.pipeline_version`,
//! `sideline.pipeline_hash`) and, with a shadow model, that model (`sideline.shadow_model`,
//! `name/version`). Files are `<dir>/<pipeline>-v<version>-<n>.arrow`, `n` counting up
//! from the highest already there; a file is written as `*.arrow.partial` and renamed when it
//! is complete (`rows-per-file` rows, a new version taking over, or the engine stopping), so
//! readers only ever see whole files. Batches of up to [`BATCH_ROWS`] rows are written as they
//! fill; every file but the last holds exactly `rows-per-file` rows.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};

use crate::dataflow::Valued;
use crate::pipeline::Plan;

/// The archive's own columns: no feature may take one of these names.
pub const OWN_COLUMNS: [&str; 7] = [
    "sport",
    "game_id",
    "event_time_ms",
    "event_seq",
    "value",
    "model_version",
    "shadow_value",
];

/// Rows per record batch.
pub const BATCH_ROWS: usize = 8_192;

/// The archive schema of `plan`.
pub fn schema(plan: &Plan) -> Schema {
    let mut fields = vec![
        Field::new("sport", DataType::Utf8, false),
        Field::new("game_id", DataType::Utf8, false),
        Field::new("event_time_ms", DataType::UInt64, false),
        Field::new("event_seq", DataType::UInt64, false),
        Field::new("value", DataType::Float64, false),
        Field::new("model_version", DataType::Utf8, false),
    ];
    if plan.shadow.is_some() {
        fields.push(Field::new("shadow_value", DataType::Float64, true));
    }
    fields.extend(
        plan.vars
            .iter()
            .map(|v| Field::new(v.as_str(), DataType::Float64, false)),
    );
    let metadata: std::collections::HashMap<String, String> = [
        ("sideline.pipeline", plan.name.clone()),
        ("sideline.pipeline_version", plan.version.to_string()),
        (
            "sideline.pipeline_hash",
            crate::model::data::pipeline_hash(&plan.source),
        ),
    ]
    .into_iter()
    .chain(
        plan.shadow
            .as_ref()
            .map(|s| ("sideline.shadow_model", format!("{}/{}", s.name, s.version))),
    )
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Schema::new_with_metadata(fields, metadata)
}

/// Column builders for one batch.
struct Columns {
    sport: StringBuilder,
    game: StringBuilder,
    time: UInt64Builder,
    seq: UInt64Builder,
    value: Float64Builder,
    model: StringBuilder,
    /// With a shadow model.
    shadow: Option<Float64Builder>,
    vars: Vec<Float64Builder>,
    rows: usize,
}

impl Columns {
    fn new(vars: usize, shadow: bool) -> Self {
        Columns {
            sport: StringBuilder::new(),
            game: StringBuilder::new(),
            time: UInt64Builder::with_capacity(BATCH_ROWS),
            seq: UInt64Builder::with_capacity(BATCH_ROWS),
            value: Float64Builder::with_capacity(BATCH_ROWS),
            model: StringBuilder::new(),
            shadow: shadow.then(|| Float64Builder::with_capacity(BATCH_ROWS)),
            vars: (0..vars)
                .map(|_| Float64Builder::with_capacity(BATCH_ROWS))
                .collect(),
            rows: 0,
        }
    }

    fn push(&mut self, v: &Valued, model_version: &str) {
        self.sport.append_value(v.game.sport.to_string());
        self.game.append_value(&v.game.game_id);
        self.time.append_value(v.time);
        self.seq.append_value(v.event_seq);
        self.value.append_value(v.value);
        self.model.append_value(model_version);
        if let Some(b) = &mut self.shadow {
            b.append_option(v.shadow);
        }
        for (b, x) in self.vars.iter_mut().zip(&v.vars) {
            b.append_value(*x);
        }
        self.rows += 1;
    }

    fn finish(&mut self, schema: &Arc<Schema>) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.sport.finish()),
            Arc::new(self.game.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.model.finish()),
        ];
        if let Some(b) = &mut self.shadow {
            columns.push(Arc::new(b.finish()));
        }
        columns.extend(
            self.vars
                .iter_mut()
                .map(|b| Arc::new(b.finish()) as ArrayRef),
        );
        self.rows = 0;
        RecordBatch::try_new(schema.clone(), columns)
    }
}

/// One pipeline version's archive writer.
pub struct Archive {
    dir: PathBuf,
    prefix: String,
    rows_per_file: u64,
    schema: Arc<Schema>,
    columns: Columns,
    file: Option<(FileWriter<File>, PathBuf, u64)>,
    next: u64,
}

impl Archive {
    /// An archive of `plan`'s values in `dir` (created if missing).
    pub fn open(plan: &Plan, dir: &str, rows_per_file: u64) -> std::io::Result<Archive> {
        std::fs::create_dir_all(dir)?;
        let prefix = format!("{}-v{}-", plan.name, plan.version);
        // Numbering goes on after the files already there (an earlier run's).
        let mut next = 0;
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().to_string();
            if let Some(n) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".arrow"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                next = next.max(n + 1);
            }
        }
        Ok(Archive {
            dir: PathBuf::from(dir),
            prefix,
            rows_per_file: rows_per_file.max(1),
            schema: Arc::new(schema(plan)),
            columns: Columns::new(plan.vars.len(), plan.shadow.is_some()),
            file: None,
            next,
        })
    }

    /// Appends one completed time's values. Errors are logged and counted; the engine goes on.
    pub fn append(&mut self, values: &[Valued], model_version: &str) {
        for v in values {
            self.columns.push(v, model_version);
            // A batch is written when it is full or fills the current file.
            let in_file = self.file.as_ref().map_or(0, |f| f.2);
            let room = (self.rows_per_file - in_file).min(BATCH_ROWS as u64);
            if self.columns.rows as u64 >= room {
                self.write_batch();
            }
        }
    }

    fn write_batch(&mut self) {
        if self.columns.rows == 0 {
            return;
        }
        if let Err(e) = self.try_write_batch() {
            tracing::error!(dir = %self.dir.display(), error = %e, "feature archive write failed");
            metrics::counter!("sideline_archive_failures_total").increment(1);
        }
    }

    fn try_write_batch(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        let batch = self.columns.finish(&self.schema)?;
        if self.file.is_none() {
            let path = self
                .dir
                .join(format!("{}{}.arrow.partial", self.prefix, self.next));
            self.next += 1;
            let writer = FileWriter::try_new(File::create(&path)?, &self.schema)?;
            self.file = Some((writer, path, 0));
        }
        let (writer, _, rows) = self.file.as_mut().expect("opened above");
        writer.write(&batch)?;
        *rows += batch.num_rows() as u64;
        metrics::counter!("sideline_archive_rows_total").increment(batch.num_rows() as u64);
        if *rows >= self.rows_per_file {
            self.close_file();
        }
        Ok(())
    }

    /// Finishes the current file and renames it into place.
    fn close_file(&mut self) {
        if let Some((mut writer, partial, _)) = self.file.take() {
            let done = partial.with_extension("");
            let result = writer
                .finish()
                .map_err(|e| e.to_string())
                .and_then(|_| std::fs::rename(&partial, &done).map_err(|e| e.to_string()));
            if let Err(e) = result {
                tracing::error!(file = %partial.display(), error = %e, "feature archive file not finished");
                metrics::counter!("sideline_archive_failures_total").increment(1);
            }
        }
    }

    /// Writes what is buffered and finishes the current file.
    pub fn flush(&mut self) {
        self.write_batch();
        self.close_file();
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The archive files of a directory (whole files only), sorted by name.
pub fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arrow"))
        .collect();
    out.sort();
    Ok(out)
}

/// Reads archive files: every row's batch, in file then row order.
pub fn read(paths: &[PathBuf]) -> Result<Vec<RecordBatch>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for p in paths {
        let reader = arrow_ipc::reader::FileReader::try_new(File::open(p)?, None)?;
        for batch in reader {
            out.push(batch?);
        }
    }
    Ok(out)
}
