import numpy as np
import pytest

from ferpipe.lab.calibrate import fit_temperature, nll
from ferpipe.lab.evaluate import confusion_matrix, expected_calibration_error, summarise


def test_ece_known_values():
    # two bins: confidence 0.9 (right 1 of 2) and 0.6 (right 2 of 2)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    perfect = np.eye(2)[[0, 1]]
    assert expected_calibration_error(perfect, np.array([0, 1])) == 0.0
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error(probs, labels, bins=0)


def test_confusion_and_summary():
    labels = np.array([0, 0, 3, 3, 3, 6])
    preds = np.array([0, 3, 3, 3, 6, 6])
    cm = confusion_matrix(labels, preds)
    assert cm[0, 0] == 1 and cm[0, 3] == 1 and cm[3, 3] == 2 and cm[3, 6] == 1 and cm[6, 6] == 1
    rep = summarise(np.eye(7)[preds], labels)
    assert rep["accuracy"] == pytest.approx(4 / 6)
    assert rep["per_class"]["happy"]["recall"] == pytest.approx(2 / 3)
    assert rep["per_class"]["angry"]["precision"] == pytest.approx(1.0)


def test_temperature_recovers_the_generating_value():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 7))
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(7, p=row) for row in p])
    overconfident = true_logits * 3.0
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(overconfident, labels, t) < nll(overconfident, labels, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        nll(overconfident, labels, 0)
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(np.zeros(3), np.zeros(3, int))


def test_summary_counts_images_without_a_face_as_wrong():
    labels = np.array([3, 3, 0, 6])
    probs = np.eye(7)[[3, 0, 0, 0]].astype(float)
    found = np.array([True, True, True, False])
    rep = summarise(probs, labels, found)
    assert rep["accuracy"] == pytest.approx(2 / 4)
    assert rep["face_found"] == pytest.approx(3 / 4)
    assert rep["per_class"]["neutral"]["recall"] == 0.0 and rep["no_face"][6] == 1
    assert sum(map(sum, rep["confusion"])) == 3


def test_full_image_eval_goes_through_detection_and_counts_misses(tmp_path, samples):
    """Real photos in expression folders, plus an image with no face: the miss counts as wrong."""
    import json
    import shutil

    import cv2
    from conftest import run_cli

    from ferpipe.samples import PHOTO_LABELS

    root = tmp_path / "photos"
    for name, path in samples.items():
        if name.endswith("-ph.jpg"):
            folder = root / PHOTO_LABELS[name.split("-")[2]]
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, folder / name)
    gray = cv2.cvtColor(cv2.imread(str(samples["single_face.jpg"])), cv2.COLOR_BGR2GRAY)
    (root / "neutral").mkdir()
    cv2.imwrite(str(root / "neutral" / "gray_portrait.png"), gray)  # gray input goes the same way
    cv2.imwrite(str(root / "neutral" / "wall.png"), np.full((200, 300, 3), 127, np.uint8))  # no face
    r = run_cli("eval", "--data", str(root), "--full-image", "--model", "mini-xception", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["n"] == 6 and rep["face_found"] == pytest.approx(5 / 6)
    assert rep["no_face"][6] == 1 and rep["per_class"]["neutral"]["n"] == 2
    correct = sum(row[i] for i, row in enumerate(rep["confusion"]))
    assert rep["accuracy"] == pytest.approx(correct / 6)
    for key in ("accuracy", "macro_f1", "ece", "per_class", "confusion", "ms_per_face"):
        assert key in rep  # today's keys are kept
    r = run_cli("eval", "--data", str(tmp_path / "missing"), "--full-image")
    assert r.returncode == 1 and "not a folder" in r.stderr
