"""Reports a researcher can send to a client: a summary of findings in words first, then curves, tables with
human names and stated thresholds, valence and arousal, people, markers, norms, comparisons and the settings; as
self-contained HTML, PDF, and the curves as CSV/Parquet.

Every number is computed once (``build_report``), named and formatted once (``ferpipe.present``) and put into one
list of sections (``sections``); the HTML and the PDF are two renderings of those same sections.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import itertools
import textwrap
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from . import CAVEAT, __version__
from . import present as pr
from .analytics import (
    PEAK_MIN_PROMINENCE,
    PEAK_MIN_VALUE,
    SIGNALS,
    aggregate_face_bins,
    blink_summary,
    compare_table,
    expression_summary,
    face_bins,
    marker_stats,
    norms,
    peak_table,
    person_means,
    person_table,
)
from .baseline import BaselineResult, corrected_face_bins
from .frames import clip_kind, is_image, is_timeline_only
from .store import QualityFilter, Store
from .types import EXPRESSIONS, Baseline

FORMATS = ("html", "pdf", "csv", "parquet")
FORMULA_PREFIXES = r"^[=+\-@\t\r]"
SIGNIFICANCE = 0.05
BLINK_MIN_FPS = 10.0  # blink rates are withheld below this analysis rate (blinks last 100-400 ms)
# Plotly's inline script needs eval; nothing is fetched from anywhere
CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:")  # fmt: skip


def safe_for_spreadsheets(df: pl.DataFrame) -> pl.DataFrame:
    """Text cells that a spreadsheet would run as a formula (=, +, -, @, tab, CR first) get a leading quote,
    so a title like ``=HYPERLINK(...)`` is shown, not executed, when a CSV is opened. Numbers are untouched."""
    text = [c for c, t in df.schema.items() if t == pl.String]
    return df.with_columns(
        pl.when(pl.col(c).str.contains(FORMULA_PREFIXES)).then(pl.lit("'") + pl.col(c)).otherwise(pl.col(c)).alias(c)
        for c in text
    )


def table_bytes(df: pl.DataFrame, fmt: str) -> bytes:
    """A table as CSV (formula prefixes neutralised for spreadsheets) or Parquet bytes."""
    buf = io.BytesIO()
    if fmt == "csv":
        safe_for_spreadsheets(df).write_csv(buf)
    else:
        df.write_parquet(buf)
    return buf.getvalue()


def blink_rate_note(sample_fps: float | None) -> str | None:
    """Why a run's blink rate is withheld (analysed below BLINK_MIN_FPS), or None when it can be shown. The
    dashboard and the reports both ask this."""
    if sample_fps is not None and sample_fps < BLINK_MIN_FPS:
        return (f"blink rates are not reported at {sample_fps:g} frames/s (short blinks fall between frames; "
                f"process at {BLINK_MIN_FPS:g} frames/s or more)")  # fmt: skip
    return None


@dataclass
class ClipReport:
    """One clip's part of a report: raw figures (formatted only when laid out)."""

    clip: dict
    label: str
    run: object  # RunRow or None
    photo: bool
    agg: pl.DataFrame
    attention: pl.DataFrame
    summary: pl.DataFrame  # analytics.expression_summary: one row per signal
    peaks: pl.DataFrame
    people: int
    tracks: int
    attentive: float
    blinks_per_min: float | None
    blink_note: str | None
    markers: pl.DataFrame
    norms: pl.DataFrame
    person_table: pl.DataFrame  # one row per person: id, name, readings, means of the signals
    based: BaselineResult | None = None  # what the baseline did (None: raw readings)
    scores: object = None  # ferpipe.scores.ClipScores of the scored signal (videos)
    norm_scores: object = None  # ferpipe.scores.NormScores of the same

    @property
    def level(self) -> str:
        """How this clip's expression levels read: shares raw, points or SDs from each person's baseline."""
        return pr.level_kind(self.based.baseline.correction if self.based else None)

    @property
    def processed(self) -> bool:
        return self.run is not None

    @property
    def expressions(self) -> bool:
        """The run has expression readings (an OpenFace import has none)."""
        return self.run is None or self.run.has_expressions

    def value(self, signal: str, metric: str) -> float:
        row = self.summary.filter(pl.col("signal") == signal)
        return float(row[metric][0]) if row.height else float("nan")


@dataclass
class ReportData:
    """Everything a report shows, computed once for every format."""

    title: str
    generated_at: str
    bin_s: float
    threshold: float
    method: str
    quality: str
    clips: list[ClipReport]
    comparisons: list[tuple[str, str, pl.DataFrame]] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    baseline: Baseline | None = None
    score_signal: str = "happy"

    @property
    def aggs(self) -> dict[str, pl.DataFrame]:
        return {c.label: c.agg for c in self.clips if not c.photo and c.agg.height and c.expressions}


def _label(clip: dict) -> str:
    return pr.plain_text(clip["title"] or clip["clip_id"])


