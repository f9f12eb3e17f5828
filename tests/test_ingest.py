import shutil

import pytest

from ferpipe.errors import InputError
from ferpipe.ingest import check_url, ingest_file, ingest_url


def test_same_clip_twice_is_one_file(samples, tmp_path):
    lib = tmp_path / "lib"
    copy = tmp_path / "renamed.mp4"
    shutil.copy(samples["single_face.mp4"], copy)
    a = ingest_file(samples["single_face.mp4"], lib)
    b = ingest_file(copy, lib)
    assert a.sha256 == b.sha256 and a.info.path == b.info.path
    assert len(list(lib.iterdir())) == 1
    assert a.info.frame_count == 72 and a.title == "single_face"


def test_url_ingest_through_yt_dlp_from_local_server(samples, tmp_path, http_dir, allow_private):
    root, base = http_dir
    shutil.copy(samples["single_face.mp4"], root / "clip.mp4")
    seen = []
    item = ingest_url(f"{base}/clip.mp4", tmp_path / "lib", progress=lambda d, t: seen.append((d, t)))
    assert item.source_uri == f"{base}/clip.mp4"
    assert item.info.frame_count == 72
    assert item.sha256 == ingest_file(samples["single_face.mp4"], tmp_path / "lib").sha256
    assert seen and seen[-1][0] == (root / "clip.mp4").stat().st_size


def test_url_that_is_not_a_video(http_dir, tmp_path, allow_private):
    root, base = http_dir
    (root / "page.html").write_text("<html><body>hello</body></html>")
    with pytest.raises(InputError, match="cannot download"):
        ingest_url(f"{base}/page.html", tmp_path / "lib")


def test_unreachable_url(tmp_path, allow_private):
    from conftest import free_port

    with pytest.raises(InputError, match="cannot download"):
        ingest_url(f"http://127.0.0.1:{free_port()}/clip.mp4", tmp_path / "lib")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/a.mp4", "javascript:alert(1)"])
def test_non_http_schemes_refused(url):
    with pytest.raises(InputError, match="only http and https"):
        check_url(url)


def test_private_addresses_refused_unless_allowed(monkeypatch):
    monkeypatch.delenv("FERPIPE_ALLOW_PRIVATE_URLS", raising=False)
    for url in ("http://127.0.0.1:8000/a.mp4", "http://localhost/a.mp4", "http://10.1.2.3/a.mp4", "http://[::1]/a.mp4"):
        with pytest.raises(InputError, match="private address"):
            check_url(url)
    monkeypatch.setenv("FERPIPE_ALLOW_PRIVATE_URLS", "1")
    assert check_url("http://127.0.0.1:8000/a.mp4")


def test_wrong_type_and_missing_files(tmp_path, samples):
    with pytest.raises(InputError, match="not a video file"):
        ingest_file(samples["multi_face.jpg"], tmp_path / "lib")
    with pytest.raises(InputError, match="no such file"):
        ingest_file(tmp_path / "missing.mp4", tmp_path / "lib")
    assert not (tmp_path / "lib").exists() or not any((tmp_path / "lib").iterdir())
