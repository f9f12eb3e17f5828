"""What a client reads: the demo library served, every page walked in headless Chromium with its expanders open,
the reports built on the Export page, the PDF read as text, and `ferpipe export` / `ferpipe summary`.

It fails on "None" or "nan" cells, snake_case column names, numbers with more than 4 decimals, exceptions on a page,
and two different values of the same named metric ("mean over people" of each expression of the audience grid) on
two screens. It uses only the browser and the command line, so it runs against any version of ferpipe.
"""

from __future__ import annotations

import html as htmllib
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from conftest import run_cli

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
GRID = "Audience grid (10 people)"
PAGES = ("library", "clip", "photo", "people", "compare", "panel", "export", "models")
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")
LONG_NUMBER = re.compile(r"\d\.\d{5,}")
EMPTY_CELLS = {"None", "none", "nan", "NaN", "null", "<NA>"}


def _percent(text: str) -> int:
    """A shown value ("83%" or "0.83") as whole percent, the precision the dashboard shows."""
    text = text.strip()
    if text.endswith("%"):
        return round(float(text[:-1]))
    return round(float(text) * 100)


@pytest.fixture(scope="module")
def demo(demo_library):
    return demo_library


def _open_expanders(page) -> None:
    for summary in page.locator("[data-testid=stExpander] details:not([open]) > summary").all():
        try:
            summary.click(timeout=2000)
        except Exception:  # an expander re-drawn meanwhile: the next pass finds it
            continue
    page.wait_for_timeout(1500)


def _settle(page, ms: int = 2500) -> None:
    page.wait_for_selector("[data-testid='stMain']", timeout=60000)
    page.wait_for_timeout(ms)
    page.wait_for_function("!document.querySelector('[data-testid=stStatusWidget]')", timeout=90000)


def _read(page) -> dict:
    main = page.locator("[data-testid='stMain']")
    return {"text": main.inner_text(), "cells": page.locator("[role=gridcell]").all_inner_texts(),
            "headers": page.locator("[role=columnheader]").all_inner_texts(),
            "exceptions": page.locator("[data-testid=stException]").all_inner_texts(),
            "metrics": [(m.locator("[data-testid=stMetricLabel]").inner_text().strip(),
                         m.locator("[data-testid=stMetricValue]").inner_text().strip())
                        for m in page.locator("[data-testid=stMetric]").all()]}  # fmt: skip


def _problems(name: str, seen: dict) -> list[str]:
    out = [f"{name}: exception {e[:120]!r}" for e in seen["exceptions"]]
    out += [f"{name}: empty cell {c!r}" for c in seen["cells"] if c.strip() in EMPTY_CELLS]
    out += [f"{name}: long number {c!r}" for c in seen["cells"] if LONG_NUMBER.search(c)]
    out += [f"{name}: raw column name {h!r}" for h in seen["headers"] if SNAKE.match(h.strip())]
    for word in ("None", "nan"):
        if re.search(rf"(?<![\w']){word}(?![\w'])", seen["text"]):
            out.append(f"{name}: {word!r} in the page text")
    out += [f"{name}: long number {m!r} in the text" for m in LONG_NUMBER.findall(seen["text"])]
    return out