def _ordinal(value: float) -> str:
    n = round(value)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def build_report(store: Store, clip_ids: list[str], bin_s: float = 1.0, method: str = "welch", threshold: float = 0.5,
                 quality: QualityFilter | None = None, marker_window_s: float = 5.0, baseline: Baseline | None = None,
                 score_signal: str = "happy") -> ReportData:  # fmt: skip
    """Gather curves, summaries, peaks, attention, markers, norms, scores, people and (for two or more clips)
    person-level comparisons of every pair of clips, and write the findings in words. With a baseline, every
    expression figure is a change from each person's baseline, and the report says so."""
    if not clip_ids:
        raise ValueError("a report needs at least one clip")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    clips_df = store.clips()
    quality = quality or QualityFilter()
    parts: list[ClipReport] = []
    for cid in dict.fromkeys(clip_ids):
        rows = clips_df.filter(pl.col("clip_id") == cid)
        if rows.is_empty():
            raise ValueError(f"unknown clip {cid!r}")
        parts.append(_clip_part(store, rows.row(0, named=True), bin_s, threshold, quality, marker_window_s, baseline,
                                score_signal))  # fmt: skip
    labels = [p.label for p in parts]
    if len(set(labels)) < len(labels):  # two clips with one title: tell them apart
        for p in parts:
            p.label = f"{p.label} ({p.clip['clip_id']})"
    data = ReportData(
        title="Facial expression report: " + ", ".join(p.label for p in parts),
        generated_at=dt.datetime.now().strftime("%Y-%m-%d %H:%M"), bin_s=bin_s, threshold=threshold, method=method,
        quality=quality.describe(), clips=parts, baseline=baseline, score_signal=score_signal,
    )  # fmt: skip
    for a, b in itertools.combinations([p for p in parts if p.expressions], 2):
        ma = person_means(store, [a.clip["clip_id"]], SIGNALS)
        mb = person_means(store, [b.clip["clip_id"]], SIGNALS)
        data.comparisons.append((a.label, b.label, compare_table(ma, mb, method)))
    data.findings = _findings(data)
    return data


def _clip_part(store: Store, clip: dict, bin_s: float, threshold: float, quality: QualityFilter,
               marker_window_s: float, baseline: Baseline | None = None, score_signal: str = "happy") -> ClipReport:  # fmt: skip
    cid = clip["clip_id"]
    run_id = store.best_run(cid)
    empty = pl.DataFrame()
    photo = is_image(clip["path"])
    if run_id is None:
        return ClipReport(clip, _label(clip), None, photo, empty, empty, expression_summary(empty, bin_s), empty, 0, 0,
                          float("nan"), None, None, empty, empty, empty)  # fmt: skip
    run = store.run(run_id)
    fb = face_bins(store, run_id, bin_s, SIGNALS, quality)
    based = None
    if baseline is not None and not photo:
        fb, based = corrected_face_bins(store, run_id, cid, fb, baseline, quality)
    agg = aggregate_face_bins(fb, bin_s, clip_bounds=based is None)
    att_fb = face_bins(store, run_id, bin_s, ("attentive",))
    attention = aggregate_face_bins(att_fb.filter(pl.col("attentive").is_not_null()), bin_s, ("attentive",))
    summ = expression_summary(fb, bin_s, threshold, clip["duration_s"])
    peaks = peak_table(agg, EXPRESSIONS, k=3, bin_s=bin_s) if agg.height and not photo else pl.DataFrame()
    att = store.observations(run_id, ("attentive",))["attentive"]
    markers = store.markers(cid)
    obs = store.observations(run_id, SIGNALS) if markers.height else None
    mstats = (
        pl.concat([marker_stats(obs, markers, e, marker_window_s).with_columns(pl.lit(e).alias("expression"))
                   for e in EXPRESSIONS])
        if markers.height and not photo else pl.DataFrame()
    )  # fmt: skip
    ranks = (
        pl.concat([norms(store, [cid], e, "mean").with_columns(pl.lit(e).alias("expression")) for e in EXPRESSIONS])
        if not photo else pl.DataFrame()
    )  # fmt: skip
    people = store.people(run_id)
    mine = normed = None
    if not photo and agg.height and run.has_expressions:
        from .scores import ScoreSettings, clip_scores, norm_scores

        settings = ScoreSettings(signal=score_signal, bin_s=bin_s)
        mine = clip_scores(store, cid, settings, baseline, quality)
        normed = norm_scores(store, cid, settings, baseline)
    rate = (run.settings or {}).get("sample_fps")
    has_mesh = att.drop_nulls().len() > 0
    note = blink_rate_note(rate) if has_mesh else None
    blinks = has_mesh and note is None and not photo and run.tool is None  # other tools' files carry no eye openness
    return ClipReport(
        clip=clip, label=_label(clip), run=run, photo=photo, agg=agg, attention=attention, summary=summ, peaks=peaks,
        people=people.height, tracks=run.faces,
        attentive=float(att.drop_nulls().mean()) if has_mesh else float("nan"),
        blinks_per_min=blink_summary(store, run_id)["rate_per_min"] if blinks else None,
        blink_note=note, markers=mstats, norms=ranks, person_table=person_table(fb, people), based=based,
        scores=mine, norm_scores=normed,
    )  # fmt: skip


def _top(c: ClipReport) -> tuple[str, float]:
    ex = c.summary.filter(pl.col("signal").is_in(EXPRESSIONS)).sort("mean_over_people", descending=True)
    return ex["signal"][0], float(ex["mean_over_people"][0])


def _findings(data: ReportData) -> list[str]:
    """The summary in words: what stood out, with the numbers behind it (named and rounded by ferpipe.present)."""
    out = []
    mop = pr.MEAN_OVER_PEOPLE
    for c in data.clips:
        if not c.processed:
            out.append(f"{c.label}: not processed yet.")
            continue
        if c.people == 0 or c.summary.is_empty():
            out.append(f"{c.label}: processed; no faces were found" + (" in the photo." if c.photo else "."))
            continue
        if not c.expressions:
            out.append(f"{c.label}: {c.run.tool}'s output for {pr.people_words(c.people)}; {c.run.tool} reads no "
                       "expressions, so no expression finding is made.")  # fmt: skip
            continue
        top, value = _top(c)
        if c.photo:
            out.append(f"{c.label}: {pr.photo_words(c.people)}. The expression most shown was {top} "
                       f"({mop.name.lower()} {mop.format(value)}).")  # fmt: skip
        else:
            if c.based:
                out.append(f"{c.label}: {pr.people_words(c.people, c.tracks)} over "
                           f"{pr.duration_words(c.clip['duration_s'] or 0)}; {c.based.describe()}. The expression "
                           f"that rose most above the baseline on average was {top} ({mop.name.lower()} "
                           f"{pr.format_value(value, c.level)}).")  # fmt: skip
            else:
                out.append(f"{c.label}: {pr.people_words(c.people, c.tracks)} over "
                           f"{pr.duration_words(c.clip['duration_s'] or 0)}. The expression most shown on average "
                           f"was {top} ({mop.name.lower()} {mop.format(value)}).")  # fmt: skip
        if c.peaks.height:
            p = c.peaks.sort("value", descending=True).row(0, named=True)
            out.append(f"{c.label}: the strongest moment was {p['expression']} at {pr.duration_words(p['t_s'])} "
                       f"(mean {pr.format_value(p['value'], c.level)} across the people in view, "
                       f"{pr.format_value(p['prominence'], 'points')} above the curve around it).")  # fmt: skip
        if np.isfinite(c.attentive) and not c.photo:
            blinks = (c.blink_note if c.blink_note else
                      f"about {c.blinks_per_min:.0f} blinks per minute" if c.blinks_per_min is not None else
                      "no blink rate")  # fmt: skip
            out.append(f"{c.label}: faces were turned to the camera with open eyes (attentive) in "
                       f"{pr.format_value(c.attentive, 'share')} of readings; {blinks}.")  # fmt: skip
        if c.markers.height:
            for m in c.markers.filter(pl.col("change_during").abs() >= 0.05).sort(
                    pl.col("change_during").abs(), descending=True).head(3).iter_rows(named=True):  # fmt: skip
                verb = "rose" if m["change_during"] > 0 else "fell"
                out.append(f"{c.label}: at '{pr.plain_text(m['marker'])}' ({m['start_s']:g} s) {m['expression']} "
                           f"{verb} by {pr.format_value(abs(m['change_during']), 'share')[:-1]} percentage points "
                           f"(from {pr.format_value(m['before_mean'], 'share')} to "
                           f"{pr.format_value(m['during_mean'], 'share')}).")  # fmt: skip
        if c.scores is not None and c.scores.people.height:
            m = c.scores
            reacted = m.summary.filter(pl.col("metric") == "reacted").row(0, named=True)
            out.append(f"{c.label}: {pr.format_value(reacted['value'], 'share')} of {pr.people_words(reacted['n'])} "
                       f"reacted ({m.settings.signal} reached {m.threshold:g}"
                       + (" above their baseline" if c.based else "") + "); "
                       + (f"{pr.ENGAGEMENT.name.lower()} {pr.ENGAGEMENT.format(c.norm_scores.engagement)}."
                          if c.norm_scores.engagement is not None else
                          f"no engagement composite (a norm set of {len(c.norm_scores.norm_clips)} videos; it needs "
                          f"{pr.ENGAGEMENT_MIN_NORMS}).")
                       )  # fmt: skip
        if c.norms.height and int(c.norms["norm_n"][0]) >= 3:
            r = c.norms.filter(pl.col("expression") == top).row(0, named=True)
            out.append(f"{c.label}: its {pr.MEAN_OVER_TIME.name.lower()} of {r['expression']} ranks at the "
                       f"{_ordinal(r['percentile'])} percentile of the {r['norm_n']} other videos in the library.")  # fmt: skip
    for a, b, table in data.comparisons:
        n_a, n_b = (int(table[k][0]) for k in ("n_a", "n_b")) if table.height else (0, 0)
        why = pr.not_tested(n_a, n_b)
        if why:
            out.append(f"{a} vs {b}: {why}.")
            continue
        sig = table.filter(pl.col("p_value") < SIGNIFICANCE)
        if sig.is_empty():
            out.append(f"{a} vs {b}: no expression differed at p < {SIGNIFICANCE} ({n_a} vs {pr.people_words(n_b)}).")
        for r in sig.iter_rows(named=True):
            higher = a if r["mean_a"] > r["mean_b"] else b
            kind = "share" if r["signal"] in EXPRESSIONS else "score"
            out.append(f"{a} vs {b}: {r['signal']} was higher in {higher} ({pr.format_value(r['mean_a'], kind)} vs "
                       f"{pr.format_value(r['mean_b'], kind)} {pr.MEAN_OVER_PEOPLE.name.lower()}, Hedges' g "
                       f"{pr.HEDGES_G.format(r['hedges_g'])}, p {_p(r['p_value'])}, {r['n_a']} vs {pr.people_words(r['n_b'])}).")  # fmt: skip
    if data.quality != "all observations":
        out.append(f"Expression curves use {data.quality}.")
    return out


def _p(p: float) -> str:
    text = pr.P_VALUE.format(p)
    return text if text.startswith("<") else f"= {text}"


# ---- the tables, formatted once --------------------------------------------------------------------------------
def summary_table(c: ClipReport, threshold: float) -> pl.DataFrame:
    """Per expression: the named metrics of ferpipe.present (a photo: the ones that need no time axis)."""
    ex = c.summary.filter(pl.col("signal").is_in(EXPRESSIONS))
    cols = ["signal", "mean_over_people", "share_showing"]
    if not c.photo:
        cols += ["mean_over_time", "peak", "peak_at", "time_above"]
    labels = {"signal": "Expression", "time_above": f"Time above {threshold:g}", "peak_at": "Peak at"}
    if c.photo:
        labels["share_showing"] = "Share of faces showing it"
    kinds = dict.fromkeys(("mean_over_people", "mean_over_time", "peak"), c.level) if c.based else None
    return pr.table(ex.select(cols), labels=labels, kinds=kinds)


def valence_table(c: ClipReport) -> pl.DataFrame:
    va = c.summary.filter(pl.col("signal").is_in(["valence", "arousal"]))
    cols = ["signal", "mean_over_people"] + ([] if c.photo else ["mean_over_time", "peak", "peak_at"])
    kind = pr.derived_kind(c.based.baseline.correction if c.based else None)
    return pr.table(va.select(cols).with_columns(pl.col("signal") + " (derived)"),
                    kinds={"mean_over_people": kind, "mean_over_time": kind, "peak": kind},
                    labels={"signal": "Signal", "peak_at": "Peak at"})  # fmt: skip


def people_table(c: ClipReport) -> pl.DataFrame:
    """One row per person: id, name, readings and the mean of each expression (as in 'Mean over people')."""
    if c.person_table.is_empty():
        return pl.DataFrame()
    df = c.person_table.with_columns(
        pl.col("person").fill_null(pl.format("person {}", pl.col("person_id"))).alias("person"),
        pl.concat_list(EXPRESSIONS).list.arg_max().replace_strict(dict(enumerate(EXPRESSIONS))).alias("strongest"),
    )
    return pr.table(df.select("person_id", "person", "n_obs", "strongest", *EXPRESSIONS),
                    labels={"strongest": "Strongest"}, kinds=dict.fromkeys(EXPRESSIONS, c.level))  # fmt: skip


def peaks_table(c: ClipReport) -> pl.DataFrame:
    return pr.table(c.peaks, labels={"t_s": "At"}, kinds={"value": c.level})


def scores_text(c: ClipReport) -> tuple[str, ...]:
    """What the Scores section says: how the metrics were taken, the baseline, the norm set and the composite."""
    from .scores import norm_words

    m, ns = c.scores, c.norm_scores
    base = c.based.describe() if c.based else "no baseline (raw readings)"
    out = [f"Ad-research metrics of the {m.settings.signal} curve, each taken per person and averaged over people "
           f"with a 95% interval over people: threshold {m.threshold:g}, hook: the first {m.settings.hook_s:g} s, "
           f"end: the last {m.settings.end_share:.0%} of the clip; {base}. Index (1–100): "
           f"{pr.INDEX.definition[0].lower()}{pr.INDEX.definition[1:]} Norm set: "
           f"{norm_words(ns)}"
           + (f" ({', '.join(ns.norm_titles)})." if 0 < len(ns.norm_titles) <= 20 else ".")]  # fmt: skip
    if ns.engagement is None:
        out.append(f"{pr.ENGAGEMENT.name}: not shown; the norm set has {len(ns.norm_clips)} videos and the composite "
                   f"needs {pr.ENGAGEMENT_MIN_NORMS}. Its formula: {pr.ENGAGEMENT.definition[0].lower()}"
                   f"{pr.ENGAGEMENT.definition[1:]}")  # fmt: skip
    else:
        out.append(f"{pr.ENGAGEMENT.name}: {pr.ENGAGEMENT.format(ns.engagement)} (attention index "
                   f"{pr.INDEX.format(ns.engagement_parts['attention'])}, expressiveness index "
                   f"{pr.INDEX.format(ns.engagement_parts['expressiveness'])}). {pr.ENGAGEMENT.definition}")  # fmt: skip
    return tuple(out)


def scores_table(c: ClipReport) -> pl.DataFrame:
    return pr.score_table(c.scores.summary, c.based.baseline.correction if c.based else None, c.norm_scores.table)


def settings_table(data: ReportData) -> pl.DataFrame:
    rows = []
    for c in data.clips:
        run = c.run
        rate = run.settings.get("sample_fps") if run else None
        rows.append({
            "Clip": c.label, "Kind": clip_kind(c.clip["path"]),
            "Duration": pr.MISSING if c.photo else pr.duration_words(c.clip["duration_s"] or 0),
            "People": pr.PEOPLE.format(c.people) if run else pr.MISSING,
            "Face tracks": pr.TRACKS.format(c.tracks) if run else pr.MISSING, "Model": run.model if run else pr.MISSING,
            "Analysis rate": pr.MISSING if run is None else "every frame" if rate is None else f"{rate:g} frames/s",
            "Processed": str(run.finished_at or run.updated_at or pr.MISSING)[:16] if run else "not yet",
            "Tags": pr.plain_text(c.clip["tags"] or "") or pr.MISSING,
        })  # fmt: skip
    return pl.DataFrame(rows)


def comparison_table(table: pl.DataFrame) -> pl.DataFrame:
    """Signal, mean over people in each group, the difference, Hedges' g, p-value and people per group."""
    rows = []
    for r in table.iter_rows(named=True):
        kind = "share" if r["signal"] in EXPRESSIONS else "score"
        diff = r["mean_a"] - r["mean_b"] if r["mean_a"] is not None and r["mean_b"] is not None else None
        rows.append({"Signal": r["signal"] if kind == "share" else f"{r['signal']} (derived)",
                     "Mean over people A": pr.format_value(r["mean_a"], kind),
                     "Mean over people B": pr.format_value(r["mean_b"], kind),
                     "A − B": pr.format_value(diff, "points" if kind == "share" else "score"),
                     "Hedges' g": pr.HEDGES_G.format(r["hedges_g"]), "p-value": pr.P_VALUE.format(r["p_value"]),
                     "People A": pr.format_value(r["n_a"], "count"), "People B": pr.format_value(r["n_b"], "count")})  # fmt: skip
    return pl.DataFrame(rows, schema=dict.fromkeys(["Signal", "Mean over people A", "Mean over people B", "A − B",
                                                    "Hedges' g", "p-value", "People A", "People B"], pl.String))  # fmt: skip


def markers_table(c: ClipReport) -> pl.DataFrame:
    return pr.table(c.markers.select("marker", "start_s", "expression", "before_mean", "during_mean", "after_mean",
                                     "change_during"))  # fmt: skip


def norms_table(c: ClipReport) -> pl.DataFrame:
    return pr.table(c.norms.select("expression", "value", "percentile"), labels={"value": pr.MEAN_OVER_TIME.name})


def curves_table(data: ReportData) -> pl.DataFrame:
    """All aggregated curves, one row per clip and time bin (machine columns: this is the data file)."""
    parts = [c.agg.with_columns(pl.lit(c.label).alias("clip")) for c in data.clips if c.agg.height]
    df = pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()
    return df.select("clip", *[c for c in df.columns if c != "clip"]) if df.height else df


# ---- one list of sections, rendered as HTML and as PDF -----------------------------------------------------------
@dataclass(frozen=True)
class Chart:
    """A chart both renderers draw: "curves" (signals over time with bands), "attention", "photo" (per-face bars)
    or "overlay" (one signal, several clips)."""

    kind: str
    title: str
    clip: ClipReport | None = None
    signals: tuple[str, ...] = ()
    overlay: dict | None = None


@dataclass(frozen=True)
class Section:
    heading: str
    level: int = 2
    text: tuple[str, ...] = ()
    table: pl.DataFrame | None = None
    chart: Chart | None = None
    bullets: tuple[str, ...] = ()


def sections(data: ReportData) -> list[Section]:
    """The report's content in order; HTML and PDF lay out exactly these."""
    out = [
        Section("Summary of findings", bullets=tuple(data.findings)),
        Section("Clips, settings and model", table=settings_table(data)),
    ]
    defs = (f"{pr.MEAN_OVER_PEOPLE.name}: {pr.MEAN_OVER_PEOPLE.definition} {pr.MEAN_OVER_TIME.name}: "
            f"{pr.MEAN_OVER_TIME.definition}")  # fmt: skip
    for c in data.clips:
        if not c.processed or c.people == 0:
            continue
        intro = (pr.photo_words(c.people).capitalize() + "." if c.photo else
                 pr.people_words(c.people, c.tracks).capitalize() + " over "
                 + pr.duration_words(c.clip["duration_s"] or 0) + ".")  # fmt: skip
        if c.based:
            intro += (f" {c.based.describe()[0].upper()}{c.based.describe()[1:]}: every expression figure below is a "
                      "change from each person's baseline.")  # fmt: skip
        if c.run.tool:
            intro += " " + pr.imported_words(c.run.settings, is_timeline_only(c.clip["path"]), in_report=True)
        out.append(Section(c.label, text=(intro,)))
        if not c.expressions:  # another tool's action units and head pose: its attention, if any, and nothing else
            if c.attention.height:
                out.append(Section("Attention", 3, (f"Share of people attentive, {c.run.settings.get('attention')}.",),
                                   chart=Chart("attention", "Attention: share of people attentive", c)))  # fmt: skip
            continue
        if c.photo:
            out.append(Section("Faces in the photo", 3, ("Each face's seven probabilities.",),
                               chart=Chart("photo", "Expressions per face", c)))  # fmt: skip
        else:
            what = "Mean change from each person's baseline" if c.based else "Mean probability"
            out.append(Section("Expressions over time", 3, (f"{what} over the people in view per "
                                                            f"{data.bin_s:g} s bin, with 95% confidence bands.",),
                               chart=Chart("curves", f"Expressions ({what.lower()})", c, EXPRESSIONS)))  # fmt: skip
        photo_defs = (f"{pr.MEAN_OVER_PEOPLE.name}: each face's probability, averaged over the faces in the photo; "
                      "the share of faces showing it: the faces whose strongest expression it is.")  # fmt: skip
        out.append(
            Section("Per expression", 3, (photo_defs if c.photo else defs,), table=summary_table(c, data.threshold))
        )
        if not c.photo:
            out.append(Section("Valence and arousal (derived)", 3,
                               ("Derived from the seven probabilities through a fixed circumplex mapping "
                                "(−1 … 1), not measured.",),
                               table=valence_table(c),
                               chart=Chart("curves", "Valence and arousal (derived)", c, ("valence", "arousal"))))  # fmt: skip
            if c.attention.height:
                out.append(Section("Attention", 3, ("Share of people attentive: face turned to the camera with "
                                                    "open eyes (a model reading of head pose, not gaze).",),
                                   chart=Chart("attention", "Attention: share of people attentive", c)))  # fmt: skip
            if c.peaks.height:
                out.append(Section("Peak moments", 3, (f"A moment is listed where a curve reaches at least "
                                                      f"{PEAK_MIN_VALUE:.0%} and stands at least "
                                                      f"{PEAK_MIN_PROMINENCE * 100:.0f} percentage points above the "
                                                      "valleys beside it (its prominence).",), table=peaks_table(c)))  # fmt: skip
        if c.scores is not None and c.scores.people.height:
            out.append(Section("Scores", 3, scores_text(c), table=scores_table(c)))
        if c.person_table.height:
            out.append(Section("People", 3, (("Each person's average change from their baseline over the clip"
                                              if c.based else "Each person's average probability over the clip")
                                             + f"; their mean is the '{pr.MEAN_OVER_PEOPLE.name}' above.",),
                               table=people_table(c)))  # fmt: skip
        if c.markers.height:
            out.append(Section("Around the markers", 3, ("Mean over the people in view before, during and after "
                                                         "each marker; change = during minus before.",),
                               table=markers_table(c)))  # fmt: skip
        if c.norms.height:
            n = int(c.norms["norm_n"][0])
            text = (f"Percentile: the share of the library's {n} other processed videos at or below this one "
                    "(photos are not in the norm set)." if n >= 3 else
                    f"Only {n} other processed videos in the library: too few for a percentile rank.")  # fmt: skip
            out.append(Section("Norms", 3, (text,), table=norms_table(c) if n >= 3 else None))
    if len(data.aggs) > 1:
        for e in ("happy", "surprise", "neutral"):
            out.append(Section(f"Videos side by side: {e}", 2, chart=Chart("overlay", f"{e}: mean probability",
                                                                             signals=(e,), overlay=data.aggs)))  # fmt: skip
    for a, b, table in data.comparisons:
        n_a, n_b = (int(table[k][0]) for k in ("n_a", "n_b")) if table.height else (0, 0)
        why = pr.not_tested(n_a, n_b)
        out.append(Section(f"Comparison: {a} vs {b}", 2,
                           ("Each person's mean over the clip is one data point; people, not frames, are the unit. "
                            f"Tests: {'Welch t-test' if data.method == 'welch' else 'permutation test'}."
                            + (f" {why[0].upper()}{why[1:]}." if why else ""),),
                           table=comparison_table(table)))  # fmt: skip
    return out


def _intro(data: ReportData) -> tuple[str, str]:
    meta = (f"Generated {data.generated_at} by ferpipe {__version__}. Curves: mean over the people in view per "
            f"{data.bin_s:g} s bin, with 95% confidence bands; 'time above' counts time over {data.threshold:g}; "
            f"tests: {'Welch t-tests' if data.method == 'welch' else 'permutation tests'} on each person's mean; "
            f"observations used: {data.quality}; "
            + (data.baseline.describe() if data.baseline else "no baseline correction (raw readings)") + ".")  # fmt: skip
    caveat = (f"Read this first: {CAVEAT} Valence and arousal are derived from the seven probabilities, not "
              "measured. Attention and blendshapes are model readings of head pose and face shape, not gaze or "
              "FACS coding.")  # fmt: skip
    return meta, caveat


