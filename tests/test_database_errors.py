"""A database file that cannot be used ends at the CLI's error boundary as one line naming the file and what is
wrong with it, and the file is left exactly as it was."""

import hashlib
import os
from pathlib import Path

import duckdb
import pytest
from conftest import run_cli

from ferpipe.errors import DatabaseError
from ferpipe.store import SCHEMA_VERSION, Store


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


@pytest.fixture
def bad_files(tmp_path, store, pipeline_factory, samples):
    pipeline_factory(sample_fps=2.0).process(str(samples["single_face.jpg"]))
    files = {"garbage": tmp_path / "garbage.duckdb", "empty": tmp_path / "empty.duckdb",
             "future": tmp_path / "future.duckdb"}  # fmt: skip
    files["garbage"].write_bytes(os.urandom(8192))
    files["empty"].write_bytes(b"")
    con = duckdb.connect(str(files["future"]))
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    con.execute("INSERT INTO schema_version VALUES (?)", [SCHEMA_VERSION + 5])
    con.close()
    (tmp_path / "folder.duckdb").mkdir()
    files["folder"] = tmp_path / "folder.duckdb"
    return files


# a truncated file is found only when a command reads a missing block (see ferpipe.store._db_problem); which blocks a
# command reads depends on the file, so it is not in this list
WHAT = {"garbage": "not a DuckDB database file", "empty": "an empty file", "future": "made by a newer ferpipe",
        "folder": "is a folder"}  # fmt: skip


@pytest.mark.parametrize("kind", list(WHAT))
def test_a_bad_database_gives_one_error_line_and_is_left_as_it_was(bad_files, kind, samples):
    path = bad_files[kind]
    before = _digest(path)
    for args in (("clips",), ("process", str(samples["single_face.jpg"])), ("summary", "--clip", "x")):
        r = run_cli(*args, "--db", str(path))
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.stderr, (args, r.stderr)
        assert str(path) in lines[0] and WHAT[kind] in lines[0], lines[0]
        assert _digest(path) == before  # nothing written
    with pytest.raises(DatabaseError, match=WHAT[kind]):
        Store(path).clips()


def test_dev_null_is_not_a_database():
    r = run_cli("clips", "--db", "/dev/null")
    assert (
        r.returncode == 1
        and r.stderr.strip() == "error: /dev/null: not a regular file (a device or pipe), so not a database"
    )


def test_an_immutable_database_reads_and_refuses_writes_in_one_line(tmp_path, samples):
    """An immutable (chattr +i) database: `clips` reads it, `process` ends in one error line naming the file, and
    the file is unchanged (it printed a traceback before)."""
    import hashlib
    import shutil
    import subprocess

    from conftest import run_cli

    db = tmp_path / "ro.duckdb"
    assert (
        run_cli("process", str(samples["single_face.mp4"]), "--db", str(db), "--model", "mini-xception").returncode == 0
    )
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available on this file system (needs root and ext4-like attributes)")
    try:
        before = hashlib.sha256(db.read_bytes()).hexdigest()
        r = run_cli("clips", "--db", str(db), "--json")
        assert r.returncode == 0 and "single_face" in r.stdout
        r = run_cli("process", str(samples["WolfgangLanger_Pexels.mp4"]), "--db", str(db), "--model", "mini-xception")
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("error:") and "read-only" in r.stderr
        assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs for the database (the media library links to the big disk, so only the database fills it)."""
    import shutil
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs (a full disk cannot be made otherwise)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    (tmp_path / "media").mkdir()
    (mount / "f_media").symlink_to(tmp_path / "media")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_mid_run_keeps_the_last_commit_says_one_line_and_the_rerun_is_identical(small_disk, tmp_path,
                                                                                            samples):  # fmt: skip
    import subprocess

    video = str(samples["WolfgangLanger_Pexels.mp4"])
    args = ["--model", "mini-xception", "--every-frame"]
    ref = tmp_path / "ref.duckdb"  # the same run on a disk with room
    assert run_cli("process", video, "--db", str(ref), *args).returncode == 0
    cols = "face_id, frame_index, timestamp_ms, happy, neutral, yaw_deg"
    want = Store(ref).query(f"SELECT {cols} FROM observations ORDER BY frame_index, face_id")
    db = small_disk / "f.duckdb"
    assert (
        run_cli("process", str(samples["single_face.mp4"]), "--db", str(db), "--model", "mini-xception").returncode == 0
    )
    r = run_cli("process", video, "--db", str(db), *args)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and "the disk is full" in lines[0], r.stderr
    store = Store(db)
    run = store.query("SELECT run_id, status, observations FROM runs WHERE clip_id = 'c048a3025af8'").row(0, named=True)
    kept = int(store.query("SELECT count(*) AS n FROM observations WHERE run_id = ?", [run["run_id"]])["n"][0])
    shown = store.clips().filter(store.clips()["clip_id"] == "c048a3025af8")["status"][0]  # a dead writer's run
    assert shown in ("interrupted", "failed") and 0 < kept < want.height  # the last commit, mid-run
    assert kept == run["observations"]  # the run's progress says exactly what was kept
    assert store.clips().filter(store.clips()["clip_id"] == "95ee1a41bfd0")["status"][0] == "done"  # untouched
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # room again
    r = run_cli("process", video, "--db", str(db), *args)
    assert r.returncode == 0, r.stderr
    got = Store(db).query(f"SELECT {cols} FROM observations WHERE run_id = ? ORDER BY frame_index, face_id",
                          [run["run_id"]])  # fmt: skip
    assert got.height == want.height
    for c in got.columns:
        assert (got[c] - want[c]).abs().max() < 1e-5, c  # resumed from the last commit: the same readings
