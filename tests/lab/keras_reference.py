"""An independent NumPy forward pass of a Keras HDF5 model (NHWC, TensorFlow padding rules).

Used only to check the ONNX converter: it shares no code with ferpipe.lab.convert
beyond reading the HDF5 file.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _pad(x: np.ndarray, k: tuple[int, int], s: tuple[int, int], padding: str, value: float) -> np.ndarray:
    if padding == "valid":
        return x
    ph = _same_pads(x.shape[1], k[0], s[0])
    pw = _same_pads(x.shape[2], k[1], s[1])
    return np.pad(x, ((0, 0), ph, pw, (0, 0)), constant_values=value)


def _windows(x: np.ndarray, k: tuple[int, int], s: tuple[int, int]) -> np.ndarray:
    win = sliding_window_view(x, k, axis=(1, 2))  # N, H', W', C, kh, kw
    return win[:, :: s[0], :: s[1]]


def conv2d(x, kernel, stride, padding, bias=None):
    k = kernel.shape[:2]
    win = _windows(_pad(x, k, stride, padding, 0.0), k, stride)
    y = np.einsum("nhwcij,ijco->nhwo", win, kernel, optimize=True)
    return y + bias if bias is not None else y


def depthwise(x, kernel, stride, padding):
    k = kernel.shape[:2]
    win = _windows(_pad(x, k, stride, padding, 0.0), k, stride)
    return np.einsum("nhwcij,ijc->nhwc", win, kernel[:, :, :, 0], optimize=True)


def maxpool(x, pool, stride, padding):
    win = _windows(_pad(x, pool, stride, padding, -np.inf), pool, stride)
    return win.max(axis=(4, 5))


def forward(h5_path: str, x: np.ndarray) -> np.ndarray:
    """Run the model in float64 on NHWC input x."""
    with h5py.File(h5_path, "r") as f:
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
        root = f["model_weights"]
        w = {}
        for layer in layers:
            if layer["name"] in root:
                d = {}
                root[layer["name"]].visititems(
                    lambda n, o, d=d: (
                        d.__setitem__(n.split("/")[-1].split(":")[0], np.asarray(o[()], np.float64))
                        if isinstance(o, h5py.Dataset)
                        else None
                    )
                )
                w[layer["name"]] = d
    acts = {}
    for layer in layers:
        kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
        srcs = [acts[e[0]] for e in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        lw = w.get(name, {})
        if kind == "InputLayer":
            y = x.astype(np.float64)
        elif kind == "Conv2D":
            y = conv2d(srcs[0], lw["kernel"], tuple(cfg["strides"]), cfg["padding"], lw.get("bias"))
        elif kind == "SeparableConv2D":
            y = depthwise(srcs[0], lw["depthwise_kernel"], tuple(cfg["strides"]), cfg["padding"])
            y = conv2d(y, lw["pointwise_kernel"], (1, 1), "valid", lw.get("bias"))
        elif kind == "BatchNormalization":
            y = (srcs[0] - lw["moving_mean"]) / np.sqrt(lw["moving_variance"] + cfg["epsilon"]) * lw["gamma"] + lw[
                "beta"
            ]
        elif kind == "Activation":
            y = srcs[0]
        elif kind == "MaxPooling2D":
            y = maxpool(srcs[0], tuple(cfg["pool_size"]), tuple(cfg["strides"]), cfg["padding"])
        elif kind == "Add":
            y = sum(srcs)
        elif kind == "GlobalAveragePooling2D":
            y = srcs[0].mean(axis=(1, 2))
        else:
            raise ValueError(kind)
        act = cfg.get("activation")
        if act == "relu":
            y = np.maximum(y, 0)
        elif act == "softmax":
            e = np.exp(y - y.max(axis=-1, keepdims=True))
            y = e / e.sum(axis=-1, keepdims=True)
        acts[name] = y
    return acts[layers[-1]["name"]]
