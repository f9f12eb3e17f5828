"""Studies at scale: many sources from a manifest, analysed by worker processes on this machine or by actors on a
Ray cluster, written into the one DuckDB file by this process alone.

The driver (this process) ingests every source into the media library, links stimuli and names respondents, starts
or resumes each clip's run, and is the single writer: workers only analyse (``Pipeline.batches``) and hand their
batches back, so the database keeps its guarantees (a kill -9 leaves the last committed batch; a re-run skips
finished clips and resumes interrupted ones, without duplicate rows).

- ``workers=N``: N processes on this machine; batches stream back through a queue while a clip is analysed.
- ``ray="local"`` or an address: one actor per worker slot (``concurrency``), each loading its models once; a clip's
  media goes to the actor through Ray's object store (so nodes need no shared disk), and its batches come back when
  the clip is done. A clip whose actor dies is retried on another.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import die_with_parent
from .errors import FerpipeError, InputError
from .ingest import expand_sources, is_url, printable
from .pipeline import Pipeline, Progress, RunResult, RunWriter, Settings
from .present import plain_text
from .types import AnalysisBatch, RunRow

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("source", "title", "respondent", "stimulus", "offset_s")
USER_ERRORS = (FerpipeError, ValueError, OSError)

# (finished sources, all sources, source now, its frames done, its frames expected)
StudyProgress = Callable[[int, int, str, int, int], None]


@dataclass(frozen=True)
class StudyItem:
    """One row of a study: a source with its title, respondent, stimulus (title, clip id or path) and offset, and
    tags from every other manifest column."""

    source: str
    title: str | None = None
    respondent: str | None = None
    stimulus: str | None = None
    offset_s: float = 0.0
    tags: dict = field(default_factory=dict)
    row: int = 0


@dataclass(frozen=True)
class StudyResult:
    """What became of one source: the RunResult fields, or an error."""

    source: str
    row: int
    result: RunResult | None = None
    error: str | None = None

    def to_json(self) -> dict:
        if self.result is None:
            return {"source": self.source, "row": self.row, "error": self.error}
        return {"source": self.source, "row": self.row, **asdict(self.result)}


def read_manifest(path: str | os.PathLike) -> tuple[list[StudyItem], list[StudyResult]]:
    """Rows of a study manifest (CSV): ``source`` required; optional title, respondent, stimulus, offset_s; any other
    column is a tag named by its header. Paths are relative to the manifest. Returns the good rows and one error per
    bad row (the rest go on)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{printable(str(p))}: no such manifest")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p.name}: not a readable CSV manifest ({exc})") from None
    return parse_manifest(text, p.parent, p.name)


def parse_manifest(
    text: str, base: Path | None = None, name: str = "manifest"
) -> tuple[list[StudyItem], list[StudyResult]]:
    """``read_manifest`` on CSV text. ``base`` resolves relative paths; without it sources stay as written (the
    dashboard matches them to uploaded file names)."""
    try:
        rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    except csv.Error as exc:
        raise InputError(f"{name}: not a readable CSV manifest ({exc})") from None
    if not rows or "source" not in rows[0]:
        raise InputError(f"{name}: a manifest needs a 'source' column (and one row per source)")
    items, bad = [], []
    for n, row in enumerate(rows, start=1):  # row 1 is the first row under the header
        row = {
            plain_text(k or "").strip(): plain_text(v or "").strip()
            for k, v in row.items()
            if k and isinstance(v, str | None)
        }  # fmt: skip  (no control characters, as uploads)
        source = row.get("source", "")
        try:
            if not source:
                raise ValueError("empty source")
            offset = float(row["offset_s"]) if row.get("offset_s") else 0.0
            if not math.isfinite(offset):
                raise ValueError(f"offset_s must be a finite number of seconds, got {row['offset_s']!r}")
            tags = {k: v for k, v in row.items() if k not in MANIFEST_COLUMNS and v}
            if row.get("respondent"):
                tags["respondent"] = row["respondent"]
            stimulus = row.get("stimulus") or None
            if base is not None:
                if not is_url(source) and not Path(source).is_absolute():
                    source = str(base / source)
                if stimulus and not is_url(stimulus) and (base / stimulus).exists():
                    stimulus = str(base / stimulus)
            items.append(StudyItem(source, row.get("title") or None, row.get("respondent") or None, stimulus, offset,
                                   tags, n))  # fmt: skip
        except ValueError as exc:
            bad.append(StudyResult(source or "?", n, error=f"row {n}: {exc}"))
    return items, bad


