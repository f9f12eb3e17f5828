"""Per-person baseline correction, computed on read: each person's resting face taken out of their readings
before aggregation, so that one person's neutral face reading 0.3 "sad" does not weigh as a sad reaction.

Raw values stay stored. The baseline of each person and signal is the mean (and, for z-scores, the standard
deviation) of their per-second means inside the baseline stretch, read from the store in SQL; the correction is
one Polars join on the per-(bin, person) means every curve, table and score is built from.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import polars as pl

from .analytics import _check_signals, _derive, _stored, unit_of
from .store import QualityFilter, Store
from .types import EXPRESSIONS, Baseline

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

SPREAD_FLOOR = 0.01
"""The smallest standard deviation a z-score divides by (one point of probability), so that a signal that hardly
moves in the baseline does not turn noise into huge scores."""

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*s?\s*$")
_FIRST = re.compile(r"^\s*first\s*[: ]?\s*(\d+(?:\.\d+)?)\s*s?\s*$", re.I)


def parse_baseline(text: str | None, correction: str = "subtract", min_seconds: float = 1.0) -> Baseline | None:
    """A baseline from the words users type: "0-5" (seconds of stimulus time), "marker" or "marker:NAME" (an event
    marker, 'baseline' by default), "first:3" (each person's first 3 s), "median", or "none"/"" for no baseline."""
    if text is None or not str(text).strip() or str(text).strip().lower() in ("none", "off", "no"):
        return None
    t = str(text).strip()
    if m := _INTERVAL.match(t):
        return Baseline("interval", correction, start_s=float(m[1]), end_s=float(m[2]), min_seconds=min_seconds)
    if m := _FIRST.match(t):
        return Baseline("first", correction, first_s=float(m[1]), min_seconds=min_seconds)
    if t.lower() == "median":
        return Baseline("median", correction, min_seconds=min_seconds)
    if t.lower() == "marker" or t.lower().startswith("marker:"):
        name = t.split(":", 1)[1].strip() if ":" in t else "baseline"
        return Baseline("marker", correction, marker=name, min_seconds=min_seconds)
    raise ValueError(
        f"unknown baseline {text!r}: give START-END seconds (e.g. 0-5), first:N, median, marker or marker:NAME"
    )


@dataclass(frozen=True)
class BaselineResult:
    """What a correction did: who it kept, who it left out for too little baseline, and the words that go with
    every figure it made."""

    baseline: Baseline
    kept: int
    left_out: int
    window: tuple[float, float] | None  # the stretch of clip time used (interval and marker kinds)

    def describe(self) -> str:
        text = self.baseline.describe()
        if self.left_out:
            who = "person" if self.left_out == 1 else "people"
            text += f"; {self.left_out} {who} left out (under {self.baseline.min_seconds:g} s of baseline)"
        return text


def baseline_window(store: Store, clip_id: str, baseline: Baseline) -> tuple[float, float] | None:
    """The baseline's stretch in clip time, for the interval and marker kinds (None for the others).

    An interval is given in stimulus time (clip time minus the clip's stimulus offset); a marker sits on the clip's
    own timeline and must be an interval."""
    if baseline.kind == "interval":
        offset = float(store.clip(clip_id).get("stimulus_offset_s") or 0.0)
        return baseline.start_s + offset, baseline.end_s + offset
    if baseline.kind == "marker":
        marks = store.markers(clip_id).filter(pl.col("name").str.to_lowercase() == baseline.marker.strip().lower())
        if marks.is_empty():
            raise ValueError(f"clip {clip_id} has no event marker named {baseline.marker!r} to use as the baseline")
        m = marks.row(0, named=True)
        if m["end_s"] is None:
            raise ValueError(f"the baseline marker {baseline.marker!r} is a point; it needs an end (an interval)")
        return float(m["start_s"]), float(m["end_s"])
    return None


def baseline_stats(store: Store, run_id: int, clip_id: str, baseline: Baseline, signals: tuple[str, ...],
                   quality: QualityFilter | None = None) -> tuple[pl.DataFrame, tuple[float, float] | None]:  # fmt: skip
    """Per person: seconds of baseline, and each signal's baseline mean (``<s>__base``) and spread
    (``<s>__spread``, floored at SPREAD_FLOOR), from their per-second means in the baseline stretch."""
    signals = _check_signals(signals)
    window = baseline_window(store, clip_id, baseline)
    q = quality if quality is not None and quality.active else None
    first = baseline.first_s if baseline.kind == "first" else None
    sec = _derive(store.face_bins(run_id, 1.0, _stored(signals), q, window=window, first_s=first), signals)
    unit = unit_of(sec)
    w = pl.col("n_obs").cast(pl.Float64)
    if baseline.kind == "median":
        centre = [pl.col(s).median().alias(f"{s}__base") for s in signals]
    else:  # each second weighs by its readings: the mean of the person's readings in the stretch
        centre = [
            ((pl.col(s) * w).sum() / w.filter(pl.col(s).is_not_null()).sum()).alias(f"{s}__base") for s in signals
        ]
    stats = sec.group_by(unit).agg(
        pl.len().cast(pl.Float64).alias("baseline_s"),
        *centre,
        *[pl.col(s).std(ddof=1).fill_null(0.0).clip(lower_bound=SPREAD_FLOOR).alias(f"{s}__spread") for s in signals],
    )
    return stats, window


def corrections(signals: tuple[str, ...], correction: str, columns: dict[str, str] | None = None) -> list[pl.Expr]:
    """The corrected value of each signal, from its ``<s>__base`` and ``<s>__spread`` columns (joined per person):
    value minus the baseline mean, or that over the baseline spread. ``columns``: the signal's column name, where it
    differs (exports write bs__neutral as bs_neutral)."""
    col = columns or {}

    def one(s: str) -> pl.Expr:
        diff = pl.col(col.get(s, s)) - pl.col(f"{s}__base")
        return (diff if correction == "subtract" else diff / pl.col(f"{s}__spread")).alias(col.get(s, s))

    return [one(s) for s in signals]


def apply_baseline(fb: pl.DataFrame, stats: pl.DataFrame, baseline: Baseline,
                   signals: tuple[str, ...]) -> tuple[pl.DataFrame, int, int]:  # fmt: skip
    """Per-(bin, person) means with each person's baseline taken out; people with under min_seconds of baseline
    are left out. Returns (corrected, people kept, people left out)."""
    unit = unit_of(fb)
    signals = tuple(s for s in _check_signals(signals) if s in fb.columns)
    ok = stats.filter(pl.col("baseline_s") >= baseline.min_seconds).select(
        unit, *[f"{s}__base" for s in signals], *[f"{s}__spread" for s in signals]
    )
    everyone = fb[unit].n_unique()
    out = fb.join(ok, on=unit, how="inner").with_columns(corrections(signals, baseline.correction)).select(fb.columns)
    kept = out[unit].n_unique()
    return out, kept, everyone - kept


NOT_CORRECTED: tuple[str, ...] = ("attentive", "yaw_deg", "pitch_deg", "roll_deg", "eye_openness", "blink_rate")
"""Signals a baseline leaves raw: attention, head pose and eye openness describe where a face is turned, not what
it displays."""


def corrected_face_bins(store: Store, run_id: int, clip_id: str, fb: pl.DataFrame, baseline: Baseline | None,
                        quality: QualityFilter | None = None) -> tuple[pl.DataFrame, BaselineResult | None]:  # fmt: skip
    """The per-(bin, person) means ``fb`` of a run with the baseline taken out of every signal they carry
    (expressions, valence/arousal, blendshapes and AU proxies; attention and head pose stay raw), and what was
    done; ``fb`` unchanged and None without a baseline."""
    if baseline is None:
        return fb, None
    keys = ("bin", "clip_id", "person_id", "face_id", "n_obs", *NOT_CORRECTED)
    signals = tuple(c for c in fb.columns if c not in keys)
    stats, window = baseline_stats(store, run_id, clip_id, baseline, signals, quality)
    out, kept, left = apply_baseline(fb, stats, baseline, signals)
    log.info("%s: %d people kept, %d left out", baseline.describe(), kept, left)
    return out, BaselineResult(baseline, kept, left, window)


CORRECTED_SIGNALS: tuple[str, ...] = (*EXPRESSIONS, "valence", "arousal")
"""The signals a per-observation export corrects, with the blendshapes (see correct_timeline)."""


def correct_timeline(store: Store, run_id: int, clip_id: str, timeline: pl.DataFrame,
                     baseline: Baseline | None) -> tuple[pl.DataFrame, BaselineResult | None]:  # fmt: skip
    """A per-observation timeline (Store.timeline_export) with each person's baseline taken out of the
    expressions, valence, arousal and blendshapes (head pose, attention and scores stay raw), people without
    enough baseline dropped, and a ``baseline`` column saying what was done."""
    if baseline is None:
        return timeline, None
    from .analytics import BLENDSHAPE_SIGNALS

    exported = {s: ("bs_neutral" if s == "bs__neutral" else s) for s in (*CORRECTED_SIGNALS, *BLENDSHAPE_SIGNALS)}
    signals = tuple(s for s, col in exported.items() if col in timeline.columns)
    stats, window = baseline_stats(store, run_id, clip_id, baseline, signals)
    unit = unit_of(stats) if stats.height else "person_id"
    ok = stats.filter(pl.col("baseline_s") >= baseline.min_seconds).rename({unit: "person_id"})
    everyone = timeline["person_id"].n_unique()
    out = timeline.join(ok, on="person_id", how="inner")
    fixed = corrections(signals, baseline.correction, exported)
    kept = out["person_id"].n_unique()
    result = BaselineResult(baseline, kept, everyone - kept, window)
    out = out.with_columns(fixed).select(timeline.columns).with_columns(pl.lit(result.describe()).alias("baseline"))
    return out, result


def correct_observations(store: Store, obs: pl.DataFrame, baseline: Baseline | None,
                         signals: tuple[str, ...]) -> tuple[pl.DataFrame, int, int]:  # fmt: skip
    """Observations of several clips (analytics.clip_observations: clip_id, a unit column, the signals) with each
    person's baseline (from their clip's shown run) taken out; people without enough baseline are dropped, and
    so is a clip the baseline cannot apply to (no such marker). Returns (observations, people kept, left out)."""
    if baseline is None or obs.is_empty():
        return obs, (obs.select("clip_id", unit_of(obs)).n_unique() if obs.height else 0), 0
    unit = unit_of(obs)
    signals = tuple(s for s in _check_signals(signals) if s in obs.columns and s not in NOT_CORRECTED)
    parts = []
    for cid in obs["clip_id"].unique().sort().to_list():
        run_id = store.best_run(cid)
        if run_id is None:
            continue
        try:
            stats, _ = baseline_stats(store, run_id, cid, baseline, signals)
        except ValueError:
            continue
        if stats.height:
            stats = stats.rename({unit_of(stats): unit}) if unit_of(stats) != unit else stats
            parts.append(
                stats.filter(pl.col("baseline_s") >= baseline.min_seconds).with_columns(pl.lit(cid).alias("clip_id"))
            )
    everyone = obs.select("clip_id", unit).n_unique()
    if not parts:
        return obs.head(0), 0, everyone
    stats = pl.concat(parts, how="diagonal_relaxed")
    out = obs.join(stats, on=["clip_id", unit], how="inner")
    out = out.with_columns(corrections(signals, baseline.correction)).select(obs.columns)
    kept = out.select("clip_id", unit).n_unique() if out.height else 0
    return out, kept, everyone - kept
