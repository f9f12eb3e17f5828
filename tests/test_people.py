"""Tracks linked into people on real media, the linking rules on hand-made tracks, and corrections that survive
reprocessing."""

import json

import numpy as np
import pytest

from ferpipe.people import Track, link_tracks


def _t(fid, t0, t1, x, emb=None, h=100.0):
    box = np.array([x, 100.0, x + h, 100.0 + h])
    return Track(fid, t0, t1, box, box, 10, None if emb is None else np.asarray(emb, np.float32))


def test_tracks_seen_together_are_never_one_person():
    same = [0.0] * 128
    person = link_tracks([_t(1, 0, 5000, 0, same), _t(2, 1000, 6000, 0, same), _t(3, 7000, 9000, 0, same)])
    assert person[1] != person[2]  # overlap in time
    assert person[3] in (person[1], person[2])  # continues one of them


def test_a_person_comes_back_near_their_place_and_looks_alike():
    a, b = np.zeros(128), np.zeros(128)
    b[0] = 1.0  # 1.0 apart: clearly two people
    tracks = [_t(1, 0, 1000, 0, a), _t(2, 2000, 3000, 50, a), _t(3, 4000, 5000, 60, b), _t(4, 6000, 7000, 2000, a)]
    person = link_tracks(tracks)
    assert person[1] == person[2]  # same face, same place
    assert person[3] != person[1]  # same place, another face
    assert person[4] != person[1]  # same face, far away: a new seat is a new person (merge by hand)
    with pytest.raises(ValueError, match="max_distance"):
        link_tracks(tracks, max_distance=0)


def test_a_track_without_a_descriptor_joins_only_an_unambiguous_continuation():
    person = link_tracks([_t(1, 0, 1000, 0), _t(2, 2000, 3000, 10)])
    assert person[1] == person[2]
    person = link_tracks([_t(1, 0, 1000, 0), _t(2, 2000, 3000, 10), _t(3, 2500, 3500, 40)])
    assert person[2] != person[3] and len({person[1], person[2], person[3]}) >= 2


@pytest.fixture(scope="module")
def linked(tmp_path_factory, samples, detector, model):
    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.samples import comings_and_goings
    from ferpipe.store import Store

    folder = tmp_path_factory.mktemp("people")
    store = Store(folder / "p.duckdb")
    pipeline = Pipeline(store, Settings(model="mini-xception"), detector=detector, model=model)
    clip, truth = comings_and_goings(samples, folder / "comings.mp4")
    return store, pipeline, pipeline.process(str(clip)), truth, pipeline.process(str(samples["audience_grid.mp4"]))


def test_people_leaving_and_returning_keep_one_id_each(linked):
    store, _, run, truth, _ = linked
    people = store.people(run.run_id)
    assert run.faces >= 2 * truth  # everyone left and came back: many tracks
    assert abs(people.height - truth) <= 1
    assert people["tracks"].sum() == run.faces


def test_the_demo_grid_shows_its_ten_people(linked):
    store, _, _, _, grid = linked
    assert grid.faces > 10  # the tracker alone sees more
    assert store.people(grid.run_id).height == 10


def test_corrections_survive_reprocessing(linked):
    from ferpipe.people import relink

    store, pipeline, run, _, _ = linked
    clip_id = run.clip_id
    people = store.people(run.run_id).sort("person_id")
    a, b = people["person_id"][0], people["person_id"][1]
    store.add_edit(clip_id, "merge", store.anchor(run.run_id, a), store.anchor(run.run_id, b))
    store.add_edit(clip_id, "name", store.anchor(run.run_id, a), label="Respondent 7")
    relink(store, run.run_id, clip_id)
    merged = store.people(run.run_id)
    assert merged.height == people.height - 1
    assert "Respondent 7" in merged["person"].to_list()
    again = pipeline.process(store.clip(clip_id)["path"], reprocess=True)
    redone = store.people(again.run_id)
    assert redone.height == people.height - 1 and "Respondent 7" in redone["person"].to_list()
    with pytest.raises(ValueError, match="needs a name"):
        store.add_edit(clip_id, "name", (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="merge, split or name"):
        store.add_edit(clip_id, "join", (0.0, 0.0, 0.0))


def test_a_chip_cut_from_the_face_region_equals_one_from_the_whole_frame(samples, detector):
    """Only the region around a face is converted to RGB (a 4K frame is 25 MB); the chip is the same."""
    import cv2

    from ferpipe.frames import iter_frames
    from ferpipe.people import CHIP_SIZE, FaceDescriptor

    chipper = FaceDescriptor.from_registry()
    frames = [f.image for f in iter_frames(samples["audience_grid.mp4"], 1.0)][:2]
    checked = 0
    for image in frames:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        for box in detector(image).boxes:
            rect = chipper._dlib.rectangle(int(box[0]), int(box[1]), int(box[2]), int(box[3]))
            whole = chipper._dlib.get_face_chip(rgb, chipper.predictor(rgb, rect), size=CHIP_SIZE, padding=0.25)
            np.testing.assert_array_equal(chipper.chip(image, box), np.asarray(whole))
            checked += 1
    assert checked >= 10


def test_no_identification_stores_no_descriptor_and_still_links_people(tmp_path, samples, monkeypatch):
    """`--no-identification` on the demo grid: no face descriptor is stored, people are still linked (by time and
    place), and the People page offers no thumbnails for the run."""
    from conftest import run_cli

    from ferpipe.store import Store

    db = tmp_path / "noid.duckdb"
    r = run_cli("process", str(samples["audience_grid.mp4"]), "--db", str(db), "--no-identification", "--json")
    assert r.returncode == 0, r.stderr
    store = Store(db)
    run_id = store.query("SELECT max(run_id) AS r FROM runs")["r"][0]
    faces = store.query("SELECT count(*) AS n, count(embedding) AS emb FROM faces WHERE run_id = ?", [run_id])
    assert faces["n"][0] >= 10 and faces["emb"][0] == 0  # no descriptor anywhere
    assert store.run(run_id).settings["identification"] is False
    people = store.people(run_id)
    assert 0 < people.height < faces["n"][0]  # tracks were still joined into people
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FERPIPE_DB", str(db))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=120)
    at.switch_page("views/people.py").run()
    assert not at.exception
    assert not [t for t in at.toggle if t.label == "Show face thumbnails"]
    assert any("Processed without identification" in c.value for c in at.caption)


def test_people_split_by_the_cli_checks_the_track_and_records_the_edit(tmp_path, samples):
    from conftest import run_cli

    from ferpipe.store import Store

    db = tmp_path / "split.duckdb"
    r = run_cli("process", str(samples["single_face.mp4"]), "--db", str(db), "--model", "mini-xception", "--json")
    assert r.returncode == 0, r.stderr
    clip = json.loads(r.stdout.splitlines()[-1])["clip_id"]
    store = Store(db)
    track = int(store.faces(store.best_run(clip))["face_id"][0])
    bad = run_cli("people", "split", "--track", "999", "--clip", clip, "--db", str(db))
    assert bad.returncode == 1 and "has no track 999" in bad.stderr and "Traceback" not in bad.stderr
    assert store.edits(clip).is_empty()
    ok = run_cli("people", "split", "--track", str(track), "--clip", clip, "--db", str(db))
    assert ok.returncode == 0, ok.stderr
    edits = store.edits(clip)
    t, x, y = store.track_anchor(store.best_run(clip), track)
    assert edits["kind"].to_list() == ["split"] and (edits["t_ms"][0], edits["x"][0], edits["y"][0]) == (t, x, y)
