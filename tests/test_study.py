"""Studies: manifests, worker processes and a real Ray head on 127.0.0.1, each checked against the sequential run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port, run_cli

from ferpipe.errors import InputError
from ferpipe.pipeline import Pipeline, Settings
from ferpipe.store import Store
from ferpipe.study import StudyItem, read_manifest, run_study

CLIPS = ("single_face.mp4", "WolfgangLanger_Pexels.mp4", "face_noface.mov", "multi_face.jpg")


def _manifest(tmp_path: Path, samples: dict, extra: str = "") -> Path:
    """A study CSV: paths relative to it, a respondent, a segment tag, and (optionally) more rows."""
    media = tmp_path / "media"
    media.mkdir(exist_ok=True)
    lines = ["source,title,respondent,segment"]
    for k, name in enumerate(CLIPS):
        (media / name).write_bytes(samples[name].read_bytes())
        lines.append(f"media/{name},,r{k + 1:02d},{'AB'[k % 2]}")
    path = tmp_path / "study.csv"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def _counts(store: Store) -> dict[str, tuple[int, int, str]]:
    """Per clip title: (observations, face tracks, status) of its latest run."""
    return {
        row["title"]: (row["observations"], row["faces"], row["status"])
        for row in store.query(
            """SELECT c.title, r.observations, r.faces, r.status FROM clips c JOIN runs r USING (clip_id)"""
        ).to_dicts()
    }


@pytest.fixture
def settings() -> Settings:
    return Settings(model="mini-xception")


@pytest.fixture
def sequential(tmp_path_factory, samples, settings) -> dict:
    """The reference: the same manifest, one clip after another in this process."""
    tmp = tmp_path_factory.mktemp("seq")
    store = Store(tmp / "seq.duckdb")
    items, bad = read_manifest(_manifest(tmp, samples))
    assert not bad
    results = run_study(Pipeline(store, settings), items)
    assert all(r.error is None for r in results)
    return _counts(store)


def test_manifest_columns_tags_and_bad_rows(tmp_path, samples):
    path = _manifest(tmp_path, samples, extra=",,r9,A\nmedia/x.mp4,T,,A,extra-cell\n")
    (tmp_path / "stim.mp4").write_bytes(b"x")
    path.write_text(path.read_text().replace("source,title,respondent,segment", "source,title,respondent,segment"))
    items, bad = read_manifest(path)
    assert [Path(i.source).name for i in items] == [*CLIPS, "x.mp4"]
    assert Path(items[0].source).is_absolute() and Path(items[0].source).parent == tmp_path / "media"
    assert items[0].tags == {"segment": "A", "respondent": "r01"} and items[0].respondent == "r01"
    assert items[1].tags["segment"] == "B"
    assert [b.row for b in bad] == [5] and "empty source" in bad[0].error


def test_manifest_offsets_and_stimulus(tmp_path):
    (tmp_path / "ad.mp4").write_bytes(b"x")
    path = tmp_path / "m.csv"
    path.write_text("source,stimulus,offset_s,wave\na.mp4,ad.mp4,1.5,2\nb.mp4,Ad title,nope,2\n")
    items, bad = read_manifest(path)
    assert items[0].stimulus == str(tmp_path / "ad.mp4") and items[0].offset_s == 1.5 and items[0].tags == {"wave": "2"}
    assert [b.row for b in bad] == [2] and "nope" in bad[0].error


@pytest.mark.parametrize(
    ("text", "message"),
    [("title,x\nA,1\n", "'source' column"), ("", "'source' column"), (b"\xff\xfe\x00bad", "not a readable CSV")],
)
def test_bad_manifest_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "m.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InputError, match=message):
        read_manifest(path)
    with pytest.raises(InputError, match="no such manifest"):
        read_manifest(tmp_path / "missing.csv")


def test_workers_must_be_positive(store, settings):
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        run_study(Pipeline(store, settings), [StudyItem("a.mp4")], workers=0)


def test_workers_equal_sequential_and_rerun_skips(tmp_path, samples, settings, sequential):
    store = Store(tmp_path / "w2.duckdb")
    items, _ = read_manifest(_manifest(tmp_path, samples))
    results = run_study(Pipeline(store, settings), items, workers=2)
    assert [r.error for r in results] == [None] * len(CLIPS)
    assert _counts(store) == sequential
    # the respondent id names the person seen most in their recording
    single = next(r.result for r in results if r.result.title == "single_face")
    assert store.people(single.run_id)["person"].to_list() == ["r01"]
    tags = store.tags().filter(clip_id=single.clip_id)
    assert dict(zip(tags["key"], tags["value"], strict=True)) == {"respondent": "r01", "segment": "A"}
    again = run_study(Pipeline(store, settings), items, workers=2)
    assert all(r.result.reused for r in again)
    assert _counts(store) == sequential


def test_cli_manifest_reports_bad_rows_and_goes_on(tmp_path, samples):
    path = _manifest(tmp_path, samples, extra="media/missing.mp4,,,A\n")
    db = tmp_path / "cli.duckdb"
    proc = run_cli("process", "--manifest", str(path), "--db", str(db), "--model", "mini-xception", "--json")
    assert proc.returncode == 1, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == len(CLIPS) + 1
    assert [r["row"] for r in rows if r.get("error")] == [len(CLIPS) + 1]
    assert "missing.mp4: no such file" in proc.stderr
    assert sum(1 for r in rows if r.get("status") == "done") == len(CLIPS)
    table = run_cli("process", "--manifest", str(path), "--db", str(db), "--model", "mini-xception")
    assert "Study summary" in table.stdout and f"{len(CLIPS)} of {len(CLIPS) + 1} sources done" in table.stdout
    assert table.stdout.count("reused") == len(CLIPS)
    both = run_cli("process", "x.mp4", "--manifest", str(path), "--db", str(db))
    assert both.returncode == 1 and "not both" in both.stderr


@pytest.fixture
def ray_head():
    """A real Ray head on this machine with 2 CPUs and token authentication (the token: see conftest), started as a
    subprocess and stopped by its PID. Ray advertises the node's own address for 127.0.0.1: still this machine."""
    pytest.importorskip("ray")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats", "--block"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    import ray

    deadline = time.monotonic() + 120
    while True:
        try:
            ray.init(address=address, log_to_driver=False)
            ray.shutdown()
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"ray head did not start on {address}")
            time.sleep(2)
    yield address
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _actor_pids() -> list[int]:
    """Processes of ferpipe's Ray actors (Ray titles them ray::Analyser...)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"ray::Analyser" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_ray_cluster_equals_sequential_and_survives_a_dead_actor(tmp_path, samples, settings, sequential, ray_head,
                                                                 cpu_hog):  # fmt: skip
    store = Store(tmp_path / "ray.duckdb")
    items, _ = read_manifest(_manifest(tmp_path, samples))
    killed: list[int] = []

    def progress(finished: int, total: int, source: str, frames: int, expected: int) -> None:
        # kill -9 the actor analysing the longest clip once it has sent a batch: Ray restarts it, the clip resumes
        if source.startswith("WolfgangLanger") and 0 < frames < expected and not killed:
            pids = _actor_pids()
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed.extend(pids)

    pipeline = Pipeline(store, settings)
    pipeline.commit_seconds = 0.001  # every batch is committed as it arrives, so the retried clip has one to resume
    results = run_study(pipeline, items, ray=ray_head, progress=progress)
    assert killed, "no actor was running to kill"
    assert [r.error for r in results] == [None] * len(CLIPS)
    assert _counts(store) == sequential
    wolfgang = next(r.result for r in results if r.result.title == "WolfgangLanger_Pexels")
    assert wolfgang.resumed  # it went on from its last commit, in the same run, without duplicate rows
    assert store.query("SELECT count(*) AS n FROM runs WHERE clip_id = ?", [wolfgang.clip_id])["n"][0] == 1
    dupes = store.query(
        "SELECT count(*) AS n FROM (SELECT run_id, frame_index, face_id FROM observations GROUP BY ALL HAVING count(*) > 1)"
    )
    assert dupes["n"][0] == 0
    deadline = time.monotonic() + 30  # the study's actors end with it (the head stays: the fixture stops it)
    while _actor_pids() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _actor_pids(), "Ray actors outlived the study"


def test_cli_ray_local(tmp_path, samples, sequential):
    path = _manifest(tmp_path, samples)
    db = tmp_path / "local.duckdb"
    proc = run_cli("process", "--manifest", str(path), "--db", str(db), "--model", "mini-xception", "--ray", "local",
                   "--workers", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert _counts(Store(db)) == sequential


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        todo += kids
    return out


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def cpu_hog():
    """A process spinning on a core beside the test (#26: the faults must be handled on a loaded machine)."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
    yield hog
    hog.kill()
    hog.wait()


def test_killed_driver_resumes_without_duplicates(tmp_path, samples, settings, cpu_hog):
    """kill -9 of a --workers 2 study mid-way leaves committed batches; the re-run resumes and equals a clean run."""
    media = tmp_path / "media"
    media.mkdir()
    long = samples["audience_grid.mp4"]
    lines = ["source"]
    for k in range(2):
        copy = media / f"grid{k}.mp4"  # two distinct clips (one byte appended changes the hash, not the video)
        copy.write_bytes(long.read_bytes() + bytes([k]))
        lines.append(str(copy))
    path = tmp_path / "study.csv"
    path.write_text("\n".join(lines) + "\n")
    db = tmp_path / "kill.duckdb"
    args = [sys.executable, "-m", "ferpipe.cli", "-v", "process", "--manifest", str(path), "--db", str(db), "--model",
            "mini-xception", "--workers", "2"]  # fmt: skip
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    )
    commits = 0
    for line in proc.stderr:  # kill -9 once both clips have committed a batch
        commits += "committed" in line
        if commits >= 3:
            break
    family = _descendants(proc.pid)
    assert len(family) >= 2, family  # the two analysing workers (and multiprocessing's helper)
    proc.kill()
    proc.wait()
    assert commits >= 3
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in family if _alive(p)], "worker processes outlived their killed driver"
    store = Store(db)
    partial = store.query("SELECT status, observations FROM runs ORDER BY run_id")
    assert partial["status"].to_list() == ["running", "running"] and sum(partial["observations"]) > 0
    rerun = run_cli("process", "--manifest", str(path), "--db", str(db), "--model", "mini-xception", "--workers", "2",
                    "--json")  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert any(json.loads(line)["resumed"] for line in rerun.stdout.splitlines())
    store = Store(db)
    runs = store.query("SELECT clip_id, status, observations FROM runs ORDER BY clip_id")
    assert runs["status"].to_list() == ["done", "done"]
    actual = store.query("SELECT run_id, count(*) AS n FROM observations GROUP BY run_id ORDER BY run_id")
    assert (
        actual["n"].to_list() == store.query("SELECT observations FROM runs ORDER BY run_id")["observations"].to_list()
    )
    dupes = store.query(
        "SELECT count(*) AS n FROM (SELECT run_id, frame_index, face_id FROM observations GROUP BY ALL HAVING count(*) > 1)"
    )
    assert dupes["n"][0] == 0
    clean = Store(tmp_path / "clean.duckdb")
    run_study(Pipeline(clean, settings), [StudyItem(str(media / "grid0.mp4"))])
    assert runs["observations"].to_list() == [clean.query("SELECT observations FROM runs")["observations"][0]] * 2


def test_manifest_text_loses_control_characters(tmp_path):
    """A NUL in a manifest title was stored as is; manifest titles, tags and respondents are cleaned as uploads."""
    from ferpipe.study import parse_manifest

    rows, bad = parse_manifest("source,title,respondent,panel\na.mp4,Ad\x00 one\x07,r\x001,\x1bA\n", name="m.csv")
    assert not bad
    assert rows[0].title == "Ad one" and rows[0].respondent == "r1" and rows[0].tags["panel"] == "A"
