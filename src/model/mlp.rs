//! A multi-layer perceptron (kind `mlp`): dense layers with ReLU between them and one logit
//! out, `p = sigmoid(net((x - mean) / scale))`.
//!
//! # Weights: the PyTorch layout
//!
//! `model.safetensors` holds the `state_dict()` of a PyTorch
//! `nn.Sequential(nn.Linear(N, H1), nn.ReLU(), nn.Linear(H1, H2), nn.ReLU(), ..., nn.Linear(Hk, 1))`,
//! saved with `safetensors.torch.save_file(net.state_dict(), ...)` (any float dtype; held as
//! f64 here):
//!
//! - `<i>.weight` `[out, in]` and `<i>.bias` `[out]` for each `nn.Linear` at index `i` of the
//!   `Sequential`. Consecutive linear layers must be two indices apart (`0`, `2`, `4`...): the
//!   module between them is the `nn.ReLU` (which has no tensors). The first layer's `in` is
//!   the manifest's input count, the last layer's `out` is 1 (the logit; the sigmoid is
//!   applied here, not in the net).
//! - optionally `input_mean` and `input_scale` `[N]`: the standardisation the net was trained
//!   on (`(x - mean) / scale`; without them the inputs go in raw);
//! - optionally `reference` `[N]`: the input DeepLIFT compares with (default: `input_mean`,
//!   else zeros).
//!
//! Any other tensor name is refused, so a net of another shape (a nested module whose keys are
//! `net.0.weight`, a `Sigmoid` inside the `Sequential`...) fails at load instead of scoring
//! wrong. `examples/models/make_reference.py` writes one; `tests/model_parity.rs` checks the
//! outputs against PyTorch's.
//!
//! # Scoring
//!
//! Each dense layer is a broadcast multiply `[B, 1, in] * [1, out, in]` and a sum over the last
//! dimension, in candle f64, not a matmul: a row's value is bit-identical whatever batch it is
//! in, and candle's rayon pool is never started (see the [`super`] docs).
//!
//! # Attributions: DeepLIFT (Rescale rule)
//!
//! Shrikumar et al. 2017, "Learning Important Features Through Propagating Activation
//! Differences". The row and the reference input go forward; multipliers go back from the
//! logit: through a linear layer by its transposed weights, through a ReLU by the ratio
//! `(relu(a) - relu(a_ref)) / (a - a_ref)` (its slope at `a` where `|a - a_ref| < 1e-12`). An
//! input's attribution is its multiplier times `x_i - reference_i`. For a ReLU net this is
//! *exact*: the attributions sum to `logit(x) - logit(reference)` (summation to delta), up to
//! f64 rounding, unlike integrated gradients whose sum depends on a step count; it costs one
//! extra forward pass and one backward, and it is deterministic (fixed loop order, f64). The
//! baseline is `logit(reference)`.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};

use super::explain::LogitExplanation;
use super::ModelError;

/// One `nn.Linear`.
#[derive(Clone, Debug)]
struct Dense {
    /// `[1, out, in]`, f64.
    weight: Tensor,
    /// `[out]`, f64.
    bias: Tensor,
    /// The weights `[out][in]` for the backward pass.
    rows: Vec<Vec<f64>>,
}

/// A loaded MLP.
#[derive(Clone, Debug)]
pub struct Mlp {
    inputs: usize,
    layers: Vec<Dense>,
    /// `[N]` f64.
    mean: Tensor,
    /// `[N]` f64.
    inv_scale: Tensor,
    inv_scale_values: Vec<f64>,
    reference: Vec<f64>,
    /// Pre-activations of every layer at the reference input.
    reference_pre: Vec<Vec<f64>>,
}

