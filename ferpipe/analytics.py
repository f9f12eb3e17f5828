"""Aggregation and statistics over stored timelines. No Streamlit here; the dashboard and
reports call these functions.

The unit of analysis is the face: within a time bin each face contributes the mean of
its observations, so a face seen in more frames does not weigh more. Confidence
intervals are Student-t intervals over those face means.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from .signals import AU_PROXIES, BLENDSHAPES
from .store import QualityFilter, Store
from .types import EXPRESSIONS

SIGNALS: tuple[str, ...] = (*EXPRESSIONS, "valence", "arousal")
"""The expression signals: the default of every curve and report."""


@dataclass(frozen=True)
class Signal:
    """A curve ferpipe can draw: its label (what it is, derived or not), its range (CI bands are clipped to
    it) and the stored columns it is the mean of."""

    name: str
    label: str
    lo: float | None
    hi: float | None
    columns: tuple[str, ...]


def _signal_table() -> dict[str, Signal]:
    table = {e: Signal(e, f"{e} (probability)", 0.0, 1.0, (e,)) for e in EXPRESSIONS}
    table["valence"] = Signal("valence", "valence (derived from the expressions)", -1.0, 1.0, ("valence",))
    table["arousal"] = Signal("arousal", "arousal (derived from the expressions)", -1.0, 1.0, ("arousal",))
    table["attentive"] = Signal("attentive", "attentive (share of faces)", 0.0, 1.0, ("attentive",))
    table["blink_rate"] = Signal("blink_rate", "blinks per minute", 0.0, None, ())
    table["eye_openness"] = Signal("eye_openness", "eye openness (0 closed, 1 open)", 0.0, 1.0, ("eye_openness",))
    for c, what in (("yaw_deg", "yaw"), ("pitch_deg", "pitch"), ("roll_deg", "roll")):
        table[c] = Signal(c, f"head {what} (degrees)", None, None, (c,))
    for b in BLENDSHAPES:
        table[f"bs_{b}"] = Signal(f"bs_{b}", f"blendshape {b} (not a FACS AU)", 0.0, 1.0, (f"bs_{b}",))
    for label, shapes in AU_PROXIES.items():
        key = "au" + label.split()[0][2:].zfill(2) + "_proxy"
        table[key] = Signal(key, label, 0.0, 1.0, tuple(f"bs_{b}" for b in shapes))
    return table


SIGNAL_INFO: dict[str, Signal] = _signal_table()
ATTENTION_SIGNALS: tuple[str, ...] = ("attentive", "yaw_deg", "pitch_deg", "roll_deg", "eye_openness")
AU_PROXY_SIGNALS: tuple[str, ...] = tuple(k for k in SIGNAL_INFO if k.endswith("_proxy"))
BLENDSHAPE_SIGNALS: tuple[str, ...] = tuple(f"bs_{b}" for b in BLENDSHAPES)


def unit_of(df: pl.DataFrame) -> str:
    """The unit of analysis a frame carries: person_id (tracks linked into people) or face_id (tracks)."""
    return "person_id" if "person_id" in df.columns else "face_id"


def count_of(df: pl.DataFrame) -> str:
    """The name of a count of units: n_people or n_faces (say "people" only where the count means people)."""
    return "n_people" if unit_of(df) == "person_id" else "n_faces"


def _check_signals(signals: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    bad = [s for s in signals if s not in SIGNAL_INFO]
    if bad:
        raise ValueError(f"unknown signal(s) {bad}; choose from {', '.join(SIGNAL_INFO)}")
    return tuple(signals)


def _stored(signals: tuple[str, ...]) -> tuple[str, ...]:
    """The stored columns the signals are means of (each once)."""
    return tuple(dict.fromkeys(c for s in signals for c in SIGNAL_INFO[s].columns))


def _derive(fb: pl.DataFrame, signals: tuple[str, ...]) -> pl.DataFrame:
    """Add the derived signals (AU proxies: the mean of their blendshapes) to per-(bin, face) means."""
    extra = [s for s in signals if s not in fb.columns]
    return fb.with_columns(pl.mean_horizontal(SIGNAL_INFO[s].columns).alias(s) for s in extra) if extra else fb


BIN_CHOICES: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


def default_bin(duration_s: float, max_bins: int = 1500) -> float:
    """The smallest bin width of BIN_CHOICES (1 s at least) that keeps a clip's curve under ``max_bins`` bins: long
    recordings open readable and fast, short ones in 1 s steps."""
    for b in BIN_CHOICES:
        if b >= 1.0 and (duration_s or 0) / b <= max_bins:
            return b
    return BIN_CHOICES[-1]


def t_interval(mean: np.ndarray, sd: np.ndarray, n: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the Student-t CI; NaN where n < 2."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        crit = stats.t.ppf(0.5 + level / 2, np.where(n >= 2, n - 1, np.nan))
        half = crit * np.asarray(sd, dtype=np.float64) / np.sqrt(n)
    return np.asarray(mean) - half, np.asarray(mean) + half


def face_bins_frame(obs: pl.DataFrame, bin_s: float = 1.0, signals: tuple[str, ...] = SIGNALS) -> pl.DataFrame:
    """Per (time bin, face): number of observations and the mean of each signal (Store.face_bins for
    observations already in memory). Non-finite times and values are left out, as in the store."""
    if not bin_s > 0:
        raise ValueError(f"bin_s must be > 0, got {bin_s}")
    signals = _check_signals(signals)
    keys = [k for k in ("clip_id",) if k in obs.columns]
    unit = unit_of(obs)
    ts = pl.col("timestamp_ms").cast(pl.Float64)
    fb = (
        obs.filter(ts.is_finite())
        .with_columns((ts / 1000.0 / bin_s).floor().cast(pl.Int64).alias("bin"))
        .group_by("bin", *keys, unit)
        .agg(
            pl.len().cast(pl.Int64).alias("n_obs"),
            *[
                pl.col(c).cast(pl.Float64).filter(pl.col(c).cast(pl.Float64).is_finite()).mean().alias(c)
                for c in _stored(signals)
            ],
        )
        .sort("bin", *keys, unit)
    )
    return _derive(fb, signals)


def face_bins(store: Store, run_id: int, bin_s: float = 1.0, signals: tuple[str, ...] = SIGNALS,
              quality: QualityFilter | None = None) -> pl.DataFrame:  # fmt: skip
    """Per (time bin, face) means of a stored run (see Store.face_bins), derived signals included; a quality
    filter that keeps everything is no filter."""
    signals = _check_signals(signals)
    fb = store.face_bins(run_id, bin_s, _stored(signals), quality if quality is not None and quality.active else None)
    return _derive(fb, signals)


def aggregate_face_bins(fb: pl.DataFrame, bin_s: float, signals: tuple[str, ...] = SIGNALS,
                        clip_bounds: bool = True) -> pl.DataFrame:  # fmt: skip
    """Per bin: faces in view and, per signal, the mean of face means with a Student-t 95% CI.

    Columns: bin, t_s (bin start), n_people (or n_faces, for tracks), and <signal>_mean / _lo / _hi. Bounds are clipped
    to the signal's range ([0, 1] for probabilities, [-1, 1] for valence and arousal) unless clip_bounds is False
    (baseline-corrected readings, which have no fixed range).
    """
    signals = _check_signals(signals)
    if fb.height == 0:
        cols = {"bin": pl.Int64, "t_s": pl.Float64, count_of(fb): pl.Int64}
        cols.update({f"{s}_{k}": pl.Float64 for s in signals for k in ("mean", "lo", "hi")})
        return pl.DataFrame(schema=cols)
    df = (
        fb.group_by("bin")
        .agg(
            pl.len().alias(count_of(fb)),
            *[pl.col(s).mean().alias(f"{s}_mean") for s in signals],
            *[pl.col(s).std(ddof=1).fill_null(0).alias(f"{s}_sd") for s in signals],
        )
        .sort("bin")
        .with_columns((pl.col("bin") * bin_s).alias("t_s"))
    )
    n = df[count_of(fb)].to_numpy()
    cols = []
    for s in signals:
        mean = df[f"{s}_mean"].to_numpy()
        lo, hi = t_interval(mean, df[f"{s}_sd"].to_numpy(), n)
        info = SIGNAL_INFO[s]
        if clip_bounds and (info.lo is not None or info.hi is not None):
            lo, hi = np.clip(lo, info.lo, info.hi), np.clip(hi, info.lo, info.hi)
        cols += [pl.Series(f"{s}_mean", mean), pl.Series(f"{s}_lo", lo), pl.Series(f"{s}_hi", hi)]
    return df.select("bin", "t_s", count_of(fb)).with_columns(cols)


def aggregate_frame(obs: pl.DataFrame, bin_s: float = 1.0, signals: tuple[str, ...] = SIGNALS) -> pl.DataFrame:
    """Aggregate curves of raw observations (needs face_id, timestamp_ms and the signals)."""
    return aggregate_face_bins(face_bins_frame(obs, bin_s, signals), bin_s, signals)


def aggregate(store: Store, run_id: int, bin_s: float = 1.0, signals: tuple[str, ...] = SIGNALS) -> pl.DataFrame:
    """Aggregate curves of one stored run."""
    return aggregate_face_bins(face_bins(store, run_id, bin_s, signals), bin_s, signals)


def timeline_export(store: Store, clip_id: str, run_id: int) -> pl.DataFrame:
    """Per-face timeline in the export layout (see Store.timeline_export)."""
    return store.timeline_export(clip_id, run_id)


def smooth(agg: pl.DataFrame, window_bins: int, signals: tuple[str, ...] = SIGNALS) -> pl.DataFrame:
    """Centred rolling mean of each signal's mean and CI bounds over ``window_bins`` bins (1 = none)."""
    if window_bins < 1:
        raise ValueError(f"window_bins must be >= 1, got {window_bins}")
    if window_bins == 1 or agg.height == 0:
        return agg
    cols = [c for s in _check_signals(signals) for c in (f"{s}_mean", f"{s}_lo", f"{s}_hi") if c in agg.columns]
    return agg.with_columns(pl.col(c).rolling_mean(window_size=window_bins, center=True, min_samples=1) for c in cols)


