"""Streamed uploads: straight to disk, within the limit, under ferpipe's own names, behind the dashboard's token."""

import asyncio
import json

import pytest

from ferpipe.errors import InputError
from ferpipe.uploads import clean_title, receive, uploads_dir


async def _chunks(data: bytes, size: int = 65536):
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_an_upload_is_written_in_chunks_under_a_name_of_its_own(db_path):
    got = asyncio.run(receive(_chunks(b"x" * 300_000), "é" * 250 + ".mp4", db_path))
    assert got.path.parent == uploads_dir(db_path) and got.path.suffix == ".mp4"
    assert len(got.path.name) < 40 and got.size == 300_000 and got.path.stat().st_size == 300_000
    assert len(got.title) == 200 and got.title.endswith("…")  # a title, never a file name on disk


@pytest.mark.parametrize(
    ("name", "data", "expect"),
    [
        ("notes.txt", b"hi", "not a video or image"),
        ("empty.mp4", b"", "empty"),
        ("big.mp4", b"x" * (2 << 20), "over the 1 MiB"),
    ],
)
def test_refused_uploads_leave_nothing_behind(db_path, monkeypatch, name, data, expect):
    monkeypatch.setenv("FERPIPE_MAX_UPLOAD_MB", "1")
    with pytest.raises(InputError, match=expect):
        asyncio.run(receive(_chunks(data), name, db_path))
    assert list(uploads_dir(db_path).iterdir()) == []


def test_titles_from_file_names():
    assert clean_title("Panel 3 – session A.mov") == "Panel 3 – session A"
    assert clean_title("\x00\x1b[31m.mp4") == "[31m"
    assert clean_title(".mp4") == "upload"


def test_study_metadata_rows_travel_with_the_file_of_that_name():
    from ferpipe.study import parse_manifest
    from ferpipe.uploads import per_file_metadata

    items, bad = parse_manifest("source,title,respondent,stimulus,offset_s,wave\nclips/a.mp4,A,r1,Ad,2.5,1\n,,,,,\n")
    meta = per_file_metadata(items)
    assert list(meta) == ["a.mp4"]
    assert (
        meta["a.mp4"]["respondent"] == "r1" and meta["a.mp4"]["stimulus"] == "Ad" and meta["a.mp4"]["offset_s"] == 2.5
    )
    assert json.loads(meta["a.mp4"]["tags_json"]) == {"wave": "1"}
    assert [b.row for b in bad] == [2]


def test_jobs_beyond_the_limit_wait_their_turn(tmp_path, monkeypatch):
    """FERPIPE_MAX_JOBS slots, held by lock files: with one slot taken by another process, a job waits (marked
    queued) and starts once the slot is free."""
    import subprocess
    import sys
    import threading
    import time

    from ferpipe import jobs

    monkeypatch.setenv("FERPIPE_MAX_JOBS", "1")
    folder = tmp_path / ".jobs" / "j1"
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
                               "os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
                               "time.sleep(2)", str(tmp_path / ".jobs" / ".slot-0")], stdout=subprocess.PIPE)  # fmt: skip
    assert holder.stdout.readline().strip() == b"held"
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("fd", jobs.take_slot(folder, poll_s=0.1)))
    t0 = time.monotonic()
    t.start()
    time.sleep(0.5)
    assert (folder / "queued").is_file() and "fd" not in got  # waiting, and says so
    t.join(10)
    assert "fd" in got and time.monotonic() - t0 >= 1.5 and not (folder / "queued").exists()
    holder.wait(5)
    monkeypatch.setenv("FERPIPE_MAX_JOBS", "many")
    with pytest.raises(ValueError, match="FERPIPE_MAX_JOBS"):
        jobs.max_jobs()
