//! Batched inference allocates per batch, not per record: scoring a batch of 1,000 rows makes
//! (nearly) as many heap allocations as scoring 10, for every model kind and ensemble method, counted
//! by `allocation-counter`'s global allocator (the calling thread's allocations).

use std::path::Path;

use sideline::model::predictor::Predictor;

/// Heap allocations (and reallocations) `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    allocation_counter::measure(f).count_total
}

/// Deterministic rows of `width` plausible values.
fn rows(n: usize, width: usize) -> Vec<f64> {
    (0..n * width)
        .map(|i| ((i * 7919 % 1000) as f64 / 100.0) - 5.0)
        .collect()
}

#[test]
fn scoring_allocates_per_batch_not_per_record() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let models = root.join("models");
    let references = root.join("examples/models");
    let cases: Vec<(&Path, &str)> = vec![
        (&models, "nfl_wp"),
        (&models, "nfl_wp_mlp"),
        (&models, "nfl_wp_gbt"),
        (&models, "nfl_wp_ens"),
        (&references, "ref_stacking"),
        (&references, "ref_soft_voting"),
        (&references, "ref_hard_voting"),
        (&references, "ref_weighted_average"),
    ];
    let mut failures: Vec<String> = Vec::new();
    for (registry, name) in cases {
        let model = Predictor::load(Some(registry), name, "v1").unwrap();
        let width = model.inputs().len();
        let count = |n: usize| {
            let flat = rows(n, width);
            let batch: Vec<&[f64]> = flat.chunks_exact(width).collect();
            // Once to warm anything lazily initialised, then counted.
            model.score(&batch).unwrap();
            allocations(|| {
                model.score(&batch).unwrap();
            })
        };
        let (small, large) = (count(10), count(1_000));
        println!("{name}: {small} allocations for 10 rows, {large} for 1,000");
        // 990 more rows: per-record allocation would show as hundreds more; a few buffers
        // growing by doubling (log2(100) ~ 7 reallocations each) may not.
        if large > small + 16 {
            failures.push(format!("{name}: {small} for 10 rows, {large} for 1,000"));
        }
    }
    assert!(
        failures.is_empty(),
        "scoring allocates per record: {failures:?}"
    );
}
