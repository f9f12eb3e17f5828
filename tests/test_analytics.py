import numpy as np
import polars as pl
import pytest
from scipy import stats

from ferpipe.analytics import aggregate_frame, t_interval


def test_bins_average_face_means_not_rows():
    # face 1 has three rows in bin 0 (happy 0.2, 0.4, 0.6 -> mean 0.4), face 2 one row (0.8)
    obs = pl.DataFrame({
        "face_id": [1, 1, 1, 2, 1],
        "timestamp_ms": [0.0, 300.0, 600.0, 500.0, 1500.0],
        "happy": [0.2, 0.4, 0.6, 0.8, 0.5],
    })  # fmt: skip
    agg = aggregate_frame(obs, bin_s=1.0, signals=("happy",))
    assert agg["t_s"].to_list() == [0.0, 1.0]
    assert agg["n_faces"].to_list() == [2, 1]
    assert agg["happy_mean"][0] == pytest.approx(0.6)  # (0.4 + 0.8) / 2
    sd = np.std([0.4, 0.8], ddof=1)
    half = stats.t.ppf(0.975, 1) * sd / np.sqrt(2)
    assert agg["happy_lo"][0] == pytest.approx(0.6 - half)
    assert agg["happy_hi"][0] == pytest.approx(0.6 + half)
    assert np.isnan(agg["happy_lo"][1])  # one face: no interval


def test_t_interval_known_value():
    lo, hi = t_interval(np.array([10.0]), np.array([2.0]), np.array([5]))
    half = 2.776445 * 2 / np.sqrt(5)
    assert lo[0] == pytest.approx(10 - half, rel=1e-5) and hi[0] == pytest.approx(10 + half, rel=1e-5)


def test_empty_and_bad_arguments():
    empty = pl.DataFrame(schema={"face_id": pl.Int64, "timestamp_ms": pl.Float64, "happy": pl.Float64})
    assert aggregate_frame(empty, signals=("happy",)).height == 0
    with pytest.raises(ValueError, match="bin_s"):
        aggregate_frame(empty, bin_s=0, signals=("happy",))
    with pytest.raises(ValueError, match="unknown signal"):
        aggregate_frame(empty, signals=("joy",))
    with pytest.raises(ValueError, match="level"):
        t_interval(np.zeros(1), np.zeros(1), np.ones(1), level=1.5)
