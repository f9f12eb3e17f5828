"""Compare clips, tag segments or respondent segments: overlaid curves, summaries, person-level statistics,
markers and norms."""

import polars as pl
import streamlit as st
from common import caveat, chart_config, plain, store

from ferpipe import analytics as an
from ferpipe.figures import overlay_figure

st.title("Compare")
caveat()
s = store()
clips = s.clips().filter(pl.col("faces").fill_null(0) > 0).sort("faces", descending=True)
if clips.height < 1:
    st.info("Comparisons need processed clips with faces.")
    st.stop()
titles = dict(zip(clips["clip_id"].to_list(), clips["title"].to_list(), strict=False))
durations = dict(zip(clips["clip_id"].to_list(), clips["duration_s"].to_list(), strict=False))

c1, c2, c3, c4 = st.columns(4)
signal = c1.selectbox("Signal", list(an.SIGNAL_INFO), index=3, format_func=lambda k: an.SIGNAL_INFO[k].label)
axis = c2.radio("Time", ["absolute (s)", "normalised (0–100%)"])
method = c3.radio(
    "Test", ["welch", "permutation"], format_func={"welch": "Welch's t-test", "permutation": "permutation"}.get
)
threshold = c4.slider("Threshold for 'time above'", 0.0, 1.0, 0.5, 0.05)
normalised = axis.startswith("normalised")
bin_s = 2.0 if normalised else an.default_bin(max(durations.values()) or 0.0)
signals = tuple(dict.fromkeys([signal, *an.SIGNALS]))

mode = st.radio("Compare", ["Clips", "Tag groups (segments)", "Respondents (people by attribute)"], horizontal=True)
groups: dict[str, list[str]] = {}
people_split: tuple[str, str, str] | None = None
if mode == "Clips":
    chosen = st.multiselect("Clips (two or more)", list(titles), default=list(titles)[:2], format_func=titles.get)
    groups = {f"{titles[c]} ({c})": [c] for c in chosen}
elif mode == "Tag groups (segments)":
    tags = s.tags()
    keys = sorted(set(tags["key"].to_list()))
    if not keys:
        st.info("No tags yet: add tags such as group=A when adding clips.")
        st.stop()
    key = st.selectbox("Tag", keys)
    values = sorted(set(tags.filter(pl.col("key") == key)["value"].to_list()))
    g1, g2 = st.columns(2)
    va = g1.selectbox("Segment A", values, index=0)
    vb = g2.selectbox("Segment B", values, index=min(1, len(values) - 1))
    for v in dict.fromkeys((va, vb)):
        groups[f"{key}={v}"] = [c for c in tags.filter((pl.col("key") == key) & (pl.col("value") == v))["clip_id"].to_list()
                                if c in titles]  # fmt: skip
else:
    attrs = s.attributes()
    if attrs.is_empty():
        st.info("No respondent attributes yet: name people and give them attributes on the People page.")
        st.stop()
    key = st.selectbox("Attribute", sorted(set(attrs["key"].to_list())))
    values = sorted(set(attrs.filter(pl.col("key") == key)["value"].to_list()))
    g1, g2 = st.columns(2)
    va = g1.selectbox("People with", values, index=0)
    vb = g2.selectbox("against people with", values, index=min(1, len(values) - 1))
    in_clips = sorted(set(attrs.filter(pl.col("key") == key)["clip_id"].to_list()) & set(titles))
    people_split = (key, va, vb)
    groups = {f"{key}={va}": in_clips, f"{key}={vb}": in_clips}
if len(groups) < 2 or any(not ids for ids in groups.values()):
    st.info("Pick two or more clips, or two segments that each contain a processed clip.")
    st.stop()

