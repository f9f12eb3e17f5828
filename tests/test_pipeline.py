import json

import numpy as np
import pytest

from ferpipe.pipeline import Pipeline, Settings
from ferpipe.errors import ModelError
from ferpipe.registry import get_spec


def test_one_face_id_through_wolfganglanger_every_frame(pipeline_factory, samples, store):
    result = pipeline_factory(sample_fps=None).process(str(samples["WolfgangLanger_Pexels.mp4"]))
    assert result.status == "done"
    assert result.frames_analyzed == 472
    assert result.faces == 1
    assert result.observations == 472
    obs = store.timeline(result.run_id)
    assert obs["face_id"].unique().to_list() == [1]
    assert obs["frame_index"].to_list() == list(range(472))
    probs = obs.select("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral").to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-3)
    face = store.query("SELECT * FROM faces WHERE run_id = ?", [result.run_id]).row(0, named=True)
    assert face["n_obs"] == 472 and face["first_seen_ms"] == 0 and face["mean_score"] > 0.9


def test_no_face_clip_is_stored_with_zero_faces(pipeline_factory, samples, store):
    result = pipeline_factory().process(str(samples["no_face.mp4"]))
    assert result.status == "done" and result.faces == 0 and result.observations == 0
    assert result.frames_analyzed > 15
    assert "no faces found" in result.message
    assert store.clips()["clip_id"].to_list() == [result.clip_id]


def test_audience_grid_has_many_simultaneous_faces(pipeline_factory, samples, store):
    result = pipeline_factory(sample_fps=2.0).process(str(samples["audience_grid.mp4"]), tags={"group": "A"})
    obs = store.timeline(result.run_id)
    per_frame = obs.group_by("frame_index").len()["len"]
    assert per_frame.max() >= 8  # five in the group photo plus the single-person tiles
    # people stay one id each: far fewer ids than detections
    assert result.faces <= 16
    tags = store.query("SELECT key, value FROM clip_tags").rows()
    assert tags == [("group", "A")]


def test_reingest_is_idempotent(pipeline_factory, samples, store):
    p = pipeline_factory()
    first = p.process(str(samples["single_face.mp4"]), title="one")
    second = p.process(str(samples["single_face.mp4"]), title="one")
    assert second.reused and second.run_id == first.run_id
    assert store.query("SELECT count(*) AS n FROM clips")["n"][0] == 1
    assert store.query("SELECT count(*) AS n FROM observations")["n"][0] == first.observations
    redo = p.process(str(samples["single_face.mp4"]), reprocess=True)
    assert redo.run_id != first.run_id
    assert store.query("SELECT count(*) AS n FROM observations")["n"][0] == redo.observations


def test_a_model_changed_under_the_same_name_gets_its_own_run(pipeline_factory, samples, store, detector):
    from dataclasses import replace

    from ferpipe.expression import ExpressionModel

    clip = str(samples["single_face.mp4"])
    first = pipeline_factory().process(clip)
    spec = get_spec("mini-xception")
    recalibrated = replace(spec, preprocess=replace(spec.preprocess, temperature=spec.preprocess.temperature * 2))
    model = ExpressionModel(recalibrated)
    second = Pipeline(store, Settings(model="mini-xception"), detector=detector, model=model).process(clip)
    assert not second.reused and second.run_id != first.run_id
    settings = store.query("SELECT settings FROM runs ORDER BY run_id")["settings"].to_list()
    assert [json.loads(s)["model_fingerprint"] for s in settings] == [spec.fingerprint, recalibrated.fingerprint]
    # the unchanged model still finds its own finished run
    again = pipeline_factory().process(clip)
    assert again.reused and again.run_id == first.run_id


def test_face_enters_midway(pipeline_factory, samples, store):
    result = pipeline_factory().process(str(samples["noface_face.mov"]))
    face = store.query("SELECT * FROM faces WHERE run_id = ?", [result.run_id]).row(0, named=True)
    assert result.faces == 1 and face["first_seen_ms"] > 2000


def test_unknown_model_fails_before_any_work(store):
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        Pipeline(store, Settings(model="nope"))
    with pytest.raises(ValueError, match="sample_fps"):
        Settings(sample_fps=-1)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".bmp"])
def test_a_still_image_is_a_one_frame_clip(pipeline_factory, samples, store, tmp_path, suffix):
    """A photo goes through the same pipeline as a video frame and is stored as a one-frame clip at t = 0."""
    import cv2

    photo = tmp_path / f"group{suffix}"
    cv2.imwrite(str(photo), cv2.imread(str(samples["multi_face.jpg"])))
    result = pipeline_factory().process(str(photo))
    assert result.status == "done" and result.frames_analyzed == 1 and result.faces == 5
    obs = store.timeline(result.run_id)
    assert obs.height == 5 and obs["timestamp_ms"].unique().to_list() == [0.0]
    assert obs["frame_index"].unique().to_list() == [0]
    clip = store.clip(result.clip_id)
    assert clip["duration_s"] == 0 and clip["frame_count"] == 1 and clip["width"] > 0
    again = pipeline_factory().process(str(photo))
    assert again.reused


def test_a_corrupt_image_is_refused(pipeline_factory, tmp_path, store):
    from ferpipe.errors import InputError

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InputError, match="not a readable image"):
        pipeline_factory().process(str(bad))
    assert store.clips().is_empty()
