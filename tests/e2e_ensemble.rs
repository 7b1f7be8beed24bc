//! An ensemble from the registry, run inline by the engine: the NFL pipeline's features scored
//! by the committed reference ensembles (an MLP from PyTorch and XGBoost trees, combined four
//! ways, `examples/models/`). Each delta's value is the ensemble's on the archived features,
//! carries the members' interval and its top contributors, and two runs give the same bytes.

mod common;

use std::path::PathBuf;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use common::*;
use sideline::model::Predictor;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/models")
}

/// The NFL pipeline on `topic` scored by `model`, archiving its values to `archive`.
fn pipeline(topic: &str, model: &str, archive: &std::path::Path) -> String {
    let text = nfl_pipeline(&[topic]);
    let out = text.replace(
        "[model]\nname = \"nfl_wp\"\nversion = \"v1\"",
        &format!(
            "[[derived]]\nname = \"field_position\"\nexpr = \"field\"\n\n[model]\nname = \"{model}\"\nversion = \"v1\""
        ),
    );
    assert_ne!(
        out, text,
        "the shipped pipeline names its model as expected"
    );
    format!(
        "{out}\n[[output]]\nkind = \"archive\"\ndir = \"{}\"\n",
        archive.display()
    )
}

/// A run's deltas, its delta log's bytes, and the archived (model inputs, value) rows.
type Run = (Vec<sideline::delta::Delta>, Vec<u8>, Vec<(Vec<f64>, f64)>);

fn run(cluster: &Cluster, topic: &str, model: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&cluster.brokers, topic, 2);
    cfg.engine.models = models().display().to_string();
    let app = start(&cfg, &[pipeline(topic, model, dir.path())]);
    let (_, log) = run_engine(&app);
    let plan = app.publisher.lock().unwrap().pipelines()[0].0.clone();
    app.shutdown();
    // The archived model inputs and values.
    let inputs = [
        "score_diff",
        "time_left_fraction",
        "possession",
        "field_position",
    ];
    let batches = sideline::archive::read(&sideline::archive::files(dir.path()).unwrap()).unwrap();
    let mut rows = Vec::new();
    for b in &batches {
        let cols: Vec<_> = inputs
            .iter()
            .map(|n| b.column_by_name(n).unwrap().as_primitive::<Float64Type>())
            .collect();
        let value = b
            .column_by_name("value")
            .unwrap()
            .as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            rows.push((cols.iter().map(|c| c.value(i)).collect(), value.value(i)));
        }
    }
    assert!(plan.vars.iter().any(|v| v == "field_position"));
    let bytes = log_bytes(&log);
    (log, bytes, rows)
}

#[test]
fn ensembles_run_inline_with_intervals_and_contributors() {
    let topic = "ensembles";
    let cluster = Cluster::mock(&[(topic, 4), ("ensembles.dead-letters", 1)]);
    produce_all(&cluster.brokers, topic, &fixture_lines());
    for model in [
        "ref_weighted_average",
        "ref_soft_voting",
        "ref_hard_voting",
        "ref_stacking",
    ] {
        let (log, bytes, rows) = run(&cluster, topic, model);
        let predictor = Predictor::load(Some(&models()), model, "v1").unwrap();
        let inputs: Vec<&Vec<f64>> = rows.iter().map(|r| &r.0).collect();
        let scored = predictor.score(&inputs).unwrap();
        for ((_, value), s) in rows.iter().zip(&scored) {
            assert_eq!(
                value.to_bits(),
                s.to_bits(),
                "{model}: the engine's value is the ensemble's"
            );
        }
        let with_interval = log.iter().filter(|d| d.interval.is_some()).count();
        let with_contributors = log.iter().filter(|d| !d.contributors.is_empty()).count();
        for d in &log {
            if let Some((lo, hi)) = d.interval {
                assert!(
                    lo <= d.new && d.new <= hi && lo < hi,
                    "{model}: delta {} interval",
                    d.seq
                );
            }
            assert!(d.contributors.len() <= 3);
            assert!(d
                .contributors
                .windows(2)
                .all(|w| w[0].by.abs() >= w[1].by.abs()));
        }
        println!(
            "{model}: {} rows, {} deltas, {with_interval} with an interval, {with_contributors} with contributors",
            rows.len(),
            log.len()
        );
        assert!(log.len() > 100, "{model}: the games move the ensemble");
        assert!(
            with_interval * 2 > log.len(),
            "{model}: members disagree on most deltas"
        );
        assert!(
            with_contributors * 2 > log.len(),
            "{model}: most deltas explained"
        );
        let (_, again, _) = run(&cluster, topic, model);
        assert!(again == bytes, "{model}: two runs give the same bytes");
    }
}
