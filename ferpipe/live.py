"""Live sources: HLS playlists (``.m3u8``), RTSP streams and local cameras (``webcam:N``), analysed as they play.

A capture thread reads the source in real time and records every frame into the media library (HLS: its MPEG-TS
segments, copied; RTSP and cameras: an MP4 written at the source's frame rate, frames repeated or dropped to follow
the wall clock). It samples frames at the analysis rate into a short queue; when analysis falls behind, the oldest
waiting frames are dropped, so the analysis is never more than ``max_lag_s`` behind the stream. ``frames()`` yields
the sampled frames; it ends when the stream ends or ``stop()`` is called (Ctrl-C, SIGTERM, the dashboard's Stop).

URL rules are those of downloads: http(s) and rtsp hosts must resolve to public addresses (unless
FERPIPE_ALLOW_PRIVATE_URLS allows them), every HLS connection is checked as it is made (ConnectionGuard), and an
RTSP stream is opened on the address that was checked.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlparse, urlunparse

import cv2
import numpy as np

from .config import max_upload_mb
from .errors import InputError
from .ingest import ConnectionGuard, address_allowed, check_url
from .types import Frame

log = logging.getLogger(__name__)

FIRST_FRAME_TIMEOUT_S = 30.0  # a source that shows no frame in this long is refused
STALL_S = 15.0  # an HLS playlist that adds no segment for this long (beyond its target duration) has ended
HLS_BACKOFF_MAX_S = 8.0  # a playlist that fails to load is retried after 1, 2, 4, 8, 8... s


def hls_requests_per_minute() -> int:
    """The most playlist requests a live HLS run makes in a minute ($FERPIPE_HLS_REQUESTS_PER_MINUTE, 120)."""
    raw = os.environ.get("FERPIPE_HLS_REQUESTS_PER_MINUTE", "120")
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"FERPIPE_HLS_REQUESTS_PER_MINUTE must be a whole number, got {raw!r}") from None
    if not 1 <= value <= 6000:
        raise ValueError(f"FERPIPE_HLS_REQUESTS_PER_MINUTE must be between 1 and 6000, got {value}")
    return value


@dataclass(frozen=True)
class LiveSource:
    """A parsed live source: kind is "hls", "rtsp" or "webcam"; target the URL or the camera index."""

    kind: str
    target: str | int
    name: str

    @property
    def suffix(self) -> str:
        """The recording's container."""
        return ".ts" if self.kind == "hls" else ".mp4"


def is_live(source: str) -> bool:
    """Sources that can only be live: RTSP and cameras (an .m3u8 may also be given with --live)."""
    return source.startswith(("rtsp://", "rtsps://", "webcam:"))


def parse_live(source: str) -> LiveSource:
    """A live source from its text; InputError (one line) for anything else."""
    if not isinstance(source, str) or not source.strip():
        raise InputError(f"not a live source: {source!r}")
    source = source.strip()
    if source.startswith("webcam:"):
        index = source.split(":", 1)[1]
        if not index.isdigit():
            raise InputError(f"not a camera: {source!r} (use webcam:0, webcam:1, ...)")
        return LiveSource("webcam", int(index), f"webcam {index}")
    parsed = urlparse(source)
    if parsed.scheme in ("rtsp", "rtsps"):
        if not parsed.hostname:
            raise InputError(f"refused URL {source!r}: it names no host")
        return LiveSource("rtsp", source, parsed.hostname)
    if parsed.scheme in ("http", "https"):
        check_url(source)
        return LiveSource("hls", source, f"{parsed.hostname}/{Path(parsed.path).stem or 'stream'}")
    raise InputError(f"not a live source: {source!r} (an http(s) .m3u8 playlist, an rtsp:// URL or webcam:N)")


def _checked_rtsp(url: str) -> str:
    """The RTSP URL with its host replaced by the public address it was checked on (no second resolution)."""
    parsed = urlparse(url)
    port = parsed.port or 554
    try:
        infos = socket.getaddrinfo(parsed.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"cannot reach {url}: host {parsed.hostname!r} does not resolve ({exc})") from None
    ip = infos[0][4][0]
    if not address_allowed(ip, port):
        raise InputError(
            f"refused URL {url!r}: {parsed.hostname} resolves to the private address {ip} "
            "(set FERPIPE_ALLOW_PRIVATE_URLS to allow it)"
        )
    host = f"[{ip}]" if ":" in ip else ip
    auth = parsed.netloc.rsplit("@", 1)[0] + "@" if "@" in parsed.netloc else ""
    return urlunparse(parsed._replace(netloc=f"{auth}{host}:{port}"))


