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
    half = stats.t.ppf(0.975, 1) * sd / np.sqrt(2)  # 2.54: wider than the probability range
    assert agg["happy_lo"][0] == pytest.approx(max(0.0, 0.6 - half)) == 0.0
    assert agg["happy_hi"][0] == pytest.approx(min(1.0, 0.6 + half)) == 1.0
    assert np.isnan(agg["happy_lo"][1])  # one face: no interval


def test_ci_of_many_faces_is_not_clipped():
    rng = np.random.default_rng(1)
    vals = rng.uniform(0.3, 0.7, 30)
    obs = pl.DataFrame({"face_id": range(30), "timestamp_ms": [0.0] * 30, "happy": vals})
    agg = aggregate_frame(obs, 1.0, ("happy",))
    half = stats.t.ppf(0.975, 29) * vals.std(ddof=1) / np.sqrt(30)
    assert agg["happy_lo"][0] == pytest.approx(vals.mean() - half)
    assert agg["happy_hi"][0] == pytest.approx(vals.mean() + half)


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


from ferpipe.analytics import (  # noqa: E402
    compare_groups,
    dominant_share,
    face_bins_frame,
    face_means_from_bins,
    normalise_time,
    peaks,
    smooth,
    summary,
    top_expression_share,
)
from ferpipe.types import EXPRESSIONS  # noqa: E402


def _obs(rows):
    """rows: (face_id, t_ms, top expression, prob of it); the rest of the mass goes to neutral."""
    data = {"face_id": [], "timestamp_ms": [], **{e: [] for e in EXPRESSIONS}}
    for face, t, e, p in rows:
        data["face_id"].append(face)
        data["timestamp_ms"].append(t)
        for x in EXPRESSIONS:
            data[x].append(p if x == e else 0.0)
        data["neutral"][-1] += 1 - p if e != "neutral" else 0
    return pl.DataFrame(data)


def test_share_of_faces_by_top_expression():
    obs = _obs([(1, 100, "happy", 0.9), (2, 200, "happy", 0.6), (3, 300, "sad", 0.7), (4, 400, "happy", 0.3),
                (1, 1100, "sad", 0.8)])  # fmt: skip
    fb = face_bins_frame(obs, 1.0, EXPRESSIONS)
    sh = top_expression_share(fb, 1.0)
    assert sh["n_faces"].to_list() == [4, 1]
    assert sh["happy_share"][0] == pytest.approx(0.5)  # faces 1 and 2; face 4 is mostly neutral
    assert sh["sad_share"][0] == pytest.approx(0.25) and sh["neutral_share"][0] == pytest.approx(0.25)
    assert sh["sad_share"][1] == 1.0
    dom = dominant_share(face_means_from_bins(fb))
    # face 1 over the clip: happy .45, sad .4 -> happy; faces: happy 1,2; sad 3; neutral 4
    assert dom["happy"] == pytest.approx(0.5) and dom["sad"] == pytest.approx(0.25) and dom["neutral"] == 0.25


def test_peaks_are_local_maxima_apart():
    agg = pl.DataFrame({"t_s": [0.0, 1, 2, 3, 4, 5, 6], "n_faces": [3] * 7,
                        "happy_mean": [0.1, 0.5, 0.2, 0.1, 0.9, 0.3, 0.6]})  # fmt: skip
    pk = peaks(agg, "happy", k=5, min_gap_s=1.0)
    assert pk["t_s"].to_list() == [4.0, 6.0, 1.0] and pk["value"].to_list() == [0.9, 0.6, 0.5]
    assert peaks(agg, "happy", k=1)["t_s"].to_list() == [4.0]
    with pytest.raises(ValueError, match="k must be"):
        peaks(agg, "happy", k=0)


