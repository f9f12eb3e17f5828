"""Lab sync with real parts: a live HLS stream analysed with a real LSL outlet and marker inlet on this machine
(loopback only), and XDF files written in the test read by pyxdf and aligned to a clip."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import run_cli
from test_live import _hls
from xdf_writer import Stream, gsr_and_markers, write_xdf

from ferpipe.errors import InputError
from ferpipe.labsync import LSL_CHANNELS, import_xdf
from ferpipe.store import Store

pylsl = pytest.importorskip("pylsl")  # the lab extra: part of the test set (.ci/setup)


@pytest.fixture
def lsl_loopback(tmp_path, monkeypatch):
    """LSL confined to this machine: no multicast beyond it, no IPv6 (the config goes to every child process)."""
    cfg = tmp_path / "lsl_api.cfg"
    cfg.write_text("[ports]\nIPv6 = disable\n[multicast]\nResolveScope = machine\n[lab]\nKnownPeers = {127.0.0.1}\n")
    monkeypatch.setenv("LSLAPICFG", str(cfg))
    return cfg


def _state(db: Path) -> dict:
    """What a failed command must leave as it was: every table's row count."""
    store = Store(db)
    tables = ("clips", "runs", "observations", "faces", "markers", "clip_signals", "tool_signals")
    return {t: int(store.query(f"SELECT count(*) AS n FROM {t}")["n"][0]) for t in tables}


