"""Studies at scale: one manifest of 8+ clips processed sequentially, with ``--workers 2`` and on Ray (local, 2 CPUs),
each by the real CLI in a fresh process into a fresh DuckDB file; then the single writer's own ceiling.

Printed per mode (median of --repeats): wall seconds, speedup against sequential (same process tree, same clips),
peak RSS of the driver and of the largest worker process. Then: committed rows/s of the writer alone (real
observation rows from one clip, replayed in 2,000-row batches into a fresh file), and the rows per second one
machine's analysis produces, which is what the scale plan in the README compares.

    .venv/bin/python benchmarks/bench_scale.py [--clips 8] [--repeats 3] [--modes sequential,workers,ray]
    .venv/bin/python benchmarks/bench_scale.py --faces [--repeats 3]   # faces/s: the crowded 720p grid vs one face

``--faces``: faces analysed per second of analysis (default settings, one process, models loaded once) on the audience
grid scaled to 720p (up to ten faces in view, about eight most of the time) against the one-face clip, interleaved in
one process: what #26's "1.5x faces/s on the 8-face grid" is measured against.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MIX = ("audience_grid.mp4", "WolfgangLanger_Pexels.mp4", "face_noface.mov", "noface_face.mov")


def make_study(folder: Path, n: int) -> Path:
    """n distinct clips (a byte appended makes a new file hash, not a new video) and their manifest."""
    from ferpipe.samples import build_samples

    samples = build_samples()
    lines = ["source,segment"]
    for k in range(n):
        src = samples[MIX[k % len(MIX)]]
        dst = folder / f"{k:02d}_{src.name}"
        dst.write_bytes(src.read_bytes() + bytes([k % 256]))
        lines.append(f"{dst.name},{'AB'[k % 2]}")
    manifest = folder / "study.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _tree_rss(root: int) -> dict[int, int]:
    """RSS (KiB) of every process in root's tree."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        ppid = int(fields.get("PPid", "0").strip())
        children.setdefault(ppid, []).append(int(entry.name))
        if "VmRSS" in fields:
            rss[int(entry.name)] = int(fields["VmRSS"].split()[0])
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        out[pid] = rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return out


def run_mode(mode: str, manifest: Path, db: Path) -> dict:
    args = [sys.executable, "-m", "ferpipe.cli", "process", "--manifest", str(manifest), "--db", str(db), "--json"]
    args += {"sequential": [], "workers": ["--workers", "2"], "ray": ["--ray", "local", "--workers", "2"]}[mode]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    peaks: dict[int, int] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for pid, kib in _tree_rss(proc.pid).items():
                peaks[pid] = max(peaks.get(pid, 0), kib)
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    thread.join()
    rows = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or any(r.get("error") for r in rows):
        raise SystemExit(f"{mode}: failed: {rows}")
    workers = {pid: kib for pid, kib in peaks.items() if pid != proc.pid}
    # Ray's own daemons (GCS, raylet, ...) are in the tree too: the analysing workers are the big ones
    biggest = sorted(workers.values(), reverse=True)[:2]
    return {
        "wall_s": wall,
        "driver_mib": peaks.get(proc.pid, 0) / 1024,
        "worker_mib": (max(biggest) / 1024) if biggest else 0.0,
        "observations": sum(r["observations"] for r in rows),
        "analysis_s": sum(r["seconds"] for r in rows),
    }


