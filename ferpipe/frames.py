"""Streaming decode: frames at an analysis rate, each with its container timestamp.

Frames are decoded one at a time and never collected, so memory does not grow with
clip length. Timestamps come from the container (CAP_PROP_POS_MSEC after each grab),
so variable-frame-rate clips get their true times rather than index / fps.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg quiet: errors reach users as InputError
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2
import numpy as np

from .errors import InputError
from .types import Frame, VideoInfo

log = logging.getLogger(__name__)
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def is_image(path: str | os.PathLike) -> bool:
    """A still image (by extension): processed as a one-frame clip at timestamp 0."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


TIMELINE_EXTENSIONS = (".csv", ".txt", ".tsv")


def is_timeline_only(path: str | os.PathLike | None) -> bool:
    """A clip made from another tool's file without its video (ferpipe.interop): timelines, no frames."""
    return bool(path) and Path(path).suffix.lower() in TIMELINE_EXTENSIONS


def clip_kind(path: str | os.PathLike | None) -> str:
    """What a clip is, in the words every list uses: photo, video, or timeline only."""
    if is_timeline_only(path):
        return "timeline only"
    return "photo" if path and is_image(path) else "video"


def check_pixels(width: int, height: int, name: str) -> None:
    """InputError when an image or frame is larger than the pixel cap (ferpipe.config.max_pixels)."""
    from .config import max_pixels

    cap = max_pixels()
    if width * height > cap:
        raise InputError(f"{name}: {width} x {height} pixels is more than the {cap / 1e6:g} MP this ferpipe accepts "
                         "(FERPIPE_MAX_PIXELS); scale it down first")  # fmt: skip


def image_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """(width, height) from an image file's header without decoding its pixels (None: not an image PIL knows)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            return int(im.width), int(im.height)
    except Image.DecompressionBombError as exc:  # PIL's own guard fired on the header: far over any cap
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        side = int(float(pixels.group(1)) ** 0.5) if pixels else 1 << 16
        return side, side
    except Exception:  # not an image, or a format PIL cannot read: OpenCV decides
        return None


def decode_image(data: bytes | np.ndarray, name: str) -> np.ndarray | None:
    """Image bytes as (H, W, 3) uint8 BGR after checking the pixel cap on the header (None: not decodable)."""
    size = image_size(data)
    if size is not None:
        check_pixels(*size, name)
    buf = np.frombuffer(bytes(data), np.uint8) if not isinstance(data, np.ndarray) else data
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is not None:
        check_pixels(img.shape[1], img.shape[0], name)
    return img


def read_image(path: str | os.PathLike) -> np.ndarray:
    """A still image as (H, W, 3) uint8 BGR, whatever its colour type (gray, alpha, 16-bit); images over the pixel
    cap are refused from their header, before decoding."""
    p = Path(path)
    data = np.fromfile(p, dtype=np.uint8) if p.is_file() else None  # bytes first: any file name works
    img = decode_image(data, p.name) if data is not None and data.size else None
    if img is None:
        raise InputError(f"{p.name}: not a readable image (corrupt, truncated or not an image)")
    return np.ascontiguousarray(img)


LARGE_FRAME = 1920 * 1080 * 3 // 2  # above this, decode on one thread: each decoder thread holds frames


INDIRECTION = (b"ffconcat", b"#EXTM3U", b"#EXTINF", b"[playlist]", b"<?xml", b"<smil", b"<MPD", b"file '", b'file "')
"""How files start that name other files or URLs (FFmpeg concat lists, playlists, SMIL, DASH manifests): FFmpeg
would follow them, so a ".mp4" of 76 bytes could make ferpipe read another file of the library or of the server."""


UNDECODABLE = {"AV01": "AV1"}
"""Codecs OpenCV's bundled FFmpeg opens but cannot decode (no software AV1 decoder in its wheels): named, not called
corrupt."""


def refuse_indirection(path: str | os.PathLike) -> None:
    """InputError for a local file that is a list of other files or URLs instead of media."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    if any(head.startswith(m) or head.lower().startswith(m.lower()) for m in INDIRECTION):
        raise InputError(f"{Path(path).name}: a playlist or concat list that names other files, not a video "
                         "(give the media file itself)")  # fmt: skip