@pytest.mark.slow
def test_live_run_publishes_lsl_samples_equal_to_the_stored_readings_and_stores_lsl_markers(
    http_dir, allow_private, samples, tmp_path, lsl_loopback
):
    root, base = http_dir
    ffmpeg = _hls(samples["WolfgangLanger_Pexels.mp4"], root)  # 19.7 s of one face
    db = tmp_path / "live.duckdb"
    marker_outlet = pylsl.StreamOutlet(pylsl.StreamInfo("PsychoPy-test", "Markers", 1, 0, "string", "psychopy-1"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferpipe.cli", "process", "--live", f"{base}/live.m3u8", "--db", str(db), "--model",
         "mini-xception", "--lsl", "--lsl-markers", "PsychoPy-test", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    # the test's inlet: resolve ferpipe's outlet by type, then pull every sample while the stream plays
    found = pylsl.resolve_byprop("type", "FacialExpressions", 1, 60.0)
    assert found, "ferpipe's LSL outlet was not found"
    inlet = pylsl.StreamInlet(found[0], max_buflen=360, processing_flags=pylsl.proc_clocksync)
    inlet.open_stream(timeout=10.0)  # subscribed before the first face is analysed (the outlet opens at the start)
    info = inlet.info(timeout=10.0)
    desc = info.desc()
    labels, units = [], []
    ch = desc.child("channels").child("channel")
    while not ch.empty():
        labels.append(ch.child_value("label"))
        units.append(ch.child_value("unit"))
        ch = ch.next_sibling()
    assert labels == [c[0] for c in LSL_CHANNELS] and units == [c[1] for c in LSL_CHANNELS]
    t0_meta = float(desc.child("ferpipe").child_value("lsl_t0"))
    got, stamps = [], []
    pushed: list[tuple[str, float]] = []

    def pull() -> None:
        while proc.poll() is None:
            chunk, ts = inlet.pull_chunk(timeout=0.5)
            got.extend(chunk)
            stamps.extend(ts)
        chunk, ts = inlet.pull_chunk(timeout=1.0)
        got.extend(chunk)
        stamps.extend(ts)

    reader = threading.Thread(target=pull, daemon=True)
    reader.start()
    # markers: two sent now, one stamped 0.5 s in the past (its own time counts, not its arrival)
    time.sleep(6.0)
    for name, back in (("stimulus on", 0.0), ("brand reveal", 0.5)):
        t = pylsl.local_clock() - back
        marker_outlet.push_sample([name], t)
        pushed.append((name, t))
        time.sleep(2.0)
    out, err = proc.communicate(timeout=120)
    reader.join(timeout=30)
    ffmpeg.wait(timeout=30)
    assert proc.returncode == 0, err
    result = json.loads(out.splitlines()[-1])
    store = Store(db)
    clip = store.clip(result["clip_id"])
    lsl_t0 = clip["lsl_t0"]
    assert lsl_t0 is not None and abs(lsl_t0 - t0_meta) < 1e-6  # the offset is kept with the clip and the stream
    # the clip's time 0 on LSL's clock agrees with its wall-clock time 0 (live_t0), read independently here
    assert abs(lsl_t0 - (clip["live_t0"] - time.time() + pylsl.local_clock())) < 0.1
    rows = store.query(
        "SELECT timestamp_ms, face_id, angry, disgust, fear, happy, sad, surprise, neutral, valence, arousal, "
        "attentive::REAL AS attentive, yaw_deg, pitch_deg, roll_deg FROM observations WHERE run_id = ? "
        "ORDER BY timestamp_ms, face_id",
        [result["run_id"]],
    )
    # every stored observation from the moment the inlet was connected on was published once, with the same values
    # (LSL sends a new subscriber what is pushed after it connects: a recorder starts before the stimulus)
    assert len(got) > 50, len(got)
    sent = np.array(got, dtype=np.float64)
    order = np.lexsort((sent[:, 1], sent[:, 0]))
    sent, ts = sent[order], np.array(stamps)[order]
    stored = rows.with_columns(pl.col("timestamp_ms") / 1000.0).fill_null(float("nan")).to_numpy().astype(np.float64)
    stored = stored[stored[:, 0] >= sent[0, 0] - 1e-9]
    assert sent.shape == stored.shape, (sent.shape, stored.shape, sent[:3, 0], stored[:3, 0])
    np.testing.assert_allclose(sent, stored, rtol=0, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(ts, lsl_t0 + sent[:, 0], atol=0.002)  # LSL time = lsl_t0 + video time
    # the markers landed on the clip's own timeline within 0.1 s
    markers = store.markers(result["clip_id"])
    assert markers["name"].to_list() == [n for n, _ in pushed], markers
    for (name, t), start in zip(pushed, markers["start_s"].to_list(), strict=True):
        assert abs(start - (t - lsl_t0)) < 0.1, (name, start, t - lsl_t0)
    assert "2 markers stored" in err


def test_xdf_markers_and_a_gsr_channel_align_to_a_clip_by_a_sync_marker(tmp_path, pipeline_factory, samples):
    p = pipeline_factory(sample_fps=2.0)
    clip_id = p.process(str(samples["single_face.mp4"])).clip_id  # 2.4 s
    store = p.store
    store.add_marker(clip_id, "Video start", 0.4)  # the stimulus software's 'video start' happened at 0.4 s
    xdf = gsr_and_markers(tmp_path / "session.xdf", t0=81234.5, seconds=8.0,
                          markers={"video start": 1.0, "logo": 2.5, "after the clip": 7.0})  # fmt: skip
    res = import_xdf(store, xdf, clip_id, sync_marker="video start")
    assert math.isclose(res.offset, 81234.5 + 1.0 - 0.4, abs_tol=1e-6)
    names = dict(zip(*store.markers(clip_id).select("name", "start_s").to_dict(as_series=False).values(), strict=True))
    assert names["video start"] == pytest.approx(0.4, abs=1e-3) and names["logo"] == pytest.approx(1.9, abs=1e-3)
    assert "after the clip" not in names and res.markers_outside == 1
    # the GSR channel: the samples inside the clip, at their clip times, values as written
    sig = store.query("SELECT t_s, value, unit, source FROM clip_signals WHERE clip_id = ? ORDER BY t_s", [clip_id])
    assert set(sig["unit"]) == {"microsiemens"} and "Shimmer GSR" in sig["source"][0]
    t_file = sig["t_s"].to_numpy() + res.offset - 81234.5  # back to seconds of the file's recording
    np.testing.assert_allclose(sig["value"].to_numpy(), 2.0 + 0.5 * np.sin(2 * np.pi * t_file / 4.0), atol=1e-5)
    assert sig["t_s"].min() >= 0 and sig["t_s"].max() <= 2.4 + 0.5 and sig.height > 60
    # again: markers are not added twice, the stream is replaced, not doubled
    before = _state(store.path)
    import_xdf(store, xdf, clip_id, sync_marker="video start")
    assert _state(store.path) == before


def test_xdf_import_by_the_cli_and_bad_files_change_nothing(tmp_path, pipeline_factory, samples):
    p = pipeline_factory(sample_fps=2.0)
    clip_id = p.process(str(samples["single_face.mp4"])).clip_id
    db = str(p.store.path)
    good = gsr_and_markers(tmp_path / "good.xdf", t0=100.0, seconds=3.0, markers={"start": 0.0, "mid": 1.2})
    truncated = tmp_path / "truncated.xdf"
    truncated.write_bytes(good.read_bytes()[:300])
    not_xdf = tmp_path / "notes.xdf"
    not_xdf.write_text("session notes\n")
    before = _state(p.store.path)
    for args, message in (
        ([str(truncated), "--offset", "100"], "a damaged XDF file"),
        ([str(not_xdf), "--offset", "100"], "not an XDF file"),
        ([str(good), "--sync-marker", "nope"], "no marker 'nope'"),
        ([str(good)], "say how the file aligns"),
        ([str(good), "--offset", "9000"], "nothing of it falls inside the clip"),
        ([str(good), "--offset", "100", "--stream", "EEG"], "no stream named EEG"),
        ([str(tmp_path / "missing.xdf"), "--offset", "100"], "no such file"),
    ):
        r = run_cli("import-xdf", *args, "--clip", clip_id, "--db", db)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
        assert _state(p.store.path) == before, args
    r = run_cli("import-xdf", str(good), "--clip", clip_id, "--db", db, "--sync-marker", "start")
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stdout.split())  # rich wraps lines at the terminal's width
    assert "2 markers" in said and "Shimmer GSR" in said
    assert _state(p.store.path)["clip_signals"] > before["clip_signals"]


def test_wide_and_fast_streams_are_bounded(tmp_path, store, samples, pipeline_factory):
    """An EEG-like stream (32 channels, 500 Hz) is left out unless named; a named one is averaged to 100 Hz."""
    p = pipeline_factory(sample_fps=2.0)
    clip_id = p.process(str(samples["single_face.mp4"])).clip_id
    n = 1000
    t = (10.0 + np.arange(n) / 500.0).tolist()
    eeg = Stream("EEG", "EEG", "float32", [f"C{k}" for k in range(32)], ["microvolts"] * 32, 500.0, t,
                 [[float(k)] * 32 for k in range(n)])  # fmt: skip
    marks = Stream("M", "Markers", "string", ["m"], [], 0.0, [10.0], [["begin"]])
    path = write_xdf(tmp_path / "eeg.xdf", [eeg, marks])
    res = import_xdf(p.store, path, clip_id, offset=10.0)
    assert res.streams == () and res.markers == 1
    res = import_xdf(p.store, path, clip_id, offset=10.0, streams=["EEG"])
    assert len(res.streams) == 32
    per = p.store.query("SELECT count(*) AS n FROM clip_signals WHERE name = 'EEG C0'")["n"][0]
    assert 0 < per <= 100 * 2.4 + 2  # at most 100 samples a second of the clip


def test_marker_listener_arguments_are_checked(store):
    from ferpipe.labsync import MarkerListener

    with pytest.raises(ValueError, match="marker stream's name"):
        MarkerListener(store, "c", "  ", 0.0)


def test_lsl_flags_need_a_live_source(tmp_path, samples):
    r = run_cli("process", str(samples["single_face.jpg"]), "--lsl", "--db", str(tmp_path / "x.duckdb"))
    assert r.returncode == 1 and "work with --live" in r.stderr


def test_import_xdf_needs_a_known_clip(tmp_path, store):
    path = gsr_and_markers(tmp_path / "a.xdf", t0=0.0, seconds=1.0, markers={"a": 0.1})
    with pytest.raises((ValueError, InputError)):
        import_xdf(store, path, "nosuchclip", offset=0.0)
