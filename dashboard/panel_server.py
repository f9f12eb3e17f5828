"""The panel-only server (`ferpipe panel-server`): the respondents' side of webcam panels and nothing else.

It serves one page (views/respond.py: a signed link's consent, camera check, stimulus and upload) and the routes a
link opens (camera check, its stimulus, its upload), link-only: the research dashboard's pages, its token and its
routes are not part of this server at all. It answers only to this machine's names and FERPIPE_PUBLIC_HOSTS.
"""

import os
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from ferpipe import panel
from ferpipe.access import HostCheck
from ferpipe.config import default_db_path
from ferpipe.uploads import routes


def _db_path() -> Path:
    return Path(os.environ.get("FERPIPE_DB") or default_db_path())


def _no_token() -> str:
    return ""  # no researcher token exists on this server


app = st.App(str(Path(__file__).with_name("panel_app.py")),
             routes=[*routes(_db_path, link_only=True), *panel.routes(_db_path, _no_token, link_only=True)],
             middleware=[Middleware(HostCheck)])  # fmt: skip
