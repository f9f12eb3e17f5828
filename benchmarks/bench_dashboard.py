"""Clip-view render time over a large database (default 1,000,000 observation rows).

Builds a DuckDB file with one clip of N faces x F frames of synthetic observations
(inserted by DuckDB SQL), then times, as medians of repeated runs:
  - the clip view's data work (per-face bins in DuckDB, curves, shares, peaks),
  - a full server-side render of the Clip view page with Streamlit's AppTest,
  - a peer: pulling every observation into Python first, then aggregating.

    .venv/bin/python benchmarks/bench_dashboard.py [--faces 50] [--frames 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build_db(path: Path, faces: int, frames: int, video: Path) -> int:
    import duckdb

    from ferpipe.store import Store
    from ferpipe.types import EXPRESSIONS

    store = Store(path)
    store.migrate()
    store.upsert_clip("bigclip00001", {"sha256": "b" * 64, "path": str(video), "title": "1M-row benchmark clip",
                                       "duration_s": frames / 5.0, "fps": 5.0, "frame_count": frames}, {"group": "A"})  # fmt: skip
    run_id = store.start_run("bigclip00001", "mini-xception", "mtcnn", {"bench": True}, frames).run_id
    raw = ", ".join(f"random() + CASE WHEN f % 7 = {k} THEN 1.5 ELSE 0 END AS r{k}" for k in range(7))
    total = " + ".join(f"r{k}" for k in range(7))
    probs = ", ".join(f"(r{k} / ({total}))::REAL" for k in range(7))
    con = duckdb.connect(str(path))
    con.execute(f"""
        INSERT INTO observations
        SELECT {run_id}, f, i, i * 200.0, 10 * f, 10, 48, 48, 0.99, {probs}, 0, 0
        FROM (SELECT i, f, {raw} FROM range({frames}) t(i), range(1, {faces + 1}) u(f))
    """)  # fmt: skip
    va = " + ".join(f"{e} * {v}" for e, v in zip(EXPRESSIONS, (-0.51, -0.6, -0.64, 0.81, -0.63, 0.4, 0.0)))
    con.execute(f"UPDATE observations SET valence = {va}")
    con.execute("""INSERT INTO faces SELECT run_id, face_id, min(timestamp_ms), max(timestamp_ms), count(*), avg(det_score)
                    FROM observations GROUP BY ALL""")  # fmt: skip
    n = con.execute("SELECT count(*) FROM observations").fetchone()[0]
    con.execute(f"UPDATE runs SET status = 'done', frames_done = {frames}, faces = {faces}, observations = {n}")
    con.close()
    return n


def clip_view_data(store, run_id: int, bin_s: float = 1.0) -> None:
    from ferpipe import analytics as an

    fb = an.face_bins(store, run_id, bin_s)
    agg = an.smooth(an.aggregate_face_bins(fb, bin_s), 3)
    an.top_expression_share(fb, bin_s)
    an.dominant_share(an.face_means_from_bins(fb))
    for e in ("happy", "surprise", "sad", "neutral"):
        an.peaks(agg, e, k=3)


def naive(store, run_id: int, bin_s: float = 1.0) -> None:
    from ferpipe import analytics as an

    obs = store.timeline(run_id)  # every row into Python first
    an.aggregate_frame(obs, bin_s)


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=50)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from streamlit.testing.v1 import AppTest

    from ferpipe.samples import build_samples
    from ferpipe.store import Store

    video = build_samples()["WolfgangLanger_Pexels.mp4"]
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "big.duckdb"
        t0 = time.perf_counter()
        n = build_db(db, args.faces, args.frames, video)
        print(f"built {n:,} observation rows ({args.faces} faces x {args.frames} frames) in {time.perf_counter() - t0:.1f}s")
        store = Store(db)
        run_id = store.best_run("bigclip00001")
        clip_view_data(store, run_id)  # warm the OS cache
        data_s = timed(lambda: clip_view_data(store, run_id), args.repeats)
        naive_s = timed(lambda: naive(store, run_id), max(1, args.repeats // 2))

        os.environ["FERPIPE_DB"] = str(db)

        def render() -> None:
            at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=120)
            at.switch_page("pages/clip.py").run()
            assert not at.exception, at.exception

        render()
        page_s = timed(render, args.repeats)
    print(f"clip view data (DuckDB bins + curves + shares + peaks): median {data_s * 1000:.0f} ms")
    print(f"clip view page, full server-side render (AppTest):       median {page_s * 1000:.0f} ms")
    print(f"peer, all rows into Python then aggregate:               median {naive_s * 1000:.0f} ms")
    print(f"data work vs peer: {naive_s / data_s:.1f}x faster; median of {args.repeats} runs each")


if __name__ == "__main__":
    main()
