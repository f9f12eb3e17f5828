"""Background processing for the dashboard: each source runs as its own `ferpipe process` subprocess.

A subprocess per clip keeps the dashboard responsive, survives page reloads, and
writes through the same short DuckDB transactions as the CLI, so the dashboard can
read results while they arrive. Job records are small JSON files beside the media.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import media_dir


@dataclass
class Job:
    """One background `ferpipe process` run."""

    job_id: str
    source: str
    title: str
    pid: int
    started: float
    log: str
    upload: str | None = None

    def alive(self) -> bool:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)  # reap if it is our child
            if pid == self.pid:
                return False
        except ChildProcessError:
            pass
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def result(self) -> dict | None:
        """The JSON line the process printed, once it has finished."""
        try:
            lines = Path(self.log).read_text().strip().splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return None
        return None

    def error(self) -> str | None:
        res = self.result()
        if res and "error" in res:
            return res["error"]
        if not self.alive() and res is None:
            try:
                tail = [x for x in Path(self.log).read_text().splitlines() if x.strip()]
            except OSError:
                tail = []
            return tail[-1] if tail else "the process stopped without a result"
        return None


def jobs_dir(db_path: str | os.PathLike) -> Path:
    d = media_dir(db_path) / ".jobs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def start(db_path: str | os.PathLike, source: str, title: str | None = None, tags: dict[str, str] | None = None,
          model: str | None = None, sample_fps: float | None = 5.0, upload: str | None = None) -> Job:  # fmt: skip
    """Launch `ferpipe process --json` for one source in the background."""
    if sample_fps is not None and not 0 < sample_fps <= 240:
        raise ValueError(f"sample_fps must be in (0, 240], got {sample_fps}")
    job_id = uuid.uuid4().hex[:12]
    folder = jobs_dir(db_path)
    log = folder / f"{job_id}.log"
    cmd = [sys.executable, "-m", "ferpipe.cli", "process", source, "--db", str(db_path), "--json"]
    cmd += ["--every-frame"] if sample_fps is None else ["--sample-fps", str(sample_fps)]
    if title:
        cmd += ["--title", title]
    for k, v in (tags or {}).items():
        cmd += ["--tag", f"{k}={v}"]
    if model:
        cmd += ["--model", model]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
    job = Job(job_id, source, title or Path(source).name, proc.pid, time.time(), str(log), upload)
    (folder / f"{job_id}.json").write_text(json.dumps(asdict(job)))
    return job


def list_jobs(db_path: str | os.PathLike) -> list[Job]:
    """Every recorded job, newest first."""
    jobs = []
    for f in jobs_dir(db_path).glob("*.json"):
        try:
            jobs.append(Job(**json.loads(f.read_text())))
        except (OSError, TypeError, json.JSONDecodeError):
            continue
    return sorted(jobs, key=lambda j: j.started, reverse=True)


def forget(db_path: str | os.PathLike, job: Job) -> None:
    """Drop a finished job's record, log and uploaded temporary file."""
    folder = jobs_dir(db_path)
    for p in (folder / f"{job.job_id}.json", Path(job.log)):
        p.unlink(missing_ok=True)
    if job.upload:
        Path(job.upload).unlink(missing_ok=True)


def eta_seconds(frames_done: int, frames_expected: int, seconds: float) -> float | None:
    """Remaining seconds at the run's average rate so far; None before the first batch."""
    if frames_done <= 0 or seconds <= 0 or frames_expected <= 0:
        return None
    rate = frames_done / seconds
    return max(0.0, (frames_expected - frames_done) / rate)
