"""The FER+ and FER2013 readers, FER+'s majority rule and vote targets."""

import cv2
import numpy as np
import polars as pl
import pytest

from ferpipe.errors import InputError
from ferpipe.lab.data import FERPLUS_VOTES, ferplus_targets, load_faces


def _png(value: int) -> bytes:
    return cv2.imencode(".png", np.full((48, 48), value, np.uint8))[1].tobytes()


def _ferplus_file(tmp_path, rows):
    """A FER+-layout Parquet: rows of (label or None, 7 votes in ferpipe's order, contempt, unknown, no_face)."""
    data = {"split": [], "label": [], "image_png": []}
    for c in (*FERPLUS_VOTES, "votes_contempt", "votes_unknown", "votes_no_face"):
        data[c] = []
    for i, (label, votes, contempt, unknown, no_face) in enumerate(rows):
        data["split"].append("public_test")
        data["label"].append(label)
        data["image_png"].append(_png(i * 10))
        for c, v in zip(FERPLUS_VOTES, votes, strict=False):
            data[c].append(v)
        data["votes_contempt"].append(contempt)
        data["votes_unknown"].append(unknown)
        data["votes_no_face"].append(no_face)
    path = tmp_path / "ferplus.parquet"
    pl.DataFrame(data, schema_overrides={"label": pl.Int8}).write_parquet(path)
    return path


def test_ferplus_majority_and_vote_targets(tmp_path):
    path = _ferplus_file(tmp_path, [
        (3, [0, 0, 0, 9, 0, 0, 1], 0, 0, 0),   # happy, a single neutral vote dropped as noise
        (None, [0, 0, 0, 4, 0, 0, 4], 0, 2, 0),  # no majority: no label, but votes to learn from
        (7, [0, 0, 0, 0, 0, 0, 2], 8, 0, 0),   # contempt: not one of the seven
        (6, [2, 0, 0, 0, 0, 0, 6], 0, 2, 0),   # neutral with some anger
    ])  # fmt: skip
    faces = load_faces(path, "public_test")
    assert faces.protocol == "ferplus"
    assert faces.labels.tolist() == [3, -1, -1, 6]
    assert faces.labelled.tolist() == [True, False, False, True]
    np.testing.assert_allclose(faces.votes[0], np.eye(7)[3])
    np.testing.assert_allclose(faces.votes[1][[3, 6]], [0.5, 0.5])
    assert faces.votes[2].sum() == 0  # mostly contempt: left out of training
    np.testing.assert_allclose(faces.votes[3][[0, 6]], [0.25, 0.75])
    assert faces.images.shape == (4, 48, 48) and faces.images[3].max() == 30


def test_ferplus_targets_drop_single_votes_and_unknown_majorities():
    votes = np.array([[1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 3, 0, 0, 0]])
    other = np.array([[0, 0, 0], [0, 5, 0]])  # second: more unknown than expression votes
    t = ferplus_targets(votes, other)
    assert t.sum() == 0


def test_real_ferplus_public_test_follows_the_readme(ferplus_parquet):
    faces = load_faces(ferplus_parquet, "public_test")
    assert len(faces) == 3579
    # majority labels per the dataset README: 3,579 images, 16 contempt and 388 without a majority
    assert int(faces.labelled.sum()) == 3579 - 16 - 388
    counts = np.bincount(faces.labels[faces.labelled], minlength=7)
    assert counts.tolist() == [289, 25, 60, 862, 348, 411, 1180]
    # the vote distribution agrees with the majority label wherever there is one
    agree = faces.votes[faces.labelled].argmax(1) == faces.labels[faces.labelled]
    assert agree.mean() > 0.99


def test_layouts_are_recognised_or_refused(tmp_path, fer_parquet):
    assert load_faces(fer_parquet, "public_test", limit=10).protocol == "fer2013"
    bad = tmp_path / "other.parquet"
    pl.DataFrame({"x": [1]}).write_parquet(bad)
    with pytest.raises(InputError, match="not a FER2013"):
        load_faces(bad)
    with pytest.raises(InputError, match="no such file"):
        load_faces(tmp_path / "missing.parquet")
    with pytest.raises(ValueError, match="split 'nope' not found"):
        load_faces(fer_parquet, "nope")
