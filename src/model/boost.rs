//! Fitting gradient-boosted trees (kind `gbt`) in sideline, and writing them in XGBoost's
//! JSON format so that [`super::gbt::Gbt`] (and XGBoost) load them.
//!
//! The fit is second-order gradient boosting on the logistic loss, as XGBoost's
//! `binary:logistic` with `tree_method=hist`: the margin starts at the logit of the mean label;
//! each round computes per-row gradients `p - y` and hessians `p (1 - p)`, grows one tree
//! depth-first to `max_depth` over histogram bins (up to `bins` quantile thresholds per input,
//! taken from the sorted training values), choosing at each node the split of largest gain
//! `G_L^2 / (H_L + lambda) + G_R^2 / (H_R + lambda) - G^2 / (H + lambda)` whose children each
//! hold at least `min_child_weight` of hessian, and sets each leaf to
//! `-lr * G / (H + lambda)`. Ties go to the lower input index, then the lower threshold; all
//! sums are f64 in row order, so the same rows give the same trees bit for bit on any machine
//! (there is nothing random: no row or column subsampling). Rows go left when
//! `x < threshold`, as XGBoost's do; missing values go left.

use std::path::Path;

use serde_json::{json, Value};

use super::data::LabeledRow;
use super::gbt::{Gbt, Node, Tree};
use super::ModelError;

/// Boosting options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoostOptions {
    /// Boosting rounds (trees).
    pub trees: usize,
    pub max_depth: usize,
    /// Shrinkage (XGBoost's `eta`).
    pub lr: f64,
    /// L2 penalty on leaf values (XGBoost's `lambda`).
    pub lambda: f64,
    /// Least hessian a child may hold.
    pub min_child_weight: f64,
    /// Most thresholds per input.
    pub bins: usize,
}

impl Default for BoostOptions {
    fn default() -> Self {
        BoostOptions {
            trees: 60,
            max_depth: 3,
            lr: 0.2,
            lambda: 1.0,
            min_child_weight: 1.0,
            bins: 64,
        }
    }
}

/// Fits trees on `rows` (all of the same width); see the module docs.
pub fn fit_gbt(rows: &[LabeledRow], opts: &BoostOptions) -> Result<Gbt, ModelError> {
    let width = rows.first().map_or(0, |r| r.inputs.len());
    if rows.is_empty() || width == 0 || rows.iter().any(|r| r.inputs.len() != width) {
        return Err(ModelError::Inputs(
            "training rows must be non-empty, all of the same number of inputs".into(),
        ));
    }
    let positive = opts.lr.is_finite() && opts.lr > 0.0;
    if opts.max_depth == 0
        || opts.bins == 0
        || !positive
        || opts.lambda.is_nan()
        || opts.lambda < 0.0
    {
        return Err(ModelError::Inputs(
            "max depth and bins must be at least 1, lr positive, lambda not negative".into(),
        ));
    }
    let thresholds: Vec<Vec<f32>> = (0..width)
        .map(|j| thresholds_of(rows.iter().map(|r| r.inputs[j]), opts.bins))
        .collect();
    // binned[row][input]: the number of thresholds the value reaches (x >= t).
    let binned: Vec<Vec<u16>> = rows
        .iter()
        .map(|r| {
            (0..width)
                .map(|j| thresholds[j].partition_point(|t| r.inputs[j] >= *t) as u16)
                .collect()
        })
        .collect();
    let mean = rows.iter().map(|r| r.label).sum::<f64>() / rows.len() as f64;
    // The base score as the JSON file spells it (an f32 printed), so that a saved model reads
    // back bit for bit.
    let base_score: f64 = format!("{:E}", mean.clamp(1e-3, 1.0 - 1e-3) as f32)
        .parse()
        .expect("a printed f32 parses");
    let base_margin = (base_score / (1.0 - base_score)).ln();
    let mut margin = vec![base_margin; rows.len()];
    let mut trees = Vec::with_capacity(opts.trees);
    for _ in 0..opts.trees {
        let (g, h): (Vec<f64>, Vec<f64>) = rows
            .iter()
            .zip(&margin)
            .map(|(r, m)| {
                let p = super::explain::sigmoid(*m);
                (p - r.label, (p * (1.0 - p)).max(1e-16))
            })
            .unzip();
        let grower = Grower {
            binned: &binned,
            thresholds: &thresholds,
            g: &g,
            h: &h,
            opts,
        };
        let mut nodes = vec![PLACEHOLDER];
        let all: Vec<usize> = (0..rows.len()).collect();
        grower.grow(&mut nodes, 0, all, 0);
        let tree = Tree { nodes };
        for (m, r) in margin.iter_mut().zip(rows) {
            *m += leaf_value(&tree, &r.inputs);
        }
        trees.push(tree);
    }
    Ok(Gbt::new(width, trees, base_score))
}