def items_from_sources(sources: list[str], title: str | None, tags: dict) -> list[StudyItem]:
    """Plain sources (files, folders, URLs) as study rows."""
    return [StudyItem(s, title, None, None, 0.0, dict(tags), k + 1) for k, s in enumerate(expand_sources(sources))]


@dataclass
class _Task:
    item: StudyItem
    clip: dict
    run: RunRow


def _prepare(pipeline: Pipeline, item: StudyItem, reprocess: bool, download: Progress | None = None
             ) -> tuple[_Task | None, StudyResult | None]:  # fmt: skip
    """Ingest one source (and its stimulus), record its clip, start or reuse its run."""
    try:
        ingested = pipeline.ingest(item.source, item.title, item.tags, download)
        clip_id = ingested.sha256[:12]
        link_stimulus(pipeline, clip_id, item)
        clip = pipeline.store.clip(clip_id)
        run = pipeline.start(clip, reprocess)
    except USER_ERRORS as exc:
        return None, StudyResult(item.source, item.row, error=str(exc).strip().splitlines()[0])
    if run.finished:
        return None, StudyResult(item.source, item.row, pipeline._result(clip, run, reused=True))
    return _Task(item, clip, run), None


def link_stimulus(pipeline: Pipeline, clip_id: str, item: StudyItem) -> None:
    """Link a clip to the stimulus its row names (with its offset), if any."""
    if item.stimulus:
        pipeline.store.set_stimulus(clip_id, _stimulus_clip(pipeline, item.stimulus), item.offset_s)


def _stimulus_clip(pipeline: Pipeline, ref: str) -> str:
    """A stimulus given as a clip id (or unique prefix), a clip title, or a file/URL (ingested, not analysed)."""
    store = pipeline.store
    try:
        return store.resolve_clip(ref)
    except ValueError:
        pass
    titled = store.clips().filter(store.clips()["title"] == ref)
    if titled.height == 1:
        return titled["clip_id"][0]
    if titled.height > 1:
        raise ValueError(f"stimulus title {ref!r} names {titled.height} clips; give its clip id")
    return pipeline.ingest(ref).sha256[:12]  # a file or URL: into the library as a clip of its own


def name_respondent(pipeline: Pipeline, respondent: str | None, result: RunResult) -> None:
    """A webcam recording of one respondent: their id names the person seen most."""
    if not respondent or not result.faces:
        return
    from .people import relink

    store = pipeline.store
    people = store.people(result.run_id)
    if not people.height:
        return
    person = int(people["person_id"][0])
    if people["person"][0] != respondent:
        store.add_edit(result.clip_id, "name", store.anchor(result.run_id, person), label=respondent)
        relink(store, result.run_id, result.clip_id)


