"""Library: add videos (upload or URL), watch them process, list and delete clips."""

import uuid
from pathlib import Path

import streamlit as st
from common import caveat, clip_picker, db_path, fmt_eta, store

from ferpipe import jobs
from ferpipe.config import max_upload_mb, media_dir
from ferpipe.errors import FerpipeError
from ferpipe.frames import VIDEO_EXTENSIONS, probe
from ferpipe.ingest import check_url, parse_tags
from ferpipe.registry import default_expression_model, registry

st.title("Library")
caveat()

models = sorted(n for n, m in registry().items() if m.task == "expression")
with st.form("add", clear_on_submit=True):
    files = st.file_uploader("Videos", type=[e.lstrip(".") for e in VIDEO_EXTENSIONS], accept_multiple_files=True,
                             max_upload_size=max_upload_mb())  # fmt: skip
    url = st.text_input("…or a video URL (http/https)", placeholder="https://…")
    c1, c2 = st.columns(2)
    title = c1.text_input("Title (optional)")
    tags_text = c2.text_input("Tags", placeholder="group=A, stimulus=ad_3")
    c3, c4, c5 = st.columns(3)
    default = default_expression_model()
    model = c3.selectbox("Model", models, index=models.index(default) if default in models else 0)
    fps = c4.number_input("Analysis rate (frames/s)", 0.5, 60.0, 5.0, 0.5)
    every = c5.checkbox("Every frame")
    submitted = st.form_submit_button("Process", type="primary")

if submitted:
    try:
        tags = parse_tags(tags_text)
    except ValueError as exc:
        st.error(str(exc))
        tags = None
    if tags is not None:
        rate = None if every else float(fps)
        for f in files or []:
            folder = media_dir(db_path()) / ".uploads" / uuid.uuid4().hex[:8]
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / Path(f.name).name
            path.write_bytes(f.getbuffer())
            try:
                probe(path)
            except FerpipeError as exc:
                st.error(f"{f.name}: {exc}")
                path.unlink(missing_ok=True)
                continue
            jobs.start(db_path(), str(path), title or Path(f.name).stem, tags, model, rate, upload=str(path))
        if url.strip():
            try:
                check_url(url.strip())
                jobs.start(db_path(), url.strip(), title or None, tags, model, rate)
            except FerpipeError as exc:
                st.error(str(exc))


@st.fragment(run_every=2)
def progress_panel() -> None:
    """Running and finished background jobs, refreshed every 2 seconds."""
    running = store().running_runs()
    by_pid = {r["pid"]: r for r in running.iter_rows(named=True)}
    for job in jobs.list_jobs(db_path()):
        if job.alive():
            run = by_pid.get(job.pid)
            if run is None:
                st.progress(0.0, text=f"{job.title}: downloading and checking the video…")
            else:
                done, total = int(run["frames_done"]), int(run["frames_expected"] or 1)
                eta = jobs.eta_seconds(done, total, float(run["seconds"] or 0))
                st.progress(min(1.0, done / max(total, 1)),
                            text=f"{run['title']}: {done}/{total} frames · {run['faces']} faces · ETA {fmt_eta(eta)}")  # fmt: skip
            continue
        err = job.error()
        res = job.result() or {}
        if err:
            st.error(f"{job.title}: {err}")
        elif res.get("faces") == 0:
            st.warning(f"{res.get('title', job.title)}: no faces found in {res.get('frames_analyzed', 0)} frames.")
        else:
            st.success(f"{res.get('title', job.title)}: {res.get('faces')} faces, {res.get('observations')} observations.")
        if st.button("Dismiss", key=f"dismiss-{job.job_id}"):
            jobs.forget(db_path(), job)
            st.rerun(scope="fragment")
    clips = store().clips()
    if clips.is_empty():
        st.info("No clips yet.")
        return
    table = clips.select("title", "status", "duration_s", "faces", "observations", "model", "created_at", "tags",
                         "clip_id")  # fmt: skip
    st.dataframe(table, hide_index=True, column_config={"duration_s": st.column_config.NumberColumn("duration (s)",
                 format="%.1f"), "created_at": st.column_config.DatetimeColumn("added")})  # fmt: skip


st.subheader("Clips")
progress_panel()

with st.expander("Delete a clip"):
    clip = clip_picker("Clip to delete", key="delete_clip")
    if clip is not None:
        sure = st.checkbox(f"Yes, delete “{clip['title']}” and all its results")
        if st.button("Delete", disabled=not sure):
            store().delete_clip(clip["clip_id"])
            st.session_state.pop("current_clip", None)
            st.success("Deleted.")
            st.rerun()
