"""A decompression bomb (a small PNG that claims 20000 x 20000 pixels) is refused from its header, at once, through
the CLI and the camera check, without the memory it would take to decode."""

import struct
import time
import zlib
from pathlib import Path

import pytest

from ferpipe.errors import InputError


def png_bomb(path: Path, side: int = 20000) -> Path:
    """A valid gray PNG of side x side black pixels, streamed through zlib row by row (about 400 KB on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one gray byte per pixel
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return png_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png")


def test_the_bomb_is_small_on_disk(bomb):
    assert bomb.stat().st_size < 1_000_000


def test_read_image_refuses_the_bomb_from_its_header(bomb):
    from ferpipe.frames import read_image

    t0 = time.perf_counter()
    with pytest.raises(InputError, match="20000 x 20000 pixels is more than the 50 MP"):
        read_image(bomb)
    assert time.perf_counter() - t0 < 2.0


def test_the_camera_check_refuses_the_bomb(bomb):
    from ferpipe.panel import check_snapshot

    with pytest.raises(InputError, match="more than the"):
        check_snapshot(bomb.read_bytes())


def test_the_cli_refuses_the_bomb_quickly_and_within_500_mib(bomb, tmp_path):
    """`ferpipe process bomb.png`, run under a small wrapper that reports its child's peak memory."""
    import subprocess
    import sys

    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "sys.stderr.write(r.stderr); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "sys.exit(r.returncode)")  # fmt: skip
    ferpipe = str(Path(sys.executable).with_name("ferpipe"))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", wrapper, ferpipe, "process", str(bomb), "--db", str(tmp_path / "b.duckdb"),
                        "--no-signals", "--no-people"], capture_output=True, text=True, timeout=120)  # fmt: skip
    took = time.perf_counter() - t0
    assert r.returncode == 1 and "more than the 50 MP" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert int(r.stdout.split()[-1]) / 1024 < 500  # peak MiB of the whole command
    assert took < 30  # the whole command, start-up included; the refusal itself is checked above (< 2 s)
