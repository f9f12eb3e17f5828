"""Data types passed between pipeline stages.

Every stage takes and returns one of these. They are validated on construction so
that a shape bug fails where it is made, not three stages later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

EXPRESSIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The seven expression labels, in the FER2013 order every model output is mapped to."""

LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class Frame:
    """One decoded video frame.

    image: (H, W, 3) uint8 BGR.
    timestamp_ms: presentation timestamp read from the container.
    index: position of the frame in decode order (0-based, counting every frame).
    """

    index: int
    timestamp_ms: float
    image: np.ndarray

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"Frame.image must be (H, W, 3) uint8, got {self.image.shape} {self.image.dtype}")
        if self.index < 0:
            raise ValueError(f"Frame.index must be >= 0, got {self.index}")
        if not np.isfinite(self.timestamp_ms) or self.timestamp_ms < 0:
            raise ValueError(f"Frame.timestamp_ms must be finite and >= 0, got {self.timestamp_ms}")


@dataclass(frozen=True)
class Detections:
    """Faces found in one frame, as aligned columns (N faces).

    boxes: (N, 4) float32, x1 y1 x2 y2 in pixels.
    scores: (N,) float32 detection confidence in [0, 1].
    landmarks: (N, 5, 2) float32, x y of LANDMARK_NAMES.
    track_ids: (N,) int64; -1 until a tracker assigns stable face ids.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    track_ids: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = boxes.shape[0]
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 5, 2)
        ids = (
            np.full(n, -1, dtype=np.int64)
            if self.track_ids is None
            else np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
        )
        if scores.shape[0] != n or landmarks.shape[0] != n or ids.shape[0] != n:
            raise ValueError(
                f"Detections columns disagree: boxes {n}, scores {scores.shape[0]}, "
                f"landmarks {landmarks.shape[0]}, track_ids {ids.shape[0]}"
            )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "landmarks", landmarks)
        object.__setattr__(self, "track_ids", ids)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))

    def __getitem__(self, idx: np.ndarray | slice | Sequence[int]) -> "Detections":
        return Detections(self.boxes[idx], self.scores[idx], self.landmarks[idx], self.track_ids[idx])

    def largest(self) -> int:
        """Index of the largest face by box area (the subject of a portrait); ValueError when empty."""
        if not len(self):
            raise ValueError("no detections to choose the largest from")
        b = self.boxes
        return int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))

    def with_track_ids(self, track_ids: np.ndarray) -> "Detections":
        return Detections(self.boxes, self.scores, self.landmarks, track_ids)

    @staticmethod
    def concat(parts: Sequence["Detections"]) -> "Detections":
        if not parts:
            return Detections.empty()
        return Detections(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.landmarks for p in parts]),
            np.concatenate([p.track_ids for p in parts]),
        )


@dataclass(frozen=True)
class Expressions:
    """Expression probabilities for N faces.

    probs: (N, 7) float32 rows summing to 1, columns in EXPRESSIONS order.
    valence, arousal: (N,) float32, *derived* from probs (see ferpipe.expression.circumplex).
    """

    probs: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray

    def __post_init__(self) -> None:
        probs = np.asarray(self.probs, dtype=np.float32).reshape(-1, len(EXPRESSIONS))
        n = probs.shape[0]
        val = np.asarray(self.valence, dtype=np.float32).reshape(-1)
        aro = np.asarray(self.arousal, dtype=np.float32).reshape(-1)
        if val.shape[0] != n or aro.shape[0] != n:
            raise ValueError(f"Expressions columns disagree: probs {n}, valence {val.shape[0]}, arousal {aro.shape[0]}")
        if n and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
            raise ValueError("Expressions.probs rows must sum to 1")
        object.__setattr__(self, "probs", probs)
        object.__setattr__(self, "valence", val)
        object.__setattr__(self, "arousal", aro)

    def __len__(self) -> int:
        return int(self.probs.shape[0])


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a clip."""

    path: str
    sha256: str
    duration_s: float
    fps: float
    width: int
    height: int
    frame_count: int
    rotation: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"VideoInfo needs a positive size, got {self.width}x{self.height}")
        if self.rotation not in (0, 90, 180, 270):
            raise ValueError(f"VideoInfo.rotation must be 0/90/180/270, got {self.rotation}")