def writer_ceiling(folder: Path, total_rows: int = 200_000) -> dict:
    """Committed rows/s of ObservationSink alone: one clip's real rows replayed as 2,000-row batches."""

    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.samples import build_samples
    from ferpipe.store import ObservationSink, Store
    from ferpipe.types import AnalysisBatch, Observations, RunProgress

    sample = build_samples()["audience_grid.mp4"]
    store = Store(folder / "writer.duckdb")
    pipeline = Pipeline(store, Settings())
    clip_id = pipeline.ingest(str(sample)).sha256[:12]
    clip = store.clip(clip_id)
    run = pipeline.start(clip)
    real = Observations.concat([b.rows for b in pipeline.batches(clip, run) if isinstance(b, AnalysisBatch)])
    reps = max(1, 2000 // len(real))
    frames_per_rep = int(real.frame_index.max()) + 1

    def batch(k: int) -> Observations:
        parts = []
        for r in range(reps):
            shift = (k * reps + r) * frames_per_rep
            parts.append(Observations(real.frame_index + shift, real.timestamp_ms + shift * 200.0, real.detections,
                                      real.expressions, real.signals))  # fmt: skip
        return Observations.concat(parts)

    n_batches = max(1, total_rows // (reps * len(real)))
    batches = [batch(k) for k in range(n_batches)]
    rows = sum(len(b) for b in batches)
    t0 = time.perf_counter()
    with ObservationSink(store, run.run_id, batch_rows=2000) as sink:
        for k, b in enumerate(batches):
            sink.append(b, RunProgress(k + 1, int(b.frame_index.max()), float(b.timestamp_ms.max()), 0.0))
    seconds = time.perf_counter() - t0
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds,
            "per_row_bytes": os.path.getsize(store.path) / rows}  # fmt: skip


def faces_per_second(repeats: int) -> None:
    """Faces/s of the analysis (observations over the run's analysis seconds) on the crowded grid and on one face."""
    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.samples import build_samples, looped_clip, samples_dir
    from ferpipe.store import Store

    media = build_samples()
    clips = {"720p grid (crowded)": looped_clip(media["audience_grid.mp4"], 0.33, samples_dir() / "grid_720p_20s.mp4",
                                                (1280, 720)),
             "one face": media["WolfgangLanger_Pexels.mp4"]}  # fmt: skip
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in clips}
    with tempfile.TemporaryDirectory(prefix="ferpipe-faces-") as tmp:
        pipeline = None
        for r in range(repeats + 1):  # the first round warms caches and loads the models
            for name, path in clips.items():
                store = Store(Path(tmp) / f"{r}-{len(got[name])}-{name[:4]}.duckdb")
                pipeline = Pipeline(store, Settings(), detector=pipeline.detector if pipeline else None,
                                    model=pipeline.model if pipeline else None)  # fmt: skip
                res = pipeline.process(str(path))
                if r:
                    per_frame = res.observations / max(res.frames_analyzed, 1)
                    got[name].append((res.observations / res.seconds, per_frame))
    print(f"faces per second of analysis, default settings, median of {repeats} (one process, models loaded once)")
    for name, xs in got.items():
        print(
            f"  {name:22s} {statistics.median(f for f, _ in xs):7.1f} faces/s  "
            f"({statistics.median(n for _, n in xs):.1f} faces per analysed frame)"
        )
    crowd, one = (statistics.median(f for f, _ in got[k]) for k in clips)
    print(f"  crowded / one face: {crowd / one:.2f}x faces/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="sequential,workers,ray")
    ap.add_argument("--faces", action="store_true", help="Faces/s on the crowded 720p grid against one face.")
    args = ap.parse_args()
    if args.faces:
        faces_per_second(args.repeats)
        return
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory(prefix="ferpipe-scale-") as tmp:
        folder = Path(tmp)
        manifest = make_study(folder, args.clips)
        results: dict[str, list[dict]] = {m: [] for m in modes}
        for r in range(args.repeats):
            for mode in modes:  # interleaved, so machine noise hits every mode alike
                results[mode].append(run_mode(mode, manifest, folder / f"{mode}_{r}.duckdb"))
                print(f"  repeat {r + 1} {mode}: {results[mode][-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
        base = statistics.median(x["wall_s"] for x in results.get("sequential", results[modes[0]]))
        print(f"\n{args.clips} clips, {os.cpu_count()} cores, median of {args.repeats} (real CLI, fresh DB each time)")
        print(f"{'mode':<12}{'wall s':>9}{'speedup':>9}{'driver MiB':>12}{'worker MiB':>12}{'observations':>14}")
        for mode in modes:
            xs = results[mode]
            wall = statistics.median(x["wall_s"] for x in xs)
            print(f"{mode:<12}{wall:>9.1f}{base / wall:>8.2f}x{statistics.median(x['driver_mib'] for x in xs):>12.0f}"
                  f"{statistics.median(x['worker_mib'] for x in xs):>12.0f}{xs[0]['observations']:>14,}")  # fmt: skip
        seq = results.get("sequential")
        if seq:
            obs = seq[0]["observations"]
            analysis = statistics.median(x["analysis_s"] for x in seq)
            print(f"\none process analyses {obs / analysis:,.0f} observation rows/s (this machine, 2 cores shared)")
        w = writer_ceiling(folder)
        print(f"single writer alone: {w['rows_per_s']:,.0f} committed rows/s ({w['rows']:,} rows in {w['seconds']:.1f} s, "
              f"2,000-row batches, ~{w['per_row_bytes']:.0f} bytes/row on disk)")  # fmt: skip


if __name__ == "__main__":
    main()
