"""Frames, face thumbnails and browser previews for showing a clip (not for analysis)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError

BROWSER_CODECS = {"avc1", "h264", "vp80", "vp90", "vp09", "av01"}


def frame_at(path: str | os.PathLike, t_ms: float) -> np.ndarray:
    """The RGB frame shown at ``t_ms`` (seeks by time, then decodes forward)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"cannot open {path}")
    try:
        cap.set(cv2.CAP_PROP_POS_MSEC, max(0.0, float(t_ms)))
        ok, img = cap.read()
        if not ok:
            raise InputError(f"no frame at {t_ms / 1000:.2f} s in {Path(path).name}")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def thumbnail(
    frame_rgb: np.ndarray, box: tuple[float, float, float, float], size: int = 96, blur: bool = True
) -> np.ndarray:
    """A square RGB crop of one face (x, y, w, h), heavily blurred unless blur=False."""
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    x, y, w, h = box
    side = max(w, h) * 1.2
    cx, cy = x + w / 2, y + h / 2
    x1, y1 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    x2, y2 = int(min(frame_rgb.shape[1], cx + side / 2)), int(min(frame_rgb.shape[0], cy + side / 2))
    crop = frame_rgb[y1:y2, x1:x2]
    if crop.size == 0:
        return np.zeros((size, size, 3), np.uint8)
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    if blur:
        crop = cv2.GaussianBlur(crop, (0, 0), sigmaX=size / 12)
    return crop


def browser_playable(path: str | os.PathLike) -> bool:
    """True when a browser can play the file as is (H.264/VP8/VP9/AV1 in mp4 or webm)."""
    p = Path(path)
    if p.suffix.lower() not in (".mp4", ".webm"):
        return False
    cap = cv2.VideoCapture(str(p))
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    cap.release()
    fourcc = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).lower()
    return fourcc in BROWSER_CODECS


def preview_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_name(p.stem + ".preview.webm")


def make_preview(path: str | os.PathLike, max_width: int = 640) -> Path:
    """A VP8 WebM copy a browser can play (cached beside the clip)."""
    out = preview_path(path)
    if out.is_file():
        return out
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    scale = min(1.0, max_width / max(w, 1))
    size = (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2)
    tmp = out.with_suffix(".part.webm")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"VP80"), fps, size)
    if not writer.isOpened():
        cap.release()
        raise InputError("this OpenCV build cannot write WebM previews")
    while True:
        ok, img = cap.read()
        if not ok:
            break
        writer.write(cv2.resize(img, size, interpolation=cv2.INTER_AREA) if scale < 1 else img)
    writer.release()
    cap.release()
    os.replace(tmp, out)
    return out