def top_expression_share(fb: pl.DataFrame, bin_s: float = 1.0) -> pl.DataFrame:
    """Per bin, the share of faces in view whose top expression (of their bin mean) is each expression.

    fb: face_bins output. Columns: t_s, n_faces and <expression>_share in [0, 1], summing to 1 per bin.
    """
    if bin_s <= 0:
        raise ValueError(f"bin_s must be > 0, got {bin_s}")
    schema = {"t_s": pl.Float64, count_of(fb): pl.Int64, **{f"{e}_share": pl.Float64 for e in EXPRESSIONS}}
    if fb.height == 0:
        return pl.DataFrame(schema=schema)
    top = fb.select("bin").with_columns(pl.Series("top", fb.select(EXPRESSIONS).to_numpy().argmax(axis=1)))
    out = top.group_by("bin").agg(
        pl.len().alias(count_of(fb)),
        *[(pl.col("top") == k).mean().alias(f"{e}_share") for k, e in enumerate(EXPRESSIONS)],
    )
    return out.sort("bin").with_columns((pl.col("bin") * bin_s).alias("t_s")).select(list(schema))


def downsample(obs: pl.DataFrame, max_points: int = 1000) -> pl.DataFrame:
    """Per face, at most ``max_points`` rows: means over equal time slices (for drawing long timelines)."""
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    if obs.height == 0:
        return obs
    span = float(obs["timestamp_ms"].max() - obs["timestamp_ms"].min()) or 1.0
    unit = unit_of(obs)
    per_face = obs.group_by(unit).len()["len"].max()
    if per_face <= max_points:
        return obs
    step = span / max_points
    t0 = float(obs["timestamp_ms"].min())
    cols = [c for c in obs.columns if c not in (unit, "timestamp_ms")]
    return (
        obs.with_columns(((pl.col("timestamp_ms") - t0) / step).floor().alias("_slice"))
        .group_by(unit, "_slice")
        .agg(pl.col("timestamp_ms").mean(), *[pl.col(c).mean() for c in cols])
        .drop("_slice")
        .sort(unit, "timestamp_ms")
    )


