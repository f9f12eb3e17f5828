import numpy as np
import pytest

from ferpipe.types import Detections, Expressions, Frame, VideoInfo


def test_detections_columns_must_agree():
    with pytest.raises(ValueError, match="disagree"):
        Detections(np.zeros((2, 4)), np.zeros(3), np.zeros((2, 5, 2)))


def test_detections_index_concat_and_ids():
    d = Detections(np.arange(8).reshape(2, 4), [0.9, 0.8], np.zeros((2, 5, 2)))
    assert d.track_ids.tolist() == [-1, -1]
    both = Detections.concat([d, d[[1]].with_track_ids([7])])
    assert len(both) == 3 and both.track_ids.tolist() == [-1, -1, 7]
    assert len(Detections.empty()) == 0


def test_frame_rejects_bad_images_and_times():
    with pytest.raises(ValueError, match="uint8"):
        Frame(0, 0.0, np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="timestamp"):
        Frame(0, float("nan"), np.zeros((4, 4, 3), np.uint8))


def test_expressions_rows_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        Expressions(np.full((1, 7), 0.5), [0.0], [0.0])


def test_videoinfo_rotation():
    with pytest.raises(ValueError, match="rotation"):
        VideoInfo("x", "", 1.0, 25.0, 10, 10, 25, 45)


def test_mesh_crops_must_be_uint8_squares_with_one_transform_each():
    from ferpipe.types import MeshCrops

    ok = MeshCrops(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 2, 3)))
    assert len(ok) == 2 and ok.transforms.dtype == np.float64
    with pytest.raises(ValueError, match="crops must be"):
        MeshCrops(np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"transforms must be \(2, 2, 3\)"):
        MeshCrops(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((1, 2, 3)))


def test_expressions_concat_keeps_rows_in_order():
    a = Expressions(np.eye(7)[[0, 1]], np.zeros(2), np.ones(2))
    b = Expressions(np.eye(7)[[6]], np.full(1, 0.5), np.zeros(1))
    both = Expressions.concat([a, b])
    assert len(both) == 3 and both.probs.argmax(axis=1).tolist() == [0, 1, 6]
    assert both.valence.tolist() == [0, 0, 0.5]
    assert len(Expressions.concat([])) == 0
