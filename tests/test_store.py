import subprocess
import sys
import threading
import time

import duckdb
import numpy as np
import pytest

from ferpipe.store import MIGRATIONS, SCHEMA_VERSION, ObservationSink, Store
from ferpipe.types import Detections, Expressions, Observations, RunProgress


def _rows(run_id, frames, faces=(1,)):
    """Observations of the given faces in the given frames (40 ms apart), all neutral. run_id: unused (the
    store stamps the run)."""
    pairs = [(f, face) for f in frames for face in faces]
    n = len(pairs)
    probs = np.zeros((n, 7), np.float32)
    probs[:, 6] = 1.0
    dets = Detections(np.tile([0, 0, 10, 10], (n, 1)), np.full(n, 0.9), np.zeros((n, 5, 2)), [p[1] for p in pairs])
    return Observations([p[0] for p in pairs], [p[0] * 40.0 for p in pairs], dets,
                        Expressions(probs, np.zeros(n), np.zeros(n)))  # fmt: skip


def _progress(frames):
    return RunProgress(len(frames), frames[-1], frames[-1] * 40.0, 1.0, {"next_id": 2})


def _clip(store, cid="c1"):
    store.upsert_clip(
        cid, {"sha256": cid * 8, "path": f"/x/{cid}.mp4", "title": cid, "duration_s": 10.0}, {"group": "A"}
    )


def test_migrations_bring_old_files_up_to_date(db_path):
    con = duckdb.connect(str(db_path))
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    con.execute(MIGRATIONS[0])
    con.execute("INSERT INTO schema_version VALUES (1)")
    con.close()
    assert Store(db_path).migrate() == SCHEMA_VERSION
    cols = Store(db_path).query("DESCRIBE clips")["column_name"].to_list()
    assert "stimulus_clip_id" in cols
    assert Store(db_path).migrate() == SCHEMA_VERSION  # idempotent


def test_sink_commits_in_batches_with_progress(store):
    _clip(store)
    run_id = store.start_run("c1", "m", "mtcnn", {"a": 1}, 100).run_id
    with ObservationSink(store, run_id, batch_rows=10, batch_seconds=60) as sink:
        sink.append(_rows(run_id, range(6)), _progress(list(range(6))))
        assert store.run(run_id).observations == 0  # not yet committed
        sink.append(_rows(run_id, range(6, 12)), _progress(list(range(12))))
        assert store.run(run_id).observations == 12
        sink.append(_rows(run_id, range(12, 14)), _progress(list(range(14))))
    run = store.run(run_id)
    assert run.observations == 14 and run.frames_done == 14 and run.faces == 1
    face = store.query("SELECT * FROM faces").row(0, named=True)
    assert face["n_obs"] == 14 and face["first_seen_ms"] == 0 and face["last_seen_ms"] == 13 * 40.0
    assert sink.commits == 2


def test_failure_drops_uncommitted_rows_and_marks_run(store):
    _clip(store)
    run_id = store.start_run("c1", "m", "mtcnn", {"a": 1}, 100).run_id

    def crash() -> None:
        with ObservationSink(store, run_id, batch_rows=1000, batch_seconds=60) as sink:
            sink.append(_rows(run_id, range(5)), _progress(list(range(5))))
            raise RuntimeError("decoder crashed")

    with pytest.raises(RuntimeError):
        crash()
    run = store.run(run_id)
    assert run.status == "failed" and run.error == "decoder crashed" and run.observations == 0
    # an unfinished run with the same settings is resumed, not duplicated
    again = store.start_run("c1", "m", "mtcnn", {"a": 1}, 100).run_id
    assert again == run_id and store.run(again).status == "running"


def test_unfinished_run_is_resumed(store):
    _clip(store)
    run_id = store.start_run("c1", "m", "mtcnn", {"a": 1}, 100).run_id
    store.finish_run(run_id, "interrupted")
    run = store.start_run("c1", "m", "mtcnn", {"a": 1}, 100)
    assert run.run_id == run_id and run.status == "running"
    other = store.start_run("c1", "m", "mtcnn", {"a": 2}, 100).run_id
    assert other != run_id


def test_runs_list_the_model_version_and_rate_newest_first(store):
    _clip(store)
    old = store.start_run("c1", "m", "mtcnn", {"sample_fps": None}, 100).run_id  # from before fingerprints
    new = store.start_run("c1", "m", "mtcnn", {"sample_fps": 5.0, "model_fingerprint": "ab" * 8}, 100).run_id
    runs = store.runs()
    assert runs["run_id"].to_list() == [new, old]
    assert runs["model_version"].to_list() == ["ab" * 8, None]
    assert runs["sample_fps"].to_list() == [5.0, None]
    assert runs["title"].to_list() == [store.clip("c1")["title"]] * 2


