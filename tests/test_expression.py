import cv2
import numpy as np
import pytest

from ferpipe.expression import CIRCUMPLEX, FER_TEMPLATE, align_faces, circumplex
from ferpipe.samples import PHOTO_LABELS
from ferpipe.types import EXPRESSIONS


def test_circumplex_mapping_is_the_documented_weighted_mean():
    probs = np.zeros((3, 7), np.float32)
    probs[0, EXPRESSIONS.index("happy")] = 1
    probs[1, EXPRESSIONS.index("neutral")] = 1
    probs[2, EXPRESSIONS.index("sad")] = 0.5
    probs[2, EXPRESSIONS.index("angry")] = 0.5
    v, a = circumplex(probs)
    assert (v[0], a[0]) == pytest.approx(CIRCUMPLEX["happy"])
    assert (v[1], a[1]) == (0, 0)
    assert v[2] == pytest.approx((-0.63 - 0.51) / 2) and a[2] == pytest.approx((-0.27 + 0.59) / 2)


def test_alignment_puts_landmarks_on_the_template():
    img = np.zeros((200, 300, 3), np.uint8)
    # a face tilted by 20 degrees, 120 px wide, somewhere in the frame
    ang = np.radians(20)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = (FER_TEMPLATE - 0.5) @ rot.T * 120 + [150, 100]
    for x, y in pts:
        cv2.circle(img, (round(x), round(y)), 3, (255, 255, 255), -1)
    crop = align_faces(img, pts[None], size=48, channels=1)[0, :, :, 0]
    for tx, ty in FER_TEMPLATE * 48:
        assert crop[round(ty), round(tx)] > 100
    with pytest.raises(ValueError, match="channels"):
        align_faces(img, pts[None], 48, channels=2)


def test_labelled_photos_give_one_face_each_and_a_valid_distribution(samples, detector, model):
    hits = 0
    for name, path in samples.items():
        if not name.endswith("-ph.jpg"):
            continue
        img = cv2.imread(str(path))
        dets = detector.detect(img)
        assert len(dets) == 1, name
        expr = model(model.crops(img, dets))
        assert np.allclose(expr.probs.sum(), 1, atol=1e-4)
        hits += EXPRESSIONS[int(expr.probs.argmax())] == PHOTO_LABELS[name.split("-")[2]]
        if PHOTO_LABELS[name.split("-")[2]] == "happy":
            assert EXPRESSIONS[int(expr.probs.argmax())] == "happy"
    assert hits >= 1