@dataclass
class LiveStats:
    """What a live capture did: frames read, sampled for analysis, and dropped because analysis lagged."""

    captured: int = 0
    sampled: int = 0
    dropped: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    t0_wall: float = 0.0  # wall-clock time (epoch s) of stream time 0
    ended: str = ""  # why the capture ended


VOD_QUEUE = 16  # frames of a finished playlist waiting for analysis at most (back-pressure instead of drops)


class LiveCapture:
    """Reads a live source on a thread, records it to ``recording`` and hands out sampled frames (see module)."""

    def __init__(self, source: LiveSource, recording: Path, sample_fps: float | None = 5.0, max_lag_s: float = 3.0):
        if sample_fps is not None and not 0 < sample_fps <= 240:
            raise ValueError(f"sample_fps must be in (0, 240], got {sample_fps}")
        if max_lag_s <= 0:
            raise ValueError(f"max_lag_s must be positive, got {max_lag_s}")
        self.source, self.recording = source, Path(recording)
        self.period_ms = 1000.0 / sample_fps if sample_fps else 0.0
        self.max_lag_ms = max_lag_s * 1000.0
        self.stats = LiveStats()
        self._queue: deque[Frame] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._done = False
        self._error: BaseException | None = None
        self._next_ms = 0.0
        self._index = -1
        self._thread = threading.Thread(target=self._run, name="ferpipe-live", daemon=True)
        self.vod = False  # a finished HLS playlist (#EXT-X-ENDLIST): read whole, at the analysis' pace, no frame lost

    # ---- consumer side ----

    def start(self) -> LiveCapture:
        """Start reading; returns once the first frame is in (InputError when none comes)."""
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self.stats.captured > 0 or self._done, timeout=FIRST_FRAME_TIMEOUT_S)
        if self._error is not None:
            self.stop()
            raise self._error
        if self.stats.captured == 0:
            self.stop()
            raise InputError(f"{self.source.name}: no video frame within {FIRST_FRAME_TIMEOUT_S:.0f} s")
        return self

    def frames(self) -> Iterator[Frame]:
        """Sampled frames as they come, until the stream ends or stop() is called."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._done)
                if self._queue:
                    frame = self._queue.popleft()
                    self._cond.notify_all()  # a recording being read whole waits for room
                elif self._done:
                    break
            yield frame
        if self._error is not None and not isinstance(self._error, InputError):
            raise self._error

    def lag_s(self) -> float:
        """How far the newest captured frame is ahead of the oldest one waiting for analysis."""
        with self._cond:
            return (self._queue[-1].timestamp_ms - self._queue[0].timestamp_ms) / 1000.0 if self._queue else 0.0

    def stop(self, why: str = "stopped") -> None:
        """End the capture (the frames already waiting are still analysed)."""
        if not self._stop.is_set():
            self.stats.ended = self.stats.ended or why
        self._stop.set()

    def close(self) -> LiveStats:
        """Stop and wait for the recording to be complete on disk."""
        self.stop()
        self._thread.join(timeout=30)
        return self.stats

    # ---- producer side ----

    def _emit(self, ts_ms: float, image: np.ndarray) -> None:
        """One captured frame: count it, and queue it for analysis when a sample is due."""
        self._index += 1
        self.stats.captured += 1
        if self.stats.t0_wall == 0.0:
            self.stats.t0_wall = time.time() - ts_ms / 1000.0
        if self.period_ms and ts_ms + 1e-6 < self._next_ms:
            return
        if self.period_ms:
            self._next_ms = (math.floor(ts_ms / self.period_ms) + 1) * self.period_ms
        with self._cond:
            if self.vod:  # a recording, not a stream: wait for the analysis instead of dropping frames
                self._cond.wait_for(lambda: len(self._queue) < VOD_QUEUE or self._stop.is_set())
            self._queue.append(Frame(self._index, ts_ms, np.ascontiguousarray(image)))
            self.stats.sampled += 1
            while not self.vod and len(self._queue) > 1 and ts_ms - self._queue[0].timestamp_ms > self.max_lag_ms:
                self._queue.popleft()  # analysis is behind: the oldest waiting frame goes
                self.stats.dropped += 1
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            if self.source.kind == "hls":
                self._run_hls()
            else:
                self._run_capture()
        except BaseException as exc:  # handed to the consumer
            self._error = exc
            self.stats.ended = self.stats.ended or f"error: {exc}"
            log.warning("live capture of %s ended: %s", self.source.name, exc)
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    # RTSP and cameras: OpenCV capture, recorded to MP4 on the wall clock

    def _run_capture(self) -> None:
        if self.source.kind == "webcam":
            cap = cv2.VideoCapture(int(self.source.target))
        else:
            cap = cv2.VideoCapture(_checked_rtsp(str(self.source.target)), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise InputError(f"{self.source.name}: cannot open the stream")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        fps = fps if math.isfinite(fps) and 1 <= fps <= 120 else 25.0
        self.stats.fps = fps
        writer = None
        written = 0
        t0 = None
        failures = 0
        try:
            while not self._stop.is_set():
                ok, img = cap.read()
                if not ok or img is None:
                    failures += 1
                    if failures > 25:
                        self.stats.ended = self.stats.ended or "the stream ended"
                        return
                    time.sleep(0.04)
                    continue
                failures = 0
                now = time.monotonic()
                if writer is None:
                    t0 = now
                    h, w = img.shape[:2]
                    self.stats.width, self.stats.height = w, h
                    writer = cv2.VideoWriter(str(self.recording), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    if not writer.isOpened():
                        raise InputError(f"cannot write the recording {self.recording}")
                # the recording follows the wall clock: repeat or skip frames to stay at `fps`
                due = int((now - t0) * fps) + 1
                if due <= written:
                    continue
                while written < due:
                    writer.write(img)
                    written += 1
                self._emit((written - 1) * 1000.0 / fps, img)
        finally:
            cap.release()
            if writer is not None:
                writer.release()

    # HLS: playlists and segments fetched by ferpipe itself, every connection checked

    def _fetch(self, url: str, limit: int) -> bytes:
        if urlparse(url).scheme not in ("http", "https"):  # a playlist may name any URL: only http(s) is fetched
            raise InputError(f"{self.source.name}: refused a stream part at {url!r} (only http and https)")
        with urllib.request.urlopen(url, timeout=15) as resp:
            data = resp.read(limit + 1)
        if len(data) > limit:
            raise InputError(f"{self.source.name}: a stream part is over the {limit >> 20} MiB limit")
        return data

    def _run_hls(self) -> None:
        url = str(self.source.target)
        limit = max_upload_mb() << 20
        seen: set[int] = set()
        media_ms = 0.0
        last_new = time.monotonic()
        first = True
        total = 0
        hops = 0
        budget = hls_requests_per_minute()
        asked: deque[float] = deque()  # when each playlist request of the last minute was made
        backoff = 1.0
        with ConnectionGuard() as guard, open(self.recording, "wb") as rec, \
                tempfile.TemporaryDirectory(prefix="ferpipe-hls-") as tmp:  # fmt: skip
            while not self._stop.is_set():
                now = time.monotonic()
                while asked and now - asked[0] > 60.0:
                    asked.popleft()
                if len(asked) >= budget:  # the request budget: wait until the oldest request is a minute old
                    self._stop.wait(60.0 - (now - asked[0]))
                    continue
                asked.append(now)
                try:
                    text = self._fetch(url, 1 << 20).decode("utf-8", "replace")
                except (urllib.error.URLError, OSError) as exc:
                    if guard.refused:
                        raise InputError(
                            f"refused URL {url!r}: it led to the private address {guard.refused}"
                        ) from None
                    if first:
                        raise InputError(f"cannot read the playlist {url}: {exc}") from None
                    if time.monotonic() - last_new > STALL_S:
                        self.stats.ended = self.stats.ended or "the playlist is gone"
                        return
                    self._stop.wait(backoff)  # back off: 1, 2, 4, 8 s between retries of a failing playlist
                    backoff = min(HLS_BACKOFF_MAX_S, backoff * 2)
                    continue
                backoff = 1.0
                playlist = parse_m3u8(text, url)
                if playlist.variant:  # a master playlist: follow its first variant, a few levels at most
                    hops += 1
                    if hops > MAX_VARIANT_HOPS:
                        raise InputError(f"{self.source.name}: playlists point at playlists more than "
                                         f"{MAX_VARIANT_HOPS} times (a loop?)")  # fmt: skip
                    url = playlist.variant
                    continue
                if first and not playlist.segments and not playlist.ended and "#EXTM3U" not in text:
                    raise InputError(f"{url}: not an HLS playlist")
                segments = playlist.segments
                if first and playlist.ended:  # video on demand: every segment, none dropped
                    self.vod = True
                    log.info("%s is a finished playlist (#EXT-X-ENDLIST): read whole", self.source.name)
                if first and not playlist.ended:
                    segments = segments[-1:]  # join at the live edge: the newest segment
                    seen.update(seq for seq, _, _ in playlist.segments[:-1])
                first = False
                for seq, duration, seg_url in segments:
                    if seq in seen or self._stop.is_set():
                        continue
                    seen.add(seq)
                    data = self._fetch(seg_url, limit)
                    total += len(data)
                    if total > limit:
                        raise InputError(
                            f"{self.source.name}: over the {max_upload_mb()} MiB limit (FERPIPE_MAX_UPLOAD_MB)"
                        )
                    rec.write(data)
                    rec.flush()
                    self._decode_segment(Path(tmp) / f"{seq}.ts", data, media_ms)
                    media_ms += duration * 1000.0
                    last_new = time.monotonic()
                if playlist.ended and all(seq in seen for seq, _, _ in playlist.segments):
                    self.stats.ended = self.stats.ended or "the stream ended"
                    return
                if time.monotonic() - last_new > STALL_S + playlist.target_s:
                    self.stats.ended = self.stats.ended or "the stream stalled"
                    return
                self._stop.wait(max(0.2, playlist.target_s / 2))

    def _decode_segment(self, path: Path, data: bytes, start_ms: float) -> None:
        path.write_bytes(data)
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        try:
            fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
            fps = fps if math.isfinite(fps) and 1 <= fps <= 120 else 25.0
            self.stats.fps = fps
            k = 0
            while True:
                ok, img = cap.read()
                if not ok or img is None:
                    break
                self.stats.height, self.stats.width = img.shape[:2]
                self._emit(start_ms + k * 1000.0 / fps, img)
                k += 1
        finally:
            cap.release()
            with contextlib.suppress(OSError):
                path.unlink()


@dataclass(frozen=True)
class Playlist:
    """A parsed HLS playlist: (media sequence, duration s, absolute URL) per segment, or a variant to follow."""

    segments: list[tuple[int, float, str]]
    target_s: float = 2.0
    ended: bool = False
    variant: str | None = None


MAX_VARIANT_HOPS = 4
"""A master playlist's variant may itself be a master playlist, this many levels deep at most."""