def test_page_reads_faces_moments_timelines_tags_and_runs(store):
    _clip(store)
    run_id = store.start_run("c1", "m", "mtcnn", {"a": 1}, 100).run_id
    with ObservationSink(store, run_id) as sink:
        sink.append(_rows(run_id, range(10), faces=(1, 2)), _progress(list(range(10))))
        sink.append(_rows(run_id, range(10, 30), faces=(2,)), _progress(list(range(30))))
    assert store.running_runs()["title"].to_list() == ["c1"]
    store.finish_run(run_id, "done")
    assert store.running_runs().is_empty()
    later = store.start_run("c1", "m2", "mtcnn", {"a": 2}, 100).run_id
    assert store.clip_runs("c1")["run_id"].to_list() == [run_id, later]  # finished first
    assert store.clip_runs("c1", "m2")["run_id"].to_list() == [later]
    assert store.faces(run_id)["face_id"].to_list() == [2, 1]  # most observed first
    at = store.faces_at(run_id, 330.0)  # frames are 40 ms apart: nearest is frame 8 for both faces
    assert at["face_id"].to_list() == [1, 2] and at["timestamp_ms"].to_list() == [320.0, 320.0]
    assert store.faces_at(run_id, 1000.0)["face_id"].to_list() == [2]  # face 1 left at 360 ms
    assert store.faces_at(run_id, 5000.0).is_empty()
    tl = store.face_timelines(run_id, [1], ["happy", "neutral"])
    assert tl.columns == ["face_id", "timestamp_ms", "happy", "neutral"] and tl.height == 10
    assert tl["timestamp_ms"].is_sorted() and set(tl["face_id"]) == {1}
    assert store.face_timelines(run_id, [1, 2], ["happy"]).height == 40
    assert store.face_timelines(run_id, [], ["happy"]).is_empty()
    with pytest.raises(ValueError, match="unknown observation columns"):
        store.face_timelines(run_id, [1], ["happy; DROP TABLE runs"])
    assert store.tags().rows() == [("group", "A", "c1")]


def test_readers_and_writer_share_the_file(store):
    """A reader in a loop never sees 'database is locked' while a writer commits batches."""
    _clip(store)
    run_id = store.start_run("c1", "m", "mtcnn", {"a": 1}, 100).run_id
    errors, seen = [], []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.append(Store(store.path).query("SELECT count(*) AS n FROM observations")["n"][0])
            except Exception as exc:
                errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    with ObservationSink(store, run_id, batch_rows=5, batch_seconds=60) as sink:
        for k in range(10):
            sink.append(_rows(run_id, range(k * 5, k * 5 + 5)), _progress(list(range(k * 5 + 5))))
            time.sleep(0.02)
    time.sleep(0.1)
    stop.set()
    t.join()
    assert not errors
    assert seen == sorted(seen) and seen[-1] == 50


def test_delete_clip_removes_everything(store, tmp_path):
    media = tmp_path / "c1.mp4"
    media.write_bytes(b"x")
    store.upsert_clip("c1", {"sha256": "c1" * 8, "path": str(media), "title": "c1", "duration_s": 1.0}, {"g": "A"})
    run_id = store.start_run("c1", "m", "mtcnn", {}, 10).run_id
    store.commit_batch(run_id, _rows(run_id, range(3)), _progress([0, 1, 2]))
    store.delete_clip("c1")
    for table in ("clips", "clip_tags", "runs", "faces", "observations"):
        assert store.query(f"SELECT count(*) AS n FROM {table}")["n"][0] == 0
    assert not media.exists()


def test_bad_arguments(store, tmp_path):
    with pytest.raises(ValueError, match="not a video or image"):
        Store(tmp_path / "clip.mp4")
    with pytest.raises(ValueError, match="status"):
        store.finish_run(1, "exploded")
    with pytest.raises(ValueError, match="unknown clip"):
        store.clip("nope")
    with pytest.raises(ValueError, match="batch_rows"):
        ObservationSink(store, 1, batch_rows=0)


# ---- property tests (hypothesis) -------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_batch = st.lists(st.tuples(st.integers(1, 3), st.sampled_from([0.0, 40.0, 40.0, 1e9]), st.floats(-1e7, 1e7)),
                  max_size=15)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_batch, min_size=1, max_size=6))
