"""Where ferpipe keeps its database, media library and model cache.

Each location can be overridden by an environment variable so that tests, CI and
shared lab machines can keep their data apart.
"""

from __future__ import annotations

import ipaddress
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


ENV_DOWNLOAD_TIMEOUT = "FERPIPE_DOWNLOAD_TIMEOUT_S"


def private_url_rules() -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]]:
    """Private addresses URLs may reach, from $FERPIPE_ALLOW_PRIVATE_URLS.

    "1" allows every address; otherwise a comma-separated list of addresses or networks, each
    optionally with ":PORT" (IPv6 in brackets), e.g. "10.0.0.5, 192.168.1.0/24, 127.0.0.1:8080",
    for a lab's own media server. Empty or unset: none.
    """
    raw = os.environ.get(ENV_ALLOW_PRIVATE, "").strip()
    if raw == "1":
        return [(ipaddress.ip_network("0.0.0.0/0"), None), (ipaddress.ip_network("::/0"), None)]
    rules = []
    for item in filter(None, (x.strip() for x in raw.split(","))):
        host, port = item, None
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.lstrip(":") or None
        elif item.count(":") == 1:
            host, port = item.split(":")
        try:
            rules.append((ipaddress.ip_network(host, strict=False), int(port) if port else None))
        except ValueError:
            raise ValueError(f"{ENV_ALLOW_PRIVATE}: {item!r} is not an address, network or address:port") from None
    return rules


def _positive_env(name: str, default: str, kind: type) -> float | int:
    """A positive number from the environment; ValueError naming the variable otherwise."""
    raw = os.environ.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {noun}, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def download_timeout_s() -> float:
    """Longest a whole download may take, in seconds ($FERPIPE_DOWNLOAD_TIMEOUT_S, default 1800)."""
    return float(_positive_env(ENV_DOWNLOAD_TIMEOUT, "1800", float))


ENV_MAX_PIXELS = "FERPIPE_MAX_PIXELS"


def max_pixels() -> int:
    """Largest image or video frame accepted, in pixels ($FERPIPE_MAX_PIXELS, default 50 million: 8K is 33 MP).
    Checked from the file's header before anything is decoded, so a small file that claims 20000 x 20000 pixels
    (a decompression bomb) is refused at once."""
    return int(_positive_env(ENV_MAX_PIXELS, "50000000", int))


def max_upload_mb() -> int:
    """Largest accepted upload in MiB ($FERPIPE_MAX_UPLOAD_MB, default 2048)."""
    return int(_positive_env(ENV_MAX_UPLOAD_MB, "2048", int))


def bundled(name: str) -> Path:
    """A folder shipped with ferpipe, ``models`` or ``dashboard``: the top-level folder of a checkout (also under an
    editable install), or the copy packaged inside an installed wheel (as ferpipe/models, ferpipe/dashboard)."""
    if name not in ("models", "dashboard"):
        raise ValueError(f"no bundled folder {name!r}")
    inside = Path(__file__).resolve().parent / name
    if inside.is_dir():  # an installed wheel
        return inside
    return Path(__file__).resolve().parent.parent / name


def pid_alive(pid: int) -> bool:
    """Is a process with this pid running (on this machine)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(parent_pid: int, every_s: float = 0.5) -> None:
    """End this worker process when its driver dies, even by kill -9: Linux's parent-death signal (SIGKILL when the
    parent goes), and a watchdog thread that exits once the parent pid is no longer the parent (the signal fires when
    the parent's *thread* ends, and a parent may die before the signal is set)."""
    import ctypes
    import signal
    import threading
    import time

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the watchdog alone
        pass
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(every_s)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
