"""Ad-research metrics, indices and the engagement composite, by hand."""

import numpy as np
import polars as pl
import pytest
from scipy import stats
from test_baseline import P1, P2, approx, store_timeline

from ferpipe import present as pr
from ferpipe.baseline import parse_baseline
from ferpipe.scores import (
    METRIC_KEYS,
    ScoreSettings,
    clip_scores,
    index_score,
    norm_scores,
    person_metrics,
    summarise,
    wilson,
)


def _fb(curves: dict[int, tuple[int, list[float]]]) -> pl.DataFrame:
    rows = [{"bin": start + k, "person_id": p, "n_obs": 1, "happy": v}
            for p, (start, curve) in curves.items() for k, v in enumerate(curve)]  # fmt: skip
    return pl.DataFrame(rows)


def test_every_metric_by_hand():
    """Person 1: 0.1 .. 0.2 over 0-9 s; person 2: from 5 s. Threshold 0.5, hook 3 s, 10 s clip (end: 9-10 s)."""
    fb = _fb({1: (0, P1), 2: (5, P2)})
    att = pl.DataFrame({"bin": [0, 9, 5, 9], "person_id": [1, 1, 2, 2], "attentive": [0.8, 0.4, 0.5, 0.5]})
    pm = person_metrics(fb, ScoreSettings(hook_s=3.0), 10.0, 0.5, att)
    one, two = (pm.filter(pl.col("person_id") == p).row(0, named=True) for p in (1, 2))
    assert one == approx({"person_id": 1, "peak": 0.9, "peak_at": 4.0, "end_level": 0.2, "hook": 0.3,
                          "first_reaction_s": 3.0, "reacted": 1.0, "reaction_s": 3.0, "auc": 3.9, "retention": 0.5})  # fmt: skip
    assert two["peak"] == approx(0.7) and two["peak_at"] == 7.0  # the first of two equal peaks
    assert two["hook"] is None  # not in view in the first 3 s
    assert two["end_level"] == approx(0.6) and two["first_reaction_s"] == 5.0 and two["reaction_s"] == 5.0
    assert two["auc"] == approx(3.0) and two["retention"] is None  # no attentive reading in the first 10%
    summ = summarise(pm, {"peak": (0.0, 1.0)})
    peak = summ.filter(pl.col("metric") == "peak").row(0, named=True)
    half = stats.t.ppf(0.975, 1) * np.std([0.9, 0.7], ddof=1) / np.sqrt(2)
    assert peak["value"] == approx(0.8) and peak["n"] == 2
    assert peak["lo"] == max(0.0, 0.8 - half) == 0.0 and peak["hi"] == 1.0  # clipped to the probability range
    auc = summ.filter(pl.col("metric") == "auc").row(0, named=True)
    assert auc["lo"] == approx(3.45 - stats.t.ppf(0.975, 1) * np.std([3.9, 3.0], ddof=1) / np.sqrt(2))  # not clipped
    hook = summ.filter(pl.col("metric") == "hook").row(0, named=True)
    assert hook["n"] == 1 and np.isnan(hook["lo"])  # one person: no interval
    reacted = summ.filter(pl.col("metric") == "reacted").row(0, named=True)
    assert reacted["value"] == 1.0 and (reacted["lo"], reacted["hi"]) == approx(wilson(2, 2))
    assert summ["metric"].to_list() == list(METRIC_KEYS)


def test_a_marked_end_and_a_threshold_nobody_reaches():
    fb = _fb({1: (0, P1)})
    pm = person_metrics(fb, ScoreSettings(), 10.0, 0.95, marked_end=(3.0, 5.0))
    row = pm.row(0, named=True)
    assert row["end_level"] == approx(0.75)  # bins 3 and 4 (middles 3.5, 4.5)
    assert row["reacted"] == 0.0 and row["first_reaction_s"] is None and row["reaction_s"] == 0.0


