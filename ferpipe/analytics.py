"""Aggregation and statistics over stored timelines. No Streamlit here; the dashboard and
reports call these functions.

The unit of analysis is the face: within a time bin each face contributes the mean of
its observations, so a face seen in more frames does not weigh more. Confidence
intervals are Student-t intervals over those face means.
"""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
from scipy import stats

from .store import Store
from .types import EXPRESSIONS

SIGNALS: tuple[str, ...] = (*EXPRESSIONS, "valence", "arousal")


def _check_signals(signals: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    bad = [s for s in signals if s not in SIGNALS]
    if bad:
        raise ValueError(f"unknown signal(s) {bad}; choose from {SIGNALS}")
    return tuple(signals)


def t_interval(mean: np.ndarray, sd: np.ndarray, n: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the Student-t CI; NaN where n < 2."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        crit = stats.t.ppf(0.5 + level / 2, np.where(n >= 2, n - 1, np.nan))
        half = crit * np.asarray(sd, dtype=np.float64) / np.sqrt(n)
    return np.asarray(mean) - half, np.asarray(mean) + half


def aggregate_frame(obs: pl.DataFrame, bin_s: float = 1.0, signals: tuple[str, ...] = SIGNALS) -> pl.DataFrame:
    """Per time bin: faces in view and, per signal, the mean over face means with a 95% CI.

    obs needs face_id, timestamp_ms and the signal columns. Columns out: bin, t_s (bin
    start), n_faces, and <signal>_mean / _lo / _hi for each signal.
    """
    if bin_s <= 0:
        raise ValueError(f"bin_s must be > 0, got {bin_s}")
    signals = _check_signals(signals)
    if obs.height == 0:
        cols = {"bin": pl.Int64, "t_s": pl.Float64, "n_faces": pl.Int64}
        cols.update({f"{s}_{k}": pl.Float64 for s in signals for k in ("mean", "lo", "hi")})
        return pl.DataFrame(schema=cols)
    con = duckdb.connect()
    con.register("obs", obs.select("face_id", "timestamp_ms", *signals).to_arrow())
    per_face = ", ".join(f"avg({s}) AS {s}" for s in signals)
    per_bin = ", ".join(f"avg({s}) AS {s}_mean, coalesce(stddev_samp({s}), 0) AS {s}_sd" for s in signals)
    df = con.sql(
        f"""
        WITH f AS (
            SELECT floor(timestamp_ms / 1000.0 / {float(bin_s)})::BIGINT AS bin, face_id, {per_face}
            FROM obs GROUP BY ALL
        )
        SELECT bin, bin * {float(bin_s)} AS t_s, count(*) AS n_faces, {per_bin}
        FROM f GROUP BY bin ORDER BY bin
        """
    ).pl()
    con.close()
    n = df["n_faces"].to_numpy()
    out = df.select("bin", "t_s", "n_faces")
    cols = []
    for s in signals:
        mean = df[f"{s}_mean"].to_numpy()
        lo, hi = t_interval(mean, df[f"{s}_sd"].to_numpy(), n)
        cols += [pl.Series(f"{s}_mean", mean), pl.Series(f"{s}_lo", lo), pl.Series(f"{s}_hi", hi)]
    return out.with_columns(cols)


def aggregate(store: Store, run_id: int, bin_s: float = 1.0, signals: tuple[str, ...] = SIGNALS) -> pl.DataFrame:
    """aggregate_frame over one run, computed inside DuckDB's file."""
    signals = _check_signals(signals)
    obs = store.query(
        f"SELECT face_id, timestamp_ms, {', '.join(signals)} FROM observations WHERE run_id = ?", [run_id]
    )
    return aggregate_frame(obs, bin_s, signals)


def timeline_export(store: Store, clip_id: str, run_id: int) -> pl.DataFrame:
    """Per-face timeline in the export layout: seconds, box, score, 7 probabilities, valence, arousal."""
    return store.query(
        f"""
        SELECT ? AS clip_id, face_id, timestamp_ms / 1000.0 AS timestamp_s, frame_index,
               x, y, w, h, det_score, {', '.join(EXPRESSIONS)}, valence, arousal
        FROM observations WHERE run_id = ? ORDER BY timestamp_ms, face_id
        """,
        [clip_id, run_id],
    )
