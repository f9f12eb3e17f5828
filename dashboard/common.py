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


BASELINE_CHOICES = {
    "none": "None (raw readings)",
    "first": "Each person's first seconds in view",
    "interval": "An interval of stimulus time",
    "marker": "An event marker",
    "median": "Each person's own median",
}


def baseline_control(key: str, markers: list[str] | None = None, duration_s: float = 0.0):
    """The per-person baseline setting (ferpipe.types.Baseline, or None for raw readings), in an expander."""
    from ferpipe.types import Baseline

    with st.expander("Baseline correction (per person)"):
        st.caption("Takes each person's resting face out of their readings before they are averaged: one person's "
                   "neutral face may read 0.3 sad, another's 0.3 angry. Stored readings are not changed.")  # fmt: skip
        b1, b2, b3 = st.columns([2, 2, 1])
        kind = b1.selectbox("Baseline", list(BASELINE_CHOICES), format_func=BASELINE_CHOICES.get, key=f"{key}_kind")
        if kind == "none":
            return None
        how = b3.radio("Correction", ["subtract", "z"], key=f"{key}_how",
                       format_func={"subtract": "subtract", "z": "z-score"}.get)  # fmt: skip
        if kind == "first":
            n = b2.number_input("Seconds", 0.5, 600.0, 3.0, 0.5, key=f"{key}_first")
            return Baseline("first", how, first_s=float(n))
        if kind == "interval":
            top = max(float(duration_s or 0.0), 1.0)
            lo, hi = b2.slider("Stimulus time (s)", 0.0, top, (0.0, min(3.0, top)), 0.5, key=f"{key}_span")
            if not hi > lo:
                st.warning("Pick an interval longer than 0 s.")
                return None
            return Baseline("interval", how, start_s=float(lo), end_s=float(hi))
        if kind == "marker":
            names = sorted(set(markers or []))
            if not names:
                st.warning("This clip has no event markers; add an interval marker (e.g. 'baseline') first.")
                return None
            default = names.index("baseline") if "baseline" in names else 0
            return Baseline("marker", how, marker=b2.selectbox("Marker", names, index=default, key=f"{key}_marker"))
        return Baseline("median", how)
