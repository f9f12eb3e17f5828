"""ferpipe dashboard: navigation only; each page lives in pages/."""

import streamlit as st

st.set_page_config(page_title="ferpipe", page_icon=":material/mood:", layout="wide")
st.sidebar.markdown("### ferpipe\nAudience expression analytics")

st.navigation(
    [
        st.Page("pages/library.py", title="Library", icon=":material/video_library:", default=True),
        st.Page("pages/clip.py", title="Clip view", icon=":material/show_chart:"),
        st.Page("pages/people.py", title="People", icon=":material/groups:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
        st.Page("pages/panel.py", title="Webcam panel", icon=":material/videocam:", url_path="panel"),
        st.Page("pages/export.py", title="Export", icon=":material/download:"),
        st.Page("pages/models.py", title="Models", icon=":material/model_training:"),
    ]
).run()