def test_summary_time_above_and_peak():
    agg = pl.DataFrame({"t_s": [0.0, 1, 2, 3], "n_faces": [1] * 4, "happy_mean": [0.2, 0.6, 0.8, 0.4]})
    obs = pl.DataFrame({"face_id": [1, 2]})
    s = summary(agg, obs, "happy", threshold=0.5)
    assert s == {"mean": pytest.approx(0.5), "peak": 0.8, "peak_t_s": 2.0, "time_above_s": 2.0, "n": 2}


def test_smoothing_is_a_centred_rolling_mean():
    agg = pl.DataFrame(
        {"t_s": [0.0, 1, 2], "happy_mean": [0.0, 0.3, 0.9], "happy_lo": [0.0] * 3, "happy_hi": [1.0] * 3}
    )
    out = smooth(agg, 3, ("happy",))
    assert out["happy_mean"].to_list() == pytest.approx([0.15, 0.4, 0.6])
    assert smooth(agg, 1, ("happy",)).equals(agg)
    with pytest.raises(ValueError, match="window_bins"):
        smooth(agg, 0)


def test_welch_and_permutation_match_scipy_and_effect_size():
    a = np.array([0.2, 0.3, 0.4, 0.5])
    b = np.array([0.5, 0.6, 0.7, 0.8, 0.9])
    w = compare_groups(a, b, "welch")
    assert w["p_value"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    pooled = np.sqrt((3 * a.var(ddof=1) + 4 * b.var(ddof=1)) / 7)
    assert w["hedges_g"] == pytest.approx((a.mean() - b.mean()) / pooled * (1 - 3 / (4 * 9 - 9)))
    p = compare_groups(a, b, "permutation", n_resamples=999)
    assert 0 < p["p_value"] < 0.05 and p["n_a"] == 4 and p["n_b"] == 5
    assert np.isnan(compare_groups(a[:1], b, "welch")["p_value"])
    with pytest.raises(ValueError, match="method"):
        compare_groups(a, b, "ttest")


def test_normalised_time_puts_clips_on_one_clock():
    obs = pl.DataFrame({"clip_id": ["a", "b"], "face_id": [1, 1], "timestamp_ms": [5000.0, 10000.0]})
    out = normalise_time(obs, {"a": 10.0, "b": 20.0})
    assert out["timestamp_ms"].to_list() == [50000.0, 50000.0]  # both at 50%
    with pytest.raises(ValueError, match="durations"):
        normalise_time(obs, {"a": 0.0, "b": 1.0})


def test_faces_of_different_clips_are_not_merged():
    obs = pl.DataFrame({"clip_id": ["a", "b"], "face_id": [1, 1], "timestamp_ms": [0.0, 0.0], "happy": [0.2, 0.8]})
    agg = aggregate_frame(obs, 1.0, ("happy",))
    assert agg["n_faces"].to_list() == [2] and agg["happy_mean"][0] == pytest.approx(0.5)


# ---- property tests (hypothesis): NaN, empty input, one face, duplicate timestamps, huge values --------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ferpipe.analytics import aggregate_face_bins  # noqa: E402

_value = st.one_of(st.floats(0, 1), st.just(float("nan")))
_time = st.one_of(st.floats(0, 1e7), st.sampled_from([0.0, 40.0, float("nan"), float("inf")]))
_rows = st.lists(st.tuples(st.integers(1, 4), _time, _value, _value), max_size=60)


def _frame(rows):
    return pl.DataFrame(
        {"face_id": [r[0] for r in rows], "timestamp_ms": [r[1] for r in rows], "happy": [r[2] for r in rows],
         "sad": [r[3] for r in rows]},
        schema={"face_id": pl.Int64, "timestamp_ms": pl.Float64, "happy": pl.Float64, "sad": pl.Float64},
    )  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(_rows, st.sampled_from([0.2, 1.0, 7.5]))
def test_curves_hold_their_invariants_on_any_observations(rows, bin_s):
    obs = _frame(rows)
    fb = face_bins_frame(obs, bin_s, ("happy", "sad"))
    agg = aggregate_face_bins(fb, bin_s, ("happy", "sad"))
    finite = obs.filter(pl.col("timestamp_ms").is_finite())
    assert fb["n_obs"].sum() == finite.height  # every usable row lands in exactly one (bin, face)
    if agg.height:
        per_bin = fb.group_by("bin").agg(pl.col("face_id").n_unique().alias("n")).sort("bin")
        assert agg["n_faces"].to_list() == per_bin["n"].to_list()
        for s in ("happy", "sad"):
            mean, lo, hi = (agg[f"{s}_{k}"].to_numpy().astype(float) for k in ("mean", "lo", "hi"))
            ok = np.isfinite(mean)
            assert ((mean[ok] >= -1e-9) & (mean[ok] <= 1 + 1e-9)).all()
            band = ok & np.isfinite(lo)
            assert (lo[band] <= mean[band] + 1e-9).all() and (hi[band] >= mean[band] - 1e-9).all()
            assert ((lo[band] >= 0) & (hi[band] <= 1)).all()
    res = summary(agg, finite, "happy", threshold=0.5, bin_s=bin_s)  # never raises, NaN or not
    assert res["time_above_s"] >= 0
    if np.isfinite(res["peak"]):
        assert res["peak"] >= res["mean"] - 1e-9
        assert res["time_above_s"] <= agg.height * bin_s + 1e-9


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_rows, st.sampled_from([0.5, 1.0, 3.0]))
def test_the_store_bins_like_analytics_does(tmp_path_factory, rows, bin_s):
    """Store.face_bins (SQL in the file) and face_bins_frame (Polars in memory) agree on any input."""
    from ferpipe.store import Store

    rows = [r for r in rows if r[1] < 1e6 or not np.isfinite(r[1])]
    store = Store(tmp_path_factory.mktemp("bins") / "db.duckdb")
    store.migrate()
    obs = _frame(rows)
    with store.transaction() as con:
        con.register("o", obs.to_arrow())
        con.execute("""INSERT INTO observations (run_id, face_id, frame_index, timestamp_ms, happy, sad)
                       SELECT 1, face_id, 0, timestamp_ms, happy, sad FROM o WHERE NOT isnan(timestamp_ms)""")
    expect = face_bins_frame(obs.filter(~pl.col("timestamp_ms").is_nan()), bin_s, ("happy", "sad"))
    got = store.face_bins(1, bin_s, ("happy", "sad"))
    assert got.select("bin", "face_id", "n_obs").rows() == expect.select("bin", "face_id", "n_obs").rows()
    for s in ("happy", "sad"):
        a, b = got[s].to_numpy().astype(float), expect[s].to_numpy().astype(float)
        assert np.array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), max_size=12), st.lists(st.floats(-1e6, 1e6), max_size=12))
