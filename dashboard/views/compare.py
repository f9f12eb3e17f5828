"""Compare clips, tag segments or respondent segments: overlaid curves, summaries, person-level statistics,
markers and norms."""

import polars as pl
import streamlit as st
from common import baseline_control, caveat, chart_config, plain, store

from ferpipe import analytics as an
from ferpipe import present as pr
from ferpipe import scores as sc
from ferpipe.baseline import correct_observations
from ferpipe.figures import overlay_figure
from ferpipe.frames import is_image
from ferpipe.report import comparison_table

st.title("Compare")
caveat()
s = store()
clips = s.clips().filter(pl.col("faces").fill_null(0) > 0).sort("people", "observations", descending=True)
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

# the default comparison: the two videos, or the two tag groups, with the most people on both sides
people_in = dict(zip(clips["clip_id"].to_list(), clips["people"].to_list(), strict=True))
videos = [c for c, path in zip(clips["clip_id"], clips["path"], strict=True) if not is_image(path)]
pair_min = sorted((people_in[c] for c in videos), reverse=True)[1] if len(videos) > 1 else 0
all_tags = s.tags()
best_tag, tag_min = None, 0
for k in sorted(set(all_tags["key"].to_list())):
    per_value = all_tags.filter(pl.col("key") == k).group_by("value").agg(
        pl.col("clip_id").map_elements(lambda c: people_in.get(c, 0), return_dtype=pl.Int64).sum().alias("people")
    ).sort("people", descending=True)  # fmt: skip
    if per_value.height >= 2 and int(per_value["people"][1]) > tag_min:
        best_tag, tag_min = k, int(per_value["people"][1])
mode = st.radio("Compare", ["Clips", "Tag groups (segments)", "Respondents (people by attribute)"], horizontal=True,
                index=1 if tag_min > pair_min else 0)  # fmt: skip
groups: dict[str, list[str]] = {}
people_split: tuple[str, str, str] | None = None
if mode == "Clips":
    # opens on the two videos with the most people: the pair whose tests have the most people on both sides
    videos = [c for c, path in zip(clips["clip_id"], clips["path"], strict=True) if not is_image(path)]
    chosen = st.multiselect("Clips (two or more)", list(titles), default=(videos or list(titles))[:2],
                            format_func=titles.get)  # fmt: skip
    groups = {f"{titles[c]} ({c})": [c] for c in chosen}
elif mode == "Tag groups (segments)":
    tags = s.tags()
    keys = sorted(set(tags["key"].to_list()))
    if not keys:
        st.info("No tags yet: add tags such as group=A when adding clips.")
        st.stop()
    key = st.selectbox("Tag", keys, index=keys.index(best_tag) if best_tag in keys else 0)
    values = sorted(set(tags.filter(pl.col("key") == key)["value"].to_list()))
    g1, g2 = st.columns(2)
    by_people = sorted(values, key=lambda v: -sum(people_in.get(c, 0) for c in tags.filter(
        (pl.col("key") == key) & (pl.col("value") == v))["clip_id"].to_list()))  # fmt: skip
    va = g1.selectbox("Segment A", values, index=values.index(by_people[0]))
    vb = g2.selectbox("Segment B", values, index=values.index(by_people[min(1, len(by_people) - 1)]))
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

in_groups = sorted({c for ids in groups.values() for c in ids})
common_marks = set.intersection(*[set(s.markers(c).filter(pl.col("end_s").is_not_null())["name"].to_list())
                                  for c in in_groups]) if in_groups else set()  # fmt: skip