def test_wilson_interval_known_value():
    lo, hi = wilson(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # Wilson (1927), 95%
    assert all(np.isnan(wilson(0, 0)))


def test_index_against_a_norm_set_of_known_values():
    norm = [0.2, 0.5, 0.8]
    assert index_score(0.5, norm) == 67  # 2 of 3 at or below
    assert index_score(0.9, norm) == 100 and index_score(0.1, norm) == 1  # never 0
    assert index_score(2.0, [1.0, 2.0, 3.0], lower_is_better=True) == 67  # 2 and 3 at or above
    assert np.isnan(index_score(0.5, [])) and np.isnan(index_score(float("nan"), norm))


def test_stored_clip_scores_with_a_baseline(store):
    store_timeline(store, "c1", {1: (0, P1), 2: (5, P2)})
    raw = clip_scores(store, "c1", ScoreSettings(hook_s=3.0))
    assert raw.threshold == 0.5 and raw.value("peak") == approx(0.8)
    assert raw.people.height == 2 and raw.baseline is None
    sub = clip_scores(store, "c1", ScoreSettings(hook_s=3.0), parse_baseline("0-3"))
    assert sub.threshold == 0.2 and sub.baseline_left_out == 1
    assert sub.value("peak") == approx(0.7)  # 0.9 - 0.2, person 2 left out
    above = clip_scores(store, "c1", ScoreSettings(threshold=0.25), parse_baseline("0-3"))
    assert above.value("reaction_s") == 3.0  # 0.4, 0.7 and 0.3 over the baseline are at or above 0.25
    shown = pr.score_table(sub.summary, "subtract")
    assert shown.filter(pl.col("Metric") == "Peak")["Value"][0] == "+70 pts"
    assert (
        pr.score_table(above.summary, "subtract").filter(pl.col("Metric") == "Reaction duration")["Value"][0] == "3.0 s"
    )
    with pytest.raises(ValueError, match="unknown signal"):
        ScoreSettings(signal="joy")
    with pytest.raises(ValueError, match="end_share"):
        ScoreSettings(end_share=1.0)


def test_norm_index_and_the_composite_needs_ten_clips(store):
    """Clips whose happy level is 0.05, 0.10, ... : the index of each is its rank; engagement appears from 10."""
    for k in range(11):
        level = 0.05 * (k + 1)
        store_timeline(
            store, f"n{k}", {1: (0, [level] * 10), 2: (0, [level] * 10)}, tags={"set": "a" if k < 4 else "b"}
        )
    few = norm_scores(store, "n2", tag=("set", "a"))
    assert sorted(few.norm_clips) == ["n0", "n1", "n3"] and few.engagement is None
    peak = few.table.filter(pl.col("metric") == "peak").row(0, named=True)
    assert peak["index"] == 67 and peak["norm_n"] == 3  # n0, n1 at or below
    assert few.table.filter(pl.col("metric") == "peak_at")["index"].is_null().all() or np.isnan(
        few.table.filter(pl.col("metric") == "peak_at")["index"][0]
    )
    full = norm_scores(store, "n10")
    assert len(full.norm_clips) == 10 and full.engagement is not None
    # expressiveness (1 - neutral = happy) is the highest of all: index 100; attention is unknown here (no mesh)
    assert full.engagement_parts["expressiveness"] == 100


def test_demo_grid_with_a_baseline_marker_over_its_first_3_s(demo_library, tmp_path):
    """Real media: the audience grid with a 'baseline' marker over 0-3 s. Subtracted, every person's corrected
    readings average 0 over that window, for every expression, in the timeline and per-second exports; the
    summary, the scores and the export say which baseline was used and how many people were left out."""
    import json
    import shutil

    from conftest import run_cli

    from ferpipe.types import EXPRESSIONS

    db = tmp_path / "demo.duckdb"
    shutil.copy(demo_library[0], db)
    grid = demo_library[1]["Audience grid (10 people)"]
    assert run_cli("markers", "add", "--db", str(db), "--clip", grid, "--name", "baseline", "--at", "0",
                   "--to", "3").returncode == 0  # fmt: skip
    paths = {w: tmp_path / f"{w}.csv" for w in ("timeline", "aggregate")}
    for what, path in paths.items():
        r = run_cli("export", "--db", str(db), "--clip", grid, "--what", what, "--baseline", "marker",
                    "--bin-s", "1", "--out", str(path))  # fmt: skip
        assert r.returncode == 0, r.stderr
    timeline = pl.read_csv(paths["timeline"])
    assert timeline["baseline"].unique().to_list()[0].startswith("baseline: the marker 'baseline', subtracted")
    window = timeline.filter(pl.col("timestamp_s") < 3)
    people = window["person_id"].n_unique()
    assert people >= 5
    means = window.group_by("person_id").agg(pl.col(e).mean() for e in EXPRESSIONS)
    for e in EXPRESSIONS:
        assert means[e].abs().max() < 1e-6, e
    r = run_cli("export", "--db", str(db), "--clip", grid, "--what", "timeline", "--out", str(tmp_path / "raw.csv"))
    assert r.returncode == 0 and "baseline" not in pl.read_csv(tmp_path / "raw.csv").columns
    assert pl.read_csv(tmp_path / "raw.csv")["happy"].min() >= 0  # stored readings are untouched
    agg = pl.read_csv(paths["aggregate"])
    assert agg["baseline"].str.contains("left out|subtracted").all()
    r = run_cli("scores", "--db", str(db), "--clip", grid, "--baseline", "marker", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["baseline"].startswith("baseline: the marker 'baseline'") and got["threshold"] == 0.2
    assert {m["metric"] for m in got["metrics"]} == set(METRIC_KEYS)
    assert got["engagement"] is None  # the demo library has under 10 videos
    r = run_cli("scores", "--db", str(db), "--clip", grid, "--baseline", "marker:intro")
    assert r.returncode != 0 and "no event marker named 'intro'" in r.stderr


def test_reaction_duration_never_exceeds_the_clip():
    """20 one-second bins above the threshold in a 19.7 s clip: 19.7 s, not 20."""
    fb = _fb({1: (0, [0.9] * 20)})
    pm = person_metrics(fb, ScoreSettings(), 19.7, 0.5)
    assert pm["reaction_s"][0] == pytest.approx(19.7)
