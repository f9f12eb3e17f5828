"""Labelled face data for the model lab: FER2013 and FER+ Parquet files, and image folders.

Every reader returns one ``LabelledFaces``: gray crops, a hard label per image (-1 where the
image has none, e.g. FER+ images without a majority) and, for FER+, the annotators' vote
distribution over the seven expressions. ``protocol`` names the labelling scheme, so that a
model with one output head per scheme can be scored with the head that learnt that scheme.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import polars as pl

from ..errors import InputError
from ..types import EXPRESSIONS

PROTOCOLS = ("fer2013", "ferplus", "folder", "wild")

# FER+ vote columns in ferpipe's EXPRESSIONS order (FER+ names them differently)
FERPLUS_VOTES = (
    "votes_anger", "votes_disgust", "votes_fear", "votes_happiness", "votes_sadness", "votes_surprise", "votes_neutral",
)  # fmt: skip
FERPLUS_OTHER_VOTES = ("votes_contempt", "votes_unknown", "votes_no_face")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class LabelledFaces:
    """Aligned columns for N labelled faces.

    images: (N, H, W) uint8 gray. labels: (N,) int64 in EXPRESSIONS order, -1 for no label.
    votes: (N, 7) float32 annotator vote distributions (rows sum to 1, or 0 where no vote
    counts), or None where the data has only hard labels.
    """

    images: np.ndarray
    labels: np.ndarray
    protocol: str
    votes: np.ndarray | None = None
    found: np.ndarray | None = None  # (N,) bool: the detector found the face (aligned crops of a domain file)
    domain: str = ""  # the data's name (its file's stem), for per-domain tables

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        n = len(self.images)
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W) uint8, got {self.images.shape} {self.images.dtype}")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must be ({n},), got {self.labels.shape}")
        if self.votes is not None and self.votes.shape != (n, len(EXPRESSIONS)):
            raise ValueError(f"votes must be ({n}, 7), got {self.votes.shape}")
        if self.found is not None and self.found.shape != (n,):
            raise ValueError(f"found must be ({n},), got {self.found.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labelled(self) -> np.ndarray:
        """Mask of the images that count for accuracy (a label among the seven)."""
        return (self.labels >= 0) & (self.labels < len(EXPRESSIONS))

    def subset(self, mask: np.ndarray) -> LabelledFaces:
        return LabelledFaces(
            self.images[mask],
            self.labels[mask],
            self.protocol,
            None if self.votes is None else self.votes[mask],
            None if self.found is None else self.found[mask],
            self.domain,
        )


def ferplus_targets(votes: np.ndarray, other: np.ndarray) -> np.ndarray:
    """FER+ vote counts (N, 7) in EXPRESSIONS order -> training distributions (N, 7).

    As in the FER+ majority protocol, a single vote for a class is dropped as noise. An image whose
    votes mostly say contempt, unknown or not a face gets an all-zero row (left out of training).
    """
    v = np.asarray(votes, dtype=np.float32).copy()
    v[v <= 1] = 0
    total = v.sum(axis=1, keepdims=True)
    keep = (total[:, 0] > 0) & (total[:, 0] >= np.asarray(other, dtype=np.float32).sum(axis=1))
    out = np.zeros_like(v)
    out[keep] = v[keep] / total[keep]
    return out


def _decode(blobs: pl.Series, name: str) -> np.ndarray:
    images = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE) for b in blobs]
    if any(img is None for img in images):
        raise InputError(f"{name}: some images are not decodable")
    if not images:
        return np.zeros((0, 48, 48), np.uint8)
    size = images[0].shape
    return np.stack([img if img.shape == size else cv2.resize(img, size[::-1]) for img in images])


def load_parquet(path: str | os.PathLike, split: str | None = None, limit: int | None = None) -> LabelledFaces:
    """FER2013 (label, image_jpeg) or FER+ (votes_*, label, image_png) Parquet -> LabelledFaces."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        df = pl.read_parquet(p)
    except Exception as exc:  # polars raises several types for non-parquet input
        raise InputError(f"{p.name}: not a readable Parquet file ({type(exc).__name__})") from None
    from .domains import is_domain_parquet

    if is_domain_parquet(df.columns):
        return load_domain(p, df, split, limit)
    if "image_png" in df.columns and all(c in df.columns for c in FERPLUS_VOTES):
        protocol, image_col = "ferplus", "image_png"
    elif "image_jpeg" in df.columns and "label" in df.columns:
        protocol, image_col = "fer2013", "image_jpeg"
    else:
        raise InputError(
            f"{p.name}: not a FER2013 (label, image_jpeg) or FER+ (votes_*, label, image_png) layout; "
            f"columns {df.columns[:8]}"
        )
    if split is not None:
        if "split" not in df.columns:
            raise InputError(f"{p.name}: has no split column")
        splits = sorted(df["split"].unique().to_list())
        df = df.filter(pl.col("split") == split)
        if df.is_empty():
            raise ValueError(f"split {split!r} not found; the file has {splits}")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if limit < df.height:
            df = df.sample(n=limit, seed=0)  # a fixed random subset, not the (label-sorted) head
    labels = df["label"].fill_null(-1).to_numpy().astype(np.int64) if "label" in df.columns else None
    if labels is None:
        labels = np.full(df.height, -1, np.int64)
    votes = None
    if protocol == "ferplus":
        labels = np.where(labels < len(EXPRESSIONS), labels, -1)  # contempt (7) is not one of the seven
        votes = ferplus_targets(
            df.select(FERPLUS_VOTES).to_numpy(),
            df.select([c for c in FERPLUS_OTHER_VOTES if c in df.columns]).to_numpy()
            if any(c in df.columns for c in FERPLUS_OTHER_VOTES)
            else np.zeros((df.height, 1)),
        )
    elif labels.size and (labels.min() < 0 or labels.max() >= len(EXPRESSIONS)):
        raise InputError(f"{p.name}: labels must be 0..6 in the FER2013 order")
    return LabelledFaces(_decode(df[image_col], p.name), labels, protocol, votes, domain=p.stem)


