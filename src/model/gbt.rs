//! Gradient-boosted trees (kind `gbt`), loaded from XGBoost's JSON model format.
//!
//! # File
//!
//! `model.json` is what `booster.save_model("model.json")` writes (XGBoost 1.6 to 2.x; tested
//! with 2.1.3, `examples/models/make_reference.py`). Read from it: the objective (must be
//! `binary:logistic` or `reg:logistic`), `base_score` (a probability), `feature_names` (when
//! present they must equal the manifest's inputs, in order: a model fed its inputs in another
//! order would score silently wrong), and per tree `left_children`, `right_children`,
//! `split_indices`, `split_conditions` (the threshold of a split, the value of a leaf),
//! `default_left` and `sum_hessian` (the node's cover, for TreeSHAP). Categorical splits and
//! multi-class models are refused.
//!
//! # Scoring
//!
//! `margin = logit(base_score) + sum over trees of the leaf the row reaches`, then
//! `p = sigmoid(margin)`. At a split on feature `f` with threshold `t`, a row goes left when
//! `x_f < t` compared in f32 (as XGBoost compares), and to the default side when `x_f` is
//! missing (NaN). Plain f64 sums in tree order: batch invariant, no thread pool.
//!
//! # Attributions: path-dependent TreeSHAP
//!
//! Lundberg, Erion and Lee 2018, "Consistent Individualized Feature Attribution for Tree
//! Ensembles", Algorithm 2: the exact Shapley values of the margin, where a coalition's value
//! is the tree's expectation with the absent features following the training data down each
//! split (by the covers). Exact, polynomial (`O(leaves * depth^2)` per tree), and what
//! XGBoost's `pred_contribs=True` computes, which `tests/model_parity.rs` checks against. The
//! baseline is the expected margin: `logit(base_score)` plus each tree's cover-weighted mean
//! leaf. The attributions sum to `margin - baseline`.

use serde::Deserialize;

use super::explain::LogitExplanation;
use super::ModelError;

/// One tree node.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Split {
        feature: usize,
        threshold: f32,
        left: usize,
        right: usize,
        default_left: bool,
        cover: f64,
    },
    Leaf {
        value: f64,
        cover: f64,
    },
}

impl Node {
    fn cover(&self) -> f64 {
        match self {
            Node::Split { cover, .. } | Node::Leaf { cover, .. } => *cover,
        }
    }
}

/// One tree; node 0 is the root, children come after their parent.
#[derive(Clone, Debug, PartialEq)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// A loaded tree ensemble.
#[derive(Clone, Debug, PartialEq)]
pub struct Gbt {
    inputs: usize,
    trees: Vec<Tree>,
    /// `base_score`: the probability the margin starts from.
    base_score: f64,
    base_margin: f64,
    /// The expected margin (TreeSHAP's baseline).
    expected: f64,
}

// ---- the XGBoost JSON, as far as it is read ----

#[derive(Deserialize)]
struct XgbFile {
    learner: XgbLearner,
}

#[derive(Deserialize)]
struct XgbLearner {
    #[serde(default)]
    feature_names: Vec<String>,
    gradient_booster: XgbBooster,
    learner_model_param: XgbModelParam,
    objective: XgbObjective,
}

#[derive(Deserialize)]
struct XgbBooster {
    name: String,
    model: XgbModel,
}

#[derive(Deserialize)]
struct XgbModel {
    trees: Vec<XgbTree>,
    #[serde(default)]
    tree_info: Vec<i64>,
}

#[derive(Deserialize)]
struct XgbModelParam {
    base_score: String,
    #[serde(default)]
    num_class: Option<String>,
    #[serde(default)]
    num_feature: Option<String>,
}

#[derive(Deserialize)]
struct XgbObjective {
    name: String,
}

