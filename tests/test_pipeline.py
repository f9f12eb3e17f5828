import json

import numpy as np
import pytest

from ferpipe.errors import ModelError
from ferpipe.pipeline import Pipeline, Settings
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


# ---- hardening ---------------------------------------------------------------------------------


def _crash_after(frames: int):
    """A progress callback that stops the run like Ctrl-C once ``frames`` frames are analysed."""

    def progress(stage, done, total):
        if stage == "analyse" and done >= frames:
            raise KeyboardInterrupt

    return progress


def test_a_run_resumed_after_interruptions_equals_an_uninterrupted_one(pipeline_factory, samples, store, tmp_path):
    """Stopped at three points (after committed batches), then finished: the same rows and faces as one
    uninterrupted run, value for value."""
    from ferpipe.store import Store

    clip = str(samples["audience_grid.mp4"])
    ref = pipeline_factory(sample_fps=10.0, batch_frames=4).process(clip)
    expected = store.timeline(ref.run_id).drop("run_id")
    other = Store(tmp_path / "resumed.duckdb")
    p = Pipeline(other, Settings(model="mini-xception", sample_fps=10.0, batch_frames=4),
                 detector=pipeline_factory().detector, model=pipeline_factory().model)  # fmt: skip
    p.commit_seconds = 1e-9  # commit every batch, so each stop resumes from a different place
    for stop in (7, 23, 61):
        with pytest.raises(KeyboardInterrupt):
            p.process(clip, progress=_crash_after(stop))
        assert other.run(1).status == "interrupted"
    res = p.process(clip)
    assert res.resumed and res.status == "done"
    got = other.timeline(res.run_id).drop("run_id")
    assert (res.observations, res.faces) == (ref.observations, ref.faces)
    assert got.select("face_id", "frame_index").equals(expected.select("face_id", "frame_index"))
    np.testing.assert_allclose(got.drop("face_id", "frame_index").to_numpy(),
                               expected.drop("face_id", "frame_index").to_numpy(), atol=1e-5)  # fmt: skip