# ---- HTML ------------------------------------------------------------------------------------------------------------
def _html_table(df: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
        for row in df.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plotly(chart: Chart):
    from .figures import curves_figure, overlay_figure, photo_figure

    c = chart.clip
    if chart.kind == "curves":
        return curves_figure(c.agg, list(chart.signals), title=chart.title,
                             y_label="change from baseline" if c.based is not None else None)  # fmt: skip
    if chart.kind == "attention":
        return curves_figure(c.attention, ["attentive"], title=chart.title)
    if chart.kind == "photo":
        names = dict(zip(c.person_table["person_id"], c.person_table["person"], strict=True))
        return photo_figure(c.person_table, names)
    return overlay_figure(chart.overlay, chart.signals[0])


def html_report(data: ReportData) -> str:
    """One self-contained HTML file: plotly.js is embedded once, nothing is loaded from anywhere (a
    Content-Security-Policy says so), and user text is escaped, never a link."""
    first = True

    def fig_html(fig) -> str:
        nonlocal first
        out = fig.to_html(include_plotlyjs=first, full_html=False)
        first = False
        return out

    meta, caveat = _intro(data)
    parts = [f"<h1>{html.escape(data.title)}</h1>", f"<p class='meta'>{html.escape(meta)}</p>",
             f"<p class='caveat'><b>Read this first.</b> {html.escape(caveat.removeprefix('Read this first: '))}</p>"]  # fmt: skip
    for sec in sections(data):
        parts.append(f"<h{sec.level}>{html.escape(sec.heading)}</h{sec.level}>")
        parts += [f"<p>{html.escape(t)}</p>" for t in sec.text]
        if sec.bullets:
            parts += ["<ul>", *[f"<li>{html.escape(b)}</li>" for b in sec.bullets], "</ul>"]
        if sec.chart is not None:
            parts.append(fig_html(_plotly(sec.chart)))
        if sec.table is not None and sec.table.height:
            parts.append(_html_table(sec.table))
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
        ".caveat{background:#fff6e0;border-left:4px solid #f0a000;padding:.6em 1em}.meta{color:#666}li{margin:.3em 0}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\"><title>{html.escape(data.title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


# ---- PDF -------------------------------------------------------------------------------------------------------------
A4 = (8.27, 11.69)


class _Flow:
    """Portrait A4 pages filled top to bottom with headings, wrapped paragraphs, charts and tables; a new page starts
    only when the next block does not fit."""

    def __init__(self, pdf) -> None:
        self.pdf, self.fig, self.y = pdf, None, 0.0

    def _room(self, height: float) -> None:
        import matplotlib.pyplot as plt

        if self.fig is None or self.y - height < 0.05:
            self.close()
            self.fig, self.y = plt.figure(figsize=A4), 0.95

    def close(self) -> None:
        import matplotlib.pyplot as plt

        if self.fig is not None:
            self.pdf.savefig(self.fig)
            plt.close(self.fig)
            self.fig = None

    def text(self, text: str, size: float = 10, width: int | None = None, gap: float = 0.012, **opts) -> None:
        lines = textwrap.wrap(text, width=width or int(95 * 10 / size)) or [""]
        height = len(lines) * size * 1.45 / 72 / A4[1] + gap
        self._room(height)
        self.fig.text(0.08, self.y, "\n".join(lines), va="top", linespacing=1.45, fontsize=size, **opts)
        self.y -= height

    def heading(self, text: str, size: float = 13, keep: float = 0.12) -> None:
        self._room(keep)  # keep a heading with what follows it
        self.text(text, size=size, weight="bold", gap=0.008)

    def axes(self, height: float, rows: int = 1, cols: int = 1) -> list:
        """Axes for a chart ``height`` (share of the page) tall, in a grid."""
        self._room(height + 0.02)
        top, bottom = self.y - 0.01, self.y - height
        out = []
        gap_x, gap_y = 0.04, 0.05
        w = (0.84 - gap_x * (cols - 1)) / cols
        h = (top - bottom - gap_y * (rows - 1)) / rows
        for r in range(rows):
            for k in range(cols):
                out.append(self.fig.add_axes([0.1 + k * (w + gap_x), top - (r + 1) * h - r * gap_y, w, h]))
        self.y -= height + 0.03
        return out

    def table(self, df: pl.DataFrame) -> None:
        """Every cell whole: columns sized to their longest cell; long tables continue on the next page."""
        cells = [["" if v is None else str(v) for v in row] for row in df.iter_rows()] or [[""] * len(df.columns)]
        widths = [max(len(str(h)), *(len(r[k]) for r in cells)) + 2 for k, h in enumerate(df.columns)]
        total = sum(widths)
        row_h = 0.022
        while cells:
            self._room(row_h * 3)
            fit = max(1, min(len(cells), int((self.y - 0.05) / row_h) - 1))
            part, cells = cells[:fit], cells[fit:]
            height = row_h * (len(part) + 1)
            ax = self.fig.add_axes([0.06, self.y - height, 0.88, height])
            ax.axis("off")
            tb = ax.table(cellText=part, colLabels=list(df.columns), colWidths=[w / total for w in widths],
                          loc="upper left", cellLoc="right", bbox=[0, 0, 1, 1])  # fmt: skip
            tb.auto_set_font_size(False)
            tb.set_fontsize(8 if total < 100 else 7 if total < 130 else 6)
            for (r, col), cell in tb.get_celld().items():
                if col == 0:
                    cell.set_text_props(ha="left")
                if r == 0:
                    cell.set_text_props(weight="bold")
                    cell.set_facecolor("#f0f0f0")
            self.y -= height + 0.02


def _draw(flow: _Flow, chart: Chart, bin_s: float) -> None:
    """A chart of a section, drawn with matplotlib into the page flow."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    from .figures import COLORS, PALETTE

    c = chart.clip
    if chart.kind == "photo":
        n = c.person_table.height
        cols = min(5, n)
        axes = flow.axes(0.16 * max(1, -(-n // cols)), rows=max(1, -(-n // cols)), cols=cols)
        for ax, r in zip(axes, c.person_table.iter_rows(named=True), strict=False):
            ax.bar(range(len(EXPRESSIONS)), [r[e] for e in EXPRESSIONS], color=[COLORS[e] for e in EXPRESSIONS])
            ax.set_ylim(0, 1)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_xticks(range(len(EXPRESSIONS)), [e[:3] for e in EXPRESSIONS], fontsize=6, rotation=90)
            ax.tick_params(labelsize=6)
            ax.set_title(pr.plain_text(r["person"] or f"person {r['person_id']}"), fontsize=8)
        for ax in axes[n:]:
            ax.axis("off")
        return
    if chart.kind == "overlay":
        (ax,) = flow.axes(0.22)
        sig = chart.signals[0]
        for k, (label, agg) in enumerate(chart.overlay.items()):
            t = agg["t_s"].to_numpy()
            ax.plot(t, agg[f"{sig}_mean"].to_numpy(), color=PALETTE[k % len(PALETTE)], label=label, lw=1.5)
        ax.set_ylim(0, 1)
        ax.set_ylabel("mean probability", fontsize=8)
        ax.set_xlabel("video time (s)", fontsize=8)
        ax.legend(fontsize=7, frameon=False)
        ax.tick_params(labelsize=7)
        return
    agg = c.attention if chart.kind == "attention" else c.agg
    signals = ("attentive",) if chart.kind == "attention" else chart.signals
    ax, bars = (
        flow.axes(0.3 if len(signals) > 2 else 0.2, rows=2) if chart.kind == "curves" else (*flow.axes(0.14), None)
    )
    t = agg["t_s"].to_numpy()
    strongest = set(c.summary.filter(pl.col("signal").is_in(signals)).sort("mean_over_people", descending=True)["signal"]
                    .head(3).to_list())  # fmt: skip
    for s in signals:
        color = COLORS.get(s, "#1f77b4")
        ax.plot(t, agg[f"{s}_mean"].to_numpy(), color=color, label=s, lw=1.8 if s in strongest else 1)
        if s in strongest:  # bands for the three strongest only: seven overlapping bands are unreadable
            ax.fill_between(t, agg[f"{s}_lo"].to_numpy(), agg[f"{s}_hi"].to_numpy(), color=color, alpha=0.13, lw=0)
    lo, hi = (-1, 1) if set(signals) <= {"valence", "arousal"} else (0, 1.05 if chart.kind == "attention" else 1)
    if c.based is not None and chart.kind == "curves":  # changes from baseline: no fixed range, 0 marked
        ax.axhline(0, color="#888", lw=0.6)
        lo, hi = ax.get_ylim()
        ax.set_ylabel("change from baseline", fontsize=8)
    else:
        ax.set_ylim(lo, hi)
        ax.set_ylabel("share attentive" if chart.kind == "attention" else "score (derived)" if lo < 0
                      else "mean probability", fontsize=8)  # fmt: skip
    ax.tick_params(labelsize=7)
    ax.legend(ncol=7, fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False)
    for m in c.markers.unique("marker", maintain_order=True).iter_rows(named=True) if c.markers.height else []:
        ax.axvline(m["start_s"], color="#f0a000", ls=":", lw=1)
        ax.annotate(pr.plain_text(m["marker"]), (m["start_s"], hi * 0.98), fontsize=6, color="#a06000", rotation=90,
                    va="top")  # fmt: skip
    if bars is not None:
        people_col = "n_people" if "n_people" in agg.columns else "n_faces"
        bars.bar(t, agg[people_col].to_numpy(), width=bin_s * 0.9, color="#bbb", align="edge")
        bars.set_ylabel("people in view", fontsize=8)
        bars.yaxis.set_major_locator(MaxNLocator(integer=True))
        bars.set_xlim(ax.get_xlim())
        bars.tick_params(labelsize=7)
        bars.set_xlabel("video time (s)", fontsize=8)
        ax.tick_params(labelbottom=False)
    else:
        ax.set_xlabel("video time (s)", fontsize=8)


def pdf_report(data: ReportData) -> bytes:
    """The same sections as the HTML report, as a portrait A4 PDF drawn with matplotlib (no browser needed). User
    text is never parsed as mathtext ("$x$" stays as typed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_pdf import PdfPages

    buf = io.BytesIO()
    meta, caveat = _intro(data)
    with matplotlib.rc_context({"text.parse_math": False}), PdfPages(buf) as pdf:
        flow = _Flow(pdf)
        flow.text(data.title, size=15, width=55, weight="bold", gap=0.02)
        flow.text(meta, size=9, color="#555")
        flow.text(caveat, gap=0.03, bbox={"facecolor": "#fff6e0", "edgecolor": "#f0a000", "pad": 6})
        for sec in sections(data):
            flow.heading(sec.heading, size=13 if sec.level == 2 else 11, keep=0.4 if sec.chart is not None else 0.12)
            for t in sec.text:
                flow.text(t, size=9)
            for b in sec.bullets:
                flow.text("•  " + b)
            if sec.chart is not None:
                _draw(flow, sec.chart, data.bin_s)
            if sec.table is not None and sec.table.height:
                flow.table(sec.table)
        flow.close()
        info = pdf.infodict()
        info["Title"] = data.title
        info["Creator"] = f"ferpipe {__version__}"
    return buf.getvalue()


def render(data: ReportData, fmt: str) -> bytes:
    """The report in one of FORMATS, as bytes ready to write or download."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "html":
        return html_report(data).encode()
    if fmt == "pdf":
        return pdf_report(data)
    return table_bytes(curves_table(data), fmt)