/// Up to `bins` distinct quantiles of the values (f32, as XGBoost compares).
fn thresholds_of(values: impl Iterator<Item = f32>, bins: usize) -> Vec<f32> {
    let mut v: Vec<f32> = values.filter(|x| !x.is_nan()).collect();
    v.sort_by(f32::total_cmp);
    let mut out: Vec<f32> = (1..=bins)
        .map(|k| v[(k * v.len() / (bins + 1)).min(v.len() - 1)])
        .collect();
    out.dedup();
    // A threshold equal to the smallest value splits nothing off.
    out.retain(|t| Some(t) != v.first());
    out
}

fn leaf_value(tree: &Tree, row: &[f32]) -> f64 {
    let mut i = 0;
    loop {
        match &tree.nodes[i] {
            Node::Leaf { value, .. } => return *value,
            Node::Split {
                feature,
                threshold,
                left,
                right,
                ..
            } => {
                i = if row[*feature] < *threshold {
                    *left
                } else {
                    *right
                }
            }
        }
    }
}

/// A node about to be grown.
const PLACEHOLDER: Node = Node::Leaf {
    value: 0.0,
    cover: 0.0,
};

struct Grower<'a> {
    binned: &'a [Vec<u16>],
    thresholds: &'a [Vec<f32>],
    g: &'a [f64],
    h: &'a [f64],
    opts: &'a BoostOptions,
}

impl Grower<'_> {
    /// Grows the subtree of `rows` at `depth` into node `id`. A split's two children are
    /// appended side by side, right = left + 1 (XGBoost's predictor assumes it: it steps to
    /// `left + !(x < threshold)`), after their parent (as the loader requires).
    fn grow(&self, nodes: &mut Vec<Node>, id: usize, rows: Vec<usize>, depth: usize) {
        let (gs, hs) = rows
            .iter()
            .fold((0.0, 0.0), |(g, h), r| (g + self.g[*r], h + self.h[*r]));
        let lambda = self.opts.lambda;
        nodes[id] = Node::Leaf {
            value: (-self.opts.lr * gs / (hs + lambda)) as f32 as f64,
            cover: hs as f32 as f64,
        };
        if depth == self.opts.max_depth {
            return;
        }
        let parent = gs * gs / (hs + lambda);
        let mut best: Option<(f64, usize, usize)> = None;
        for (j, ts) in self.thresholds.iter().enumerate() {
            let mut hist = vec![(0.0f64, 0.0f64); ts.len() + 1];
            for r in &rows {
                let b = &mut hist[self.binned[*r][j] as usize];
                b.0 += self.g[*r];
                b.1 += self.h[*r];
            }
            // Split at threshold k: bins 0..=k go left (x < ts[k]).
            let (mut gl, mut hl) = (0.0, 0.0);
            // The last bin (x >= every threshold) is never all of the left side.
            for (k, (g, h)) in hist[..ts.len()].iter().enumerate() {
                gl += g;
                hl += h;
                let (gr, hr) = (gs - gl, hs - hl);
                if hl < self.opts.min_child_weight || hr < self.opts.min_child_weight {
                    continue;
                }
                let gain = gl * gl / (hl + lambda) + gr * gr / (hr + lambda) - parent;
                if gain > 1e-12 && best.is_none_or(|(b, _, _)| gain > b) {
                    best = Some((gain, j, k));
                }
            }
        }
        let Some((_, j, k)) = best else {
            return;
        };
        let (left, right): (Vec<usize>, Vec<usize>) = rows
            .into_iter()
            .partition(|r| (self.binned[*r][j] as usize) <= k);
        let l = nodes.len();
        nodes.extend([PLACEHOLDER, PLACEHOLDER]);
        nodes[id] = Node::Split {
            feature: j,
            threshold: self.thresholds[j][k],
            left: l,
            right: l + 1,
            default_left: true,
            cover: hs as f32 as f64,
        };
        self.grow(nodes, l, left, depth + 1);
        self.grow(nodes, l + 1, right, depth + 1);
    }
}

