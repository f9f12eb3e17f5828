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
import time
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


async def receive(chunks: AsyncIterator[bytes], name: str, db_path: str | os.PathLike,
                  limit_mb: int | None = None) -> Received:  # fmt: skip
    """Write an upload to ``.uploads/<random>.<ext>`` chunk by chunk; InputError (and nothing left on disk)
    when its type is not accepted, it is empty, or it passes FERPIPE_MAX_UPLOAD_MB (or limit_mb)."""
    suffix = Path(name).suffix.lower()
    if suffix not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        raise InputError(
            f"not a video or image file (expected one of {', '.join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS)})"
        )
    mb = limit_mb if limit_mb is not None else max_upload_mb()
    limit = mb * 1024 * 1024
    path = uploads_dir(db_path) / f"{uuid.uuid4().hex[:16]}{suffix}"
    size = 0
    try:
        with open(path, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise InputError(f"over the {mb} MiB limit (FERPIPE_MAX_UPLOAD_MB)")
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

    return Store(db_path).clip_with_sha(sha256_file(path))


def request_settings(text: str | None):
    """Pipeline Settings from a researcher's upload request (JSON of Settings fields). Nothing that names a file on
    the server is taken from a request: detector_model must be unset and the model a registry name."""
    from dataclasses import fields

    from .pipeline import Settings

    given = json.loads(text or "{}")
    if not isinstance(given, dict):
        raise ValueError("settings must be a JSON object")
    bad = sorted(set(given) - {f.name for f in fields(Settings)})
    if bad:
        raise ValueError(f"unknown settings: {', '.join(bad)}")
    if given.get("detector_model") is not None:
        raise ValueError("detector_model names a file on the server and cannot come from an upload")
    model = given.get("model")
    if model is not None and (not isinstance(model, str) or "/" in model or "\\" in model or model.endswith(".onnx")):
        raise ValueError(f"model must be a registered model's name, got {model!r}")
    return Settings(**given)


PANEL_MAX_MB_ENV = "FERPIPE_PANEL_MAX_MB"


def _stimulus_id(db_path, ref: str | None) -> str | None:
    """A stimulus named by an upload: a whole clip id of the library (never a prefix or a path), or None."""
    from .store import Store

    if not ref:
        return None
    if not Store(db_path).has_clip(ref):
        raise ValueError(f"stimulus {ref!r} is not a clip id of the library")
    return ref


def routes(db_path_fn, link_only: bool = False) -> list:
    """Starlette routes: POST /ferpipe/upload?name=&title=&tags=&settings= (JSON of pipeline Settings fields)
    [&respondent=&stimulus=&offset_s=] with the dashboard's token starts a background job for the uploaded file and
    answers {"job_id", "title"} or {"error"}.

    With a respondent's signed link (X-Ferpipe-Link) instead, only offset_s is read from the request: the stimulus,
    the respondent, the settings, the title and the tags are the server's, the link's uses are counted, and the file
    is capped at FERPIPE_PANEL_MAX_MB (500). ``link_only`` (the panel-only server): links alone, no metadata route."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from . import jobs
    from .access import AccessError, RateLimit, check_link, client_address, env_limit, researcher_request
    from .ingest import parse_tags
    from .panel import CONSENT_VERSION, link_token
    from .pipeline import Settings
    from .store import Store

    def optional(text: str | None) -> str | None:
        return (text or "").strip()[:MAX_TITLE] or None

    # uploads by respondents' links, per client address (FERPIPE_PANEL_UPLOADS_PER_HOUR, default 10)
    panel_rate = RateLimit(env_limit("FERPIPE_PANEL_UPLOADS_PER_HOUR", 10), 3600.0)

    def researcher(request: Request) -> bool:
        return not link_only and researcher_request(request, db_path_fn(), upload_token())

    def offset_of(q) -> float:
        offset = float(q.get("offset_s") or 0.0)
        if not math.isfinite(offset) or not -60 <= offset <= 3600:
            raise ValueError(f"offset_s must be a number of seconds in -60..3600, got {q.get('offset_s')!r}")
        return offset

    async def panel_upload(request: Request, token: str) -> JSONResponse:
        if not panel_rate.allow(client_address(request)):
            return JSONResponse({"error": "too many uploads from this address; try again later"}, status_code=429)
        db = db_path_fn()
        store = Store(db)
        try:
            link = await asyncio.to_thread(check_link, store, db, token, True)
        except (AccessError, ValueError) as exc:
            return JSONResponse({"error": str(exc).splitlines()[0]}, status_code=403)
        try:
            offset = offset_of(request.query_params)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if not await asyncio.to_thread(store.use_link, link.nonce):  # one upload per use, taken atomically
            return JSONResponse({"error": "this link has already been used"}, status_code=403)
        limit = int(os.environ.get(PANEL_MAX_MB_ENV, "500"))
        try:
            suffix = Path(request.query_params.get("name", "")).suffix.lower()
            name = "panel-recording" + (suffix if suffix in (".webm", ".mp4") else ".webm")
            got = await receive(request.stream(), name, db, limit_mb=min(limit, max_upload_mb()))
        except (InputError, ValueError) as exc:
            await asyncio.to_thread(store.release_link, link.nonce)  # nothing stored: the use is given back
            return JSONResponse({"error": str(exc).splitlines()[0]}, status_code=413 if "limit" in str(exc) else 400)
        stim = store.clip(link.stimulus_clip_id)
        title = f"{stim['title'] or stim['clip_id']} · panel · {link.respondent}"[:MAX_TITLE]
        tags = {"panel": str(stim["title"] or stim["clip_id"])[:MAX_TITLE], "respondent": link.respondent,
                "consent": f"{CONSENT_VERSION} agreed {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"}  # fmt: skip
        known = await asyncio.to_thread(_known_clip, db, got.path)
        if known is not None:
            got.path.unlink(missing_ok=True)
            await asyncio.to_thread(store.release_link, link.nonce)
            return JSONResponse({"duplicate": True, "message": "this recording was received already"})
        job = jobs.start(db, str(got.path), Settings(), title=title, tags=tags, delete_source=True,
                         respondent=link.respondent, stimulus=link.stimulus_clip_id, offset_s=offset)  # fmt: skip
        await asyncio.to_thread(store.set_link_state, link.nonce, "recorded")
        log.info("panel upload for %s (%d bytes) -> job %s", link.respondent, got.size, job.job_id)
        return JSONResponse({"job_id": job.job_id, "title": title, "bytes": got.size})

    async def upload(request: Request) -> JSONResponse:
        token = link_token(request)
        is_researcher = await asyncio.to_thread(researcher, request)
        if token and not is_researcher:
            return await panel_upload(request, token)
        if not is_researcher:
            return JSONResponse({"error": "not allowed"}, status_code=403)
        q = request.query_params
        try:
            settings = request_settings(q.get("settings"))
            tags = parse_tags(q.get("tags", ""))
            tags.update(_tags_json(q.get("tags_json")))
            respondent = optional(q.get("respondent"))
            offset = offset_of(q)
            stimulus = await asyncio.to_thread(_stimulus_id, db_path_fn(), optional(q.get("stimulus")))
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
                         respondent=respondent, stimulus=stimulus, offset_s=offset)  # fmt: skip
        log.info("upload %s (%d bytes) -> job %s", title, got.size, job.job_id)
        return JSONResponse({"job_id": job.job_id, "title": title, "bytes": got.size})

    async def metadata(request: Request) -> JSONResponse:
        """A study metadata CSV sent with the files (the uploader's one control): its rows keyed by file name, and
        its bad rows as messages. Nothing is stored."""
        from .study import parse_manifest

        if not await asyncio.to_thread(researcher, request):
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

    if link_only:
        return [Route("/ferpipe/upload", upload, methods=["POST"])]
    return [Route("/ferpipe/upload", upload, methods=["POST"]),
            Route("/ferpipe/metadata", metadata, methods=["POST"])]  # fmt: skip