def test_group_comparison_is_well_defined(a, b):
    res = compare_groups(np.array(a), np.array(b))
    assert res["n_a"] == len(a) and res["n_b"] == len(b)
    p = res["p_value"]
    assert np.isnan(p) or 0 <= p <= 1
    swapped = compare_groups(np.array(b), np.array(a))
    g, gs = res["hedges_g"], swapped["hedges_g"]
    assert (np.isnan(g) and np.isnan(gs)) or g == pytest.approx(-gs, abs=1e-9)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.floats(0, 1e5)), min_size=1, max_size=40))
def test_top_expression_shares_sum_to_one(rows):
    rng = np.random.default_rng(len(rows))
    p = rng.dirichlet(np.ones(7), len(rows))
    obs = pl.DataFrame({"face_id": [r[0] for r in rows], "timestamp_ms": [r[1] for r in rows],
                        **{e: p[:, k] for k, e in enumerate(EXPRESSIONS)}})  # fmt: skip
    fb = face_bins_frame(obs, 1.0, EXPRESSIONS)
    shares = top_expression_share(fb, 1.0)
    total = shares.select(pl.sum_horizontal([f"{e}_share" for e in EXPRESSIONS])).to_series().to_numpy()
    np.testing.assert_allclose(total, 1.0)
    assert shares["n_faces"].sum() == fb.height


