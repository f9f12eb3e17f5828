"""One voice for every number users see: named metric definitions, one glossary from column names to words, and
one table formatter, shared by the dashboard, the HTML and PDF reports and the CLI.

A page, a report or a command never names or rounds a number itself: it asks this module. So one clip shows the
same figure under the same name on every screen. Nothing here imports streamlit.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from .types import EXPRESSIONS

MISSING = "—"


@dataclass(frozen=True)
class Metric:
    """A number users see: its name, a one-line definition, its unit and how it is rounded.

    kind: "share" (a probability or share in [0, 1], shown as a percentage), "points" (a difference of shares, in
    percentage points), "seconds", "count", "rate" (per minute), "effect" (a standardised effect size), "p"
    (a p-value), "r" (a correlation), "degrees", "score" (a value on its own scale), "index" (1-100).
    """

    key: str
    name: str
    definition: str
    kind: str
    digits: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    def format(self, value: object) -> str:
        return format_value(value, self.kind, self.digits)


KINDS = (
    "share",
    "points",
    "seconds",
    "count",
    "rate",
    "effect",
    "p",
    "r",
    "degrees",
    "score",
    "index",
    "z",
    "change",
    "text",
)


def _missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return not math.isfinite(float(value))
    return False


def format_value(value: object, kind: str, digits: int = 0) -> str:
    """One number as users read it; missing values (None, NaN, inf) as "—"."""
    if _missing(value):
        return MISSING
    if isinstance(value, dt.datetime | dt.date):
        return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, dt.datetime) else value.isoformat()
    if kind == "text" or isinstance(value, str):
        return plain_text(str(value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    v = float(value)
    if kind == "share":
        return f"{abs(v) * 100 if round(v * 100, digits) == 0 else v * 100:.{digits}f}%"
    if kind == "points":
        text = f"{v * 100:+.{digits}f}"
        return ("0" if float(text) == 0 else text) + " pts"
    if kind == "seconds":
        return f"{v:.{max(digits, 1)}f} s"
    if kind == "count":
        return f"{round(v):,}"
    if kind == "rate":
        return f"{v:.1f}/min"
    if kind == "effect":
        return f"{v:.2f}"
    if kind == "p":
        return "< 0.001" if v < 0.001 else f"{v:.3f}"
    if kind == "r":
        return f"{v:.2f}"
    if kind == "degrees":
        return f"{v:.{digits}f}°"
    if kind == "index":
        return f"{round(v)}"
    if kind == "z":
        return f"{v:+.2f} SD"
    if kind == "change":  # a derived score's change from a baseline: signed
        text = f"{v:+.2f}"
        return "0.00" if float(text) == 0 else text
    return f"{v:.{max(digits, 2)}f}" if abs(v) < 1000 else f"{v:,.0f}"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def plain_text(text: str) -> str:
    """User text (titles, names, markers) with control characters removed: safe to print anywhere as text."""
    return _CONTROL.sub("", text)


# ---- the named metrics -------------------------------------------------------------------------------------------
MEAN_OVER_PEOPLE = Metric(
    "mean_over_people", "Mean over people",
    "Each person's average probability over the clip, averaged over people: every person counts once, however "
    "long they were in view.", "share",
)  # fmt: skip
MEAN_OVER_TIME = Metric(
    "mean_over_time", "Mean over time",
    "The curve's average over its time bins: in each bin the mean over the people in view, then the mean of the "
    "bins.", "share",
)  # fmt: skip
SHARE_SHOWING = Metric(
    "share_showing", "Share of people showing it",
    "The share of people whose strongest expression over the clip (of their average probabilities) is this one.",
    "share",
)  # fmt: skip
PEAK = Metric("peak", "Peak", "The highest point of the curve (mean over the people in view in one bin).", "share")
PEAK_AT = Metric("peak_at", "Peak at", "When the curve reaches its peak (video time).", "seconds")
TIME_ABOVE = Metric(
    "time_above", "Time above threshold",
    "How long the curve stays above the threshold, counted in whole bins and never longer than the clip.", "seconds",
)  # fmt: skip
PEOPLE = Metric("people", "People", "People seen in the clip (face tracks linked into persons).", "count")
TRACKS = Metric("tracks", "Face tracks", "Unbroken runs of one face in view; one person can have several.", "count")
READINGS = Metric("readings", "Readings", "Analysed faces in frames: one reading per face per analysed frame.", "count")
ATTENTIVE = Metric(
    "attentive", "Attentive",
    "The share of readings with the face turned to the camera within the attention cone and the eyes open (a model "
    "reading of head pose, not gaze).", "share",
)  # fmt: skip
BLINK_RATE = Metric("blink_rate", "Blinks per minute", "Blinks per minute of face time with a face mesh.", "rate")
HEDGES_G = Metric("hedges_g", "Hedges' g", "Standardised difference of the two groups' person means.", "effect")
P_VALUE = Metric("p_value", "p-value", "Two-sided test on the person means (people are the unit).", "p")
PERCENTILE = Metric(
    "percentile", "Percentile", "The share of the norm set's other clips at or below this clip.", "index"
)  # fmt: skip
CONFIDENCE = Metric(
    "confidence", "Reading confidence",
    "A derived score per reading in 0–1: the model's certainty times face size, sharpness, head pose and face "
    "presence.", "score",
)  # fmt: skip
VALENCE = Metric("valence", "Valence (derived)", "Derived from the seven probabilities (circumplex).", "score")
AROUSAL = Metric("arousal", "Arousal (derived)", "Derived from the seven probabilities (circumplex).", "score")

# the ad-research metrics (ferpipe.scores): each is taken per person, then averaged over people with a 95% interval
SCORE_PEAK = Metric("score_peak", "Peak", "Each person's highest bin of the curve, averaged over people.", "share")
SCORE_PEAK_AT = Metric(
    "score_peak_at", "Peak time", "When each person's curve is highest (video time), averaged over people.", "seconds"
)  # fmt: skip
END_LEVEL = Metric(
    "end_level", "End level",
    "Each person's mean over the clip's last 10% (or over the marker named 'end'), averaged over people.", "share",
)  # fmt: skip
HOOK = Metric("hook", "Hook", "Each person's highest bin in the clip's first seconds, averaged over people.", "share")
FIRST_REACTION = Metric(
    "first_reaction_s", "Time to first reaction",
    "When each person's curve first reaches the threshold, averaged over the people who reacted.", "seconds",
)  # fmt: skip
REACTED = Metric("reacted", "Reacted", "The share of people whose curve reached the threshold at least once.", "share")
REACTION_DURATION = Metric(
    "reaction_s", "Reaction duration",
    "How long each person's curve stays at or above the threshold, averaged over people.", "seconds",
)  # fmt: skip
AUC = Metric(
    "auc", "Area under the curve",
    "The sum of each person's bin values times the bin width (probability × seconds), averaged over people.", "score",
)  # fmt: skip
RETENTION = Metric(
    "retention", "Attention retention",
    "Each person's share of attentive readings in the clip's last 10% over that in its first 10%, averaged over "
    "people (100%: as attentive at the end as at the start).", "share",
)  # fmt: skip
INDEX = Metric(
    "index", "Index (1–100)",
    "The clip's percentile in the norm set: the share of the set's clips at or below its value (at or above, for the "
    "time to first reaction, so an earlier reaction scores higher).", "index",
)  # fmt: skip
ENGAGEMENT = Metric(
    "engagement", "Engagement (derived)",
    "The mean of two indices against the norm set: attention (the mean over people of the share of readings "
    "attentive) and expressiveness (the mean over people of 1 − neutral). Derived, not measured; shown only "
    "against a norm set of 10 clips or more.", "index",
)  # fmt: skip
ENGAGEMENT_MIN_NORMS = 10
"""The engagement composite is never shown against a smaller norm set (ferpipe.scores uses the same number)."""
SCORE_METRICS: dict[str, Metric] = {
    "peak": SCORE_PEAK, "peak_at": SCORE_PEAK_AT, "end_level": END_LEVEL, "hook": HOOK,
    "first_reaction_s": FIRST_REACTION, "reacted": REACTED, "reaction_s": REACTION_DURATION, "auc": AUC,
    "retention": RETENTION,
}  # fmt: skip
"""ferpipe.scores' metric keys to their names and definitions."""


