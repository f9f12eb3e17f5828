"""Reports a researcher can send to a client: a summary of findings in words first, then curves, tables with
human names and stated thresholds, comparisons, markers, norms and the settings; as self-contained HTML, PDF,
and the curves as CSV/Parquet.

Every number is computed once (``build_report``) and laid out by each format.
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
from .analytics import (
    SIGNALS,
    aggregate_face_bins,
    blink_summary,
    compare_table,
    face_bins,
    marker_stats,
    norms,
    peak_table,
    person_means,
    summary,
)
from .store import QualityFilter, Store
from .types import EXPRESSIONS

FORMATS = ("html", "pdf", "csv", "parquet")
FORMULA_PREFIXES = r"^[=+\-@\t\r]"
SIGNIFICANCE = 0.05


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


@dataclass
class ClipReport:
    """One clip's part of a report."""

    clip: dict
    label: str
    run: object  # RunRow or None
    agg: pl.DataFrame
    attention: pl.DataFrame
    summary: pl.DataFrame  # per expression: mean, peak, peak time, time above, people
    peaks: pl.DataFrame
    people: int
    tracks: int
    attentive: float
    blinks_per_min: float
    no_mesh: float
    markers: pl.DataFrame
    norms: pl.DataFrame


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

    @property
    def aggs(self) -> dict[str, pl.DataFrame]:
        return {c.label: c.agg for c in self.clips}


def _label(clip: dict) -> str:
    return clip["title"] or clip["clip_id"]


def _ordinal(value: float) -> str:
    n = round(value)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _fmt_t(seconds: float) -> str:
    return f"{seconds:.0f} s" if abs(seconds) < 90 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def build_report(store: Store, clip_ids: list[str], bin_s: float = 1.0, method: str = "welch", threshold: float = 0.5,
                 quality: QualityFilter | None = None, marker_window_s: float = 5.0) -> ReportData:  # fmt: skip
    """Gather curves, summaries, peaks, attention, markers, norms and (for two or more clips) person-level
    comparisons of every pair of clips, and write the findings in words."""
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
        parts.append(_clip_part(store, rows.row(0, named=True), bin_s, threshold, quality, marker_window_s))
    labels = [p.label for p in parts]
    if len(set(labels)) < len(labels):  # two clips with one title: tell them apart
        for p in parts:
            p.label = f"{p.label} ({p.clip['clip_id']})"
    data = ReportData(
        title="Facial expression report: " + ", ".join(p.label for p in parts),
        generated_at=dt.datetime.now().strftime("%Y-%m-%d %H:%M"), bin_s=bin_s, threshold=threshold, method=method,
        quality=quality.describe(), clips=parts,
    )  # fmt: skip
    for a, b in itertools.combinations(parts, 2):
        ma = person_means(store, [a.clip["clip_id"]], SIGNALS)
        mb = person_means(store, [b.clip["clip_id"]], SIGNALS)
        data.comparisons.append((a.label, b.label, compare_table(ma, mb, method)))
    data.findings = _findings(data)
    return data


