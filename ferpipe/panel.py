"""Webcam panels: a remote respondent consents, checks their camera, watches a stimulus from the library while the
browser records their webcam (MediaRecorder), and the recording is uploaded as a clip linked to that stimulus, with
the measured offset and their respondent id, then processed in the background.

This module holds what the dashboard's server needs beyond uploads (ferpipe.uploads): the camera check (a snapshot's
faces and light, by the pipeline's own detector) and the stimulus video for the browser. Both routes need the
dashboard's token or a respondent's signed link (ferpipe.access), as uploads do.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from .errors import FerpipeError, InputError
from .frames import decode_image

log = logging.getLogger(__name__)

MAX_SNAPSHOT_BYTES = 4 << 20
LIGHT_RANGE = (50.0, 215.0)  # mean luma of the face region (0-255) that reads well: darker or brighter fails

CONSENT = (
    "While you watch a short video, your webcam records your face. The recording is analysed for the facial "
    "expressions your face displays (for example smiling), your head pose and whether you look at the screen: what a "
    "face displays, not what you feel. It is stored with the respondent id below, not your name, and used only for "
    "this study. No sound is recorded. You can stop at any time by closing this page; nothing is sent until the "
    "video ends."
)


@dataclass(frozen=True)
class CameraCheck:
    """A snapshot's check: faces found, the light on the (largest) face, and what to tell the respondent."""

    faces: int
    brightness: float
    face_ok: bool
    light_ok: bool
    message: str


_detector = None
_lock = threading.Lock()


def _get_detector():
    global _detector
    with _lock:
        if _detector is None:
            from .detect import create_detector

            _detector = create_detector("mtcnn")
        return _detector


def check_snapshot(jpeg: bytes) -> CameraCheck:
    """Faces and light in one camera snapshot (JPEG or PNG bytes); InputError when it is not an image."""
    if not isinstance(jpeg, bytes | bytearray) or not jpeg:
        raise InputError("the snapshot is empty")
    if len(jpeg) > MAX_SNAPSHOT_BYTES:
        raise InputError(f"the snapshot is over {MAX_SNAPSHOT_BYTES >> 20} MiB")
    image = decode_image(jpeg, "snapshot")
    if image is None:
        raise InputError("the snapshot is not an image")
    dets = _get_detector().detect(image)
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if len(dets):
        b = dets.boxes
        k = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
        x1, y1, x2, y2 = (int(v) for v in np.rint(b[k]))
        region = gray[max(0, y1) : max(y1 + 1, y2), max(0, x1) : max(x1 + 1, x2)]
        brightness = float(region.mean()) if region.size else float(gray.mean())
    else:
        brightness = float(gray.mean())
    face_ok = len(dets) == 1
    light_ok = LIGHT_RANGE[0] <= brightness <= LIGHT_RANGE[1]
    if len(dets) == 0:
        message = "No face found: sit facing the camera, with your whole face in the picture."
    elif len(dets) > 1:
        message = f"{len(dets)} faces found: please make sure only you are in the picture."
    elif not light_ok:
        message = ("Too dark: turn on a light in front of you, not behind you." if brightness < LIGHT_RANGE[0]
                   else "Too bright: move away from direct light or a window behind the camera.")  # fmt: skip
    else:
        message = "Your face is in the picture and well lit."
    return CameraCheck(len(dets), round(brightness, 1), face_ok, light_ok, message)


CONSENT_VERSION = "consent-" + __import__("hashlib").sha256(CONSENT.encode()).hexdigest()[:8]
"""The version of the consent text a respondent agreed to, stored with their recording."""


def link_token(request) -> str:
    """A respondent's link token, from the X-Ferpipe-Link header or the link query parameter."""
    return request.headers.get("x-ferpipe-link") or request.query_params.get("link") or ""


def routes(db_path_fn, token_fn, link_only: bool = False) -> list:
    """Starlette routes: POST /ferpipe/check (a snapshot) -> CameraCheck as JSON; GET /ferpipe/stimulus/{clip_id}
    -> the stimulus video, as the browser can play it.

    Either the dashboard's token (a researcher's page) or a respondent's signed link (ferpipe.access) opens them;
    a link opens only its own stimulus. ``link_only`` (the panel-only server): links alone."""
    import asyncio

    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route

    from .access import AccessError, RateLimit, check_link, client_address, env_limit, researcher_request
    from .media import browser_playable, previews
    from .store import Store

    def researcher(request: Request) -> bool:
        return not link_only and researcher_request(request, db_path_fn(), token_fn())

    # a respondent's snapshots and stimulus fetches, per client address (FERPIPE_PANEL_REQUESTS_PER_MINUTE, 120)
    rate = RateLimit(env_limit("FERPIPE_PANEL_REQUESTS_PER_MINUTE", 120), 60.0)

    def respondent(request: Request):
        """The respondent's link, or None (no link, or one that is not valid or has expired)."""
        token = link_token(request)
        if not token:
            return None
        try:
            return check_link(Store(db_path_fn()), db_path_fn(), token)
        except (AccessError, ValueError):
            return None

    async def check(request: Request) -> JSONResponse:
        if not await asyncio.to_thread(researcher, request):
            if await asyncio.to_thread(respondent, request) is None:
                return JSONResponse({"error": "not allowed"}, status_code=403)
            if not rate.allow(client_address(request)):
                return JSONResponse({"error": "too many requests; wait a moment"}, status_code=429)
        body = await request.body()
        try:
            result = await asyncio.to_thread(check_snapshot, body)  # detection off the event loop
        except InputError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(asdict(result))

    def prepare(clip_id: str) -> str:
        clip = Store(db_path_fn()).clip(clip_id)
        path = clip["path"]
        if not os.path.isfile(path):
            raise InputError("the stimulus file is missing from the media library")
        # one background encode however many respondents ask at once; this request waits for it off the event loop
        return path if browser_playable(path) else str(previews.start(path).wait(timeout=600))

    async def stimulus(request: Request) -> Response:
        clip_id = request.path_params["clip_id"]
        if not await asyncio.to_thread(researcher, request):
            link = await asyncio.to_thread(respondent, request)
            if link is None or link.stimulus_clip_id != clip_id:  # a link opens its own stimulus only
                return JSONResponse({"error": "not allowed"}, status_code=403)
            if not rate.allow(client_address(request)):
                return JSONResponse({"error": "too many requests; wait a moment"}, status_code=429)
        try:
            path = await asyncio.to_thread(prepare, clip_id)  # a preview encode never blocks the server
        except (ValueError, FerpipeError) as exc:
            return JSONResponse({"error": str(exc).splitlines()[0]}, status_code=404)
        media = "video/webm" if path.endswith(".webm") else "video/mp4"
        return FileResponse(path, media_type=media)

    return [Route("/ferpipe/check", check, methods=["POST"]),
            Route("/ferpipe/stimulus/{clip_id}", stimulus, methods=["GET"])]  # fmt: skip
