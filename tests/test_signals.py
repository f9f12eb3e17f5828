"""Attention, head pose and blendshapes on real media: validity checks, storage, exports and the runtime."""

import numpy as np
import polars as pl
import pytest

from ferpipe.signals import AttentionCone, FaceMesh, canonical_face, euler_deg, head_rotation


@pytest.fixture(scope="module")
def mesh():
    return FaceMesh.from_registry()


@pytest.fixture(scope="module")
def speaker_runs(tmp_path_factory, samples, detector, model):
    """WolfgangLanger (a frontal speaker), its mirror image and a +15 degree in-plane rotation, processed."""
    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.samples import transformed_clip
    from ferpipe.store import Store

    folder = tmp_path_factory.mktemp("signals")
    store = Store(folder / "s.duckdb")
    p = Pipeline(store, Settings(model="mini-xception"), detector=detector, model=model)
    src = samples["WolfgangLanger_Pexels.mp4"]
    runs = {"plain": p.process(str(src))}
    for kind in ("mirror", "rotate+15"):
        runs[kind] = p.process(str(transformed_clip(src, folder / f"{kind}.mp4", kind)))
    return store, runs


def _median(store, run, col):
    return float(np.nanmedian(store.observations(run.run_id, [col])[col].to_numpy().astype(float)))


def test_mirroring_negates_yaw_and_roll_and_keeps_pitch(speaker_runs):
    store, runs = speaker_runs
    a, b = runs["plain"], runs["mirror"]
    yaw, roll, pitch = (_median(store, a, c) for c in ("yaw_deg", "roll_deg", "pitch_deg"))
    assert _median(store, b, "yaw_deg") == pytest.approx(-yaw, abs=2.0)
    assert _median(store, b, "roll_deg") == pytest.approx(-roll, abs=2.0)
    assert _median(store, b, "pitch_deg") == pytest.approx(pitch, abs=2.0)
    # and frame by frame, where he turns his head to both sides (so the sign is tested, not a median near 0)
    cols = ["frame_index", "yaw_deg", "pitch_deg", "roll_deg"]
    pair = store.timeline(a.run_id).select(cols).join(store.timeline(b.run_id).select(cols), on="frame_index")
    pair = pair.drop_nulls()
    assert pair.height > 80  # nearly every one of the 99 frames has its mesh in both clips
    y, ym = pair["yaw_deg"].to_numpy(), pair["yaw_deg_right"].to_numpy()
    assert np.nanstd(y) > 3 and np.nanmax(y) > 5 and np.nanmin(y) < -5
    assert np.corrcoef(y, -ym)[0, 1] > 0.9 and np.nanmedian(np.abs(y + ym)) < 3
    assert np.nanmedian(np.abs(pair["pitch_deg"] - pair["pitch_deg_right"]).to_numpy()) < 3


def test_an_in_plane_rotation_of_15_degrees_moves_roll_by_15(speaker_runs):
    store, runs = speaker_runs
    change = _median(store, runs["rotate+15"], "roll_deg") - _median(store, runs["plain"], "roll_deg")
    assert change == pytest.approx(15.0, abs=3.0)


def test_a_frontal_speaker_is_attentive_most_of_the_time(speaker_runs):
    store, runs = speaker_runs
    att = store.observations(runs["plain"].run_id, ["attentive"])["attentive"]
    assert att.null_count() <= 2  # the mesh is found in (nearly) every frame
    assert att.fill_null(False).mean() >= 0.8  # a frame without a mesh counts as not attentive


def test_smile_blendshapes_follow_the_happy_probability(store, samples, pipeline_factory):
    """Across the sample clips' observations, smiling blendshapes correlate positively with 'happy'."""
    p = pipeline_factory(sample_fps=2.0)
    frames = []
    for name in ("audience_grid.mp4", "WolfgangLanger_Pexels.mp4", "single_face.mp4"):
        run = p.process(str(samples[name]))
        frames.append(store.observations(run.run_id, ["happy", "bs_mouthSmileLeft", "bs_mouthSmileRight"]))
    obs = pl.concat(frames).drop_nulls()
    smile = (obs["bs_mouthSmileLeft"] + obs["bs_mouthSmileRight"]).to_numpy() / 2
    r = np.corrcoef(smile, obs["happy"].to_numpy())[0, 1]
    assert obs.height > 100 and r > 0.3, r


