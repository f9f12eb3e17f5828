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
    assert a.info.frame_count == 72 and a.title is None and a.default_title == "single_face"


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
    (tmp_path / "notes.txt").write_text("not media")
    with pytest.raises(InputError, match="not a video or image file"):
        ingest_file(tmp_path / "notes.txt", tmp_path / "lib")
    with pytest.raises(InputError, match="no such file"):
        ingest_file(tmp_path / "missing.mp4", tmp_path / "lib")
    assert not (tmp_path / "lib").exists() or not any((tmp_path / "lib").iterdir())


# ---- hardening: URLs, limits, names ------------------------------------------------------------


class _Server:
    """A real HTTP server on 127.0.0.1 whose routes answer as the test says (redirects, pages, trickles)."""

    def __init__(self, routes):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                routes[self.path.split("?")[0]](self)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _send_file(path, length=True):
    def route(h):
        data = path.read_bytes()
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        if length:
            h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()

    return route


def _redirect(to):
    def route(h):
        h.send_response(302)
        h.send_header("Location", to)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


@pytest.fixture
def media_server(samples):
    """The 'private' server holding a clip, on 127.0.0.1 (never allowed in these tests)."""
    server = _Server({"/clip.mp4": _send_file(samples["single_face.mp4"])})
    yield server
    server.close()


def test_a_redirect_to_a_private_address_is_refused_at_connection_time(monkeypatch, tmp_path, media_server):
    """Only the first server is allowed; its 302 to another private address is checked when connecting."""
    front = _Server({"/video.mp4": _redirect(f"{media_server.url}/clip.mp4")})
    monkeypatch.setenv("FERPIPE_ALLOW_PRIVATE_URLS", f"127.0.0.1:{front.port}")
    try:
        with pytest.raises(InputError, match=f"private address 127.0.0.1:{media_server.port}"):
            ingest_url(f"{front.url}/video.mp4", tmp_path / "lib")
    finally:
        front.close()
    assert not list((tmp_path / "lib").iterdir())  # no download folder or file left behind
    # allowing the media server too makes the same redirect work: the refusal above was the policy
    monkeypatch.setenv("FERPIPE_ALLOW_PRIVATE_URLS", "127.0.0.1")
    front = _Server({"/video.mp4": _redirect(f"{media_server.url}/clip.mp4")})
    try:
        assert ingest_url(f"{front.url}/video.mp4", tmp_path / "lib").info.frame_count == 72
    finally:
        front.close()


def test_dns_rebinding_cannot_reach_a_private_address(monkeypatch, tmp_path, media_server):
    """A name that resolves to a public address when checked and to 127.0.0.1 when yt-dlp connects."""
    import socket

    real = socket.getaddrinfo
    answers = []

    def rebinding(host, port, *args, **kwargs):
        if host == "media.example":
            first = not answers
            answers.append(host)
            ip = "93.184.216.34" if first else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.delenv("FERPIPE_ALLOW_PRIVATE_URLS", raising=False)
    with pytest.raises(InputError, match=r"private address 127\.0\.0\.1"):
        ingest_url(f"http://media.example:{media_server.port}/clip.mp4", tmp_path / "lib")
    assert len(answers) >= 2  # the name was looked up again when connecting, and that answer was refused


def test_a_media_link_inside_a_page_is_checked_too(monkeypatch, tmp_path, media_server):
    page = f'<html><body><video src="{media_server.url}/clip.mp4"></video></body></html>'.encode()

    def send_page(h):
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", str(len(page)))
        h.end_headers()
        h.wfile.write(page)

    front = _Server({"/watch": send_page})
    monkeypatch.setenv("FERPIPE_ALLOW_PRIVATE_URLS", f"127.0.0.1:{front.port}")
    try:
        with pytest.raises(InputError, match="private address"):
            ingest_url(f"{front.url}/watch", tmp_path / "lib")
    finally:
        front.close()


