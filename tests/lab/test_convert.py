"""The Keras->ONNX converter against an independent NumPy forward pass."""

import numpy as np
import pytest

from ferpipe.lab.convert import convert_keras_h5
from ferpipe.onnx import create_session
from ferpipe.registry import fetch_source, get_spec

from .keras_reference import forward


@pytest.fixture(scope="module")
def h5_path():
    return fetch_source(get_spec("mini-xception").files["model"])


def test_converted_model_matches_numpy_reference(h5_path, tmp_path, samples, model):
    onnx_path = convert_keras_h5(h5_path, tmp_path / "mx.onnx")
    session = create_session(onnx_path)
    rng = np.random.default_rng(0)
    noise = rng.uniform(-1, 1, (3, 64, 64, 1)).astype(np.float32)
    # and real aligned faces, preprocessed the way the pipeline does it
    import cv2

    from ferpipe.detect import MTCNNDetector

    img = cv2.imread(str(samples["multi_face.jpg"]))
    dets = MTCNNDetector().detect(img)
    faces = model.preprocess(model.crops(img, dets))
    x = np.concatenate([noise, faces]).astype(np.float32)
    got = session.run(None, {"input": x})[0]
    want = forward(str(h5_path), x)
    assert got.shape == (len(x), 7)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_unsupported_layer_is_refused(tmp_path):
    import json

    import h5py

    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f.attrs["model_config"] = json.dumps(
            {
                "class_name": "Model",
                "config": {"layers": [{"class_name": "LSTM", "name": "l", "config": {}, "inbound_nodes": []}]},
            }
        )
        f.create_group("model_weights")
    with pytest.raises(ValueError, match="unsupported Keras layer 'LSTM'"):
        convert_keras_h5(bad, tmp_path / "bad.onnx")
