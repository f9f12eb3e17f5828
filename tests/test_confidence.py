"""Reading confidence: the factors on known inputs, and on real media through the pipeline (stored, exported,
filtered)."""

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferpipe.confidence import certainty, quality, reading_confidence, sharpness
from ferpipe.frames import read_image


def test_certainty_is_zero_for_a_uniform_reading_and_one_for_a_sure_one():
    probs = np.array([[1 / 7] * 7, [1.0, 0, 0, 0, 0, 0, 0], [0.5, 0.5, 0, 0, 0, 0, 0]])
    c = certainty(probs)
    assert c[0] == pytest.approx(0, abs=1e-6) and c[1] == pytest.approx(1, abs=1e-6)
    assert c[2] == pytest.approx(1 - np.log(2) / np.log(7), abs=1e-5)


def test_quality_factors_on_known_values():
    # a 48 px sharp frontal face with a mesh is full quality, a 16 px one none; unknown presence halves
    q = quality([48, 16, 32], [1e9, 1e9, 1e9], pose=np.array([[0, 0, 0], [0, 0, 0], [42.5, 0, 0]]),
                presence=[1.0, 1.0, np.nan])  # fmt: skip
    assert q[0] == pytest.approx(1, abs=1e-6) and q[1] == 0
    assert q[2] == pytest.approx(0.5 * 0.5 * 0.5, abs=1e-6)  # half size, half-way turned, presence unknown
    with pytest.raises(ValueError, match="disagree"):
        quality([48, 48], [1.0])
    with pytest.raises(ValueError, match="probs"):
        reading_confidence(np.ones(7) / 7, [48], [1.0])


@given(st.lists(st.floats(0, 1), min_size=7, max_size=7), st.floats(0, 4000), st.floats(0, 1e5),
       st.floats(-90, 90), st.floats(-90, 90), st.floats(0, 1))  # fmt: skip
def test_confidence_stays_in_the_unit_interval(raw, px, sharp, yaw, pitch, presence):
    p = np.asarray(raw, np.float64) + 1e-6
    c = reading_confidence((p / p.sum())[None], [px], [sharp], np.array([[yaw, pitch, 0.0]]), [presence])
    assert 0 <= float(c[0]) <= 1


def test_sharpness_falls_with_blur(samples):
    img = cv2.cvtColor(read_image(samples["single_face.jpg"]), cv2.COLOR_BGR2GRAY)
    crop = cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA)
    assert sharpness(crop[None])[0] > 4 * sharpness(cv2.GaussianBlur(crop, (0, 0), 1.5)[None])[0]


@pytest.fixture(scope="module")
def photo_runs(tmp_path_factory, samples, detector, model):
    """A frontal face photo, the same photo blurred and shrunk to a small face, and a face turned by 45 degrees,
    each processed by the pipeline with signals on."""
    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.store import Store

    folder = tmp_path_factory.mktemp("confidence")
    store = Store(folder / "c.duckdb")
    p = Pipeline(store, Settings(), detector=detector, model=model)
    img = read_image(samples["single_face.jpg"])
    blurred = folder / "blurred.png"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(img, (0, 0), img.shape[1] / 60))
    small = np.full((360, 640, 3), 110, np.uint8)
    tiny = cv2.resize(img, None, fx=0.1, fy=0.1, interpolation=cv2.INTER_AREA)
    small[100 : 100 + tiny.shape[0], 300 : 300 + tiny.shape[1]] = tiny
    cv2.imwrite(str(folder / "small.png"), small)
    sources = {"frontal": samples["single_face.jpg"], "blurred": blurred, "small": folder / "small.png",
               "turned": samples["45-m7-di-ph.jpg"]}  # fmt: skip
    return store, {k: p.process(str(v)) for k, v in sources.items()}


def test_a_small_turned_or_blurred_face_reads_lower_than_a_frontal_one(photo_runs):
    store, runs = photo_runs
    conf = {}
    for kind, run in runs.items():
        tl = store.timeline_export("c", run.run_id)
        assert "confidence" in tl.columns and tl.height >= 1, kind
        conf[kind] = float(tl["confidence"].max())
    assert conf["frontal"] > 0.7
    for kind in ("blurred", "small", "turned"):
        assert conf[kind] < conf["frontal"] - 0.15, (kind, conf)


def test_the_quality_filter_uses_the_confidence(photo_runs):
    from ferpipe.store import QualityFilter

    store, runs = photo_runs
    strict = QualityFilter(min_confidence=0.7)
    assert "reading confidence at least 0.7" in strict.describe()
    assert store.excluded_share(runs["frontal"].run_id, strict) == 0.0
    assert store.excluded_share(runs["small"].run_id, strict) == 1.0
    low, known, median = store.confidence_summary(runs["small"].run_id, 0.7)
    assert low == 1.0 and known == 1.0 and median < 0.7
    with pytest.raises(ValueError, match="min_confidence"):
        QualityFilter(min_confidence=1.5)