def parse_m3u8(text: str, base_url: str) -> Playlist:
    """The parts of an HLS playlist ferpipe needs (RFC 8216): segments with their sequence numbers, the target
    duration, the end tag, or (for a master playlist) its first variant."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("#EXTM3U"):
        raise InputError("not an HLS playlist (it does not start with #EXTM3U)")
    sequence, target, ended = 0, 2.0, False
    segments: list[tuple[int, float, str]] = []
    duration = None
    expect_variant = False

    def number(line: str, kind: type, low: float, high: float) -> float:
        """A tag's value, strictly: a finite number in [low, high], else a one-line InputError."""
        raw = line.split(":", 1)[1].split(",")[0].strip()
        try:
            value = kind(raw)
        except ValueError:
            raise InputError(f"bad HLS playlist line {line[:80]!r}: {raw!r} is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise InputError(f"bad HLS playlist line {line[:80]!r}: {raw} is out of range")
        return value

    for line in lines:
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            sequence = int(number(line, int, 0, 2**63 - 1))
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            target = number(line, float, 0.001, 3600.0)
        elif line.startswith("#EXT-X-ENDLIST"):
            ended = True
        elif line.startswith("#EXTINF:"):
            duration = number(line, float, 0.0, 3600.0)
        elif line.startswith("#EXT-X-STREAM-INF"):
            expect_variant = True
        elif not line.startswith("#"):
            if expect_variant:
                variant = urljoin(base_url, line)
                if variant.split("#")[0] == base_url.split("#")[0]:
                    raise InputError("bad HLS playlist: its variant is the playlist itself")
                return Playlist([], target, False, variant)
            if duration is not None:
                segments.append((sequence + len(segments), duration, urljoin(base_url, line)))
                duration = None
    return Playlist(segments, target, ended)
