"""Streamed uploads for the dashboard: a file arrives in chunks straight into the media library's
``.uploads`` folder (never whole in memory), under a name of ferpipe's own, within the size limit,
and is then processed by a background job.

``receive`` does the work on any async stream of byte chunks; ``routes`` wraps it as Starlette
routes for the dashboard's server (dashboard/server.py). Requests must carry the dashboard's
token (``FERPIPE_UPLOAD_TOKEN``), which pages embed: another site open in the same browser cannot
post files to the local server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from .config import max_upload_mb, media_dir
from .errors import InputError
from .frames import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

TOKEN_ENV = "FERPIPE_UPLOAD_TOKEN"
MAX_TITLE = 200


def upload_token() -> str:
    """The dashboard's upload token (made once per server process unless set)."""
    return os.environ.setdefault(TOKEN_ENV, secrets.token_urlsafe(24))


def uploads_dir(db_path: str | os.PathLike) -> Path:
    d = media_dir(db_path) / ".uploads"
    d.mkdir(parents=True, exist_ok=True)
    return d


def clean_title(name: str) -> str:
    """A clip title from an uploaded file's name: its stem, without control characters, at most 200 characters."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    text = "".join(ch for ch in stem if ch.isprintable()).strip()
    return (text[: MAX_TITLE - 1] + "…") if len(text) > MAX_TITLE else text or "upload"


@dataclass(frozen=True)
class Received:
    """An upload on disk, ready for a job."""

    path: Path
    title: str
    size: int


async def receive(chunks: AsyncIterator[bytes], name: str, db_path: str | os.PathLike) -> Received:
    """Write an upload to ``.uploads/<random>.<ext>`` chunk by chunk; InputError (and nothing left on disk)
    when its type is not accepted, it is empty, or it passes FERPIPE_MAX_UPLOAD_MB."""
    suffix = Path(name).suffix.lower()
    if suffix not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        raise InputError(
            f"not a video or image file (expected one of {', '.join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)})"
        )
    limit = max_upload_mb() * 1024 * 1024
    path = uploads_dir(db_path) / f"{uuid.uuid4().hex[:16]}{suffix}"
    size = 0
    try:
        with open(path, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise InputError(f"over the {max_upload_mb()} MiB limit (FERPIPE_MAX_UPLOAD_MB)")
                out.write(chunk)
        if size == 0:
            raise InputError("the file is empty (0 bytes)")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Received(path, clean_title(name), size)


def _tags_json(text: str | None) -> dict[str, str]:
    """Per-file tags from a study metadata row, as a JSON object of strings."""
    if not text:
        return {}
    tags = json.loads(text)
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise ValueError("tags_json must be a JSON object of strings")
    return tags


def per_file_metadata(items: list) -> dict[str, dict]:
    """Study metadata rows (ferpipe.study.StudyItem) keyed by the file name they describe, as the uploader sends them
    with each matching file: title, respondent, stimulus, offset_s, and the other columns as tags."""
    out = {}
    for item in items:
        tags = {k: v for k, v in item.tags.items() if k != "respondent"}
        out[Path(item.source).name] = {"title": item.title or "", "respondent": item.respondent or "",
                                       "stimulus": item.stimulus or "", "offset_s": item.offset_s,
                                       "tags_json": json.dumps(tags)}  # fmt: skip
    return out


def _known_clip(db_path, path: Path) -> tuple[str, str] | None:
    """(clip id, title) of the library clip with this file's content, or None."""
    from .registry import sha256_file
    from .store import Store

    digest = sha256_file(path)
    row = Store(db_path).query(
        "SELECT clip_id, coalesce(title, clip_id) AS title FROM clips WHERE sha256 = ?", [digest]
    )
    return (row["clip_id"][0], row["title"][0]) if row.height else None


def routes(db_path_fn) -> list:
    """Starlette routes: POST /ferpipe/upload?name=&title=&tags=&settings= (JSON of pipeline Settings fields)
    [&respondent=&stimulus=&offset_s=]
    starts a background job for the uploaded file and answers {"job_id", "title"} or {"error"}."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from . import jobs
    from .ingest import parse_tags
    from .pipeline import Settings

    def optional(text: str | None) -> str | None:
        return (text or "").strip()[:MAX_TITLE] or None

    async def upload(request: Request) -> JSONResponse:
        if not secrets.compare_digest(request.headers.get("x-ferpipe-token", ""), upload_token()):
            return JSONResponse({"error": "not allowed"}, status_code=403)
        q = request.query_params
        try:
            settings = Settings(**json.loads(q.get("settings") or "{}"))
            tags = parse_tags(q.get("tags", ""))
            tags.update(_tags_json(q.get("tags_json")))
            respondent = optional(q.get("respondent"))
            offset = float(q.get("offset_s") or 0.0)
            if not math.isfinite(offset):
                raise ValueError(f"offset_s must be a finite number, got {q.get('offset_s')!r}")
            if respondent:
                tags["respondent"] = respondent
            got = await receive(request.stream(), q.get("name", ""), db_path_fn())
        except (InputError, ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc).splitlines()[0]}, status_code=400)
        title = (q.get("title") or "").strip()[:MAX_TITLE] or got.title
        known = await asyncio.to_thread(_known_clip, db_path_fn(), got.path)
        if known is not None:  # the same bytes are already a clip: nothing changes, nothing is started
            got.path.unlink(missing_ok=True)
            return JSONResponse({"duplicate": True, "clip_id": known[0], "title": known[1],
                                 "message": f"already in the library as '{known[1]}'"})  # fmt: skip
        job = jobs.start(db_path_fn(), str(got.path), settings, title=title, tags=tags, delete_source=True,
                         respondent=respondent, stimulus=optional(q.get("stimulus")), offset_s=offset)  # fmt: skip
        log.info("upload %s (%d bytes) -> job %s", title, got.size, job.job_id)
        return JSONResponse({"job_id": job.job_id, "title": title, "bytes": got.size})

    async def metadata(request: Request) -> JSONResponse:
        """A study metadata CSV sent with the files (the uploader's one control): its rows keyed by file name, and
        its bad rows as messages. Nothing is stored."""
        from .study import parse_manifest

        if not secrets.compare_digest(request.headers.get("x-ferpipe-token", ""), upload_token()):
            return JSONResponse({"error": "not allowed"}, status_code=403)
        body = await request.body()
        if len(body) > 8 << 20:
            return JSONResponse({"error": "the metadata CSV is over 8 MiB"}, status_code=413)
        name = (request.query_params.get("name") or "metadata.csv")[:MAX_TITLE]
        try:
            rows, bad = parse_manifest(body.decode("utf-8-sig"), name=name)
        except (InputError, UnicodeDecodeError) as exc:
            return JSONResponse({"error": str(exc).splitlines()[0]}, status_code=400)
        return JSONResponse({"per_file": per_file_metadata(rows), "rows": len(rows),
                             "warnings": [b.error for b in bad]})  # fmt: skip

    return [Route("/ferpipe/upload", upload, methods=["POST"]),
            Route("/ferpipe/metadata", metadata, methods=["POST"])]  # fmt: skip
