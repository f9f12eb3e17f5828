"""The dashboard on other tools' runs and recorded streams: an imported OpenFace file and py-feat file chart in the
Clip view under their tools' names, an XDF recording's GSR channel plots beside the expressions, and Compare
overlays it."""

import json
from pathlib import Path

import pytest
from xdf_writer import gsr_and_markers

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


@pytest.fixture(scope="module")
def lab_db(tmp_path_factory, samples):
    from ferpipe.detect import MTCNNDetector
    from ferpipe.expression import ExpressionModel
    from ferpipe.interop import import_tool_file
    from ferpipe.labsync import import_xdf
    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.samples import fetch_tool_files
    from ferpipe.store import Store

    root = tmp_path_factory.mktemp("lab")
    store = Store(root / "ferpipe.duckdb")
    p = Pipeline(store, Settings(model="mini-xception", sample_fps=2.0), detector=MTCNNDetector(),
                 model=ExpressionModel.from_name("mini-xception"))  # fmt: skip
    ids = {name: p.process(str(samples[name])).clip_id for name in ("WolfgangLanger_Pexels.mp4", "single_face.mp4")}
    ids["mp4v"] = p.process(str(_mp4v_copy(samples["single_face.mp4"], root / "mp4v.mp4"))).clip_id
    files = fetch_tool_files()
    ids["openface"] = import_tool_file(store, files["iMotions_Test_v6.txt"], "imotions").clip_id
    ids["of"] = import_tool_file(store, files["OpenFace_Test.csv"], "openface").clip_id
    ids["pyfeat"] = import_tool_file(store, files["001.csv"], "pyfeat", fps=30.0).clip_id
    for name, seconds in (("WolfgangLanger_Pexels.mp4", 19.0), ("single_face.mp4", 2.3)):
        xdf = gsr_and_markers(root / f"{name}.xdf", t0=500.0, seconds=seconds, markers={"start": 0.0})
        import_xdf(store, xdf, ids[name], offset=500.0)
    return root / "ferpipe.duckdb", ids


def _mp4v_copy(src, out):
    """The clip re-encoded as MPEG-4 Part 2 (what OpenCV writes): a browser cannot play it, so it needs a preview."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    while True:
        ok, img = cap.read()
        if not ok:
            break
        writer.write(img)
    writer.release()
    cap.release()
    return out


@pytest.fixture
def lab_app(lab_db, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FERPIPE_DB", str(lab_db[0]))
    return AppTest.from_file(str(APP), default_timeout=120)


def _ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _values(arr):
    """A trace's values, whether plotly wrote them as a list or base64 ('bdata' with its dtype)."""
    import base64

    import numpy as np

    if isinstance(arr, dict):
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"])).tolist()
    return [v for v in arr if v is not None]


def _traces(at, key):
    chart = next(c for c in at.get("plotly_chart") if c.proto.id and key in c.proto.id)
    return json.loads(chart.proto.spec)["data"]


def test_library_names_timeline_only_clips(lab_app, lab_db):
    lab_app.run()
    _ok(lab_app)
    table = lab_app.dataframe[0].value
    kinds = dict(zip(table["Clip id"], table["Kind"], strict=True))
    assert kinds[lab_db[1]["of"]] == "timeline only" and kinds[lab_db[1]["single_face.mp4"]] == "video"


def test_an_openface_run_charts_its_aus_under_openfaces_names(lab_app, lab_db):
    lab_app.query_params["clip"] = lab_db[1]["openface"]  # the iMotions (FACET) export: 17 s of one face
    lab_app.switch_page("views/clip.py").run()
    _ok(lab_app)
    infos = " ".join(i.value for i in lab_app.info)
    assert "Imported from iMotions' output" in infos and "no expression curves" in infos
    assert "No video was imported" in infos
    names = {t.get("name") for t in _traces(lab_app, "tool_signals")}
    assert any(n and n.endswith("(iMotions)") and "AU12" in n for n in names), names
    assert not any(m.label == "angry" for m in lab_app.metric)  # no expression tiles made of nothing
    pick = next(m for m in lab_app.multiselect if m.label == "iMotions columns")
    pick.set_value(["Joy Evidence"]).run()
    _ok(lab_app)
    assert {t.get("name") for t in _traces(lab_app, "tool_signals")} >= {"Joy Evidence (iMotions)"}


def test_a_pyfeat_run_shows_pyfeats_expressions_and_says_whose(lab_app, lab_db):
    lab_app.query_params["clip"] = lab_db[1]["pyfeat"]
    lab_app.switch_page("views/clip.py").run()
    _ok(lab_app)
    assert any("py-feat's readings, not ferpipe's model" in i.value for i in lab_app.info)
    assert [m.label for m in lab_app.metric][:7] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert any("No video: this clip was imported" in c.value for c in lab_app.caption)


