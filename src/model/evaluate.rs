//! `sideline evaluate`: scores registry models (any kind, ensembles included) on labelled rows
//! computed by a pipeline, and prints for each its log loss, Brier score and calibration: a
//! reliability table and the expected calibration error, as Markdown.
//!
//! ```text
//! sideline evaluate --eval-features data/nfl_eval.arrow \
//!     --model nfl_wp_lr/v1 --model nfl_wp_gbt/v1 --model nfl_wp_mlp/v1 --model nfl_wp_ens/v1
//! ```
//!
//! **Calibration.** The rows are put in [`EvaluateArgs::bins`] equal-width bins of the
//! predicted probability (`[0, 0.1)`, ..., `[0.9, 1]`). Per bin: the rows, their mean
//! prediction and the observed home-win rate (ties count half). The expected calibration
//! error is the row-weighted mean of `|mean prediction - observed|` over the bins.
//!
//! Every model is scored through [`Predictor::score`], the engine's own path, on the rows'
//! inputs as the cached matrices hold them (f32; a logistic regression casts its inputs to
//! f32 in the engine too, the other kinds see the f32 value widened).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use super::data::{LabeledRow, ModelInputs, RowSet, SeasonRange};
use super::ensemble::Method;
use super::online::{OnlineMethod, OnlineSpec};
use super::predictor::Predictor;
use super::train::{load_rows, metrics_of, plan_pipeline, print_metrics};
use super::{Metrics, PipelineRef};
use crate::pipeline::Registry;

/// Options of `sideline evaluate`.
#[derive(Clone, Debug, clap::Args)]
pub struct EvaluateArgs {
    /// Models to score, `name/version` in the registry (`--models`); repeat for several.
    #[arg(long = "model", value_name = "NAME/VERSION", required = true)]
    pub models_to_score: Vec<String>,
    /// The model registry.
    #[arg(long, value_name = "DIR", default_value = "models")]
    pub models: PathBuf,
    /// Pipeline file whose features the rows hold [default: the embedded NFL pipeline].
    #[arg(long, value_name = "FILE.toml")]
    pub pipeline: Option<PathBuf>,
    /// Evaluation events, GameEvent JSON lines (seasons 2017-2018).
    #[arg(
        long,
        value_name = "FILE.jsonl",
        required_unless_present_any = ["eval_features", "archive"]
    )]
    pub eval: Option<PathBuf>,
    /// A cached evaluation matrix (`sideline train --eval-features-out`) instead of events.
    #[arg(long, value_name = "FILE.arrow", conflicts_with = "eval")]
    pub eval_features: Option<PathBuf>,
    /// The rows of a feature archive directory (this pipeline's `[[output]] kind =
    /// "archive"`), labelled by `--results`.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["eval", "eval_features"], requires = "results")]
    pub archive: Option<PathBuf>,
    /// GameEvent JSON lines whose `game_end` events give the results of the `--archive` games.
    #[arg(long, value_name = "FILE.jsonl", requires = "archive")]
    pub results: Option<PathBuf>,
    /// Keep only the rows of these seasons, e.g. `2017-2018` or `2016`.
    #[arg(long, value_name = "FROM[-TO]")]
    pub seasons: Option<SeasonRange>,
    /// Replay every weighted_average or soft_voting ensemble re-weighted online
    /// (`exp_log_loss`) with this `eta`, in place of its manifest's `online` (an ensemble that
    /// has one is replayed anyway).
    #[arg(long)]
    pub online_eta: Option<f64>,
    /// The online re-weighting's half-life in games, in place of the manifest's (default 50
    /// when it has none).
    #[arg(long)]
    pub online_half_life: Option<f64>,
    /// Bins of the reliability table.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub bins: u16,
}

/// A model's figures on a row set.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub model: String,
    pub kind: String,
    pub metrics: Metrics,
    /// Expected calibration error over [`Self::reliability`].
    pub ece: f64,
    pub reliability: Vec<Bin>,
}

/// One bin of a reliability table.
#[derive(Clone, Debug, PartialEq)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub rows: usize,
    pub mean_predicted: f64,
    pub observed: f64,
}

/// The reliability table of probabilities `p` against the rows' labels in `bins` equal-width
/// bins (empty bins included, with zeros), and its expected calibration error.
pub fn calibration(p: &[f64], rows: &[LabeledRow], bins: usize) -> (Vec<Bin>, f64) {
    let bins = bins.max(1);
    let mut sum_p = vec![0.0; bins];
    let mut sum_y = vec![0.0; bins];
    let mut count = vec![0usize; bins];
    for (p, r) in p.iter().zip(rows) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        sum_p[b] += p;
        sum_y[b] += r.label;
        count[b] += 1;
    }
    let n = rows.len().max(1) as f64;
    let mut ece = 0.0;
    let table = (0..bins)
        .map(|b| {
            let c = count[b].max(1) as f64;
            let (mean_predicted, observed) = (sum_p[b] / c, sum_y[b] / c);
            ece += count[b] as f64 / n * (mean_predicted - observed).abs();
            Bin {
                lo: b as f64 / bins as f64,
                hi: (b + 1) as f64 / bins as f64,
                rows: count[b],
                mean_predicted,
                observed,
            }
        })
        .collect();
    (table, ece)
}

