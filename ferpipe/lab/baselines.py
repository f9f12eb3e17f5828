"""Classical comparisons for the model lab: HOG + linear SVM, and CNN features + linear SVM.

Both are selected (C) on the selection split and evaluated there, like the CNN. They
are for comparison in the model card and dashboard; they are not exported to ONNX.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from .evaluate import summarise

C_GRID = (0.01, 0.1, 1.0)


def hog_features(gray: np.ndarray, cell: int = 8, bins: int = 9, chunk: int = 2000) -> np.ndarray:
    """(N, D) HOG descriptors (Dalal & Triggs): unsigned gradients, cell x cell histograms,
    2x2-cell blocks with one-cell stride, L2-Hys normalisation. 48x48 crops give D = 900.

    (OpenCV 5 dropped cv2.HOGDescriptor, hence this small NumPy version.)
    """
    gray = np.asarray(gray, dtype=np.float32)
    n, h, w = gray.shape
    ch, cw = h // cell, w // cell
    out = []
    for start in range(0, n, chunk):
        g = gray[start : start + chunk, : ch * cell, : cw * cell]
        gx = np.zeros_like(g)
        gy = np.zeros_like(g)
        gx[:, :, 1:-1] = g[:, :, 2:] - g[:, :, :-2]
        gy[:, 1:-1, :] = g[:, 2:, :] - g[:, :-2, :]
        mag = np.hypot(gx, gy)
        idx = ((np.rad2deg(np.arctan2(gy, gx)) % 180.0) / (180.0 / bins)).astype(np.int64) % bins
        hist = np.zeros((len(g), ch, cw, bins), np.float32)
        cells = (np.arange(ch * cell) // cell)[:, None] * cw + (np.arange(cw * cell) // cell)[None, :]
        flat = (np.arange(len(g))[:, None, None] * ch * cw + cells[None]) * bins + idx
        np.add.at(hist.reshape(-1), flat.ravel(), mag.ravel())
        blocks = np.concatenate(
            [hist[:, :-1, :-1], hist[:, 1:, :-1], hist[:, :-1, 1:], hist[:, 1:, 1:]], axis=3
        )  # (N, ch-1, cw-1, 4*bins)
        blocks /= np.sqrt((blocks**2).sum(axis=3, keepdims=True) + 1e-6)
        blocks = np.minimum(blocks, 0.2)
        blocks /= np.sqrt((blocks**2).sum(axis=3, keepdims=True) + 1e-6)
        out.append(blocks.reshape(len(g), -1))
    return np.concatenate(out).astype(np.float32)


def _fit_select(xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray) -> tuple[dict, np.ndarray, float]:
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    scaler = StandardScaler().fit(xtr)
    xtr, xva = scaler.transform(xtr), scaler.transform(xva)
    best = None
    for c in C_GRID:
        clf = LinearSVC(C=c, class_weight="balanced", max_iter=3000, dual=False).fit(xtr, ytr)
        acc = float((clf.predict(xva) == yva).mean())
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    _, c, clf = best
    t0 = time.perf_counter()
    scores = clf.decision_function(xva)
    ms = (time.perf_counter() - t0) * 1000 / len(xva)
    probs = np.exp(scores - scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return {"C": c}, probs, ms


def run_svm_hog(data: str | os.PathLike, out_dir: str | os.PathLike, train_split: str = "train",
                select_split: str = "public_test", limit: int | None = None) -> dict:  # fmt: skip
    """HOG + linear SVM (with mirrored training copies); returns and saves its metrics."""
    from .train import load_dataset

    xtr, ytr = load_dataset(data, train_split, limit)
    xva, yva = load_dataset(data, select_split, limit)
    xtr = np.concatenate([xtr, xtr[:, :, ::-1]])
    ytr = np.concatenate([ytr, ytr])
    params, probs, ms = _fit_select(hog_features(xtr), ytr, hog_features(xva), yva)
    return _save(out_dir, "svm-hog", {**params, "features": "HOG 8x8 cells, 900-d"}, probs, yva, ms, select_split)


def run_cnn_svm(data: str | os.PathLike, out_dir: str | os.PathLike, checkpoint: str | os.PathLike, width: int,
                train_split: str = "train", select_split: str = "public_test", limit: int | None = None) -> dict:  # fmt: skip
    """Penultimate-layer features of a trained CNN fed to a linear SVM."""
    import torch

    from .train import _to_tensor, build_cnn, load_dataset

    net = build_cnn(width)
    net.load_state_dict(torch.load(checkpoint))
    net.eval()
    features = torch.nn.Sequential(*list(net.children())[:-2])  # up to the pooled, flattened features

    def feats(gray: np.ndarray) -> np.ndarray:
        x = (_to_tensor(gray) - 0.5) / 0.5
        with torch.no_grad():
            return torch.cat([features(x[i : i + 512]) for i in range(0, len(x), 512)]).numpy()

    xtr, ytr = load_dataset(data, train_split, limit)
    xva, yva = load_dataset(data, select_split, limit)
    params, probs, ms = _fit_select(feats(xtr), ytr, feats(xva), yva)
    features = f"pooled features of {Path(checkpoint).parent.name}/{Path(checkpoint).name} (width {width})"
    return _save(out_dir, "cnn-svm", {**params, "features": features}, probs, yva, ms, select_split)


def _save(out_dir: str | os.PathLike, arch: str, params: dict, probs: np.ndarray, labels: np.ndarray, ms: float,
          select_split: str = "public_test") -> dict:  # fmt: skip
    """Write the result to out_dir and to the cache, where the dashboard's Models page finds it."""
    from ..config import cache_dir

    rep = summarise(probs, labels)
    result = {"arch": arch, **params, "select_split": select_split, "n": len(labels),
              "accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"],
              "per_class_recall": {k: v["recall"] for k, v in rep["per_class"].items()}, "svm_ms_per_face": ms,
              "evaluated_at": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    for folder in (Path(out_dir), cache_dir() / "baselines"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{arch}.json").write_text(json.dumps(result, indent=2))
    return result


def baseline_results() -> list[dict]:
    """Baseline results shipped in models/baselines/ (measured by the project), overridden by ones run here."""
    from ..config import cache_dir
    from ..registry import PROJECT_MODELS_DIR

    found: dict[str, dict] = {}
    for folder in (PROJECT_MODELS_DIR / "baselines", cache_dir() / "baselines"):
        for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                r = json.loads(f.read_text())
                found[r["arch"]] = {**r, "source": str(f)}
            except (ValueError, KeyError):
                continue
    return list(found.values())