def face_means(obs: pl.DataFrame, signals: tuple[str, ...] = SIGNALS) -> pl.DataFrame:
    """One row per face: its number of observations, first/last time and mean of each signal."""
    signals = _check_signals(signals)
    keys = [c for c in ("clip_id", "group") if c in obs.columns]
    return (
        obs.group_by(*keys, unit_of(obs))
        .agg(
            pl.len().alias("n_obs"),
            (pl.col("timestamp_ms").min() / 1000).alias("first_s"),
            (pl.col("timestamp_ms").max() / 1000).alias("last_s"),
            *[pl.col(s).mean() for s in signals],
        )
        .sort(*keys, unit_of(obs))
    )


def dominant_share(fm: pl.DataFrame) -> dict[str, float]:
    """Share of faces whose top expression (of their mean over the clip) is each expression.

    fm: one row per face with the seven expression columns (face_means or face_means_from_bins).
    """
    if fm.height == 0:
        return dict.fromkeys(EXPRESSIONS, 0.0)
    top = fm.select(EXPRESSIONS).to_numpy().argmax(axis=1)
    return {e: float((top == k).mean()) for k, e in enumerate(EXPRESSIONS)}


def _bin_step(t: np.ndarray, bin_s: float | None = None) -> float:
    """The curve's bin width: given, else the smallest gap between its bins (1 when it has a single bin)."""
    if bin_s is not None:
        if not bin_s > 0:
            raise ValueError(f"bin_s must be > 0, got {bin_s}")
        return float(bin_s)
    gaps = np.diff(np.unique(np.asarray(t, dtype=np.float64)))
    return float(gaps.min()) if len(gaps) else 1.0


PEAK_MIN_VALUE = 0.2
"""A peak of an expression curve is a moment only where the curve reaches at least this probability..."""
PEAK_MIN_PROMINENCE = 0.1
"""...and stands at least this far above the lower of the two valleys beside it (scipy's prominence)."""