#[derive(Deserialize)]
struct XgbTree {
    left_children: Vec<i64>,
    right_children: Vec<i64>,
    split_indices: Vec<i64>,
    split_conditions: Vec<f64>,
    default_left: Vec<i64>,
    sum_hessian: Vec<f64>,
    #[serde(default)]
    split_type: Vec<i64>,
}

impl Gbt {
    /// Builds the model from an XGBoost JSON model whose features are the manifest's `inputs`.
    pub fn from_xgboost_json(bytes: &[u8], inputs: &[String]) -> Result<Self, ModelError> {
        let bad = |m: String| ModelError::Weights(format!("XGBoost model: {m}"));
        let file: XgbFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let l = file.learner;
        if !matches!(
            l.objective.name.as_str(),
            "binary:logistic" | "reg:logistic"
        ) {
            return Err(bad(format!(
                "objective {:?}: only binary:logistic and reg:logistic score probabilities",
                l.objective.name
            )));
        }
        if l.gradient_booster.name != "gbtree" {
            return Err(bad(format!(
                "booster {:?}: only gbtree is read",
                l.gradient_booster.name
            )));
        }
        if l.learner_model_param.num_class.as_deref().unwrap_or("0") != "0"
            || l.gradient_booster.model.tree_info.iter().any(|g| *g != 0)
        {
            return Err(bad("a multi-class model: only binary ones are read".into()));
        }
        if !l.feature_names.is_empty() && l.feature_names != inputs {
            return Err(bad(format!(
                "feature names {:?} are not the manifest's inputs {inputs:?}",
                l.feature_names
            )));
        }
        if let Some(n) = &l.learner_model_param.num_feature {
            if n.parse::<usize>().ok() != Some(inputs.len()) {
                return Err(bad(format!(
                    "num_feature {n}, the manifest has {} inputs",
                    inputs.len()
                )));
            }
        }
        // `5E-1`, or `[5E-1]` from XGBoost 3.
        let base: f64 = l
            .learner_model_param
            .base_score
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| bad(format!("base_score {:?}", l.learner_model_param.base_score)))?;
        if !(base > 0.0 && base < 1.0) {
            return Err(bad(format!("base_score {base} is not a probability")));
        }
        let trees = l
            .gradient_booster
            .model
            .trees
            .iter()
            .enumerate()
            .map(|(i, t)| tree_of(t, inputs.len()).map_err(|m| bad(format!("tree {i}: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(inputs.len(), trees, base))
    }

    /// A model of `trees` over `inputs` features whose margin starts at
    /// `logit(base_score)`. The trees must be valid: children after their parent, features
    /// below `inputs`, positive covers.
    pub fn new(inputs: usize, trees: Vec<Tree>, base_score: f64) -> Self {
        let base_margin = (base_score / (1.0 - base_score)).ln();
        let expected = base_margin + trees.iter().map(|t| expected_value(t, 0)).sum::<f64>();
        Gbt {
            inputs,
            trees,
            base_score,
            base_margin,
            expected,
        }
    }

    /// The probability the margin starts from (XGBoost's `base_score`).
    pub fn base_score(&self) -> f64 {
        self.base_score
    }

    pub fn inputs(&self) -> usize {
        self.inputs
    }

    pub fn trees(&self) -> &[Tree] {
        &self.trees
    }

    /// The expected margin: TreeSHAP's baseline.
    pub fn expected_margin(&self) -> f64 {
        self.expected
    }

    /// The margin (logit) of one row.
    pub fn margin(&self, row: &[f64]) -> f64 {
        self.base_margin
            + self
                .trees
                .iter()
                .map(|t| t.nodes[leaf_of(t, row)].leaf_value())
                .sum::<f64>()
    }

    /// Margins (logits) of `rows`.
    pub fn logits<R: AsRef<[f64]>>(&self, rows: &[R]) -> Vec<f64> {
        rows.iter().map(|r| self.margin(r.as_ref())).collect()
    }

    /// Margins and TreeSHAP attributions of `rows`.
    pub(crate) fn explain<R: AsRef<[f64]>>(&self, rows: &[R]) -> Vec<LogitExplanation> {
        rows.iter()
            .map(|r| {
                let x = r.as_ref();
                let mut phi = vec![0.0; self.inputs];
                for t in &self.trees {
                    tree_shap(t, x, &mut phi);
                }
                LogitExplanation {
                    logit: self.margin(x),
                    baseline: self.expected,
                    attributions: phi,
                }
            })
            .collect()
    }
}

impl Node {
    fn leaf_value(&self) -> f64 {
        match self {
            Node::Leaf { value, .. } => *value,
            Node::Split { .. } => unreachable!("leaf_of returns leaves"),
        }
    }
}

fn tree_of(t: &XgbTree, inputs: usize) -> Result<Tree, String> {
    let n = t.left_children.len();
    if n == 0 {
        return Err("no nodes".into());
    }
    for (name, len) in [
        ("right_children", t.right_children.len()),
        ("split_indices", t.split_indices.len()),
        ("split_conditions", t.split_conditions.len()),
        ("default_left", t.default_left.len()),
        ("sum_hessian", t.sum_hessian.len()),
    ] {
        if len != n {
            return Err(format!("{name} has {len} entries for {n} nodes"));
        }
    }
    if t.split_type.iter().any(|s| *s != 0) {
        return Err("categorical splits are not supported".into());
    }
    let nodes = (0..n)
        .map(|i| {
            let cover = t.sum_hessian[i];
            if !(cover.is_finite() && cover > 0.0) {
                return Err(format!(
                    "node {i} has cover {cover}: TreeSHAP needs covers > 0"
                ));
            }
            let value = t.split_conditions[i];
            if !value.is_finite() {
                return Err(format!("node {i} has a non-finite value"));
            }
            let (l, r) = (t.left_children[i], t.right_children[i]);
            if l == -1 {
                return Ok(Node::Leaf { value, cover });
            }
            let child = |c: i64| {
                usize::try_from(c)
                    .ok()
                    .filter(|c| *c > i && *c < n)
                    .ok_or_else(|| format!("node {i} has child {c}: expected {i} < child < {n}"))
            };
            let feature = usize::try_from(t.split_indices[i])
                .ok()
                .filter(|f| *f < inputs)
                .ok_or_else(|| format!("node {i} splits on feature {}", t.split_indices[i]))?;
            Ok(Node::Split {
                feature,
                threshold: value as f32,
                left: child(l)?,
                right: child(r)?,
                default_left: t.default_left[i] != 0,
                cover,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Tree { nodes })
}

/// The child a row takes at a split.
fn next(node: &Node, row: &[f64]) -> usize {
    match node {
        Node::Split {
            feature,
            threshold,
            left,
            right,
            default_left,
            ..
        } => {
            let x = row[*feature];
            let go_left = if x.is_nan() {
                *default_left
            } else {
                (x as f32) < *threshold
            };
            if go_left {
                *left
            } else {
                *right
            }
        }
        Node::Leaf { .. } => unreachable!("only splits have children"),
    }
}

fn leaf_of(tree: &Tree, row: &[f64]) -> usize {
    let mut i = 0;
    while let Node::Split { .. } = tree.nodes[i] {
        i = next(&tree.nodes[i], row);
    }
    i
}

/// Cover-weighted mean leaf value under node `i`.
fn expected_value(tree: &Tree, i: usize) -> f64 {
    match &tree.nodes[i] {
        Node::Leaf { value, .. } => *value,
        Node::Split {
            left, right, cover, ..
        } => {
            let (l, r) = (&tree.nodes[*left], &tree.nodes[*right]);
            (l.cover() * expected_value(tree, *left) + r.cover() * expected_value(tree, *right))
                / cover
        }
    }
}

// ---- TreeSHAP (Algorithm 2) ----

/// An element of the unique path: a feature split on, the fraction of "zero" paths (feature
/// absent: covers) and "one" paths (feature present: the row's way) through it, and the
/// permutation weight.
#[derive(Clone, Copy, Debug)]
struct PathElement {
    feature: Option<usize>,
    zero: f64,
    one: f64,
    weight: f64,
}

/// Adds `tree`'s attributions of `row` to `phi`.
fn tree_shap(tree: &Tree, row: &[f64], phi: &mut [f64]) {
    recurse(tree, row, phi, 0, Vec::new(), 1.0, 1.0, None);
}

#[allow(clippy::too_many_arguments)]
fn recurse(
    tree: &Tree,
    row: &[f64],
    phi: &mut [f64],
    node: usize,
    mut path: Vec<PathElement>,
    zero: f64,
    one: f64,
    feature: Option<usize>,
) {
    extend(&mut path, zero, one, feature);
    match &tree.nodes[node] {
        Node::Leaf { value, .. } => {
            for i in 1..path.len() {
                let w = unwound_sum(&path, i);
                let e = path[i];
                phi[e.feature.expect("only the root element has no feature")] +=
                    w * (e.one - e.zero) * value;
            }
        }
        split @ Node::Split {
            feature: f,
            left,
            right,
            cover,
            ..
        } => {
            let hot = next(split, row);
            let cold = if hot == *left { *right } else { *left };
            let hot_zero = tree.nodes[hot].cover() / cover;
            let cold_zero = tree.nodes[cold].cover() / cover;
            let (mut in_zero, mut in_one) = (1.0, 1.0);
            // A feature split on above: undo that split, to redo it here.
            if let Some(k) = path.iter().position(|e| e.feature == Some(*f)) {
                in_zero = path[k].zero;
                in_one = path[k].one;
                unwind(&mut path, k);
            }
            recurse(
                tree,
                row,
                phi,
                hot,
                path.clone(),
                hot_zero * in_zero,
                in_one,
                Some(*f),
            );
            recurse(
                tree,
                row,
                phi,
                cold,
                path,
                cold_zero * in_zero,
                0.0,
                Some(*f),
            );
        }
    }
}

fn extend(path: &mut Vec<PathElement>, zero: f64, one: f64, feature: Option<usize>) {
    let d = path.len();
    path.push(PathElement {
        feature,
        zero,
        one,
        weight: if d == 0 { 1.0 } else { 0.0 },
    });
    for i in (0..d).rev() {
        path[i + 1].weight += one * path[i].weight * (i + 1) as f64 / (d + 1) as f64;
        path[i].weight = zero * path[i].weight * (d - i) as f64 / (d + 1) as f64;
    }
}

fn unwind(path: &mut Vec<PathElement>, k: usize) {
    let d = path.len() - 1;
    let (one, zero) = (path[k].one, path[k].zero);
    let mut next_one = path[d].weight;
    for i in (0..d).rev() {
        if one != 0.0 {
            let tmp = path[i].weight;
            path[i].weight = next_one * (d + 1) as f64 / ((i + 1) as f64 * one);
            next_one = tmp - path[i].weight * zero * (d - i) as f64 / (d + 1) as f64;
        } else {
            path[i].weight = path[i].weight * (d + 1) as f64 / (zero * (d - i) as f64);
        }
    }
    for i in k..d {
        path[i].feature = path[i + 1].feature;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
    path.pop();
}

/// The sum of the weights `path` would have with element `k` unwound.
fn unwound_sum(path: &[PathElement], k: usize) -> f64 {
    let d = path.len() - 1;
    let (one, zero) = (path[k].one, path[k].zero);
    let mut next_one = path[d].weight;
    let mut total = 0.0;
    for i in (0..d).rev() {
        if one != 0.0 {
            let tmp = next_one * (d + 1) as f64 / ((i + 1) as f64 * one);
            total += tmp;
            next_one = path[i].weight - tmp * zero * ((d - i) as f64 / (d + 1) as f64);
        } else {
            total += (path[i].weight / zero) / ((d - i) as f64 / (d + 1) as f64);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The path-dependent expectation of a tree with only the features in `set` known
    /// (Algorithm 1 of the paper: unknown features follow the covers).
    fn expectation(tree: &Tree, row: &[f64], set: u32, i: usize) -> f64 {
        match &tree.nodes[i] {
            Node::Leaf { value, .. } => *value,
            split @ Node::Split {
                feature,
                left,
                right,
                cover,
                ..
            } => {
                if set & (1 << feature) != 0 {
                    expectation(tree, row, set, next(split, row))
                } else {
                    (tree.nodes[*left].cover() * expectation(tree, row, set, *left)
                        + tree.nodes[*right].cover() * expectation(tree, row, set, *right))
                        / cover
                }
            }
        }
    }

    /// Shapley values by enumerating every coalition.
    fn brute_force(tree: &Tree, row: &[f64], n: usize) -> Vec<f64> {
        let fact = |k: usize| (1..=k).map(|v| v as f64).product::<f64>();
        (0..n)
            .map(|f| {
                (0u32..1 << n)
                    .filter(|s| s & (1 << f) == 0)
                    .map(|s| {
                        let k = s.count_ones() as usize;
                        let w = fact(k) * fact(n - k - 1) / fact(n);
                        w * (expectation(tree, row, s | (1 << f), 0) - expectation(tree, row, s, 0))
                    })
                    .sum()
            })
            .collect()
    }

    /// A random full tree of depth up to `depth` over `n` features, built breadth-first so
    /// children come after parents; covers split at random.
    fn random_tree(n: usize, depth: usize, bits: &[u32]) -> Tree {
        let mut nodes = vec![];
        let mut queue = std::collections::VecDeque::from([(0usize, 100.0f64)]);
        let mut draw = bits.iter().cycle();
        let mut take = || *draw.next().unwrap();
        while let Some((d, cover)) = queue.pop_front() {
            let id = nodes.len();
            if d == depth || (d > 0 && take() % 4 == 0) {
                let value = (take() % 2001) as f64 / 1000.0 - 1.0;
                nodes.push(Node::Leaf { value, cover });
            } else {
                let share = 0.1 + (take() % 81) as f64 / 100.0;
                let left = id + queue.len() + 1;
                nodes.push(Node::Split {
                    feature: take() as usize % n,
                    threshold: (take() % 5) as f32,
                    left,
                    right: left + 1,
                    default_left: take() % 2 == 0,
                    cover,
                });
                queue.push_back((d + 1, cover * share));
                queue.push_back((d + 1, cover * (1.0 - share)));
            }
        }
        Tree { nodes }
    }

    proptest! {
        /// TreeSHAP equals the Shapley values by brute force, and they sum to the margin
        /// minus the expected margin.
        #[test]
        fn tree_shap_is_exact_shapley(
            bits in prop::collection::vec(any::<u32>(), 64),
            row in prop::collection::vec(prop_oneof![(0u8..5).prop_map(f64::from), Just(f64::NAN)], 4),
            depth in 1usize..5,
        ) {
            let tree = random_tree(4, depth, &bits);
            let mut phi = vec![0.0; 4];
            tree_shap(&tree, &row, &mut phi);
            let exact = brute_force(&tree, &row, 4);
            for (a, b) in phi.iter().zip(&exact) {
                prop_assert!((a - b).abs() < 1e-9, "{phi:?} vs {exact:?}");
            }
            let gbt = Gbt::new(4, vec![tree], 0.6);
            let e = &gbt.explain(&[&row])[0];
            let sum: f64 = e.attributions.iter().sum();
            prop_assert!((sum - (e.logit - e.baseline)).abs() < 1e-9);
        }
    }
}
