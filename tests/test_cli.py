"""The real `ferpipe` command: JSON output, exports, and every bad input (one line, non-zero, nothing lost)."""

import json
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import polars as pl
import pytest
from conftest import run_cli

from ferpipe.signals import BLENDSHAPES

TIMELINE_COLUMNS = ["clip_id", "person_id", "person", "face_id", "timestamp_s", "frame_index", "x", "y", "w", "h",
                    "det_score", "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "valence", "arousal",
                    "confidence", "yaw_deg", "pitch_deg", "roll_deg", "eye_openness", "attentive", "mesh_score"]  # fmt: skip


def _counts(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("clips", "runs", "faces", "observations")
        }
    finally:
        con.close()


@pytest.fixture
def seeded(db_path, samples):
    r = run_cli("process", str(samples["single_face.mp4"]), "--db", str(db_path), "--json", "--tag", "group=A",
                "--title", "Panel 1", "--model", "mini-xception")  # fmt: skip
    assert r.returncode == 0, r.stderr
    return db_path, json.loads(r.stdout.strip().splitlines()[-1])


def test_process_json_and_clips(seeded):
    db, res = seeded
    for key in ("clip_id", "run_id", "frames_analyzed", "faces", "observations", "seconds"):
        assert key in res
    assert res["faces"] == 1 and res["observations"] == res["frames_analyzed"] == 12
    r = run_cli("clips", "--db", str(db), "--json")
    assert r.returncode == 0
    rows = json.loads(r.stdout)
    assert rows[0]["clip_id"] == res["clip_id"] and rows[0]["title"] == "Panel 1" and rows[0]["tags"] == "group=A"
    assert rows[0]["people"] == 1 and rows[0]["faces"] == 1  # people and face tracks, each named


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_timeline_and_aggregate(seeded, tmp_path, fmt):
    db, res = seeded
    out = tmp_path / f"t.{fmt}"
    r = run_cli(
        "export", "--db", str(db), "--clip", res["clip_id"], "--what", "timeline", "--format", fmt, "--out", str(out)
    )
    assert r.returncode == 0, r.stderr
    df = pl.read_csv(out) if fmt == "csv" else pl.read_parquet(out)
    assert df.columns[: len(TIMELINE_COLUMNS)] == TIMELINE_COLUMNS and df.height == res["observations"]
    assert [c for c in df.columns if c.startswith("bs_")] == [f"bs_{n.lstrip('_')}" for n in BLENDSHAPES]
    agg = tmp_path / f"a.{fmt}"
    r = run_cli(
        "export", "--db", str(db), "--clip", res["clip_id"], "--what", "aggregate", "--format", fmt, "--out", str(agg)
    )
    assert r.returncode == 0, r.stderr
    a = pl.read_csv(agg) if fmt == "csv" else pl.read_parquet(agg)
    assert {"t_s", "n_people", "happy_mean", "happy_lo", "happy_hi"} <= set(a.columns)
    assert a["n_people"].to_list() == [1, 1, 1]  # 2.4 s clip, 1 s bins, one person


def _bad(db, *args, expect):
    before = _counts(db)
    r = run_cli("process", *args, "--db", str(db))
    assert r.returncode != 0
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert expect in lines[0].lower(), lines[0]
    assert _counts(db) == before
    return lines[0]


def test_bad_inputs_leave_the_database_intact(seeded, tmp_path, samples):
    db, _ = seeded
    text = tmp_path / "notes.mp4"
    text.write_text("hello " * 1000)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(samples["WolfgangLanger_Pexels.mp4"].read_bytes()[:40_000])
    notes = tmp_path / "notes.txt"
    notes.write_text("not media")
    _bad(db, str(notes), expect="not a video or image file")
    _bad(db, str(text), expect="not a readable video")
    _bad(db, str(empty), expect="empty")
    _bad(db, str(truncated), expect="truncated")
    _bad(db, "file:///etc/passwd", expect="only http and https")
    _bad(db, "http://127.0.0.1:9/clip.mp4", expect="private address")
    _bad(db, str(samples["single_face.mp4"]), "--model", "nope", expect="unknown model 'nope'")
    _bad(db, str(samples["single_face.mp4"]), "--tag", "novalue", expect="key=value")


def test_bad_urls_with_local_server(seeded, http_dir):
    from conftest import free_port

    db, _ = seeded
    root, base = http_dir
    (root / "page.html").write_text("<html>hi</html>")
    env = {"FERPIPE_ALLOW_PRIVATE_URLS": "1"}
    for url, expect in (
        (f"{base}/page.html", "cannot download"),
        (f"http://127.0.0.1:{free_port()}/v.mp4", "cannot download"),
    ):
        before = _counts(db)
        r = run_cli("process", url, "--db", str(db), env=env)
        assert r.returncode != 0 and expect in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert _counts(db) == before


