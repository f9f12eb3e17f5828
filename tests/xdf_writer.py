"""A small writer of XDF 1.0 files (the format LabRecorder writes and pyxdf reads), for tests.

Chunks: FileHeader (1), StreamHeader (2), Samples (3), ClockOffset (4), StreamFooter (6); each is a variable-length
length, a 2-byte tag and the content (see the XDF specification).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np


@dataclass
class Stream:
    name: str
    type: str
    channel_format: str  # "float32", "double64" or "string"
    labels: list[str]
    units: list[str] = field(default_factory=list)
    srate: float = 0.0
    times: list[float] = field(default_factory=list)
    samples: list[list] = field(default_factory=list)


def _varlen(n: int) -> bytes:
    if n < 256:
        return bytes([1, n])
    if n < 2**32:
        return bytes([4]) + struct.pack("<I", n)
    return bytes([8]) + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


def write_xdf(path: Path, streams: list[Stream], clock_offset: float = 0.0) -> Path:
    """Write streams to an XDF file; clock_offset: every stream's recorded clock offset (pyxdf adds it when it
    synchronises clocks)."""
    out = bytearray(b"XDF:")
    out += _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>')
    for sid, s in enumerate(streams, start=1):
        chans = "".join(
            f"<channel><label>{escape(lbl)}</label><unit>{escape(s.units[k] if k < len(s.units) else '')}</unit>"
            "</channel>"
            for k, lbl in enumerate(s.labels)
        )
        xml = (f'<?xml version="1.0"?><info><name>{escape(s.name)}</name><type>{escape(s.type)}</type>'
               f"<channel_count>{len(s.labels)}</channel_count><nominal_srate>{s.srate}</nominal_srate>"
               f"<channel_format>{s.channel_format}</channel_format><created_at>0</created_at>"
               f"<desc><channels>{chans}</channels></desc></info>")  # fmt: skip
        out += _chunk(2, struct.pack("<I", sid) + xml.encode())
        body = bytearray()
        for t, sample in zip(s.times, s.samples, strict=True):
            body += bytes([8]) + struct.pack("<d", t)
            if s.channel_format == "string":
                for v in sample:
                    data = str(v).encode()
                    body += _varlen(len(data)) + data
            else:
                fmt = {"float32": "f", "double64": "d"}[s.channel_format]
                body += struct.pack(f"<{len(sample)}{fmt}", *[float(v) for v in sample])
        out += _chunk(3, struct.pack("<I", sid) + _varlen(len(s.times)) + bytes(body))
        for t in (s.times[0] - 1.0, s.times[-1] + 1.0) if s.times else ():
            out += _chunk(4, struct.pack("<I", sid) + struct.pack("<dd", t, clock_offset))
        first, last = (s.times[0], s.times[-1]) if s.times else (0.0, 0.0)
        footer = (f'<?xml version="1.0"?><info><first_timestamp>{first}</first_timestamp><last_timestamp>{last}'
                  f"</last_timestamp><sample_count>{len(s.times)}</sample_count></info>")  # fmt: skip
        out += _chunk(6, struct.pack("<I", sid) + footer.encode())
    path.write_bytes(bytes(out))
    return path


def gsr_and_markers(path: Path, t0: float, seconds: float, markers: dict[str, float], rate: float = 32.0) -> Path:
    """An XDF with a GSR-like channel (microsiemens, a slow wave) and a marker stream, on a clock where the
    recording's time 0 is ``t0``; markers: name -> seconds after t0."""
    n = int(seconds * rate)
    t = t0 + np.arange(n) / rate
    gsr = 2.0 + 0.5 * np.sin(2 * np.pi * np.arange(n) / rate / 4.0)
    return write_xdf(path, [
        Stream("Shimmer GSR", "GSR", "float32", ["GSR"], ["microsiemens"], rate, list(t), [[v] for v in gsr]),
        Stream("PsychoPy markers", "Markers", "string", ["marker"], [], 0.0,
               [t0 + s for s in markers.values()], [[m] for m in markers]),
    ])  # fmt: skip
