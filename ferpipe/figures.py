"""Plotly figures shared by the dashboard and the HTML report."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from .types import EXPRESSIONS

COLORS = {
    "angry": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happy": "#2ca02c",
    "sad": "#1f77b4", "surprise": "#ff7f0e", "neutral": "#7f7f7f", "valence": "#17becf", "arousal": "#bcbd22",
}  # fmt: skip
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def plotly_text(text: object) -> str:
    """User text (titles, marker and person names) for a Plotly label: Plotly renders a subset of HTML in
    labels, so ``<a href>`` would become a live link; escaped, it is shown as typed."""
    import html

    return html.escape(str(text), quote=False)


def _band(agg: pl.DataFrame, signal: str) -> tuple[np.ndarray, np.ndarray]:
    """A curve's 95% band; where there is none (fewer than two faces) it closes onto the mean, so the shaded
    polygon never jumps across gaps."""
    mean = agg[f"{signal}_mean"].to_numpy().astype(np.float64)
    lo, hi = (agg[f"{signal}_{k}"].to_numpy().astype(np.float64) for k in ("lo", "hi"))
    return np.where(np.isfinite(lo), lo, mean), np.where(np.isfinite(hi), hi, mean)


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def y_title(signals: list[str]) -> str:
    """The y axis of curves of these signals: what they are, with their unit."""
    from .analytics import SIGNAL_INFO

    if all(s in EXPRESSIONS for s in signals):
        return "mean probability"
    if all(s in ("valence", "arousal") for s in signals):
        return "valence / arousal (−1 … 1, derived)"
    if all(s.endswith("_deg") for s in signals):
        return "degrees"
    if signals == ["attentive"]:
        return "share of faces attentive"
    if len(signals) == 1:
        return SIGNAL_INFO[signals[0]].label if signals[0] in SIGNAL_INFO else signals[0]
    return "mean score (0 … 1)"


def curves_figure(agg: pl.DataFrame, signals: list[str], x: str = "t_s", title: str = "",
                  x_title: str = "video time (s)", marker_t: float | None = None, names: dict | None = None,
                  markers: list[tuple[str, float, float | None]] | None = None,
                  y_label: str | None = None) -> go.Figure:  # fmt: skip
    """Mean curves with 95% CI bands, and the number of faces in view underneath.

    names: legend names by signal; markers: (label, start_s, end_s or None) drawn on the curves; y_label: the y
    axis's title where it is not the signals' own (baseline-corrected readings).
    """
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.78, 0.22], vertical_spacing=0.04)
    t = agg[x].to_numpy()
    for s in signals:
        color = COLORS.get(s, PALETTE[signals.index(s) % len(PALETTE)])
        lo, hi = _band(agg, s)
        fig.add_trace(go.Scatter(x=np.concatenate([t, t[::-1]]), y=np.concatenate([hi, lo[::-1]]), fill="toself",
                                 fillcolor=_rgba(color, 0.15), line={"width": 0}, hoverinfo="skip", showlegend=False,
                                 legendgroup=s), 1, 1)  # fmt: skip
        name = plotly_text((names or {}).get(s, s))
        fig.add_trace(go.Scatter(x=t, y=agg[f"{s}_mean"].to_numpy(), name=name, line={"color": color, "width": 2},
                                 legendgroup=s, hovertemplate=f"{name} %{{y:.2f}} at %{{x:.1f}}<extra></extra>"), 1, 1)  # fmt: skip
    people = "n_people" in agg.columns
    counts = agg["n_people" if people else "n_faces"]
    what = "people" if people else "faces"
    fig.add_trace(go.Bar(x=t, y=counts.to_numpy(), name=f"{what} in view", marker_color="#bbbbbb",
                         showlegend=False, hovertemplate=f"%{{y}} {what}<extra></extra>"), 2, 1)  # fmt: skip
    if marker_t is not None:
        fig.add_vline(x=marker_t, line_dash="dash", line_color="#444")
    add_markers(fig, markers)
    fig.update_yaxes(title_text=y_label or y_title(signals), row=1, col=1)
    fig.update_yaxes(title_text=what, row=2, col=1, rangemode="tozero", tickformat="d", dtick=max(1, int(np.ceil(
        (counts.max() or 1) / 4))) if agg.height else 1)  # fmt: skip
    fig.update_xaxes(title_text=x_title, row=2, col=1)
    top = 70 if title else 30
    fig.update_layout(title={"text": plotly_text(title), "y": 0.98, "x": 0.01} if title else None, height=470,
                      margin={"l": 60, "r": 20, "t": top, "b": 40},
                      legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0})  # fmt: skip
    return fig


def add_markers(fig: go.Figure, markers: list[tuple[str, float, float | None]] | None) -> None:
    """Event markers on a figure: a dotted line at a point, a shaded span for an interval, each labelled."""
    for label, start, end in markers or []:
        label = plotly_text(label)
        if end is not None and end > start:
            fig.add_vrect(x0=start, x1=end, fillcolor="#f0a000", opacity=0.12, line_width=0, annotation_text=label,
                          annotation_position="top left", annotation_font_size=10)  # fmt: skip
        else:
            fig.add_vline(x=start, line_dash="dot", line_color="#f0a000", annotation_text=label,
                          annotation_position="top", annotation_font_size=10)  # fmt: skip


def share_figure(shares: pl.DataFrame, expressions: list[str] | None = None) -> go.Figure:
    """Stacked area: % of faces in view whose top expression is each expression."""
    fig = go.Figure()
    for e in expressions or list(EXPRESSIONS):
        fig.add_trace(go.Scatter(x=shares["t_s"].to_numpy(), y=(shares[f"{e}_share"] * 100).to_numpy(), name=e,
                                 stackgroup="one", line={"color": COLORS[e], "width": 0.5}))  # fmt: skip
    fig.update_layout(height=300, yaxis_title="% of faces showing", xaxis_title="video time (s)",
                      margin={"l": 50, "r": 20, "t": 10, "b": 40}, yaxis_range=[0, 100])  # fmt: skip
    return fig


def face_figure(obs: pl.DataFrame, face_ids: list[int], signals: list[str], names: dict | None = None) -> go.Figure:
    """Small multiples: one row per person (or track), its per-frame probabilities."""
    face_ids = face_ids or []
    unit = "person_id" if "person_id" in obs.columns else "face_id"
    what = "person" if unit == "person_id" else "face"
    fig = make_subplots(rows=max(1, len(face_ids)), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[plotly_text((names or {}).get(f) or f"{what} {f}") for f in face_ids])  # fmt: skip
    for row, fid in enumerate(face_ids, start=1):
        part = obs.filter(pl.col(unit) == fid).sort("timestamp_ms")
        t = (part["timestamp_ms"] / 1000).to_numpy()
        for s in signals:
            fig.add_trace(go.Scatter(x=t, y=part[s].to_numpy(), name=s, line={"color": COLORS.get(s), "width": 1.5},
                                     legendgroup=s, showlegend=row == 1), row, 1)  # fmt: skip
        fig.update_yaxes(range=[0, 1], row=row, col=1)
    fig.update_layout(height=max(220, 170 * len(face_ids)), margin={"l": 50, "r": 20, "t": 30, "b": 40})
    fig.update_xaxes(title_text="video time (s)", row=max(1, len(face_ids)), col=1)
    return fig


def overlay_figure(aggs: dict[str, pl.DataFrame], signal: str, x: str = "t_s", x_title: str = "video time (s)",
                   markers: list[tuple[str, float, float | None]] | None = None) -> go.Figure:  # fmt: skip
    """One signal's mean curve (with CI band) for several clips or segments."""
    fig = go.Figure()
    for k, (label, agg) in enumerate(aggs.items()):
        color = PALETTE[k % len(PALETTE)]
        t = agg[x].to_numpy()
        lo, hi = _band(agg, signal)
        fig.add_trace(go.Scatter(x=np.concatenate([t, t[::-1]]), y=np.concatenate([hi, lo[::-1]]), fill="toself",
                                 fillcolor=_rgba(color, 0.12), line={"width": 0}, hoverinfo="skip", showlegend=False))  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=t, y=agg[f"{signal}_mean"].to_numpy(), name=plotly_text(label), line={"color": color, "width": 2}
            )
        )
    add_markers(fig, markers)
    fig.update_layout(height=400, xaxis_title=x_title, yaxis_title=y_title([signal]),
                      margin={"l": 60, "r": 20, "t": 30, "b": 40},
                      legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0})  # fmt: skip
    return fig


