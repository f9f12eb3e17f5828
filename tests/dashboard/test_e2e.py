"""End to end in a real browser: upload a clip, watch it process, see the curves, download the HTML report."""

import shutil
from pathlib import Path

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.slow
def test_upload_process_view_and_download_report(tmp_path, samples, shot):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is required for the browser test (.ci/run installs it)")
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path / "e2e.duckdb"
    clip = tmp_path / "panel.mp4"
    shutil.copy(samples["WolfgangLanger_Pexels.mp4"], clip)
    with shot.serve(db) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=shot.CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.goto(url)
        expect(page.get_by_role("heading", name="Library")).to_be_visible(timeout=60000)
        page.get_by_placeholder("group=A, stimulus=ad_3").fill("group=A")
        page.get_by_placeholder("group=A, stimulus=ad_3").press("Enter")
        page.wait_for_timeout(1500)  # the uploader is re-made with the tags
        # one control: the video and the study metadata for it (matched by file name) chosen together
        meta = tmp_path / "study.csv"
        meta.write_text("source,title,respondent,segment\npanel.mp4,Panel one,r07,young\nother.mp4,,r08,old\n")
        assert page.locator("[data-testid=stFileUploaderDropzoneInput]").count() == 0  # no second upload widget
        uploader = page.frame_locator("iframe").first
        uploader.locator("input[type=file]").set_input_files([str(clip), str(meta)])
        uploader.get_by_role("button", name="Upload and process").click()
        expect(uploader.get_by_text("2 metadata rows read")).to_be_visible(timeout=30000)
        expect(uploader.get_by_text("uploaded ✓")).to_be_visible(timeout=60000)
        # the progress panel refreshes every 2 s and reports the finished job
        expect(page.get_by_text("Done: Panel one (1 person).")).to_be_visible(timeout=180000)
        page.screenshot(path=str(ARTIFACTS / "e2e_library.png"))

        page.get_by_role("link", name="Clip view").click()
        chart = page.locator(".js-plotly-plot").first
        expect(chart).to_be_visible(timeout=60000)
        expect(page.locator(".js-plotly-plot .scatterlayer .trace").first).to_be_attached(timeout=30000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "e2e_clip_view.png"))

        page.get_by_role("link", name="Export").click()
        page.get_by_role("button", name="Build the reports").click()
        button = page.get_by_role("button", name="HTML report")
        expect(button).to_be_visible(timeout=60000)
        with page.expect_download(timeout=60000) as info:
            button.click()
        report = ARTIFACTS / "e2e_report.html"
        info.value.save_as(str(report))
        browser.close()
    from ferpipe.store import Store

    store = Store(db)
    clip_id = store.clips()["clip_id"][0]
    tags = store.tags().filter(clip_id=clip_id)
    assert dict(zip(tags["key"], tags["value"], strict=True)) == {"group": "A", "respondent": "r07", "segment": "young"}
    run_id = store.query("SELECT run_id FROM runs WHERE clip_id = ?", [clip_id])["run_id"][0]
    assert store.people(run_id)["person"].to_list() == ["r07"]
    text = report.read_text()
    assert "<html" in text and "Plotly" in text and "panel" in text
    assert "not what people feel" in text
