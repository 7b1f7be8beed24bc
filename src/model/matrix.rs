//! The training matrix as an Arrow IPC file (`sideline train --features-out` / `--features`).
//!
//! Extracting rows from events replays every game through the pipeline; the matrix caches the
//! result so that fitting can be repeated from it in seconds, and other tools (pyarrow,
//! polars) can read it. Schema, one row per [`LabeledRow`]:
//!
//! | column | type | |
//! |---|---|---|
//! | `game_id` | Utf8 | GameCenter eid |
//! | `time_ms` | UInt64 | event time of the event after which the inputs hold |
//! | one per model input, named as in the manifest | Float32 | the input, as the engine feeds it |
//! | `label` | Float64 | 1 home win, 0 loss, 0.5 tie |
//!
//! The schema's metadata is the cache key: the pipeline's name (`sideline.pipeline`), version
//! (`sideline.pipeline_version`) and text hash (`sideline.pipeline_hash`,
//! [`pipeline_hash`](super::data::pipeline_hash)). Reading refuses a matrix made by another
//! pipeline text or without the expected input columns (change the pipeline, rebuild the
//! matrix), checks the schema by column name and type, and refuses held-out-season games like
//! the event reader does.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, UInt64Type};
use arrow_array::{ArrayRef, Float32Array, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::{ArrowError, DataType, Field, Schema};

use super::data::{guard_season, DataError, LabeledRow};
use super::PipelineRef;

/// Rows per record batch.
const BATCH_ROWS: usize = 65_536;

const META_PIPELINE: &str = "sideline.pipeline";
const META_VERSION: &str = "sideline.pipeline_version";
const META_HASH: &str = "sideline.pipeline_hash";

/// The matrix schema for these inputs, keyed by `pipeline`.
pub fn schema(pipeline: &PipelineRef, inputs: &[String]) -> Schema {
    let mut fields = vec![
        Field::new("game_id", DataType::Utf8, false),
        Field::new("time_ms", DataType::UInt64, false),
    ];
    fields.extend(
        inputs
            .iter()
            .map(|n| Field::new(n.as_str(), DataType::Float32, false)),
    );
    fields.push(Field::new("label", DataType::Float64, false));
    let metadata: HashMap<String, String> = [
        (META_PIPELINE, pipeline.name.clone()),
        (META_VERSION, pipeline.version.to_string()),
        (META_HASH, pipeline.hash.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Schema::new_with_metadata(fields, metadata)
}

fn arrow_err(path: &Path) -> impl Fn(ArrowError) -> DataError + '_ {
    move |e| DataError::Arrow {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes rows (their inputs named `inputs`) as an Arrow IPC file keyed by `pipeline`.
pub fn write_matrix(
    path: &Path,
    pipeline: &PipelineRef,
    inputs: &[String],
    rows: &[LabeledRow],
) -> Result<(), DataError> {
    let bad = |message: String| DataError::Arrow {
        path: path.to_path_buf(),
        message,
    };
    if let Some(r) = rows.iter().find(|r| r.inputs.len() != inputs.len()) {
        return Err(bad(format!(
            "a row of game {} has {} inputs, expected {}",
            r.game_id,
            r.inputs.len(),
            inputs.len()
        )));
    }
    let schema = Arc::new(schema(pipeline, inputs));
    let file = std::fs::File::create(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut writer = FileWriter::try_new_buffered(file, &schema).map_err(arrow_err(path))?;
    for chunk in rows.chunks(BATCH_ROWS) {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| r.game_id.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(
                chunk.iter().map(|r| r.time_ms),
            )),
        ];
        for j in 0..inputs.len() {
            columns.push(Arc::new(Float32Array::from_iter_values(
                chunk.iter().map(|r| r.inputs[j]),
            )));
        }
        columns.push(Arc::new(Float64Array::from_iter_values(
            chunk.iter().map(|r| r.label),
        )));
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err(path))?;
        writer.write(&batch).map_err(arrow_err(path))?;
    }
    writer.finish().map_err(arrow_err(path))?;
    Ok(())
}

/// Reads the rows written by [`write_matrix`] for this pipeline and these inputs.
pub fn read_matrix(
    path: &Path,
    pipeline: &PipelineRef,
    inputs: &[String],
) -> Result<Vec<LabeledRow>, DataError> {
    let bad = |message: String| DataError::Arrow {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = FileReader::try_new_buffered(file, None).map_err(arrow_err(path))?;
    let found = reader.schema();
    let meta = |k: &str| found.metadata().get(k).cloned().unwrap_or_default();
    if meta(META_HASH) != pipeline.hash {
        return Err(bad(match meta(META_HASH).as_str() {
            "" => "the matrix names no pipeline (an older sideline wrote it): rebuild it with \
                   --train/--eval and --features-out/--eval-features-out"
                .to_string(),
            hash => format!(
                "the matrix was built by pipeline `{}` version {} (text hash {hash}), this run \
                 uses `{}` version {} (text hash {}): rebuild it with --train/--eval and \
                 --features-out/--eval-features-out",
                meta(META_PIPELINE),
                meta(META_VERSION),
                pipeline.name,
                pipeline.version,
                pipeline.hash
            ),
        }));
    }
    let expected = schema(pipeline, inputs);
    for field in expected.fields() {
        match found.field_with_name(field.name()) {
            Ok(f) if f.data_type() == field.data_type() => {}
            Ok(f) => {
                return Err(bad(format!(
                    "column `{}` is {}, expected {}",
                    field.name(),
                    f.data_type(),
                    field.data_type()
                )))
            }
            Err(_) => return Err(bad(format!("column `{}` is missing", field.name()))),
        }
    }
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(arrow_err(path))?;
        let column = |name: &str| batch.column_by_name(name).expect("schema checked");
        let game_ids = column("game_id").as_string::<i32>();
        let times = column("time_ms").as_primitive::<UInt64Type>();
        let labels = column("label").as_primitive::<Float64Type>();
        let columns: Vec<_> = inputs
            .iter()
            .map(|n| column(n).as_primitive::<Float32Type>())
            .collect();
        for i in 0..batch.num_rows() {
            let game_id = game_ids.value(i);
            guard_season(game_id)?;
            rows.push(LabeledRow {
                game_id: game_id.to_string(),
                time_ms: times.value(i),
                inputs: columns.iter().map(|c| c.value(i)).collect(),
                label: labels.value(i),
            });
        }
    }
    Ok(rows)
}
