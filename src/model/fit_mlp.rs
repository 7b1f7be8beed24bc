//! Fitting an MLP (`sideline train --kind mlp`) and writing it in the PyTorch layout
//! [`super::mlp`] loads: `nn.Sequential(Linear, ReLU, ..., Linear(_, 1))`'s `state_dict` plus
//! `input_mean` / `input_scale`.
//!
//! Mini-batch Adam on the mean log loss of the standardised inputs, by candle autograd. The
//! layers start as PyTorch's `nn.Linear` does (weights and biases uniform in
//! `±1/sqrt(fan_in)`), drawn from a seeded ChaCha8 stream, and each epoch visits the rows in
//! an order drawn from the same stream: the same rows, seed and options give the same
//! weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::data::{LabeledRow, RowSet};
use super::train::{measure_saved, new_manifest, standardisation, Adam, TrainArgs};
use super::{ModelError, PipelineRef, Training, WEIGHTS_FILE};

/// Options of an MLP fit.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpOptions {
    /// Hidden layer widths, input side first.
    pub hidden: Vec<usize>,
    pub epochs: usize,
    pub lr: f64,
    pub batch: usize,
    pub seed: u64,
}

impl Default for MlpOptions {
    fn default() -> Self {
        MlpOptions {
            hidden: vec![32, 16],
            epochs: 10,
            lr: 0.002,
            batch: 1024,
            seed: 7,
        }
    }
}

/// A fitted net: `(weight [out][in], bias [out])` per layer and the input standardisation.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpWeights {
    pub layers: Vec<(Vec<Vec<f32>>, Vec<f32>)>,
    pub input_mean: Vec<f32>,
    pub input_scale: Vec<f32>,
}

