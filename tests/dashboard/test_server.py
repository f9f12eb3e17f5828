"""The dashboard server's own routes on a real server: the token, refusals, and memory during a large upload."""

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"


def _post(url, body, token, name="clip.mp4", stream=False, extra=None):
    q = urllib.parse.urlencode({"name": name, "settings": json.dumps({"model": "mini-xception", "sample_fps": 5.0}),
                                **(extra or {})})  # fmt: skip
    data = body
    if stream:  # a generator: sent chunked, like a browser streaming a File
        data = (body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20))
    req = urllib.request.Request(f"{url}/ferpipe/upload?{q}", data=data, method="POST",
                                 headers={"X-Ferpipe-Token": token} if token else {})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
def test_upload_route_checks_token_type_size_and_stays_small(tmp_path, samples, shot):
    import urllib.parse  # noqa: F401  (used by _post)

    db = tmp_path / "srv.duckdb"
    token = "test-token-123"
    with shot.serve(db, env={"FERPIPE_UPLOAD_TOKEN": token, "FERPIPE_MAX_UPLOAD_MB": "200"}) as url:
        uploads = tmp_path / "srv_media" / ".uploads"
        assert _post(url, b"x", None)[0] == 403  # another site cannot post without the page's token
        code, body = _post(url, b"hello", token, name="notes.txt")
        assert code == 400 and "not a video or image" in body["error"]
        code, body = _post(url, b"x", token, extra={"tags_json": "[1, 2]"})
        assert code == 400 and "tags_json must be a JSON object of strings" in body["error"]
        # a real clip: accepted, processed in the background, and its upload removed once in the library
        code, body = _post(url, Path(samples["single_face.mp4"]).read_bytes(), token, name="é" * 200 + ".mp4")
        assert code == 200 and len(body["title"]) == 200
        jobs = tmp_path / "srv_media" / ".jobs"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(jobs.glob("*/result.json")):
            time.sleep(0.5)
        result = json.loads(next(jobs.glob("*/result.json")).read_text())
        assert result["status"] == "done" and result["faces"] == 1
        assert not list(uploads.iterdir())
        # 150 MiB streamed in: the server's memory does not grow with the file
        pid = _server_pid(url)
        before = _rss_mib(pid)
        code, body = _post(url, b"\0" * (150 << 20), token, name="big.mp4", stream=True)
        grown = _rss_mib(pid) - before
        assert code == 200, body
        assert grown < 60, f"the server grew by {grown:.0f} MiB during a 150 MiB upload"


def _server_pid(url: str) -> int:
    """The pid of the process listening on the dashboard's port."""
    port = int(url.rsplit(":", 1)[1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if int(parts[1].split(":")[1], 16) == port and parts[3] == "0A":
            inode = parts[9]
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    if any(os.readlink(fd).endswith(f"[{inode}]") for fd in (proc / "fd").iterdir()):
                        return int(proc.name)
                except OSError:
                    continue
    raise RuntimeError("server process not found")


def test_a_duplicate_upload_changes_nothing(tmp_path, samples, shot):
    """Bytes already in the library: the answer says "already in the library as 'X'", no job starts, and the clip's
    title and tags stay the researcher's."""
    import urllib.parse  # noqa: F401  (used by _post)

    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.store import Store

    db = tmp_path / "dup.duckdb"
    store = Store(db)
    clip_id = Pipeline(store, Settings(model="mini-xception")).ingest(str(samples["single_face.mp4"]),
                                                                     title="Webcam panel 1").sha256[:12]  # fmt: skip
    before = (store.clips().select("clip_id", "title", "tags").rows(), store.query("SELECT count(*) AS n FROM runs"))
    token = "dup-token-1"
    with shot.serve(db, env={"FERPIPE_UPLOAD_TOKEN": token}) as url:
        code, body = _post(url, Path(samples["single_face.mp4"]).read_bytes(), token, name="single_face.mp4",
                           extra={"title": "renamed by someone", "tags": "group=Z"})  # fmt: skip
    assert code == 200 and body["duplicate"] and body["clip_id"] == clip_id
    assert body["message"] == "already in the library as 'Webcam panel 1'"
    assert store.clips().select("clip_id", "title", "tags").rows() == before[0]
    assert store.query("SELECT count(*) AS n FROM runs")["n"][0] == before[1]["n"][0]
    assert not (tmp_path / "dup_media" / ".jobs").exists() or not list((tmp_path / "dup_media" / ".jobs").iterdir())
    uploads = tmp_path / "dup_media" / ".uploads"
    assert uploads.is_dir() and not list(uploads.iterdir())  # the uploaded copy was received, then removed
