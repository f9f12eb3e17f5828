"""Helpers shared by the dashboard pages: the store, the caveat, clip pickers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import streamlit as st

from ferpipe import CAVEAT
from ferpipe.config import default_db_path
from ferpipe.store import Store


def db_path() -> Path:
    return Path(os.environ.get("FERPIPE_DB") or default_db_path())


@st.cache_resource
def _store(path: str) -> Store:
    store = Store(path)
    store.migrate()
    return store


def store() -> Store:
    return _store(str(db_path()))


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:^=])")


def plain(text: object) -> str:
    """Text shown as it is wherever Streamlit would read Markdown (labels, headings, messages): a title such as
    ``![x](http://…)`` must not make the browser fetch anything."""
    return _MARKDOWN.sub(r"\\\1", str(text))


def caveat() -> None:
    st.caption(f"⚠️ {CAVEAT} Valence and arousal are derived from the seven probabilities, not measured.")


def clip_picker(label: str = "Clip", key: str = "clip", with_faces: bool = False) -> dict | None:
    """A selectbox of clips (remembered across pages); None when the library is empty."""
    clips = store().clips()
    if with_faces:
        clips = clips.filter(clips["faces"].fill_null(0) > 0)
    if clips.is_empty():
        st.info("No clips yet. Add videos on the Library page.")
        return None
    ids = clips["clip_id"].to_list()
    names = {r["clip_id"]: f"{r['title']}  ·  {r['clip_id']}" for r in clips.iter_rows(named=True)}  # options are plain
    default = st.query_params.get("clip") or st.session_state.get("current_clip")
    if default not in ids:  # first visit: the clip with the most people seen, not simply the newest
        default = clips.sort("observations", descending=True, nulls_last=True)["clip_id"][0]
    index = ids.index(default)
    chosen = st.selectbox(label, ids, index=index, format_func=names.get, key=key)
    st.session_state["current_clip"] = chosen
    return clips.filter(clips["clip_id"] == chosen).row(0, named=True)


def fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "estimating…"
    m, s = divmod(round(seconds), 60)
    return f"{m}m {s:02d}s" if m else f"{s}s"


def chart_config() -> dict:
    """Plotly's download button on every chart: PNG (twice the screen size) or SVG, as chosen in the sidebar."""
    fmt = st.session_state.get("chart_format", "png")
    return {"displaylogo": False, "toImageButtonOptions": {"format": fmt, "scale": 2 if fmt == "png" else 1}}