def level_kind(correction: str | None) -> str:
    """How a reading's level reads: a share of probability raw, points above the person's baseline when it is
    subtracted, standard deviations for z-scores."""
    return {None: "share", "subtract": "points", "z": "z"}[correction]


def derived_kind(correction: str | None) -> str | tuple[str, int]:
    """How valence and arousal (derived scores, -1 ... 1) read: plain raw, a signed change from the person's
    baseline when it is subtracted, standard deviations for z-scores."""
    return {None: ("score", 2), "subtract": "change", "z": "z"}[correction]


def score_kind(metric: str, correction: str | None) -> str:
    """How a score metric's value reads: level metrics as shares of probability on raw readings, as points above
    the baseline when it is subtracted, as standard deviations for z-scores; the others as they are."""
    m = SCORE_METRICS[metric]
    if metric in ("peak", "end_level", "hook"):
        return level_kind(correction)
    if metric == "auc" and correction == "z":
        return "score"
    return m.kind


def score_table(summary: pl.DataFrame, correction: str | None, index: pl.DataFrame | None = None) -> pl.DataFrame:
    """ferpipe.scores' summary (metric, value, lo, hi, n) as users read it: the metric's name, its value, the 95%
    interval over people, the people behind it and, with norms, the index 1-100 and the norm set's size."""
    rows = []
    idx = dict(zip(index["metric"], index["index"], strict=True)) if index is not None else {}
    nn = dict(zip(index["metric"], index["norm_n"], strict=True)) if index is not None else {}
    for r in summary.iter_rows(named=True):
        kind = score_kind(r["metric"], correction)
        interval = (MISSING if _missing(r["lo"]) else
                    f"{format_value(r['lo'], kind)} to {format_value(r['hi'], kind)}")  # fmt: skip
        row = {"Metric": SCORE_METRICS[r["metric"]].name, "Value": format_value(r["value"], kind),
               "95% interval": interval, "People": format_value(r["n"], "count")}  # fmt: skip
        if index is not None:
            row["Index (1–100)"] = format_value(idx.get(r["metric"]), "index")
            row["Clips in norm set"] = format_value(nn.get(r["metric"]), "count")
        rows.append(row)
    return pl.DataFrame(rows, schema=dict.fromkeys(rows[0] if rows else ["Metric"], pl.String))


