import itertools

import cv2
import numpy as np
import pytest

from ferpipe.errors import InputError
from ferpipe.frames import expected_samples, iter_frames, probe


def test_probe_reads_container_metadata(samples):
    info = probe(samples["WolfgangLanger_Pexels.mp4"])
    assert (info.width, info.height) == (640, 360)
    assert info.frame_count == 472
    assert info.fps == pytest.approx(23.976, abs=0.01)
    assert info.duration_s == pytest.approx(19.69, abs=0.05)


@pytest.mark.parametrize(
    "name", ["WolfgangLanger_Pexels.mp4", "noface_face.mov", "face_noface.mov", "audience_grid.mp4"]
)
def test_timestamps_monotonic_and_within_duration(samples, name):
    info = probe(samples[name])
    ts = [f.timestamp_ms for f in iter_frames(samples[name], None)]
    assert len(ts) >= 0.95 * info.frame_count
    assert all(b > a for a, b in itertools.pairwise(ts))
    assert ts[0] >= 0 and ts[-1] <= info.duration_s * 1000 + 1


def test_variable_frame_rate_times_come_from_the_container(samples):
    """noface_face.mov has irregular frame times; they must not be index / fps."""
    path = samples["noface_face.mov"]
    ts = np.array([f.timestamp_ms for f in iter_frames(path, None)])
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    guessed = np.arange(len(ts)) * 1000 / fps
    gaps = np.diff(ts)
    assert gaps.max() - gaps.min() > 5  # really variable
    assert np.abs(ts - guessed).max() > 5  # and not what index/fps would claim


def test_sampling_rate_follows_video_time(samples):
    path = samples["WolfgangLanger_Pexels.mp4"]
    frames = list(iter_frames(path, 5.0))
    info = probe(path)
    assert abs(len(frames) - info.duration_s * 5) <= 2
    gaps = np.diff([f.timestamp_ms for f in frames])
    assert np.median(gaps) == pytest.approx(200, abs=25)
    assert expected_samples(info.duration_s, info.frame_count, 5.0) == pytest.approx(len(frames), abs=2)


def test_resume_skips_frames_up_to_a_time(samples):
    path = samples["single_face.mp4"]
    later = list(iter_frames(path, None, after_ms=1000.0))
    assert later and later[0].timestamp_ms > 1000.0


def test_frames_are_streamed_not_collected(samples):
    gen = iter_frames(samples["WolfgangLanger_Pexels.mp4"], None)
    first = next(gen)
    assert first.index == 0 and first.image.shape == (360, 640, 3)
    gen.close()


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        probe(empty)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 100)
    with pytest.raises(InputError, match=r"not a readable video|no decodable"):
        probe(text)
    with pytest.raises(ValueError, match="sample_fps"):
        next(iter_frames(text, 0))


@pytest.mark.parametrize("head", ["ffconcat version 1.0\nfile '{target}'\n", "#EXTM3U\n#EXTINF:1,\n{target}\n",
                                  "file '{target}'\n"])  # fmt: skip
def test_files_that_name_other_files_are_refused(tmp_path, samples, head, db_path):
    """A 76-byte ffconcat list named .mp4 that names a library file was analysed as that clip's video: refused now,
    with one line, and nothing stored."""
    from conftest import run_cli

    from ferpipe.store import Store

    fake = tmp_path / "innocent.mp4"
    fake.write_text(head.format(target=samples["single_face.mp4"]))
    r = run_cli("process", str(fake), "--db", str(db_path))
    assert r.returncode == 1 and "names other files" in r.stderr and "Traceback" not in r.stderr
    assert Store(db_path).clips().height == 0


def test_av1_is_named_not_called_corrupt(tmp_path):
    """An AV1 file was reported as "corrupt or truncated": it is named now, with how to convert it."""
    import shutil
    import subprocess

    from ferpipe.errors import InputError
    from ferpipe.frames import probe

    if not shutil.which("ffmpeg"):
        pytest.fail("ffmpeg is required (.ci/run installs it)")
    av1 = tmp_path / "clip.mp4"
    made = subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10",
                           "-t", "1", "-c:v", "libaom-av1", "-cpu-used", "8", str(av1)], capture_output=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip("this ffmpeg has no AV1 encoder to make the test file")
    import cv2

    cap = cv2.VideoCapture(str(av1), cv2.CAP_FFMPEG)
    decodes = cap.read()[0]
    cap.release()
    if decodes:  # a build that decodes AV1 reads it as any other video
        assert probe(av1).width == 320
    else:
        with pytest.raises(InputError, match=r"AV1 video, which this build of OpenCV cannot decode.*libx264"):
            probe(av1)
