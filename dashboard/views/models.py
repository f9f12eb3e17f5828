"""Models: registered models and their evaluations, which model produced which run, and model-vs-model curves."""

import polars as pl
import streamlit as st
from common import caveat, chart_config, clip_picker, db_path, store

from ferpipe import analytics as an
from ferpipe import jobs
from ferpipe.figures import confusion_figure, overlay_figure
from ferpipe.lab.baselines import baseline_results
from ferpipe.lab.evaluate import saved_reports
from ferpipe.pipeline import Settings
from ferpipe.registry import default_expression_model, registry

st.title("Models")
caveat()
default = default_expression_model()
specs = {n: m for n, m in registry().items() if m.task == "expression"}
reports = saved_reports()


def latest(model: str, protocol: str) -> dict:
    """The newest saved evaluation of a model on FER2013 or FER+ public_test, or on full images."""
    found = [
        r
        for r in reports
        if r.get("model") == model
        and not r.get("flip")
        and not r.get("limit")
        and r.get("protocol", "fer2013") == protocol
        and (protocol == "full-image" or r.get("split") == "public_test")
    ]
    return max(found, key=lambda r: r.get("evaluated_at", "")) if found else {}  # fmt: skip


evals = {name: latest(name, "fer2013") for name in specs}
rows = []
for name, spec in specs.items():
    stored = spec.extra.get("metrics", {})
    heads = stored.get("heads", {})
    fer, ferplus, full = evals[name], latest(name, "ferplus"), latest(name, "full-image")

    def pick(key: str, ev: dict, head: str, heads: dict = heads, stored: dict = stored) -> float | None:
        value = ev.get(key)
        if value is None:
            value = heads.get(head, {}).get(key) if heads else (stored.get(key) if head == "fer2013" else None)
        return value

    n = (
        fer.get("n")
        or heads.get("fer2013", {}).get("n")
        or (3589 if stored.get("select_split") == "public_test" else None)
    )
    rows.append({"model": name, "default": name == default,
                 "FER2013 accuracy": pick("accuracy", fer, "fer2013"), "FER+ accuracy": pick("accuracy", ferplus, "ferplus"),
                 "full images": full.get("accuracy") or stored.get("full_image", {}).get("accuracy"), "macro-F1": pick("macro_f1", fer, "fer2013"),
                 "ECE": pick("ece", fer, "fer2013"), "ms/face": fer.get("ms_per_face") or stored.get("ms_per_face"),
                 "FER2013 n": n, "description": spec.description})  # fmt: skip
st.dataframe(pl.DataFrame(rows), hide_index=True, column_config={
    c: st.column_config.NumberColumn(c, format="%.4f") for c in ("FER2013 accuracy", "FER+ accuracy", "full images",
                                                                  "macro-F1", "ECE")} | {
    "ms/face": st.column_config.NumberColumn("ms/face", format="%.2f")})  # fmt: skip
st.caption("Accuracy on FER2013 and FER+ public_test (FER+: majority label over the seven expressions) and on full "
           "images (`ferpipe eval --full-image`; for shipped models, the card's cross-domain check of FER+ faces pasted "
           "into video-like frames), from the latest `ferpipe eval` of each model or, failing that, the "
           "metrics stored with it when it was trained. An empty cell: not measured yet. Models with one head per "
           "labelling protocol are scored with that protocol's head.")  # fmt: skip

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
with_cm = [n for n in specs if evals.get(n)]
if with_cm:
    pick = st.selectbox("Confusion matrix of", with_cm)
    st.plotly_chart(confusion_figure(evals[pick]["confusion"], evals[pick]["labels"]), config=chart_config(), key="cm")

st.subheader("Which model produced which run")
st.caption(
    "model_version is a fingerprint of the weights and preprocessing: runs of one model name made before "
    "and after the model was replaced differ there."
)
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
        st.plotly_chart(overlay_figure(aggs, signal), config=chart_config(), key="model_overlay")
    else:
        st.caption("Once the clip has finished runs with two models, their curves are overlaid here.")