def test_recorded_streams_plot_beside_the_expressions(lab_app, lab_db):
    lab_app.query_params["clip"] = lab_db[1]["WolfgangLanger_Pexels.mp4"]
    lab_app.switch_page("views/clip.py").run()
    _ok(lab_app)
    assert any(s.value == "Recorded streams" for s in lab_app.subheader)
    data = _traces(lab_app, "streams")
    line = next(t for t in data if t.get("name") == "Shimmer GSR")
    ys = [y for y in _values(line["y"]) if y == y]
    assert len(ys) >= 15 and min(ys) > 1.4 and max(ys) < 2.6  # the written wave, 2 ± 0.5 microsiemens
    table = next(df.value for df in lab_app.dataframe if "Unit" in df.value.columns)
    assert table["Unit"][0] == "microsiemens" and "Shimmer GSR" in table["Source"][0]


def test_compare_overlays_a_recorded_stream(lab_app, lab_db):
    lab_app.switch_page("views/compare.py").run()
    _ok(lab_app)
    pick = next(m for m in lab_app.multiselect if m.label.startswith("Clips"))
    pick.set_value([lab_db[1]["WolfgangLanger_Pexels.mp4"], lab_db[1]["single_face.mp4"]]).run()
    _ok(lab_app)
    data = _traces(lab_app, "stream_overlay")
    assert len([t for t in data if t.get("name")]) == 2  # one curve per clip


def test_export_page_gives_a_clip_in_other_tools_layouts(lab_app, lab_db):
    import polars as pl

    from ferpipe.interop import tool_file_bytes
    from ferpipe.store import Store

    lab_app.switch_page("views/export.py").run()
    _ok(lab_app)
    next(m for m in lab_app.multiselect if m.label.startswith("Clips")).set_value([lab_db[1]["single_face.mp4"]]).run()
    assert next(s for s in lab_app.selectbox if s.label == "Clip").value == lab_db[1]["single_face.mp4"]
    next(b for b in lab_app.button if b.label == "Prepare py-feat Fex CSV").click().run()
    _ok(lab_app)
    assert any(getattr(b, "label", "") == "py-feat Fex CSV" for b in lab_app.get("download_button"))
    store = Store(lab_db[0])
    payload, n = tool_file_bytes(store, lab_db[1]["single_face.mp4"], store.best_run(lab_db[1]["single_face.mp4"]),
                                 "pyfeat")  # fmt: skip
    import io

    df = pl.read_csv(io.BytesIO(payload))
    assert df.height == n > 0 and {"FaceRectX", "happiness", "Identity"} <= set(df.columns)


def test_openface_output_charts_and_its_people_page_works_without_video(lab_app, lab_db):
    lab_app.query_params["clip"] = lab_db[1]["of"]
    lab_app.switch_page("views/clip.py").run()
    _ok(lab_app)
    names = {t.get("name") for t in _traces(lab_app, "tool_signals")}
    assert "AU12_r (OpenFace)" in names
    lab_app.switch_page("views/people.py").run()
    _ok(lab_app)
    assert any(m.value == "1" for m in lab_app.metric)


def test_compare_and_reports_take_imported_runs(lab_app, lab_db, tmp_path):
    from ferpipe.report import build_report, render
    from ferpipe.store import Store

    lab_app.switch_page("views/compare.py").run()
    pick = next(m for m in lab_app.multiselect if m.label.startswith("Clips"))
    pick.set_value([lab_db[1]["pyfeat"], lab_db[1]["single_face.mp4"]]).run()
    _ok(lab_app)
    assert any("People" in df.value.columns for df in lab_app.dataframe)
    data = build_report(Store(lab_db[0]), [lab_db[1]["of"], lab_db[1]["pyfeat"], lab_db[1]["single_face.mp4"]])
    text = " ".join(data.findings)
    assert "OpenFace reads no expressions" in text and "001 (py-feat output)" in text
    assert len(data.comparisons) == 1  # the two runs with expressions are compared; OpenFace's is not
    html = render(data, "html").decode()
    assert "Imported from OpenFace&#x27;s output" in html or "Imported from OpenFace's output" in html
    assert render(data, "pdf")[:4] == b"%PDF"


def test_clip_view_makes_a_preview_in_the_background_and_then_plays_it(lab_app, lab_db):
    import time

    from ferpipe.media import previews
    from ferpipe.store import Store

    path = Store(lab_db[0]).clip(lab_db[1]["mp4v"])["path"]
    lab_app.query_params["clip"] = lab_db[1]["mp4v"]
    lab_app.switch_page("views/clip.py").run()
    _ok(lab_app)
    assert not lab_app.get("video")
    next(b for b in lab_app.button if b.label == "Make a browser preview to play the video").click().run()
    _ok(lab_app)
    job = previews.status(path)
    assert job is not None and job.state in ("encoding", "ready")  # started; the page did not wait for it
    deadline = time.monotonic() + 60
    while job.state == "encoding" and time.monotonic() < deadline:
        time.sleep(0.2)
    lab_app.run()
    _ok(lab_app)
    assert job.state == "ready" and lab_app.get("video"), job
