//! Isolates batched inference: rows/s of every model kind and ensemble method the registry
//! ships, scored (`Predictor::score`, the engine's per-batch path) and scored with
//! explanations (`score_explained`, what each published delta carries), at batch sizes 1, 64
//! and 1,024, on one thread. The rows are the real model inputs of the 32 bundled NFL games
//! (examples/data/nfl/games.jsonl), computed by the pipeline.
//!
//! Run with: cargo bench --bench scoring

/// The binary's allocator (`src/main.rs`), so the figures are what it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::time::{Duration, Instant};

use sideline::model::data::{rows_from_jsonl, ModelInputs};
use sideline::model::evaluate::{load_model, model_rows};
use sideline::model::train::plan_pipeline;
use sideline::pipeline::Registry;

/// Runs `f` over `rows` in batches of `batch` for at least `budget`; rows per second.
fn rate(rows: &[Vec<f64>], batch: usize, budget: Duration, mut f: impl FnMut(&[Vec<f64>])) -> f64 {
    let started = Instant::now();
    let mut done = 0usize;
    while started.elapsed() < budget {
        for chunk in rows.chunks(batch) {
            f(chunk);
            done += chunk.len();
        }
    }
    done as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let models = root.join("models");
    let registry = Registry::new(Some(models.clone()));
    let plan = plan_pipeline(None, &registry).unwrap();
    let inputs = ModelInputs::of_plan(&plan).unwrap();
    let set = rows_from_jsonl(&plan, &inputs, &root.join("examples/data/nfl/games.jsonl")).unwrap();
    println!(
        "{} rows of {} NFL games, 1 thread, at least 1 s per figure",
        set.rows.len(),
        set.games
    );
    println!("| model | kind | batch | score rows/s | score + explain rows/s |");
    println!("|---|---|---|---|---|");
    let budget = Duration::from_secs(1);
    for name in [
        "nfl_wp/v1",
        "nfl_wp_mlp/v1",
        "nfl_wp_gbt/v1",
        "nfl_wp_ens/v1",
    ] {
        let model = load_model(&models, name).unwrap();
        let rows = model_rows(&model, &inputs.names, &set.rows).unwrap();
        for batch in [1, 64, 1024] {
            let plain = rate(&rows, batch, budget, |b| {
                std::hint::black_box(model.score(b).unwrap());
            });
            let explained = rate(&rows, batch, budget, |b| {
                std::hint::black_box(model.score_explained(b).unwrap());
            });
            println!(
                "| {name} | {} | {batch} | {plain:.0} | {explained:.0} |",
                model.kind().as_str()
            );
        }
    }
}