METRICS: dict[str, Metric] = {m.key: m for m in (
    MEAN_OVER_PEOPLE, MEAN_OVER_TIME, SHARE_SHOWING, PEAK, PEAK_AT, TIME_ABOVE, PEOPLE, TRACKS, READINGS, ATTENTIVE,
    BLINK_RATE, HEDGES_G, P_VALUE, PERCENTILE, CONFIDENCE, VALENCE, AROUSAL, SCORE_PEAK, SCORE_PEAK_AT, END_LEVEL,
    HOOK, FIRST_REACTION, REACTED, REACTION_DURATION, AUC, RETENTION, INDEX, ENGAGEMENT,
)}  # fmt: skip


# ---- the glossary: column names -> the words users read, and how each column is formatted --------------------
@dataclass(frozen=True)
class Column:
    label: str
    kind: str
    digits: int = 0


_SHARE = "share"
GLOSSARY: dict[str, Column] = {
    **{e: Column(e.capitalize(), _SHARE) for e in EXPRESSIONS},
    "clip_id": Column("Clip id", "text"), "clip": Column("Clip", "text"), "title": Column("Title", "text"),
    "person_id": Column("Person", "count"), "person": Column("Name", "text"), "face_id": Column("Track", "count"),
    "n_obs": Column("Readings", "count"), "observations": Column("Readings", "count"),
    "faces": Column("Face tracks", "count"), "tracks": Column("Face tracks", "count"),
    "people": Column("People", "count"), "n_people": Column("People in view", "count"),
    "n_faces": Column("Faces in view", "count"), "n": Column("n", "count"),
    "t_s": Column("Time", "seconds"), "timestamp_s": Column("Time", "seconds"),
    "start_s": Column("At", "seconds"), "end_s": Column("Until", "seconds"),
    "duration_s": Column("Duration", "seconds"),
    "value": Column("Mean probability", _SHARE), "prominence": Column("Prominence", "points"),
    "expression": Column("Expression", "text"), "signal": Column("Signal", "text"),
    "marker": Column("Marker", "text"), "name": Column("Name", "text"),
    "mean_a": Column("Mean A", _SHARE), "mean_b": Column("Mean B", _SHARE), "diff": Column("A − B", "points"),
    "hedges_g": Column("Hedges' g", "effect"), "p_value": Column("p-value", "p"),
    "n_a": Column("People A", "count"), "n_b": Column("People B", "count"),
    "percentile": Column("Percentile", "index"), "norm_n": Column("Clips in norm set", "count"),
    "before_mean": Column("Before", _SHARE), "during_mean": Column("During", _SHARE),
    "after_mean": Column("After", _SHARE), "change_during": Column("Change during", "points"),
    "change_after": Column("Change after", "points"), "before_n": Column("People before", "count"),
    "during_n": Column("People during", "count"), "after_n": Column("People after", "count"),
    "isc": Column("Mean r", "r"), "median": Column("Median r", "r"), "pairs": Column("Pairs of people", "count"),
    "model": Column("Model", "text"), "run_id": Column("Run", "count"), "model_version": Column("Model version", "text"),
    "sample_fps": Column("Analysis rate (frames/s)", "score"), "finished_at": Column("Finished", "text"),
    "status": Column("Status", "text"), "accuracy": Column("Accuracy", _SHARE, 1),
    "macro_f1": Column("Macro-F1", "score"), "ece": Column("Calibration error (ECE)", "score"),
    "ms_per_face": Column("ms per face", "score"), "face_found": Column("Faces found", _SHARE, 1),
    "confidence": Column("Reading confidence", "score"), "valence": Column("Valence (derived)", "score"),
    "arousal": Column("Arousal (derived)", "score"), "attentive": Column("Attentive", _SHARE),
    "det_score": Column("Detection score", "score"), "tags": Column("Tags", "text"),
    "created_at": Column("Added", "text"), "source": Column("Source", "text"), "kind": Column("Kind", "text"),
    "dropped_frames": Column("Frames dropped (live)", "count"), "unit": Column("Unit", "text"), "samples": Column("Samples", "count"), "first_s": Column("From", "seconds"),
    "last_s": Column("To", "seconds"),
    **{m.key: Column(m.name, m.kind, m.digits) for m in METRICS.values()},
}  # fmt: skip


