import json
import shutil

import numpy as np
import pytest

from ferpipe.errors import ModelError
from ferpipe.expression import ExpressionModel
from ferpipe.registry import ModelSpec, Preprocess, Source, fetch, fetch_source, get_spec, registry, sha256_file


@pytest.fixture
def mx_onnx():
    return fetch(get_spec("mini-xception"))["model"]


def test_builtins_are_registered():
    models = registry()
    assert models["mini-xception"].task == "expression"
    assert set(models["mtcnn"].files) == {"pnet", "rnet", "onet"}


def test_unknown_model_names_the_choices():
    with pytest.raises(ModelError, match=r"unknown model 'nope'; choose one of: .*mini-xception"):
        get_spec("nope", task="expression")
    with pytest.raises(ModelError, match="unknown model 'mtcnn'"):
        get_spec("mtcnn", task="expression")


def test_url_source_downloads_verifies_and_caches(mx_onnx, http_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FERPIPE_CACHE", str(tmp_path / "cache"))
    root, base = http_dir
    shutil.copy(mx_onnx, root / "m.onnx")
    digest = sha256_file(mx_onnx)
    path = fetch_source(Source(kind="url", location=f"{base}/m.onnx", sha256=digest))
    assert path.is_file() and sha256_file(path) == digest and str(tmp_path / "cache") in str(path)
    (root / "m.onnx").unlink()  # now served from the cache
    assert fetch_source(Source(kind="url", location=f"{base}/m.onnx", sha256=digest)) == path


def test_checksum_mismatch_is_refused_and_not_cached(mx_onnx, http_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FERPIPE_CACHE", str(tmp_path / "cache"))
    root, base = http_dir
    shutil.copy(mx_onnx, root / "m.onnx")
    with pytest.raises(ModelError, match="does not match"):
        fetch_source(Source(kind="url", location=f"{base}/m.onnx", sha256="0" * 64))
    assert not list((tmp_path / "cache").rglob("*.onnx"))


def test_unreachable_url_is_a_model_error(tmp_path, monkeypatch):
    from conftest import free_port

    monkeypatch.setenv("FERPIPE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError, match="cannot download"):
        fetch_source(Source(kind="url", location=f"http://127.0.0.1:{free_port()}/m.onnx", sha256="0" * 64))


def test_new_classifier_plugs_in_through_a_json_spec(mx_onnx, tmp_path, monkeypatch, samples):
    """A JSON spec beside an ONNX file is all a new model needs."""
    folder = tmp_path / "mymodels"
    folder.mkdir()
    shutil.copy(mx_onnx, folder / "lab.onnx")
    spec = {
        "name": "lab-model", "task": "expression",
        "files": {"model": {"kind": "file", "location": "lab.onnx", "sha256": sha256_file(mx_onnx)}},
        "preprocess": {"size": 64, "channels": 1, "mean": 0.5, "std": 0.5, "layout": "NHWC",
                       "labels": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
                       "output": "probs", "temperature": 2.0},
    }  # fmt: skip
    (folder / "lab.json").write_text(json.dumps(spec))
    monkeypatch.setenv("FERPIPE_MODELS", str(folder))
    lab = ExpressionModel.from_name("lab-model")
    base = ExpressionModel.from_name("mini-xception")
    crops = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 1), dtype=np.uint8)
    p_lab, p_base = lab.predict_crops(crops).probs, base.predict_crops(crops).probs
    assert (p_lab.argmax(1) == p_base.argmax(1)).all()
    assert (p_lab.max(1) < p_base.max(1)).all()  # temperature 2 softens


def test_spec_validation():
    with pytest.raises(ValueError, match="sha256"):
        Source(kind="url", location="https://x/y.onnx", sha256="abc")
    with pytest.raises(ValueError, match=r"Source\.kind"):
        Source(kind="s3", location="x", sha256="0" * 64)
    with pytest.raises(ValueError, match="http"):
        Source(kind="url", location="ftp://x/y", sha256="0" * 64)
    with pytest.raises(ValueError, match="permutation"):
        Preprocess(labels=("happy", "sad"))
    with pytest.raises(ValueError, match="channels"):
        Preprocess(channels=2)
    with pytest.raises(ValueError, match="needs one file named 'model'"):
        ModelSpec(name="x", task="expression", files={}, preprocess=Preprocess())


def test_fingerprint_names_the_weights_and_preprocessing_not_the_description():
    from dataclasses import replace

    spec = get_spec("ferpipe-cnn")
    assert spec.fingerprint == get_spec("ferpipe-cnn").fingerprint and len(spec.fingerprint) == 16
    assert replace(spec, description="renamed", extra={}).fingerprint == spec.fingerprint
    retrained = replace(spec, files={"model": replace(spec.files["model"], sha256="1" * 64)})
    recalibrated = replace(spec, preprocess=replace(spec.preprocess, temperature=spec.preprocess.temperature + 0.1))
    assert len({spec.fingerprint, retrained.fingerprint, recalibrated.fingerprint}) == 3


def test_heads_with_outputs_of_their_own():
    from ferpipe.registry import Preprocess

    pre = Preprocess(heads=[["ferplus", 0.6, "logits"], ["fer2013", 0.8, "logits_fer2013"]], temperature=0.6)
    assert pre.head(None) == (0, 0.6, "logits")  # the first head: the pipeline's
    assert pre.head("fer2013") == (0, 0.8, "logits_fer2013")
    assert Preprocess(heads=[["a", 1.0], ["b", 2.0]]).head("b") == (1, 2.0, None)  # blocks of one output
    with pytest.raises(ValueError, match="outputs named for all or none"):
        Preprocess(heads=[["a", 1.0, "logits"], ["b", 2.0]])
    with pytest.raises(ValueError, match=r"\(name, temperature\[, output\]\) entries"):
        Preprocess(heads=[["a"]])
    with pytest.raises(ValueError, match="unknown head 'c'"):
        pre.head("c")
