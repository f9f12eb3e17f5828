"""Screenshots of the dashboard for the README: serve a database, drive headless Chromium, save PNGs.

.venv/bin/python dashboard/screenshot.py --db PATH --out docs/  [--chromium /usr/bin/chromium]
.venv/bin/python dashboard/screenshot.py --db PATH --out docs/ --live VIDEO   # the clip view of a live stream

With --live, ffmpeg publishes VIDEO as a live HLS stream on 127.0.0.1, `ferpipe process --live` analyses it into
the database, and the clip view is shot while it plays (dashboard_live.png).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip
APP = Path(__file__).resolve().parent / "server.py"  # the app plus ferpipe's routes (streamed uploads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(db: Path, env: dict | None = None, timeout: float = 60.0, port: int | None = None):
    """A real Streamlit server for the dashboard on 127.0.0.1 (``port``, or a free one); yields its base URL."""
    from ferpipe.cli import streamlit_command

    port = port or free_port()
    cmd = streamlit_command(APP, port)
    proc = subprocess.Popen(cmd, env=dict(os.environ, FERPIPE_DB=str(db), **(env or {})), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the dashboard server did not start") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True, type=Path)
    ap.add_argument("--out", default=Path("docs"), type=Path)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--clip", default=None, help="Clip id for the clip view (default: the one with most faces).")
    ap.add_argument("--live", default=None, type=Path, help="A video to stream live and shoot in the clip view.")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.live:
        live_shot(args)
        return
    if args.clip is None:
        from ferpipe.store import Store

        clips = Store(args.db).clips().sort("faces", descending=True, nulls_last=True)
        args.clip = clips["clip_id"][0]
    with serve(args.db) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        shots = (("library", "", None), ("clip_view", f"clip?clip={args.clip}", None),
                 ("attention", f"clip?clip={args.clip}", "Attention, head pose and blinks"),
                 ("facial_actions", f"clip?clip={args.clip}", "Facial actions"),
                 ("scores", f"clip?clip={args.clip}", "Scores"),
                 ("scores_baseline", f"clip?clip={args.clip}", "Scores"),
                 ("compare", "compare", "Scores: "))  # fmt: skip
        for name, path, heading in shots:
            page.goto(f"{url}/{path}")
            page.wait_for_selector("[data-testid='stMain']", timeout=30000)
            if path.startswith("clip"):
                page.wait_for_selector(".js-plotly-plot", timeout=30000)
            page.wait_for_timeout(2500)
            if name == "scores_baseline":  # each person's first 3 s as their baseline, subtracted
                page.locator("summary").filter(has_text="Baseline correction").click()
                page.wait_for_timeout(1200)
                page.locator("[data-testid=stSelectbox]").filter(has_text="Baseline").first.click()
                page.get_by_role("option", name="Each person's first seconds in view").click()
                page.wait_for_timeout(6000)
            if name == "compare":
                heading = next(h for h in page.get_by_role("heading").all_inner_texts() if h.startswith(heading))
            if heading:
                page.get_by_role("heading", name=heading).scroll_into_view_if_needed()
                page.wait_for_timeout(1500)
            page.screenshot(path=str(args.out / f"dashboard_{name}.png"), full_page=False)
            print(args.out / f"dashboard_{name}.png")
        browser.close()


def live_shot(args: argparse.Namespace) -> None:
    """The clip view while a live stream is analysed (see the module docstring)."""
    import functools
    import http.server
    import sys
    import tempfile
    import threading

    from playwright.sync_api import sync_playwright

    from ferpipe.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=tmp)
        handler.log_message = lambda *a: None  # type: ignore[method-assign]
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        ffmpeg = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-stream_loop", "3", "-i", str(args.live),
                                   "-an", "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-f", "hls",
                                   "-hls_time", "1", "-hls_list_size", "0", f"{tmp}/live.m3u8"])  # fmt: skip
        while not Path(tmp, "live.m3u8").is_file():
            time.sleep(0.1)
        env = dict(os.environ, FERPIPE_ALLOW_PRIVATE_URLS="127.0.0.1")
        live = subprocess.Popen([sys.executable, "-m", "ferpipe.cli", "process", "--live", "--title", "Live panel",
                                 f"http://127.0.0.1:{server.server_address[1]}/live.m3u8", "--db", str(args.db)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            clip = None
            while clip is None:
                time.sleep(1.0)
                try:
                    found = Store(args.db).clips().filter(pl_col_title_is("Live panel"))
                    clip = found["clip_id"][0] if found.height else None
                except Exception:
                    continue
            time.sleep(25)  # let the curves grow
            with serve(args.db) as url, sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{url}/clip?clip={clip}")
                page.wait_for_selector(".js-plotly-plot", timeout=60000)
                page.wait_for_timeout(7000)  # two refreshes of the live curves
                page.screenshot(path=str(args.out / "dashboard_live.png"))
                print(args.out / "dashboard_live.png")
                browser.close()
        finally:
            live.terminate()
            live.wait(60)
            ffmpeg.kill()
            server.shutdown()


def pl_col_title_is(title: str):
    import polars as pl

    return pl.col("title") == title


if __name__ == "__main__":
    main()