def _clip_part(store: Store, clip: dict, bin_s: float, threshold: float, quality: QualityFilter,
               marker_window_s: float) -> ClipReport:  # fmt: skip
    cid = clip["clip_id"]
    run_id = store.best_run(cid)
    empty = pl.DataFrame()
    if run_id is None:
        return ClipReport(clip, _label(clip), None, empty, empty, empty, empty, 0, 0, float("nan"), float("nan"),
                          float("nan"), empty, empty)  # fmt: skip
    run = store.run(run_id)
    fb = face_bins(store, run_id, bin_s, SIGNALS, quality)
    agg = aggregate_face_bins(fb, bin_s)
    att_fb = face_bins(store, run_id, bin_s, ("attentive",))
    attention = aggregate_face_bins(att_fb.filter(pl.col("attentive").is_not_null()), bin_s, ("attentive",))
    obs = store.observations(run_id, SIGNALS)
    rows = []
    for e in EXPRESSIONS:
        s = summary(agg, obs, e, threshold, bin_s=bin_s, duration_s=clip["duration_s"])
        rows.append({"Expression": e, "Mean": s["mean"], "Peak": s["peak"], "Peak at (s)": s["peak_t_s"],
                     f"Time above {threshold:g} (s)": s["time_above_s"], "People": s["n"]})  # fmt: skip
    summ = pl.DataFrame(rows)
    peaks = peak_table(agg, EXPRESSIONS, k=3, bin_s=bin_s) if agg.height else pl.DataFrame()
    if peaks.height:  # only peaks that stand out: above the threshold's half and above the curve's own mean
        means = dict(zip(summ["Expression"], summ["Mean"], strict=False))
        peaks = peaks.filter((pl.col("value") >= threshold / 2) & (pl.col("value") > pl.col("expression")
                             .replace_strict(means, return_dtype=pl.Float64) + 0.05))  # fmt: skip
    att = store.observations(run_id, ("attentive",))["attentive"]
    markers = store.markers(cid)
    mstats = (
        pl.concat(
            [
                marker_stats(obs, markers, e, marker_window_s).with_columns(pl.lit(e).alias("expression"))
                for e in EXPRESSIONS
            ]
        )
        if markers.height
        else pl.DataFrame()
    )
    ranks = pl.concat([norms(store, [cid], e, "mean").with_columns(pl.lit(e).alias("expression")) for e in EXPRESSIONS])
    return ClipReport(
        clip=clip, label=_label(clip), run=run, agg=agg, attention=attention, summary=summ, peaks=peaks,
        people=store.people(run_id).height, tracks=run.faces,
        attentive=float(att.drop_nulls().mean()) if att.drop_nulls().len() else float("nan"),
        blinks_per_min=blink_summary(store, run_id)["rate_per_min"] if att.drop_nulls().len() else float("nan"),
        no_mesh=float(att.null_count() / att.len()) if att.len() else float("nan"), markers=mstats, norms=ranks,
    )  # fmt: skip


def _findings(data: ReportData) -> list[str]:
    """The summary in words: what stood out, with the numbers behind it."""
    out = []
    for c in data.clips:
        if c.run is None or c.summary.is_empty() or c.agg.is_empty():
            out.append(f"{c.label}: not processed, or no faces found.")
            continue
        top = c.summary.sort("Mean", descending=True).row(0, named=True)
        people = f"{c.people} {'person' if c.people == 1 else 'people'}"
        linked = f" (from {c.tracks} face tracks)" if c.tracks > c.people else ""
        out.append(f"{c.label}: {people}{linked} over {_fmt_t(c.clip['duration_s'] or 0)}. The expression most shown "
                   f"on average was {top['Expression']} (mean probability {top['Mean']:.2f}).")  # fmt: skip
        if c.peaks.height:
            p = c.peaks.sort("value", descending=True).row(0, named=True)
            out.append(f"{c.label}: the strongest moment was {p['expression']} at {_fmt_t(p['t_s'])} "
                       f"(mean {p['value']:.2f} across the people in view).")  # fmt: skip
        if np.isfinite(c.attentive):
            rate = (c.run.settings or {}).get("sample_fps")
            blinks = (f"about {c.blinks_per_min:.0f} blinks per minute" if rate is None or rate >= 10 else
                      f"blink rates are not reported at {rate:g} frames/s (blinks need 10 or more)")  # fmt: skip
            out.append(f"{c.label}: faces were turned to the camera with open eyes (attentive) in "
                       f"{c.attentive:.0%} of observations; {blinks}.")  # fmt: skip
        if c.markers.height:
            for m in c.markers.filter(pl.col("change_during").abs() >= 0.05).sort(
                    pl.col("change_during").abs(), descending=True).head(3).iter_rows(named=True):  # fmt: skip
                verb = "rose" if m["change_during"] > 0 else "fell"
                out.append(f"{c.label}: at '{m['marker']}' ({m['start_s']:g} s) {m['expression']} {verb} by "
                           f"{abs(m['change_during']):.2f} (from {m['before_mean']:.2f} to {m['during_mean']:.2f}).")  # fmt: skip
        if c.norms.height and int(c.norms["norm_n"][0]) >= 3:
            r = c.norms.filter(pl.col("expression") == top["Expression"]).row(0, named=True)
            out.append(f"{c.label}: its mean {r['expression']} ranks at the {_ordinal(r['percentile'])} percentile of "
                       f"the {r['norm_n']} other clips in the library.")  # fmt: skip
    for a, b, table in data.comparisons:
        sig = table.filter(pl.col("p_value") < SIGNIFICANCE)
        n_a, n_b = (int(table[k][0]) for k in ("n_a", "n_b")) if table.height else (0, 0)
        if sig.is_empty():
            out.append(f"{a} vs {b}: no expression differed at p < {SIGNIFICANCE} ({n_a} vs {n_b} people"
                       + (", too few for a test" if min(n_a, n_b) < 2 else "") + ").")  # fmt: skip
        for r in sig.iter_rows(named=True):
            higher = a if r["mean_a"] > r["mean_b"] else b
            out.append(f"{a} vs {b}: {r['signal']} was higher in {higher} ({r['mean_a']:.2f} vs {r['mean_b']:.2f}, "
                       f"Hedges' g {r['hedges_g']:.2f}, p = {r['p_value']:.3f}, {r['n_a']} vs {r['n_b']} people).")  # fmt: skip
    if data.quality != "all observations":
        out.append(f"Expression curves use {data.quality}.")
    return out


