"""The dashboard server: the Streamlit app (app.py) plus ferpipe's own HTTP routes (streamed uploads, and the
webcam panel's camera check and stimulus video, researcher sign-in), answering only to this machine's names and
FERPIPE_PUBLIC_HOSTS (ferpipe.access.HostCheck).

`ferpipe dashboard` runs `streamlit run dashboard/server.py`; Streamlit finds ``app`` below and serves
both on one port.
"""

import os
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from ferpipe import panel
from ferpipe.access import HostCheck, auth_routes
from ferpipe.config import default_db_path
from ferpipe.uploads import routes, upload_token

upload_token()  # made before the first page runs, so pages and routes agree on it


def _db_path() -> Path:
    return Path(os.environ.get("FERPIPE_DB") or default_db_path())


app = st.App(str(Path(__file__).with_name("app.py")),
             routes=[*routes(_db_path), *panel.routes(_db_path, upload_token), *auth_routes(_db_path)],
             middleware=[Middleware(HostCheck)])  # fmt: skip
