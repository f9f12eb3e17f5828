"""Temporal smoothing of per-face expression probabilities.

An exponential filter in video time: each face's probabilities relax towards the new
reading with weight 1 - exp(-dt / tau), so the smoothing means the same thing at any
frame rate, and a face unseen for a while is not dragged by stale values.
"""

from __future__ import annotations

import numpy as np


def flicker(track_ids: np.ndarray, probs: np.ndarray) -> float:
    """Mean absolute frame-to-frame change of the probability vector (L1 / 2), per face, rows in time order."""
    ids = np.asarray(track_ids)
    total, count = 0.0, 0
    for fid in np.unique(ids):
        p = probs[ids == fid]
        if len(p) > 1:
            total += float(np.abs(np.diff(p, axis=0)).sum(axis=1).sum() / 2)
            count += len(p) - 1
    return total / count if count else 0.0


class EmaSmoother:
    """Per-face exponential smoothing with time constant ``tau_ms`` (0 disables it)."""

    def __init__(self, tau_ms: float = 0.0) -> None:
        if tau_ms < 0:
            raise ValueError(f"tau_ms must be >= 0, got {tau_ms}")
        self.tau_ms = float(tau_ms)
        self.state: dict[int, tuple[float, np.ndarray]] = {}

    def __call__(self, track_ids: np.ndarray, timestamps_ms: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Smoothed (N, K) probabilities for rows given in time order."""
        if self.tau_ms == 0 or len(probs) == 0:
            return probs
        out = np.empty_like(probs)
        for i, (fid, t, p) in enumerate(zip(track_ids.tolist(), timestamps_ms.tolist(), probs, strict=False)):
            prev = self.state.get(fid)
            if prev is None:
                value = p
            else:
                alpha = 1.0 - np.exp(-max(t - prev[0], 0.0) / self.tau_ms)
                value = prev[1] + alpha * (p - prev[1])
            self.state[fid] = (t, value)
            out[i] = value
        return out

    def state_dict(self) -> dict:
        return {str(k): [t, v.tolist()] for k, (t, v) in self.state.items()}

    def load_state(self, state: dict) -> None:
        self.state = {int(k): (float(t), np.asarray(v, dtype=np.float32)) for k, (t, v) in state.items()}
