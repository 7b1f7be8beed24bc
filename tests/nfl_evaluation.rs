//! The committed NFL models on the evaluation seasons 2017-2018, the figures README.md
//! reports: each member and the ensemble scored through the engine's own scoring path on rows
//! the pipeline computes from the real games, and the ensemble must beat its best member on
//! log loss.
//!
//! Needs the NFL archive (`bash examples/data/fetch_nfl.sh`, which `.ci/run` runs), hence
//! `#[ignore]`: `cargo test --test nfl_evaluation -- --ignored`.

use std::path::Path;
use std::process::Command;

use sideline::model::data::{rows_from_jsonl, ModelInputs};
use sideline::model::evaluate::{evaluate_model, load_model, report};
use sideline::model::train::plan_pipeline;
use sideline::pipeline::Registry;

/// The ensemble; its members are read from its manifest.
const ENSEMBLE: &str = "nfl_wp_ens/v1";
/// Scored beside them for the README's table.
const OTHERS: [&str; 1] = ["nfl_wp_gbt/v1"];

/// README.md's table ("The ensemble on the evaluation seasons"): model, log loss, Brier, ECE,
/// to 4 decimals. A retrained model or a changed pipeline must update both.
const README: [(&str, &str, &str, &str); 4] = [
    ("nfl_wp/v1", "0.4503", "0.1488", "0.0242"),
    ("nfl_wp_mlp/v1", "0.4498", "0.1488", "0.0238"),
    ("nfl_wp_ens/v1", "0.4497", "0.1487", "0.0243"),
    ("nfl_wp_gbt/v1", "0.4517", "0.1494", "0.0284"),
];

#[test]
#[ignore = "needs the NFL archive: bash examples/data/fetch_nfl.sh"]
fn the_ensemble_beats_its_best_member_on_2017_2018() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let archive = root.join("data/nflgame");
    assert!(
        archive.join("schedule.json").is_file(),
        "{} is missing: run bash examples/data/fetch_nfl.sh",
        archive.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("nfl_2017_2018.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_sideline"))
        .args([
            "import",
            "nfl",
            "--seasons",
            "2017-2018",
            "--season-type",
            "reg,post",
        ])
        .arg("--data")
        .arg(&archive)
        .arg("--out")
        .arg(&events)
        .status()
        .unwrap();
    assert!(status.success(), "import failed");

    let models = root.join("models");
    let registry = Registry::new(Some(models.clone()));
    let plan = plan_pipeline(None, &registry).unwrap();
    let inputs = ModelInputs::of_plan(&plan).unwrap();
    let set = rows_from_jsonl(&plan, &inputs, &events).unwrap();
    assert_eq!(set.seasons(), vec![2017, 2018]);
    assert!(set.games > 500, "{} games", set.games);

    let ensemble = load_model(&models, ENSEMBLE).unwrap();
    let members: Vec<String> = ensemble
        .ensemble()
        .expect("an ensemble")
        .members()
        .map(str::to_string)
        .collect();
    assert!(members.len() >= 2, "{members:?}");
    let score = |m: &str| {
        let model = load_model(&models, m).unwrap();
        evaluate_model(&model, &inputs.names, &set.rows, 10).unwrap()
    };
    let mut evaluations: Vec<_> = members.iter().map(|m| score(m)).collect();
    evaluations.push(score(ENSEMBLE));
    evaluations.extend(OTHERS.iter().map(|m| score(m)));
    println!("{}", report("seasons 2017-2018", &evaluations));
    let (members, rest) = evaluations.split_at(members.len());
    let ensemble = &rest[..1];
    let best = members
        .iter()
        .min_by(|a, b| a.metrics.log_loss.total_cmp(&b.metrics.log_loss))
        .unwrap();
    assert!(
        ensemble[0].metrics.log_loss < best.metrics.log_loss,
        "ensemble log loss {:.5} is not below its best member's ({} {:.5})",
        ensemble[0].metrics.log_loss,
        best.model,
        best.metrics.log_loss
    );
    for (model, log_loss, brier, ece) in README {
        let e = evaluations
            .iter()
            .find(|e| e.model == model)
            .unwrap_or_else(|| panic!("{model} not evaluated"));
        let got = (
            format!("{:.4}", e.metrics.log_loss),
            format!("{:.4}", e.metrics.brier),
            format!("{:.4}", e.ece),
        );
        assert_eq!(
            got,
            (log_loss.to_string(), brier.to_string(), ece.to_string()),
            "{model}: README.md's figures are not what the models score"
        );
    }
    for e in &evaluations {
        assert!(
            e.metrics.log_loss < e.metrics.baseline_log_loss,
            "{} is no better than a constant",
            e.model
        );
    }
}
