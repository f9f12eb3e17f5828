import cv2
import numpy as np
import pytest

from ferpipe.detect import MTCNNDetector, create_detector, nms, square


def test_five_faces_in_multi_face_photo(samples, detector):
    img = cv2.imread(str(samples["multi_face.jpg"]))
    dets = detector.detect(img)
    assert len(dets) == 5
    assert (dets.scores > 0.9).all()
    # landmarks sit inside their boxes, eyes above the mouth
    b, lm = dets.boxes, dets.landmarks
    assert ((lm[:, :, 0] >= b[:, None, 0]) & (lm[:, :, 0] <= b[:, None, 2])).all()
    assert (lm[:, 0, 1] < lm[:, 3, 1]).all() and (lm[:, 1, 1] < lm[:, 4, 1]).all()
    # boxes do not overlap: five different people
    from ferpipe.track import iou_matrix

    iou = iou_matrix(b, b)
    assert (iou[~np.eye(5, dtype=bool)] < 0.1).all()


def test_no_face_in_landscape_photo(samples, detector):
    img = cv2.imread(str(samples["single_face.jpg"]))
    assert len(detector.detect(img)) == 1
    blank = np.full((360, 640, 3), 127, np.uint8)
    assert len(detector.detect(blank)) == 0


def test_refine_relocates_a_shifted_box(samples, detector):
    img = cv2.imread(str(samples["single_face.jpg"]))
    dets = detector.detect(img)
    shifted = dets.boxes + np.array([8, -6, 8, -6], np.float32)
    refined = detector.refine(img, shifted)
    assert len(refined) == 1
    from ferpipe.track import iou_matrix

    assert iou_matrix(refined.boxes, dets.boxes)[0, 0] > 0.8


def test_nms_keeps_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    keep = nms(boxes, np.array([0.5, 0.9, 0.7]), 0.5)
    assert keep.tolist() == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).size == 0
    with pytest.raises(ValueError, match="nms method"):
        nms(boxes, np.ones(3), 0.5, method="max")


def test_square_keeps_centre():
    sq = square(np.array([[0.0, 0.0, 10.0, 20.0]]))
    assert sq.tolist() == [[-5.0, 0.0, 15.0, 20.0]]


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_face_size"):
        MTCNNDetector(min_face_size=5)
    with pytest.raises(ValueError, match="unknown detector 'haar'"):
        create_detector("haar")
    with pytest.raises(ValueError, match="YuNet model file not found"):
        create_detector("yunet", model_path="/nonexistent.onnx")


def test_a_face_that_fills_the_picture_is_found_with_a_border(samples, detector):
    """A close-up cropped inside the face (a webcam too close, a tight photo): one pass finds nothing; the second,
    with a border, finds the face, in the picture's own coordinates."""
    img = cv2.imread(str(samples["multi_face.jpg"]))
    x1, y1, x2, y2 = detector.detect(img).boxes[4]
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * 0.35
    crop = cv2.resize(img[int(cy - half) : int(cy + half), int(cx - half) : int(cx + half)], (192, 192))
    assert len(detector._find(crop)) == 0
    found = detector.detect(crop)
    assert len(found) == 1
    bx1, by1, bx2, by2 = found.boxes[0]
    assert bx1 < 20 and by1 < 40 and bx2 > 172 and by2 > 150  # the whole picture is face: the box reaches its edges
    assert (np.abs(found.landmarks[0] - 96) < 80).all()  # eyes, nose, mouth inside the picture
    assert found.landmarks[0, 0, 1] < found.landmarks[0, 3, 1]  # eyes above the mouth


def test_crop_patches_equal_zero_padded_crops_inside_and_across_the_border():
    """Boxes inside the image are resized from a view of it; the result is the zero-padded crop's, as at borders."""
    from ferpipe.detect import crop_patches

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    boxes = np.array([[10, 5, 40, 35], [0, 0, 159, 89], [-8, -4, 20, 30], [150, 80, 175, 100], [30, 20, 30, 60]])

    def padded(box, size):
        x1, y1, x2, y2 = box
        tmp = np.zeros((y2 - y1 + 1, x2 - x1 + 1, 3), np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2 + 1, 160), min(y2 + 1, 90)
        tmp[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
        return cv2.resize(tmp, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)

    out = crop_patches(image, boxes, 24)
    for k, box in enumerate(boxes[:4]):
        np.testing.assert_array_equal(out[k], padded(box, 24))
    assert not out[4].any()  # a box one pixel wide is left empty
    np.testing.assert_array_equal(crop_patches(image, boxes, 24, bgr_to_rgb=True), out[..., ::-1])


def test_nets_with_a_memory_arena_give_the_same_outputs_small_or_large():
    """The arena only keeps working memory: a net with one (kept under its byte limit, given back over it) answers
    as the same net without one."""
    from ferpipe.detect import _MTCNNNet
    from ferpipe.registry import fetch, get_spec

    path = fetch(get_spec("mtcnn", task="detector"))["pnet"]
    plain, kept = _MTCNNNet(path, 1), _MTCNNNet(path, 1, arena_bytes=800_000)
    rng = np.random.default_rng(1)
    for h, w in ((180, 320), (240, 427), (90, 160)):  # under, over and under the limit again
        x = plain.preprocess(rng.uniform(0, 255, (1, h, w, 3)).astype(np.float32))
        for a, b in zip(plain.run(x), kept.run(x), strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="arena_bytes must be >= 0, got -1"):
        _MTCNNNet(path, 1, arena_bytes=-1)