impl Mlp {
    /// Builds the net from the contents of `model.safetensors` for `inputs` inputs.
    pub fn from_safetensors(bytes: &[u8], inputs: usize) -> Result<Self, ModelError> {
        let dev = Device::Cpu;
        let bad = |m: String| ModelError::Weights(m);
        let tensors =
            candle_core::safetensors::load_buffer(bytes, &dev).map_err(|e| bad(e.to_string()))?;
        let mut linear: BTreeMap<usize, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
        let mut extra: HashMap<&str, Tensor> = HashMap::new();
        for (name, t) in &tensors {
            let t = t.to_dtype(DType::F64)?;
            match name.as_str() {
                "input_mean" | "input_scale" | "reference" => {
                    if t.dims() != [inputs] {
                        return Err(bad(format!(
                            "tensor `{name}` has shape {:?}, expected [{inputs}]",
                            t.dims()
                        )));
                    }
                    extra.insert(name.as_str(), t);
                }
                _ => {
                    let parsed = name
                        .split_once('.')
                        .and_then(|(i, what)| Some((i.parse::<usize>().ok()?, what)));
                    let entry = match parsed {
                        Some((i, "weight")) => &mut linear.entry(i).or_default().0,
                        Some((i, "bias")) => &mut linear.entry(i).or_default().1,
                        _ => {
                            return Err(bad(format!(
                                "unexpected tensor `{name}`: an MLP holds `<i>.weight`, \
                                 `<i>.bias` of an nn.Sequential, and optionally input_mean, \
                                 input_scale, reference"
                            )))
                        }
                    };
                    *entry = Some(t);
                }
            }
        }
        if linear.is_empty() {
            return Err(bad("no `<i>.weight` tensors: no layers".into()));
        }
        let mut layers = Vec::new();
        let mut width = inputs;
        let mut previous: Option<usize> = None;
        let last = *linear.keys().next_back().expect("not empty");
        for (i, (w, b)) in linear {
            if let Some(p) = previous {
                if i != p + 2 {
                    return Err(bad(format!(
                        "linear layers at indices {p} and {i}: expected them two apart \
                         (Linear, ReLU, Linear)"
                    )));
                }
            }
            previous = Some(i);
            let w = w.ok_or_else(|| bad(format!("`{i}.weight` is missing")))?;
            let b = b.ok_or_else(|| bad(format!("`{i}.bias` is missing")))?;
            let (out, inn) = w
                .dims2()
                .map_err(|_| bad(format!("`{i}.weight` has shape {:?}", w.dims())))?;
            if inn != width || b.dims() != [out] || (i == last && out != 1) {
                return Err(bad(format!(
                    "layer {i}: weight {:?} and bias {:?}, expected [{}, {width}] and [{}]",
                    w.dims(),
                    b.dims(),
                    if i == last {
                        "1".into()
                    } else {
                        "out".to_string()
                    },
                    if i == last { "1" } else { "out" },
                )));
            }
            let rows = w.to_vec2::<f64>()?;
            if rows
                .iter()
                .flatten()
                .chain(&b.to_vec1::<f64>()?)
                .any(|v| !v.is_finite())
            {
                return Err(bad(format!("layer {i} has a non-finite weight")));
            }
            layers.push(Dense {
                weight: w.unsqueeze(0)?,
                bias: b,
                rows,
            });
            width = out;
        }
        let vec = |name: &str, default: f64| -> Result<Vec<f64>, ModelError> {
            Ok(match extra.get(name) {
                Some(t) => t.to_vec1::<f64>()?,
                None => vec![default; inputs],
            })
        };
        let mean = vec("input_mean", 0.0)?;
        let scale = vec("input_scale", 1.0)?;
        if !mean.iter().all(|m| m.is_finite()) || !scale.iter().all(|s| s.is_finite() && *s > 0.0) {
            return Err(bad(
                "input_mean must be finite and input_scale positive".into()
            ));
        }
        let reference = match extra.get("reference") {
            Some(t) => t.to_vec1::<f64>()?,
            None => mean.clone(),
        };
        let inv: Vec<f64> = scale.iter().map(|s| 1.0 / s).collect();
        let mut mlp = Mlp {
            inputs,
            layers,
            mean: Tensor::from_vec(mean, inputs, &dev)?,
            inv_scale: Tensor::from_slice(&inv, inputs, &dev)?,
            inv_scale_values: inv,
            reference: reference.clone(),
            reference_pre: Vec::new(),
        };
        mlp.reference_pre = mlp
            .forward(&[reference])?
            .into_iter()
            .map(|mut layer| layer.remove(0))
            .collect();
        Ok(mlp)
    }

