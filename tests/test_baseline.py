"""Per-person baseline correction, by hand, on a small stored timeline (a real DuckDB file)."""

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferpipe import analytics as an
from ferpipe.baseline import SPREAD_FLOOR, apply_baseline, corrected_face_bins, parse_baseline
from ferpipe.types import Baseline, Detections, Expressions, Observations, RunProgress


def approx(x, **kw):
    """Readings are stored as float32."""
    return pytest.approx(x, **({"rel": 1e-5, "abs": 1e-4} | kw))


# person 1 is in view 0-9 s, person 2 only from 5 s (no baseline in the first 3 s); one reading per second
P1 = [0.1, 0.3, 0.2, 0.6, 0.9, 0.5, 0.4, 0.4, 0.3, 0.2]
P2 = [0.5, 0.5, 0.7, 0.7, 0.6]


def store_timeline(store, clip_id: str, curves: dict[int, tuple[int, list[float]]], duration_s: float = 10.0,
                   offset_s: float = 0.0, tags: dict | None = None) -> int:  # fmt: skip
    """A finished run whose face f shows happy = curve[k] at second start + k (neutral the rest)."""
    store.upsert_clip(clip_id, {"sha256": clip_id.encode().hex().ljust(64, "0"), "path": f"/{clip_id}.mp4", "title": clip_id,
                                "duration_s": duration_s}, tags or {})  # fmt: skip
    if offset_s:
        store.set_stimulus(clip_id, None, offset_s)
    rows = [(f, (start + k) * 1000.0, v) for f, (start, curve) in curves.items() for k, v in enumerate(curve)]
    n = len(rows)
    probs = np.zeros((n, 7))
    probs[:, 3] = [r[2] for r in rows]
    probs[:, 6] = 1 - probs[:, 3]
    run = store.start_run(clip_id, "m", "mtcnn", {}, n)
    obs = Observations([int(r[1] // 1000) for r in rows], [r[1] for r in rows],
                       Detections(np.tile([0, 0, 9, 9], (n, 1)), np.ones(n), np.zeros((n, 5, 2)), [r[0] for r in rows]),
                       Expressions(probs, probs[:, 3] - 0.5, np.zeros(n)))  # fmt: skip
    store.commit_batch(run.run_id, obs, RunProgress(n, n - 1, rows[-1][1], 1.0))
    store.finish_run(run.run_id, "done")
    return run.run_id


@pytest.fixture
def timeline(store):
    run = store_timeline(store, "c1", {1: (0, P1), 2: (5, P2)})
    return store, run, an.face_bins(store, run, 1.0, ("happy", "valence"))


def _person(fb: pl.DataFrame, unit: int) -> list[float]:
    return fb.filter(pl.col(an.unit_of(fb)) == unit).sort("bin")["happy"].to_list()


def test_subtract_an_interval_and_leave_out_who_has_none(timeline):
    store, run, fb = timeline
    out, res = corrected_face_bins(store, run, "c1", fb, parse_baseline("0-3"))
    assert _person(out, 1) == approx([v - 0.2 for v in P1])  # baseline mean (0.1 + 0.3 + 0.2) / 3
    assert res.kept == 1 and res.left_out == 1  # person 2 arrives at 5 s
    assert "1 person left out" in res.describe() and "0–3 s of stimulus time" in res.describe()
    assert fb.filter(pl.col(an.unit_of(fb)) == 1)["happy"].to_list() == approx(P1)  # raw values unchanged
    # valence (stored, derived from the expressions) is corrected too: happy - 0.5, minus its baseline mean
    val = out.filter(pl.col(an.unit_of(out)) == 1).sort("bin")["valence"].to_list()
    assert val == approx([v - 0.2 for v in P1])


def test_z_score_against_the_baseline_spread(timeline):
    store, run, fb = timeline
    out, res = corrected_face_bins(store, run, "c1", fb, parse_baseline("0-3", "z"))
    sd = np.std([0.1, 0.3, 0.2], ddof=1)  # 0.1
    assert _person(out, 1) == approx([(v - 0.2) / sd for v in P1])
    assert res.left_out == 1


def test_first_seconds_median_and_marker(timeline):
    store, run, fb = timeline
    out, res = corrected_face_bins(store, run, "c1", fb, parse_baseline("first:2"))
    assert res.left_out == 0
    assert _person(out, 1) == approx([v - 0.2 for v in P1])  # (0.1 + 0.3) / 2
    assert _person(out, 2) == approx([v - 0.5 for v in P2])  # its own first 2 s: 5 and 6 s
    z, _ = corrected_face_bins(store, run, "c1", fb, parse_baseline("first:2", "z"))
    assert _person(z, 2) == approx([(v - 0.5) / SPREAD_FLOOR for v in P2])  # no spread: the floor
    med, _ = corrected_face_bins(store, run, "c1", fb, parse_baseline("median"))
    assert _person(med, 1) == approx([v - 0.35 for v in P1])
    assert _person(med, 2) == approx([v - 0.6 for v in P2])
    store.add_marker("c1", "Baseline", 5, 7)  # names match whatever the case
    mk, res = corrected_face_bins(store, run, "c1", fb, parse_baseline("marker"))
    assert res.left_out == 0 and _person(mk, 1) == approx([v - 0.45 for v in P1])
    with pytest.raises(ValueError, match="no event marker named 'intro'"):
        corrected_face_bins(store, run, "c1", fb, parse_baseline("marker:intro"))


def test_interval_is_in_stimulus_time(store):
    """With a stimulus offset of 2 s, stimulus time 0-3 s is clip time 2-5 s."""
    run = store_timeline(store, "c2", {1: (0, P1)}, offset_s=2.0)
    fb = an.face_bins(store, run, 1.0, ("happy",))
    out, res = corrected_face_bins(store, run, "c2", fb, parse_baseline("0-3"))
    assert res.window == (2.0, 5.0)
    assert _person(out, 1) == approx([v - np.mean([0.2, 0.6, 0.9]) for v in P1])


def test_no_baseline_changes_nothing(timeline):
    store, run, fb = timeline
    out, res = corrected_face_bins(store, run, "c1", fb, None)
    assert res is None and out.equals(fb)


def test_baseline_arguments_are_checked():
    for bad, match in (("5-2", "start < end"), ("soon", "unknown baseline"), ("first:0", "length > 0")):
        with pytest.raises(ValueError, match=match):
            parse_baseline(bad)
    with pytest.raises(ValueError, match="correction"):
        parse_baseline("0-5", "divide")
    with pytest.raises(ValueError, match="kind"):
        Baseline("sometimes")
    assert parse_baseline("none") is None and parse_baseline("") is None
    assert parse_baseline("marker:brand intro").marker == "brand intro"
    assert Baseline("interval", "z", 0, 5).min_seconds == 2  # a spread needs two seconds


@given(st.lists(st.floats(0, 1), min_size=3, max_size=30), st.floats(0, 1))
def test_subtracting_a_persons_own_mean_centres_them(values, other):
    """apply_baseline on any curve: subtracting the mean over the whole curve leaves a curve of mean 0."""
    fb = pl.DataFrame({"bin": range(len(values)), "person_id": [1] * len(values), "n_obs": [1] * len(values),
                       "happy": values})  # fmt: skip
    stats = pl.DataFrame({"person_id": [1, 2], "baseline_s": [float(len(values)), 0.0],
                          "happy__base": [float(np.mean(values)), other], "happy__spread": [1.0, 1.0]})  # fmt: skip
    out, kept, left = apply_baseline(fb, stats, Baseline("median"), ("happy",))
    assert kept == 1 and left == 0
    assert abs(out["happy"].mean()) < 1e-9
