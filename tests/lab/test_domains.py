"""Multi-domain data in the model lab: the dev split by photo or person, aligned crops, the cross-domain table,
domain-weighted calibration, a model recovered from its ONNX file, and the weight mix (WiSE-FT)."""

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import run_cli

torch = pytest.importorskip("torch", reason="training needs the [train] extra (torch==2.13.0)")

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
JAFFE = DATASETS / "jaffe" / "jaffe.parquet"
EXPW = DATASETS / "expw" / "expw.parquet"
needs_data = pytest.mark.skipif(not JAFFE.is_file(), reason="the multi-domain datasets are in ../shared/datasets")


def test_dev_split_keeps_groups_together_and_is_stable():
    from ferpipe.lab.domains import dev_mask, group_keys

    df = pl.DataFrame({"person": [None, None, None, "a", "a", "b"],
                       "source_name": ["r@c:p1.jpg#face0", "r@c:p1.jpg#face1", "r@c:p2.jpg#face0", "x", "y", "z"]})  # fmt: skip
    keys = group_keys(df)
    assert keys[:3] == ["photo:r@c:p1.jpg", "photo:r@c:p1.jpg", "photo:r@c:p2.jpg"] and keys[3:] == ["a", "a", "b"]
    many = [f"k{i}" for i in range(4000)]
    mask = dev_mask(many)
    assert 0.17 < mask.mean() < 0.23 and (dev_mask(many) == mask).all()  # about 20%, the same every time
    both = dev_mask(["k1", "k1", "k2"])
    assert both[0] == both[1]
    with pytest.raises(ValueError, match="share"):
        dev_mask(many, share=1.5)


@needs_data
def test_a_domain_file_reads_as_aligned_crops_with_disjoint_splits():
    from ferpipe.lab.data import load_faces

    train, dev, every = (load_faces(JAFFE, s) for s in ("train", "dev", None))
    assert train.protocol == dev.protocol == "wild" and train.domain == "jaffe"
    assert len(train) + len(dev) == len(every) == 213 and len(dev) > 0
    assert train.images.shape[1:] == (48, 48) and train.found.mean() > 0.9
    with pytest.raises(ValueError, match="split 'public_test' not found"):
        load_faces(JAFFE, "public_test")


@needs_data
def test_eval_prints_one_row_per_domain(tmp_path):
    r = run_cli("eval", "--data", str(JAFFE), "--data", str(EXPW), "--model", "mini-xception", "--limit", "60",
                "--json", env={"FERPIPE_CACHE": str(tmp_path)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["domains"]
    assert [row["domain"] for row in rows] == ["jaffe", "expw"]
    for row in rows:
        assert row["n"] == 60 and 0 <= row["accuracy"] <= 1 and 0 <= row["ece"] <= 1 and 0 < row["face_found"] <= 1
        assert set(row["recall"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    r = run_cli("eval", "--data", str(JAFFE), "--data", str(EXPW), "--model", "mini-xception", "--limit", "60",
                env={"FERPIPE_CACHE": str(tmp_path), "COLUMNS": "200"})  # fmt: skip
    assert r.returncode == 0 and "jaffe" in r.stdout and "faces found" in r.stdout


def test_domain_weights_make_every_domain_count_the_same():
    from ferpipe.lab.calibrate import domain_weights, fit_temperature

    w = domain_weights(np.array(["a"] * 90 + ["b"] * 10))
    assert w[:90].sum() == pytest.approx(w[90:].sum())
    rng = np.random.default_rng(0)
    # domain a is right and sure, b is a coin toss: weighting b up makes the fitted temperature larger (softer)
    za = np.eye(7)[np.zeros(900, int)] * 6
    zb = rng.normal(size=(100, 7)) * 6
    labels = np.r_[np.zeros(900, int), rng.integers(0, 7, 100)]
    z = np.r_[za, zb]
    plain = fit_temperature(z, labels)
    mixed = fit_temperature(z, labels, weights=domain_weights(np.array(["a"] * 900 + ["b"] * 100)))
    assert mixed > plain
    with pytest.raises(ValueError, match="weights"):
        fit_temperature(z, labels, weights=np.ones(3))


def test_a_shipped_model_recovered_from_onnx_reads_as_the_file_does(ferplus_parquet):
    from ferpipe.config import bundled
    from ferpipe.expression import ExpressionModel
    from ferpipe.lab.data import load_faces
    from ferpipe.lab.train import _logits, _to_tensor, cnn_from_onnx, interpolate

    faces = load_faces(ferplus_parquet, "public_test", 300)
    net = cnn_from_onnx(bundled("models") / "ferpipe-cnn2.onnx", 48, load_faces(ferplus_parquet, "train", 500).images)
    z = _logits(net, (_to_tensor(faces.images) - 0.5) / 0.5, False, True)[:, :7]
    shipped = ExpressionModel.from_name("ferpipe-cnn2").predict_crops(faces.images[..., None]).probs
    agree = (z.argmax(1) == shipped.argmax(1)).mean()
    assert agree > 0.97  # the file is int8: the recovered float network reads almost every face alike
    other = cnn_from_onnx(bundled("models") / "ferpipe-cnn.onnx", 48, faces.images, heads=2)
    for alpha, want in ((0.0, net), (1.0, other)):
        mixed = interpolate(net, cnn_from_onnx(bundled("models") / "ferpipe-cnn.onnx", 48, faces.images, 2), alpha)
        for (k, a), b in zip(mixed.state_dict().items(), want.state_dict().values(), strict=True):
            if a.is_floating_point():
                torch.testing.assert_close(a, b.to(a.dtype), msg=k)
    with pytest.raises(ValueError, match="mix"):
        interpolate(net, other, 1.5)