    /// Number of inputs.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// The input DeepLIFT compares with.
    pub fn reference(&self) -> &[f64] {
        &self.reference
    }

    /// Pre-activations of every layer, `[layer][row][unit]`; the last layer's is the logit.
    fn forward<R: AsRef<[f64]>>(&self, rows: &[R]) -> Result<Vec<Vec<Vec<f64>>>, ModelError> {
        self.forward_tensors(rows)?
            .iter()
            .map(|a| Ok(a.to_vec2::<f64>()?))
            .collect()
    }

    /// Pre-activations of every layer as `[rows, out]` tensors: a few allocations per layer
    /// and batch, none per row.
    fn forward_tensors<R: AsRef<[f64]>>(&self, rows: &[R]) -> Result<Vec<Tensor>, ModelError> {
        let mut flat = Vec::with_capacity(rows.len() * self.inputs);
        for r in rows {
            flat.extend_from_slice(r.as_ref());
        }
        let x = Tensor::from_vec(flat, (rows.len(), self.inputs), &Device::Cpu)?;
        let mut h = x
            .broadcast_sub(&self.mean)?
            .broadcast_mul(&self.inv_scale)?;
        let mut out = Vec::with_capacity(self.layers.len());
        for (k, layer) in self.layers.iter().enumerate() {
            // [B, 1, in] * [1, out, in], summed over `in`: no matmul (batch invariance).
            let a = h
                .unsqueeze(1)?
                .broadcast_mul(&layer.weight)?
                .sum(2)?
                .broadcast_add(&layer.bias)?;
            if k + 1 < self.layers.len() {
                h = a.relu()?;
            }
            out.push(a);
        }
        Ok(out)
    }

    /// Logits of `rows` (each of [`Self::inputs`] raw values).
    pub fn logits<R: AsRef<[f64]>>(&self, rows: &[R]) -> Result<Vec<f64>, ModelError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let pre = self.forward_tensors(rows)?;
        Ok(pre
            .last()
            .expect("a layer")
            .flatten_all()?
            .to_vec1::<f64>()?)
    }

    /// Logits and DeepLIFT attributions of `rows` (see the module docs).
    pub(crate) fn explain<R: AsRef<[f64]>>(
        &self,
        rows: &[R],
    ) -> Result<Vec<LogitExplanation>, ModelError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let pre = self.forward(rows)?;
        let baseline = self.reference_pre.last().expect("a layer")[0];
        let last = self.layers.len() - 1;
        Ok(rows
            .iter()
            .enumerate()
            .map(|(r, row)| {
                // Multipliers of the last layer's output: d logit / d logit = 1.
                let mut m = vec![1.0];
                for k in (0..=last).rev() {
                    let w = &self.layers[k].rows;
                    let width = w[0].len();
                    // Through the linear layer: m_in[j] = sum_o m[o] * w[o][j].
                    let mut m_in = vec![0.0; width];
                    for (o, wo) in w.iter().enumerate() {
                        for (j, wj) in wo.iter().enumerate() {
                            m_in[j] += m[o] * wj;
                        }
                    }
                    if k > 0 {
                        // Through the ReLU after layer k - 1: the Rescale rule.
                        let (a, a_ref) = (&pre[k - 1][r], &self.reference_pre[k - 1]);
                        for (j, mj) in m_in.iter_mut().enumerate() {
                            let delta = a[j] - a_ref[j];
                            let ratio = if delta.abs() < 1e-12 {
                                if a[j] > 0.0 {
                                    1.0
                                } else {
                                    0.0
                                }
                            } else {
                                (a[j].max(0.0) - a_ref[j].max(0.0)) / delta
                            };
                            *mj *= ratio;
                        }
                    }
                    m = m_in;
                }
                let x = row.as_ref();
                let attributions = (0..self.inputs)
                    .map(|i| m[i] * ((x[i] - self.reference[i]) * self.inv_scale_values[i]))
                    .collect();
                LogitExplanation {
                    logit: pre[last][r][0],
                    baseline,
                    attributions,
                }
            })
            .collect())
    }
}
