"""DuckDB storage: clips, processing runs, faces (tracks) and observations, in one file.

DuckDB lets one process write or many read, never both at once. ferpipe therefore
never holds a connection open: writers open, commit one batch and close (tens of
milliseconds), readers open read-only for one query, and both retry while the other
holds the file. A dashboard can so read a clip while a pipeline run writes it.
Opening the file costs about 12 ms, so a block of several short steps (a run's start or
its end) shares one connection (``holding``, ``reading``).

Each batch of observations is committed in one transaction together with the run's
progress and tracker state, so a run killed at any moment leaves the database at the
last committed batch, and can resume from there without duplicate rows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from .config import pid_alive
from .errors import DatabaseError, FerpipeError
from .frames import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from .signals import BS_COLUMNS
from .types import EXPRESSIONS, Observations, RunProgress, RunRow, VideoInfo

log = logging.getLogger(__name__)

# Per-face signals from the face mesh (NULL where a face's mesh was not found, or signals were off).
POSE_COLUMNS = ("yaw_deg", "pitch_deg", "roll_deg")
MESH_COLUMNS: tuple[str, ...] = (*POSE_COLUMNS, "eye_openness", "attentive", "mesh_score", *BS_COLUMNS)

# The observations table, column by column: the one place its layout is written down.
OBS_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Int64, "face_id": pl.Int64, "frame_index": pl.Int64, "timestamp_ms": pl.Float64,
    "x": pl.Float32, "y": pl.Float32, "w": pl.Float32, "h": pl.Float32, "det_score": pl.Float32,
    **dict.fromkeys(EXPRESSIONS, pl.Float32), "valence": pl.Float32, "arousal": pl.Float32,
    **dict.fromkeys(POSE_COLUMNS, pl.Float32), "eye_openness": pl.Float32, "attentive": pl.Boolean,
    "mesh_score": pl.Float32, **dict.fromkeys(BS_COLUMNS, pl.Float32), "confidence": pl.Float32,
}  # fmt: skip
OBS_COLUMNS: tuple[str, ...] = tuple(OBS_SCHEMA)

# Signals kept per face and second in face_seconds (sums, so any bin of whole seconds is exact); the mesh
# signals are averaged over the observations that have a mesh (n_mesh), the others over all (n_obs).
ROLLUP_SIGNALS: tuple[str, ...] = (*EXPRESSIONS, "valence", "arousal", *MESH_COLUMNS[:-len(BS_COLUMNS) - 1],
                                   *BS_COLUMNS)  # fmt: skip


_PROBS_SQL = ", ".join(f"{e} REAL" for e in EXPRESSIONS)

MIGRATIONS: tuple[str, ...] = (
    # 1: the core schema
    f"""
    CREATE TABLE clips (
        clip_id VARCHAR PRIMARY KEY,
        sha256 VARCHAR NOT NULL UNIQUE,
        path VARCHAR NOT NULL,
        source_uri VARCHAR,
        title VARCHAR,
        duration_s DOUBLE, fps DOUBLE, width INTEGER, height INTEGER,
        frame_count BIGINT, rotation INTEGER,
        created_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE clip_tags (
        clip_id VARCHAR NOT NULL, key VARCHAR NOT NULL, value VARCHAR NOT NULL,
        PRIMARY KEY (clip_id, key)
    );
    CREATE SEQUENCE run_ids START 1;
    CREATE TABLE runs (
        run_id BIGINT PRIMARY KEY DEFAULT nextval('run_ids'),
        clip_id VARCHAR NOT NULL,
        model VARCHAR NOT NULL, detector VARCHAR NOT NULL,
        settings VARCHAR NOT NULL, settings_key VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        frames_expected BIGINT, frames_done BIGINT DEFAULT 0,
        last_frame_index BIGINT DEFAULT -1, last_timestamp_ms DOUBLE DEFAULT -1,
        faces BIGINT DEFAULT 0, observations BIGINT DEFAULT 0,
        seconds DOUBLE DEFAULT 0,
        tracker_state VARCHAR,
        error VARCHAR,
        pid INTEGER,
        started_at TIMESTAMP DEFAULT current_timestamp,
        updated_at TIMESTAMP DEFAULT current_timestamp,
        finished_at TIMESTAMP
    );
    CREATE TABLE faces (
        run_id BIGINT NOT NULL, face_id BIGINT NOT NULL,
        first_seen_ms DOUBLE, last_seen_ms DOUBLE,
        n_obs BIGINT, mean_score DOUBLE,
        PRIMARY KEY (run_id, face_id)
    );
    CREATE TABLE observations (
        run_id BIGINT NOT NULL, face_id BIGINT NOT NULL,
        frame_index BIGINT NOT NULL, timestamp_ms DOUBLE NOT NULL,
        x REAL, y REAL, w REAL, h REAL, det_score REAL,
        {_PROBS_SQL},
        valence REAL, arousal REAL
    );
    """,
    # 2: stimulus sync (a clip can show people watching another clip, with an offset)
    """
    ALTER TABLE clips ADD COLUMN stimulus_clip_id VARCHAR;
    ALTER TABLE clips ADD COLUMN stimulus_offset_s DOUBLE DEFAULT 0;
    """,
    # 3: truncated media: what the container claimed, beside the duration that could be decoded
    """
    ALTER TABLE clips ADD COLUMN container_duration_s DOUBLE;
    """,
    # 4: attention, head pose, eye openness and blendshapes per observation; per-second rollups of finished runs
    "".join(
        f"ALTER TABLE observations ADD COLUMN {c} {'BOOLEAN' if c == 'attentive' else 'REAL'};\n" for c in MESH_COLUMNS
    )
    + f"""
    ALTER TABLE runs ADD COLUMN rolled_up BOOLEAN DEFAULT false;
    CREATE TABLE face_seconds (
        run_id BIGINT NOT NULL, face_id BIGINT NOT NULL, sec BIGINT NOT NULL,
        n_obs BIGINT NOT NULL, n_mesh BIGINT NOT NULL,
        {", ".join(f"s_{c} DOUBLE" for c in ROLLUP_SIGNALS)},
        PRIMARY KEY (run_id, face_id, sec)
    );
    """,
    # 5: people (tracks linked into persons), the user's corrections, respondent attributes, event markers
    """
    ALTER TABLE faces ADD COLUMN person_id BIGINT;
    ALTER TABLE faces ADD COLUMN embedding FLOAT[128];
    ALTER TABLE faces ADD COLUMN first_box FLOAT[4];
    ALTER TABLE faces ADD COLUMN last_box FLOAT[4];
    ALTER TABLE faces ADD COLUMN person_label VARCHAR;
    CREATE SEQUENCE edit_ids START 1;
    CREATE TABLE person_edits (
        edit_id BIGINT PRIMARY KEY DEFAULT nextval('edit_ids'),
        clip_id VARCHAR NOT NULL, kind VARCHAR NOT NULL,
        t_ms DOUBLE NOT NULL, x DOUBLE NOT NULL, y DOUBLE NOT NULL,
        t2_ms DOUBLE, x2 DOUBLE, y2 DOUBLE, label VARCHAR,
        created_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE person_attributes (
        clip_id VARCHAR NOT NULL, person VARCHAR NOT NULL, key VARCHAR NOT NULL, value VARCHAR NOT NULL,
        PRIMARY KEY (clip_id, person, key)
    );
    CREATE SEQUENCE marker_ids START 1;
    CREATE TABLE markers (
        marker_id BIGINT PRIMARY KEY DEFAULT nextval('marker_ids'),
        clip_id VARCHAR NOT NULL, name VARCHAR NOT NULL, start_s DOUBLE NOT NULL, end_s DOUBLE,
        created_at TIMESTAMP DEFAULT current_timestamp
    );
    """,
    # 6: blinks counted in the per-second rollup (so blink rates of long clips need no scan of every row)
    """
    ALTER TABLE face_seconds ADD COLUMN n_blinks BIGINT DEFAULT 0;
    UPDATE runs SET rolled_up = false;
    """,
    # 7: live clips: the wall-clock time (epoch s) of their stream time 0, for the dashboard's latency
    """
    ALTER TABLE clips ADD COLUMN live_t0 DOUBLE;
    """,
    # 8: each reading's confidence (ferpipe.confidence); NULL for runs made before it existed
    """
    ALTER TABLE observations ADD COLUMN confidence REAL;
    """,
    # 9: access control: researcher accounts, signed respondent links (their state), the audit log, consent records
    """
    CREATE TABLE users (
        name VARCHAR PRIMARY KEY, pw_hash VARCHAR NOT NULL, created_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE TABLE panel_links (
        nonce VARCHAR PRIMARY KEY, stimulus_clip_id VARCHAR NOT NULL, respondent VARCHAR NOT NULL,
        expires_at DOUBLE NOT NULL, uses INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0,
        state VARCHAR NOT NULL DEFAULT 'sent', clip_id VARCHAR, created_at TIMESTAMP DEFAULT current_timestamp
    );
    CREATE SEQUENCE audit_ids START 1;
    CREATE TABLE audit_log (
        audit_id BIGINT PRIMARY KEY DEFAULT nextval('audit_ids'), logged_at TIMESTAMP DEFAULT current_timestamp,
        who VARCHAR, action VARCHAR NOT NULL, detail VARCHAR
    );
    """,
    # 10: other tools' signals per face (OpenFace/py-feat action units, under their own names) and streams recorded
    # beside a clip (an XDF file's GSR...), on the clip's own timeline; a live clip's time 0 on LSL's clock; the frames
    # a live run dropped to keep up
    """
    CREATE TABLE tool_signals (
        run_id BIGINT NOT NULL, face_id BIGINT NOT NULL, timestamp_ms DOUBLE NOT NULL, name VARCHAR NOT NULL,
        value REAL
    );
    CREATE TABLE clip_signals (
        clip_id VARCHAR NOT NULL, name VARCHAR NOT NULL, source VARCHAR NOT NULL, unit VARCHAR NOT NULL,
        t_s DOUBLE NOT NULL, value DOUBLE
    );
    ALTER TABLE clips ADD COLUMN lsl_t0 DOUBLE;
    ALTER TABLE runs ADD COLUMN dropped_frames BIGINT;
    ALTER TABLE runs ADD COLUMN device VARCHAR;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class RunBusyError(FerpipeError):
    """Another live process is writing the same run."""


class RunGoneError(FerpipeError):
    """The run being written was deleted (its clip was deleted) or stopped by another process."""


def observation_frame(run_id: int, obs: Observations) -> pl.DataFrame:
    """Rows of the observations table (OBS_SCHEMA) for one batch."""
    n = len(obs)
    b = obs.detections.boxes
    data = {
        "run_id": np.full(n, run_id, dtype=np.int64), "face_id": obs.detections.track_ids,
        "frame_index": obs.frame_index, "timestamp_ms": obs.timestamp_ms,
        "x": b[:, 0], "y": b[:, 1], "w": b[:, 2] - b[:, 0], "h": b[:, 3] - b[:, 1], "det_score": obs.detections.scores,
        **{e: obs.expressions.probs[:, k] for k, e in enumerate(EXPRESSIONS)},
        "valence": obs.expressions.valence, "arousal": obs.expressions.arousal,
        "confidence": obs.confidence if obs.confidence is not None else np.full(n, np.nan, np.float32),
    }  # fmt: skip
    sig = obs.signals
    if sig is not None:
        data.update({c: sig.pose[:, k] for k, c in enumerate(POSE_COLUMNS)})
        data.update(eye_openness=sig.eye_openness, mesh_score=sig.mesh_score)
        data.update({c: sig.blendshapes[:, k] for k, c in enumerate(BS_COLUMNS)})
    frame = pl.DataFrame(data).with_columns(
        pl.lit(None, dtype=OBS_SCHEMA[c]).alias(c) for c in MESH_COLUMNS if c not in data and c != "attentive"
    )
    attentive = (
        pl.Series("attentive", sig.attentive).fill_nan(None).cast(pl.Boolean)
        if sig is not None else pl.Series("attentive", [None] * n, dtype=pl.Boolean)
    )  # fmt: skip
    mesh = [*(c for c in MESH_COLUMNS if c != "attentive"), "confidence"]
    return frame.with_columns(attentive, *[pl.col(c).cast(pl.Float32).fill_nan(None) for c in mesh]).select(
        [pl.col(c).cast(t) for c, t in OBS_SCHEMA.items()]
    )


def _num(column: str) -> str:
    """A column as a number for averaging (attentive is stored as a boolean)."""
    return f"{column}::DOUBLE" if column.rsplit(".", 1)[-1] == "attentive" else column


@dataclass(frozen=True)
class QualityFilter:
    """Which observations count in the expression aggregates: attentive faces only, faces at least
    ``min_face_px`` tall, detections scored at least ``min_score``, readings of confidence at least
    ``min_confidence`` (ferpipe.confidence; readings stored without one are left out by it). Checked where it is
    made."""

    attentive_only: bool = False
    min_face_px: float = 0.0
    min_score: float = 0.0
    min_confidence: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_face_px <= 10000:
            raise ValueError(f"min_face_px must be in [0, 10000], got {self.min_face_px}")
        if not 0 <= self.min_score <= 1:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")

    @property
    def active(self) -> bool:
        return self.attentive_only or self.min_face_px > 0 or self.min_score > 0 or self.min_confidence > 0

    def sql(self, prefix: str = "") -> tuple[str, list]:
        """' AND ...' conditions on observations (columns named with ``prefix``), and their parameters."""
        parts, params = [], []
        if self.attentive_only:
            parts.append(f"{prefix}attentive")
        if self.min_face_px > 0:
            parts.append(f"{prefix}h >= ?")
            params.append(float(self.min_face_px))
        if self.min_score > 0:
            parts.append(f"{prefix}det_score >= ?")
            params.append(float(self.min_score))
        if self.min_confidence > 0:
            parts.append(f"{prefix}confidence >= ?")
            params.append(float(self.min_confidence))
        return "".join(f" AND {p}" for p in parts), params

    def describe(self) -> str:
        """The filter in words, for captions, reports and exports."""
        parts = (
            (["attentive faces only"] if self.attentive_only else [])
            + ([f"faces at least {self.min_face_px:g} px tall"] if self.min_face_px > 0 else [])
            + ([f"detection score at least {self.min_score:g}"] if self.min_score > 0 else [])
            + ([f"reading confidence at least {self.min_confidence:g}"] if self.min_confidence > 0 else [])
        )
        return ", ".join(parts) if parts else "all observations"


def _run_row(row: dict) -> RunRow:
    def load(text: str | None) -> dict | None:
        return json.loads(text) if text else None

    return RunRow(
        run_id=int(row["run_id"]), clip_id=row["clip_id"], model=row["model"], detector=row["detector"],
        settings=load(row["settings"]) or {}, status=row["status"], frames_expected=int(row["frames_expected"] or 0),
        frames_done=int(row["frames_done"] or 0), last_frame_index=int(row["last_frame_index"]),
        last_timestamp_ms=float(row["last_timestamp_ms"]), faces=int(row["faces"] or 0),
        observations=int(row["observations"] or 0), seconds=float(row["seconds"] or 0.0),
        tracker_state=load(row["tracker_state"]), error=row["error"], pid=row["pid"],
        updated_at=row.get("updated_at"), finished_at=row.get("finished_at"),
    )  # fmt: skip


_BUSY_MARKERS = ("lock", "conflict", "being used", "different configuration", "already attached")


def _db_problem(exc: Exception) -> str:
    """What is wrong with a database file, in words, from DuckDB's error."""
    text = str(exc)
    low = text.lower()
    if "not a valid duckdb database" in low or "unknown file type" in low or "magic" in low:
        return "not a DuckDB database file"
    if "no space left" in low:
        return "the disk is full; nothing more could be written (what was committed is kept)"
    if "read-only" in low or "permission denied" in low or "operation not permitted" in low:
        return "read-only: it can be read but not written (check the file's permissions or attributes)"
    if any(w in low for w in ("corrupt", "truncat", "checksum", "could not read", "failed to read", "unexpected end")):
        return "truncated or corrupt (restore it from a backup, or choose another --db)"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"cannot be used as a database ({first[:160]})"


def _is_lock_error(exc: Exception) -> bool:
    """True when another connection (this process or another) holds the file."""
    text = str(exc).lower()
    return any(marker in text for marker in _BUSY_MARKERS)


def _row(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> dict:
    rows = con.sql(sql, params=params).pl()
    if rows.is_empty():
        raise ValueError("no such row")
    return rows.row(0, named=True)


BLINK_CLOSED = 0.25  # eye_openness below this is closed (ferpipe.signals.EYES_OPEN)

_BLINKS = f"""(eye_openness < {BLINK_CLOSED}
               AND lag(eye_openness) OVER (PARTITION BY face_id ORDER BY timestamp_ms) >= {BLINK_CLOSED})"""


def _build_rollup(con: duckdb.DuckDBPyConnection, run_id: int) -> None:
    """(Re)write a run's per-face, per-second sums (face_seconds) from its observations, with blink starts."""
    sums = ", ".join(f"sum({_num(c)}) FILTER (WHERE isfinite({_num(c)}))" for c in ROLLUP_SIGNALS)
    con.execute("DELETE FROM face_seconds WHERE run_id = ?", [run_id])
    con.execute(
        f"""INSERT INTO face_seconds (run_id, face_id, sec, n_obs, n_mesh, {", ".join(f"s_{c}" for c in ROLLUP_SIGNALS)},
                                      n_blinks)
            SELECT run_id, face_id, floor(timestamp_ms / 1000.0)::BIGINT, count(*), count(yaw_deg), {sums},
                   count(*) FILTER (WHERE blink)
            FROM (SELECT *, {_BLINKS} AS blink FROM observations WHERE run_id = ? AND isfinite(timestamp_ms))
            GROUP BY ALL""",
        [run_id],
    )
    con.execute("UPDATE runs SET rolled_up = true WHERE run_id = ?", [run_id])


def _live(runs: pl.DataFrame) -> pl.DataFrame:
    """Runs whose writing process is gone (killed, crashed, machine restarted) read as interrupted, not running."""
    if runs.is_empty() or "status" not in runs.columns or "pid" not in runs.columns:
        return runs
    running = runs.filter(pl.col("status") == "running")
    dead = [int(p) for p in running["pid"].drop_nulls().unique().to_list() if not pid_alive(int(p))]
    if running.height and (dead or running["pid"].null_count()):
        stale = (pl.col("status") == "running") & (pl.col("pid").is_in(dead) | pl.col("pid").is_null())
        runs = runs.with_columns(pl.when(stale).then(pl.lit("interrupted")).otherwise(pl.col("status")).alias("status"))
    return runs


class Store:
    """One DuckDB file. Connections are short-lived; see the module docstring."""

    def __init__(self, path: str | os.PathLike, timeout_s: float = 60.0) -> None:
        self.path = Path(path).expanduser()
        if self.path.suffix.lower() in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
            raise ValueError(f"--db must be a database file, not a video or image: {self.path}")
        self.timeout_s = timeout_s
        self._local = threading.local()

    @contextlib.contextmanager
    def reading(self) -> Iterator[Store]:
        """Share one read-only connection among the queries of a block (one page render).

        A write inside the block (a button on the page) closes it for the write's duration and opens it again.
        Keep such blocks short: while they last, a writer in another process waits.
        """
        if getattr(self._local, "con", None) is not None or getattr(self._local, "held", None) is not None:
            yield self
            return
        if not self.path.exists():
            self.migrate()
        self._local.con = self._open(read_only=True)
        try:
            yield self
        finally:
            con, self._local.con = self._local.con, None
            if con is not None:
                con.close()

    @contextlib.contextmanager
    def released(self) -> Iterator[None]:
        """Inside ``reading``: close the block's read connection meanwhile (a write, or long work without the database
        such as encoding a video preview, so writers in other processes are not held up), and open it again after."""
        reader = getattr(self._local, "con", None)
        if reader is None:
            yield
            return
        reader.close()
        self._local.con = None
        try:
            yield
        finally:
            self._local.con = self._open(read_only=True)

    @contextlib.contextmanager
    def holding(self) -> Iterator[Store]:
        """Share one write connection among the reads and transactions of a block (a run's start or end).

        Each step still gets its own cursor, so its transaction is its own; the file stays locked for the block.
        """
        if getattr(self._local, "held", None) is not None:
            yield self
            return
        with self.connect() as con:
            self._local.held = con
            try:
                yield self
            finally:
                self._local.held = None

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection held for one unit of work, retried while another process holds the file (inside
        ``holding``, or ``reading`` for reads: a cursor on the block's connection). A damaged file found while
        reading or writing (truncated, corrupt, disk full, read-only) ends as one DatabaseError naming it."""
        try:
            with self._connect(read_only) as con:
                yield con
        except (duckdb.IOException, duckdb.InternalException, duckdb.SerializationException,
                duckdb.PermissionException, duckdb.TransactionException) as exc:  # fmt: skip
            if isinstance(exc, duckdb.TransactionException) and "could not write" not in str(exc).lower() \
                    and "no space" not in str(exc).lower():  # fmt: skip
                raise  # a transaction conflict, not a damaged file or a full disk
            raise DatabaseError(f"{self.path}: {_db_problem(exc)}") from None

    @contextlib.contextmanager
    def _connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        shared = getattr(self._local, "held", None)
        if shared is None and read_only:
            shared = getattr(self._local, "con", None)
        if shared is not None:
            cursor = shared.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
            return
        if getattr(self._local, "con", None) is not None:  # a write inside a read block
            with self.released(), self.connect() as con:
                yield con
            return
        if read_only and not self.path.exists():
            self.migrate()
        con = self._open(read_only)
        try:
            yield con
        finally:
            con.close()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Open the file, retrying while another process holds it (up to timeout_s). A file that is not a usable
        database ends as one DatabaseError naming it and what is wrong, before anything is written."""
        p = self.path
        if p.is_dir():
            raise DatabaseError(f"{p}: is a folder, not a database file (give --db a file name)")
        if p.exists() and not p.is_file():
            raise DatabaseError(f"{p}: not a regular file (a device or pipe), so not a database")
        if p.is_file() and p.stat().st_size == 0:
            raise DatabaseError(f"{p}: an empty file, not a DuckDB database (remove it, or choose another --db)")
        deadline = time.monotonic() + self.timeout_s
        delay = 0.01
        while True:
            try:
                con = duckdb.connect(str(p), read_only=read_only)
                break
            except (duckdb.Error, RuntimeError) as exc:
                if _is_lock_error(exc) and time.monotonic() <= deadline:
                    time.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 0.25)
                    continue
                if _is_lock_error(exc):
                    raise DatabaseError(f"{p}: still in use by another process after {self.timeout_s:g} s") from None
                raise DatabaseError(f"{p}: {_db_problem(exc)}") from None
        if not getattr(self, "_version_checked", False):
            try:
                has = con.execute(
                    "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version'"
                ).fetchall()[0]
                version = con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] if has[0] else 0
            except duckdb.Error as exc:
                con.close()
                raise DatabaseError(f"{p}: {_db_problem(exc)}") from None
            if (version or 0) > SCHEMA_VERSION:
                con.close()
                raise DatabaseError(f"{p}: made by a newer ferpipe (schema {version}; this version reads up to "
                                    f"{SCHEMA_VERSION}); upgrade ferpipe to open it")  # fmt: skip
            self._version_checked = True
        return con

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write connection inside BEGIN/COMMIT; rolled back on error."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def migrate(self) -> int:
        """Bring the file to SCHEMA_VERSION, one transaction per step; returns the version."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = con.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current > SCHEMA_VERSION:
                raise DatabaseError(f"{self.path}: made by a newer ferpipe (schema {current}; this version reads up "
                                    f"to {SCHEMA_VERSION}); upgrade ferpipe to open it")  # fmt: skip
            for version in range(current + 1, SCHEMA_VERSION + 1):
                con.execute("BEGIN TRANSACTION")
                try:
                    con.execute(MIGRATIONS[version - 1])
                    con.execute("INSERT INTO schema_version VALUES (?)", [version])
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                log.info("migrated %s to schema %d", self.path, version)
        return SCHEMA_VERSION

    # ---- reads -------------------------------------------------------------------------
    def query(self, sql: str, params: list | None = None) -> pl.DataFrame:
        """A read-only query as a Polars frame (on the block's connection inside ``reading()``)."""
        # the block's connection itself (transactions run on cursors of it, so it is never inside one)
        shared = getattr(self._local, "held", None) or getattr(self._local, "con", None)
        if shared is not None:
            try:
                return shared.sql(sql, params=params or None).pl()
            except (duckdb.IOException, duckdb.InternalException, duckdb.SerializationException) as exc:
                raise DatabaseError(f"{self.path}: {_db_problem(exc)}") from None
        with self.connect(read_only=True) as con:
            return con.sql(sql, params=params or None).pl()

    def clips(self) -> pl.DataFrame:
        """One row per clip with its latest run's status, progress and face count."""
        return (
            self.query(
                """
            WITH latest AS (
                SELECT * FROM runs QUALIFY row_number() OVER (
                    PARTITION BY clip_id ORDER BY (detector <> 'imported') DESC, run_id DESC) = 1
            ), tags AS (
                SELECT clip_id, string_agg(key || '=' || value, ', ' ORDER BY key) AS tags FROM clip_tags GROUP BY clip_id
            ), persons AS (
                SELECT run_id, count(DISTINCT coalesce(person_id, face_id)) AS people FROM faces GROUP BY run_id
            )
            SELECT c.clip_id, c.title, c.duration_s, c.fps, c.width, c.height, c.frame_count, c.source_uri, c.created_at,
                   c.live_t0, coalesce(t.tags, '') AS tags, l.run_id, l.status, l.model, l.detector,
                   l.frames_done, l.frames_expected, l.faces, coalesce(p.people, 0) AS people, l.observations,
                   l.seconds, l.updated_at, c.stimulus_clip_id, c.stimulus_offset_s, c.path, l.dropped_frames
            , l.pid
            FROM clips c LEFT JOIN latest l USING (clip_id) LEFT JOIN tags t USING (clip_id)
                 LEFT JOIN persons p ON p.run_id = l.run_id
            ORDER BY c.created_at DESC, c.clip_id
            """
            )
            .pipe(_live)
            .drop("pid")
        )

    def resolve_clip(self, ref: str) -> str:
        """The clip id that ``ref`` names: a full id, or a prefix that only one clip id starts with."""
        ref = str(ref).strip()
        if not ref:
            raise ValueError("empty clip id")
        ids = self.query("SELECT clip_id FROM clips WHERE starts_with(clip_id, ?) ORDER BY clip_id", [ref])["clip_id"]
        if ref in ids.to_list():
            return ref
        if ids.len() == 1:
            return ids[0]
        if ids.len() == 0:
            raise ValueError(f"unknown clip {ref!r} (see `ferpipe clips`)")
        raise ValueError(f"clip id prefix {ref!r} is ambiguous: {', '.join(ids.head(5).to_list())}")

    def has_clip(self, clip_id: str) -> bool:
        """Whether this exact clip id is in the library (no prefix matching)."""
        return self.query("SELECT 1 FROM clips WHERE clip_id = ?", [clip_id]).height > 0

    def clip_with_sha(self, sha256: str) -> tuple[str, str] | None:
        """(clip id, title or id) of the library clip with this content hash, or None."""
        row = self.query("SELECT clip_id, coalesce(title, clip_id) AS title FROM clips WHERE sha256 = ?", [sha256])
        return (row["clip_id"][0], row["title"][0]) if row.height else None

    def clip(self, clip_id: str) -> dict:
        """One clip's row (clips table columns)."""
        df = self.query("SELECT * FROM clips WHERE clip_id = ?", [clip_id])
        if df.is_empty():
            raise ValueError(f"unknown clip {clip_id!r}")
        return df.row(0, named=True)

    def run(self, run_id: int) -> RunRow:
        """One run (a run whose process is gone reads as interrupted)."""
        df = _live(self.query("SELECT * FROM runs WHERE run_id = ?", [run_id]))
        if df.is_empty():
            raise ValueError(f"unknown run {run_id}")
        return _run_row(df.row(0, named=True))

    def clip_runs(self, clip_id: str, model: str | None = None) -> pl.DataFrame:
        """A clip's runs (of one model, if given), best to show first: finished ones, ferpipe's own before those
        imported from other tools (ferpipe.interop), then newest."""
        where = "clip_id = ?" + (" AND model = ?" if model else "")
        params = [clip_id] + ([model] if model else [])
        return _live(self.query(
            f"""SELECT * FROM runs WHERE {where}
                ORDER BY (status IN ('done', 'truncated')) DESC, (detector <> 'imported') DESC, run_id DESC""", params
        ))  # fmt: skip

    def best_run(self, clip_id: str, model: str | None = None) -> int | None:
        """The run to show for a clip: the latest finished one, else the latest of any status."""
        df = self.clip_runs(clip_id, model)
        return None if df.is_empty() else int(df["run_id"][0])

    def runs(self) -> pl.DataFrame:
        """Every run, newest first, with its clip's title, the model version (fingerprint) and the analysis rate."""
        return (
            self.query(
                """SELECT r.run_id, c.title, r.model, r.settings ->> 'model_fingerprint' AS model_version, r.detector,
                      r.status, r.faces, TRY_CAST(r.settings ->> 'sample_fps' AS DOUBLE) AS sample_fps, r.finished_at, r.pid
               FROM runs r JOIN clips c USING (clip_id) ORDER BY r.run_id DESC"""
            )
            .pipe(_live)
            .drop("pid")
        )

    def running_runs(self) -> pl.DataFrame:
        """Runs in progress (by a live process) with their clip's title (for progress bars)."""
        runs = self.query("SELECT r.*, c.title FROM runs r JOIN clips c USING (clip_id) WHERE r.status = 'running'")
        return _live(runs).filter(pl.col("status") == "running")

    def tags(self) -> pl.DataFrame:
        """Every (key, value, clip_id) tag."""
        return self.query("SELECT key, value, clip_id FROM clip_tags ORDER BY key, value, clip_id")

    def faces(self, run_id: int) -> pl.DataFrame:
        """A run's faces, most observed first."""
        return self.query(
            "SELECT face_id, person_id, person_label, n_obs, first_seen_ms, last_seen_ms FROM faces WHERE run_id = ? "
            "ORDER BY n_obs DESC, face_id",
            [run_id],
        )

    def faces_at(self, run_id: int, t_ms: float, within_ms: float = 500.0) -> pl.DataFrame:
        """Each face's box at its observation nearest to t_ms (within within_ms), by face id."""
        return self.query(
            """SELECT face_id, x, y, w, h, timestamp_ms FROM observations WHERE run_id = ? AND abs(timestamp_ms - ?) < ?
               QUALIFY row_number() OVER (PARTITION BY face_id ORDER BY abs(timestamp_ms - ?)) = 1 ORDER BY face_id""",
            [run_id, t_ms, within_ms, t_ms],
        )

    def face_timelines(self, run_id: int, ids: list[int], columns: list[str], unit: str = "person") -> pl.DataFrame:
        """The observations (unit id, timestamp_ms and columns) of the given people (or tracks), in time order; for
        runs of over 100,000 observations, their per-second means from the rollup (stamped at mid-second)."""
        self._check_columns(columns)
        key, name = self._unit(run_id, unit)
        ids = [int(f) for f in ids]
        if set(columns) <= set(ROLLUP_SIGNALS) and self._rolled_up(run_id) and self._long(run_id):
            means = ", ".join(
                f"(sum(o.s_{c}) / nullif(sum({'o.n_mesh' if c in MESH_COLUMNS else 'o.n_obs'}), 0))::DOUBLE AS {c}"
                for c in columns
            )
            return self.query(
                f"SELECT {key} AS {name}, o.sec * 1000.0 + 500 AS timestamp_ms, {means} "
                "FROM face_seconds o LEFT JOIN faces f USING (run_id, face_id) "
                f"WHERE run_id = ? AND {key} IN ({', '.join('?' * len(ids)) or 'NULL'}) GROUP BY ALL ORDER BY 2, 1",
                [run_id, *ids],
            )
        return self.query(
            f"SELECT {key} AS {name}, timestamp_ms, {', '.join('o.' + c for c in columns)} "
            "FROM observations o LEFT JOIN faces f USING (run_id, face_id) "
            f"WHERE run_id = ? AND {key} IN ({', '.join('?' * len(ids)) or 'NULL'}) ORDER BY timestamp_ms, o.face_id",
            [run_id, *ids],
        )

    def _check_columns(self, columns: list[str] | tuple[str, ...]) -> list[str]:
        bad = set(columns) - set(OBS_COLUMNS)
        if bad:
            raise ValueError(f"unknown observation columns: {sorted(bad)}")
        return list(columns)

    def face_bins(self, run_id: int, bin_s: float, signals: tuple[str, ...] | list[str],
                  quality: QualityFilter | None = None, unit: str = "person", window: tuple[float, float] | None = None,
                  first_s: float | None = None) -> pl.DataFrame:  # fmt: skip
        """Per (time bin, face) of a run: observations and the mean of each signal, computed inside the file
        (only the small result leaves DuckDB). Rows with a non-finite time, and non-finite values, are left
        out of the means; a bin where a signal has no value gets null.

        A finished run is read from its per-second rollup when the bins are whole seconds and no quality
        filter applies (what keeps a clip of millions of rows fast); otherwise from the observations.
        unit: "person" (tracks of one person together: column person_id, where the run's tracks are linked) or
        "face" (each track: column face_id).
        window: only readings in [start, end) seconds of clip time; first_s: only each unit's first first_s seconds
        in view (both for per-person baselines, which read a few seconds of a long run).
        """
        if not bin_s > 0:
            raise ValueError(f"bin_s must be > 0, got {bin_s}")
        signals = self._check_columns(signals)
        key, name = self._unit(run_id, unit)
        if window is not None and not (np.isfinite(window).all() and window[1] > window[0]):
            raise ValueError(f"window must be (start, end) with start < end, got {window}")
        if first_s is not None and not (np.isfinite(first_s) and first_s > 0):
            raise ValueError(f"first_s must be > 0, got {first_s}")

        def source(table: str, t_ms: str, where: str = "") -> tuple[str, list]:
            """FROM clause over the table joined with faces; with a window or first seconds, only those rows."""
            plain = f"{table} o LEFT JOIN faces f USING (run_id, face_id) WHERE run_id = ? {where}"
            if window is None and first_s is None:
                return plain, []
            sql, params = "", []
            if window is not None:
                sql += f" AND {t_ms} >= ? AND {t_ms} < ?"
                params += [float(window[0]) * 1000.0, float(window[1]) * 1000.0]
            if first_s is not None:  # no row past the last first sighting plus first_s: the scan can skip the rest
                sql += f" AND {t_ms} < (SELECT max(first_seen_ms) FROM faces WHERE run_id = ?) + ?"
                params += [int(run_id), float(first_s) * 1000.0 + 1000.0]
            inner = f"(SELECT o.*, {key} AS unit_key FROM {plain}{sql}) o"
            if first_s is None:
                return inner, params
            # each unit's first seconds in view, from when its tracks were first seen (the faces table: no window
            # function over the whole run); the rollup counts whole seconds from the second it was first seen in
            unit_faces = "coalesce(person_id, face_id)" if key.startswith("coalesce") else "face_id"
            t0 = "floor(u.t0 / 1000.0) * 1000.0" if table == "face_seconds" else "u.t0"
            firsts = (
                f"(SELECT {unit_faces} AS unit_key, min(first_seen_ms) AS t0 FROM faces WHERE run_id = ? GROUP BY 1) u"
            )
            return (f"{inner} JOIN {firsts} USING (unit_key) WHERE {t_ms} < {t0} + ?",
                    [*params, int(run_id), float(first_s) * 1000.0])  # fmt: skip

        if (
            quality is None
            and float(bin_s).is_integer()
            and set(signals) <= set(ROLLUP_SIGNALS)
            and self._rolled_up(run_id)
        ):
            k = int(bin_s)
            means = ", ".join(
                f"(sum(o.s_{c}) / nullif(sum({'o.n_mesh' if c in MESH_COLUMNS else 'o.n_obs'}), 0))::DOUBLE AS {c}"
                for c in signals
            )
            src, extra = source("face_seconds", "o.sec * 1000.0")
            unit_sql = "o.unit_key" if extra else key
            return self.query(
                f"""SELECT (o.sec // ?)::BIGINT AS bin, {unit_sql} AS {name}, sum(o.n_obs)::BIGINT AS n_obs{", " + means if means else ""}
                    FROM {src} GROUP BY ALL ORDER BY ALL""",
                [k, int(run_id), *extra],
            )
        where, params = quality.sql("o.") if quality is not None else ("", [])
        means = ", ".join(
            f"avg({_num('o.' + c)}) FILTER (WHERE isfinite({_num('o.' + c)}))::DOUBLE AS {c}" for c in signals
        )
        src, extra = source("observations", "o.timestamp_ms", f"AND isfinite(o.timestamp_ms) {where}")
        unit_sql = "o.unit_key" if extra else key
        return self.query(
            f"""SELECT floor(o.timestamp_ms / 1000.0 / ?)::BIGINT AS bin, {unit_sql} AS {name}, count(*) AS n_obs{", " + means if means else ""}
                FROM {src} GROUP BY ALL ORDER BY ALL""",
            [float(bin_s), int(run_id), *params, *extra],
        )

    def _unit(self, run_id: int, unit: str) -> tuple[str, str]:
        """(SQL key over observations o joined with faces f, its column name) for the unit of analysis: people
        where the run's tracks are linked into people, else tracks."""
        if unit not in ("person", "face"):
            raise ValueError(f"unit must be person or face, got {unit!r}")
        if unit == "person" and self.has_people(run_id):
            return "coalesce(f.person_id, o.face_id)", "person_id"
        return "o.face_id", "face_id"

    def _long(self, run_id: int, rows: int = 100_000) -> bool:
        row = self.query("SELECT observations FROM runs WHERE run_id = ?", [int(run_id)])
        return bool(row.height and (row["observations"][0] or 0) > rows)

    def has_people(self, run_id: int) -> bool:
        """Whether a run's tracks have been linked into people."""
        row = self.query("SELECT count(person_id) AS n FROM faces WHERE run_id = ?", [int(run_id)])
        return bool(row["n"][0])

    def _rolled_up(self, run_id: int) -> bool:
        row = self.query("SELECT rolled_up FROM runs WHERE run_id = ?", [int(run_id)])
        return bool(row.height and row["rolled_up"][0])

    def excluded_share(self, run_id: int, quality: QualityFilter) -> float:
        """The share of a run's observations a quality filter leaves out (0 when the run has none)."""
        where, params = quality.sql()
        row = self.query(
            f"SELECT count(*) AS n, count(*) FILTER (WHERE true {where}) AS kept FROM observations WHERE run_id = ?",
            [*params, int(run_id)],
        )
        n = int(row["n"][0])
        return 1.0 - int(row["kept"][0]) / n if n else 0.0

    def confidence_summary(self, run_id: int, low: float) -> tuple[float, float, float | None]:
        """(share of a run's readings below ``low`` confidence, share with a stored confidence, median confidence)
        over the readings that have one; (0, 0, None) for a run stored before readings had a confidence."""
        if not 0 < low <= 1:
            raise ValueError(f"low must be in (0, 1], got {low}")
        row = self.query(
            "SELECT count(*) AS n, count(confidence) AS known, count(*) FILTER (WHERE confidence < ?) AS low, "
            "median(confidence) AS med FROM observations WHERE run_id = ?",
            [float(low), int(run_id)],
        )
        n, known = int(row["n"][0]), int(row["known"][0])
        if not known:
            return 0.0, 0.0, None
        return int(row["low"][0]) / known, known / n, float(row["med"][0])

    def blink_bins(self, run_id: int, bin_s: float, unit: str = "person") -> pl.DataFrame:
        """Per (time bin, unit with a face mesh in it): seconds seen with a mesh and blinks (a face's eyes seen
        open, then closed at its next observation with a mesh); from the rollup where the run has one."""
        if not bin_s > 0:
            raise ValueError(f"bin_s must be > 0, got {bin_s}")
        key, name = self._unit(run_id, unit)
        if float(bin_s).is_integer() and self._rolled_up(run_id):
            return self.query(
                f"""SELECT (o.sec // ?)::BIGINT AS bin, {key} AS {name}, count(*) FILTER (WHERE o.n_mesh > 0) AS seconds,
                           sum(o.n_blinks)::BIGINT AS blinks
                    FROM face_seconds o LEFT JOIN faces f USING (run_id, face_id) WHERE run_id = ?
                    GROUP BY ALL HAVING seconds > 0 ORDER BY ALL""",
                [int(bin_s), int(run_id)],
            )
        return self.query(
            f"""SELECT floor(timestamp_ms / 1000.0 / ?)::BIGINT AS bin, {key} AS {name},
                       count(DISTINCT floor(timestamp_ms / 1000.0)) AS seconds, count(*) FILTER (WHERE blink) AS blinks
                FROM (SELECT *, {_BLINKS} AS blink FROM observations WHERE run_id = ? AND eye_openness IS NOT NULL) o
                LEFT JOIN faces f USING (run_id, face_id) GROUP BY ALL ORDER BY ALL""",
            [float(bin_s), int(run_id)],
        )

    def blink_totals(self, run_id: int) -> tuple[float, int]:
        """Seconds seen with a face mesh (summed over faces) and blinks, over a whole run: blink_bins without the
        bins, in one aggregate (from the rollup where the run has one)."""
        if self._rolled_up(run_id):
            row = self.query(
                "SELECT count(*) FILTER (WHERE n_mesh > 0) AS seconds, coalesce(sum(n_blinks), 0)::BIGINT AS blinks "
                "FROM face_seconds WHERE run_id = ?",
                [int(run_id)],
            )
        else:
            row = self.query(
                f"""SELECT count(DISTINCT (face_id, floor(timestamp_ms / 1000.0))) AS seconds,
                           count(*) FILTER (WHERE blink) AS blinks
                    FROM (SELECT *, {_BLINKS} AS blink FROM observations WHERE run_id = ? AND eye_openness IS NOT NULL)""",
                [int(run_id)],
            )
        return float(row["seconds"][0] or 0), int(row["blinks"][0] or 0)

    def observations(self, run_id: int, columns: list[str] | tuple[str, ...], unit: str = "person") -> pl.DataFrame:
        """A run's unit id (person_id, or face_id), timestamp_ms and the given columns, in time order."""
        cols = [c for c in self._check_columns(columns) if c not in ("face_id", "timestamp_ms")]
        key, name = self._unit(run_id, unit)
        return self.query(
            f"SELECT {key} AS {name}, timestamp_ms{''.join(', o.' + c for c in cols)} "
            "FROM observations o LEFT JOIN faces f USING (run_id, face_id) WHERE run_id = ? "
            "ORDER BY timestamp_ms, o.face_id",
            [int(run_id)],
        )

    def timeline_export(self, clip_id: str, run_id: int) -> pl.DataFrame:
        """Per-face timeline in the export layout: person (id and name), track (face_id), seconds, box, score,
        7 probabilities, valence, arousal, the reading's confidence, head pose, eye openness, attention, mesh score
        and the 52 blendshapes."""
        return self.query(
            f"""
            SELECT ? AS clip_id, coalesce(f.person_id, o.face_id) AS person_id,
                   coalesce(f.person_label, 'person ' || coalesce(f.person_id, o.face_id)) AS person, o.face_id,
                   timestamp_ms / 1000.0 AS timestamp_s,
                   frame_index, x, y, w, h, det_score, {", ".join(EXPRESSIONS)}, valence, arousal, confidence,
                   {", ".join("o." + c + (" AS bs_neutral" if c == "bs__neutral" else "") for c in MESH_COLUMNS)}
            FROM observations o LEFT JOIN faces f USING (run_id, face_id) WHERE run_id = ? ORDER BY timestamp_ms, o.face_id
            """,
            [clip_id, int(run_id)],
        )

    def timeline(self, run_id: int) -> pl.DataFrame:
        """Every observation of a run, ordered by time then face."""
        return self.query("SELECT * FROM observations WHERE run_id = ? ORDER BY timestamp_ms, face_id", [run_id])

    # ---- writes ------------------------------------------------------------------------
    def upsert_clip(self, clip_id: str, info: dict, tags: dict[str, str], title: str | None = None) -> None:
        """Insert a clip, or refresh its source and merge tags if it is known.

        ``info`` holds the clips columns of a new clip, ``title`` a title the user gave: a known clip
        keeps its title unless a new one is given (re-ingesting does not undo a rename).
        """
        with self.transaction() as con:
            exists = con.execute("SELECT 1 FROM clips WHERE clip_id = ?", [clip_id]).fetchone()
            if exists:
                con.execute(
                    "UPDATE clips SET title = coalesce(?, title), source_uri = coalesce(?, source_uri) WHERE clip_id = ?",
                    [title, info.get("source_uri"), clip_id],
                )
            else:
                row = {**info, "title": title or info.get("title")}
                cols = ["clip_id", *row]
                con.execute(
                    f"INSERT INTO clips ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [clip_id, *row.values()],
                )
            for key, value in tags.items():
                con.execute("INSERT OR REPLACE INTO clip_tags VALUES (?, ?, ?)", [clip_id, key, value])

    def start_run(self, clip_id: str, model: str, detector: str, settings: dict, frames_expected: int,
                  reprocess: bool = False) -> RunRow:  # fmt: skip
        """The run to write into, in one transaction.

        A finished run (done or truncated) with the same settings is returned as is, or deleted
        first when ``reprocess``; an unfinished one is resumed; else a new run.
        """
        key = json.dumps(settings, sort_keys=True)
        with self.transaction() as con:
            if not con.execute("SELECT 1 FROM clips WHERE clip_id = ?", [clip_id]).fetchone():
                raise ValueError(f"unknown clip {clip_id!r}")
            done = con.execute(
                """SELECT run_id FROM runs WHERE clip_id = ? AND settings_key = ? AND status IN ('done', 'truncated')
                   ORDER BY run_id DESC""",
                [clip_id, key],
            ).fetchall()
            if done and not reprocess:
                return _run_row(_row(con, "SELECT * FROM runs WHERE run_id = ?", [done[0][0]]))
            for (old,) in done:
                for table in ("observations", "faces", "face_seconds", "tool_signals", "runs"):
                    con.execute(f"DELETE FROM {table} WHERE run_id = ?", [old])
            row = con.execute(
                """SELECT run_id, status, pid FROM runs
                   WHERE clip_id = ? AND settings_key = ? AND status IN ('running', 'interrupted', 'failed')
                   ORDER BY run_id DESC LIMIT 1""",
                [clip_id, key],
            ).fetchone()
            if row and row[1] == "running" and row[2] and row[2] != os.getpid() and pid_alive(int(row[2])):
                raise RunBusyError(f"clip {clip_id} is being processed right now by process {row[2]}")
            if row:
                run_id = int(row[0])
                con.execute(
                    """UPDATE runs SET status = 'running', error = NULL, pid = ?, updated_at = now(), rolled_up = false
                       WHERE run_id = ?""",
                    [os.getpid(), run_id],
                )
            else:
                run_id = int(
                    con.execute(
                        """INSERT INTO runs (clip_id, model, detector, settings, settings_key, status, frames_expected, pid)
                           VALUES (?, ?, ?, ?, ?, 'running', ?, ?) RETURNING run_id""",
                        [clip_id, model, detector, json.dumps(settings), key, frames_expected, os.getpid()],
                    ).fetchone()[0]
                )
            return _run_row(_row(con, "SELECT * FROM runs WHERE run_id = ?", [run_id]))

    def finish_run(self, run_id: int, status: str, error: str | None = None, seconds: float | None = None,
                   decoded_s: float | None = None) -> RunRow:  # fmt: skip
        """Close a run; returns its final row. A truncated run records the duration that could be decoded
        as its clip's duration (the container's claim is kept in container_duration_s)."""
        if status not in ("done", "truncated", "failed", "interrupted"):
            raise ValueError(f"status must be done, truncated, failed or interrupted, got {status!r}")
        with self.transaction() as con:
            found = con.execute(
                """UPDATE runs SET status = ?, error = ?, seconds = coalesce(?, seconds),
                   finished_at = now(), updated_at = now() WHERE run_id = ? RETURNING clip_id""",
                [status, error, seconds, run_id],
            ).fetchall()
            if not found:
                raise RunGoneError(f"run {run_id} no longer exists (its clip was deleted)")
            if status in ("done", "truncated"):
                _build_rollup(con, run_id)
            if status == "truncated" and decoded_s is not None:
                con.execute(
                    """UPDATE clips SET container_duration_s = coalesce(container_duration_s, duration_s),
                       duration_s = ? WHERE clip_id = ?""",
                    [float(decoded_s), found[0][0]],
                )
            return _run_row(_row(con, "SELECT * FROM runs WHERE run_id = ?", [run_id]))

    # ---- people -------------------------------------------------------------------------
    def people(self, run_id: int) -> pl.DataFrame:
        """One row per person of a run: person_id, name, tracks, observations, first and last seen (ms)."""
        return self.query(
            """SELECT coalesce(person_id, face_id) AS person_id, any_value(person_label) AS person,
                      count(*) AS tracks, sum(n_obs)::BIGINT AS n_obs, min(first_seen_ms) AS first_seen_ms,
                      max(last_seen_ms) AS last_seen_ms
               FROM faces WHERE run_id = ? GROUP BY 1 ORDER BY person_id""",
            [int(run_id)],
        )

    def track_summaries(self, run_id: int) -> pl.DataFrame:
        """Each track with what linking needs: times, first and last box, observations, descriptor."""
        return self.query(
            """SELECT face_id, first_seen_ms, last_seen_ms, first_box, last_box, n_obs, embedding
               FROM faces WHERE run_id = ? ORDER BY face_id""",
            [int(run_id)],
        )

    def set_track_samples(self, run_id: int, samples: dict[int, tuple[list, list, list | None]]) -> None:
        """Store each track's first and last box and its face descriptor (or None)."""
        with self.transaction() as con:
            for face_id, (first, last, emb) in samples.items():
                con.execute(
                    "UPDATE faces SET first_box = ?, last_box = ?, embedding = ? WHERE run_id = ? AND face_id = ?",
                    [list(map(float, first)), list(map(float, last)), None if emb is None else list(map(float, emb)),
                     int(run_id), int(face_id)],
                )  # fmt: skip

    def set_people(self, run_id: int, person: dict[int, int], labels: dict[int, str] | None = None) -> None:
        """Record a run's track -> person mapping and the people's names, in one transaction."""
        labels = labels or {}
        with self.transaction() as con:
            con.register("p", pl.DataFrame({"face_id": list(person), "person_id": list(person.values())},
                                           schema={"face_id": pl.Int64, "person_id": pl.Int64}).to_arrow())  # fmt: skip
            con.execute(
                "UPDATE faces SET person_id = p.person_id, person_label = NULL FROM p "
                "WHERE faces.run_id = ? AND faces.face_id = p.face_id",
                [int(run_id)],
            )
            con.unregister("p")
            for pid, label in labels.items():
                con.execute("UPDATE faces SET person_label = ? WHERE run_id = ? AND person_id = ?",
                            [label, int(run_id), int(pid)])  # fmt: skip

    def track_at(self, run_id: int, t_ms: float, x: float, y: float, within_ms: float = 1000.0) -> int | None:
        """The track seen at (t_ms, x, y): among observations within ``within_ms``, the nearest box centre
        (within one face height), nearest in time first."""
        row = self.query(
            """SELECT face_id FROM observations WHERE run_id = ? AND abs(timestamp_ms - ?) <= ?
                   AND abs(x + w / 2 - ?) <= greatest(w, h) AND abs(y + h / 2 - ?) <= greatest(w, h)
               ORDER BY abs(timestamp_ms - ?) + 0.001 * (abs(x + w / 2 - ?) + abs(y + h / 2 - ?)) LIMIT 1""",
            [int(run_id), t_ms, within_ms, x, y, t_ms, x, y],
        )
        return int(row["face_id"][0]) if row.height else None

    def anchor(self, run_id: int, person_id: int) -> tuple[float, float, float]:
        """(t_ms, x, y) of a person's most confident observation: where an edit finds them again after a
        reprocessing."""
        row = self.query(
            """SELECT timestamp_ms, x + w / 2 AS cx, y + h / 2 AS cy FROM observations o
               JOIN faces f USING (run_id, face_id) WHERE run_id = ? AND coalesce(f.person_id, f.face_id) = ?
               ORDER BY o.det_score DESC, o.h DESC LIMIT 1""",
            [int(run_id), int(person_id)],
        )
        if row.is_empty():
            raise ValueError(f"run {run_id} has no person {person_id}")
        return tuple(float(v) for v in row.row(0))  # type: ignore[return-value]

    def track_anchor(self, run_id: int, face_id: int) -> tuple[float, float, float]:
        """(t_ms, x, y) of a track's most confident observation (where a split finds the track again); ValueError
        for a track the run does not have."""
        row = self.query(
            """SELECT timestamp_ms, x + w / 2 AS cx, y + h / 2 AS cy FROM observations WHERE run_id = ? AND face_id = ?
               ORDER BY det_score DESC LIMIT 1""",
            [int(run_id), int(face_id)],
        )
        if row.is_empty():
            raise ValueError(f"run {run_id} has no track {face_id} (see `ferpipe export --what timeline`)")
        return tuple(float(v) for v in row.row(0))  # type: ignore[return-value]

    def add_edit(self, clip_id: str, kind: str, at: tuple[float, float, float],
                 other: tuple[float, float, float] | None = None, label: str | None = None) -> None:  # fmt: skip
        """A correction of the people of a clip: merge (at and other are one person), split (the track at ``at``
        is a person of its own) or name (the person at ``at`` is called ``label``)."""
        if kind not in ("merge", "split", "name"):
            raise ValueError(f"edit kind must be merge, split or name, got {kind!r}")
        if (kind == "merge") != (other is not None) or (kind == "name") != bool(label and label.strip()):
            raise ValueError(
                f"a {kind} edit needs {'two anchors' if kind == 'merge' else 'a name' if kind == 'name' else 'one anchor'}"
            )
        self.clip(clip_id)
        o = other or (None, None, None)
        with self.transaction() as con:
            con.execute(
                "INSERT INTO person_edits (clip_id, kind, t_ms, x, y, t2_ms, x2, y2, label) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [clip_id, kind, *at, *o, label.strip() if label else None],
            )

    def edits(self, clip_id: str) -> pl.DataFrame:
        return self.query("SELECT * FROM person_edits WHERE clip_id = ? ORDER BY edit_id", [clip_id])

    def set_attributes(self, clip_id: str, person: str, values: dict[str, str]) -> None:
        """Attributes of a respondent (by their name in the clip), e.g. {"gender": "f", "age_band": "25-34"}."""
        self.clip(clip_id)
        if not str(person).strip():
            raise ValueError("a person needs a name to carry attributes")
        with self.transaction() as con:
            for key, value in values.items():
                if not str(key).strip():
                    raise ValueError(f"attribute names must not be empty (value {value!r})")
                con.execute("INSERT OR REPLACE INTO person_attributes VALUES (?, ?, ?, ?)",
                            [clip_id, str(person).strip(), str(key).strip(), str(value).strip()])  # fmt: skip

    def attributes(self, clip_ids: list[str] | None = None) -> pl.DataFrame:
        """(clip_id, person, key, value) rows, of some clips or all."""
        if clip_ids is None:
            return self.query("SELECT * FROM person_attributes ORDER BY clip_id, person, key")
        return self.query(
            f"SELECT * FROM person_attributes WHERE clip_id IN ({', '.join('?' * len(clip_ids)) or 'NULL'}) "
            "ORDER BY clip_id, person, key",
            list(clip_ids),
        )

    # ---- event markers --------------------------------------------------------------
    def add_marker(self, clip_id: str, name: str, start_s: float, end_s: float | None = None) -> int:
        """A named point (or interval) on a clip's timeline, inside the clip (a live clip still growing takes any
        time up to a day); returns its id."""
        clip = self.clip(clip_id)
        length = float(clip.get("duration_s") or 0.0)
        limit = length + 0.5 if length > 0 else 86400.0
        for label, t in (("start", start_s), ("end", end_s)):
            if t is not None and np.isfinite(t) and t > limit:
                raise ValueError(f"a marker's {label} ({t:g} s) is after the end of the clip ({length:g} s)")
        if not name or not name.strip():
            raise ValueError("a marker needs a name")
        if (
            not np.isfinite(start_s)
            or start_s < 0
            or (end_s is not None and not (np.isfinite(end_s) and end_s > start_s))
        ):
            raise ValueError(f"a marker needs 0 <= start < end, got start {start_s}, end {end_s}")
        with self.transaction() as con:
            return int(con.execute("INSERT INTO markers (clip_id, name, start_s, end_s) VALUES (?, ?, ?, ?) RETURNING marker_id",
                                   [clip_id, name.strip(), float(start_s), end_s]).fetchall()[0][0])  # fmt: skip

    def markers(self, clip_id: str) -> pl.DataFrame:
        return self.query("SELECT marker_id, name, start_s, end_s FROM markers WHERE clip_id = ? ORDER BY start_s, marker_id",
                          [clip_id])  # fmt: skip

    def delete_marker(self, marker_id: int) -> None:
        with self.transaction() as con:
            if not con.execute("DELETE FROM markers WHERE marker_id = ? RETURNING 1", [int(marker_id)]).fetchall():
                raise ValueError(f"unknown marker {marker_id}")

    # ---- access control (ferpipe.access decides; the store keeps the rows) ----------------------------------
    def add_user(self, name: str, pw_hash: str) -> None:
        with self.transaction() as con:
            if con.execute("SELECT 1 FROM users WHERE name = ?", [name]).fetchone():
                raise ValueError(f"user {name!r} exists already")
            con.execute("INSERT INTO users (name, pw_hash) VALUES (?, ?)", [name, pw_hash])

    def remove_user(self, name: str) -> None:
        with self.transaction() as con:
            if not con.execute("DELETE FROM users WHERE name = ? RETURNING 1", [name]).fetchall():
                raise ValueError(f"unknown user {name!r}")

    def users(self) -> pl.DataFrame:
        return self.query("SELECT name, created_at FROM users ORDER BY name")

    def user_hash(self, name: str) -> str | None:
        row = self.query("SELECT pw_hash FROM users WHERE name = ?", [name])
        return row["pw_hash"][0] if row.height else None

    def add_link(self, nonce: str, stimulus_clip_id: str, respondent: str, expires_at: float, uses: int) -> None:
        with self.transaction() as con:
            con.execute("INSERT INTO panel_links (nonce, stimulus_clip_id, respondent, expires_at, uses) "
                        "VALUES (?, ?, ?, ?, ?)", [nonce, stimulus_clip_id, respondent, float(expires_at), int(uses)])  # fmt: skip

    def link(self, nonce: str) -> dict | None:
        row = self.query("SELECT * FROM panel_links WHERE nonce = ?", [nonce])
        return row.row(0, named=True) if row.height else None

    def links(self, stimulus_clip_id: str | None = None) -> pl.DataFrame:
        where, params = ("WHERE stimulus_clip_id = ?", [stimulus_clip_id]) if stimulus_clip_id else ("", [])
        return self.query(f"SELECT * FROM panel_links {where} ORDER BY created_at, respondent", params)

    def respondents_processed(self, stimulus_clip_id: str) -> set[str]:
        """The respondents whose recording of this stimulus has a finished run."""
        rows = self.query(
            "SELECT DISTINCT t.value AS respondent FROM clips c "
            "JOIN clip_tags t ON t.clip_id = c.clip_id AND t.key = 'respondent' "
            "JOIN runs r ON r.clip_id = c.clip_id AND r.status IN ('done', 'truncated') WHERE c.stimulus_clip_id = ?",
            [stimulus_clip_id],
        )
        return set(rows["respondent"].to_list())

    def use_link(self, nonce: str) -> bool:
        """Take one use of a link, atomically; False when none is left."""
        with self.transaction() as con:
            return bool(con.execute("UPDATE panel_links SET used = used + 1 WHERE nonce = ? AND used < uses "
                                    "RETURNING 1", [nonce]).fetchall())  # fmt: skip

    def release_link(self, nonce: str) -> None:
        """Give a use back (the upload that took it failed and stored nothing)."""
        with self.transaction() as con:
            con.execute("UPDATE panel_links SET used = greatest(used - 1, 0) WHERE nonce = ?", [nonce])

    def set_link_state(self, nonce: str, state: str, clip_id: str | None = None) -> None:
        with self.transaction() as con:
            con.execute("UPDATE panel_links SET state = ?, clip_id = coalesce(?, clip_id) WHERE nonce = ?",
                        [state, clip_id, nonce])  # fmt: skip

    def audit(self, action: str, who: str | None = None, detail: str | None = None) -> None:
        """One line of the audit log (sign-ins, exports, deletions, links). Best effort: a database that cannot be
        written (read-only, full disk) still serves reads and exports, with a warning in the log."""
        try:
            with self.transaction() as con:
                con.execute("INSERT INTO audit_log (who, action, detail) VALUES (?, ?, ?)", [who, action, detail])
        except duckdb.CatalogException:  # a file not yet migrated (reads never migrate): no log to write to
            log.debug("no audit log in this file yet: %s %s", action, detail)
        except Exception as exc:  # the audit line must never break the action it records
            log.warning("audit log not written (%s): %s %s", exc, action, detail)

    def audit_log(self, limit: int = 200) -> pl.DataFrame:
        return self.query(
            "SELECT logged_at, who, action, detail FROM audit_log ORDER BY audit_id DESC LIMIT ?", [int(limit)]
        )

    def build_rollup(self, run_id: int) -> None:
        """(Re)write a finished run's per-second rollup (finish_run does this; for runs stored another way)."""
        with self.transaction() as con:
            _build_rollup(con, int(run_id))

    def stop_runs(self, clip_id: str, timeout_s: float = 30.0) -> list[int]:
        """Ask the live processes writing a clip's runs to stop (SIGTERM: they save their last batch and mark
        the run interrupted) and wait for them to exit; returns their pids."""
        runs = self.query(
            "SELECT pid FROM runs WHERE clip_id = ? AND status = 'running' AND pid IS NOT NULL", [clip_id]
        )
        pids = [int(p) for p in runs["pid"].unique().to_list() if int(p) != os.getpid() and pid_alive(int(p))]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            for p in pids:  # reap our own children (the dashboard's jobs), else they linger as zombies
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(p, os.WNOHANG)
            time.sleep(0.05)
        return pids

    def delete_clip(self, clip_id: str, delete_media: bool = True, stop_timeout_s: float = 30.0) -> None:
        """Remove a clip, its runs, faces, observations and tags; then its media file.

        A run writing the clip right now is stopped first; should it still commit, it finds its run
        gone and writes nothing (see commit_batch), so no row is left without its clip.
        """
        path = self.clip(clip_id)["path"]
        self.stop_runs(clip_id, stop_timeout_s)
        with self.transaction() as con:
            runs = "SELECT run_id FROM runs WHERE clip_id = ?"
            con.execute(f"DELETE FROM observations WHERE run_id IN ({runs})", [clip_id])
            con.execute(f"DELETE FROM faces WHERE run_id IN ({runs})", [clip_id])
            con.execute(f"DELETE FROM face_seconds WHERE run_id IN ({runs})", [clip_id])
            con.execute(f"DELETE FROM tool_signals WHERE run_id IN ({runs})", [clip_id])
            con.execute("DELETE FROM runs WHERE clip_id = ?", [clip_id])
            con.execute("DELETE FROM clip_tags WHERE clip_id = ?", [clip_id])
            for table in ("person_edits", "person_attributes", "markers", "clip_signals"):
                con.execute(f"DELETE FROM {table} WHERE clip_id = ?", [clip_id])
            con.execute("UPDATE clips SET stimulus_clip_id = NULL WHERE stimulus_clip_id = ?", [clip_id])
            con.execute("DELETE FROM clips WHERE clip_id = ?", [clip_id])
        if delete_media and path:
            shared = self.query("SELECT count(*) AS n FROM clips WHERE path = ?", [path])["n"][0]
            if not shared:
                Path(path).unlink(missing_ok=True)

    def forget_respondent(self, respondent: str) -> dict[str, int]:
        """Remove a respondent everywhere: the clips tagged with their respondent id (runs, observations, people,
        media files), the faces named for them in other clips (with those faces' readings, descriptors and
        rollups), their names and attributes in every clip, and their panel links. Returns what was removed."""
        respondent = (respondent or "").strip()
        if not respondent:
            raise ValueError("--respondent needs an id")
        own = self.query("SELECT DISTINCT clip_id FROM clip_tags WHERE key = 'respondent' AND value = ?",
                         [respondent])["clip_id"].to_list()  # fmt: skip
        for cid in own:
            self.delete_clip(cid)
        with self.transaction() as con:
            named = con.execute("SELECT run_id, face_id FROM faces WHERE person_label = ?", [respondent]).fetchall()
            for run_id, face_id in named:
                for table in ("observations", "face_seconds", "faces", "tool_signals"):
                    con.execute(f"DELETE FROM {table} WHERE run_id = ? AND face_id = ?", [run_id, face_id])
            attrs = con.execute("DELETE FROM person_attributes WHERE person = ? RETURNING 1", [respondent]).fetchall()
            edits = con.execute("DELETE FROM person_edits WHERE label = ? RETURNING 1", [respondent]).fetchall()
            links = con.execute("DELETE FROM panel_links WHERE respondent = ? RETURNING 1", [respondent]).fetchall()
        if named:  # the runs' per-second rollups and counts no longer hold those faces: rebuild them
            for run_id in {r for r, _ in named}:
                with self.transaction() as con:
                    con.execute("UPDATE runs SET observations = (SELECT count(*) FROM observations o WHERE "
                                "o.run_id = runs.run_id), faces = (SELECT count(*) FROM faces f WHERE "
                                "f.run_id = runs.run_id) WHERE run_id = ?", [run_id])  # fmt: skip
        return {"recordings": len(own), "faces in other clips": len(named), "attributes": len(attrs),
                "names": len(edits), "links": len(links)}  # fmt: skip

    def panel_recordings(self, stimulus_clip_id: str) -> list[str]:
        """Clips linked to a stimulus (webcam panel recordings and other audiences of it)."""
        rows = self.query(
            "SELECT clip_id FROM clips WHERE stimulus_clip_id = ? ORDER BY created_at", [stimulus_clip_id]
        )
        return rows["clip_id"].to_list()

    # ---- other tools' runs and recorded streams (ferpipe.interop, ferpipe.lab_streams) ----------------------
    def import_run(self, clip_id: str, model: str, settings: dict, rows: pl.DataFrame,
                   signals: pl.DataFrame) -> tuple[RunRow, bool]:  # fmt: skip
        """Another tool's readings as a finished run of their own, in one transaction (all or nothing): rows in
        OBS_SCHEMA, signals as (face_id, timestamp_ms, name, value). The tool's face ids are its people. The same
        file imported again returns its run unchanged. Returns (run, reused)."""
        key = json.dumps(settings, sort_keys=True)
        with self.transaction() as con:
            if not con.execute("SELECT 1 FROM clips WHERE clip_id = ?", [clip_id]).fetchone():
                raise ValueError(f"unknown clip {clip_id!r}")
            done = con.execute("SELECT run_id FROM runs WHERE clip_id = ? AND settings_key = ? AND status = 'done'",
                               [clip_id, key]).fetchall()  # fmt: skip
            if done:
                done = done[0]
                return _run_row(_row(con, "SELECT * FROM runs WHERE run_id = ?", [done[0]])), True
            run_id = int(con.execute(
                """INSERT INTO runs (clip_id, model, detector, settings, settings_key, status, frames_expected,
                   frames_done, pid, seconds) VALUES (?, ?, 'imported', ?, ?, 'running', ?, ?, ?, 0) RETURNING run_id""",
                [clip_id, model, json.dumps(settings), key, int(rows["frame_index"].n_unique()),
                 int(rows["frame_index"].n_unique()), os.getpid()],
            ).fetchone()[0])  # fmt: skip
            batch = rows.with_columns(pl.lit(run_id, dtype=pl.Int64).alias("run_id")).select(
                [pl.col(c).cast(t) for c, t in OBS_SCHEMA.items()]
            )
            con.register("batch", batch.to_arrow())
            con.execute(f"INSERT INTO observations SELECT {', '.join(OBS_COLUMNS)} FROM batch")
            con.execute(
                """INSERT INTO faces (run_id, face_id, first_seen_ms, last_seen_ms, n_obs, mean_score, person_id)
                   SELECT run_id, face_id, min(timestamp_ms), max(timestamp_ms), count(*), avg(det_score), face_id
                   FROM batch GROUP BY run_id, face_id"""
            )
            con.unregister("batch")
            if signals.height:
                con.register("sig", signals.with_columns(pl.lit(run_id, dtype=pl.Int64).alias("run_id")).to_arrow())
                con.execute("INSERT INTO tool_signals SELECT run_id, face_id, timestamp_ms, name, value FROM sig")
                con.unregister("sig")
            last = rows.sort("timestamp_ms").tail(1)
            con.execute(
                """UPDATE runs SET status = 'done', finished_at = now(), updated_at = now(),
                   last_frame_index = ?, last_timestamp_ms = ?,
                   observations = (SELECT count(*) FROM observations WHERE run_id = ?),
                   faces = (SELECT count(*) FROM faces WHERE run_id = ?) WHERE run_id = ?""",
                [int(last["frame_index"][0]) if last.height else -1,
                 float(last["timestamp_ms"][0]) if last.height else -1.0, run_id, run_id, run_id],
            )  # fmt: skip
            _build_rollup(con, run_id)
            return _run_row(_row(con, "SELECT * FROM runs WHERE run_id = ?", [run_id])), False

    def tool_signal_names(self, run_id: int) -> list[str]:
        """The other tool's own signals stored with a run (action units...), in their own names."""
        return self.query("SELECT DISTINCT name FROM tool_signals WHERE run_id = ? ORDER BY name",
                          [int(run_id)])["name"].to_list()  # fmt: skip

    def tool_signal_bins(self, run_id: int, bin_s: float, names: list[str]) -> pl.DataFrame:
        """Per (time bin, person, signal) of an imported run: the mean of the tool's own signal."""
        if not bin_s > 0:
            raise ValueError(f"bin_s must be > 0, got {bin_s}")
        if not names:
            return pl.DataFrame(schema={"bin": pl.Int64, "person_id": pl.Int64, "name": pl.Utf8, "value": pl.Float64})
        return self.query(
            f"""SELECT floor(s.timestamp_ms / 1000.0 / ?)::BIGINT AS bin, coalesce(f.person_id, s.face_id) AS person_id,
                       s.name, avg(s.value) FILTER (WHERE isfinite(s.value))::DOUBLE AS value
                FROM tool_signals s LEFT JOIN faces f USING (run_id, face_id)
                WHERE s.run_id = ? AND s.name IN ({", ".join("?" * len(names))}) GROUP BY ALL ORDER BY ALL""",
            [float(bin_s), int(run_id), *names],
        )

    def tool_signals(self, run_id: int) -> pl.DataFrame:
        """Every stored tool signal of a run, wide: face_id, timestamp_ms and one column per signal."""
        long = self.query("SELECT face_id, timestamp_ms, name, value FROM tool_signals WHERE run_id = ? "
                          "ORDER BY timestamp_ms, face_id", [int(run_id)])  # fmt: skip
        if long.is_empty():
            return pl.DataFrame(schema={"face_id": pl.Int64, "timestamp_ms": pl.Float64})
        return long.pivot(on="name", index=["face_id", "timestamp_ms"], values="value", maintain_order=True)

    def add_clip_signals(self, clip_id: str, streams: list, markers: list[tuple[str, float]] | None = None,
                         replace_source: bool = True) -> tuple[int, int]:  # fmt: skip
        """Store recorded streams (types.StreamSignal) and point markers (name, seconds) beside a clip, in one
        transaction; a stream of the same name and source replaces the one stored before, a marker already there
        (same name and time to the millisecond) is not added twice. Returns (samples, markers) written."""
        n = 0
        with self.transaction() as con:
            if not con.execute("SELECT 1 FROM clips WHERE clip_id = ?", [clip_id]).fetchall():
                raise ValueError(f"unknown clip {clip_id!r}")
            have = {(name, round(t, 3)) for name, t in con.execute(
                "SELECT name, start_s FROM markers WHERE clip_id = ?", [clip_id]).fetchall()}  # fmt: skip
            added = 0
            for name, t in markers or []:
                if (name, round(t, 3)) in have or not name.strip() or not (np.isfinite(t) and t >= 0):
                    continue
                con.execute("INSERT INTO markers (clip_id, name, start_s) VALUES (?, ?, ?)", [clip_id, name, t])
                have.add((name, round(t, 3)))
                added += 1
            for sig in streams:
                if replace_source:
                    con.execute("DELETE FROM clip_signals WHERE clip_id = ? AND name = ? AND source = ?",
                                [clip_id, sig.name, sig.source])  # fmt: skip
                frame = pl.DataFrame({"t_s": sig.t_s, "value": sig.value}).with_columns(
                    pl.lit(clip_id).alias("clip_id"), pl.lit(sig.name).alias("name"),
                    pl.lit(sig.source).alias("source"), pl.lit(sig.unit).alias("unit"),
                )  # fmt: skip
                con.register("stream", frame.to_arrow())
                con.execute("INSERT INTO clip_signals SELECT clip_id, name, source, unit, t_s, value FROM stream")
                con.unregister("stream")
                n += frame.height
        return n, added

    def set_device(self, run_id: int, device: str) -> None:
        """Where a run's models ran (pipeline.device_words), recorded with it."""
        with self.transaction() as con:
            con.execute("UPDATE runs SET device = ? WHERE run_id = ?", [device, int(run_id)])

    def set_dropped(self, run_id: int, dropped: int) -> None:
        """The frames a live run left out because the analysis was behind the stream (shown in the Library)."""
        with self.transaction() as con:
            con.execute("UPDATE runs SET dropped_frames = ? WHERE run_id = ?", [int(dropped), int(run_id)])

    def set_lsl_t0(self, clip_id: str, lsl_t0: float) -> None:
        """A live clip's time 0 on LSL's clock (ferpipe.labsync)."""
        with self.transaction() as con:
            con.execute("UPDATE clips SET lsl_t0 = ? WHERE clip_id = ?", [float(lsl_t0), clip_id])

    def clip_signal_list(self, clip_ids: list[str]) -> pl.DataFrame:
        """The streams recorded beside clips: clip_id, name, source, unit, samples, first and last second."""
        if not clip_ids:
            return pl.DataFrame(schema={"clip_id": pl.Utf8, "name": pl.Utf8, "source": pl.Utf8, "unit": pl.Utf8,
                                        "samples": pl.Int64, "first_s": pl.Float64, "last_s": pl.Float64})  # fmt: skip
        return self.query(
            f"""SELECT clip_id, name, any_value(source) AS source, any_value(unit) AS unit, count(*) AS samples,
                       min(t_s) AS first_s, max(t_s) AS last_s
                FROM clip_signals WHERE clip_id IN ({", ".join("?" * len(clip_ids))}) GROUP BY clip_id, name
                ORDER BY clip_id, name""",
            list(clip_ids),
        )

    def clip_signal_bins(self, clip_id: str, bin_s: float, names: list[str]) -> pl.DataFrame:
        """Per (time bin, stream) of a clip's recorded streams: mean, min and max over the bin."""
        if not bin_s > 0:
            raise ValueError(f"bin_s must be > 0, got {bin_s}")
        schema = {"bin": pl.Int64, "name": pl.Utf8, "value": pl.Float64, "lo": pl.Float64, "hi": pl.Float64}
        if not names:
            return pl.DataFrame(schema=schema)
        return self.query(
            f"""SELECT floor(t_s / ?)::BIGINT AS bin, name, avg(value)::DOUBLE AS value, min(value)::DOUBLE AS lo,
                       max(value)::DOUBLE AS hi
                FROM clip_signals WHERE clip_id = ? AND isfinite(t_s) AND isfinite(value)
                AND name IN ({", ".join("?" * len(names))}) GROUP BY ALL ORDER BY ALL""",
            [float(bin_s), clip_id, *names],
        )

    def set_media(self, clip_id: str, info: VideoInfo) -> None:
        """A live clip's recording, once complete: its duration, rate, size and frame count."""
        with self.transaction() as con:
            con.execute(
                """UPDATE clips SET path = ?, duration_s = ?, fps = ?, width = ?, height = ?, frame_count = ?
                   WHERE clip_id = ?""",
                [info.path, info.duration_s, info.fps, info.width, info.height, info.frame_count, clip_id],
            )

    def set_stimulus(self, clip_id: str, stimulus_clip_id: str | None, offset_s: float = 0.0) -> None:
        if stimulus_clip_id == clip_id:
            raise ValueError("a clip cannot be its own stimulus")
        with self.transaction() as con:
            con.execute(
                "UPDATE clips SET stimulus_clip_id = ?, stimulus_offset_s = ? WHERE clip_id = ?",
                [stimulus_clip_id, float(offset_s), clip_id],
            )

    def commit_batch(self, run_id: int, obs: Observations | pl.DataFrame, progress: RunProgress) -> None:
        """Observations, face statistics and run progress in one transaction.

        RunGoneError (and nothing written) when the run is no longer running: deleted with its clip,
        or taken over by another process.
        """
        rows = obs if isinstance(obs, pl.DataFrame) else observation_frame(run_id, obs)
        with self.transaction() as con:
            alive = con.execute(
                "SELECT 1 FROM runs WHERE run_id = ? AND status = 'running' AND pid = ?", [run_id, os.getpid()]
            ).fetchall()
            if not alive:
                raise RunGoneError(f"run {run_id} was deleted or stopped by another process; nothing more is written")
            if rows.height:
                con.register("batch", rows.select(OBS_COLUMNS).to_arrow())
                con.execute(f"INSERT INTO observations SELECT {', '.join(OBS_COLUMNS)} FROM batch")
                con.execute(
                    """
                    INSERT INTO faces (run_id, face_id, first_seen_ms, last_seen_ms, n_obs, mean_score)
                    SELECT run_id, face_id, min(timestamp_ms), max(timestamp_ms), count(*), avg(det_score)
                    FROM batch GROUP BY run_id, face_id
                    ON CONFLICT (run_id, face_id) DO UPDATE SET
                        first_seen_ms = least(faces.first_seen_ms, excluded.first_seen_ms),
                        last_seen_ms = greatest(faces.last_seen_ms, excluded.last_seen_ms),
                        mean_score = (faces.mean_score * faces.n_obs + excluded.mean_score * excluded.n_obs)
                                     / (faces.n_obs + excluded.n_obs),
                        n_obs = faces.n_obs + excluded.n_obs
                    """
                )
                con.unregister("batch")
            con.execute(
                """
                UPDATE runs SET
                    frames_done = ?, last_frame_index = ?, last_timestamp_ms = ?, seconds = ?, tracker_state = ?,
                    observations = (SELECT count(*) FROM observations WHERE run_id = ?),
                    faces = (SELECT count(*) FROM faces WHERE run_id = ?),
                    updated_at = now()
                WHERE run_id = ?
                """,
                [
                    progress.frames_done,
                    progress.last_frame_index,
                    progress.last_timestamp_ms,
                    progress.seconds,
                    json.dumps(progress.tracker_state),
                    run_id,
                    run_id,
                    run_id,
                ],
            )


class ObservationSink:
    """Context-manager sink: ``append()`` rows, committed in batches with the run's progress.

    On a clean exit the last batch is committed; on an exception the rows since the last
    commit are dropped and the run is marked interrupted (resumable) or failed.
    """

    def __init__(self, store: Store, run_id: int, batch_rows: int = 2000, batch_seconds: float = 2.0) -> None:
        if batch_rows < 1 or batch_seconds <= 0:
            raise ValueError(f"batch_rows and batch_seconds must be positive, got {batch_rows}, {batch_seconds}")
        self.store = store
        self.run_id = run_id
        self.batch_rows = batch_rows
        self.batch_seconds = batch_seconds
        self._parts: list[Observations] = []
        self._rows = 0
        self._progress: RunProgress | None = None
        self._last_commit = time.monotonic()
        self.commits = 0

    def __enter__(self) -> ObservationSink:
        return self

    def append(self, rows: Observations, progress: RunProgress) -> None:
        """Queue observations and the progress they bring the run to."""
        if len(rows):
            self._parts.append(rows)
            self._rows += len(rows)
        self._progress = progress
        if self._rows >= self.batch_rows or time.monotonic() - self._last_commit >= self.batch_seconds:
            self.flush()

    def flush(self) -> None:
        if self._progress is None:
            return
        self.store.commit_batch(self.run_id, Observations.concat(self._parts), self._progress)
        log.info("run %d: committed %d rows up to frame %d", self.run_id, self._rows, self._progress.frames_done)
        self._parts, self._rows, self._progress = [], 0, None
        self._last_commit = time.monotonic()
        self.commits += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.flush()
            return
        self._parts, self._rows, self._progress = [], 0, None
        if issubclass(exc_type, RunGoneError):
            return  # nothing of this run is left to mark
        status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
        try:
            self.store.finish_run(
                self.run_id, status, error=str(exc).splitlines()[0] if str(exc) else exc_type.__name__
            )
        except Exception:  # the original error matters more
            log.exception("could not mark run %d as %s", self.run_id, status)