def peaks(agg: pl.DataFrame, signal: str, k: int = 5, min_gap_s: float = 2.0, bin_s: float | None = None,
          min_value: float = PEAK_MIN_VALUE, min_prominence: float = PEAK_MIN_PROMINENCE) -> pl.DataFrame:  # fmt: skip
    """The k highest local maxima of a signal's mean curve that stand out: at least ``min_value`` high, at least
    ``min_prominence`` above the valleys beside them, and ``min_gap_s`` apart. A curve with a single bin has no
    peaks (a photo is not a time series).

    Columns: t_s, value, prominence, n_people (or n_faces), ordered by value (highest first).
    """
    _check_signals((signal,))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if min_prominence < 0:
        raise ValueError(f"min_prominence must be >= 0, got {min_prominence}")
    n_col = "n_people" if "n_people" in agg.columns else "n_faces"
    schema = {"t_s": pl.Float64, "value": pl.Float64, "prominence": pl.Float64, n_col: pl.Int64}
    if agg.height < 2:
        return pl.DataFrame(schema=schema)
    from scipy.signal import find_peaks

    y = agg[f"{signal}_mean"].to_numpy().astype(np.float64)
    y = np.where(np.isfinite(y), y, -1.0)
    t = agg["t_s"].to_numpy()
    step = _bin_step(t, bin_s)
    padded = np.concatenate([[-np.inf], y, [-np.inf]])  # let the first and last bins be peaks
    idx, _ = find_peaks(padded, distance=max(1, round(min_gap_s / step)), height=min_value)
    idx = idx - 1
    prom = np.array([_prominence(y, i) for i in idx], dtype=np.float64)
    keep = prom >= min_prominence
    idx, prom = idx[keep], prom[keep]
    order = np.argsort(-y[idx], kind="stable")[:k]
    idx, prom = idx[order], prom[order]
    return pl.DataFrame(
        {"t_s": t[idx].astype(np.float64), "value": y[idx], "prominence": prom,
         n_col: agg[n_col].to_numpy()[idx].astype(np.int64)},
        schema=schema,
    )  # fmt: skip


def _prominence(y: np.ndarray, i: int) -> float:
    """How far y[i] stands above the higher of the lowest points on each side before the curve rises above it
    (scipy's prominence; a side with no data, at the clip's start or end, does not count)."""
    bases = []
    for side in (y[:i][::-1], y[i + 1 :]):
        if not len(side):
            continue
        higher = np.flatnonzero(side > y[i])
        stretch = side[: higher[0]] if len(higher) else side
        bases.append(float(stretch.min()) if len(stretch) else float(y[i]))
    return float(y[i] - max(bases)) if bases else 0.0


def peak_table(agg: pl.DataFrame, signals: list[str] | tuple[str, ...], k: int = 3,
               bin_s: float | None = None) -> pl.DataFrame:  # fmt: skip
    """peaks() of several signals in one table: expression, t_s, value, n_people (or n_faces)."""
    n_col = "n_people" if "n_people" in agg.columns else "n_faces"
    return pl.concat(
        [peaks(agg, e, k=k, bin_s=bin_s).with_columns(pl.lit(e).alias("expression")) for e in signals]
    ).select("expression", "t_s", "value", "prominence", n_col)


def summary(agg: pl.DataFrame, obs: pl.DataFrame, signal: str, threshold: float = 0.5, bin_s: float | None = None,
            duration_s: float | None = None) -> dict:  # fmt: skip
    """Mean over bins, peak value and time, seconds above threshold, and the number of units (people, or
    faces for unlinked tracks) under "n".

    Time above the threshold counts each bin whose mean is above it as one bin width, and never
    exceeds ``duration_s`` (the clip's length, where the last bin runs past its end).
    """
    _check_signals((signal,))
    if agg.height == 0:
        return {"mean": float("nan"), "peak": float("nan"), "peak_t_s": float("nan"), "time_above_s": 0.0,
                "n": 0}  # fmt: skip
    y = agg[f"{signal}_mean"].to_numpy().astype(np.float64)
    t = agg["t_s"].to_numpy()
    step = _bin_step(t, bin_s)
    if not np.isfinite(y).any():
        return {"mean": float("nan"), "peak": float("nan"), "peak_t_s": float("nan"), "time_above_s": 0.0,
                "n": 0}  # fmt: skip
    i = int(np.nanargmax(np.where(np.isfinite(y), y, -np.inf)))
    keys = [c for c in ("clip_id",) if c in obs.columns]
    n_faces = obs.select(*keys, unit_of(obs)).unique().height if obs.height else 0
    return {"mean": float(np.nanmean(np.where(np.isfinite(y), y, np.nan))), "peak": float(y[i]), "peak_t_s": float(t[i]),
            "time_above_s": _capped((np.nan_to_num(y, nan=-np.inf) > threshold).sum() * step, duration_s),
            "n": int(n_faces)}  # fmt: skip


def _capped(seconds: float, duration_s: float | None) -> float:
    return float(min(seconds, duration_s) if duration_s and duration_s > 0 else seconds)


def compare_groups(a: np.ndarray, b: np.ndarray, method: str = "welch", n_resamples: int = 9999, seed: int = 0) -> dict:
    """Face-level comparison of two groups: p-value, Hedges' g, and the n behind it.

    method: "welch" (Welch's unequal-variance t-test) or "permutation" (two-sided,
    difference of means). NaN p-value when a group has fewer than 2 faces.
    """
    if method not in ("welch", "permutation"):
        raise ValueError(f"method must be 'welch' or 'permutation', got {method!r}")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    out = {"n_a": len(a), "n_b": len(b), "mean_a": float(np.mean(a)) if len(a) else float("nan"),
           "mean_b": float(np.mean(b)) if len(b) else float("nan"), "p_value": float("nan"),
           "hedges_g": float("nan"), "method": method}  # fmt: skip
    if len(a) < 2 or len(b) < 2:
        return out
    if method == "welch":
        out["p_value"] = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    else:
        res = stats.permutation_test(
            (a, b), lambda x, y: np.mean(x) - np.mean(y), n_resamples=n_resamples,
            alternative="two-sided", random_state=seed,
        )  # fmt: skip
        out["p_value"] = float(res.pvalue)
    na, nb = len(a), len(b)
    pooled = np.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    d = (a.mean() - b.mean()) / pooled if pooled > 0 else 0.0
    out["hedges_g"] = float(d * (1 - 3 / (4 * (na + nb) - 9)))
    return out


