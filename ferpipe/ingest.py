"""Ingest: a local file or an http(s) URL becomes a clip in the media library.

The library stores each clip once, named by the sha256 of its content, so the same
recording ingested twice (from two paths or a URL) is one clip.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from .config import allow_private_urls, max_upload_mb
from .errors import InputError
from .frames import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, probe
from .registry import sha256_file
from .types import VideoInfo

log = logging.getLogger(__name__)

# (downloaded_bytes, total_bytes or None) -> None
DownloadProgress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Ingested:
    """A clip in the library: its stored path, metadata and where it came from."""

    info: VideoInfo
    source_uri: str
    title: str

    @property
    def sha256(self) -> str:
        return self.info.sha256


def is_url(source: str) -> bool:
    return "://" in source or source.startswith(("http:", "https:"))


def check_url(url: str) -> str:
    """The URL if it is http(s) to a public host; InputError otherwise."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise InputError(f"refused URL {url!r}: only http and https are allowed")
    host = parsed.hostname
    if not host:
        raise InputError(f"refused URL {url!r}: it names no host")
    try:
        infos = socket.getaddrinfo(host, parsed.port or (443 if parsed.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"cannot reach {url}: host {host!r} does not resolve ({exc})") from None
    if not allow_private_urls():
        for info in infos:
            addr = ipaddress.ip_address(info[4][0].split("%")[0])
            if addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved or addr.is_multicast:
                raise InputError(
                    f"refused URL {url!r}: {host} resolves to the private address {addr} "
                    "(set FERPIPE_ALLOW_PRIVATE_URLS=1 to allow)"
                )
    return url


def _sha256_and_store(tmp_path: Path, library: Path, suffix: str) -> Path:
    digest = sha256_file(tmp_path)
    library.mkdir(parents=True, exist_ok=True)
    target = library / f"{digest}{suffix.lower()}"
    if target.exists():
        tmp_path.unlink(missing_ok=True)
    else:
        os.replace(tmp_path, target)
    return target


def ingest_file(path: str | os.PathLike, library: Path, title: str | None = None, source_uri: str | None = None) -> Ingested:
    """Check a local video or still image and copy it into the library (once per content hash)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if p.suffix.lower() not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        raise InputError(
            f"{p.name}: not a video or image file (expected one of {', '.join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)})"
        )
    size = p.stat().st_size
    if size > max_upload_mb() * 1024 * 1024:
        raise InputError(f"{p.name}: {size / 2**20:.0f} MiB is over the {max_upload_mb()} MiB limit (FERPIPE_MAX_UPLOAD_MB)")
    probe(p)  # fail before copying anything
    library.mkdir(parents=True, exist_ok=True)
    digest = sha256_file(p)
    target = library / f"{digest}{p.suffix.lower()}"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=library, suffix=".part")
        os.close(fd)
        shutil.copyfile(p, tmp)
        os.replace(tmp, target)
    info = probe(target, sha256=digest)
    return Ingested(info, source_uri or str(p.resolve()), title or p.stem)


def ingest_url(url: str, library: Path, title: str | None = None, progress: DownloadProgress | None = None) -> Ingested:
    """Download a video with yt-dlp into the library; InputError for refused or failed URLs."""
    import yt_dlp

    check_url(url)
    library.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library, prefix=".download-") as tmp:

        def hook(d: dict) -> None:
            if progress and d.get("status") in ("downloading", "finished"):
                progress(int(d.get("downloaded_bytes") or 0), d.get("total_bytes") or d.get("total_bytes_estimate"))

        opts = {
            "outtmpl": os.path.join(tmp, "media.%(ext)s"),
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "noplaylist": True,
            "progress_hooks": [hook],
            "max_filesize": max_upload_mb() * 1024 * 1024,
            "socket_timeout": 20,
            "retries": 1,
            "format": "best[ext=mp4]/best",
            "logger": _QuietLogger(),
        }
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                meta = ydl.extract_info(url, download=True)
        except yt_dlp.utils.DownloadError as exc:
            msg = str(exc).replace("ERROR: ", "").splitlines()[0]
            if "Unsupported URL" in msg:
                msg = "no video found at that address"
            raise InputError(f"cannot download {url}: {msg}") from None
        files = [f for f in Path(tmp).iterdir() if f.is_file() and not f.name.endswith(".part")]
        if not files:
            raise InputError(f"cannot download {url}: nothing was downloaded (over the size limit?)")
        media = files[0]
        suffix = media.suffix.lower() if media.suffix.lower() in VIDEO_EXTENSIONS else ".mp4"
        probe(media)  # InputError if what came back is not a video
        target = _sha256_and_store(media, library, suffix)
    meta_title = (meta or {}).get("title") if isinstance(meta, dict) else None
    info = probe(target, sha256=target.stem)
    return Ingested(info, url, title or meta_title or Path(urlparse(url).path).stem or url)


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
