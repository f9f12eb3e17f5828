"""Live latency: capture-to-visible on a live HLS stream of a 720p multi-face clip, at the default analysis rate.

ffmpeg publishes the audience grid scaled to 720p (up to ten faces) in real time (-re) as HLS with 1 s segments,
served from 127.0.0.1; `ferpipe process --live` analyses it; this process reads the database the way the dashboard
does (a fresh read-only connection every 0.25 s). A frame at stream time t was captured at T0 + t, T0 being when
ffmpeg started; it is visible when a read first returns it. Latency = visible - captured, per analysed frame.
It includes HLS's own delay (a segment is published only once complete: about 1 s here, plus encoding).

    .venv/bin/python benchmarks/bench_live.py [--seconds 45] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def one_run(clip: Path, seconds: float, tmp: Path) -> dict:
    from ferpipe.store import Store

    www = tmp / "www"
    www.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    loops = max(0, int(seconds // 15))
    t0 = time.time()
    ffmpeg = subprocess.Popen(
        ["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", str(loops), "-i", str(clip), "-an", "-c:v", "libx264",
         "-preset", "veryfast", "-g", "25", "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
         str(www / "live.m3u8")], stdin=subprocess.DEVNULL,
    )  # fmt: skip
    while not (www / "live.m3u8").is_file():
        time.sleep(0.05)
    db = tmp / "live.duckdb"
    env = dict(os.environ, FERPIPE_ALLOW_PRIVATE_URLS="127.0.0.1")
    cli = subprocess.Popen(
        [sys.executable, "-m", "ferpipe.cli", "-v", "process", "--live",
         f"http://127.0.0.1:{server.server_address[1]}/live.m3u8", "--db", str(db), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    seen: dict[float, float] = {}  # stream timestamp (ms) -> when first visible (epoch s)
    while cli.poll() is None:
        time.sleep(0.25)
        if not db.is_file():
            continue
        try:
            rows = Store(db).query("SELECT DISTINCT timestamp_ms FROM observations")
        except Exception:
            continue
        now = time.time()
        for ts in rows["timestamp_ms"].to_list():
            seen.setdefault(ts, now)
    out, err = cli.communicate()
    ffmpeg.wait()
    server.shutdown()
    result = json.loads(out.splitlines()[-1])
    dropped = next((line for line in err.splitlines() if "dropped to keep up" in line), "")
    latencies = [visible - (t0 + ts / 1000.0) for ts, visible in seen.items()]
    return {"latencies": latencies, "result": result, "dropped_line": " ".join(dropped.split())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=45.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from ferpipe.samples import build_samples, looped_clip, samples_dir

    clip = looped_clip(build_samples()["audience_grid.mp4"], 0.25, samples_dir() / "grid_720p_15s.mp4", (1280, 720))
    medians, p95s, all_lat = [], [], []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="ferpipe-live-") as tmp:
            run = one_run(clip, args.seconds, Path(tmp))
        lat = sorted(run["latencies"])
        if not lat:
            raise SystemExit(f"run {r + 1}: nothing became visible: {run['result']}")
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        medians.append(statistics.median(lat))
        p95s.append(p95)
        all_lat += lat
        res = run["result"]
        print(f"run {r + 1}: {len(lat)} frames visible, median {statistics.median(lat):.2f} s, p95 {p95:.2f} s; "
              f"{res['faces']} face tracks, {res['observations']:,} observations, status {res['status']}; "
              f"{run['dropped_line'][-90:]}", flush=True)  # fmt: skip
    all_lat.sort()
    print(f"\n720p audience grid (up to 10 faces), default settings (5 frames/s, signals and people on), "
          f"{os.cpu_count()} cores, {args.repeats} runs of {args.seconds:.0f} s")  # fmt: skip
    print(f"capture-to-visible latency: median {statistics.median(medians):.2f} s (median of run medians), "
          f"p95 {statistics.median(p95s):.2f} s (median of run p95s); pooled p95 "
          f"{all_lat[int(0.95 * (len(all_lat) - 1))]:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