aggs, person_tables, rows = {}, {}, []
for label, ids in groups.items():
    pm = an.person_means(s, ids, signals)
    obs = an.clip_observations(s, ids, signals)
    if people_split is not None:  # keep the observations of the people with this attribute value
        key, value = people_split[0], (people_split[1] if label.endswith(f"={people_split[1]}") else people_split[2])
        keep = pm.filter(pl.col(key) == value).select("clip_id", "person_id") if key in pm.columns else pm.head(0)
        pm = pm.join(keep, on=["clip_id", "person_id"], how="semi")
        obs = obs.join(keep, on=["clip_id", "person_id"], how="semi") if "person_id" in obs.columns else obs.head(0)
    if normalised:
        obs = an.normalise_time(obs, {c: durations[c] for c in ids})
    agg = an.aggregate_frame(obs, bin_s, signals)
    aggs[label] = agg
    person_tables[label] = pm
    summ = an.summary(agg, obs, signal, threshold, bin_s=bin_s)
    rows.append({"clip or segment": label, "clips": len(ids), "people": summ["n"], "mean": summ["mean"],
                 "peak": summ["peak"], "peak at": summ["peak_t_s"], "time above": summ["time_above_s"]})  # fmt: skip

x_title = "% of clip" if normalised else "video time (s)"
marks = []
if len(groups) >= 1 and not normalised and all(len(ids) == 1 for ids in groups.values()):
    first = next(iter(groups.values()))[0]
    marks = [(m["name"], m["start_s"], m["end_s"]) for m in s.markers(first).iter_rows(named=True)]
fig = overlay_figure(aggs, signal, x_title=x_title, markers=marks)
info = an.SIGNAL_INFO[signal]
if info.lo is not None and info.hi is not None:
    fig.update_yaxes(range=[info.lo, info.hi])
st.plotly_chart(fig, config=chart_config(), key="overlay")
st.subheader("Summary")
unit = "%" if normalised else "s"
st.caption(f"Mean over bins, the peak and when it comes, and the time the curve stays above {threshold:g}. People are "
           "counted once however many times they left and came back.")  # fmt: skip
st.dataframe(pl.DataFrame(rows).rename({"peak at": f"peak at ({unit})", "time above": f"time above {threshold:g} ({unit})"}),
             hide_index=True)  # fmt: skip

labels = list(person_tables)
a, b = person_tables[labels[0]], person_tables[labels[1]]
st.subheader(f"Person-level comparison: {plain(labels[0])} vs {plain(labels[1])}")
st.caption(
    f"Each person's mean over the clip is one data point: {a.height} vs {b.height} people. With fewer than two people "
    "in a group there is no test (—); with few people, p-values are unstable and the effect size (Hedges' g) is the "
    "better guide." + (" Only the first two are compared." if len(labels) > 2 else "")
)
table = an.compare_table(a, b, method, signals=signals)
st.dataframe(table.select("signal", "mean_a", "mean_b", "hedges_g", "p_value", "n_a", "n_b")
             .rename({"n_a": "people A", "n_b": "people B"}), hide_index=True,
             column_config={"p_value": st.column_config.NumberColumn("p-value", format="%.4f")})  # fmt: skip

with st.expander("Norms: how each clip ranks against others"):
    n1, n2 = st.columns(2)
    metric = n1.selectbox("Metric", list(an.NORM_METRICS), format_func={"mean": "mean of the curve", "peak": "peak",
                          "time_above_s": f"time above {threshold:g}"}.get)  # fmt: skip
    tags = s.tags()
    norm_sets = [
        "the whole library",
        *[f"{k}={v}" for k, v in tags.select("key", "value").unique().sort("key", "value").iter_rows()],
    ]
    norm_set = n2.selectbox("Norm set", norm_sets)
    tag = None if norm_set == norm_sets[0] else tuple(norm_set.split("=", 1))
    ids = sorted({c for v in groups.values() for c in v})
    ranks = an.norms(s, ids, signal, metric, tag=tag, threshold=threshold)
    st.caption("Percentile: the share of the norm set's other clips at or below this clip (norm n: their number).")
    st.dataframe(ranks.with_columns(pl.col("clip_id").replace_strict(titles, default=None).alias("title")),
                 hide_index=True)  # fmt: skip
