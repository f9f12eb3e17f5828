"""Export: curves and per-person timelines as CSV/Parquet, and HTML/PDF reports, for a clip or a comparison."""

import polars as pl
import streamlit as st
from common import baseline_control, caveat, plain, store

from ferpipe import analytics as an
from ferpipe.baseline import correct_timeline, corrected_face_bins
from ferpipe.interop import tool_file_bytes
from ferpipe.report import build_report, render, table_bytes
from ferpipe.store import QualityFilter

st.title("Export")
caveat()
s = store()
clips = s.clips().filter(pl.col("status").is_in(["done", "truncated"]))
if clips.is_empty():
    st.info("No processed clips yet.")
    st.stop()
titles = dict(zip(clips["clip_id"].to_list(), clips["title"].to_list(), strict=False))
default = st.session_state.get("current_clip")
chosen = st.multiselect("Clips (one for a clip report, several to compare them pair by pair)", list(titles),
                        default=[default] if default in titles else list(titles)[:1], format_func=titles.get)  # fmt: skip
c1, c2, c3 = st.columns(3)
bin_s = c1.select_slider("Bin width (s)", [0.5, 1.0, 2.0, 5.0, 10.0, 30.0], value=1.0)
threshold = c2.slider("Threshold for 'time above'", 0.05, 0.95, 0.5, 0.05)
attentive = c3.checkbox("Attentive faces only (expression curves)")
quality = QualityFilter(attentive_only=attentive)
if not chosen:
    st.stop()
in_all = set.intersection(*[set(s.markers(c).filter(pl.col("end_s").is_not_null())["name"].to_list()) for c in chosen])
BASELINE = baseline_control("export_baseline", sorted(in_all), max(float(s.clip(c)["duration_s"] or 0) for c in chosen))
key = (tuple(chosen), bin_s, threshold, attentive, BASELINE)


st.subheader("Data")
st.caption("Per-person timelines: one row per face and frame, with the person, the track, the seven probabilities, "
           "valence and arousal (derived), head pose, attention and the 52 blendshapes. Curves: the per-bin means "
           f"with 95% bands ({quality.describe()}).")  # fmt: skip
if st.button("Prepare data files"):
    runs = {c: s.best_run(c) for c in chosen if s.best_run(c) is not None}
    try:
        timelines = pl.concat([correct_timeline(s, r, c, an.timeline_export(s, c, r), BASELINE)[0]
                               for c, r in runs.items()], how="diagonal_relaxed")  # fmt: skip
        parts = []
        for c, r in runs.items():
            fb, based = corrected_face_bins(s, r, c, an.face_bins(s, r, bin_s, quality=quality), BASELINE, quality)
            agg = an.aggregate_face_bins(fb, bin_s, clip_bounds=based is None).with_columns(
                pl.lit(titles[c]).alias("clip")
            )
            parts.append(agg.with_columns(pl.lit(based.describe()).alias("baseline")) if based else agg)
        curves = pl.concat(parts, how="diagonal_relaxed")
    except ValueError as exc:
        st.error(plain(exc))
        st.stop()
    s.audit("export", who=st.session_state.get("signed_in_user"), detail=", ".join(chosen))
    st.session_state["export_data"] = (key, {f"{n}.{fmt}": table_bytes(df, fmt) for n, df in
                                             (("ferpipe_curves", curves), ("ferpipe_timelines", timelines))
                                             for fmt in ("csv", "parquet")})  # fmt: skip
ready = st.session_state.get("export_data")
if ready and ready[0] == key:
    cols = st.columns(4)
    for col, (name, payload) in zip(cols, ready[1].items(), strict=False):
        label = ("Aggregated curves" if "curves" in name else "Per-person timelines") + f" ({name.rsplit('.', 1)[1]})"
        _ = col.download_button(label, payload, name, key=f"dl-{name}")

with st.expander("In other tools' layouts (OpenFace, py-feat, iMotions)"):
    st.caption("The raw per-face timeline of one clip in the column layouts of other tools, for scripts written for "
               "them (the README lists every column). Raw readings: no baseline or filter applies.")  # fmt: skip
    tool_clip = st.selectbox("Clip", chosen, format_func=titles.get, key="tool_clip")
    t1, t2, t3 = st.columns(3)
    run_for_tool = s.best_run(tool_clip)
    for col, (fmt, label, ext) in zip((t1, t2, t3), (("openface", "OpenFace-style CSV", "csv"),
                                                     ("pyfeat", "py-feat Fex CSV", "csv"),
                                                     ("imotions", "iMotions-style TSV", "txt")), strict=True):  # fmt: skip
        if col.button(f"Prepare {label}", key=f"prep-{fmt}"):
            st.session_state[f"tool_{fmt}"] = ((tool_clip, run_for_tool), tool_file_bytes(s, tool_clip, run_for_tool,
                                                                                          fmt)[0])  # fmt: skip
        done = st.session_state.get(f"tool_{fmt}")
        if done and done[0] == (tool_clip, run_for_tool):
            _ = col.download_button(label, done[1], f"ferpipe_{tool_clip}_{fmt}.{ext}", key=f"dl-{fmt}")

st.subheader("Reports")
st.caption("A first page of findings in words, then curves, tables with the thresholds stated, comparisons, markers and "
           "norms, with the settings and model. The HTML file is self-contained and opens offline.")  # fmt: skip
if st.button("Build the reports", type="primary"):
    with st.spinner("Building the HTML and PDF reports…"):
        try:
            data = build_report(s, chosen, bin_s=bin_s, threshold=threshold, quality=quality, baseline=BASELINE)
        except ValueError as exc:
            st.error(plain(exc))
            st.stop()
        st.session_state["export_reports"] = (key, render(data, "html"), render(data, "pdf"), data.findings)
        s.audit("report", who=st.session_state.get("signed_in_user"), detail=", ".join(chosen))
built = st.session_state.get("export_reports")
if built and built[0] == key:
    for finding in built[3][:6]:
        st.markdown(f"- {plain(finding)}")
    r1, r2 = st.columns(2)
    _ = r1.download_button("HTML report", built[1], "ferpipe_report.html", mime="text/html", key="html")
    _ = r2.download_button("PDF report", built[2], "ferpipe_report.pdf", mime="application/pdf", key="pdf")