BASELINE = baseline_control("compare_baseline", sorted(common_marks), max(durations[c] or 0 for c in in_groups))
based_note = []
aggs, person_tables, rows, keeps = {}, {}, [], {}
for label, ids in groups.items():
    pm = an.person_means(s, ids, signals)
    obs = an.clip_observations(s, ids, signals)
    if BASELINE is not None:  # each person's baseline out of their readings, then their means again
        obs, kept, left = correct_observations(s, obs, BASELINE, signals)
        fixed = an.face_means(obs, signals).drop("n_obs", "first_s", "last_s", strict=False)
        pm = pm.drop([c for c in signals if c in pm.columns]).join(fixed, on=["clip_id", "person_id"], how="inner")
        based_note.append(f"{plain(label)}: {kept} people kept" + (f", {left} left out" if left else ""))
    keeps[label] = None
    if people_split is not None:  # keep the observations of the people with this attribute value
        key, value = people_split[0], (people_split[1] if label.endswith(f"={people_split[1]}") else people_split[2])
        keep = pm.filter(pl.col(key) == value).select("clip_id", "person_id") if key in pm.columns else pm.head(0)
        keeps[label] = keep
        pm = pm.join(keep, on=["clip_id", "person_id"], how="semi")
        obs = obs.join(keep, on=["clip_id", "person_id"], how="semi") if "person_id" in obs.columns else obs.head(0)
    if normalised:
        obs = an.normalise_time(obs, {c: durations[c] for c in ids})
    agg = an.aggregate_face_bins(an.face_bins_frame(obs, bin_s, signals), bin_s, signals,
                                 clip_bounds=BASELINE is None)  # fmt: skip
    aggs[label] = agg
    person_tables[label] = pm
    summ = an.summary(agg, obs, signal, threshold, bin_s=bin_s,
                      duration_s=100.0 if normalised else max(durations[c] or 0 for c in ids))  # fmt: skip
    person = pm[signal].cast(pl.Float64).fill_nan(None).drop_nulls() if signal in pm.columns else pl.Series([])
    timed = agg.height >= 2  # a photo (one bin) has no peak in time and no time above
    rows.append({"clip or segment": label, "clips": len(ids), "people": summ["n"],
                 "mean_over_people": float(person.mean()) if person.len() else None, "mean_over_time": summ["mean"],
                 "peak": summ["peak"] if timed else None, "peak_at": summ["peak_t_s"] if timed else None,
                 "time_above": summ["time_above_s"] if timed else None})  # fmt: skip

x_title = "% of clip" if normalised else "video time (s)"
marks = []
if len(groups) >= 1 and not normalised and all(len(ids) == 1 for ids in groups.values()):
    first = next(iter(groups.values()))[0]
    marks = [(m["name"], m["start_s"], m["end_s"]) for m in s.markers(first).iter_rows(named=True)]
fig = overlay_figure(aggs, signal, x_title=x_title, markers=marks)
info = an.SIGNAL_INFO[signal]
if BASELINE is not None:
    st.info(f"{BASELINE.describe()[0].upper()}{BASELINE.describe()[1:]} ({'; '.join(based_note)}): the curves, the "
            "summary and the tests are changes from each person's baseline.")  # fmt: skip
    fig.update_yaxes(title_text="change from baseline")
elif info.lo is not None and info.hi is not None:
    fig.update_yaxes(range=[info.lo, info.hi])