def compare_table(faces_a: pl.DataFrame, faces_b: pl.DataFrame, method: str = "welch",
                  signals: tuple[str, ...] = SIGNALS) -> pl.DataFrame:  # fmt: skip
    """compare_groups for every signal over two face_means frames."""
    rows = []

    def values(faces: pl.DataFrame, s: str) -> np.ndarray:  # a clip without faces has no column: no people
        return faces[s].drop_nulls().to_numpy() if s in faces.columns else np.array([])

    for s in _check_signals(signals):
        r = compare_groups(values(faces_a, s), values(faces_b, s), method)
        rows.append({"signal": s, **r})
    return pl.DataFrame(rows)


def normalise_time(obs: pl.DataFrame, durations: dict[str, float]) -> pl.DataFrame:
    """Observations on a 0-100% clock: timestamp_ms becomes percent of the clip x 1000.

    Binning the result with bin_s=1 then gives 1% bins, so clips of different lengths line up.
    """
    bad = {k: v for k, v in durations.items() if not v or v <= 0}
    if bad:
        raise ValueError(f"clip durations must be > 0, got {bad}")
    dur = pl.col("clip_id").replace_strict(durations, return_dtype=pl.Float64)
    return obs.with_columns((pl.col("timestamp_ms") / 1000.0 / dur * 100 * 1000).alias("timestamp_ms"))


def face_means_from_bins(fb: pl.DataFrame, signals: tuple[str, ...] = EXPRESSIONS) -> pl.DataFrame:
    """One row per face: observation-weighted mean of its bin means (equals its overall mean)."""
    signals = _check_signals(signals)
    keys = [c for c in ("clip_id",) if c in fb.columns]
    w = pl.col("n_obs")
    return fb.group_by(*keys, unit_of(fb)).agg(
        w.sum().alias("n_obs"), *[((pl.col(s) * w).sum() / w.sum()).alias(s) for s in signals]
    )


def person_table(fb: pl.DataFrame, people: pl.DataFrame, signals: tuple[str, ...] = SIGNALS) -> pl.DataFrame:
    """One row per person of a run: person_id, name (Store.people) and the person's mean of each signal over the
    clip (from its face bins): the rows behind "Mean over people", for the reports' and the photo view's tables."""
    fm = face_means_from_bins(fb, signals).rename({"face_id": "person_id"}, strict=False)
    if "person_id" not in fm.columns:
        return pl.DataFrame()
    return people.select("person_id", "person").join(fm, on="person_id", how="inner").sort("person_id")


def clip_observations(store: Store, clip_ids: list[str], signals: tuple[str, ...] = SIGNALS,
                      model: str | None = None) -> pl.DataFrame:  # fmt: skip
    """Observations of the shown run of each clip, with a clip_id column."""
    signals = _check_signals(signals)
    parts = []
    for cid in clip_ids:
        run_id = store.best_run(cid, model)
        if run_id is not None:
            obs = store.observations(run_id, _stored(signals)).select(pl.lit(cid).alias("clip_id"), pl.all())
            parts.append(_derive(obs, signals))
    if not parts:
        return pl.DataFrame(schema={"clip_id": pl.String, "person_id": pl.Int64, "timestamp_ms": pl.Float64,
                                    **dict.fromkeys(signals, pl.Float32)})  # fmt: skip
    return pl.concat(parts)


def blink_bins(store: Store, run_id: int, bin_s: float = 10.0) -> pl.DataFrame:
    """Per (time bin, person seen with a face mesh in it): blinks per minute of the time they were seen (face_bins
    layout, signal "blink_rate"), for aggregate_face_bins. Blinks last 100-400 ms, so rates need an analysis rate
    of 10 frames/s or more; at 5 frames/s many are missed."""
    bb = store.blink_bins(run_id, bin_s)
    return bb.with_columns(
        (pl.col("blinks") * 60.0 / pl.col("seconds")).alias("blink_rate"), pl.col("seconds").alias("n_obs")
    )


def blink_summary(store: Store, run_id: int) -> dict:
    """Blinks, person-minutes seen with a face mesh, and blinks per minute over a whole run."""
    seconds, blinks = store.blink_totals(run_id)
    minutes = seconds / 60.0
    return {"blinks": blinks, "face_minutes": minutes, "rate_per_min": blinks / minutes if minutes else float("nan")}


# ---- event markers, norms, people ------------------------------------------------------------


def marker_windows(start_s: float, end_s: float | None, window_s: float) -> dict[str, tuple[float, float]]:
    """The windows a marker's statistics compare: ``before`` (the baseline, window_s long), ``during`` (the
    interval; for a point, the window_s after it) and ``after`` (window_s after the interval)."""
    if not window_s > 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    end = end_s if end_s is not None and end_s > start_s else start_s + window_s
    return {"before": (start_s - window_s, start_s), "during": (start_s, end), "after": (end, end + window_s)}


