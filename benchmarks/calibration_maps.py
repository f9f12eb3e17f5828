"""Calibration maps across domains: does vector scaling (a scale and a bias per class on the log-probabilities, fitted
with every domain weighing the same) bring the worst dev-domain ECE under 0.10 where one temperature cannot?

2-fold cross-fitted: fit on one half of every selection set, score the other half, both ways; prints held-out
accuracy and ECE per domain for each map.

    FERPIPE_MODEL_MIRROR=../shared/models .venv/bin/python benchmarks/calibration_maps.py [--model ferpipe-cnn3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SETS = {"ferplus": "public_test", "expw": "dev", "jaffe": "dev", "imfdb": "dev", "lfw_emotion": "dev"}


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def log_probs(model, gray: np.ndarray) -> np.ndarray:
    """Log of the flip-averaged probabilities at temperature 1, as the shipped export computes them."""
    from ferpipe.lab.evaluate import to_model_input

    x = to_model_input(gray, model.pre.size, model.pre.channels)

    def logits(batch: np.ndarray) -> np.ndarray:
        return np.concatenate([model.run(model.preprocess(batch[i : i + 256]))[0][:, model._order]
                               for i in range(0, len(batch), 256)])  # fmt: skip

    p = (softmax(logits(x)) + softmax(logits(x[:, :, ::-1].copy()))) / 2
    return np.log(np.clip(p, 1e-12, None))


def apply(z: np.ndarray, params: np.ndarray, kind: str) -> np.ndarray:
    return softmax(z / params[0] if kind == "temperature" else z * params[:7] + params[7:])


def fit(z: np.ndarray, y: np.ndarray, w: np.ndarray, kind: str) -> np.ndarray:
    def loss(params: np.ndarray) -> float:
        p = apply(z, params, kind)
        return float(-(w * np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))).mean())

    x0 = np.array([1.0]) if kind == "temperature" else np.concatenate([np.ones(7), np.zeros(7)])
    bounds = [(0.05, 20.0)] if kind == "temperature" else None
    return minimize(loss, x0, method="L-BFGS-B", bounds=bounds).x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ferpipe-cnn3")
    args = ap.parse_args()

    from ferpipe.expression import ExpressionModel
    from ferpipe.lab.data import load_faces
    from ferpipe.lab.evaluate import summarise

    model = ExpressionModel.from_name(args.model)
    zs, ys, gs = [], [], []
    for g, (name, split) in enumerate(SETS.items()):
        faces = load_faces(str(DATASETS / name / f"{name}.parquet"), split)
        faces = faces.subset(faces.labelled)
        zs.append(log_probs(model, faces.images))
        ys.append(faces.labels)
        gs.append(np.full(len(faces.labels), g))
    z, y, g = np.concatenate(zs), np.concatenate(ys), np.concatenate(gs)
    w = (1.0 / np.bincount(g))[g]
    w /= w.mean()
    fold = np.random.default_rng(0).integers(0, 2, len(y))
    print("held-out acc / ECE per domain (2-fold cross-fitted)\n")
    print("| calibration | " + " | ".join(SETS) + " | worst ECE |")
    print("|---|" + "---|" * (len(SETS) + 1))
    for kind in ("temperature", "vector"):
        ece = {n: [] for n in SETS}
        acc = {n: [] for n in SETS}
        for k in (0, 1):
            train = fold != k
            params = fit(z[train], y[train], w[train], kind)
            for gi, n in enumerate(SETS):
                idx = (fold == k) & (g == gi)
                r = summarise(apply(z[idx], params, kind).astype(np.float32), y[idx])
                ece[n].append(r["ece"])
                acc[n].append(r["accuracy"])
        cells = [f"{np.mean(acc[n]):.3f} / {np.mean(ece[n]):.3f}" for n in SETS]
        print(f"| {kind} | {' | '.join(cells)} | {max(np.mean(v) for v in ece.values()):.3f} |")


if __name__ == "__main__":
    main()
