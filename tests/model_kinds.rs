//! Every model kind behind `Predictor` (issue 4, "Ensembles inline"): attributions sum to the
//! output minus the baseline, a row's value and explanation do not depend on its batch (bit
//! for bit), `score` and `score_explained` agree, intervals hold the value, the default model
//! scores exactly as before, and bad model directories are refused with a clear code.
//!
//! The registry: the committed reference MLP and trees (`examples/models`), a logistic
//! regression over two of their four inputs in another order, and ensembles of all three by
//! each method, written to a temporary directory.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sideline::model::ensemble::{EnsembleSpec, MemberRef, Method};
use sideline::model::{Manifest, ModelKind, Predictor, Space, Weights, WinProbModel};

const INPUTS: [&str; 4] = [
    "score_diff",
    "time_left_fraction",
    "possession",
    "field_position",
];
const METHODS: [(Method, &str); 4] = [
    (Method::WeightedAverage, "weighted_average"),
    (Method::SoftVoting, "soft_voting"),
    (Method::HardVoting, "hard_voting"),
    (Method::Stacking, "stacking"),
];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn manifest(name: &str, kind: &str, inputs: &[&str], ensemble: Option<EnsembleSpec>) -> Manifest {
    Manifest {
        name: name.into(),
        version: "v1".into(),
        kind: kind.into(),
        output: "test".into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        pipeline: None,
        train_seasons: vec![],
        eval_seasons: vec![],
        train_data: None,
        eval_data: None,
        metrics: None,
        training: None,
        created_by: "tests/model_kinds.rs".into(),
        ensemble,
    }
}

fn write_manifest(registry: &Path, m: &Manifest) {
    let dir = registry.join(&m.name).join(&m.version);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(m).unwrap(),
    )
    .unwrap();
}

/// A registry with `ref_lr`, `ref_mlp`, `ref_gbt` and `ens_<method>` of the three.
fn registry() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for m in ["ref_mlp", "ref_gbt"] {
        copy_dir(
            &Path::new("examples/models").join(m).join("v1"),
            &dir.path().join(m).join("v1"),
        );
    }
    let lr = WinProbModel::new(
        manifest(
            "ref_lr",
            "logistic_regression",
            &["field_position", "score_diff"],
            None,
        ),
        Weights {
            weight: vec![0.3, 0.9],
            bias: 0.05,
            input_mean: vec![50.0, 0.0],
            input_scale: vec![29.0, 8.0],
        },
    )
    .unwrap();
    lr.save(&dir.path().join("ref_lr/v1")).unwrap();
    for (method, name) in METHODS {
        let member = |name: &str, weight| MemberRef {
            name: name.into(),
            version: "v1".into(),
            weight,
        };
        let spec = EnsembleSpec {
            method,
            members: vec![
                member("ref_lr", 1.0),
                member("ref_mlp", 2.0),
                member(
                    "ref_gbt",
                    if method == Method::Stacking {
                        -0.5
                    } else {
                        1.5
                    },
                ),
            ],
            bias: (method == Method::Stacking).then_some(0.2),
            online: None,
        };
        write_manifest(
            dir.path(),
            &manifest(&format!("ens_{name}"), "ensemble", &INPUTS, Some(spec)),
        );
    }
    dir
}

fn all_models(registry: &Path) -> Vec<Predictor> {
    let mut names = vec!["ref_lr".to_string(), "ref_mlp".into(), "ref_gbt".into()];
    names.extend(METHODS.iter().map(|(_, n)| format!("ens_{n}")));
    names
        .iter()
        .map(|n| Predictor::load(Some(registry), n, "v1").unwrap_or_else(|e| panic!("{n}: {e}")))
        .collect()
}

/// `rows` of the four inputs, cut down to the ones `model` takes, in its order.
fn fit(model: &Predictor, rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let cols: Vec<usize> = model
        .inputs()
        .iter()
        .map(|n| INPUTS.iter().position(|i| i == n).unwrap())
        .collect();
    rows.iter()
        .map(|r| cols.iter().map(|c| r[*c]).collect())
        .collect()
}

