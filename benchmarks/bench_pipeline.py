"""Pipeline throughput and memory on WolfgangLanger_Pexels.mp4 (and a ~10-minute loop of it), and peak
memory by resolution (the audience grid scaled to 360p, 720p, 1080p and 4K, 15 s each, made here).

Every measurement runs in a fresh subprocess so that its peak RSS is its own. Each is
repeated and the median printed, with ratios against peers measured in the same run:
decoding alone (the ceiling) and full MTCNN detection on every frame (no tracking).

    .venv/bin/python benchmarks/bench_pipeline.py [--repeats 3] [--long-minutes 10] [--only resolution]
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

PREVIOUS_DEFAULT = "ferpipe-cnn2"


def worker(mode: str, video: str) -> dict:
    """One measurement in this process; prints a JSON line."""
    import resource

    from ferpipe.frames import iter_frames, probe
    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.store import Store

    info = probe(video)
    if mode == "decode":
        t0 = time.perf_counter()
        n = sum(1 for _ in iter_frames(video, None))
        seconds = time.perf_counter() - t0
        faces = 0
    elif mode == "mesh":  # the landmark stage alone: the face mesh on faces detected beforehand, at 5 frames/s
        from ferpipe.detect import create_detector
        from ferpipe.signals import FaceMesh

        detector, mesh = create_detector(Settings().detector), FaceMesh.from_registry()
        work = [(f.image, detector(f.image)) for f in iter_frames(video, 5.0)]
        t0 = time.perf_counter()
        for image, dets in work:
            mesh(image, dets)
        seconds = time.perf_counter() - t0
        n, faces = len(work), sum(len(d) for _, d in work)
    else:
        settings = {
            "every": Settings(sample_fps=None),
            "default": Settings(),
            "every-detect-all": Settings(sample_fps=None, detect_every_ms=0),
            "default-expressions-only": Settings(signals=False, people=False),
            "default-previous-model": Settings(model=PREVIOUS_DEFAULT),
        }[mode]
        with tempfile.TemporaryDirectory() as tmp:
            pipeline = Pipeline(Store(Path(tmp) / "b.duckdb"), settings)
            _ = pipeline.detector, pipeline.model, pipeline.mesh, pipeline.descriptor  # load models outside the timing
            clip = pipeline.ingest(video).sha256[:12]
            t0 = time.perf_counter()
            result = pipeline.analyse(clip)
            seconds = time.perf_counter() - t0
            n, faces = result.frames_analyzed, result.observations
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    return {"mode": mode, "frames": n, "faces": faces, "seconds": seconds, "duration_s": info.duration_s,
            "fps": n / seconds, "faces_per_s": faces / seconds, "x_realtime": info.duration_s / seconds,
            "peak_rss_mib": rss}  # fmt: skip


def measure(mode: str, video: Path, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--worker", mode, str(video)], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], (int, float))}
    med["mode"] = mode
    med["runs"] = len(runs)
    return med


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--long-minutes", type=float, default=10.0)
    ap.add_argument("--only", choices=["speed", "resolution", "models"], default=None)
    ap.add_argument("--worker", nargs=2, metavar=("MODE", "VIDEO"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return

    from ferpipe.samples import build_samples, looped_clip, samples_dir

    media = build_samples()
    if args.only == "models":  # the default model against the previous one, alternating runs (ABAB), same clip
        short = media["WolfgangLanger_Pexels.mp4"]
        pairs = [
            (measure("default", short, 1), measure("default-previous-model", short, 1)) for _ in range(args.repeats)
        ]
        new = statistics.median(a["fps"] for a, _ in pairs)
        old = statistics.median(b["fps"] for _, b in pairs)
        print(f"default 5 fps, default model: {new:.1f} frames/s; previous default ({PREVIOUS_DEFAULT}): {old:.1f} "
              f"frames/s; ratio {new / old:.3f} (medians of {args.repeats} alternating runs)")  # fmt: skip
        return
    if args.only != "speed":
        print(
            f"\n{'resolution (audience grid, 15 s, default 5 fps)':50s} {'frames/s':>9s} {'x real time':>12s} {'peak RSS':>9s}"
        )
        for name, size in (("360p", (640, 360)), ("720p", (1280, 720)), ("1080p", (1920, 1080)), ("4K", (3840, 2160))):
            clip = looped_clip(media["audience_grid.mp4"], 0.25, samples_dir() / f"grid_{name}_15s.mp4", size)
            r = measure("default", clip, args.repeats)
            print(
                f"{name:50s} {r['fps']:9.1f} {r['x_realtime']:11.1f}x {r['peak_rss_mib']:7.0f}MiB  (median of {r['runs']})"
            )
        if args.only == "resolution":
            return
    short = media["WolfgangLanger_Pexels.mp4"]
    long_clip = looped_clip(short, args.long_minutes, samples_dir() / f"wolfgang_loop_{args.long_minutes:g}min.mp4")

    rows = {
        "decode only (ceiling)": measure("decode", short, args.repeats),
        "every frame, detect+track (ours)": measure("every", short, args.repeats),
        "every frame, full detection each frame (peer)": measure("every-detect-all", short, args.repeats),
        "default 5 fps (ours)": measure("default", short, args.repeats),
        "default 5 fps, expressions only (signals, people off)": measure(
            "default-expressions-only", short, args.repeats
        ),
        f"default 5 fps, previous default model ({PREVIOUS_DEFAULT})": measure(
            "default-previous-model", short, args.repeats
        ),
        "face mesh stage alone (5 fps, faces found beforehand)": measure("mesh", short, args.repeats),
        f"default 5 fps, {args.long_minutes:g}-min loop": measure("default", long_clip, max(1, args.repeats // 2)),
        f"every frame, {args.long_minutes:g}-min loop": measure("every", long_clip, 1),
    }
    print(f"\n{'run':50s} {'frames':>7s} {'frames/s':>9s} {'faces/s':>8s} {'x real time':>12s} {'peak RSS':>9s}")
    for name, r in rows.items():
        print(f"{name:50s} {r['frames']:7.0f} {r['fps']:9.1f} {r['faces_per_s']:8.1f} "
              f"{r['x_realtime']:11.1f}x {r['peak_rss_mib']:7.0f}MiB  (median of {r['runs']})")  # fmt: skip
    ours, peer = rows["every frame, detect+track (ours)"], rows["every frame, full detection each frame (peer)"]
    print(f"\nevery-frame speed-up over full detection on each frame: {ours['fps'] / peer['fps']:.1f}x")
    print(f"every-frame throughput as a share of decode-only: {ours['fps'] / rows['decode only (ceiling)']['fps']:.1%}")
    base = rows["default 5 fps, expressions only (signals, people off)"]
    print(f"default with signals and people vs expressions only: {rows['default 5 fps (ours)']['fps'] / base['fps']:.2f}x "
          f"the frames/s")  # fmt: skip
    prev = rows[f"default 5 fps, previous default model ({PREVIOUS_DEFAULT})"]
    print(
        f"default model vs the previous default: {rows['default 5 fps (ours)']['fps'] / prev['fps']:.2f}x the frames/s"
    )
    long_rss = rows[f"default 5 fps, {args.long_minutes:g}-min loop"]["peak_rss_mib"]
    print(f"peak RSS, long clip vs short clip at the default rate: {long_rss:.0f} vs "
          f"{rows['default 5 fps (ours)']['peak_rss_mib']:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
