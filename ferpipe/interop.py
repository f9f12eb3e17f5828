"""Other tools' files in and out: OpenFace 2.x/3.x CSV, py-feat's Fex CSV and iMotions-style exports.

``read_tool_file`` turns another tool's per-frame output into a ``types.ToolTimeline``; ``import_tool_file`` stores
it as a finished run of its own (its action units and other columns as signals under the tool's own names), on a
clip of its video when the video is given, else on a timeline-only clip. ``write_tool_file`` writes one of
ferpipe's runs in those layouts, so R and MATLAB scripts written for them read ferpipe's timelines. A file written
by ``write_tool_file`` reads back to the same values (ferpipe's extra columns keep what the layout has no column for).

Column tables: README, "Other tools' files".
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from .errors import InputError
from .ingest import ingest_file, printable
from .present import possessive
from .registry import sha256_file
from .types import EXPRESSIONS, IMPORT_FORMATS, TOOL_NAMES, ToolTimeline

log = logging.getLogger(__name__)

# ferpipe's expression names in each layout
FEX_EXPRESSIONS = dict(zip(EXPRESSIONS, ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"),
                           strict=True))  # fmt: skip
IMOTIONS_EXPRESSIONS = dict(zip(EXPRESSIONS, ("Anger", "Disgust", "Fear", "Joy", "Sadness", "Surprise", "Neutral"),
                                strict=True))  # fmt: skip
# what ferpipe adds to the OpenFace layout, for values OpenFace has no column for (read back by the importer)
FERPIPE_PREFIX = "ferpipe_"
_BOX = ("x", "y", "w", "h")
_EXTRA_FERPIPE = ("valence", "arousal", "attentive", "confidence")
MAX_IMPORT_MB = 512
# ferpipe's values in its iMotions-style file, read back on import
IMOTIONS_FERPIPE = {"valence": "Valence", "arousal": "Arousal", "attentive": "Attention",
                    "confidence": "Reading Confidence"}  # fmt: skip


@dataclass(frozen=True)
class ImportResult:
    """What ``import_tool_file`` stored: the clip, the run, and whether the same file's run was already there."""

    clip_id: str
    run_id: int
    tool: str
    rows: int
    faces: int
    signals: tuple[str, ...]
    reused: bool
    has_video: bool