def test_url_process_end_to_end(db_path, samples, http_dir):
    root, base = http_dir
    shutil.copy(samples["single_face.mp4"], root / "v.mp4")
    r = run_cli("process", f"{base}/v.mp4", "--db", str(db_path), "--json", env={"FERPIPE_ALLOW_PRIVATE_URLS": "1"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["faces"] == 1


def test_no_face_video_says_so(db_path, samples):
    r = run_cli("process", str(samples["no_face.mp4"]), "--db", str(db_path))
    assert r.returncode == 0 and "no faces found" in r.stdout


def test_kill_9_mid_run_leaves_a_consistent_db_and_resumes(db_path, samples):
    cmd = [sys.executable, "-m", "ferpipe.cli", "process", str(samples["audience_grid.mp4"]), "--every-frame",
           "--db", str(db_path), "--model", "mini-xception"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from ferpipe.store import Store

    store = Store(db_path, timeout_s=30)
    deadline = time.monotonic() + 240
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if db_path.exists():
            try:
                runs = store.query("SELECT frames_done FROM runs")
            except Exception:
                continue
            done = int(runs["frames_done"][0]) if runs.height else 0
            if done > 0:
                break
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = store.query("SELECT * FROM runs").row(0, named=True)
    assert run["status"] == "running" and 0 < run["frames_done"] < 472
    n_obs = store.query("SELECT count(*) AS n FROM observations")["n"][0]
    assert n_obs == run["observations"]
    assert store.query("SELECT sum(n_obs) AS n FROM faces")["n"][0] == n_obs
    assert store.query("SELECT max(frame_index) AS m FROM observations")["m"][0] <= run["last_frame_index"]
    # resume: same run, no duplicate rows, every frame analysed once
    r = run_cli("process", str(samples["audience_grid.mp4"]), "--every-frame", "--db", str(db_path), "--json",
                "--model", "mini-xception")  # fmt: skip
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["run_id"] == run["run_id"] and res["resumed"] and res["frames_analyzed"] == 472
    dup = store.query(
        "SELECT count(*) AS n FROM (SELECT face_id, frame_index FROM observations GROUP BY ALL HAVING count(*) > 1)"
    )
    assert dup["n"][0] == 0
    assert store.query("SELECT count(DISTINCT frame_index) AS n FROM observations")["n"][0] >= 460
    assert store.query("SELECT sum(n_obs) AS n FROM faces")["n"][0] == res["observations"]


def test_models_list(tmp_path):
    r = run_cli("models", "list", "--json")
    assert r.returncode == 0
    names = {m["name"] for m in json.loads(r.stdout)}
    assert {"mini-xception", "mtcnn"} <= names


def test_eval_json(fer_parquet):
    r = run_cli(
        "eval",
        "--data",
        str(fer_parquet),
        "--split",
        "public_test",
        "--model",
        "mini-xception",
        "--limit",
        "500",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["n"] == 500 and 0.45 < rep["accuracy"] < 0.75
    assert set(rep["per_class"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}


def test_eval_bad_inputs(tmp_path, fer_parquet):
    r = run_cli("eval", "--data", str(tmp_path / "missing.parquet"))
    assert r.returncode != 0 and "no such file" in r.stderr
    r = run_cli("eval", "--data", str(fer_parquet), "--split", "nope")
    assert r.returncode != 0 and "split 'nope' not found" in r.stderr


# ---- hardening and CLI defects -------------------------------------------------------------------


def _start_long_run(db_path, samples):
    """`ferpipe process` on the audience grid, every frame, returned once its first batch is committed."""
    from ferpipe.store import Store

    cmd = [sys.executable, "-m", "ferpipe.cli", "process", str(samples["audience_grid.mp4"]), "--every-frame",
           "--db", str(db_path), "--model", "mini-xception"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    store = Store(db_path, timeout_s=30)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
        try:
            runs = store.query("SELECT frames_done FROM runs")
        except Exception:
            continue
        if runs.height and int(runs["frames_done"][0]) > 0:
            break
    assert proc.poll() is None, "the run finished before the test could act"
    return proc, store


def test_delete_during_a_run_stops_it_and_leaves_no_orphans(db_path, samples):
    proc, store = _start_long_run(db_path, samples)
    clip_id = store.query("SELECT clip_id FROM clips")["clip_id"][0]
    r = run_cli("delete", "--db", str(db_path), "--clip", clip_id[:6])  # a unique prefix is enough
    assert r.returncode == 0, r.stderr
    assert f"deleted {clip_id}" in r.stdout
    proc.wait(timeout=60)
    assert "Traceback" not in proc.stderr.read()
    for table in ("clips", "runs", "faces", "observations", "clip_tags"):
        assert store.query(f"SELECT count(*) AS n FROM {table}")["n"][0] == 0, table
    r = run_cli("delete", "--db", str(db_path), "--clip", clip_id)
    assert r.returncode == 1 and "unknown clip" in r.stderr


def test_a_killed_run_shows_as_interrupted(db_path, samples):
    proc, _store = _start_long_run(db_path, samples)
    proc.kill()
    proc.wait()
    r = run_cli("clips", "--db", str(db_path), "--json")
    assert json.loads(r.stdout)[0]["status"] == "interrupted"


def test_truncated_media_is_stored_as_truncated_and_exits_1(db_path, samples, tmp_path):
    half = tmp_path / "half.mp4"
    data = samples["WolfgangLanger_Pexels.mp4"].read_bytes()
    half.write_bytes(data[: len(data) // 2])
    r = run_cli("process", str(half), "--db", str(db_path), "--json", "--model", "mini-xception")
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "truncated media" in lines[0] and "19.7 s" in lines[0], r.stderr
    res = json.loads(r.stdout)
    assert res["status"] == "truncated" and res["faces"] == 1
    assert json.loads(run_cli("clips", "--db", str(db_path), "--json").stdout)[0]["status"] == "truncated"


def test_a_non_utf8_file_name_is_processed(db_path, samples, tmp_path):
    import os

    path = tmp_path / os.fsdecode(b"bad\xff\xfe.mp4")
    shutil.copy(samples["single_face.mp4"], path)
    r = subprocess.run([sys.executable, "-m", "ferpipe.cli", "process", os.fsencode(path), "--db", str(db_path),
                        "--json", "--model", "mini-xception"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["faces"] == 1


def test_malformed_model_specs_do_not_break_other_runs(db_path, samples, tmp_path):
    specs = tmp_path / "specs"
    (specs / "folder.json").mkdir(parents=True)
    (specs / "files.json").write_text(json.dumps({"name": "a", "task": "expression", "files": [1]}))
    (specs / "name.json").write_text(json.dumps({"name": ["x"], "task": "expression", "files": {}}))
    (specs / "broken.json").write_text("{not json")
    env = {"FERPIPE_MODELS": str(specs)}
    r = run_cli("process", str(samples["single_face.mp4"]), "--db", str(db_path), "--json", "--model",
                "mini-xception", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run_cli("models", "list", "--json", env=env)
    assert r.returncode == 0 and "mini-xception" in r.stdout


def test_csv_exports_neutralise_formulas(db_path, samples, tmp_path):
    r = run_cli("process", str(samples["single_face.mp4"]), "--db", str(db_path), "--json", "--model",
                "mini-xception", "--title", '=HYPERLINK("http://x","y")')  # fmt: skip
    clip_id = json.loads(r.stdout)["clip_id"]
    out = tmp_path / "curves.csv"
    r = run_cli("report", "--db", str(db_path), "--clip", clip_id, "--format", "csv", "--out", str(out))
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "'=HYPERLINK" in text and "\n=" not in text and ",=" not in text


def test_process_a_folder_and_refuse_one_title_for_several(db_path, samples, tmp_path):
    folder = tmp_path / "study"
    (folder / "day2").mkdir(parents=True)
    shutil.copy(samples["single_face.mp4"], folder / "a.mp4")
    shutil.copy(samples["single_face.jpg"], folder / "day2" / "b.jpg")
    (folder / "notes.txt").write_text("ignored")
    r = run_cli("process", str(folder), "--db", str(db_path), "--json", "--model", "mini-xception")
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["faces"] for x in r.stdout.splitlines()] == [1, 1]
    r = run_cli("process", str(folder), "--db", str(db_path), "--title", "same")
    assert r.returncode == 1 and "--title names one clip" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run_cli("process", str(tmp_path / "empty"), "--db", str(db_path))
    assert r.returncode == 1 and "without videos or images" in r.stderr


def test_clip_ids_print_whole_and_prefixes_work(seeded, tmp_path):
    db, res = seeded
    r = subprocess.run([sys.executable, "-m", "ferpipe.cli", "clips", "--db", str(db)], capture_output=True,
                       text=True, env={**__import__("os").environ, "COLUMNS": "60"})  # fmt: skip
    assert res["clip_id"] in r.stdout  # never cut, even on a narrow terminal
    out = tmp_path / "t.csv"
    r = run_cli("export", "--db", str(db), "--clip", res["clip_id"][:4], "--out", str(out))
    assert r.returncode == 0, r.stderr
    r = run_cli("export", "--db", str(db), "--clip", "zzzz", "--out", str(out))
    assert r.returncode == 1 and "unknown clip 'zzzz'" in r.stderr


def test_help_is_readable():
    r = run_cli("process", "--help", env={"COLUMNS": "120"})
    assert r.returncode == 0
    assert "<bool>" not in r.stdout and "{sources}" not in r.stdout and "SOURCE..." in r.stdout


def test_markers_people_and_attributes_from_the_command_line(seeded, tmp_path):
    db, res = seeded
    clip = res["clip_id"][:5]
    r = run_cli(
        "markers", "add", "--db", str(db), "--clip", clip, "--name", "brand reveal", "--at", "0.5", "--to", "1.5"
    )
    assert r.returncode == 0 and "brand reveal at 0.5 s to 1.5 s" in r.stdout
    r = run_cli("markers", "add", "--db", str(db), "--clip", clip, "--name", "bad", "--at", "2", "--to", "1")
    assert r.returncode == 1 and "start < end" in r.stderr
    listed = json.loads(run_cli("markers", "list", "--db", str(db), "--clip", clip, "--json").stdout)
    assert [m["name"] for m in listed] == ["brand reveal"]
    people = json.loads(run_cli("people", "list", "--db", str(db), "--clip", clip, "--json").stdout)
    assert len(people) == 1
    pid = people[0]["person_id"]
    csv = tmp_path / "respondents.csv"
    csv.write_text(f"clip,person,gender,age_band\n{res['clip_id']},{pid},f,25-34\n")
    r = run_cli("people", "import", str(csv), "--db", str(db))
    assert r.returncode == 0 and "attributes set for 1 person" in r.stdout, r.stderr
    people = json.loads(run_cli("people", "list", "--db", str(db), "--clip", clip, "--json").stdout)
    assert people[0]["person"] == f"person {pid}"
    r = run_cli("people", "name", str(pid), "R-017", "--db", str(db), "--clip", clip)
    assert r.returncode == 0
    assert (
        json.loads(run_cli("people", "list", "--db", str(db), "--clip", clip, "--json").stdout)[0]["person"] == "R-017"
    )
    r = run_cli("people", "merge", str(pid), "--db", str(db), "--clip", clip)
    assert r.returncode == 1 and "two or more" in r.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("who,what\n1,2\n")
    r = run_cli("people", "import", str(bad), "--db", str(db))
    assert r.returncode == 1 and "needs columns clip, person" in r.stderr
    r = run_cli("markers", "delete", str(listed[0]["marker_id"]), "--db", str(db))
    assert r.returncode == 0


def test_signals_and_people_can_be_turned_off(db_path, samples):
    """--no-signals: expressions only (no pose, attention or blendshapes stored); --no-people: no person ids; a
    narrower attention cone is its own run, and a bad cone is one line."""
    clip = str(samples["single_face.mp4"])
    r = run_cli("process", clip, "--db", str(db_path), "--json", "--no-signals", "--no-people")
    assert r.returncode == 0, r.stderr
    off = json.loads(r.stdout.strip().splitlines()[-1])
    r = run_cli("process", clip, "--db", str(db_path), "--json", "--attention-yaw", "10")
    assert r.returncode == 0, r.stderr
    on = json.loads(r.stdout.strip().splitlines()[-1])
    assert on["run_id"] != off["run_id"] and not on["reused"]
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        rows = con.execute("SELECT o.run_id, count(*), count(o.yaw_deg), count(o.attentive), count(f.person_id) "
                           "FROM observations o JOIN faces f USING (run_id, face_id) GROUP BY o.run_id").fetchall()  # fmt: skip
    finally:
        con.close()
    by_run = {row[0]: row[1:] for row in rows}
    n, yaw, att, person = by_run[off["run_id"]]
    assert n > 0 and yaw == att == person == 0
    n, yaw, att, person = by_run[on["run_id"]]
    assert n > 0 and yaw > 0 and att > 0 and person == n
    bad = run_cli("process", clip, "--db", str(db_path), "--attention-yaw", "-5")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "-5" in bad.stderr
