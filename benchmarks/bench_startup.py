"""Start-up of a short clip: the whole `ferpipe process` of the 2.4 s one-face sample (single_face.mp4), each time a
fresh process into a fresh DuckDB file, minus the analysis the run records (runs.seconds). Beside it, in the same
process tree: a bare Python interpreter, and `import ferpipe.cli` alone, so the figures say where start-up goes.

    .venv/bin/python benchmarks/bench_startup.py [--repeats 7]

Prints medians (this machine is noisy: compare the rows with each other, not across runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed: {proc.stderr.strip().splitlines()[-1:]}")
    return wall, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    from ferpipe.samples import build_samples

    clip = build_samples()["single_face.mp4"]
    rows: dict[str, list[float]] = {"python -c pass": [], "import ferpipe.cli": [], "process: wall": [],
                                    "process: analysis (runs.seconds)": [], "process: start-up": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.repeats + 1):  # the first round warms the OS cache and ferpipe's model cache
            bare, _ = timed([sys.executable, "-c", "pass"])
            imp, _ = timed([sys.executable, "-c", "import ferpipe.cli"])
            db = Path(tmp) / f"s{k}.duckdb"
            wall, out = timed([sys.executable, "-m", "ferpipe.cli", "process", str(clip), "--db", str(db), "--json"])
            analysis = float(json.loads(out.strip().splitlines()[-1])["seconds"])
            if k == 0:
                continue
            for name, value in zip(rows, (bare, imp, wall, analysis, wall - analysis), strict=True):
                rows[name].append(value)
    print(f"start-up of a 2.4 s one-face clip, median of {args.repeats} fresh processes (default model and settings)")
    for name, values in rows.items():
        print(f"  {name:34s} {statistics.median(values):6.2f} s   (min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    main()
