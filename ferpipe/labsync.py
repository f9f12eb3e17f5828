"""Lab sync: Lab Streaming Layer (LSL) out and in during live runs, and XDF recordings aligned to a clip.

- ``FaceOutlet`` publishes one LSL sample per analysed face (``process --live ... --lsl``). Sample times are in
  LSL's clock: the clip's time 0 is ``lsl_t0`` on that clock (kept with the clip and in the stream's metadata), so
  a reading at video time t has the LSL timestamp lsl_t0 + t.
- ``MarkerListener`` reads a named LSL marker stream during a live run (``--lsl-markers NAME``) and stores each
  marker as an event marker on the clip's own timeline (its LSL time minus lsl_t0, after LSL's clock correction).
- ``import_xdf`` reads a LabRecorder XDF file (pyxdf): marker streams become event markers, numeric streams
  (GSR, heart rate...) recorded signals beside the clip, aligned by a sync marker, a given offset, or the clip's own
  lsl_t0 when it was recorded live with ``--lsl``.

pylsl and pyxdf come with the ``lab`` extra (``pip install 'ferpipe[lab]'``).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from . import CAVEAT, __version__
from .errors import InputError
from .ingest import printable
from .types import EXPRESSIONS, Observations, StreamSignal

log = logging.getLogger(__name__)

# The outlet's channels, in order: (label, unit, what)
LSL_CHANNELS: tuple[tuple[str, str, str], ...] = (
    ("time_s", "seconds", "video time of the frame (the clip's own clock)"),
    ("track", "id", "face track id (tracks are linked into people when the run ends)"),
    *((e, "probability", f"displayed expression '{e}' (0-1)") for e in EXPRESSIONS),
    ("valence", "derived", "valence derived from the probabilities (-1..1)"),
    ("arousal", "derived", "arousal derived from the probabilities (-1..1)"),
    ("attentive", "0/1", "facing the camera within the attention cone, eyes open (NaN: no face mesh)"),
    ("yaw", "degrees", "head yaw"),
    ("pitch", "degrees", "head pitch"),
    ("roll", "degrees", "head roll"),
)
_FRAME_COLUMNS = ("timestamp_ms", "face_id", *EXPRESSIONS, "valence", "arousal", "attentive", "yaw_deg", "pitch_deg",
                  "roll_deg")  # fmt: skip
MAX_STREAM_HZ = 100.0  # numeric XDF streams above this rate are averaged down to it
MAX_STREAM_CHANNELS = 16  # wider numeric streams (EEG...) are left out unless named with --stream


def _pylsl():
    try:
        import pylsl
    except ImportError:  # pragma: no cover - the lab extra is part of the test set
        raise InputError("LSL needs pylsl: pip install 'ferpipe[lab]'") from None
    return pylsl


def lsl_clock() -> float:
    """Now on LSL's clock (seconds)."""
    return float(_pylsl().local_clock())


def lsl_t0_of(t0_wall: float) -> float:
    """The LSL-clock time of a wall-clock (epoch) moment: the live clip's time 0."""
    return lsl_clock() - (time.time() - float(t0_wall))


class FaceOutlet:
    """An LSL outlet of ferpipe's readings, one sample per analysed face, timestamped in LSL's clock."""

    def __init__(self, clip_id: str, lsl_t0: float, model: str, name: str | None = None) -> None:
        pylsl = _pylsl()
        self.lsl_t0 = float(lsl_t0)
        self.name = name or f"ferpipe-{clip_id}"
        info = pylsl.StreamInfo(self.name, "FacialExpressions", len(LSL_CHANNELS), pylsl.IRREGULAR_RATE,
                                pylsl.cf_double64, f"ferpipe-{clip_id}")  # fmt: skip
        desc = info.desc()
        channels = desc.append_child("channels")
        for label, unit, what in LSL_CHANNELS:
            ch = channels.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", unit)
            ch.append_child_value("type", what)
        meta = desc.append_child("ferpipe")
        meta.append_child_value("version", __version__)
        meta.append_child_value("clip_id", clip_id)
        meta.append_child_value("model", escape(model))
        meta.append_child_value("lsl_t0", repr(self.lsl_t0))
        meta.append_child_value("clock", "timestamp = lsl_t0 + time_s (LSL local_clock seconds)")
        meta.append_child_value("caveat", CAVEAT)
        self.outlet = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=360)
        self.pushed = 0

    def push(self, run_id: int, rows: Observations) -> int:
        """Push a batch of observations exactly as the store writes them (store.observation_frame: the same float32
        values); returns the samples pushed."""
        from .store import observation_frame

        if not len(rows):
            return 0
        frame = observation_frame(run_id, rows).select(_FRAME_COLUMNS)
        values = frame.with_columns(frame["attentive"].cast(frame["valence"].dtype)).fill_null(float("nan"))
        arr = values.to_numpy().astype(np.float64)
        arr[:, 0] /= 1000.0  # ms -> s
        for row in arr:
            self.outlet.push_sample(row.tolist(), self.lsl_t0 + float(row[0]))
        self.pushed += arr.shape[0]
        return arr.shape[0]

    def close(self, linger_s: float = 1.0) -> None:
        """Close the outlet after giving connected inlets a moment to receive the last samples."""
        if self.outlet.have_consumers():
            time.sleep(linger_s)
        del self.outlet


