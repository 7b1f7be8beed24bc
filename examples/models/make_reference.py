#!/usr/bin/env python3
"""Reference models for sideline's parity tests (tests/model_parity.rs).

Run with (from the repository root; Python 3.11, PyPI only):

    python3 -m venv /tmp/sideline-ref && /tmp/sideline-ref/bin/pip install -r examples/models/requirements.txt
    /tmp/sideline-ref/bin/python examples/models/make_reference.py

It trains, on a fixed synthetic data set (seeded), a small PyTorch MLP (nn.Sequential of
Linear+ReLU+Linear+ReLU+Linear(.,1), logistic loss) and a small XGBoost model
(binary:logistic), writes them to this directory as a sideline model registry:

    examples/models/ref_mlp/v1/{manifest.json, model.safetensors}
    examples/models/ref_gbt/v1/{manifest.json, model.json}
    examples/models/ref_<method>/v1/manifest.json   (ensembles of the two)

and writes what PyTorch and XGBoost (and numpy, for the ensembles) output on a fixed batch
to examples/models/reference_outputs.json. The Rust test reads only these committed files,
so it needs no Python.
"""

import json
import os

import numpy as np
import safetensors.torch
import torch
import xgboost as xgb

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261129
INPUTS = ["score_diff", "time_left_fraction", "possession", "field_position"]
CREATED_BY = "python3 examples/models/make_reference.py"


def synthetic(rng, n):
    """Rows of the four inputs and a home-win label drawn from a non-linear truth."""
    score_diff = rng.normal(0.0, 8.0, n)
    time_left = rng.uniform(0.0, 1.0, n)
    possession = rng.choice([-1.0, 1.0], n)
    field = rng.uniform(0.0, 100.0, n)
    logit = (
        score_diff / (2.0 + 10.0 * time_left)
        + 0.3 * possession * (field - 50.0) / 50.0
        + 0.2 * possession
    )
    label = (rng.uniform(0.0, 1.0, n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float64)
    x = np.stack([score_diff, time_left, possession, field], axis=1)
    return x, label


def metrics(p, y):
    p = np.clip(p, 1e-12, 1 - 1e-12)
    m = y.mean()
    return {
        "rows": int(len(y)),
        "games": 0,
        "log_loss": float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()),
        "brier": float(((p - y) ** 2).mean()),
        "baseline_log_loss": float(-(y * np.log(m) + (1 - y) * np.log(1 - m)).mean()),
        "baseline_brier": float(((m - y) ** 2).mean()),
    }