def curves_table(data: ReportData) -> pl.DataFrame:
    """All aggregated curves, one row per clip and time bin."""
    parts = [c.agg.with_columns(pl.lit(c.label).alias("clip")) for c in data.clips if c.agg.height]
    df = pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()
    return df.select("clip", *[c for c in df.columns if c != "clip"]) if df.height else df


def settings_table(data: ReportData) -> pl.DataFrame:
    rows = []
    for c in data.clips:
        run = c.run
        rate = run.settings.get("sample_fps") if run else None
        rows.append({
            "Clip": c.label, "Duration": _fmt_t(c.clip["duration_s"] or 0), "People": str(c.people),
            "Face tracks": str(c.tracks), "Model": run.model if run else "-",
            "Analysis rate": "-" if run is None else "every frame" if rate is None else f"{rate:g} frames/s",
            "Processed": str(run.finished_at or run.updated_at or "-")[:16] if run else "-",
            "Tags": c.clip["tags"] or "",
        })  # fmt: skip
    return pl.DataFrame(rows)


def comparison_table(table: pl.DataFrame) -> pl.DataFrame:
    return table.select(
        pl.col("signal").alias("Signal"), pl.col("mean_a").alias("Mean A"), pl.col("mean_b").alias("Mean B"),
        pl.col("hedges_g").alias("Hedges' g"), pl.col("p_value").alias("p-value"), pl.col("n_a").alias("People A"),
        pl.col("n_b").alias("People B"),
    )  # fmt: skip


def markers_table(c: ClipReport) -> pl.DataFrame:
    return c.markers.select(
        pl.col("marker").alias("Marker"), pl.col("start_s").alias("At (s)"), pl.col("expression").alias("Expression"),
        pl.col("before_mean").alias("Before"), pl.col("during_mean").alias("During"),
        pl.col("after_mean").alias("After"), pl.col("change_during").alias("Change during"),
    )  # fmt: skip


def _fmt(v: object, digits: int = 2) -> str:
    if isinstance(v, float):
        return "—" if not np.isfinite(v) else f"{v:.{digits}f}"
    return "" if v is None else str(v)