def test_nan_rows_do_not_break_curves_or_summaries():
    """The probe's cases: a NaN time, and a NaN probability that made summary() raise 'All-NaN slice'."""
    obs = pl.DataFrame({"face_id": [1, 1, 2], "timestamp_ms": [0.0, float("nan"), 100.0],
                        "happy": [float("nan"), 0.4, float("nan")], "sad": [0.1, 0.2, 0.3]})  # fmt: skip
    agg = aggregate_frame(obs, 1.0, ("happy", "sad"))
    assert agg.height == 1 and agg["n_faces"][0] == 2
    assert agg["sad_mean"][0] == pytest.approx(0.2)  # face 1: 0.1, face 2: 0.3
    res = summary(agg, obs, "happy")
    assert np.isnan(res["peak"]) and res["time_above_s"] == 0


def test_marker_statistics_on_hand_computed_input():
    """Two people, one marker at 10 s lasting 2 s, windows of 4 s: before [6, 10), during [10, 12), after [12, 16)."""
    from ferpipe.analytics import marker_stats

    rows = []
    for person, base, bump in ((1, 0.2, 0.6), (2, 0.4, 0.8)):
        for t in range(20):
            value = bump if 10 <= t < 12 else base
            rows.append({"person_id": person, "timestamp_ms": t * 1000.0, "happy": value})
    obs = pl.DataFrame(rows)
    markers = pl.DataFrame({"name": ["reveal", "point"], "start_s": [10.0, 3.0], "end_s": [12.0, None]})
    st = marker_stats(obs, markers, "happy", window_s=4.0)
    r = st.row(0, named=True)
    assert r["before_mean"] == pytest.approx(0.3) and r["during_mean"] == pytest.approx(0.7)
    assert r["after_mean"] == pytest.approx(0.3) and r["change_during"] == pytest.approx(0.4)
    assert r["before_n"] == r["during_n"] == 2
    p = st.row(1, named=True)  # a point: during is the 4 s after it
    assert p["during_mean"] == pytest.approx(0.3) and p["change_during"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="window_s"):
        marker_stats(obs, markers, "happy", window_s=0)


def test_percentile_ranks_against_a_norm_set():
    from ferpipe.analytics import percentile_rank

    norm = [0.1, 0.2, 0.3, 0.4]
    assert percentile_rank(0.3, norm) == 75.0  # 3 of 4 at or below
    assert percentile_rank(0.05, norm) == 0.0 and percentile_rank(0.9, norm) == 100.0
    assert np.isnan(percentile_rank(0.3, []))


def test_norms_of_stored_clips_with_a_tag(store):
    """Three clips whose happy curves sit at 0.2, 0.5 and 0.8: each one's rank among the others, by tag."""
    from ferpipe.analytics import norms
    from ferpipe.types import Detections, Expressions, Observations, RunProgress

    for k, level in enumerate((0.2, 0.5, 0.8)):
        cid = f"c{k}"
        store.upsert_clip(cid, {"sha256": cid * 32, "path": f"/{cid}.mp4", "title": cid, "duration_s": 4.0},
                          {"panel": "A" if k < 2 else "B"})  # fmt: skip
        run = store.start_run(cid, "m", "mtcnn", {}, 4)
        probs = np.zeros((4, 7))
        probs[:, 3], probs[:, 6] = level, 1 - level
        obs = Observations(range(4), [0.0, 1000.0, 2000.0, 3000.0], Detections(np.tile([0, 0, 9, 9], (4, 1)),
                           np.ones(4), np.zeros((4, 5, 2)), [1] * 4), Expressions(probs, np.zeros(4), np.zeros(4)))  # fmt: skip
        store.commit_batch(run.run_id, obs, RunProgress(4, 3, 3000.0, 1.0))
        store.finish_run(run.run_id, "done")
    lib = norms(store, ["c1"], "happy", "mean")
    assert lib.row(0, named=True) == {"clip_id": "c1", "value": pytest.approx(0.5), "percentile": 50.0, "norm_n": 2}
    tagged = norms(store, ["c2"], "happy", "mean", tag=("panel", "A"))
    assert tagged["percentile"][0] == 100.0 and tagged["norm_n"][0] == 2
    above = norms(store, ["c0"], "happy", "time_above_s", threshold=0.4)
    assert above["value"][0] == 0.0 and above["percentile"][0] == 0.0  # the others spend 4 s above 0.4