@pytest.mark.slow
def test_every_page_and_report_reads_as_a_client_would(demo, shot, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is required for the browser test (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    db, ids = demo
    grid, photo = ids[GRID], ids["Group photo (5 people)"]
    ARTIFACTS.mkdir(exist_ok=True)
    problems, read, downloads = [], {}, {}
    paths = {"library": "", "clip": f"clip?clip={grid}", "photo": f"clip?clip={photo}", "people": "people",
             "compare": "compare", "panel": "panel", "export": "export", "models": "models"}  # fmt: skip
    with shot.serve(db) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=shot.CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        for name in PAGES:
            if name == "export":  # the export page opens on the clip last viewed: the grid, seen in Clip view
                page.goto(f"{url}/clip?clip={grid}")
                _settle(page)
                page.get_by_role("link", name="Export").click()
            else:
                page.goto(f"{url}/{paths[name]}")
            _settle(page)
            if name == "compare":  # the grid against the other videos, clip by clip (it may open on tag groups)
                page.locator("[data-testid=stRadio] label").filter(has_text="Clips").first.click()
                _settle(page)
            _open_expanders(page)
            if name == "export":
                page.get_by_role("button", name="Build the reports").click()
                for label, ext in (("HTML report", "html"), ("PDF report", "pdf")):
                    button = page.get_by_role("button", name=label)
                    button.wait_for(timeout=120000)
                    with page.expect_download(timeout=60000) as info:
                        button.click()
                    downloads[ext] = tmp_path / f"report.{ext}"
                    info.value.save_as(str(downloads[ext]))
                _settle(page, 500)
            read[name] = seen = _read(page)
            page.screenshot(path=str(ARTIFACTS / f"client_{name}.png"), full_page=True)
            problems += _problems(name, seen)
        browser.close()

    # the mean over people of every expression of the grid, on every screen that shows it
    values: dict[str, dict[str, int]] = {}
    tiles = dict(read["clip"]["metrics"])
    values["clip view"] = {e: _percent(tiles[e]) for e in EXPRESSIONS if e in tiles}
    values["compare"] = _compare_values(read["compare"]["text"], read["compare"]["cells"])
    html = downloads["html"].read_text()
    values["html report"] = _report_values(_html_text(html), GRID)
    if shutil.which("pdftotext"):
        pdf_text = subprocess.run(["pdftotext", "-layout", str(downloads["pdf"]), "-"], capture_output=True, text=True,
                                  check=True).stdout  # fmt: skip
        problems += _problems("pdf", {"text": pdf_text, "cells": [], "headers": [], "exceptions": []})
        values["pdf report"] = _report_values(pdf_text, GRID)
    out = tmp_path / "summary.csv"
    r = run_cli("export", "--db", str(db), "--clip", grid, "--what", "summary", "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = pl.read_csv(out)
    values["ferpipe export"] = {r["signal"]: round(r["mean_over_people"] * 100) for r in summary.iter_rows(named=True)
                                if r["signal"] in EXPRESSIONS}  # fmt: skip
    for screen, got in values.items():
        if set(got) != set(EXPRESSIONS):
            problems.append(f"{screen}: mean over people not shown for {sorted(set(EXPRESSIONS) - set(got))}")
    reference = values["ferpipe export"]
    for screen, got in values.items():
        for e, v in got.items():
            if abs(v - reference.get(e, v)) > 0:
                problems.append(f"{screen}: mean over people of {e} is {v}%, `ferpipe export` says {reference[e]}%")
    assert not problems, "\n".join(problems)


def _html_text(html: str) -> str:
    body = re.sub(r"<script.*?</script>", " ", html, flags=re.S)
    body = re.sub(r"</(td|th)>", " | ", body)
    body = re.sub(r"</tr>|<br>|</p>|</li>|</h\d>", "\n", body)
    return htmllib.unescape(re.sub(r"<[^>]+>", " ", body))


def _report_values(text: str, title: str) -> dict[str, int]:
    """The 'Mean over people' column of the grid's per-expression table in a report's text."""
    start = text.find(title, text.find("Per expression"))
    part = text[text.find("Per expression", start if start >= 0 else 0) :]
    head = next((line for line in part.splitlines() if "Mean over people" in line and "Expression" in line), "")
    cols = [c for c in re.split(r"\s{2,}|\s*\|\s*", head.strip()) if c]
    if "Mean over people" not in cols:
        return {}
    k = cols.index("Mean over people")
    out = {}
    for line in part.splitlines()[1:60]:
        cells = [c for c in re.split(r"\s{2,}|\s*\|\s*", line.strip()) if c]
        if cells and cells[0] in EXPRESSIONS and cells[0] not in out and len(cells) > k:
            out[cells[0]] = _percent(cells[k])
    return out


def _compare_values(text: str, cells: list[str]) -> dict[str, int]:
    """Compare's person-level table: the grid is group A; each signal row, then its 'Mean over people A'."""
    out = {}
    for i, c in enumerate(cells[:-1]):
        if c in EXPRESSIONS and c not in out and re.fullmatch(r"\d+%|0\.\d+|1\.0+", cells[i + 1].strip()):
            out[c] = _percent(cells[i + 1])
    return out
