"""The defects listed in issue #22, each checked where no broader test (the client-read browser test, the page
AppTests) already names it: peaks that stand out, time above within the clip, no finding for a test that never ran,
processed-without-faces against not processed, the PDF's sections, photos as faces in a photo, and the People page."""

import subprocess

import polars as pl
import pytest
from test_baseline import P1, store_timeline

from ferpipe import analytics as an
from ferpipe.report import build_report, render, sections


def _agg(values: list[float], signal: str = "sad") -> pl.DataFrame:
    n = len(values)
    return pl.DataFrame({"bin": range(n), "t_s": [float(k) for k in range(n)], "n_people": [3] * n,
                         f"{signal}_mean": values, f"{signal}_lo": values, f"{signal}_hi": values})  # fmt: skip


def test_a_peak_must_stand_out():
    """'sad 0.0016' was listed as a peak moment: below PEAK_MIN_VALUE nothing is a peak, and a bump must rise
    PEAK_MIN_PROMINENCE above the valleys beside it."""
    flat = [0.001, 0.0016, 0.001, 0.0012, 0.001]
    assert an.peak_table(_agg(flat), ["sad"]).is_empty()
    low_bump = [0.30, 0.34, 0.30, 0.31, 0.30]  # high enough, but only 4 points above its valleys
    assert an.peak_table(_agg(low_bump), ["sad"]).is_empty()
    real = [0.05, 0.10, 0.60, 0.10, 0.05]
    peaks = an.peak_table(_agg(real), ["sad"])
    assert peaks["t_s"].to_list() == [2.0] and peaks["value"][0] == pytest.approx(0.60)
    assert peaks["prominence"][0] >= an.PEAK_MIN_PROMINENCE and an.PEAK_MIN_VALUE == 0.2


def test_time_above_never_exceeds_the_clip():
    """'Time above 0.5' was 20 s in a 19.7 s clip: 20 one-second bins above it count as 19.7 s."""
    fb = pl.DataFrame({"bin": range(20), "person_id": [1] * 20, "n_obs": [1] * 20,
                       **{e: [0.9 if e == "happy" else 0.1 / 6] * 20 for e in an.SIGNALS[:7]},
                       "valence": [0.5] * 20, "arousal": [0.2] * 20})  # fmt: skip
    summ = an.expression_summary(fb, 1.0, 0.5, duration_s=19.7)
    assert summ.filter(pl.col("signal") == "happy")["time_above"][0] == pytest.approx(19.7)


@pytest.fixture
def library(store):
    """A 10 s clip with two people, one with one person, one processed without faces, one not processed, a photo."""
    store_timeline(store, "two", {1: (0, P1), 2: (0, [v / 2 for v in P1])})
    store_timeline(store, "one", {1: (0, [0.9] * 10)})
    store.upsert_clip("empty", {"sha256": "e" * 64, "path": "/empty.mp4", "title": "empty", "duration_s": 5.0}, {})
    run = store.start_run("empty", "m", "mtcnn", {}, 5)
    store.finish_run(run.run_id, "done")
    store.upsert_clip("later", {"sha256": "f" * 64, "path": "/later.mp4", "title": "later", "duration_s": 5.0}, {})
    store_timeline(store, "pic", {1: (0, [0.8]), 2: (0, [0.2])}, duration_s=0.0)
    with store.transaction() as con:
        con.execute("UPDATE clips SET path = '/pic.jpg' WHERE clip_id = 'pic'")
    return store


def test_findings_say_what_was_and_was_not_tested(library, tmp_path):
    data = build_report(library, ["two", "one", "empty", "later"])
    text = " ".join(data.findings)
    assert "not tested (1 person in group B; a test needs 2 or more per group)" in text
    assert "no expression differed" not in text.split("two vs one")[1].split(".")[0]  # no finding for it
    assert "empty: processed; no faces were found." in text
    assert "later: not processed yet." in text
    heads = [s.heading for s in sections(build_report(library, ["two"]))]
    for needed in ("Valence and arousal (derived)", "People", "Norms", "Scores", "Per expression"):
        assert needed in heads, needed
    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(render(build_report(library, ["two"]), "pdf"))
    out = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    for needed in ("Valence and arousal (derived)", "People", "Norms", "Scores"):
        assert needed in out, needed  # the PDF has them too, not only the HTML


def test_a_photo_reads_as_faces_in_a_photo(library):
    data = build_report(library, ["pic"])
    text = " ".join(data.findings) + " ".join(t for s in sections(data) for t in s.text)
    assert "2 faces in a photo" in text and "over 0 s" not in text and "people over" not in text
    heads = [s.heading for s in sections(data)]
    assert "Faces in the photo" in heads and "Expressions over time" not in heads and "Peak moments" not in heads
    assert "pic" not in an.norm_library(library)  # photos are in no norm set of a video metric


def test_people_page_one_table_in_person_order(library, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    with library.transaction() as con:  # the two people linked, person 2 first in the table's storage order
        con.execute("UPDATE faces SET person_id = 3 - face_id WHERE run_id = (SELECT max(run_id) FROM runs "
                    "WHERE clip_id = 'two')")  # fmt: skip
    monkeypatch.setenv("FERPIPE_DB", str(library.path))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=120)
    at.query_params["clip"] = "two"
    at.run()
    at.switch_page("views/people.py").run()
    assert not at.exception
    tables = [d.value for d in at.dataframe if "n_obs" in d.value.columns]  # an editor: labels via column_config
    assert len(tables) == 1  # the same table appeared twice
    ids = tables[0]["person_id"].tolist()
    assert ids == sorted(ids) == [1, 2]
