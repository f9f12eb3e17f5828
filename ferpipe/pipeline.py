"""The whole job for one source: ingest -> frames -> detect -> track -> expressions -> DuckDB."""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np
import polars as pl

from .config import media_dir
from .detect import FaceDetector, create_detector
from .expression import ExpressionModel, circumplex
from .frames import expected_samples, iter_frames
from .ingest import DownloadProgress, Ingested, ingest
from .registry import default_expression_model, get_spec
from .store import OBS_COLUMNS, ObservationSink, Store
from .temporal import EmaSmoother
from .track import FaceTracker
from .types import EXPRESSIONS, Detections, Expressions, Frame

log = logging.getLogger(__name__)

# (stage, done, total or None): stage is "download" (bytes) or "analyse" (frames)
Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class Settings:
    """How a clip is analysed; recorded with each run.

    sample_fps: analysis rate in frames per second of video; None analyses every frame.
    detect_every_ms: full detection at least this often (video time); between full
    detections the detector only re-locates tracked faces, which is much cheaper.
    smooth_ms: time constant of per-face exponential smoothing of the probabilities (0: raw).
    """

    sample_fps: float | None = 5.0
    model: str = field(default_factory=default_expression_model)
    detector: str = "mtcnn"
    detect_every_ms: float = 1000.0
    min_face_size: int | None = None
    lost_buffer_ms: float = 3000.0
    smooth_ms: float = 0.0
    batch_frames: int = 32

    def __post_init__(self) -> None:
        if self.sample_fps is not None and not 0 < self.sample_fps <= 240:
            raise ValueError(f"sample_fps must be in (0, 240], got {self.sample_fps}")
        if self.detect_every_ms < 0:
            raise ValueError(f"detect_every_ms must be >= 0, got {self.detect_every_ms}")
        if self.batch_frames < 1:
            raise ValueError(f"batch_frames must be >= 1, got {self.batch_frames}")
        if self.min_face_size is not None and self.min_face_size < 12:
            raise ValueError(f"min_face_size must be >= 12, got {self.min_face_size}")
        if self.smooth_ms < 0:
            raise ValueError(f"smooth_ms must be >= 0, got {self.smooth_ms}")

    def key(self) -> dict:
        """What identifies equivalent runs (batching is not part of it)."""
        d = asdict(self)
        d.pop("batch_frames")
        return d


@dataclass(frozen=True)
class RunResult:
    """What one processed source produced."""

    clip_id: str
    run_id: int
    title: str
    status: str
    frames_analyzed: int
    faces: int
    observations: int
    seconds: float
    resumed: bool = False
    reused: bool = False

    @property
    def message(self) -> str:
        if self.faces == 0:
            return f"{self.title}: no faces found in {self.frames_analyzed} analysed frames"
        verb = "already processed" if self.reused else "processed"
        return (
            f"{self.title}: {verb}, {self.faces} faces, {self.observations} observations "
            f"over {self.frames_analyzed} frames"
        )


def _prefetch(frames: Iterator[Frame], depth: int = 8) -> Iterator[Frame]:
    """Decode in a background thread (OpenCV releases the GIL) while the models run."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def worker() -> None:
        try:
            for f in frames:
                if stop.is_set():
                    break
                q.put(f)
        except BaseException as exc:  # re-raised in the consumer
            q.put(exc)
        q.put(done)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)


class Pipeline:
    """Processes sources into a Store with one detector and one expression model."""

    def __init__(
        self,
        store: Store,
        settings: Settings | None = None,
        detector: FaceDetector | None = None,
        model: ExpressionModel | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or Settings()
        self.spec = get_spec(self.settings.model, task="expression")  # unknown model: fail before any work
        if model is not None:
            self.spec = model.spec  # what the run's numbers come from
        self.store.migrate()
        self._detector = detector
        self._model = model

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = create_detector(self.settings.detector, min_face_size=self.settings.min_face_size)
        return self._detector

    @property
    def model(self) -> ExpressionModel:
        if self._model is None:
            self._model = ExpressionModel.from_name(self.settings.model)
        return self._model

    def ingest(self, source: str, title: str | None = None, tags: dict[str, str] | None = None,
               progress: Progress | None = None) -> Ingested:  # fmt: skip
        """Bring a source into the library and record its clip row."""
        download: DownloadProgress | None = (lambda d, t: progress("download", d, t)) if progress else None
        item = ingest(source, media_dir(self.store.path), title, download)
        info = item.info
        self.store.upsert_clip(
            info.sha256[:12],
            {
                "sha256": info.sha256, "path": info.path, "source_uri": item.source_uri, "title": item.title,
                "duration_s": info.duration_s, "fps": info.fps, "width": info.width, "height": info.height,
                "frame_count": info.frame_count, "rotation": info.rotation,
            },  # fmt: skip
            tags or {},
        )
        return item

    def process(
        self,
        source: str,
        title: str | None = None,
        tags: dict[str, str] | None = None,
        progress: Progress | None = None,
        reprocess: bool = False,
    ) -> RunResult:
        """Ingest and analyse one source; an unfinished equivalent run is resumed, a finished one reused."""
        item = self.ingest(source, title, tags, progress)
        return self.analyse(item.sha256[:12], progress=progress, reprocess=reprocess)

    def analyse(self, clip_id: str, progress: Progress | None = None, reprocess: bool = False) -> RunResult:
        """Analyse a clip already in the library (resume, reuse or start a run, see Store.start_run)."""
        clip = self.store.clip(clip_id)
        total = expected_samples(clip["duration_s"] or 0.0, int(clip["frame_count"] or 0), self.settings.sample_fps)
        key = {**self.settings.key(), "model_fingerprint": self.spec.fingerprint}
        run = self.store.start_run(clip_id, self.settings.model, self.detector.name, key, total, reprocess)
        if run["status"] == "done":
            return self._result(clip, run, reused=True)
        run_id = int(run["run_id"])
        resumed = run["frames_done"] > 0
        tracker = FaceTracker(lost_buffer_ms=self.settings.lost_buffer_ms)
        smoother = EmaSmoother(self.settings.smooth_ms)
        if resumed and run["tracker_state"]:
            saved = json.loads(run["tracker_state"])
            tracker.load_state(saved)
            smoother.load_state(saved.get("smoother", {}))
            log.info("resuming run %d of %s after frame %d", run_id, clip_id, run["last_frame_index"])
        t0 = time.perf_counter() - (run["seconds"] or 0.0)
        state = {"frames_done": int(run["frames_done"]), "last_frame_index": int(run["last_frame_index"]),
                 "last_timestamp_ms": float(run["last_timestamp_ms"])}  # fmt: skip
        pending: list[tuple[Frame, Detections, np.ndarray]] = []
        last_full = -math.inf
        after = state["last_timestamp_ms"] if resumed else None

        with ObservationSink(self.store, run_id) as sink:
            for frame in _prefetch(iter_frames(clip["path"], self.settings.sample_fps, after_ms=after)):
                dets = self._detect(frame, tracker, last_full)
                if dets is not None:
                    last_full = frame.timestamp_ms
                else:
                    dets = self._refine(frame, tracker)
                crops = self.model.crops(frame.image, dets) if len(dets) else None
                pending.append((frame, dets, crops))
                state.update(frames_done=state["frames_done"] + 1, last_frame_index=frame.index,
                             last_timestamp_ms=frame.timestamp_ms)  # fmt: skip
                if len(pending) >= self.settings.batch_frames:
                    self._emit(sink, run_id, pending, state, tracker, smoother, t0)
                    pending = []
                if progress:
                    progress("analyse", state["frames_done"], total)
            self._emit(sink, run_id, pending, state, tracker, smoother, t0)
        final = self.store.finish_run(run_id, "done", seconds=time.perf_counter() - t0)
        if progress:
            progress("analyse", state["frames_done"], state["frames_done"])
        return self._result(clip, final, resumed=resumed)

    def _detect(self, frame: Frame, tracker: FaceTracker, last_full: float) -> Detections | None:
        """Full detection when one is due, else None."""
        if frame.timestamp_ms - last_full < self.settings.detect_every_ms:
            return None
        return tracker.update(self.detector.detect(frame.image), frame.timestamp_ms)

    def _refine(self, frame: Frame, tracker: FaceTracker) -> Detections:
        _, boxes = tracker.predicted(frame.timestamp_ms)
        dets = self.detector.refine(frame.image, boxes) if len(boxes) else Detections.empty()
        return tracker.update(dets, frame.timestamp_ms)

    def _emit(self, sink: ObservationSink, run_id: int, pending: list, state: dict, tracker: FaceTracker,
              smoother: EmaSmoother, t0: float) -> None:  # fmt: skip
        crops = [c for _, d, c in pending if c is not None]
        dets = Detections.concat([d for _, d, _ in pending])
        expr = self.model.predict_crops(np.concatenate(crops)) if crops else None
        frame_idx = np.concatenate([np.full(len(d), f.index) for f, d, _ in pending]) if pending else np.zeros(0)
        ts = np.concatenate([np.full(len(d), f.timestamp_ms) for f, d, _ in pending]) if pending else np.zeros(0)
        if expr is not None and smoother.tau_ms > 0:
            probs = smoother(dets.track_ids, ts, expr.probs)
            expr = Expressions(probs, *circumplex(probs))
        rows = observation_frame(run_id, frame_idx, ts, dets, expr)
        tracker_state = dict(tracker.state_dict(), smoother=smoother.state_dict())
        progress = dict(state, seconds=time.perf_counter() - t0, tracker_state=tracker_state)
        sink.append(rows, progress)

    @staticmethod
    def _result(clip: dict, run: dict, resumed: bool = False, reused: bool = False) -> RunResult:
        return RunResult(
            clip_id=clip["clip_id"], run_id=int(run["run_id"]), title=clip["title"], status=run["status"],
            frames_analyzed=int(run["frames_done"]), faces=int(run["faces"]),
            observations=int(run["observations"]), seconds=round(float(run["seconds"]), 3),
            resumed=resumed, reused=reused,
        )  # fmt: skip


def observation_frame(run_id: int, frame_index: np.ndarray, timestamp_ms: np.ndarray, dets: Detections, expr) -> pl.DataFrame:  # noqa: ANN001
    """Rows of the observations table for aligned detections and expressions."""
    n = len(dets)
    if n == 0:
        return pl.DataFrame(schema={c: pl.Float64 for c in OBS_COLUMNS})
    b = dets.boxes
    data = {
        "run_id": np.full(n, run_id, dtype=np.int64),
        "face_id": dets.track_ids,
        "frame_index": frame_index.astype(np.int64),
        "timestamp_ms": timestamp_ms.astype(np.float64),
        "x": b[:, 0], "y": b[:, 1], "w": b[:, 2] - b[:, 0], "h": b[:, 3] - b[:, 1],
        "det_score": dets.scores,
    }  # fmt: skip
    for k, e in enumerate(EXPRESSIONS):
        data[e] = expr.probs[:, k]
    data["valence"] = expr.valence
    data["arousal"] = expr.arousal
    return pl.DataFrame(data)