class MarkerListener:
    """Reads an LSL marker stream by name in a thread and stores its markers on a live clip as they arrive."""

    def __init__(self, store, clip_id: str, stream_name: str, lsl_t0: float) -> None:
        if not stream_name or not stream_name.strip():
            raise ValueError("--lsl-markers needs the marker stream's name")
        self.store, self.clip_id, self.stream_name, self.lsl_t0 = store, clip_id, stream_name.strip(), float(lsl_t0)
        self.stored: list[tuple[str, float]] = []
        self.skipped = 0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lsl-markers", daemon=True)

    def start(self) -> MarkerListener:
        self._thread.start()
        return self

    def _run(self) -> None:
        pylsl = _pylsl()
        inlet = None
        while not self._stop.is_set() and inlet is None:  # the stimulus software may start after ferpipe
            found = pylsl.resolve_byprop("name", self.stream_name, 1, 1.0)
            if found:
                inlet = pylsl.StreamInlet(found[0], max_buflen=360, processing_flags=pylsl.proc_clocksync)
                inlet.open_stream(timeout=5.0)
                log.info("listening to LSL markers of %r", self.stream_name)
                self.connected.set()
        while inlet is not None and not self._stop.is_set():
            self._drain(inlet, 0.2)
        if inlet is not None:  # what arrived in the last moments
            self._drain(inlet, 0.0)
            inlet.close_stream()

    def _drain(self, inlet, timeout: float) -> None:
        while True:
            sample, ts = inlet.pull_sample(timeout=timeout)
            if sample is None:
                return
            timeout = 0.0
            name = printable(str(sample[0])).strip()
            t = float(ts) - self.lsl_t0  # proc_clocksync: ts is already on this machine's LSL clock
            if not name or not math.isfinite(t) or t < 0:
                self.skipped += 1
                log.warning("LSL marker %r at %.3f s of the clip is left out (before the clip or empty)", name, t)
                continue
            try:
                self.store.add_marker(self.clip_id, name[:200], t)
                self.stored.append((name, t))
            except (ValueError, OSError) as exc:
                self.skipped += 1
                log.warning("LSL marker %r not stored: %s", name, exc)

    def stop(self, wait_s: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout=wait_s)


# ---- XDF ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class XdfImport:
    """What ``import_xdf`` stored: markers and streams on the clip, with the offset used."""

    clip_id: str
    offset: float
    how: str
    markers: int
    markers_outside: int
    streams: tuple[str, ...]
    samples: int


def _info(stream: dict, key: str, default: str = "") -> str:
    value = stream.get("info", {}).get(key, [default])
    return str(value[0] if isinstance(value, list) and value else value or default)


def _channels(stream: dict, n: int) -> list[tuple[str, str]]:
    """(label, unit) per channel from the stream's desc, numbered where the file names none."""
    out = []
    try:
        chans = stream["info"]["desc"][0]["channels"][0]["channel"]
        for ch in chans:
            out.append((str((ch.get("label") or [""])[0] or ""), str((ch.get("unit") or [""])[0] or "")))
    except (KeyError, IndexError, TypeError):
        out = []
    if len(out) != n:
        out = [(f"ch{k + 1}", "") for k in range(n)]
    return [(label or f"ch{k + 1}", unit) for k, (label, unit) in enumerate(out)]


def _is_markers(stream: dict) -> bool:
    return _info(stream, "channel_format") == "string"


