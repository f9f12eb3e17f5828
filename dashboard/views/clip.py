"""Clip view: expression curves, attention and head pose, facial actions, peaks, per-face timelines and the video."""

import polars as pl
import streamlit as st
from common import baseline_control, caveat, chart_config, clip_picker, plain, store

from ferpipe import analytics as an
from ferpipe import present as pr
from ferpipe import scores as sc
from ferpipe.baseline import corrected_face_bins
from ferpipe.confidence import LOW_CONFIDENCE
from ferpipe.errors import FerpipeError
from ferpipe.figures import curves_figure, face_figure, photo_figure, share_figure, stream_figure
from ferpipe.frames import is_image, is_timeline_only
from ferpipe.media import browser_playable, frame_at, preview_path, previews, thumbnail
from ferpipe.report import blink_rate_note
from ferpipe.store import QualityFilter
from ferpipe.types import EXPRESSIONS

st.title("Clip view")
caveat()
s = store()
with s.reading():  # one read connection for the whole page (a write inside steps it aside)
    clip = clip_picker()
    if clip is None:
        st.stop()
    runs = s.clip_runs(clip["clip_id"])
    if runs.is_empty():
        st.info("This clip has not been processed yet.")
        st.stop()
    best = int(runs["run_id"][0])
    labels = {r["run_id"]: f"run {r['run_id']} · {r['model']} · {r['status']}" for r in runs.iter_rows(named=True)}
    run_ids = list(labels)
    duration = float(clip["duration_s"] or 0.0)
    PHOTO = is_image(clip["path"])

    if PHOTO:  # one frame: no time axis, so no bins, smoothing, markers or stimulus sync
        c1, c4 = st.columns([5, 1])
        exprs, bin_s, window = list(EXPRESSIONS), an.default_bin(duration), 1
    else:
        c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
        exprs = c1.multiselect("Expressions", list(EXPRESSIONS), default=["happy", "surprise", "sad", "neutral"])
        bin_s = c2.select_slider("Bin width (s)", list(an.BIN_CHOICES), value=an.default_bin(duration))
        window = c3.slider("Smoothing (bins)", 1, 15, 1)
    run_id = c4.selectbox("Run", run_ids, index=run_ids.index(best), format_func=labels.get)

    with st.expander("Data quality filter for the " + ("face readings" if PHOTO else "expression curves")):
        q1, q2, q3, q4 = st.columns(4)
        quality = QualityFilter(
            attentive_only=q1.checkbox(
                "Attentive faces only", help="Facing the camera within the attention cone, eyes open."
            ),
            min_face_px=float(q2.number_input("Smallest face (px tall)", 0, 2000, 0, 10)),
            min_score=float(q3.slider("Lowest detection score", 0.0, 1.0, 0.0, 0.05)),
            min_confidence=float(q4.slider(
                "Lowest reading confidence", 0.0, 1.0, 0.0, 0.05,
                help="A derived score per reading: the model's certainty times face size, sharpness, head pose "
                     "and face presence (see the glossary). 0 keeps every reading.",
            )),
        )  # fmt: skip

    INTERVAL_MARKERS = s.markers(clip["clip_id"]).filter(pl.col("end_s").is_not_null())["name"].to_list()
    BASELINE = None if PHOTO else baseline_control("clip_baseline", INTERVAL_MARKERS, duration)
    offset = float(clip["stimulus_offset_s"] or 0)
    stimulus = clip["stimulus_clip_id"]
    if not PHOTO:  # markers and stimulus time belong to a timeline
        with st.expander("Stimulus sync" + (f" (linked, offset {offset:g} s)" if stimulus else "")):
            all_clips = s.clips()
            others = [c for c in all_clips["clip_id"].to_list() if c != clip["clip_id"]]
            titles = dict(zip(all_clips["clip_id"].to_list(), all_clips["title"].to_list(), strict=False))
            choice = st.selectbox("Stimulus this audience watched", [None, *others], index=([None, *others].index(stimulus)
                                  if stimulus in others else 0), format_func=lambda c: "— none —" if c is None else titles[c])  # fmt: skip
            new_offset = st.number_input("Offset: stimulus time = clip time − offset (s)", value=offset, step=0.5)
            if st.button("Save link"):
                s.set_stimulus(clip["clip_id"], choice, new_offset)
                st.rerun()
        with st.expander("Event markers"):
            st.caption("Named moments or intervals of the clip (e.g. 'brand reveal', 'price shown'), drawn on every curve, "
                       "with the mean before, during and after each.")  # fmt: skip
            m1, m2, m3, m4 = st.columns([3, 1, 1, 1])
            m_name = m1.text_input("Marker name", key="marker_name")
            m_start = m2.number_input("Start (s)", 0.0, max(duration, 0.1), 0.0, 0.5, key="marker_start")
            m_end = m3.number_input("End (s, 0: a point)", 0.0, max(duration, 0.1), 0.0, 0.5, key="marker_end")
            if m4.button("Add marker", disabled=not m_name.strip()):
                try:
                    s.add_marker(clip["clip_id"], m_name, m_start, m_end if m_end > m_start else None)
                    st.rerun()
                except ValueError as exc:
                    st.error(plain(exc))
            for m in s.markers(clip["clip_id"]).iter_rows(named=True):
                a, b = st.columns([5, 1])
                span = f"{m['start_s']:g} s" + (f" – {m['end_s']:g} s" if m["end_s"] is not None else "")
                a.write(f"{plain(m['name'])} · {span}")
                if b.button("Delete", key=f"del-marker-{m['marker_id']}"):
                    s.delete_marker(m["marker_id"])
                    st.rerun()
    on_stimulus = bool(stimulus) and not PHOTO and st.toggle("Plot against stimulus time", value=bool(stimulus))
    shift = offset if on_stimulus else 0.0
    xt = "stimulus time (s)" if on_stimulus else "video time (s)"

    RUN = s.run(run_id)
    TOOL = (RUN.settings or {}).get("tool") if RUN.detector == "imported" else None
    NO_VIDEO = is_timeline_only(clip["path"])
    HAS_EXPRESSIONS = TOOL is None or bool((RUN.settings or {}).get("expressions"))
    if TOOL:
        st.info(pr.imported_words(RUN.settings, NO_VIDEO))
    LIVE_T0 = clip.get("live_t0") if RUN.status == "running" else None
    LIVE_WINDOW_S = 60.0
    FOLLOW = bool(LIVE_T0) and st.toggle("Follow the live edge (last 60 s)", value=True)
    MARKERS = s.markers(clip["clip_id"])
    MARKS = [(m["name"], m["start_s"] - shift, None if m["end_s"] is None else m["end_s"] - shift)
             for m in MARKERS.iter_rows(named=True)]  # fmt: skip

    ACTIONS_DEFAULT = ("au12_proxy", "au04_proxy")

    def shifted(agg: pl.DataFrame) -> pl.DataFrame:
        return agg.with_columns((pl.col("t_s") - shift).alias("t_s"))

    @st.fragment(run_every=3 if RUN.status == "running" else None)
    def curves() -> None:
        with s.reading():
            _curves()

    def _curves() -> None:
        run = s.run(run_id) if RUN.status == "running" else RUN
        live_edge = None
        if run.status == "running" and LIVE_T0:
            latency = an.live_latency_s(LIVE_T0, run.last_timestamp_ms)
            st.info(f"● Live: {run.frames_done:,} frames analysed, the curves {latency:.1f} s behind the stream "
                    "(capture to visible here). They scroll as data arrives.")  # fmt: skip
            live_edge = run.last_timestamp_ms / 1000.0 if FOLLOW else None
        elif run.status == "running":
            st.info(
                f"Processing: {run.frames_done:,}/{run.frames_expected:,} frames so far; the curves grow as it runs."
            )
        elif run.status == "truncated":
            st.warning(f"Truncated media: {plain(run.error)}. The curves cover what could be decoded.")
        picked = tuple(st.session_state.get("actions_pick", ACTIONS_DEFAULT))  # the facial actions picked below
        unfiltered = tuple(dict.fromkeys((*an.ATTENTION_SIGNALS, *picked)))
        if quality.active:  # expressions from the filtered rows; attention and facial actions stay unfiltered
            fb = an.face_bins(s, run_id, bin_s, quality=quality)
            fb_signals = an.face_bins(s, run_id, bin_s, unfiltered)
        else:  # one scan of the roll-up serves every section of the page
            fb = fb_signals = an.face_bins(s, run_id, bin_s, tuple(dict.fromkeys((*an.SIGNALS, *unfiltered))))
        if quality.active:
            st.caption(f"Filter: {quality.describe()}; {s.excluded_share(run_id, quality):.0%} of this run's "
                       "observations are left out of the expression curves.")  # fmt: skip
        low_share, known, median_conf = s.confidence_summary(run_id, LOW_CONFIDENCE)
        if median_conf is not None:
            st.caption(f"Reading confidence (derived): {low_share:.0%} of the readings behind these "
                       f"{'bars' if PHOTO else 'curves'} are "
                       f"low-confidence (below {LOW_CONFIDENCE:g}); median {median_conf:.2f}"
                       + ("." if known >= 0.999 else f"; {1 - known:.0%} of the readings have no confidence stored."))  # fmt: skip
        if PHOTO:
            photo(fb)
            return
        based = None
        if BASELINE is not None:
            try:
                same = fb is fb_signals  # one scan served every section: one correction serves them too
                fb, based = corrected_face_bins(s, run_id, clip["clip_id"], fb, BASELINE, quality)
                fb_signals = fb if same else corrected_face_bins(s, run_id, clip["clip_id"], fb_signals, BASELINE)[0]
            except ValueError as exc:
                st.error(plain(exc))
            else:
                st.info(f"{based.describe()[0].upper()}{based.describe()[1:]}: the curves, tiles, peaks and scores "
                        f"below are changes from each person's baseline ({based.kept} people kept). Attention and "
                        "head pose stay raw.")  # fmt: skip
        if not HAS_EXPRESSIONS:  # another tool's file without expressions: its own signals and the head pose
            attention(run, fb_signals)
            streams()
            return
        LEVEL = pr.level_kind(based.baseline.correction if based else None)
        Y_LABEL = (None if based is None else "change from baseline" +
                   (" (probability)" if LEVEL == "points" else " (SD of the baseline)"))  # fmt: skip
        agg = shifted(an.smooth(an.aggregate_face_bins(fb, bin_s, clip_bounds=based is None), window))
        if live_edge is not None:
            agg = agg.filter(pl.col("t_s") >= live_edge - shift - LIVE_WINDOW_S)
        if agg.is_empty():
            st.warning(
                "No faces found in this clip." if run.finished and not quality.active else "No faces (yet, or left)."
            )
            return
        pk = an.peak_table(agg, exprs or ["neutral"], bin_s=bin_s).sort("value", descending=True)
        picked = st.session_state.get("peaks")
        rows = picked.selection.rows if picked is not None and hasattr(picked, "selection") else []
        if rows and rows[0] < pk.height and st.session_state.get("peak_row") != rows[0]:
            st.session_state["peak_row"] = rows[0]  # a newly clicked peak moves the moment shown
            st.session_state["t_sel"] = float(pk["t_s"][rows[0]])
        t_sel = st.session_state.get("t_sel", float(agg["t_s"][0]))
        left, right = st.columns([3, 2])
        left.plotly_chart(
            curves_figure(
                agg,
                exprs or ["neutral"],
                x_title=xt,
                marker_t=t_sel,
                markers=MARKS,
                y_label=Y_LABEL,
                title=based.describe() if based else "",
            ),
            config=chart_config(),
            key="curves",
        )
        with right:
            lo_t = float(agg["t_s"].min())
            hi_t = max(
                lo_t + 0.1, min(float(agg["t_s"].max() + bin_s), (duration or float(agg["t_s"].max()) + bin_s) - shift)
            )
            t_sel = st.slider("Moment (s)", lo_t, hi_t, min(max(float(t_sel), lo_t), hi_t), 0.1)
            st.session_state["t_sel"] = t_sel
            show_moment(t_sel + shift)
            if on_stimulus:
                st.caption(f"Stimulus at {t_sel:.1f} s")
                try:
                    st.image(frame_at(s.clip(stimulus)["path"], t_sel * 1000), width="stretch")
                except FerpipeError as exc:
                    st.caption(plain(exc))
        tiles(fb, LEVEL)
        scores_panel(based)
        st.subheader("% of faces whose strongest expression is each one")
        st.caption("Per bin, the share of faces in view whose top expression (of its bin mean) is X.")
        st.plotly_chart(share_figure(shifted(an.top_expression_share(fb, bin_s))), config=chart_config(), key="shares")
        st.subheader("Peak moments")
        st.caption(f"Moments where a curve reaches at least {an.PEAK_MIN_VALUE:.0%} and stands at least "
                   f"{an.PEAK_MIN_PROMINENCE * 100:.0f} percentage points above the valleys beside it. Click a row to "
                   "show that moment beside the curves.")  # fmt: skip
        if pk.is_empty():
            st.caption("No moment stands out that far for the expressions picked.")
        else:
            p1, p2 = st.columns([3, 1])
            p1.dataframe(pr.table(pk, labels={"t_s": "At"}, kinds={"value": LEVEL}), hide_index=True, on_select="rerun",
                         selection_mode="single-row", key="peaks")  # fmt: skip
            if rows and rows[0] < pk.height:  # the clicked moment, here where the click was (the slider is above)
                t_peak = float(pk["t_s"][rows[0]])
                try:
                    p2.image(frame_at(clip["path"], (t_peak + shift) * 1000), width="stretch",
                             caption=f"{pk['expression'][rows[0]]} at {t_peak:.1f} s (also set above)")  # fmt: skip
                except FerpipeError as exc:
                    p2.caption(plain(exc))
        sync = [{"expression": e, **an.synchrony(fb, e)} for e in exprs or ["neutral"]]
        if any(r["pairs"] for r in sync):
            st.subheader("Synchrony (derived)")
            st.caption("Inter-subject correlation: how alike people's curves moved, the mean Pearson r over every pair of "
                       "people seen together in at least 5 bins. It says the displayed expressions moved together, not "
                       "that people felt alike.")  # fmt: skip
            st.dataframe(pr.table(pl.DataFrame(sync)), hide_index=True)
        if MARKERS.height:
            st.subheader("Around the markers")
            around = st.slider("Window before and after (s)", 1.0, 30.0, 5.0, 1.0, key="marker_window")
            obs = s.observations(run_id, tuple(exprs or ["neutral"]))
            tables = [an.marker_stats(obs, MARKERS, e, around).with_columns(pl.lit(e).alias("expression"))
                      for e in exprs or ["neutral"]]  # fmt: skip
            st.caption("Mean probability per person in each window, averaged over the people seen in it (n); change = "
                       "during or after minus before (the baseline).")  # fmt: skip
            st.dataframe(pr.table(pl.concat(tables).select("marker", "expression", "before_mean", "during_mean",
                                                           "after_mean", "change_during", "change_after", "before_n",
                                                           "during_n", "after_n")), hide_index=True)  # fmt: skip
        st.subheader("Valence and arousal (derived)")
        st.caption("Derived from the seven probabilities through Russell's circumplex; not a measurement.")
        st.plotly_chart(
            curves_figure(
                agg,
                ["valence", "arousal"],
                x_title=xt,
                markers=MARKS,
                y_label=None if based is None else "change from baseline (valence / arousal)",
                title=based.describe() if based else "",
            ),
            config=chart_config(),
            key="va",
        )
        attention(run, fb_signals)
        streams()

    def tool_signals() -> None:
        """Another tool's own signals (OpenFace or py-feat action units...), under that tool's names."""
        names = s.tool_signal_names(run_id)
        st.subheader(f"{pr.possessive(TOOL)} signals")
        st.caption(pr.tool_signal_words(TOOL))
        if not names:
            st.caption(f"The {TOOL} file had no columns beyond those above.")
            return
        default = pr.default_action_units(names)
        chosen = st.multiselect(f"{TOOL} columns", names, default=default or names[:1], key="tool_pick",
                                format_func=lambda n: pr.tool_signal_label(n, TOOL))  # fmt: skip
        if chosen:
            agg = shifted(an.other_curves(s.tool_signal_bins(run_id, bin_s, chosen), bin_s))
            st.plotly_chart(curves_figure(agg, chosen, x_title=xt, markers=MARKS, y_label=f"{pr.possessive(TOOL)} own scale",
                                          names={n: pr.tool_signal_label(n, TOOL) for n in chosen}),
                            config=chart_config(), key="tool_signals")  # fmt: skip

    def streams() -> None:
        """Streams recorded beside the clip (an XDF file's GSR or heart rate...), on the clip's timeline."""
        listed = s.clip_signal_list([clip["clip_id"]])
        if listed.is_empty():
            return
        st.subheader("Recorded streams")
        st.caption(pr.STREAMS_NOTE)
        names = listed["name"].to_list()
        chosen = st.multiselect("Streams", names, default=names[:3], key="streams_pick")
        if chosen:
            units = dict(zip(listed["name"], listed["unit"], strict=True))
            agg = shifted(an.stream_curves(s.clip_signal_bins(clip["clip_id"], bin_s, chosen), bin_s))
            st.plotly_chart(stream_figure(agg, chosen, units, x_title=xt, markers=MARKS), config=chart_config(),
                            key="streams")  # fmt: skip
            st.dataframe(pr.table(listed.filter(pl.col("name").is_in(chosen)).select("name", "source", "unit",
                                  "samples", "first_s", "last_s"), labels={"first_s": "From", "last_s": "To"}),
                         hide_index=True)  # fmt: skip

    def attention(run, fb) -> None:
        """The attention, head pose, blink and facial action sections, from bins that carry their signals."""
        st.subheader("Attention, head pose and blinks")
        cone = run.settings or {}  # the cone this run was analysed with (--attention-yaw, --attention-pitch)
        if TOOL:
            st.caption(f"Attentive: {cone.get('attention', 'from the head pose in the file')}. Head pose as "
                       f"{TOOL} gave it.")  # fmt: skip
        else:
            st.caption(f"Attentive: the face turned to the camera within ±{cone.get('attention_yaw_deg', 30.0):g}° yaw and "
                       f"±{cone.get('attention_pitch_deg', 20.0):g}° pitch with its eyes open "
                       "(model readings, not a gaze tracker). Unfiltered: every observation with a face mesh.")  # fmt: skip
        if fb.is_empty() or fb["attentive"].drop_nulls().is_empty():
            st.caption("No attention readings in this run (processed with signals off, or no face mesh found).")
            return
        agg = shifted(an.smooth(an.aggregate_face_bins(fb, bin_s, an.ATTENTION_SIGNALS), window))
        a1, a2 = st.columns(2)
        a1.plotly_chart(curves_figure(agg, ["attentive"], x_title=xt, names={"attentive": "attentive"}, markers=MARKS),
                        config=chart_config(), key="att")  # fmt: skip
        a2.plotly_chart(curves_figure(agg, ["yaw_deg", "pitch_deg", "roll_deg"], x_title=xt,
                                      names={"yaw_deg": "yaw", "pitch_deg": "pitch", "roll_deg": "roll"}), config=chart_config(), key="pose")  # fmt: skip
        if TOOL:  # another tool's file: no eye openness or blendshapes, its own signals instead
            tool_signals()
            return
        note = blink_rate_note((run.settings or {}).get("sample_fps"))
        blink_bin = max(bin_s, 10.0)
        blinks = shifted(an.aggregate_face_bins(an.blink_bins(s, run_id, blink_bin), blink_bin, ("blink_rate",)))
        b1, b2 = st.columns([1, 3])
        if note:  # withheld exactly as in the reports
            b1.metric(pr.BLINK_RATE.name, pr.MISSING)
            b1.caption(note[0].upper() + note[1:] + ".")
        else:
            summary = an.blink_summary(s, run_id)
            b1.metric(pr.BLINK_RATE.name, pr.BLINK_RATE.format(summary["rate_per_min"]), help=f"{summary['blinks']} "
                      f"blinks over {summary['face_minutes']:.1f} face-minutes with a face mesh")  # fmt: skip
            if blinks.height >= 3:  # a chart needs enough bins to be a curve
                b2.plotly_chart(curves_figure(blinks, ["blink_rate"], x_title=xt, names={"blink_rate": "blinks/min"}),
                                config=chart_config(), key="blinks")  # fmt: skip
            else:
                b2.caption(f"Too short for a blink-rate curve ({blink_bin:g} s bins).")
        st.subheader("Facial actions")
        st.caption("MediaPipe blendshapes (ARKit-style scores in 0–1). They are not FACS action units; where one tracks "
                   "an action unit closely it is offered as an 'AU proxy'.")  # fmt: skip
        options = [*an.AU_PROXY_SIGNALS, *an.BLENDSHAPE_SIGNALS[1:]]
        chosen = tuple(st.multiselect("Blendshapes or AU proxies", options, default=list(ACTIONS_DEFAULT),
                                      format_func=lambda k: an.SIGNAL_INFO[k].label, key="actions_pick"))  # fmt: skip
        if chosen:
            if not set(chosen) <= set(fb.columns):  # picked after the bins were read
                fb = an.face_bins(s, run_id, bin_s, chosen)
            fa = shifted(an.smooth(an.aggregate_face_bins(fb, bin_s, chosen), window))
            st.plotly_chart(curves_figure(fa, chosen, x_title=xt, names={k: an.SIGNAL_INFO[k].label for k in chosen}),
                            config=chart_config(), key="actions")  # fmt: skip

    def tiles(fb: pl.DataFrame, level: str = "share") -> None:
        """The clip's mean over people of each expression, named and rounded by ferpipe.present (as in Compare, the
        reports and `ferpipe summary`)."""
        st.subheader(pr.MEAN_OVER_PEOPLE.name)
        st.caption(pr.MEAN_OVER_PEOPLE.definition + " The same figure as in Compare, the reports and the CLI.")
        summ = an.expression_summary(fb, bin_s, duration_s=duration)
        values = dict(zip(summ["signal"], summ["mean_over_people"], strict=True))
        for col, e in zip(st.columns(len(EXPRESSIONS)), EXPRESSIONS, strict=True):
            col.metric(e, pr.format_value(values.get(e), level))

    def scores_panel(based) -> None:
        """The named ad-research metrics of one expression, with 95% intervals over people and indices 1-100
        against a norm set (ferpipe.scores), and the derived engagement composite where the norm set allows."""
        st.subheader("Scores")
        g1, g2, g3, g4 = st.columns([2, 1, 1, 2])
        signal = g1.selectbox("Scored signal", list(an.SIGNALS), index=list(an.SIGNALS).index("happy"),
                              key="score_signal")  # fmt: skip
        default_t = sc.DEFAULT_THRESHOLDS[based.baseline.correction if based else None]
        threshold = g2.number_input("Reaction threshold", -10.0, 10.0, float(default_t), 0.05, key="score_threshold")
        hook = g3.number_input("Hook: first seconds", 1.0, 120.0, 5.0, 1.0, key="score_hook")
        tags = s.tags()
        norm_sets = ["the whole library", *[f"{k}={v}" for k, v in tags.select("key", "value").unique()
                                             .sort("key", "value").iter_rows()]]  # fmt: skip
        norm_set = g4.selectbox("Norm set", norm_sets, key="score_norms")
        tag = None if norm_set == norm_sets[0] else tuple(norm_set.split("=", 1))
        settings = sc.ScoreSettings(signal=signal, threshold=float(threshold), hook_s=float(hook), bin_s=float(bin_s))
        base = based.baseline if based else None
        try:
            mine = sc.clip_scores(s, clip["clip_id"], settings, base, quality)
            ns = sc.norm_scores(s, clip["clip_id"], settings, base, tag)
        except ValueError as exc:
            st.error(plain(exc))
            return
        st.dataframe(pr.score_table(mine.summary, base.correction if base else None, ns.table), hide_index=True)
        words = based.describe() if based else "no baseline (raw readings)"
        st.caption(f"Each metric is taken per person on their {signal} curve ({bin_s:g} s bins), then averaged over "
                   f"people, with a 95% interval over people. Threshold {mine.threshold:g}; {words}. Norm set: "
                   f"{plain(sc.norm_words(ns))}. {pr.INDEX.definition}")  # fmt: skip
        if ns.engagement is None:
            st.caption(f"{pr.ENGAGEMENT.name}: not shown, the norm set has {len(ns.norm_clips)} clips (it needs "
                       f"{pr.ENGAGEMENT_MIN_NORMS}).")  # fmt: skip
        else:
            st.metric(pr.ENGAGEMENT.name, pr.ENGAGEMENT.format(ns.engagement), help=pr.ENGAGEMENT.definition)
            st.caption(f"{pr.ENGAGEMENT.definition} Attention index {pr.INDEX.format(ns.engagement_parts['attention'])}, "
                       f"expressiveness index {pr.INDEX.format(ns.engagement_parts['expressiveness'])}.")  # fmt: skip
        with st.expander(f"The norm set's clips ({len(ns.norm_clips)})"):
            st.dataframe(pr.table(pl.DataFrame({"title": list(ns.norm_titles), "clip_id": list(ns.norm_clips)},
                                               schema={"title": pl.String, "clip_id": pl.String})), hide_index=True)  # fmt: skip
        with st.expander("Per person"):
            names = {r["person_id"]: r["person"] or f"person {r['person_id']}"
                     for r in s.people(run_id).iter_rows(named=True)}  # fmt: skip
            per = mine.people.with_columns(pl.col("person_id").replace_strict(names, default=None).alias("person"))
            corr = base.correction if base else None
            st.dataframe(pr.table(per.select("person_id", "person", *sc.METRIC_KEYS),
                                  kinds={k: pr.score_kind(k, corr) for k in sc.METRIC_KEYS},
                                  labels={k: pr.SCORE_METRICS[k].name for k in sc.METRIC_KEYS}), hide_index=True)  # fmt: skip
        with st.expander("What each score means"):
            st.dataframe(pr.table(pl.DataFrame({"metric": [m.name for m in pr.SCORE_METRICS.values()],
                                                "definition": [m.definition for m in pr.SCORE_METRICS.values()]})
                                  ), hide_index=True)  # fmt: skip

    def photo(fb: pl.DataFrame) -> None:
        """A photo: its faces side by side and a table per face, no time axis."""
        people = s.people(run_id)
        table = an.person_table(fb, people)
        names = {r["person_id"]: r["person"] or f"person {r['person_id']}" for r in table.iter_rows(named=True)}
        st.subheader(f"Faces in this photo ({table.height})")
        st.plotly_chart(photo_figure(table, names), config=chart_config(), key="photo")
        st.dataframe(pr.table(table.select("person_id", "person", *EXPRESSIONS, "valence", "arousal")
                              .with_columns(pl.col("person").fill_null(pl.format("person {}", pl.col("person_id"))))),
                     hide_index=True)  # fmt: skip
        tiles(fb)

    @st.fragment(run_every=1.0 if previews.status(clip["path"]) is not None
                 and previews.status(clip["path"]).state == "encoding" else None)  # fmt: skip
    def preview_status(path: str) -> None:
        """The browser preview as a background job: a button to start it, then its progress, then the video."""
        job = previews.status(path)
        if job is None or job.state == "failed":
            if job is not None:
                st.caption(f"The last preview failed: {plain(job.error)}")
            if st.button("Make a browser preview to play the video"):
                previews.start(path)
                st.rerun()
        elif job.state == "encoding":
            eta = job.eta_s()
            st.progress(job.share, text=f"Encoding a WebM preview in the background: {job.share:.0%}"
                        + (f", about {eta:.0f} s left" if eta is not None else ""))  # fmt: skip
        else:
            st.rerun()  # ready: the page shows the video

    def show_moment(video_t: float) -> None:
        path = clip["path"]
        if NO_VIDEO:
            st.caption(f"No video: this clip was imported from {TOOL or 'another tool'}'s output without its "
                       "recording (`ferpipe import --video` adds it).")  # fmt: skip
            return
        playable = path if browser_playable(path) else (preview_path(path) if preview_path(path).is_file() else None)
        if playable is not None:
            st.video(str(playable), start_time=int(video_t))
        else:
            try:
                st.image(frame_at(path, video_t * 1000), caption=f"frame at {video_t:.1f} s", width="stretch")
            except FerpipeError as exc:
                st.caption(plain(exc))
            preview_status(path)
        if st.toggle("Show face thumbnails", value=False, help="Off by default for privacy."):
            blur = st.toggle("Blur thumbnails", value=True)
            obs = s.faces_at(run_id, video_t * 1000)
            if obs.is_empty():
                st.caption("No face in view at this moment.")
            else:
                frame = frame_at(path, float(obs["timestamp_ms"][0]))
                thumbs = [
                    thumbnail(frame, (r["x"], r["y"], r["w"], r["h"]), blur=blur) for r in obs.iter_rows(named=True)
                ]
                persons = s.faces(run_id).select("face_id", "person_id")
                pid = dict(zip(persons["face_id"], persons["person_id"], strict=True))
                names = {r["person_id"]: r["person"] for r in s.people(run_id).iter_rows(named=True)}
                st.image(thumbs, caption=[plain(names.get(pid.get(f)) or f"person {pid.get(f) or f}")
                                          for f in obs["face_id"]], width=96)  # fmt: skip

    curves()
    if PHOTO or not HAS_EXPRESSIONS:  # a photo has no timelines; another tool's file may have no expressions
        st.stop()

    st.subheader("Per-person timelines")
    with s.reading():
        people = s.people(run_id)
        ids = people["person_id"].to_list()
        names = {r["person_id"]: r["person"] or f"person {r['person_id']}" for r in people.iter_rows(named=True)}
        chosen = st.multiselect("People", ids, default=ids[:3], format_func=names.get) if ids else []
        obs = s.face_timelines(run_id, chosen, list(EXPRESSIONS)) if chosen else None
    if not ids:
        st.caption("No faces.")
    elif obs is not None:
        st.plotly_chart(
            face_figure(an.downsample(obs, 1000), chosen, exprs or ["neutral"], names),
            config=chart_config(),
            key="faces",
        )