/// The trees as XGBoost's `save_model` JSON (2.x layout, `binary:logistic`), which
/// [`Gbt::from_xgboost_json`] reads back to the same model.
pub fn to_xgboost_json(gbt: &Gbt, inputs: &[String]) -> Value {
    let trees: Vec<Value> = gbt
        .trees()
        .iter()
        .enumerate()
        .map(|(id, t)| {
            let n = t.nodes.len();
            let mut parents = vec![2147483647i64; n];
            let (mut lc, mut rc, mut si, mut sc, mut dl, mut cover) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            for (i, node) in t.nodes.iter().enumerate() {
                match node {
                    Node::Split {
                        feature,
                        threshold,
                        left,
                        right,
                        default_left,
                        cover: c,
                    } => {
                        parents[*left] = i as i64;
                        parents[*right] = i as i64;
                        lc.push(*left as i64);
                        rc.push(*right as i64);
                        si.push(*feature as i64);
                        sc.push(*threshold as f64);
                        dl.push(*default_left as i64);
                        cover.push(*c);
                    }
                    Node::Leaf { value, cover: c } => {
                        lc.push(-1);
                        rc.push(-1);
                        si.push(0);
                        sc.push(*value);
                        dl.push(0);
                        cover.push(*c);
                    }
                }
            }
            json!({
                "base_weights": sc, "categories": [], "categories_nodes": [],
                "categories_segments": [], "categories_sizes": [], "default_left": dl,
                "id": id, "left_children": lc, "loss_changes": vec![0.0; n], "parents": parents,
                "right_children": rc, "split_conditions": sc, "split_indices": si,
                "split_type": vec![0; n], "sum_hessian": cover,
                "tree_param": {"num_deleted": "0", "num_feature": inputs.len().to_string(),
                               "num_nodes": n.to_string(), "size_leaf_vector": "1"}
            })
        })
        .collect();
    let n = trees.len();
    json!({
        "learner": {
            "attributes": {},
            "feature_names": inputs,
            "feature_types": vec!["float"; inputs.len()],
            "gradient_booster": {
                "model": {
                    "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": n.to_string()},
                    "iteration_indptr": (0..=n).collect::<Vec<_>>(),
                    "tree_info": vec![0; n],
                    "trees": trees
                },
                "name": "gbtree"
            },
            "learner_model_param": {
                "base_score": format!("{:E}", gbt.base_score() as f32),
                "boost_from_average": "1", "num_class": "0",
                "num_feature": inputs.len().to_string(), "num_target": "1"
            },
            "objective": {"name": "binary:logistic", "reg_loss_param": {"scale_pos_weight": "1"}}
        },
        "version": [2, 1, 3]
    })
}

/// Writes `to_xgboost_json` to `dir/model.json`.
pub fn save_trees(gbt: &Gbt, inputs: &[String], dir: &Path) -> Result<(), ModelError> {
    let io = |path: std::path::PathBuf| move |source| ModelError::Io { path, source };
    std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
    let path = dir.join(super::predictor::TREES_FILE);
    let text = serde_json::to_string(&to_xgboost_json(gbt, inputs))?;
    std::fs::write(&path, text).map_err(io(path.clone()))
}