def manifest(name, kind, output, train_metrics, eval_metrics, **extra):
    m = {
        "name": name,
        "version": "v1",
        "kind": kind,
        "output": output,
        "inputs": INPUTS,
        "train_data": f"synthetic (numpy default_rng({SEED})), 4000 rows",
        "eval_data": f"synthetic (numpy default_rng({SEED + 1})), 1000 rows",
        "metrics": {"train": train_metrics, "eval": eval_metrics},
        "created_by": CREATED_BY,
    }
    m.update(extra)
    return m


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def main():
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(SEED)
    x, y = synthetic(rng, 4000)
    x_eval, y_eval = synthetic(np.random.default_rng(SEED + 1), 1000)

    # ---- MLP: standardised inputs, 4-16-8-1, ReLU, full-batch Adam on the log loss ----
    mean = x.mean(axis=0).astype(np.float32)
    scale = x.std(axis=0).astype(np.float32)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 1),
    )
    xt = torch.tensor((x.astype(np.float32) - mean) / scale)
    yt = torch.tensor(y, dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(400):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt)[:, 0], yt)
        loss.backward()
        opt.step()

    def mlp_logits(rows):
        z = torch.tensor((rows.astype(np.float32) - mean) / scale)
        with torch.no_grad():
            return net(z)[:, 0]

    def mlp_probs(rows):
        return torch.sigmoid(mlp_logits(rows)).numpy().astype(np.float64)

    tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    tensors["input_mean"] = torch.tensor(mean)
    tensors["input_scale"] = torch.tensor(scale)
    mlp_dir = os.path.join(HERE, "ref_mlp", "v1")
    os.makedirs(mlp_dir, exist_ok=True)
    safetensors.torch.save_file(tensors, os.path.join(mlp_dir, "model.safetensors"))
    write_json(
        os.path.join(mlp_dir, "manifest.json"),
        manifest(
            "ref_mlp",
            "mlp",
            "probability of a home win (synthetic), rounded to 6 decimals",
            metrics(mlp_probs(x), y),
            metrics(mlp_probs(x_eval), y_eval),
            training={"framework": f"torch {torch.__version__}", "epochs": 400, "lr": 0.01,
                      "seed": SEED},
        ),
    )

    # ---- XGBoost: 30 trees of depth 3, binary:logistic ----
    booster = xgb.train(
        {
            "objective": "binary:logistic",
            "max_depth": 3,
            "eta": 0.3,
            "tree_method": "exact",
            "seed": SEED,
            "nthread": 1,
        },
        xgb.DMatrix(x, label=y, feature_names=INPUTS),
        num_boost_round=30,
    )
    gbt_dir = os.path.join(HERE, "ref_gbt", "v1")
    os.makedirs(gbt_dir, exist_ok=True)
    booster.save_model(os.path.join(gbt_dir, "model.json"))

    def gbt_probs(rows):
        return booster.predict(xgb.DMatrix(rows, feature_names=INPUTS)).astype(np.float64)

    write_json(
        os.path.join(gbt_dir, "manifest.json"),
        manifest(
            "ref_gbt",
            "gbt",
            "probability of a home win (synthetic), rounded to 6 decimals",
            metrics(gbt_probs(x), y),
            metrics(gbt_probs(x_eval), y_eval),
            training={"framework": f"xgboost {xgb.__version__}", "trees": 30, "max_depth": 3,
                      "lr": 0.3, "seed": SEED},
        ),
    )

    # ---- the fixed batch: 24 evaluation rows, two of them with a missing value ----
    batch = x_eval[:24].copy()
    batch[5, 3] = np.nan
    batch[11, 0] = np.nan
    clean = x_eval[:24]
    mlp_z = mlp_logits(clean).numpy().astype(np.float64)
    mlp_p = mlp_probs(clean)
    dm = xgb.DMatrix(batch, feature_names=INPUTS)
    gbt_p = booster.predict(dm).astype(np.float64)
    gbt_margin = booster.predict(dm, output_margin=True).astype(np.float64)
    contribs = booster.predict(dm, pred_contribs=True).astype(np.float64)

    # ---- ensembles of the two, computed here with numpy on the clean batch ----
    gbt_p_clean = gbt_probs(clean)
    gbt_z_clean = booster.predict(xgb.DMatrix(clean, feature_names=INPUTS),
                                  output_margin=True).astype(np.float64)
    members = [{"name": "ref_mlp", "version": "v1"}, {"name": "ref_gbt", "version": "v1"}]
    w = [0.4, 0.6]
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    ensembles = {
        "weighted_average": sig(w[0] * mlp_z + w[1] * gbt_z_clean),
        "soft_voting": w[0] * mlp_p + w[1] * gbt_p_clean,
        "hard_voting": w[0] * (mlp_p >= 0.5) + w[1] * (gbt_p_clean >= 0.5),
        "stacking": sig(-0.1 + 0.7 * mlp_z + 0.5 * gbt_z_clean),
    }
    for method in ensembles:
        spec = {"method": method,
                "members": [dict(m, weight=wi) for m, wi in zip(members, w)]}
        if method == "stacking":
            spec["members"] = [dict(m, weight=wi) for m, wi in zip(members, [0.7, 0.5])]
            spec["bias"] = -0.1
        write_json(
            os.path.join(HERE, f"ref_{method}", "v1", "manifest.json"),
            {
                "name": f"ref_{method}",
                "version": "v1",
                "kind": "ensemble",
                "output": f"{method} of ref_mlp/v1 and ref_gbt/v1 (synthetic)",
                "inputs": INPUTS,
                "created_by": CREATED_BY,
                "ensemble": spec,
            },
        )

    write_json(
        os.path.join(HERE, "reference_outputs.json"),
        {
            "versions": {"torch": torch.__version__, "xgboost": xgb.__version__,
                         "numpy": np.__version__, "safetensors": safetensors.__version__},
            "inputs": INPUTS,
            "mlp": {"rows": clean.tolist(), "logit": mlp_z.tolist(),
                    "probability": mlp_p.tolist()},
            "gbt": {
                "rows": [[None if np.isnan(v) else float(v) for v in r] for r in batch],
                "margin": gbt_margin.tolist(),
                "probability": gbt_p.tolist(),
                "contributions": contribs[:, :-1].tolist(),
                "bias": contribs[:, -1].tolist(),
            },
            "ensembles": {"rows": clean.tolist(),
                          **{k: v.astype(np.float64).tolist() for k, v in ensembles.items()}},
        },
    )


if __name__ == "__main__":
    main()
