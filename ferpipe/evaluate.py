"""Measuring expression classifiers on labelled face crops (FER2013 Parquet layout)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import polars as pl

from .errors import InputError
from .expression import ExpressionModel
from .types import EXPRESSIONS

REQUIRED_COLUMNS = ("label", "image_jpeg")


def load_crops(path: str | os.PathLike, split: str | None = None, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 48, 48) uint8 gray crops and (N,) int labels in EXPRESSIONS order."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        df = pl.read_parquet(p)
    except Exception as exc:  # polars raises several types for non-parquet input
        raise InputError(f"{p.name}: not a readable Parquet file ({type(exc).__name__})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{p.name}: missing column(s) {missing}; expected split, label, emotion, image_jpeg")
    if split is not None:
        if "split" not in df.columns:
            raise InputError(f"{p.name}: has no split column")
        splits = sorted(df["split"].unique().to_list())
        df = df.filter(pl.col("split") == split)
        if df.is_empty():
            raise ValueError(f"split {split!r} not found; the file has {splits}")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if limit < df.height:
            df = df.sample(n=limit, seed=0)  # a fixed random subset, not the (label-sorted) head
    images = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE) for b in df["image_jpeg"]]
    if any(img is None for img in images):
        raise InputError(f"{p.name}: some image_jpeg values are not decodable images")
    size = images[0].shape
    images = [img if img.shape == size else cv2.resize(img, size[::-1]) for img in images]
    labels = df["label"].to_numpy().astype(np.int64)
    if labels.min() < 0 or labels.max() >= len(EXPRESSIONS):
        raise InputError(f"{p.name}: labels must be 0..6 in the FER2013 order")
    return np.stack(images), labels


def to_model_input(gray: np.ndarray, size: int, channels: int) -> np.ndarray:
    """(N, H, W) gray crops -> (N, size, size, channels) uint8 at the model's input size."""
    out = np.stack([cv2.resize(g, (size, size), interpolation=cv2.INTER_LINEAR) for g in gray])
    out = out[..., None]
    return np.repeat(out, 3, axis=3) if channels == 3 else out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: bin by top probability; weighted mean |accuracy - confidence| over bins."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, k: int = len(EXPRESSIONS)) -> np.ndarray:
    """(k, k) counts, rows true class, columns predicted."""
    return np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)


def summarise(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, macro-F1, per-class recall/precision, confusion matrix and ECE."""
    preds = probs.argmax(axis=1)
    cm = confusion_matrix(labels, preds)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(recall + precision > 0, 2 * recall * precision / (recall + precision), 0.0)
    present = support > 0
    return {
        "accuracy": float((preds == labels).mean()),
        "n": int(len(labels)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "ece": expected_calibration_error(probs, labels),
        "per_class": {
            e: {"recall": float(recall[i]), "precision": float(precision[i]), "n": int(support[i])}
            for i, e in enumerate(EXPRESSIONS)
        },
        "confusion": cm.tolist(),
        "labels": list(EXPRESSIONS),
    }


def predict(model: ExpressionModel, gray: np.ndarray, flip: bool = False, batch_size: int = 256) -> tuple[np.ndarray, float]:
    """(N, 7) probabilities and the mean milliseconds per face of batched inference."""
    x = to_model_input(gray, model.pre.size, model.pre.channels)
    t0 = time.perf_counter()
    probs = model.predict_crops(x, batch_size).probs
    if flip:
        probs = (probs + model.predict_crops(x[:, :, ::-1].copy(), batch_size).probs) / 2
    ms = (time.perf_counter() - t0) * 1000 / max(len(x), 1)
    return probs, ms


def evaluate_parquet(path: str | os.PathLike, split: str | None = None, model: str = "mini-xception",
                     limit: int | None = None, flip: bool = False) -> dict:  # fmt: skip
    """The evaluation report of a registered model on a Parquet file of labelled crops."""
    clf = ExpressionModel.from_name(model)
    gray, labels = load_crops(path, split, limit)
    probs, ms = predict(clf, gray, flip=flip)
    report = summarise(probs, labels)
    report.update({"model": model, "split": split, "flip": flip, "ms_per_face": ms, "data": str(path),
                   "limit": limit, "evaluated_at": time.strftime("%Y-%m-%d %H:%M")})  # fmt: skip
    save_report(report)
    return report


def reports_dir() -> Path:
    from .config import cache_dir

    return cache_dir() / "evals"


def save_report(report: dict) -> Path:
    """Keep the latest evaluation of each model and split, for the dashboard's Models page."""
    import json

    d = reports_dir()
    d.mkdir(parents=True, exist_ok=True)
    name = f"{report['model']}__{report.get('split') or 'all'}{'__flip' if report.get('flip') else ''}"
    if report.get("limit"):
        name += f"__n{report['limit']}"
    path = d / f"{name}.json"
    path.write_text(json.dumps(report))
    return path


def saved_reports() -> list[dict]:
    import json

    d = reports_dir()
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []
