"""Multi-face detection: a box, five landmarks and a score per face.

``FaceDetector`` is the interface; ``MTCNNDetector`` (default, offline) and
``YuNetDetector`` (a user-given ONNX file through cv2.FaceDetectorYN) implement it.
Detectors that can re-score known boxes cheaply also implement ``refine``, which the
pipeline uses between full detections.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod

import cv2
import numpy as np

from .onnx import OnnxModel
from .types import Detections

log = logging.getLogger(__name__)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first.

    boxes: (N, 4) x1 y1 x2 y2. method: "union" (IoU) or "min" (overlap over the smaller box).
    """
    if method not in ("union", "min"):
        raise ValueError(f"nms method must be 'union' or 'min', got {method!r}")
    n = boxes.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(np.float64)
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    xx1 = np.maximum(b[:, None, 0], b[None, :, 0])
    yy1 = np.maximum(b[:, None, 1], b[None, :, 1])
    xx2 = np.minimum(b[:, None, 2], b[None, :, 2])
    yy2 = np.minimum(b[:, None, 3], b[None, :, 3])
    inter = np.clip(xx2 - xx1 + 1, 0, None) * np.clip(yy2 - yy1 + 1, 0, None)
    denom = np.minimum(area[:, None], area[None, :]) if method == "min" else area[:, None] + area[None, :] - inter
    over = inter / denom > threshold
    keep = np.ones(n, dtype=bool)
    for i in range(n):  # O(n) python steps over a precomputed matrix
        if keep[i]:
            keep[i + 1 :] &= ~over[i, i + 1 :]
    return order[keep]


def square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares around their centres."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply MTCNN box regression offsets (fractions of box size)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.copy()
    out[:, 0] += reg[:, 0] * w
    out[:, 1] += reg[:, 1] * h
    out[:, 2] += reg[:, 2] * w
    out[:, 3] += reg[:, 3] * h
    return out


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int, bgr_to_rgb: bool = False) -> np.ndarray:
    """(N, size, size, 3) float32 patches of integer boxes, zero outside the image."""
    h, w = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), dtype=np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(np.int64)):
        bw, bh = x2 - x1 + 1, y2 - y1 + 1
        if bw <= 1 or bh <= 1:
            continue
        if x1 >= 0 and y1 >= 0 and x2 < w and y2 < h:  # inside the image (most boxes): resized from a view
            out[k] = cv2.resize(image[y1 : y2 + 1, x1 : x2 + 1], (size, size), interpolation=cv2.INTER_LINEAR)
            continue
        tmp = np.zeros((bh, bw, 3), dtype=np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2 + 1, w), min(y2 + 1, h)
        if sx2 <= sx1 or sy2 <= sy1:
            continue
        tmp[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
        out[k] = cv2.resize(tmp, (size, size), interpolation=cv2.INTER_LINEAR)
    return out[..., ::-1] if bgr_to_rgb else out


class FaceDetector(ABC):
    """Finds every face in a BGR image."""

    name: str = "detector"

    # A face that fills the picture (a webcam close-up, a tightly cropped photo) leaves the detector no context
    # around it: when a full detection finds nothing, it looks again with this much border (a share of the longer
    # side, edge pixels repeated). If that finds nothing either, a last pass with looser score cut-offs keeps only
    # faces of at least LARGE of the picture's short side: a close-up, never a small ghost in an empty room.
    # FER+ faces upscaled to fill 192 px pictures: found 79% in one pass, 87% with the border, 91% with the last pass;
    # no face in the sample clips' empty frames either way.
    MARGIN = 0.3
    LARGE = 0.3

    @abstractmethod
    def _find(self, image: np.ndarray, loose: bool = False) -> Detections:
        """All faces in a (H, W, 3) uint8 BGR image, in one pass (``loose``: with looser score cut-offs)."""

    def detect(self, image: np.ndarray) -> Detections:
        """All faces in a (H, W, 3) uint8 BGR image; again with a border, then looser, when none is found."""
        found = self._find(image)
        if len(found) or image.ndim != 3:
            return found
        pad = round(self.MARGIN * max(image.shape[:2]))
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = self._find(padded)
        if not len(found):
            found = self._find(padded, loose=True)
            side = np.maximum(found.boxes[:, 2] - found.boxes[:, 0], found.boxes[:, 3] - found.boxes[:, 1])
            found = found[side >= self.LARGE * min(image.shape[:2])]
        if not len(found):
            return Detections.empty()
        return Detections(found.boxes - pad, found.scores, found.landmarks - pad)

    def refine(self, image: np.ndarray, boxes: np.ndarray) -> Detections:
        """Re-locate faces near known boxes; the default runs a full detection."""
        return self.detect(image)

    def __call__(self, image: np.ndarray) -> Detections:
        return self.detect(image)


class _MTCNNNet(OnnxModel):
    """One MTCNN stage network: NHWC RGB patches in (x, y transposed), raw outputs out."""

    def preprocess(self, patches: np.ndarray) -> np.ndarray:
        return ((patches - 127.5) * 0.0078125).transpose(0, 2, 1, 3)


class MTCNNDetector(FaceDetector):
    """MTCNN (Zhang et al. 2016) run with ONNX Runtime.

    min_face_size: smallest face in pixels; None picks max(24, 5% of the short side): expression
    models read 48-64 px crops, and smaller faces carry too little detail to score.
    thresholds: P-, R- and O-net score cut-offs.
    """

    name = "mtcnn"
    LOOSE = (0.4, 0.5, 0.5)  # the last pass's cut-offs (FaceDetector.detect), for large faces only

    def __init__(
        self,
        paths: dict[str, os.PathLike] | None = None,
        min_face_size: int | None = None,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        scale_factor: float = 0.709,
        threads: int | None = None,
    ) -> None:
        if min_face_size is not None and min_face_size < 12:
            raise ValueError(f"min_face_size must be >= 12 pixels, got {min_face_size}")
        if not all(0 < t < 1 for t in thresholds) or len(thresholds) != 3:
            raise ValueError(f"thresholds must be three values in (0, 1), got {thresholds}")
        if not 0.1 < scale_factor < 0.95:
            raise ValueError(f"scale_factor must be in (0.1, 0.95), got {scale_factor}")
        if paths is None:
            from .registry import fetch, get_spec

            paths = fetch(get_spec("mtcnn", task="detector"))
        # each net keeps its working memory between runs while its input is small: the P-net's whole pyramid for a
        # 640x360 frame (first level 320x180), the R- and O-nets' batches of up to about 70 and 7 patches; a larger
        # input's run gives back what it needed afterwards, so peak memory stays bounded (500 MiB up to 4K)
        self.pnet = _MTCNNNet(paths["pnet"], threads, arena_bytes=800_000)
        self.rnet = _MTCNNNet(paths["rnet"], threads, arena_bytes=200_000)
        self.onet = _MTCNNNet(paths["onet"], threads, arena_bytes=200_000)
        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self.scale_factor = scale_factor

    def _scales(self, h: int, w: int) -> list[float]:
        min_face = self.min_face_size or max(24, int(0.05 * min(h, w)))
        m = 12.0 / min_face
        min_layer = min(h, w) * m
        scales = []
        while min_layer >= 12:
            scales.append(m * self.scale_factor ** len(scales))
            min_layer *= self.scale_factor
        return scales

    def _stage1(self, bgr: np.ndarray, threshold: float) -> np.ndarray:
        h, w = bgr.shape[:2]
        found = []
        for scale in self._scales(h, w):
            sw, sh = int(np.ceil(w * scale)), int(np.ceil(h * scale))
            img = cv2.resize(bgr, (sw, sh), interpolation=cv2.INTER_LINEAR)[..., ::-1].astype(np.float32)
            reg, prob = self.pnet.run(self.pnet.preprocess(img[None]))
            prob = prob[0, :, :, 1].T  # back to (rows, cols)
            reg = reg[0].transpose(1, 0, 2)
            rows, cols = np.nonzero(prob >= threshold)
            if rows.size == 0:
                continue
            x1 = np.fix((2 * cols + 1) / scale)
            y1 = np.fix((2 * rows + 1) / scale)
            x2 = np.fix((2 * cols + 12) / scale)
            y2 = np.fix((2 * rows + 12) / scale)
            boxes = np.stack([x1, y1, x2, y2, prob[rows, cols]], axis=1)
            boxes = np.concatenate([boxes, reg[rows, cols]], axis=1)
            keep = nms(boxes[:, :4], boxes[:, 4], 0.5)
            found.append(boxes[keep])
        if not found:
            return np.zeros((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        bw = boxes[:, 2] - boxes[:, 0]
        bh = boxes[:, 3] - boxes[:, 1]
        out = np.stack(
            [
                boxes[:, 0] + boxes[:, 5] * bw,
                boxes[:, 1] + boxes[:, 6] * bh,
                boxes[:, 2] + boxes[:, 7] * bw,
                boxes[:, 3] + boxes[:, 8] * bh,
                boxes[:, 4],
            ],
            axis=1,
        )
        out[:, :4] = np.fix(square(out[:, :4]))
        return out

    def _stage2(self, bgr: np.ndarray, boxes: np.ndarray, threshold: float) -> np.ndarray:
        if len(boxes) == 0:
            return boxes
        reg, prob = self.rnet(crop_patches(bgr, boxes[:, :4], 24, bgr_to_rgb=True))
        score = prob[:, 1]
        ok = score > threshold
        boxes = np.concatenate([boxes[ok, :4], score[ok, None]], axis=1)
        reg = reg[ok]
        if len(boxes) == 0:
            return boxes
        keep = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes, reg = boxes[keep], reg[keep]
        boxes[:, :4] = square(regress(boxes[:, :4], reg))
        return boxes

    def _stage3(self, bgr: np.ndarray, boxes: np.ndarray, threshold: float) -> Detections:
        if len(boxes) == 0:
            return Detections.empty()
        boxes = np.fix(boxes[:, :4])
        reg, pts, prob = self.onet(crop_patches(bgr, boxes, 48, bgr_to_rgb=True))
        score = prob[:, 1]
        ok = score > threshold
        boxes, reg, pts, score = boxes[ok], reg[ok], pts[ok], score[ok]
        if len(boxes) == 0:
            return Detections.empty()
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        lx = w[:, None] * pts[:, 0:5] + boxes[:, 0:1] - 1
        ly = h[:, None] * pts[:, 5:10] + boxes[:, 1:2] - 1
        boxes = regress(boxes, reg)
        keep = nms(boxes, score, 0.7, method="min")
        landmarks = np.stack([lx, ly], axis=2)
        return Detections(boxes[keep], score[keep], landmarks[keep])

    @staticmethod
    def _check(image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 BGR image, got {image.shape} {image.dtype}")
        return image

    def _find(self, image: np.ndarray, loose: bool = False) -> Detections:
        bgr = self._check(image)
        th = self.LOOSE if loose else self.thresholds
        boxes = self._stage2(bgr, self._stage1(bgr, th[0]), th[1])
        return self._stage3(bgr, boxes, th[2])

    def refine(self, image: np.ndarray, boxes: np.ndarray) -> Detections:
        """O-net alone on known boxes: the cheap step between full detections."""
        if len(boxes) == 0:
            return Detections.empty()
        return self._stage3(self._check(image), square(np.asarray(boxes, dtype=np.float64)), self.thresholds[2])


class YuNetDetector(FaceDetector):
    """YuNet through cv2.FaceDetectorYN, from a user-given ONNX file."""

    name = "yunet"

    def __init__(self, model_path: os.PathLike, score_threshold: float = 0.7, nms_threshold: float = 0.3) -> None:
        if not os.path.isfile(model_path):
            raise ValueError(f"YuNet model file not found: {model_path}")
        self.model_path = str(model_path)
        self._det = cv2.FaceDetectorYN.create(self.model_path, "", (320, 320), score_threshold, nms_threshold)

    def _find(self, image: np.ndarray, loose: bool = False) -> Detections:
        if loose:  # YuNet's score cut-off is the user's choice
            return Detections.empty()
        h, w = image.shape[:2]
        self._det.setInputSize((w, h))
        _, faces = self._det.detect(image)
        if faces is None or len(faces) == 0:
            return Detections.empty()
        boxes = faces[:, :4].copy()
        boxes[:, 2:] += boxes[:, :2]
        # YuNet order: right eye, left eye, nose, right mouth, left mouth (image left = subject right)
        lm = faces[:, 4:14].reshape(-1, 5, 2)
        return Detections(boxes, faces[:, 14], lm)


DETECTORS = ("mtcnn", "yunet")


def check_detector(name: str, model_path: str | os.PathLike | None = None) -> None:
    """ValueError unless ``name`` is a detector and has the file it needs (where arguments enter)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose one of: {', '.join(DETECTORS)}")
    if name == "yunet" and not model_path:
        raise ValueError("the yunet detector needs a model file (--detector-model FILE.onnx)")


def create_detector(name: str = "mtcnn", model_path: str | os.PathLike | None = None,
                    min_face_size: int | None = None, threads: int | None = None) -> FaceDetector:  # fmt: skip
    """The one factory for detectors: mtcnn (bundled), or yunet from a user-given ONNX file."""
    check_detector(name, model_path)
    if name == "yunet":
        return YuNetDetector(model_path)
    return MTCNNDetector(min_face_size=min_face_size, threads=threads)