def marker_stats(obs: pl.DataFrame, markers: pl.DataFrame, signal: str, window_s: float = 5.0) -> pl.DataFrame:
    """Per marker: the mean of ``signal`` before, during and after it (each person's mean in the window, averaged
    over the people seen in it, with their number), and the change during and after against before.

    obs: observations with person_id (or face_id), timestamp_ms and the signal; markers: name, start_s, end_s.
    """
    _check_signals((signal,))
    unit = unit_of(obs)
    rows = []
    for m in markers.iter_rows(named=True):
        row: dict = {"marker": m["name"], "start_s": m["start_s"], "end_s": m["end_s"]}
        for window, (a, b) in marker_windows(m["start_s"], m["end_s"], window_s).items():
            part = obs.filter((pl.col("timestamp_ms") >= a * 1000) & (pl.col("timestamp_ms") < b * 1000))
            means = part.group_by(unit).agg(pl.col(signal).cast(pl.Float64).mean())[signal].drop_nulls()
            row[f"{window}_mean"] = float(means.mean()) if means.len() else float("nan")
            row[f"{window}_n"] = int(means.len())
        row["change_during"] = row["during_mean"] - row["before_mean"]
        row["change_after"] = row["after_mean"] - row["before_mean"]
        rows.append(row)
    schema = {"marker": pl.String, "start_s": pl.Float64, "end_s": pl.Float64,
              **{f"{w}_{k}": (pl.Float64 if k == "mean" else pl.Int64) for w in ("before", "during", "after")
                 for k in ("mean", "n")}, "change_during": pl.Float64, "change_after": pl.Float64}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


NORM_METRICS = ("mean", "peak", "time_above_s")


def clip_metrics(store: Store, clip_ids: list[str], signal: str, threshold: float = 0.5) -> pl.DataFrame:
    """Per clip (its shown run): the mean of a signal's curve, its peak and the seconds above the threshold (1 s
    bins, people as the unit), for norms."""
    _check_signals((signal,))
    rows = []
    for cid in clip_ids:
        run_id = store.best_run(cid)
        if run_id is None:
            continue
        fb = face_bins(store, run_id, 1.0, (signal,))
        agg = aggregate_face_bins(fb, 1.0, (signal,))
        if agg.is_empty():
            continue
        duration = store.clip(cid)["duration_s"]
        s = summary(agg, fb.rename({"bin": "timestamp_ms"}), signal, threshold, bin_s=1.0, duration_s=duration)
        rows.append({"clip_id": cid, "mean": s["mean"], "peak": s["peak"], "time_above_s": s["time_above_s"]})
    return pl.DataFrame(rows, schema={"clip_id": pl.String, **dict.fromkeys(NORM_METRICS, pl.Float64)})


def percentile_rank(value: float, norm: list[float] | np.ndarray) -> float:
    """The share (0-100) of the norm set at or below ``value``; NaN with an empty norm set."""
    norm = np.asarray([v for v in norm if np.isfinite(v)], dtype=np.float64)
    if not len(norm) or not np.isfinite(value):
        return float("nan")
    return float(stats.percentileofscore(norm, value, kind="weak"))


def norm_library(store: Store, tag: tuple[str, str] | None = None) -> list[str]:
    """The clips a norm set holds: every processed video of the library, or those tagged ``tag`` = (key, value).
    Photos have no curve over time, so they are never in the norm set of a video metric; runs imported from other
    tools are not either (a norm compares readings of ferpipe's models only)."""
    from .frames import is_image

    done = store.clips().filter(pl.col("status").is_in(["done", "truncated"]) & (pl.col("detector") != "imported"))
    library = [c for c, path in zip(done["clip_id"], done["path"], strict=True) if not is_image(path)]
    if tag is not None:
        tags = store.tags()
        keep = set(tags.filter((pl.col("key") == tag[0]) & (pl.col("value") == tag[1]))["clip_id"].to_list())
        library = [c for c in library if c in keep]
    return library


def norms(store: Store, clip_ids: list[str], signal: str, metric: str = "mean", tag: tuple[str, str] | None = None,
          threshold: float = 0.5) -> pl.DataFrame:  # fmt: skip
    """Each clip's percentile rank on a metric against a norm set: every other processed video of the library, or
    those tagged ``tag`` = (key, value); photos are never in it. Columns: clip_id, value, percentile, norm_n (the
    norm set's size)."""
    if metric not in NORM_METRICS:
        raise ValueError(f"metric must be one of {NORM_METRICS}, got {metric!r}")
    library = norm_library(store, tag)
    metrics = clip_metrics(store, sorted(set(library) | set(clip_ids)), signal, threshold)
    values = dict(zip(metrics["clip_id"].to_list(), metrics[metric].to_list(), strict=False))
    rows = []
    for cid in clip_ids:
        others = [values[c] for c in library if c != cid and c in values]
        v = values.get(cid, float("nan"))
        rows.append({"clip_id": cid, "value": v, "percentile": percentile_rank(v, others), "norm_n": len(others)})
    return pl.DataFrame(rows, schema={"clip_id": pl.String, "value": pl.Float64, "percentile": pl.Float64,
                                      "norm_n": pl.Int64})  # fmt: skip


