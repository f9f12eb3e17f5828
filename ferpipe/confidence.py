"""Reading confidence: how far one observation's expression reading can be trusted, in [0, 1].

A reading is one face in one frame, classified into seven probabilities. Its confidence combines the model's own
uncertainty with what is known to break readings:

- **certainty**: 1 - the normalised entropy of the calibrated probabilities (0 for a uniform reading, 1 for a
  one-hot one), taken before temporal smoothing;
- **size**: faces under 16 px tall carry almost no expression; from 48 px (the classifier's input) on, nothing
  is lost: a linear ramp between;
- **sharpness**: the variance of the Laplacian of the aligned crop against ``SHARP_REF`` (a blurred or
  motion-smeared face reads less), as var / (var + ref);
- **pose**: yaw or pitch beyond 20 degrees turns away the half of the face the classifier needs; the factor
  falls linearly to 0 at 65 degrees;
- **presence**: the face mesh's face-presence score (low when the face is occluded or not a face); where the mesh
  did not run or found nothing, 0.5 (unknown).

confidence = certainty x size x sharpness x pose x presence. It is a *derived* quality score, not a probability of
being right; the dashboard's quality filter can leave out readings below a threshold, and exports carry it.
"""

from __future__ import annotations

import cv2
import numpy as np

SHARP_REF = (
    100.0  # Laplacian variance of a 48x48 crop blurred by a Gaussian of sigma ~1.3 (sharp FER+ crops: median 2,100)
)
LOW_CONFIDENCE = 0.25  # below this a reading counts as low-confidence in the clip view's caption
POSE_FREE_DEG, POSE_ZERO_DEG = 20.0, 65.0
SIZE_ZERO_PX, SIZE_FULL_PX = 16.0, 48.0


def certainty(probs: np.ndarray) -> np.ndarray:
    """1 - normalised entropy of (N, K) probabilities."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    h = -(p * np.log(p)).sum(axis=1) / np.log(p.shape[1])
    return np.clip(1.0 - h, 0.0, 1.0).astype(np.float32)


def sharpness(crops: np.ndarray) -> np.ndarray:
    """(N,) Laplacian variance of (N, S, S[, C]) uint8 crops (gray, or the mean of the channels)."""
    crops = np.asarray(crops)
    if crops.ndim == 4:
        crops = crops.mean(axis=3).astype(np.uint8) if crops.shape[3] > 1 else crops[..., 0]
    return np.array([cv2.Laplacian(c, cv2.CV_64F).var() for c in crops], np.float32).reshape(-1)


def quality(face_px: np.ndarray, sharp: np.ndarray, pose: np.ndarray | None = None,
            presence: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """(N,) the product of the size, sharpness, pose and presence factors (see the module's docstring)."""
    h = np.asarray(face_px, dtype=np.float64).reshape(-1)
    s = np.asarray(sharp, dtype=np.float64).reshape(-1)
    if s.shape != h.shape:
        raise ValueError(f"face_px and sharpness disagree: {h.shape} and {s.shape}")
    q = np.clip((h - SIZE_ZERO_PX) / (SIZE_FULL_PX - SIZE_ZERO_PX), 0, 1) * (s / (s + SHARP_REF))
    if pose is not None:
        pose = np.asarray(pose, dtype=np.float64).reshape(len(h), -1)
        turned = np.abs(pose[:, :2]) if pose.size else np.full((len(h), 2), np.nan)
        turn = np.where(np.isnan(turned).all(axis=1), np.nan, np.fmax(turned[:, 0], turned[:, 1]))
        factor = np.clip(1 - (turn - POSE_FREE_DEG) / (POSE_ZERO_DEG - POSE_FREE_DEG), 0, 1)
        q = q * np.where(np.isfinite(turn), factor, 1.0)
    if presence is not None:
        m = np.asarray(presence, dtype=np.float64).reshape(-1)
        q = q * np.where(np.isfinite(m), np.clip(m, 0, 1), 0.5)
    else:
        q = q * 0.5
    return q.astype(np.float32)


def reading_confidence(probs: np.ndarray, face_px: np.ndarray, sharp: np.ndarray, pose: np.ndarray | None = None,
                       presence: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """(N,) confidence in [0, 1] of each reading (see the module's docstring)."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or len(probs) != len(np.asarray(face_px).reshape(-1)):
        raise ValueError(f"probs must be (N, K) for N faces, got {probs.shape}")
    return (certainty(probs) * quality(face_px, sharp, pose, presence)).astype(np.float32)
