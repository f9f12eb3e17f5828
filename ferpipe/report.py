"""Reports for one clip or a comparison: self-contained HTML, PDF, and CSV/Parquet of the curves."""

from __future__ import annotations

import datetime as dt
import html
import io
import json
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from . import CAVEAT, __version__
from .analytics import (
    aggregate_frame,
    clip_observations,
    compare_table,
    dominant_share,
    face_means,
    peak_table,
    summary,
)
from .store import Store
from .types import EXPRESSIONS

FORMATS = ("html", "pdf", "csv", "parquet")
FORMULA_PREFIXES = r"^[=+\-@\t\r]"


def safe_for_spreadsheets(df: pl.DataFrame) -> pl.DataFrame:
    """Text cells that a spreadsheet would run as a formula (=, +, -, @, tab, CR first) get a leading quote,
    so a title like ``=HYPERLINK(...)`` is shown, not executed, when a CSV is opened. Numbers are untouched."""
    text = [c for c, t in df.schema.items() if t == pl.String]
    return df.with_columns(
        pl.when(pl.col(c).str.contains(FORMULA_PREFIXES)).then(pl.lit("'") + pl.col(c)).otherwise(pl.col(c)).alias(c)
        for c in text
    )


@dataclass
class ReportData:
    """Everything a report shows, computed once for every format."""

    title: str
    generated_at: str
    bin_s: float
    clips: list[dict]
    aggs: dict[str, pl.DataFrame]
    summaries: pl.DataFrame
    shares: pl.DataFrame
    peaks: dict[str, pl.DataFrame]
    comparison: pl.DataFrame | None = None
    comparison_labels: tuple[str, str] | None = None
    notes: list[str] = field(default_factory=list)


def _label(clip: dict) -> str:
    return f"{clip['title']} ({clip['clip_id']})"


def build_report(store: Store, clip_ids: list[str], bin_s: float = 1.0, method: str = "welch",
                 threshold: float = 0.5) -> ReportData:  # fmt: skip
    """Gather curves, summaries, shares, peaks and (for two or more clips) a face-level comparison."""
    if not clip_ids:
        raise ValueError("a report needs at least one clip")
    clips_df = store.clips()
    clips = []
    for cid in clip_ids:
        rows = clips_df.filter(pl.col("clip_id") == cid)
        if rows.is_empty():
            raise ValueError(f"unknown clip {cid!r}")
        clip = rows.row(0, named=True)
        run_id = store.best_run(cid)
        clip["run"] = store.run(run_id) if run_id is not None else None
        clips.append(clip)
    obs = clip_observations(store, clip_ids)
    aggs, summaries, shares, pk = {}, [], [], {}
    for clip in clips:
        label = _label(clip)
        part = obs.filter(pl.col("clip_id") == clip["clip_id"])
        agg = aggregate_frame(part, bin_s)
        aggs[label] = agg
        for e in (*EXPRESSIONS, "valence", "arousal"):
            summaries.append({"clip": label, "signal": e, **summary(agg, part, e, threshold, bin_s=bin_s)})
        shares.append({"clip": label, **{e: round(v * 100, 1) for e, v in dominant_share(face_means(part)).items()}})
        pk[label] = peak_table(agg, EXPRESSIONS, bin_s=bin_s)
    data = ReportData(
        title="ferpipe report: " + ", ".join(c["title"] or c["clip_id"] for c in clips),
        generated_at=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        bin_s=bin_s, clips=clips, aggs=aggs, summaries=pl.DataFrame(summaries), shares=pl.DataFrame(shares), peaks=pk,
    )  # fmt: skip
    if len(clips) >= 2:
        fm = face_means(obs)
        a = fm.filter(pl.col("clip_id") == clips[0]["clip_id"])
        b = fm.filter(pl.col("clip_id").is_in([c["clip_id"] for c in clips[1:]]))
        data.comparison = compare_table(a, b, method)
        data.comparison_labels = (_label(clips[0]), ", ".join(_label(c) for c in clips[1:]))
        data.notes.append(
            f"Comparison of face-level means ({method}): {a.height} faces vs {b.height} faces. "
            "Faces, not frames, are the unit; small numbers of faces give wide uncertainty."
        )
    return data


def curves_table(data: ReportData) -> pl.DataFrame:
    """All aggregated curves, one row per clip and time bin."""
    parts = [agg.with_columns(pl.lit(label).alias("clip")) for label, agg in data.aggs.items()]
    df = pl.concat(parts) if parts else pl.DataFrame()
    return df.select("clip", *[c for c in df.columns if c != "clip"]) if df.height else df


def _settings_rows(data: ReportData) -> list[tuple[str, ...]]:
    rows = []
    for c in data.clips:
        run = c["run"]
        if run is None:
            rows.append((_label(c), f"{c['duration_s'] or 0:.1f} s", "0", "-", "-", "-", "-", c["tags"] or ""))
            continue
        rate = run.settings.get("sample_fps")
        rows.append((
            _label(c), f"{c['duration_s'] or 0:.1f} s", str(run.faces), run.model, run.detector,
            "every frame" if rate is None else f"{rate} fps", str(run.finished_at or run.updated_at or "-")[:16],
            c["tags"] or "",
        ))  # fmt: skip
    return rows


SETTINGS_HEADER = ("clip", "duration", "faces", "model", "detector", "analysis rate", "processed", "tags")


