"""Stable face ids across frames: ByteTrack-style IoU association with a lost-track buffer.

High-score detections are matched first (to active and recently lost tracks), then
low-score detections rescue active tracks, so a face that blurs for a frame keeps its
id. A track unseen for longer than ``lost_buffer_ms`` of video time is dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .types import Detections


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of x1 y1 x2 y2 boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    xx1 = np.maximum(a[:, None, 0], b[None, :, 0])
    yy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    xx2 = np.minimum(a[:, None, 2], b[None, :, 2])
    yy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class _Track:
    track_id: int
    box: list[float]
    velocity: list[float]
    last_ms: float
    hits: int


class FaceTracker:
    """Assigns stable ``track_ids`` to Detections; takes and returns Detections.

    iou_threshold: least IoU for a match. high_score/low_score: ByteTrack's two tiers.
    lost_buffer_ms: how long an unseen track may come back, in video time.
    """

    def __init__(
        self,
        iou_threshold: float = 0.3,
        high_score: float = 0.8,
        low_score: float = 0.5,
        lost_buffer_ms: float = 3000.0,
    ) -> None:
        if not 0 < iou_threshold < 1:
            raise ValueError(f"iou_threshold must be in (0, 1), got {iou_threshold}")
        if not 0 <= low_score <= high_score <= 1:
            raise ValueError(f"need 0 <= low_score <= high_score <= 1, got {low_score}, {high_score}")
        if lost_buffer_ms < 0:
            raise ValueError(f"lost_buffer_ms must be >= 0, got {lost_buffer_ms}")
        self.iou_threshold = iou_threshold
        self.high_score = high_score
        self.low_score = low_score
        self.lost_buffer_ms = lost_buffer_ms
        self.tracks: list[_Track] = []
        self.next_id = 1
        self.last_ms = 0.0

    @staticmethod
    def _moved(track: _Track, timestamp_ms: float) -> np.ndarray:
        dt = min(max(timestamp_ms - track.last_ms, 0.0), 500.0)
        return np.array(track.box) + np.array(track.velocity) * dt

    def predicted(self, timestamp_ms: float) -> tuple[np.ndarray, np.ndarray]:
        """(ids, boxes) of tracks seen recently, moved by their velocity to ``timestamp_ms``."""
        live = [t for t in self.tracks if timestamp_ms - t.last_ms <= self.lost_buffer_ms]
        if not live:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 4))
        return np.array([t.track_id for t in live], dtype=np.int64), np.array(
            [self._moved(t, timestamp_ms) for t in live]
        )

    def _match(self, tracks: list[_Track], boxes: np.ndarray, ts: float) -> list[tuple[int, int]]:
        if not tracks or len(boxes) == 0:
            return []
        iou = iou_matrix(np.array([self._moved(t, ts) for t in tracks]), boxes)
        from scipy.optimize import linear_sum_assignment  # imported at load time by warm(), beside the models

        rows, cols = linear_sum_assignment(-iou)
        return [(r, c) for r, c in zip(rows, cols, strict=False) if iou[r, c] >= self.iou_threshold]

    def _update_track(self, track: _Track, box: np.ndarray, ts: float) -> None:
        dt = ts - track.last_ms
        if dt > 0:
            v = (box - np.array(track.box)) / dt
            track.velocity = list(0.5 * np.array(track.velocity) + 0.5 * v)
        track.box = [float(x) for x in box]
        track.last_ms = ts
        track.hits += 1

    def update(self, detections: Detections, timestamp_ms: float) -> Detections:
        """Detections of this frame with track_ids set; low-score strays and unusable boxes are dropped.

        Boxes or scores that are not finite, and boxes without area, never reach a track: one NaN
        would otherwise poison a track's box and every later association with it.
        """
        ts = float(timestamp_ms)
        if not np.isfinite(ts):
            raise ValueError(f"timestamp_ms must be finite, got {timestamp_ms}")
        b = detections.boxes
        usable = (
            np.isfinite(b).all(axis=1) & np.isfinite(detections.scores)
            & np.isfinite(detections.landmarks).all(axis=(1, 2)) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        )  # fmt: skip
        if not usable.all():
            detections = detections[usable]
        self.tracks = [t for t in self.tracks if ts - t.last_ms <= self.lost_buffer_ms]
        ids = np.full(len(detections), -1, dtype=np.int64)
        high = np.nonzero(detections.scores >= self.high_score)[0]
        low = np.nonzero((detections.scores >= self.low_score) & (detections.scores < self.high_score))[0]

        free_tracks = list(self.tracks)
        for r, c in self._match(free_tracks, detections.boxes[high], ts):
            ids[high[c]] = free_tracks[r].track_id
        matched = {int(i) for i in ids if i >= 0}
        # second pass: low-score detections may only continue tracks seen in the previous step
        recent = [t for t in self.tracks if t.track_id not in matched and t.last_ms >= self.last_ms]
        for r, c in self._match(recent, detections.boxes[low], ts):
            ids[low[c]] = recent[r].track_id
        by_id = {t.track_id: t for t in self.tracks}
        for k in np.nonzero(ids >= 0)[0]:
            self._update_track(by_id[int(ids[k])], detections.boxes[k], ts)
        for k in high:
            if ids[k] < 0:
                ids[k] = self.next_id
                self.tracks.append(_Track(self.next_id, [float(x) for x in detections.boxes[k]], [0.0] * 4, ts, 1))
                self.next_id += 1
        self.last_ms = ts
        keep = ids >= 0
        return detections[keep].with_track_ids(ids[keep])

    def state_dict(self) -> dict:
        """JSON-able state, stored with each committed batch so a killed run can resume."""
        return {"next_id": self.next_id, "last_ms": self.last_ms, "tracks": [asdict(t) for t in self.tracks]}

    def load_state(self, state: dict) -> None:
        self.next_id = int(state["next_id"])
        self.last_ms = float(state["last_ms"])
        self.tracks = [_Track(**t) for t in state["tracks"]]


def warm() -> None:
    """Import the assignment solver (SciPy's, about 0.3 s) now: the pipeline does it on a thread while its models
    load, so a short clip's start-up does not wait for it."""
    from scipy.optimize import linear_sum_assignment  # noqa: F401