def test_the_size_limit_holds_without_a_content_length(monkeypatch, tmp_path, samples, allow_private):
    big = tmp_path / "big.mp4"
    big.write_bytes(samples["WolfgangLanger_Pexels.mp4"].read_bytes() * 3)  # several MiB
    server = _Server({"/big.mp4": _send_file(big, length=False)})
    monkeypatch.setenv("FERPIPE_MAX_UPLOAD_MB", "1")
    try:
        with pytest.raises(InputError, match="over the 1 MiB limit"):
            ingest_url(f"{server.url}/big.mp4", tmp_path / "lib")
    finally:
        server.close()
    assert not list((tmp_path / "lib").iterdir())


def test_a_trickling_server_hits_the_overall_timeout(monkeypatch, tmp_path, allow_private):
    import time

    def trickle(h):
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        h.send_header("Content-Length", "1000000")
        h.end_headers()
        try:
            for _ in range(100):
                h.wfile.write(b"\0")
                h.wfile.flush()
                time.sleep(0.5)
        except OSError:
            pass

    server = _Server({"/slow.mp4": trickle})
    monkeypatch.setenv("FERPIPE_DOWNLOAD_TIMEOUT_S", "2")
    t0 = time.monotonic()
    try:
        with pytest.raises(InputError, match="within 2 s"):
            ingest_url(f"{server.url}/slow.mp4", tmp_path / "lib")
    finally:
        server.close()
    assert time.monotonic() - t0 < 20
    assert not list((tmp_path / "lib").iterdir())


def test_leftovers_of_a_killed_download_are_cleaned(tmp_path):
    import subprocess

    from ferpipe.ingest import clean_leftovers

    lib = tmp_path / "lib"
    dead = subprocess.Popen(["true"])
    dead.wait()
    (lib / f".download-{dead.pid}-abc").mkdir(parents=True)
    (lib / f".download-{dead.pid}-abc" / "media.mp4.part").write_bytes(b"x")
    (lib / f".copy-{dead.pid}-xyz.mp4").write_bytes(b"x")
    import os

    (lib / f".download-{os.getpid()}-live").mkdir()  # ours: still running
    clean_leftovers(lib)
    assert sorted(p.name for p in lib.iterdir()) == [f".download-{os.getpid()}-live"]


def test_a_non_utf8_file_name_is_ingested(tmp_path, samples):
    import os

    name = os.fsdecode(b"bad\xff\xfe.mp4")
    path = tmp_path / name
    shutil.copy(samples["single_face.mp4"], path)
    item = ingest_file(path, tmp_path / "lib")
    assert item.info.frame_count == 72
    assert "\ufffd" in item.default_title and item.default_title.encode("utf-8")


def test_private_url_rules_are_checked_where_they_enter(monkeypatch):
    from ferpipe.config import private_url_rules
    from ferpipe.ingest import address_allowed

    monkeypatch.setenv("FERPIPE_ALLOW_PRIVATE_URLS", "10.0.0.0/8, 127.0.0.1:8080, [::1]:9000")
    assert address_allowed("10.2.3.4", 80) and address_allowed("127.0.0.1", 8080)
    assert not address_allowed("127.0.0.1", 8081) and not address_allowed("192.168.1.1", 80)
    assert address_allowed("::1", 9000) and not address_allowed("::ffff:127.0.0.1", 80)
    assert address_allowed("93.184.216.34", 80)
    monkeypatch.setenv("FERPIPE_ALLOW_PRIVATE_URLS", "nonsense:port")
    with pytest.raises(ValueError, match="nonsense"):
        private_url_rules()


def test_a_redirect_to_a_local_file_is_one_error_line(monkeypatch, tmp_path):
    """A 302 to file:///etc/passwd read nothing but ended in a yt-dlp traceback: one InputError line now, nothing
    left in the library."""
    front = _Server({"/video.mp4": _redirect("file:///etc/passwd")})
    monkeypatch.setenv("FERPIPE_ALLOW_PRIVATE_URLS", f"127.0.0.1:{front.port}")
    try:
        with pytest.raises(InputError, match="cannot download"):
            ingest_url(f"{front.url}/video.mp4", tmp_path / "lib")
    finally:
        front.close()
    assert not list((tmp_path / "lib").iterdir())
