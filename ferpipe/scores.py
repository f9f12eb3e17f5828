"""Ad-research metrics and scores: peak, end level, hook, first reaction, share reacted, reaction duration, area
under the curve and attention retention, per person, per clip and per segment; indices 1-100 against a norm set; a
derived engagement composite.

Every metric is first computed per person on that person's curve (their per-bin means, after any baseline
correction); a clip's or a segment's value is the mean over its people with a Student-t 95% interval (a Wilson
interval for the share of people who reacted), so people are the unit, as in Compare's tests. The metrics' names
and definitions live in ferpipe.present; this module computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from . import analytics as an
from . import present as pr
from .baseline import BaselineResult, corrected_face_bins
from .present import ENGAGEMENT_MIN_NORMS
from .store import QualityFilter, Store
from .types import Baseline

METRIC_KEYS: tuple[str, ...] = ("peak", "peak_at", "end_level", "hook", "first_reaction_s", "reacted", "reaction_s",
                                "auc", "retention")  # fmt: skip
"""The named metrics, in the order every table shows them."""

COMPOSITE_MIN_NORMS = ENGAGEMENT_MIN_NORMS
"""The engagement composite is never shown against a norm set of fewer clips."""

DEFAULT_THRESHOLDS = {None: 0.5, "subtract": 0.2, "z": 2.0}
"""The reaction threshold when none is given: a probability of 0.5 on raw readings, 20 points above the person's
baseline when it is subtracted, 2 standard deviations above it for z-scores."""


@dataclass(frozen=True)
class ScoreSettings:
    """How the metrics are taken: the signal, the reaction threshold (None: DEFAULT_THRESHOLDS for the
    correction), the hook's first seconds, the end's share of the clip (or a marked end) and the bin width."""

    signal: str = "happy"
    threshold: float | None = None
    hook_s: float = 5.0
    end_share: float = 0.1
    bin_s: float = 1.0

    def __post_init__(self) -> None:
        if self.signal not in an.SIGNAL_INFO:
            raise ValueError(f"unknown signal {self.signal!r}; choose from {', '.join(an.SIGNALS)}")
        if self.threshold is not None and not np.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number, got {self.threshold!r}")
        if not (np.isfinite(self.hook_s) and self.hook_s > 0):
            raise ValueError(f"hook_s must be > 0, got {self.hook_s!r}")
        if not 0 < self.end_share < 1:
            raise ValueError(f"end_share must be in (0, 1), got {self.end_share!r}")
        if not self.bin_s > 0:
            raise ValueError(f"bin_s must be > 0, got {self.bin_s!r}")

    def threshold_for(self, baseline: Baseline | None) -> float:
        if self.threshold is not None:
            return float(self.threshold)
        return DEFAULT_THRESHOLDS[baseline.correction if baseline is not None else None]


def end_window(
    duration_s: float, end_share: float, marked_end: tuple[float, float] | None = None
) -> tuple[float, float]:
    """The stretch the end level is taken over: a marked end, else the clip's last ``end_share``."""
    if marked_end is not None:
        return marked_end
    return (1 - end_share) * duration_s, duration_s