def person_means(store: Store, clip_ids: list[str], signals: tuple[str, ...] = SIGNALS) -> pl.DataFrame:
    """One row per person (clip_id, person_id, person name, observations, mean of each signal) over the shown run
    of each clip, with the person's respondent attributes as columns (null where not set)."""
    signals = _check_signals(signals)
    parts = []
    for cid in clip_ids:
        run_id = store.best_run(cid)
        if run_id is None:
            continue
        fm = face_means(store.observations(run_id, _stored(signals)).pipe(_derive, signals), signals)
        people = store.people(run_id).select("person_id", "person")
        unit = unit_of(fm)
        fm = fm.rename({unit: "person_id"}) if unit != "person_id" else fm
        parts.append(fm.join(people, on="person_id", how="left").with_columns(pl.lit(cid).alias("clip_id")))
    if not parts:
        return pl.DataFrame(schema={"clip_id": pl.String, "person_id": pl.Int64, "person": pl.String})
    out = pl.concat(parts, how="diagonal_relaxed")
    attrs = store.attributes(clip_ids)
    if attrs.height:
        wide = attrs.pivot(on="key", index=["clip_id", "person"], values="value")
        out = out.join(wide, on=["clip_id", "person"], how="left")
    return out


def live_latency_s(t0_wall: float, last_timestamp_ms: float, now: float | None = None) -> float:
    """How far a live run's newest committed frame is behind the stream: now minus the wall-clock time at which
    that frame was captured (the stream's time 0 on the wall clock plus the frame's stream time)."""
    if not math.isfinite(t0_wall) or not math.isfinite(last_timestamp_ms):
        raise ValueError(f"live_latency_s needs finite times, got {t0_wall!r}, {last_timestamp_ms!r}")
    return max(0.0, (time.time() if now is None else now) - (t0_wall + last_timestamp_ms / 1000.0))


def synchrony(fb: pl.DataFrame, signal: str, min_common_bins: int = 5) -> dict:
    """Inter-subject correlation (ISC) of one signal: the mean Pearson correlation of every pair of people's binned
    curves over the bins where both were seen (at least ``min_common_bins``; pairs with a flat curve are left out).
    Returns {"isc": mean r or None, "pairs": pairs used, "people": people in them, "median": median r}. Derived: it
    says how alike the displayed expressions moved, not that people felt alike."""
    if min_common_bins < 3:
        raise ValueError(f"min_common_bins must be >= 3, got {min_common_bins}")
    if signal not in fb.columns:
        raise ValueError(f"no signal {signal!r} in these bins")
    unit = unit_of(fb)
    wide = (
        fb.filter(pl.col(signal).is_finite())
        .pivot(on=unit, index="bin", values=signal, aggregate_function="mean")
        .sort("bin")
        .drop("bin")
    )
    matrix = wide.to_numpy().astype(np.float64)  # bins x people, NaN where a person was not seen
    # Pearson r of every pair over the bins both were seen in, all pairs at once: sums over the common bins come
    # from matrix products of the values (0 where unseen) and the seen-masks.
    seen = np.isfinite(matrix).astype(np.float64)
    x = np.where(seen > 0, matrix, 0.0)
    n = seen.T @ seen  # common bins of (a, b)
    sx = x.T @ seen  # sum of a's values over the bins b was seen in
    sxx = (x * x).T @ seen
    sxy = x.T @ x
    with np.errstate(divide="ignore", invalid="ignore"):
        var_a = sxx - sx * sx / n
        var_b = var_a.T
        cov = sxy - sx * sx.T / n
        r = cov / np.sqrt(var_a * var_b)
    scale = np.maximum(sxx, sxx.T) + 1.0
    flat = (var_a <= 1e-12 * scale) | (var_b <= 1e-12 * scale)  # a constant curve over the common bins
    a_idx, b_idx = np.triu_indices(matrix.shape[1], k=1)
    ok = (n[a_idx, b_idx] >= min_common_bins) & ~flat[a_idx, b_idx]
    rs = np.clip(r[a_idx[ok], b_idx[ok]], -1.0, 1.0)
    people = set(a_idx[ok].tolist()) | set(b_idx[ok].tolist())
    if not len(rs):
        return {"isc": None, "median": None, "pairs": 0, "people": 0}
    return {"isc": float(np.mean(rs)), "median": float(np.median(rs)), "pairs": len(rs), "people": len(people)}


