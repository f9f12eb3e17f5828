"""Where ferpipe keeps its database, media library and model cache.

Each location can be overridden by an environment variable so that tests, CI and
shared lab machines can keep their data apart.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "FERPIPE_HOME"
ENV_DB = "FERPIPE_DB"
ENV_CACHE = "FERPIPE_CACHE"
ENV_ALLOW_PRIVATE = "FERPIPE_ALLOW_PRIVATE_URLS"
ENV_MAX_UPLOAD_MB = "FERPIPE_MAX_UPLOAD_MB"


def home_dir() -> Path:
    """Data folder: $FERPIPE_HOME, else ~/.local/share/ferpipe."""
    env = os.environ.get(ENV_HOME)
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "ferpipe"


def default_db_path() -> Path:
    """$FERPIPE_DB, else ferpipe.duckdb in the data folder."""
    env = os.environ.get(ENV_DB)
    return Path(env).expanduser() if env else home_dir() / "ferpipe.duckdb"


def media_dir(db_path: str | os.PathLike) -> Path:
    """Media library beside its database, so a DB and its clips travel together."""
    p = Path(db_path)
    return p.parent / f"{p.stem}_media"


def cache_dir() -> Path:
    """Model cache: $FERPIPE_CACHE, else ~/.cache/ferpipe."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ferpipe"


def allow_private_urls() -> bool:
    return os.environ.get(ENV_ALLOW_PRIVATE, "") == "1"


def max_upload_mb() -> int:
    """Largest accepted upload in MiB ($FERPIPE_MAX_UPLOAD_MB, default 2048)."""
    raw = os.environ.get(ENV_MAX_UPLOAD_MB, "2048")
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_MAX_UPLOAD_MB} must be an integer, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{ENV_MAX_UPLOAD_MB} must be positive, got {value}")
    return value