def _html_table(df: pl.DataFrame, digits: int = 3) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.iter_rows():
        cells = []
        for v in row:
            if isinstance(v, float):
                v = "" if np.isnan(v) else (f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}")
            cells.append(f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_report(data: ReportData) -> str:
    """One self-contained HTML file: plotly.js is embedded once, no network needed to view it."""
    from .figures import curves_figure, overlay_figure

    figs = []
    first = True
    for label, agg in data.aggs.items():
        fig = curves_figure(agg, list(EXPRESSIONS), title=label)
        figs.append(fig.to_html(include_plotlyjs=first, full_html=False))
        first = False
        va = curves_figure(agg, ["valence", "arousal"], title=f"{label}: valence and arousal (derived)")
        figs.append(va.to_html(include_plotlyjs=False, full_html=False))
    if len(data.aggs) > 1:
        for e in ("happy", "surprise", "neutral"):
            figs.append(overlay_figure(data.aggs, e).to_html(include_plotlyjs=False, full_html=False))
    settings = pl.DataFrame([dict(zip(SETTINGS_HEADER, r)) for r in _settings_rows(data)])
    parts = [
        f"<h1>{html.escape(data.title)}</h1>",
        f"<p class='meta'>Generated {data.generated_at} by ferpipe {__version__}; time bins of {data.bin_s:g} s; "
        "curves are means over faces in view with 95% confidence bands.</p>",
        f"<p class='caveat'><b>Read this first.</b> {html.escape(CAVEAT)} Valence and arousal are derived from the "
        "seven probabilities through a fixed circumplex mapping, not measured.</p>",
        "<h2>Clips, settings and model</h2>", _html_table(settings),
        "<h2>Expression curves</h2>", *figs,
        "<h2>Summary per clip</h2>",
        _html_table(data.summaries.rename({"time_above_s": "s above 0.5", "peak_t_s": "peak at (s)"})),
        "<h2>% of faces whose overall top expression is each expression</h2>", _html_table(data.shares, 1),
    ]  # fmt: skip
    for label, pk in data.peaks.items():
        parts += [f"<h2>Peak moments: {html.escape(label)}</h2>", _html_table(pk)]
    if data.comparison is not None:
        a, b = data.comparison_labels or ("A", "B")
        parts += [f"<h2>Comparison: {html.escape(a)} vs {html.escape(b)}</h2>",
                  *[f"<p>{html.escape(n)}</p>" for n in data.notes], _html_table(data.comparison)]  # fmt: skip
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}"
        ".caveat{background:#fff6e0;border-left:4px solid #f0a000;padding:.6em 1em}.meta{color:#666}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(data.title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )


def pdf_report(data: ReportData) -> bytes:
    """A PDF with the same content, drawn with matplotlib (no browser needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    from .figures import COLORS

    buf = io.BytesIO()
    with PdfPages(buf) as pdf:
        fig = plt.figure(figsize=(11.7, 8.3))
        fig.text(0.05, 0.93, data.title, fontsize=16, weight="bold")
        fig.text(0.05, 0.89, f"Generated {data.generated_at} by ferpipe {__version__}; bins of {data.bin_s:g} s",
                 fontsize=9, color="#555")  # fmt: skip
        fig.text(0.05, 0.83, "Read this first: " + CAVEAT + "\nValence and arousal are derived, not measured.",
                 fontsize=10, wrap=True, bbox={"facecolor": "#fff6e0", "edgecolor": "#f0a000"})  # fmt: skip
        ax = fig.add_axes([0.05, 0.35, 0.9, 0.4])
        ax.axis("off")
        table = ax.table(cellText=_settings_rows(data) or [["-"] * len(SETTINGS_HEADER)], colLabels=SETTINGS_HEADER,
                         loc="upper center")  # fmt: skip
        table.auto_set_font_size(False)
        table.set_fontsize(7)
        pdf.savefig(fig)
        plt.close(fig)
        for label, agg in data.aggs.items():
            fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11.7, 8.3), sharex=True, gridspec_kw={"height_ratios": [4, 1]})
            t = agg["t_s"].to_numpy()
            for e in EXPRESSIONS:
                m = agg[f"{e}_mean"].to_numpy()
                ax1.plot(t, m, color=COLORS[e], label=e)
                ax1.fill_between(t, agg[f"{e}_lo"].to_numpy(), agg[f"{e}_hi"].to_numpy(), color=COLORS[e], alpha=0.15)
            ax1.set_ylabel("mean probability (95% CI)")
            ax1.set_title(label)
            ax1.legend(ncol=7, fontsize=8, loc="upper center")
            ax2.bar(t, agg["n_people" if "n_people" in agg.columns else "n_faces"].to_numpy(), width=data.bin_s * 0.9, color="#bbb")
            ax2.set_ylabel("faces")
            ax2.set_xlabel("video time (s)")
            pdf.savefig(fig)
            plt.close(fig)
        tables = [("Summary per clip", data.summaries), ("% of faces by overall top expression", data.shares)]
        if data.comparison is not None:
            tables.append(("Comparison of face-level means: " + " vs ".join(data.comparison_labels or ()), data.comparison))
        for title, df in tables:
            for start in range(0, max(df.height, 1), 28):
                part = df.slice(start, 28)
                fig = plt.figure(figsize=(11.7, 8.3))
                fig.text(0.05, 0.94, title, fontsize=13, weight="bold")
                ax = fig.add_axes([0.03, 0.05, 0.94, 0.85])
                ax.axis("off")
                cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in part.iter_rows()]
                tb = ax.table(cellText=cells or [[""] * len(df.columns)], colLabels=df.columns, loc="upper center")
                tb.auto_set_font_size(False)
                tb.set_fontsize(7)
                pdf.savefig(fig)
                plt.close(fig)
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
    table = curves_table(data)
    buf = io.BytesIO()
    if fmt == "csv":
        safe_for_spreadsheets(table).write_csv(buf)
    else:
        table.write_parquet(buf)
    return buf.getvalue()
