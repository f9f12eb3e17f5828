"""Export: curves and timelines as CSV/Parquet, and HTML/PDF reports, for a clip or a comparison."""

import io

import polars as pl
import streamlit as st
from common import caveat, store

from ferpipe import analytics as an
from ferpipe.report import build_report, render

st.title("Export")
caveat()
s = store()
clips = s.clips().filter(pl.col("status").is_not_null())
if clips.is_empty():
    st.info("No processed clips yet.")
    st.stop()
titles = dict(zip(clips["clip_id"].to_list(), clips["title"].to_list()))
default = st.session_state.get("current_clip")
chosen = st.multiselect("Clips (one for a clip report, several for a comparison)", list(titles),
                        default=[default] if default in titles else list(titles)[:1], format_func=titles.get)  # fmt: skip
bin_s = st.select_slider("Bin width (s)", [0.5, 1.0, 2.0, 5.0], value=1.0)
if not chosen:
    st.stop()


def table_bytes(df: pl.DataFrame, fmt: str) -> bytes:
    buf = io.BytesIO()
    df.write_csv(buf) if fmt == "csv" else df.write_parquet(buf)
    return buf.getvalue()


st.subheader("Data")
runs = {c: s.best_run(c) for c in chosen}
timelines = pl.concat([an.timeline_export(s, c, r) for c, r in runs.items() if r is not None])
data = build_report(s, chosen, bin_s=bin_s)
curves = pl.concat([agg.with_columns(pl.lit(label).alias("clip")) for label, agg in data.aggs.items()])
c1, c2 = st.columns(2)
for fmt in ("csv", "parquet"):
    c1.download_button(f"Aggregated curves ({fmt})", table_bytes(curves, fmt), f"ferpipe_curves.{fmt}", key=f"agg-{fmt}")
    c2.download_button(f"Per-face timelines ({fmt})", table_bytes(timelines, fmt), f"ferpipe_timelines.{fmt}",
                       key=f"tl-{fmt}")  # fmt: skip
st.subheader("Reports")
st.caption("Charts, tables, settings, model and date; the HTML file is self-contained and opens offline.")
c3, c4 = st.columns(2)
c3.download_button("HTML report", render(data, "html"), "ferpipe_report.html", mime="text/html", key="html")
c4.download_button("PDF report", render(data, "pdf"), "ferpipe_report.pdf", mime="application/pdf", key="pdf")
