"""The webcam panel in a real headless Chromium with a fake camera (a y4m made from a sample clip with a face):
consent, camera check, the stimulus while recording, upload, and the recording stored, linked and processed."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import run_cli

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _fake_camera(src: Path, out: Path) -> Path:
    """A y4m file Chromium plays as its camera: 6 s of a sample clip at 640x360."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-t", "6", "-vf", "scale=640:360,fps=25",
                    "-pix_fmt", "yuv420p", str(out)], check=True)  # fmt: skip
    return out


@pytest.mark.slow
def test_webcam_panel_records_links_and_processes(tmp_path, samples, shot):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is required for the browser test (.ci/run installs it)")
    from playwright.sync_api import expect, sync_playwright

    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.store import Store

    db = tmp_path / "panel.duckdb"
    stimulus = Pipeline(Store(db), Settings(model="mini-xception")).ingest(str(samples["single_face.mp4"]))
    stimulus_id = stimulus.sha256[:12]
    camera = _fake_camera(samples["WolfgangLanger_Pexels.mp4"], tmp_path / "camera.y4m")
    ARTIFACTS.mkdir(exist_ok=True)
    args = [*shot.CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}"]  # fmt: skip
    with shot.serve(db) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1200, "height": 950})
        # the researcher's side: a signed link per respondent
        page.goto(f"{url}/panel")
        expect(page.get_by_role("heading", name="Webcam panel")).to_be_visible(timeout=60000)
        expect(page.get_by_role("link", name="Webcam panel")).to_be_visible(timeout=30000)  # the app's navigation
        ids = page.get_by_label("Respondent ids (one per line)")
        ids.fill("r41")
        ids.press("Control+Enter")  # a text area's value reaches the app when committed
        expect(page.get_by_role("button", name="Make links")).to_be_enabled(timeout=30000)
        page.get_by_role("button", name="Make links").click()
        expect(page.get_by_text("Send each respondent their own link")).to_be_visible(timeout=30000)
        page.screenshot(path=str(ARTIFACTS / "panel_researcher.png"))
        r = run_cli("panel", "link", "--db", str(db), "--stimulus", stimulus_id, "--respondent", "r42", "--base-url",
                    url)  # fmt: skip
        assert r.returncode == 0, r.stderr
        respondent, link = r.stdout.strip().splitlines()[-1].split("\t")
        assert respondent == "r42"
        assert link.startswith(f"{url}/panel?link=")
        # the respondent's side
        page.goto(link)
        panel = page.frame_locator("iframe").first
        expect(panel.get_by_text("Before you start")).to_be_visible(timeout=60000)
        page.screenshot(path=str(ARTIFACTS / "panel_consent.png"))
        next_button = panel.get_by_role("button", name="Next: camera check")
        expect(next_button).to_be_disabled()  # not before consent
        panel.get_by_label("I agree to be recorded for this study.").check()
        next_button.click()
        watch = panel.get_by_role("button", name="Next: watch the video")
        expect(watch).to_be_enabled(timeout=90000)  # one face, enough light, twice in a row
        expect(panel.get_by_text("Your face is in the picture and well lit.")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "panel_camera_check.png"))
        watch.click()
        panel.get_by_role("button", name="Start").click()
        expect(panel.get_by_text("Recording. Please watch until the end.")).to_be_visible(timeout=10000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "panel_watching.png"))
        expect(panel.get_by_text("Thank you!")).to_be_visible(timeout=120000)
        page.screenshot(path=str(ARTIFACTS / "panel_thanks.png"))
        page.goto(link)  # a used link: a plain page that says so
        expect(page.get_by_role("heading", name="This link has already been used")).to_be_visible(timeout=60000)
        assert not page.frame_locator("iframe").first.get_by_text("Before you start").count()
        page.screenshot(path=str(ARTIFACTS / "panel_used.png"))
        browser.close()
        jobs = tmp_path / "panel_media" / ".jobs"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not list(jobs.glob("*/result.json")):
            time.sleep(1.0)
    result = json.loads(next(jobs.glob("*/result.json")).read_text())
    assert result["status"] == "done", result
    assert result["faces"] >= 1
    store = Store(db)
    clip = store.clip(result["clip_id"])
    assert clip["stimulus_clip_id"] == stimulus_id
    assert 0 <= clip["stimulus_offset_s"] < 5  # playback began soon after the recording
    assert clip["duration_s"] > 1.0  # about the stimulus's 2.4 s
    tags = store.tags().filter(clip_id=clip["clip_id"])
    tag = dict(zip(tags["key"], tags["value"], strict=True))
    assert tag["respondent"] == "r42"
    assert tag["consent"].startswith("consent-") and " agreed 20" in tag["consent"]  # the consent record
    states = run_cli("panel", "links", "--db", str(db), "--stimulus", stimulus_id, "--json")
    by_respondent = {r["respondent"]: r for r in json.loads(states.stdout)}
    assert by_respondent["r42"]["state"] == "processed" and by_respondent["r42"]["uses_left"] == 0
    assert by_respondent["r41"]["state"] == "sent"
    assert store.people(result["run_id"])["person"].to_list()[0] == "r42"
