"""Ingest: a local file or an http(s) URL becomes a clip in the media library.

The library stores each clip once, named by the sha256 of its content, so the same
recording ingested twice (from two paths or a URL) is one clip.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import socket
import tempfile
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

from .config import download_timeout_s, max_upload_mb, pid_alive, private_url_rules
from .errors import InputError
from .frames import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, probe
from .registry import sha256_file
from .types import VideoInfo

log = logging.getLogger(__name__)

# (downloaded_bytes, total_bytes or None) -> None
DownloadProgress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Ingested:
    """A clip in the library: its stored path, metadata and where it came from.

    title: what the user gave (None: keep a known clip's title); default_title: the file name or the
    page's title, used for a new clip without a given title.
    """

    info: VideoInfo
    source_uri: str
    title: str | None
    default_title: str

    @property
    def sha256(self) -> str:
        return self.info.sha256


def is_url(source: str) -> bool:
    return "://" in source or source.startswith(("http:", "https:"))


def printable(text: str) -> str:
    """Text safe to print and store: bytes of a non-UTF-8 file name become U+FFFD."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def address_allowed(ip: str, port: int | None = None) -> bool:
    """May ferpipe connect to this address? Public addresses yes; private, loopback, link-local, reserved
    and multicast ones only where FERPIPE_ALLOW_PRIVATE_URLS allows (see config.private_url_rules)."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_global and not addr.is_multicast:
        return True
    for net, allowed_port in private_url_rules():
        if addr in net and (allowed_port is None or allowed_port == port):
            return True
    return False


def check_url(url: str) -> str:
    """The URL if it is http(s) to a host that resolves to allowed addresses; InputError otherwise.

    This is the early, friendly check. The binding one is made on every connection while
    downloading (``ConnectionGuard``): redirects, re-resolved names and media URLs found in pages
    are checked there, on the address actually connected to.
    """
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise InputError(f"refused URL {url!r}: only http and https are allowed")
    host = parsed.hostname
    if not host:
        raise InputError(f"refused URL {url!r}: it names no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"cannot reach {url}: host {host!r} does not resolve ({exc})") from None
    for info in infos:
        if not address_allowed(info[4][0], port):
            raise InputError(
                f"refused URL {url!r}: {host} resolves to the private address {info[4][0]} "
                "(set FERPIPE_ALLOW_PRIVATE_URLS to allow it)"
            )
    return url


class RefusedConnection(ConnectionRefusedError):
    """A connection the URL policy does not allow, or one attempted after the download's deadline."""


class ConnectionGuard:
    """While active, every socket connection this process opens is checked at connect time, on the address
    actually connected to, so neither a redirect, nor a name resolved again (DNS rebinding), nor a media URL
    found inside a page can reach a private address. At ``deadline_s`` the guard closes the connections it
    let through and refuses new ones, so a server that trickles bytes cannot hold a download forever.
    """

    _lock = threading.Lock()
    _active: ClassVar[list[ConnectionGuard]] = []
    _original: ClassVar[dict] = {}

    def __init__(self, deadline_s: float | None = None) -> None:
        self.deadline_s = deadline_s
        self.refused: str | None = None
        self.expired = False
        self._sockets: weakref.WeakSet = weakref.WeakSet()
        self._timer: threading.Timer | None = None

    def _check(self, sock: socket.socket, address: object) -> None:
        if self.expired:
            raise RefusedConnection("the download's time limit has passed")
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            ip, port = str(address[0]), int(address[1])
            if not address_allowed(ip, port):
                self.refused = f"{ip}:{port}"
                raise RefusedConnection(f"connection to the private address {ip}:{port} refused")
        self._sockets.add(sock)

    def _expire(self) -> None:
        self.expired = True
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> ConnectionGuard:
        with self._lock:
            if not self._active:
                original = {"connect": socket.socket.connect, "connect_ex": socket.socket.connect_ex}
                ConnectionGuard._original = original

                def connect(sock: socket.socket, address: object) -> None:
                    for guard in list(ConnectionGuard._active):
                        guard._check(sock, address)
                    return original["connect"](sock, address)

                def connect_ex(sock: socket.socket, address: object) -> int:
                    for guard in list(ConnectionGuard._active):
                        guard._check(sock, address)
                    return original["connect_ex"](sock, address)

                socket.socket.connect = connect  # type: ignore[method-assign]
                socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
            self._active.append(self)
        if self.deadline_s is not None:
            self._timer = threading.Timer(self.deadline_s, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._active.remove(self)
            if not self._active:
                socket.socket.connect = ConnectionGuard._original["connect"]  # type: ignore[method-assign]
                socket.socket.connect_ex = ConnectionGuard._original["connect_ex"]  # type: ignore[method-assign]


def _pid_of(name: str) -> int | None:
    parts = name.split("-")
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None


def clean_leftovers(library: Path) -> None:
    """Remove download folders and partial copies whose process is gone (killed mid-download)."""
    if not library.is_dir():
        return
    for item in library.glob(".download-*"):
        pid = _pid_of(item.name)
        if pid is not None and not pid_alive(pid):
            shutil.rmtree(item, ignore_errors=True)
    for item in library.glob(".copy-*"):
        pid = _pid_of(item.name)
        if pid is not None and not pid_alive(pid):
            item.unlink(missing_ok=True)


def _sha256_and_store(tmp_path: Path, library: Path, suffix: str) -> Path:
    digest = sha256_file(tmp_path)
    library.mkdir(parents=True, exist_ok=True)
    target = library / f"{digest}{suffix.lower()}"
    if target.exists():
        tmp_path.unlink(missing_ok=True)
    else:
        os.replace(tmp_path, target)
    return target


def ingest_file(
    path: str | os.PathLike, library: Path, title: str | None = None, source_uri: str | None = None
) -> Ingested:
    """Check a local video or still image and copy it into the library (once per content hash).

    Media is only ever opened under the library's own ASCII name (OpenCV's FFmpeg crashes on some
    non-UTF-8 file names), so the file is copied first and checked there.
    """
    p = Path(path).expanduser()
    name = printable(p.name)
    if p.is_dir():
        raise InputError(f"{name}: a folder; give its files, or the folder to `ferpipe process`")
    if not p.is_file():
        raise InputError(f"{printable(str(p))}: no such file")
    suffix = p.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        raise InputError(
            f"{name}: not a video or image file (expected one of {', '.join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)})"
        )
    size = p.stat().st_size
    if size > max_upload_mb() * 1024 * 1024:
        raise InputError(
            f"{name}: {size / 2**20:.0f} MiB is over the {max_upload_mb()} MiB limit (FERPIPE_MAX_UPLOAD_MB)"
        )
    library.mkdir(parents=True, exist_ok=True)
    clean_leftovers(library)
    fd, tmp_name = tempfile.mkstemp(dir=library, prefix=f".copy-{os.getpid()}-", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copyfile(p, tmp)
        try:
            probe(tmp)
        except InputError as exc:
            raise InputError(str(exc).replace(tmp.name, name)) from None
        target = _sha256_and_store(tmp, library, suffix)
    finally:
        tmp.unlink(missing_ok=True)
    info = probe(target, sha256=target.stem)
    return Ingested(info, source_uri or printable(str(p.resolve())), title, printable(p.stem))


class _TooBig(Exception):
    """Raised from yt-dlp's progress hook to stop a download (see ingest_url)."""


def ingest_url(url: str, library: Path, title: str | None = None, progress: DownloadProgress | None = None) -> Ingested:
    """Download a video with yt-dlp into the library; InputError for refused or failed URLs.

    The size limit (FERPIPE_MAX_UPLOAD_MB) is enforced on the bytes actually received, whatever the
    headers say; FERPIPE_DOWNLOAD_TIMEOUT_S bounds the whole download; every connection is checked
    against the URL policy (ConnectionGuard). Nothing is left in the library when a download fails.
    """
    import yt_dlp

    check_url(url)
    library.mkdir(parents=True, exist_ok=True)
    clean_leftovers(library)
    limit = max_upload_mb() * 1024 * 1024
    timeout = download_timeout_s()

    def hook(d: dict) -> None:
        done = int(d.get("downloaded_bytes") or 0)
        if done > limit:
            raise yt_dlp.utils.DownloadCancelled(f"over the {max_upload_mb()} MiB limit (FERPIPE_MAX_UPLOAD_MB)")
        if progress and d.get("status") in ("downloading", "finished"):
            progress(done, d.get("total_bytes") or d.get("total_bytes_estimate"))

    with tempfile.TemporaryDirectory(dir=library, prefix=f".download-{os.getpid()}-") as tmp, \
            ConnectionGuard(deadline_s=timeout) as guard:  # fmt: skip
        opts = {
            "outtmpl": os.path.join(tmp, "media.%(ext)s"),
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "noplaylist": True,
            "progress_hooks": [hook],
            "max_filesize": limit,
            "socket_timeout": 20,
            "retries": 1,
            "fragment_retries": 1,
            "extractor_retries": 0,
            "format": "best[ext=mp4]/best",
            "logger": _QuietLogger(),
        }
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                meta = ydl.extract_info(url, download=True)
        except (yt_dlp.utils.YoutubeDLError, OSError) as exc:  # download, cancel and request errors (a redirect
            # to file://, an unknown scheme) alike: one line
            if guard.refused:
                raise InputError(
                    f"refused URL {url!r}: it led to the private address {guard.refused} (a redirect, a name that "
                    "resolved again, or a media link in the page); set FERPIPE_ALLOW_PRIVATE_URLS to allow it"
                ) from None
            if guard.expired:
                raise InputError(
                    f"cannot download {url}: no complete download within {timeout:.0f} s (FERPIPE_DOWNLOAD_TIMEOUT_S)"
                ) from None
            msg = str(exc).replace("ERROR: ", "").splitlines()[0] if str(exc) else type(exc).__name__
            if "Unsupported URL" in msg:
                msg = "no video found at that address"
            raise InputError(f"cannot download {url}: {msg}") from None
        files = [f for f in Path(tmp).iterdir() if f.is_file() and not f.name.endswith(".part")]
        if not files:
            raise InputError(f"cannot download {url}: nothing was downloaded (over the size limit?)")
        media = files[0]
        if media.stat().st_size > limit:
            raise InputError(f"cannot download {url}: over the {max_upload_mb()} MiB limit (FERPIPE_MAX_UPLOAD_MB)")
        known = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
        suffix = media.suffix.lower() if media.suffix.lower() in known else ".mp4"
        probe(media)  # InputError if what came back is not a video
        target = _sha256_and_store(media, library, suffix)
    meta_title = (meta or {}).get("title") if isinstance(meta, dict) else None
    info = probe(target, sha256=target.stem)
    return Ingested(info, url, title, meta_title or Path(urlparse(url).path).stem or url)


class _QuietLogger:
    """Keeps yt-dlp silent; its errors come back as DownloadError."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)


def ingest(source: str, library: Path, title: str | None = None, progress: DownloadProgress | None = None) -> Ingested:
    """A path or URL into the library."""
    if is_url(source):
        return ingest_url(source, library, title, progress)
    return ingest_file(source, library, title)


def expand_sources(sources: list[str]) -> list[str]:
    """Sources as given, with each folder replaced by the videos and images in it (recursively, sorted,
    hidden files skipped); InputError for a folder with none."""
    out: list[str] = []
    for src in sources:
        p = Path(src).expanduser()
        if is_url(src) or not p.is_dir():
            out.append(src)
            continue
        found = sorted(
            f for f in p.rglob("*")
            if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )  # fmt: skip
        if not found:
            raise InputError(f"{printable(str(p))}: a folder without videos or images")
        out.extend(str(f) for f in found)
    return out


def parse_tags(tags: list[str] | str) -> dict[str, str]:
    """KEY=VALUE strings (a list, or one comma-separated string) to a dict; ValueError names a bad one."""
    if isinstance(tags, str):
        tags = [t for t in (x.strip() for x in tags.split(",")) if t]
    out = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"tag {tag!r} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out
