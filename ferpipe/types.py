"""Data types passed between pipeline stages.

Every stage takes and returns one of these. They are validated on construction so
that a shape bug fails where it is made, not three stages later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))

    def __getitem__(self, idx: np.ndarray | slice | Sequence[int]) -> Detections:
        return Detections(self.boxes[idx], self.scores[idx], self.landmarks[idx], self.track_ids[idx])

    def largest(self) -> int:
        """Index of the largest face by box area (the subject of a portrait); ValueError when empty."""
        if not len(self):
            raise ValueError("no detections to choose the largest from")
        b = self.boxes
        return int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))

    def with_track_ids(self, track_ids: np.ndarray) -> Detections:
        return Detections(self.boxes, self.scores, self.landmarks, track_ids)

    @staticmethod
    def concat(parts: Sequence[Detections]) -> Detections:
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

    @staticmethod
    def concat(parts: Sequence[Expressions]) -> Expressions:
        if not parts:
            return Expressions(np.zeros((0, len(EXPRESSIONS))), np.zeros(0), np.zeros(0))
        return Expressions(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("probs", "valence", "arousal")))


@dataclass(frozen=True)
class FaceSignals:
    """Attention, head pose and blendshapes for N faces (NaN where a face's mesh was not found).

    pose: (N, 3) float32 yaw, pitch, roll in degrees (conventions in ferpipe.signals).
    blendshapes: (N, 52) float32 in [0, 1], in ferpipe.signals.BLENDSHAPES order.
    mesh_score: (N,) face-presence probability of the mesh model.
    eye_openness: (N,) 1 - the mean of the two eyeBlink blendshapes.
    attentive: (N,) 1.0 / 0.0, NaN without a mesh.
    """

    pose: np.ndarray
    blendshapes: np.ndarray
    mesh_score: np.ndarray
    eye_openness: np.ndarray
    attentive: np.ndarray

    def __post_init__(self) -> None:
        pose = np.asarray(self.pose, dtype=np.float32).reshape(-1, 3)
        n = pose.shape[0]
        shapes = np.asarray(self.blendshapes, dtype=np.float32)
        shapes = (
            shapes.reshape(n, shapes.shape[-1] if shapes.ndim == 2 else -1)
            if n
            else shapes.reshape(0, -1 if shapes.size else 52)
        )
        cols = {
            k: np.asarray(getattr(self, k), dtype=np.float32).reshape(-1)
            for k in ("mesh_score", "eye_openness", "attentive")
        }
        if any(v.shape[0] != n for v in cols.values()):
            raise ValueError(
                f"FaceSignals columns disagree with {n} poses: { {k: v.shape[0] for k, v in cols.items()} }"
            )
        object.__setattr__(self, "pose", pose)
        object.__setattr__(self, "blendshapes", shapes)
        for k, v in cols.items():
            object.__setattr__(self, k, v)

    def __len__(self) -> int:
        return int(self.pose.shape[0])

    @classmethod
    def from_readings(cls, pose: np.ndarray, blendshapes: np.ndarray, mesh_score: np.ndarray, yaw_deg: float,
                      pitch_deg: float, eyes_open: float) -> FaceSignals:  # fmt: skip
        """Derive eye openness (from eyeBlinkLeft/Right, columns 9 and 10) and attention (within the cone, eyes
        open) from the model readings."""
        pose = np.asarray(pose, dtype=np.float32).reshape(-1, 3)
        shapes = np.asarray(blendshapes, dtype=np.float32)
        openness = 1.0 - shapes[:, 9:11].mean(axis=1) if shapes.shape[1] > 10 else np.full(len(pose), np.nan)
        found = np.isfinite(pose).all(axis=1) & np.isfinite(openness)
        with np.errstate(invalid="ignore"):
            ok = (np.abs(pose[:, 0]) <= yaw_deg) & (np.abs(pose[:, 1]) <= pitch_deg) & (openness >= eyes_open)
        attentive = np.where(found, ok.astype(np.float32), np.nan)
        return cls(pose, shapes, mesh_score, openness, attentive)

    @staticmethod
    def empty(n: int = 0, k: int = 52) -> FaceSignals:
        """n faces without readings (signals off, or no mesh)."""
        nan = np.full(n, np.nan, np.float32)
        return FaceSignals(np.full((n, 3), np.nan), np.full((n, k), np.nan), np.zeros(n), nan, nan)

    @staticmethod
    def concat(parts: Sequence[FaceSignals]) -> FaceSignals:
        if not parts:
            return FaceSignals.empty()
        return FaceSignals(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                             ("pose", "blendshapes", "mesh_score", "eye_openness", "attentive")))  # fmt: skip


@dataclass(frozen=True)
class MeshCrops:
    """N faces cut out for the face mesh (ferpipe.signals): what the frame's thread hands to the mesh's thread,
    so the frame itself need not wait for the mesh.

    crops: (N, S, S, 3) uint8 BGR squares around each face, eyes level.
    transforms: (N, 2, 3) affine maps from frame pixels to crop pixels.
    """

    crops: np.ndarray
    transforms: np.ndarray

    def __post_init__(self) -> None:
        crops = np.asarray(self.crops)
        transforms = np.asarray(self.transforms, dtype=np.float64)
        if crops.ndim != 4 or crops.shape[3] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"crops must be (N, S, S, 3) uint8, got {crops.shape} {crops.dtype}")
        if transforms.shape != (crops.shape[0], 2, 3):
            raise ValueError(f"transforms must be ({crops.shape[0]}, 2, 3), got {transforms.shape}")
        object.__setattr__(self, "crops", crops)
        object.__setattr__(self, "transforms", transforms)

    def __len__(self) -> int:
        return int(self.crops.shape[0])


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


RUN_STATUSES: tuple[str, ...] = ("running", "done", "truncated", "failed", "interrupted")
"""A run's states: ``done`` and ``truncated`` (the media ended early; what decoded is kept) are final."""


@dataclass(frozen=True)
class RunProgress:
    """How far a run has got: committed with each batch so a killed run resumes exactly there.

    detector_state holds what decides the next frames' work (when the last full detection ran),
    tracker_state the tracker's and smoother's JSON-able state.
    """

    frames_done: int
    last_frame_index: int
    last_timestamp_ms: float
    seconds: float
    tracker_state: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frames_done < 0:
            raise ValueError(f"RunProgress.frames_done must be >= 0, got {self.frames_done}")
        if not np.isfinite(self.last_timestamp_ms) or not np.isfinite(self.seconds):
            raise ValueError(f"RunProgress times must be finite, got {self.last_timestamp_ms}, {self.seconds}")


@dataclass(frozen=True)
class RunRow:
    """One row of the runs table, as the store returns it."""

    run_id: int
    clip_id: str
    model: str
    detector: str
    settings: dict
    status: str
    frames_expected: int
    frames_done: int
    last_frame_index: int
    last_timestamp_ms: float
    faces: int
    observations: int
    seconds: float
    tracker_state: dict | None
    error: str | None
    pid: int | None
    updated_at: object = None  # datetime of the last commit
    finished_at: object = None

    def __post_init__(self) -> None:
        if self.status not in RUN_STATUSES:
            raise ValueError(f"RunRow.status must be one of {RUN_STATUSES}, got {self.status!r}")

    @property
    def finished(self) -> bool:
        """A final run: reused as is when the same clip is processed again with the same settings."""
        return self.status in ("done", "truncated")

    @property
    def progress(self) -> RunProgress:
        return RunProgress(self.frames_done, self.last_frame_index, self.last_timestamp_ms, self.seconds,
                           self.tracker_state or {})  # fmt: skip

    @property
    def tool(self) -> str | None:
        """The other tool a run was imported from (ferpipe.interop), or None for ferpipe's own runs."""
        return (self.settings or {}).get("tool") if self.detector == "imported" else None

    @property
    def has_expressions(self) -> bool:
        """False for a run imported from a tool that reads no expressions (OpenFace, an AU-only iMotions file)."""
        return self.tool is None or bool((self.settings or {}).get("expressions"))


@dataclass(frozen=True)
class Observations:
    """One batch of per-face observations, as aligned columns: what the pipeline hands the store.

    frame_index, timestamp_ms: (N,) of the frame each face was seen in; detections carry the
    boxes, scores and face (track) ids; expressions the probabilities and derived valence/arousal;
    confidence: (N,) each reading's confidence in [0, 1] (ferpipe.confidence), or None (stored as NULL).
    """

    frame_index: np.ndarray
    timestamp_ms: np.ndarray
    detections: Detections
    expressions: Expressions
    signals: FaceSignals | None = None
    confidence: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.signals is not None and len(self.signals) != len(self.detections):
            raise ValueError(f"Observations: {len(self.signals)} signal rows for {len(self.detections)} faces")
        if self.confidence is not None:
            conf = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
            if conf.shape[0] != len(self.detections):
                raise ValueError(f"Observations: {conf.shape[0]} confidences for {len(self.detections)} faces")
            if conf.size and not ((conf >= 0) & (conf <= 1)).all():
                raise ValueError("Observations.confidence must be in [0, 1]")
            object.__setattr__(self, "confidence", conf)
        fi = np.asarray(self.frame_index, dtype=np.int64).reshape(-1)
        ts = np.asarray(self.timestamp_ms, dtype=np.float64).reshape(-1)
        n = len(self.detections)
        if fi.shape[0] != n or ts.shape[0] != n or len(self.expressions) != n:
            raise ValueError(
                f"Observations columns disagree: frame_index {fi.shape[0]}, timestamp_ms {ts.shape[0]}, "
                f"detections {n}, expressions {len(self.expressions)}"
            )
        if n and not np.isfinite(ts).all():
            raise ValueError("Observations.timestamp_ms must be finite")
        object.__setattr__(self, "frame_index", fi)
        object.__setattr__(self, "timestamp_ms", ts)

    def __len__(self) -> int:
        return len(self.detections)

    @staticmethod
    def empty() -> Observations:
        return Observations(np.zeros(0), np.zeros(0), Detections.empty(),
                            Expressions(np.zeros((0, len(EXPRESSIONS))), np.zeros(0), np.zeros(0)))  # fmt: skip

    @staticmethod
    def concat(parts: Sequence[Observations]) -> Observations:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Observations.empty()
        with_signals = [p.signals is not None for p in parts]
        if any(with_signals) and not all(with_signals):
            raise ValueError("Observations.concat: some batches have signals and some do not")
        with_conf = all(p.confidence is not None for p in parts)
        return Observations(
            np.concatenate([p.frame_index for p in parts]),
            np.concatenate([p.timestamp_ms for p in parts]),
            Detections.concat([p.detections for p in parts]),
            Expressions(
                np.concatenate([p.expressions.probs for p in parts]),
                np.concatenate([p.expressions.valence for p in parts]),
                np.concatenate([p.expressions.arousal for p in parts]),
            ),
            FaceSignals.concat([p.signals for p in parts]) if all(with_signals) else None,
            np.concatenate([p.confidence for p in parts]) if with_conf else None,
        )


@dataclass(frozen=True)
class AnalysisBatch:
    """What analysing a clip hands the writer, batch by batch: observations and the progress they bring the run
    to (committed together, so a killed run resumes exactly after them)."""

    rows: Observations
    progress: RunProgress


@dataclass(frozen=True)
class TrackSamples:
    """What analysing a clip hands the writer at its end, for linking tracks into people: per track, its first and
    last box and its face descriptor (or None); and the final progress (frames, last timestamp)."""

    samples: dict
    progress: RunProgress


BASELINE_KINDS: tuple[str, ...] = ("interval", "marker", "first", "median")
BASELINE_CORRECTIONS: tuple[str, ...] = ("subtract", "z")


@dataclass(frozen=True)
class Baseline:
    """A per-person baseline: which stretch of each person's readings is their resting face, and how it is taken
    out before aggregation.

    kind:
      - "interval": ``start_s``–``end_s`` of stimulus time (clip time minus the clip's stimulus offset);
      - "marker": the clip's event marker named ``marker`` (an interval marker), on the clip's own timeline;
      - "first": the first ``first_s`` seconds of each person's presence;
      - "median": each person's own median over the whole clip (z: their spread over the clip).
    correction: "subtract" (value minus the person's baseline mean) or "z" (that difference over the person's
    standard deviation within the baseline). A person with under ``min_seconds`` of baseline is left out.
    """

    kind: str = "interval"
    correction: str = "subtract"
    start_s: float = 0.0
    end_s: float = 0.0
    first_s: float = 3.0
    marker: str = "baseline"
    min_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in BASELINE_KINDS:
            raise ValueError(f"baseline kind must be one of {', '.join(BASELINE_KINDS)}, got {self.kind!r}")
        if self.correction not in BASELINE_CORRECTIONS:
            raise ValueError(
                f"baseline correction must be one of {', '.join(BASELINE_CORRECTIONS)}, got {self.correction!r}"
            )
        for name in ("start_s", "end_s", "first_s", "min_seconds"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise ValueError(f"baseline {name} must be a finite number >= 0, got {v!r}")
        if self.kind == "interval" and not self.end_s > self.start_s:
            raise ValueError(f"a baseline interval needs start < end, got {self.start_s:g}-{self.end_s:g} s")
        if self.kind == "first" and not self.first_s > 0:
            raise ValueError(f"a first-seconds baseline needs a length > 0, got {self.first_s!r}")
        if self.kind == "marker" and not self.marker.strip():
            raise ValueError("a marker baseline needs the marker's name")
        if self.correction == "z" and self.min_seconds < 2:
            object.__setattr__(self, "min_seconds", 2.0)  # a spread needs two seconds at least

    def describe(self) -> str:
        """The baseline in words, as every figure and export that uses it records it."""
        where = {
            "interval": f"{self.start_s:g}–{self.end_s:g} s of stimulus time",
            "marker": f"the marker '{self.marker}'",
            "first": f"each person's first {self.first_s:g} s in view",
            "median": "each person's own median over the clip",
        }[self.kind]
        how = "subtracted" if self.correction == "subtract" else "as a z-score against its spread"
        return f"baseline: {where}, {how}"


IMPORT_FORMATS: tuple[str, ...] = ("openface", "pyfeat", "imotions")
"""Other tools' per-frame outputs that ``ferpipe import`` reads (and ``ferpipe export --format`` writes)."""

TOOL_NAMES: dict[str, str] = {"openface": "OpenFace", "pyfeat": "py-feat", "imotions": "iMotions"}


@dataclass(frozen=True)
class ToolTimeline:
    """Another tool's per-face, per-frame readings (OpenFace, py-feat, iMotions), as aligned columns.

    face_id, frame_index: (N,) int64; timestamp_ms: (N,) finite, >= 0; boxes: (N, 4) x1, y1, x2, y2 (NaN where the
    tool gives none); score: (N,) the tool's face confidence in [0, 1] (NaN: none); probs: (N, 7) in EXPRESSIONS
    order, or None when the tool reads no expressions; pose: (N, 3) yaw, pitch, roll in degrees (NaN: none);
    signals: the tool's own columns (action units, gaze...) under their own names, each (N,).
    """

    tool: str
    face_id: np.ndarray
    frame_index: np.ndarray
    timestamp_ms: np.ndarray
    boxes: np.ndarray
    score: np.ndarray
    pose: np.ndarray
    probs: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    frames_in_file: int | None = None  # frames the file covers, faces or not (OpenFace and py-feat write every one)

    def __post_init__(self) -> None:
        if self.tool not in IMPORT_FORMATS:
            raise ValueError(f"ToolTimeline.tool must be one of {', '.join(IMPORT_FORMATS)}, got {self.tool!r}")
        n = np.asarray(self.face_id).reshape(-1).shape[0]
        cols = {"face_id": (np.int64, (n,)), "frame_index": (np.int64, (n,)), "timestamp_ms": (np.float64, (n,)),
                "boxes": (np.float32, (n, 4)), "score": (np.float32, (n,)), "pose": (np.float32, (n, 3))}  # fmt: skip
        for name, (dtype, shape) in cols.items():
            arr = np.asarray(getattr(self, name), dtype=dtype)
            if arr.shape != shape:
                raise ValueError(f"ToolTimeline.{name} must have shape {shape}, got {arr.shape}")
            object.__setattr__(self, name, arr)
        if n and not (np.isfinite(self.timestamp_ms).all() and (self.timestamp_ms >= 0).all()):
            raise ValueError("ToolTimeline.timestamp_ms must be finite and >= 0")
        ok = np.isnan(self.score) | ((self.score >= 0) & (self.score <= 1))
        if not ok.all():
            raise ValueError("ToolTimeline.score must be in [0, 1]")
        if self.probs is not None:
            probs = np.asarray(self.probs, dtype=np.float32)
            if probs.shape != (n, len(EXPRESSIONS)):
                raise ValueError(f"ToolTimeline.probs must have shape {(n, len(EXPRESSIONS))}, got {probs.shape}")
            object.__setattr__(self, "probs", probs)
        extra = {}
        for name, values in self.extra.items():
            arr = np.asarray(values, dtype=np.float32).reshape(-1)
            if arr.shape[0] != n:
                raise ValueError(f"ToolTimeline signal {name!r} has {arr.shape[0]} values for {n} rows")
            extra[str(name)] = arr
        object.__setattr__(self, "extra", extra)

    def __len__(self) -> int:
        return int(self.face_id.shape[0])


@dataclass(frozen=True)
class StreamSignal:
    """A numeric stream recorded beside a clip (a GSR channel of an XDF file...), on the clip's own timeline.

    name: what the dashboard calls it; source: where it came from (file and stream); unit: its unit ("" when
    none is known); t_s, value: (N,) aligned, t_s finite and sorted.
    """

    name: str
    source: str
    unit: str
    t_s: np.ndarray
    value: np.ndarray

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("StreamSignal.name must not be empty")
        t = np.asarray(self.t_s, dtype=np.float64).reshape(-1)
        v = np.asarray(self.value, dtype=np.float64).reshape(-1)
        if t.shape != v.shape:
            raise ValueError(f"StreamSignal {self.name!r}: {t.shape[0]} times for {v.shape[0]} values")
        if t.size and (not np.isfinite(t).all() or (np.diff(t) < 0).any()):
            raise ValueError(f"StreamSignal {self.name!r}: times must be finite and sorted")
        object.__setattr__(self, "t_s", t)
        object.__setattr__(self, "value", v)
