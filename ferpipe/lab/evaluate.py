"""Measuring expression classifiers: on labelled crops (FER2013 or FER+ Parquet, image folders), and on
full images through the pipeline's own detect -> largest face -> align -> classify path."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np

from ..expression import ExpressionModel
from ..types import EXPRESSIONS
from .data import image_folder_files, load_faces


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


def confusion_matrix(
    labels: np.ndarray, preds: np.ndarray, k: int = len(EXPRESSIONS), cols: int | None = None
) -> np.ndarray:
    """(k, cols) counts (cols defaults to k), rows true class, columns predicted."""
    cols = cols or k
    return np.bincount(labels * cols + preds, minlength=k * cols).reshape(k, cols)


def summarise(probs: np.ndarray, labels: np.ndarray, found: np.ndarray | None = None) -> dict:
    """Accuracy, macro-F1, per-class recall/precision, confusion matrix and ECE.

    found: (N,) bool, False where no face was found: such an image counts as wrong (it lowers
    accuracy and recall), is left out of the confusion matrix and ECE, and is counted per class
    under "no_face".
    """
    found = np.ones(len(labels), bool) if found is None else np.asarray(found, bool)
    preds = np.where(found, probs.argmax(axis=1), len(EXPRESSIONS))
    full = confusion_matrix(labels, preds, cols=len(EXPRESSIONS) + 1)
    cm = full[:, : len(EXPRESSIONS)]
    tp = np.diag(cm).astype(np.float64)
    support = full.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(recall + precision > 0, 2 * recall * precision / (recall + precision), 0.0)
    present = support > 0
    return {
        "accuracy": float((preds == labels).mean()) if len(labels) else 0.0,
        "n": len(labels),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "ece": expected_calibration_error(probs[found], labels[found]) if found.any() else 0.0,
        "face_found": float(found.mean()) if len(labels) else 0.0,
        "per_class": {
            e: {"recall": float(recall[i]), "precision": float(precision[i]), "n": int(support[i])}
            for i, e in enumerate(EXPRESSIONS)
        },
        "confusion": cm.tolist(),
        "no_face": full[:, len(EXPRESSIONS)].tolist(),
        "labels": list(EXPRESSIONS),
    }


def predict(
    model: ExpressionModel, gray: np.ndarray, flip: bool = False, batch_size: int = 256
) -> tuple[np.ndarray, float]:
    """(N, 7) probabilities and the mean milliseconds per face of batched inference."""
    x = to_model_input(gray, model.pre.size, model.pre.channels)
    t0 = time.perf_counter()
    probs = model.predict_crops(x, batch_size).probs
    if flip:
        probs = (probs + model.predict_crops(x[:, :, ::-1].copy(), batch_size).probs) / 2
    ms = (time.perf_counter() - t0) * 1000 / max(len(x), 1)
    return probs, ms


def resolve_head(model: str, protocol: str, head: str | None) -> str | None:
    """The head to score with: given, or "auto" (the data's own labelling protocol where the model has a
    head for it, else the model's first head, which is the one the pipeline uses)."""
    from ..registry import get_spec

    if head != "auto":
        return head
    names = get_spec(model, task="expression").preprocess.head_names
    return protocol if protocol in names else None


def evaluate_data(path: str | os.PathLike, split: str | None = None, model: str = "mini-xception",
                  limit: int | None = None, flip: bool = False, head: str | None = "auto") -> dict:  # fmt: skip
    """The evaluation report of a registered model on labelled crops (FER2013 or FER+ Parquet, image folder).

    FER+ is scored against its majority label over the seven expressions: contempt and images
    without a majority are left out (the FER+ paper's protocol).
    """
    faces = load_faces(path, split, limit)
    faces = faces.subset(faces.labelled)
    if not len(faces):
        raise ValueError(f"{Path(path).name}: no images with one of the seven labels")
    chosen = resolve_head(model, faces.protocol, head)
    clf = ExpressionModel.from_name(model, head=chosen)
    probs, ms = predict(clf, faces.images, flip=flip)
    report = summarise(probs, faces.labels)
    if faces.found is not None:  # aligned crops of a multi-domain file: the share the detector found
        report["face_found"] = float(faces.found.mean()) if len(faces) else 0.0
    report.update({"model": model, "split": split, "flip": flip, "ms_per_face": ms, "data": str(path),
                   "protocol": faces.protocol, "head": clf.head, "limit": limit, "domain": faces.domain,
                   "evaluated_at": time.strftime("%Y-%m-%d %H:%M")})  # fmt: skip
    save_report(report)
    return report


def classify_largest_faces(images: list[np.ndarray], model: ExpressionModel, detector) -> tuple[np.ndarray, np.ndarray]:
    """Each full image through the pipeline's path for a video frame: detect, take the largest face,
    align it, classify. Returns (N, 7) probabilities and (N,) found flags (zeros where no face)."""
    probs = np.zeros((len(images), len(EXPRESSIONS)), np.float32)
    found = np.zeros(len(images), bool)
    crops, where = [], []
    for i, img in enumerate(images):
        dets = detector.detect(img)
        if len(dets):
            crops.append(model.crops(img, dets[[dets.largest()]]))
            where.append(i)
    if crops:
        probs[where] = model.predict_crops(np.concatenate(crops)).probs
        found[where] = True
    return probs, found


def evaluate_full_image(root: str | os.PathLike, model: str = "mini-xception", head: str | None = None,
                        limit: int | None = None, progress=None) -> dict:  # fmt: skip
    """Accuracy on full images in root/<expression>/ (any size, colour or gray), through the full image
    path; an image with no face found counts as wrong."""
    from ..detect import create_detector
    from ..frames import read_image
    from ..pipeline import Settings

    files = image_folder_files(Path(root))
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        files = [files[i] for i in sorted(np.random.default_rng(0).permutation(len(files))[:limit])]
    settings = Settings(model=model)
    detector = create_detector(settings.detector, settings.detector_model, settings.min_face_size)
    clf = ExpressionModel.from_name(model, head=head)
    probs, found = [], []
    t0 = time.perf_counter()
    for start in range(0, len(files), 64):
        chunk = files[start : start + 64]
        p, f = classify_largest_faces([read_image(path) for path, _ in chunk], clf, detector)
        probs.append(p)
        found.append(f)
        if progress:
            progress(start + len(chunk), len(files))
    labels = np.array([label for _, label in files], np.int64)
    report = summarise(np.concatenate(probs), labels, np.concatenate(found))
    report.update({"model": model, "split": "full-image", "flip": False,
                   "ms_per_image": (time.perf_counter() - t0) * 1000 / len(files), "data": str(root),
                   "protocol": "full-image", "head": clf.head, "limit": limit,
                   "evaluated_at": time.strftime("%Y-%m-%d %H:%M")})  # fmt: skip
    report["ms_per_face"] = report["ms_per_image"]
    report["domain"] = Path(root).name
    save_report({**report, "split": f"full-image:{Path(root).name}"})
    return report


def domain_row(report: dict) -> dict:
    """One row of the cross-domain table: a report's headline figures and per-class recall."""
    return {"domain": report.get("domain") or Path(report["data"]).stem, "n": report["n"],
            "accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "ece": report["ece"],
            "face_found": report["face_found"], "head": report.get("head"),
            "recall": {k: v["recall"] for k, v in report["per_class"].items()}}  # fmt: skip


def reports_dir() -> Path:
    from ..config import cache_dir

    return cache_dir() / "evals"


def save_report(report: dict) -> Path:
    """Keep the latest evaluation of each model and split, for the dashboard's Models page."""
    import json

    d = reports_dir()
    d.mkdir(parents=True, exist_ok=True)
    data = Path(report.get("data") or "").stem
    name = f"{report['model']}__{data}__{report.get('split') or 'all'}{'__flip' if report.get('flip') else ''}"
    if report.get("limit"):
        name += f"__n{report['limit']}"
    path = d / f"{name}.json"
    path.write_text(json.dumps(report))
    return path


def saved_reports() -> list[dict]:
    import json

    d = reports_dir()
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []
