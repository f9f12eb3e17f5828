"""The whole job for one source: ingest -> frames -> detect -> track -> expressions -> DuckDB."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from .confidence import reading_confidence, sharpness
from .config import media_dir
from .detect import FaceDetector, check_detector, create_detector
from .errors import InputError
from .expression import ExpressionModel, circumplex
from .frames import expected_samples, iter_frames, probe
from .ingest import DownloadProgress, Ingested, ingest, printable
from .onnx import model_threads, providers_used, use_device
from .people import FaceDescriptor, TrackSampler, record_samples, relink
from .registry import default_expression_model, get_spec
from .signals import AttentionCone, FaceMesh
from .store import ObservationSink, Store
from .temporal import EmaSmoother
from .track import FaceTracker
from .types import (
    AnalysisBatch,
    Detections,
    Expressions,
    FaceSignals,
    Frame,
    Observations,
    RunProgress,
    RunRow,
    TrackSamples,
)

if TYPE_CHECKING:
    from .live import LiveCapture

log = logging.getLogger(__name__)


def _tune_malloc() -> None:
    """Return freed frame buffers to the system at once (glibc only; elsewhere nothing happens).

    Video frames are large, short-lived allocations made on several threads. By default glibc
    raises its mmap threshold after the first such buffer is freed and serves later ones from
    per-thread heaps that keep the memory, so peak RSS grows with resolution (4K: about 660 MiB
    instead of 500). A fixed 1 MiB threshold and two arenas keep each frame's memory mapped
    only while it is used.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
            libc.mallopt(-8, 2)  # M_ARENA_MAX
    except OSError:  # pragma: no cover - not glibc
        pass


_tune_malloc()

# (stage, done, total or None): stage is "download" (bytes) or "analyse" (frames)
Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class Settings:
    """How a clip is analysed; recorded with each run.

    sample_fps: analysis rate in frames per second of video; None analyses every frame.
    detect_every_ms: full detection at least this often (video time); between full
    detections the detector only re-locates tracked faces, which is much cheaper.
    smooth_ms: time constant of per-face exponential smoothing of the probabilities (0: raw).
    signals: attention, head pose, eye openness and blendshapes from the face mesh (off: expressions only).
    attention_yaw_deg, attention_pitch_deg: the cone within which a face with open eyes counts as attentive.
    people: link each person's tracks into one person id after the run (ferpipe.people).
    identification: compute and store a face descriptor per track to link people by face; off, people are linked
    by time and place only, no descriptor is stored and the dashboard never shows the run's faces.
    """

    sample_fps: float | None = 5.0
    model: str = field(default_factory=default_expression_model)
    detector: str = "mtcnn"
    detector_model: str | None = None
    detect_every_ms: float = 1000.0
    min_face_size: int | None = None
    lost_buffer_ms: float = 3000.0
    smooth_ms: float = 0.0
    batch_frames: int = 32
    signals: bool = True
    attention_yaw_deg: float = 30.0
    attention_pitch_deg: float = 20.0
    people: bool = True
    identification: bool = True
    device: str = "auto"  # ONNX Runtime's device (ferpipe.onnx.DEVICES); recorded with the run, not part of its key

    def __post_init__(self) -> None:
        from .onnx import DEVICES

        if self.device not in DEVICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
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
        check_detector(self.detector, self.detector_model)
        _ = self.cone  # checks the attention cone

    @property
    def cone(self) -> AttentionCone:
        return AttentionCone(self.attention_yaw_deg, self.attention_pitch_deg)

    def key(self) -> dict:
        """What identifies equivalent runs (batching is not part of it)."""
        d = asdict(self)
        d.pop("batch_frames")
        d.pop("device")  # any device gives the same readings within tolerance (README, "Devices"): runs compare
        if d["detector_model"] is None:
            d.pop("detector_model")  # keys of runs made before the option existed stay equal
        if d["identification"]:
            d.pop("identification")  # likewise
        return d


def _drop_if_empty(path) -> None:
    """Remove a live recording (a pathlib.Path) that never received a byte (a refused or broken source)."""
    with contextlib.suppress(OSError):
        if path.is_file() and path.stat().st_size == 0:
            path.unlink()


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
    error: str | None = None
    people: int = 0
    dropped: int = 0  # live runs: frames left out because the analysis was behind the stream

    @property
    def message(self) -> str:
        """One line for the terminal: people (and the face tracks they came from), observations and frames."""
        who = f"{_count(self.people, 'person', 'people')}" + (
            f" (from {_count(self.faces, 'face track')})" if self.faces != self.people else ""
        )
        if self.status == "truncated":
            return f"{self.title}: truncated media: {self.error}; what decoded is stored ({who})"
        if self.faces == 0:
            return f"{self.title}: no faces found in {_count(self.frames_analyzed, 'analysed frame')}"
        verb = "already processed" if self.reused else "processed"
        dropped = f"; {_count(self.dropped, 'frame')} dropped to keep up with the stream" if self.dropped else ""
        return (
            f"{self.title}: {verb}, {who}, {_count(self.observations, 'observation')} "
            f"over {_count(self.frames_analyzed, 'frame')}{dropped}"
        )


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


@dataclass(frozen=True)
class _Analysed:
    """What a frame leaves for the batch after detection: its place in time, faces and what the face models will
    read from them (not the frame itself, so a batch of 4K frames does not stay in memory)."""

    index: int
    timestamp_ms: float
    detections: Detections
    expressions: Future[Expressions] | None
    signals: Future[FaceSignals] | None
    sharpness: np.ndarray | None = None  # (faces,) Laplacian variance of each aligned crop, for the confidence


@dataclass(frozen=True)
class _Cut:
    """A batch of analysed frames, with the progress and state after them, waiting for its faces to be read."""

    frames: list[_Analysed]
    progress: RunProgress
    state: dict

    def ready(self) -> bool:
        return all(f.done() for p in self.frames for f in (p.expressions, p.signals) if f is not None)


class _FaceModels:
    """Runs the face models on threads of their own, a few frames behind detection and tracking: the expression
    classifier on one, the face mesh (with signals on) on another. ONNX Runtime and LiteRT release the GIL while
    they compute, so detection, classification and the mesh overlap on the cores; each model is still run by one
    thread at a time. Only the faces' small crops wait in the queues, never whole frames: at most ``ahead`` frames and
    ``max_faces`` faces of them (a mesh crop is 196 kB; a crowd in 4K does not fill memory with them)."""

    def __init__(self, model: ExpressionModel, mesh: FaceMesh | None, cone: AttentionCone, ahead: int = 8,
                 max_faces: int = 64) -> None:  # fmt: skip
        self.model, self.mesh, self.cone, self.ahead, self.max_faces = model, mesh, cone, ahead, max_faces
        self.classify = ThreadPoolExecutor(1, thread_name_prefix="ferpipe-expressions")
        self.signals = ThreadPoolExecutor(1, thread_name_prefix="ferpipe-mesh") if mesh is not None else None
        self.waiting: deque[tuple[Future, int]] = deque()  # each frame's last reading, and its number of faces
        self.queued_faces = 0

    def submit(
        self, image: np.ndarray, detections: Detections
    ) -> tuple[Future[Expressions], Future[FaceSignals] | None, np.ndarray]:
        """Cut the faces out of the frame now and read them later; the crops' sharpness is measured now."""
        crops = self.model.crops(image, detections)
        sharp = sharpness(crops)
        faces = self.mesh.cut(image, detections) if self.mesh is not None else None
        n = len(detections)
        while self.waiting and (
            self.waiting[0][0].done() or len(self.waiting) >= self.ahead or self.queued_faces + n > self.max_faces
        ):
            future, done = self.waiting.popleft()
            future.result()  # also raises a failure of a model here, without delay
            self.queued_faces -= done
        expressions = self.classify.submit(self.model.predict_crops, crops, 32)
        signals = self.signals.submit(self.mesh.read, faces, self.cone) if self.signals is not None else None
        self.waiting.append((signals or expressions, n))  # the mesh takes longer
        self.queued_faces += n
        return expressions, signals, sharp

    def close(self) -> None:
        for pool in (self.classify, self.signals):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


