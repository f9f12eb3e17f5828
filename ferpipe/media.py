"""Frames, face thumbnails and browser previews for showing a clip (not for analysis)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
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


def make_preview(path: str | os.PathLike, max_width: int = 640, progress=None) -> Path:
    """A VP8 WebM copy a browser can play (cached beside the clip); ``progress(done, total)`` after each second of
    frames. Use ``previews.start`` to encode in the background with a status."""
    out = preview_path(path)
    if out.is_file():
        return out
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    scale = min(1.0, max_width / max(w, 1))
    size = (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2)
    tmp = out.with_suffix(".part.webm")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"VP80"), fps, size)
    if not writer.isOpened():
        cap.release()
        raise InputError("this OpenCV build cannot write WebM previews")
    done = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        writer.write(cv2.resize(img, size, interpolation=cv2.INTER_AREA) if scale < 1 else img)
        done += 1
        if progress is not None and done % max(1, int(fps)) == 0:
            progress(done, total)
    writer.release()
    cap.release()
    os.replace(tmp, out)
    return out


@dataclass
class PreviewJob:
    """One preview encode running in the background: its state (encoding, ready, failed), progress and error."""

    path: str
    state: str = "encoding"
    done: int = 0
    total: int = 0
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def share(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None before the first progress)."""
        if not self.done or not self.total:
            return None
        rate = self.done / max(time.monotonic() - self.started, 1e-6)
        return max(0.0, (self.total - self.done) / rate)

    def wait(self, timeout: float | None = None) -> Path:
        """The preview once it is made; InputError if the encode failed."""
        self.finished.wait(timeout)
        if self.state == "failed":
            raise InputError(self.error or "the preview could not be made")
        if self.state != "ready":
            raise InputError("the preview is still being made")
        return preview_path(self.path)


class PreviewJobs:
    """Preview encodes as background jobs, one per clip however many ask for it at once (a page, a stimulus route),
    each with a status the dashboard shows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, PreviewJob] = {}

    def status(self, path: str | os.PathLike) -> PreviewJob | None:
        key = str(path)
        with self._lock:
            job = self._jobs.get(key)
        if job is None and preview_path(key).is_file():
            job = PreviewJob(key, state="ready")
            job.finished.set()
        return job

    def start(self, path: str | os.PathLike) -> PreviewJob:
        """The job for this clip's preview: a running or finished one, else a new encode in a thread."""
        key = str(path)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state != "failed":
                return job
            job = PreviewJob(key)
            self._jobs[key] = job

        def run() -> None:
            def step(done: int, total: int) -> None:
                job.done, job.total = done, total

            try:
                make_preview(key, progress=step)
                job.state = "ready"
            except Exception as exc:  # reported through the job's status
                job.state, job.error = "failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            finally:
                job.finished.set()

        threading.Thread(target=run, name="preview", daemon=True).start()
        return job


previews = PreviewJobs()