def _html_table(df: pl.DataFrame, digits: int = 2) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v, digits))}</td>" for v in row) + "</tr>" for row in df.iter_rows()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_report(data: ReportData) -> str:
    """One self-contained HTML file: plotly.js is embedded once, no network needed to view it."""
    from .figures import curves_figure, overlay_figure

    first = True

    def fig_html(fig) -> str:
        nonlocal first
        out = fig.to_html(include_plotlyjs=first, full_html=False)
        first = False
        return out

    parts = [
        f"<h1>{html.escape(data.title)}</h1>",
        f"<p class='meta'>Generated {data.generated_at} by ferpipe {__version__}. Curves: mean over the people in view "
        f"per {data.bin_s:g} s bin, with 95% confidence bands; thresholds: {data.threshold:g}; tests: "
        f"{'Welch t-test' if data.method == 'welch' else 'permutation test'} on each person's mean; "
        f"observations used: {html.escape(data.quality)}.</p>",
        f"<p class='caveat'><b>Read this first.</b> {html.escape(CAVEAT)} Valence and arousal are derived from the "
        "seven probabilities through a fixed circumplex mapping, not measured. Attention and blendshapes are model "
        "readings of head pose and face shape, not gaze or FACS coding.</p>",
        "<h2>Summary of findings</h2><ul>", *[f"<li>{html.escape(f)}</li>" for f in data.findings], "</ul>",
        "<h2>Clips, settings and model</h2>", _html_table(settings_table(data)),
    ]  # fmt: skip
    for c in data.clips:
        if c.agg.is_empty():
            continue
        parts += [f"<h2>{html.escape(c.label)}</h2>",
                  fig_html(curves_figure(c.agg, list(EXPRESSIONS), title="Expressions (mean probability)")),
                  fig_html(curves_figure(c.agg, ["valence", "arousal"], title="Valence and arousal (derived)"))]  # fmt: skip
        if c.attention.height:
            parts.append(
                fig_html(curves_figure(c.attention, ["attentive"], title="Attention: share of people attentive"))
            )
        parts += ["<h3>Per expression</h3>", _html_table(c.summary)]
        if c.peaks.height:
            parts += ["<h3>Peak moments</h3>", _html_table(c.peaks.rename(
                {"expression": "Expression", "t_s": "At (s)", "value": "Mean probability"}, strict=False))]  # fmt: skip
        if c.markers.height:
            parts += ["<h3>Around the markers</h3>", _html_table(markers_table(c))]
        if c.norms.height:
            parts += [f"<h3>Norms: rank of each mean among the other {int(c.norms['norm_n'][0])} clips</h3>",
                      _html_table(c.norms.select(pl.col("expression").alias("Expression"), pl.col("value").alias("Mean"),
                                                 pl.col("percentile").alias("Percentile")))]  # fmt: skip
    if len(data.clips) > 1:
        parts.append("<h2>Clips side by side</h2>")
        for e in ("happy", "surprise", "neutral"):
            parts.append(fig_html(overlay_figure(data.aggs, e)))
    for a, b, table in data.comparisons:
        parts += [f"<h2>Comparison: {html.escape(a)} vs {html.escape(b)}</h2>",
                  "<p>Each person's mean over the clip is one data point; people, not frames, are the unit.</p>",
                  _html_table(comparison_table(table), 3)]  # fmt: skip
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
        ".caveat{background:#fff6e0;border-left:4px solid #f0a000;padding:.6em 1em}.meta{color:#666}li{margin:.3em 0}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(data.title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


A4 = (8.27, 11.69)


