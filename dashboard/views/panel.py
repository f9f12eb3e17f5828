"""Webcam panel: researchers pick a stimulus and send respondents a link; respondents consent, check their camera,
watch the stimulus while their webcam is recorded, and the recording comes back as a clip linked to the stimulus."""

from dataclasses import asdict

import polars as pl
import streamlit as st
from common import caveat, plain, store
from components import panel_html

from ferpipe.frames import is_image
from ferpipe.panel import CONSENT
from ferpipe.pipeline import Settings
from ferpipe.uploads import upload_token

s = store()
params = st.query_params
origin = "/".join((st.context.url or "").split("/", 3)[:3])
stimulus_ref = params.get("stimulus")

if stimulus_ref:  # the respondent's view: nothing but the panel
    st.markdown("<style>[data-testid=stSidebar], [data-testid=stSidebarCollapsedControl] {display: none;}</style>",
                unsafe_allow_html=True)  # fmt: skip
    try:
        stimulus = s.clip(s.resolve_clip(stimulus_ref))
    except ValueError:
        st.error("This study link is not valid (its video is not in the library). Please tell the researcher.")
        st.stop()
    config = {
        "consent": CONSENT,
        "respondent": params.get("respondent", ""),
        "token": upload_token(),
        "check": f"{origin}/ferpipe/check",
        "upload": f"{origin}/ferpipe/upload",
        "stimulus": f"{origin}/ferpipe/stimulus/{stimulus['clip_id']}?token={upload_token()}",
        "stimulus_id": stimulus["clip_id"],
        "title_prefix": f"{stimulus['title']} · panel · ",
        "settings": asdict(Settings()),
        "tags": {"panel": stimulus["title"]},
    }
    st.iframe(panel_html(config), height=760)
    st.stop()

st.title("Webcam panel")
caveat()
st.write("Respondents open a link, agree to be recorded, pass a camera check (one face, enough light), then watch the "
         "stimulus while their browser records their webcam. The recording is uploaded when the video ends, stored as "
         "a clip linked to the stimulus (with the measured offset between recording and playback, and their "
         "respondent id) and processed right away.")  # fmt: skip
clips = s.clips()
# stimuli: videos that are not themselves recordings of an audience (linked to a stimulus, or a respondent's)
stimuli = clips.filter(
    pl.col("stimulus_clip_id").is_null()
    & ~pl.col("tags").str.contains("respondent=", literal=True)
    & ~pl.col("tags").str.contains(r"(^|, )stimulus=")  # an audience recorded watching a stimulus
    & ~pl.col("title").fill_null("").str.contains(" · panel · ", literal=True)
    & ~pl.col("path").map_elements(is_image, return_dtype=pl.Boolean)
)
if stimuli.is_empty():
    st.info("Add the stimulus video on the Library page first.")
    st.stop()
ids = stimuli["clip_id"].to_list()
titles = dict(zip(ids, stimuli["title"].to_list(), strict=True))
chosen = st.selectbox("Stimulus respondents watch", ids, format_func=lambda c: f"{titles[c]}  ·  {c}")
link = f"{origin}/panel?stimulus={chosen}"
st.caption("Send each respondent this link (add &respondent=ID to fill in their id). They need a webcam, a recent "
           "Chrome, Edge or Firefox, and the dashboard reachable from their network (see the README on serving it).")  # fmt: skip
st.code(link, language=None)
st.link_button("Try it as a respondent", link)

st.subheader("Recordings received")
received = clips.filter(pl.col("clip_id").is_in(s.panel_recordings(chosen)))
if received.is_empty():
    st.info("No recordings yet.")
else:
    st.dataframe(
        received.select(pl.concat_str(pl.lit("clip?clip="), pl.col("clip_id")).alias("open"), "title", "status",
                        "duration_s", "people", "observations", "created_at"),
        hide_index=True,
        column_config={"open": st.column_config.LinkColumn("View", display_text="open ↗"),
                       "title": st.column_config.TextColumn("Title"), "status": st.column_config.TextColumn("Status"),
                       "duration_s": st.column_config.NumberColumn("Duration (s)", format="%.1f"),
                       "people": st.column_config.NumberColumn("People", format="%d"),
                       "observations": st.column_config.NumberColumn("Readings", format="%d"),
                       "created_at": st.column_config.DatetimeColumn("Received", format="YYYY-MM-DD HH:mm")},
    )  # fmt: skip
    st.caption(
        f"{received.height} recording(s); compare them on the Compare page (tag panel = {plain(titles[chosen])})."
    )