def is_domain_file(path: str | os.PathLike) -> bool:
    """Whether a file is a multi-domain Parquet (FER2013's layout plus ``person``)."""
    from .domains import is_domain_parquet

    p = Path(path)
    if p.suffix.lower() != ".parquet" or not p.is_file():
        return False
    try:
        return is_domain_parquet(list(pl.read_parquet_schema(p)))
    except Exception:  # not a Parquet file: load_faces says so
        return False


def load_domain(p: Path, df: pl.DataFrame, split: str | None, limit: int | None) -> LabelledFaces:
    """A multi-domain Parquet (FER2013's layout plus ``person``) as aligned crops, as the pipeline reads faces.

    Split ``train`` / ``dev``: the file's own split column where it has more than one value, else the dev split
    held out by photo or person (``domains.dev_mask``). No split: every row.
    """
    from .domains import align_domain

    crops = align_domain(p)
    keep = np.ones(len(crops.images), bool)
    if split is not None:
        splits = sorted(df["split"].unique().to_list()) if "split" in df.columns else []
        if split in ("train", "dev") and len(splits) <= 1:
            keep = ~crops.dev if split == "train" else crops.dev
        elif split in splits:
            keep = (df["split"] == split).to_numpy()
        else:
            raise ValueError(f"split {split!r} not found; the file has {splits or ['train', 'dev']}")
    idx = np.flatnonzero(keep)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if limit < len(idx):
            idx = np.sort(np.random.default_rng(0).choice(idx, limit, replace=False))
    labels = crops.labels[idx]
    if labels.size and (labels.min() < 0 or labels.max() >= len(EXPRESSIONS)):
        raise InputError(f"{p.name}: labels must be 0..6 in the FER2013 order")
    return LabelledFaces(crops.images[idx], labels, "wild", None, crops.found[idx], p.stem)


def image_folder_files(root: Path) -> list[tuple[Path, int]]:
    """(file, label) for root/<expression>/* images; unknown subfolder names are refused."""
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    classes = [d.name for d in sorted(root.iterdir()) if d.is_dir()]
    unknown = [c for c in classes if c not in EXPRESSIONS]
    if not classes or unknown:
        raise InputError(f"{root}: subfolders must be expression names {EXPRESSIONS}, found {classes}")
    files = [
        (f, EXPRESSIONS.index(c))
        for c in classes
        for f in sorted((root / c).iterdir())
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise InputError(f"{root}: no images in its expression subfolders")
    return files


def load_image_folder(root: Path, limit: int | None = None, size: int = 48) -> LabelledFaces:
    """root/<expression>/*.png|jpg crops -> LabelledFaces resized to size x size gray."""
    images, labels = [], []
    for f, label in image_folder_files(root):
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is None:
            continue
        images.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
        labels.append(label)
    if limit:
        images, labels = images[:limit], labels[:limit]
    return LabelledFaces(np.stack(images), np.array(labels, dtype=np.int64), "folder")


def load_faces(path: str | os.PathLike, split: str | None = None, limit: int | None = None) -> LabelledFaces:
    """Any supported layout: FER2013 or FER+ Parquet, or an image folder (root/<split>/<expression>/ or
    root/<expression>/)."""
    p = Path(path)
    if p.is_dir():
        return load_image_folder(p / split if split and (p / split).is_dir() else p, limit)
    return load_parquet(p, split, limit)
