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