def _prefetch_depth(width: int, height: int, budget_bytes: int = 32 << 20) -> int:
    """Frames decoded ahead: up to 8, fewer for large frames (about 32 MiB of frames); 0 (decode in step) when not
    even two fit, as for 4K, where a frame ahead cost 46 MiB of peak memory for 14% of speed."""
    depth = int(min(8, budget_bytes // max(width * height * 3, 1)))
    return depth if depth >= 2 else 0


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
        store: Store | None,
        settings: Settings | None = None,
        detector: FaceDetector | None = None,
        model: ExpressionModel | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or Settings()
        self.spec = get_spec(self.settings.model, task="expression")  # unknown model: fail before any work
        if model is not None:
            self.spec = model.spec  # what the run's numbers come from
        if store is not None:  # None: an analysing worker, which never touches the database
            store.migrate()
        self._detector = detector
        self._model = model
        self._mesh: FaceMesh | None = None
        self._descriptor: FaceDescriptor | None = None
        self.mesh_spec = get_spec("face-landmarker", task="landmarker") if self.settings.signals else None
        self.commit_seconds = 2.0  # a batch is committed at least this often (and every 2,000 rows)

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            s = self.settings
            with use_device(s.device):
                self._detector = create_detector(s.detector, model_path=s.detector_model,
                                                 min_face_size=s.min_face_size, threads=model_threads())  # fmt: skip
        return self._detector

    @property
    def mesh(self) -> FaceMesh | None:
        """The face mesh for attention, pose and blendshapes (None when signals are off)."""
        if self._mesh is None and self.settings.signals:
            self._mesh = FaceMesh.from_registry(threads=model_threads())
        return self._mesh

    @property
    def descriptor(self) -> FaceDescriptor | None:
        """dlib's face descriptor, for linking tracks into people (None when people linking is off)."""
        if self._descriptor is None and self.settings.people and self.settings.identification:
            self._descriptor = FaceDescriptor.from_registry()
        return self._descriptor

    @property
    def model(self) -> ExpressionModel:
        if self._model is None:
            with use_device(self.settings.device):
                self._model = ExpressionModel.from_name(self.settings.model, threads=model_threads())
        return self._model

    def load(self) -> Pipeline:
        """Load every model the settings use now, at once on threads (ONNX Runtime, LiteRT and dlib load without
        holding the GIL), with the tracker's solver; a broken model fails here, before any work."""
        from .track import warm

        with use_device(self.settings.device), ThreadPoolExecutor(4, thread_name_prefix="load") as pool:
            jobs = [pool.submit(getattr, self, name) for name in ("model", "detector", "mesh", "descriptor")]
            jobs.append(pool.submit(warm))
            for job in jobs:
                job.result()
        return self

    def ingest(self, source: str, title: str | None = None, tags: dict[str, str] | None = None,
               progress: Progress | None = None) -> Ingested:  # fmt: skip
        """Bring a source into the library and record its clip row (a given title renames a known clip)."""
        download: DownloadProgress | None = (lambda d, t: progress("download", d, t)) if progress else None
        item = ingest(source, media_dir(self.store.path), title, download)
        info = item.info
        self.store.upsert_clip(
            info.sha256[:12],
            {
                "sha256": info.sha256,
                "path": info.path,
                "source_uri": item.source_uri,
                "title": item.default_title,
                "duration_s": info.duration_s,
                "fps": info.fps,
                "width": info.width,
                "height": info.height,
                "frame_count": info.frame_count,
                "rotation": info.rotation,
            },
            tags or {},
            title=item.title,
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
        self.load()
        with self.store.holding():  # one connection for the run's start
            clip = self.store.clip(clip_id)
            run = self.start(clip, reprocess)
            if run.finished:
                return self._result(clip, run, reused=True)
        total = run.frames_expected

        def on_frame(done: int) -> None:
            if progress:
                progress("analyse", done, total)

        return self.write(clip, run, self.batches(clip, run, on_frame), progress)

    def live(self, source: str, title: str | None = None, tags: dict[str, str] | None = None,
             on_start: Callable[[LiveCapture, dict], None] | None = None,
             on_batch: Callable[[LiveCapture, RunProgress], None] | None = None,
             on_rows: Callable[[int, Observations], None] | None = None) -> RunResult:  # fmt: skip
        """Analyse a live source as it plays (ferpipe.live): batches of about a second, committed at least every
        2 s; ends when the stream ends or the capture is stopped (``on_start`` gets the capture, e.g. to stop it on
        a signal), and leaves a finished clip whose recording is in the media library. ``on_rows`` gets each
        batch's observations as they are handed to the writer (an LSL outlet, ferpipe.labsync)."""
        from .live import LiveCapture, parse_live

        spec = parse_live(source)
        self.load()
        library = media_dir(self.store.path)
        library.mkdir(parents=True, exist_ok=True)
        started = time.time()
        clip_id = hashlib.sha256(f"live\0{source}\0{started}".encode()).hexdigest()
        recording = library / f"live-{clip_id[:12]}{spec.suffix}"
        capture = LiveCapture(spec, recording, self.settings.sample_fps)
        try:
            capture.start()
        except BaseException:
            _drop_if_empty(recording)
            raise
        stats = capture.stats
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(started))
        info = {"sha256": clip_id, "path": str(recording), "source_uri": printable(source),
                "title": f"{printable(spec.name)} (live from {stamp})", "duration_s": 0.0, "fps": stats.fps,
                "width": stats.width, "height": stats.height, "frame_count": 0, "rotation": 0,
                "live_t0": stats.t0_wall}  # fmt: skip
        self.store.upsert_clip(clip_id[:12], info, {**(tags or {}), "live": "yes"}, title=title)
        clip = self.store.clip(clip_id[:12])
        if on_start:
            on_start(capture, clip)
        run = self.start(clip)
        per_batch = max(1, round(self.settings.sample_fps or stats.fps or 5.0))  # about one second of frames
        writer = RunWriter(self, clip, run, commit_seconds=0.9)  # with ~1 s batches: a commit every 1-2 s
        try:
            for item in self.batches(clip, run, frames=capture.frames(), batch_frames=per_batch):
                writer.add(item)
                if on_rows and isinstance(item, AnalysisBatch):
                    on_rows(run.run_id, item.rows)
                if on_batch and isinstance(item, AnalysisBatch):
                    on_batch(capture, item.progress)
        except BaseException as exc:
            captured = capture.close().captured
            writer.fail(exc)
            if not captured:  # a source refused or broken before its first frame: no clip, no empty recording
                self.store.delete_clip(clip["clip_id"], delete_media=True)
                _drop_if_empty(recording)
            raise
        stats = capture.close()
        log.info("live capture ended (%s): %d frames, %d analysed, %d dropped to keep up", stats.ended,
                 stats.captured, stats.sampled - stats.dropped, stats.dropped)  # fmt: skip
        try:
            self.store.set_media(clip["clip_id"], probe(recording, sha256=clip_id))
        except InputError as exc:  # nothing recorded (a stream that ended at once): the run still closes
            log.warning("the recording of %s is not readable: %s", source, exc)
        writer.clip = self.store.clip(clip["clip_id"])
        result = replace(writer.close(), dropped=stats.dropped)
        self.store.set_dropped(run.run_id, stats.dropped)  # the Library says so beside the clip
        return result

    def start(self, clip: dict, reprocess: bool = False) -> RunRow:
        """The run to write a clip's analysis into (see Store.start_run); the models load first, so a broken one
        fails before any run is recorded. The device the models run on is recorded with it."""
        total = expected_samples(clip["duration_s"] or 0.0, int(clip["frame_count"] or 0), self.settings.sample_fps)
        self.load()
        run = self.store.start_run(clip["clip_id"], self.settings.model, self.detector.name, self.run_key(), total,
                                   reprocess)  # fmt: skip
        if not run.finished:
            self.store.set_device(run.run_id, self.device_words())
        return run

    def device_words(self) -> str:
        """Where this pipeline's models run: the device asked for, each ONNX Runtime provider in use, the mesh."""
        used = sorted({p.removesuffix("ExecutionProvider") for p in providers_used.values()})
        mesh = "; face mesh: LiteRT on the CPU (XNNPACK)" if self.settings.signals else ""
        return f"{self.settings.device}: ONNX Runtime on {', '.join(used) or 'CPU'}{mesh}"

    def run_key(self) -> dict:
        """What identifies equivalent runs: the settings and the fingerprints of the models they use."""
        key = {**self.settings.key(), "model_fingerprint": self.spec.fingerprint}
        if self.mesh_spec is not None:
            key["mesh_fingerprint"] = self.mesh_spec.fingerprint
        return key

    def write(self, clip: dict, run: RunRow, batches: Iterator[AnalysisBatch | TrackSamples],
              progress: Progress | None = None) -> RunResult:  # fmt: skip
        """The single writer: commit a clip's batches into its run (about every 2 s), link its people and close
        the run as done or truncated. The batches may come from this process or from a worker."""
        writer = RunWriter(self, clip, run)
        try:
            for item in batches:
                writer.add(item)
        except BaseException as exc:
            writer.fail(exc)
            raise
        return writer.close(progress)

    def finish(self, clip: dict, run: RunRow, final: RunProgress, progress: Progress | None = None) -> RunResult:
        """Close a run whose batches are all committed: link its people, then mark it done or truncated."""
        resumed = run.frames_done > 0
        if self.settings.people:
            people = relink(self.store, run.run_id, clip["clip_id"])
            log.info("linked %d tracks into %d people", len(people), len(set(people.values())))
        status, note, decoded_s = self._completeness(clip, final, run.last_timestamp_ms if resumed else None)
        closed = self.store.finish_run(run.run_id, status, error=note, seconds=final.seconds, decoded_s=decoded_s)
        if progress:
            progress("analyse", final.frames_done, final.frames_done)
        return self._result(self.store.clip(clip["clip_id"]), closed, resumed=resumed)

    def batches(self, clip: dict, run: RunRow, on_frame: Callable[[int], None] | None = None,
                frames: Iterator[Frame] | None = None, batch_frames: int | None = None
                ) -> Iterator[AnalysisBatch | TrackSamples]:  # fmt: skip
        """Analyse a clip (from where its run stopped) into observation batches, then its track samples: detection,
        tracking, expressions, face mesh signals and people sampling, touching no database. ``frames``: a live
        source's frames instead of the clip's file; ``batch_frames``: frames per batch (default: the settings')."""
        per_batch = batch_frames or self.settings.batch_frames
        resumed = run.frames_done > 0
        tracker = FaceTracker(lost_buffer_ms=self.settings.lost_buffer_ms)
        smoother = EmaSmoother(self.settings.smooth_ms)
        sampler = TrackSampler()
        last_full = -math.inf
        if resumed and run.tracker_state:
            saved = run.tracker_state
            tracker.load_state(saved)
            smoother.load_state(saved.get("smoother", {}))
            sampler.load_state(saved.get("people", {}))
            full = saved.get("last_full_ms")  # the detection schedule resumes where it was
            last_full = float(full) if full is not None else -math.inf
            log.info("resuming run %d after frame %d", run.run_id, run.last_frame_index)
        t0 = time.perf_counter() - run.seconds
        progress_now = run.progress
        pending: list[_Analysed] = []
        cut: deque[_Cut] = deque()  # batches whose faces are still being read
        after = run.last_timestamp_ms if resumed else None
        live = frames is not None
        if frames is None:
            frames = iter_frames(clip["path"], self.settings.sample_fps, after_ms=after)
            depth = _prefetch_depth(int(clip["width"] or 0), int(clip["height"] or 0))
            frames = _prefetch(frames, depth) if depth else frames
        models = _FaceModels(self.model, self.mesh, self.settings.cone)
        try:
            for frame in frames:
                dets = self._detect(frame, tracker, last_full)
                if dets is not None:
                    last_full = frame.timestamp_ms
                else:
                    dets = self._refine(frame, tracker)
                expressions, signals, sharp = models.submit(frame.image, dets) if len(dets) else (None, None, None)
                sampler.update(frame.image, dets, frame.timestamp_ms, self.descriptor)
                pending.append(_Analysed(frame.index, frame.timestamp_ms, dets, expressions, signals, sharp))
                progress_now = RunProgress(progress_now.frames_done + 1, frame.index, frame.timestamp_ms, 0.0)
                if len(pending) >= per_batch:
                    cut.append(_Cut(pending, progress_now, self._state(tracker, sampler, last_full)))
                    pending = []
                # a file's batches are yielded once their faces are read, without waiting for them (throughput); a
                # live source's at once, waiting for the last frames' faces (latency: the next frame is 0.2 s away)
                while cut and (live or cut[0].ready()):
                    yield self._batch(cut.popleft(), smoother, t0)
                if on_frame:
                    on_frame(progress_now.frames_done)
                frame = None  # not held while the next frame decodes (a 4K frame is 25 MB)
            cut.append(_Cut(pending, progress_now, self._state(tracker, sampler, last_full)))
            while cut:
                yield self._batch(cut.popleft(), smoother, t0)
        finally:
            models.close()
        samples = record_samples(sampler, self.descriptor) if self.settings.people else {}
        yield TrackSamples(samples, replace(progress_now, seconds=time.perf_counter() - t0))

    @staticmethod
    def _completeness(
        clip: dict, progress: RunProgress, after_ms: float | None
    ) -> tuple[str, str | None, float | None]:
        """("done", None, None), or ("truncated", what decoded, seconds decoded) when decoding stopped well
        before the end the container claims (a cut-off download or copy)."""
        duration = float(clip["duration_s"] or 0.0)
        fps = float(clip["fps"] or 0.0)
        if duration <= 0 or fps <= 0 or int(clip["frame_count"] or 0) <= 1:
            return "done", None, None  # a still image, or no duration to compare with
        end_s = (progress.last_timestamp_ms + 1000.0 / fps) / 1000.0 if progress.frames_done else 0.0
        if end_s >= duration - max(1.0, 0.05 * duration):
            return "done", None, None
        return "truncated", f"decoded {end_s:.1f} s of the {duration:.1f} s the file claims", round(end_s, 3)

    def _detect(self, frame: Frame, tracker: FaceTracker, last_full: float) -> Detections | None:
        """Full detection when one is due, else None."""
        if frame.timestamp_ms - last_full < self.settings.detect_every_ms:
            return None
        return tracker.update(self.detector.detect(frame.image), frame.timestamp_ms)

    def _refine(self, frame: Frame, tracker: FaceTracker) -> Detections:
        _, boxes = tracker.predicted(frame.timestamp_ms)
        dets = self.detector.refine(frame.image, boxes) if len(boxes) else Detections.empty()
        return tracker.update(dets, frame.timestamp_ms)

    @staticmethod
    def _state(tracker: FaceTracker, sampler: TrackSampler, last_full: float) -> dict:
        """What a run resumes from after the frames so far (the smoother's state is added as a batch is read)."""
        return dict(tracker.state_dict(), people=sampler.state_dict(),
                    last_full_ms=last_full if math.isfinite(last_full) else None)  # fmt: skip

    def _batch(self, cut: _Cut, smoother: EmaSmoother, t0: float) -> AnalysisBatch:
        """A batch of frames' observations, once its faces are read (in order: the smoother runs through them);
        the rows come with the state to resume from."""
        pending = cut.frames
        faces = [p for p in pending if p.expressions is not None]
        dets = Detections.concat([p.detections for p in pending])
        expr = Expressions.concat([p.expressions.result() for p in faces]) if faces else None
        signals = (
            FaceSignals.concat([p.signals.result() for p in faces if p.signals is not None]) if self.mesh else None
        )
        confidence = None
        if expr is not None:  # from the raw readings, before smoothing
            confidence = reading_confidence(
                expr.probs,
                dets.boxes[:, 3] - dets.boxes[:, 1],
                np.concatenate([p.sharpness for p in faces]),
                signals.pose if signals is not None else None,
                signals.mesh_score if signals is not None else None,
            )
        frame_idx = np.concatenate([np.full(len(p.detections), p.index) for p in pending]) if pending else np.zeros(0)
        ts = np.concatenate([np.full(len(p.detections), p.timestamp_ms) for p in pending]) if pending else np.zeros(0)
        if expr is not None and smoother.tau_ms > 0:
            probs = smoother(dets.track_ids, ts, expr.probs)
            expr = Expressions(probs, *circumplex(probs))
        rows = (
            Observations(frame_idx, ts, dets, expr, signals, confidence) if expr is not None else Observations.empty()
        )
        state = dict(cut.state, smoother=smoother.state_dict())
        return AnalysisBatch(rows, replace(cut.progress, seconds=time.perf_counter() - t0, tracker_state=state))

    def _result(self, clip: dict, run: RunRow, resumed: bool = False, reused: bool = False) -> RunResult:
        return RunResult(
            clip_id=clip["clip_id"], run_id=run.run_id, title=clip["title"], status=run.status,
            frames_analyzed=run.frames_done, faces=run.faces, observations=run.observations,
            seconds=round(run.seconds, 3), resumed=resumed, reused=reused, error=run.error,
            people=self.store.people(run.run_id).height,
        )  # fmt: skip


class RunWriter:
    """Commits one clip's batches into its run as they come (from this process, a worker process or a Ray actor),
    then closes the run. On failure the rows since the last commit are dropped and the run is marked."""

    def __init__(self, pipeline: Pipeline, clip: dict, run: RunRow, commit_seconds: float | None = None) -> None:
        self.pipeline, self.clip, self.run = pipeline, clip, run
        self.sink = ObservationSink(pipeline.store, run.run_id, batch_seconds=commit_seconds or pipeline.commit_seconds)
        self.final = run.progress
        self.samples: TrackSamples | None = None

    def add(self, item: AnalysisBatch | TrackSamples) -> None:
        if isinstance(item, AnalysisBatch):
            self.sink.append(item.rows, item.progress)
        else:  # the last item: stored with the run's end
            self.samples = item
        self.final = item.progress

    def close(self, progress: Progress | None = None) -> RunResult:
        with self.pipeline.store.holding():  # one connection for the run's end: last rows, track samples, people
            self.sink.__exit__(None, None, None)
            if self.samples is not None and self.pipeline.settings.people:
                self.pipeline.store.set_track_samples(self.run.run_id, self.samples.samples)
            return self.pipeline.finish(self.clip, self.run, self.final, progress)

    def fail(self, exc: BaseException) -> None:
        self.sink.__exit__(type(exc), exc, None)