def test_a_truncated_file_is_stored_as_truncated_not_done(pipeline_factory, samples, store, tmp_path):
    half = tmp_path / "half.mp4"
    data = samples["WolfgangLanger_Pexels.mp4"].read_bytes()
    half.write_bytes(data[: len(data) // 2])  # the index is at the front: the first half still opens
    res = pipeline_factory().process(str(half))
    assert res.status == "truncated" and "of the 19.7 s the file claims" in res.error
    assert 0 < res.frames_analyzed < 99 and res.faces == 1
    clip = store.clip(res.clip_id)
    assert clip["container_duration_s"] == pytest.approx(19.69, abs=0.05)
    assert 5 < clip["duration_s"] < 15  # what decoded
    assert pipeline_factory().process(str(half)).reused  # final, like done: not analysed again
    whole = pipeline_factory().process(str(samples["WolfgangLanger_Pexels.mp4"]))
    assert whole.status == "done"


def test_a_broken_model_fails_before_a_run_is_recorded(store, samples, tmp_path, monkeypatch):
    """A junk ONNX file registered under a name (sha256 and all): one clear error, and even a clip without
    faces (where the model is never run) gets no run marked done."""
    import hashlib

    from ferpipe.errors import ModelError

    junk = tmp_path / "models" / "junk.onnx"
    junk.parent.mkdir()
    junk.write_bytes(b"not an onnx file at all")
    spec = {"name": "junk", "task": "expression", "preprocess": {"size": 48},
            "files": {"model": {"kind": "file", "location": "junk.onnx",
                                "sha256": hashlib.sha256(junk.read_bytes()).hexdigest()}}}  # fmt: skip
    (junk.parent / "junk.json").write_text(json.dumps(spec))
    monkeypatch.setenv("FERPIPE_MODELS", str(junk.parent))
    with pytest.raises(ModelError, match="not a usable ONNX model"):
        Pipeline(store, Settings(model="junk")).process(str(samples["no_face.mp4"]))
    assert store.query("SELECT count(*) AS n FROM runs")["n"][0] == 0


def test_a_re_ingest_without_a_title_keeps_the_given_one(pipeline_factory, samples, store):
    clip = str(samples["single_face.mp4"])
    first = pipeline_factory().process(clip, title="Respondent 7")
    pipeline_factory().process(clip)
    assert store.clip(first.clip_id)["title"] == "Respondent 7"
    pipeline_factory().process(clip, title="Respondent 7b")
    assert store.clip(first.clip_id)["title"] == "Respondent 7b"


def test_a_run_whose_process_died_reads_as_interrupted(store):
    import subprocess

    store.upsert_clip("c1", {"sha256": "c1" * 8, "path": "/x.mp4", "title": "c1", "duration_s": 1.0}, {})
    run = store.start_run("c1", "m", "mtcnn", {}, 10)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with store.transaction() as con:
        con.execute("UPDATE runs SET pid = ? WHERE run_id = ?", [dead.pid, run.run_id])
    assert store.run(run.run_id).status == "interrupted"
    assert store.clips()["status"].to_list() == ["interrupted"]
    assert store.running_runs().is_empty()
    # and it resumes like any interrupted run
    assert store.start_run("c1", "m", "mtcnn", {}, 10).run_id == run.run_id


def test_commits_after_the_clip_was_deleted_write_nothing(store):
    from ferpipe.store import RunGoneError
    from ferpipe.types import Detections, Expressions, Observations, RunProgress

    store.upsert_clip("c1", {"sha256": "c1" * 8, "path": "/x.mp4", "title": "c1", "duration_s": 1.0}, {})
    run = store.start_run("c1", "m", "mtcnn", {}, 10)
    obs = Observations([0], [0.0], Detections([[0, 0, 9, 9]], [0.9], np.zeros((1, 5, 2)), [1]),
                       Expressions(np.eye(7)[[6]], [0.0], [0.0]))  # fmt: skip
    store.commit_batch(run.run_id, obs, RunProgress(1, 0, 0.0, 0.1))
    store.delete_clip("c1", delete_media=False)
    with pytest.raises(RunGoneError):
        store.commit_batch(run.run_id, obs, RunProgress(2, 1, 40.0, 0.2))
    for table in ("observations", "faces", "runs"):
        assert store.query(f"SELECT count(*) AS n FROM {table}")["n"][0] == 0


def test_frames_are_decoded_ahead_only_while_they_are_small():
    from ferpipe.pipeline import _prefetch_depth

    assert _prefetch_depth(640, 360) == 8 and _prefetch_depth(1920, 1080) == 5 and _prefetch_depth(2560, 1440) == 3
    assert _prefetch_depth(3840, 2160) == 0  # 4K: decoded in step, one frame at a time (bounded memory)
    assert _prefetch_depth(0, 0) == 8  # size unknown


def test_face_models_on_their_own_threads_read_each_frame_as_the_direct_call_does(samples, detector, model):
    """The classifier and the mesh run behind detection on threads of their own: each frame's readings are the
    ones a direct call gives for that frame (frames with many, one or no faces; a queue shorter than the clip, bounded
    in frames and in faces)."""
    from ferpipe.frames import iter_frames
    from ferpipe.pipeline import _FaceModels
    from ferpipe.signals import AttentionCone, FaceMesh

    mesh, cone = FaceMesh.from_registry(), AttentionCone()
    frames = [f.image for f in iter_frames(samples["audience_grid.mp4"], 2.0)][:6]
    frames += [f.image for f in iter_frames(samples["no_face.mp4"], 2.0)][:1]
    frames += [f.image for f in iter_frames(samples["WolfgangLanger_Pexels.mp4"], 2.0)][:3]
    dets = [detector(f) for f in frames]
    assert sorted({len(d) for d in dets})[:2] == [0, 1] and max(len(d) for d in dets) > 5
    faces = _FaceModels(model, mesh, cone, ahead=3, max_faces=12)
    try:
        futures = []
        for f, d in zip(frames, dets, strict=True):
            futures.append(faces.submit(f, d)[:2] if len(d) else (None, None))
            assert len(faces.waiting) <= 3 and faces.queued_faces <= max(12, len(d))  # crops waiting stay bounded
        read = [(e.result(), m.result()) if e is not None else None for e, m in futures]
    finally:
        faces.close()  # every reading is done: the models are free for the direct calls (one thread at a time each)
    for f, d, got in zip(frames, dets, read, strict=True):
        if not len(d):
            assert got is None
            continue
        want = model.predict_crops(model.crops(f, d))
        np.testing.assert_allclose(got[0].probs, want.probs, atol=1e-6)
        np.testing.assert_allclose(got[1].pose, mesh(f, d, cone).pose, atol=1e-4, equal_nan=True)


def test_a_failure_on_a_face_model_thread_fails_the_run(pipeline_factory, samples, store, monkeypatch):
    from ferpipe.signals import FaceMesh

    def broken(self, faces, cone=None):
        raise RuntimeError("mesh failed")

    monkeypatch.setattr(FaceMesh, "read", broken)
    p = pipeline_factory(sample_fps=2.0)
    with pytest.raises(RuntimeError, match="mesh failed"):
        p.process(str(samples["single_face.mp4"]))
    runs = store.runs()
    assert runs.height == 1 and runs["status"][0] == "failed"
