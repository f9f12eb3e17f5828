"""Browser previews as background jobs: one encode per clip however many ask, with progress and a status."""

import shutil
import threading

import cv2
import pytest

from ferpipe.errors import InputError
from ferpipe.media import PreviewJobs, preview_path


def test_a_preview_is_one_background_job_with_progress(samples, tmp_path):
    clip = tmp_path / "clip.mp4"
    shutil.copy(samples["WolfgangLanger_Pexels.mp4"], clip)
    jobs = PreviewJobs()
    assert jobs.status(clip) is None
    first = jobs.start(clip)
    again = [None] * 6
    threads = [threading.Thread(target=lambda k=k: again.__setitem__(k, jobs.start(clip))) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(j is first for j in again)  # seven requests, one encode
    seen = []
    while not first.finished.wait(0.05):
        seen.append(first.share)
    assert first.state == "ready" and first.wait() == preview_path(clip)
    assert any(0 < s < 1 for s in seen), seen  # progress was reported while it ran
    cap = cv2.VideoCapture(str(preview_path(clip)))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) > 400
    cap.release()
    assert PreviewJobs().status(clip).state == "ready"  # a new process finds the preview on disk


def test_a_failed_preview_says_why_and_can_be_retried(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    jobs = PreviewJobs()
    job = jobs.start(bad)
    job.finished.wait(30)
    assert job.state == "failed" and job.error
    with pytest.raises(InputError):
        job.wait()
    assert jobs.start(bad) is not job  # a failed job is not reused
