//! PyTorch and XGBoost parity: the models `examples/models/make_reference.py` trained and
//! exported (committed, with what PyTorch, XGBoost and numpy output on a fixed batch, in
//! `examples/models/reference_outputs.json`) score the same in sideline. No Python needed.
//!
//! Tolerances, absolute: the references are f32 computations (PyTorch's forward, XGBoost's
//! leaf sums and TreeSHAP), sideline's are f64 from the same f32 parameters, so they differ by
//! f32 rounding: 2e-6 on logits and margins of size up to ~5 (a few ulps of f32 at that size),
//! 1e-6 on probabilities, 2e-6 on TreeSHAP values. The 6-decimal rounded scores may then
//! differ by one unit in the last place at most.

use std::path::Path;

use serde::Deserialize;
use sideline::model::ensemble::Method;
use sideline::model::{ModelKind, Predictor, Space};

const REGISTRY: &str = "examples/models";

#[derive(Deserialize)]
struct Reference {
    inputs: Vec<String>,
    mlp: MlpRef,
    gbt: GbtRef,
    ensembles: EnsembleRef,
}

#[derive(Deserialize)]
struct MlpRef {
    rows: Vec<Vec<f64>>,
    logit: Vec<f64>,
    probability: Vec<f64>,
}

#[derive(Deserialize)]
struct GbtRef {
    rows: Vec<Vec<Option<f64>>>,
    margin: Vec<f64>,
    probability: Vec<f64>,
    contributions: Vec<Vec<f64>>,
    bias: Vec<f64>,
}

#[derive(Deserialize)]
struct EnsembleRef {
    rows: Vec<Vec<f64>>,
    weighted_average: Vec<f64>,
    soft_voting: Vec<f64>,
    hard_voting: Vec<f64>,
    stacking: Vec<f64>,
}

fn reference() -> Reference {
    let path = Path::new(REGISTRY).join("reference_outputs.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn load(name: &str) -> Predictor {
    Predictor::load(Some(Path::new(REGISTRY)), name, "v1").unwrap_or_else(|e| panic!("{e}"))
}

fn close(what: &str, ours: &[f64], theirs: &[f64], tol: f64) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(
            (a - b).abs() <= tol,
            "{what} row {i}: sideline {a}, reference {b} (|diff| {} > {tol})",
            (a - b).abs()
        );
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn rounded_close(what: &str, scores: &[f64], probabilities: &[f64]) {
    let expected: Vec<f64> = probabilities
        .iter()
        .map(|p| ((p * 1e6).round() / 1e6).clamp(1e-6, 1.0 - 1e-6))
        .collect();
    close(what, scores, &expected, 1.000_001e-6);
}

#[test]
fn pytorch_mlp_matches() {
    let r = reference();
    let mlp = load("ref_mlp");
    assert_eq!(mlp.kind(), ModelKind::Mlp);
    assert_eq!(mlp.inputs(), r.inputs);
    let logits = mlp.outputs(&r.mlp.rows).unwrap();
    close("mlp logit", &logits, &r.mlp.logit, 2e-6);
    let p: Vec<f64> = logits.iter().map(|z| sigmoid(*z)).collect();
    close("mlp probability", &p, &r.mlp.probability, 1e-6);
    rounded_close(
        "mlp score",
        &mlp.score(&r.mlp.rows).unwrap(),
        &r.mlp.probability,
    );
}

#[test]
fn xgboost_trees_match_including_tree_shap() {
    let r = reference();
    let gbt = load("ref_gbt");
    assert_eq!(gbt.kind(), ModelKind::Gbt);
    let rows: Vec<Vec<f64>> = r
        .gbt
        .rows
        .iter()
        .map(|row| row.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
        .collect();
    assert!(
        rows.iter().flatten().any(|v| v.is_nan()),
        "the batch has missing values"
    );
    let margins = gbt.outputs(&rows).unwrap();
    close("gbt margin", &margins, &r.gbt.margin, 2e-6);
    let p: Vec<f64> = margins.iter().map(|z| sigmoid(*z)).collect();
    close("gbt probability", &p, &r.gbt.probability, 1e-6);
    rounded_close("gbt score", &gbt.score(&rows).unwrap(), &r.gbt.probability);

    let explained = gbt.score_explained(&rows).unwrap();
    for (i, e) in explained.iter().enumerate() {
        assert_eq!(e.space, Space::Logit);
        close(
            &format!("TreeSHAP row {i}"),
            &e.attributions,
            &r.gbt.contributions[i],
            2e-6,
        );
        close(
            &format!("TreeSHAP baseline row {i}"),
            &[e.baseline],
            &[r.gbt.bias[i]],
            2e-6,
        );
        assert_eq!(e.output, margins[i]);
    }
}

#[test]
fn ensembles_match_numpy() {
    let r = reference();
    let e = &r.ensembles;
    for (method, name, expected) in [
        (
            Method::WeightedAverage,
            "ref_weighted_average",
            &e.weighted_average,
        ),
        (Method::SoftVoting, "ref_soft_voting", &e.soft_voting),
        (Method::HardVoting, "ref_hard_voting", &e.hard_voting),
        (Method::Stacking, "ref_stacking", &e.stacking),
    ] {
        let model = load(name);
        let ensemble = model.ensemble().expect("an ensemble");
        assert_eq!(ensemble.method(), method);
        assert_eq!(
            ensemble.members().collect::<Vec<_>>(),
            ["ref_mlp/v1", "ref_gbt/v1"]
        );
        let out = model.outputs(&e.rows).unwrap();
        let p: Vec<f64> = match method {
            Method::WeightedAverage | Method::Stacking => out.iter().map(|z| sigmoid(*z)).collect(),
            Method::SoftVoting | Method::HardVoting => out,
        };
        close(name, &p, expected, 1e-6);
        rounded_close(name, &model.score(&e.rows).unwrap(), expected);
    }
}