def test_signals_are_stored_exported_and_rolled_up(speaker_runs):
    """Every observation has its pose, attention and 52 blendshapes in [0, 1]; the export names them; the
    per-second rollup of the finished run gives the same bins as the raw rows."""
    from ferpipe.signals import BS_COLUMNS

    store, runs = speaker_runs
    run = runs["plain"]
    tl = store.timeline_export("c", run.run_id)
    for col in ("yaw_deg", "pitch_deg", "roll_deg", "eye_openness", "attentive", "bs_mouthSmileLeft"):
        assert col in tl.columns
    assert "bs__neutral" not in tl.columns and tl["person"].null_count() == 0  # export names read as words
    shapes = tl.select([c if c != "bs__neutral" else "bs_neutral" for c in BS_COLUMNS]).to_numpy()
    assert shapes.shape[1] == 52 and np.nanmin(shapes) >= 0 and np.nanmax(shapes) <= 1
    assert store.run(run.run_id).finished and store._rolled_up(run.run_id)
    cols = ("happy", "attentive", "yaw_deg", "bs_jawOpen")
    rolled = store.face_bins(run.run_id, 2.0, cols)
    from ferpipe.store import QualityFilter

    raw = store.face_bins(run.run_id, 2.0, cols, quality=QualityFilter(min_score=0.0, min_face_px=1.0))
    assert rolled.select("bin", "person_id", "n_obs").rows() == raw.select("bin", "person_id", "n_obs").rows()
    np.testing.assert_allclose(rolled.select(cols).to_numpy(), raw.select(cols).to_numpy(), atol=1e-5)


def test_a_quality_filter_names_what_it_leaves_out(speaker_runs):
    from ferpipe import analytics as an
    from ferpipe.store import QualityFilter

    store, runs = speaker_runs
    run = runs["plain"]
    strict = QualityFilter(attentive_only=True, min_face_px=10_000)
    assert store.excluded_share(run.run_id, strict) == 1.0
    assert an.face_bins(store, run.run_id, 1.0, quality=strict).is_empty()
    assert store.excluded_share(run.run_id, QualityFilter()) == 0.0
    assert "attentive faces only" in strict.describe()
    with pytest.raises(ValueError, match="min_score"):
        QualityFilter(min_score=2)


def test_the_pose_geometry_on_a_known_rotation(mesh):
    """Turning the canonical face by known angles and reading them back (image axes: y down, z away)."""
    from scipy.spatial.transform import Rotation

    canonical = mesh.canonical
    for yaw, pitch, roll in ((20, 0, 0), (0, 15, 0), (0, 0, -25), (10, -5, 8)):
        r = Rotation.from_euler("YXZ", [yaw, -pitch, roll], degrees=True).as_matrix()
        points = (canonical @ r.T) * np.array([1.0, -1.0, -1.0]) * 7.0 + np.array([300.0, 200.0, 0.0])
        got = euler_deg(head_rotation(points, canonical, mesh.basis_ids, mesh.basis_weights))
        np.testing.assert_allclose(got, (yaw, pitch, roll), atol=1e-6)


def test_bad_inputs_to_the_signals():
    with pytest.raises(ValueError, match="attention cone"):
        AttentionCone(yaw_deg=0)
    with pytest.raises(ValueError, match="no canonical face"):
        canonical_face(b"")


def test_blinks_are_counted_alike_from_rows_and_from_the_rollup(store):
    """Eyes open, closed, open, closed: two blinks, whether counted from the rows or from the finished run's rollup."""
    from ferpipe import analytics as an
    from ferpipe.types import Detections, Expressions, FaceSignals, Observations, RunProgress

    store.upsert_clip("c1", {"sha256": "c1" * 8, "path": "/x.mp4", "title": "c1", "duration_s": 3.0}, {})
    run = store.start_run("c1", "m", "mtcnn", {}, 10)
    openness = [0.9, 0.9, 0.1, 0.1, 0.9, 0.1, 0.8]
    n = len(openness)
    shapes = np.zeros((n, 52), np.float32)
    shapes[:, 9] = shapes[:, 10] = 1 - np.array(openness)
    sig = FaceSignals.from_readings(np.zeros((n, 3)), shapes, np.ones(n), 30, 20, 0.25)
    obs = Observations(range(n), [k * 400.0 for k in range(n)], Detections(np.tile([0, 0, 9, 9], (n, 1)), np.ones(n),
                       np.zeros((n, 5, 2)), [1] * n), Expressions(np.eye(7)[[6] * n], np.zeros(n), np.zeros(n)), sig)  # fmt: skip
    store.commit_batch(run.run_id, obs, RunProgress(n, n - 1, (n - 1) * 400.0, 1.0))
    raw = store.blink_bins(run.run_id, 10.0)
    assert int(raw["blinks"].sum()) == 2
    before = an.blink_summary(store, run.run_id)  # from the raw rows: the same totals as from the rollup below
    assert before["blinks"] == 2 and before["rate_per_min"] == pytest.approx(2 / (3 / 60))
    store.finish_run(run.run_id, "done")
    rolled = store.blink_bins(run.run_id, 10.0)
    assert int(rolled["blinks"].sum()) == 2 and int(rolled["seconds"].sum()) == 3
    summary = an.blink_summary(store, run.run_id)
    assert summary["blinks"] == 2 and summary["rate_per_min"] == pytest.approx(2 / (3 / 60))