/// `model`'s inputs out of `rows`, whose inputs are `names`: it picks its own by name.
pub fn model_rows(
    model: &Predictor,
    names: &[String],
    rows: &[LabeledRow],
) -> anyhow::Result<Vec<Vec<f64>>> {
    let picks = model
        .inputs()
        .iter()
        .map(|n| {
            names.iter().position(|m| m == n).with_context(|| {
                format!("{} takes input `{n}`, which the rows lack", model.version())
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(rows
        .iter()
        .map(|r| picks.iter().map(|&i| r.inputs[i] as f64).collect())
        .collect())
}

/// `rows` with `model`'s inputs only, in its order.
fn labeled_rows(
    model: &Predictor,
    names: &[String],
    rows: &[LabeledRow],
) -> anyhow::Result<Vec<LabeledRow>> {
    Ok(model_rows(model, names, rows)?
        .into_iter()
        .zip(rows)
        .map(|(inputs, r)| LabeledRow {
            inputs: inputs.into_iter().map(|x| x as f32).collect(),
            ..r.clone()
        })
        .collect())
}

/// Every input any of `models` takes, in first-seen order.
pub fn union_inputs(models: &[Predictor]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for m in models {
        for n in m.inputs() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    names
}

/// Scores `model` on `rows`, whose inputs are `names` (the model picks its own by name).
pub fn evaluate_model(
    model: &Predictor,
    names: &[String],
    rows: &[LabeledRow],
    bins: usize,
) -> anyhow::Result<Evaluation> {
    let inputs = model_rows(model, names, rows)?;
    let p = model.score(&inputs)?;
    let (reliability, ece) = calibration(&p, rows, bins);
    Ok(Evaluation {
        model: model.version().to_string(),
        kind: model.kind().as_str().to_string(),
        metrics: metrics_of(&p, rows),
        ece,
        reliability,
    })
}

/// The Markdown report: a summary table, then the reliability table.
pub fn report(set: &str, evaluations: &[Evaluation]) -> String {
    let mut out = String::new();
    if let Some(first) = evaluations.first() {
        let m = &first.metrics;
        out += &format!(
            "{set}: {} rows of {} games; constant predictor log loss {:.4}, Brier {:.4}\n\n",
            m.rows, m.games, m.baseline_log_loss, m.baseline_brier
        );
    }
    out += "| model | kind | log loss | Brier | ECE |\n|---|---|---|---|---|\n";
    for e in evaluations {
        out += &format!(
            "| {} | {} | {:.4} | {:.4} | {:.4} |\n",
            e.model, e.kind, e.metrics.log_loss, e.metrics.brier, e.ece
        );
    }
    out += "\nReliability: mean predicted / observed home-win rate (rows) per bin of the \
            prediction\n\n| bin |";
    for e in evaluations {
        out += &format!(" {} |", e.model);
    }
    out += "\n|---|";
    out += &"---|".repeat(evaluations.len());
    out += "\n";
    let bins = evaluations.first().map_or(0, |e| e.reliability.len());
    for b in 0..bins {
        let bin = &evaluations[0].reliability[b];
        out += &format!("| {:.1}-{:.1} |", bin.lo, bin.hi);
        for e in evaluations {
            let bin = &e.reliability[b];
            if bin.rows == 0 {
                out += " - |";
            } else {
                out += &format!(
                    " {:.3} / {:.3} ({}) |",
                    bin.mean_predicted, bin.observed, bin.rows
                );
            }
        }
        out += "\n";
    }
    out
}

/// Loads `name/version` from `registry`.
pub fn load_model(registry: &std::path::Path, spec: &str) -> anyhow::Result<Predictor> {
    let (name, version) = spec
        .split_once('/')
        .with_context(|| format!("model `{spec}`: expected NAME/VERSION"))?;
    Predictor::load(Some(registry), name, version)
        .with_context(|| format!("loading model {spec} from {}", registry.display()))
}

/// `sideline evaluate`.
pub fn run(args: EvaluateArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let registry = Registry::new(Some(args.models.clone()));
    let plan = plan_pipeline(args.pipeline.as_deref(), &registry)?;
    let models = args
        .models_to_score
        .iter()
        .map(|m| load_model(&args.models, m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The rows hold every input any of the models takes.
    let names = union_inputs(&models);
    for m in &models {
        if m.manifest().pipeline.as_ref() != Some(&PipelineRef::of_plan(&plan)) {
            println!(
                "note: {} was trained with pipeline {:?}, these rows come from {:?}",
                m.version(),
                m.manifest().pipeline,
                PipelineRef::of_plan(&plan)
            );
        }
    }
    let inputs = ModelInputs::by_name(&plan, &names)?;
    let mut set: RowSet = match (&args.archive, &args.results) {
        (Some(dir), Some(results)) => super::archive_rows::load(dir, results, &plan, &inputs)?,
        _ => load_rows(
            &plan,
            &inputs,
            args.eval.as_deref(),
            args.eval_features.as_deref(),
            None,
        )?
        .context("give --eval, --eval-features or --archive")?,
    };
    if let Some(range) = &args.seasons {
        set = set.only(range);
    }
    anyhow::ensure!(!set.rows.is_empty(), "no rows to evaluate on");
    let evaluations = models
        .iter()
        .map(|m| evaluate_model(m, &inputs.names, &set.rows, args.bins.into()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let seasons = set.seasons();
    print!("{}", report(&format!("seasons {seasons:?}"), &evaluations));
    for m in &models {
        if let Some(spec) = online_spec(&args, m)? {
            let rows = labeled_rows(m, &inputs.names, &set.rows)?;
            print_online(m, &spec, &rows)?;
        }
    }
    println!("\n(evaluated in {:.1}s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// The online re-weighting to replay: the manifest's, with the flags in place of its values.
fn online_spec(args: &EvaluateArgs, model: &Predictor) -> anyhow::Result<Option<OnlineSpec>> {
    let manifest = model.ensemble().and_then(|e| e.online()).cloned();
    if manifest.is_none() && args.online_eta.is_none() && args.online_half_life.is_none() {
        return Ok(None);
    }
    let Some(ensemble) = model.ensemble() else {
        return Ok(None);
    };
    if !matches!(
        ensemble.method(),
        Method::WeightedAverage | Method::SoftVoting
    ) {
        return Ok(None);
    }
    let spec = OnlineSpec {
        method: OnlineMethod::ExpLogLoss,
        eta: args
            .online_eta
            .or(manifest.as_ref().map(|s| s.eta))
            .unwrap_or(1.0),
        half_life_games: args
            .online_half_life
            .or(manifest.as_ref().map(|s| s.half_life_games))
            .unwrap_or(50.0),
    };
    spec.check().map_err(anyhow::Error::msg)?;
    Ok(Some(spec))
}

/// Replays `rows` through the ensemble re-weighted online and prints each member's figures,
/// the fixed weights' and the online ones'.
fn print_online(model: &Predictor, spec: &OnlineSpec, rows: &[LabeledRow]) -> anyhow::Result<()> {
    let ensemble = model.ensemble().context("an ensemble")?;
    let r = super::online::replay(model, spec, rows)?;
    println!(
        "\n{}, re-weighted online: {:?} eta {} half-life {} games, in game-time order:",
        model.version(),
        spec.method,
        spec.eta,
        spec.half_life_games
    );
    for (name, p) in ensemble.members().zip(&r.members) {
        print_metrics(&format!("  member {name}"), &metrics_of(p, rows));
    }
    print_metrics(
        &format!("  fixed weights {:?}", ensemble.weights()),
        &metrics_of(&r.fixed, rows),
    );
    print_metrics("  online", &metrics_of(&r.online, rows));
    println!(
        "  online: {} games applied, final weights {:?}",
        r.games,
        r.final_weights
            .iter()
            .map(|w| (w * 1e4).round() / 1e4)
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: f64) -> LabeledRow {
        LabeledRow {
            game_id: "g".into(),
            time_ms: 0,
            inputs: vec![],
            label,
        }
    }

    #[test]
    fn calibration_bins_by_prediction_and_weights_the_gaps_by_rows() {
        let p = [0.05, 0.05, 0.95, 0.95, 0.55, 1.0];
        let rows: Vec<_> = [0.0, 1.0, 1.0, 1.0, 0.0, 1.0].map(row).into();
        let (table, ece) = calibration(&p, &rows, 10);
        assert_eq!(table.len(), 10);
        assert_eq!(table[0].rows, 2);
        assert!((table[0].observed - 0.5).abs() < 1e-12);
        assert_eq!(table[5].rows, 1);
        assert_eq!(table[9].rows, 3, "1.0 falls in the last bin");
        let expected = (2.0 * 0.45 + 1.0 * 0.55 + 3.0 * (1.0 - (0.95 + 0.95 + 1.0) / 3.0)) / 6.0;
        assert!((ece - expected).abs() < 1e-12, "{ece} vs {expected}");
    }

    #[test]
    fn a_perfectly_calibrated_predictor_has_no_calibration_error() {
        let p = [0.25; 8];
        let rows: Vec<_> = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0].map(row).into();
        assert!(calibration(&p, &rows, 10).1.abs() < 1e-12);
    }
}