def run_study(pipeline: Pipeline, items: list[StudyItem], workers: int = 1, ray: str | None = None,
              reprocess: bool = False, progress: StudyProgress | None = None,
              on_result: Callable[[StudyResult], None] | None = None, download: Progress | None = None
              ) -> list[StudyResult]:  # fmt: skip
    """Process every item; returns one StudyResult per item, in the manifest's order. ``ray`` is "local" or a
    cluster address; else ``workers`` processes on this machine (1: this process alone). Every source is
    ingested first (``download`` reports URL downloads), then analysed."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if ray is not None and not ray.strip():
        raise ValueError("ray address is empty: give 'local' or a cluster address such as 10.0.0.5:6379")
    results: dict[int, StudyResult] = {}

    def done(r: StudyResult) -> None:
        results[r.row] = r
        if on_result:
            on_result(r)

    def report(source: str, frames: int, expected: int) -> None:
        if progress:
            progress(len(results), len(items), source, frames, expected)

    pipeline.load()  # a broken model stops the study here, not once per source
    tasks: list[_Task] = []
    try:
        for item in items:
            report(_label(item.source), 0, 0)
            task, early = _prepare(pipeline, item, reprocess, download)
            if early is not None:
                done(early)
            else:
                tasks.append(task)
        if ray is not None:
            runner = _ray_run
        elif workers > 1 and len(tasks) > 1:
            runner = _workers_run
        else:
            runner = _sequential_run
        for task, result, error in runner(pipeline, tasks, workers, ray, report):
            if result is not None:
                name_respondent(pipeline, task.item.respondent, result)
            done(StudyResult(task.item.source, task.item.row, result, error))
    except BaseException as exc:  # Ctrl-C or a crash: runs not begun yet are left resumable, not "running"
        for task in tasks:
            if task.item.row not in results:
                with contextlib.suppress(Exception):  # the original error matters more
                    pipeline.store.finish_run(task.run.run_id, "interrupted", _first_line(exc) or type(exc).__name__)
        raise
    return [results[k] for k in sorted(results)]


def _label(source: str) -> str:
    return printable(Path(source).name if not is_url(source) else source)[:40]


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


Runner = Iterator[tuple[_Task, RunResult | None, str | None]]


def _sequential_run(pipeline: Pipeline, tasks: list[_Task], workers: int, ray: str | None, report) -> Runner:
    for task in tasks:
        label = _label(task.item.source)
        try:
            result = pipeline.write(task.clip, task.run, pipeline.batches(
                task.clip, task.run, lambda f, t=task, s=label: report(s, f, t.run.frames_expected)))  # fmt: skip
        except USER_ERRORS as exc:
            yield task, None, _first_line(exc)
            continue
        yield task, result, None


# ---- worker processes --------------------------------------------------------------------------------


def _worker_main(settings: dict, threads: int, inbox, outbox, parent_pid: int) -> None:
    """A worker process: load the models once, then analyse clips from the inbox into batches for the outbox. It
    ends when its driver dies (config.die_with_parent), so a killed study leaves no process behind."""
    die_with_parent(parent_pid)
    os.environ["FERPIPE_THREADS"] = str(threads)
    pipeline = Pipeline(None, Settings(**settings)).load()  # the models load once, before any clip
    while True:
        job = inbox.get()
        if job is None:
            return
        key, clip, run = job
        try:
            for item in pipeline.batches(clip, run):
                outbox.put((key, item))
            outbox.put((key, "done"))
        except Exception as exc:  # reported to the writer, which marks the run failed
            outbox.put((key, ("error", _first_line(exc) or type(exc).__name__)))


def _workers_run(pipeline: Pipeline, tasks: list[_Task], workers: int, ray: str | None, report) -> Runner:
    """N analysing processes (ONNX Runtime threads split between them), this one writing: batches stream back
    through a queue and are committed while the clips are analysed."""
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")
    inbox, outbox = ctx.Queue(), ctx.Queue(maxsize=64)
    n = min(workers, len(tasks))
    threads = max(1, (os.cpu_count() or 1) // n)
    procs = [ctx.Process(target=_worker_main, args=(asdict(pipeline.settings), threads, inbox, outbox, os.getpid()),
                         daemon=True) for _ in range(n)]  # fmt: skip
    for proc in procs:
        proc.start()
    for key, task in enumerate(tasks):
        inbox.put((key, task.clip, task.run))
    for _ in procs:
        inbox.put(None)
    writers = {key: RunWriter(pipeline, t.clip, t.run) for key, t in enumerate(tasks)}
    pending = set(writers)
    try:
        while pending:
            try:
                key, item = outbox.get(timeout=2)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    for key in sorted(pending):
                        writers[key].fail(RuntimeError("worker process died"))
                        pending.discard(key)
                        yield tasks[key], None, "the worker process analysing it died (run it again to resume)"
                continue
            task = tasks[key]
            if isinstance(item, str):  # "done"
                pending.discard(key)
                yield task, writers[key].close(), None
            elif isinstance(item, tuple):  # ("error", message)
                pending.discard(key)
                writers[key].fail(RuntimeError(item[1]))
                yield task, None, item[1]
            else:
                writers[key].add(item)
                if isinstance(item, AnalysisBatch):
                    report(_label(task.item.source), item.progress.frames_done, task.run.frames_expected)
    except BaseException as exc:
        for key in pending:
            writers[key].fail(exc)
        raise
    finally:
        for proc in procs:
            proc.join(timeout=2)
            if proc.is_alive():
                proc.kill()


# ---- Ray -------------------------------------------------------------------------------------------------

RAY_RETRIES = 2  # a clip whose actor dies is resumed on a (restarted) actor this many times
RAY_BACKOFF_S = (0.5, 8.0)  # a lost actor is pinged after 0.5 s, then 1, 2, 4, 8, 8... s until it answers
RAY_RECOVERY_S = 300.0  # the longest wait for a lost actor to come back before going on without it


def _ray():
    try:
        import ray
    except ImportError:  # pragma: no cover - the optional extra
        raise FerpipeError("--ray needs the ray extra: pip install 'ferpipe[ray]'") from None
    return ray


def _analyser_class(ray):
    @ray.remote(num_cpus=1, max_restarts=-1)
    class Analyser:
        """Loads the models once; analyses a clip into a stream of batches (a Ray generator), reading the media
        from its path when this node sees it (a shared path) and else from the object store."""

        def __init__(self, settings: dict, threads: int) -> None:
            os.environ["FERPIPE_THREADS"] = str(threads)
            self.pipeline = Pipeline(None, Settings(**settings)).load()

        def pid(self) -> int:
            return os.getpid()

        @ray.method(_generator_backpressure_num_objects=2)  # at most 2 batches wait for the writer: bounded memory
        def analyse(self, clip: dict, run: RunRow, size: int, media: list):
            import tempfile

            path = Path(clip["path"])
            tmp = None
            if not (path.is_file() and path.stat().st_size == size):
                tmp = tempfile.NamedTemporaryFile(suffix=path.suffix)  # noqa: SIM115 - closed below
                tmp.write(ray.get(media[0]))
                tmp.flush()
                path = Path(tmp.name)
            try:
                yield from self.pipeline.batches({**clip, "path": str(path)}, run)
            finally:
                if tmp is not None:
                    tmp.close()

    return Analyser


def _ray_run(pipeline: Pipeline, tasks: list[_Task], workers: int, address: str, report) -> Runner:
    """Clips analysed by Ray actors (one per CPU slot, models loaded once each), streamed back batch by batch to
    this process, which writes them. A clip whose actor dies is resumed from its last commit."""
    from collections import deque

    ray = _ray()
    from ray.exceptions import ActorUnavailableError, ObjectLostError, RayActorError, WorkerCrashedError

    lost = (RayActorError, WorkerCrashedError, ObjectLostError)
    started_here = not ray.is_initialized()
    if started_here:
        local = address == "local"
        ray.init(address=address, num_cpus=workers if local else None, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)  # fmt: skip
    slots = max(1, min(int(ray.cluster_resources().get("CPU", workers)), len(tasks)))
    if address == "local":
        slots = min(slots, workers)
    threads = max(1, (os.cpu_count() or 1) // slots) if address == "local" else 1
    analyser = _analyser_class(ray)
    actors = [analyser.remote(asdict(pipeline.settings), threads) for _ in range(slots)]
    idle = list(actors)
    waiting = deque((key, 0) for key in range(len(tasks)))
    running: dict = {}  # generator -> (key, actor, writer, attempt)
    # actors that lost their worker: checked with a ping after a growing delay until Ray has restarted them (a clip
    # is only given to a live actor, so no retry is spent while Ray is still restarting one)
    recovering: dict = {}  # actor -> [ping ref, next check (monotonic), delay, since]

    def lose(actor) -> None:
        idle[:] = [a for a in idle if a is not actor]
        recovering[actor] = [None, time.monotonic() + RAY_BACKOFF_S[0], RAY_BACKOFF_S[0], time.monotonic()]

    def check_recovering() -> None:
        now = time.monotonic()
        for actor, state in list(recovering.items()):
            ref, due, delay, since = state
            if ref is None:
                if now >= due:
                    state[0] = actor.pid.remote()
                continue
            done, _ = ray.wait([ref], timeout=0)
            if not done:
                continue
            try:
                ray.get(ref)
            except (*lost, ActorUnavailableError):  # still restarting: ask again later, up to the bounded wait
                if now - since > RAY_RECOVERY_S:
                    del recovering[actor]
                    actors.remove(actor)
                    log.warning("a Ray actor did not come back within %.0f s; going on without it", RAY_RECOVERY_S)
                    continue
                delay = min(delay * 2, RAY_BACKOFF_S[1])
                recovering[actor] = [None, now + delay, delay, since]
                continue
            del recovering[actor]
            idle.append(actor)
            log.info("a Ray actor is back after %.1f s", now - since)

    try:
        while waiting or running:
            check_recovering()
            if waiting and not running and not idle and not recovering:  # every actor is gone
                while waiting:
                    key, _attempt = waiting.popleft()
                    yield tasks[key], None, "no Ray worker is left to analyse it (they died and did not come back)"
                break
            while waiting and idle:
                key, attempt = waiting.popleft()
                task, actor = tasks[key], idle.pop()
                path = Path(task.clip["path"])
                media = [ray.put(path.read_bytes())]
                gen = actor.analyse.remote(task.clip, task.run, path.stat().st_size, media)
                running[gen] = (key, actor, RunWriter(pipeline, task.clip, task.run), attempt)
            if not running:
                time.sleep(0.2)  # waiting for an actor to come back
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for gen in ready:
                key, actor, writer, attempt = running[gen]
                task = tasks[key]
                try:
                    item = ray.get(next(gen))
                except StopIteration:
                    del running[gen]
                    idle.append(actor)
                    yield task, writer.close(), None
                    continue
                except ActorUnavailableError as exc:  # the actor is restarting: not the clip's fault, no retry spent
                    del running[gen]
                    writer.fail(exc)
                    lose(actor)
                    task.run = pipeline.start(task.clip)
                    waiting.appendleft((key, attempt))
                    continue
                except lost as exc:  # the actor died (Ray restarts it): resume the clip from its last commit
                    del running[gen]
                    writer.fail(exc)
                    lose(actor)
                    if attempt < RAY_RETRIES:
                        log.warning("actor lost while analysing %s; resuming it on a live actor", task.item.source)
                        task.run = pipeline.start(task.clip)
                        waiting.appendleft((key, attempt + 1))
                    else:
                        yield task, None, f"lost its Ray worker {attempt + 1} times: {_first_line(exc)[:200]}"
                    continue
                except Exception as exc:  # the analysis itself failed: its run is marked failed
                    del running[gen]
                    writer.fail(exc)
                    idle.append(actor)
                    cause = getattr(exc, "cause", None) or exc
                    yield task, None, _first_line(cause)[:300]
                    continue
                writer.add(item)
                if isinstance(item, AnalysisBatch):
                    report(_label(task.item.source), item.progress.frames_done, task.run.frames_expected)
    except BaseException as exc:
        for _key, _actor, writer, _attempt in running.values():
            writer.fail(exc)
        raise
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()