def test_synchrony_by_hand():
    """Three people over 6 bins: A and B move together (r = 1), C against them (r = -1 with each): ISC = -1/3."""
    import polars as pl

    from ferpipe.analytics import synchrony

    a = [0.1, 0.5, 0.2, 0.8, 0.3, 0.9]
    c = [1 - v for v in a]
    rows = [
        {"bin": k, "person_id": p, "happy": v} for p, curve in ((1, a), (2, a), (3, c)) for k, v in enumerate(curve)
    ]
    fb = pl.DataFrame(rows)
    got = synchrony(fb, "happy")
    assert got["pairs"] == 3 and got["people"] == 3
    assert abs(got["isc"] - (-1 / 3)) < 1e-9 and abs(got["median"] - (-1)) < 1e-9
    # too few common bins: person 4 is seen in only two bins
    fb2 = pl.concat(
        [fb, pl.DataFrame([{"bin": 0, "person_id": 4, "happy": 0.2}, {"bin": 1, "person_id": 4, "happy": 0.4}])]
    )
    assert synchrony(fb2, "happy")["pairs"] == 3
    assert synchrony(fb.filter(pl.col("person_id") == 1), "happy") == {
        "isc": None,
        "median": None,
        "pairs": 0,
        "people": 0,
    }
    with pytest.raises(ValueError, match="min_common_bins must be >= 3, got 2"):
        synchrony(fb, "happy", min_common_bins=2)
    with pytest.raises(ValueError, match="no signal 'nope'"):
        synchrony(fb, "nope")


@pytest.mark.parametrize("seed", range(5))
def test_synchrony_equals_the_pairwise_definition(seed):
    """All pairs at once (matrix products) give what a loop over pairs with np.corrcoef gives: people seen in
    different bins, a flat curve (left out; a loop testing std() == 0 kept it, since 0.3 repeated has a std of
    about 1e-17, and averaged its meaningless r in), pairs with too few common bins."""
    import polars as pl

    from ferpipe.analytics import synchrony

    rng = np.random.default_rng(seed)
    people, bins = 12, 40
    m = rng.random((bins, people))
    m[rng.random((bins, people)) < 0.4] = np.nan  # unseen
    m[:, 0] = 0.3  # a flat curve
    m[:-3, 1] = np.nan  # seen in 3 bins only
    rows = [{"bin": t, "person_id": p, "happy": float(m[t, p])} for t in range(bins) for p in range(people)
            if np.isfinite(m[t, p])]  # fmt: skip
    rs, used = [], set()
    for a in range(people):
        for b in range(a + 1, people):
            both = np.isfinite(m[:, a]) & np.isfinite(m[:, b])
            if both.sum() < 5 or m[both, a].std() < 1e-9 or m[both, b].std() < 1e-9:  # flat: 0.3 repeated
                continue
            rs.append(np.corrcoef(m[both, a], m[both, b])[0, 1])
            used.update((a, b))
    got = synchrony(pl.DataFrame(rows), "happy")
    assert got["pairs"] == len(rs) and got["people"] == len(used)
    assert got["isc"] == pytest.approx(np.mean(rs), abs=1e-9) and got["median"] == pytest.approx(
        np.median(rs), abs=1e-9
    )
