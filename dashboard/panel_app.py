"""The panel-only server's app: one page, the respondent's (views/respond.py)."""

import streamlit as st

st.set_page_config(page_title="Study panel", page_icon=":material/videocam:", layout="centered")
st.navigation([st.Page("views/respond.py", title="Study panel", url_path="panel", default=True)],
              position="hidden").run()  # fmt: skip
