"""Live sources: a real HLS stream made in real time by ffmpeg and served from 127.0.0.1, analysed as it plays."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ferpipe.errors import InputError
from ferpipe.frames import probe
from ferpipe.live import LiveCapture, LiveSource, parse_live, parse_m3u8
from ferpipe.store import Store

FFMPEG = shutil.which("ffmpeg")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("webcam:x", "not a camera"),
        ("ftp://example.org/a.m3u8", "not a live source"),
        ("", "not a live source"),
        ("http://127.0.0.1:9/x.m3u8", "private address"),
    ],
)
def test_bad_live_sources_are_refused(source, message):
    with pytest.raises(InputError, match=message):
        parse_live(source)


def test_rtsp_to_a_private_address_is_refused_where_it_is_opened(tmp_path):
    src = parse_live("rtsp://127.0.0.1:8554/cam")
    with pytest.raises(InputError, match=r"private address 127\.0\.0\.1"):
        LiveCapture(src, tmp_path / "r.mp4").start()


def test_capture_arguments_are_checked(tmp_path):
    src = LiveSource("webcam", 0, "webcam 0")
    with pytest.raises(ValueError, match="sample_fps must be in"):
        LiveCapture(src, tmp_path / "r.mp4", sample_fps=0)
    with pytest.raises(ValueError, match="max_lag_s must be positive, got -1"):
        LiveCapture(src, tmp_path / "r.mp4", max_lag_s=-1)


def test_m3u8_media_and_master_playlists():
    media = parse_m3u8(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.0,\na.ts\n#EXTINF:1.5,\nsub/b.ts\n"
        "#EXT-X-ENDLIST\n",
        "http://h/live/index.m3u8",
    )
    assert media.segments == [(7, 2.0, "http://h/live/a.ts"), (8, 1.5, "http://h/live/sub/b.ts")]
    assert media.ended and media.target_s == 2.0 and media.variant is None
    master = parse_m3u8("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow/index.m3u8\n", "http://h/master.m3u8")
    assert master.variant == "http://h/low/index.m3u8" and not master.segments


def test_a_playlist_cannot_point_at_local_files(http_dir, allow_private, tmp_path):
    root, base = http_dir
    (root / "evil.m3u8").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
    )
    capture = LiveCapture(parse_live(f"{base}/evil.m3u8"), tmp_path / "rec.ts")
    with pytest.raises(InputError, match="only http and https"):
        capture.start()
    assert tmp_path.joinpath("rec.ts").read_bytes() == b""


def _hls(source: Path, out: Path, loops: int = 0) -> subprocess.Popen:
    """ffmpeg publishing ``source`` as a live HLS stream in real time (-re), 1 s segments."""
    if FFMPEG is None:
        pytest.fail("ffmpeg is required for the live tests (.ci/run installs it)")
    args = [FFMPEG, "-loglevel", "error", "-re", "-stream_loop", str(loops), "-i", str(source), "-an", "-c:v",
            "libx264", "-preset", "veryfast", "-g", "25", "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
            str(out / "live.m3u8")]  # fmt: skip
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (out / "live.m3u8").is_file():
        assert time.monotonic() < deadline, "ffmpeg made no playlist"
        time.sleep(0.2)
    return proc


def _live_cli(url: str, db: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ferpipe.cli", "process", "--live", url, "--db", str(db), "--model", "mini-xception",
         "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def _rows_while(proc: subprocess.Popen, db: Path, timeout: float = 60) -> list[int]:
    """Observation counts read from the database while the live run is going (the dashboard's view)."""
    seen = []
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(1.0)
        if db.is_file():
            try:
                n = Store(db).query("SELECT count(*) AS n FROM observations")["n"][0]
            except Exception:
                continue
            seen.append(int(n))
    return seen


def test_live_hls_rows_arrive_while_it_plays_and_the_run_ends_done(http_dir, allow_private, samples, tmp_path):
    root, base = http_dir
    ffmpeg = _hls(samples["WolfgangLanger_Pexels.mp4"], root)  # 19.7 s of one face
    db = tmp_path / "live.duckdb"
    proc = _live_cli(f"{base}/live.m3u8", db)
    seen = _rows_while(proc, db, timeout=90)
    out, err = proc.communicate(timeout=60)
    ffmpeg.wait(timeout=30)
    assert proc.returncode == 0, err
    growing = [n for n in seen if n > 0]
    assert len(set(growing)) >= 3, f"rows did not grow while the stream played: {seen}"
    result = json.loads(out.splitlines()[-1])
    assert result["status"] == "done" and result["faces"] >= 1 and result["observations"] > 50
    store = Store(db)
    clip = store.clip(result["clip_id"])
    recording = Path(clip["path"])
    assert recording.is_file() and recording.parent == tmp_path / "live_media"  # kept for reprocessing
    assert probe(recording).frame_count > 0 and 12 < clip["duration_s"] < 25
    assert clip["live_t0"] > 0
    listed = store.clips().filter(pl.col("clip_id") == result["clip_id"])  # what the clip view's picker reads
    assert listed["live_t0"][0] == clip["live_t0"]
    assert listed["dropped_frames"][0] == result["dropped"] >= 0  # the Library shows what the run left out
    ts = store.query("SELECT max(timestamp_ms) AS t FROM observations")["t"][0]
    assert ts / 1000 > 12  # the stream's time line, not the analysis's


def test_sigterm_ends_a_live_run_cleanly(http_dir, allow_private, samples, tmp_path):
    """The dashboard's Stop (SIGTERM) or Ctrl-C: the run is finished as done with what was seen, the recording kept."""
    root, base = http_dir
    ffmpeg = _hls(samples["WolfgangLanger_Pexels.mp4"], root, loops=3)
    db = tmp_path / "stop.duckdb"
    proc = _live_cli(f"{base}/live.m3u8", db)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(1.0)
            try:
                if Store(db).query("SELECT count(*) AS n FROM observations")["n"][0] >= 20:
                    break
            except Exception:
                continue
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        ffmpeg.kill()
        ffmpeg.wait()
    assert proc.returncode == 0, err
    result = json.loads(out.splitlines()[-1])
    assert result["status"] == "done" and result["observations"] >= 20
    clip = Store(db).clip(result["clip_id"])
    assert Path(clip["path"]).is_file() and clip["duration_s"] > 3


def test_dashboard_job_watches_a_stream_and_stop_finishes_it(http_dir, allow_private, samples, tmp_path):
    """The Library's "Watch live" runs a background job; its Stop (SIGTERM) ends the capture and the clip is done."""
    from ferpipe import jobs
    from ferpipe.pipeline import Settings

    root, base = http_dir
    ffmpeg = _hls(samples["WolfgangLanger_Pexels.mp4"], root, loops=3)
    db = tmp_path / "job.duckdb"
    try:
        job = jobs.start(db, f"{base}/live.m3u8", Settings(model="mini-xception"), title="Panel stream", live=True)
        deadline = time.monotonic() + 90
        rows = 0
        while time.monotonic() < deadline and rows < 15:
            time.sleep(1.0)
            try:
                rows = Store(db).query("SELECT count(*) AS n FROM observations")["n"][0]
            except Exception:  # not created yet, or busy this instant
                continue
        assert rows >= 15, "no rows arrived from the live job"
        job.stop()
        deadline = time.monotonic() + 60
        while job.alive() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        ffmpeg.kill()
        ffmpeg.wait()
    result = job.result()
    assert result is not None and result.status == "done", result
    assert result.title == "Panel stream" and result.observations >= 15
    clip = Store(db).clip(result.clip_id)
    assert Path(clip["path"]).is_file() and clip["live_t0"] > 0


def test_a_finished_playlist_given_as_live_is_read_whole(http_dir, allow_private, samples, tmp_path):
    """A VOD playlist (#EXT-X-ENDLIST) is a recording: every sampled frame is analysed, none dropped, even though its
    segments arrive far faster than real time (it used to lose most of them to the live lag limit)."""
    root, _base = http_dir
    if FFMPEG is None:
        pytest.fail("ffmpeg is required for the live tests (.ci/run installs it)")
    subprocess.run([FFMPEG, "-loglevel", "error", "-i", str(samples["WolfgangLanger_Pexels.mp4"]), "-an", "-c:v",
                    "libx264", "-preset", "veryfast", "-g", "25", "-f", "hls", "-hls_time", "2",
                    "-hls_playlist_type", "vod", str(root / "vod.m3u8")], check=True)  # fmt: skip
    assert "#EXT-X-ENDLIST" in (root / "vod.m3u8").read_text()
    db = tmp_path / "vod.duckdb"
    r = subprocess.run([sys.executable, "-m", "ferpipe.cli", "process", "--live", f"{_base}/vod.m3u8", "--db", str(db),
                        "--model", "mini-xception", "--no-signals", "--no-people", "--json"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.splitlines()[-1])
    assert result["dropped"] == 0
    assert result["frames_analyzed"] >= 95  # 19.7 s at 5 frames/s: about 99 frames, every one of them


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#EXTM3U\n#EXTINF:nan,\na.ts\n", "out of range"),
        ("#EXTM3U\n#EXTINF:abc,\na.ts\n", "is not a number"),
        ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:x1\n#EXTINF:1,\na.ts\n", "is not a number"),
        ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:-4\n#EXTINF:1,\na.ts\n", "out of range"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:inf\n", "out of range"),
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nindex.m3u8\n", "the playlist itself"),
        ("<html>not a playlist</html>\n", "does not start with #EXTM3U"),
    ],
)
def test_hls_parsing_is_strict(text, message):
    """Each of these broke a run before (a NaN duration, a bad sequence number, a playlist naming itself): now a
    one-line InputError."""
    with pytest.raises(InputError, match=message):
        parse_m3u8(text, "http://h/live/index.m3u8")


