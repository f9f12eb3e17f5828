import numpy as np
import pytest

from ferpipe.temporal import EmaSmoother, flicker


def test_ema_weights_follow_video_time():
    sm = EmaSmoother(tau_ms=100)
    ids = np.array([1, 1, 1])
    p = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    out = sm(ids, np.array([0.0, 100.0, 200.0]), p)
    a = 1 - np.exp(-1)
    assert out[0].tolist() == [1.0, 0.0]
    assert out[1] == pytest.approx([1 - a, a])
    assert out[2] == pytest.approx([(1 - a) ** 2, 1 - (1 - a) ** 2])
    assert np.allclose(out.sum(1), 1)


def test_faces_are_smoothed_independently_and_state_resumes():
    sm = EmaSmoother(tau_ms=50)
    out = sm(np.array([1, 2]), np.array([0.0, 0.0]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert out.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    again = EmaSmoother(50)
    again.load_state(sm.state_dict())
    nxt = np.array([[0.0, 1.0]])
    assert again(np.array([1]), np.array([50.0]), nxt) == pytest.approx(sm(np.array([1]), np.array([50.0]), nxt))


def test_flicker_and_disabled_smoothing():
    ids = np.array([1, 1, 1, 2])
    p = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    assert flicker(ids, p) == pytest.approx(1.0)
    assert EmaSmoother(0)(ids, np.arange(4.0), p) is p
    with pytest.raises(ValueError, match="tau_ms"):
        EmaSmoother(-1)


def test_smoothing_in_the_pipeline_reduces_flicker(pipeline_factory, samples, store):
    from ferpipe.types import EXPRESSIONS

    raw = pipeline_factory(sample_fps=None).process(str(samples["single_face.mp4"]))
    smooth = pipeline_factory(sample_fps=None, smooth_ms=300).process(str(samples["single_face.mp4"]))
    assert smooth.run_id != raw.run_id  # different settings, different run

    def flick(run_id):
        obs = store.timeline(run_id)
        return flicker(obs["face_id"].to_numpy(), obs.select(EXPRESSIONS).to_numpy())

    assert flick(smooth.run_id) < 0.7 * flick(raw.run_id)
    assert store.run(smooth.run_id).settings["smooth_ms"] == 300
