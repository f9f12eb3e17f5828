"""The respondent's side of a webcam panel, opened by a signed link (ferpipe.access): consent, camera check, the
stimulus while the webcam records, upload. It shows nothing of the library, and the link decides the stimulus, the
respondent and everything about the upload."""

import streamlit as st
from common import store
from components import panel_html

from ferpipe.access import AccessError, check_link
from ferpipe.panel import CONSENT

MESSAGES = {
    "used": ("This link has already been used", "Your recording was received. Thank you! You can close this page."),
    "expired": ("This link has expired", "Please ask the researcher for a new link."),
    "invalid": ("This link is not valid", "Please check that you opened the whole link, or ask the researcher."),
}


def respondent_page(token: str) -> None:
    """Render the respondent's side for a link token, or a plain page saying why it cannot be used."""
    st.markdown("<style>[data-testid=stSidebar], [data-testid=stSidebarCollapsedControl] {display: none;}</style>",
                unsafe_allow_html=True)  # fmt: skip
    s = store()
    try:
        link = check_link(s, s.path, token, need_use=True)
        stimulus = s.clip(link.stimulus_clip_id)
    except (AccessError, ValueError) as exc:
        title, text = MESSAGES.get(getattr(exc, "reason", "invalid"), MESSAGES["invalid"])
        st.title(title)
        st.write(text)
        st.stop()
    if link.state == "sent":
        s.set_link_state(link.nonce, "opened")
    origin = "/".join((st.context.url or "").split("/", 3)[:3])
    config = {
        "consent": CONSENT,
        "respondent": link.respondent,
        "link": token,
        "check": f"{origin}/ferpipe/check",
        "upload": f"{origin}/ferpipe/upload",
        "stimulus": f"{origin}/ferpipe/stimulus/{stimulus['clip_id']}?link={token}",
        "stimulus_id": stimulus["clip_id"],
        "title_prefix": "",
    }
    st.iframe(panel_html(config), height=760)
    st.stop()


def respondent_home() -> None:
    """The page a respondent's server or session opens on: their panel, or a word on what the page is for."""
    token = st.query_params.get("link")
    if token:
        respondent_page(token)
    st.title("Study panel")
    st.write("This page is for study respondents: open the link the researcher sent you.")
