"""Screenshots of the dashboard for the README: serve a database, drive headless Chromium, save PNGs.

.venv/bin/python dashboard/screenshot.py --db PATH --out docs/  [--chromium /usr/bin/chromium]
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
def serve(db: Path, env: dict | None = None, timeout: float = 60.0):
    """A real Streamlit server for the dashboard on 127.0.0.1; yields its base URL."""
    from ferpipe.cli import streamlit_command

    port = free_port()
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
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.clip is None:
        from ferpipe.store import Store

        clips = Store(args.db).clips().sort("faces", descending=True, nulls_last=True)
        args.clip = clips["clip_id"][0]
    with serve(args.db) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        shots = (("library", "", None), ("clip_view", f"clip?clip={args.clip}", None),
                 ("attention", f"clip?clip={args.clip}", "Attention, head pose and blinks"))  # fmt: skip
        for name, path, heading in shots:
            page.goto(f"{url}/{path}")
            page.wait_for_selector("[data-testid='stMain']", timeout=30000)
            if path.startswith("clip"):
                page.wait_for_selector(".js-plotly-plot", timeout=30000)
            page.wait_for_timeout(2500)
            if heading:
                page.get_by_role("heading", name=heading).scroll_into_view_if_needed()
                page.wait_for_timeout(1500)
            page.screenshot(path=str(args.out / f"dashboard_{name}.png"), full_page=False)
            print(args.out / f"dashboard_{name}.png")
        browser.close()


if __name__ == "__main__":
    main()
