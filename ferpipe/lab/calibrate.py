"""Temperature scaling (Guo et al. 2017): one scalar T so softmax(logits / T) is calibrated."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float, weights: np.ndarray | None = None) -> float:
    """Mean (or weighted mean) negative log-likelihood of labels under softmax(logits / temperature)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    lp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-np.average(lp[np.arange(len(labels)), labels], weights=weights))


def domain_weights(domains: np.ndarray) -> np.ndarray:
    """Per-row weights that give every domain the same total weight (a mixed-domain fit, not the largest set's)."""
    _, inverse, counts = np.unique(np.asarray(domains), return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse]


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0),
                    weights: np.ndarray | None = None) -> float:  # fmt: skip
    """The T in ``bounds`` that minimises (weighted) NLL on (logits, labels)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"need (N, K) logits and N labels, got {logits.shape} and {labels.shape}")
    if weights is not None and (len(weights) != len(labels) or np.any(np.asarray(weights) < 0)):
        raise ValueError(f"weights must be {len(labels)} values >= 0")
    res = minimize_scalar(lambda t: nll(logits, labels, t, weights), bounds=bounds, method="bounded",
                          options={"xatol": 1e-4})  # fmt: skip
    return float(res.x)
