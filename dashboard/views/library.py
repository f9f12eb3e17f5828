"""Library: add videos and photos (streamed upload or URL), watch them process, list, open and delete clips."""

from dataclasses import asdict

import polars as pl
import streamlit as st
from common import caveat, clip_picker, db_path, fmt_eta, plain, store
from components import uploader_html

from ferpipe import jobs
from ferpipe import present as pr
from ferpipe.config import max_upload_mb
from ferpipe.errors import FerpipeError
from ferpipe.frames import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, clip_kind
from ferpipe.ingest import check_url, parse_tags
from ferpipe.live import is_live, parse_live
from ferpipe.onnx import usable_devices
from ferpipe.pipeline import Settings
from ferpipe.registry import default_expression_model, registry
from ferpipe.uploads import upload_token

st.title("Library")
caveat()

st.subheader("Add videos or photos")
models = sorted(n for n, m in registry().items() if m.task == "expression")
c1, c2 = st.columns(2)
title = c1.text_input("Title (optional; for a single file or URL)")
tags_text = c2.text_input("Tags", placeholder="group=A, stimulus=ad_3")
c3, c4, c5 = st.columns(3)
default = default_expression_model()
model = c3.selectbox("Model", models, index=models.index(default) if default in models else 0)
fps = c4.number_input("Analysis rate (frames/s)", 0.5, 60.0, 5.0, 0.5)
every = c5.checkbox("Every frame")
signals = c5.checkbox("Attention, head pose, facial actions", value=True,
                      help="Off: expressions only (faster).")  # fmt: skip
device = c3.selectbox(
    "Device",
    usable_devices(),
    help="Where the ONNX models run (auto: a GPU where one is usable, "
    "else the CPU). Readings match the CPU's within a stated tolerance, so runs stay comparable.",
)
settings, tags, problem = None, {}, None
try:
    tags = parse_tags(tags_text)
    settings = Settings(sample_fps=None if every else float(fps), model=model, signals=signals, device=device)
except ValueError as exc:
    problem = str(exc)
if problem:
    st.error(plain(problem))
else:
    origin = (st.context.url or "").split("/", 3)[:3]
    endpoint = ("/".join(origin) if len(origin) == 3 else "") + "/ferpipe/upload"
    accept = [*VIDEO_EXTENSIONS, *IMAGE_EXTENSIONS, ".csv"]
    st.caption(f"Choose videos and photos, and optionally a study metadata CSV with them, in one go. Files go "
               f"straight to disk as they upload (up to {max_upload_mb():,} MiB each) and each one is processed in the "
               "background. The CSV has one row per file: source (the file's name), and optional title, respondent, "
               "stimulus (a clip title or id) and offset_s; every other column becomes a tag.")  # fmt: skip
    st.iframe(uploader_html(endpoint, upload_token(), asdict(settings), accept, title, tags_text),
              height=170)  # fmt: skip
    u1, u2, u3 = st.columns([4, 1, 1])
    url = u1.text_input("…or a video URL (http/https), or a live stream (.m3u8, rtsp://)", placeholder="https://…")
    stream = url.strip().lower()
    live = u2.checkbox("Live stream", value=is_live(stream) or ".m3u8" in stream,
                       help="Analyse as it plays, until the stream ends or you press Stop; the recording is kept.")  # fmt: skip
    if u3.button("Watch live" if live else "Fetch and process", disabled=not url.strip()):
        try:
            if live:
                parse_live(url.strip())
            else:
                check_url(url.strip())
            jobs.start(db_path(), url.strip(), settings, title=title or None, tags=tags, live=live)
        except (FerpipeError, ValueError) as exc:
            st.error(plain(exc))


