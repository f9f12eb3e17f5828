"""Webcam panel: researchers pick a stimulus and send respondents a link; respondents consent, check their camera,
watch the stimulus while their webcam is recorded, and the recording comes back as a clip linked to the stimulus."""

import polars as pl
import streamlit as st
from common import caveat, plain, store

from ferpipe import present as pr
from ferpipe.access import create_link, link_states
from ferpipe.frames import is_image

s = store()
params = st.query_params
origin = "/".join((st.context.url or "").split("/", 3)[:3])
if params.get("stimulus"):  # an unsigned link of an older version: respondents need a signed one now
    st.error("Panel links are signed per respondent now: ask the researcher for your own link.")
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
st.subheader("Respondent links")
st.caption("Each respondent gets a link of their own, signed by this server: it opens only the camera check, this "
           "stimulus and one upload for that respondent, and it expires. The analysis settings are the server's. "
           "Respondents need a webcam, a recent Chrome, Edge or Firefox, and the panel server reachable from their "
           "network (see the README on serving it).")  # fmt: skip
l1, l2, l3 = st.columns([3, 1, 1])
who = l1.text_area("Respondent ids (one per line)", key="link_ids", height=100)
days = l2.number_input("Valid for (days)", 1, 90, 7, key="link_days")
uses = l3.number_input("Uploads per link", 1, 10, 1, key="link_uses")
if st.button("Make links", disabled=not who.strip()):
    made = []
    for r in dict.fromkeys(x.strip() for x in who.splitlines() if x.strip()):
        try:
            _, token = create_link(s, s.path, chosen, r, days * 86400.0, int(uses))
            made.append({"respondent": r, "link": f"{origin}/panel?link={token}"})
        except ValueError as exc:
            st.error(plain(exc))
    st.session_state["made_links"] = made
if st.session_state.get("made_links"):
    st.caption("Send each respondent their own link (shown once here; the table below keeps their state).")
    st.dataframe(pl.DataFrame(st.session_state["made_links"]), hide_index=True,
                 column_config={"respondent": st.column_config.TextColumn("Respondent"),
                                "link": st.column_config.TextColumn("Link", width="large")})  # fmt: skip
if st.button("Try it as a respondent"):
    _, token = create_link(s, s.path, chosen, "test respondent", 3600.0, 1)
    st.link_button("Open the test link", f"{origin}/panel?link={token}")
states = link_states(s, chosen)
if states.height:
    st.dataframe(pr.table(states), hide_index=True)

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