def label(column: str) -> str:
    """The words users read for a column name (unknown names: underscores to spaces, first letter capital)."""
    col = GLOSSARY.get(column)
    if col is not None:
        return col.label
    text = column.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def column_kind(column: str, dtype: pl.DataType) -> tuple[str, int]:
    col = GLOSSARY.get(column)
    if col is not None:
        return col.kind, col.digits
    if dtype.is_integer():
        return "count", 0
    if dtype.is_float():
        return "score", 2
    return "text", 0


def table(df: pl.DataFrame, kinds: dict[str, str | tuple[str, int]] | None = None,
          labels: dict[str, str] | None = None) -> pl.DataFrame:  # fmt: skip
    """A table as users read it: every column named in words, every cell formatted as text (missing as "—",
    p-values and effects at sensible precision, integers as integers, shares as percentages).

    kinds / labels: per-column overrides (a kind, or (kind, digits); a label).
    """
    kinds, labels = kinds or {}, labels or {}
    out = {}
    for name in df.columns:
        kind, digits = column_kind(name, df.schema[name])
        if name in kinds:
            k = kinds[name]
            kind, digits = (k, 0) if isinstance(k, str) else k
        head = labels.get(name) or label(name)
        while head in out:  # two columns with one label: keep both
            head += " "
        out[head] = [format_value(v, kind, digits) for v in df[name].to_list()]
    return pl.DataFrame(out, schema=dict.fromkeys(out, pl.String))


