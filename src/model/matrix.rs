//! The training matrix as an Arrow IPC file (`sideline train --features-out` / `--features`).
//!
//! Extracting rows from events replays every game's timeline; the matrix caches the result
//! so that fitting can be repeated from it in seconds, and other tools (pyarrow, polars) can
//! read it. Schema, one row per [`LabeledRow`]:
//!
//! | column | type | |
//! |---|---|---|
//! | `game_id` | Utf8 | GameCenter eid |
//! | `time_ms` | UInt64 | event time from which the features hold |
//! | one per [`FEATURE_NAMES`] | Int64 | the feature slots |
//! | `label` | Float64 | 1 home win, 0 loss, 0.5 tie |
//!
//! Reading checks the schema by column name and type, and refuses held-out-season games like
//! the event reader does.

use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, UInt64Type};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::{ArrowError, DataType, Field, Schema};

use super::data::{guard_season, DataError, LabeledRow};
use crate::features::{FeatureVec, FEATURE_NAMES, FEATURE_SLOTS};

/// Rows per record batch.
const BATCH_ROWS: usize = 65_536;

/// The matrix schema.
pub fn schema() -> Schema {
    let mut fields = vec![
        Field::new("game_id", DataType::Utf8, false),
        Field::new("time_ms", DataType::UInt64, false),
    ];
    fields.extend(
        FEATURE_NAMES
            .iter()
            .map(|n| Field::new(*n, DataType::Int64, false)),
    );
    fields.push(Field::new("label", DataType::Float64, false));
    Schema::new(fields)
}

fn arrow_err(path: &Path) -> impl Fn(ArrowError) -> DataError + '_ {
    move |e| DataError::Arrow {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes rows as an Arrow IPC file.
pub fn write_matrix(path: &Path, rows: &[LabeledRow]) -> Result<(), DataError> {
    let schema = Arc::new(schema());
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
        for slot in 0..FEATURE_SLOTS {
            columns.push(Arc::new(Int64Array::from_iter_values(
                chunk.iter().map(|r| r.features.0[slot]),
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

/// Reads rows written by [`write_matrix`].
pub fn read_matrix(path: &Path) -> Result<Vec<LabeledRow>, DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = FileReader::try_new_buffered(file, None).map_err(arrow_err(path))?;
    let expected = schema();
    for field in expected.fields() {
        let found = reader.schema().field_with_name(field.name()).cloned();
        match found {
            Ok(f) if f.data_type() == field.data_type() => {}
            Ok(f) => {
                return Err(DataError::Arrow {
                    path: path.to_path_buf(),
                    message: format!(
                        "column `{}` is {}, expected {}",
                        field.name(),
                        f.data_type(),
                        field.data_type()
                    ),
                })
            }
            Err(_) => {
                return Err(DataError::Arrow {
                    path: path.to_path_buf(),
                    message: format!("column `{}` is missing", field.name()),
                })
            }
        }
    }
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(arrow_err(path))?;
        let column = |name: &str| batch.column_by_name(name).expect("schema checked");
        let game_ids = column("game_id").as_string::<i32>();
        let times = column("time_ms").as_primitive::<UInt64Type>();
        let labels = column("label").as_primitive::<Float64Type>();
        let features: Vec<_> = FEATURE_NAMES
            .iter()
            .map(|n| column(n).as_primitive::<Int64Type>())
            .collect();
        for i in 0..batch.num_rows() {
            let game_id = game_ids.value(i);
            guard_season(game_id)?;
            let mut v = FeatureVec::default();
            for (slot, col) in features.iter().enumerate() {
                v.0[slot] = col.value(i);
            }
            rows.push(LabeledRow {
                game_id: game_id.to_string(),
                time_ms: times.value(i),
                features: v,
                label: labels.value(i),
            });
        }
    }
    Ok(rows)
}
