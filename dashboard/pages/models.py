"""Models: what is registered, how each was evaluated, and which runs used which model."""

import json

import polars as pl
import streamlit as st
from common import caveat, store

from ferpipe.registry import default_expression_model, registry

st.title("Models")
caveat()
default = default_expression_model()
rows = []
for spec in registry().values():
    if spec.task != "expression":
        continue
    m = spec.extra.get("metrics", {})
    rows.append({"model": spec.name, "default": spec.name == default, "accuracy": m.get("accuracy"),
                 "macro_f1": m.get("macro_f1"), "ece": m.get("ece"), "description": spec.description})  # fmt: skip
st.dataframe(pl.DataFrame(rows), hide_index=True)
st.caption("Metrics are those stored with each model (selection split); run `ferpipe eval` to measure any model.")
st.subheader("Which model produced which run")
runs = store().query(
    "SELECT r.run_id, c.title, r.model, r.detector, r.status, r.faces, r.finished_at, r.settings "
    "FROM runs r JOIN clips c USING (clip_id) ORDER BY r.run_id DESC"
)
if not runs.is_empty():
    runs = runs.with_columns(pl.col("settings").map_elements(lambda s: json.loads(s).get("sample_fps"),
                                                             return_dtype=pl.Float64).alias("sample_fps"))  # fmt: skip
st.dataframe(runs.drop("settings") if not runs.is_empty() else runs, hide_index=True)
