import numpy as np
import pytest

from ferpipe.track import FaceTracker, iou_matrix
from ferpipe.types import Detections


def dets(boxes, scores=None):
    boxes = np.asarray(boxes, float)
    return Detections(boxes, scores if scores is not None else np.full(len(boxes), 0.99), np.zeros((len(boxes), 5, 2)))


def test_two_moving_faces_keep_their_ids():
    tr = FaceTracker()
    ids = []
    for k in range(20):
        out = tr.update(dets([[10 + 2 * k, 10, 60 + 2 * k, 60], [200 - 2 * k, 20, 250 - 2 * k, 70]]), k * 40.0)
        ids.append(out.track_ids.tolist())
    assert all(i == [1, 2] for i in ids)


def test_lost_buffer_keeps_id_through_a_gap_and_drops_after():
    tr = FaceTracker(lost_buffer_ms=1000)
    tr.update(dets([[10, 10, 60, 60]]), 0)
    tr.update(dets([]), 500)
    assert tr.update(dets([[12, 10, 62, 60]]), 900).track_ids.tolist() == [1]
    assert tr.update(dets([[12, 10, 62, 60]]), 3000).track_ids.tolist() == [2]


def test_low_score_detection_continues_but_never_starts_a_track():
    tr = FaceTracker(high_score=0.8, low_score=0.5)
    assert len(tr.update(dets([[0, 0, 50, 50]], np.array([0.6])), 0)) == 0
    tr.update(dets([[0, 0, 50, 50]]), 40)
    out = tr.update(dets([[1, 0, 51, 50]], np.array([0.6])), 80)
    assert out.track_ids.tolist() == [1]


def test_state_round_trip_resumes_ids():
    tr = FaceTracker()
    tr.update(dets([[10, 10, 60, 60]]), 0)
    tr2 = FaceTracker()
    tr2.load_state(tr.state_dict())
    assert tr2.update(dets([[11, 10, 61, 60], [300, 300, 350, 350]]), 40).track_ids.tolist() == [1, 2]


def test_iou_matrix_values():
    iou = iou_matrix(np.array([[0, 0, 10, 10.0]]), np.array([[5, 0, 15, 10.0], [20, 20, 30, 30.0]]))
    assert iou[0, 0] == pytest.approx(50 / 150)
    assert iou[0, 1] == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="iou_threshold"):
        FaceTracker(iou_threshold=1.5)
    with pytest.raises(ValueError, match="low_score"):
        FaceTracker(high_score=0.3, low_score=0.5)


# ---- property tests (hypothesis) -------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_coord = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([float("nan"), float("inf"), 0.0]))
_box = st.tuples(_coord, _coord, _coord, _coord)
_frame = st.lists(st.tuples(_box, st.one_of(st.floats(0, 1), st.just(float("nan")))), max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(_frame, min_size=1, max_size=12))
def test_the_tracker_never_breaks_on_any_boxes(frames):
    """NaN, infinite, empty, degenerate or huge boxes: the tracker keeps going, returns a subset of each frame's
    usable detections with distinct positive ids, and its saved state reproduces its later answers."""
    tr = FaceTracker()
    saved = None
    outputs = []
    for k, frame in enumerate(frames):
        d = dets([b for b, _ in frame] or np.zeros((0, 4)), np.array([s for _, s in frame], float))
        out = tr.update(d, k * 40.0)
        assert np.isfinite(out.boxes).all() and np.isfinite(out.scores).all()
        ids = out.track_ids.tolist()
        assert len(set(ids)) == len(ids) and all(i > 0 for i in ids)
        assert all(any(np.array_equal(b, x) for x in d.boxes) for b in out.boxes)
        if k == len(frames) // 2:
            saved = tr.state_dict()
        elif saved is not None:
            outputs.append((d, k * 40.0, out.track_ids.tolist()))
    again = FaceTracker()
    again.load_state(saved)
    for d, t, ids in outputs:
        assert again.update(d, t).track_ids.tolist() == ids


def test_a_nan_box_does_not_poison_later_frames():
    """The probe's case: [0, 0, 0, nan] followed by any box raised 'matrix contains invalid numeric entries'."""
    tr = FaceTracker()
    assert len(tr.update(dets([[0, 0, 0, np.nan]]), 0.0)) == 0
    assert tr.update(dets([[10, 10, 60, 60]]), 40.0).track_ids.tolist() == [1]
    with pytest.raises(ValueError, match="timestamp_ms"):
        tr.update(dets([[10, 10, 60, 60]]), float("nan"))
