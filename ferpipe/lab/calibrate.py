"""Temperature scaling (Guo et al. 2017): one scalar T so softmax(logits / T) is calibrated."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of labels under softmax(logits / temperature)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    lp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-lp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T in ``bounds`` that minimises NLL on (logits, labels)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"need (N, K) logits and N labels, got {logits.shape} and {labels.shape}")
    res = minimize_scalar(lambda t: nll(logits, labels, t), bounds=bounds, method="bounded", options={"xatol": 1e-4})
    return float(res.x)