def test_committed_batches_keep_the_counts_consistent(tmp_path_factory, batches):
    """Any batches (empty ones, one face, duplicate timestamps, huge boxes): the run's counts, the faces table
    and the observations agree after every commit."""
    store = Store(tmp_path_factory.mktemp("prop") / "db.duckdb")
    store.migrate()
    _clip(store)
    run = store.start_run("c1", "m", "mtcnn", {}, 100)
    total, frames = 0, 0
    seen: dict[int, list[float]] = {}
    for rows in batches:
        n = len(rows)
        probs = np.full((n, 7), 1 / 7, np.float32)
        boxes = np.array([[x, x, x + 10, x + 10] for _, _, x in rows]).reshape(-1, 4)
        dets = Detections(boxes, np.full(n, 0.9), np.zeros((n, 5, 2)), [f for f, _, _ in rows])
        obs = Observations(np.arange(frames, frames + n), [t for _, t, _ in rows], dets,
                           Expressions(probs, np.zeros(n), np.zeros(n)))  # fmt: skip
        frames += n
        total += n
        for f, t, _ in rows:
            seen.setdefault(f, []).append(t)
        store.commit_batch(run.run_id, obs, RunProgress(frames, frames - 1, 0.0, 1.0))
        row = store.run(run.run_id)
        assert row.observations == total and row.faces == len(seen)
    faces = store.query("SELECT face_id, n_obs, first_seen_ms, last_seen_ms FROM faces ORDER BY face_id").rows()
    assert faces == [(f, len(ts), min(ts), max(ts)) for f, ts in sorted(seen.items())]
    assert store.face_bins(run.run_id, 1.0, ("happy",))["n_obs"].sum() == total


def test_a_holding_block_shares_one_connection_and_keeps_each_transaction_its_own(store, monkeypatch):
    """Inside ``holding`` the file is opened once; a failing transaction rolls back only itself; it is re-entrant."""
    _clip(store)
    opened = []
    real = duckdb.connect
    monkeypatch.setattr(duckdb, "connect", lambda *a, **k: opened.append(a) or real(*a, **k))
    with store.holding():
        run_id = store.start_run("c1", "m", "mtcnn", {"a": 1}, 100).run_id
        with store.holding():  # nested: the same connection
            assert store.run(run_id).status == "running"

        def fail_mid_way():
            with store.transaction() as con:
                con.execute("UPDATE runs SET status = 'broken' WHERE run_id = ?", [run_id])
                raise RuntimeError("fails mid-way")

        with pytest.raises(RuntimeError, match="fails mid-way"):
            fail_mid_way()
        assert store.run(run_id).status == "running"  # rolled back
        store.finish_run(run_id, "done")
    assert len(opened) == 1
    assert store.run(run_id).status == "done"  # committed, and the file is free again
    assert len(opened) == 2


def test_a_write_inside_a_read_block_steps_the_reader_aside_and_reads_on(store):
    """A page reads through one connection; a button's write inside it commits, and the page reads it back."""
    _clip(store)
    with store.reading():
        assert store.markers("c1").is_empty()
        store.add_marker("c1", "brand reveal", 1.0, None)  # a write: would wait on its own read lock otherwise
        assert store.markers("c1")["name"].to_list() == ["brand reveal"]
        with store.holding():  # and a held write block inside it
            store.add_marker("c1", "price", 2.0, 3.0)
        assert store.markers("c1").height == 2
        with store.released():  # long work without the database: another process could write meanwhile
            other = subprocess.run([sys.executable, "-c", "from ferpipe.store import Store; import sys; "
                                    "Store(sys.argv[1], timeout_s=2).add_marker('c1', 'from elsewhere', 4.0)",
                                    str(store.path)], capture_output=True, text=True)  # fmt: skip
            assert other.returncode == 0, other.stderr
        assert store.markers("c1").height == 3  # read again on the reopened connection
    reader = Store(store.path)
    assert reader.markers("c1").height == 3  # committed, and the file is free


def test_markers_outside_the_clip_are_refused(store):
    """A marker at 1e308 s was accepted (and flattened every PDF chart): refused now with one line."""
    store.upsert_clip("m1", {"sha256": "m" * 64, "path": "/m1.mp4", "title": "m1", "duration_s": 20.0}, {})
    with pytest.raises(ValueError, match="after the end of the clip"):
        store.add_marker("m1", "far", 1e308)
    with pytest.raises(ValueError, match="after the end of the clip"):
        store.add_marker("m1", "long", 5.0, 60.0)
    assert store.add_marker("m1", "end", 19.0, 20.0) > 0
    store.upsert_clip("live1", {"sha256": "l" * 64, "path": "/l.ts", "title": "live", "duration_s": 0.0}, {})
    assert store.add_marker("live1", "early", 30.0) > 0  # a live clip still growing has no end yet
