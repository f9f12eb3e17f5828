"""The panel-only server's app: one page, the respondent's (views/respond.py)."""

import streamlit as st
from respondent import respondent_home

st.set_page_config(page_title="Study panel", page_icon=":material/videocam:", layout="centered")
st.navigation([st.Page(respondent_home, title="Study panel", default=True),
               st.Page("views/respond.py", title="Study panel ", url_path="panel")], position="hidden").run()  # fmt: skip
