"""Temporal smoothing on WolfgangLanger_Pexels.mp4 (every frame): flicker before/after and lag.

Flicker: mean absolute frame-to-frame change of each face's probability vector (L1/2).
Lag: when the face's "happy" crosses 0.5 at the clip's sad-to-happy change, compared
with a centred (non-causal, hence lag-free) 9-frame median of the raw series.

    .venv/bin/python benchmarks/bench_smoothing.py [--taus 0 100 200 400]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def crossing(t: np.ndarray, y: np.ndarray, level: float = 0.5) -> float:
    above = np.nonzero(y >= level)[0]
    return float(t[above[0]]) if len(above) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--taus", type=float, nargs="+", default=[0, 100, 200, 400])
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    from scipy.ndimage import median_filter

    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.registry import default_expression_model
    from ferpipe.samples import build_samples
    from ferpipe.store import Store
    from ferpipe.temporal import flicker
    from ferpipe.types import EXPRESSIONS

    video = build_samples()["WolfgangLanger_Pexels.mp4"]
    model = args.model or default_expression_model()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "s.duckdb")
        rows = []
        ref_cross = None
        for tau in args.taus:
            res = Pipeline(store, Settings(sample_fps=None, smooth_ms=tau, model=model)).process(str(video))
            obs = store.timeline(res.run_id).filter(store.timeline(res.run_id)["face_id"] == 1)
            t = obs["timestamp_ms"].to_numpy()
            happy = obs["happy"].to_numpy()
            if tau == 0:
                ref_cross = crossing(t, median_filter(happy, size=9, mode="nearest"))
            rows.append((tau, flicker(obs["face_id"].to_numpy(), obs.select(EXPRESSIONS).to_numpy()),
                         crossing(t, happy)))  # fmt: skip
    base = rows[0][1]
    print(f"model {model}; reference sad-to-happy crossing (centred median of raw): {ref_cross / 1000:.2f} s")
    print(f"{'tau (ms)':>8s} {'flicker':>8s} {'vs raw':>7s} {'happy>0.5 at':>13s} {'lag (ms)':>9s}")
    for tau, fl, cross in rows:
        print(f"{tau:8.0f} {fl:8.4f} {fl / base:6.0%} {cross / 1000:12.2f}s {cross - ref_cross:9.0f}")


if __name__ == "__main__":
    main()
