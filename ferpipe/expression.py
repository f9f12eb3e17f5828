"""Expression inference: landmark-aligned crops -> 7 probabilities, plus derived valence/arousal."""

from __future__ import annotations

import os

import cv2
import numpy as np

from .errors import ModelError
from .onnx import OnnxModel
from .registry import ModelSpec, Preprocess, fetch, get_spec
from .types import EXPRESSIONS, Detections, Expressions

# Where the five landmarks sit in a FER2013 image, as fractions of its side: the
# median MTCNN landmarks over 1,363 FER2013 training faces, made left/right symmetric.
# Aligning video faces to it makes their crops look like the data the models learnt from.
FER_TEMPLATE = np.array(
    [[0.3128, 0.3738], [0.6872, 0.3738], [0.5000, 0.5818], [0.3462, 0.7743], [0.6538, 0.7743]],
    dtype=np.float32,
)

# Russell & Mehrabian (1977) pleasure/arousal coordinates of each category on the
# circumplex, neutral at the origin. Valence and arousal are the probability-weighted
# mean of these points: a *derived* reading, not a measurement.
CIRCUMPLEX = {
    "angry": (-0.51, 0.59),
    "disgust": (-0.60, 0.35),
    "fear": (-0.64, 0.60),
    "happy": (0.81, 0.51),
    "sad": (-0.63, -0.27),
    "surprise": (0.40, 0.67),
    "neutral": (0.0, 0.0),
}
_VA = np.array([CIRCUMPLEX[e] for e in EXPRESSIONS], dtype=np.float32)  # (7, 2)


def circumplex(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(valence, arousal) of (N, 7) probabilities in EXPRESSIONS order."""
    va = np.asarray(probs, dtype=np.float32) @ _VA
    return va[:, 0], va[:, 1]


def align_faces(image: np.ndarray, landmarks: np.ndarray, size: int, channels: int = 1) -> np.ndarray:
    """(N, size, size, channels) uint8 crops, each warped so its landmarks meet FER_TEMPLATE.

    image: (H, W, 3) BGR. landmarks: (N, 5, 2). channels: 1 gray, 3 RGB.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    src_img = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if channels == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    dst = FER_TEMPLATE * size
    out = np.zeros((len(landmarks), size, size, channels), dtype=np.uint8)
    for k, pts in enumerate(np.asarray(landmarks, dtype=np.float32)):
        m, _ = cv2.estimateAffinePartial2D(pts, dst, method=cv2.LMEDS)
        if m is None:
            continue
        crop = cv2.warpAffine(src_img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[k] = crop.reshape(size, size, channels)
    return out


class ExpressionModel(OnnxModel):
    """An ONNX classifier described by a registry Preprocess spec."""

    def __init__(self, spec: ModelSpec, path: str | os.PathLike | None = None, threads: int | None = None,
                 head: str | None = None) -> None:  # fmt: skip
        if spec.task != "expression" or spec.preprocess is None:
            raise ValueError(f"{spec.name!r} is not an expression model")
        self.spec = spec
        self.pre: Preprocess = spec.preprocess
        block, self.temperature, output = self.pre.head(head)
        self.head = head or (self.pre.heads[0][0] if self.pre.heads else None)
        try:  # a head with an output of its own: a session of just that output's graph
            super().__init__(path or fetch(spec)["model"], threads, [output] if output is not None else None)
        except ModelError as exc:
            if output is not None and "has no output" in str(exc):
                raise ModelError(
                    f"{spec.name}: head {self.head!r} names the output {output!r}, which the model lacks"
                ) from None
            raise
        self._order = np.array([self.pre.labels.index(e) for e in EXPRESSIONS]) + block * len(EXPRESSIONS)

    @classmethod
    def from_name(cls, name: str, threads: int | None = None, head: str | None = None) -> ExpressionModel:
        return cls(get_spec(name, task="expression"), threads=threads, head=head)

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, C) uint8 crops -> normalised float32 tensor in the model's layout."""
        x = (np.asarray(crops, dtype=np.float32) / 255.0 - self.pre.mean) / self.pre.std
        return x.transpose(0, 3, 1, 2) if self.pre.layout == "NCHW" else x

    def postprocess(self, outputs: list[np.ndarray], crops: np.ndarray) -> Expressions:
        raw = outputs[0].astype(np.float64)
        logits = np.log(np.clip(raw, 1e-12, None)) if self.pre.output == "probs" else raw
        logits = logits[:, self._order] / self.temperature
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        valence, arousal = circumplex(probs)
        return Expressions(probs, valence, arousal)

    def predict_crops(self, crops: np.ndarray, batch_size: int = 256) -> Expressions:
        """Probabilities for ready-made crops, in batches (no crops: no rows)."""
        return Expressions.concat([self(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)])

    def crops(self, image: np.ndarray, detections: Detections) -> np.ndarray:
        return align_faces(image, detections.landmarks, self.pre.size, self.pre.channels)