def person_metrics(fb: pl.DataFrame, settings: ScoreSettings, duration_s: float, threshold: float,
                   attentive: pl.DataFrame | None = None,
                   marked_end: tuple[float, float] | None = None) -> pl.DataFrame:  # fmt: skip
    """One row per person (per clip_id and person where fb has clip_id) with every named metric of their curve.

    fb: per-(bin, person) means of the signal; attentive: the same for the raw ``attentive`` signal (for the
    retention), or None. A bin counts for a window when its middle is inside it."""
    sig, b = settings.signal, settings.bin_s
    unit = an.unit_of(fb)
    keys = [k for k in ("clip_id",) if k in fb.columns] + [unit]
    if not duration_s or duration_s <= 0:
        duration_s = float((fb["bin"].max() or 0) + 1) * b if fb.height else b
    e0, e1 = end_window(duration_s, settings.end_share, marked_end)
    mid = (pl.col("bin").cast(pl.Float64) + 0.5) * b
    t = pl.col("bin").cast(pl.Float64) * b
    v = pl.col(sig)
    above = v >= threshold
    df = fb.select(*keys, "bin", sig).drop_nulls(sig).with_columns(mid.alias("mid"), t.alias("t"))
    out = df.group_by(keys).agg(
        v.max().alias("peak"),
        pl.col("t").get(v.arg_max()).alias("peak_at"),
        v.filter((pl.col("mid") >= e0) & (pl.col("mid") <= e1)).mean().alias("end_level"),
        v.filter(pl.col("mid") < settings.hook_s).max().alias("hook"),
        pl.col("t").filter(above).min().alias("first_reaction_s"),
        above.any().cast(pl.Float64).alias("reacted"),
        (above.sum().cast(pl.Float64) * b).clip(upper_bound=duration_s).alias("reaction_s"),  # never past the end
        (v.sum() * b).alias("auc"),
    )
    if attentive is not None and attentive.height:
        a = attentive.select(*keys, "bin", "attentive").drop_nulls("attentive").with_columns(mid.alias("mid"))
        start = settings.end_share * duration_s
        ret = (
            a.group_by(keys)
            .agg(
                pl.col("attentive").filter(pl.col("mid") <= start).mean().alias("_start"),
                pl.col("attentive").filter((pl.col("mid") >= e0) & (pl.col("mid") <= e1)).mean().alias("_end"),
            )
            .select(*keys, pl.when(pl.col("_start") > 0).then(pl.col("_end") / pl.col("_start")).alias("retention"))
        )
        out = out.join(ret, on=keys, how="left")
    else:
        out = out.with_columns(pl.lit(None, pl.Float64).alias("retention"))
    return out.sort(keys)


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a share k/n (NaN without people)."""
    if n <= 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def metric_bounds(signal: str, corrected: bool, duration_s: float) -> dict[str, tuple[float | None, float | None]]:
    """The range each metric can take, to which its interval is clipped: times within the clip, shares in 0-1,
    and raw readings within the signal's range (corrected readings have no fixed range)."""
    info = an.SIGNAL_INFO[signal]
    level = (None, None) if corrected else (info.lo, info.hi)
    span = (0.0, duration_s if duration_s and duration_s > 0 else None)
    area = (None, None) if corrected or info.lo is None else (info.lo * (span[1] or 0), None)
    return {"peak": level, "end_level": level, "hook": level, "peak_at": span, "first_reaction_s": span,
            "reacted": (0.0, 1.0), "reaction_s": span, "auc": area, "retention": (0.0, None)}  # fmt: skip


def summarise(pm: pl.DataFrame, bounds: dict[str, tuple[float | None, float | None]] | None = None) -> pl.DataFrame:
    """Per metric over the people of pm: the mean, its 95% interval (clipped to ``bounds``) and n (the people with
    a value).

    The share who reacted gets a Wilson interval; time to first reaction is averaged over the people who
    reacted."""
    bounds = bounds or {}
    rows = []
    for key in METRIC_KEYS:
        x = pm[key].drop_nulls().drop_nans().to_numpy() if key in pm.columns else np.array([])
        n = len(x)
        mean = float(x.mean()) if n else float("nan")
        if key == "reacted":
            lo, hi = wilson(int(x.sum()), n)
        else:
            ci = an.t_interval(np.array([mean]), np.array([x.std(ddof=1) if n > 1 else 0.0]), np.array([n]))
            lo, hi = float(ci[0][0]), float(ci[1][0])
        lo_b, hi_b = bounds.get(key, (None, None))
        if np.isfinite(lo) and (lo_b is not None or hi_b is not None):
            lo, hi = (float(v) for v in np.clip([lo, hi], lo_b, hi_b))
        rows.append({"metric": key, "value": mean, "lo": lo, "hi": hi, "n": n})
    return pl.DataFrame(rows, schema={"metric": pl.String, "value": pl.Float64, "lo": pl.Float64, "hi": pl.Float64,
                                      "n": pl.Int64})  # fmt: skip