def _read_table(path: Path, separator: str = ",", skip_rows: int = 0) -> pl.DataFrame:
    """A CSV as text columns with stripped names (OpenFace writes ', ' between names); one-line errors."""
    try:
        df = pl.read_csv(path, separator=separator, skip_rows=skip_rows, infer_schema_length=0,
                         truncate_ragged_lines=True)  # fmt: skip
    except (pl.exceptions.PolarsError, UnicodeDecodeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{printable(path.name)}: not a readable table ({first[:120]})") from None
    df = df.rename({c: c.strip() for c in df.columns})
    if df.height == 0:
        raise InputError(f"{printable(path.name)}: no rows")
    return df.with_columns(pl.col(c).str.strip_chars() for c in df.columns)


def _numbers(df: pl.DataFrame, name: str, col: str) -> np.ndarray:
    """A column as float64 (empty cells: NaN); InputError naming the column when it holds text."""
    try:
        return df[col].replace("", None).cast(pl.Float64, strict=True).fill_null(float("nan")).to_numpy()
    except pl.exceptions.PolarsError:
        bad = (
            df[col].replace("", None).cast(pl.Float64, strict=False).is_null() & df[col].replace("", None).is_not_null()
        )
        sample = df[col].filter(bad).head(1).to_list()
        raise InputError(
            f"{name}: column {col!r} holds text ({printable(str(sample[0]))[:40]!r}), not numbers"
        ) from None


def _need(df: pl.DataFrame, name: str, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{name}: not {what} output: missing column{'s' * (len(missing) > 1)} {', '.join(missing)}")


def _numeric_extra(df: pl.DataFrame, name: str, columns: list[str]) -> dict[str, np.ndarray]:
    """The columns that hold numbers, as signals under their own names (text columns are left out)."""
    out = {}
    for c in columns:
        values = df[c].replace("", None).cast(pl.Float64, strict=False)
        if values.null_count() < df.height and values.null_count() == df[c].replace("", None).null_count():
            out[c] = values.fill_null(float("nan")).to_numpy()
    return out


def _ferpipe_columns(df: pl.DataFrame, name: str, prefix: str) -> tuple[np.ndarray | None, np.ndarray | None,
                                                                          dict[str, np.ndarray]]:  # fmt: skip
    """ferpipe's own columns in one of its exports: (probs, box x/y/w/h, the rest) or Nones."""
    probs = None
    if all(f"{prefix}{e}" in df.columns for e in EXPRESSIONS):
        probs = np.stack([_numbers(df, name, f"{prefix}{e}") for e in EXPRESSIONS], axis=1)
    box = None
    if all(f"{prefix}{b}" in df.columns for b in _BOX):
        box = np.stack([_numbers(df, name, f"{prefix}{b}") for b in _BOX], axis=1)
    rest = {c: _numbers(df, name, f"{prefix}{c}") for c in _EXTRA_FERPIPE if f"{prefix}{c}" in df.columns}
    return probs, box, rest


def _xywh(box: np.ndarray) -> np.ndarray:
    return np.stack([box[:, 0], box[:, 1], box[:, 0] + box[:, 2], box[:, 1] + box[:, 3]], axis=1)


def _unit_score(values: np.ndarray, name: str, col: str) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise InputError(f"{name}: {col} must be between 0 and 1, found {finite.min():g} to {finite.max():g}")
    return values


def read_openface(path: Path) -> ToolTimeline:
    """OpenFace 2.x/3.x CSV (FeatureExtraction, FaceLandmarkVidMulti): frame (1-based), face_id, timestamp (s),
    confidence, success, pose_Rx/Ry/Rz (radians: pitch, yaw, roll), gaze and AUxx_r/AUxx_c. Rows with success 0
    (no face found) are left out; landmarks and shape parameters are not kept."""
    name = printable(path.name)
    df = _read_table(path)
    _need(df, name, ("frame", "timestamp", "confidence", "success"), "OpenFace")
    success = _numbers(df, name, "success")
    all_frames = _numbers(df, name, "frame")
    keep = success > 0
    df = df.filter(pl.Series(keep))
    if df.height == 0:
        raise InputError(f"{name}: OpenFace found no face in any frame (success is 0 everywhere)")
    frame = _numbers(df, name, "frame")
    t_s = _numbers(df, name, "timestamp")
    face = _numbers(df, name, "face_id") if "face_id" in df.columns else np.zeros(df.height)
    for col, v in (("frame", frame), ("timestamp", t_s), ("face_id", face)):
        if not np.isfinite(v).all() or (v < 0).any():
            raise InputError(f"{name}: column {col!r} must hold numbers >= 0 in every row")
    rad = {c: _numbers(df, name, c) if c in df.columns else np.full(df.height, np.nan)
           for c in ("pose_Rx", "pose_Ry", "pose_Rz")}  # fmt: skip
    pose = np.degrees(np.stack([rad["pose_Ry"], rad["pose_Rx"], rad["pose_Rz"]], axis=1))
    probs, box, mine = _ferpipe_columns(df, name, FERPIPE_PREFIX)
    boxes = _xywh(box) if box is not None else np.full((df.height, 4), np.nan)
    skip = {"frame", "face_id", "timestamp", "confidence", "success", "pose_Rx", "pose_Ry", "pose_Rz"}
    own = [c for c in df.columns if c not in skip and not c.startswith(FERPIPE_PREFIX)
           and not (c[:2] in ("x_", "y_", "X_", "Y_", "Z_", "p_") or c.startswith(("eye_lmk_", "p_")))]  # fmt: skip
    extra = _numeric_extra(df, name, own)
    extra.update({f"{FERPIPE_PREFIX}{k}": v for k, v in mine.items()})
    return ToolTimeline("openface", face.astype(np.int64), np.maximum(frame - 1, 0).astype(np.int64), t_s * 1000.0,
                        boxes, _unit_score(_numbers(df, name, "confidence"), name, "confidence"), pose, probs, extra,
                        int(np.nanmax(all_frames)) if np.isfinite(all_frames).any() else None)  # fmt: skip


def _approx_time(df: pl.DataFrame, name: str) -> np.ndarray | None:
    """py-feat's approx_time (seconds, or 'MM:SS.ss' text), or None."""
    if "approx_time" not in df.columns:
        return None
    col = df["approx_time"]
    numeric = col.cast(pl.Float64, strict=False)
    if numeric.null_count() == 0:
        return numeric.to_numpy()
    parts = col.str.split(":")
    try:
        return np.array([sum(float(x) * 60**k for k, x in enumerate(reversed(p))) for p in parts.to_list()])
    except (TypeError, ValueError):
        raise InputError(f"{name}: approx_time must be seconds or MM:SS.ss") from None


def read_pyfeat(path: Path, fps: float | None = None) -> ToolTimeline:
    """py-feat's Fex CSV (Detector.detect_image/detect_video): frame (0-based), FaceRectX/Y/Width/Height,
    FaceScore, AUxx, Pitch/Roll/Yaw (degrees), the seven emotions, input, and Identity where py-feat wrote it.
    Times: approx_time when present, else frame / fps (``fps``: from --fps or the video)."""
    name = printable(path.name)
    df = _read_table(path)
    emotions = tuple(FEX_EXPRESSIONS.values())
    _need(df, name, ("frame", "FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight", "FaceScore", *emotions),
          "py-feat (Fex)")  # fmt: skip
    rect = np.stack([_numbers(df, name, c) for c in ("FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight")], 1)
    # py-feat writes empty rects and scores for frames without a face
    keep = np.isfinite(rect).all(axis=1) | np.isfinite(_numbers(df, name, "FaceScore"))
    all_frames = _numbers(df, name, "frame")
    df, rect = df.filter(pl.Series(keep)), rect[keep]
    if df.height == 0:
        raise InputError(f"{name}: py-feat found no face in any frame")
    frame = _numbers(df, name, "frame")
    if not np.isfinite(frame).all() or (frame < 0).any():
        raise InputError(f"{name}: column 'frame' must hold numbers >= 0 in every row")
    t_s = _approx_time(df, name)
    if t_s is None:
        if fps is None:
            raise InputError(f"{name}: a Fex file has frame numbers, not times: give --fps or --video")
        t_s = frame / fps
    if "Identity" in df.columns:
        ids = df["Identity"].str.extract(r"(\d+)$").cast(pl.Int64, strict=False)
        if ids.null_count():
            codes = {v: k for k, v in enumerate(dict.fromkeys(df["Identity"].to_list()))}
            ids = pl.Series([codes[v] for v in df["Identity"].to_list()])
        face = ids.to_numpy()
    else:  # faces of a frame in left-to-right order
        face = (pl.DataFrame({"frame": frame, "x": rect[:, 0]}).with_columns(
            pl.col("x").rank("ordinal").over("frame").alias("k"))["k"].to_numpy() - 1)  # fmt: skip
    probs = np.stack([_numbers(df, name, e) for e in emotions], axis=1)
    pose = np.stack([_numbers(df, name, c) if c in df.columns else np.full(df.height, np.nan)
                     for c in ("Yaw", "Pitch", "Roll")], axis=1)  # fmt: skip
    skip = {"frame", "FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight", "FaceScore", *emotions, "input",
            "Identity", "approx_time", "Pitch", "Roll", "Yaw", "frame_width", "frame_height"}  # fmt: skip
    own = [c for c in df.columns if c not in skip and not c.startswith(FERPIPE_PREFIX)
           and not (c[:2] in ("x_", "y_") and c[2:].isdigit())]  # fmt: skip
    extra = _numeric_extra(df, name, own)
    _, _, mine = _ferpipe_columns(df, name, FERPIPE_PREFIX)
    extra.update({f"{FERPIPE_PREFIX}{k}": v for k, v in mine.items()})
    return ToolTimeline("pyfeat", face.astype(np.int64), frame.astype(np.int64), t_s * 1000.0, _xywh(rect),
                        _unit_score(_numbers(df, name, "FaceScore"), name, "FaceScore"), pose, probs, extra,
                        int(np.nanmax(all_frames)) + 1 if np.isfinite(all_frames).any() else None)  # fmt: skip


def _imotions_header(path: Path) -> tuple[int, dict[str, str]]:
    """(lines before the column row, the '#Key : value' metadata)."""
    meta, skip = {}, 0
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        for line in fh:
            text = line.rstrip("\r\n").strip("\t ")
            if text.startswith("#"):
                key, _, value = text[1:].partition(":")
                meta[key.strip()] = value.strip()
            elif text:
                break
            skip += 1
            if skip > 200:
                break
    return skip, meta


def read_imotions(path: Path) -> ToolTimeline:
    """A tab-separated iMotions export (AFFDEX or Emotient FACET) or ferpipe's file in that layout: '#Key : value'
    lines, then Timestamp (ms), FrameNo, FaceRect X/Y/Width/Height, 'Yaw/Pitch/Roll Degrees' and the engine's
    columns. Emotion evidence and AUs are kept as signals under their own names (their scales are the engine's);
    '<Emotion> Probability' columns (ferpipe's) are read back as expressions."""
    name = printable(path.name)
    skip, meta = _imotions_header(path)
    df = _read_table(path, separator="\t", skip_rows=skip)
    df = df.select([c for c in df.columns if c and not c.startswith("_duplicated_")])
    _need(df, name, ("Timestamp",), "iMotions")
    ts = _numbers(df, name, "Timestamp")
    keep = np.isfinite(ts)
    if "FaceRect Width" in df.columns:  # rows without a face have an empty rect (and score)
        face_seen = np.isfinite(_numbers(df, name, "FaceRect Width"))
        if "Face Score" in df.columns:
            face_seen |= np.isfinite(_numbers(df, name, "Face Score"))
        keep &= face_seen
    df = df.filter(pl.Series(keep))
    if df.height == 0:
        raise InputError(f"{name}: no row with a face and a time")
    if "Name" in df.columns and df["Name"].n_unique() > 1:
        raise InputError(f"{name}: holds {df['Name'].n_unique()} respondents; import one respondent's file at a time")
    ts = _numbers(df, name, "Timestamp")
    if (ts < 0).any():
        raise InputError(f"{name}: Timestamp must be >= 0 ms")
    frame = _numbers(df, name, "FrameNo") if "FrameNo" in df.columns else np.arange(df.height, dtype=float)
    face = _numbers(df, name, "FaceId") if "FaceId" in df.columns else np.zeros(df.height)
    if "FaceRect X" in df.columns:
        rect = np.stack([_numbers(df, name, f"FaceRect {c}") for c in ("X", "Y", "Width", "Height")], axis=1)
        boxes = _xywh(rect)
    else:
        boxes = np.full((df.height, 4), np.nan)
    pose = np.stack([_numbers(df, name, f"{c} Degrees") if f"{c} Degrees" in df.columns else np.full(df.height, np.nan)
                     for c in ("Yaw", "Pitch", "Roll")], axis=1)  # fmt: skip
    cols = [f"{v} Probability" for v in IMOTIONS_EXPRESSIONS.values()]
    probs = np.stack([_numbers(df, name, c) for c in cols], axis=1) if all(c in df.columns for c in cols) else None
    score = _numbers(df, name, "Face Score") if "Face Score" in df.columns else np.full(df.height, np.nan)
    skip_cols = {"StudyName", "ExportDate", "Name", "Age", "Gender", "StimulusName", "SlideType", "EventSource",
                 "Timestamp", "MediaTime", "PostMarker", "Annotation", "FrameNo", "FrameTime", "NoOfFaces", "FaceId",
                 "FaceRect X", "FaceRect Y", "FaceRect Width", "FaceRect Height", "Yaw Degrees", "Pitch Degrees",
                 "Roll Degrees", "Face Score", "LiveMarker", "KeyStroke", "MarkerText", "SceneType", "SceneOutput",
                 "SceneParent", *cols}  # fmt: skip
    mine = {ours: theirs for ours, theirs in IMOTIONS_FERPIPE.items() if theirs in df.columns}
    own = [c for c in df.columns if c not in skip_cols and c not in mine.values() and not c.endswith((" X", " Y"))]
    extra = _numeric_extra(df, name, own)
    extra.update({f"{FERPIPE_PREFIX}{ours}": _numbers(df, name, theirs) for ours, theirs in mine.items()})
    tl = ToolTimeline("imotions", face.astype(np.int64), np.maximum(frame, 0).astype(np.int64), ts, boxes,
                      _unit_score(score, name, "Face Score"), pose, probs, extra)  # fmt: skip
    log.info("%s: iMotions export %s", name, ", ".join(f"{k}={v}" for k, v in meta.items()))
    return tl


def read_tool_file(path: str | os.PathLike, fmt: str, fps: float | None = None) -> ToolTimeline:
    """Another tool's file as a ToolTimeline (``fmt``: openface, pyfeat or imotions); InputError for a file that is
    not what ``fmt`` says, or is malformed."""
    if fmt not in IMPORT_FORMATS:
        raise ValueError(f"--format must be one of {', '.join(IMPORT_FORMATS)}, got {fmt!r}")
    if fps is not None and not (math.isfinite(fps) and 0 < fps <= 1000):
        raise ValueError(f"--fps must be between 0 and 1000, got {fps!r}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{printable(str(p))}: no such file")
    if p.stat().st_size > MAX_IMPORT_MB * 2**20:
        raise InputError(f"{printable(p.name)}: over the {MAX_IMPORT_MB} MiB an imported file may have")
    with p.open("rb") as fh:
        head = fh.read(4096)
    if b"\0" in head:
        raise InputError(f"{printable(p.name)}: a binary file, not {TOOL_NAMES[fmt]} output")
    reader = {"openface": read_openface, "pyfeat": lambda q: read_pyfeat(q, fps), "imotions": read_imotions}[fmt]
    return reader(p)


def timeline_rows(tl: ToolTimeline, attention_yaw: float = 30.0, attention_pitch: float = 20.0) -> pl.DataFrame:
    """A ToolTimeline as observation rows (store.OBS_SCHEMA, run_id 0): expressions NULL where the tool reads none,
    attention derived from the tool's head pose (|yaw| and |pitch| inside the cone), or ferpipe's own where the
    file is a ferpipe export."""
    from .expression import circumplex
    from .store import OBS_SCHEMA

    n = len(tl)
    b = tl.boxes
    data: dict[str, object] = {
        "run_id": np.zeros(n, np.int64), "face_id": tl.face_id, "frame_index": tl.frame_index,
        "timestamp_ms": tl.timestamp_ms, "x": b[:, 0], "y": b[:, 1], "w": b[:, 2] - b[:, 0], "h": b[:, 3] - b[:, 1],
        "det_score": tl.score, "yaw_deg": tl.pose[:, 0], "pitch_deg": tl.pose[:, 1], "roll_deg": tl.pose[:, 2],
    }  # fmt: skip
    if tl.probs is not None:
        valence, arousal = circumplex(np.nan_to_num(tl.probs.astype(np.float64), nan=0.0))
        data.update({e: tl.probs[:, k] for k, e in enumerate(EXPRESSIONS)}, valence=valence, arousal=arousal)
    mine = {k[len(FERPIPE_PREFIX) :]: v for k, v in tl.extra.items() if k.startswith(FERPIPE_PREFIX)}
    data.update({k: mine[k] for k in ("valence", "arousal", "confidence") if k in mine})
    pose_ok = np.isfinite(tl.pose[:, :2]).all(axis=1)
    derived = np.where(pose_ok, (np.abs(tl.pose[:, 0]) <= attention_yaw) & (np.abs(tl.pose[:, 1]) <= attention_pitch),
                       np.nan)  # fmt: skip
    data["attentive"] = mine.get("attentive", derived)
    frame = pl.DataFrame({k: np.asarray(v) for k, v in data.items()})
    missing = [c for c in OBS_SCHEMA if c not in frame.columns]
    frame = frame.with_columns(pl.lit(None, dtype=OBS_SCHEMA[c]).alias(c) for c in missing)
    floats = [c for c, t in OBS_SCHEMA.items() if t == pl.Float32]
    frame = frame.with_columns(pl.col(c).cast(pl.Float32).fill_nan(None) for c in floats)
    attentive = frame["attentive"].cast(pl.Float64).fill_nan(None).cast(pl.Boolean)
    return frame.with_columns(attentive.alias("attentive")).select([pl.col(c).cast(t) for c, t in OBS_SCHEMA.items()])


def signal_rows(tl: ToolTimeline) -> pl.DataFrame:
    """The tool's own columns as (face_id, timestamp_ms, name, value) rows (ferpipe's own export columns are not
    among them: they are read back into the observations)."""
    names = [k for k in tl.extra if not k.startswith(FERPIPE_PREFIX)]
    if not names:
        return pl.DataFrame(schema={"face_id": pl.Int64, "timestamp_ms": pl.Float64, "name": pl.Utf8,
                                    "value": pl.Float32})  # fmt: skip
    wide = pl.DataFrame({"face_id": tl.face_id, "timestamp_ms": tl.timestamp_ms, **{k: tl.extra[k] for k in names}})
    return (wide.unpivot(index=["face_id", "timestamp_ms"], variable_name="name", value_name="value")
            .with_columns(pl.col("value").cast(pl.Float32).fill_nan(None)))  # fmt: skip


def import_tool_file(store, path: str | os.PathLike, fmt: str, video: str | os.PathLike | None = None,
                     fps: float | None = None, title: str | None = None,
                     tags: dict[str, str] | None = None) -> ImportResult:  # fmt: skip
    """Store another tool's file as a run of its own. With ``video`` (the recording the file was made from) the run
    belongs to that video's clip, and a file that runs past the video's end is refused; without it, a
    timeline-only clip is made for the file (a copy kept in the media library). Nothing is stored unless all of
    the file is read; importing the same file again reuses its run."""
    from .config import media_dir

    src = Path(path).expanduser()
    library = media_dir(store.path)
    item = None
    if video is not None:
        v = Path(video).expanduser()
        if not v.is_file():
            raise InputError(f"{printable(str(v))}: no such file")
        before = {p.name for p in library.iterdir()} if library.is_dir() else set()
        item = ingest_file(v, library, title)  # copied into the library (content-addressed) and probed there
        fps = fps or item.info.fps
    tool = TOOL_NAMES.get(fmt, fmt)
    try:
        tl = read_tool_file(src, fmt, fps)
        end_s = float(tl.timestamp_ms.max()) / 1000.0
        if item is not None:
            info = item.info
            slack = max(0.5, 2.0 / (info.fps or 25.0))
            if end_s > info.duration_s + slack:
                raise InputError(f"{printable(src.name)} runs to {end_s:.1f} s, but {printable(Path(video).name)} is "
                                 f"{info.duration_s:.1f} s long: is it the output for another recording?")  # fmt: skip
            if info.frame_count and int(tl.frame_index.max()) > info.frame_count + 2:
                raise InputError(f"{printable(src.name)} has frame {int(tl.frame_index.max()) + 1}, but "
                                 f"{printable(Path(video).name)} has {info.frame_count} frames: another recording?")  # fmt: skip
            covered = tl.frames_in_file
            if covered and info.frame_count and covered < 0.5 * info.frame_count:  # they write every frame they read
                raise InputError(f"{printable(src.name)} covers {covered} frames, but {printable(Path(video).name)} "
                                 f"has {info.frame_count}: is it the output for another recording?")  # fmt: skip
    except BaseException:
        if item is not None and Path(item.info.path).name not in before:  # leave the library as it was
            Path(item.info.path).unlink(missing_ok=True)
        raise
    rows = timeline_rows(tl)
    signals = signal_rows(tl)
    file_sha = sha256_file(src)
    settings = {"imported": fmt, "tool": tool, "file": printable(src.name), "file_sha256": file_sha,
                "signals": sorted({k for k in tl.extra if not k.startswith(FERPIPE_PREFIX)}),
                "expressions": tl.probs is not None,
                "attention": "ferpipe's" if f"{FERPIPE_PREFIX}attentive" in tl.extra
                else f"derived from {possessive(tool)} head pose (|yaw| and |pitch| within 30 and 20 degrees)"}  # fmt: skip
    with store.holding():
        if item is not None:
            vi = item.info
            store.upsert_clip(vi.sha256[:12], {"sha256": vi.sha256, "path": vi.path, "source_uri": item.source_uri,
                              "title": item.default_title, "duration_s": vi.duration_s, "fps": vi.fps,
                              "width": vi.width, "height": vi.height, "frame_count": vi.frame_count,
                              "rotation": vi.rotation}, tags or {}, title=item.title)  # fmt: skip
            clip_id = vi.sha256[:12]
        else:
            clip_id = file_sha[:12]
            target = library / f"{file_sha}{src.suffix.lower() or '.csv'}"
            if not target.exists():
                library.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=library, prefix=".import-", suffix=src.suffix)
                os.close(fd)
                shutil.copyfile(src, tmp)
                os.replace(tmp, target)
            frames = np.unique(tl.timestamp_ms)
            step = float(np.median(np.diff(frames))) / 1000.0 if frames.size > 1 else 0.0
            step = 1.0 / fps if fps else step
            rate = fps or (1.0 / step if step > 0 else None)
            finite = tl.boxes[np.isfinite(tl.boxes).all(axis=1)]
            store.upsert_clip(clip_id, {
                "sha256": file_sha, "path": str(target), "source_uri": printable(str(src.resolve())),
                "title": f"{printable(src.stem)} ({tool} output)", "duration_s": end_s + (step or 0.0),
                "fps": rate, "width": int(np.ceil(finite[:, 2].max())) if finite.size else None,
                "height": int(np.ceil(finite[:, 3].max())) if finite.size else None,
                "frame_count": int(tl.frame_index.max()) + 1, "rotation": 0,
            }, {**(tags or {}), "source tool": tool}, title=title)  # fmt: skip
        run, reused = store.import_run(clip_id, tool, settings, rows, signals)
    return ImportResult(clip_id, run.run_id, tool, rows.height, int(np.unique(tl.face_id).size),
                        tuple(settings["signals"]), reused, video is not None)  # fmt: skip


# ---- out ---------------------------------------------------------------------------------------------------------
def export_frame(store, clip_id: str, run_id: int, fmt: str) -> tuple[pl.DataFrame, list[str]]:
    """A run's timeline in another tool's layout: (table, metadata lines for the iMotions header)."""
    from . import __version__

    if fmt not in IMPORT_FORMATS:
        raise ValueError(f"--format must be csv, parquet, {', '.join(IMPORT_FORMATS)}, got {fmt!r}")
    tl = store.timeline_export(clip_id, run_id)
    sig = store.tool_signals(run_id)
    if sig.width > 2:  # the tool's own signals, beside each reading (same face, same time)
        tl = tl.with_columns((pl.col("timestamp_s") * 1000.0).alias("_t"))
        tl = tl.join(sig.rename({"timestamp_ms": "_t"}), on=["face_id", "_t"], how="left").drop("_t")
    own = [c for c in sig.columns if c not in ("face_id", "timestamp_ms")]
    clip = store.clip(clip_id)
    run = store.run(run_id)
    if fmt == "openface":
        out = tl.select(
            (pl.col("frame_index") + 1).alias("frame"), pl.col("person_id").alias("face_id"),
            pl.col("timestamp_s").alias("timestamp"), pl.col("det_score").fill_null(0.0).alias("confidence"),
            pl.lit(1).alias("success"), pl.col("pitch_deg").radians().alias("pose_Rx"),
            pl.col("yaw_deg").radians().alias("pose_Ry"), pl.col("roll_deg").radians().alias("pose_Rz"),
            *[pl.col(c) for c in own],
            *[pl.col(c).alias(f"{FERPIPE_PREFIX}{c}") for c in (*_BOX, *EXPRESSIONS, "valence", "arousal")],
            pl.col("attentive").cast(pl.Int8).alias(f"{FERPIPE_PREFIX}attentive"),
            pl.col("confidence").alias(f"{FERPIPE_PREFIX}confidence"),
        )  # fmt: skip
        return out, []
    if fmt == "pyfeat":
        out = tl.select(
            pl.col("frame_index").alias("frame"), pl.col("x").alias("FaceRectX"), pl.col("y").alias("FaceRectY"),
            pl.col("w").alias("FaceRectWidth"), pl.col("h").alias("FaceRectHeight"),
            pl.col("det_score").alias("FaceScore"), *[pl.col(c) for c in own],
            pl.col("pitch_deg").alias("Pitch"), pl.col("roll_deg").alias("Roll"), pl.col("yaw_deg").alias("Yaw"),
            *[pl.col(e).alias(f) for e, f in FEX_EXPRESSIONS.items()],
            pl.lit(Path(clip["path"]).name).alias("input"),
            pl.format("Person_{}", pl.col("person_id")).alias("Identity"),
            pl.col("timestamp_s").alias("approx_time"),
            *[pl.col(c).alias(f"{FERPIPE_PREFIX}{c}") for c in ("valence", "arousal")],
            pl.col("attentive").cast(pl.Int8).alias(f"{FERPIPE_PREFIX}attentive"),
            pl.col("confidence").alias(f"{FERPIPE_PREFIX}confidence"),
        )  # fmt: skip
        return out, []
    n_faces = pl.len().over("frame_index").alias("NoOfFaces")
    out = tl.select(
        pl.lit("ferpipe export").alias("StudyName"), pl.lit(time.strftime("%Y%m%d")).alias("ExportDate"),
        pl.col("person").alias("Name"), pl.lit(clip["title"] or clip_id).alias("StimulusName"),
        pl.lit(f"ferpipe {run.model}").alias("EventSource"),
        (pl.col("timestamp_s") * 1000.0).alias("Timestamp"), (pl.col("timestamp_s") * 1000.0).alias("MediaTime"),
        pl.col("frame_index").alias("FrameNo"), n_faces, pl.col("person_id").alias("FaceId"),
        pl.col("x").alias("FaceRect X"), pl.col("y").alias("FaceRect Y"), pl.col("w").alias("FaceRect Width"),
        pl.col("h").alias("FaceRect Height"), pl.col("det_score").alias("Face Score"),
        *[pl.col(e).alias(f"{v} Probability") for e, v in IMOTIONS_EXPRESSIONS.items()],
        pl.col("valence").alias("Valence"), pl.col("arousal").alias("Arousal"),
        pl.col("attentive").cast(pl.Int8).alias("Attention"), pl.col("confidence").alias("Reading Confidence"),
        pl.col("yaw_deg").alias("Yaw Degrees"), pl.col("pitch_deg").alias("Pitch Degrees"),
        pl.col("roll_deg").alias("Roll Degrees"), *[pl.col(c) for c in own],
    )  # fmt: skip
    meta = ["#Study : ferpipe export", f"#Date : {time.strftime('%Y%m%d %H:%M:%S')}",
            f"#Version : ferpipe {__version__}", f"#Clip : {clip_id}", f"#Run : {run_id} ({run.model})",
            "#Note : expressions are what faces display, not what people feel; probabilities are 0-1"]  # fmt: skip
    return out, meta


def tool_file_bytes(store, clip_id: str, run_id: int, fmt: str) -> tuple[bytes, int]:
    """A run in another tool's layout as file bytes (openface/pyfeat: CSV; imotions: tab-separated with a metadata
    header; text cells that a spreadsheet would run as formulas are quoted), and its row count."""
    import io

    from .report import safe_for_spreadsheets

    df, meta = export_frame(store, clip_id, run_id, fmt)
    df = safe_for_spreadsheets(df)
    buf = io.BytesIO()
    if fmt == "imotions":
        buf.write(("\n".join(meta) + "\n\n").encode())
        df.write_csv(buf, separator="\t")
    else:
        df.write_csv(buf)
    return buf.getvalue(), df.height


def write_tool_file(store, clip_id: str, run_id: int, fmt: str, path: str | os.PathLike) -> int:
    """Write a run in another tool's layout (tool_file_bytes), atomically; returns the rows written."""
    payload, n = tool_file_bytes(store, clip_id, run_id, fmt)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return n