/// Fits an MLP on `rows` (see the module docs).
pub fn fit_mlp(rows: &[LabeledRow], opts: &MlpOptions) -> Result<MlpWeights, ModelError> {
    let bad = |m: String| ModelError::Weights(m);
    if rows.is_empty() {
        return Err(bad("no training rows to fit".into()));
    }
    if opts.batch == 0 || opts.hidden.contains(&0) {
        return Err(bad("batch size and hidden widths must be at least 1".into()));
    }
    let dev = Device::Cpu;
    let width = rows[0].inputs.len();
    if width == 0 || rows.iter().any(|r| r.inputs.len() != width) {
        return Err(ModelError::Inputs(
            "training rows must all have the same number of inputs, at least 1".into(),
        ));
    }
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.inputs.iter().copied()).collect();
    let (input_mean, input_scale) = standardisation(&flat, width);

    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut sizes = vec![width];
    sizes.extend(&opts.hidden);
    sizes.push(1);
    let mut params = Vec::new();
    for pair in sizes.windows(2) {
        let (inn, out) = (pair[0], pair[1]);
        let bound = 1.0 / (inn as f32).sqrt();
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
        let w = Var::from_tensor(&Tensor::from_vec(draw(out * inn), (out, inn), &dev)?)?;
        let b = Var::from_tensor(&Tensor::from_vec(draw(out), out, &dev)?)?;
        params.push((w, b));
    }
    let mut adams = params
        .iter()
        .map(|(w, b)| Ok((Adam::new(w)?, Adam::new(b)?)))
        .collect::<candle_core::Result<Vec<_>>>()?;

    let mut order: Vec<usize> = (0..rows.len()).collect();
    let mut step = 0;
    for epoch in 1..=opts.epochs {
        order.shuffle(&mut rng);
        let mut epoch_loss = 0.0;
        for chunk in order.chunks(opts.batch) {
            step += 1;
            let mut xs = Vec::with_capacity(chunk.len() * width);
            for &i in chunk {
                let row = &rows[i].inputs;
                xs.extend((0..width).map(|j| (row[j] - input_mean[j]) / input_scale[j]));
            }
            let ys: Vec<f32> = chunk.iter().map(|&i| rows[i].label as f32).collect();
            let x = Tensor::from_vec(xs, (chunk.len(), width), &dev)?;
            let y = Tensor::from_vec(ys, chunk.len(), &dev)?;
            let z = forward(&params, &x)?;
            // Mean log loss from logits, stably: softplus(z) - y z.
            let softplus = (z.relu()? + z.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
            let loss = (softplus - (&y * &z)?)?.mean_all()?;
            let grads = loss.backward()?;
            for ((w, b), (aw, ab)) in params.iter().zip(&mut adams) {
                let missing = || ModelError::Weights("no gradient for a weight".into());
                aw.step(w, grads.get(w).ok_or_else(missing)?, opts.lr, step)?;
                ab.step(b, grads.get(b).ok_or_else(missing)?, opts.lr, step)?;
            }
            epoch_loss += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        }
        tracing::info!(
            epoch,
            loss = epoch_loss / rows.len() as f64,
            "fit mlp (training loss during the epoch)"
        );
    }
    let layers = params
        .iter()
        .map(|(w, b)| {
            Ok((
                w.as_tensor().to_vec2::<f32>()?,
                b.as_tensor().to_vec1::<f32>()?,
            ))
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(MlpWeights {
        layers,
        input_mean,
        input_scale,
    })
}

/// `sideline train --kind mlp`: fits, writes `model.safetensors` and `manifest.json` in
/// `args.out`, and measures the model loaded back.
pub(super) fn run(
    args: &TrainArgs,
    pipeline: PipelineRef,
    inputs: &[String],
    train: &RowSet,
    eval: Option<&RowSet>,
) -> anyhow::Result<()> {
    let defaults = MlpOptions::default();
    let opts = MlpOptions {
        hidden: args.hidden.clone(),
        epochs: args.epochs.unwrap_or(defaults.epochs),
        lr: args.lr.unwrap_or(defaults.lr),
        batch: args.batch,
        seed: args.seed,
    };
    let started = std::time::Instant::now();
    let weights = fit_mlp(&train.rows, &opts)?;
    println!(
        "fitted an MLP {:?} in {:.1}s",
        opts.hidden,
        started.elapsed().as_secs_f64()
    );
    save_mlp(&weights, &args.out)?;
    let manifest = super::Manifest {
        training: Some(Training {
            framework: Some(format!(
                "sideline (candle autograd, Adam, mini-batches of {}, hidden {:?})",
                opts.batch, opts.hidden
            )),
            epochs: Some(opts.epochs),
            lr: Some(opts.lr),
            seed: Some(opts.seed),
            skipped_games: Some(train.skipped_games),
            ..Training::default()
        }),
        ..new_manifest(args, "mlp", pipeline, inputs, train, eval)
    };
    measure_saved(args, manifest, train, eval)
}

/// Logits `[B]` of standardised inputs `x` `[B, N]`.
fn forward(params: &[(Var, Var)], x: &Tensor) -> candle_core::Result<Tensor> {
    let mut h = x.clone();
    for (k, (w, b)) in params.iter().enumerate() {
        h = h
            .matmul(&w.as_tensor().t()?)?
            .broadcast_add(b.as_tensor())?;
        if k + 1 < params.len() {
            h = h.relu()?;
        }
    }
    h.squeeze(D::Minus1)
}

/// Writes `model.safetensors` in `dir`: `<2k>.weight`, `<2k>.bias` for the k-th linear layer
/// (the ReLUs sit at the odd indices), `input_mean`, `input_scale`; all f32.
pub fn save_mlp(weights: &MlpWeights, dir: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let dev = Device::Cpu;
    let mut tensors = HashMap::new();
    for (k, (w, b)) in weights.layers.iter().enumerate() {
        let (out, inn) = (w.len(), w.first().map_or(0, Vec::len));
        let flat: Vec<f32> = w.iter().flatten().copied().collect();
        tensors.insert(
            format!("{}.weight", 2 * k),
            Tensor::from_vec(flat, (out, inn), &dev)?,
        );
        tensors.insert(format!("{}.bias", 2 * k), Tensor::from_slice(b, out, &dev)?);
    }
    let n = weights.input_mean.len();
    tensors.insert(
        "input_mean".into(),
        Tensor::from_slice(&weights.input_mean, n, &dev)?,
    );
    tensors.insert(
        "input_scale".into(),
        Tensor::from_slice(&weights.input_scale, n, &dev)?,
    );
    debug_assert!(tensors.values().all(|t| t.dtype() == DType::F32));
    candle_core::safetensors::save(&tensors, dir.join(WEIGHTS_FILE))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mlp::Mlp;

    /// Rows whose label is 1 exactly when x0 * x1 > 0: not linearly separable.
    fn xor_rows(n: usize) -> Vec<LabeledRow> {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        (0..n)
            .map(|i| {
                let (a, b): (f32, f32) = (rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
                LabeledRow {
                    game_id: format!("g{i}"),
                    time_ms: 0,
                    inputs: vec![a * 10.0 + 3.0, b],
                    label: if a * b > 0.0 { 1.0 } else { 0.0 },
                }
            })
            .collect()
    }

    #[test]
    fn learns_what_a_linear_model_cannot_and_loads_back_with_the_same_logits() {
        let rows = xor_rows(4000);
        let opts = MlpOptions {
            hidden: vec![16, 8],
            epochs: 40,
            lr: 0.01,
            batch: 256,
            seed: 3,
        };
        let weights = fit_mlp(&rows, &opts).unwrap();
        assert_eq!(
            weights,
            fit_mlp(&rows, &opts).unwrap(),
            "seeded fit repeats"
        );
        let dir = tempfile::tempdir().unwrap();
        save_mlp(&weights, dir.path()).unwrap();
        let bytes = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
        let mlp = Mlp::from_safetensors(&bytes, 2).unwrap();
        let inputs: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| r.inputs.iter().map(|v| *v as f64).collect())
            .collect();
        let logits = mlp.logits(&inputs).unwrap();
        let right = rows
            .iter()
            .zip(&logits)
            .filter(|(r, z)| (**z > 0.0) == (r.label > 0.5))
            .count();
        // A linear model gets about half of these right.
        assert!(right as f64 > 0.9 * rows.len() as f64, "{right} right");
    }
}
