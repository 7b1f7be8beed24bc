//! Ensembles of registry models (`--members`) from `sideline train`:
//! - `--kind weighted_average`: the weighted mean of the members' logits, weights `--weights`
//!   (default equal), nothing fitted;
//! - `--kind stacking`: a logistic meta-model over the members' logits,
//!   `p = sigmoid(bias + sum_i w_i z_i)`, fitted on the rows given, which must be rows the
//!   members were not trained on (for the NFL: members on 2009-2015, the meta-model on 2016,
//!   via `--seasons`), by the same fit as the logistic regression ([`super::train::fit`]).

use super::data::{LabeledRow, RowSet};
use super::ensemble::{EnsembleSpec, MemberRef, Method};
use super::evaluate::{load_model, model_rows};
use super::online::{OnlineMethod, OnlineSpec};
use super::predictor::Predictor;
use super::train::{fit, measure_saved, new_manifest, FitOptions, TrainArgs};
use super::{PipelineRef, Training};

/// Builds (stacking: fits) the ensemble, writes its `manifest.json` to `args.out` and measures
/// it.
pub(super) fn run(
    args: &TrainArgs,
    pipeline: PipelineRef,
    inputs: &[String],
    train: &RowSet,
    eval: Option<&RowSet>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.members.is_empty(),
        "--kind {} needs --members NAME/VERSION,...",
        args.kind
    );
    anyhow::ensure!(
        args.kind == "weighted_average" || args.weights.is_empty(),
        "--weights is for --kind weighted_average: stacking fits its own"
    );
    anyhow::ensure!(
        args.kind == "weighted_average" || (args.online_eta, args.online_half_life) == (None, None),
        "--online-eta and --online-half-life are for --kind weighted_average"
    );
    let members = args
        .members
        .iter()
        .map(|m| load_model(&args.models, m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.kind == "weighted_average" {
        let weights = match args.weights.as_slice() {
            [] => vec![1.0; members.len()],
            w if w.len() == members.len() => w.to_vec(),
            w => anyhow::bail!("{} --weights for {} --members", w.len(), members.len()),
        };
        anyhow::ensure!(
            weights.iter().all(|w| w.is_finite() && *w > 0.0),
            "--weights must be finite and positive: {weights:?}"
        );
        let manifest = super::Manifest {
            ensemble: Some(EnsembleSpec {
                method: Method::WeightedAverage,
                members: refs(&members, &weights),
                bias: None,
                online: online_of(args)?,
            }),
            ..new_manifest(args, "ensemble", pipeline, inputs, train, eval)
        };
        return measure_saved(args, manifest, train, eval);
    }
    // A meta-model fitted on rows its members were trained on learns to trust them too much.
    let seasons = train.seasons();
    for m in &members {
        let seen: Vec<u32> = m
            .manifest()
            .train_seasons
            .iter()
            .copied()
            .filter(|s| seasons.contains(s))
            .collect();
        anyhow::ensure!(
            seen.is_empty(),
            "member {} was trained on seasons {seen:?} of these rows: fit the meta-model on \
             seasons its members did not see (--seasons)",
            m.version()
        );
    }
    // Each member's logits on the training rows: the meta-model's inputs.
    let mut logits = Vec::new();
    for m in &members {
        let rows = model_rows(m, inputs, &train.rows)?;
        logits.push(m.outputs(&rows)?);
    }
    let meta_rows: Vec<LabeledRow> = train
        .rows
        .iter()
        .enumerate()
        .map(|(k, r)| LabeledRow {
            game_id: r.game_id.clone(),
            time_ms: r.time_ms,
            inputs: logits.iter().map(|z| z[k] as f32).collect(),
            label: r.label,
        })
        .collect();
    let opts = FitOptions {
        epochs: args.epochs.unwrap_or(FitOptions::default().epochs),
        lr: args.lr.unwrap_or(FitOptions::default().lr),
    };
    let w = fit(&meta_rows, &opts)?;
    // From standardised logits back to raw ones: w_i (z_i - mean_i) / scale_i.
    let mut bias = w.bias as f64;
    let mut coefficients = Vec::new();
    for i in 0..members.len() {
        let c = w.weight[i] as f64 / w.input_scale[i] as f64;
        bias -= c * w.input_mean[i] as f64;
        coefficients.push(c);
    }
    let spec = EnsembleSpec {
        method: Method::Stacking,
        members: refs(&members, &coefficients),
        bias: Some(bias),
        online: None,
    };
    println!(
        "meta-model: bias {bias:.4}, {}",
        spec.members
            .iter()
            .map(|m| format!("{}/{} {:.4}", m.name, m.version, m.weight))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let manifest = super::Manifest {
        ensemble: Some(spec),
        training: Some(Training {
            framework: Some(
                "sideline (stacking: logistic regression over member logits, full-batch Adam)"
                    .into(),
            ),
            epochs: Some(opts.epochs),
            lr: Some(opts.lr),
            skipped_games: Some(train.skipped_games),
            ..Training::default()
        }),
        ..new_manifest(args, "ensemble", pipeline, inputs, train, eval)
    };
    measure_saved(args, manifest, train, eval)
}

fn refs(members: &[Predictor], weights: &[f64]) -> Vec<MemberRef> {
    members
        .iter()
        .zip(weights)
        .map(|(m, w)| MemberRef {
            name: m.manifest().name.clone(),
            version: m.manifest().version.clone(),
            weight: *w,
        })
        .collect()
}

/// The `online` re-weighting `--online-eta` / `--online-half-life` ask for (either one gives
/// the other its default: eta 1, half-life 50 games).
fn online_of(args: &TrainArgs) -> anyhow::Result<Option<OnlineSpec>> {
    if (args.online_eta, args.online_half_life) == (None, None) {
        return Ok(None);
    }
    let spec = OnlineSpec {
        method: OnlineMethod::ExpLogLoss,
        eta: args.online_eta.unwrap_or(1.0),
        half_life_games: args.online_half_life.unwrap_or(50.0),
    };
    spec.check().map_err(anyhow::Error::msg)?;
    Ok(Some(spec))
}
