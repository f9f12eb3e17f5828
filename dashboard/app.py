"""ferpipe dashboard: navigation only; each page lives in views/ (a folder named pages/ would make Streamlit list
its files as pages of their own when a page is opened by its link)."""

import streamlit as st

st.set_page_config(page_title="ferpipe", page_icon=":material/mood:", layout="wide")
st.sidebar.markdown("### ferpipe\nAudience expression analytics")
st.sidebar.radio("Chart downloads", ["png", "svg"], key="chart_format", horizontal=True,
                 help="The camera icon above each chart saves it in this format.")  # fmt: skip

st.navigation(
    [
        st.Page("views/library.py", title="Library", icon=":material/video_library:", default=True),
        st.Page("views/clip.py", title="Clip view", icon=":material/show_chart:"),
        st.Page("views/people.py", title="People", icon=":material/groups:"),
        st.Page("views/compare.py", title="Compare", icon=":material/compare:"),
        st.Page("views/panel.py", title="Webcam panel", icon=":material/videocam:", url_path="panel"),
        st.Page("views/export.py", title="Export", icon=":material/download:"),
        st.Page("views/models.py", title="Models", icon=":material/model_training:"),
    ]
).run()