def _load(path: Path) -> list[dict]:
    try:
        import pyxdf
    except ImportError:  # pragma: no cover
        raise InputError("XDF import needs pyxdf: pip install 'ferpipe[lab]'") from None
    name = printable(path.name)
    if not path.is_file():
        raise InputError(f"{printable(str(path))}: no such file")
    with path.open("rb") as fh:
        if fh.read(4) != b"XDF:":
            raise InputError(f"{name}: not an XDF file (it does not start with 'XDF:')")
    try:
        streams, _header = pyxdf.load_xdf(str(path), verbose=False)
    except Exception as exc:  # pyxdf raises what its parser meets; one line for all of them
        raise InputError(f"{name}: a damaged XDF file ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not streams:
        raise InputError(f"{name}: no streams in this XDF file")
    return streams


def _decimate(t: np.ndarray, v: np.ndarray, max_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Block means down to at most max_hz (a 500 Hz GSR channel shown over minutes needs no more)."""
    if t.size < 3:
        return t, v
    rate = (t.size - 1) / max(t[-1] - t[0], 1e-9)
    k = math.ceil(rate / max_hz)
    if k <= 1:
        return t, v
    m = (t.size // k) * k
    tt = t[:m].reshape(-1, k).mean(axis=1)
    vv = v[:m].reshape(-1, k, *v.shape[1:]).mean(axis=1)
    return tt, vv


def import_xdf(store, path: str | os.PathLike, clip_id: str, sync_marker: str | None = None,
               sync_at: float | None = None, offset: float | None = None,
               streams: list[str] | None = None) -> XdfImport:  # fmt: skip
    """Align an XDF recording to a clip and store its markers (as event markers) and numeric streams (as recorded
    signals). Clip time = XDF time - offset, where the offset comes from ``offset`` (seconds), else from the first
    ``sync_marker`` sample (it happened at clip time ``sync_at``, or at the clip's own event marker of that name, or
    at 0), else from the clip's lsl_t0 (a live clip recorded with --lsl). Nothing is stored if anything is wrong."""
    p = Path(path).expanduser()
    name = printable(p.name)
    clip = store.clip(clip_id)
    duration = float(clip.get("duration_s") or 0.0)
    data = _load(p)
    if offset is not None and sync_marker is not None:
        raise ValueError("give --offset or --sync-marker, not both")
    if offset is not None:
        if not math.isfinite(offset):
            raise ValueError(f"--offset must be a number of seconds, got {offset!r}")
        how = f"given offset {offset:g} s"
    elif sync_marker is not None:
        hits = [float(ts) for s in data if _is_markers(s)
                for ts, sample in zip(s["time_stamps"], s["time_series"], strict=False)
                if sample and str(sample[0]).strip() == sync_marker.strip()]  # fmt: skip
        if not hits:
            seen = sorted({str(x[0]) for s in data if _is_markers(s) for x in s["time_series"] if x})[:8]
            raise InputError(f"{name}: no marker {sync_marker!r} in the file's marker streams"
                             + (f" (it has: {', '.join(seen)})" if seen else " (it has no markers)"))  # fmt: skip
        at = sync_at
        if at is None:
            own = store.markers(clip_id).filter(store_name_is(sync_marker))
            at = float(own["start_s"][0]) if own.height else 0.0
        offset = min(hits) - at
        how = f"sync marker '{sync_marker}' at {at:g} s of the clip"
    elif clip.get("lsl_t0") is not None:
        offset = float(clip["lsl_t0"])
        how = "the clip's own LSL clock (recorded live with --lsl)"
    else:
        raise ValueError("say how the file aligns with the clip: --sync-marker NAME (a marker in the file) or "
                         "--offset SECONDS (clip time = file time - offset)")  # fmt: skip
    limit = duration + 0.5 if duration > 0 else math.inf
    markers: list[tuple[str, float]] = []
    outside = 0
    signals: list[StreamSignal] = []
    wanted = {s.strip() for s in streams or []}
    names = {_info(s, "name") for s in data}
    unknown = wanted - names
    if unknown:
        raise InputError(f"{name}: no stream named {', '.join(sorted(unknown))} (it has: {', '.join(sorted(names))})")
    for s in data:
        sname = _info(s, "name", "stream")
        ts = np.asarray(s["time_stamps"], dtype=np.float64) - offset
        if _is_markers(s):
            for t, sample in zip(ts, s["time_series"], strict=False):
                label = printable(str(sample[0])).strip() if sample else ""
                if not label:
                    continue
                if 0 <= t <= limit:
                    markers.append((label[:200], float(t)))
                else:
                    outside += 1
            continue
        values = np.asarray(s["time_series"], dtype=np.float64)
        if values.ndim != 2 or ts.size == 0:
            continue
        if wanted and sname not in wanted:
            continue
        if not wanted and values.shape[1] > MAX_STREAM_CHANNELS:
            log.warning("%s: stream %s has %d channels; name it with --stream to import it", name, sname,
                        values.shape[1])  # fmt: skip
            continue
        inside = (ts >= 0) & (ts <= limit) & np.isfinite(ts)
        t_in, v_in = _decimate(ts[inside], values[inside], MAX_STREAM_HZ)
        if t_in.size == 0:  # nothing of this stream during the clip
            continue
        chans = _channels(s, values.shape[1])
        for k, (label, unit) in enumerate(chans):
            sig_name = sname if values.shape[1] == 1 else f"{sname} {label}"
            signals.append(StreamSignal(printable(sig_name)[:120], f"{name}: {printable(sname)}", printable(unit)[:40],
                                        t_in, v_in[:, k]))  # fmt: skip
    if not markers and not signals:
        raise InputError(f"{name}: nothing of it falls inside the clip's {duration:.1f} s with {how}; check the "
                         "offset or the sync marker")  # fmt: skip
    n, added = store.add_clip_signals(clip_id, signals, markers)  # one transaction: all or nothing
    return XdfImport(clip_id, float(offset), how, added, outside, tuple(s.name for s in signals), n)


def store_name_is(name: str):
    """Polars filter: a marker's name equals ``name`` (case-insensitive), as markers are matched elsewhere."""
    import polars as pl

    return pl.col("name").str.to_lowercase() == name.strip().lower()