def expression_summary(fb: pl.DataFrame, bin_s: float, threshold: float = 0.5, duration_s: float | None = None,
                       signals: tuple[str, ...] = SIGNALS) -> pl.DataFrame:  # fmt: skip
    """The per-signal figures every page, report and command shows for one clip, from its face bins (face_bins):
    one row per signal with the named metrics of ferpipe.present (mean over people, mean over time, share of
    people showing it, peak and when, time above the threshold) and the number of people behind them.

    Computed once here, so the Clip view, Compare, the reports and the CLI give one figure under one name.
    """
    signals = _check_signals(signals)
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    schema = {"signal": pl.String, "mean_over_people": pl.Float64, "mean_over_time": pl.Float64,
              "share_showing": pl.Float64, "peak": pl.Float64, "peak_at": pl.Float64, "time_above": pl.Float64,
              "people": pl.Int64}  # fmt: skip
    if fb.is_empty():
        return pl.DataFrame(schema=schema)
    fm = face_means_from_bins(fb, signals)
    agg = aggregate_face_bins(fb, bin_s, signals)
    share = dominant_share(fm) if set(EXPRESSIONS) <= set(signals) else {}
    single = agg.height < 2  # a photo: no time axis, so no peak, no time above
    rows = []
    for sig in signals:
        y = agg[f"{sig}_mean"].to_numpy().astype(np.float64)
        finite = np.isfinite(y)
        i = int(np.nanargmax(np.where(finite, y, -np.inf))) if finite.any() else None
        above = (np.nan_to_num(y, nan=-np.inf) > threshold).sum() * bin_s
        person = fm[sig].cast(pl.Float64).fill_nan(None).drop_nulls()
        rows.append({"signal": sig, "mean_over_people": float(person.mean()) if person.len() else float("nan"),
                     "mean_over_time": float(np.nanmean(y)) if finite.any() else float("nan"),
                     "share_showing": share.get(sig, float("nan")),
                     "peak": float("nan") if single or i is None else float(y[i]),
                     # a time for the peak only where there is one: a curve that never reaches PEAK_MIN_VALUE has none
                     "peak_at": float("nan") if single or i is None or (sig in EXPRESSIONS and y[i] < PEAK_MIN_VALUE)
                     else float(agg["t_s"][i]),
                     "time_above": float("nan") if single else _capped(float(above), duration_s),
                     "people": fm.height})  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


def other_curves(long: pl.DataFrame, bin_s: float) -> pl.DataFrame:
    """Another tool's signals (Store.tool_signal_bins: bin, person_id, name, value) as curves: per bin, the mean
    over people of each signal with a Student-t 95% CI, in aggregate_face_bins' layout (t_s, n_people,
    <name>_mean/_lo/_hi). Their scales are the tool's own, so nothing is clipped."""
    if not bin_s > 0:
        raise ValueError(f"bin_s must be > 0, got {bin_s}")
    if long.is_empty():
        return pl.DataFrame(schema={"bin": pl.Int64, "t_s": pl.Float64, "n_people": pl.Int64})
    names = long["name"].unique(maintain_order=True).sort().to_list()
    per = (long.filter(pl.col("value").is_not_null() & pl.col("value").is_finite())
           .group_by("bin", "name").agg(pl.col("value").mean().alias("mean"),
                                        pl.col("value").std(ddof=1).fill_null(0).alias("sd"),
                                        pl.len().alias("n")).sort("bin"))  # fmt: skip
    lo, hi = t_interval(per["mean"].to_numpy(), per["sd"].to_numpy(), per["n"].to_numpy())
    per = per.with_columns(pl.Series("lo", lo), pl.Series("hi", hi))
    wide = per.pivot(on="name", index="bin", values=["mean", "lo", "hi"], aggregate_function="first")
    wide = wide.rename(
        {f"{k}_{n}": f"{n}_{k}" for n in names for k in ("mean", "lo", "hi") if f"{k}_{n}" in wide.columns}
    )
    counts = long.group_by("bin").agg(pl.col("person_id").n_unique().cast(pl.Int64).alias("n_people"))
    out = wide.join(counts, on="bin", how="left").sort("bin").with_columns((pl.col("bin") * bin_s).alias("t_s"))
    cols = [f"{n}_{k}" for n in names for k in ("mean", "lo", "hi")]
    return out.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in cols if c not in out.columns).select(
        "bin", "t_s", "n_people", *cols
    )


def stream_curves(bins: pl.DataFrame, bin_s: float) -> pl.DataFrame:
    """Recorded streams (Store.clip_signal_bins: bin, name, value, lo, hi) wide: t_s and, per stream, <name>_mean
    with its range over the bin as _lo/_hi (one recording: no interval over people)."""
    if not bin_s > 0:
        raise ValueError(f"bin_s must be > 0, got {bin_s}")
    if bins.is_empty():
        return pl.DataFrame(schema={"bin": pl.Int64, "t_s": pl.Float64})
    names = bins["name"].unique().sort().to_list()
    wide = bins.rename({"value": "mean"}).pivot(on="name", index="bin", values=["mean", "lo", "hi"],
                                                aggregate_function="first")  # fmt: skip
    wide = wide.rename(
        {f"{k}_{n}": f"{n}_{k}" for n in names for k in ("mean", "lo", "hi") if f"{k}_{n}" in wide.columns}
    )
    return (
        wide.sort("bin")
        .with_columns((pl.col("bin") * bin_s).alias("t_s"))
        .select("bin", "t_s", *[f"{n}_{k}" for n in names for k in ("mean", "lo", "hi")])
    )