@dataclass(frozen=True)
class ClipScores:
    """A clip's (or segment's) metrics: per person, the summary over people, what the baseline did, and the
    threshold used."""

    clip_ids: tuple[str, ...]
    settings: ScoreSettings
    threshold: float
    people: pl.DataFrame  # one row per person: clip_id, person_id and every metric
    summary: pl.DataFrame  # metric, value, lo, hi, n
    baseline: BaselineResult | None
    baseline_left_out: int = 0

    def value(self, metric: str) -> float:
        row = self.summary.filter(pl.col("metric") == metric)
        return float(row["value"][0]) if row.height else float("nan")


def _clip_person_metrics(store: Store, clip_id: str, settings: ScoreSettings, baseline: Baseline | None,
                         quality: QualityFilter | None) -> tuple[pl.DataFrame, BaselineResult | None] | None:  # fmt: skip
    run_id = store.best_run(clip_id)
    if run_id is None:
        return None
    fb = an.face_bins(store, run_id, settings.bin_s, (settings.signal,), quality=quality)
    fb, result = corrected_face_bins(store, run_id, clip_id, fb, baseline, quality)
    attentive = an.face_bins(store, run_id, settings.bin_s, ("attentive",))  # retention reads raw attention
    clip = store.clip(clip_id)
    marks = store.markers(clip_id).filter((pl.col("name").str.to_lowercase() == "end") & pl.col("end_s").is_not_null())
    marked_end = (float(marks["start_s"][0]), float(marks["end_s"][0])) if marks.height else None
    pm = person_metrics(fb, settings, float(clip["duration_s"] or 0.0), settings.threshold_for(baseline), attentive,
                        marked_end)  # fmt: skip
    unit = an.unit_of(pm)
    pm = pm.rename({unit: "person_id"}) if unit != "person_id" else pm
    return pm.with_columns(pl.lit(clip_id).alias("clip_id")), result


def clip_scores(store: Store, clip_ids: str | list[str], settings: ScoreSettings | None = None,
                baseline: Baseline | None = None, quality: QualityFilter | None = None) -> ClipScores:  # fmt: skip
    """The named metrics of one clip, or of a segment (several clips: their people together)."""
    settings = settings or ScoreSettings()
    ids = [clip_ids] if isinstance(clip_ids, str) else list(clip_ids)
    parts, results = [], []
    for cid in ids:
        got = _clip_person_metrics(store, cid, settings, baseline, quality)
        if got is not None:
            parts.append(got[0])
            results.append(got[1])
    people = (pl.concat(parts, how="diagonal_relaxed") if parts
              else pl.DataFrame(schema={"clip_id": pl.String, "person_id": pl.Int64, **dict.fromkeys(METRIC_KEYS, pl.Float64)}))  # fmt: skip
    people = people.select("clip_id", "person_id", *METRIC_KEYS)
    first = next((r for r in results if r is not None), None)
    left = sum(r.left_out for r in results if r is not None)
    longest = max((float(store.clip(c)["duration_s"] or 0.0) for c in ids), default=0.0)
    bounds = metric_bounds(settings.signal, baseline is not None, longest)
    return ClipScores(tuple(ids), settings, settings.threshold_for(baseline), people, summarise(people, bounds), first,
                      left)  # fmt: skip


LOWER_IS_BETTER = ("first_reaction_s",)
"""Metrics indexed the other way round: an earlier first reaction scores higher."""
NOT_INDEXED = ("peak_at",)
"""Metrics with no better or worse: a peak's time is shown, never indexed."""


def index_score(value: float, norm: list[float] | np.ndarray, lower_is_better: bool = False) -> float:
    """A value indexed 1-100 against a norm set: its percentile among the set's values (the share at or below it;
    at or above it where lower is better), at least 1; NaN with an empty set or a missing value."""
    if lower_is_better:
        value, norm = -value, [-x for x in norm]
    p = an.percentile_rank(value, norm)
    return float("nan") if not np.isfinite(p) else float(min(100, max(1, round(p))))