def photo_words(people: int) -> str:
    """How a photo's faces are spoken of."""
    return f"{people} {'face' if people == 1 else 'faces'} in a photo"


def people_words(people: int, tracks: int | None = None) -> str:
    text = f"{people:,} {'person' if people == 1 else 'people'}"
    if tracks is not None and tracks > people:
        text += f" (from {tracks:,} face tracks)"
    return text


def duration_words(seconds: float) -> str:
    if _missing(seconds):
        return MISSING
    return f"{seconds:.0f} s" if abs(seconds) < 90 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def not_tested(n_a: int, n_b: int) -> str | None:
    """Why a two-group test did not run ("not tested (1 person in group B)"), or None when it can."""
    short = [(g, n) for g, n in (("A", n_a), ("B", n_b)) if n < 2]
    if not short:
        return None
    g, n = short[0]
    return f"not tested ({n} {'person' if n == 1 else 'people'} in group {g}; a test needs 2 or more per group)"


# ---- other tools' files and recorded streams (ferpipe.interop, ferpipe.lab_streams) ---------------------------------
STREAMS_NOTE = ("Streams recorded beside this clip (imported from an XDF file: GSR, heart rate, the stimulus "
                "software's events...), aligned to the clip's own timeline, each in its own unit. Each bin shows "
                "the stream's mean, with its range in the bin shaded. They are what those devices recorded; "
                "ferpipe does not interpret them.")  # fmt: skip


def possessive(name: str) -> str:
    """iMotions' and OpenFace's."""
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def imported_words(settings: dict | None, no_video: bool, in_report: bool = False) -> str:
    """What a run imported from another tool is, said where its results are shown."""
    settings = settings or {}
    tool = settings.get("tool", "another tool")
    head = f"Imported from {possessive(tool)} output ({settings.get('file', 'a file')}). "
    if settings.get("expressions"):
        what = (f"The expression curves are {possessive(tool)} readings, not ferpipe's model: compare them with "
                "ferpipe's runs as readings of another model. ")  # fmt: skip
    else:
        where = ("in the dashboard's Clip view and in `ferpipe export`" if in_report
                 else f"below, under {possessive(tool)} names")  # fmt: skip
        what = (f"{tool} reads action units and head pose, not expressions, so this run has no expression curves: "
                f"its own signals are {where}. ")  # fmt: skip
    att = settings.get("attention")
    att = f"Attention: {att}. " if att else ""
    video = "No video was imported with it, so no frames are shown." if no_video else ""
    return (head + what + att + video).strip()


TOOL_SCALES = {
    "OpenFace": "AUxx_r is an intensity from 0 to 5, AUxx_c presence (0 or 1)",
    "py-feat": "AUxx is an activation from 0 to 1",
    "iMotions": "Evidence is the engine's log-odds (0 means even odds), Intensity its 0-1 or 0-100 scale",
}


def tool_signal_words(tool: str) -> str:
    scale = TOOL_SCALES.get(tool)
    return (f"{possessive(tool)} own output, under its column names and on its own scale"
            + (f" ({scale})" if scale else "") + ". Per bin, the mean over people with a 95% interval. These are "
            f"{possessive(tool)} action units, not ferpipe's AU proxies.")  # fmt: skip


def default_action_units(names: list[str], units: tuple[int, ...] = (12, 4)) -> list[str]:
    """The columns a tool's chart opens on: AU12 (lip corner puller) and AU4 (brow lowerer), intensities
    (OpenFace's _r) before presence (_c)."""
    import re

    out = []
    for unit in units:
        hits = [n for n in names if (m := re.match(r"AU0*(\d+)", n, re.IGNORECASE)) and int(m.group(1)) == unit]
        out += sorted(hits, key=lambda n: (not n.endswith("_r"), "Intensity" in n, n))[:1]
    return out


def tool_signal_label(name: str, tool: str) -> str:
    """A tool's column as the dashboard names it: the tool's own name, with the tool."""
    return f"{name} ({tool})"
