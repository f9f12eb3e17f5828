"""Clip view: aggregate expression curves, shares, peaks, per-face timelines and the video."""

import polars as pl
import streamlit as st
from common import caveat, clip_picker, store

from ferpipe import analytics as an
from ferpipe.errors import FerpipeError
from ferpipe.figures import curves_figure, face_figure, share_figure
from ferpipe.media import browser_playable, frame_at, make_preview, preview_path, thumbnail
from ferpipe.types import EXPRESSIONS

st.title("Clip view")
caveat()
clip = clip_picker()
if clip is None:
    st.stop()
s = store()
runs = s.clip_runs(clip["clip_id"])
if runs.is_empty():
    st.info("This clip has not been processed yet.")
    st.stop()
best = int(runs["run_id"][0])
labels = {r["run_id"]: f"run {r['run_id']} · {r['model']} · {r['status']}" for r in runs.iter_rows(named=True)}
run_ids = list(labels)

c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
exprs = c1.multiselect("Expressions", list(EXPRESSIONS), default=["happy", "surprise", "sad", "neutral"])
bin_s = c2.select_slider("Bin width (s)", [0.2, 0.5, 1.0, 2.0, 5.0, 10.0], value=1.0)
window = c3.slider("Smoothing (bins)", 1, 15, 1)
run_id = c4.selectbox("Run", run_ids, index=run_ids.index(best), format_func=labels.get)

offset = float(clip["stimulus_offset_s"] or 0)
stimulus = clip["stimulus_clip_id"]
with st.expander("Stimulus sync" + (f" (linked, offset {offset:g} s)" if stimulus else "")):
    all_clips = s.clips()
    others = [c for c in all_clips["clip_id"].to_list() if c != clip["clip_id"]]
    titles = dict(zip(all_clips["clip_id"].to_list(), all_clips["title"].to_list()))
    choice = st.selectbox("Stimulus this audience watched", [None, *others], index=([None, *others].index(stimulus)
                          if stimulus in others else 0), format_func=lambda c: "— none —" if c is None else titles[c])  # fmt: skip
    new_offset = st.number_input("Offset: stimulus time = clip time − offset (s)", value=offset, step=0.5)
    if st.button("Save link"):
        s.set_stimulus(clip["clip_id"], choice, new_offset)
        st.rerun()
on_stimulus = bool(stimulus) and st.toggle("Plot against stimulus time", value=bool(stimulus))


RUN = s.run(run_id)


@st.fragment(run_every=3 if RUN.status == "running" else None)
def curves() -> None:
    with s.reading():
        _curves()


def _curves() -> None:
    run = s.run(run_id) if RUN.status == "running" else RUN
    if run.status == "running":
        st.info(f"Processing: {run.frames_done}/{run.frames_expected} frames so far; the curves grow as it runs.")
    elif run.status == "truncated":
        st.warning(f"Truncated media: {run.error}. The curves cover what could be decoded.")
    fb = an.face_bins(s, run_id, bin_s)
    agg = an.smooth(an.aggregate_face_bins(fb, bin_s), window)
    shift = offset if on_stimulus else 0.0
    agg = agg.with_columns((pl.col("t_s") - shift).alias("t_s"))
    if agg.is_empty():
        st.warning("No faces found in this clip." if run.finished else "No faces yet.")
        return
    pk = an.peak_table(agg, exprs or ["neutral"], bin_s=bin_s).sort("value", descending=True)
    picked = st.session_state.get("peaks")
    rows = picked.selection.rows if picked is not None and hasattr(picked, "selection") else []
    if rows and rows[0] < pk.height and st.session_state.get("peak_row") != rows[0]:
        st.session_state["peak_row"] = rows[0]  # a newly clicked peak moves the moment shown
        st.session_state["t_sel"] = float(pk["t_s"][rows[0]])
    t_sel = st.session_state.get("t_sel", float(agg["t_s"][0]))
    left, right = st.columns([3, 2])
    xt = "stimulus time (s)" if on_stimulus else "video time (s)"
    left.plotly_chart(curves_figure(agg, exprs or ["neutral"], x_title=xt, marker_t=t_sel), key="curves")
    with right:
        lo_t, hi_t = float(agg["t_s"].min()), float(agg["t_s"].max() + bin_s)
        t_sel = st.slider("Moment (s)", lo_t, hi_t, min(max(float(t_sel), lo_t), hi_t), 0.1)
        st.session_state["t_sel"] = t_sel
        video_t = t_sel + shift
        show_moment(video_t)
        if on_stimulus:
            st.caption(f"Stimulus at {t_sel:.1f} s")
            stim = s.clip(stimulus)
            try:
                st.image(frame_at(stim["path"], t_sel * 1000), width="stretch")
            except FerpipeError as exc:
                st.caption(str(exc))
    shares = an.top_expression_share(fb, bin_s).with_columns((pl.col("t_s") - shift).alias("t_s"))
    dom = an.dominant_share(an.face_means_from_bins(fb))
    st.subheader("% of faces showing each expression")
    st.caption("Share of faces in view whose top expression is X in each bin; below, over the whole clip.")
    st.plotly_chart(share_figure(shares), key="shares")
    cols = st.columns(len(EXPRESSIONS))
    for col, e in zip(cols, EXPRESSIONS):
        col.metric(e, f"{dom[e] * 100:.0f}%")
    st.subheader("Peak moments")
    st.caption("Click a row to show that moment beside the curves.")
    st.dataframe(pk, hide_index=True, on_select="rerun", selection_mode="single-row", key="peaks")
    st.subheader("Valence and arousal (derived)")
    st.caption("Derived from the seven probabilities through Russell's circumplex; not a measurement.")
    st.plotly_chart(curves_figure(agg, ["valence", "arousal"], x_title=xt), key="va")


def show_moment(video_t: float) -> None:
    path = clip["path"]
    playable = path if browser_playable(path) else (preview_path(path) if preview_path(path).is_file() else None)
    if playable is not None:
        st.video(str(playable), start_time=int(video_t))
    else:
        try:
            st.image(frame_at(path, video_t * 1000), caption=f"frame at {video_t:.1f} s", width="stretch")
        except FerpipeError as exc:
            st.caption(str(exc))
        if st.button("Make a browser preview to play the video"):
            with st.spinner("Encoding a WebM preview…"):
                make_preview(path)
            st.rerun()
    if st.toggle("Show face thumbnails", value=False, help="Off by default for privacy."):
        blur = st.toggle("Blur thumbnails", value=True)
        obs = s.faces_at(run_id, video_t * 1000)
        if obs.is_empty():
            st.caption("No face in view at this moment.")
        else:
            frame = frame_at(path, float(obs["timestamp_ms"][0]))
            thumbs = [thumbnail(frame, (r["x"], r["y"], r["w"], r["h"]), blur=blur) for r in obs.iter_rows(named=True)]
            st.image(thumbs, caption=[f"face {f}" for f in obs["face_id"]], width=96)


curves()

st.subheader("Per-face timelines")
with s.reading():
    faces = s.faces(run_id)
    ids = faces["face_id"].to_list()
    chosen = st.multiselect("Faces", ids, default=ids[:3], format_func=lambda f: f"face {f}") if ids else []
    obs = s.face_timelines(run_id, chosen, list(EXPRESSIONS)) if chosen else None
if not ids:
    st.caption("No faces.")
elif obs is not None:
    st.plotly_chart(face_figure(an.downsample(obs, 1000), chosen, exprs or ["neutral"]), key="faces")