def _open(path: str | os.PathLike, threads: int = 0) -> cv2.VideoCapture:
    """An FFmpeg capture (threads 0: FFmpeg's choice); frames beyond 1080p reopen single-threaded. Files that name
    other files (concat lists, playlists) are refused first."""
    refuse_indirection(path)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
    if not cap.isOpened():
        raise InputError(f"{Path(path).name}: not a readable video (corrupt, truncated or not a video)")
    size = cap.get(cv2.CAP_PROP_FRAME_WIDTH) * cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
    if threads == 0 and size > LARGE_FRAME:
        cap.release()
        return _open(path, threads=1)
    return cap


def probe(path: str | os.PathLike, sha256: str = "") -> VideoInfo:
    """Container metadata; InputError when the file is empty, not a video, or has no decodable frame."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise InputError(f"{p.name}: the file is empty (0 bytes)")
    if is_image(p):
        height, width = read_image(p).shape[:2]
        return VideoInfo(str(p), sha256, 0.0, 0.0, width, height, 1, 0)
    cap = _open(p)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        rotation = int(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0) % 360
        ok, img = cap.read()
        if not ok or img is None:
            codec = int(cap.get(cv2.CAP_PROP_FOURCC) or 0).to_bytes(4, "little").decode("latin-1").strip("\x00 ")
            if codec.upper() in UNDECODABLE:
                raise InputError(f"{p.name}: {UNDECODABLE[codec.upper()]} video, which this build of OpenCV cannot "
                                 "decode; convert it first, e.g. ffmpeg -i IN -c:v libx264 OUT.mp4")  # fmt: skip
            raise InputError(f"{p.name}: no decodable video frame (corrupt or truncated)")
        height, width = img.shape[:2]  # after OpenCV applies the rotation
        check_pixels(width, height, p.name)
        if not math.isfinite(fps) or fps <= 0 or fps > 240:
            fps = 0.0
        if count <= 0 or fps <= 0:  # the container does not say (a browser's MediaRecorder WebM): count them
            count, last_ms = 1, 0.0
            while cap.grab():
                count += 1
                last_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
            if count > 1 and math.isfinite(last_ms) and last_ms > 0:
                fps = (count - 1) / (last_ms / 1000.0)
    finally:
        cap.release()
    duration = count / fps if fps > 0 and count > 0 else 0.0
    return VideoInfo(
        str(p), sha256, duration, fps, width, height, count, rotation if rotation in (0, 90, 180, 270) else 0
    )


def iter_frames(
    path: str | os.PathLike,
    sample_fps: float | None = 5.0,
    after_ms: float | None = None,
) -> Iterator[Frame]:
    """Yield frames at ``sample_fps`` (None: every frame), skipping those at or before ``after_ms``.

    A frame is kept when its timestamp reaches the next multiple of 1/sample_fps, so the
    sampling follows the video's clock even when its frame rate varies.
    """
    if sample_fps is not None and not 0 < sample_fps <= 240:
        raise ValueError(f"sample_fps must be in (0, 240], got {sample_fps}")
    if is_image(path):
        if after_ms is None:
            yield Frame(0, 0.0, read_image(path))
        return
    period = 1000.0 / sample_fps if sample_fps else 0.0
    # sampled: most frames are decoded only to be skipped, on the prefetch thread beside the models, and one decoder
    # thread does that with less CPU than FFmpeg's several (0.27 vs 0.31 CPU-s for the 20 s sample at 5 frames/s)
    cap = _open(path, threads=1 if period else 0)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    next_ms = 0.0
    prev_ms = -1.0
    index = -1
    try:
        while cap.grab():
            index += 1
            ts = cap.get(cv2.CAP_PROP_POS_MSEC)
            if not math.isfinite(ts) or ts < 0:
                ts = index * 1000.0 / fps
            if ts <= prev_ms:  # guard against containers that repeat a timestamp
                ts = prev_ms + 1e-3
            prev_ms = ts
            if after_ms is not None and ts <= after_ms:
                if period:
                    next_ms = (math.floor(ts / period) + 1) * period
                continue
            if period and ts + 1e-6 < next_ms:
                continue
            ok, img = cap.retrieve()
            if not ok or img is None:
                log.warning("frame %d of %s could not be decoded; skipped", index, path)
                continue
            if period:
                next_ms = (math.floor(ts / period) + 1) * period
            yield Frame(index, ts, np.ascontiguousarray(img))
            img = None  # not held while the next frame decodes (a 4K frame is 25 MB)
    finally:
        cap.release()


def expected_samples(duration_s: float, frame_count: int, sample_fps: float | None) -> int:
    """About how many frames iter_frames will yield, for progress bars."""
    if sample_fps is None or duration_s <= 0:
        return max(frame_count, 1)
    return max(1, min(frame_count or 10**9, math.ceil(duration_s * sample_fps)))