def confusion_figure(confusion: list[list[int]], labels: list[str]) -> go.Figure:
    """Row-normalised confusion matrix (true class by row) as a heatmap with counts."""
    cm = np.asarray(confusion, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = go.Figure(go.Heatmap(z=norm, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1,
                               text=cm.astype(int), texttemplate="%{text}", hovertemplate="true %{y}, predicted %{x}: "
                               "%{z:.0%}<extra></extra>"))  # fmt: skip
    fig.update_layout(height=420, xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                      margin={"l": 60, "r": 20, "t": 10, "b": 50})  # fmt: skip
    return fig


def photo_figure(people: pl.DataFrame, names: dict | None = None, signals: tuple[str, ...] = EXPRESSIONS) -> go.Figure:
    """A photo's faces as small multiples: one bar chart of the seven probabilities per face (a photo has no time
    axis). people: one row per person (person_id and the expression columns)."""
    ids = people["person_id"].to_list()
    cols = min(5, max(1, len(ids)))
    rows = max(1, -(-len(ids) // cols))
    titles = [plotly_text((names or {}).get(i) or f"person {i}") for i in ids]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_yaxes=True, vertical_spacing=0.12)
    for k, r in enumerate(people.iter_rows(named=True)):
        fig.add_trace(go.Bar(x=list(signals), y=[r[e] for e in signals], marker_color=[COLORS[e] for e in signals],
                             showlegend=False, hovertemplate="%{x} %{y:.0%}<extra></extra>"),
                      k // cols + 1, k % cols + 1)  # fmt: skip
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    fig.update_layout(height=max(260, 230 * rows), margin={"l": 50, "r": 20, "t": 40, "b": 40})
    return fig


def stream_figure(agg: pl.DataFrame, streams: list[str], units: dict[str, str] | None = None, x: str = "t_s",
                  x_title: str = "video time (s)", names: dict | None = None,
                  markers: list[tuple[str, float, float | None]] | None = None) -> go.Figure:  # fmt: skip
    """Recorded streams (a GSR channel...) one above the other on the clip's time axis, each on its own scale and
    unit, with its range within each bin shaded."""
    fig = make_subplots(rows=max(1, len(streams)), cols=1, shared_xaxes=True, vertical_spacing=0.06)
    t = agg[x].to_numpy() if agg.height else np.zeros(0)
    for k, s in enumerate(streams):
        color = PALETTE[k % len(PALETTE)]
        lo, hi = _band(agg, s)
        name = plotly_text((names or {}).get(s, s))
        fig.add_trace(go.Scatter(x=np.concatenate([t, t[::-1]]), y=np.concatenate([hi, lo[::-1]]), fill="toself",
                                 fillcolor=_rgba(color, 0.15), line={"width": 0}, hoverinfo="skip",
                                 showlegend=False), k + 1, 1)  # fmt: skip
        unit = (units or {}).get(s) or ""
        fig.add_trace(go.Scatter(x=t, y=agg[f"{s}_mean"].to_numpy(), name=name, line={"color": color, "width": 2},
                                 hovertemplate=f"{name} %{{y:.3g}} {plotly_text(unit)} at %{{x:.1f}}<extra></extra>"),
                      k + 1, 1)  # fmt: skip
        fig.update_yaxes(title_text=plotly_text(f"{name} ({unit})" if unit else name), row=k + 1, col=1)
    add_markers(fig, markers)
    fig.update_xaxes(title_text=x_title, row=max(1, len(streams)), col=1)
    fig.update_layout(
        height=160 + 170 * max(1, len(streams)), margin={"l": 60, "r": 20, "t": 30, "b": 40}, showlegend=False
    )  # each stream's axis names it
    return fig
