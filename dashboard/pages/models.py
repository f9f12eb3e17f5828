"""Models: registered models and their evaluations, which model produced which run, and model-vs-model curves."""

import polars as pl
import streamlit as st
from common import caveat, clip_picker, db_path, store

from ferpipe import analytics as an
from ferpipe import jobs
from ferpipe.lab.baselines import baseline_results
from ferpipe.lab.evaluate import saved_reports
from ferpipe.figures import confusion_figure, overlay_figure
from ferpipe.pipeline import Settings
from ferpipe.registry import default_expression_model, registry

st.title("Models")
caveat()
default = default_expression_model()
specs = {n: m for n, m in registry().items() if m.task == "expression"}
evals = {r["model"]: r for r in saved_reports() if r.get("split") == "public_test" and not r.get("flip")}
rows = []
for name, spec in specs.items():
    ev = evals.get(name) or spec.extra.get("metrics", {})
    rows.append({"model": name, "default": name == default, "accuracy": ev.get("accuracy"),
                 "macro_f1": ev.get("macro_f1"), "ece": ev.get("ece"), "ms_per_face": ev.get("ms_per_face"),
                 "evaluated on": f"{ev.get('split', ev.get('select_split', '-'))} (n={ev.get('n', '?')})" if ev else "-",
                 "description": spec.description})  # fmt: skip
st.dataframe(pl.DataFrame(rows), hide_index=True)
st.caption("Evaluations come from `ferpipe eval --split public_test` (latest per model) or, failing that, the metrics "
           "stored with the model when it was trained.")  # fmt: skip

st.subheader("Algorithms compared on FER2013 public_test")
base = [{"algorithm": r["arch"], "features": r.get("features", "-"), "C": r.get("C"), "accuracy": r["accuracy"],
         "macro_f1": r["macro_f1"], "SVM ms/face": r.get("svm_ms_per_face"), "n": r.get("n"),
         "measured": r.get("evaluated_at", "-")} for r in baseline_results()]  # fmt: skip
if base:
    st.dataframe(pl.DataFrame(base), hide_index=True)
    st.caption("Classical baselines from `ferpipe train --arch svm-hog | cnn-svm`, selected (C) and scored on "
               "public_test like the CNNs above; the CNN rows are in the table of registered models.")  # fmt: skip
else:
    st.caption("No baseline results yet: run `ferpipe train --arch svm-hog` or `--arch cnn-svm`.")
with_cm = [n for n in specs if n in evals]
if with_cm:
    pick = st.selectbox("Confusion matrix of", with_cm)
    st.plotly_chart(confusion_figure(evals[pick]["confusion"], evals[pick]["labels"]), key="cm")

st.subheader("Which model produced which run")
st.caption("model_version is a fingerprint of the weights and preprocessing: runs of one model name made before "
           "and after the model was replaced differ there.")
st.dataframe(store().runs(), hide_index=True)

st.subheader("Reprocess a clip with another model")
clip = clip_picker(key="models_clip", with_faces=True)
if clip is not None:
    other = st.selectbox("Model", sorted(specs), key="reprocess_model")
    if st.button("Reprocess in the background"):
        jobs.start(db_path(), clip["path"], Settings(model=other))
        st.info("Started; the overlay below fills in when the run is done (see the Library page for progress).")
    runs = store().clip_runs(clip["clip_id"])  # best first, so the first finished run of each model is its best
    done = runs.filter(pl.col("status") == "done").unique("model", keep="first", maintain_order=True)
    if done.height >= 2:
        signal = st.selectbox("Signal", list(an.SIGNALS), index=3, key="models_signal")
        aggs = {r["model"]: an.aggregate(store(), r["run_id"], 1.0) for r in done.iter_rows(named=True)}
        st.plotly_chart(overlay_figure(aggs, signal), key="model_overlay")
    else:
        st.caption("Once the clip has finished runs with two models, their curves are overlaid here.")
