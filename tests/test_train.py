"""Training end to end on a tiny subset: one epoch, ONNX export, registry, then `ferpipe eval` and `process`."""

import json

import numpy as np
import pytest

from conftest import run_cli

torch = pytest.importorskip("torch", reason="training needs the [train] extra (torch==2.13.0)")


def test_train_export_register_eval_and_process(fer_parquet, tmp_path, samples):
    cache = tmp_path / "cache"
    env = {"FERPIPE_CACHE": str(cache)}
    r = run_cli("train", "--data", str(fer_parquet), "--out", str(tmp_path / "run"), "--name", "tiny-cnn",
                "--epochs", "1", "--limit", "300", "--width", "8", "--batch-size", "64", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "registered as 'tiny-cnn'" in r.stdout
    spec = json.loads((cache / "registry" / "tiny-cnn.json").read_text())
    assert spec["preprocess"]["output"] == "logits" and spec["preprocess"]["temperature"] > 0
    r = run_cli("eval", "--data", str(fer_parquet), "--split", "public_test", "--model", "tiny-cnn", "--limit", "200",
                "--json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["n"] == 200 and 0 <= rep["accuracy"] <= 1 and len(rep["confusion"]) == 7
    r = run_cli("process", str(samples["single_face.mp4"]), "--db", str(tmp_path / "db.duckdb"), "--model", "tiny-cnn",
                "--json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["faces"] == 1


def test_training_resumes_from_its_checkpoint(fer_parquet, tmp_path):
    from ferpipe.train import TrainConfig, train_cnn

    cfg = TrainConfig(width=8, epochs=2, limit=200, batch_size=64, patience=5)
    first = train_cnn(fer_parquet, tmp_path, TrainConfig(**{**cfg.__dict__, "epochs": 2}))
    assert first["state"]["epoch"] == 2 and len(first["state"]["history"]) == 2
    again = train_cnn(fer_parquet, tmp_path, cfg)  # nothing left to do: loads, does not retrain
    assert again["state"]["history"] == first["state"]["history"]
    with pytest.raises(ValueError, match="another config"):
        train_cnn(fer_parquet, tmp_path, TrainConfig(width=16, epochs=2, limit=200, batch_size=64))


def test_augment_keeps_shape_and_range():
    from ferpipe.train import augment, class_weights

    x = torch.rand(16, 1, 48, 48)
    y = augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    w = class_weights(np.array([0, 0, 0, 1]), 1.0)
    assert w[1] > w[0]


def test_svm_hog_baseline_on_a_tiny_subset(fer_parquet, tmp_path):
    r = run_cli("train", "--arch", "svm-hog", "--data", str(fer_parquet), "--out", str(tmp_path), "--limit", "300")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "svm-hog.json").read_text())
    assert 0 <= res["accuracy"] <= 1 and res["C"] in (0.01, 0.1, 1.0)


def test_hog_features_shape():
    from ferpipe.baselines import hog_features

    f = hog_features(np.zeros((2, 48, 48), np.uint8))
    assert f.shape == (2, 900)


def test_hog_responds_to_edge_orientation():
    from ferpipe.baselines import hog_features

    vertical = np.zeros((1, 48, 48), np.uint8)
    vertical[:, :, 24:] = 255
    horizontal = np.transpose(vertical, (0, 2, 1)).copy()
    fv, fh = hog_features(vertical)[0].reshape(25, 4, 9), hog_features(horizontal)[0].reshape(25, 4, 9)
    assert fv.sum(axis=(0, 1)).argmax() == 0  # gradient along x: 0 degrees
    assert fh.sum(axis=(0, 1)).argmax() == 4  # gradient along y: 90 degrees (bin 4 of 9)