class _Flow:
    """Portrait A4 pages filled top to bottom with headings, wrapped paragraphs and tables; a new page starts
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

    def heading(self, text: str, size: float = 13) -> None:
        self._room(0.12)  # keep a heading with what follows it
        self.text(text, size=size, weight="bold", gap=0.008)

    def table(self, df: pl.DataFrame, digits: int = 2) -> None:
        """Every cell whole: columns sized to their longest cell; long tables continue on the next page."""
        cells = [[_fmt(v, digits) for v in row] for row in df.iter_rows()] or [[""] * len(df.columns)]
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
            tb.set_fontsize(8 if total < 100 else 7)
            for (r, col), cell in tb.get_celld().items():
                if col == 0:
                    cell.set_text_props(ha="left")
                if r == 0:
                    cell.set_text_props(weight="bold")
                    cell.set_facecolor("#f0f0f0")
            self.y -= height + 0.02


def pdf_report(data: ReportData) -> bytes:
    """The same report as a portrait A4 PDF, drawn with matplotlib (no browser needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.ticker import MaxNLocator

    from .figures import COLORS

    buf = io.BytesIO()
    with PdfPages(buf) as pdf:
        flow = _Flow(pdf)
        flow.text(data.title, size=15, width=55, weight="bold", gap=0.02)
        flow.text(f"Generated {data.generated_at} by ferpipe {__version__}. Curves are means over the people in view "
                  f"per {data.bin_s:g} s bin with 95% confidence bands; 'time above' counts time over {data.threshold:g}; "
                  f"tests are {'Welch t-tests' if data.method == 'welch' else 'permutation tests'} on each person's mean; "
                  f"observations used: {data.quality}.", size=9, color="#555")  # fmt: skip
        flow.text("Read this first: " + CAVEAT + " Valence and arousal are derived from the seven probabilities, not "
                  "measured. Attention and blendshapes are model readings of head pose and face shape, not gaze or "
                  "FACS coding.", gap=0.03, bbox={"facecolor": "#fff6e0", "edgecolor": "#f0a000", "pad": 6})  # fmt: skip
        flow.heading("Summary of findings")
        for f in data.findings:
            flow.text("•  " + f)
        flow.heading("Clips, settings and model")
        flow.table(settings_table(data))
        flow.close()
        for c in data.clips:
            if c.agg.is_empty():
                continue
            people_col = "n_people" if "n_people" in c.agg.columns else "n_faces"
            rows = 3 if c.attention.height else 2
            fig, axes = plt.subplots(rows, 1, figsize=A4, sharex=True,
                                     gridspec_kw={"height_ratios": [4, 1.2, 1.6][:rows]})  # fmt: skip
            ax1, ax2 = axes[0], axes[1]
            t = c.agg["t_s"].to_numpy()
            strongest = set(c.summary.sort("Mean", descending=True)["Expression"].head(3).to_list())
            for e in EXPRESSIONS:
                ax1.plot(t, c.agg[f"{e}_mean"].to_numpy(), color=COLORS[e], label=e, lw=1.8 if e in strongest else 1)
                if e in strongest:  # bands for the three strongest only: seven overlapping bands are unreadable
                    lo, hi = c.agg[f"{e}_lo"].to_numpy(), c.agg[f"{e}_hi"].to_numpy()
                    ax1.fill_between(t, lo, hi, color=COLORS[e], alpha=0.13, lw=0)
            ax1.set_ylim(0, 1)
            ax1.set_ylabel("mean probability (bands: 95% CI of the top 3)")
            ax1.set_title(c.label, loc="left", fontsize=13, weight="bold", pad=28)
            ax1.legend(ncol=7, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False)
            for m in c.markers.unique("marker", maintain_order=True).iter_rows(named=True) if c.markers.height else []:
                for ax in axes:
                    ax.axvline(m["start_s"], color="#f0a000", ls=":", lw=1)
                ax1.annotate(m["marker"], (m["start_s"], 0.98), fontsize=7, color="#a06000", rotation=90, va="top")
            ax2.bar(t, c.agg[people_col].to_numpy(), width=data.bin_s * 0.9, color="#bbb", align="edge")
            ax2.set_ylabel("people in view" if people_col == "n_people" else "faces in view")
            ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
            if rows == 3:
                axes[2].plot(c.attention["t_s"].to_numpy(), c.attention["attentive_mean"].to_numpy(), color="#1f77b4")
                axes[2].set_ylim(0, 1.05)
                axes[2].set_ylabel("share attentive")
            axes[-1].set_xlabel("video time (s)")
            fig.tight_layout(rect=(0.02, 0.02, 0.98, 0.97))
            pdf.savefig(fig)
            plt.close(fig)
            flow.heading(f"{c.label}: per expression")
            flow.table(c.summary)
            if c.peaks.height:
                flow.heading(f"{c.label}: peak moments")
                flow.table(c.peaks.rename({"expression": "Expression", "t_s": "At (s)", "value": "Mean probability",
                                           "n_people": "People in view", "n_faces": "Faces in view"}, strict=False))  # fmt: skip
            if c.markers.height:
                flow.heading(f"{c.label}: around the markers")
                flow.table(markers_table(c))
            flow.close()
        for a, b, table in data.comparisons:
            flow.heading(f"Comparison: {a} vs {b}")
            flow.text("Each person's mean over the clip is one data point; people, not frames, are the unit.", size=9)
            flow.table(comparison_table(table), digits=3)
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
