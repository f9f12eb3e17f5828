"""Compare clips or audience segments (tag groups): overlaid curves, summaries, face-level statistics."""

import polars as pl
import streamlit as st
from common import caveat, plain, store

from ferpipe import analytics as an
from ferpipe.figures import overlay_figure

st.title("Compare")
caveat()
s = store()
clips = s.clips().filter(pl.col("faces").fill_null(0) > 0)
if clips.height < 2:
    st.info("Comparisons need at least two processed clips with faces.")
    st.stop()
titles = dict(zip(clips["clip_id"].to_list(), clips["title"].to_list()))

mode = st.radio("Compare", ["Clips", "Tag groups (segments)"], horizontal=True)
groups: dict[str, list[str]] = {}
if mode == "Clips":
    chosen = st.multiselect("Clips (two or more)", list(titles), default=list(titles)[:2], format_func=titles.get)
    groups = {f"{titles[c]} ({c})": [c] for c in chosen}
else:
    tags = s.tags()
    keys = sorted(set(tags["key"].to_list()))
    if not keys:
        st.info("No tags yet: add tags such as group=A when adding clips.")
        st.stop()
    key = st.selectbox("Tag", keys)
    values = sorted(set(tags.filter(pl.col("key") == key)["value"].to_list()))
    c1, c2 = st.columns(2)
    va = c1.selectbox("Segment A", values, index=0)
    vb = c2.selectbox("Segment B", values, index=min(1, len(values) - 1))
    for v in (va, vb):
        ids = [c for c in tags.filter((pl.col("key") == key) & (pl.col("value") == v))["clip_id"].to_list() if c in titles]
        groups[f"{key}={v}"] = ids
if len(groups) < 2 or any(not ids for ids in groups.values()):
    st.info("Pick two or more clips, or two segments that each contain a processed clip.")
    st.stop()

c1, c2, c3, c4 = st.columns(4)
signal = c1.selectbox("Signal", list(an.SIGNAL_INFO), index=3, format_func=lambda k: an.SIGNAL_INFO[k].label)
axis = c2.radio("Time", ["absolute (s)", "normalised (0–100%)"])
method = c3.radio("Test", ["welch", "permutation"], format_func={"welch": "Welch's t-test", "permutation": "permutation"}.get)
threshold = c4.slider("Threshold for 'time above'", 0.0, 1.0, 0.5, 0.05)
normalised = axis.startswith("normalised")
bin_s = 2.0 if normalised else 1.0

aggs, face_tables, rows = {}, {}, []
durations = dict(zip(clips["clip_id"].to_list(), clips["duration_s"].to_list()))
for label, ids in groups.items():
    obs = an.clip_observations(s, ids, an.SIGNALS if signal in an.SIGNALS else (*an.SIGNALS, signal))
    if normalised:
        obs = an.normalise_time(obs, {c: durations[c] for c in ids})
    agg = an.aggregate_frame(obs, bin_s)
    aggs[label] = agg
    face_tables[label] = an.face_means(obs, tuple(c for c in obs.columns if c in an.SIGNAL_INFO))
    rows.append({"clip or segment": label, "clips": len(ids), **an.summary(agg, obs, signal, threshold, bin_s=bin_s)})

x_title = "% of clip" if normalised else "video time (s)"
st.plotly_chart(overlay_figure(aggs, signal, x_title=x_title), key="overlay")
st.subheader("Summary")
summary = pl.DataFrame(rows).rename({"peak_t_s": "peak at" + (" (%)" if normalised else " (s)"),
                                     "time_above_s": "time above" + (" (%)" if normalised else " (s)")})  # fmt: skip
st.dataframe(summary, hide_index=True)

labels = list(face_tables)
st.subheader(f"Face-level comparison: {plain(labels[0])} vs {plain(labels[1])}")
a, b = face_tables[labels[0]], face_tables[labels[1]]
st.caption(
    f"Each face's mean over the clip is one data point: {a.height} faces vs {b.height} faces. "
    "With few faces, p-values are unstable and effect sizes (Hedges' g) are the better guide."
    + (" Only the first two are compared." if len(labels) > 2 else "")
)
st.dataframe(an.compare_table(a, b, method, signals=tuple(dict.fromkeys([signal, *an.SIGNALS]))), hide_index=True)
