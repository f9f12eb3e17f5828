"""Background processing for the dashboard: each source runs in its own process (``python -m ferpipe.jobs``).

A process per clip keeps the dashboard responsive, survives page reloads, and writes through the
same short DuckDB transactions as the CLI, so the dashboard reads results while they arrive.
A job is a folder beside the media: ``job.json`` (what to do, written by ``start``) and
``result.json`` (what happened, written by the job itself), both typed here; the dashboard
shows live progress from the runs table.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import media_dir


@dataclass(frozen=True)
class JobSpec:
    """What a job does: one source into one database, with the pipeline's settings (as a dict of
    ``Settings`` fields) and the clip's title and tags. ``delete_source``: the source is an upload,
    removed once it is in the library (or refused). ``respondent``, ``stimulus``, ``offset_s``: as in a
    study manifest (ferpipe.study)."""

    db: str
    source: str
    settings: dict
    title: str | None = None
    tags: dict = field(default_factory=dict)
    delete_source: bool = False
    respondent: str | None = None
    stimulus: str | None = None
    offset_s: float = 0.0
    live: bool = False


@dataclass(frozen=True)
class JobResult:
    """What a finished job did: the RunResult fields, or an error."""

    status: str  # done, truncated, interrupted, failed
    title: str
    clip_id: str | None = None
    run_id: int | None = None
    faces: int = 0
    observations: int = 0
    frames_analyzed: int = 0
    error: str | None = None
    people: int = 0


@dataclass(frozen=True)
class Job:
    """One background job: its folder and process."""

    job_id: str
    folder: Path
    pid: int
    started: float
    title: str

    @property
    def spec(self) -> JobSpec:
        return JobSpec(**json.loads((self.folder / "job.json").read_text()))

    def alive(self) -> bool:
        with contextlib.suppress(ChildProcessError, OSError):
            pid, _ = os.waitpid(self.pid, os.WNOHANG)  # reap it if it is our child
            if pid == self.pid:
                return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not (self.folder / "result.json").is_file()

    def result(self) -> JobResult | None:
        """The job's result once it has finished; a job whose process died without one reports that."""
        path = self.folder / "result.json"
        if path.is_file():
            with contextlib.suppress(OSError, ValueError, TypeError):
                return JobResult(**json.loads(path.read_text()))
        if self.alive():
            return None
        return JobResult(status="failed", title=self.title, error="the job stopped without a result (killed?)")

    def stop(self) -> None:
        """Ask the job to stop: its run keeps what it committed and is marked interrupted."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)


def jobs_dir(db_path: str | os.PathLike) -> Path:
    d = media_dir(db_path) / ".jobs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def start(db_path: str | os.PathLike, source: str, settings, *, title: str | None = None,
          tags: dict[str, str] | None = None, delete_source: bool = False, respondent: str | None = None,
          stimulus: str | None = None, offset_s: float = 0.0, live: bool = False) -> Job:  # fmt: skip
    """Launch one source in the background with the given pipeline ``Settings`` (and, as in a study manifest, the
    respondent it records and the stimulus it was watching)."""
    from .pipeline import Settings

    if not isinstance(settings, Settings):
        raise ValueError(f"settings must be a pipeline Settings, got {type(settings).__name__}")
    job_id = uuid.uuid4().hex[:12]
    folder = jobs_dir(db_path) / job_id
    folder.mkdir()
    spec = JobSpec(str(db_path), str(source), asdict(settings), title, dict(tags or {}), delete_source, respondent,
                   stimulus, float(offset_s), live)  # fmt: skip
    (folder / "job.json").write_text(json.dumps(asdict(spec)))
    with open(folder / "job.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ferpipe.jobs", str(folder)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    job = Job(job_id, folder, proc.pid, time.time(), title or Path(source).name)
    (folder / "pid").write_text(json.dumps({"pid": proc.pid, "started": job.started, "title": job.title}))
    return job


def list_jobs(db_path: str | os.PathLike) -> list[Job]:
    """Every recorded job, newest first."""
    jobs = []
    for folder in jobs_dir(db_path).iterdir():
        with contextlib.suppress(OSError, ValueError, KeyError):
            meta = json.loads((folder / "pid").read_text())
            jobs.append(Job(folder.name, folder, int(meta["pid"]), float(meta["started"]), meta["title"]))
    return sorted(jobs, key=lambda j: j.started, reverse=True)


def forget(job: Job) -> None:
    """Drop a finished job's folder (and its upload, should the job have died before removing it)."""
    import shutil

    with contextlib.suppress(OSError, ValueError, TypeError):
        spec = job.spec
        if spec.delete_source:
            Path(spec.source).unlink(missing_ok=True)
    shutil.rmtree(job.folder, ignore_errors=True)


