import numpy as np
import pytest

from ferpipe.calibrate import fit_temperature, nll
from ferpipe.evaluate import confusion_matrix, expected_calibration_error, summarise


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