/// Rows of the four inputs over their synthetic ranges.
fn rows(max: usize) -> impl Strategy<Value = Vec<Vec<f64>>> {
    prop::collection::vec(
        (
            -30.0..30.0f64,
            0.0..1.0f64,
            prop_oneof![Just(-1.0), Just(1.0)],
            0.0..100.0f64,
        )
            .prop_map(|(a, b, c, d)| vec![a, b, c, d]),
        1..max,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Attributions sum to output minus baseline, for every kind; `score` is
    /// `score_explained`'s value; the interval holds the value.
    #[test]
    fn attributions_are_complete(rows in rows(12)) {
        let reg = registry();
        for model in all_models(reg.path()) {
            let rows = fit(&model, &rows);
            let values = model.score(&rows).unwrap();
            let explained = model.score_explained(&rows).unwrap();
            let outputs = model.outputs(&rows).unwrap();
            for ((e, v), o) in explained.iter().zip(&values).zip(&outputs) {
                prop_assert_eq!(e.value.to_bits(), v.to_bits(), "{}", model.version());
                prop_assert_eq!(e.output.to_bits(), o.to_bits(), "{}", model.version());
                prop_assert_eq!(e.attributions.len(), model.inputs().len());
                let sum: f64 = e.attributions.iter().sum();
                let delta = e.output - e.baseline;
                prop_assert!(
                    (sum - delta).abs() <= 1e-9 * (1.0 + delta.abs()),
                    "{}: attributions sum to {sum}, output - baseline = {delta}",
                    model.version()
                );
                prop_assert!(e.interval.0 <= e.value && e.value <= e.interval.1);
                if model.ensemble().is_none() {
                    prop_assert_eq!(e.interval, (e.value, e.value));
                    prop_assert_eq!(e.space, Space::Logit);
                }
            }
        }
    }

    /// Issue 4 item 6: with other weights in place of the manifest's (an online ensemble's
    /// current ones), the attributions of the averaging ensembles still sum to output minus
    /// baseline, and the value is the one the engine combines from the member logits.
    #[test]
    fn reweighted_attributions_are_complete(
        rows in rows(8),
        raw in prop::collection::vec(0.001f64..1.0, 3),
    ) {
        let reg = registry();
        let total: f64 = raw.iter().sum();
        let weights: Vec<f64> = raw.iter().map(|w| w / total).collect();
        for model in all_models(reg.path()) {
            let Some(ens) = model.ensemble() else { continue };
            if !matches!(ens.method(), Method::WeightedAverage | Method::SoftVoting) {
                continue;
            }
            let rows = fit(&model, &rows);
            let explained = model.score_explained_with(&rows, &weights).unwrap();
            let logits = model.member_logits(&rows).unwrap().unwrap();
            for (r, e) in explained.iter().enumerate() {
                let z: Vec<f64> = logits.iter().map(|m| m[r]).collect();
                prop_assert_eq!(e.value.to_bits(), ens.value_with(&weights, &z).to_bits());
                let sum: f64 = e.attributions.iter().sum();
                let delta = e.output - e.baseline;
                prop_assert!(
                    (sum - delta).abs() <= 1e-9 * (1.0 + delta.abs()),
                    "{}: attributions sum to {sum}, output - baseline = {delta}",
                    model.version()
                );
            }
            // The manifest's own weights give exactly `score`'s values.
            let values = model.score(&rows).unwrap();
            for (r, v) in values.iter().enumerate() {
                let z: Vec<f64> = logits.iter().map(|m| m[r]).collect();
                prop_assert_eq!(v.to_bits(), ens.value_with(&ens.weights(), &z).to_bits());
            }
        }
    }

    /// A row's value and explanation are bit-identical alone and in any batch, and the same
    /// call twice gives the same bits.
    #[test]
    fn batch_invariant_and_deterministic(rows in rows(20), pick in 0usize..20) {
        let reg = registry();
        let pick = pick % rows.len();
        for model in all_models(reg.path()) {
            let rows = fit(&model, &rows);
            let batch = model.score_explained(&rows).unwrap();
            let alone = model.score_explained(&rows[pick..=pick]).unwrap();
            prop_assert_eq!(&batch[pick], &alone[0], "{}", model.version());
            prop_assert_eq!(&batch, &model.score_explained(&rows).unwrap());
            let scores = model.score(&rows).unwrap();
            prop_assert_eq!(scores[pick].to_bits(), model.score(&rows[pick..=pick]).unwrap()[0].to_bits());
            // What a delta explains a row with: the same attributions, alone or in a batch
            // (the publisher keeps a row's and reuses them for the game's next delta), and
            // the interval when the model has one.
            let attributed = model.attribute(&rows, None).unwrap();
            for (a, s) in attributed.iter().zip(&batch) {
                prop_assert_eq!(&a.attributions, &s.attributions);
                let point = a.interval.is_none();
                prop_assert_eq!(a.interval.unwrap_or((s.value, s.value)), s.interval);
                prop_assert_eq!(point, model.ensemble().is_none(), "{}", model.version());
            }
            prop_assert_eq!(&attributed[pick], &model.attribute(&rows[pick..=pick], None).unwrap()[0]);
        }
    }

    /// Through `Predictor`, the default model scores bit for bit as `WinProbModel` does (what
    /// the engine and the golden logs rely on); its f64 explanation agrees with that value.
    #[test]
    fn default_model_unchanged(rows in prop::collection::vec(prop::collection::vec(-50.0..50.0f64, 14), 1..16)) {
        let model = WinProbModel::embedded();
        let predictor = Predictor::load(None, "nfl_wp", "v1").unwrap();
        prop_assert_eq!(predictor.kind(), ModelKind::LogisticRegression);
        let flat: Vec<f32> = rows.iter().flatten().map(|v| *v as f32).collect();
        let legacy = model.score_inputs(flat, rows.len()).unwrap();
        let scores = predictor.score(&rows).unwrap();
        prop_assert_eq!(
            legacy.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            scores.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        for (e, v) in predictor.score_explained(&rows).unwrap().iter().zip(&legacy) {
            prop_assert_eq!(e.baseline, model.weights().bias as f64);
            let p = (1.0 / (1.0 + (-e.output).exp())).clamp(1e-6, 1.0 - 1e-6);
            // The score sums 14 terms in f32: its logit is off by up to ~n * eps * sum |term|,
            // the probability by a quarter of that, plus the 6-decimal rounding.
            let mass: f64 = e.attributions.iter().map(|a| a.abs()).sum();
            let tol = 0.5e-6 + 1e-6 + 0.25 * 14.0 * 6e-8 * mass;
            prop_assert!((p - v).abs() <= tol, "f64 logit {} vs score {v}", e.output);
        }
    }
}

#[test]
fn explanations_say_something_true() {
    let reg = registry();
    let load = |n: &str| Predictor::load(Some(reg.path()), n, "v1").unwrap();
    // The linear attributions are the textbook ones; inputs it does not take get nothing.
    let lr = load("ref_lr");
    assert_eq!(lr.inputs(), ["field_position", "score_diff"]);
    let e = &lr.score_explained(&[[79.0, 4.0]]).unwrap()[0];
    assert!((e.attributions[0] - 0.3 * (79.0 - 50.0) / 29.0).abs() < 1e-7);
    assert!((e.attributions[1] - 0.9 * 4.0 / 8.0).abs() < 1e-7);
    assert_eq!(e.baseline, 0.05f32 as f64);
    // The MLP at its reference input: output = baseline, nothing attributed.
    let mlp = load("ref_mlp");
    let mean = {
        let t = candle_core::safetensors::load(
            reg.path().join("ref_mlp/v1/model.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        t["input_mean"]
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    let e = &mlp.score_explained(&[mean]).unwrap()[0];
    assert!(e.attributions.iter().all(|a| a.abs() < 1e-12), "{e:?}");
    assert!((e.output - e.baseline).abs() < 1e-12);
    // A big home lead pushes every score-driven model towards home, and the score difference
    // is the input most credited for it.
    let lead = [[21.0, 0.1, 1.0, 50.0]];
    for name in ["ref_mlp", "ref_gbt", "ens_weighted_average", "ens_stacking"] {
        let e = &load(name).score_explained(&lead).unwrap()[0];
        assert!(e.value > 0.9, "{name}: {e:?}");
        let top = (0..4)
            .max_by(|a, b| e.attributions[*a].total_cmp(&e.attributions[*b]))
            .unwrap();
        assert_eq!(top, 0, "{name}: {e:?}");
    }
    // Members that disagree widen an ensemble's interval.
    let e = &load("ens_soft_voting").score_explained(&lead).unwrap()[0];
    assert!(e.interval.0 < e.interval.1, "{e:?}");
    assert_eq!(e.space, Space::Probability);
}

#[test]
fn bad_model_directories_are_refused() {
    let reg = registry();
    let path = |n: &str| -> PathBuf { reg.path().join(n).join("v1") };
    let code = |n: &str| {
        Predictor::load(Some(reg.path()), n, "v1")
            .unwrap_err()
            .code()
    };
    // An unknown kind.
    write_manifest(reg.path(), &manifest("svm", "svm", &INPUTS, None));
    assert_eq!(code("svm"), "model_kind_unsupported");
    // An MLP whose tensors are not an nn.Sequential's (a wrapped module's keys).
    copy_dir(&path("ref_mlp"), &path("wrapped"));
    let mut tensors = candle_core::safetensors::load(
        path("ref_mlp").join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let w = tensors.remove("0.weight").unwrap();
    tensors.insert("net.0.weight".into(), w);
    candle_core::safetensors::save(&tensors, path("wrapped").join("model.safetensors")).unwrap();
    let mut m = manifest("wrapped", "mlp", &INPUTS, None);
    write_manifest(reg.path(), &m);
    assert_eq!(code("wrapped"), "model_weights_invalid");
    // Trees whose feature names are not the manifest's inputs, in order.
    copy_dir(&path("ref_gbt"), &path("shuffled"));
    m = manifest(
        "shuffled",
        "gbt",
        &[
            "time_left_fraction",
            "score_diff",
            "possession",
            "field_position",
        ],
        None,
    );
    write_manifest(reg.path(), &m);
    assert_eq!(code("shuffled"), "model_weights_invalid");
    // An ensemble of an ensemble, a member input the ensemble lacks, a missing member.
    let spec = |names: &[&str]| EnsembleSpec {
        method: Method::SoftVoting,
        members: names
            .iter()
            .map(|n| MemberRef {
                name: n.to_string(),
                version: "v1".into(),
                weight: 1.0,
            })
            .collect(),
        bias: None,
        online: None,
    };
    write_manifest(
        reg.path(),
        &manifest(
            "nested",
            "ensemble",
            &INPUTS,
            Some(spec(&["ref_mlp", "ens_stacking"])),
        ),
    );
    assert_eq!(code("nested"), "model_members_invalid");
    write_manifest(
        reg.path(),
        &manifest("narrow", "ensemble", &INPUTS[..2], Some(spec(&["ref_lr"]))),
    );
    assert_eq!(code("narrow"), "model_members_invalid");
    write_manifest(
        reg.path(),
        &manifest("ghost", "ensemble", &INPUTS, Some(spec(&["nobody"]))),
    );
    assert_eq!(code("ghost"), "model_io");
    // Online re-weighting: only for the averaging methods, with a usable eta and half-life.
    let online = |method: Method, eta: f64, half_life_games: f64| EnsembleSpec {
        method,
        online: Some(sideline::model::online::OnlineSpec {
            method: sideline::model::online::OnlineMethod::ExpLogLoss,
            eta,
            half_life_games,
        }),
        ..spec(&["ref_lr", "ref_mlp"])
    };
    for (name, s, ok) in [
        ("online_soft", online(Method::SoftVoting, 1.0, 50.0), true),
        (
            "online_avg",
            online(Method::WeightedAverage, 0.0, 0.5),
            true,
        ),
        ("online_hard", online(Method::HardVoting, 1.0, 50.0), false),
        ("online_stack", online(Method::Stacking, 1.0, 50.0), false),
        ("online_eta", online(Method::SoftVoting, -1.0, 50.0), false),
        ("online_half", online(Method::SoftVoting, 1.0, 0.0), false),
    ] {
        write_manifest(reg.path(), &manifest(name, "ensemble", &INPUTS, Some(s)));
        match ok {
            true => assert!(
                Predictor::load(Some(reg.path()), name, "v1").is_ok(),
                "{name}"
            ),
            false => assert_eq!(code(name), "model_members_invalid", "{name}"),
        }
    }
    // Rows of the wrong width.
    let mlp = Predictor::load(Some(reg.path()), "ref_mlp", "v1").unwrap();
    assert_eq!(
        mlp.score(&[[1.0, 2.0]]).unwrap_err().code(),
        "model_inputs_invalid"
    );
}

/// `sideline train --kind gbt`'s fit: deterministic, better than the constant, and its
/// XGBoost JSON reads back to the same model bit for bit.
#[test]
fn fitted_trees_round_trip_through_xgboost_json() {
    use rand::{Rng, SeedableRng};
    use sideline::model::boost::{fit_gbt, save_trees, BoostOptions};
    use sideline::model::data::LabeledRow;
    use sideline::model::train::metrics_of;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let rows: Vec<LabeledRow> = (0..3000)
        .map(|i| {
            let x: Vec<f32> = vec![
                rng.random_range(-20.0..20.0),
                rng.random_range(0.0..1.0),
                if rng.random_bool(0.5) { 1.0 } else { -1.0 },
                rng.random_range(0.0..100.0),
            ];
            let z = x[0] as f64 / (2.0 + 10.0 * x[1] as f64) + 0.3 * x[2] as f64;
            let label = if rng.random_bool(1.0 / (1.0 + (-z).exp())) {
                1.0
            } else {
                0.0
            };
            LabeledRow {
                game_id: format!("g{}", i / 100),
                time_ms: i as u64,
                inputs: x,
                label,
            }
        })
        .collect();
    let opts = BoostOptions {
        trees: 20,
        ..BoostOptions::default()
    };
    let gbt = fit_gbt(&rows, &opts).unwrap();
    assert_eq!(
        gbt,
        fit_gbt(&rows, &opts).unwrap(),
        "the fit is deterministic"
    );
    assert_eq!(gbt.trees().len(), 20);
    // XGBoost steps to `left + !(x < threshold)`: siblings must sit side by side.
    for t in gbt.trees() {
        for n in &t.nodes {
            if let sideline::model::gbt::Node::Split { left, right, .. } = n {
                assert_eq!(*right, left + 1);
            }
        }
    }
    let x: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.inputs.iter().map(|v| *v as f64).collect())
        .collect();
    let p: Vec<f64> = x
        .iter()
        .map(|r| 1.0 / (1.0 + (-gbt.margin(r)).exp()))
        .collect();
    let m = metrics_of(&p, &rows);
    assert!(m.log_loss < 0.9 * m.baseline_log_loss, "{m:?}");

    let reg = tempfile::tempdir().unwrap();
    let dir = reg.path().join("fitted/v1");
    save_trees(&gbt, &INPUTS.map(String::from), &dir).unwrap();
    write_manifest(reg.path(), &manifest("fitted", "gbt", &INPUTS, None));
    let loaded = Predictor::load(Some(reg.path()), "fitted", "v1").unwrap();
    let margins: Vec<f64> = x.iter().map(|r| gbt.margin(r)).collect();
    assert_eq!(loaded.outputs(&x).unwrap(), margins);
    let e = loaded.score_explained(&x[..50]).unwrap();
    for (e, z) in e.iter().zip(&margins) {
        assert_eq!(e.baseline, gbt.expected_margin());
        let sum: f64 = e.attributions.iter().sum();
        assert!((sum - (z - e.baseline)).abs() < 1e-9);
    }
}