st.plotly_chart(fig, config=chart_config(), key="overlay")
recorded = s.clip_signal_list(in_groups)
if recorded.height:
    with st.expander(f"Recorded streams beside these clips ({recorded['name'].n_unique()})"):
        st.caption(pr.STREAMS_NOTE + " A segment of several clips shows the mean over its clips (95% interval).")
        names = sorted(set(recorded["name"].to_list()))
        stream = st.selectbox("Stream", names, key="compare_stream")
        unit = recorded.filter(pl.col("name") == stream)["unit"][0]
        stream_bin = 2.0 if normalised else bin_s
        stream_aggs = {}
        for label, ids in groups.items():
            parts = [s.clip_signal_bins(c, 1.0 if normalised else stream_bin, [stream]).with_columns(
                     pl.lit(k).alias("person_id")) for k, c in enumerate(ids)]  # fmt: skip
            if normalised:  # each clip's seconds onto % of its length, then 2% bins
                parts = [p.with_columns((pl.col("bin") * 100.0 / max(durations[c] or 1.0, 1e-9) // stream_bin)
                                        .cast(pl.Int64).alias("bin")) for p, c in zip(parts, ids, strict=True)]  # fmt: skip
            long = pl.concat(parts).select("bin", "person_id", "name", "value") if parts else pl.DataFrame()
            got = an.other_curves(long, stream_bin)
            if f"{stream}_mean" in got.columns and got.height:
                stream_aggs[label] = got
        if stream_aggs:
            sfig = overlay_figure(stream_aggs, stream, x_title=x_title, markers=marks)
            sfig.update_yaxes(title_text=f"{plain(stream)} ({unit})" if unit else plain(stream))
            st.plotly_chart(sfig, config=chart_config(), key="stream_overlay")
        else:
            st.caption("None of the clips compared has this stream.")
st.subheader("Summary")
unit = "% of clip" if normalised else "s"
st.caption(f"{pr.MEAN_OVER_PEOPLE.name}: {pr.MEAN_OVER_PEOPLE.definition} {pr.MEAN_OVER_TIME.name}: "
           f"{pr.MEAN_OVER_TIME.definition} Then the peak, when it comes, and the time the curve stays above "
           f"{threshold:g}. People are counted once however many times they left and came back.")  # fmt: skip
kind = "share" if info.lo == 0.0 and info.hi == 1.0 else ("score", 2)
if BASELINE is not None and kind == "share":
    kind = pr.level_kind(BASELINE.correction)
time_kind = ("score", 0) if normalised else "seconds"
st.dataframe(pr.table(pl.DataFrame(rows), kinds={"mean_over_people": kind, "mean_over_time": kind, "peak": kind,
                                                 "peak_at": time_kind, "time_above": time_kind},
                      labels={"clip or segment": "Clip or segment", "clips": "Clips",
                              "peak_at": "Peak at" + (" (% of clip)" if normalised else ""),
                              "time_above": f"Time above {threshold:g}" + (" (% of clip)" if normalised else "")}),
             hide_index=True)  # fmt: skip

labels = list(person_tables)
a, b = person_tables[labels[0]], person_tables[labels[1]]
st.subheader(f"Person-level comparison: {plain(labels[0])} vs {plain(labels[1])}")
why = pr.not_tested(a.height, b.height)
st.caption(
    f"Each person's mean over the clip is one data point: {a.height} vs {pr.people_words(b.height)} "
    f"({pr.MEAN_OVER_PEOPLE.name.lower()} in each group). "
    + (f"{why[0].upper()}{why[1:]} (—). " if why else "")
    + "With few people, p-values are unstable and the effect size (Hedges' g) is the better guide."
    + (" Only the first two are compared." if len(labels) > 2 else "")
)
table = an.compare_table(a, b, method, signals=signals)
st.dataframe(comparison_table(table), hide_index=True)

st.subheader(f"Scores: {plain(labels[0])} vs {plain(labels[1])}")
k1, k2 = st.columns(2)
score_threshold = k1.number_input("Reaction threshold", -10.0, 10.0,
                                  float(sc.DEFAULT_THRESHOLDS[BASELINE.correction if BASELINE else None]), 0.05,
                                  key="compare_score_threshold")  # fmt: skip
hook = k2.number_input("Hook: first seconds", 1.0, 120.0, 5.0, 1.0, key="compare_hook")
if signal not in an.SIGNALS:
    st.caption("Scores are taken on an expression, valence or arousal: pick one of them as the signal above.")
else:
    settings = sc.ScoreSettings(signal=signal, threshold=float(score_threshold), hook_s=float(hook))
    group_scores = {}
    for label in labels[:2]:
        got = sc.clip_scores(s, groups[label], settings, BASELINE)
        people = got.people if keeps[label] is None else got.people.join(keeps[label], on=["clip_id", "person_id"],
                                                                           how="semi")  # fmt: skip
        bounds = sc.metric_bounds(signal, BASELINE is not None, max(durations[c] or 0 for c in groups[label]))
        group_scores[label] = (people, sc.summarise(people, bounds))
    corr = BASELINE.correction if BASELINE else None
    st.caption(f"Each metric is taken per person on their {signal} curve, then averaged over people (95% interval "
               f"over people); the test compares the two groups' person values ({method}). Threshold "
               f"{settings.threshold_for(BASELINE):g}, hook: the first {hook:g} s.")  # fmt: skip
    side = st.columns(2)
    for col, label in zip(side, labels[:2], strict=True):
        col.markdown(f"**{plain(label)}**")
        col.dataframe(pr.score_table(group_scores[label][1], corr), hide_index=True)
    (pa, _), (pb, _) = group_scores[labels[0]], group_scores[labels[1]]
    tests = []
    for m in sc.METRIC_KEYS:
        xa = pa[m].drop_nulls().drop_nans().to_numpy()
        xb = pb[m].drop_nulls().drop_nans().to_numpy()
        r = an.compare_groups(xa, xb, method)
        tests.append({"Metric": pr.SCORE_METRICS[m].name, "A": pr.format_value(r["mean_a"], pr.score_kind(m, corr)),
                      "B": pr.format_value(r["mean_b"], pr.score_kind(m, corr)),
                      "Hedges' g": pr.format_value(r["hedges_g"], "effect"), "p-value": pr.format_value(r["p_value"], "p"),
                      "People": f"{r['n_a']} vs {r['n_b']}",
                      "Note": pr.not_tested(r["n_a"], r["n_b"]) or pr.MISSING})  # fmt: skip
    st.dataframe(pl.DataFrame(tests), hide_index=True)

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
    ranks = ranks.with_columns(pl.col("clip_id").replace_strict(titles, default=None).alias("title"))
    st.dataframe(pr.table(ranks.select("title", "clip_id", "value", "percentile", "norm_n"),
                          kinds={"value": kind if metric != "time_above_s" else "seconds"},
                          labels={"value": {"mean": pr.MEAN_OVER_TIME.name, "peak": pr.PEAK.name,
                                            "time_above_s": f"Time above {threshold:g}"}[metric]}),
                 hide_index=True)  # fmt: skip