def test_nested_playlists_stop_after_a_few_levels(http_dir, allow_private, tmp_path):
    """Two master playlists that point at each other: refused after MAX_VARIANT_HOPS, not fetched thousands of
    times, and no recording left behind."""
    root, base = http_dir
    (root / "a.m3u8").write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nb.m3u8\n")
    (root / "b.m3u8").write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n")
    capture = LiveCapture(parse_live(f"{base}/a.m3u8"), tmp_path / "rec.ts")
    with pytest.raises(InputError, match="more than 4 times"):
        capture._run_hls()


def test_a_refused_live_source_leaves_no_clip_and_no_file(http_dir, allow_private, tmp_path):
    """A playlist whose duration is NaN, given with --live: one error line, exit 1, and neither a failed clip nor an
    empty live-*.ts in the media library (both were left before)."""
    from conftest import run_cli

    root, base = http_dir
    (root / "nan.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:nan,\nseg.ts\n")
    db = tmp_path / "live.duckdb"
    r = run_cli("process", "--live", f"{base}/nan.m3u8", "--db", str(db), env={"FERPIPE_ALLOW_PRIVATE_URLS": "1"})
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and last.startswith("error:") and "out of range" in last
    assert "Traceback" not in r.stderr
    assert not list(tmp_path.glob("live_media/live-*"))
    from ferpipe.store import Store

    assert Store(db).clips().height == 0


