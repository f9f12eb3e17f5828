"""Faces of other domains (web photos, posed, movies, news): aligned crops and a dev split by photo or person.

The multi-domain Parquets (``../shared/datasets/{expw,jaffe,imfdb,lfw_emotion}``) are FER2013's layout plus
``person`` and ``source_name``: face crops of any size, colour or gray. The pipeline never sees such a crop as it
is: it detects the face, aligns its five landmarks to FER_TEMPLATE and classifies that. So both training and
evaluation read these crops the same way (detect -> largest face -> align), and where the detector finds no face
in a crop that is known to be one, the whole crop, resized, stands in (counted as "face not found").

The dev split holds out whole groups: a photo (ExpW's ``source_name`` before ``#``) or a person, chosen by a hash
of the group key, so the same photo or poser never sits on both sides.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import polars as pl

from ..errors import InputError

log = logging.getLogger(__name__)

DEV_SHARE = 0.2  # share of groups held out as each domain's dev split
DOMAIN_NAMES = {"expw": "ExpW (web photos)", "jaffe": "JAFFE (posed, Japanese women)",
                "imfdb": "IMFDB (Indian movie frames)", "lfw_emotion": "LFW-emotion (news photos)",
                "ferplus": "FER+ (FER2013 faces, 10 annotators)", "fer2013": "FER2013"}  # fmt: skip


def is_domain_parquet(columns: list[str]) -> bool:
    """A multi-domain Parquet: FER2013's layout plus ``person`` (the group key for splitting)."""
    return {"image_jpeg", "label", "person"} <= set(columns)


def domain_of(path: str | os.PathLike) -> str:
    """The domain's short name: the file's stem (expw, jaffe, imfdb, lfw_emotion, or any other)."""
    return Path(path).stem


def group_keys(df: pl.DataFrame) -> list[str]:
    """One key per row that must stay on one side of a split: the person where known, else the photo."""
    person = df["person"].cast(pl.Utf8) if "person" in df.columns else pl.Series([None] * df.height, dtype=pl.Utf8)
    photo = (
        df["source_name"].cast(pl.Utf8).str.split("#").list.first()
        if "source_name" in df.columns
        else pl.Series([str(i) for i in range(df.height)])
    )
    return [p if p is not None else f"photo:{s}" for p, s in zip(person.to_list(), photo.to_list(), strict=True)]


def dev_mask(keys: list[str], share: float = DEV_SHARE) -> np.ndarray:
    """True for the rows whose group falls in the dev split (a stable hash of the key, not a random draw)."""
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}")

    def h(k: str) -> float:
        return int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big") / 2**64

    return np.array([h(k) < share for k in keys], bool)


@dataclass(frozen=True)
class AlignedCrops:
    """Aligned (N, size, size) gray crops of a domain file, with labels, dev flags and found flags."""

    images: np.ndarray
    labels: np.ndarray
    dev: np.ndarray
    found: np.ndarray
    domain: str

    def __post_init__(self) -> None:
        n = len(self.images)
        for name in ("labels", "dev", "found"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must be ({n},), got {getattr(self, name).shape}")


def _cache_path(path: Path, size: int) -> Path:
    from ..config import cache_dir

    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}|{size}|v1".encode()).hexdigest()[:16]
    return cache_dir() / "aligned" / f"{path.stem}-{size}-{key}.npz"


def align_domain(path: str | os.PathLike, size: int = 48, progress=None) -> AlignedCrops:
    """Every face of a domain Parquet through the pipeline's detect -> largest face -> align path (cached)."""
    from ..detect import create_detector
    from ..expression import align_faces
    from ..pipeline import Settings

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    cache = _cache_path(p, size)
    df = pl.read_parquet(p, columns=[c for c in ("label", "person", "source_name", "image_jpeg")
                                     if c in pl.read_parquet_schema(p)])  # fmt: skip
    if not is_domain_parquet([*df.columns, "person"]):
        raise InputError(f"{p.name}: not a face Parquet with label and image_jpeg columns")
    labels = df["label"].to_numpy().astype(np.int64)
    dev = dev_mask(group_keys(df))
    if cache.is_file():
        z = np.load(cache)
        if len(z["images"]) == df.height:
            return AlignedCrops(z["images"], labels, dev, z["found"], p.stem)
    settings = Settings()
    detector = create_detector(settings.detector, settings.detector_model, settings.min_face_size)
    images = np.zeros((df.height, size, size), np.uint8)
    found = np.zeros(df.height, bool)
    for i, blob in enumerate(df["image_jpeg"]):
        img = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"{p.name}: row {i} is not a decodable image")
        dets = detector.detect(img)
        if len(dets):
            images[i] = align_faces(img, dets[[dets.largest()]].landmarks, size, 1)[0, :, :, 0]
            found[i] = True
        else:  # a known face crop the detector missed: the whole crop, resized, as the stand-in
            images[i] = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), (size, size), interpolation=cv2.INTER_AREA)
        if progress and (i + 1) % 64 == 0:
            progress(i + 1, df.height)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, images=images, found=found)
    tmp.replace(cache)
    log.info("%s: faces found in %.1f%% of %d crops", p.name, 100 * found.mean(), df.height)
    return AlignedCrops(images, labels, dev, found, p.stem)