@dataclass(frozen=True)
class NormScores:
    """A clip's metrics indexed against a norm set: per metric its value, index 1-100 and the set's size; the
    derived engagement composite (None where the set is under COMPOSITE_MIN_NORMS clips); the set's clips."""

    table: pl.DataFrame  # metric, value, index, norm_n
    norm_clips: tuple[str, ...]
    norm_name: str
    engagement: float | None
    engagement_parts: dict[str, float]
    norm_titles: tuple[str, ...] = ()  # the set's clips by title, in the order of norm_clips
    unusable: int = 0  # clips of the set the baseline cannot apply to (no such marker), left out


def _level(store: Store, clip_id: str, signal: str) -> float:
    """The mean over people of a signal (each person's mean over the clip, averaged over people)."""
    run_id = store.best_run(clip_id)
    if run_id is None:
        return float("nan")
    fm = an.face_means_from_bins(an.face_bins(store, run_id, 1.0, (signal,)), (signal,))
    return float(fm[signal].mean()) if fm.height else float("nan")


def norm_scores(store: Store, clip_id: str, settings: ScoreSettings | None = None, baseline: Baseline | None = None,
                tag: tuple[str, str] | None = None) -> NormScores:  # fmt: skip
    """Index every metric of a clip 1-100 against the norm set (the library's other processed videos, or those
    tagged ``tag``), with the same settings and baseline for every clip of the set."""
    settings = settings or ScoreSettings()
    norm_ids = sorted(c for c in an.norm_library(store, tag) if c != clip_id)
    mine = clip_scores(store, clip_id, settings, baseline)
    others, unusable = [], 0
    for c in norm_ids:
        try:
            others.append(clip_scores(store, c, settings, baseline))
        except ValueError:  # a clip the baseline cannot apply to (no such marker): not in the set
            unusable += 1
    kept = tuple(o.clip_ids[0] for o in others if o.people.height)
    others = [o for o in others if o.people.height]
    rows = []
    for key in METRIC_KEYS:
        v = mine.value(key)
        norm = [o.value(key) for o in others]
        index = float("nan") if key in NOT_INDEXED else index_score(v, norm, key in LOWER_IS_BETTER)
        rows.append({"metric": key, "value": v, "index": index,
                     "norm_n": None if key in NOT_INDEXED else int(sum(np.isfinite(x) for x in norm))})  # fmt: skip
    engagement, parts = None, {}
    if len(kept) >= COMPOSITE_MIN_NORMS:
        att = index_score(_level(store, clip_id, "attentive"), [_level(store, c, "attentive") for c in kept])
        expr = index_score(1 - _level(store, clip_id, "neutral"), [1 - _level(store, c, "neutral") for c in kept])
        parts = {"attention": att, "expressiveness": expr}
        engagement = float(round((att + expr) / 2)) if np.isfinite(att) and np.isfinite(expr) else None
    name = "the whole library" if tag is None else f"{tag[0]}={tag[1]}"
    table = pl.DataFrame(rows, schema={"metric": pl.String, "value": pl.Float64, "index": pl.Float64,
                                       "norm_n": pl.Int64})  # fmt: skip
    clips = store.clips()
    titles = dict(zip(clips["clip_id"], clips["title"], strict=True))
    return NormScores(table, kept, name, engagement, parts, tuple(pr.plain_text(str(titles.get(c) or c)) for c in kept),
                      unusable)  # fmt: skip


def norm_words(ns: NormScores) -> str:
    """The norm set in words: its name, its size, and the clips the baseline could not apply to."""
    text = f"{ns.norm_name}, {len(ns.norm_clips)} other videos"
    if ns.unusable:
        text += f" ({ns.unusable} left out: no baseline marker of that name)"
    return text