def eta_seconds(frames_done: int, frames_expected: int, seconds: float) -> float | None:
    """Remaining seconds at the run's average rate so far; None before the first batch."""
    if frames_done <= 0 or seconds <= 0 or frames_expected <= 0:
        return None
    rate = frames_done / seconds
    return max(0.0, (frames_expected - frames_done) / rate)


MAX_JOBS_ENV = "FERPIPE_MAX_JOBS"


def max_jobs() -> int:
    """How many background jobs analyse at once (FERPIPE_MAX_JOBS, default 2); the others wait their turn."""
    try:
        return max(1, int(os.environ.get(MAX_JOBS_ENV, "2")))
    except ValueError:
        raise ValueError(f"{MAX_JOBS_ENV} must be a whole number, got {os.environ[MAX_JOBS_ENV]!r}") from None


def take_slot(folder: Path, poll_s: float = 1.0):
    """Wait for one of max_jobs() slots (a lock file per slot in the jobs folder, held until this process ends):
    a burst of uploads queues instead of starting every analysis at once. Writes ``queued`` while it waits."""
    import fcntl

    slots = folder.parent
    marked = False
    while True:
        for k in range(max_jobs()):
            fd = os.open(slots / f".slot-{k}", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            (folder / "queued").unlink(missing_ok=True)
            return fd  # released when the process exits
        if not marked:
            (folder / "queued").write_text(str(time.time()))
            marked = True
        time.sleep(poll_s)


def _write_result(folder: Path, result: JobResult) -> None:
    tmp = folder / "result.json.part"
    tmp.write_text(json.dumps(asdict(result)))
    os.replace(tmp, folder / "result.json")


def _stop_capture_on_sigterm(capture, clip: dict) -> None:
    signal.signal(signal.SIGTERM, lambda signum, frame: capture.stop("stopped in the dashboard"))


def run_job(folder: Path) -> JobResult:
    """Do the job in ``folder`` in this process and record its result (the child's side of ``start``)."""
    from .errors import FerpipeError
    from .pipeline import Pipeline, Settings
    from .store import Store
    from .study import StudyItem, link_stimulus, name_respondent

    spec = JobSpec(**json.loads((folder / "job.json").read_text()))
    title = spec.title or Path(spec.source).name

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        slot = None if spec.live else take_slot(folder)  # noqa: F841  a live stream cannot wait; the rest queue
        pipeline = Pipeline(Store(spec.db), Settings(**spec.settings))
        if spec.live:  # Stop (SIGTERM) ends the stream's capture; the clip is finished with what was seen
            res = pipeline.live(spec.source, spec.title, spec.tags, on_start=_stop_capture_on_sigterm)
            result = JobResult(res.status, res.title, res.clip_id, res.run_id, res.faces, res.observations,
                               res.frames_analyzed, res.error, res.people)  # fmt: skip
            _write_result(folder, result)
            return result
        try:
            item = pipeline.ingest(spec.source, spec.title, spec.tags)
        finally:
            if spec.delete_source:  # the library has its own copy now, or the upload was refused
                Path(spec.source).unlink(missing_ok=True)
        study = StudyItem(spec.source, spec.title, spec.respondent, spec.stimulus, spec.offset_s, spec.tags)
        link_stimulus(pipeline, item.sha256[:12], study)
        res = pipeline.analyse(item.sha256[:12])
        name_respondent(pipeline, spec.respondent, res)
        result = JobResult(res.status, res.title, res.clip_id, res.run_id, res.faces, res.observations,
                           res.frames_analyzed, res.error, res.people)  # fmt: skip
    except KeyboardInterrupt:
        result = JobResult("interrupted", title, error="stopped")
    except (FerpipeError, ValueError, OSError) as exc:
        result = JobResult(
            "failed", title, error=str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        )
    _write_result(folder, result)
    return result


if __name__ == "__main__":  # pragma: no cover - the child process of start()
    run_job(Path(sys.argv[1]))
