"""Models: registered models and their evaluations, which model produced which run, and model-vs-model curves."""

import polars as pl
import streamlit as st
from common import caveat, chart_config, clip_picker, db_path, store

from ferpipe import analytics as an
from ferpipe import jobs
from ferpipe import present as pr
from ferpipe.figures import confusion_figure, overlay_figure
from ferpipe.lab.baselines import baseline_results
from ferpipe.lab.domains import DOMAIN_NAMES
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
        """The latest evaluation's figure, else the one stored with the model: on that dataset alone where the
        model was calibrated on several domains (its head's figure then mixes them), else its head's."""
        value = ev.get(key)
        if value is None:
            own = (stored.get("domains") or {}).get(head)
            value = (own or heads.get(head, {})).get(key) if (own or heads) else (
                stored.get(key) if head == "fer2013" else None)  # fmt: skip
        return value

    n = (
        fer.get("n")
        or heads.get("fer2013", {}).get("n")
        or (3589 if stored.get("select_split") == "public_test" else None)
    )
    full_acc = full.get("accuracy") if full else stored.get("full_image", {}).get("accuracy")
    full_data = (full.get("domain") or full.get("data", "")).rsplit("/", 1)[-1] if full else (
        "FER+ faces pasted into frames (card)" if full_acc is not None else "")  # fmt: skip
    rows.append({"Model": name, "Default": "yes" if name == default else "",
                 "FER2013 accuracy": pr.format_value(pick("accuracy", fer, "fer2013"), "share", 1),
                 "FER+ accuracy": pr.format_value(pick("accuracy", ferplus, "ferplus"), "share", 1),
                 "Full images": pr.format_value(full_acc, "share", 1) + (f" ({full_data})" if full_data else ""),
                 "FER2013 macro-F1": pr.format_value(pick("macro_f1", fer, "fer2013"), "score"),
                 "FER2013 ECE": pr.format_value(pick("ece", fer, "fer2013"), "score"),
                 "ms per face": pr.format_value(fer.get("ms_per_face") or stored.get("ms_per_face"), "score"),
                 "FER2013 images": pr.format_value(n, "count"), "Description": spec.description})  # fmt: skip
st.dataframe(pl.DataFrame(rows), hide_index=True)
st.caption("Accuracy on FER2013 and FER+ public_test (FER+: majority label over the seven expressions), and on full "
           "images (`ferpipe eval --full-image`, the folder evaluated named in brackets), from the latest `ferpipe "
           "eval` of each model or, failing that, the metrics stored with it when it was trained. — : not measured "
           "yet. Models with one head per labelling protocol are scored with that protocol's head.")  # fmt: skip

domain_rows = []
for name, spec in specs.items():
    for dom, m in (spec.extra.get("metrics", {}).get("domains") or {}).items():
        recall = m.get("per_class_recall", {})
        domain_rows.append({"Model": name, "Dev set": DOMAIN_NAMES.get(dom, dom),
                            "Images": pr.format_value(m.get("n"), "count"),
                            "Accuracy": pr.format_value(m.get("accuracy"), "share", 1),
                            "Macro-F1": pr.format_value(m.get("macro_f1"), "score"),
                            "ECE": pr.format_value(m.get("ece"), "score"),
                            **{f"{e} recall": pr.format_value(recall.get(e), "share") for e in an.EXPRESSIONS}})  # fmt: skip
st.subheader("Across domains (dev sets)")
if domain_rows:
    st.dataframe(pl.DataFrame(domain_rows), hide_index=True)
    st.caption("Each domain's held-out dev split (by photo or person: ExpW web photos, JAFFE posed faces, IMFDB movie "
               "frames, LFW news photos) and FER2013/FER+ public_test, read as the pipeline reads faces (detect, "
               "align, classify), with the temperature fitted with every domain weighing the same. ECE: expected "
               "calibration error (0 is perfectly calibrated).")  # fmt: skip
else:
    st.caption("No model has a cross-domain evaluation stored with it yet (`ferpipe eval --data A --data B ...`).")

st.subheader("Algorithms compared on FER2013 public_test")
base = [{"Algorithm": r["arch"], "Features": r.get("features") or pr.MISSING,
         "C": pr.format_value(r.get("C"), "score"), "Accuracy": pr.format_value(r["accuracy"], "share", 1),
         "Macro-F1": pr.format_value(r["macro_f1"], "score"),
         "SVM ms per face": pr.format_value(r.get("svm_ms_per_face"), "score"),
         "Images": pr.format_value(r.get("n"), "count"), "Measured": r.get("evaluated_at") or pr.MISSING}
        for r in baseline_results()]  # fmt: skip
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
    "Model version is a fingerprint of the weights and preprocessing: runs of one model name made before "
    "and after the model was replaced differ there."
)
st.dataframe(pr.table(store().runs().select("run_id", "title", "model", "model_version", "status", "faces",
                                            "sample_fps", "finished_at"),
                      kinds={"sample_fps": ("score", 0), "finished_at": "text"},
                      labels={"faces": "Face tracks"}), hide_index=True)  # fmt: skip

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