@st.fragment(run_every=2)
def progress_panel() -> None:
    """Running and finished background jobs, refreshed every 2 seconds."""
    running = store().running_runs()
    by_pid = {r["pid"]: r for r in running.iter_rows(named=True)}
    finished: list[str] = []
    for job in jobs.list_jobs(db_path()):
        name = plain(job.title)
        if job.alive():
            run = by_pid.get(job.pid)
            c1, c2 = st.columns([6, 1])
            if run is None and (job.folder / "queued").is_file():
                c1.progress(0.0, text=f"{name}: queued (at most {jobs.max_jobs()} analyses run at once)")
            elif run is None:
                c1.progress(0.0, text=f"{name}: checking the file…")
            elif not run["frames_expected"]:  # a live stream: no end known
                faces = int(run["faces"] or 0)
                c1.info(f"● {name}: live, {int(run['frames_done']):,} frames analysed, {faces:,} face"
                        f"{'s' * (faces != 1)} so far. Open it in Clip view to follow it.")  # fmt: skip
            else:
                done, total = int(run["frames_done"]), int(run["frames_expected"] or 1)
                eta = jobs.eta_seconds(done, total, float(run["seconds"] or 0))
                faces = int(run["faces"] or 0)
                c1.progress(min(1.0, done / max(total, 1)), text=f"{name}: {done:,}/{total:,} frames · {faces:,} "
                            f"face{'s' * (faces != 1)} so far · ETA {fmt_eta(eta)}")  # fmt: skip
            if c2.button("Stop", key=f"stop-{job.job_id}", help="Stop processing; what is done so far is kept."):
                job.stop()
            continue
        res = job.result()
        if res is None:
            continue
        if res.error and res.status != "truncated":
            st.error(f"{name}: {plain(res.error)}")
        elif res.status == "truncated":
            st.warning(f"{name}: truncated media ({plain(res.error)}); what could be decoded is stored.")
        elif res.faces == 0:
            st.warning(f"{name}: processed; no faces found in {res.frames_analyzed:,} frames.")
        else:  # done: listed once below, then cleared with the others
            finished.append(f"{name} ({pr.people_words(res.people)})")
            continue
        if st.button("Dismiss", key=f"dismiss-{job.job_id}"):
            jobs.forget(job)
            st.rerun(scope="fragment")
    if finished:
        c1, c2 = st.columns([6, 1])
        c1.success("Done: " + "; ".join(finished) + ".")
        if c2.button("Clear", key="clear-done"):
            for job in jobs.list_jobs(db_path()):
                res = None if job.alive() else job.result()
                if res is not None and not res.error and res.faces:
                    jobs.forget(job)
            st.rerun(scope="fragment")
    clips = store().clips()
    if clips.is_empty():
        st.info("No clips yet.")
        return
    table = pr.table(
        clips.select(
            "title",
            pl.col("path").map_elements(clip_kind, return_dtype=pl.String)
            .alias("kind"),
            pl.col("status").fill_null("not processed"), "duration_s", "people", "faces", "observations",
            "dropped_frames",
            pl.col("model").fill_null("—"), "created_at", "tags", "clip_id",
        ),
        kinds={"duration_s": "seconds", "created_at": "text"}, labels={"faces": "Face tracks"},
    ).with_columns(pl.Series("View", [f"clip?clip={c}" for c in clips["clip_id"]]))  # fmt: skip
    table = table.select("View", *[c for c in table.columns if c != "View"])
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "View": st.column_config.LinkColumn("View", display_text="open ↗", help="Open in Clip view"),
            "People": st.column_config.TextColumn("People", help=pr.PEOPLE.definition),
            "Face tracks": st.column_config.TextColumn("Face tracks", help=pr.TRACKS.definition),
            "Readings": st.column_config.TextColumn("Readings", help=pr.READINGS.definition),
            "Clip id": st.column_config.TextColumn("Clip id", width="large"),
        },
    )  # fmt: skip


st.subheader("Clips")
progress_panel()

with st.expander("Delete a clip"):
    clip = clip_picker("Clip to delete", key="delete_clip")
    if clip is not None:
        sure = st.checkbox(f"Yes, delete “{plain(clip['title'])}” and all its results")
        if st.button("Delete", disabled=not sure):
            with st.spinner("Stopping its processing, if any, and deleting…"):
                store().delete_clip(clip["clip_id"])
                store().audit("clip deleted", who=st.session_state.get("signed_in_user"), detail=clip["clip_id"])
            st.session_state.pop("current_clip", None)
            st.success("Deleted.")
            st.rerun()

with st.expander("Forget a respondent (a data subject's request)"):
    st.caption("Removes the respondent everywhere: their recordings with the media files, readings and people; the "
               "faces named for them in other clips; their names, attributes and panel links. It cannot be undone.")  # fmt: skip
    who = st.text_input("Respondent id", key="forget_id")
    sure = st.checkbox("Yes, remove everything about this respondent", key="forget_sure", disabled=not who.strip())
    if st.button("Forget", disabled=not (who.strip() and sure)):
        report = store().forget_respondent(who)
        store().audit("respondent forgotten", who=st.session_state.get("signed_in_user"), detail=f"{who}: {report}")
        st.success(f"Forgot {plain(who)}: " + ", ".join(f"{v} {k}" for k, v in report.items()) + ".")
