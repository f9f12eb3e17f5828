"""Clip-view render time over a large database (default 10,000,000 observation rows), for two storage layouts:
the expression columns only (as before signals) and every column of a run with signals (76).

Builds a DuckDB file with one clip of N faces x F frames of synthetic observations (inserted by DuckDB SQL)
and its per-second rollup, then times, as medians of repeated runs:
  - the clip view's data work (bins, curves, shares, peaks, attention) from the rollup,
  - the same from the raw rows (what a quality filter forces),
  - a full server-side render of the Clip view page with Streamlit's AppTest,
  - a peer: pulling every observation into Python first, then aggregating,
  - the clip view's data work and its page with a per-person baseline (each person's first 3 s, subtracted) on,
    against the same with it off, in the same process (the target: within 20%).

    .venv/bin/python benchmarks/bench_dashboard.py [--faces 50] [--frames 200000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build_db(path: Path, faces: int, frames: int, video: Path, signals: bool = True) -> int:
    """A run of faces x frames observations at 5 frames/s; with ``signals``, every column of a real run (head pose,
    attention, 52 blendshapes), else the expression columns only (the layout before signals)."""
    import duckdb

    from ferpipe.signals import BS_COLUMNS
    from ferpipe.store import Store
    from ferpipe.types import EXPRESSIONS

    store = Store(path)
    store.migrate()
    store.upsert_clip("bigclip00001", {"sha256": "b" * 64, "path": str(video), "title": "benchmark clip",
                                       "duration_s": frames / 5.0, "fps": 5.0, "frame_count": frames}, {"group": "A"})  # fmt: skip
    run_id = store.start_run("bigclip00001", "mini-xception", "mtcnn", {"bench": True}, frames).run_id
    raw = ", ".join(f"random() + CASE WHEN f % 7 = {k} THEN 1.5 ELSE 0 END AS r{k}" for k in range(7))
    total = " + ".join(f"r{k}" for k in range(7))
    probs = ", ".join(f"(r{k} / ({total}))::REAL" for k in range(7))
    va = " + ".join(f"r{k} / ({total}) * {v}" for k, v in enumerate((-0.51, -0.6, -0.64, 0.81, -0.63, 0.4, 0.0)))
    extra = ""
    if signals:
        shapes = ", ".join(f"(((i * {k + 3} + f * 7) % 97) / 97.0)::REAL" for k in range(len(BS_COLUMNS)))
        extra = (
            ", ((i % 61) - 30)::REAL, ((i % 41) - 20)::REAL, ((f % 21) - 10)::REAL, 0.8::REAL, "
            f"(i % 10 <> 0), 0.99::REAL, {shapes}, 0.9::REAL"
        )  # fmt: skip (the last: reading confidence)
    con = duckdb.connect(str(path))
    cols = (
        ""
        if signals
        else f"(run_id, face_id, frame_index, timestamp_ms, x, y, w, h, det_score, {', '.join(EXPRESSIONS)}, valence, arousal)"
    )
    con.execute(f"""
        INSERT INTO observations {cols}
        SELECT {run_id}, f, i, i * 200.0, 10 * f, 10, 48, 48, 0.99, {probs}, ({va})::REAL, 0::REAL{extra}
        FROM (SELECT i, f, {raw} FROM range({frames}) t(i), range(1, {faces + 1}) u(f))
    """)  # fmt: skip
    con.execute("""INSERT INTO faces (run_id, face_id, first_seen_ms, last_seen_ms, n_obs, mean_score)
                    SELECT run_id, face_id, min(timestamp_ms), max(timestamp_ms), count(*), avg(det_score)
                    FROM observations GROUP BY ALL""")  # fmt: skip
    n = con.execute("SELECT count(*) FROM observations").fetchall()[0][0]
    con.execute(f"UPDATE runs SET status = 'done', frames_done = {frames}, faces = {faces}, observations = {n}")
    con.close()
    store.build_rollup(run_id)
    return n


def clip_view_data(store, run_id: int, bin_s: float, raw: bool = False, baseline=None) -> None:
    """What the Clip view computes: expression bins, curves, shares, peaks, attention and two AU proxies (one scan
    of the rollup for all of them, as the page does); ``raw``: a quality filter that keeps every row, which sends
    the expressions to the raw rows (attention and facial actions stay on the rollup, unfiltered, as on the page)."""

    with store.reading():  # one read connection for the whole page, as the page holds it
        _clip_view_data(store, run_id, bin_s, raw, baseline)


def _clip_view_data(store, run_id: int, bin_s: float, raw: bool, baseline) -> None:
    from ferpipe import analytics as an
    from ferpipe.store import QualityFilter

    unfiltered = (*an.ATTENTION_SIGNALS, "au12_proxy", "au04_proxy")
    if raw:
        fb = an.face_bins(store, run_id, bin_s, quality=QualityFilter(min_face_px=1.0))
        fa = an.face_bins(store, run_id, bin_s, unfiltered)
    else:
        fb = fa = an.face_bins(store, run_id, bin_s, (*an.SIGNALS, *unfiltered))
    if baseline is not None:  # as the page does: the expression bins and the signal bins, each corrected
        from ferpipe.baseline import corrected_face_bins

        same = fa is fb
        fb, _ = corrected_face_bins(store, run_id, "bigclip00001", fb, baseline)
        fa = fb if same else corrected_face_bins(store, run_id, "bigclip00001", fa, baseline)[0]
    agg = an.smooth(an.aggregate_face_bins(fb, bin_s, clip_bounds=baseline is None), 3)
    an.top_expression_share(fb, bin_s)
    an.face_means_from_bins(fb)
    for e in ("happy", "surprise", "sad", "neutral"):
        an.peaks(agg, e, k=3, bin_s=bin_s)
    if "attentive" in fa.columns and fa["attentive"].drop_nulls().len():
        an.aggregate_face_bins(fa, bin_s, unfiltered)


def naive(store, run_id: int, bin_s: float = 1.0) -> None:
    from ferpipe import analytics as an

    obs = store.observations(run_id, an.SIGNALS)  # every row into Python first
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
    ap.add_argument("--frames", type=int, default=200000, help="50 faces x 200,000 frames = 10M observations")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-page", action="store_true", help="skip the AppTest page renders")
    args = ap.parse_args()

    from streamlit.testing.v1 import AppTest

    from ferpipe import analytics as an
    from ferpipe.samples import build_samples
    from ferpipe.store import Store
    from ferpipe.types import Baseline

    base = Baseline("first", first_s=3.0)
    video = build_samples()["WolfgangLanger_Pexels.mp4"]
    bin_s = an.default_bin(args.frames / 5.0)
    results = {}
    for layout, signals in (("expressions only (old layout)", False), ("with signals (76 columns)", True)):
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "big.duckdb"
            t0 = time.perf_counter()
            n = build_db(db, args.faces, args.frames, video, signals)
            size = db.stat().st_size / 2**20
            print(f"{layout}: built {n:,} rows in {time.perf_counter() - t0:.0f}s, file {size:,.0f} MiB")
            store = Store(db)
            run_id = store.best_run("bigclip00001")
            clip_view_data(store, run_id, bin_s)  # warm the OS cache
            r = {"rollup": timed(lambda s=store, r=run_id: clip_view_data(s, r, bin_s), args.repeats),
                 "raw": timed(lambda s=store, r=run_id: clip_view_data(s, r, bin_s, raw=True), max(1, args.repeats // 2)),
                 "naive": timed(lambda s=store, r=run_id: naive(s, r, bin_s), 1)}  # fmt: skip
            off, on = [], []
            for _ in range(args.repeats):  # interleaved, so that load on the machine hits both alike
                off.append(timed(lambda s=store, r=run_id: clip_view_data(s, r, bin_s), 1))
                on.append(timed(lambda s=store, r=run_id: clip_view_data(s, r, bin_s, baseline=base), 1))
            r["baseline_off"], r["baseline_on"] = statistics.median(off), statistics.median(on)
            if not args.no_page:
                os.environ["FERPIPE_DB"] = str(db)

                def render() -> None:
                    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=300)
                    at.switch_page("views/clip.py").run()
                    assert not at.exception, at.exception

                render()
                r["page"] = timed(render, args.repeats)

                def render_twice(kind: str) -> None:  # the page, then a rerun with the baseline set to kind
                    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=300)
                    at.switch_page("views/clip.py").run()
                    at.selectbox(key="clip_baseline_kind").set_value(kind).run()
                    assert not at.exception, at.exception

                off, on = [], []
                for _ in range(args.repeats):
                    off.append(timed(lambda: render_twice("none"), 1))
                    on.append(timed(lambda: render_twice("first"), 1))
                r["page_off"], r["page_on"] = statistics.median(off), statistics.median(on)
            results[layout] = r
    print(f"\n{args.faces * args.frames:,} observations, default bin {bin_s:g} s; medians of {args.repeats} runs")
    for layout, r in results.items():
        print(f"{layout}:")
        print(f"  clip view data from the per-second rollup: {r['rollup'] * 1000:7.0f} ms")
        print(f"  clip view data from raw rows (filtered):   {r['raw'] * 1000:7.0f} ms")
        print(f"  peer, all rows into Python then aggregate: {r['naive'] * 1000:7.0f} ms")
        on, off = r["baseline_on"], r["baseline_off"]
        print(
            f"  clip view data, baseline off / on:         {off * 1000:7.0f} / {on * 1000:.0f} ms "
            f"(on/off {on / off:.2f})"
        )
        if "page" in r:
            print(f"  clip view page, full server-side render:  {r['page'] * 1000:7.0f} ms")
            on, off = r["page_on"], r["page_off"]
            print(
                f"  page + rerun, baseline off / on:           {off * 1000:7.0f} / {on * 1000:.0f} ms "
                f"(on/off {on / off:.2f})"
            )


if __name__ == "__main__":
    main()