class _Counting:
    """An HTTP server on 127.0.0.1 whose playlist answers OK ``good`` times, then 503, counting requests."""

    def __init__(self, body: str, good: int) -> None:
        import http.server

        outer = self
        self.times: list[float] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.times.append(time.monotonic())
                if len(outer.times) <= good:
                    data = body.encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    self.send_error(503)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/live.m3u8"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _run_for(capture: LiveCapture, seconds: float) -> None:
    import threading

    t = threading.Thread(target=capture._run_hls, daemon=True)
    t.start()
    t.join(seconds)
    capture.stop()
    t.join(10)


def test_a_failing_playlist_is_retried_with_back_off(allow_private, tmp_path):
    """Once the playlist fails, retries come after 1, 2, 4, 8 s (it was once a second): 4 retries in 12 s, not 12."""
    srv = _Counting("#EXTM3U\n#EXT-X-TARGETDURATION:1\n", good=1)
    try:
        _run_for(LiveCapture(parse_live(srv.url), tmp_path / "rec.ts"), 12.0)
    finally:
        srv.close()
    gaps = np.diff(srv.times)
    assert 4 <= len(srv.times) <= 6, len(srv.times)
    assert gaps[1] > 1.5 * gaps[0] and gaps[2] > 1.5 * gaps[1], gaps  # growing waits


def test_playlist_requests_stay_within_the_budget(allow_private, tmp_path, monkeypatch):
    """A live playlist that never adds a segment is polled every half target duration (16 times in 8 s at 1 s);
    with FERPIPE_HLS_REQUESTS_PER_MINUTE=10 it is fetched 10 times in those 8 s, then waits for the minute."""
    monkeypatch.setenv("FERPIPE_HLS_REQUESTS_PER_MINUTE", "10")
    srv = _Counting("#EXTM3U\n#EXT-X-TARGETDURATION:1\n", good=10**6)
    try:
        _run_for(LiveCapture(parse_live(srv.url), tmp_path / "rec.ts"), 8.0)
    finally:
        srv.close()
    assert len(srv.times) == 10, len(srv.times)
    monkeypatch.setenv("FERPIPE_HLS_REQUESTS_PER_MINUTE", "lots")
    from ferpipe.live import hls_requests_per_minute

    with pytest.raises(ValueError, match="FERPIPE_HLS_REQUESTS_PER_MINUTE must be a whole number"):
        hls_requests_per_minute()
